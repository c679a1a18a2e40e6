//! KPIs with targets (the seed's list), computed from what the store
//! already keeps: delivery attempts, the report rollups (response clocks,
//! handoffs, hourly data-quality counters) and the per-minute ingest
//! heartbeats. [`watch`] raises an `[alerts]` alert when a KPI stays below
//! its target for `reports.kpis.alert_after`, and a notice when it recovers.

use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use leadrelay_model::CONTACT_FIELDS;

use crate::config::HumanDuration;
use crate::delivery::AlertMonitor;
use crate::store::{Store, StoreResult};

/// `[reports.kpis]`: the window KPIs are computed over, their targets, what
/// the lead response clock and data quality look at, and alerting.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KpiConfig {
    /// The window each KPI is computed over, ending now.
    pub window: HumanDuration,
    /// Share of delivery attempts that succeeded (throttled ones excluded).
    pub sync_success_rate: f64,
    /// Share of deals won in the window that have attribution credits.
    pub attribution_coverage: f64,
    /// Hours from MQL to first sales activity (at most).
    pub lead_response_hours: f64,
    /// Share of leads with every required field present and valid.
    pub data_quality: f64,
    /// Share of handoffs completed (owner assigned and notified).
    pub handoff_completion: f64,
    /// Share of minutes ingest was up.
    pub uptime: f64,
    /// Events that start a person's response clock (the first one counts).
    pub mql_events: Vec<String>,
    /// Events that are a sales activity (stop the clock).
    pub activity_events: Vec<String>,
    /// Contact fields every lead should carry, present and valid
    /// (`email`, `phone`, `first_name`, …, or `custom.NAME`).
    pub required_fields: Vec<String>,
    /// How long a KPI stays below target before an alert goes out.
    pub alert_after: HumanDuration,
    /// How often KPIs are checked for alerts.
    pub check_interval: HumanDuration,
}

impl Default for KpiConfig {
    fn default() -> Self {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self {
            window: HumanDuration::secs(86_400),
            sync_success_rate: 0.995,
            attribution_coverage: 0.9,
            lead_response_hours: 4.0,
            data_quality: 0.95,
            handoff_completion: 0.98,
            uptime: 0.999,
            mql_events: list(&["lead.qualified"]),
            activity_events: list(&["activity.logged", "meeting.booked", "reply.received"]),
            required_fields: list(&["email", "first_name", "last_name", "company"]),
            alert_after: HumanDuration::secs(3600),
            check_interval: HumanDuration::secs(60),
        }
    }
}

/// Values people type when they do not want to answer.
const PLACEHOLDERS: [&str; 12] = [
    "-", "--", ".", "n/a", "na", "none", "null", "unknown", "test", "asdf", "xxx", "tbd",
];

impl KpiConfig {
    /// Problems in the section, for `leadrelay check`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, v) in [
            ("sync_success_rate", self.sync_success_rate),
            ("attribution_coverage", self.attribution_coverage),
            ("data_quality", self.data_quality),
            ("handoff_completion", self.handoff_completion),
            ("uptime", self.uptime),
        ] {
            if !(0.0..=1.0).contains(&v) {
                out.push(format!(
                    "reports.kpis.{name} = {v}: a target share is between 0 and 1"
                ));
            }
        }
        if !(self.lead_response_hours.is_finite() && self.lead_response_hours > 0.0) {
            out.push(format!(
                "reports.kpis.lead_response_hours = {}: must be more than 0",
                self.lead_response_hours
            ));
        }
        if self.window.get().is_zero() {
            out.push("reports.kpis.window must be longer than 0s".to_string());
        }
        if self.check_interval.get().is_zero() {
            out.push("reports.kpis.check_interval must be longer than 0s".to_string());
        }
        for f in &self.required_fields {
            let custom = f.strip_prefix("custom.").is_some_and(|n| !n.is_empty());
            if !custom && !CONTACT_FIELDS.contains(&f.as_str()) {
                out.push(format!(
                    "reports.kpis.required_fields: unknown field {f:?} (use {} or custom.NAME)",
                    CONTACT_FIELDS.join(", ")
                ));
            }
        }
        out
    }
}

