//! Storage of the sales pipeline (scoring, routing, handoff): durable
//! timers, owner assignments and atomic counters. A supertrait of
//! [`Store`](super::Store), implemented by both stores in their `lead.rs`.
//!
//! Timers are claimed like deliveries: a claim sets a lease id and moves
//! `due_at` to the lease's expiry, so a node that dies holding one simply
//! lets it fall due again — on any node, after any restart.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadrelay_model::{Contact, OwnerAssignment};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::StoreResult;

/// A timer to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTimer {
    pub id: Uuid,
    /// `handoff` (due at once: assign, notify, start the SLA) or `sla`.
    pub kind: String,
    pub contact_id: Uuid,
    pub due_at: DateTime<Utc>,
    pub data: Value,
}

/// A stored timer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Timer {
    pub id: Uuid,
    pub kind: String,
    pub contact_id: Uuid,
    /// When it fires (while claimed: when the claim's lease expires).
    pub due_at: DateTime<Utc>,
    /// `pending`, `done` or `canceled`.
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
    /// What firing did, e.g. `breached: escalated to maria`.
    pub outcome: Option<String>,
    /// How often it was claimed.
    pub attempts: u32,
    #[schema(value_type = Object)]
    pub data: Value,
    #[serde(skip)]
    pub lease_id: Option<Uuid>,
}

#[derive(Debug, Clone, Default)]
pub struct TimerFilter {
    pub contact_id: Option<Uuid>,
    pub state: Option<String>,
    pub kind: Option<String>,
}

/// Timer states.
pub const TIMER_PENDING: &str = "pending";
pub const TIMER_DONE: &str = "done";
pub const TIMER_CANCELED: &str = "canceled";

/// What the ingest transaction must also write for one merged contact (see
/// `pipeline::LeadHook`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeadEffects {
    pub timers: Vec<NewTimer>,
    /// The contact left SQL (disqualified): its assignment no longer counts
    /// toward its owner's capacity.
    pub close_assignment: bool,
}

#[async_trait]
pub trait LeadStore {
    /// Adds one to the counter `key` (absent: 0) and returns the new value;
    /// atomic across connections and nodes.
    async fn kv_increment(&self, key: &str) -> StoreResult<u64>;

    /// Claims up to `limit` due pending timers under a new lease.
    async fn claim_timers(&self, limit: usize, lease: Duration) -> StoreResult<Vec<Timer>>;

    /// Ends a claimed timer (`done` or `canceled`) with its outcome and
    /// creates `next` in the same transaction. False (and nothing written)
    /// when the lease is no longer current.
    async fn finish_timer(
        &self,
        id: Uuid,
        lease_id: Uuid,
        state: &str,
        outcome: &str,
        next: Vec<NewTimer>,
    ) -> StoreResult<bool>;

    /// Newest first; `before` is the cursor (a timer id).
    async fn list_timers(
        &self,
        filter: &TimerFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Timer>>;

    /// Records the contact's owner on its record and as an open assignment
    /// (capacity, account ownership), in one transaction. None: no such contact.
    async fn assign_owner(
        &self,
        contact_id: Uuid,
        assignment: OwnerAssignment,
    ) -> StoreResult<Option<Contact>>;

    /// Open assignments per owner.
    async fn open_leads(&self) -> StoreResult<Vec<(String, u64)>>;

    /// The owner most recently assigned a contact of this company domain
    /// (other than `except`).
    async fn account_owner(&self, domain: &str, except: Uuid) -> StoreResult<Option<String>>;
}
