//! Salesloft webhook subscriptions: the body is the changed resource itself
//! (person, cadence membership, email, meeting, call …), the event name is in
//! `x-salesloft-event`.
//!
//! Signature: `x-salesloft-signature` is the hex HMAC-SHA1 of the raw body
//! keyed with the subscription's `callback_token`. Salesloft sends no
//! timestamp, so there is no replay window; ids keep replays idempotent.

use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Encoding, hmac_sha1, mac_matches, required_header};
use crate::config::{Env, Secret, parse_settings, secret_from_env};
use crate::event::{EventDraft, parse_time};
use crate::json::{expect_object, json_body, text};
use crate::{
    HookError, HookParse, InboundEvent, InboundRequest, KIB, KindInfo, SourceConfigError,
    SourceKind,
};
use leadrelay_model::EventType;

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "salesloft",
    title: "Salesloft (webhook subscriptions: people, cadences, emails, meetings, calls)",
    auth: "x-salesloft-signature (hex HMAC-SHA1 of the body keyed with the subscription's callback_token)",
    setup: "As a Salesloft admin create webhook subscriptions (Settings > Integrations > Webhooks, or POST \
            /v2/webhook_subscriptions) with callback_url https://<leadrelay>/v1/hooks/<source>, a callback_token \
            you choose, and event types such as person_created, person_updated, email_updated, \
            cadence_membership_updated, meeting_booked, meeting_updated. Put the callback_token in the env var \
            named by callback_token_env; use the same token for every subscription of this source.",
    largest_request: "one resource (a person, an email with its counts, a cadence membership …)",
    max_body_bytes: 256 * KIB,
    docs: &[
        (
            "Salesloft: Webhook event types",
            "https://developers.salesloft.com/docs/platform/webhooks/event-types/",
        ),
        (
            "Salesloft: Webhook delivery headers",
            "https://developers.salesloft.com/docs/platform/webhooks/delivery-headers/",
        ),
    ],
};

/// `[sources.NAME]` settings for `kind = "salesloft"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Env var holding the `callback_token` of the subscriptions.
    pub callback_token_env: String,
    /// Env var holding a Salesloft API key, for `leadrelay sources connect`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Salesloft API base URL (default `https://api.salesloft.com`).
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// Event types `connect` subscribes to (default: people, emails,
    /// cadence memberships and meetings).
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
}

#[derive(Debug)]
struct Salesloft {
    callback_token: Secret,
}

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    let s: Settings = parse_settings(settings)?;
    let mut errors = Vec::new();
    let token = secret_from_env(
        env,
        "callback_token_env",
        &s.callback_token_env,
        &mut errors,
    );
    crate::config::finish(
        token.map(|callback_token| Salesloft { callback_token }),
        errors,
    )
}

impl SourceKind for Salesloft {
    fn kind(&self) -> &'static str {
        INFO.name
    }

    fn authenticate(&self, req: &InboundRequest<'_>) -> Result<(), HookError> {
        let signature = required_header(req, "x-salesloft-signature")?;
        let expected = hmac_sha1(self.callback_token.as_bytes(), &[req.body]);
        if mac_matches(expected, signature, Encoding::Hex) {
            Ok(())
        } else {
            Err(HookError::Unauthorized(
                "x-salesloft-signature does not match".into(),
            ))
        }
    }

    fn parse(&self, req: &InboundRequest<'_>) -> Result<HookParse, HookError> {
        let Some(body) = json_body(req)? else {
            return Ok(HookParse::Ping);
        };
        expect_object(&body, "a Salesloft webhook body")?;
        let name = req
            .header("x-salesloft-event")
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| HookError::Malformed("missing x-salesloft-event header".into()))?;
        Ok(HookParse::Events(vec![map_event(name, &body)]))
    }
}