/// Whether a lead's contact data has every required field (`complete`)
/// and whether the ones present are valid (`valid`).
pub fn quality(contact: &Map<String, Value>, required: &[String]) -> (bool, bool) {
    let mut complete = true;
    let mut valid = true;
    for f in required {
        let full_name;
        let v = match f.strip_prefix("custom.") {
            Some(name) => contact.get("custom").and_then(|c| c.get(name)),
            None if f == "full_name" => {
                let part = |k: &str| contact.get(k).and_then(Value::as_str).unwrap_or_default();
                full_name = Value::String(format!("{} {}", part("first_name"), part("last_name")));
                Some(&full_name)
            }
            None => contact.get(f.as_str()),
        };
        let text = match v {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.trim().to_string()),
            Some(Value::Array(a)) if a.is_empty() => None,
            Some(other) => Some(other.to_string()),
        };
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            complete = false;
            continue;
        };
        if !field_valid(f, &text) {
            valid = false;
        }
    }
    (complete, valid)
}

fn field_valid(field: &str, v: &str) -> bool {
    if PLACEHOLDERS.iter().any(|p| p.eq_ignore_ascii_case(v)) {
        return false;
    }
    match field {
        "email" => leadrelay_model::EmailAddress::parse(v).is_ok(),
        "phone" => leadrelay_model::PhoneE164::parse(v, None).is_ok(),
        "domain" | "website" => {
            let host = v
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default();
            host.contains('.')
                && !host.starts_with('.')
                && !host.ends_with('.')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == ':')
        }
        "first_name" | "last_name" | "full_name" | "city" | "region" | "country" => {
            v.chars().any(|c| c.is_alphabetic()) && !v.contains('@')
        }
        _ => true,
    }
}

/// The kpi names of the hourly data-quality counters.
pub const DATA_QUALITY: &str = "data_quality";
pub const DATA_QUALITY_COMPLETE: &str = "data_quality.complete";
pub const DATA_QUALITY_VALID: &str = "data_quality.valid";

/// One KPI against its target.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Kpi {
    pub name: String,
    /// None when not measured, or when the window had nothing to measure.
    pub value: Option<f64>,
    pub target: f64,
    /// `at_least` or `at_most`.
    pub comparison: String,
    /// None when there is no value.
    pub met: Option<bool>,
    /// Whether leadrelay measures this KPI (every one of the seed's six is).
    pub measured: bool,
    /// What the value is made of (`995 of 1000 attempts`).
    pub detail: String,
}

fn kpi(name: &str, value: Option<f64>, target: f64, at_most: bool, detail: String) -> Kpi {
    Kpi {
        name: name.to_string(),
        value,
        target,
        comparison: if at_most { "at_most" } else { "at_least" }.to_string(),
        met: value.map(|v| if at_most { v <= target } else { v >= target }),
        measured: true,
        detail,
    }
}

/// Every KPI over the window ending at `now`.
pub async fn compute(
    store: &dyn Store,
    cfg: &KpiConfig,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Kpi>> {
    let since = now - Duration::from_std(cfg.window.get()).unwrap_or(Duration::days(1));
    let stats = store.destination_stats(since).await?;
    let (ok, failed) = stats.iter().fold((0u64, 0u64), |(o, f), s| {
        (o + s.window_succeeded, f + s.window_failed)
    });
    let sync = kpi(
        "sync_success_rate",
        (ok + failed > 0).then(|| ok as f64 / (ok + failed) as f64),
        cfg.sync_success_rate,
        false,
        format!("{ok} of {} attempts succeeded", ok + failed),
    );
    let won: Vec<String> = store
        .report_deals(since, now)
        .await?
        .into_iter()
        .filter(|d| d.status == "won" && d.closed_at.is_some_and(|c| c >= since && c < now))
        .map(|d| d.deal_id)
        .collect();
    let credited: std::collections::BTreeSet<String> = store
        .report_credits("linear", since, now)
        .await?
        .into_iter()
        .map(|c| c.deal_id)
        .collect();
    let covered = won.iter().filter(|d| credited.contains(*d)).count();
    let coverage = kpi(
        "attribution_coverage",
        (!won.is_empty()).then(|| covered as f64 / won.len() as f64),
        cfg.attribution_coverage,
        false,
        format!("{covered} of {} won deals attributed", won.len()),
    );
    let response = lead_response(store, cfg, since, now).await?;
    let quality = data_quality(store, cfg, since, now).await?;
    let handoff = handoff_completion(store, cfg, since, now).await?;
    let uptime = uptime(store, cfg, since, now).await?;
    Ok(vec![sync, coverage, response, quality, handoff, uptime])
}

fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    (n > 0).then(|| {
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    })
}

