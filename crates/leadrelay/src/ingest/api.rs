//! Events sent through the API (`POST /v1/events`, with a key) and event
//! files (`leadrelay simulate FILE`): one JSON shape for both.
//!
//! ```json
//! {"type": "lead.created", "occurred_at": "2026-11-20T09:00:00Z",
//!  "contact": {"email": "sam@corp.example", "first_name": "Sam", "plan": "pro"},
//!  "data": {"budget": 2000}, "attribution": {"utm_source": "newsletter"},
//!  "consent": {"crm": true, "marketing_email": false},
//!  "idempotency_key": "order-1234"}
//! ```
//!
//! A request body holds one such object or an array of up to
//! [`MAX_BATCH`]. Every field of every event is checked before anything is
//! stored, and every error is reported at once with its path (`[3].contact.email`):
//! a batch is stored whole, in one transaction, or not at all. Emails and
//! phone numbers are checked and normalised like a form's; other standard
//! contact fields are text; anything else is a custom field.
//!
//! An API event's origin is `api:<key name>`: a caller cannot pose as a form
//! (whose fields were validated by its form config) or as a vendor webhook
//! (whose requests were signed), so `form` and `source` are refused there.
//! An event file for `simulate` may name either, to test those routes.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use leadrelay_model::{
    Attribution, ConsentPurpose, ConsentRecord, ContactData, EmailAddress, Event, EventType,
    Origin, PhoneE164, RawPayload, new_id,
};
use leadrelay_sources::json_kind;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Accepted, Ingestor, check_idempotency_key, withdraw};
use crate::config::Config;
use crate::error::{ApiError, FieldError};
use crate::store::{IdempotencyKey, IngestItem, IngestOutcome, StoreError};

/// Event types only leadrelay itself stores.
const RESERVED_PREFIX: &str = "privacy.";

/// Most events in one request.
pub const MAX_BATCH: usize = 100;

/// The scope of an API key's idempotency keys: `api:<key name>`. Each key
/// has its own, so two clients never replay each other's events; a key
/// rotated under the same name keeps its scope.
pub fn idempotency_scope(key_name: &str) -> String {
    format!("api:{key_name}")
}

/// The fingerprint of an API event: its JSON object without the
/// `idempotency_key` (which may come in the header instead), keys sorted.
fn event_fingerprint(raw: &str) -> String {
    let mut v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.remove("idempotency_key");
    }
    super::fingerprint(&v)
}

/// Where an event may say it came from.
#[derive(Debug, Clone, Copy)]
pub enum OriginRule<'a> {
    /// The authenticated API: `api:<key name>`; `form` and `source` refused.
    Key(&'a str),
    /// An event file: the `form` or `source` it names, else `api:cli`.
    Declared,
}

/// One event as JSON: its type and origin, the person, the data, the
/// attribution and the consent answers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    /// Default `lead.created`.
    #[serde(rename = "type", default)]
    event_type: Option<String>,
    /// The form it came from (its routes apply) …
    #[serde(default)]
    form: Option<String>,
    /// … or the webhook source; neither: the API.
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    occurred_at: Option<DateTime<Utc>>,
    /// Standard contact fields by name; others are custom fields.
    #[serde(default)]
    contact: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Map<String, Value>>,
    /// UTM parameters, click ids, `referrer`, `landing_page`, `user_agent`.
    #[serde(default)]
    attribution: Option<Map<String, Value>>,
    /// Purpose → granted.
    #[serde(default)]
    consent: Option<BTreeMap<String, bool>>,
    /// Stores the event once: the same event again with the same key (from
    /// the same API key) gets the first one's id (24 h); another event with
    /// that key is refused (422 `idempotency_key_reused`).
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// A checked event and the idempotency key it was sent with.
#[derive(Debug)]
pub struct ParsedEvent {
    pub event: Event,
    pub idempotency_key: Option<String>,
}

/// A request body's events, and whether it was an array.
#[derive(Debug)]
pub struct ParsedBody {
    pub events: Vec<ParsedEvent>,
    pub batch: bool,
}

/// One `POST /v1/events` request, as the HTTP layer hands it over.
#[derive(Debug, Clone, Copy)]
pub struct EventsRequest<'a> {
    /// The name of the API key that sent it: the events' origin `api:NAME`.
    pub key_name: &'a str,
    pub body: &'a [u8],
    pub idempotency_header: Option<&'a str>,
}

/// What became of each event of a request, in order.
#[derive(Debug, Clone)]
pub struct EventsAccepted {
    /// The body was an array (answered with a list).
    pub batch: bool,
    pub events: Vec<Accepted>,
}