/// Email states that are each recorded once per email, however many
/// `email_updated` deliveries report them.
fn email_state(body: &Value) -> Option<EventType> {
    let count = |k: &str| {
        body.pointer(&format!("/counts/{k}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    if body.get("bounced").and_then(Value::as_bool) == Some(true) {
        Some(EventType::EmailBounced)
    } else if count("replies") > 0 {
        Some(EventType::ReplyReceived)
    } else if count("clicks") > 0 {
        Some(EventType::EmailClicked)
    } else if count("views") > 0 {
        Some(EventType::EmailOpened)
    } else if text(body, "status").as_deref() == Some("sent") {
        Some(EventType::EmailSent)
    } else {
        None
    }
}

fn map_event(name: &str, body: &Value) -> InboundEvent {
    let id = text(body, "id").unwrap_or_default();
    let state = text(body, "current_state")
        .or_else(|| text(body, "status"))
        .unwrap_or_default();
    let canceled = body.get("canceled_at").is_some_and(|v| !v.is_null())
        || state == "canceled"
        || state == "cancelled";
    // Types reached by an `*_updated` delivery are keyed on the object and the
    // type, so each is stored once however often the object changes later.
    let (event_type, once) = match name {
        "person_created" => (Some(EventType::LeadCreated), false),
        "person_updated" => (Some(EventType::ContactUpdated), false),
        "cadence_membership_updated" if state == "completed" || state == "finished" => {
            (Some(EventType::SequenceCompleted), true)
        }
        "email_updated" => (email_state(body), true),
        "meeting_booked" => (Some(EventType::MeetingBooked), false),
        // A logged call (no canonical type of its own): `call.logged`.
        "call_created" => (EventType::parse("call.logged").ok(), true),
        "meeting_updated" if canceled => (Some(EventType::MeetingCanceled), true),
        _ => (None, false),
    };
    let known = event_type.is_some();
    let mut d = EventDraft::mapped("salesloft", name, event_type);
    let at = text(body, "updated_at")
        .or_else(|| text(body, "created_at"))
        .unwrap_or_default();
    if once {
        let canonical = d.event_type().as_str().to_string();
        d.digest_id(&[name, &id, &canonical]);
    } else {
        d.digest_id(&[name, &id, &at]);
    }
    d.occurred_at(
        body.get("updated_at")
            .or_else(|| body.get("created_at"))
            .and_then(parse_time),
    );

    let object = name.rsplit_once('_').map_or(name, |(object, _)| object);
    d.vendor_ref(object, &id);
    // Emails, calls and meetings are activities: their id per canonical
    // type (an email is sent once, opened once …).
    if matches!(object, "email" | "call" | "meeting") && known {
        let kind = d.event_type().as_str().to_string();
        d.activity_id(&format!("{kind}:{object}:{id}"));
    }
    for (key, object) in [
        ("person", "person"),
        ("recipient", "person"),
        ("cadence", "cadence"),
        ("step", "step"),
        ("account", "account"),
        ("user", "user"),
    ] {
        if let Some(ref_id) = text(body, &format!("/{key}/id")) {
            d.vendor_ref(object, &ref_id);
        }
    }

    match object {
        "person" => person(&mut d, body),
        "email" => {
            d.email(&text(body, "recipient_email_address").unwrap_or_default());
            for key in ["status", "bounced", "counts", "sent_at", "send_after"] {
                d.data_from(body, key);
            }
        }
        "meeting" => {
            d.email(&text(body, "recipient_email").unwrap_or_default());
            if let Some(name) = text(body, "recipient_name") {
                d.contact_field("full_name", &name);
            }
            for attendee in body
                .get("attendees")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if attendee.get("organizer").and_then(Value::as_bool) != Some(true) {
                    d.email(&text(attendee, "email").unwrap_or_default());
                }
            }
            for key in [
                "title",
                "start_time",
                "end_time",
                "status",
                "location",
                "meeting_type",
                "canceled_at",
            ] {
                d.data_from(body, key);
            }
        }
        "cadence_membership" => {
            for key in [
                "current_state",
                "currently_on_cadence",
                "added_at",
                "counts",
            ] {
                d.data_from(body, key);
            }
        }
        _ => {
            for key in [
                "status",
                "disposition",
                "sentiment",
                "duration",
                "to",
                "title",
            ] {
                d.data_from(body, key);
            }
        }
    }
    d.finish()
}

fn person(d: &mut EventDraft, body: &Value) {
    for key in [
        "email_address",
        "personal_email_address",
        "secondary_email_address",
    ] {
        d.email(&text(body, key).unwrap_or_default());
    }
    for (key, field) in [
        ("first_name", "first_name"),
        ("last_name", "last_name"),
        ("display_name", "full_name"),
        ("title", "title"),
        ("person_company_name", "company"),
        ("person_company_website", "website"),
        ("city", "city"),
        ("state", "region"),
        ("country", "country"),
    ] {
        d.contact_field(field, &text(body, key).unwrap_or_default());
    }
    for key in ["phone", "mobile_phone", "home_phone"] {
        d.phone(&text(body, key).unwrap_or_default(), None);
    }
    if let Some(linkedin) = text(body, "linkedin_url") {
        d.contact_custom("linkedin_url", Value::String(linkedin));
    }
    for key in [
        "do_not_contact",
        "bouncing",
        "eu_resident",
        "tags",
        "custom_fields",
        "person_stage",
    ] {
        d.data_from(body, key);
    }
}
