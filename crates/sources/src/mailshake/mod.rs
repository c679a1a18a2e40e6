//! Mailshake pushes (`POST /push/create`): Mailshake POSTs
//! `{"resource_url": …}` for every subscribed event and expects the receiver
//! to fetch that URL with the API key. leadrelay never calls out before
//! acknowledging, so the push is stored as is: the event type comes from the
//! `event` query parameter put on each subscription's target URL (which
//! Mailshake requires to be unique anyway), and the resource URL is kept in
//! `data.resource_url`. Full activity objects (`"object": "reply"` …), as
//! sent by Zapier or a resolved push, are mapped with their recipient.
//!
//! Mailshake does not sign pushes; its docs recommend a secret in the target
//! URL, which is the shared token here.

use serde::Deserialize;
use serde_json::Value;

use crate::auth::SharedToken;
use crate::config::{Env, parse_settings};
use crate::event::{EventDraft, parse_time};
use crate::json::{expect_object, fill_contact, text};
use crate::token_source::{TokenSource, finish, lookup};
use crate::{
    HookError, InboundEvent, InboundRequest, KindInfo, MIB, SourceConfigError, SourceKind,
};
use leadrelay_model::EventType;

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "mailshake",
    title: "Mailshake (push subscriptions: replied, opened, clicked, message sent, lead created, lead status changed)",
    auth: "shared token in the target URL (?token=) — Mailshake does not sign pushes",
    setup: "Create one push per event with the Mailshake API: POST https://api.mailshake.com/2017-04-01/push/create \
            with event=<Replied|Opened|Clicked|MessageSent|LeadCreated|LeadStatusChanged> and \
            targetUrl=https://<leadrelay>/v1/hooks/<source>?token=<token>&event=<same event>, or let \
            `leadrelay sources connect` do it with api_key_env. Put the token in the env var named by token_env.",
    largest_request: "one push: {resource_url} (Mailshake sends only a link); a full activity object \
                      (from Zapier, or a resolved push) carries the message body",
    max_body_bytes: MIB,
    docs: &[(
        "Mailshake API (push subscriptions, models)",
        "https://api-docs.mailshake.com",
    )],
};

/// `[sources.NAME]` settings for `kind = "mailshake"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Env var holding the shared token carried by the target URLs.
    pub token_env: String,
    /// Env var holding the Mailshake API key (for `leadrelay sources connect`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Mailshake API base URL (default `https://api.mailshake.com/2017-04-01`).
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// Events `connect` subscribes to (default: see the book, docs/src/reference/sources/mailshake.md).
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
    /// Whether leadrelay resolves thin pushes (`resource_url` only) with the
    /// API key before routing them (default: yes when `api_key_env` is set;
    /// read by leadrelay's resolver, not here).
    #[serde(default)]
    pub resolve: Option<bool>,
    /// Failed fetches of one resource before it is routed as it is
    /// (default 5; read by leadrelay's resolver).
    #[serde(default)]
    pub resolve_attempts: Option<u32>,
    /// Lets the resolver reach a private address (a local fake).
    #[serde(default)]
    pub allow_private_networks: bool,
}

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    let s: Settings = parse_settings(settings)?;
    let mut errors = Vec::new();
    let token = SharedToken::from_env(env, "token_env", &s.token_env, &mut errors);
    if s.resolve_attempts.is_some_and(|n| n == 0 || n > 20) {
        errors.push(SourceConfigError {
            field: "resolve_attempts".into(),
            message: "must be between 1 and 20".into(),
        });
    }
    if s.resolve == Some(true) && s.api_key_env.is_none() {
        errors.push(SourceConfigError {
            field: "resolve".into(),
            message: "resolving thin pushes needs api_key_env (the Mailshake API key)".into(),
        });
    }
    // Read by leadrelay's resolver (it may reach a private address only with it).
    let _resolver_may_reach_private = s.allow_private_networks;
    finish(
        TokenSource {
            info: &INFO,
            token,
            signature: None,
            body_secret: None,
            accepts_form: false,
            map,
        },
        errors,
    )
}

