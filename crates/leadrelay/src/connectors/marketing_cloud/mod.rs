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
//!   key; the other columns from `[mapping.row]`). A batch (`batch_size`)
//!   of up to `async_above` rows (default 20, at most 50 as Marketing Cloud
//!   advises for rowsets) is one synchronous rowset call; a refused batch is
//!   sent again row by row so only the bad row dead-letters. A larger batch
//!   (up to 1,000) goes through the asynchronous rows API
//!   (`PUT /data/v1/async/dataextensions/key:{key}/rows`, an upsert), whose
//!   `requestId` is polled every `async_poll` (`/data/v1/async/{id}/status`)
//!   for at most `async_timeout`; the per-row errors of its `/results` dead-
//!   letter only their rows (see [`rows`]).
//! - `contact_key`: `"email"` (default) or `"contact_id"` (the golden
//!   record's id) — the Marketing Cloud contact key.
//!
//! At least one of `event_definition_key` and `data_extension_key`.
//! `leadrelay check` gets a token, reads the event definition
//! (`GET /interaction/v1/eventDefinitions/key:{key}`) and the data
//! extension's columns (SOAP `Retrieve` of `DataExtensionField`, see
//! [`fields`]), and fails naming every mapped column that is missing or
//! whose type the mapping's values cannot fit.
//! Classification: 2xx delivered; 400 permanent with Marketing Cloud's
//! `message` and `additionalErrors`; 401 after a refresh: credentials
//! rejected; 429, 5xx: retried (the shared HTTP classification).

mod fields;
mod rows;

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
use crate::config::{HumanDuration, Problem, Rate, parse_settings};
use crate::mapping::{self, Mapping};

pub const DEFAULT_MAPPING: &str = include_str!("defaults.toml");
const OBJECTS: [&str; 2] = ["row", "event"];
/// Rows per rowset call, as Marketing Cloud advises.
pub const MAX_ROWS: usize = 50;
/// Rows per asynchronous request (leadrelay's bound: a batch's deliveries
/// wait for its outcome together).
pub const MAX_ASYNC_ROWS: usize = 1000;

fn default_async_above() -> usize {
    20
}
fn default_async_poll() -> HumanDuration {
    HumanDuration::secs(2)
}
fn default_async_timeout() -> HumanDuration {
    HumanDuration::secs(120)
}

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
    /// Batches of more rows than this go through the asynchronous rows API.
    #[serde(default = "default_async_above")]
    async_above: usize,
    /// How often an asynchronous request's status is read.
    #[serde(default = "default_async_poll")]
    async_poll: HumanDuration,
    /// How long an asynchronous request may stay pending before its rows
    /// are retried (an upsert: sending them again is safe).
    #[serde(default = "default_async_timeout")]
    async_timeout: HumanDuration,
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
            max_batch_size: MAX_ASYNC_ROWS,
        },
        personal_data: true,
        build,
    }
}

/// A cached access token and the REST base it belongs to.
struct Token {
    access: String,
    rest_base: String,
    soap_base: String,
    refresh_at: Instant,
}