impl Ingestor {
    /// Checks every event of an API request, then stores them all in ONE
    /// transaction with their outbox rows. Resolves only after the commit.
    pub async fn submit_events(&self, req: EventsRequest<'_>) -> Result<EventsAccepted, ApiError> {
        let header_key = req
            .idempotency_header
            .map(check_idempotency_key)
            .transpose()?;
        let mut body = parse_body(
            &self.config,
            req.body,
            OriginRule::Key(req.key_name),
            Utc::now(),
        )?;
        let from_header = header_key.is_some();
        if let Some(k) = header_key {
            if body.batch {
                return Err(ApiError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "invalid_idempotency_key",
                    "the Idempotency-Key header applies to one event; give each event \
                     of an array its own idempotency_key",
                ));
            }
            let one = &mut body.events[0];
            if one.idempotency_key.as_ref().is_some_and(|b| *b != k) {
                return Err(ApiError::validation(vec![FieldError::new(
                    "idempotency_key",
                    "conflicting_idempotency_key",
                    "differs from the Idempotency-Key header",
                )]));
            }
            one.event.idempotency_key = Some(k.clone());
            one.idempotency_key = Some(k);
        }
        // An event whose key an earlier event of the same batch has is
        // answered as that event's duplicate, as a retry would be — when it
        // is the same event; another event under the same key is refused.
        let batch = body.batch;
        let key_field = |i: usize| match (batch, from_header) {
            (true, _) => format!("[{i}].idempotency_key"),
            (false, true) => "Idempotency-Key".to_string(),
            (false, false) => "idempotency_key".to_string(),
        };
        let scope = idempotency_scope(req.key_name);
        let mut first_with_key: HashMap<String, (usize, String)> = HashMap::new();
        let mut slots = Vec::with_capacity(body.events.len());
        let mut items: Vec<IngestItem> = Vec::with_capacity(body.events.len());
        // Per item, its event's index in the body.
        let mut body_index = Vec::with_capacity(body.events.len());
        let mut reused = Vec::new();
        for (i, mut p) in body.events.into_iter().enumerate() {
            let fingerprint = p
                .idempotency_key
                .as_ref()
                .map(|_| event_fingerprint(&p.event.raw.body));
            if let (Some(k), Some(fp)) = (&p.idempotency_key, &fingerprint) {
                if let Some((first, first_fp)) = first_with_key.get(k) {
                    if first_fp != fp {
                        reused.push(key_field(i));
                    }
                    slots.push((*first, true));
                    continue;
                }
                first_with_key.insert(k.clone(), (items.len(), fp.clone()));
            }
            slots.push((items.len(), false));
            body_index.push(i);
            items.push(IngestItem {
                destinations: self.routes.route_and_record(&mut p.event),
                event: p.event,
                idempotency: p.idempotency_key.map(|key| IdempotencyKey {
                    scope: scope.clone(),
                    key,
                    fingerprint,
                }),
            });
        }
        if !reused.is_empty() {
            return Err(ApiError::idempotency_key_reused(&reused));
        }
        let n = items.len();
        let outcomes = if items.is_empty() {
            Vec::new()
        } else {
            match self.store.ingest(items).await {
                Err(StoreError::IdempotencyKeyReused(at)) => {
                    let fields: Vec<String> = at
                        .iter()
                        .filter_map(|&j| body_index.get(j))
                        .map(|&i| key_field(i))
                        .collect();
                    return Err(ApiError::idempotency_key_reused(&fields));
                }
                other => other?,
            }
        };
        if outcomes.len() != n {
            return Err(ApiError::unavailable(
                "the store did not answer for every event",
            ));
        }
        let events = slots
            .into_iter()
            .map(|(i, repeat)| match outcomes[i] {
                IngestOutcome::Stored(id) => Accepted {
                    id,
                    duplicate: repeat,
                    spam: false,
                },
                IngestOutcome::Duplicate(id) => Accepted {
                    id,
                    duplicate: true,
                    spam: false,
                },
            })
            .collect();
        Ok(EventsAccepted { batch, events })
    }
}

