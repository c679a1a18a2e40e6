//! `webhook`: POST each delivery as JSON to any URL — your CRM's endpoint,
//! Zapier or Make — signed per the Standard Webhooks spec.
//!
//! Every request carries `webhook-id` (the delivery id, stable across
//! retries), `webhook-timestamp` and `webhook-signature: v1,<base64
//! HMAC-SHA256 of "id.timestamp.body">` for each configured `whsec_` secret
//! (several during key rotation). Redirects are not followed, GET is never
//! used, and URLs that resolve to private, loopback or link-local addresses
//! are refused unless `allow_private_networks = true`.
//!
//! Settings:
//! - `url` or `url_env` (the env var holding the URL; Zapier/Make URLs are secrets).
//! - `preset`: `zapier` (url_env `ZAPIER_WEBHOOK_URL`, flat body), `make`
//!   (url_env `MAKE_WEBHOOK_URL`, flat body), `crm` (url_env `CRM_WEBHOOK_URL`).
//!   With `enabled = "auto"`, a preset is on when its env var is set. Zapier
//!   and Make URLs are never called by `leadrelay check` (any request, even
//!   HEAD, would start a Zap or scenario).
//! - `format`: `envelope` (default) or `flat`.
//! - `method`: `POST` (default), `PUT` or `PATCH`.
//! - `headers`: static headers; `secret_headers`: header name → env var.
//! - `secret_env`, `previous_secret_envs`: Standard Webhooks signing secrets (`whsec_…`).
//! - `body_template`: a minijinja template producing the body (sees
//!   `event`, `contact`, `attribution`, `data`, `consent`, `delivery`).
//! - `content_type` (default `application/json`).
//! - `allow_private_networks` (default false).

mod signing;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use minijinja::Environment;
use serde::Deserialize;

use super::http::{self as shared, HttpResponse, SendError};
use super::{
    BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob, ErrorClass,
    JobResult, Outcome, payload,
};
use crate::config::{Problem, parse_settings};
use crate::routing::condition_context;

pub use signing::{Signer, sign};

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Preset {
    Zapier,
    Make,
    Crm,
}

impl Preset {
    /// The env var the preset reads its URL from.
    fn url_env(self) -> &'static str {
        match self {
            Preset::Zapier => "ZAPIER_WEBHOOK_URL",
            Preset::Make => "MAKE_WEBHOOK_URL",
            Preset::Crm => "CRM_WEBHOOK_URL",
        }
    }

    /// Zapier catch hooks and Make custom webhooks start a run on any
    /// request (GET and HEAD included), so `check` must not call them.
    fn triggers_on_any_request(self) -> bool {
        matches!(self, Preset::Zapier | Preset::Make)
    }
}

/// The env var a `preset` implies when the settings name no `url_env`
/// (so `enabled = "auto"` switches a preset on by itself).
pub fn implied_env_var(settings: &toml::Table) -> Option<&'static str> {
    if settings.contains_key("url_env") || settings.contains_key("url") {
        return None;
    }
    let preset: Preset = settings.get("preset")?.clone().try_into().ok()?;
    Some(preset.url_env())
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    Envelope,
    Flat,
}

#[derive(Debug, Deserialize)]
struct Settings {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_env: Option<String>,
    #[serde(default)]
    preset: Option<Preset>,
    #[serde(default)]
    format: Option<Format>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    secret_headers: BTreeMap<String, String>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    previous_secret_envs: Vec<String>,
    #[serde(default)]
    body_template: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    allow_private_networks: bool,
}

pub fn kind() -> ConnectorKind {
    ConnectorKind {
        name: "webhook",
        summary: "POST JSON to any URL (your CRM, Zapier, Make), signed per Standard Webhooks",
        defaults: Defaults {
            rate_limit: None,
            concurrency: 8,
            batch_size: 1,
            max_batch_size: 1,
        },
        personal_data: true,
        build,
    }
}

struct WebhookConnector {
    client: reqwest::Client,
    url: reqwest::Url,
    display_url: String,
    method: reqwest::Method,
    format: Format,
    headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    signer: Option<Signer>,
    template: Option<Environment<'static>>,
    content_type: String,
    allow_private: bool,
    preset: Option<Preset>,
    /// The URL came from `url_env`.
    secret_url: bool,
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let s: Settings = parse_settings(ctx.settings)?;
    let mut problems = Vec::new();

