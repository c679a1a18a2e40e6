//! The overview's charts, drawn on the server as SVG with the `plotters`
//! charting library (axes, scales, series, legend): no JavaScript, nothing
//! to download, and the page works the same with scripting off. Each chart
//! is inlined in the page as an image with a text alternative, and the
//! page also gives its numbers as a table.

use std::collections::BTreeMap;

#[cfg(test)]
use chrono::{Duration, Utc};
use plotters::prelude::*;

/// Colour-blind-safe series colours (Okabe–Ito), dark enough on white.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(120, 94, 240),
];

const WIDTH: u32 = 720;
const HEIGHT: u32 = 300;
const INK: RGBColor = RGBColor(33, 37, 41);

/// Makes plotters' fixed-size SVG scale with its container and carry a label.
fn finish(svg: String, label: &str) -> String {
    finish_sized(svg, label, HEIGHT)
}

/// [`finish`] for a chart `height` pixels high.
fn finish_sized(svg: String, label: &str, height: u32) -> String {
    let label = crate::http::html::escape(label);
    svg.replacen(
        &format!("<svg width=\"{WIDTH}\" height=\"{height}\""),
        &format!(
            "<svg class=\"chart\" role=\"img\" aria-label=\"{label}\" preserveAspectRatio=\"xMidYMid meet\" width=\"100%\""
        ),
        1,
    )
}

/// Axis and legend text: large enough to stay readable when the chart is
/// scaled down to a phone's width (about half size).
const FONT: u32 = 28;

/// Which of `n` bucket labels to print so that at most six show.
fn label_every(n: usize) -> usize {
    n.div_ceil(6).max(1)
}

/// The label under a bucket: every `every`th one is printed.
fn bucket_label(labels: &[String], every: usize, v: &SegmentValue<i32>) -> String {
    match v {
        SegmentValue::CenterOf(i) if (*i as usize).is_multiple_of(every) => {
            labels.get(*i as usize).cloned().unwrap_or_default()
        }
        _ => String::new(),
    }
}

/// Counts per time bucket, stacked by series (leads by source, failures by
/// class): bars stay readable with one count or a hundred. `labels` name
/// the buckets (oldest first); `series` maps a name to its count per bucket.
pub fn stacked_bars(
    labels: &[String],
    series: &BTreeMap<String, Vec<u64>>,
    label: &str,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let n = labels.len().max(1);
        let totals: Vec<u64> = (0..n)
            .map(|i| {
                series
                    .values()
                    .map(|v| v.get(i).copied().unwrap_or(0))
                    .sum()
            })
            .collect();
        let max = totals.iter().copied().max().unwrap_or(0).max(4);
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .margin_right(24)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n as i32).into_segmented(), 0u64..(max + max / 5 + 1))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .y_labels(5)
            .x_label_formatter(&|v| bucket_label(labels, label_every(n), v))
            .y_label_formatter(&|v| format!("{v}"))
            .label_style(("sans-serif", FONT).into_font().color(&INK))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()
            .map_err(|e| e.to_string())?;
        let mut base = vec![0u64; n];
        for (k, (source, counts)) in series.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let bars: Vec<_> = counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| {
                    let y0 = base[i];
                    base[i] += c;
                    let mut r = Rectangle::new(
                        [
                            (SegmentValue::Exact(i as i32), y0),
                            (SegmentValue::Exact(i as i32 + 1), y0 + c),
                        ],
                        color.filled(),
                    );
                    r.set_margin(0, 0, 3, 3);
                    r
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(|e| e.to_string())?
                .label(source.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(180, 180, 180))
                .label_font(("sans-serif", FONT).into_font().color(&INK))
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(finish(svg, label))
}

/// Delivery success rate per bucket as bars (percent; buckets without
/// attempts stay empty), so one busy hour is a bar, not a lone dot.
pub fn success_rate(
    labels: &[String],
    rates: &[Option<f64>],
    label: &str,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let n = labels.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .margin_right(24)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .build_cartesian_2d((0..n as i32).into_segmented(), 0f64..100f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .y_labels(5)
            .x_label_formatter(&|v| bucket_label(labels, label_every(n), v))
            .y_label_formatter(&|v| format!("{v:.0}%"))
            .label_style(("sans-serif", FONT).into_font().color(&INK))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()
            .map_err(|e| e.to_string())?;
        let good = PALETTE[2];
        let bad = PALETTE[1];
        let bars: Vec<_> = rates
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|r| (i, r)))
            .map(|(i, r)| {
                let color = if r >= 0.95 { good } else { bad };
                // A 0 % bucket still shows: a thin bar at the bottom.
                let top = (r * 100.0).max(1.5);
                let mut rect = Rectangle::new(
                    [
                        (SegmentValue::Exact(i as i32), 0.0),
                        (SegmentValue::Exact(i as i32 + 1), top),
                    ],
                    color.filled(),
                );
                rect.set_margin(0, 0, 2, 2);
                rect
            })
            .collect();
        chart.draw_series(bars).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(finish(svg, label))
}

