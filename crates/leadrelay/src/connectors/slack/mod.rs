//! `slack`: a Block Kit message per lead, sales event, alert or dead-letter
//! copy — through an incoming webhook, or the Web API `chat.postMessage`
//! with a bot token and a channel.
//!
//! Settings:
//! - `webhook_url_env`: the env var holding an incoming-webhook URL
//!   (`https://hooks.slack.com/services/T…/B…/…`, a secret), or
//! - `token_env` (a bot token `xoxb-…` with `chat:write`) and `channel`
//!   (`#leads` or a channel id; the bot must be a member, or have
//!   `chat:write.public` for public channels).
//! - `text`: a minijinja template for the message text (the notification
//!   and fallback text; mrkdwn); `forms.FORM.text` per form.
//! - `blocks` (default `true`): add the Block Kit summary — a header, the
//!   contact's fields, the other fields, attribution and a button linking to
//!   the lead in the dashboard (`server.public_url` + `/ui/leads/{id}`).
//! - `rating_buttons` (default `false`): messages about a person (the
//!   handoff's `lead.qualified`, new leads) also carry Good / OK / Poor lead
//!   buttons; a click reaches `POST /v1/slack/interactions` (the Slack
//!   app's Interactivity Request URL, checked with
//!   `feedback.slack_signing_secret_env`) and rates the lead.
//! - `base_url` (default `https://slack.com/api`), `allow_private_networks`.
//!
//! Classification: Web API answers are HTTP 200 with `"ok": false` on
//! failure — `invalid_auth`, `not_authed`, `token_revoked`,
//! `account_inactive` reject the credentials; `channel_not_found`,
//! `not_in_channel`, `is_archived`, `missing_scope`, `restricted_action`
//! and other errors are permanent; `ratelimited` (HTTP 429) pauses the
//! destination for `Retry-After`; `internal_error`, `fatal_error`,
//! `service_unavailable`, `request_timeout` and 5xx retry. Webhooks answer
//! plain text with the HTTP status: 403 `invalid_token` rejects the
//! credentials, 404 `no_service` and 410 mean the webhook or its channel is
//! gone (the destination is disabled), other 4xx are permanent.

mod blocks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{self as shared, HttpResponse};
use super::notify::{self, FormOverride, Templates, TemplatesBuilder};
use super::{
    BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob, ErrorClass,
    JobResult, Outcome,
};
use crate::config::{Problem, Rate, parse_settings};
use crate::redact;

#[derive(Debug, Deserialize)]
struct Settings {
    #[serde(default)]
    webhook_url_env: Option<String>,
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default = "default_true")]
    blocks: bool,
    #[serde(default)]
    rating_buttons: bool,
    #[serde(default)]
    forms: BTreeMap<String, FormOverride>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    allow_private_networks: bool,
}

fn default_true() -> bool {
    true
}

pub fn kind() -> ConnectorKind {
    ConnectorKind {
        name: "slack",
        summary: "Slack message (Block Kit) via an incoming webhook or chat.postMessage",
        defaults: Defaults {
            // Slack allows about one message per second per channel (short
            // bursts tolerated); one destination posts to one channel.
            rate_limit: Some(Rate {
                count: 1,
                period: Duration::from_secs(1),
            }),
            concurrency: 1,
            batch_size: 1,
            max_batch_size: 1,
        },
        personal_data: true,
        build,
    }
}

const DEFAULT_TEXT: &str = "\
{% if alert %}{{ ':white_check_mark: Resolved' if alert.status == 'resolved' else ':rotating_light: Alert' }}: {{ alert.message }}\
{% if alert.url %} <{{ alert.url }}|Open the issue>{% endif %}\
{% elif dead_letter %}:x: Delivery to {{ dead_letter.destination }} failed{% if contact.email %} for {{ contact.email }}{% endif %}: {{ dead_letter.reason }}\
{% else %}New {{ event.type }}: {{ contact.full_name or contact.email or contact.phone or 'unknown person' }}\
{% if contact.company %} ({{ contact.company }}){% endif %}{% endif %}";

enum Target {
    Webhook {
        url: reqwest::Url,
    },
    WebApi {
        base: String,
        token: String,
        channel: String,
    },
}

