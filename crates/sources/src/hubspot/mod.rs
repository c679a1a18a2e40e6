//! HubSpot app webhooks (Webhooks API, legacy `contact.*`/`deal.*` and
//! generic `object.*` subscriptions): v3 signatures, batches of up to 100
//! events, CRM property changes as canonical change events.
//!
//! Signature v3: base64(HMAC-SHA256(client secret, method + URI + body +
//! timestamp)), `X-HubSpot-Request-Timestamp` in milliseconds and at most five
//! minutes old. HubSpot signs the URI after decoding `%3A %2F %3F %40 %21 %24
//! %27 %28 %29 %2A %2C %3B`, so the same is done to the called URL here.

use serde::Deserialize;
use serde_json::Value;

use crate::auth::{
    Encoding, check_window, hmac_sha256, mac_matches, required_header, unix_timestamp,
};
use crate::config::{Env, Secret, Tolerance, parse_settings, secret_from_env};
use crate::event::{EventDraft, parse_time};
use crate::json::{json_body, snake_case, text};
use crate::{HookError, HookParse, InboundRequest, KindInfo, MIB, SourceConfigError, SourceKind};
use leadrelay_model::EventType;

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "hubspot",
    title: "HubSpot (app webhooks: contact and deal property changes)",
    auth: "X-HubSpot-Signature-v3 (HMAC-SHA256 with the app's client secret), 5-minute timestamp window",
    setup: "In your HubSpot developer account open the app > Webhooks, set the target URL to \
            https://<leadrelay>/v1/hooks/<source>, and subscribe to contact.creation, contact.propertyChange \
            (e.g. email, firstname, lastname, lifecyclestage) and deal.propertyChange for dealstage. Copy the \
            app's Client secret (Auth tab) into the env var named by client_secret_env. The URL must match \
            leadrelay's public URL exactly, since HubSpot signs it.",
    largest_request: "an array of up to 100 events",
    max_body_bytes: MIB,
    docs: &[
        (
            "HubSpot: Webhooks API",
            "https://developers.hubspot.com/docs/api/webhooks",
        ),
        (
            "HubSpot: Webhooks overview",
            "https://developers.hubspot.com/docs/methods/webhooks/webhooks-overview",
        ),
    ],
};

/// Larger than HubSpot's own limit of 100, so a change on their side does
/// not lose events, but bounded.
const MAX_BATCH: usize = 1000;

/// `[sources.NAME]` settings for `kind = "hubspot"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Env var holding the app's client secret, the v3 signing key.
    client_secret_env: String,
    /// Replay window for `X-HubSpot-Request-Timestamp` (default `5m`).
    #[serde(default)]
    tolerance: Tolerance,
}

#[derive(Debug)]
struct HubSpot {
    client_secret: Secret,
    tolerance: Tolerance,
}

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    let s: Settings = parse_settings(settings)?;
    let mut errors = Vec::new();
    let secret = secret_from_env(env, "client_secret_env", &s.client_secret_env, &mut errors);
    crate::config::finish(
        secret.map(|client_secret| HubSpot {
            client_secret,
            tolerance: s.tolerance,
        }),
        errors,
    )
}

