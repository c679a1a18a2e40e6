//! Operator actions on deliveries still waiting (pending or scheduled for a
//! retry, not in flight) and the per-destination activity series the
//! dashboard charts. A supertrait of [`Store`](super::Store), implemented
//! by both stores in their `ops.rs`.
//!
//! Cancelling a waiting delivery never loses it: it ends `discarded` with
//! the reason and the person who cancelled it recorded, like a discarded
//! dead letter, and can still be replayed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::StoreResult;

/// Which waiting deliveries a list or a bulk action covers. Every field
/// narrows; none: every waiting delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WaitingFilter {
    pub destination: Option<String>,
    /// Text found (case-insensitive) in the last error, e.g. `HTTP 503`.
    pub cause: Option<String>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// The event's origin: kind (`form`, `source`, `api` …) and name.
    pub origin: Option<(String, String)>,
}

/// A destination's attempts in one time bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SeriesBucket {
    pub bucket_start: DateTime<Utc>,
    pub succeeded: u64,
    /// Failed with a 4xx answer.
    pub client_errors: u64,
    /// Failed with a 5xx answer.
    pub server_errors: u64,
    /// Failed without an HTTP status (timeouts, connection errors, SMTP …).
    pub other_errors: u64,
    pub throttled: u64,
    /// Mean and longest attempt duration (attempts that were sent).
    pub avg_ms: Option<f64>,
    pub max_ms: Option<u64>,
}

impl SeriesBucket {
    pub fn failed(&self) -> u64 {
        self.client_errors + self.server_errors + self.other_errors
    }
}

/// The states a waiting delivery is in.
pub const WAITING_STATES: &str = "('pending', 'scheduled')";

#[async_trait]
pub trait OpsStore: Send + Sync {
    /// Waiting deliveries matching `filter`, newest first; `before` is the
    /// cursor (a delivery id).
    async fn waiting_deliveries(
        &self,
        filter: &WaitingFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<crate::store::Delivery>>;

    /// How many waiting deliveries match `filter`.
    async fn count_waiting(&self, filter: &WaitingFilter) -> StoreResult<u64>;

    /// Makes these waiting deliveries due now (their destinations' workers
    /// are woken); in-flight and finished ones are left alone. Returns how
    /// many changed.
    async fn retry_now(&self, ids: Vec<Uuid>) -> StoreResult<usize>;

    /// Ends these waiting deliveries as `discarded` with `reason` recorded
    /// (in-flight and finished ones are left alone). Returns how many.
    async fn cancel_waiting(&self, ids: Vec<Uuid>, reason: &str) -> StoreResult<usize>;

    /// One destination's attempts since `since` per bucket of
    /// `bucket_secs`, oldest first (buckets without attempts are absent).
    async fn destination_series(
        &self,
        destination: &str,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<SeriesBucket>>;
}