/// Parses a request body of one event or an array of events. 400 when it
/// is not JSON; 422 with every failing field (paths prefixed `[i].` in a
/// batch) when it is JSON but not valid events.
pub fn parse_body(
    config: &Config,
    bytes: &[u8],
    origin: OriginRule<'_>,
    now: DateTime<Utc>,
) -> Result<ParsedBody, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the body is empty: send one event as a JSON object, or an array of events",
        ));
    }
    let value = super::parse_json_limited(bytes, true, |e| {
        ApiError::bad_request(format!("the body is not valid JSON: {e}"))
    })?;
    let mut errors = Vec::new();
    let (items, batch) = match value {
        Value::Object(_) => (
            vec![(value, String::from_utf8_lossy(bytes).into_owned())],
            false,
        ),
        Value::Array(items) => {
            if items.len() > MAX_BATCH {
                return Err(ApiError::validation(vec![FieldError::new(
                    "body",
                    "too_many_events",
                    format!("{} events in one request; at most {MAX_BATCH}", items.len()),
                )]));
            }
            let pairs = items
                .into_iter()
                .map(|v| {
                    let raw = v.to_string();
                    (v, raw)
                })
                .collect();
            (pairs, true)
        }
        other => {
            return Err(ApiError::validation(vec![FieldError::new(
                "body",
                "invalid_type",
                format!(
                    "expected an event (a JSON object) or an array of events, not {}",
                    json_kind(&other)
                ),
            )]));
        }
    };
    let mut events = Vec::with_capacity(items.len());
    for (i, (value, raw)) in items.into_iter().enumerate() {
        let prefix = if batch {
            format!("[{i}].")
        } else {
            String::new()
        };
        if let Some(e) = parse_event(config, value, raw, origin, now, &prefix, &mut errors) {
            events.push(e);
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(ParsedBody { events, batch })
}

/// Parses an event file: exactly one event.
pub fn parse_one(
    config: &Config,
    bytes: &[u8],
    origin: OriginRule<'_>,
    now: DateTime<Utc>,
) -> Result<Event, ApiError> {
    let mut body = parse_body(config, bytes, origin, now)?;
    if body.batch || body.events.len() != 1 {
        return Err(ApiError::validation(vec![FieldError::new(
            "body",
            "invalid_type",
            "expected one event (a JSON object), not an array",
        )]));
    }
    Ok(body.events.remove(0).event)
}

/// Checks one event, adding its errors (paths under `prefix`) to `errors`.
fn parse_event(
    config: &Config,
    value: Value,
    raw: String,
    origin_rule: OriginRule<'_>,
    now: DateTime<Utc>,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) -> Option<ParsedEvent> {
    let at = |field: &str| format!("{prefix}{field}");
    if !value.is_object() {
        errors.push(FieldError::new(
            prefix.trim_end_matches('.'),
            "invalid_type",
            format!(
                "expected an event (a JSON object), not {}",
                json_kind(&value)
            ),
        ));
        return None;
    }
    let body: EventBody = match serde_path_to_error::deserialize(value) {
        Ok(b) => b,
        Err(e) => {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            let (code, message) = if message.starts_with("unknown field") {
                ("unknown_field", message)
            } else if path == "occurred_at" {
                (
                    "invalid_value",
                    format!("expected an RFC 3339 time such as 2026-11-20T09:00:00Z: {message}"),
                )
            } else {
                ("invalid_value", message)
            };
            let field = if path == "." {
                "body".to_string()
            } else {
                path
            };
            let field = if prefix.is_empty() {
                field
            } else if field == "body" {
                prefix.trim_end_matches('.').to_string()
            } else {
                at(&field)
            };
            errors.push(FieldError::new(&field, code, message));
            return None;
        }
    };
    let before = errors.len();
    let event_type = match &body.event_type {
        None => EventType::LeadCreated,
        Some(t) if t.starts_with(RESERVED_PREFIX) => {
            errors.push(FieldError::new(
                &at("type"),
                "reserved_event_type",
                format!("{RESERVED_PREFIX}* events are leadrelay's own (privacy erase requests)"),
            ));
            EventType::LeadCreated
        }
        Some(t) => EventType::parse(t).unwrap_or_else(|e| {
            errors.push(FieldError::new(
                &at("type"),
                "invalid_event_type",
                e.to_string(),
            ));
            EventType::LeadCreated
        }),
    };
    let origin = origin_of(config, &body, origin_rule, &at, errors);
    let contact = contact_data(&body.contact.unwrap_or_default(), &at, errors);
    let attribution = attribution(&body.attribution.unwrap_or_default(), &at, errors);
    let mut consent = Vec::new();
    for (purpose, granted) in &body.consent.unwrap_or_default() {
        match ConsentPurpose::parse(purpose) {
            Ok(p) => consent.push(ConsentRecord {
                purpose: p,
                granted: *granted,
                text_version: None,
                recorded_at: now,
            }),
            Err(e) => errors.push(FieldError::new(
                &at(&format!("consent.{purpose}")),
                "invalid_purpose",
                e.to_string(),
            )),
        }
    }
    // The same rule as the `Idempotency-Key` header, reported on the field.
    let idempotency_key = match body.idempotency_key.as_deref().map(check_idempotency_key) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            errors.push(FieldError::new(&at("idempotency_key"), e.code, e.message));
            None
        }
    };
    let mut event = Event {
        id: new_id(),
        event_type,
        origin,
        received_at: now,
        occurred_at: body.occurred_at.unwrap_or(now),
        contact,
        contact_id: None,
        data: body.data.unwrap_or_default(),
        attribution,
        consent,
        ip_hash: None,
        raw: RawPayload {
            content_type: "application/json".into(),
            body: raw,
        },
        spam: false,
        idempotency_key: idempotency_key.clone(),
        external_id: None,
        vendor_refs: vec![],
        changes: vec![],
        playbooks: vec![],
    };
    if let Err(m) = withdraw::apply(&mut event, &config.privacy.unsubscribe_withdraws) {
        errors.push(FieldError::new(
            &at(&format!("data.{}", withdraw::PURPOSES_FIELD)),
            "invalid_purpose",
            m,
        ));
    }
    (errors.len() == before).then_some(ParsedEvent {
        event,
        idempotency_key,
    })
}

