//! Fixable dead letters: deliveries refused for a reason a person can fix
//! in the destination (a property missing in the portal, a picklist value
//! not allowed, a validation rule, a required field), kept with their cause
//! so they can be retried automatically once the cause may be gone. A
//! supertrait of [`Store`](super::Store), implemented by both stores in
//! their `fixable.rs`.
//!
//! A fixable row belongs to one dead delivery. Retrying it replays the
//! delivery (a new delivery, `replay_of` the old one); if the replay dies
//! for a fixable reason again, its row inherits the retry count, so the
//! automatic retries of one event to one destination stay bounded.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::StoreResult;

/// A dead letter's fixable cause, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFixable {
    pub delivery_id: Uuid,
    pub destination: String,
    /// `missing_property`, `invalid_option`, `validation_rule`,
    /// `required_field`, `read_only`.
    pub kind: String,
    /// The object it concerns (`contacts`, `Lead` …) when known.
    pub object: Option<String>,
    /// The property, field or rule.
    pub field: String,
    /// The refused value (an option not in a picklist), when it matters.
    pub value: Option<String>,
    /// The vendor's message (already redacted).
    pub message: String,
    /// When it is tried again on the schedule.
    pub next_retry_at: DateTime<Utc>,
}

impl NewFixable {
    /// What groups dead letters with the same cause: `kind:object:field[=value]`.
    pub fn cause_key(&self) -> String {
        cause_key(
            &self.kind,
            self.object.as_deref(),
            &self.field,
            self.value.as_deref(),
        )
    }
}

/// `kind:object:field[=value]`.
pub fn cause_key(kind: &str, object: Option<&str>, field: &str, value: Option<&str>) -> String {
    let mut k = format!("{kind}:{}:{field}", object.unwrap_or(""));
    if let Some(v) = value {
        k.push('=');
        k.push_str(v);
    }
    k
}

/// A fixable dead letter that is due for an automatic retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueFixable {
    pub delivery_id: Uuid,
    pub destination: String,
    pub cause_key: String,
    /// Automatic retries already made for this event and destination.
    pub retries: u32,
}

/// The dead letters one cause holds, for the dashboard and the CLI.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FixableCause {
    pub destination: String,
    pub cause_key: String,
    pub kind: String,
    pub object: Option<String>,
    pub field: String,
    pub value: Option<String>,
    /// The newest vendor message of this cause.
    pub message: String,
    /// Dead letters still to be retried automatically.
    pub waiting: u64,
    /// Dead letters whose automatic retries are used up (a person decides).
    pub exhausted: u64,
    /// When the waiting ones are next tried (None: none waiting).
    pub next_retry_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait FixableStore: Send + Sync {
    /// Records fixable causes of dead letters. A row is only written for a
    /// delivery that is dead and not replayed (a completion that lost its
    /// lease did not kill it); a replay's row inherits the retry count of
    /// the delivery it replays, plus one. Returns how many were written.
    async fn record_fixable(&self, items: Vec<NewFixable>) -> StoreResult<usize>;

    /// Fixable dead letters due by `now` with fewer than `max_retries`
    /// automatic retries, still dead and not replayed, oldest first.
    async fn due_fixable(
        &self,
        now: DateTime<Utc>,
        max_retries: u32,
        limit: usize,
    ) -> StoreResult<Vec<DueFixable>>;

    /// Brings forward to `at` the next retry of the waiting dead letters of
    /// `destination` (of one cause, or all of them): the cause may be gone.
    /// Returns how many moved.
    async fn reschedule_fixable(
        &self,
        destination: &str,
        cause_key: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// Every cause that holds dead letters (dead, not replayed), by
    /// destination and cause.
    async fn fixable_causes(&self, max_retries: u32) -> StoreResult<Vec<FixableCause>>;
}
