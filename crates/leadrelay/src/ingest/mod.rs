//! Ingest: from an HTTP submission to a stored event with its outbox rows.
//!
//! parse the body → reject files → honeypot → validate every field →
//! enrich (attribution, hashed IP, consent) → route → ONE store transaction.
//! Vendor webhooks (`hook`) take the same path from routing on, with events
//! a source has already verified and mapped.
//! Nothing here calls a third party: a form never waits on a CRM.

pub mod api;
pub mod body;
pub mod enrich;
pub mod form;
pub mod hook;
pub mod withdraw;

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;
use chrono::Utc;
use leadrelay_model::{Event, EventType, Origin, RawPayload, new_id};
use uuid::Uuid;

use crate::config::{Config, FormConfig};
use crate::error::ApiError;
use crate::routing::RouteTable;
use crate::store::{IdempotencyKey, IngestItem, IngestOutcome, Store, StoreError};
use enrich::{IpHasher, RequestContext};
pub use hook::HookRequest;

/// A JSON body, parsed, with objects and arrays nested at most
/// [`leadrelay_model::MAX_JSON_DEPTH`] levels: anything deeper is answered
/// 422 naming the path (`body` when it is too deep for the parser to say),
/// so nothing is stored that could not be read back. Other parse errors go
/// through `malformed` (400). `per_item`: an array's elements are checked
/// one by one (each is level 1), as a batch of events is.
pub fn parse_json_limited(
    bytes: &[u8],
    per_item: bool,
    malformed: impl FnOnce(serde_json::Error) -> ApiError,
) -> Result<serde_json::Value, ApiError> {
    use leadrelay_model::{MAX_JSON_DEPTH, text_depth, too_deep, too_deep_message};
    let too_deep_error = |path: String| {
        ApiError::validation(vec![crate::error::FieldError::new(
            if path.is_empty() { "body" } else { &path },
            "too_deep",
            too_deep_message(MAX_JSON_DEPTH),
        )])
    };
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        // serde_json stops at 128 levels: say why rather than "malformed".
        Err(_) if text_depth(bytes) > MAX_JSON_DEPTH + usize::from(per_item) => {
            return Err(too_deep_error(String::new()));
        }
        Err(e) => return Err(malformed(e)),
    };
    let found = match &value {
        serde_json::Value::Array(items) if per_item => {
            items.iter().enumerate().find_map(|(i, v)| {
                too_deep(v, MAX_JSON_DEPTH).map(|p| {
                    if p.is_empty() || p.starts_with('[') {
                        format!("[{i}]{p}")
                    } else {
                        format!("[{i}].{p}")
                    }
                })
            })
        }
        v => too_deep(v, MAX_JSON_DEPTH),
    };
    match found {
        Some(path) => Err(too_deep_error(path)),
        None => Ok(value),
    }
}

/// The kv key under which a generated IP-hash key is kept.
const IP_KEY_KV: &str = "privacy.ip_hash_key";

/// A form submission as the HTTP layer hands it over.
pub struct FormSubmission<'a> {
    pub form: &'a str,
    pub content_type: Option<&'a str>,
    pub body: Bytes,
    pub idempotency_header: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub context: RequestContext<'a>,
}

/// A stored (or already stored) submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub id: Uuid,
    /// An earlier submission with the same idempotency key.
    pub duplicate: bool,
    pub spam: bool,
}

pub struct Ingestor {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    routes: RouteTable,
    ip_hasher: IpHasher,
}

