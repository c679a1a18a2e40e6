//! Mixmax rules with a "Send webhook" action: the rule's trigger decides the
//! body (message events carry the recipient, sequence events the sequence
//! and recipient). The event name is read from `event`/`eventType`/`type`/
//! `trigger`, or from the URL's `?event=` set on the rule's webhook URL.
//!
//! Mixmax does not sign rule webhooks; a shared token in the URL authenticates.

use serde_json::Value;

use crate::config::Env;
use crate::event::{EventDraft, parse_time};
use crate::json::{event_name, expect_object, fill_contact, first_text, text};
use crate::token_source::{build_token_only, lookup};
use crate::{HookError, InboundEvent, InboundRequest, KindInfo, SourceConfigError, SourceKind};
use leadrelay_model::EventType;

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "mixmax",
    title: "Mixmax (rules with a webhook action: opens, clicks, replies, sequence and meeting events)",
    auth: "shared token in the URL (?token=) — Mixmax does not sign rule webhooks",
    setup: "In Mixmax open app.mixmax.com/dashboard/rules (or POST /v1/rules), create a rule with the trigger you \
            want (e.g. \"Message replied\") and a \"Send webhook\" action to \
            https://<leadrelay>/v1/hooks/<source>?token=<token>&event=<replied|opened|clicked|meeting_booked…>. \
            Put the token in the env var named by token_env.",
};

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    build_token_only(&INFO, settings, env, false, map)
}

const EVENTS: [(&str, EventType); 14] = [
    ("replied", EventType::ReplyReceived),
    ("message_replied", EventType::ReplyReceived),
    ("opened", EventType::EmailOpened),
    ("message_opened", EventType::EmailOpened),
    ("clicked", EventType::EmailClicked),
    ("link_clicked", EventType::EmailClicked),
    ("sent", EventType::EmailSent),
    ("message_sent", EventType::EmailSent),
    ("bounced", EventType::EmailBounced),
    ("unsubscribed", EventType::Unsubscribed),
    ("meeting_booked", EventType::MeetingBooked),
    ("meeting_scheduled", EventType::MeetingBooked),
    ("sequence_completed", EventType::SequenceCompleted),
    ("sequence_finished", EventType::SequenceCompleted),
];

fn map(req: &InboundRequest<'_>, body: &Value) -> Result<Vec<InboundEvent>, HookError> {
    expect_object(body, "a Mixmax webhook body")?;
    let name = event_name(req, body, &["event", "eventType", "type", "trigger"])
        .unwrap_or_else(|| "rule".into());
    let mut d = EventDraft::mapped("mixmax", &name, lookup(&name, &EVENTS));
    let person = crate::json::first_object(
        body,
        &[
            "/recipient",
            "/contact",
            "/to/0",
            "/message/to/0",
            "/recipients/0",
        ],
    )
    .unwrap_or(body);
    let at = first_text(body, &["timestamp", "createdAt", "created", "date"]);
    match first_text(body, &["eventId", "_id", "id"]) {
        Some(id) => d.external_id(id),
        None => d.digest_id(&[&name, &body.to_string()]),
    }
    d.occurred_at(at.map(Value::String).as_ref().and_then(parse_time));
    fill_contact(&mut d, person);
    d.data_at(
        body,
        &[
            ("/message/_id", "message_id"),
            ("/messageId", "message_id"),
            ("/message/subject", "subject"),
            ("/subject", "subject"),
            ("/sequence/_id", "sequence_id"),
            ("/sequence/name", "sequence_name"),
            ("/sequenceName", "sequence_name"),
            ("/link", "link"),
            ("/url", "link"),
        ],
    );
    d.vendor_ref(
        "message",
        &first_text(body, &["/message/_id", "/messageId"]).unwrap_or_default(),
    );
    d.vendor_ref("sequence", &text(body, "/sequence/_id").unwrap_or_default());
    Ok(vec![d.finish()])
}
