//! Inbound sources: webhooks from sales-engagement tools, schedulers, form
//! builders and CRMs, verified and turned into canonical events.
//!
//! Each vendor kind lives in a folder of its own (`src/<kind>/`) and
//! implements [`SourceKind`]: authenticate the request exactly the way the
//! vendor signs it, then parse the body into [`InboundEvent`]s. This crate
//! does no I/O on the request path: the HTTP layer hands it the raw request,
//! stores what comes back in one transaction, and only then answers the
//! vendor — a source never calls out before acknowledging.

//!
//! Conventions every kind follows (see the book, `docs/src/reference/sources/`, for the per-vendor detail):
//! - every event carries `data.vendor` (the kind) and `data.vendor_event` (the
//!   vendor's own name for what happened);
//! - a vendor event with no canonical meaning becomes type [`CUSTOM_EVENT_TYPE`]
//!   (`custom`) rather than being rejected: routes select it with a condition
//!   on `data.vendor_event`;
//! - `external_id` is the vendor's event id, or `sha256:<hex>` over the fields
//!   that identify the event when the vendor sends none, so retries dedupe;
//! - an email the vendor sends that does not parse is kept as
//!   `data.invalid_email` and `contact.email` stays empty (the vendor is
//!   authoritative about what happened, not about address syntax).

use chrono::{DateTime, Utc};
use leadrelay_model::{ContactData, EventType, FieldChange, VendorRef};
use serde_json::{Map, Value};

pub mod connect;

mod auth;
mod config;
mod event;
mod json;
pub use json::kind_of as json_kind;
mod token_source;
pub mod xml;

mod apollo;
mod calendly;
mod generic;
mod groove;
mod hubspot;
pub use hubspot::contact_from_properties as hubspot_contact;
mod lemlist;
mod mailshake;
mod mixmax;
mod pipedrive;
mod qwilr;
mod replyio;
mod salesforce_outbound_message;
mod salesloft;
mod smartlead;
mod typeform;
mod woodpecker;

#[cfg(test)]
mod testutil;

/// The event type of vendor events that have no canonical meaning; the
/// vendor's own name is in `data.vendor_event`.
pub const CUSTOM_EVENT_TYPE: &str = "custom";

/// A sales activity logged in a CRM (call, meeting, email, task): Pipedrive
/// activities and Salesforce Tasks and Events.
pub const ACTIVITY_LOGGED: &str = "activity.logged";

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
    /// 422: the JSON body nests deeper than
    /// [`leadrelay_model::MAX_JSON_DEPTH`] levels; `path` is the first value
    /// too deep (`body` when the body is too deep for the parser).
    #[error(
        "{path}: {}",
        leadrelay_model::too_deep_message(leadrelay_model::MAX_JSON_DEPTH)
    )]
    TooDeep { path: String },
}

impl HookError {
    pub fn status(&self) -> u16 {
        match self {
            HookError::Unauthorized(_) | HookError::Stale(_) => 401,
            HookError::Malformed(_) => 400,
            HookError::UnsupportedMediaType(_) => 415,
            HookError::TooDeep { .. } => 422,
        }
    }

    /// A stable machine-readable code for the JSON error body and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            HookError::Unauthorized(_) => "unauthorized",
            HookError::Stale(_) => "stale_timestamp",
            HookError::Malformed(_) => "malformed_payload",
            HookError::UnsupportedMediaType(_) => "unsupported_media_type",
            HookError::TooDeep { .. } => "too_deep",
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

/// How one kind is set up, for `leadrelay sources kinds` and the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// The `kind` value in the configuration.
    pub name: &'static str,
    /// The vendor and product, for people.
    pub title: &'static str,
    /// How requests are authenticated.
    pub auth: &'static str,
    /// What to do on the vendor's side, in one paragraph.
    pub setup: &'static str,
    /// The largest request the vendor documents sending: its biggest batch,
    /// or one event with its free-text fields (email bodies, answers) full.
    pub largest_request: &'static str,
    /// The body limit of a source of this kind unless its configuration sets
    /// `max_body_bytes`: room for [`KindInfo::largest_request`] with margin.
    /// The HTTP layer never applies less than `server.max_body_bytes`.
    pub max_body_bytes: usize,
    /// The vendor's public documentation this kind was built from, as
    /// `(title, URL)`.
    pub docs: &'static [(&'static str, &'static str)],
}

