//! Fake Salesforce Marketing Cloud: the parts a journey entry and a data
//! extension upsert use.
//!
//! # Followed references
//! - "Access Token for Server-to-Server Integrations": `POST /v2/token` on
//!   the tenant's auth subdomain with `grant_type=client_credentials`,
//!   `client_id`, `client_secret` and optionally `account_id` (the MID of
//!   the business unit); the answer carries `access_token`, `token_type`
//!   `Bearer`, `expires_in` (seconds), `scope`, `rest_instance_url` and
//!   `soap_instance_url`. A REST call with a missing or expired token gets
//!   401.
//! - `POST /interaction/v1/events` (fire a journey entry event):
//!   `ContactKey` and `EventDefinitionKey` required, `Data` as the event
//!   defines it; 201 with `eventInstanceId`; 400 when the event definition
//!   key is not found.
//! - `POST /hub/v1/dataevents/key:{key}/rowset`: synchronous upsert of rows
//!   `[{"keys": {...}, "values": {...}}]` into the data extension with that
//!   external key; every primary-key column in `keys`; 400 with details on
//!   an invalid request. Best practice 50 rows a call; 5 MB at most.
//!
//! Errors have REST's shape `{"message", "errorcode", "documentation"}`.
//! Values are checked against the column types (Text with a length, Number,
//! Decimal, Date, Boolean, EmailAddress, Phone); an unknown column is refused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::{FakeServer, RequestLog};

/// A data extension column type.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    Text(usize),
    Number,
    Decimal,
    Date,
    Boolean,
    EmailAddress,
    Phone,
}

/// One column of a data extension.
#[derive(Debug, Clone)]
pub struct DeField {
    pub name: String,
    pub kind: FieldType,
    pub primary_key: bool,
    pub required: bool,
}

impl DeField {
    pub fn new(name: &str, kind: FieldType) -> Self {
        Self {
            name: name.into(),
            kind,
            primary_key: false,
            required: false,
        }
    }
    pub fn primary(mut self) -> Self {
        self.primary_key = true;
        self.required = true;
        self
    }
}

/// The fake tenant.
#[derive(Debug, Clone)]
pub struct MarketingCloudConfig {
    pub client_id: String,
    pub client_secret: String,
    /// The business unit's MID; a token request naming another is refused.
    pub account_id: String,
    /// Lifetime of an access token.
    pub token_lifetime: Duration,
    /// Journey entry event definition keys.
    pub event_definitions: Vec<String>,
    /// Data extensions by external key.
    pub data_extensions: BTreeMap<String, Vec<DeField>>,
}

impl MarketingCloudConfig {
    pub const CLIENT_ID: &'static str = "fake-mc-client-id";
    pub const CLIENT_SECRET: &'static str = "fake-mc-client-secret";
}

impl Default for MarketingCloudConfig {
    fn default() -> Self {
        Self {
            client_id: Self::CLIENT_ID.into(),
            client_secret: Self::CLIENT_SECRET.into(),
            account_id: "514000123".into(),
            token_lifetime: Duration::from_secs(1080),
            event_definitions: vec!["APIEvent-leadrelay-welcome".into()],
            data_extensions: BTreeMap::from([(
                "Leads".to_string(),
                vec![
                    DeField::new("ContactKey", FieldType::Text(254)).primary(),
                    DeField::new("Email", FieldType::EmailAddress),
                    DeField::new("FirstName", FieldType::Text(100)),
                    DeField::new("LastName", FieldType::Text(100)),
                    DeField::new("Company", FieldType::Text(200)),
                    DeField::new("Score", FieldType::Number),
                    DeField::new("SignedUpAt", FieldType::Date),
                ],
            )]),
        }
    }
}

/// A journey entry the fake accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyEntry {
    pub event_definition_key: String,
    pub contact_key: String,
    pub data: Value,
    pub event_instance_id: String,
}

#[derive(Debug, Default)]
struct Store {
    tokens: BTreeMap<String, DateTime<Utc>>,
    issued: u64,
    entries: Vec<JourneyEntry>,
    /// Rows per data extension: primary key values → all values.
    rows: BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>>,
}

#[derive(Clone)]
pub struct MarketingCloudState {
    config: Arc<MarketingCloudConfig>,
    store: Arc<Mutex<Store>>,
    requests: RequestLog,
    base: Arc<Mutex<String>>,
}

