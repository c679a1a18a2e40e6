//! `[feedback]`: which CRM field carries sales' verdict on a lead and what
//! each value means as a rating, the score bands of the calibration report,
//! the Slack signing secret of the rating buttons, and how often the
//! feedback rollups catch up.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::HumanDuration;
use crate::store::{RATING_MAX, RATING_MIN, SCORE_STEP};

/// `[feedback]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedbackConfig {
    /// The CRM disposition / lead-status fields read from incoming events:
    /// a key of the event's data, the property of a HubSpot property change
    /// (`property_name`), or a custom contact field.
    pub fields: Vec<String>,
    /// Each field value (compared case-insensitively) and the rating 1
    /// (poor) to 5 (good) it stands for. Values not listed are kept as the
    /// person's disposition but rate nothing.
    pub ratings: BTreeMap<String, u8>,
    /// Lower bounds of the calibration report's score bands, ascending,
    /// multiples of 5 (a band holds its lower bound).
    pub bands: Vec<f64>,
    /// A band with fewer leads (or ratings) than this gets no verdict.
    pub min_leads: u64,
    /// The env var holding the Slack app's signing secret; needed for the
    /// rating buttons (`POST /v1/slack/interactions`).
    pub slack_signing_secret_env: Option<String>,
    /// How often the feedback rollups read new events.
    pub interval: HumanDuration,
    /// Events younger than this are left for the next pass.
    pub lag: HumanDuration,
    /// Events read per feedback transaction.
    pub batch: usize,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            fields: vec![
                "lead_status".into(),
                "hs_lead_status".into(),
                "disposition".into(),
            ],
            ratings: BTreeMap::new(),
            bands: vec![20.0, 40.0, 60.0, 80.0],
            min_leads: 5,
            slack_signing_secret_env: None,
            interval: HumanDuration::secs(5),
            lag: HumanDuration::secs(2),
            batch: 2000,
        }
    }
}

impl FeedbackConfig {
    /// The rating a disposition value stands for.
    pub fn rating_of(&self, value: &str) -> Option<u8> {
        let v = value.trim();
        self.ratings
            .iter()
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(v))
            .map(|(_, r)| *r)
    }

    /// Problems in the section, for `leadrelay check`: `(path, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (value, r) in &self.ratings {
            if !(RATING_MIN..=RATING_MAX).contains(r) {
                out.push((
                    format!("feedback.ratings.{value}"),
                    format!("{r}: a rating is 1 (poor) to 5 (good)"),
                ));
            }
        }
        if !self.ratings.is_empty() && self.fields.is_empty() {
            out.push((
                "feedback.fields".into(),
                "ratings are configured but no field to read them from".into(),
            ));
        }
        for (i, b) in self.bands.iter().enumerate() {
            if !b.is_finite() || b.rem_euclid(SCORE_STEP) != 0.0 {
                out.push((
                    "feedback.bands".into(),
                    format!("{b}: band bounds are multiples of {SCORE_STEP}"),
                ));
            }
            if i > 0 && *b <= self.bands[i - 1] {
                out.push((
                    "feedback.bands".into(),
                    "band bounds must be strictly ascending".into(),
                ));
            }
        }
        if self.bands.len() > 40 {
            out.push(("feedback.bands".into(), "at most 40 band bounds".into()));
        }
        if self.batch == 0 {
            out.push(("feedback.batch".into(), "must be at least 1".into()));
        }
        out
    }
}
