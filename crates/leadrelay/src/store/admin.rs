//! The records behind the admin API and the dashboard: API keys and
//! dashboard sessions (both stored only as hashes), the review queue, the
//! privacy export/erase and its audit log, and the activity series the
//! overview charts are drawn from.

use chrono::{DateTime, Utc};
use leadrelay_model::{Contact, Event};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{Attempt, Delivery, RemoteId};

/// What an API key may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything, replays, discards, pauses and resumes, runs privacy
    /// export and erase.
    Admin,
    /// Reads, with emails and phone numbers masked.
    Viewer,
    /// Only sends events (`POST /v1/events`); reads nothing.
    Ingest,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::Ingest => "ingest",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            "ingest" => Some(Role::Ingest),
            _ => None,
        }
    }
}

/// A key to store: only the SHA-256 of the secret is kept.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    /// The first characters of the secret (`lr_AbCd`), to recognise a key in lists.
    pub prefix: String,
    /// Hex SHA-256 of the whole secret.
    pub hash: String,
    pub created_at: DateTime<Utc>,
}

/// A stored API key (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// A dashboard session to store: the cookie's token only as a hash.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Hex SHA-256 of the cookie value.
    pub token_hash: String,
    pub key_id: Uuid,
    /// Embedded in every form and checked on every POST.
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A live dashboard session with the key it was opened with.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub key: ApiKey,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Which contacts to list.
#[derive(Debug, Clone, Default)]
pub struct ContactFilter {
    /// Matches the email or any value of the record.
    pub search: Option<String>,
}

/// Where a review item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    Open,
    Resolved,
    Dismissed,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Open => "open",
            ReviewStatus::Resolved => "resolved",
            ReviewStatus::Dismissed => "dismissed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(ReviewStatus::Open),
            "resolved" => Some(ReviewStatus::Resolved),
            "dismissed" => Some(ReviewStatus::Dismissed),
            _ => None,
        }
    }
}

/// Something a person must decide, e.g. a sync conflict between a CRM's
/// value and ours that no ownership rule settles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewItem {
    pub id: Uuid,
    /// e.g. `sync_conflict`.
    pub kind: String,
    pub status: ReviewStatus,
    /// One line for lists (no personal data).
    pub summary: String,
    pub contact_id: Option<Uuid>,
    pub destination: Option<String>,
    /// The competing values and where they came from.
    pub details: Value,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
}

/// Everything held about one person.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacyExport {
    /// The audit record of this export.
    pub audit_id: Uuid,
    /// The golden record with its field provenance.
    pub contact: Option<Contact>,
    /// Every event about the person, with raw payloads.
    pub events: Vec<Event>,
    pub deliveries: Vec<Delivery>,
    pub attempts: Vec<Attempt>,
    /// Records destinations keep for the person (CRM ids).
    pub remote_records: Vec<RemoteRecord>,
}

/// A record a destination keeps for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRecord {
    pub destination: String,
    #[serde(flatten)]
    pub remote: RemoteId,
}

/// Who asks for an export or erase, about whom.
#[derive(Debug, Clone)]
pub struct PrivacyRequest {
    /// Normalised (trimmed, lower-case) email.
    pub email: String,
    /// `key:NAME` (API, dashboard) or `cli:USER`.
    pub actor: String,
    /// Keyed hash of the email: the audit log never holds the address.
    pub subject_hash: String,
    pub reason: Option<String>,
    /// A retention erase: only if the contact had no event since then
    /// (otherwise Conflict, nothing erased).
    pub idle_before: Option<DateTime<Utc>>,
}

/// What an erase removed. `remote_records` is the seam for erasure in the
/// destinations themselves (CRMs): the records they keep for the person,
/// which leadrelay no longer holds after the erase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EraseReport {
    pub audit_id: Uuid,
    pub contact_id: Option<Uuid>,
    /// Events whose personal data and raw payload were removed.
    pub event_ids: Vec<Uuid>,
    /// Unfinished deliveries and dead letters of those events, now skipped.
    pub deliveries_stopped: u64,
    /// Deliveries whose replay overrides were removed.
    pub overrides_cleared: u64,
    pub remote_records: Vec<RemoteRecord>,
    /// Local backup files (`file`, `csv` destinations) rewritten without
    /// the person's lines (filled by [`crate::privacy::Privacy::erase`]).
    #[serde(default)]
    pub backups: Vec<BackupErasure>,
    /// Erase requests queued to the CRMs holding the person (filled by
    /// [`crate::privacy::Privacy::erase`]), delivered through the outbox.
    #[serde(default)]
    pub remote_erasures: Vec<RemoteErasure>,
}

/// An erase request queued to one CRM: an event of type `privacy.erase`
/// routed to that destination alone, retried and dead-lettered like any
/// delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteErasure {
    pub destination: String,
    pub event_id: Uuid,
    pub delivery_id: Option<Uuid>,
    /// The records the CRM is asked to delete (`object`, `id`).
    pub records: Vec<RemoteRecordRef>,
}

/// A record in a destination, without the key we knew it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRecordRef {
    pub object: String,
    pub id: String,
}

/// One local backup file an erase rewrote, or a backup it could not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupErasure {
    /// The `file` or `csv` destination.
    pub destination: String,
    /// The file rewritten (or, on error, the backup directory).
    pub file: String,
    pub lines_removed: u64,
    /// Why the backup could not be rewritten (the store erase stands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One entry of the privacy audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: Uuid,
    /// `export` or `erase`.
    pub action: String,
    pub actor: String,
    pub subject_hash: String,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    /// What was exported or erased (ids and counts, never personal data).
    pub details: Value,
}

/// Leads received in one time bucket from one origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeadCount {
    pub bucket_start: DateTime<Utc>,
    /// `form:contact`, `source:hubspot` …
    pub origin: String,
    pub count: u64,
}

/// Delivery attempts in one time bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptBucket {
    pub bucket_start: DateTime<Utc>,
    pub succeeded: u64,
    pub failed: u64,
}

/// The event types counted as leads on the overview.
pub const LEAD_EVENT_TYPES: [&str; 2] = ["lead.created", "form.submitted"];