impl MarketingCloudState {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Every journey entry accepted, in order.
    pub fn journey_entries(&self) -> Vec<JourneyEntry> {
        self.store().entries.clone()
    }
    /// The rows of a data extension, by their primary key values.
    pub fn rows(&self, key: &str) -> Vec<BTreeMap<String, Value>> {
        self.store()
            .rows
            .get(key)
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }
    /// How many access tokens were issued.
    pub fn tokens_issued(&self) -> u64 {
        self.store().issued
    }
    /// Expires every token now (the next call gets 401).
    pub fn expire_tokens(&self) {
        let past = Utc::now() - chrono::Duration::seconds(1);
        for t in self.store().tokens.values_mut() {
            *t = past;
        }
    }
    pub fn requests(&self) -> &RequestLog {
        &self.requests
    }
}

fn error(status: StatusCode, errorcode: u32, message: &str) -> Response {
    (
        status,
        Json(json!({"message": message, "errorcode": errorcode, "documentation": ""})),
    )
        .into_response()
}

async fn token(State(s): State<MarketingCloudState>, body: String) -> Response {
    let r = token_inner(&s, &body);
    s.requests.record("POST", "/v2/token", r.status().as_u16());
    r
}

fn token_inner(s: &MarketingCloudState, body: &str) -> Response {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request", "error_description": "The request body is not JSON."})),
        )
            .into_response();
    };
    if v["grant_type"] != "client_credentials" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type", "error_description": "Use client_credentials."})),
        )
            .into_response();
    }
    if v["client_id"] != s.config.client_id.as_str()
        || v["client_secret"] != s.config.client_secret.as_str()
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "Invalid client ID or secret."})),
        )
            .into_response();
    }
    if let Some(a) = v.get("account_id").filter(|a| !a.is_null())
        && a.as_str()
            .map(str::to_string)
            .or_else(|| a.as_u64().map(|n| n.to_string()))
            != Some(s.config.account_id.clone())
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthorized_client", "error_description": "The client is not authorized for this account_id."})),
        )
            .into_response();
    }
    let token = format!("mc-token-{}", uuid::Uuid::now_v7().simple());
    let lifetime = s.config.token_lifetime;
    {
        let mut st = s.store();
        st.issued += 1;
        st.tokens.insert(
            token.clone(),
            Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or_default(),
        );
    }
    let base = s.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "scope": "data_extensions_read data_extensions_write journeys_execute",
        "soap_instance_url": format!("{base}/soap/"),
        "rest_instance_url": format!("{base}/"),
    }))
    .into_response()
}

fn authorized(s: &MarketingCloudState, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    s.store()
        .tokens
        .get(token)
        .is_some_and(|exp| *exp > Utc::now())
}

fn not_authorized() -> Response {
    error(StatusCode::UNAUTHORIZED, 0, "Not Authorized")
}

async fn fire_event(
    State(s): State<MarketingCloudState>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let r = fire_event_inner(&s, &headers, &body);
    s.requests
        .record("POST", "/interaction/v1/events", r.status().as_u16());
    r
}

fn fire_event_inner(s: &MarketingCloudState, headers: &HeaderMap, body: &str) -> Response {
    if !authorized(s, headers) {
        return not_authorized();
    }
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            10000,
            "Request body is not valid JSON",
        );
    };
    let Some(contact_key) = v["ContactKey"].as_str().filter(|k| !k.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, 10000, "ContactKey is required");
    };
    let Some(key) = v["EventDefinitionKey"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            10000,
            "EventDefinitionKey is required",
        );
    };
    if !s.config.event_definitions.iter().any(|k| k == key) {
        return error(
            StatusCode::BAD_REQUEST,
            30000,
            &format!("Event definition key {key} not found"),
        );
    }
    if !(v["Data"].is_object() || v["Data"].is_null()) {
        return error(StatusCode::BAD_REQUEST, 10000, "Data must be an object");
    }
    let id = uuid::Uuid::now_v7().to_string();
    s.store().entries.push(JourneyEntry {
        event_definition_key: key.to_string(),
        contact_key: contact_key.to_string(),
        data: v["Data"].clone(),
        event_instance_id: id.clone(),
    });
    (StatusCode::CREATED, Json(json!({"eventInstanceId": id}))).into_response()
}

/// Why a value does not fit a column (None: it fits).
fn type_problem(field: &DeField, v: &Value) -> Option<String> {
    if v.is_null() {
        return field
            .required
            .then(|| format!("{} is required", field.name));
    }
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => {
            return Some(format!(
                "{}: a value must be text, a number or a boolean",
                field.name
            ));
        }
    };
    let ok = match &field.kind {
        FieldType::Text(max) => text.chars().count() <= *max,
        FieldType::Number => text.trim().parse::<i64>().is_ok(),
        FieldType::Decimal => text.trim().parse::<f64>().is_ok(),
        FieldType::Date => {
            DateTime::parse_from_rfc3339(&text).is_ok()
                || chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").is_ok()
                || chrono::NaiveDate::parse_from_str(&text, "%m/%d/%Y").is_ok()
        }
        FieldType::Boolean => matches!(text.to_lowercase().as_str(), "true" | "false" | "1" | "0"),
        FieldType::EmailAddress => {
            let mut parts = text.split('@');
            matches!((parts.next(), parts.next(), parts.next()), (Some(l), Some(d), None) if !l.is_empty() && d.contains('.'))
        }
        FieldType::Phone => text.chars().filter(char::is_ascii_digit).count() >= 7,
    };
    (!ok).then(|| {
        format!(
            "{}: the value does not fit the column type {:?}",
            field.name, field.kind
        )
    })
}