    let url_env = s
        .url_env
        .clone()
        .or_else(|| s.preset.map(|p| p.url_env().to_string()));
    let (raw_url, from_env) = match (&s.url, &url_env) {
        (Some(_), Some(_)) if s.url_env.is_some() => {
            problems.push(Problem::error("url", "set either url or url_env, not both"));
            (None, false)
        }
        (Some(u), _) => (Some(u.clone()), false),
        (None, Some(var)) => match ctx.secret("url_env", var) {
            Ok(u) => (Some(u), true),
            Err(p) => {
                problems.push(p);
                (None, true)
            }
        },
        (None, None) => {
            problems.push(Problem::error("url", "a webhook needs `url` or `url_env`"));
            (None, false)
        }
    };
    let url = raw_url.and_then(|u| match reqwest::Url::parse(u.trim()) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            Some(parsed)
        }
        Ok(_) => {
            problems.push(Problem::error(
                if from_env { "url_env" } else { "url" },
                "the URL must be http:// or https:// with a host",
            ));
            None
        }
        Err(e) => {
            problems.push(Problem::error(
                if from_env { "url_env" } else { "url" },
                format!("not a valid URL: {e}"),
            ));
            None
        }
    });

    let method = match s.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("POST") => reqwest::Method::POST,
        Some("PUT") => reqwest::Method::PUT,
        Some("PATCH") => reqwest::Method::PATCH,
        Some(other) => {
            problems.push(Problem::error(
                "method",
                format!("{other} is not allowed: webhooks use POST, PUT or PATCH, never GET"),
            ));
            reqwest::Method::POST
        }
    };

    let mut headers = Vec::new();
    let secret_values: Vec<(String, Result<String, Problem>)> = s
        .secret_headers
        .iter()
        .map(|(h, var)| (h.clone(), ctx.secret(&format!("secret_headers.{h}"), var)))
        .collect();
    let all_headers = s
        .headers
        .iter()
        .map(|(h, v)| (h.clone(), Ok::<String, Problem>(v.clone())))
        .chain(secret_values);
    for (name, value) in all_headers {
        let value = match value {
            Ok(v) => v,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("webhook-")
            || lower == "content-type"
            || lower == "content-length"
            || lower == "host"
        {
            problems.push(Problem::error(
                format!("headers.{name}"),
                "this header is set by leadrelay",
            ));
            continue;
        }
        match (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) {
            (Ok(n), Ok(mut v)) => {
                if s.secret_headers.contains_key(&name) {
                    v.set_sensitive(true);
                }
                headers.push((n, v));
            }
            _ => problems.push(Problem::error(
                format!("headers.{name}"),
                "not a valid HTTP header",
            )),
        }
    }

    let mut secrets = Vec::new();
    let secret_vars = s
        .secret_env
        .iter()
        .map(|v| ("secret_env".to_string(), v.as_str()))
        .chain(
            s.previous_secret_envs
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("previous_secret_envs[{i}]"), v.as_str())),
        );
    for (setting, var) in secret_vars {
        match ctx.secret(&setting, var) {
            Ok(secret) => secrets.push(secret),
            Err(p) => problems.push(p),
        }
    }
    let signer = if secrets.is_empty() {
        None
    } else {
        match Signer::new(&secrets) {
            Ok(s) => Some(s),
            Err(m) => {
                problems.push(Problem::error("secret_env", m));
                None
            }
        }
    };

    let template = match &s.body_template {
        Some(src) => {
            let mut env = Environment::new();
            env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
            match env.add_template_owned("body", src.clone()) {
                Ok(()) => Some(env),
                Err(e) => {
                    problems.push(Problem::error(
                        "body_template",
                        format!("template error: {e}"),
                    ));
                    None
                }
            }
        }
        None => None,
    };

    let client = match shared::client(ctx.timeout, s.allow_private_networks) {
        Ok(c) => Some(c),
        Err(m) => {
            problems.push(Problem::error("", m));
            None
        }
    };

    let (Some(url), Some(client), true) = (url, client, problems.is_empty()) else {
        return Err(problems);
    };
    let display_url = if from_env {
        format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or(""))
    } else {
        let mut u = url.clone();
        u.set_query(None);
        u.to_string()
    };
    let format = s.format.unwrap_or(match s.preset {
        Some(Preset::Zapier) | Some(Preset::Make) => Format::Flat,
        _ => Format::Envelope,
    });
    Ok(Arc::new(WebhookConnector {
        client,
        url,
        display_url,
        method,
        format,
        headers,
        signer,
        template,
        content_type: s.content_type.unwrap_or_else(|| "application/json".into()),
        allow_private: s.allow_private_networks,
        preset: s.preset,
        secret_url: from_env,
    }))
}

