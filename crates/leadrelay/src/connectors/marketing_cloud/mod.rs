//! `marketing_cloud`: Salesforce Marketing Cloud — a lead enters a Journey
//! Builder journey (an API entry event) and/or is upserted as a data
//! extension row.
//!
//! Settings:
//! - `auth_base_url` (required): the tenant's auth subdomain,
//!   `https://SUBDOMAIN.auth.marketingcloudapis.com`. Tokens come from
//!   `POST /v2/token` (OAuth 2.0 client credentials, `client_id_env` /
//!   `client_secret_env`, default `MC_CLIENT_ID` / `MC_CLIENT_SECRET`),
//!   with `account_id` (the business unit's MID) when set. A token is kept
//!   and reused until a minute before `expires_in`; REST calls go to the
//!   `rest_instance_url` the token names. A 401 refreshes once.
//! - `event_definition_key`: fire this entry event
//!   (`POST /interaction/v1/events`, `ContactKey`, `EventDefinitionKey`,
//!   `Data` from `[mapping.event]`).
//! - `data_extension_key`: upsert a row into the data extension with this
//!   external key (`POST /hub/v1/dataevents/key:{key}/rowset`, the primary
//!   key column `primary_key`, default `ContactKey`, holding the contact
//!   key; the other columns from `[mapping.row]`). A batch (`batch_size`,
//!   up to 50 rows as Marketing Cloud advises) is one call; a refused
//!   batch is sent again row by row so only the bad row dead-letters.
//! - `contact_key`: `"email"` (default) or `"contact_id"` (the golden
//!   record's id) — the Marketing Cloud contact key.
//!
//! At least one of `event_definition_key` and `data_extension_key`.
//! Classification: 2xx delivered; 400 permanent with Marketing Cloud's
//! `message` and `additionalErrors`; 401 after a refresh: credentials
//! rejected; 429, 5xx: retried (the shared HTTP classification).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use super::crm;
use super::http::{self as shared, HttpResponse};
use super::{
    AttemptReport, BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob,
    ErrorClass, JobResult, Outcome,
};
use crate::config::{Problem, Rate, parse_settings};
use crate::mapping::{self, Mapping};

pub const DEFAULT_MAPPING: &str = include_str!("defaults.toml");
const OBJECTS: [&str; 2] = ["row", "event"];
/// Rows per rowset call, as Marketing Cloud advises.
pub const MAX_ROWS: usize = 50;

