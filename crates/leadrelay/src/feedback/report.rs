//! The feedback reports, from the daily feedback counters (never events):
//!
//! - `feedback`: leads, ratings (average, good, poor) and conversion by
//!   source, campaign, channel, form, owner or score band;
//! - `calibration`: per score band, conversion and average rating against
//!   all leads', with a verdict where the scoring over- or under-rates: a
//!   band at or above `scoring.mql` whose leads convert (or are rated) less
//!   than 0.8× the average over-rates; a band below it whose leads do more
//!   than 1.25× the average under-rates.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{Value, json};

use crate::config::Config;
use crate::reports::{Filter, ReportError, Table, r4, ratio, team_owners};
use crate::store::{FeedbackCell, FeedbackCounts, SCORE_STEP, Store, UNSCORED};

/// The feedback reports: (path segment, title).
pub const REPORTS: [(&str, &str); 2] = [
    ("feedback", "Sales feedback on lead quality"),
    ("calibration", "Scoring calibration"),
];

/// Lift below which a qualified band over-rates, and its inverse above
/// which an unqualified band under-rates.
const OVER: f64 = 0.8;
const UNDER: f64 = 1.25;

/// The band a score bucket falls in: its label and lower bound (None: below
/// the first bound, or unscored).
fn band_of(bucket: i64, bands: &[f64]) -> (String, Option<f64>) {
    if bucket == UNSCORED {
        return ("unscored".into(), None);
    }
    let score = bucket as f64;
    let i = bands.iter().rposition(|b| score >= *b);
    let fmt = |x: f64| format!("{x}");
    match i {
        None => match bands.first() {
            Some(first) => (format!("below {}", fmt(*first)), None),
            None => ("all scores".into(), None),
        },
        Some(i) => match bands.get(i + 1) {
            Some(next) => (
                format!("{} to {}", fmt(bands[i]), fmt(*next)),
                Some(bands[i]),
            ),
            None => (format!("{} and above", fmt(bands[i])), Some(bands[i])),
        },
    }
}

/// Order of bands: unscored first, then ascending.
fn band_rank(bucket: i64, bands: &[f64]) -> i64 {
    if bucket == UNSCORED {
        return i64::MIN;
    }
    bands
        .iter()
        .rposition(|b| bucket as f64 >= *b)
        .map_or(-1, |i| i as i64)
}

fn day_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::days(1)).unwrap_or(t)
}

/// A feedback report's empty table, with its title.
fn new_table(report: &str, since: DateTime<Utc>, until: DateTime<Utc>, columns: &[&str]) -> Table {
    let mut t = Table::new(report, since, until, columns);
    if let Some((_, title)) = REPORTS.iter().find(|(r, _)| *r == report) {
        t.title = title.to_string();
    }
    t
}

/// Computes one feedback report. The feedback rollups catch up first.
pub async fn run(
    store: &dyn Store,
    cfg: &Config,
    name: &str,
    filter: &Filter,
    now: DateTime<Utc>,
) -> Result<Table, ReportError> {
    if !REPORTS.iter().any(|(r, _)| *r == name) {
        return Err(ReportError::Unknown(name.to_string()));
    }
    let (since, until) = filter.range(now);
    if since > until {
        return Err(ReportError::Invalid {
            field: "since".into(),
            message: "must not be after until".into(),
        });
    }
    let by = filter.by.as_deref().unwrap_or("source");
    if name == "feedback"
        && !["source", "campaign", "channel", "form", "owner", "band"].contains(&by)
    {
        return Err(ReportError::Invalid {
            field: "by".into(),
            message: format!("{by:?} is not one of source, campaign, channel, form, owner, band"),
        });
    }
    super::pass::catch_up(store, cfg, now).await?;
    let team = team_owners(cfg, filter.team.as_deref());
    let cells: Vec<FeedbackCell> = store
        .feedback_cells(day_start(since), until)
        .await?
        .into_iter()
        .filter(|c| {
            let k = &c.key;
            filter.matches_dims(
                Some(&k.origin),
                Some(&k.source),
                Some(&k.campaign),
                Some(&k.channel),
            ) && filter.owner.as_deref().is_none_or(|o| k.owner == o)
                && (filter.team.is_none() || team.contains(&k.owner))
        })
        .collect();
    let bands = &cfg.feedback.bands;
    Ok(if name == "feedback" {
        feedback(since, until, &cells, by, bands)
    } else {
        calibration(since, until, &cells, cfg)
    })
}

fn rating_avg(c: &FeedbackCounts) -> Value {
    ratio(c.rating_sum as f64, c.rated as f64)
}