/// Average hours from MQL to the first sales activity of people who became
/// MQL in the window. Those still waiting count once they are past the
/// target (at their time so far), so silence never flatters the value.
async fn lead_response(
    store: &dyn Store,
    cfg: &KpiConfig,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<Kpi> {
    let hours = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_milliseconds() as f64 / 3.6e6;
    let rows = store.report_responses(since, now).await?;
    let mut measured = Vec::new();
    let (mut answered, mut overdue, mut waiting) = (0usize, 0usize, 0usize);
    for r in &rows {
        match r.responded_at {
            Some(at) => {
                answered += 1;
                measured.push(hours(r.mql_at, at).max(0.0));
            }
            None if hours(r.mql_at, now) > cfg.lead_response_hours => {
                overdue += 1;
                measured.push(hours(r.mql_at, now));
            }
            None => waiting += 1,
        }
    }
    let mean = (!measured.is_empty()).then(|| measured.iter().sum::<f64>() / measured.len() as f64);
    let within = measured
        .iter()
        .filter(|h| **h <= cfg.lead_response_hours)
        .count();
    let med = median(&mut measured);
    Ok(kpi(
        "lead_response_hours",
        mean,
        cfg.lead_response_hours,
        true,
        format!(
            "{} MQLs: {answered} answered, {overdue} unanswered past the target, {waiting} waiting; \
             {within} within target; median {}",
            rows.len(),
            med.map_or("-".to_string(), |m| format!("{m:.2} h"))
        ),
    ))
}

/// Share of lead events (received in the window, hourly) whose required
/// fields are all present and valid.
async fn data_quality(
    store: &dyn Store,
    cfg: &KpiConfig,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<Kpi> {
    let counts = store.report_kpi_counts(hour_of(since), now).await?;
    let get = |k: &str| {
        counts
            .iter()
            .find(|(n, _, _)| n == k)
            .map_or((0, 0), |(_, a, b)| (*a, *b))
    };
    let (ok, n) = get(DATA_QUALITY);
    let (complete, _) = get(DATA_QUALITY_COMPLETE);
    let (valid, _) = get(DATA_QUALITY_VALID);
    Ok(kpi(
        "data_quality",
        (n > 0).then(|| ok as f64 / n as f64),
        cfg.data_quality,
        false,
        format!(
            "{ok} of {n} leads complete and valid ({complete} complete, {valid} valid) in [{}]",
            cfg.required_fields.join(", ")
        ),
    ))
}

/// Share of handoffs in the window with an owner and every notification
/// delivered; handoffs whose deliveries are still in flight are left out.
async fn handoff_completion(
    store: &dyn Store,
    cfg: &KpiConfig,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<Kpi> {
    let outcomes = store.report_handoffs(since, now).await?;
    let (mut done, mut failed, mut pending, mut no_owner, mut unrouted) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for o in &outcomes {
        if !o.owner {
            no_owner += 1;
            failed += 1;
        } else if o.deliveries == 0 {
            unrouted += 1;
            failed += 1;
        } else if o.failed > 0 {
            failed += 1;
        } else if o.delivered == o.deliveries {
            done += 1;
        } else {
            pending += 1;
        }
    }
    Ok(kpi(
        "handoff_completion",
        (done + failed > 0).then(|| done as f64 / (done + failed) as f64),
        cfg.handoff_completion,
        false,
        format!(
            "{done} of {} handoffs completed ({no_owner} without an owner, {unrouted} with no \
             notification route, {pending} still delivering)",
            done + failed
        ),
    ))
}

fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::hours(1)).unwrap_or(t)
}

fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::minutes(1)).unwrap_or(t)
}

