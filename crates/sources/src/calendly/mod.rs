//! Calendly webhook subscriptions (API v2): invitee booked, canceled and
//! no-show events and routing-form submissions.
//!
//! Signature: `Calendly-Webhook-Signature: t=<unix seconds>,v1=<hex>` where
//! the hex is HMAC-SHA256(signing key, `"{t}.{raw body}"`); the timestamp is
//! held to a replay window (Calendly suggests three minutes; default five).

use serde::Deserialize;
use serde_json::Value;

use crate::auth::{
    Encoding, check_window, hmac_sha256, mac_matches, required_header, unix_timestamp,
};
use crate::config::{Env, Secret, Tolerance, parse_settings, secret_from_env};
use crate::event::{EventDraft, parse_time};
use crate::json::{as_text, expect_object, json_body, text};
use crate::{
    HookError, HookParse, InboundEvent, InboundRequest, KIB, KindInfo, SourceConfigError,
    SourceKind,
};
use leadrelay_model::EventType;

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "calendly",
    title: "Calendly (webhook subscriptions: meetings booked and canceled, routing forms)",
    auth: "Calendly-Webhook-Signature t=…,v1=… (HMAC-SHA256 of \"t.body\" with the signing key), replay window",
    setup: "Create a webhook subscription with the API (POST https://api.calendly.com/webhook_subscriptions with \
            url=https://<leadrelay>/v1/hooks/<source>, events=[invitee.created, invitee.canceled, \
            routing_form_submission.created], organization, scope and a signing_key you choose), or let \
            `leadrelay sources connect` do it. Put the signing key in the env var named by signing_key_env. \
            OAuth apps get their signing key from Calendly instead.",
    largest_request: "one invitee with its questions and answers and tracking",
    max_body_bytes: 256 * KIB,
    docs: &[(
        "Calendly developer portal: webhook subscriptions, signatures, invitee payloads",
        "https://developer.calendly.com",
    )],
};

/// `[sources.NAME]` settings for `kind = "calendly"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Env var holding the webhook signing key.
    pub signing_key_env: String,
    /// Replay window for the signed timestamp (default `5m`).
    #[serde(default)]
    pub tolerance: Tolerance,
    /// Env var holding a Calendly personal access token (for `leadrelay sources connect`).
    #[serde(default)]
    pub api_token_env: Option<String>,
    /// Calendly API base URL (default `https://api.calendly.com`).
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// Organization URI the subscription belongs to (`https://api.calendly.com/organizations/…`).
    #[serde(default)]
    pub organization: Option<String>,
    /// User URI, for a user-scoped subscription.
    #[serde(default)]
    pub user: Option<String>,
    /// Events `connect` subscribes to (default: invitee.created, invitee.canceled).
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
}

#[derive(Debug)]
struct Calendly {
    signing_key: Secret,
    tolerance: Tolerance,
}

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    let s: Settings = parse_settings(settings)?;
    let mut errors = Vec::new();
    let key = secret_from_env(env, "signing_key_env", &s.signing_key_env, &mut errors);
    crate::config::finish(
        key.map(|signing_key| Calendly {
            signing_key,
            tolerance: s.tolerance,
        }),
        errors,
    )
}

/// The `t` and every `v1` of the signature header.
fn split_signature(header: &str) -> (Option<&str>, Vec<&str>) {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = Some(value.trim()),
            Some(("v1", value)) => v1.push(value.trim()),
            _ => {}
        }
    }
    (t, v1)
}

impl SourceKind for Calendly {
    fn kind(&self) -> &'static str {
        INFO.name
    }

    fn authenticate(&self, req: &InboundRequest<'_>) -> Result<(), HookError> {
        let header = required_header(req, "calendly-webhook-signature")?;
        let (t, signatures) = split_signature(header);
        let t = t.ok_or_else(|| {
            HookError::Unauthorized("Calendly-Webhook-Signature has no t=".into())
        })?;
        let signed_at = unix_timestamp(t, "the signature's t")?;
        let expected = hmac_sha256(self.signing_key.as_bytes(), &[t.as_bytes(), b".", req.body]);
        if !signatures
            .iter()
            .any(|sig| mac_matches(expected.clone(), sig, Encoding::Hex))
        {
            return Err(HookError::Unauthorized(
                "Calendly-Webhook-Signature does not match".into(),
            ));
        }
        check_window(signed_at, req.received_at, self.tolerance.0)
    }

    fn parse(&self, req: &InboundRequest<'_>) -> Result<HookParse, HookError> {
        let Some(body) = json_body(req)? else {
            return Ok(HookParse::Ping);
        };
        expect_object(&body, "a Calendly webhook body")?;
        let name = text(&body, "event")
            .ok_or_else(|| HookError::Malformed("no \"event\" in the body".into()))?;
        let payload = body
            .get("payload")
            .filter(|p| p.is_object())
            .ok_or_else(|| {
                HookError::Malformed(format!("{name}: no \"payload\" object in the body"))
            })?;
        Ok(HookParse::Events(vec![map_event(&name, &body, payload)]))
    }
}