/// Leads, ratings and conversion per group.
fn feedback(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    cells: &[FeedbackCell],
    by: &str,
    bands: &[f64],
) -> Table {
    let mut t = new_table(
        "feedback",
        since,
        until,
        &[
            by,
            "leads",
            "rated",
            "average_rating",
            "good",
            "poor",
            "opportunities",
            "won",
            "conversion",
        ],
    );
    let mut g: BTreeMap<(i64, String), FeedbackCounts> = BTreeMap::new();
    let mut all = FeedbackCounts::default();
    for c in cells {
        let k = &c.key;
        let key = match by {
            "campaign" => (0, k.campaign.clone()),
            "channel" => (0, k.channel.clone()),
            "form" => (0, k.origin.clone()),
            "owner" if k.owner.is_empty() => (0, "(unassigned)".into()),
            "owner" => (0, k.owner.clone()),
            "band" => (
                band_rank(k.score_bucket, bands),
                band_of(k.score_bucket, bands).0,
            ),
            _ => (0, k.source.clone()),
        };
        g.entry(key).or_default().add(&c.counts, 1);
        all.add(&c.counts, 1);
    }
    for ((_, k), c) in &g {
        t.rows.push(vec![
            json!(k),
            json!(c.leads),
            json!(c.rated),
            rating_avg(c),
            json!(c.good),
            json!(c.poor),
            json!(c.opportunities),
            json!(c.won),
            ratio(c.won as f64, c.leads as f64),
        ]);
    }
    t.total("leads", all.leads);
    t.total("rated", all.rated);
    t.total("rated_share", ratio(all.rated as f64, all.leads as f64));
    t.total("average_rating", rating_avg(&all));
    t.total("good", all.good);
    t.total("poor", all.poor);
    t.total("won", all.won);
    t.total("conversion", ratio(all.won as f64, all.leads as f64));
    t
}

/// Where the scoring over- or under-rates by one quality figure.
fn verdict(n: i64, min: u64, lift: Option<f64>, qualified: Option<bool>) -> &'static str {
    let Some(lift) = lift else { return "no data" };
    if n < min as i64 {
        return "too few";
    }
    match qualified {
        Some(true) if lift < OVER => "over-rates",
        Some(false) if lift > UNDER => "under-rates",
        _ => "in line",
    }
}

