//! Pipeline reports and multi-touch attribution, computed from rollups the
//! [`rollup`] pass maintains from the event store (never by scanning all
//! events per request).
//!
//! - [`attribution`]: touchpoints and the six models, pure functions.
//! - [`deal`]: deal state and stage history from `deal.stage_changed` events.
//! - [`rollup`]: the batched background pass that keeps the rollups current.
//! - this module: each report as one [`Table`] (columns, rows, totals), so
//!   the API, CSV export and dashboard share one shape.

pub mod attribution;
pub mod config;
pub mod deal;
pub mod kpi;
pub mod rollup;
pub mod writeback;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use serde::Serialize;
use serde_json::{Value, json};

pub use config::ReportsConfig;

use crate::store::{CampaignCost, CreditRow, DealRow, LeadRow, StagePeriod, Store, StoreResult};

/// The reports, by their path segment under `/api/v1/reports/`.
pub const REPORTS: [(&str, &str); 9] = [
    ("funnel", "Funnel by stage"),
    ("velocity", "Pipeline velocity"),
    ("win-rates", "Win rate and deal size"),
    ("time-in-stage", "Time in stage"),
    ("outliers", "Stage duration outliers"),
    ("channels", "Channel contribution and ROI"),
    ("attribution", "Attribution by model"),
    ("forecast", "Weighted pipeline forecast"),
    ("forecast-accuracy", "Forecast accuracy"),
];

/// Which deals and leads a report looks at.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// `form:NAME`, `source:NAME`, `api:NAME` of the person's first lead
    /// event, or just a form name.
    pub form: Option<String>,
    /// First-touch source (`utm_source` or referrer host).
    pub source: Option<String>,
    pub campaign: Option<String>,
    pub channel: Option<String>,
    pub owner: Option<String>,
    /// An owner group (`[[owners]] groups`): deals of its owners.
    pub team: Option<String>,
    /// `source`, `campaign`, `channel`, `form` or `owner` (win rates, channels).
    pub by: Option<String>,
    /// Attribution model (channels, attribution); default `linear`.
    pub model: Option<String>,
}

/// A report: named columns, rows of cells, totals.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Table {
    pub report: String,
    pub title: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub columns: Vec<String>,
    /// One array per row, cells in column order (text, number or null).
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub rows: Vec<Vec<Value>>,
    /// Figures of the whole report (counts, rates, velocity…).
    #[schema(value_type = Object)]
    pub totals: BTreeMap<String, Value>,
}

impl Table {
    pub(crate) fn new(
        report: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        columns: &[&str],
    ) -> Self {
        Table {
            report: report.to_string(),
            title: REPORTS
                .iter()
                .find(|(r, _)| *r == report)
                .map(|(_, t)| t.to_string())
                .unwrap_or_default(),
            since,
            until,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            totals: BTreeMap::new(),
        }
    }

    pub(crate) fn total(&mut self, name: &str, v: impl Into<Value>) {
        self.totals.insert(name.to_string(), v.into());
    }

    /// The table as CSV (RFC 4180, header row first). Cells that a
    /// spreadsheet would run as a formula are prefixed with `'`.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, cells: Vec<String>| {
            let cells: Vec<String> = cells.into_iter().map(|c| csv_cell(&c)).collect();
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        };
        line(&mut out, self.columns.clone());
        for row in &self.rows {
            line(
                &mut out,
                row.iter()
                    .map(|v| match v {
                        Value::Null => String::new(),
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            );
        }
        out
    }
}

fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Rounds for display and JSON (4 decimals).
pub(crate) fn r4(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 10_000.0).round() / 10_000.0)
    } else {
        Value::Null
    }
}

pub(crate) fn ratio(a: f64, b: f64) -> Value {
    if b > 0.0 { r4(a / b) } else { Value::Null }
}

fn hours(d: Duration) -> f64 {
    d.num_milliseconds() as f64 / 3_600_000.0
}

/// Everything a report needs, read once.
struct Data {
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    deals: Vec<DealRow>,
}

impl Filter {
    pub(crate) fn range(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let until = self.until.unwrap_or(now);
        let since = self.since.unwrap_or(until - Duration::days(90));
        (since, until)
    }

