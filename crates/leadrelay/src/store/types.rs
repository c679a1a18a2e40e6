//! The records the store keeps besides events and contacts: deliveries,
//! attempts, destination state, and the inputs and filters of its methods.

use chrono::{DateTime, Utc};
use leadrelay_model::{Event, EventType, OriginKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// One event to store, with the destinations its routes matched.
#[derive(Debug, Clone)]
pub struct IngestItem {
    pub event: Event,
    /// One delivery (outbox row) is written per destination.
    pub destinations: Vec<String>,
    /// Returns the earlier event instead of storing twice (24 h).
    pub idempotency: Option<IdempotencyKey>,
}

/// An idempotency key as the store keeps it: scoped by the client that
/// sent it, with a fingerprint of the request it named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The client whose keys these are: `form:contact`, `api:KEYNAME`,
    /// `pipeline` … Two clients' keys never name each other's events.
    pub scope: String,
    pub key: String,
    /// SHA-256 (hex) of the canonical request. The same key with another
    /// fingerprint in the same scope is refused
    /// ([`StoreError::IdempotencyKeyReused`](super::StoreError)); `None`
    /// (leadrelay's own keys, rows from before fingerprints) is not compared.
    pub fingerprint: Option<String>,
}

impl IdempotencyKey {
    /// Whether a live row with `stored` names a different request than this one.
    pub fn reused_against(&self, stored: Option<&str>) -> bool {
        matches!((self.fingerprint.as_deref(), stored), (Some(a), Some(b)) if a != b)
    }
}

/// How long an idempotency key names its event.
pub const IDEMPOTENCY_WINDOW_HOURS: i64 = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    Stored(Uuid),
    /// Already stored (same idempotency key within 24 h, or the same
    /// external id from the same origin): the original event id.
    Duplicate(Uuid),
}

impl IngestOutcome {
    pub fn event_id(&self) -> Uuid {
        match self {
            IngestOutcome::Stored(id) | IngestOutcome::Duplicate(id) => *id,
        }
    }
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its first attempt.
    Pending,
    /// Claimed by a worker under a lease.
    InFlight,
    /// Waiting for a retry (or for a throttled destination to resume).
    Scheduled,
    Delivered,
    /// Dead letter: will not be tried again without a person.
    Dead,
    /// Not sent on purpose (e.g. no consent for the destination's purposes).
    Skipped,
    /// A dead letter an operator chose not to replay.
    Discarded,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 7] = [
        DeliveryState::Pending,
        DeliveryState::InFlight,
        DeliveryState::Scheduled,
        DeliveryState::Delivered,
        DeliveryState::Dead,
        DeliveryState::Skipped,
        DeliveryState::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Scheduled => "scheduled",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Skipped => "skipped",
            DeliveryState::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Still to be sent (pending, in flight or scheduled).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            DeliveryState::Pending | DeliveryState::InFlight | DeliveryState::Scheduled
        )
    }
}

/// One event to one destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Stable across retries: receivers use it to drop duplicates.
    pub id: Uuid,
    pub event_id: Uuid,
    pub destination: String,
    /// Orders deliveries about the same person (`email:…`, `phone:…`, `event:…`).
    pub contact_key: String,
    pub state: DeliveryState,
    /// Every try, including throttled ones.
    pub attempts: u32,
    /// Tries that failed (throttling excluded); counts toward `max_attempts`.
    pub failures: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<Uuid>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// Why it is dead or skipped.
    pub reason: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The dead delivery this one replays.
    pub replay_of: Option<Uuid>,
    /// The delivery that replayed this one.
    pub replayed_by: Option<Uuid>,
    /// Field overrides for a replay (`dlq replay --set field=value`).
    pub overrides: Option<Map<String, Value>>,
}

/// A claimed delivery with its event, ready to send.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery: Delivery,
    pub event: Event,
    /// The golden record (for the consent check and CRM ids).
    pub contact: Option<leadrelay_model::Contact>,
}

/// A record kept in a destination for one of our keys, e.g. the HubSpot
/// contact id for `email:jane@example.com`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteId {
    pub object: String,
    pub key: String,
    pub id: String,
}

/// One try of a delivery, as recorded in the attempt log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub destination: String,
    /// 1 for the first try.
    pub number: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// Method and URL without secrets.
    pub method: Option<String>,
    pub url: Option<String>,
    pub request_bytes: Option<u64>,
    /// Hex SHA-256 of the request body.
    pub request_sha256: Option<String>,
    pub status: Option<u16>,
    /// Truncated, with personal data redacted.
    pub response_excerpt: Option<String>,
    /// `ok`, `timeout`, `connect`, `http_4xx`, `http_5xx`, `throttled`, `consent`, …
    pub error_class: Option<String>,
    /// `delivered`, `retry`, `throttled`, `dead`, `skipped`.
    pub outcome: String,
    pub message: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The request as sent and the response headers (None when nothing
    /// was sent, or for attempts logged before this was recorded).
    pub exchange: Option<Exchange>,
}

/// One HTTP exchange of an attempt: the request as sent, with every secret
/// replaced by the name of the env var it came from (`$HUBSPOT_TOKEN`), its
/// body capped at [`Exchange::MAX_BODY`], and the response headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    pub request_headers: Vec<(String, String)>,
    pub request_body: String,
    /// True when `request_body` was cut at [`Exchange::MAX_BODY`].
    #[serde(default)]
    pub request_body_truncated: bool,
    #[serde(default)]
    pub response_headers: Vec<(String, String)>,
}