async fn upsert_rowset(
    State(s): State<MarketingCloudState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let r = upsert_inner(&s, &key, &headers, &body);
    s.requests.record(
        "POST",
        &format!("/hub/v1/dataevents/{key}/rowset"),
        r.status().as_u16(),
    );
    r
}

fn upsert_inner(s: &MarketingCloudState, key: &str, headers: &HeaderMap, body: &str) -> Response {
    if !authorized(s, headers) {
        return not_authorized();
    }
    let Some(key) = key.strip_prefix("key:") else {
        return error(
            StatusCode::NOT_FOUND,
            0,
            "Use key:{external key} in the path",
        );
    };
    let Some(fields) = s.config.data_extensions.get(key) else {
        return error(
            StatusCode::BAD_REQUEST,
            10000,
            &format!("Unable to find data extension with external key {key}"),
        );
    };
    if body.len() > 5 * 1024 * 1024 {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            10000,
            "The payload exceeds 5 MB",
        );
    }
    let Ok(Value::Array(rows)) = serde_json::from_str::<Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            10000,
            "The rowset must be a JSON array",
        );
    };
    let mut problems = Vec::new();
    let mut accepted = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let keys = row["keys"].as_object().cloned().unwrap_or_default();
        let values = row["values"].as_object().cloned().unwrap_or_default();
        let mut all: BTreeMap<String, Value> = BTreeMap::new();
        for (k, v) in keys.iter().chain(values.iter()) {
            match fields.iter().find(|f| f.name.eq_ignore_ascii_case(k)) {
                None => problems.push(format!("row {i}: the field {k} does not exist in {key}")),
                Some(f) => {
                    if let Some(p) = type_problem(f, v) {
                        problems.push(format!("row {i}: {p}"));
                    }
                    all.insert(f.name.clone(), v.clone());
                }
            }
        }
        let mut pk = Vec::new();
        for f in fields.iter().filter(|f| f.primary_key) {
            match keys.iter().find(|(k, _)| k.eq_ignore_ascii_case(&f.name)) {
                Some((_, v)) if !v.is_null() => pk.push(v.to_string()),
                _ => problems.push(format!(
                    "row {i}: primary key {} is missing from keys",
                    f.name
                )),
            }
        }
        accepted.push((pk.join("|"), all));
    }
    if !problems.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "message": "Unable to save rows for data extension ID",
                "errorcode": 10006,
                "documentation": "",
                "additionalErrors": problems.iter().map(|p| json!({"message": p, "errorcode": 10006})).collect::<Vec<_>>(),
            })),
        )
            .into_response();
    }
    let mut st = s.store();
    let table = st.rows.entry(key.to_string()).or_default();
    for (pk, values) in accepted {
        table.entry(pk).or_default().extend(values);
    }
    (StatusCode::OK, Json(Value::Array(rows))).into_response()
}

/// The fake's routes.
pub fn router(state: MarketingCloudState) -> Router {
    Router::new()
        .route("/v2/token", post(token))
        .route("/interaction/v1/events", post(fire_event))
        .route("/hub/v1/dataevents/{key}/rowset", post(upsert_rowset))
        .with_state(state)
}

/// A running fake tenant (auth and REST on one address).
pub struct FakeMarketingCloud {
    server: FakeServer,
    state: MarketingCloudState,
}

impl FakeMarketingCloud {
    pub async fn start(config: MarketingCloudConfig) -> std::io::Result<Self> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    pub async fn start_on(config: MarketingCloudConfig, listen: &str) -> std::io::Result<Self> {
        let state = MarketingCloudState {
            config: Arc::new(config),
            store: Arc::default(),
            requests: RequestLog::default(),
            base: Arc::default(),
        };
        let server = FakeServer::start(router(state.clone()), listen).await?;
        *state.base.lock().unwrap_or_else(|p| p.into_inner()) = server.base_url();
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:PORT`: the auth base URL (the real one is
    /// `https://SUBDOMAIN.auth.marketingcloudapis.com`); the token's
    /// `rest_instance_url` points here too.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }
}

impl std::ops::Deref for FakeMarketingCloud {
    type Target = MarketingCloudState;
    fn deref(&self) -> &MarketingCloudState {
        &self.state
    }
}
