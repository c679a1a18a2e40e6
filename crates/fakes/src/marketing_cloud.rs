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
//! - "Data Extensions Async API": `POST` (insert) and `PUT` (upsert)
//!   `/data/v1/async/dataextensions/key:{key}/rows` with `{"items": [{column:
//!   value}]}` → 202 `{"requestId", "resultMessages": []}`;
//!   `GET /data/v1/async/{requestId}/status` → `{"status": {"callDateTime",
//!   "completionDateTime", "hasErrors", "pickupDateTime", "requestStatus"
//!   (`Pending`, `Complete`, `Error`), "resultStatus", "requestId"},
//!   "requestId"}`; `GET /data/v1/async/{requestId}/results` → `{"page",
//!   "pageSize" (default 50), "count", "items": [{…the row, "status",
//!   "errorCode", "message"}], "requestId"}`. An unknown data extension is
//!   refused at once with `resultMessages`.
//! - SOAP `Retrieve` of `DataExtensionField` (`POST {soap_instance_url}
//!   Service.asmx`, `SOAPAction: Retrieve`, the token in `<fueloauth>`,
//!   filter `DataExtension.CustomerKey equals KEY`) → `RetrieveResponseMsg`
//!   with `OverallStatus` and one `Results` per column (`Name`,
//!   `FieldType`, `MaxLength`, `IsRequired`, `IsPrimaryKey`).
//! - `GET /interaction/v1/eventDefinitions/key:{key}`: the event
//!   definition, 404 when there is none.
//! - "Rate Limiting Errors": throttled REST calls get 429 with
//!   `Retry-After: 5` and `{"message": "Rate limit exceeded", "errorcode":
//!   50100, "retryAfter": 5, "documentation"}`. Marketing Cloud publishes no
//!   number; the fake throttles above [`MarketingCloudConfig::rate_limit`].
//!
//! Errors have REST's shape `{"message", "errorcode", "documentation"}`.
//! Values are checked against the column types (Text with a length, Number,
//! Decimal, Date, Boolean, EmailAddress, Phone); an unknown column is refused.
//!
//! # What it simplifies
//! - An asynchronous request is processed when its status is read for the
//!   `pending_polls + 1`-th time (real ones wait in a queue); its result
//!   items echo the row's columns, so a client can tell them apart (the
//!   documentation's example shows only `status`, `errorCode`, `message`).
//! - The real per-row texts of a refused row are not documented; the fake's
//!   name the column ("Invalid column name 'X'.", "X is required", "X: the
//!   value does not fit the column type …").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

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
    /// How many status reads an asynchronous request answers `Pending`.
    pub pending_polls: u32,
    /// REST calls allowed per window before 429s (`None`: no throttling).
    pub rate_limit: Option<(usize, Duration)>,
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
            pending_polls: 1,
            rate_limit: None,
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