    pub(crate) fn matches_dims(
        &self,
        origin: Option<&str>,
        source: Option<&str>,
        campaign: Option<&str>,
        channel: Option<&str>,
    ) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref()
                .is_none_or(|w| have.is_some_and(|h| h.eq_ignore_ascii_case(w)))
        };
        let form_ok = self
            .form
            .as_deref()
            .is_none_or(|f| origin.is_some_and(|o| o == f || o.strip_prefix("form:") == Some(f)));
        form_ok
            && eq(&self.source, source)
            && eq(&self.campaign, campaign)
            && eq(&self.channel, channel)
    }

    fn matches_deal(&self, d: &DealRow, team: &[String]) -> bool {
        let owner_ok = self
            .owner
            .as_deref()
            .is_none_or(|o| d.owner.as_deref() == Some(o));
        let team_ok = self.team.is_none() || d.owner.as_ref().is_some_and(|o| team.contains(o));
        owner_ok
            && team_ok
            && self.matches_dims(
                d.origin.as_deref(),
                d.source.as_deref(),
                d.campaign.as_deref(),
                d.channel.as_deref(),
            )
    }

    fn matches_lead(&self, l: &LeadRow) -> bool {
        self.owner.is_none()
            && self.team.is_none()
            && self.matches_dims(
                Some(&l.origin),
                Some(&l.source),
                Some(&l.campaign),
                Some(&l.channel),
            )
    }
}

/// The owners of a team, by the configured owner groups.
pub(crate) fn team_owners(cfg: &crate::config::Config, team: Option<&str>) -> Vec<String> {
    let Some(team) = team else { return Vec::new() };
    cfg.owners
        .iter()
        .filter(|o| o.groups.iter().any(|g| g == team))
        .flat_map(|o| {
            [
                Some(o.name.clone()),
                o.email.clone(),
                o.hubspot_owner_id.clone(),
                o.pipedrive_user_id.clone(),
                o.salesforce_user_id.clone(),
            ]
        })
        .flatten()
        .collect()
}

