//! Woodpecker webhooks (one subscription per event: `prospect_replied`,
//! `email_opened` …): the body is a JSON array of
//! `{method, prospect, timestamp, …}` entries — Woodpecker batches the events
//! of one type that happen close together, up to 100 per request — so one
//! request carries up to 100 events. `method` names the event; bodies without
//! it (the older API 1.0 samples) take it from the URL's `?event=`. A reply
//! (`prospect_replied`) also carries the reply itself in `email`.
//!
//! Woodpecker does not sign webhooks; a shared token in the URL authenticates.

use serde_json::Value;

use crate::config::Env;
use crate::event::{EventDraft, parse_time};
use crate::json::{event_name, fill_contact, kind_of, text};
use crate::token_source::{build_token_only, lookup};
use crate::{
    HookError, InboundEvent, InboundRequest, KindInfo, MIB, SourceConfigError, SourceKind,
};
use leadrelay_model::EventType;

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "woodpecker",
    title: "Woodpecker (webhooks: prospect replied, bounced, interested, email sent/opened, link clicked)",
    auth: "shared token in the URL (?token=) — Woodpecker does not sign webhooks",
    setup: "Woodpecker webhooks need the API & integrations add-on. Subscribe once per event (Settings > \
            Integrations > Webhooks, or POST https://api.woodpecker.co/rest/v1/webhooks/subscribe with target_url \
            and event), using https://<leadrelay>/v1/hooks/<source>?token=<token>&event=<event> so the event name \
            travels with each delivery. Put the token in the env var named by token_env.",
    largest_request: "an array of 100 events (Woodpecker's maximum batch), each with the prospect's \
                      fields and, for replies, the reply text (100 short replies are about 120 KB)",
    max_body_bytes: 2 * MIB,
    docs: &[
        (
            "Woodpecker: Webhooks",
            "https://developers.woodpecker.co/docs/webhooks",
        ),
        (
            "Woodpecker: Prospect replied",
            "https://developers.woodpecker.co/docs/webhooks/prospect-replied",
        ),
        (
            "Woodpecker: Prospect clicked on a link",
            "https://developers.woodpecker.co/docs/webhooks/link-clicked",
        ),
        (
            "Woodpecker: Webhooks - Events Notification (API 1.0)",
            "https://docs.woodpecker.co/en/articles/5223757-webhooks-events-notification",
        ),
    ],
};

/// Woodpecker's documented maximum is 100 entries; far more is not Woodpecker.
const MAX_BATCH: usize = 1000;

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    build_token_only(&INFO, settings, env, false, map)
}

const EVENTS: [(&str, EventType); 6] = [
    ("prospect_replied", EventType::ReplyReceived),
    ("prospect_bounced", EventType::EmailBounced),
    ("prospect_blacklisted", EventType::Unsubscribed),
    ("email_sent", EventType::EmailSent),
    ("email_opened", EventType::EmailOpened),
    ("link_clicked", EventType::EmailClicked),
];

fn map(req: &InboundRequest<'_>, body: &Value) -> Result<Vec<InboundEvent>, HookError> {
    let items: Vec<&Value> = match body {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![body],
        other => {
            return Err(HookError::Malformed(format!(
                "Woodpecker sends a JSON array, got {}",
                kind_of(other)
            )));
        }
    };
    let no_prospect = Value::Null;
    crate::json::batch(&items, MAX_BATCH, |i, item| {
        // Prospect events carry the prospect; an entry that names its event
        // (`method`) may be about a campaign instead (Woodpecker also notifies
        // "when your campaign finishes") and is kept without a contact.
        let prospect = match item.get("prospect") {
            Some(p) if p.is_object() => p,
            _ if item.is_object() && text(item, "method").is_some() => &no_prospect,
            _ => {
                return Err(HookError::Malformed(format!(
                    "entry {i} has no \"prospect\" object"
                )));
            }
        };
        let name = event_name(req, item, &["method", "webhook_type", "event", "action"])
            .unwrap_or_else(|| "webhook".into());
        let mut d = EventDraft::mapped("woodpecker", &name, lookup(&name, &EVENTS));
        let id = text(prospect, "id").unwrap_or_default();
        let at = text(item, "timestamp").unwrap_or_default();
        let email_id = text(item, "/email/id").unwrap_or_default();
        let link = text(item, "click_url").unwrap_or_default();
        let campaign = text(prospect, "campaign_id")
            .or_else(|| text(item, "campaign_id"))
            .unwrap_or_default();
        d.digest_id(&[&name, &id, &at, &email_id, &link, &campaign]);
        d.occurred_at(item.get("timestamp").and_then(parse_time));
        fill_contact(&mut d, prospect);
        d.contact_field("region", &text(prospect, "state").unwrap_or_default());
        d.vendor_ref("prospect", &id);
        d.vendor_ref("campaign", &campaign);
        for key in [
            "campaign_id",
            "campaign_name",
            "status",
            "tags",
            "interested",
            "last_replied",
        ] {
            d.data_from(prospect, key);
            d.data_from(item, key);
        }
        if let Some(linkedin) = text(prospect, "linkedin_url") {
            d.contact_custom("linkedin_url", Value::String(linkedin));
        }
        // The reply (prospect_replied, prospect_autoreplied) or the click (link_clicked).
        d.data_at(
            item,
            &[
                ("/email/subject", "subject"),
                ("/email/message", "reply_text"),
                ("/click_url", "link"),
                ("/email_no", "email_no"),
            ],
        );
        if let Some(step) = item.get("step").or_else(|| prospect.get("step")) {
            d.data("step", step.clone());
        }
        d.vendor_ref("email", &email_id);
        if !email_id.is_empty() && d.event_type().as_str() != crate::CUSTOM_EVENT_TYPE {
            let kind = d.event_type().as_str().to_string();
            d.activity_id(&format!("{kind}:{email_id}"));
        }
        Ok(d.finish())
    })
}