/// Mailshake's documented push events (`Replied`, `Opened`, `Clicked`,
/// `MessageSent`, `LeadCreated`; `LeadStatusChanged` stays `custom`) and the
/// activity `object` names of full activity objects.
const EVENTS: [(&str, EventType); 17] = [
    ("replied", EventType::ReplyReceived),
    ("reply", EventType::ReplyReceived),
    ("opened", EventType::EmailOpened),
    ("open", EventType::EmailOpened),
    ("clicked", EventType::EmailClicked),
    ("click", EventType::EmailClicked),
    ("sent", EventType::EmailSent),
    ("messagesent", EventType::EmailSent),
    ("sent-message", EventType::EmailSent),
    ("bounced", EventType::EmailBounced),
    ("bounce", EventType::EmailBounced),
    ("unsubscribed", EventType::Unsubscribed),
    ("unsubscribe", EventType::Unsubscribed),
    ("leadcreated", EventType::LeadCreated),
    ("leadcatcher", EventType::LeadCreated),
    ("lead", EventType::LeadCreated),
    ("leadready", EventType::LeadCreated),
];

/// A guess from the resource URL's path when no event was named.
fn event_from_resource(url: &str) -> Option<&'static str> {
    [
        ("/click", "clicked"),
        ("/open", "opened"),
        ("/repl", "replied"),
        ("/sent", "sent"),
        ("/lead", "leadcatcher"),
    ]
    .iter()
    .find(|(part, _)| url.contains(part))
    .map(|(_, name)| *name)
}

fn map(req: &InboundRequest<'_>, body: &Value) -> Result<Vec<InboundEvent>, HookError> {
    expect_object(body, "a Mailshake push")?;
    let resource_url = text(body, "resource_url");
    let name = req
        .query_param("event")
        .filter(|e| !e.trim().is_empty())
        .or_else(|| text(body, "object"))
        .or_else(|| text(body, "type"))
        .or_else(|| {
            resource_url
                .as_deref()
                .and_then(event_from_resource)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "push".into());
    let mut d = EventDraft::mapped("mailshake", &name, lookup(&name, &EVENTS));

    if let Some(url) = resource_url {
        d.digest_id(&[&url]);
        d.data("resource_url", url);
        return Ok(vec![d.finish()]);
    }
    let object = text(body, "object").unwrap_or_else(|| name.clone());
    match text(body, "id") {
        Some(id) => {
            d.vendor_ref(&object, &id);
            d.external_id(format!("{object}:{id}"));
        }
        None => d.digest_id(&[&body.to_string()]),
    }
    d.occurred_at(
        body.get("actionDate")
            .or_else(|| body.get("created"))
            .and_then(parse_time),
    );
    if let Some(recipient) = body.get("recipient").filter(|r| r.is_object()) {
        d.email(&text(recipient, "emailAddress").unwrap_or_default());
        fill_contact(&mut d, recipient);
        if let Some(fields) = recipient.get("fields").filter(|f| f.is_object()) {
            fill_contact(&mut d, fields);
        }
        d.vendor_ref("recipient", &text(recipient, "id").unwrap_or_default());
    }
    if let Some(campaign) = body.get("campaign").filter(|c| c.is_object()) {
        d.vendor_ref("campaign", &text(campaign, "id").unwrap_or_default());
        d.data(
            "campaign_id",
            campaign.get("id").cloned().unwrap_or(Value::Null),
        );
        d.data("campaign_name", text(campaign, "title").unwrap_or_default());
    }
    for key in [
        "subject",
        "isDuplicate",
        "link",
        "status",
        "plainTextBody",
        "type",
    ] {
        d.data_from(body, key);
    }
    Ok(vec![d.finish()])
}