/// The largest body any source parses, whatever its configured limit.
pub const MAX_BODY_BYTES: usize = 10 * MIB;

/// The body limit of a source of `kind` when its configuration sets none
/// (room for the vendor's largest documented request); `None` for an
/// unknown kind.
pub fn default_max_body_bytes(kind: &str) -> Option<usize> {
    describe(kind).map(|info| info.max_body_bytes)
}

/// One kibibyte, for the body limits of [`KindInfo::max_body_bytes`].
pub(crate) const KIB: usize = 1024;
/// One mebibyte.
pub(crate) const MIB: usize = 1024 * 1024;

type Builder = fn(
    &Value,
    &dyn Fn(&str) -> Option<String>,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>>;

/// Every kind, in the order they are documented.
const KINDS: [(&KindInfo, Builder); 16] = [
    (&mailshake::INFO, mailshake::build),
    (&apollo::INFO, apollo::build),
    (&salesloft::INFO, salesloft::build),
    (&smartlead::INFO, smartlead::build),
    (&lemlist::INFO, lemlist::build),
    (&mixmax::INFO, mixmax::build),
    (&groove::INFO, groove::build),
    (&replyio::INFO, replyio::build),
    (&woodpecker::INFO, woodpecker::build),
    (&qwilr::INFO, qwilr::build),
    (&calendly::INFO, calendly::build),
    (&typeform::INFO, typeform::build),
    (&hubspot::INFO, hubspot::build),
    (&pipedrive::INFO, pipedrive::build),
    (
        &salesforce_outbound_message::INFO,
        salesforce_outbound_message::build,
    ),
    (&generic::INFO, generic::build),
];

const KIND_NAMES: [&str; 16] = [
    "mailshake",
    "apollo",
    "salesloft",
    "smartlead",
    "lemlist",
    "mixmax",
    "groove",
    "replyio",
    "woodpecker",
    "qwilr",
    "calendly",
    "typeform",
    "hubspot",
    "pipedrive",
    "salesforce_outbound_message",
    "generic",
];

/// The `kind` names this build knows.
pub fn kinds() -> &'static [&'static str] {
    &KIND_NAMES
}

/// Setup notes for every kind, in [`kinds`] order.
pub fn kind_infos() -> impl Iterator<Item = &'static KindInfo> {
    KINDS.iter().map(|(info, _)| *info)
}

/// Setup notes for one kind.
pub fn describe(kind: &str) -> Option<&'static KindInfo> {
    kind_infos().find(|info| info.name == kind)
}

/// Builds the source of `kind` from its settings (the source's config table
/// as JSON, without the `kind` key). Secrets are named by env var in the
/// settings and resolved through `env`. Every problem found is reported, each
/// with the settings key at fault.
pub fn build(
    kind: &str,
    settings: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    match KINDS.iter().find(|(info, _)| info.name == kind) {
        Some((_, build)) => build(settings, env),
        None => Err(vec![SourceConfigError {
            field: "kind".into(),
            message: format!(
                "unknown source kind {kind:?}; known kinds: {}",
                KIND_NAMES.join(", ")
            ),
        }]),
    }
}

#[cfg(test)]
mod lib_tests {
    use super::*;

    #[test]
    fn kind_tables_agree() {
        let names: Vec<&str> = kind_infos().map(|i| i.name).collect();
        assert_eq!(names, kinds());
        for info in kind_infos() {
            assert!(
                !info.setup.is_empty() && !info.auth.is_empty() && !info.title.is_empty(),
                "{}",
                info.name
            );
        }
        assert_eq!(describe("hubspot").map(|i| i.name), Some("hubspot"));
        assert!(describe("yesware").is_none());
    }

    /// Every kind's default body limit is at least the server's 64 KiB and
    /// at most what a source parses; every kind says what its largest request
    /// is, and the vendors that publish webhook documentation are cited.
    #[test]
    fn every_kind_has_a_body_limit_and_its_sources() {
        for info in kind_infos() {
            assert!(
                (64 * KIB..=MAX_BODY_BYTES).contains(&info.max_body_bytes),
                "{}: {}",
                info.name,
                info.max_body_bytes
            );
            assert!(!info.largest_request.is_empty(), "{}", info.name);
            let undocumented = ["apollo", "groove", "qwilr", "generic"];
            assert_eq!(
                info.docs.is_empty(),
                undocumented.contains(&info.name),
                "{}",
                info.name
            );
            for (title, url) in info.docs {
                assert!(
                    !title.is_empty() && url.starts_with("https://"),
                    "{}: {title} {url}",
                    info.name
                );
            }
        }
        assert_eq!(default_max_body_bytes("woodpecker"), Some(2 * MIB));
        assert_eq!(default_max_body_bytes("yesware"), None);
    }

