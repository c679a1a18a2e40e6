//! Inbound sources: webhooks from sales-engagement tools, schedulers, form
//! builders and CRMs, verified and turned into canonical events.
//!
//! Each vendor kind lives in a folder of its own (`src/<kind>/`) and
//! implements [`SourceKind`]: authenticate the request exactly the way the
//! vendor signs it, then parse the body into [`InboundEvent`]s. This crate
//! does no I/O on the request path: the HTTP layer hands it the raw request,
//! stores what comes back in one transaction, and only then answers the
//! vendor — a source never calls out before acknowledging.

use chrono::{DateTime, Utc};
use leadrelay_model::{ContactData, EventType, FieldChange, VendorRef};
use serde_json::{Map, Value};

/// The request as received, before anything is stored.
#[derive(Debug, Clone, Copy)]
pub struct InboundRequest<'a> {
    /// `POST`, upper case.
    pub method: &'a str,
    /// The full URL the vendor called: leadrelay's configured public URL
    /// joined with the path and query (HubSpot v3 signs the full URI).
    pub url: &'a str,
    /// Header names lower-cased; values as received (invalid UTF-8 dropped).
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    pub received_at: DateTime<Utc>,
}

impl InboundRequest<'_> {
    /// The first value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a query parameter of the called URL.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let parsed = url::Url::parse(self.url).ok()?;
        parsed
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// One event a vendor reported, mapped onto the canonical model.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundEvent {
    pub event_type: EventType,
    /// The vendor's id for this event (or a stable digest of its identifying
    /// fields when the vendor sends none): a vendor retry carrying the same id
    /// is stored only once.
    pub external_id: Option<String>,
    /// When it happened according to the vendor.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The person, identified by email first.
    pub contact: ContactData,
    /// Event details worth keeping in canonical form (campaign, sequence,
    /// stage, meeting time, the vendor's own event name for custom types …).
    pub data: Map<String, Value>,
    /// The vendor's ids for the objects involved.
    pub vendor_refs: Vec<VendorRef>,
    /// For CRM change webhooks: the changed fields with previous values.
    pub changes: Vec<FieldChange>,
}

/// What a verified request contained.
#[derive(Debug, Clone, PartialEq)]
pub enum HookParse {
    /// A vendor test or verification request: answer, store nothing.
    Ping,
    /// One or more events, stored together in one transaction.
    Events(Vec<InboundEvent>),
}

/// The answer to send back to the vendor after the events are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl HookResponse {
    pub fn json_ok(body: &str) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            body: body.to_string(),
        }
    }
}

/// Why a request was refused. Each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// 401: missing or wrong signature, token or credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 401: the signed timestamp is outside the replay window.
    #[error("stale request: {0}")]
    Stale(String),
    /// 400: the body is not what this vendor sends (bad JSON/XML, wrong shape).
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// 415: a content type this vendor never sends.
    #[error("unsupported content type: {0}")]
    UnsupportedMediaType(String),
}

impl HookError {
    pub fn status(&self) -> u16 {
        match self {
            HookError::Unauthorized(_) | HookError::Stale(_) => 401,
            HookError::Malformed(_) => 400,
            HookError::UnsupportedMediaType(_) => 415,
        }
    }

    /// A stable machine-readable code for the JSON error body and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            HookError::Unauthorized(_) => "unauthorized",
            HookError::Stale(_) => "stale_timestamp",
            HookError::Malformed(_) => "malformed_payload",
            HookError::UnsupportedMediaType(_) => "unsupported_media_type",
        }
    }
}

/// A problem in a source's configuration, reported by `leadrelay check`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SourceConfigError {
    /// The settings key at fault, relative to the source's table (e.g. `secret_env`).
    pub field: String,
    pub message: String,
}

/// One vendor's webhook format.
pub trait SourceKind: Send + Sync {
    /// The `kind` name used in the configuration (`mailshake`, `hubspot` …).
    fn kind(&self) -> &'static str;

    /// Verifies the request the way the vendor authenticates it, in constant
    /// time, including the replay window where the vendor sends a timestamp.
    /// Runs before anything is parsed or stored.
    fn authenticate(&self, req: &InboundRequest<'_>) -> Result<(), HookError>;

    /// Parses an authenticated request.
    fn parse(&self, req: &InboundRequest<'_>) -> Result<HookParse, HookError>;

    /// The answer once the parsed events are durably stored (or for a ping).
    fn acknowledge(&self, _parsed: &HookParse) -> HookResponse {
        HookResponse::json_ok(r#"{"status":"accepted"}"#)
    }
}