/// What one authenticated call sends.
enum Body<'a> {
    None,
    Json(&'a Value),
    /// A SOAP envelope, built around the access token.
    Soap(&'a (dyn Fn(&str) -> String + Sync)),
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
    async_above: usize,
    async_poll: Duration,
    async_timeout: Duration,
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
    if !(1..=MAX_ROWS).contains(&s.async_above) {
        problems.push(Problem::error(
            "async_above",
            format!("between 1 and {MAX_ROWS} (larger batches go through the asynchronous API)"),
        ));
    }
    if s.async_poll.get() < Duration::from_millis(10) || s.async_timeout.get() < s.async_poll.get()
    {
        problems.push(Problem::error(
            "async_timeout",
            "async_poll must be at least 10ms and async_timeout at least async_poll",
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
        async_above: s.async_above,
        async_poll: s.async_poll.get(),
        async_timeout: s.async_timeout.get(),
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
    // `additionalErrors` (REST), `resultMessages` (the asynchronous API).
    for e in body["additionalErrors"]
        .as_array()
        .into_iter()
        .chain(body["resultMessages"].as_array())
        .flatten()
    {
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
    async fn token(
        &self,
        force: bool,
    ) -> Result<(String, String, String), (Outcome, AttemptReport)> {
        let mut guard = self.token.lock().await;
        if !force
            && let Some(t) = guard.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok((t.access.clone(), t.rest_base.clone(), t.soap_base.clone()));
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
            soap_base: v["soap_instance_url"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string(),
            refresh_at: Instant::now() + lifetime.saturating_sub(Duration::from_secs(60)),
        };
        let out = (t.access.clone(), t.rest_base.clone(), t.soap_base.clone());
        *guard = Some(t);
        Ok(out)
    }

    /// One authenticated call (REST `path` with a bearer token, or a SOAP
    /// envelope to `Service.asmx`); a 401 refreshes the token once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> (Result<HttpResponse, Outcome>, AttemptReport) {
        let mut force = false;
        loop {
            let (access, rest, soap) = match self.token(force).await {
                Ok(t) => t,
                Err((o, r)) => return (Err(o), r),
            };
            let req = match &body {
                Body::Soap(envelope) => {
                    if soap.is_empty() {
                        return (
                            Err(Outcome::retry(
                                ErrorClass::Vendor,
                                "Marketing Cloud's token answer has no soap_instance_url",
                            )),
                            AttemptReport::default(),
                        );
                    }
                    self.client
                        .post(format!("{soap}/Service.asmx"))
                        .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
                        .header("SOAPAction", path)
                        .body(envelope(&access))
                }
                _ => {
                    let mut auth =
                        match reqwest::header::HeaderValue::from_str(&format!("Bearer {access}")) {
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
                    let r = self
                        .client
                        .request(method.clone(), format!("{rest}{path}"))
                        .header(reqwest::header::AUTHORIZATION, auth);
                    match &body {
                        Body::Json(b) => r.json(b),
                        _ => r,
                    }
                }
            };
            let req = match req.build() {
                Ok(r) => r,
                Err(e) => {
                    return (
                        Err(Outcome::permanent(ErrorClass::Mapping, e.to_string())),
                        AttemptReport::default(),
                    );
                }
            };
            let display = req
                .url()
                .as_str()
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string();
            let (result, report) =
                shared::send(&self.client, req, &display, self.allow_private).await;
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

    /// A JSON POST, classified.
    async fn post(&self, path: &str, body: &Value) -> (Outcome, AttemptReport) {
        let (r, report) = self.call(Method::POST, path, Body::Json(body)).await;
        (r.map(|r| classify(&r)).unwrap_or_else(|o| o), report)
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

    /// A row's mapped values (without the contact key column).
    fn row_values(&self, job: &DeliveryJob) -> Result<Map<String, Value>, String> {
        self.mapping
            .apply("row", &mapping::context(job))
            .map_err(|e| e.to_string())
    }

    async fn upsert(&self, de: &str, rows: &[Value]) -> (Outcome, AttemptReport) {
        let path = format!("/hub/v1/dataevents/key:{}/rowset", crm::path_segment(de));
        self.post(&path, &Value::Array(rows.to_vec())).await
    }

    /// Upserts `batch` (`(index, contact key, values)`) synchronously: one
    /// rowset call, then row by row when Marketing Cloud refuses it.
    async fn upsert_rowset(
        &self,
        de: &str,
        batch: &[(usize, String, Map<String, Value>)],
        results: &mut [Option<JobResult>],
    ) {
        let rows: Vec<Value> = batch
            .iter()
            .map(|(_, k, v)| json!({"keys": {self.primary_key.as_str(): k}, "values": v}))
            .collect();
        let (outcome, report) = self.upsert(de, &rows).await;
        let refused = matches!(outcome, Outcome::Permanent { .. });
        if refused && batch.len() > 1 {
            // Row by row: only the rows Marketing Cloud refuses fail.
            for ((i, _, _), row) in batch.iter().zip(&rows) {
                let (o, r) = self.upsert(de, std::slice::from_ref(row)).await;
                results[*i] = Some(JobResult {
                    outcome: o,
                    report: r,
                });
            }
        } else {
            for (i, _, _) in batch {
                results[*i] = Some(JobResult {
                    outcome: outcome.clone(),
                    report: report.clone(),
                });
            }
        }
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
        self.post("/interaction/v1/events", &body).await
    }

    /// The data extension's columns (SOAP `Retrieve`).
    async fn columns(&self, de: &str) -> Result<Vec<fields::Column>, String> {
        let key = de.to_string();
        let envelope = move |token: &str| fields::retrieve_envelope(token, &key);
        let (r, _) = self
            .call(Method::POST, "Retrieve", Body::Soap(&envelope))
            .await;
        match r {
            Ok(resp) if (200..300).contains(&resp.status) || resp.status == 500 => {
                fields::parse_retrieve(&resp.body)
            }
            Ok(resp) => Err(error_text(&resp)),
            Err(o) => Err(crm::outcome_text(&o)),
        }
    }

    /// `leadrelay check`'s part after the token: the event definition and
    /// the data extension's columns against the row mapping.
    async fn check_targets(&self) -> Result<Vec<String>, Vec<String>> {
        let mut notes = Vec::new();
        let mut problems = Vec::new();
        if let Some(event) = &self.event_key {
            let path = format!(
                "/interaction/v1/eventDefinitions/key:{}",
                crm::path_segment(event)
            );
            match self.call(Method::GET, &path, Body::None).await.0 {
                Ok(r) if (200..300).contains(&r.status) => {
                    notes.push(format!("journey entry event {event} found"))
                }
                Ok(r) if r.status == 404 => problems.push(format!(
                    "event_definition_key: no event definition {event} in this business unit"
                )),
                Ok(r) => problems.push(format!("event_definition_key: {}", error_text(&r))),
                Err(o) => problems.push(format!("event_definition_key: {}", crm::outcome_text(&o))),
            }
        }
        if let Some(de) = &self.de_key {
            match self.columns(de).await {
                Ok(cols) if cols.is_empty() => problems.push(format!(
                    "data_extension_key: no data extension {de} (or it has no columns)"
                )),
                Ok(cols) => {
                    let found =
                        fields::validate(self.mapping.object("row"), &cols, &self.primary_key, de);
                    if found.is_empty() {
                        notes.push(format!(
                            "data extension {de}: {} columns, the mapped ones exist and their types fit",
                            cols.len()
                        ));
                    }
                    problems.extend(found.into_iter().map(|(f, why)| format!("{f}: {why}")));
                }
                Err(m) => problems.push(format!(
                    "data_extension_key: reading the columns of {de} failed: {m}"
                )),
            }
        }
        if problems.is_empty() {
            Ok(notes)
        } else {
            Err(problems)
        }
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
            let mut batch: Vec<(usize, String, Map<String, Value>)> = Vec::new();
            for (i, job) in jobs.iter().enumerate() {
                let Some(k) = &keys[i] else { continue };
                match self.row_values(job) {
                    Ok(v) => batch.push((i, k.clone(), v)),
                    Err(m) => {
                        results[i] = Some(JobResult {
                            outcome: Outcome::permanent(ErrorClass::Mapping, m),
                            report: AttemptReport::default(),
                        })
                    }
                }
            }
            if batch.len() > self.async_above {
                self.upsert_async(de, &batch, &mut results).await;
            } else if !batch.is_empty() {
                self.upsert_rowset(de, &batch, &mut results).await;
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
        let rest = match self.token(true).await {
            Ok((_, rest, _)) => rest,
            Err((o, _)) => return CheckReport::failed(crm::outcome_text(&o)),
        };
        let head = format!(
            "token issued{}; REST at {rest}",
            self.account_id
                .as_deref()
                .map(|a| format!(" for business unit {a}"))
                .unwrap_or_default(),
        );
        match self.check_targets().await {
            Ok(notes) => CheckReport::ok(format!("{head}; {}", notes.join("; "))),
            Err(problems) => CheckReport::failed(format!("{head}; {}", problems.join("; "))),
        }
    }

    async fn cause_fixed(&self, cause: &crate::store::FixableCause) -> Option<bool> {
        if cause.kind != "missing_property" && cause.kind != "required_field" {
            return None;
        }
        match cause.object.as_deref() {
            // The event definition exists now?
            Some("event_definition") => {
                let path = format!(
                    "/interaction/v1/eventDefinitions/key:{}",
                    crm::path_segment(&cause.field)
                );
                let r = self.call(Method::GET, &path, Body::None).await.0.ok()?;
                match r.status {
                    200..=299 => Some(true),
                    404 => Some(false),
                    _ => None,
                }
            }
            // The data extension exists now?
            Some("data_extension") => Some(!self.columns(&cause.field).await.ok()?.is_empty()),
            // A column the data extension lacked exists now (a required
            // column: only a change in the mapping fixes that).
            _ if cause.kind == "missing_property" => {
                let cols = self.columns(self.de_key.as_deref()?).await.ok()?;
                Some(
                    cols.iter()
                        .any(|c| c.name.eq_ignore_ascii_case(&cause.field)),
                )
            }
            _ => None,
        }
    }
}
