//! `[reports]`: attribution windows, the deal stages reports know, and how
//! often the rollups catch up with the event store.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::HumanDuration;

/// `[reports]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportsConfig {
    /// How far back before a deal closes a touch still gets credit.
    pub lookback: HumanDuration,
    /// Time-decay model: a touch's credit halves for every `half_life` it
    /// is older than the close.
    pub half_life: HumanDuration,
    /// How often the rollups read new events (reports also catch up before
    /// they answer).
    pub rollup_interval: HumanDuration,
    /// Events younger than this are left for the next pass, so a
    /// transaction that committed late is never skipped.
    pub rollup_lag: HumanDuration,
    /// Events read per rollup transaction. On SQLite a rollup transaction
    /// holds the one writer, which ingest's group commits wait behind: 500
    /// keeps each to a few milliseconds (5,000 showed in ingest's p99).
    pub rollup_batch: usize,
    /// Deal stages (as the CRM names them, compared case-insensitively)
    /// that mean won, when the event has no `status`.
    pub won_stages: Vec<String>,
    /// Deal stages that mean lost.
    pub lost_stages: Vec<String>,
    /// The funnel's stage order. Empty: stages ordered by how many deals
    /// reached them, most first.
    pub stages: Vec<String>,
    /// Win probability (0..=1) per stage for the weighted forecast, used
    /// when a deal event carries no `probability`.
    pub probabilities: BTreeMap<String, f64>,
    /// KPI targets and their window.
    pub kpis: super::kpi::KpiConfig,
    /// Attribution written back to the CRMs when a deal is won.
    pub writeback: WritebackConfig,
}

/// `[reports.writeback]`: when a deal is won, an `attribution.updated`
/// event about its person goes to these destinations, which write the
/// fields their `[destinations.NAME.attribution]` names.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WritebackConfig {
    /// Destinations (by name) that get the event. Empty: none.
    pub destinations: Vec<String>,
    /// The model whose largest credit is the deal's `attributed_*` channel,
    /// source and campaign.
    pub model: String,
}

impl Default for WritebackConfig {
    fn default() -> Self {
        Self {
            destinations: Vec::new(),
            model: "w_shaped".into(),
        }
    }
}

impl Default for ReportsConfig {
    fn default() -> Self {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self {
            lookback: HumanDuration::secs(90 * 86_400),
            half_life: HumanDuration::secs(7 * 86_400),
            rollup_interval: HumanDuration::secs(5),
            rollup_lag: HumanDuration::secs(2),
            rollup_batch: 500,
            won_stages: list(&["won", "closedwon", "closed_won", "closed won"]),
            lost_stages: list(&["lost", "closedlost", "closed_lost", "closed lost"]),
            stages: Vec::new(),
            probabilities: BTreeMap::new(),
            kpis: Default::default(),
            writeback: Default::default(),
        }
    }
}

impl ReportsConfig {
    /// `won`, `lost` or `open` for a stage name.
    pub fn status_of_stage(&self, stage: &str) -> &'static str {
        let is = |list: &[String]| list.iter().any(|s| s.eq_ignore_ascii_case(stage));
        if is(&self.won_stages) {
            "won"
        } else if is(&self.lost_stages) {
            "lost"
        } else {
            "open"
        }
    }

    /// Problems in the section, for `leadrelay check`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.rollup_batch == 0 {
            out.push("reports.rollup_batch must be at least 1".to_string());
        }
        if self.half_life.get().is_zero() {
            out.push("reports.half_life must be longer than 0s".to_string());
        }
        for (stage, p) in &self.probabilities {
            if !(0.0..=1.0).contains(p) {
                out.push(format!(
                    "reports.probabilities.{stage} = {p}: a probability is between 0 and 1"
                ));
            }
        }
        if super::attribution::Model::parse(&self.writeback.model).is_none() {
            out.push(format!(
                "reports.writeback.model {:?} is not one of first_touch, last_touch, linear, u_shaped, w_shaped, time_decay",
                self.writeback.model
            ));
        }
        out.extend(self.kpis.problems());
        out
    }
}