/// The URI as HubSpot signs it: the called URL with these percent-encodings
/// decoded (case-insensitively).
pub(crate) fn signing_uri(url: &str) -> String {
    const DECODED: [(&str, char); 12] = [
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).map(str::to_ascii_uppercase);
        match code.and_then(|c| DECODED.iter().find(|(enc, _)| *enc == c)) {
            Some((_, ch)) => {
                out.push(*ch);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl SourceKind for HubSpot {
    fn kind(&self) -> &'static str {
        INFO.name
    }

    fn authenticate(&self, req: &InboundRequest<'_>) -> Result<(), HookError> {
        let signature = required_header(req, "x-hubspot-signature-v3")?;
        let timestamp = required_header(req, "x-hubspot-request-timestamp")?.trim();
        let signed_at = unix_timestamp(timestamp, "x-hubspot-request-timestamp")?;
        let uri = signing_uri(req.url);
        let expected = hmac_sha256(
            self.client_secret.as_bytes(),
            &[
                req.method.as_bytes(),
                uri.as_bytes(),
                req.body,
                timestamp.as_bytes(),
            ],
        );
        if !mac_matches(expected, signature, Encoding::Base64) {
            return Err(HookError::Unauthorized(
                "X-HubSpot-Signature-v3 does not match".into(),
            ));
        }
        // Only an authentic request learns that it is merely old.
        check_window(signed_at, req.received_at, self.tolerance.0)
    }

    fn parse(&self, req: &InboundRequest<'_>) -> Result<HookParse, HookError> {
        let Some(body) = json_body(req)? else {
            return Ok(HookParse::Ping);
        };
        let items = match body {
            Value::Array(items) => items,
            obj @ Value::Object(_) => vec![obj],
            other => {
                return Err(HookError::Malformed(format!(
                    "HubSpot sends a JSON array of events, got {}",
                    crate::json::kind_of(&other)
                )));
            }
        };
        let events = crate::json::batch(&items, MAX_BATCH, |i, item| {
            if item.is_object() {
                Ok(map_event(item))
            } else {
                Err(HookError::Malformed(format!(
                    "event {i} is {}, not an object",
                    crate::json::kind_of(item)
                )))
            }
        })?;
        Ok(crate::json::parsed(events))
    }
}

/// The object a subscription is about: from `contact.propertyChange`, or for
/// generic `object.propertyChange` subscriptions from `objectTypeId`.
fn object_kind(subscription: &str, item: &Value) -> String {
    let prefix = subscription.split('.').next().unwrap_or("");
    if prefix != "object" {
        return prefix.to_string();
    }
    match text(item, "objectTypeId").as_deref() {
        Some("0-1") => "contact".into(),
        Some("0-2") => "company".into(),
        Some("0-3") => "deal".into(),
        Some("0-5") => "ticket".into(),
        Some(other) => other.to_string(),
        None => "object".into(),
    }
}

/// Contact properties that fill standard contact fields.
const CONTACT_PROPERTIES: [(&str, &str); 11] = [
    ("email", "email"),
    ("firstname", "first_name"),
    ("lastname", "last_name"),
    ("phone", "phone"),
    ("mobilephone", "phone"),
    ("company", "company"),
    ("jobtitle", "title"),
    ("website", "website"),
    ("city", "city"),
    ("state", "region"),
    ("country", "country"),
];

/// A contact from HubSpot contact property values (a form submission's
/// `values`, a record's properties): the standard properties fill the
/// contact's fields (the first value of each wins), the rest are left out.
/// The data holds what could not be read (`invalid_email`,
/// `invalid_phone`).
pub fn contact_from_properties<'a>(
    props: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (leadrelay_model::ContactData, serde_json::Map<String, Value>) {
    let mut d = EventDraft::mapped("hubspot", "properties", None);
    for (name, value) in props {
        if let Some((_, field)) = CONTACT_PROPERTIES.iter().find(|(p, _)| *p == name) {
            d.contact_field(field, value);
        }
    }
    let e = d.finish();
    (e.contact, e.data)
}

fn map_event(item: &Value) -> crate::InboundEvent {
    let subscription = text(item, "subscriptionType").unwrap_or_else(|| "unknown".into());
    let object = object_kind(&subscription, item);
    let action = subscription.rsplit('.').next().unwrap_or("");
    let property = text(item, "propertyName");
    let value = item.get("propertyValue").cloned().unwrap_or(Value::Null);

    let event_type = match (object.as_str(), action) {
        ("contact", "creation") => Some(EventType::LeadCreated),
        ("contact", "propertyChange") => Some(EventType::ContactUpdated),
        ("deal", "propertyChange") if property.as_deref() == Some("dealstage") => {
            Some(EventType::DealStageChanged)
        }
        _ => None,
    };
    let mut d = EventDraft::mapped("hubspot", &subscription, event_type);
    if let (Some(portal), Some(id)) = (text(item, "portalId"), text(item, "eventId")) {
        d.external_id(format!("{portal}:{id}"));
    }
    d.occurred_at(item.get("occurredAt").and_then(parse_time));
    if let Some(id) = text(item, "objectId") {
        d.vendor_ref(&object, &id);
    }
    for key in [
        "portalId",
        "appId",
        "subscriptionId",
        "changeSource",
        "sourceId",
        "changeFlag",
    ] {
        if let Some(v) = item.get(key) {
            d.data(&snake_case(key), v.clone());
        }
    }
    d.data("object_type", object.clone());
    if let Some(property) = &property {
        d.data("property_name", property.clone());
        d.data("property_value", value.clone());
        d.change(property, value.clone(), None);
        if object == "contact"
            && let Some((_, field)) = CONTACT_PROPERTIES.iter().find(|(p, _)| p == property)
            && let Some(v) = crate::json::as_text(&value)
        {
            d.contact_field(field, &v);
        }
        if property == "dealstage" {
            d.data("stage", value);
        }
    }
    for key in [
        "primaryObjectId",
        "mergedObjectIds",
        "associationType",
        "fromObjectId",
        "toObjectId",
    ] {
        if let Some(v) = item.get(key) {
            d.data(&snake_case(key), v.clone());
        }
    }
    d.finish()
}