/// Errors a report answers with (besides the store's).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReportError {
    #[error("unknown report {0:?}")]
    Unknown(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Computes one report. The rollups catch up first.
pub async fn run(
    store: &dyn Store,
    cfg: &crate::config::Config,
    name: &str,
    filter: &Filter,
    now: DateTime<Utc>,
) -> Result<Table, ReportError> {
    if !REPORTS.iter().any(|(r, _)| *r == name) {
        return Err(ReportError::Unknown(name.to_string()));
    }
    let rc = &cfg.reports;
    let (since, until) = filter.range(now);
    if since > until {
        return Err(ReportError::Invalid {
            field: "since".into(),
            message: "must not be after until".into(),
        });
    }
    if let Some(by) = &filter.by
        && !["source", "campaign", "channel", "form", "owner"].contains(&by.as_str())
    {
        return Err(ReportError::Invalid {
            field: "by".into(),
            message: format!("{by:?} is not one of source, campaign, channel, form, owner"),
        });
    }
    let model = filter.model.as_deref().unwrap_or("linear");
    if attribution::Model::parse(model).is_none() {
        return Err(ReportError::Invalid {
            field: "model".into(),
            message: format!(
                "{model:?} is not one of first_touch, last_touch, linear, u_shaped, w_shaped, time_decay"
            ),
        });
    }
    rollup::catch_up(store, rc, now).await?;
    let team = team_owners(cfg, filter.team.as_deref());
    let load = |since, until| async move {
        let deals = store.report_deals(since, until).await?;
        StoreResult::Ok(
            deals
                .into_iter()
                .filter(|d| filter.matches_deal(d, &team))
                .collect::<Vec<_>>(),
        )
    };
    let table = match name {
        "funnel" => {
            let leads: Vec<LeadRow> = store
                .report_leads(since, until)
                .await?
                .into_iter()
                .filter(|l| filter.matches_lead(l))
                .collect();
            funnel(
                &Data {
                    since,
                    until,
                    deals: load(since, until).await?,
                },
                rc,
                leads.len(),
            )
        }
        "velocity" => velocity(&Data {
            since,
            until,
            deals: load(since, until).await?,
        }),
        "win-rates" => win_rates(
            &Data {
                since,
                until,
                deals: load(since, until).await?,
            },
            filter.by.as_deref().unwrap_or("source"),
        ),
        "time-in-stage" => time_in_stage(
            &Data {
                since,
                until,
                deals: load(since, until).await?,
            },
            now,
        ),
        "outliers" => outliers(
            &Data {
                since,
                until,
                deals: load(since, until).await?,
            },
            now,
        ),
        "channels" | "attribution" => {
            let deals = load(since, until).await?;
            let keep: std::collections::HashSet<&str> =
                deals.iter().map(|d| d.deal_id.as_str()).collect();
            let credits: Vec<CreditRow> = store
                .report_credits(model, since, until)
                .await?
                .into_iter()
                .filter(|c| keep.contains(c.deal_id.as_str()))
                .collect();
            if name == "channels" {
                let costs = store.campaign_costs().await?;
                channels(since, until, model, &credits, &costs, filter.by.as_deref())
            } else {
                attribution_table(since, until, &credits, &deals)
            }
        }
        "forecast" => {
            // Open now, whatever the range: the range picks the close months.
            let open: Vec<DealRow> = load(now, now + Duration::milliseconds(1))
                .await?
                .into_iter()
                .filter(|d| d.status == "open")
                .collect();
            forecast(since, until, &open)
        }
        _ => forecast_accuracy(
            &Data {
                since,
                until,
                deals: load(since, until).await?,
            },
            rc,
            now,
        ),
    };
    Ok(table)
}

/// The stages in funnel order: configured, else by how many deals reached them.
fn stage_order(deals: &[DealRow], rc: &ReportsConfig) -> Vec<(String, u64)> {
    let mut reached: HashMap<String, u64> = HashMap::new();
    for d in deals {
        let mut seen: Vec<&str> = d.periods.iter().map(|p| p.stage.as_str()).collect();
        seen.sort_unstable();
        seen.dedup();
        for s in seen {
            *reached.entry(s.to_string()).or_default() += 1;
        }
    }
    if !rc.stages.is_empty() {
        return rc
            .stages
            .iter()
            .map(|s| (s.clone(), reached.get(s).copied().unwrap_or(0)))
            .collect();
    }
    let mut v: Vec<(String, u64)> = reached.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// Leads → opportunities → each stage reached → won, with conversion rates.
/// Deals created in the range.
fn funnel(data: &Data, rc: &ReportsConfig, leads: usize) -> Table {
    let mut t = Table::new(
        "funnel",
        data.since,
        data.until,
        &[
            "step",
            "count",
            "conversion_from_previous",
            "conversion_from_first",
        ],
    );
    let created: Vec<DealRow> = data
        .deals
        .iter()
        .filter(|d| d.created_at >= data.since)
        .cloned()
        .collect();
    let won = created.iter().filter(|d| d.status == "won").count() as u64;
    let mut steps: Vec<(String, u64)> = vec![
        ("leads".into(), leads as u64),
        ("opportunities".into(), created.len() as u64),
    ];
    steps.extend(
        stage_order(&created, rc)
            .into_iter()
            .map(|(s, n)| (format!("stage: {s}"), n)),
    );
    steps.push(("won".into(), won));
    let first = steps[0].1 as f64;
    let mut prev: Option<f64> = None;
    for (step, n) in &steps {
        t.rows.push(vec![
            json!(step),
            json!(n),
            prev.map(|p| ratio(*n as f64, p)).unwrap_or(Value::Null),
            ratio(*n as f64, first),
        ]);
        prev = Some(*n as f64);
    }
    t.total("leads", leads);
    t.total("opportunities", created.len());
    t.total("won", won);
    t.total(
        "lead_to_opportunity",
        ratio(created.len() as f64, leads as f64),
    );
    t.total(
        "opportunity_to_won",
        ratio(won as f64, created.len() as f64),
    );
    t
}

fn closed_in<'a>(data: &'a Data, status: &'a str) -> impl Iterator<Item = &'a DealRow> + 'a {
    data.deals.iter().filter(move |d| {
        d.status == status
            && d.closed_at
                .is_some_and(|c| c >= data.since && c < data.until)
    })
}

/// Open opportunities × average won deal × win rate ÷ sales cycle (days).
fn velocity(data: &Data) -> Table {
    let mut t = Table::new("velocity", data.since, data.until, &["metric", "value"]);
    let open = data
        .deals
        .iter()
        .filter(|d| d.created_at < data.until && d.closed_at.is_none_or(|c| c >= data.until))
        .count() as f64;
    let won: Vec<&DealRow> = closed_in(data, "won").collect();
    let lost = closed_in(data, "lost").count() as f64;
    let n_won = won.len() as f64;
    let avg_size = if won.is_empty() {
        0.0
    } else {
        won.iter().map(|d| d.amount.unwrap_or(0.0)).sum::<f64>() / n_won
    };
    let win_rate = if n_won + lost > 0.0 {
        n_won / (n_won + lost)
    } else {
        0.0
    };
    let cycle_days = if won.is_empty() {
        0.0
    } else {
        won.iter()
            .map(|d| hours(d.closed_at.unwrap_or(d.created_at) - d.created_at) / 24.0)
            .sum::<f64>()
            / n_won
    };
    let velocity = if cycle_days > 0.0 {
        open * avg_size * win_rate / cycle_days
    } else {
        0.0
    };
    for (k, v) in [
        ("open_opportunities", open),
        ("won_deals", n_won),
        ("lost_deals", lost),
        ("average_won_deal", avg_size),
        ("win_rate", win_rate),
        ("sales_cycle_days", cycle_days),
        ("velocity_per_day", velocity),
    ] {
        t.rows.push(vec![json!(k), r4(v)]);
        t.total(k, r4(v));
    }
    t
}

fn dim<'a>(d: &'a DealRow, by: &str) -> &'a str {
    let v = match by {
        "campaign" => d.campaign.as_deref(),
        "channel" => d.channel.as_deref(),
        "form" => d.origin.as_deref(),
        "owner" => d.owner.as_deref(),
        _ => d.source.as_deref(),
    };
    v.unwrap_or("(unknown)")
}