impl Exchange {
    /// Most request body kept per attempt.
    pub const MAX_BODY: usize = 16 * 1024;

    /// The request's `content-type`, if it had one.
    pub fn content_type(&self) -> &str {
        self.request_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// What a worker reports for one claimed delivery.
#[derive(Debug, Clone)]
pub struct Completion {
    pub delivery_id: Uuid,
    pub lease_id: Uuid,
    /// The attempt to log (None when a lease is released without sending).
    pub attempt: Option<Attempt>,
    pub transition: Transition,
    /// An event stored (with one outbox row per destination) in the same
    /// transaction — if and only if `transition` is applied, i.e. the lease
    /// is still current. Used to copy dead letters to the destinations in
    /// `dead_letter_copies` so that a copy can never be lost or doubled.
    pub follow_up: Option<IngestItem>,
}

/// The state a delivery moves to.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Delivered {
        remote_ids: Vec<RemoteId>,
    },
    /// Try again at `at`; `failed` counts it toward `max_attempts`.
    Scheduled {
        at: DateTime<Utc>,
        failed: bool,
        status: Option<u16>,
        error: String,
    },
    Dead {
        status: Option<u16>,
        reason: String,
    },
    Skipped {
        reason: String,
    },
    /// Give the lease back untried (shutdown): due again immediately.
    Released,
}

/// Operational state of a destination, shared by every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationState {
    pub name: String,
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<String>,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    /// `closed`, `open` or `half_open`.
    pub circuit: String,
}

impl DestinationState {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            paused_until: None,
            pause_reason: None,
            disabled: false,
            disabled_reason: None,
            circuit: "closed".into(),
        }
    }

    pub fn paused_at(&self, now: DateTime<Utc>) -> bool {
        self.paused_until.is_some_and(|u| u > now)
    }
}

/// Health figures for one destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationStats {
    pub destination: String,
    /// Unfinished deliveries by state, and dead letters waiting for a person
    /// (not yet replayed).
    pub pending: u64,
    pub in_flight: u64,
    pub scheduled: u64,
    pub dead: u64,
    /// Attempts since the window start, and how many succeeded / failed
    /// (throttled attempts count as neither).
    pub window_attempts: u64,
    pub window_succeeded: u64,
    pub window_failed: u64,
    /// Deliveries that went dead since the window start.
    pub window_dead: u64,
    pub latency_p50_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
}

impl DestinationStats {
    /// Unfinished deliveries.
    pub fn backlog(&self) -> u64 {
        self.pending + self.in_flight + self.scheduled
    }

    /// Share of succeeded attempts in the window (None without attempts).
    pub fn success_rate(&self) -> Option<f64> {
        let n = self.window_succeeded + self.window_failed;
        (n > 0).then(|| self.window_succeeded as f64 / n as f64)
    }
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event_type: Option<EventType>,
    pub origin_kind: Option<OriginKind>,
    pub origin_name: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Matches the email or any text in the event.
    pub search: Option<String>,
    pub spam: Option<bool>,
    pub contact_id: Option<Uuid>,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub destination: Option<String>,
    pub state: Option<DeliveryState>,
    pub event_id: Option<Uuid>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Leave out dead letters that were already replayed (the dead-letter
    /// queue proper: what still waits for a person).
    pub exclude_replayed: bool,
}

/// What retention deletes: data older than each cut-off.
#[derive(Debug, Clone)]
pub struct PurgePolicy {
    pub raw_payloads_before: DateTime<Utc>,
    pub attempts_before: DateTime<Utc>,
    pub finished_deliveries_before: DateTime<Utc>,
    pub idempotency_before: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    pub raw_payloads: u64,
    pub attempts: u64,
    pub deliveries: u64,
    pub idempotency_keys: u64,
}

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// SQLite: fsync every commit (`synchronous=FULL`).
    pub sqlite_full_sync: bool,
    /// Most write jobs committed together.
    pub group_commit_max: usize,
    /// SQLite: read connections.
    pub read_pool: usize,
    /// PostgreSQL: connections in the pool.
    pub pool_size: usize,
    /// PostgreSQL: longest a statement may run.
    pub statement_timeout: std::time::Duration,
    /// PostgreSQL: verify the server's TLS certificate (else encrypt only).
    pub tls_verify: bool,
    /// Longest a store call may take (`storage.timeout`).
    pub call_timeout: std::time::Duration,
    /// Longest a scanning call may take (`storage.long_timeout`).
    pub long_call_timeout: std::time::Duration,
    /// How ingest merges events into golden contacts (`[contacts]`).
    pub contact_rules: std::sync::Arc<crate::contacts::MergeRules>,
    /// Scores and stages contacts as events are merged (`[scoring]`), in
    /// the same transaction.
    pub lead_hook: Option<std::sync::Arc<crate::pipeline::LeadHook>>,
    /// PostgreSQL: this node's stable name (`storage.node_id`): its leases
    /// carry it, so a restart can give back its previous run's leases.
    pub node_id: Option<String>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            sqlite_full_sync: true,
            group_commit_max: 512,
            read_pool: 4,
            pool_size: 16,
            statement_timeout: std::time::Duration::from_secs(10),
            tls_verify: false,
            call_timeout: std::time::Duration::from_secs(5),
            long_call_timeout: std::time::Duration::from_secs(60),
            contact_rules: Default::default(),
            lead_hook: None,
            node_id: None,
        }
    }
}
