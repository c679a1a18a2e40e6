//! A JSON (or form) source with a configurable mapping, for Zapier, Make,
//! n8n or any system that can POST: the event type (fixed, or read with a
//! JSON pointer and an optional value map), JSON pointers for the contact
//! fields, custom data, the external id and the time, and optionally an
//! array pointer for batched bodies.
//!
//! Authenticated by a shared token (`X-Leadrelay-Token` or `?token=`), by an
//! HMAC-SHA256 signature of the raw body in a configurable header (hex or
//! base64, optional prefix such as `sha256=`), or by both.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Encoding, HeaderHmac, SharedToken};
use crate::config::{Env, config_error, optional_secret, parse_settings};
use crate::event::{EventDraft, digest, parse_time};
use crate::json::{json_or_form_body, kind_of, text};
use crate::{
    HookError, HookParse, InboundEvent, InboundRequest, KindInfo, MIB, SourceConfigError,
    SourceKind,
};
use leadrelay_model::{CONTACT_FIELDS, EventType};

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "generic",
    title: "Generic JSON webhook (Zapier, Make, n8n, your own systems)",
    auth: "shared token (X-Leadrelay-Token header or ?token=) and/or HMAC-SHA256 of the body in a configurable header",
    setup: "Point the sender (e.g. Zapier \"Webhooks by Zapier > POST\", Make \"HTTP > Make a request\") at \
            https://<leadrelay>/v1/hooks/<source>?token=<token> with a JSON body, and describe the body in the \
            settings: event_type or event_type_pointer (+ event_type_map), fields = { email = \"/email\", … }, \
            data = { plan = \"/plan\" }, external_id_pointer, occurred_at_pointer, events_pointer for arrays. Put \
            the token in the env var named by token_env (or configure signature_header + signature_secret_env).",
    largest_request: "what your sender posts: up to 1,000 events with events_pointer",
    max_body_bytes: MIB,
    docs: &[],
};

/// Larger bodies are almost certainly a mistake in the sender's mapping.
const MAX_BATCH: usize = 1000;

/// `[sources.NAME]` settings for `kind = "generic"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Env var holding the shared token.
    #[serde(default)]
    token_env: Option<String>,
    /// Header carrying an HMAC-SHA256 of the raw body (e.g. `X-Signature`).
    #[serde(default)]
    signature_header: Option<String>,
    /// Env var holding the HMAC key.
    #[serde(default)]
    signature_secret_env: Option<String>,
    /// `hex` (default) or `base64`.
    #[serde(default = "default_encoding")]
    signature_encoding: Encoding,
    /// A prefix before the MAC in the header, e.g. `sha256=`.
    #[serde(default)]
    signature_prefix: Option<String>,
    /// A fixed event type for every event (`lead.created`, `form.submitted` …).
    #[serde(default)]
    event_type: Option<String>,
    /// JSON pointer to the event name in each event (e.g. `/event`).
    #[serde(default)]
    event_type_pointer: Option<String>,
    /// Sender's event name → leadrelay event type; unmapped names that are
    /// not leadrelay types become `custom`.
    #[serde(default)]
    event_type_map: BTreeMap<String, String>,
    /// JSON pointer to an array of events (batched bodies); default: the body is one event.
    #[serde(default)]
    events_pointer: Option<String>,
    /// JSON pointer to the sender's id for the event (default: a digest of the event).
    #[serde(default)]
    external_id_pointer: Option<String>,
    /// JSON pointer to when it happened.
    #[serde(default)]
    occurred_at_pointer: Option<String>,
    /// Contact field → JSON pointer (`email = "/contact/email"`).
    #[serde(default)]
    fields: BTreeMap<String, String>,
    /// Data key → JSON pointer, kept in the event's data.
    #[serde(default)]
    data: BTreeMap<String, String>,
    /// Region for phone numbers without a country code (ISO 3166 alpha-2).
    #[serde(default)]
    default_region: Option<String>,
}

fn default_encoding() -> Encoding {
    Encoding::Hex
}

#[derive(Debug)]
enum TypeRule {
    Fixed(EventType),
    Pointer {
        pointer: String,
        map: BTreeMap<String, EventType>,
    },
}

#[derive(Debug)]
struct Generic {
    token: Option<SharedToken>,
    signature: Option<HeaderHmac>,
    event_type: TypeRule,
    events_pointer: Option<String>,
    external_id_pointer: Option<String>,
    occurred_at_pointer: Option<String>,
    fields: BTreeMap<String, String>,
    data: BTreeMap<String, String>,
    default_region: Option<String>,
}

fn check_pointer(key: &str, pointer: &str, errors: &mut Vec<SourceConfigError>) {
    if !pointer.starts_with('/') {
        errors.push(config_error(
            key,
            format!("{pointer:?} is not a JSON pointer; pointers start with '/' (e.g. \"/email\")"),
        ));
    }
}

