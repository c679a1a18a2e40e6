//! Webhooks: `POST /api/v1/webhooks` (`subscription_url`, `event_action`
//! — `create`, `change`, `delete` or `*` —, `event_object` — `person`,
//! `organization`, `deal` … or `*` —, `http_auth_user`,
//! `http_auth_password`, `version` `1.0` or `2.0`; at most 40 per user),
//! `GET /api/v1/webhooks`, `DELETE /api/v1/webhooks/{id}`.
//!
//! Every change of a person, organization or deal — made through the API
//! (`meta.change_source = "api"`) or by a person in the app
//! (`"app"`, the `edit_*` helpers) — is POSTed to each matching
//! subscription as a v2 body `{"meta": {action, entity, entity_id, id,
//! change_source, company_id, user_id, timestamp, version, webhook_id,
//! attempt …}, "data": {…}, "previous": {…}}` (`previous`: the changed
//! fields' former values; `null` on create; `data` null on delete), with
//! the subscription's HTTP Basic credentials. A delivery that gets no 2xx
//! within 10 seconds is retried after each of
//! [`super::PipedriveConfig::webhook_retry_delays`] (Pipedrive: 3 s, 30 s,
//! 150 s), with the same `meta.id`.
//!
//! Simplified: v1 bodies are not sent (a `1.0` subscription gets v2
//! bodies too); no ban system; no permission levels (every change reaches
//! every subscription).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::errors::{self, PdError};
use super::v2::{PdResult, finish};
use super::{PipedriveState, rfc3339};

/// Pipedrive's limit of webhooks per user.
const MAX_WEBHOOKS: usize = 40;
/// Pipedrive waits this long for the endpoint's answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

const ACTIONS: [&str; 4] = ["create", "change", "delete", "*"];
const OBJECTS: [&str; 10] = [
    "activity",
    "deal",
    "lead",
    "note",
    "organization",
    "person",
    "product",
    "project",
    "user",
    "*",
];

static EVENT_IDS: AtomicU64 = AtomicU64::new(1);

/// A webhook subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipedriveWebhook {
    pub id: u64,
    pub subscription_url: String,
    pub event_action: String,
    pub event_object: String,
    pub http_auth_user: Option<String>,
    pub http_auth_password: Option<String>,
    pub version: String,
    pub add_time: DateTime<Utc>,
}

/// One delivery attempt of a webhook, and the status it got (None: no
/// answer in time).
#[derive(Debug, Clone)]
pub struct PipedriveWebhookSent {
    pub webhook_id: u64,
    pub body: Value,
    /// 1 for the first try.
    pub attempt: u32,
    pub status: Option<u16>,
}

/// Where a change came from (`meta.change_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeSource {
    Api,
    App,
}

/// `(field, former value)` of every top-level field (and custom field, as
/// a `custom_fields` object) that differs between two record bodies.
fn previous(before: &Value, after: &Value) -> Value {
    let mut out = Map::new();
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return Value::Null;
    };
    for (k, old) in b {
        if k == "update_time" {
            continue;
        }
        let new = a.get(k).unwrap_or(&Value::Null);
        if k == "custom_fields"
            && let (Some(old), Some(new)) = (old.as_object(), new.as_object())
        {
            let changed: Map<String, Value> = old
                .iter()
                .filter(|(ck, cv)| new.get(*ck).unwrap_or(&Value::Null) != *cv)
                .map(|(ck, cv)| (ck.clone(), cv.clone()))
                .chain(
                    new.keys()
                        .filter(|ck| !old.contains_key(*ck))
                        .map(|ck| (ck.clone(), Value::Null)),
                )
                .collect();
            if !changed.is_empty() {
                out.insert(k.clone(), Value::Object(changed));
            }
            continue;
        }
        if new != old {
            out.insert(k.clone(), old.clone());
        }
    }
    Value::Object(out)
}