/// Attempt latency per bucket: the mean as bars and the longest as a
/// marked line above them (buckets without attempts stay empty), so one
/// busy hour still shows a bar and a point.
pub fn latency(
    labels: &[String],
    avg_ms: &[Option<f64>],
    max_ms: &[Option<u64>],
    label: &str,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let n = labels.len().max(1);
        let top = max_ms
            .iter()
            .flatten()
            .map(|v| *v as f64)
            .chain(avg_ms.iter().flatten().copied())
            .fold(10.0f64, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .margin_right(24)
            .x_label_area_size(44)
            .y_label_area_size(110)
            .build_cartesian_2d((0..n as i32).into_segmented(), 0f64..top * 1.15)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .y_labels(5)
            .x_label_formatter(&|v| bucket_label(labels, label_every(n), v))
            .y_label_formatter(&|v| format_ms(*v))
            .label_style(("sans-serif", FONT).into_font().color(&INK))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()
            .map_err(|e| e.to_string())?;
        let mean = PALETTE[0];
        let longest = PALETTE[1];
        let bars: Vec<_> = avg_ms
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i, v)))
            .map(|(i, v)| {
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i as i32), 0.0),
                        (SegmentValue::Exact(i as i32 + 1), v.max(top / 100.0)),
                    ],
                    mean.filled(),
                );
                r.set_margin(0, 0, 3, 3);
                r
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(|e| e.to_string())?
            .label("mean")
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], mean.filled()));
        let points: Vec<(SegmentValue<i32>, f64)> = max_ms
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (SegmentValue::CenterOf(i as i32), v as f64)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), longest.stroke_width(3)))
            .map_err(|e| e.to_string())?
            .label("longest")
            .legend(move |(x, y)| Circle::new((x + 7, y), 6, longest.filled()));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 7, longest.filled())),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", FONT).into_font().color(&INK))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(finish(svg, label))
}

/// Cuts a category name for an axis label.
fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// Values per category as horizontal bars, one bar per series in each
/// category's row (a report's groups: sources, stages, months, bands), so
/// long names stay readable. `percent` shows values 0..1 as percentages.
/// Categories without a value show no bar.
pub fn hbars(
    categories: &[String],
    series: &[(String, Vec<Option<f64>>)],
    label: &str,
    percent: bool,
) -> Result<String, String> {
    let n = categories.len().max(1);
    let per_row = series.len().max(1) as u32;
    let height = 90 + n as u32 * (per_row * 26 + 16) + if series.len() > 1 { 60 } else { 0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let top = series
            .iter()
            .flat_map(|(_, v)| v.iter().flatten().copied())
            .filter(|v| v.is_finite())
            .fold(0f64, f64::max);
        let low = series
            .iter()
            .flat_map(|(_, v)| v.iter().flatten().copied())
            .filter(|v| v.is_finite())
            .fold(0f64, f64::min);
        let top = if percent {
            top.max(1.0)
        } else {
            top.max(1.0) * 1.1
        };
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .margin_right(30)
            .x_label_area_size(44)
            .y_label_area_size(250)
            .build_cartesian_2d(low * 1.1..top, (0..n as i32).into_segmented())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .x_labels(4)
            // The first category at the top, as in the table.
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) if (*i as usize) < n => categories
                    .get(n - 1 - *i as usize)
                    .map(|c| short(c, 14))
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .x_label_formatter(&|v| {
                if percent {
                    format!("{:.0}%", v * 100.0)
                } else {
                    compact(*v)
                }
            })
            .label_style(("sans-serif", FONT).into_font().color(&INK))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()
            .map_err(|e| e.to_string())?;
        let k = series.len().max(1) as f64;
        for (j, (name, values)) in series.iter().enumerate() {
            let color = PALETTE[j % PALETTE.len()];
            // Each category's row split in k slots, one per series.
            let bars: Vec<_> = values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.filter(|v| v.is_finite()).map(|v| (i, v)))
                .map(|(i, v)| {
                    let row = (n - 1 - i) as i32;
                    let mut r = Rectangle::new(
                        [
                            (0.0, SegmentValue::Exact(row)),
                            (v, SegmentValue::Exact(row + 1)),
                        ],
                        color.filled(),
                    );
                    let px = (per_row * 26 + 16) as f64;
                    let slot = (px - 16.0) / k;
                    let top_m = 8.0 + slot * j as f64;
                    let bottom_m = px - top_m - slot + 2.0;
                    r.set_margin(top_m as u32, bottom_m.max(0.0) as u32, 0, 0);
                    r
                })
                .collect();
            let drawn = chart.draw_series(bars).map_err(|e| e.to_string())?;
            if series.len() > 1 {
                drawn.label(name.clone()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
            }
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(180, 180, 180))
                .label_font(("sans-serif", FONT).into_font().color(&INK))
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(finish_sized(svg, label, height))
}