struct SlackConnector {
    client: reqwest::Client,
    target: Target,
    templates: Templates,
    blocks: bool,
    rating_buttons: bool,
    forms: BTreeMap<String, FormOverride>,
    public_url: String,
    allow_private: bool,
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let s: Settings = parse_settings(ctx.settings)?;
    let mut problems = Vec::new();
    let target = match (&s.webhook_url_env, &s.token_env) {
        (Some(var), None) => {
            if s.channel.is_some() {
                problems.push(Problem::error(
                    "channel",
                    "an incoming webhook posts to the channel it was made for; `channel` is for token_env",
                ));
            }
            match ctx.secret("webhook_url_env", var) {
                Ok(u) => match reqwest::Url::parse(u.trim()) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                        Some(Target::Webhook { url })
                    }
                    _ => {
                        problems.push(Problem::error(
                            "webhook_url_env",
                            format!("{var} does not hold an http(s) URL"),
                        ));
                        None
                    }
                },
                Err(p) => {
                    problems.push(p);
                    None
                }
            }
        }
        (None, Some(var)) => {
            let channel = s
                .channel
                .clone()
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty());
            if channel.is_none() {
                problems.push(Problem::error(
                    "channel",
                    "chat.postMessage needs a channel (\"#leads\" or an id)",
                ));
            }
            let token = ctx
                .secret("token_env", var)
                .map_err(|p| problems.push(p))
                .ok();
            let base = s
                .base_url
                .clone()
                .unwrap_or_else(|| "https://slack.com/api".into())
                .trim_end_matches('/')
                .to_string();
            if reqwest::Url::parse(&base).is_err() {
                problems.push(Problem::error("base_url", "not a valid URL"));
            }
            match (token, channel) {
                (Some(token), Some(channel)) => Some(Target::WebApi {
                    base,
                    token,
                    channel,
                }),
                _ => None,
            }
        }
        _ => {
            problems.push(Problem::error(
                "",
                "set webhook_url_env (an incoming webhook) or token_env and channel (chat.postMessage)",
            ));
            None
        }
    };

    let mut tb = TemplatesBuilder::new();
    tb.add(
        "text",
        None,
        s.text.as_deref().unwrap_or(DEFAULT_TEXT),
        "text",
    );
    notify::add_form_overrides(&mut tb, &s.forms, &["text"]);
    let templates = tb
        .finish(ctx.public_url)
        .map_err(|ps| problems.extend(ps))
        .ok();
    let client = shared::client(ctx.timeout, s.allow_private_networks)
        .map_err(|m| problems.push(Problem::error("", m)))
        .ok();
    let (Some(target), Some(templates), Some(client), true) =
        (target, templates, client, problems.is_empty())
    else {
        return Err(problems);
    };
    Ok(Arc::new(SlackConnector {
        client,
        target,
        templates,
        blocks: s.blocks,
        rating_buttons: s.rating_buttons,
        forms: s.forms,
        public_url: ctx.public_url.to_string(),
        allow_private: s.allow_private_networks,
    }))
}

/// Escapes the three characters Slack's mrkdwn treats as control characters.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Escapes every string in a JSON value (template contexts).
fn escape_all(v: &mut Value) {
    match v {
        Value::String(s) => *s = escape(s),
        Value::Array(a) => a.iter_mut().for_each(escape_all),
        Value::Object(m) => m.values_mut().for_each(escape_all),
        _ => {}
    }
}