fn default_id_env() -> String {
    "MC_CLIENT_ID".into()
}
fn default_secret_env() -> String {
    "MC_CLIENT_SECRET".into()
}
fn default_primary_key() -> String {
    "ContactKey".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ContactKey {
    Email,
    ContactId,
}

fn default_contact_key() -> ContactKey {
    ContactKey::Email
}

#[derive(Debug, Deserialize)]
struct Settings {
    auth_base_url: String,
    #[serde(default = "default_id_env")]
    client_id_env: String,
    #[serde(default = "default_secret_env")]
    client_secret_env: String,
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    event_definition_key: Option<String>,
    #[serde(default)]
    data_extension_key: Option<String>,
    #[serde(default = "default_primary_key")]
    primary_key: String,
    #[serde(default = "default_contact_key")]
    contact_key: ContactKey,
    #[serde(default)]
    mapping: toml::Table,
    #[serde(default)]
    allow_private_networks: bool,
}

pub fn kind() -> ConnectorKind {
    ConnectorKind {
        name: "marketing_cloud",
        summary: "Salesforce Marketing Cloud: journey entry events and data extension rows",
        defaults: Defaults {
            // Marketing Cloud asks for moderation rather than publishing
            // one number; 20 calls a second per destination is a safe default.
            rate_limit: Some(Rate {
                count: 20,
                period: Duration::from_secs(1),
            }),
            concurrency: 4,
            batch_size: 1,
            max_batch_size: MAX_ROWS,
        },
        personal_data: true,
        build,
    }
}

/// A cached access token and the REST base it belongs to.
struct Token {
    access: String,
    rest_base: String,
    refresh_at: Instant,
}

struct MarketingCloud {
    client: reqwest::Client,
    auth_base: String,
    client_id: String,
    client_secret: String,
    account_id: Option<String>,
    event_key: Option<String>,
    de_key: Option<String>,
    primary_key: String,
    contact_key: ContactKey,
    mapping: Mapping,
    allow_private: bool,
    token: Mutex<Option<Token>>,
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let s: Settings = parse_settings(ctx.settings)?;
    let mut problems = Vec::new();
    let client_id = ctx
        .secret("client_id_env", &s.client_id_env)
        .map_err(|p| problems.push(p))
        .ok();
    let client_secret = ctx
        .secret("client_secret_env", &s.client_secret_env)
        .map_err(|p| problems.push(p))
        .ok();
    let auth_base = crm::base_url(Some(&s.auth_base_url), "")
        .map_err(|mut p| {
            p.path = "auth_base_url".into();
            problems.push(p)
        })
        .ok();
    let blank = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let event_key = blank(&s.event_definition_key);
    let de_key = blank(&s.data_extension_key);
    if event_key.is_none() && de_key.is_none() {
        problems.push(Problem::error(
            "",
            "set event_definition_key (a journey entry event), data_extension_key (a data extension's external key), or both",
        ));
    }
    if event_key.as_deref().is_some_and(|k| k.contains('.')) {
        problems.push(Problem::error(
            "event_definition_key",
            "Marketing Cloud event definition keys contain no period",
        ));
    }
    if let Some(a) = &s.account_id
        && !a.trim().chars().all(|c| c.is_ascii_digit())
    {
        problems.push(Problem::error(
            "account_id",
            "the business unit's MID: digits only, e.g. \"514000123\"",
        ));
    }
    let mapping = Mapping::compile(DEFAULT_MAPPING, Some(&s.mapping), &OBJECTS)
        .map_err(|ps| problems.extend(ps))
        .ok();
    let client = shared::client(ctx.timeout, s.allow_private_networks)
        .map_err(|m| problems.push(Problem::error("", m)))
        .ok();
    let (Some(client_id), Some(client_secret), Some(auth_base), Some(mapping), Some(client), true) = (
        client_id,
        client_secret,
        auth_base,
        mapping,
        client,
        problems.is_empty(),
    ) else {
        return Err(problems);
    };
    Ok(Arc::new(MarketingCloud {
        client,
        auth_base,
        client_id,
        client_secret,
        account_id: blank(&s.account_id),
        event_key,
        de_key,
        primary_key: s.primary_key.trim().to_string(),
        contact_key: s.contact_key,
        mapping,
        allow_private: s.allow_private_networks,
        token: Mutex::new(None),
    }))
}

/// Marketing Cloud's error text: `message` and every `additionalErrors` message.
fn error_text(resp: &HttpResponse) -> String {
    let body: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = body["message"]
        .as_str()
        .or(body["error_description"].as_str())
    {
        parts.push(m.to_string());
    }
    for e in body["additionalErrors"].as_array().into_iter().flatten() {
        if let Some(m) = e["message"].as_str() {
            parts.push(m.to_string());
        }
    }
    let text = if parts.is_empty() {
        crate::redact::excerpt(&resp.body, 300)
    } else {
        parts.join("; ")
    };
    format!(
        "Marketing Cloud HTTP {}: {}",
        resp.status,
        crate::redact::redact_text(&text)
    )
}

fn classify(resp: &HttpResponse) -> Outcome {
    match resp.status {
        200..=299 => Outcome::delivered(),
        400 | 404 | 413 | 422 => Outcome::permanent(ErrorClass::Http4xx, error_text(resp)),
        401 => Outcome::CredentialsRejected {
            message: error_text(resp),
        },
        _ => match shared::classify(resp) {
            Outcome::Retry {
                class, retry_after, ..
            } => Outcome::Retry {
                class,
                message: error_text(resp),
                retry_after,
            },
            Outcome::Throttled { retry_after, .. } => Outcome::Throttled {
                message: error_text(resp),
                retry_after,
            },
            other => other,
        },
    }
}

impl MarketingCloud {
    /// A live token (cached, refreshed a minute before it expires).
    async fn token(&self, force: bool) -> Result<(String, String), (Outcome, AttemptReport)> {
        let mut guard = self.token.lock().await;
        if !force
            && let Some(t) = guard.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok((t.access.clone(), t.rest_base.clone()));
        }
        let mut body = json!({
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        });
        if let Some(a) = &self.account_id {
            body["account_id"] = json!(a);
        }
        let url = format!("{}/v2/token", self.auth_base);
        let req = self.client.post(&url).json(&body).build().map_err(|e| {
            (
                Outcome::permanent(ErrorClass::Mapping, e.to_string()),
                AttemptReport::default(),
            )
        })?;
        let (result, report) = shared::send(&self.client, req, &url, self.allow_private).await;
        let resp = result.map_err(|e| (e.outcome(), report.clone()))?;
        if resp.status == 400 || resp.status == 401 {
            return Err((
                Outcome::CredentialsRejected {
                    message: format!(
                        "Marketing Cloud refused the token request: {}",
                        error_text(&resp)
                    ),
                },
                report,
            ));
        }
        if !(200..300).contains(&resp.status) {
            return Err((classify(&resp), report));
        }
        let v: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
        let (Some(access), Some(rest)) =
            (v["access_token"].as_str(), v["rest_instance_url"].as_str())
        else {
            return Err((
                Outcome::retry(
                    ErrorClass::Vendor,
                    "Marketing Cloud's token answer has no access_token or rest_instance_url",
                ),
                report,
            ));
        };
        let lifetime = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(1080));
        let t = Token {
            access: access.to_string(),
            rest_base: rest.trim_end_matches('/').to_string(),
            refresh_at: Instant::now() + lifetime.saturating_sub(Duration::from_secs(60)),
        };
        let out = (t.access.clone(), t.rest_base.clone());
        *guard = Some(t);
        Ok(out)
    }

    /// One authenticated JSON call; a 401 refreshes the token once.
    async fn call(
        &self,
        path: &str,
        body: &Value,
    ) -> (Result<HttpResponse, Outcome>, AttemptReport) {
        let mut force = false;
        loop {
            let (access, rest) = match self.token(force).await {
                Ok(t) => t,
                Err((o, r)) => return (Err(o), r),
            };
            let url = format!("{rest}{path}");
            let mut auth = match reqwest::header::HeaderValue::from_str(&format!("Bearer {access}"))
            {
                Ok(h) => h,
                Err(_) => {
                    return (
                        Err(Outcome::retry(
                            ErrorClass::Auth,
                            "the access token is not a header value",
                        )),
                        AttemptReport::default(),
                    );
                }
            };
            auth.set_sensitive(true);
            let req = match self
                .client
                .request(Method::POST, &url)
                .header(reqwest::header::AUTHORIZATION, auth)
                .json(body)
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    return (
                        Err(Outcome::permanent(ErrorClass::Mapping, e.to_string())),
                        AttemptReport::default(),
                    );
                }
            };
            let (result, report) = shared::send(&self.client, req, &url, self.allow_private).await;
            match result {
                Ok(r) if r.status == 401 && !force => {
                    force = true;
                    continue;
                }
                Ok(r) => return (Ok(r), report),
                Err(e) => return (Err(e.outcome()), report),
            }
        }
    }

    fn contact_key_of(&self, job: &DeliveryJob) -> Result<String, String> {
        match self.contact_key {
            ContactKey::Email => job
                .contact
                .as_ref()
                .and_then(|c| c.data.email.as_ref())
                .or(job.event.contact.email.as_ref())
                .map(|e| e.as_str().to_string())
                .ok_or_else(|| "contact_key = \"email\" but the lead has no email".to_string()),
            ContactKey::ContactId => {
                job.contact
                    .as_ref()
                    .map(|c| c.id.to_string())
                    .ok_or_else(|| {
                        "contact_key = \"contact_id\" but the lead has no golden record".to_string()
                    })
            }
        }
    }

    fn row(&self, job: &DeliveryJob, key: &str) -> Result<Value, String> {
        let values = self
            .mapping
            .apply("row", &mapping::context(job))
            .map_err(|e| e.to_string())?;
        Ok(json!({"keys": {self.primary_key.as_str(): key}, "values": values}))
    }

    async fn upsert(&self, de: &str, rows: &[Value]) -> (Outcome, AttemptReport) {
        let path = format!("/hub/v1/dataevents/key:{}/rowset", crm::path_segment(de));
        let (r, report) = self.call(&path, &Value::Array(rows.to_vec())).await;
        (r.map(|r| classify(&r)).unwrap_or_else(|o| o), report)
    }

    async fn enter_journey(
        &self,
        job: &DeliveryJob,
        key: &str,
        event: &str,
    ) -> (Outcome, AttemptReport) {
        let data: Map<String, Value> = match self.mapping.apply("event", &mapping::context(job)) {
            Ok(d) => d,
            Err(e) => {
                return (
                    Outcome::permanent(ErrorClass::Mapping, e.to_string()),
                    AttemptReport::default(),
                );
            }
        };
        let body = json!({"ContactKey": key, "EventDefinitionKey": event, "Data": data});
        let (r, report) = self.call("/interaction/v1/events", &body).await;
        (r.map(|r| classify(&r)).unwrap_or_else(|o| o), report)
    }
}