impl Ingestor {
    /// `env` resolves the IP-hash key variable; without it, a key is
    /// generated once and kept in the store.
    pub async fn new(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        routes: RouteTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, crate::store::StoreError> {
        let key = match env(&config.privacy.ip_hash_key_env).filter(|k| !k.trim().is_empty()) {
            Some(k) => k.into_bytes(),
            None => {
                let mut fresh = [0u8; 32];
                rand::fill(&mut fresh);
                store
                    .kv_get_or_insert(IP_KEY_KV, &hex::encode(fresh))
                    .await?
                    .into_bytes()
            }
        };
        Ok(Self {
            store,
            config,
            routes,
            ip_hasher: IpHasher::new(&key),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub fn form(&self, name: &str) -> Option<&FormConfig> {
        self.config.forms.get(name)
    }

    /// Validates, enriches and stores a form submission. Resolves only after
    /// the event and its outbox rows are committed.
    pub async fn submit_form(&self, sub: FormSubmission<'_>) -> Result<Accepted, ApiError> {
        // Where a reused key came from, to name it in the answer.
        let key_field = match (sub.idempotency_header, self.form(sub.form)) {
            (Some(_), _) => "Idempotency-Key".to_string(),
            (None, Some(f)) => f.idempotency_field.clone().unwrap_or_default(),
            (None, None) => String::new(),
        };
        let item = self.form_item(sub).await?;
        let spam = item.event.spam;
        let outcome = match self.store.ingest(vec![item]).await {
            Err(StoreError::IdempotencyKeyReused(_)) => {
                return Err(ApiError::idempotency_key_reused(&[key_field]));
            }
            other => other?,
        };
        match outcome.first() {
            Some(IngestOutcome::Stored(id)) => Ok(Accepted {
                id: *id,
                duplicate: false,
                spam,
            }),
            Some(IngestOutcome::Duplicate(id)) => Ok(Accepted {
                id: *id,
                duplicate: true,
                spam,
            }),
            None => Err(ApiError::unavailable("the store returned no result")),
        }
    }

    /// Builds the event and its routing without storing it.
    pub async fn form_item(&self, sub: FormSubmission<'_>) -> Result<IngestItem, ApiError> {
        build_form_item(&self.config, &self.routes, Some(&self.ip_hasher), sub).await
    }
}

/// Validates and enriches a form submission into the event and its routing,
/// without a store (also used by `simulate`, which has no IP to hash).
pub async fn build_form_item(
    config: &Config,
    routes: &RouteTable,
    ip_hasher: Option<&IpHasher>,
    sub: FormSubmission<'_>,
) -> Result<IngestItem, ApiError> {
    let form_cfg = config.forms.get(sub.form).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_form",
            format!("there is no form named {:?}", sub.form),
        )
    })?;
    let (kind, boundary) = body::kind_of(sub.content_type)?;
    let raw_body = String::from_utf8_lossy(&sub.body).into_owned();
    let json_body = (kind == body::BodyKind::Json).then(|| sub.body.clone());
    let submission = body::parse(kind, boundary, sub.body.clone()).await?;
    body::reject_files(&submission)?;

    let header_key = match sub.idempotency_header {
        Some(k) => Some(check_idempotency_key(k)?),
        None => None,
    };
    let field_key = form_cfg
        .idempotency_field
        .as_ref()
        .and_then(|f| submission.get(f))
        .and_then(body::FieldValue::as_text)
        .filter(|k| !k.trim().is_empty());
    let idempotency_key = match (header_key, field_key) {
        (Some(k), _) => Some(k),
        (None, Some(k)) => Some(check_idempotency_key(&k)?),
        (None, None) => None,
    };

    let now = Utc::now();
    let spam = form::honeypot_hit(form_cfg, &submission);
    let valid = match form::validate(form_cfg, &submission, now) {
        Ok(v) => v,
        // A bot that filled the honeypot is told it succeeded either way.
        Err(_) if spam => form::ValidForm::default(),
        Err(errors) => return Err(ApiError::validation(errors)),
    };
    let event_type = EventType::parse(&form_cfg.event_type).unwrap_or(EventType::LeadCreated);
    let mut event = Event {
        id: new_id(),
        event_type,
        origin: Origin::form(sub.form),
        received_at: now,
        occurred_at: now,
        contact: valid.contact,
        contact_id: None,
        data: valid.data,
        attribution: enrich::attribution(&submission, &sub.context),
        consent: valid.consent,
        ip_hash: sub.client_ip.and_then(|ip| ip_hasher.map(|h| h.hash(ip))),
        raw: RawPayload {
            content_type: sub.content_type.unwrap_or_default().to_string(),
            body: raw_body,
        },
        spam,
        idempotency_key: idempotency_key.clone(),
        external_id: None,
        vendor_refs: vec![],
        changes: vec![],
        playbooks: vec![],
    };
    if let Err(m) = withdraw::apply(&mut event, &config.privacy.unsubscribe_withdraws) {
        return Err(ApiError::validation(vec![crate::error::FieldError::new(
            withdraw::PURPOSES_FIELD,
            "invalid_purpose",
            m,
        )]));
    }
    let destinations = if spam {
        Vec::new()
    } else {
        routes.route_and_record(&mut event)
    };
    let idempotency = idempotency_key.map(|key| IdempotencyKey {
        scope: format!("form:{}", sub.form),
        key,
        fingerprint: Some(form_fingerprint(
            json_body.as_deref(),
            &submission,
            form_cfg.idempotency_field.as_deref(),
        )),
    });
    Ok(IngestItem {
        event,
        destinations,
        idempotency,
    })
}

/// SHA-256 (hex) of a request in canonical form: JSON with object keys
/// sorted (serde_json's map is ordered by key), so a client that re-encodes
/// the same request gets the same fingerprint.
pub fn fingerprint(canonical: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// The fingerprint of a form submission: its fields by name (a JSON body as
/// sent, nested values included; urlencoded and multipart bodies as parsed,
/// so a new multipart boundary changes nothing), without the field that
/// carries the idempotency key.
fn form_fingerprint(
    json_body: Option<&[u8]>,
    submission: &body::Submission,
    key_field: Option<&str>,
) -> String {
    use serde_json::Value;
    let mut fields = match json_body.and_then(|b| serde_json::from_slice::<Value>(b).ok()) {
        Some(Value::Object(m)) => m,
        _ => submission
            .fields
            .iter()
            .map(|(name, v)| {
                let v = match v {
                    body::FieldValue::Text(s) => Value::from(s.as_str()),
                    body::FieldValue::List(l) => Value::from(l.clone()),
                    body::FieldValue::Number(n) => Value::Number(n.clone()),
                    body::FieldValue::Bool(b) => Value::Bool(*b),
                    body::FieldValue::Null | body::FieldValue::Nested => Value::Null,
                    body::FieldValue::File { filename } => serde_json::json!({"file": filename}),
                };
                (name.clone(), v)
            })
            .collect(),
    };
    if let Some(k) = key_field {
        fields.remove(k);
    }
    fingerprint(&Value::Object(fields))
}

/// 1–255 visible ASCII characters.
fn check_idempotency_key(k: &str) -> Result<String, ApiError> {
    let k = k.trim();
    if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "an idempotency key is 1-255 visible ASCII characters",
        ));
    }
    Ok(k.to_string())
}