impl SlackConnector {
    fn display_url(&self) -> String {
        match &self.target {
            Target::Webhook { url } => {
                format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or(""))
            }
            Target::WebApi { base, .. } => format!("{base}/chat.postMessage"),
        }
    }

    /// The message body for one job.
    fn payload(&self, job: &DeliveryJob) -> Result<Value, String> {
        let form = notify::form_of(job);
        let ctx = notify::context(job, &self.public_url);
        let mut escaped = ctx.clone();
        escape_all(&mut escaped);
        let text = self.templates.render("text", form, &escaped)?;
        let text = text.trim();
        if text.is_empty() {
            return Err("the text template rendered nothing".into());
        }
        let mut body = json!({ "text": blocks::truncate(text, 3000) });
        if self.blocks {
            body["blocks"] = Value::Array(blocks::message(job, &ctx, text, self.rating_buttons));
        }
        if let Target::WebApi { channel, .. } = &self.target {
            body["channel"] = json!(channel);
            body["unfurl_links"] = json!(false);
        }
        Ok(body)
    }

    async fn send_one(&self, job: &DeliveryJob) -> JobResult {
        let body = match self.payload(job) {
            Ok(b) => b,
            Err(m) => {
                return JobResult {
                    outcome: Outcome::permanent(ErrorClass::Mapping, m),
                    report: Default::default(),
                };
            }
        };
        let bytes = body.to_string().into_bytes();
        let mut req = match &self.target {
            Target::Webhook { url } => self.client.post(url.clone()),
            Target::WebApi { base, token, .. } => self
                .client
                .post(format!("{base}/chat.postMessage"))
                .bearer_auth(token),
        };
        req = req
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(bytes);
        let request = match req.build() {
            Ok(r) => r,
            Err(e) => {
                return JobResult {
                    outcome: Outcome::permanent(
                        ErrorClass::Mapping,
                        format!("cannot build the request: {e}"),
                    ),
                    report: Default::default(),
                };
            }
        };
        let (result, report) = match self.target {
            // An incoming-webhook URL is a secret.
            Target::Webhook { .. } => {
                shared::send_to_secret_url(
                    &self.client,
                    request,
                    &self.display_url(),
                    self.allow_private,
                )
                .await
            }
            Target::WebApi { .. } => {
                shared::send(
                    &self.client,
                    request,
                    &self.display_url(),
                    self.allow_private,
                )
                .await
            }
        };
        let outcome = match &result {
            Ok(resp) => match self.target {
                Target::Webhook { .. } => classify_webhook(resp),
                Target::WebApi { .. } => classify_web_api(resp),
            },
            Err(e) => e.outcome(),
        };
        JobResult { outcome, report }
    }
}

/// `chat.postMessage` / `auth.test` answers.
fn classify_web_api(resp: &HttpResponse) -> Outcome {
    if resp.status == 429 {
        return Outcome::Throttled {
            message: "Slack: ratelimited".into(),
            retry_after: shared::parse_retry_after(&resp.headers).or(Some(Duration::from_secs(1))),
        };
    }
    if resp.status != 200 {
        return shared::classify(resp);
    }
    let parsed: Option<Value> = serde_json::from_str(&resp.body).ok();
    let Some(parsed) = parsed else {
        return Outcome::retry(
            ErrorClass::Vendor,
            format!(
                "Slack answered 200 without JSON: {}",
                redact::excerpt(&resp.body, 200)
            ),
        );
    };
    if parsed.get("ok").and_then(Value::as_bool) == Some(true) {
        return Outcome::delivered();
    }
    let error = parsed
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("unknown_error")
        .to_string();
    let message = format!("Slack: {error}");
    match error.as_str() {
        "invalid_auth" | "not_authed" | "token_revoked" | "token_expired" | "account_inactive"
        | "no_permission" => Outcome::CredentialsRejected { message },
        "ratelimited" | "rate_limited" => Outcome::Throttled {
            message,
            retry_after: shared::parse_retry_after(&resp.headers).or(Some(Duration::from_secs(1))),
        },
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            Outcome::retry(ErrorClass::Vendor, message)
        }
        "invalid_blocks"
        | "invalid_blocks_format"
        | "msg_too_long"
        | "no_text"
        | "too_many_attachments"
        | "invalid_json"
        | "json_not_object"
        | "invalid_arguments" => Outcome::permanent(ErrorClass::Mapping, message),
        _ => Outcome::permanent(ErrorClass::Vendor, message),
    }
}

/// Incoming-webhook answers: plain text with the HTTP status.
fn classify_webhook(resp: &HttpResponse) -> Outcome {
    let body = resp.body.trim();
    let message = format!(
        "Slack webhook: HTTP {} {}",
        resp.status,
        redact::excerpt(body, 100)
    );
    match (resp.status, body) {
        (200..=299, _) => Outcome::delivered(),
        (429, _) => Outcome::Throttled {
            message,
            retry_after: shared::parse_retry_after(&resp.headers).or(Some(Duration::from_secs(1))),
        },
        (403, "invalid_token") | (401, _) => Outcome::CredentialsRejected { message },
        (404, "no_service") | (410, _) => Outcome::Gone { message },
        (400, "invalid_payload" | "invalid_blocks" | "no_text" | "too_many_attachments") => {
            Outcome::permanent(ErrorClass::Mapping, message)
        }
        (400..=499, _) => Outcome::permanent(ErrorClass::Vendor, message),
        _ => shared::classify(resp),
    }
}

