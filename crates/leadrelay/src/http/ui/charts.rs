//! The overview's charts, drawn on the server as SVG with the `plotters`
//! charting library (axes, scales, series, legend): no JavaScript, nothing
//! to download, and the page works the same with scripting off. Each chart
//! is inlined in the page as an image with a text alternative, and the
//! page also gives its numbers as a table.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
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
    let label = crate::http::html::escape(label);
    svg.replacen(
        &format!("<svg width=\"{WIDTH}\" height=\"{HEIGHT}\""),
        &format!(
            "<svg class=\"chart\" role=\"img\" aria-label=\"{label}\" preserveAspectRatio=\"xMidYMid meet\" width=\"100%\""
        ),
        1,
    )
}

/// Leads per day, one line per source. `days` are the day starts shown
/// (oldest first); `series` maps a source to its count per day.
pub fn leads_per_day(
    days: &[DateTime<Utc>],
    series: &BTreeMap<String, Vec<u64>>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let max = series
            .values()
            .flat_map(|v| v.iter().copied())
            .max()
            .unwrap_or(0)
            .max(4);
        let n = days.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .margin_right(36)
            .x_label_area_size(30)
            .y_label_area_size(44)
            .build_cartesian_2d(0..(n as i32 - 1).max(1), 0u64..(max + max / 5 + 1))
            .map_err(|e| e.to_string())?;
        let labels: Vec<String> = days.iter().map(|d| d.format("%a %d").to_string()).collect();
        chart
            .configure_mesh()
            .x_labels(n)
            .y_labels(6)
            .x_label_formatter(&|i| labels.get(*i as usize).cloned().unwrap_or_default())
            .y_desc("leads")
            .label_style(("sans-serif", 13).into_font().color(&INK))
            .axis_desc_style(("sans-serif", 13).into_font().color(&INK))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (source, counts)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(i32, u64)> = counts
                .iter()
                .enumerate()
                .map(|(x, y)| (x as i32, *y))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
                .map_err(|e| e.to_string())?
                .label(source.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 4, color.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(180, 180, 180))
                .label_font(("sans-serif", 13).into_font().color(&INK))
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(finish(svg, "Leads per day by source, last 7 days"))
}

/// Delivery success rate per hour (percent; hours without attempts are gaps).
pub fn success_rate(
    start: DateTime<Utc>,
    hours: usize,
    rates: &[Option<f64>],
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .margin_right(36)
            .x_label_area_size(30)
            .y_label_area_size(44)
            .build_cartesian_2d(0..(hours as i32 - 1).max(1), 0f64..100f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(6)
            .x_label_formatter(&|i| {
                (start + Duration::hours(i64::from(*i)))
                    .format("%H:00")
                    .to_string()
            })
            .y_label_formatter(&|v| format!("{v:.0}%"))
            .y_desc("delivered")
            .label_style(("sans-serif", 13).into_font().color(&INK))
            .axis_desc_style(("sans-serif", 13).into_font().color(&INK))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()
            .map_err(|e| e.to_string())?;
        let color = PALETTE[2];
        // One line per run of hours with attempts.
        let mut run: Vec<(i32, f64)> = Vec::new();
        let mut runs = Vec::new();
        for (i, r) in rates.iter().enumerate() {
            match r {
                Some(v) => run.push((i as i32, v * 100.0)),
                None if !run.is_empty() => runs.push(std::mem::take(&mut run)),
                None => {}
            }
        }
        if !run.is_empty() {
            runs.push(run);
        }
        for r in runs {
            chart
                .draw_series(LineSeries::new(r.clone(), color.stroke_width(3)))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(r.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(finish(svg, "Delivery success rate per hour, last 24 hours"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_scalable_labelled_svg() {
        let now = Utc::now();
        let days: Vec<_> = (0..7).map(|i| now - Duration::days(6 - i)).collect();
        let mut s = BTreeMap::new();
        s.insert("form:contact".to_string(), vec![1, 2, 0, 5, 3, 2, 9]);
        s.insert("source:hubspot".to_string(), vec![0, 0, 1, 1, 0, 2, 1]);
        let svg = leads_per_day(&days, &s).unwrap();
        assert!(
            svg.starts_with("<svg class=\"chart\" role=\"img\""),
            "{}",
            &svg[..200]
        );
        assert!(svg.contains("viewBox"));
        assert!(svg.contains("form:contact"));
        let svg = success_rate(now, 24, &[Some(1.0), None, Some(0.5), Some(0.75)]).unwrap();
        assert!(svg.contains("aria-label=\"Delivery success rate"));
        assert!(svg.contains("<polyline") || svg.contains("<path"));
    }
}
