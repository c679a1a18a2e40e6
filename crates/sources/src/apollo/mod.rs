//! Apollo.io webhooks (workflow "send webhook" actions and the webhook
//! integration): Apollo does not publish a fixed payload schema or a
//! signature scheme, so the event name is read from `event`/`event_type`/
//! `type` (or the URL's `?event=`), the person from `contact`/`person`/`data`,
//! and requests are authenticated with a shared token in the URL.

use serde_json::Value;

use crate::config::Env;
use crate::event::{EventDraft, parse_time};
use crate::json::{event_name, expect_object, fill_contact, first_text, text};
use crate::token_source::{build_token_only, lookup};
use crate::{
    HookError, InboundEvent, InboundRequest, KIB, KindInfo, SourceConfigError, SourceKind,
};
use leadrelay_model::EventType;

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "apollo",
    title: "Apollo.io (webhooks: contact created/updated, sequence events, bounces)",
    auth: "shared token in the URL (?token=) — Apollo does not sign webhooks",
    setup: "In Apollo open Settings > Integrations > Webhooks (or a workflow's \"Send webhook\" action) and paste \
            https://<leadrelay>/v1/hooks/<source>?token=<token>; add &event=<name> when the payload does not name \
            the event. Put the token in the env var named by token_env. For anything Apollo cannot push, use its \
            REST API from Zapier/Make into a generic source.",
    largest_request: "one event (Apollo publishes no webhook payload schema)",
    max_body_bytes: 256 * KIB,
    docs: &[],
};

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    build_token_only(&INFO, settings, env, false, map)
}

const EVENTS: [(&str, EventType); 13] = [
    ("contact.created", EventType::LeadCreated),
    ("contact_created", EventType::LeadCreated),
    ("contact.updated", EventType::ContactUpdated),
    ("contact_updated", EventType::ContactUpdated),
    ("sequence.completed", EventType::SequenceCompleted),
    ("sequence_finished", EventType::SequenceCompleted),
    ("emailer_campaign_finished", EventType::SequenceCompleted),
    ("email.bounced", EventType::EmailBounced),
    ("email.replied", EventType::ReplyReceived),
    ("email.sent", EventType::EmailSent),
    ("email.opened", EventType::EmailOpened),
    ("email.clicked", EventType::EmailClicked),
    ("email.unsubscribed", EventType::Unsubscribed),
];

fn map(req: &InboundRequest<'_>, body: &Value) -> Result<Vec<InboundEvent>, HookError> {
    expect_object(body, "an Apollo webhook body")?;
    let name = event_name(req, body, &["event", "event_type", "type", "trigger"])
        .unwrap_or_else(|| "webhook".into());
    let mut d = EventDraft::mapped("apollo", &name, lookup(&name, &EVENTS));
    let person = crate::json::first_object(
        body,
        &[
            "/contact",
            "/person",
            "/data/contact",
            "/data/person",
            "/data",
        ],
    )
    .unwrap_or(body);
    let person_id = text(person, "id").unwrap_or_default();
    let at = first_text(
        body,
        &["timestamp", "created_at", "occurred_at", "/data/updated_at"],
    );
    match first_text(body, &["id", "event_id", "webhook_event_id"])
        .filter(|_| !std::ptr::eq(person, body))
    {
        Some(id) => d.external_id(id),
        None => d.digest_id(&[
            &name,
            &person_id,
            at.as_deref().unwrap_or(""),
            &body.to_string(),
        ]),
    }
    d.occurred_at(at.map(Value::String).as_ref().and_then(parse_time));
    fill_contact(&mut d, person);
    let organization = person.get("organization").or_else(|| person.get("account"));
    if let Some(org) = organization.filter(|o| o.is_object()) {
        d.contact_field("company", &text(org, "name").unwrap_or_default());
        d.contact_field(
            "domain",
            &first_text(org, &["primary_domain", "domain"]).unwrap_or_default(),
        );
        d.vendor_ref("account", &text(org, "id").unwrap_or_default());
    }
    for phone in person
        .get("phone_numbers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        d.phone(
            &first_text(phone, &["sanitized_number", "raw_number"]).unwrap_or_default(),
            None,
        );
    }
    if let Some(linkedin) = text(person, "linkedin_url") {
        d.contact_custom("linkedin_url", Value::String(linkedin));
    }
    d.vendor_ref("contact", &person_id);
    d.data_at(
        body,
        &[
            ("/sequence/id", "sequence_id"),
            ("/sequence/name", "sequence_name"),
            ("/emailer_campaign/id", "sequence_id"),
            ("/emailer_campaign/name", "sequence_name"),
            ("/contact_stage/name", "stage"),
            ("/bounce_reason", "bounce_reason"),
        ],
    );
    if let Some(changes) = body
        .get("changes")
        .or_else(|| body.pointer("/data/changes"))
        .and_then(Value::as_object)
    {
        for (field, change) in changes {
            let (value, previous) = match change {
                Value::Object(c) if c.contains_key("to") || c.contains_key("from") => (
                    c.get("to").cloned().unwrap_or(Value::Null),
                    c.get("from").cloned(),
                ),
                other => (other.clone(), None),
            };
            d.change(field, value, previous);
        }
    }
    Ok(vec![d.finish()])
}