#[async_trait]
impl Connector for MarketingCloud {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        let mut results: Vec<Option<JobResult>> = vec![None; jobs.len()];
        let mut keys: Vec<Option<String>> = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            match self.contact_key_of(job) {
                Ok(k) => keys.push(Some(k)),
                Err(m) => {
                    results[i] = Some(JobResult {
                        outcome: Outcome::permanent(ErrorClass::Mapping, m),
                        report: AttemptReport::default(),
                    });
                    keys.push(None);
                }
            }
        }
        // The data extension row first: a journey's entry often reads it.
        if let Some(de) = &self.de_key {
            let mut batch: Vec<(usize, Value)> = Vec::new();
            for (i, job) in jobs.iter().enumerate() {
                let Some(k) = &keys[i] else { continue };
                match self.row(job, k) {
                    Ok(r) => batch.push((i, r)),
                    Err(m) => {
                        results[i] = Some(JobResult {
                            outcome: Outcome::permanent(ErrorClass::Mapping, m),
                            report: AttemptReport::default(),
                        })
                    }
                }
            }
            if !batch.is_empty() {
                let rows: Vec<Value> = batch.iter().map(|(_, r)| r.clone()).collect();
                let (outcome, report) = self.upsert(de, &rows).await;
                let refused = matches!(outcome, Outcome::Permanent { .. });
                if refused && batch.len() > 1 {
                    // Row by row: only the rows Marketing Cloud refuses fail.
                    for (i, row) in &batch {
                        let (o, r) = self.upsert(de, std::slice::from_ref(row)).await;
                        if !matches!(o, Outcome::Delivered { .. }) {
                            results[*i] = Some(JobResult {
                                outcome: o,
                                report: r,
                            });
                        }
                    }
                } else if !matches!(outcome, Outcome::Delivered { .. }) {
                    for (i, _) in &batch {
                        results[*i] = Some(JobResult {
                            outcome: outcome.clone(),
                            report: report.clone(),
                        });
                    }
                } else {
                    for (i, _) in &batch {
                        results[*i] = Some(JobResult {
                            outcome: Outcome::delivered(),
                            report: report.clone(),
                        });
                    }
                }
            }
        }
        if let Some(event) = &self.event_key {
            for (i, job) in jobs.iter().enumerate() {
                let Some(k) = &keys[i] else { continue };
                if results[i]
                    .as_ref()
                    .is_some_and(|r| !matches!(r.outcome, Outcome::Delivered { .. }))
                {
                    continue;
                }
                let (outcome, report) = self.enter_journey(job, k, event).await;
                results[i] = Some(JobResult { outcome, report });
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| JobResult {
                    outcome: Outcome::retry(ErrorClass::Internal, "no result for this delivery"),
                    report: AttemptReport::default(),
                })
            })
            .collect()
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<Value, String>> {
        let ctx = mapping::context(job);
        let row = self.mapping.apply("row", &ctx).map_err(|e| e.to_string());
        let event = self.mapping.apply("event", &ctx).map_err(|e| e.to_string());
        Some(match (row, event, self.contact_key_of(job)) {
            (Ok(r), Ok(e), Ok(k)) => Ok(json!({"contact_key": k, "row": r, "event": e})),
            (Err(m), _, _) | (_, Err(m), _) | (_, _, Err(m)) => Err(m),
        })
    }

    async fn check(&self) -> CheckReport {
        match self.token(true).await {
            Ok((_, rest)) => CheckReport::ok(format!(
                "token issued{}; REST at {rest}; {}",
                self.account_id
                    .as_deref()
                    .map(|a| format!(" for business unit {a}"))
                    .unwrap_or_default(),
                [
                    self.event_key
                        .as_deref()
                        .map(|k| format!("journey entry event {k}")),
                    self.de_key
                        .as_deref()
                        .map(|k| format!("data extension {k}")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" and ")
            )),
            Err((o, _)) => CheckReport::failed(crm::outcome_text(&o)),
        }
    }
}
