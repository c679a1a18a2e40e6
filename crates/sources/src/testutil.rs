//! Test helpers shared by every kind's tests: owned requests, env maps and
//! the vendors' signing algorithms written out independently of the
//! implementation (so a bug in `auth.rs` cannot sign its own way to green).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::{HookError, HookParse, InboundEvent, InboundRequest, SourceKind};

/// The fixed "now" of every test request unless `.at()` says otherwise.
pub(crate) fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_718_000_000, 0).unwrap_or_default()
}

/// A request with owned parts.
#[derive(Debug, Clone)]
pub(crate) struct TestRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received_at: DateTime<Utc>,
}

impl TestRequest {
    pub(crate) fn post(url: &str, body: impl AsRef<[u8]>) -> Self {
        Self {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_ref().to_vec(),
            received_at: now(),
        }
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        let name = name.to_ascii_lowercase();
        self.headers.retain(|(k, _)| *k != name);
        self.headers.push((name, value.to_string()));
        self
    }

    pub(crate) fn without_header(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| k != name);
        self
    }

    pub(crate) fn content_type(self, value: &str) -> Self {
        self.header("content-type", value)
    }

    pub(crate) fn req(&self) -> InboundRequest<'_> {
        InboundRequest {
            method: &self.method,
            url: &self.url,
            headers: &self.headers,
            body: &self.body,
            received_at: self.received_at,
        }
    }
}

/// Builds a kind with settings and an env made of `(name, value)` pairs.
pub(crate) fn build(kind: &str, settings: Value, env: &[(&str, &str)]) -> Box<dyn SourceKind> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match crate::build(kind, &settings, &lookup) {
        Ok(source) => source,
        Err(errors) => panic!("{kind} settings rejected: {errors:?}"),
    }
}

/// Authenticates then parses, as the HTTP layer does.
pub(crate) fn receive(source: &dyn SourceKind, req: &TestRequest) -> Result<HookParse, HookError> {
    source.authenticate(&req.req())?;
    source.parse(&req.req())
}

/// The events of a request that must parse to events.
pub(crate) fn events(source: &dyn SourceKind, req: &TestRequest) -> Vec<InboundEvent> {
    match receive(source, req) {
        Ok(HookParse::Events(events)) => events,
        other => panic!("expected events, got {other:?}"),
    }
}

/// The single event of a request.
pub(crate) fn one_event(source: &dyn SourceKind, req: &TestRequest) -> InboundEvent {
    let mut all = events(source, req);
    assert_eq!(all.len(), 1, "expected one event, got {all:?}");
    all.remove(0)
}

/// HMAC-SHA256 of `message` under `key`, raw.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

pub(crate) fn hmac_sha256_hex(key: &str, message: &[u8]) -> String {
    hex::encode(hmac_sha256(key.as_bytes(), message))
}

pub(crate) fn hmac_sha256_base64(key: &str, message: &[u8]) -> String {
    STANDARD.encode(hmac_sha256(key.as_bytes(), message))
}

/// Loads a fixture from `tests/fixtures/`.
pub(crate) fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The data field `key` of an event as a string.
pub(crate) fn data_str<'e>(event: &'e InboundEvent, key: &str) -> &'e str {
    event
        .data
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no data.{key} in {:?}", event.data))
}

pub(crate) fn email_of(event: &InboundEvent) -> &str {
    event
        .contact
        .email
        .as_ref()
        .map(|e| e.as_str())
        .unwrap_or_else(|| panic!("no email in {event:?}"))
}

pub(crate) fn has_ref(event: &InboundEvent, object: &str, id: &str) -> bool {
    event
        .vendor_refs
        .iter()
        .any(|r| r.object == object && r.id == id)
}

/// The largest request a vendor documents fits its kind's default body limit
/// (`KindInfo::max_body_bytes`) and every event in it is parsed.
pub(crate) fn assert_largest_fits(source: &dyn SourceKind, req: &TestRequest, expected: usize) {
    let info = crate::describe(source.kind()).unwrap_or_else(|| panic!("{}", source.kind()));
    assert!(
        req.body.len() <= info.max_body_bytes,
        "{}: the largest documented request is {} bytes, the default limit {}",
        info.name,
        req.body.len(),
        info.max_body_bytes
    );
    assert_eq!(events(source, req).len(), expected, "{}", info.name);
}

/// `n` bytes of text, for free-text fields at their realistic largest.
pub(crate) fn long_text(n: usize) -> String {
    "Thanks for reaching out, this looks interesting. "
        .chars()
        .cycle()
        .take(n)
        .collect()
}
