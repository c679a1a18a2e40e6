//! Qwilr page webhooks (proposal/quote pages): "page viewed" and "page
//! accepted" become `proposal.viewed` / `proposal.accepted`; the viewer or
//! acceptor is the contact, the page id the vendor reference.
//!
//! Qwilr's webhook payload is not publicly specified in detail and carries
//! no signature, so the mapping reads the usual keys leniently and a shared
//! token in the URL authenticates.

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
    name: "qwilr",
    title: "Qwilr (page viewed / page accepted webhooks)",
    auth: "shared token in the URL (?token=) — Qwilr does not sign webhooks",
    setup: "In Qwilr open Settings > Integrations > Webhooks (or a Zapier/Make \"Page accepted\" trigger) and send \
            to https://<leadrelay>/v1/hooks/<source>?token=<token>; add &event=accepted or &event=viewed when the \
            body does not name the event. Put the token in the env var named by token_env.",
    largest_request: "one page event (Qwilr publishes no webhook payload reference)",
    max_body_bytes: 256 * KIB,
    docs: &[],
};

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    build_token_only(&INFO, settings, env, false, map)
}

const EVENTS: [(&str, EventType); 8] = [
    ("accepted", EventType::ProposalAccepted),
    ("page_accepted", EventType::ProposalAccepted),
    ("quote_accepted", EventType::ProposalAccepted),
    ("pageAccepted", EventType::ProposalAccepted),
    ("viewed", EventType::ProposalViewed),
    ("page_viewed", EventType::ProposalViewed),
    ("page_first_viewed", EventType::ProposalViewed),
    ("pageViewed", EventType::ProposalViewed),
];

fn map(req: &InboundRequest<'_>, body: &Value) -> Result<Vec<InboundEvent>, HookError> {
    expect_object(body, "a Qwilr webhook body")?;
    let name = event_name(req, body, &["event", "eventType", "type", "trigger"])
        .unwrap_or_else(|| "page".into());
    let mut d = EventDraft::mapped("qwilr", &name, lookup(&name, &EVENTS));
    let page = body
        .get("page")
        .or_else(|| body.pointer("/data/page"))
        .filter(|p| p.is_object())
        .unwrap_or(body);
    let page_id = first_text(page, &["id", "pageId", "_id"])
        .or_else(|| text(body, "pageId"))
        .unwrap_or_default();
    let at = first_text(
        body,
        &["timestamp", "acceptedAt", "viewedAt", "createdAt", "date"],
    );
    match first_text(body, &["eventId", "event_id"]) {
        Some(id) => d.external_id(id),
        None => d.digest_id(&[
            &name,
            &page_id,
            at.as_deref().unwrap_or(""),
            &body.to_string(),
        ]),
    }
    d.occurred_at(at.map(Value::String).as_ref().and_then(parse_time));
    let person = crate::json::first_object(
        body,
        &[
            "/acceptor",
            "/accepter",
            "/signer",
            "/viewer",
            "/contact",
            "/data/acceptor",
        ],
    );
    if let Some(person) = person {
        fill_contact(&mut d, person);
    }
    d.vendor_ref("page", &page_id);
    d.data_at(
        page,
        &[
            ("/name", "page_name"),
            ("/title", "page_name"),
            ("/url", "page_url"),
            ("/link", "page_url"),
            ("/value", "value"),
            ("/total", "value"),
        ],
    );
    if let Some(meta) = page.get("metadata").filter(|m| m.is_object()) {
        d.data("page_metadata", meta.clone());
    }
    Ok(vec![d.finish()])
}
