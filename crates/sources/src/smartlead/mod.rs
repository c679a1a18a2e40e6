//! Smartlead webhooks (user, client or campaign level): one JSON body per
//! event with `event_type`, the lead (`to_email`, `lead_data` …), the campaign
//! and the message.
//!
//! Authentication, any combination (at least one): the `X-Smartlead-Signature:
//! sha256=<HMAC-SHA256 of the raw body>` header with the webhook signing
//! secret (`signing_secret_env`), the webhook's `secret_key` that Smartlead
//! copies into every body (`secret_key_env`), and a shared token in the URL
//! (`token_env`). Smartlead sends no timestamp; `X-Request-Id` identifies
//! each event and is used as the external id.

use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Encoding, HeaderHmac, SharedToken};
use crate::config::{Env, config_error, optional_secret, parse_settings};
use crate::event::{EventDraft, parse_time};
use crate::json::{expect_object, fill_contact, first_text, text};
use crate::token_source::{BodySecret, TokenSource, finish, lookup};
use crate::{
    HookError, InboundEvent, InboundRequest, KindInfo, MIB, SourceConfigError, SourceKind,
};
use leadrelay_model::EventType;

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "smartlead",
    title: "Smartlead (webhooks: sent, opened, clicked, replied, bounced, unsubscribed, category updated)",
    auth: "X-Smartlead-Signature (HMAC-SHA256 of the body), the secret_key echoed in the body, and/or a URL token",
    setup: "In Smartlead open Settings > Webhooks (or a campaign's webhook settings, or POST /api/v1/webhook/create) \
            and add https://<leadrelay>/v1/hooks/<source>?token=<token> with the events you need (EMAIL_REPLY, \
            EMAIL_SENT, EMAIL_OPEN, EMAIL_LINK_CLICK, EMAIL_BOUNCE, LEAD_UNSUBSCRIBED, LEAD_CATEGORY_UPDATED). Copy \
            the webhook's secret key into the env var named by secret_key_env and the token into token_env.",
    largest_request: "one event; replies carry the sent and the reply message as HTML and text",
    max_body_bytes: MIB,
    docs: &[
        (
            "Smartlead: Threaded replies (EMAIL_REPLY payload)",
            "https://help.smartlead.ai/Threaded-Replies-ff92a607c93645b7b1568d8219218423",
        ),
        (
            "Smartlead: Untracked replies (UNTRACKED_REPLIES payload)",
            "https://help.smartlead.ai/Untracked-replies-d68b21be42c74f50b7f86bc63103a1c6",
        ),
    ],
};

/// `[sources.NAME]` settings for `kind = "smartlead"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Env var holding a shared token the webhook URL carries.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Env var holding the webhook signing secret (`X-Smartlead-Signature`).
    #[serde(default)]
    pub signing_secret_env: Option<String>,
    /// Env var holding the webhook's `secret_key` (sent in every body).
    #[serde(default)]
    pub secret_key_env: Option<String>,
    /// Env var holding the Smartlead API key (for `leadrelay sources connect`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Smartlead API base URL (default `https://server.smartlead.ai/api/v1`).
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// The campaign `connect` registers the webhook on (default: user level).
    #[serde(default)]
    pub campaign_id: Option<u64>,
    /// Events `connect` subscribes to (default: see the book, docs/src/reference/sources/smartlead.md).
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
}

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    let s: Settings = parse_settings(settings)?;
    let mut errors = Vec::new();
    if s.token_env.is_none() && s.secret_key_env.is_none() && s.signing_secret_env.is_none() {
        errors.push(config_error(
            "signing_secret_env",
            "set signing_secret_env, secret_key_env or token_env (any combination)",
        ));
    }
    let token = s
        .token_env
        .as_deref()
        .and_then(|var| SharedToken::from_env(env, "token_env", var, &mut errors));
    let body_secret = optional_secret(
        env,
        "secret_key_env",
        s.secret_key_env.as_ref(),
        &mut errors,
    )
    .map(|secret| BodySecret {
        field: "secret_key",
        secret,
    });
    let signature = optional_secret(
        env,
        "signing_secret_env",
        s.signing_secret_env.as_ref(),
        &mut errors,
    )
    .map(|secret| HeaderHmac {
        header: "x-smartlead-signature".into(),
        prefix: "sha256=".into(),
        secret,
        encodings: vec![Encoding::Hex, Encoding::Base64],
    });
    finish(
        TokenSource {
            info: &INFO,
            token,
            signature,
            body_secret,
            accepts_form: false,
            map,
        },
        errors,
    )
}