#[async_trait]
impl Connector for SlackConnector {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.send_one(job).await);
        }
        out
    }

    fn skip_reason(&self, job: &DeliveryJob) -> Option<String> {
        let form = notify::form_of(job)?;
        (self.forms.get(form).and_then(|f| f.enabled) == Some(false))
            .then(|| format!("switched off for form {form}"))
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<Value, String>> {
        Some(self.payload(job))
    }

    async fn check(&self) -> CheckReport {
        match &self.target {
            // A webhook cannot be tested without posting a message.
            Target::Webhook { url } => CheckReport::ok(format!(
                "incoming webhook on {} (not called: it would post a message)",
                url.host_str().unwrap_or("")
            )),
            Target::WebApi { base, token, .. } => {
                let req = match self
                    .client
                    .post(format!("{base}/auth.test"))
                    .bearer_auth(token)
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => return CheckReport::failed(format!("cannot build a request: {e}")),
                };
                let (result, _) = shared::send(
                    &self.client,
                    req,
                    &format!("{base}/auth.test"),
                    self.allow_private,
                )
                .await;
                match result {
                    Ok(resp) => match classify_web_api(&resp) {
                        Outcome::Delivered { .. } => {
                            let team = serde_json::from_str::<Value>(&resp.body)
                                .ok()
                                .and_then(|v| {
                                    v.get("team").and_then(Value::as_str).map(String::from)
                                })
                                .unwrap_or_default();
                            CheckReport::ok(format!("auth.test: token valid for workspace {team}"))
                        }
                        other => CheckReport::failed(format!("auth.test: {other:?}")),
                    },
                    Err(e) => CheckReport::failed(format!("auth.test: {e:?}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: HeaderMap::new(),
            body: body.into(),
        }
    }

    #[test]
    fn web_api_answers() {
        assert!(matches!(
            classify_web_api(&resp(200, r#"{"ok":true,"ts":"1.2"}"#)),
            Outcome::Delivered { .. }
        ));
        for e in ["invalid_auth", "not_authed", "token_revoked"] {
            assert!(matches!(
                classify_web_api(&resp(200, &format!(r#"{{"ok":false,"error":"{e}"}}"#))),
                Outcome::CredentialsRejected { .. }
            ));
        }
        for e in ["channel_not_found", "not_in_channel", "is_archived"] {
            assert!(matches!(
                classify_web_api(&resp(200, &format!(r#"{{"ok":false,"error":"{e}"}}"#))),
                Outcome::Permanent { .. }
            ));
        }
        let mut r = resp(429, r#"{"ok":false,"error":"ratelimited"}"#);
        r.headers.insert("retry-after", "7".parse().unwrap());
        assert!(matches!(
            classify_web_api(&r),
            Outcome::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify_web_api(&resp(200, r#"{"ok":false,"error":"internal_error"}"#)),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify_web_api(&resp(200, "<html>")),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify_web_api(&resp(503, "")),
            Outcome::Retry { .. }
        ));
    }

    #[test]
    fn webhook_answers() {
        assert!(matches!(
            classify_webhook(&resp(200, "ok")),
            Outcome::Delivered { .. }
        ));
        assert!(matches!(
            classify_webhook(&resp(403, "invalid_token")),
            Outcome::CredentialsRejected { .. }
        ));
        assert!(matches!(
            classify_webhook(&resp(404, "no_service")),
            Outcome::Gone { .. }
        ));
        assert!(matches!(
            classify_webhook(&resp(410, "channel_is_archived")),
            Outcome::Gone { .. }
        ));
        assert!(matches!(
            classify_webhook(&resp(404, "channel_not_found")),
            Outcome::Permanent { .. }
        ));
        assert!(matches!(
            classify_webhook(&resp(400, "invalid_blocks")),
            Outcome::Permanent {
                class: ErrorClass::Mapping,
                ..
            }
        ));
        assert!(matches!(
            classify_webhook(&resp(500, "")),
            Outcome::Retry { .. }
        ));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("<a & b>"), "&lt;a &amp; b&gt;");
    }
}