/// Per score band: conversion and rating against all leads', with verdicts.
fn calibration(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    cells: &[FeedbackCell],
    cfg: &Config,
) -> Table {
    let bands = &cfg.feedback.bands;
    let min = cfg.feedback.min_leads;
    let mql = cfg.scoring.mql;
    let mut t = new_table(
        "calibration",
        since,
        until,
        &[
            "band",
            "leads",
            "share_of_leads",
            "opportunities",
            "won",
            "conversion",
            "conversion_lift",
            "conversion_verdict",
            "rated",
            "average_rating",
            "good_share",
            "rating_lift",
            "rating_verdict",
        ],
    );
    let mut g: BTreeMap<i64, (String, Option<f64>, FeedbackCounts)> = BTreeMap::new();
    let mut all = FeedbackCounts::default();
    for c in cells {
        let rank = band_rank(c.key.score_bucket, bands);
        let (label, lower) = band_of(c.key.score_bucket, bands);
        g.entry(rank)
            .or_insert((label, lower, FeedbackCounts::default()))
            .2
            .add(&c.counts, 1);
        if c.key.score_bucket != UNSCORED {
            all.add(&c.counts, 1);
        }
    }
    let conv_all = (all.leads > 0).then(|| all.won as f64 / all.leads as f64);
    let rating_all = (all.rated > 0).then(|| all.rating_sum as f64 / all.rated as f64);
    let (mut over, mut under) = (Vec::new(), Vec::new());
    for (rank, (label, lower, c)) in &g {
        let unscored = *rank == i64::MIN;
        // Qualified by the scoring rules: the band starts at or above the
        // MQL threshold; a band that straddles it is neither.
        let upper = bands
            .get((*rank + 1).max(0) as usize)
            .copied()
            .filter(|_| *rank >= -1);
        let qualified = if unscored {
            None
        } else if lower.is_some_and(|l| l >= mql) {
            Some(true)
        } else if upper.is_some_and(|u| u <= mql) {
            Some(false)
        } else {
            None
        };
        let conv = (c.leads > 0).then(|| c.won as f64 / c.leads as f64);
        let conv_lift = conv.zip(conv_all.filter(|a| *a > 0.0)).map(|(b, a)| b / a);
        let rating = (c.rated > 0).then(|| c.rating_sum as f64 / c.rated as f64);
        let rating_lift = rating.zip(rating_all).map(|(b, a)| b / a);
        let cv = if unscored {
            "unscored"
        } else {
            verdict(c.leads, min, conv_lift, qualified)
        };
        let rv = if unscored {
            "unscored"
        } else {
            verdict(c.rated, min, rating_lift, qualified)
        };
        if cv == "over-rates" || rv == "over-rates" {
            over.push(label.clone());
        }
        if cv == "under-rates" || rv == "under-rates" {
            under.push(label.clone());
        }
        t.rows.push(vec![
            json!(label),
            json!(c.leads),
            if unscored {
                Value::Null
            } else {
                ratio(c.leads as f64, all.leads as f64)
            },
            json!(c.opportunities),
            json!(c.won),
            conv.map(r4).unwrap_or(Value::Null),
            conv_lift.map(r4).unwrap_or(Value::Null),
            json!(cv),
            json!(c.rated),
            rating.map(r4).unwrap_or(Value::Null),
            ratio(c.good as f64, c.rated as f64),
            rating_lift.map(r4).unwrap_or(Value::Null),
            json!(rv),
        ]);
    }
    t.total("leads", all.leads);
    t.total("conversion", conv_all.map(r4).unwrap_or(Value::Null));
    t.total("average_rating", rating_all.map(r4).unwrap_or(Value::Null));
    t.total("mql_score", r4(mql));
    t.total("score_step", r4(SCORE_STEP));
    t.total("over_rated_bands", json!(over));
    t.total("under_rated_bands", json!(under));
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FeedbackKey, score_bucket};

    fn cell(score: f64, leads: i64, won: i64, rated: i64, rating_sum: i64) -> FeedbackCell {
        FeedbackCell {
            key: FeedbackKey {
                day: Utc::now(),
                origin: "form:contact".into(),
                channel: "email".into(),
                source: "news".into(),
                campaign: "spring".into(),
                owner: String::new(),
                score_bucket: score_bucket(Some(score)),
            },
            counts: FeedbackCounts {
                leads,
                won,
                opportunities: won,
                rated,
                rating_sum,
                ..Default::default()
            },
        }
    }

    #[test]
    fn bands_are_labelled_and_ordered() {
        let b = [20.0, 40.0, 80.0];
        assert_eq!(band_of(score_bucket(Some(5.0)), &b).0, "below 20");
        assert_eq!(band_of(score_bucket(Some(20.0)), &b).0, "20 to 40");
        assert_eq!(band_of(score_bucket(Some(79.9)), &b).0, "40 to 80");
        assert_eq!(band_of(score_bucket(Some(120.0)), &b).0, "80 and above");
        assert_eq!(band_of(UNSCORED, &b).0, "unscored");
        assert!(band_rank(UNSCORED, &b) < band_rank(0, &b));
        assert!(band_rank(0, &b) < band_rank(20, &b));
    }

    #[test]
    fn calibration_finds_over_and_under_rating_bands() {
        let mut cfg = Config::default();
        cfg.scoring.mql = 40.0;
        cfg.feedback.bands = vec![20.0, 40.0, 80.0];
        cfg.feedback.min_leads = 2;
        let now = Utc::now();
        // Below 20: 10 leads, 5 won (converts well: under-rated).
        // 40 to 80: 10 leads, 1 won, rated 1 on average (over-rated).
        // 80 and above: 10 leads, 4 won, rated 5.
        let cells = vec![
            cell(10.0, 10, 5, 2, 8),
            cell(50.0, 10, 1, 4, 4),
            cell(90.0, 10, 4, 2, 10),
        ];
        let t = calibration(now, now, &cells, &cfg);
        let row = |label: &str| t.rows.iter().find(|r| r[0] == label).unwrap().clone();
        // All: 30 leads, 10 won → 1/3; ratings 22 / 8 = 2.75.
        assert_eq!(t.totals["conversion"], json!(0.3333));
        assert_eq!(t.totals["average_rating"], json!(2.75));
        let low = row("below 20");
        assert_eq!(low[5], json!(0.5));
        assert_eq!(low[6], json!(1.5));
        assert_eq!(low[7], json!("under-rates"));
        let mid = row("40 to 80");
        assert_eq!(mid[6], json!(0.3));
        assert_eq!(mid[7], json!("over-rates"));
        assert_eq!(mid[12], json!("over-rates"));
        let top = row("80 and above");
        assert_eq!(top[7], json!("in line"));
        assert_eq!(top[12], json!("in line"));
        assert_eq!(t.totals["over_rated_bands"], json!(["40 to 80"]));
        assert_eq!(t.totals["under_rated_bands"], json!(["below 20"]));
        // Too few leads for a verdict.
        cfg.feedback.min_leads = 11;
        let t = calibration(now, now, &cells, &cfg);
        assert!(t.rows.iter().all(|r| r[7] == json!("too few")));
    }
}
