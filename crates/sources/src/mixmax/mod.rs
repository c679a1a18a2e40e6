//! Mixmax rules with a "Send webhook" action. Mixmax documents one body per
//! event ("Mixmax Webhook event structure"): message events (`message:sent`,
//! `message:received`, bounces) are the Gmail message (`from`, `to`, `cc`,
//! `receivedBy`, `subject`, `plaintextBody`); tracking events (`opened`,
//! `clicked`) name the recipient (`recipientEmail`, `recipientName`) and the
//! tracked `message`. Every body carries `eventName` and `userId` (the Mixmax
//! user the rule belongs to). The URL's `?event=` is only a fallback for
//! bodies that name no event.
//!
//! The person is the side that is not the Mixmax user: the sender of a
//! received message (the prospect who replied), the recipients of a sent one.
//! The user's own mailbox (`receivedBy`, and `from` on outbound messages) and
//! bounce senders (`mailer-daemon@…`, `postmaster@…`) are never the contact.
//!
//! Mixmax does not sign rule webhooks; a shared token in the URL authenticates.

use serde_json::Value;

use crate::config::Env;
use crate::event::{EventDraft, parse_time};
use crate::json::{event_name, expect_object, first_text, text};
use crate::token_source::{build_token_only, lookup};
use crate::{
    HookError, InboundEvent, InboundRequest, KindInfo, MIB, SourceConfigError, SourceKind,
};
use leadrelay_model::{EmailAddress, EventType};

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "mixmax",
    title: "Mixmax (rules with a webhook action: sent, received (replies), opened, clicked, bounced, meetings)",
    auth: "shared token in the URL (?token=) — Mixmax does not sign rule webhooks",
    setup: "In Mixmax open Rules (app.mixmax.com/dashboard/rules, or POST /v1/rules), create a rule with the trigger \
            you want (e.g. an email received, opened or clicked) and a \"Send webhook\" action to \
            https://<leadrelay>/v1/hooks/<source>?token=<token>. The body names the event (eventName); add \
            &event=<name> only for triggers whose body does not. Put the token in the env var named by token_env.",
    largest_request: "one event; a received message carries its plain-text body (plaintextBody)",
    max_body_bytes: MIB,
    docs: &[
        (
            "Mixmax Webhook event structure",
            "https://success.mixmax.com/en/articles/8066486-mixmax-webhook-event-structure",
        ),
        (
            "Mixmax API: /rules (webhooks)",
            "https://developer.mixmax.com/reference/rules",
        ),
    ],
};

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    build_token_only(&INFO, settings, env, false, map)
}

/// Mixmax's `eventName`s (documented: `message:sent`, `message:received`,
/// `opened`, `clicked`, bounces) and the names people put in `?event=`.
const EVENTS: [(&str, EventType); 19] = [
    ("message:received", EventType::ReplyReceived),
    ("received", EventType::ReplyReceived),
    ("replied", EventType::ReplyReceived),
    ("message_replied", EventType::ReplyReceived),
    ("message:sent", EventType::EmailSent),
    ("sent", EventType::EmailSent),
    ("opened", EventType::EmailOpened),
    ("message_opened", EventType::EmailOpened),
    ("clicked", EventType::EmailClicked),
    ("link_clicked", EventType::EmailClicked),
    ("message_clicked", EventType::EmailClicked),
    ("bounced", EventType::EmailBounced),
    ("message:bounced", EventType::EmailBounced),
    ("unsubscribed", EventType::Unsubscribed),
    ("meeting_booked", EventType::MeetingBooked),
    ("meeting_scheduled", EventType::MeetingBooked),
    ("meeting:booked", EventType::MeetingBooked),
    ("sequence_completed", EventType::SequenceCompleted),
    ("sequence_finished", EventType::SequenceCompleted),
];

/// A name and address as Mixmax writes them (`{email, name}`).
struct Mailbox {
    email: String,
    name: Option<String>,
}

fn mailbox(v: &Value) -> Option<Mailbox> {
    let email = text(v, "email")?;
    Some(Mailbox {
        email,
        name: text(v, "name"),
    })
}

fn mailboxes(v: Option<&Value>) -> Vec<Mailbox> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(mailbox).collect(),
        Some(one @ Value::Object(_)) => mailbox(one).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Addresses compared the way mail systems do (case-insensitively).
