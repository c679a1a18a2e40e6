//! The sales side of a contact: lead score, lifecycle stage, owner and the
//! state of the MQL → SQL handoff. Kept inside the contact's golden record
//! (the stores keep contacts as one JSON document), so it needs no column of
//! its own; leadrelay's `pipeline` module computes and updates it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a contact stands in the funnel. Moves forward with the score
/// (lead → mql → sql); only a `lead.disqualified` event moves it back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    Lead,
    Mql,
    Sql,
    Disqualified,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Lead => "lead",
            Stage::Mql => "mql",
            Stage::Sql => "sql",
            Stage::Disqualified => "disqualified",
        }
    }

    /// Forward order of the qualifying stages (disqualified ranks lowest).
    pub fn rank(self) -> u8 {
        match self {
            Stage::Disqualified => 0,
            Stage::Lead => 1,
            Stage::Mql => 2,
            Stage::Sql => 3,
        }
    }
}

/// Points one scoring rule gave for one event, kept with the time they were
/// earned so they can decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreHit {
    pub rule: String,
    pub points: f64,
    pub at: DateTime<Utc>,
}

/// The owner a contact was assigned to, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerAssignment {
    pub owner: String,
    pub reason: String,
    pub assigned_at: DateTime<Utc>,
}

/// Score, stage, owner and handoff timestamps of one contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeadState {
    /// The score as of `scored_at` (decay continues after it).
    #[serde(default)]
    pub score: f64,
    #[serde(default)]
    pub stage: Stage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scored_at: Option<DateTime<Utc>>,
    /// Event-rule contributions, oldest first (bounded; see `pipeline::score`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hits: Vec<ScoreHit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerAssignment>,
    /// When the contact last crossed into SQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualified_at: Option<DateTime<Utc>>,
    /// When the owner accepted the lead (`lead.accepted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<DateTime<Utc>>,
    /// The latest sales activity (reply, meeting, logged activity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disqualified_at: Option<DateTime<Utc>>,
    /// How often the contact qualified again after a disqualification.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub requalified: u32,
    /// Set when the person unsubscribed from email or an email to them
    /// bounced (from any source): never enrolled in a sequence again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<Suppression>,
}

/// Why a person is on the suppression list, and since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    /// `unsubscribed` or `bounced`.
    pub reason: String,
    /// Where the event came from (`source:mailshake`, `form:contact`, …).
    pub origin: String,
    pub at: DateTime<Utc>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl LeadState {
    pub fn is_empty(&self) -> bool {
        self == &LeadState::default()
    }
}