/// An asynchronous rows request.
#[derive(Debug, Clone)]
struct AsyncRequest {
    data_extension: String,
    upsert: bool,
    items: Vec<Value>,
    called: DateTime<Utc>,
    polls_left: u32,
    /// Set once processed: one result item per row.
    results: Option<Vec<Value>>,
    completed: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct Store {
    tokens: BTreeMap<String, DateTime<Utc>>,
    issued: u64,
    entries: Vec<JourneyEntry>,
    /// Rows per data extension: primary key values → all values.
    rows: BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>>,
    requests: BTreeMap<String, AsyncRequest>,
    /// Times of recent REST calls (the rate limit's window).
    calls: std::collections::VecDeque<std::time::Instant>,
}

#[derive(Clone)]
pub struct MarketingCloudState {
    config: Arc<MarketingCloudConfig>,
    /// The data extensions' columns (columns can be added while running).
    fields: Arc<Mutex<BTreeMap<String, Vec<DeField>>>>,
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
    /// How many asynchronous rows requests were accepted.
    pub fn async_requests(&self) -> usize {
        self.store().requests.len()
    }
    /// Adds a column to a data extension (as a person does in Contact
    /// Builder); false when the data extension does not exist.
    pub fn add_column(&self, key: &str, field: DeField) -> bool {
        let mut fields = self.fields.lock().unwrap_or_else(|p| p.into_inner());
        match fields.get_mut(key) {
            Some(f) => {
                f.push(field);
                true
            }
            None => false,
        }
    }
    fn columns(&self, key: &str) -> Option<Vec<DeField>> {
        self.fields
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }
    /// What `leadrelay fake marketing_cloud` prints.
    pub fn credentials_banner(&self, base_url: &str) -> String {
        let c = &self.config;
        let mut out =
            format!("fake Marketing Cloud listening on {base_url} (auth, REST and SOAP)\n");
        out.push_str(&format!(
            "  MC_CLIENT_ID={}\n  MC_CLIENT_SECRET={}\n",
            c.client_id, c.client_secret
        ));
        out.push_str(&format!("  account_id (MID) {}\n", c.account_id));
        for k in &c.event_definitions {
            out.push_str(&format!("  event definition {k}\n"));
        }
        for k in c.data_extensions.keys() {
            out.push_str(&format!("  data extension {k}\n"));
        }
        out
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

/// Checks one row's columns (`keys` and `values` together) against the
/// data extension's; the row's primary key and its values, or the problems.
fn check_row(
    fields: &[DeField],
    columns: &Map<String, Value>,
) -> Result<(String, BTreeMap<String, Value>), Vec<String>> {
    let mut problems = Vec::new();
    let mut all: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in columns {
        match fields.iter().find(|f| f.name.eq_ignore_ascii_case(k)) {
            None => problems.push(format!("Invalid column name '{k}'.")),
            Some(f) => {
                if let Some(p) = type_problem(f, v) {
                    problems.push(p);
                }
                all.insert(f.name.clone(), v.clone());
            }
        }
    }
    let mut pk = Vec::new();
    for f in fields.iter().filter(|f| f.required) {
        match all.get(&f.name) {
            Some(v) if !v.is_null() => {
                if f.primary_key {
                    pk.push(v.to_string())
                }
            }
            _ => problems.push(format!("{} is required", f.name)),
        }
    }
    if problems.is_empty() {
        Ok((pk.join("|"), all))
    } else {
        Err(problems)
    }
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

/// The external key in a `key:{key}` path segment.
fn de_key(segment: &str) -> Option<&str> {
    segment.strip_prefix("key:")
}

fn not_a_key() -> Response {
    error(
        StatusCode::NOT_FOUND,
        0,
        "Use key:{external key} in the path",
    )
}

fn upsert_inner(s: &MarketingCloudState, key: &str, headers: &HeaderMap, body: &str) -> Response {
    if !authorized(s, headers) {
        return not_authorized();
    }
    let Some(key) = de_key(key) else {
        return not_a_key();
    };
    let Some(fields) = s.columns(key) else {
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
        let mut columns = keys.clone();
        columns.extend(row["values"].as_object().cloned().unwrap_or_default());
        for f in fields.iter().filter(|f| f.primary_key) {
            if !keys.keys().any(|k| k.eq_ignore_ascii_case(&f.name)) {
                problems.push(format!(
                    "row {i}: primary key {} is missing from keys",
                    f.name
                ));
            }
        }
        match check_row(&fields, &columns) {
            Ok(r) => accepted.push(r),
            Err(ps) => problems.extend(ps.into_iter().map(|p| format!("row {i}: {p}"))),
        }
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

/// The asynchronous API's refusal shape.
fn result_messages(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "requestId": uuid::Uuid::now_v7().to_string(),
            "resultMessages": [{"resultType": "Validation", "resultClass": "Error", "resultCode": "ValidationError", "message": message}],
        })),
    )
        .into_response()
}

async fn async_rows(
    State(s): State<MarketingCloudState>,
    method: axum::http::Method,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !authorized(&s, &headers) {
        return not_authorized();
    }
    let Some(key) = de_key(&key) else {
        return not_a_key();
    };
    if s.columns(key).is_none() {
        return result_messages(
            StatusCode::BAD_REQUEST,
            &format!("Unable to find data extension with external key {key}"),
        );
    }
    if body.len() > 5 * 1024 * 1024 {
        return result_messages(StatusCode::PAYLOAD_TOO_LARGE, "The payload exceeds 5 MB");
    }
    let items = match serde_json::from_str::<Value>(&body) {
        Ok(v) => match v["items"].as_array() {
            Some(items) if !items.is_empty() && items.iter().all(Value::is_object) => items.clone(),
            _ => {
                return result_messages(
                    StatusCode::BAD_REQUEST,
                    "items is required: an array of row objects",
                );
            }
        },
        Err(_) => return result_messages(StatusCode::BAD_REQUEST, "The body is not valid JSON"),
    };
    let id = uuid::Uuid::now_v7().to_string();
    s.store().requests.insert(
        id.clone(),
        AsyncRequest {
            data_extension: key.to_string(),
            upsert: method == axum::http::Method::PUT,
            items,
            called: Utc::now(),
            polls_left: s.config.pending_polls,
            results: None,
            completed: None,
        },
    );
    (
        StatusCode::ACCEPTED,
        Json(json!({"requestId": id, "resultMessages": []})),
    )
        .into_response()
}

/// Processes a request's rows: each is stored or gets an error item.
fn process(s: &MarketingCloudState, st: &mut Store, id: &str) {
    let Some(req) = st.requests.get(id).cloned() else {
        return;
    };
    let fields = s.columns(&req.data_extension).unwrap_or_default();
    let mut results = Vec::new();
    for item in &req.items {
        let columns = item.as_object().cloned().unwrap_or_default();
        let mut echo = columns.clone();
        match check_row(&fields, &columns) {
            Ok((pk, values)) => {
                let table = st.rows.entry(req.data_extension.clone()).or_default();
                if !req.upsert && table.contains_key(&pk) {
                    echo.insert("status".into(), json!("Error"));
                    echo.insert("errorCode".into(), json!("UnexpectedError"));
                    echo.insert("message".into(), json!(format!("Violation of PRIMARY KEY constraint. Cannot insert duplicate key. The duplicate key value is ({pk}).")));
                } else {
                    table.entry(pk).or_default().extend(values);
                    echo.insert("status".into(), json!("OK"));
                }
            }
            Err(problems) => {
                echo.insert("status".into(), json!("Error"));
                echo.insert("errorCode".into(), json!("UnexpectedError"));
                echo.insert("message".into(), json!(problems.join("; ")));
            }
        }
        results.push(Value::Object(echo));
    }
    if let Some(r) = st.requests.get_mut(id) {
        r.results = Some(results);
        r.completed = Some(Utc::now());
    }
}

fn mc_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
}

async fn async_status(
    State(s): State<MarketingCloudState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s, &headers) {
        return not_authorized();
    }
    let mut st = s.store();
    let Some(req) = st.requests.get_mut(&id) else {
        return result_messages(StatusCode::NOT_FOUND, &format!("Request {id} not found"));
    };
    if req.results.is_none() {
        if req.polls_left > 0 {
            req.polls_left -= 1;
        } else {
            process(&s, &mut st, &id);
        }
    }
    let req = &st.requests[&id];
    let has_errors = req.results.iter().flatten().any(|r| r["status"] != "OK");
    let (request_status, result_status) = match &req.results {
        None => ("Pending", ""),
        Some(_) if has_errors => ("Complete", "Errors"),
        Some(_) => ("Complete", "OK"),
    };
    Json(json!({
        "status": {
            "callDateTime": mc_time(req.called),
            "completionDateTime": req.completed.map(mc_time),
            "hasErrors": has_errors,
            "pickupDateTime": req.completed.map(mc_time),
            "requestStatus": request_status,
            "resultStatus": result_status,
            "requestId": id,
        },
        "requestId": uuid::Uuid::now_v7().to_string(),
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct Page {
    page: Option<usize>,
    #[serde(rename = "pageSize")]
    page_size: Option<usize>,
}

async fn async_results(
    State(s): State<MarketingCloudState>,
    Path(id): Path<String>,
    Query(q): Query<Page>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s, &headers) {
        return not_authorized();
    }
    let st = s.store();
    let Some(req) = st.requests.get(&id) else {
        return result_messages(StatusCode::NOT_FOUND, &format!("Request {id} not found"));
    };
    let page = q.page.unwrap_or(1).max(1);
    let size = q.page_size.unwrap_or(50).clamp(1, 2500);
    let all = req.results.clone().unwrap_or_default();
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .cloned()
        .collect();
    Json(json!({
        "page": page,
        "pageSize": size,
        "count": all.len(),
        "items": items,
        "requestId": id,
    }))
    .into_response()
}

async fn event_definition(
    State(s): State<MarketingCloudState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s, &headers) {
        return not_authorized();
    }
    let key = key.strip_prefix("key:").unwrap_or(&key);
    let Some(n) = s.config.event_definitions.iter().position(|k| k == key) else {
        return error(
            StatusCode::NOT_FOUND,
            30000,
            &format!("Event definition with key {key} not found"),
        );
    };
    Json(json!({
        "id": format!("5f2c1b7e-0000-4000-8000-{n:012}"),
        "type": "APIEvent",
        "name": key,
        "eventDefinitionKey": key,
        "mode": "Production",
        "isVisibleInPicker": true,
    }))
    .into_response()
}

/// The text of the first element named `name` (local name) in `xml`
/// (character and the predefined entity references resolved).
fn xml_text(xml: &str, name: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut text: Option<String> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) if text.is_none() && e.local_name().as_ref() == name.as_bytes() => {
                text = Some(String::new())
            }
            Ok(Event::Text(t)) => {
                if let Some(out) = text.as_mut() {
                    out.push_str(&t.decode().ok()?);
                }
            }
            Ok(Event::GeneralRef(r)) => {
                if let Some(out) = text.as_mut() {
                    let c = match r.resolve_char_ref().ok()? {
                        Some(c) => c,
                        None => match r.decode().ok()?.as_ref() {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "apos" => '\'',
                            "quot" => '"',
                            _ => return None,
                        },
                    };
                    out.push(c);
                }
            }
            Ok(Event::End(e)) if text.is_some() && e.local_name().as_ref() == name.as_bytes() => {
                return text;
            }
            Ok(Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn soap_fault(code: &str, text: &str) -> Response {
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:{code}</faultcode><faultstring>{}</faultstring></soap:Fault></soap:Body></soap:Envelope>"#,
        quick_xml::escape::escape(text)
    );
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [("content-type", "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `POST /soap/Service.asmx`: `Retrieve` of `DataExtensionField` only.
async fn soap(State(s): State<MarketingCloudState>, headers: HeaderMap, body: String) -> Response {
    let r = soap_inner(&s, &headers, &body);
    s.requests
        .record("POST", "/soap/Service.asmx", r.status().as_u16());
    r
}

fn soap_inner(s: &MarketingCloudState, headers: &HeaderMap, body: &str) -> Response {
    let action = headers
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"');
    let token = xml_text(body, "fueloauth").unwrap_or_default();
    let valid = s
        .store()
        .tokens
        .get(token.trim())
        .is_some_and(|exp| *exp > Utc::now());
    if !valid {
        return soap_fault("Client", "Login Failed");
    }
    if action != "Retrieve" || xml_text(body, "ObjectType").as_deref() != Some("DataExtensionField")
    {
        return soap_fault(
            "Client",
            "The fake serves Retrieve of DataExtensionField only",
        );
    }
    if xml_text(body, "Property").as_deref() != Some("DataExtension.CustomerKey") {
        return soap_fault("Client", "Filter on DataExtension.CustomerKey");
    }
    let key = xml_text(body, "Value").unwrap_or_default();
    let results: String = s
        .columns(&key)
        .unwrap_or_default()
        .iter()
        .map(|f| {
            let (kind, max) = match &f.kind {
                FieldType::Text(n) => ("Text", Some(*n)),
                FieldType::Number => ("Number", None),
                FieldType::Decimal => ("Decimal", None),
                FieldType::Date => ("Date", None),
                FieldType::Boolean => ("Boolean", None),
                FieldType::EmailAddress => ("EmailAddress", Some(254)),
                FieldType::Phone => ("Phone", Some(50)),
            };
            format!(
                r#"<Results xsi:type="DataExtensionField"><PartnerKey xsi:nil="true" /><ObjectID xsi:nil="true" /><Name>{}</Name>{}<IsRequired>{}</IsRequired><IsPrimaryKey>{}</IsPrimaryKey><FieldType>{kind}</FieldType></Results>"#,
                quick_xml::escape::escape(&f.name),
                max.map(|m| format!("<MaxLength>{m}</MaxLength>")).unwrap_or_default(),
                f.required,
                f.primary_key
            )
        })
        .collect();
    let xml = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soap:Body><RetrieveResponseMsg xmlns="http://exacttarget.com/wsdl/partnerAPI"><OverallStatus>OK</OverallStatus><RequestID>{}</RequestID>{results}</RetrieveResponseMsg></soap:Body></soap:Envelope>"#,
        uuid::Uuid::now_v7()
    );
    ([("content-type", "text/xml; charset=utf-8")], xml).into_response()
}

/// Throttles REST calls above the configured rate, as Marketing Cloud
/// documents it (429, error code 50100, `Retry-After: 5`).
async fn throttle(State(s): State<MarketingCloudState>, req: Request, next: Next) -> Response {
    if let Some((limit, window)) = s.config.rate_limit
        && req.uri().path() != "/v2/token"
    {
        let now = std::time::Instant::now();
        let throttled = {
            let mut st = s.store();
            while st
                .calls
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                st.calls.pop_front();
            }
            if st.calls.len() >= limit {
                true
            } else {
                st.calls.push_back(now);
                false
            }
        };
        if throttled {
            s.requests
                .record(req.method().as_str(), req.uri().path(), 429);
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({
                    "message": "Rate limit exceeded",
                    "errorcode": 50100,
                    "retryAfter": 5,
                    "documentation": "https://developer.salesforce.com/docs/atlas.en-us.mc-apis.meta/mc-apis/error-handling.htm",
                })),
            )
                .into_response();
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("5"));
            return r;
        }
    }
    let path = req.uri().path().to_string();
    let method = req.method().to_string();
    let logged = path.starts_with("/data/") || path.starts_with("/interaction/v1/eventDefinitions");
    let r = next.run(req).await;
    if logged {
        s.requests.record(&method, &path, r.status().as_u16());
    }
    r
}

