//! Storage of the sales feedback rollups: each person's feedback row (their
//! lead's dimensions, score, latest rating and deal outcomes) and daily
//! counters keyed by those dimensions and a score bucket, kept in step by
//! adding the difference between a person's old and new row. A supertrait
//! of [`Store`](super::Store), implemented by both stores in their
//! `feedback.rs`.
//!
//! The only writer is `feedback::pass` (one batch per transaction, guarded
//! by its cursor), so a person's stored row is always the one the counters
//! were built from.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StoreResult;

/// The kv key holding the feedback pass's cursor (the last event read).
pub const FEEDBACK_CURSOR_KEY: &str = "feedback.cursor";

/// Scores are counted in buckets this wide; report bands group buckets.
pub const SCORE_STEP: f64 = 5.0;

/// The bucket of people without a score (scoring is off).
pub const UNSCORED: i64 = -1_000_000_000;

/// Ratings are 1 (poor) to 5 (good).
pub const RATING_MIN: u8 = 1;
pub const RATING_MAX: u8 = 5;

/// What the feedback pass knows about one person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeedbackPerson {
    pub contact_id: Uuid,
    /// The first event that made them a person of the feedback loop (their
    /// lead event, or the first rating or deal when none came before).
    pub lead_at: DateTime<Utc>,
    /// `form:NAME`, `source:NAME` or `api:NAME` of that event.
    pub origin: String,
    pub channel: String,
    pub source: String,
    pub campaign: String,
    /// The owner assigned by the pipeline, as last seen.
    pub owner: Option<String>,
    /// The lead score as of the person's latest event (None: scoring off).
    pub score: Option<f64>,
    /// The latest rating, 1 (poor) to 5 (good).
    pub rating: Option<u8>,
    pub rated_at: Option<DateTime<Utc>>,
    /// `slack`, `dashboard`, `api` or the CRM origin (`source:hubspot`).
    pub rated_via: Option<String>,
    /// Who rated (a Slack user, an API key's name) when known.
    pub rated_by: Option<String>,
    /// The CRM's disposition / lead status value, as last received.
    pub disposition: Option<String>,
    /// How many ratings arrived in all.
    pub ratings: u32,
    /// Their deals: id → `open`, `won` or `lost`.
    pub deals: BTreeMap<String, String>,
}

/// A score bucket's lower bound (or [`UNSCORED`]).
pub fn score_bucket(score: Option<f64>) -> i64 {
    match score {
        Some(s) if s.is_finite() => {
            ((s / SCORE_STEP).floor() * SCORE_STEP).clamp(-100_000.0, 100_000.0) as i64
        }
        _ => UNSCORED,
    }
}

/// The dimensions a person is counted under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedbackKey {
    /// Start (UTC) of the day of `lead_at`.
    pub day: DateTime<Utc>,
    pub origin: String,
    pub channel: String,
    pub source: String,
    pub campaign: String,
    /// Empty when unassigned.
    pub owner: String,
    pub score_bucket: i64,
}

/// Counters of one key (signed: a batch adds differences).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackCounts {
    pub leads: i64,
    pub rated: i64,
    pub rating_sum: i64,
    /// Rated 4 or 5.
    pub good: i64,
    /// Rated 1 or 2.
    pub poor: i64,
    /// With at least one deal.
    pub opportunities: i64,
    /// With at least one won deal.
    pub won: i64,
}

impl FeedbackCounts {
    pub fn add(&mut self, o: &FeedbackCounts, sign: i64) {
        self.leads += sign * o.leads;
        self.rated += sign * o.rated;
        self.rating_sum += sign * o.rating_sum;
        self.good += sign * o.good;
        self.poor += sign * o.poor;
        self.opportunities += sign * o.opportunities;
        self.won += sign * o.won;
    }

    pub fn is_zero(&self) -> bool {
        *self == FeedbackCounts::default()
    }
}

/// Counters under one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackCell {
    pub key: FeedbackKey,
    pub counts: FeedbackCounts,
}

impl FeedbackPerson {
    /// Where this person is counted, and what they add.
    pub fn cell(&self) -> FeedbackCell {
        let day = self
            .lead_at
            .duration_trunc(Duration::days(1))
            .unwrap_or(self.lead_at);
        let rating = self.rating.map(i64::from);
        FeedbackCell {
            key: FeedbackKey {
                day,
                origin: self.origin.clone(),
                channel: self.channel.clone(),
                source: self.source.clone(),
                campaign: self.campaign.clone(),
                owner: self.owner.clone().unwrap_or_default(),
                score_bucket: score_bucket(self.score),
            },
            counts: FeedbackCounts {
                leads: 1,
                rated: i64::from(rating.is_some()),
                rating_sum: rating.unwrap_or(0),
                good: i64::from(rating.is_some_and(|r| r >= 4)),
                poor: i64::from(rating.is_some_and(|r| r <= 2)),
                opportunities: i64::from(!self.deals.is_empty()),
                won: i64::from(self.deals.values().any(|s| s == "won")),
            },
        }
    }
}