fn event_type(key: &str, name: &str, errors: &mut Vec<SourceConfigError>) -> Option<EventType> {
    EventType::parse(name)
        .map_err(|e| errors.push(config_error(key, e.to_string())))
        .ok()
}

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    let s: Settings = parse_settings(settings)?;
    let mut errors = Vec::new();

    let token = s
        .token_env
        .as_deref()
        .and_then(|var| SharedToken::from_env(env, "token_env", var, &mut errors));
    let signature = match (&s.signature_header, &s.signature_secret_env) {
        (Some(header), Some(_)) => optional_secret(
            env,
            "signature_secret_env",
            s.signature_secret_env.as_ref(),
            &mut errors,
        )
        .map(|secret| HeaderHmac {
            header: header.trim().to_ascii_lowercase(),
            prefix: s.signature_prefix.clone().unwrap_or_default(),
            secret,
            encodings: vec![s.signature_encoding],
        }),
        (Some(_), None) => {
            errors.push(config_error(
                "signature_secret_env",
                "is required with signature_header",
            ));
            None
        }
        (None, Some(_)) => {
            errors.push(config_error(
                "signature_header",
                "is required with signature_secret_env",
            ));
            None
        }
        (None, None) => None,
    };
    if s.token_env.is_none() && s.signature_header.is_none() {
        errors.push(config_error(
            "token_env",
            "set token_env, signature_header + signature_secret_env, or both",
        ));
    }

    let rule = match (&s.event_type, &s.event_type_pointer) {
        (Some(fixed), None) => event_type("event_type", fixed, &mut errors).map(TypeRule::Fixed),
        (None, Some(pointer)) => {
            check_pointer("event_type_pointer", pointer, &mut errors);
            let map = s
                .event_type_map
                .iter()
                .filter_map(|(from, to)| {
                    event_type(&format!("event_type_map.{from}"), to, &mut errors)
                        .map(|t| (from.clone(), t))
                })
                .collect();
            Some(TypeRule::Pointer {
                pointer: pointer.clone(),
                map,
            })
        }
        (Some(_), Some(_)) => {
            errors.push(config_error(
                "event_type",
                "set event_type or event_type_pointer, not both",
            ));
            None
        }
        (None, None) => {
            errors.push(config_error(
                "event_type",
                "set event_type (fixed) or event_type_pointer",
            ));
            None
        }
    };
    for (key, pointer) in [
        ("events_pointer", &s.events_pointer),
        ("external_id_pointer", &s.external_id_pointer),
        ("occurred_at_pointer", &s.occurred_at_pointer),
    ] {
        if let Some(p) = pointer {
            check_pointer(key, p, &mut errors);
        }
    }
    for (field, pointer) in &s.fields {
        if !CONTACT_FIELDS.contains(&field.as_str()) {
            errors.push(config_error(
                &format!("fields.{field}"),
                format!(
                    "not a contact field; use one of {}",
                    CONTACT_FIELDS.join(", ")
                ),
            ));
        }
        check_pointer(&format!("fields.{field}"), pointer, &mut errors);
    }
    for (key, pointer) in &s.data {
        check_pointer(&format!("data.{key}"), pointer, &mut errors);
    }
    crate::config::finish(
        rule.map(|event_type| Generic {
            token,
            signature,
            event_type,
            events_pointer: s.events_pointer,
            external_id_pointer: s.external_id_pointer,
            occurred_at_pointer: s.occurred_at_pointer,
            fields: s.fields,
            data: s.data,
            default_region: s.default_region,
        }),
        errors,
    )
}

impl SourceKind for Generic {
    fn kind(&self) -> &'static str {
        INFO.name
    }

    fn authenticate(&self, req: &InboundRequest<'_>) -> Result<(), HookError> {
        if let Some(token) = &self.token {
            token.check(req)?;
        }
        if let Some(sig) = &self.signature {
            sig.check(req)?;
        }
        Ok(())
    }

    fn parse(&self, req: &InboundRequest<'_>) -> Result<HookParse, HookError> {
        let Some(body) = json_or_form_body(req)? else {
            return Ok(HookParse::Ping);
        };
        let items: Vec<&Value> = match &self.events_pointer {
            Some(p) => match body.pointer(p) {
                Some(Value::Array(items)) => items.iter().collect(),
                Some(other) => {
                    return Err(HookError::Malformed(format!(
                        "{p} is {}, not an array",
                        kind_of(other)
                    )));
                }
                None => return Err(HookError::Malformed(format!("the body has nothing at {p}"))),
            },
            None => vec![&body],
        };
        let events = crate::json::batch(&items, MAX_BATCH, |_, item| self.map_event(item))?;
        Ok(crate::json::parsed(events))
    }
}

impl Generic {
    fn map_event(&self, item: &Value) -> Result<InboundEvent, HookError> {
        if !item.is_object() {
            return Err(HookError::Malformed(format!(
                "each event must be a JSON object, got {}",
                kind_of(item)
            )));
        }
        let (name, mapped) = match &self.event_type {
            TypeRule::Fixed(t) => (t.as_str().to_string(), Some(t.clone())),
            TypeRule::Pointer { pointer, map } => {
                let name = text(item, pointer)
                    .ok_or_else(|| HookError::Malformed(format!("no event name at {pointer}")))?;
                let mapped = map
                    .get(&name)
                    .cloned()
                    .or_else(|| EventType::parse(&name).ok().filter(|t| !t.is_custom()));
                (name, mapped)
            }
        };
        let mut d = EventDraft::mapped("generic", &name, mapped);
        match self
            .external_id_pointer
            .as_deref()
            .and_then(|p| text(item, p))
        {
            Some(id) => d.external_id(id),
            None => d.external_id(digest(&["generic", &item.to_string()])),
        }
        if let Some(p) = &self.occurred_at_pointer {
            d.occurred_at(item.pointer(p).and_then(parse_time));
        }
        for (field, pointer) in &self.fields {
            let Some(value) = text(item, pointer) else {
                continue;
            };
            match field.as_str() {
                "phone" => d.phone(&value, self.default_region.as_deref()),
                _ => d.contact_field(field, &value),
            }
        }
        for (key, pointer) in &self.data {
            if let Some(v) = item.pointer(pointer) {
                d.data(key, v.clone());
            }
        }
        Ok(d.finish())
    }
}