/// 1500 → `1.5k`, 2_000_000 → `2M`, 12.5 → `12.5`.
fn compact(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// 850 → `850 ms`, 2500 → `2.5 s`.
fn format_ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_scalable_labelled_svg() {
        let now = Utc::now();
        let days: Vec<String> = (0..7)
            .map(|i| (now - Duration::days(6 - i)).format("%a %d").to_string())
            .collect();
        let mut s = BTreeMap::new();
        s.insert("form:contact".to_string(), vec![1, 2, 0, 5, 3, 2, 9]);
        s.insert("source:hubspot".to_string(), vec![0, 0, 1, 1, 0, 2, 1]);
        let svg = stacked_bars(&days, &s, "Leads per day by source").unwrap();
        assert!(
            svg.starts_with("<svg class=\"chart\" role=\"img\""),
            "{}",
            &svg[..200]
        );
        assert!(svg.contains("viewBox"));
        assert!(svg.contains("form:contact"));
        let hours: Vec<String> = (0..24).map(|h| format!("{h:02}:00")).collect();
        let svg = success_rate(
            &hours,
            &[Some(1.0), None, Some(0.5), Some(0.0)],
            "Delivery success rate per hour",
        )
        .unwrap();
        assert!(svg.contains("aria-label=\"Delivery success rate"));
        // Three buckets with attempts, three bars — even the 0 % one.
        assert!(svg.matches("<rect").count() > 3, "{svg}");
    }

    #[test]
    fn horizontal_bars_name_each_category_and_series() {
        let cats = vec![
            "google".to_string(),
            "a-very-long-campaign-name".to_string(),
        ];
        let svg = hbars(
            &cats,
            &[
                ("forecast".into(), vec![Some(1200.0), None]),
                ("won".into(), vec![Some(900.0), Some(300.0)]),
            ],
            "Forecast & won",
            false,
        )
        .unwrap();
        assert!(
            svg.starts_with("<svg class=\"chart\" role=\"img\" aria-label=\"Forecast &amp; won\"")
        );
        assert!(
            svg.contains("google") && svg.contains("a-very-long-c…"),
            "{svg}"
        );
        // The first category is drawn at the top.
        let y_of = |label: &str| -> f64 {
            let at = svg
                .find(&format!(">\n{label}"))
                .or_else(|| svg.find(label))
                .unwrap();
            let start = svg[..at].rfind(" y=\"").unwrap() + 4;
            let end = start + svg[start..].find('"').unwrap();
            svg[start..end].parse().unwrap()
        };
        assert!(y_of("google") < y_of("a-very-long-c…"), "google on top");
        assert!(svg.contains("forecast") && svg.contains("won"), "legend");
        // Three values, three bars (plus the background and the legend's).
        assert!(svg.matches("<rect").count() >= 3 + 2);
        let pct = hbars(
            &cats,
            &[("rate".into(), vec![Some(0.5), Some(1.0)])],
            "r",
            true,
        )
        .unwrap();
        assert!(pct.contains("100%"), "{pct}");
        assert_eq!(compact(1500.0), "1.5k");
        assert_eq!(compact(25_000.0), "25k");
        assert_eq!(compact(0.5), "0.5");
    }

    #[test]
    fn latency_with_one_point_shows_a_bar_and_a_marker() {
        let hours: Vec<String> = (0..24).map(|h| format!("{h:02}:00")).collect();
        let mut avg = vec![None; 24];
        let mut max = vec![None; 24];
        avg[23] = Some(120.0);
        max[23] = Some(2400);
        let svg = latency(&hours, &avg, &max, "Latency per hour").unwrap();
        assert!(svg.contains("aria-label=\"Latency per hour\""));
        assert!(svg.contains("<circle"), "the longest attempt is marked");
        assert!(
            svg.contains("2.0 s") || svg.contains("2.5 s"),
            "axis in seconds"
        );
        assert!(svg.contains("mean") && svg.contains("longest"), "legend");
        // No attempts at all: an empty chart, no error.
        assert!(latency(&hours, &[None; 24], &[None; 24], "none").is_ok());
        assert_eq!(format_ms(850.0), "850 ms");
    }
}