impl PipedriveState {
    /// The webhook subscriptions.
    pub fn webhooks(&self) -> Vec<PipedriveWebhook> {
        self.inner
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every webhook delivery attempt so far.
    pub fn webhooks_sent(&self) -> Vec<PipedriveWebhookSent> {
        self.inner
            .webhook_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A record changed: `before` / `after` are its v2 bodies (None before
    /// a create, after a delete). Sends one webhook to each matching
    /// subscription, retried until it gets a 2xx or the retries run out.
    pub(crate) fn changed(
        &self,
        entity: &'static str,
        id: u64,
        before: Option<Value>,
        after: Option<Value>,
        source: ChangeSource,
    ) {
        let action = match (&before, &after) {
            (None, Some(_)) => "create",
            (Some(_), Some(_)) => "change",
            (Some(_), None) => "delete",
            (None, None) => return,
        };
        let targets: Vec<PipedriveWebhook> = self
            .webhooks()
            .into_iter()
            .filter(|w| {
                (w.event_action == "*" || w.event_action == action)
                    && (w.event_object == "*" || w.event_object == entity)
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let prev = match (&before, &after) {
            (Some(b), Some(a)) => previous(b, a),
            (Some(b), None) => b.clone(),
            _ => Value::Null,
        };
        let now = Utc::now();
        let config = &self.inner.config;
        for w in targets {
            let event_id = uuid::Uuid::now_v7().to_string();
            let body = |attempt: u32| {
                json!({
                    "meta": {
                        "action": action,
                        "entity": entity,
                        "entity_id": id.to_string(),
                        "id": event_id,
                        "change_source": match source {
                            ChangeSource::Api => "api",
                            ChangeSource::App => "app",
                        },
                        "company_id": config.company_id.to_string(),
                        "user_id": config.user.id.to_string(),
                        "correlation_id": EVENT_IDS.fetch_add(1, Ordering::Relaxed).to_string(),
                        "is_bulk_edit": false,
                        "timestamp": rfc3339(now),
                        "type": "general",
                        "version": "2.0",
                        "webhook_id": w.id.to_string(),
                        "webhook_owner_id": config.user.id.to_string(),
                        "host": format!("{}.pipedrive.com", config.company_domain),
                        "attempt": attempt,
                    },
                    "data": after.clone().unwrap_or(Value::Null),
                    "previous": prev.clone(),
                })
            };
            let bodies: Vec<Value> = (1..=config.webhook_retry_delays.len() as u32 + 1)
                .map(body)
                .collect();
            let delays = config.webhook_retry_delays.clone();
            let state = self.clone();
            runtime.spawn(async move {
                let client = reqwest::Client::new();
                for (n, body) in bodies.into_iter().enumerate() {
                    let mut req = client
                        .post(&w.subscription_url)
                        .timeout(DELIVERY_TIMEOUT)
                        .json(&body);
                    if let Some(user) = &w.http_auth_user {
                        req = req.basic_auth(user, w.http_auth_password.as_deref());
                    }
                    let status = req.send().await.ok().map(|r| r.status().as_u16());
                    state
                        .inner
                        .webhook_log
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(PipedriveWebhookSent {
                            webhook_id: w.id,
                            body,
                            attempt: n as u32 + 1,
                            status,
                        });
                    if status.is_some_and(|s| (200..300).contains(&s)) {
                        return;
                    }
                    match delays.get(n) {
                        Some(d) => tokio::time::sleep(*d).await,
                        None => return,
                    }
                }
            });
        }
    }
}

fn webhook_json(w: &PipedriveWebhook, company_id: u64, user_id: u64) -> Value {
    json!({
        "id": w.id,
        "company_id": company_id,
        "owner_id": user_id,
        "user_id": user_id,
        "event_action": w.event_action,
        "event_object": w.event_object,
        "subscription_url": w.subscription_url,
        "is_active": 1,
        "add_time": rfc3339(w.add_time),
        "remove_time": Value::Null,
        "type": "general",
        "http_auth_user": w.http_auth_user,
        "http_auth_password": w.http_auth_password,
        "remove_reason": Value::Null,
        "last_delivery_time": Value::Null,
        "last_http_status": Value::Null,
        "admin_id": user_id,
        "version": w.version,
    })
}

/// A required string parameter of the body.
fn required<'a>(body: &'a Map<String, Value>, k: &str) -> Result<&'a str, PdError> {
    match body.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.as_str()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(errors::bad_request(format!("Parameter '{k}' is required")))
        }
        Some(_) => Err(errors::bad_request(format!(
            "Parameter '{k}' must be a string"
        ))),
    }
}

/// `POST /api/v1/webhooks` (JSON or form body).
pub(crate) async fn create_webhook(State(state): State<PipedriveState>, body: Bytes) -> Response {
    finish((|| -> PdResult {
        let body: Map<String, Value> = serde_json::from_slice(&body)
            .or_else(|_| {
                serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body).map(|pairs| {
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect()
                })
            })
            .map_err(|_| errors::bad_request("The request body is malformed"))?;
        let url = required(&body, "subscription_url")?;
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                errors::bad_request("Parameter 'subscription_url' must be a full, valid URL")
            })?;
        if parsed
            .host_str()
            .is_some_and(|h| h.ends_with("pipedrive.com"))
        {
            return Err(errors::bad_request(
                "Pipedrive API endpoints cannot be used as the subscription_url",
            ));
        }
        let action = required(&body, "event_action")?;
        let object = required(&body, "event_object")?;
        if !ACTIONS.contains(&action) {
            return Err(errors::bad_request(format!(
                "Parameter 'event_action' must be one of {}",
                ACTIONS.join(", ")
            )));
        }
        if !OBJECTS.contains(&object) {
            return Err(errors::bad_request(format!(
                "Parameter 'event_object' must be one of {}",
                OBJECTS.join(", ")
            )));
        }
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        let version = text("version").unwrap_or_else(|| "2.0".into());
        if version != "1.0" && version != "2.0" {
            return Err(errors::bad_request(
                "Parameter 'version' must be one of 1.0, 2.0",
            ));
        }
        let mut hooks = state
            .inner
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if hooks.len() >= MAX_WEBHOOKS {
            return Err(errors::bad_request(format!(
                "The maximum limit of {MAX_WEBHOOKS} webhooks per user is reached"
            )));
        }
        // Ids are never reused, also after a delete.
        let delivered = state
            .webhooks_sent()
            .iter()
            .map(|s| s.webhook_id)
            .max()
            .unwrap_or(0);
        let id = hooks.iter().map(|w| w.id).max().unwrap_or(0).max(delivered) + 1;
        let w = PipedriveWebhook {
            id,
            subscription_url: url.to_string(),
            event_action: action.to_string(),
            event_object: object.to_string(),
            http_auth_user: text("http_auth_user"),
            http_auth_password: text("http_auth_password"),
            version,
            add_time: Utc::now(),
        };
        let config = &state.inner.config;
        let out = webhook_json(&w, config.company_id, config.user.id);
        hooks.push(w);
        // The v1 webhooks answer adds `status` to the envelope.
        Ok((
            StatusCode::CREATED,
            Json(json!({"success": true, "status": "ok", "data": out})),
        )
            .into_response())
    })())
}

/// `GET /api/v1/webhooks`
pub(crate) async fn list_webhooks(State(state): State<PipedriveState>) -> Response {
    let config = &state.inner.config;
    let data: Vec<Value> = state
        .webhooks()
        .iter()
        .map(|w| webhook_json(w, config.company_id, config.user.id))
        .collect();
    errors::ok(StatusCode::OK, Value::Array(data))
}

/// `DELETE /api/v1/webhooks/{id}`
pub(crate) async fn delete_webhook(
    State(state): State<PipedriveState>,
    Path(id): Path<String>,
) -> Response {
    finish((|| -> PdResult {
        let id: u64 = id
            .parse()
            .map_err(|_| errors::bad_request("The webhook id must be a number"))?;
        let mut hooks = state
            .inner
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let before = hooks.len();
        hooks.retain(|w| w.id != id);
        if hooks.len() == before {
            return Err(errors::not_found("Webhook"));
        }
        Ok(errors::ok(StatusCode::OK, json!({ "id": id })))
    })())
}