impl WebhookConnector {
    /// Sends through the shared client; a URL from `url_env` is a secret.
    async fn send(
        &self,
        request: reqwest::Request,
    ) -> (Result<HttpResponse, SendError>, super::AttemptReport) {
        if self.secret_url {
            shared::send_to_secret_url(&self.client, request, &self.display_url, self.allow_private)
                .await
        } else {
            shared::send(&self.client, request, &self.display_url, self.allow_private).await
        }
    }

    fn body(&self, job: &DeliveryJob) -> Result<Vec<u8>, String> {
        if let Some(env) = &self.template {
            let mut ctx = condition_context(&job.event);
            if let Some(obj) = ctx.as_object_mut() {
                obj.insert(
                    "delivery".into(),
                    serde_json::json!({"id": job.delivery.id.to_string()}),
                );
            }
            let t = env.get_template("body").map_err(|e| e.to_string())?;
            return t
                .render(minijinja::Value::from(minijinja::value::Serde(&ctx)))
                .map(String::into_bytes)
                .map_err(|e| format!("body template failed: {e}"));
        }
        let value = match self.format {
            Format::Envelope => payload::envelope(job),
            Format::Flat => payload::flat(job),
        };
        serde_json::to_vec(&value).map_err(|e| e.to_string())
    }

    async fn send_one(&self, job: &DeliveryJob) -> JobResult {
        let body = match self.body(job) {
            Ok(b) => b,
            Err(m) => {
                return JobResult {
                    outcome: Outcome::permanent(ErrorClass::Mapping, m),
                    report: Default::default(),
                };
            }
        };
        let msg_id = job.delivery.id.to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let mut req = self
            .client
            .request(self.method.clone(), self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, self.content_type.as_str())
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(signer) = &self.signer {
            req = req.header(
                "webhook-signature",
                signer.header(&msg_id, timestamp, &body),
            );
        }
        for (n, v) in &self.headers {
            req = req.header(n.clone(), v.clone());
        }
        let request = match req.body(body).build() {
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
        let (result, report) = self.send(request).await;
        let outcome = match &result {
            Ok(resp) => shared::classify(resp),
            Err(e) => e.outcome(),
        };
        JobResult { outcome, report }
    }
}

#[async_trait]
impl Connector for WebhookConnector {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.send_one(job).await);
        }
        out
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<serde_json::Value, String>> {
        Some(self.body(job).map(|b| {
            serde_json::from_slice(&b)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&b).into()))
        }))
    }

    /// A webhook posts the event as it is: no remote-id lookup per batch.
    fn lookup_keys(&self, _job: &DeliveryJob) -> Vec<String> {
        Vec::new()
    }

    async fn check(&self) -> CheckReport {
        if let Some(p) = self.preset.filter(|p| p.triggers_on_any_request()) {
            return CheckReport::ok(format!(
                "{} is set ({p:?} URL; not called, since any request would start a run)",
                self.display_url
            ));
        }
        // A HEAD request shows the host answers without sending lead data.
        let req = match self.client.head(self.url.clone()).build() {
            Ok(r) => r,
            Err(e) => return CheckReport::failed(format!("cannot build a request: {e}")),
        };
        let (result, _) = self.send(req).await;
        match result {
            Ok(HttpResponse { status, .. }) if status < 500 => {
                CheckReport::ok(format!("{} answered HTTP {status}", self.display_url))
            }
            Ok(HttpResponse { status, .. }) => {
                CheckReport::failed(format!("{} answered HTTP {status}", self.display_url))
            }
            Err(SendError::Timeout) => {
                CheckReport::failed(format!("{} timed out", self.display_url))
            }
            Err(SendError::Held(_)) => {
                CheckReport::failed(format!("{}: paused after a 429", self.display_url))
            }
            Err(SendError::Connect(m) | SendError::Blocked(m) | SendError::Other(m)) => {
                CheckReport::failed(format!("{}: {m}", self.display_url))
            }
        }
    }
}
