//! lemlist webhooks (`POST /api/hooks`): one activity per request — `type`
//! (`emailsReplied`, `emailsOpened`, `linkedinReplied` …), the lead
//! (`leadEmail`, `leadFirstName` …) and the campaign.
//!
//! lemlist does not sign requests with a header. A `secret` given when the
//! hook is created is echoed in every body and checked in constant time when
//! `secret_env` is set; the shared URL token is always required.

use serde::Deserialize;
use serde_json::Value;

use crate::auth::SharedToken;
use crate::config::{Env, optional_secret, parse_settings};
use crate::event::{EventDraft, parse_time};
use crate::json::{expect_object, fill_contact, first_text, text};
use crate::token_source::{BodySecret, TokenSource, finish, lookup};
use crate::{
    HookError, InboundEvent, InboundRequest, KIB, KindInfo, SourceConfigError, SourceKind,
};
use leadrelay_model::EventType;

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "lemlist",
    title: "lemlist (webhooks: emails sent/opened/clicked/replied/bounced, LinkedIn replies, interest)",
    auth: "shared token in the URL (?token=), plus the hook's secret echoed in the body when secret_env is set",
    setup: "In lemlist go to Settings > Integrations > Webhooks (or POST https://api.lemlist.com/api/hooks with \
            targetUrl=https://<leadrelay>/v1/hooks/<source>?token=<token>, an optional type such as emailsReplied \
            and an optional campaignId), or let `leadrelay sources connect` do it with api_key_env. Put the token in \
            the env var named by token_env.",
    largest_request: "one activity",
    max_body_bytes: 256 * KIB,
    docs: &[(
        "lemlist API: Add Webhook (event types)",
        "https://developer.lemlist.com/api-reference/endpoints/webhooks/add-webhook",
    )],
};

/// `[sources.NAME]` settings for `kind = "lemlist"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Env var holding the shared token carried by the hook URL.
    pub token_env: String,
    /// Env var holding the `secret` given when the hook was created.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Env var holding the lemlist API key (for `leadrelay sources connect`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// lemlist API base URL (default `https://api.lemlist.com/api`).
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// Restrict `connect` to one campaign (`cam_…`).
    #[serde(default)]
    pub campaign_id: Option<String>,
    /// Events `connect` subscribes to (default: see the book, docs/src/reference/sources/lemlist.md).
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
}

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    let s: Settings = parse_settings(settings)?;
    let mut errors = Vec::new();
    let token = SharedToken::from_env(env, "token_env", &s.token_env, &mut errors);
    let body_secret =
        optional_secret(env, "secret_env", s.secret_env.as_ref(), &mut errors).map(|secret| {
            BodySecret {
                field: "secret",
                secret,
            }
        });
    finish(
        TokenSource {
            info: &INFO,
            token,
            signature: None,
            body_secret,
            accepts_form: false,
            map,
        },
        errors,
    )
}

/// lemlist's activity types and its lead-state groups (`contacted`, `warmed`
/// = the lead replied on any channel; `hooked`, `attracted`, `interested` …
/// stay `custom`: they mix channels and signals).
const EVENTS: [(&str, EventType); 10] = [
    ("emailsSent", EventType::EmailSent),
    ("emailsOpened", EventType::EmailOpened),
    ("emailsClicked", EventType::EmailClicked),
    ("emailsReplied", EventType::ReplyReceived),
    ("linkedinReplied", EventType::ReplyReceived),
    ("warmed", EventType::ReplyReceived),
    ("emailsBounced", EventType::EmailBounced),
    ("emailsUnsubscribed", EventType::Unsubscribed),
    ("contacted", EventType::EmailSent),
    ("campaignComplete", EventType::SequenceCompleted),
];

fn map(_req: &InboundRequest<'_>, body: &Value) -> Result<Vec<InboundEvent>, HookError> {
    expect_object(body, "a lemlist webhook body")?;
    let name = text(body, "type").unwrap_or_else(|| "unknown".into());
    let mut d = EventDraft::mapped("lemlist", &name, lookup(&name, &EVENTS));
    match text(body, "_id") {
        Some(id) => d.external_id(id),
        None => d.digest_id(&[
            &name,
            &text(body, "leadId").unwrap_or_default(),
            &text(body, "createdAt").unwrap_or_default(),
        ]),
    }
    d.occurred_at(body.get("createdAt").and_then(parse_time));
    fill_contact(&mut d, body);
    d.vendor_ref("lead", &text(body, "leadId").unwrap_or_default());
    d.vendor_ref("campaign", &text(body, "campaignId").unwrap_or_default());
    // lemlist's `_id` is the activity's own id.
    d.activity_id(&text(body, "_id").unwrap_or_default());
    for key in [
        "campaignId",
        "campaignName",
        "sequenceId",
        "sequenceStep",
        "isFirst",
        "emailTemplateName",
        "url",
        "sendUserEmail",
        "text",
    ] {
        if let Some(v) = body.get(key) {
            d.data(&crate::json::snake_case(key), v.clone());
        }
    }
    if let Some(linkedin) = first_text(body, &["linkedinUrl", "leadLinkedinUrl"]) {
        d.contact_custom("linkedin_url", Value::String(linkedin));
    }
    Ok(vec![d.finish()])
}
