//! Sequence memberships: where each person stands in each sequence tool's
//! sequence (tool, sequence, state, since, last change), kept by the shared
//! enrollment model (`connectors/enroll`) as it enrolls, queues, skips and
//! exits people — so a new enrollment connector is covered without code of
//! its own. A supertrait of [`Store`](super::Store), implemented by both
//! stores in their `membership.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::StoreResult;

/// Membership states.
pub const MEMBERSHIP_ACTIVE: &str = "active";
pub const MEMBERSHIP_QUEUED: &str = "queued";
pub const MEMBERSHIP_EXITED: &str = "exited";
pub const MEMBERSHIP_SKIPPED: &str = "skipped";
/// The tool reported that the person finished or left the sequence
/// (`sequence.completed`).
pub const MEMBERSHIP_COMPLETED: &str = "completed";

/// One person in one destination's sequence.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Membership {
    /// The person's key (`email:…`), as deliveries name them.
    #[serde(skip)]
    pub contact_key: String,
    /// The destination (`[destinations.NAME]`).
    pub destination: String,
    /// The sequence tool (`smartlead`, `lemlist`, …).
    pub tool: String,
    /// The tool's sequence or campaign id.
    pub sequence: String,
    /// `active` (enrolled), `queued` (in the overflow queue), `exited`
    /// (taken out by `exit_sequences`), `skipped` (suppressed, or active
    /// elsewhere under `already_enrolled = "skip"`), `completed` (the tool
    /// reported the sequence over for them: `sequence.completed`).
    pub state: String,
    /// When the current state began.
    pub since: DateTime<Utc>,
    /// When it was last seen or changed.
    pub updated_at: DateTime<Utc>,
    /// What happened last, e.g. `enrolled`, `exit_sequences: meeting.booked`,
    /// the overflow or skip reason.
    pub last_change: String,
}

#[async_trait]
pub trait MembershipStore: Send + Sync {
    /// Records each membership's latest state: a new row, or the state,
    /// `updated_at` and `last_change` of the existing one (`since` moves
    /// only when the state changes).
    async fn record_memberships(&self, items: Vec<Membership>) -> StoreResult<()>;

    /// A person's memberships, by destination.
    async fn memberships(&self, contact_key: &str) -> StoreResult<Vec<Membership>>;
}
