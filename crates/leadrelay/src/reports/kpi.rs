//! KPIs with targets (the seed's list), computed from what the store
//! already keeps: delivery attempts and the report rollups. A KPI leadrelay
//! cannot measure yet answers `measured: false` rather than a made-up value.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::config::HumanDuration;
use crate::store::{Store, StoreResult};

/// `[reports.kpis]`: the window KPIs are computed over and their targets.
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
    /// Share of time ingest answered.
    pub uptime: f64,
}

impl Default for KpiConfig {
    fn default() -> Self {
        Self {
            window: HumanDuration::secs(86_400),
            sync_success_rate: 0.995,
            attribution_coverage: 0.9,
            lead_response_hours: 4.0,
            data_quality: 0.95,
            handoff_completion: 0.98,
            uptime: 0.999,
        }
    }
}

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
    /// False for a KPI leadrelay does not measure yet.
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

fn unmeasured(name: &str, target: f64, at_most: bool, why: &str) -> Kpi {
    Kpi {
        measured: false,
        ..kpi(name, None, target, at_most, why.to_string())
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
    Ok(vec![
        sync,
        coverage,
        unmeasured(
            "lead_response_hours",
            cfg.lead_response_hours,
            true,
            "not measured yet",
        ),
        unmeasured("data_quality", cfg.data_quality, false, "not measured yet"),
        unmeasured(
            "handoff_completion",
            cfg.handoff_completion,
            false,
            "not measured yet",
        ),
        unmeasured("uptime", cfg.uptime, false, "not measured yet"),
    ])
}