/// Share of whole minutes in the window (from the first heartbeat ever, if
/// later) in which a node serving ingest recorded its heartbeat.
async fn uptime(
    store: &dyn Store,
    cfg: &KpiConfig,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<Kpi> {
    let end = minute_of(now);
    let (_, first) = store.heartbeats(end, end).await?;
    let start = match first {
        Some(f) => minute_of(since).max(f),
        None => end,
    };
    let minutes = (end - start).num_minutes().max(0) as u64;
    let (up, _) = store.heartbeats(start, end).await?;
    let up = up.min(minutes);
    Ok(kpi(
        "uptime",
        (minutes > 0).then(|| up as f64 / minutes as f64),
        cfg.uptime,
        false,
        format!("ingest up in {up} of {minutes} minutes"),
    ))
}

/// Records a heartbeat for the current minute every 20 seconds while ingest
/// is served, until shutdown.
pub async fn heartbeat(store: Arc<dyn Store>, shutdown: CancellationToken) {
    loop {
        if let Err(e) = store.record_heartbeat(minute_of(Utc::now())).await {
            tracing::warn!(error = %e, "recording the uptime heartbeat failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(20)) => {}
        }
    }
}

fn below_key(name: &str) -> String {
    format!("kpi_below:{name}")
}

/// Checks every KPI once: one that has been below target (`met: false`) for
/// `alert_after` opens an alert; one back at target closes it with a notice.
/// A KPI with nothing to measure keeps its state.
pub async fn check_alerts(
    store: &dyn Store,
    cfg: &KpiConfig,
    alerts: &AlertMonitor,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let after = Duration::from_std(cfg.alert_after.get()).unwrap_or(Duration::hours(1));
    for k in compute(store, cfg, now).await? {
        let key = below_key(&k.name);
        let since: Option<DateTime<Utc>> = store
            .kv_get(&key)
            .await?
            .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
            .map(|t| t.with_timezone(&Utc));
        let (firing, cleared) = match k.met {
            Some(false) => {
                let since = match since {
                    Some(s) => s,
                    None => {
                        store.kv_set(&key, &now.to_rfc3339()).await?;
                        now
                    }
                };
                (now - since >= after, false)
            }
            Some(true) => {
                if since.is_some() {
                    store.kv_set(&key, "").await?;
                }
                (false, true)
            }
            None => (false, false),
        };
        let value = k.value.map_or("-".to_string(), |v| format!("{v:.4}"));
        let cmp = if k.comparison == "at_most" {
            "at most"
        } else {
            "at least"
        };
        let message = format!(
            "KPI {} is {value}, target {cmp} {} for {} ({})",
            k.name,
            k.target,
            humantime::format_duration(cfg.alert_after.get()),
            k.detail
        );
        alerts
            .kpi_transition(
                &k.name,
                firing,
                cleared,
                &message,
                json!({ "kpi": k.name, "value": k.value, "target": k.target, "comparison": k.comparison }),
            )
            .await?;
    }
    Ok(())
}

/// Runs [`check_alerts`] every `reports.kpis.check_interval` until shutdown.
pub async fn watch(
    store: Arc<dyn Store>,
    cfg: KpiConfig,
    alerts: AlertMonitor,
    shutdown: CancellationToken,
) {
    let every = cfg
        .check_interval
        .get()
        .max(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = check_alerts(store.as_ref(), &cfg, &alerts, Utc::now()).await {
            tracing::warn!(error = %e, "KPI alert check failed");
        }
    }
}