/// What one feedback pass writes, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct FeedbackBatch {
    /// The cursor the pass started from: refused (Conflict) when another
    /// pass moved it meanwhile.
    pub from: Option<Uuid>,
    /// The last event read.
    pub cursor: Uuid,
    /// Each changed person: the row stored before (None: new) and after.
    pub people: Vec<(Option<FeedbackPerson>, FeedbackPerson)>,
}

impl FeedbackBatch {
    /// The counter differences the batch makes, one per key, none zero.
    pub fn deltas(&self) -> Vec<FeedbackCell> {
        let mut by: BTreeMap<FeedbackKey, FeedbackCounts> = BTreeMap::new();
        for (old, new) in &self.people {
            if let Some(old) = old {
                let c = old.cell();
                by.entry(c.key).or_default().add(&c.counts, -1);
            }
            let c = new.cell();
            by.entry(c.key).or_default().add(&c.counts, 1);
        }
        by.into_iter()
            .filter(|(_, c)| !c.is_zero())
            .map(|(key, counts)| FeedbackCell { key, counts })
            .collect()
    }
}

#[async_trait]
pub trait FeedbackStore {
    /// The stored feedback rows of these people (those that have one).
    async fn feedback_people(&self, ids: Vec<Uuid>) -> StoreResult<Vec<FeedbackPerson>>;

    /// Writes the people, adds the batch's [`deltas`](FeedbackBatch::deltas)
    /// to the counters and moves the cursor from `batch.from` to
    /// `batch.cursor`, in one transaction; Conflict (nothing written) when
    /// the cursor is no longer `batch.from`.
    async fn feedback_apply(&self, batch: FeedbackBatch) -> StoreResult<()>;

    /// The counters of days starting in `[since, until)`, one cell per key.
    async fn feedback_cells(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<FeedbackCell>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(rating: Option<u8>, score: f64) -> FeedbackPerson {
        FeedbackPerson {
            contact_id: Uuid::nil(),
            lead_at: DateTime::from_timestamp(86_400 * 3 + 5000, 0).unwrap(),
            origin: "form:contact".into(),
            channel: "email".into(),
            source: "newsletter".into(),
            campaign: "spring".into(),
            owner: None,
            score: Some(score),
            rating,
            rated_at: None,
            rated_via: None,
            rated_by: None,
            disposition: None,
            ratings: u32::from(rating.is_some()),
            deals: BTreeMap::new(),
        }
    }

    #[test]
    fn a_changed_person_moves_between_cells() {
        assert_eq!(score_bucket(Some(42.5)), 40);
        assert_eq!(score_bucket(Some(-3.0)), -5);
        assert_eq!(score_bucket(None), UNSCORED);
        assert_eq!(score_bucket(Some(f64::NAN)), UNSCORED);
        let before = person(Some(2), 42.0);
        let mut after = person(Some(5), 81.0);
        after.deals.insert("d1".into(), "won".into());
        let batch = FeedbackBatch {
            people: vec![(Some(before), after), (None, person(None, 12.0))],
            ..Default::default()
        };
        let d = batch.deltas();
        let of = |bucket: i64| d.iter().find(|c| c.key.score_bucket == bucket).unwrap();
        assert_eq!(
            of(40).counts,
            FeedbackCounts {
                leads: -1,
                rated: -1,
                rating_sum: -2,
                poor: -1,
                ..Default::default()
            }
        );
        assert_eq!(
            of(80).counts,
            FeedbackCounts {
                leads: 1,
                rated: 1,
                rating_sum: 5,
                good: 1,
                opportunities: 1,
                won: 1,
                ..Default::default()
            }
        );
        assert_eq!(of(10).counts.leads, 1);
        assert_eq!(d[0].key.day.timestamp(), 86_400 * 3);
        // A person unchanged adds nothing.
        let same = person(Some(3), 50.0);
        let none = FeedbackBatch {
            people: vec![(Some(same.clone()), same)],
            ..Default::default()
        };
        assert!(none.deltas().is_empty());
    }
}
