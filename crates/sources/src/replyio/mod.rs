//! Reply.io webhooks (API v3 subscriptions, one event type each): a JSON
//! envelope `event {id, type, date, …}` with `contact_fields`,
//! `sequence_fields` and event-specific fields. `event.id` identifies the
//! delivery and is the external id.
//!
//! Reply.io does not document a request signature, so a shared token in the
//! subscription URL authenticates requests.

use serde_json::Value;

use crate::config::Env;
use crate::event::{EventDraft, parse_time};
use crate::json::{expect_object, fill_contact, first_text, text};
use crate::token_source::{build_token_only, lookup};
use crate::{
    HookError, InboundEvent, InboundRequest, KindInfo, MIB, SourceConfigError, SourceKind,
};
use leadrelay_model::EventType;

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "replyio",
    title: "Reply.io (webhook subscriptions: email sent/opened/clicked/replied/bounced, unsubscribes, finished sequences, meetings)",
    auth: "shared token in the subscription URL (?token=) — Reply.io does not sign webhooks",
    setup: "In Reply.io go to Settings > Integrations > Webhooks (or POST https://api.reply.io/v3/webhooks with \
            eventType and url) and add https://<leadrelay>/v1/hooks/<source>?token=<token> once per event type you \
            need (email_replied, email_sent, email_opened, email_link_clicked or link_clicked, email_bounced, \
            email_unsubscribed or contact_opted_out, sequence_completed or contact_finished, meeting_booked …). Put the token in the env var named by token_env.",
    largest_request: "one event; email events may carry the email text (includeEmailText)",
    max_body_bytes: MIB,
    docs: &[
        (
            "Reply.io: Webhook events (catalog)",
            "https://docs.reply.io/webhook-events",
        ),
        (
            "Reply.io: Webhook events (essentials)",
            "https://docs.reply.io/essentials/webhook-events",
        ),
        (
            "Reply.io: Webhook event payloads",
            "https://docs.reply.io/webhook-event-payloads",
        ),
    ],
};

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    build_token_only(&INFO, settings, env, false, map)
}

/// Both generations of Reply.io's event names: the webhook catalog
/// (`docs.reply.io/webhook-events`: `email_link_clicked`, `contact_opted_out`,
/// `contact_finished` …) and the "Webhook events" page of the essentials
/// (`link_clicked`, `email_unsubscribed`, `sequence_completed`, `meeting_*` …).
const EVENTS: [(&str, EventType); 14] = [
    ("email_sent", EventType::EmailSent),
    ("email_opened", EventType::EmailOpened),
    ("email_link_clicked", EventType::EmailClicked),
    ("link_clicked", EventType::EmailClicked),
    ("email_replied", EventType::ReplyReceived),
    ("linkedin_message_replied", EventType::ReplyReceived),
    ("email_bounced", EventType::EmailBounced),
    ("contact_opted_out", EventType::Unsubscribed),
    ("email_unsubscribed", EventType::Unsubscribed),
    ("contact_finished", EventType::SequenceCompleted),
    ("sequence_completed", EventType::SequenceCompleted),
    ("meeting_booked", EventType::MeetingBooked),
    ("meeting_cancelled", EventType::MeetingCanceled),
    ("meeting_canceled", EventType::MeetingCanceled),
];

fn map(req: &InboundRequest<'_>, body: &Value) -> Result<Vec<InboundEvent>, HookError> {
    expect_object(body, "a Reply.io webhook body")?;
    let name = first_text(body, &["/event/type", "event_type", "type"])
        .or_else(|| req.query_param("event"))
        .unwrap_or_else(|| "unknown".into());
    let mut d = EventDraft::mapped("replyio", &name, lookup(&name, &EVENTS));
    let contact = ["contact_fields", "/payload/contact", "contact"]
        .iter()
        .find_map(|p| {
            if p.starts_with('/') {
                body.pointer(p)
            } else {
                body.get(*p)
            }
        })
        .filter(|c| c.is_object());
    let contact_id = contact.and_then(|c| text(c, "id")).unwrap_or_default();
    let at = first_text(body, &["/event/date", "/event/timestamp"]);
    match first_text(body, &["/event/id"]) {
        Some(id) => d.external_id(id),
        None => d.digest_id(&[&name, &contact_id, at.as_deref().unwrap_or("")]),
    }
    d.occurred_at(at.map(Value::String).as_ref().and_then(parse_time));
    if let Some(contact) = contact {
        fill_contact(&mut d, contact);
        d.contact_field("domain", &text(contact, "domain").unwrap_or_default());
        if let Some(linkedin) = first_text(
            contact,
            &["linkedin_profile", "linkedInProfile", "linkedin_url"],
        ) {
            d.contact_custom("linkedin_url", Value::String(linkedin));
        }
    }
    for key in [
        "contact_custom_fields",
        "customFields",
        "/payload/customFields",
    ] {
        let custom = if key.starts_with('/') {
            body.pointer(key)
        } else {
            body.get(key)
        };
        if let Some(custom) = custom.filter(|c| c.as_object().is_some_and(|m| !m.is_empty())) {
            d.data("contact_custom_fields", custom.clone());
        }
    }
    d.vendor_ref("contact", &contact_id);
    let sequence = body
        .get("sequence_fields")
        .or_else(|| body.pointer("/payload/sequence"))
        .filter(|s| s.is_object());
    if let Some(seq) = sequence {
        d.vendor_ref("sequence", &text(seq, "id").unwrap_or_default());
        d.data("sequence_id", seq.get("id").cloned().unwrap_or(Value::Null));
        d.data("sequence_name", text(seq, "name").unwrap_or_default());
        if let Some(step) = seq.get("step_number").or_else(|| seq.get("stepNumber")) {
            d.data("step_number", step.clone());
        }
    }
    for key in [
        "reply_reason",
        "finish_reason",
        "bounce_type",
        "reply_category",
        "category",
        "email_subject",
        "email_url",
        "link",
        "email_text",
    ] {
        d.data_from(body, key);
    }
    if let Some(extra) = body.pointer("/payload/data").filter(|x| x.is_object()) {
        d.data("details", extra.clone());
    }
    Ok(vec![d.finish()])
}