fn map_event(name: &str, body: &Value, payload: &Value) -> InboundEvent {
    let event_type = match name {
        "invitee.created" => Some(EventType::MeetingBooked),
        "invitee.canceled" => Some(EventType::MeetingCanceled),
        "routing_form_submission.created" => Some(EventType::FormSubmitted),
        _ => None,
    };
    let mut d = EventDraft::mapped("calendly", name, event_type);
    let uri = text(payload, "uri").unwrap_or_default();
    let created = text(body, "created_at").unwrap_or_default();
    d.digest_id(&[name, &uri, &created]);
    d.occurred_at(body.get("created_at").and_then(parse_time));

    if name.starts_with("routing_form_submission") {
        d.vendor_ref("routing_form_submission", &uri);
        if let Some(form) = text(payload, "routing_form") {
            d.vendor_ref("routing_form", &form);
        }
        if let Some(submitter) = text(payload, "submitter") {
            d.vendor_ref("invitee", &submitter);
        }
        // The form's answers carry the person; take any that reads as an email.
        for qa in payload
            .get("questions_and_answers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(answer) = text(qa, "answer").filter(|a| a.contains('@')) {
                d.email(&answer);
            }
        }
        d.data_from(payload, "result");
    } else if name.starts_with("invitee_no_show") {
        d.vendor_ref("no_show", &uri);
        if let Some(invitee) = text(payload, "invitee") {
            d.vendor_ref("invitee", &invitee);
        }
    } else {
        invitee(&mut d, payload, &uri);
    }
    d.data_from(payload, "questions_and_answers");
    d.data_from(payload, "tracking");
    if let Some(by) = text(body, "created_by") {
        d.data("created_by", by);
    }
    d.finish()
}

/// An invitee payload: the person, the meeting, the cancellation.
fn invitee(d: &mut EventDraft, payload: &Value, uri: &str) {
    d.vendor_ref("invitee", uri);
    if let Some(email) = text(payload, "email") {
        d.email(&email);
    }
    match (text(payload, "first_name"), text(payload, "last_name")) {
        (None, None) => {
            if let Some(name) = text(payload, "name") {
                d.contact_field("full_name", &name);
            }
        }
        (first, last) => {
            d.contact_field("first_name", first.as_deref().unwrap_or(""));
            d.contact_field("last_name", last.as_deref().unwrap_or(""));
        }
    }
    if let Some(number) = text(payload, "text_reminder_number") {
        d.phone(&number, None);
    }
    for key in [
        "status",
        "timezone",
        "rescheduled",
        "old_invitee",
        "new_invitee",
        "cancel_url",
        "reschedule_url",
    ] {
        d.data_from(payload, key);
    }
    if let Some(event) = payload.get("scheduled_event").filter(|e| e.is_object()) {
        if let Some(event_uri) = text(event, "uri") {
            d.vendor_ref("scheduled_event", &event_uri);
        }
        if let Some(event_type) = text(event, "event_type") {
            d.vendor_ref("event_type", &event_type);
        }
        for (from, to) in [
            ("name", "meeting_name"),
            ("start_time", "start_time"),
            ("end_time", "end_time"),
        ] {
            if let Some(v) = event.get(from).and_then(as_text) {
                d.data(to, v);
            }
        }
        d.data_from(event, "location");
    } else if let Some(event_uri) = text(payload, "event") {
        d.vendor_ref("scheduled_event", &event_uri);
    }
    if let Some(cancel) = payload.get("cancellation").filter(|c| c.is_object()) {
        for (from, to) in [
            ("reason", "cancel_reason"),
            ("canceled_by", "canceled_by"),
            ("canceler_type", "canceler_type"),
        ] {
            if let Some(v) = text(cancel, from) {
                d.data(to, v);
            }
        }
    }
}