const EVENTS: [(&str, EventType); 15] = [
    ("EMAIL_SENT", EventType::EmailSent),
    ("FIRST_EMAIL_SENT", EventType::EmailSent),
    ("EMAIL_OPEN", EventType::EmailOpened),
    ("EMAIL_OPENED", EventType::EmailOpened),
    ("EMAIL_LINK_CLICK", EventType::EmailClicked),
    ("LINK_CLICKED", EventType::EmailClicked),
    ("EMAIL_CLICKED", EventType::EmailClicked),
    ("EMAIL_REPLY", EventType::ReplyReceived),
    ("EMAIL_REPLIED", EventType::ReplyReceived),
    ("LEAD_REPLIED", EventType::ReplyReceived),
    ("UNTRACKED_REPLIES", EventType::ReplyReceived),
    ("EMAIL_BOUNCE", EventType::EmailBounced),
    ("EMAIL_BOUNCED", EventType::EmailBounced),
    ("LEAD_UNSUBSCRIBED", EventType::Unsubscribed),
    ("EMAIL_UNSUBSCRIBED", EventType::Unsubscribed),
];

/// `"Jane Doe <jane@acme.io>"` → `("Jane Doe", "jane@acme.io")`.
fn split_mailbox(s: &str) -> (Option<&str>, &str) {
    match (s.rfind('<'), s.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            let name = s[..open].trim().trim_matches('"').trim();
            (
                Some(name).filter(|n| !n.is_empty()),
                s[open + 1..close].trim(),
            )
        }
        _ => (None, s.trim()),
    }
}

fn map(req: &InboundRequest<'_>, body: &Value) -> Result<Vec<InboundEvent>, HookError> {
    expect_object(body, "a Smartlead webhook body")?;
    let name = text(body, "event_type").unwrap_or_else(|| "unknown".into());
    let mut d = EventDraft::mapped("smartlead", &name, lookup(&name, &EVENTS));
    let at = first_text(
        body,
        &[
            "event_timestamp",
            "time_replied",
            "time_sent",
            "time_opened",
            "time_clicked",
            "created_at",
        ],
    );
    d.occurred_at(
        at.as_ref()
            .and_then(|t| parse_time(&Value::String(t.clone()))),
    );
    let lead_id = first_text(body, &["sl_email_lead_id", "lead_id"]).unwrap_or_default();
    let message = first_text(
        body,
        &[
            "/reply_message/message_id",
            "/sent_message/message_id",
            "message_id",
        ],
    );
    if let Some(request_id) = req
        .header("x-request-id")
        .filter(|id| !id.trim().is_empty())
    {
        d.external_id(request_id.trim());
    } else {
        d.digest_id(&[
            &name,
            &text(body, "stats_id").unwrap_or_default(),
            &lead_id,
            &text(body, "to_email").unwrap_or_default(),
            at.as_deref().unwrap_or(""),
            message.as_deref().unwrap_or(""),
        ]);
    }

    // The lead: `sl_lead_email` is the lead's own address (`to_email` may be an alias).
    for key in [
        "sl_lead_email",
        "to_email",
        "lead_email",
        "/lead_data/email",
        "/lead/email",
    ] {
        d.email(&text(body, key).unwrap_or_default());
    }
    if let Some(from) = text(body, "sender_detail") {
        let (name, email) = split_mailbox(&from);
        d.email(email);
        d.contact_field("full_name", name.unwrap_or(""));
    }
    for lead in [body.get("lead_data"), body.get("lead")]
        .into_iter()
        .flatten()
    {
        fill_contact(&mut d, lead);
        if let Some(custom) = lead.get("custom_fields").filter(|c| c.is_object()) {
            d.data("lead_custom_fields", custom.clone());
        }
    }
    d.contact_field("full_name", &text(body, "to_name").unwrap_or_default());
    d.vendor_ref("lead", &lead_id);
    d.vendor_ref("campaign", &text(body, "campaign_id").unwrap_or_default());
    // The activity: the email (sent, opened, clicked: its message id or
    // stats id) or the reply (its own message id), per canonical type, so
    // a resent webhook with a new X-Request-Id names the same activity.
    if name != "unknown" && d.event_type().as_str() != crate::CUSTOM_EVENT_TYPE {
        let kind = d.event_type().as_str().to_string();
        if let Some(of) = message.or_else(|| text(body, "stats_id")) {
            // A Message-ID comes in angle brackets: the id is inside.
            let of = of.trim().trim_start_matches('<').trim_end_matches('>');
            d.activity_id(&format!("{kind}:{of}"));
        }
    }
    for key in [
        "campaign_id",
        "campaign_name",
        "campaign_status",
        "sequence_number",
        "subject",
        "from_email",
        "stats_id",
        "app_url",
        "link_clicked",
    ] {
        d.data_from(body, key);
    }
    if let Some(reply) = first_text(
        body,
        &["/reply_message/text", "preview_text", "visible_text"],
    ) {
        d.data("reply_text", reply);
    }
    if let Some(category) = body.get("lead_category").filter(|c| c.is_object()) {
        d.data("lead_category", category.clone());
    }
    Ok(vec![d.finish()])
}