    #[test]
    fn unknown_kind_is_reported_on_the_kind_key() {
        let Err(errors) = build("yesware", &Value::Null, &|_| None) else {
            panic!("yesware has no webhooks")
        };
        assert_eq!(errors[0].field, "kind");
        assert!(errors[0].message.contains("generic"));
    }

    #[test]
    fn every_kind_reports_unknown_keys_and_missing_secrets() {
        let settings = serde_json::json!({"no_such_key": 1});
        for kind in kinds() {
            let Err(errors) = build(kind, &settings, &|_| None) else {
                panic!("{kind} accepted an unknown key")
            };
            assert!(
                errors.iter().any(|e| e.field == "no_such_key"),
                "{kind}: {errors:?}"
            );
        }
    }

    /// Minimal valid settings for every kind (all secrets read from `X`).
    fn minimal(kind: &str) -> Value {
        match kind {
            "hubspot" => serde_json::json!({"client_secret_env": "X"}),
            "calendly" => serde_json::json!({"signing_key_env": "X"}),
            "typeform" => serde_json::json!({"secret_env": "X"}),
            "salesloft" => serde_json::json!({"callback_token_env": "X"}),
            "pipedrive" => {
                serde_json::json!({"http_auth_user": "u", "http_auth_password_env": "X"})
            }
            "salesforce_outbound_message" => {
                serde_json::json!({"organization_id": "00D000000000062"})
            }
            "generic" => {
                serde_json::json!({"token_env": "X", "event_type_pointer": "/e", "events_pointer": "/a"})
            }
            _ => serde_json::json!({"token_env": "X"}),
        }
    }

    #[test]
    fn no_input_makes_any_kind_panic() {
        let env = |_: &str| Some("secret".to_string());
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        let bodies: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"null".to_vec(),
            b"[]".to_vec(),
            b"[1, \"x\", null, {}]".to_vec(),
            b"{}".to_vec(),
            br#"{"meta": 1, "data": [], "previous": "x", "event": 5, "payload": [], "form_response": 1, "a": 2, "e": {}}"#.to_vec(),
            br#"{"event": {"id": []}, "contact_fields": 1, "prospect": [], "recipient": 7, "resource_url": {}}"#.to_vec(),
            br#"[{"prospect": {"email": 1e400}}, {"subscriptionType": null, "objectId": {"x": 1}}]"#.to_vec(),
            br#"{"a": [{"e": "\u0000\ud83d\ude00", "email": "\u00e9@\u00e9.\u00e9"}]}"#.to_vec(),
            deep.into_bytes(),
            vec![0xff, 0xfe, 0x00, 0x7b],
            b"<Envelope><Body><notifications><Notification><sObject/></Notification></notifications></Body></Envelope>".to_vec(),
            b"<?xml version='1.0'?><a>&#0;</a>".to_vec(),
            b"event=%ZZ&&=&x".to_vec(),
        ];
        let types = [
            "application/json",
            "text/xml",
            "application/x-www-form-urlencoded",
            "image/png",
        ];
        for kind in kinds() {
            let source = match build(kind, &minimal(kind), &env) {
                Ok(s) => s,
                Err(e) => panic!("{kind}: {e:?}"),
            };
            for body in &bodies {
                for ct in types {
                    let headers = vec![
                        ("content-type".to_string(), ct.to_string()),
                        ("x-salesloft-event".to_string(), "email_updated".to_string()),
                    ];
                    let req = InboundRequest {
                        method: "POST",
                        url: "https://x.test/v1/hooks/s?event=Replied&token=secret",
                        headers: &headers,
                        body,
                        received_at: Utc::now(),
                    };
                    let _ = source.authenticate(&req);
                    if let Ok(parsed) = source.parse(&req) {
                        let _ = source.acknowledge(&parsed);
                    }
                }
            }
        }
    }
}