/// The fake's routes.
pub fn router(state: MarketingCloudState) -> Router {
    Router::new()
        .route("/v2/token", post(token))
        .route("/interaction/v1/events", post(fire_event))
        .route(
            "/interaction/v1/eventDefinitions/{key}",
            get(event_definition),
        )
        .route("/hub/v1/dataevents/{key}/rowset", post(upsert_rowset))
        .route(
            "/data/v1/async/dataextensions/{key}/rows",
            post(async_rows).put(async_rows),
        )
        .route("/data/v1/async/{id}/status", get(async_status))
        .route("/data/v1/async/{id}/results", get(async_results))
        .route("/soap/Service.asmx", post(soap))
        .layer(middleware::from_fn_with_state(state.clone(), throttle))
        .with_state(state)
}

impl MarketingCloudState {
    fn new(config: MarketingCloudConfig) -> Self {
        Self {
            fields: Arc::new(Mutex::new(config.data_extensions.clone())),
            config: Arc::new(config),
            store: Arc::default(),
            requests: RequestLog::default(),
            base: Arc::default(),
        }
    }
}

/// Serves a fake tenant on `listen` until the future is dropped, after
/// printing its credentials (for `leadrelay fake marketing_cloud`).
pub async fn serve(listen: &str, config: MarketingCloudConfig) -> std::io::Result<()> {
    let state = MarketingCloudState::new(config);
    let listener = TcpListener::bind(listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    *state.base.lock().unwrap_or_else(|p| p.into_inner()) = base.clone();
    println!("{}", state.credentials_banner(&base));
    axum::serve(listener, router(state)).await
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
        let state = MarketingCloudState::new(config);
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