fn origin_of(
    config: &Config,
    body: &EventBody,
    rule: OriginRule<'_>,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<FieldError>,
) -> Origin {
    if let OriginRule::Key(key) = rule {
        for (field, given) in [("form", &body.form), ("source", &body.source)] {
            if given.is_some() {
                errors.push(FieldError::new(
                    &at(field),
                    "not_allowed",
                    format!(
                        "an API event comes from its key (api:{key}); post form \
                         submissions to /v1/forms/{{form}} and vendor webhooks to /v1/hooks/{{source}}"
                    ),
                ));
            }
        }
        return Origin::api(key);
    }
    match (&body.form, &body.source) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                &at("source"),
                "conflicting_origin",
                "give form or source, not both",
            ));
            Origin::api("cli")
        }
        (Some(f), None) => {
            if !config.forms.contains_key(f) {
                errors.push(FieldError::new(
                    &at("form"),
                    "unknown_form",
                    format!("there is no form named {f:?}"),
                ));
            }
            Origin::form(f)
        }
        (None, Some(s)) => {
            if !config.sources.contains_key(s) {
                errors.push(FieldError::new(
                    &at("source"),
                    "unknown_source",
                    format!("there is no source named {s:?}"),
                ));
            }
            Origin::source(s)
        }
        (None, None) => Origin::api("cli"),
    }
}

/// Attribution by its parameter names; an unknown name is an error, not
/// silently dropped.
fn attribution(
    fields: &Map<String, Value>,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<FieldError>,
) -> Attribution {
    let mut a = Attribution::default();
    for (name, value) in fields {
        let path = at(&format!("attribution.{name}"));
        let text = match value {
            Value::Null => continue,
            Value::String(s) if s.trim().is_empty() => continue,
            Value::String(s) => s.trim().to_string(),
            _ => {
                errors.push(FieldError::new(&path, "invalid_type", "expected a string"));
                continue;
            }
        };
        let known = match name.as_str() {
            "referrer" => {
                a.referrer = Some(text);
                true
            }
            "landing_page" => {
                a.landing_page = Some(text);
                true
            }
            "user_agent" => {
                a.user_agent = Some(text);
                true
            }
            other => a.set_param(other, text),
        };
        if !known {
            errors.push(FieldError::new(
                &path,
                "unknown_field",
                "not an attribution field: utm_source, utm_medium, utm_campaign, utm_term, \
                 utm_content, gclid, fbclid, msclkid, ttclid, li_fat_id, referrer, \
                 landing_page or user_agent",
            ));
        }
    }
    a
}

/// The person of an event: emails and phones checked and normalised like a
/// form's, other standard fields as text, the rest custom.
fn contact_data(
    fields: &Map<String, Value>,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<FieldError>,
) -> ContactData {
    let mut c = ContactData::default();
    for (name, value) in fields {
        let path = at(&format!("contact.{name}"));
        if value.is_null() {
            continue;
        }
        let text = match value {
            Value::String(s) => Some(s.trim().to_string()),
            _ => None,
        };
        match (name.as_str(), text) {
            ("email", Some(t)) => match EmailAddress::parse(&t) {
                Ok(e) => c.email = Some(e),
                Err(e) => errors.push(FieldError::new(&path, "invalid_email", e.to_string())),
            },
            ("phone", Some(t)) => match PhoneE164::parse(&t, None) {
                Ok(p) => c.phone = Some(p),
                Err(e) => errors.push(FieldError::new(&path, "invalid_phone", e.to_string())),
            },
            (n, Some(t)) if leadrelay_model::CONTACT_FIELDS.contains(&n) => {
                if !t.is_empty() {
                    c.set_text(n, t);
                }
            }
            (n, None) if leadrelay_model::CONTACT_FIELDS.contains(&n) => {
                errors.push(FieldError::new(
                    &path,
                    "invalid_type",
                    format!("expected a string, not {}", json_kind(value)),
                ));
            }
            (n, _) => {
                c.custom.insert(n.to_string(), value.clone());
            }
        }
    }
    c.derive_domain();
    c
}
