//! Woodpecker webhooks (one subscription per event: `prospect_replied`,
//! `email_opened` …): the body is a JSON array of `{prospect, timestamp}`
//! entries, so one request may carry several events. Woodpecker does not name
//! the event in the body, so the subscription URL carries it as `?event=`
//! (set by `leadrelay sources connect`, or by hand).
//!
//! Woodpecker does not sign webhooks; a shared token in the URL authenticates.

use serde_json::Value;

use crate::config::Env;
use crate::event::{EventDraft, parse_time};
use crate::json::{event_name, fill_contact, kind_of, text};
use crate::token_source::{build_token_only, lookup};
use crate::{HookError, InboundEvent, InboundRequest, KindInfo, SourceConfigError, SourceKind};
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
};

/// Woodpecker batches, but not without bound.
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
    crate::json::batch(&items, MAX_BATCH, |i, item| {
        let prospect = item
            .get("prospect")
            .filter(|p| p.is_object())
            .ok_or_else(|| HookError::Malformed(format!("entry {i} has no \"prospect\" object")))?;
        let name = event_name(req, item, &["webhook_type", "event", "action"])
            .unwrap_or_else(|| "webhook".into());
        let mut d = EventDraft::mapped("woodpecker", &name, lookup(&name, &EVENTS));
        let id = text(prospect, "id").unwrap_or_default();
        let at = text(item, "timestamp").unwrap_or_default();
        d.digest_id(&[&name, &id, &at]);
        d.occurred_at(item.get("timestamp").and_then(parse_time));
        fill_contact(&mut d, prospect);
        d.contact_field("region", &text(prospect, "state").unwrap_or_default());
        d.vendor_ref("prospect", &id);
        d.vendor_ref(
            "campaign",
            &text(prospect, "campaign_id").unwrap_or_default(),
        );
        for key in [
            "campaign_id",
            "campaign_name",
            "status",
            "tags",
            "interested",
            "last_replied",
        ] {
            d.data_from(prospect, key);
        }
        Ok(d.finish())
    })
}