fn same_address(a: &str, b: &str) -> bool {
    match (EmailAddress::parse(a), EmailAddress::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.trim().eq_ignore_ascii_case(b.trim()),
    }
}

/// Bounce notifications come from the mail system, not from a person.
fn is_mail_system(address: &str) -> bool {
    let local = address.split('@').next().unwrap_or("").to_ascii_lowercase();
    matches!(
        local.as_str(),
        "mailer-daemon" | "postmaster" | "mail-daemon" | "no-reply" | "noreply"
    )
}

/// Whether the message came in to the Mixmax user (a reply, a bounce)
/// rather than going out from them.
fn is_inbound(name: &str, event_type: &EventType) -> bool {
    matches!(
        event_type,
        EventType::ReplyReceived | EventType::EmailBounced
    ) || name.to_ascii_lowercase().contains("received")
}

/// The person the event is about: never the Mixmax user's own mailbox.
fn prospect(body: &Value, inbound: bool) -> Option<Mailbox> {
    let mut user: Vec<String> = mailboxes(body.get("receivedBy"))
        .into_iter()
        .map(|m| m.email)
        .collect();
    user.extend(first_text(body, &["userEmail", "/user/email"]));
    let from = mailboxes(body.get("from"));
    // Fields that name the person outright, whatever the direction.
    let mut named: Vec<Mailbox> = text(body, "recipientEmail")
        .map(|email| Mailbox {
            email,
            name: text(body, "recipientName"),
        })
        .into_iter()
        .collect();
    for key in ["/recipient", "/contact"] {
        named.extend(mailboxes(body.pointer(key)));
    }
    let candidates: Vec<Mailbox> = if inbound {
        // The sender of what came in is the prospect (or the mail system, for a bounce).
        from.into_iter().chain(named).collect()
    } else {
        // The sender of what went out is the user; the recipients are the prospects.
        user.extend(from.into_iter().map(|m| m.email));
        for key in ["/to", "/message/to", "/recipients", "/cc"] {
            named.extend(mailboxes(body.pointer(key)));
        }
        named
    };
    candidates
        .into_iter()
        .find(|m| !is_mail_system(&m.email) && !user.iter().any(|u| same_address(u, &m.email)))
}

fn map(req: &InboundRequest<'_>, body: &Value) -> Result<Vec<InboundEvent>, HookError> {
    expect_object(body, "a Mixmax webhook body")?;
    let name = event_name(req, body, &["eventName", "event", "eventType", "type"])
        .unwrap_or_else(|| "rule".into());
    let mut d = EventDraft::mapped("mixmax", &name, lookup(&name, &EVENTS));
    let inbound = is_inbound(&name, d.event_type());
    let at = first_text(body, &["timestamp", "sent", "createdAt", "created", "date"]);
    match first_text(body, &["eventId", "_id"]) {
        Some(id) => d.external_id(id),
        None => d.digest_id(&[
            &name,
            &first_text(body, &["id", "messageId", "/message/_id"]).unwrap_or_default(),
            &text(body, "rfc822Id").unwrap_or_default(),
            &text(body, "recipientEmail").unwrap_or_default(),
            at.as_deref().unwrap_or(""),
        ]),
    }
    d.occurred_at(at.map(Value::String).as_ref().and_then(parse_time));
    if let Some(person) = prospect(body, inbound) {
        d.email(&person.email);
        d.contact_field("full_name", person.name.as_deref().unwrap_or(""));
    }
    d.data_at(
        body,
        &[
            ("/subject", "subject"),
            ("/message/subject", "subject"),
            ("/threadId", "thread_id"),
            ("/rfc822Id", "rfc822_id"),
            ("/userId", "mixmax_user_id"),
            ("/sequence/_id", "sequence_id"),
            ("/sequence/name", "sequence_name"),
            ("/sequenceName", "sequence_name"),
            ("/url", "link"),
            ("/link", "link"),
        ],
    );
    if inbound && let Some(reply) = text(body, "plaintextBody") {
        d.data("reply_text", reply);
    }
    d.vendor_ref(
        "message",
        &first_text(body, &["messageId", "/message/_id", "id"]).unwrap_or_default(),
    );
    d.vendor_ref("sequence", &text(body, "/sequence/_id").unwrap_or_default());
    d.vendor_ref("user", &text(body, "userId").unwrap_or_default());
    Ok(vec![d.finish()])
}
