//! Storage: one [`Store`] trait, implemented for SQLite (the embedded
//! default) and PostgreSQL (for several nodes), with one test suite run
//! against both.
//!
//! The store is also the queue. Ingest writes an event and one outbox row
//! (a *delivery*) per matching destination in one transaction; workers claim
//! due deliveries with a lease (claim id + expiry), send without holding any
//! transaction open, and record the outcome. A lease that expires makes its
//! delivery due again, so a crashed worker loses nothing.

mod admin;
mod common;
mod deadline;
mod feedback;
mod fixable;
mod golden;
mod lead;
mod membership;
mod ops;
pub mod postgres;
mod report;
pub mod sqlite;
mod types;
mod wake;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadrelay_model::{Contact, Event};
use uuid::Uuid;

pub use admin::*;
pub use common::uuid_v7_floor_id;
pub use feedback::*;
pub use fixable::*;
pub use golden::*;
pub use lead::*;
pub use membership::*;
pub use ops::*;
pub use report::*;
pub use types::*;
pub use wake::WakeHub;

/// Storage failures. `Unavailable` answers 503 with `Retry-After`; nothing
/// is ever acknowledged that was not committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// Items of an [`ingest`](Store::ingest) call (their indexes) whose
    /// idempotency key names an earlier, different request of the same
    /// client: nothing of the call was stored.
    #[error("idempotency key reused for a different request (items {0:?})")]
    IdempotencyKeyReused(Vec<usize>),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    #[error("invalid storage configuration: {0}")]
    Config(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything leadrelay keeps, behind one interface.
#[async_trait]
pub trait Store:
    LeadStore
    + FixableStore
    + ReportStore
    + FeedbackStore
    + OpsStore
    + MembershipStore
    + GoldenStore
    + Send
    + Sync
    + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Wakes delivery workers when new deliveries are committed.
    fn wake_hub(&self) -> Arc<WakeHub>;

    /// Storage reachable and the schema current.
    async fn ready(&self) -> StoreResult<()>;

    /// The schema version applied.
    async fn schema_version(&self) -> StoreResult<u32>;

    /// Stores events with their outbox rows, all in one transaction (a batch
    /// from one vendor request is atomic). Returns, per item, the new event id
    /// or the id of the event an idempotency key or external id already names.
    /// A key that names a different request of its scope (another
    /// fingerprint) fails the whole call with
    /// [`StoreError::IdempotencyKeyReused`], storing nothing of it.
    async fn ingest(&self, items: Vec<IngestItem>) -> StoreResult<Vec<IngestOutcome>>;

    /// [`ingest`](Store::ingest) of one item: its event's id (the earlier
    /// event's when it is a duplicate).
    async fn ingest_one(&self, item: IngestItem) -> StoreResult<Uuid> {
        self.ingest(vec![item])
            .await?
            .first()
            .map(IngestOutcome::event_id)
            .ok_or_else(|| StoreError::Unavailable("the store returned no result".into()))
    }

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<Event>>;

    /// Newest first; `before` is the cursor (an event id).
    async fn list_events(
        &self,
        filter: &EventFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Event>>;

    async fn get_contact(&self, id: Uuid) -> StoreResult<Option<Contact>>;

    async fn find_contact_by_email(&self, email: &str) -> StoreResult<Option<Contact>>;

    /// Claims up to `limit` due deliveries for `destination` under a new
    /// lease. Only the oldest unfinished delivery per contact is claimable,
    /// so deliveries about the same person go out in order.
    async fn claim(
        &self,
        destination: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedDelivery>>;

    /// When the next delivery for `destination` falls due (None: nothing pending).
    async fn next_due(&self, destination: &str) -> StoreResult<Option<DateTime<Utc>>>;

    /// At start-up, before this process claims anything: gives back the
    /// leases a previous run of this node held (it was killed before it
    /// could), so their deliveries are due at once instead of when the lease
    /// expires. SQLite (one node, no other process can hold a lease): every
    /// lease. PostgreSQL: the leases claimed under this node's `node_id`;
    /// none without one. Returns how many were given back.
    async fn release_own_leases(&self) -> StoreResult<u64>;

    /// Records attempts and moves deliveries to their next state. A
    /// completion whose lease is no longer current records its attempt but
    /// leaves the delivery's state to the lease holder.
    async fn complete(&self, completions: Vec<Completion>) -> StoreResult<()>;

    async fn get_delivery(&self, id: Uuid) -> StoreResult<Option<Delivery>>;

    /// Newest first; `before` is the cursor (a delivery id).
    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>>;

    async fn deliveries_for_event(&self, event_id: Uuid) -> StoreResult<Vec<Delivery>>;

    /// Every attempt of a delivery, oldest first.
    async fn attempts(&self, delivery_id: Uuid) -> StoreResult<Vec<Attempt>>;

    /// Replays dead (or discarded) deliveries: each gets a new pending
    /// delivery (optionally with field overrides) linked to the old one,
    /// whose history is kept. Returns (old id, new id) pairs.
    async fn replay(
        &self,
        ids: Vec<Uuid>,
        overrides: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> StoreResult<Vec<(Uuid, Uuid)>>;

    /// Marks dead deliveries as discarded (kept, never retried).
    async fn discard(&self, ids: Vec<Uuid>) -> StoreResult<usize>;

    async fn destination_states(&self) -> StoreResult<Vec<DestinationState>>;

    async fn destination_state(&self, name: &str) -> StoreResult<DestinationState>;

    /// Pauses a destination until `until` (throttling, operator pause); every
    /// worker on every node honours it.
    async fn pause_destination(
        &self,
        name: &str,
        until: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<()>;

    async fn resume_destination(&self, name: &str) -> StoreResult<()>;

    /// Disables (410 Gone, operator) or re-enables a destination.
    async fn set_destination_disabled(
        &self,
        name: &str,
        disabled: bool,
        reason: Option<&str>,
    ) -> StoreResult<()>;

    /// Records the circuit-breaker state for display.
    async fn set_circuit_state(&self, name: &str, state: &str) -> StoreResult<()>;

    /// Remote ids a destination gave records with these keys (every object kind).
    async fn remote_ids(&self, destination: &str, keys: &[String]) -> StoreResult<Vec<RemoteId>>;

    /// Keeps remote ids learned outside a successful completion (a record a
    /// CRM created before a later step of the same delivery failed), so a
    /// retry reuses it. Same upsert as [`Transition::Delivered`]'s ids.
    async fn save_remote_ids(&self, destination: &str, ids: &[RemoteId]) -> StoreResult<()>;

    async fn kv_get(&self, key: &str) -> StoreResult<Option<String>>;

    async fn kv_set(&self, key: &str, value: &str) -> StoreResult<()>;

    /// Inserts `value` unless the key exists; returns the stored value.
    async fn kv_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String>;

    /// Sets `key` to `value` only if it currently holds `expected` (`None`:
    /// absent). True if this call made the change — of several nodes racing,
    /// exactly one wins (alert incidents use this).
    async fn kv_compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> StoreResult<bool>;

    /// Whether rate-limit budgets must be shared through the store (several
    /// nodes on one database) rather than kept in process.
    fn shared_rate_limits(&self) -> bool {
        false
    }

    /// Takes one request slot of a destination limited to one request per
    /// `interval` (GCRA, burst of one), shared by every node: `None` when
    /// granted, else how long until the next slot.
    async fn rate_acquire(
        &self,
        destination: &str,
        interval: Duration,
    ) -> StoreResult<Option<Duration>>;

    /// Per-destination counts and attempt statistics since `since`.
    async fn destination_stats(&self, since: DateTime<Utc>) -> StoreResult<Vec<DestinationStats>>;

    /// Deletes data older than the retention policy.
    async fn purge(&self, policy: &PurgePolicy) -> StoreResult<PurgeReport>;

    // --- Admin API and dashboard -------------------------------------

    /// Newest first; `before` is the cursor (a contact id).
    async fn list_contacts(
        &self,
        filter: &ContactFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Contact>>;

    /// Stores a new API key. Conflict when an active key has the same name.
    async fn create_api_key(&self, key: NewApiKey) -> StoreResult<ApiKey>;

    /// Every key, active and revoked, oldest first.
    async fn api_keys(&self) -> StoreResult<Vec<ApiKey>>;

    /// The key whose secret hashes to `hash` (revoked ones included).
    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>>;

    /// Revokes the active key with this name or id; its sessions end with it.
    async fn revoke_api_key(&self, name_or_id: &str) -> StoreResult<ApiKey>;

    /// Records that a key was used.
    async fn touch_api_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()>;

    /// Stores a dashboard session (and drops expired ones).
    async fn create_session(&self, session: NewSession) -> StoreResult<()>;

    /// The live session whose token hashes to `token_hash`: not expired, its
    /// key not revoked.
    async fn session(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<Session>>;

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()>;

    /// Adds an item to the review queue (sync conflicts).
    async fn add_review_item(&self, item: ReviewItem) -> StoreResult<()>;

    /// Newest first; `before` is the cursor (an item id).
    async fn list_review_items(
        &self,
        status: Option<ReviewStatus>,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<ReviewItem>>;

    async fn get_review_item(&self, id: Uuid) -> StoreResult<Option<ReviewItem>>;

    /// Closes an open item as resolved or dismissed. NotFound / Conflict
    /// (already closed).
    async fn resolve_review_item(
        &self,
        id: Uuid,
        status: ReviewStatus,
        resolution: Option<String>,
        actor: &str,
    ) -> StoreResult<ReviewItem>;

    /// Everything held about the person with this email, recorded in the
    /// audit log.
    async fn privacy_export(&self, request: &PrivacyRequest) -> StoreResult<PrivacyExport>;

    /// Erases a person: deletes the contact, removes the personal data and
    /// raw payloads of their events, stops their unsent deliveries, clears
    /// replay overrides, forgets destinations' record ids — in one
    /// transaction with its audit record.
    async fn privacy_erase(&self, request: &PrivacyRequest) -> StoreResult<EraseReport>;

    /// Adds a record to the privacy audit log (a consent withdrawal, the
    /// erasure of file backups, erase requests queued to CRMs).
    async fn add_privacy_audit(&self, record: &AuditRecord) -> StoreResult<()>;

    /// Emails of contacts with no event since `before` (their golden record
    /// last updated before it), oldest first: candidates for erasure under
    /// `privacy.retention.contacts`.
    async fn stale_contacts(&self, before: DateTime<Utc>, limit: usize)
    -> StoreResult<Vec<String>>;

    /// The privacy audit log, newest first; `before` is the cursor.
    async fn privacy_audit(
        &self,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<AuditRecord>>;

    /// Leads (non-spam events of the [`LEAD_EVENT_TYPES`]) received since
    /// `since`, per origin and bucket of `bucket_secs`.
    async fn lead_counts(
        &self,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<LeadCount>>;

    /// Delivery attempts since `since` per bucket: succeeded and failed
    /// (throttled and skipped count as neither).
    async fn attempt_buckets(
        &self,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<AttemptBucket>>;

    /// Flushes pending writes and stops background threads.
    async fn close(&self);

    /// A call ran past its deadline: pooled connections may have died
    /// silently (a failover, a partition) and must be checked before they
    /// are used again (PostgreSQL). Called by the deadline wrapper.
    fn distrust_connections(&self) {}
}

/// Ids of the dead letters still waiting for a person (not replayed),
/// optionally of one destination and created since a time, newest first.
pub async fn dead_letter_ids(
    store: &dyn Store,
    destination: Option<String>,
    since: Option<DateTime<Utc>>,
) -> StoreResult<Vec<Uuid>> {
    let filter = DeliveryFilter {
        destination,
        state: Some(DeliveryState::Dead),
        since,
        exclude_replayed: true,
        ..Default::default()
    };
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_deliveries(&filter, cursor, 1000).await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        all.extend(page.iter().map(|d| d.id));
    }
    Ok(all)
}

/// Reads the golden contact with this (normalised) email without opening
/// the store for writing: no file or database is created, nothing migrated
/// or written. Used by `leadrelay simulate`.
pub async fn peek_contact(
    url: &str,
    options: &OpenOptions,
    email: &str,
) -> StoreResult<Option<Contact>> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return sqlite::peek_contact(path, email).await;
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return postgres::peek_contact(url, options, email).await;
    }
    Err(StoreError::Config(format!(
        "unsupported storage URL {url:?}: expected sqlite://PATH or postgres://…"
    )))
}

/// The contacts of a company domain, read like [`peek_contact`] (for the
/// secondary match in `simulate`).
pub async fn peek_contacts_by_domain(
    url: &str,
    options: &OpenOptions,
    domain: &str,
) -> StoreResult<Vec<Contact>> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return sqlite::peek_contacts_by_domain(path, domain).await;
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return postgres::peek_contacts_by_domain(url, options, domain).await;
    }
    Err(StoreError::Config(format!(
        "unsupported storage URL {url:?}: expected sqlite://PATH or postgres://…"
    )))
}

/// Rows of a read-only query (text columns, text parameters `$1` …), read
/// like [`peek_contact`]: nothing created, migrated or written. The SQL must
/// be valid in both SQLite and PostgreSQL.
pub async fn peek_rows(
    url: &str,
    options: &OpenOptions,
    sql: &str,
    params: Vec<String>,
) -> StoreResult<Vec<Vec<Option<String>>>> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return sqlite::peek_rows(path, sql, params).await;
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return postgres::peek_rows(url, options, sql, params).await;
    }
    Err(StoreError::Config(format!(
        "unsupported storage URL {url:?}: expected sqlite://PATH or postgres://…"
    )))
}

/// Opens the store named by a storage URL (`sqlite://PATH`, `postgres://…`)
/// and applies migrations. Every call on it has a deadline
/// (`options.call_timeout`, see [`deadline`]).
pub async fn open(url: &str, options: &OpenOptions) -> StoreResult<Arc<dyn Store>> {
    let wrap = |store: Arc<dyn Store>| {
        deadline::Deadline::wrap(store, options.call_timeout, options.long_call_timeout)
    };
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let store = sqlite::SqliteStore::open(path, options).await?;
        return Ok(wrap(Arc::new(store)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PostgresStore::open(url, options).await?;
        return Ok(wrap(Arc::new(store)));
    }
    Err(StoreError::Config(format!(
        "unsupported storage URL {url:?}: expected sqlite://PATH or postgres://…"
    )))
}