/// Per source (campaign, channel, form, owner): deals closed in the range,
/// won, lost, win rate, average and total won amount.
fn win_rates(data: &Data, by: &str) -> Table {
    let mut t = Table::new(
        "win-rates",
        data.since,
        data.until,
        &[
            by,
            "won",
            "lost",
            "win_rate",
            "average_deal_size",
            "won_amount",
        ],
    );
    let mut g: BTreeMap<String, (u64, u64, f64)> = BTreeMap::new();
    for d in closed_in(data, "won") {
        let e = g.entry(dim(d, by).to_string()).or_default();
        e.0 += 1;
        e.2 += d.amount.unwrap_or(0.0);
    }
    for d in closed_in(data, "lost") {
        g.entry(dim(d, by).to_string()).or_default().1 += 1;
    }
    let (mut tw, mut tl, mut ta) = (0, 0, 0.0);
    for (k, (w, l, a)) in g {
        t.rows.push(vec![
            json!(k),
            json!(w),
            json!(l),
            ratio(w as f64, (w + l) as f64),
            ratio(a, w as f64),
            r4(a),
        ]);
        tw += w;
        tl += l;
        ta += a;
    }
    t.total("won", tw);
    t.total("lost", tl);
    t.total("win_rate", ratio(tw as f64, (tw + tl) as f64));
    t.total("average_deal_size", ratio(ta, tw as f64));
    t.total("won_amount", r4(ta));
    t
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// Finished stays per stage that began in the range, in hours.
fn stays(data: &Data) -> BTreeMap<String, Vec<(f64, String, StagePeriod)>> {
    let mut g: BTreeMap<String, Vec<(f64, String, StagePeriod)>> = BTreeMap::new();
    for d in &data.deals {
        for p in &d.periods {
            if p.entered_at < data.since || p.entered_at >= data.until {
                continue;
            }
            if let Some(left) = p.left_at {
                g.entry(p.stage.clone()).or_default().push((
                    hours(left - p.entered_at),
                    d.deal_id.clone(),
                    p.clone(),
                ));
            }
        }
    }
    for v in g.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    g
}

/// Per stage: finished stays, average, median and 90th percentile hours,
/// and deals in the stage now.
fn time_in_stage(data: &Data, now: DateTime<Utc>) -> Table {
    let mut t = Table::new(
        "time-in-stage",
        data.since,
        data.until,
        &[
            "stage",
            "stays",
            "average_hours",
            "median_hours",
            "p90_hours",
            "in_stage_now",
        ],
    );
    let g = stays(data);
    let mut now_in: BTreeMap<&str, u64> = BTreeMap::new();
    for d in &data.deals {
        if d.status == "open"
            && let Some(p) = d.periods.last()
            && p.left_at.is_none()
            && p.entered_at <= now
        {
            *now_in.entry(p.stage.as_str()).or_default() += 1;
        }
    }
    let mut stages: Vec<&str> = g.keys().map(String::as_str).collect();
    stages.extend(now_in.keys().copied());
    stages.sort_unstable();
    stages.dedup();
    for s in stages {
        let h: Vec<f64> = g
            .get(s)
            .map(|v| v.iter().map(|x| x.0).collect())
            .unwrap_or_default();
        let avg = if h.is_empty() {
            Value::Null
        } else {
            r4(h.iter().sum::<f64>() / h.len() as f64)
        };
        let pct = |p| {
            if h.is_empty() {
                Value::Null
            } else {
                r4(percentile(&h, p))
            }
        };
        t.rows.push(vec![
            json!(s),
            json!(h.len()),
            avg,
            pct(0.5),
            pct(0.9),
            json!(now_in.get(s).copied().unwrap_or(0)),
        ]);
    }
    t
}

/// Stays (finished, or still open at `now`) longer than the stage's
/// Tukey fence: 75th percentile + 1.5 × interquartile range of its finished
/// stays (needs 4 of them).
fn outliers(data: &Data, now: DateTime<Utc>) -> Table {
    let mut t = Table::new(
        "outliers",
        data.since,
        data.until,
        &[
            "deal_id",
            "stage",
            "hours",
            "threshold_hours",
            "median_hours",
            "still_in_stage",
            "owner",
        ],
    );
    let g = stays(data);
    let fences: BTreeMap<&str, (f64, f64)> = g
        .iter()
        .filter(|(_, v)| v.len() >= 4)
        .map(|(s, v)| {
            let h: Vec<f64> = v.iter().map(|x| x.0).collect();
            let (q1, q3) = (percentile(&h, 0.25), percentile(&h, 0.75));
            (s.as_str(), (q3 + 1.5 * (q3 - q1), percentile(&h, 0.5)))
        })
        .collect();
    let mut rows: Vec<(f64, Vec<Value>)> = Vec::new();
    for d in &data.deals {
        for p in &d.periods {
            if p.entered_at < data.since || p.entered_at >= data.until {
                continue;
            }
            let Some((fence, median)) = fences.get(p.stage.as_str()) else {
                continue;
            };
            let open = p.left_at.is_none() && d.status == "open";
            if p.left_at.is_none() && !open {
                continue;
            }
            let h = hours(p.left_at.unwrap_or(now) - p.entered_at);
            if h > *fence {
                rows.push((
                    h,
                    vec![
                        json!(d.deal_id),
                        json!(p.stage),
                        r4(h),
                        r4(*fence),
                        r4(*median),
                        json!(open),
                        json!(d.owner),
                    ],
                ));
            }
        }
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    t.total("outliers", rows.len());
    t.rows = rows.into_iter().map(|(_, r)| r).collect();
    t
}

/// Months `YYYY-MM` that overlap `[since, until)`.
fn months(since: DateTime<Utc>, until: DateTime<Utc>) -> Vec<String> {
    let mut out = Vec::new();
    let (mut y, mut m) = (since.year(), since.month());
    loop {
        let start = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single();
        match start {
            Some(s) if s < until => out.push(format!("{y:04}-{m:02}")),
            _ => break,
        }
        if out.len() > 1200 {
            break;
        }
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    }
    out
}

/// Attributed revenue per channel (or `by` campaign/source) under one
/// model, with the imported cost of the range's months and ROI.
fn channels(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    model: &str,
    credits: &[CreditRow],
    costs: &[CampaignCost],
    by: Option<&str>,
) -> Table {
    let by = match by {
        Some("campaign") => "campaign",
        Some("source") => "source",
        _ => "channel",
    };
    let mut t = Table::new(
        "channels",
        since,
        until,
        &[
            by,
            "deals",
            "conversions",
            "revenue",
            "share",
            "cost",
            "roi",
        ],
    );
    let key = |c: &CreditRow| match by {
        "campaign" => c.campaign.clone(),
        "source" => c.source.clone(),
        _ => c.channel.clone(),
    };
    let mut g: BTreeMap<String, (std::collections::BTreeSet<String>, f64, f64)> = BTreeMap::new();
    for c in credits {
        let e = g.entry(key(c)).or_default();
        e.0.insert(c.deal_id.clone());
        e.1 += c.credit;
        e.2 += c.revenue;
    }
    let in_range = months(since, until);
    let mut cost_of: BTreeMap<String, f64> = BTreeMap::new();
    // Which channel each campaign's credits went to (for costs without one).
    let mut campaign_channel: HashMap<&str, &str> = HashMap::new();
    for c in credits {
        campaign_channel
            .entry(c.campaign.as_str())
            .or_insert(c.channel.as_str());
    }
    for k in costs.iter().filter(|k| in_range.contains(&k.month)) {
        let name = match by {
            "campaign" => Some(k.campaign.clone()),
            "channel" => k.channel.clone().or_else(|| {
                campaign_channel
                    .get(k.campaign.as_str())
                    .map(|s| s.to_string())
            }),
            _ => None,
        };
        if let Some(n) = name {
            *cost_of.entry(n.clone()).or_default() += k.cost;
            g.entry(n).or_default();
        }
    }
    let total: f64 = g.values().map(|v| v.2).sum();
    let total_cost: f64 = cost_of.values().sum();
    for (k, (deals, conv, rev)) in &g {
        let cost = cost_of.get(k).copied();
        t.rows.push(vec![
            json!(k),
            json!(deals.len()),
            r4(*conv),
            r4(*rev),
            ratio(*rev, total),
            cost.map(r4).unwrap_or(Value::Null),
            cost.filter(|c| *c > 0.0)
                .map(|c| r4((rev - c) / c))
                .unwrap_or(Value::Null),
        ]);
    }
    t.total("model", model);
    t.total("revenue", r4(total));
    t.total("cost", r4(total_cost));
    t.total(
        "roi",
        if total_cost > 0.0 {
            r4((total - total_cost) / total_cost)
        } else {
            Value::Null
        },
    );
    t
}

/// Every closed-won deal's credits under the chosen model, and the share of
/// won deals that have any (attribution coverage).
fn attribution_table(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    credits: &[CreditRow],
    deals: &[DealRow],
) -> Table {
    let mut t = Table::new(
        "attribution",
        since,
        until,
        &[
            "deal_id",
            "channel",
            "source",
            "campaign",
            "credit",
            "revenue",
            "closed_at",
        ],
    );
    let mut sorted: Vec<&CreditRow> = credits.iter().collect();
    sorted.sort_by(|a, b| {
        (a.closed_at, &a.deal_id, &a.campaign).cmp(&(b.closed_at, &b.deal_id, &b.campaign))
    });
    for c in sorted {
        t.rows.push(vec![
            json!(c.deal_id),
            json!(c.channel),
            json!(c.source),
            json!(c.campaign),
            r4(c.credit),
            r4(c.revenue),
            json!(c.closed_at),
        ]);
    }
    let won: Vec<&DealRow> = deals
        .iter()
        .filter(|d| d.status == "won" && d.closed_at.is_some_and(|c| c >= since && c < until))
        .collect();
    let with: std::collections::HashSet<&str> =
        credits.iter().map(|c| c.deal_id.as_str()).collect();
    let covered = won
        .iter()
        .filter(|d| with.contains(d.deal_id.as_str()))
        .count();
    t.total("won_deals", won.len());
    t.total("attributed_deals", covered);
    t.total("coverage", ratio(covered as f64, won.len() as f64));
    t
}

/// Open deals' amount × probability by expected close month within the
/// range (deals without a date under `unscheduled`).
fn forecast(since: DateTime<Utc>, until: DateTime<Utc>, open: &[DealRow]) -> Table {
    let mut t = Table::new(
        "forecast",
        since,
        until,
        &["close_month", "deals", "pipeline", "weighted"],
    );
    let mut g: BTreeMap<String, (u64, f64, f64)> = BTreeMap::new();
    for d in open {
        let month = match d.expected_close {
            Some(c) if c >= since && c < until => format!("{:04}-{:02}", c.year(), c.month()),
            Some(_) => continue,
            None => "unscheduled".into(),
        };
        let e = g.entry(month).or_default();
        let amount = d.amount.unwrap_or(0.0);
        e.0 += 1;
        e.1 += amount;
        e.2 += amount * d.probability.unwrap_or(0.0);
    }
    let (mut n, mut p, mut w) = (0, 0.0, 0.0);
    for (m, (deals, pipe, weighted)) in g {
        t.rows
            .push(vec![json!(m), json!(deals), r4(pipe), r4(weighted)]);
        n += deals;
        p += pipe;
        w += weighted;
    }
    t.total("deals", n);
    t.total("pipeline", r4(p));
    t.total("weighted", r4(w));
    t
}

/// The stage a deal was in at `at` (None: not yet created, or closed).
fn stage_at(d: &DealRow, at: DateTime<Utc>) -> Option<&str> {
    d.periods
        .iter()
        .rev()
        .find(|p| p.entered_at <= at && p.left_at.is_none_or(|l| l > at))
        .map(|p| p.stage.as_str())
}

/// Per month of the range: the weighted forecast as it stood at the start
/// of the month (deals open then with an expected close in the month,
/// weighted by the probability of the stage they were in) against the
/// amount won in the month; accuracy = 1 − |won − forecast| / max(won, forecast).
fn forecast_accuracy(data: &Data, rc: &ReportsConfig, now: DateTime<Utc>) -> Table {
    let mut t = Table::new(
        "forecast-accuracy",
        data.since,
        data.until,
        &["month", "forecast", "won", "error", "accuracy"],
    );
    let mut acc_sum = 0.0;
    let mut acc_n = 0;
    for m in months(data.since, data.until) {
        let Some(start) = chrono::NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc())
        else {
            continue;
        };
        if start > now {
            break;
        }
        let in_month = |c: DateTime<Utc>| format!("{:04}-{:02}", c.year(), c.month()) == m;
        let mut forecast = 0.0;
        for d in &data.deals {
            if d.created_at > start || d.closed_at.is_some_and(|c| c <= start) {
                continue;
            }
            if !d.expected_close.is_some_and(in_month) {
                continue;
            }
            let p = stage_at(d, start)
                .and_then(|s| rc.probabilities.get(s).copied())
                .or(d.probability)
                .unwrap_or(0.0);
            forecast += d.amount.unwrap_or(0.0) * p;
        }
        let won: f64 = data
            .deals
            .iter()
            .filter(|d| d.status == "won" && d.closed_at.is_some_and(in_month))
            .map(|d| d.amount.unwrap_or(0.0))
            .sum();
        let denom = won.max(forecast);
        let accuracy = if denom > 0.0 {
            Some(1.0 - (won - forecast).abs() / denom)
        } else {
            None
        };
        if let Some(a) = accuracy {
            acc_sum += a;
            acc_n += 1;
        }
        t.rows.push(vec![
            json!(m),
            r4(forecast),
            r4(won),
            r4(won - forecast),
            accuracy.map(r4).unwrap_or(Value::Null),
        ]);
    }
    t.total("average_accuracy", ratio(acc_sum, acc_n as f64));
    t
}

/// Parses a campaign cost CSV: a header naming `campaign`, `month`
/// (`YYYY-MM`) and `cost`, optionally `channel`; one cost per line.
/// Errors name the line and column.
pub fn parse_costs(csv: &str) -> Result<Vec<CampaignCost>, Vec<(String, String)>> {
    let mut lines = csv
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(vec![(
            "line 1".into(),
            "empty: expected a header campaign,month,cost[,channel]".into(),
        )]);
    };
    let cols: Vec<String> = split_csv_line(header)
        .into_iter()
        .map(|c| c.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let idx = |name: &str| cols.iter().position(|c| c == name);
    let (Some(ci), Some(mi), Some(ki)) = (idx("campaign"), idx("month"), idx("cost")) else {
        return Err(vec![(
            "line 1".into(),
            format!("header {cols:?} must name campaign, month and cost (and may name channel)"),
        )]);
    };
    let chi = idx("channel");
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in lines {
        let at = format!("line {}", n + 1);
        let cells = split_csv_line(line);
        let cell = |i: usize| {
            cells
                .get(i)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let campaign = cell(ci);
        let month = cell(mi);
        let cost = cell(ki);
        if campaign.is_empty() {
            errors.push((format!("{at}: campaign"), "is empty".into()));
            continue;
        }
        let month_ok = month.len() == 7
            && chrono::NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").is_ok();
        if !month_ok {
            errors.push((format!("{at}: month"), format!("{month:?} is not YYYY-MM")));
            continue;
        }
        match cost.parse::<f64>() {
            Ok(c) if c.is_finite() && c >= 0.0 => out.push(CampaignCost {
                campaign,
                month,
                channel: chi.map(cell).filter(|c| !c.is_empty()),
                cost: c,
            }),
            _ => errors.push((
                format!("{at}: cost"),
                format!("{cost:?} is not a number ≥ 0"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Splits one CSV line (double-quoted cells with `""` escapes).
fn split_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match (ch, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests;
