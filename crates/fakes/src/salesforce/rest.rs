//! The REST API under `/services/data/vXX.X/`: session and limit checks, then
//! one dispatcher shared by direct requests and composite subrequests. Every
//! write goes through [`prepare`], where Salesforce's field rules live.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::errors::{self, RestError, SfError};
use super::schema::{
    self, SalesforceFieldDef, SalesforceFieldType as T, SalesforceObjectDef, looks_like_id,
};
use super::{SalesforceRecord, SalesforceState, Store, composite, soql};

/// A request to dispatch, direct or from a composite request.
#[derive(Debug, Clone)]
pub(crate) struct SubRequest {
    pub method: Method,
    /// The path after `/services/data/`, starting with the version (`v60.0/...`).
    pub path: String,
    pub query: Option<String>,
    pub body: Vec<u8>,
    /// `Sforce-Duplicate-Rule-Header: allowSave=true`.
    pub allow_duplicates: bool,
    /// The session's user (owner and creator of new records).
    pub user_id: String,
}

/// What a dispatched request answers.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub status: StatusCode,
    pub body: Option<Value>,
    pub location: Option<String>,
}

impl Outcome {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            location: None,
        }
    }

    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            body: None,
            location: None,
        }
    }

    fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(b) => (self.status, Json(b)).into_response(),
            None => self.status.into_response(),
        };
        if let Some(loc) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            response.headers_mut().insert("location", loc);
        }
        response
    }
}

impl From<RestError> for Outcome {
    fn from(e: RestError) -> Self {
        Outcome::json(e.status, e.body())
    }
}

/// `GET /services/data`: the supported versions.
pub(crate) async fn versions(State(state): State<SalesforceState>) -> Response {
    let c = &state.inner.config;
    let list: Vec<Value> = (c.min_api_version..=c.max_api_version)
        .map(|v| json!({"label": format!("API {v}.0"), "url": format!("/services/data/v{v}.0"), "version": format!("{v}.0")}))
        .collect();
    Json(Value::Array(list)).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("OAuth "))
        .map(str::trim)
}

/// The session's user; expired sessions are forgotten.
fn session_user(state: &SalesforceState, headers: &HeaderMap) -> Option<String> {
    token_user(state, bearer(headers)?)
}

/// The user of a session token (the REST bearer token, or the SOAP API's
/// `SessionHeader.sessionId`); expired sessions are forgotten.
pub(crate) fn token_user(state: &SalesforceState, token: &str) -> Option<String> {
    let mut sessions = state
        .inner
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    match sessions.get(token) {
        Some(s) if s.expires_at > std::time::Instant::now() => Some(s.user_id.clone()),
        Some(_) => {
            sessions.remove(token);
            None
        }
        None => None,
    }
}

/// Counts an API request; `Err` when the limit is used up.
pub(crate) fn count_request(state: &SalesforceState) -> Result<u64, u64> {
    let c = &state.inner.config;
    let mut api = state.inner.api.lock().unwrap_or_else(|p| p.into_inner());
    if api.window_start.elapsed() >= c.api_limit_window {
        api.window_start = std::time::Instant::now();
        api.used = 0;
    }
    if api.used >= c.api_request_limit {
        return Err(api.used);
    }
    api.used += 1;
    Ok(api.used)
}

/// Any method on `/services/data/{*rest}`.
pub(crate) async fn handle(
    State(state): State<SalesforceState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(user_id) = session_user(&state, &headers) else {
        return errors::invalid_session().into_response();
    };
    let limit = state.inner.config.api_request_limit;
    let used = match count_request(&state) {
        Ok(used) => used,
        Err(used) => {
            let mut r = errors::request_limit().into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{limit}")) {
                r.headers_mut().insert("sforce-limit-info", v);
            }
            return r;
        }
    };
    let allow_duplicates = headers
        .get("sforce-duplicate-rule-header")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.replace(' ', "")
                .to_ascii_lowercase()
                .contains("allowsave=true")
        });
    let req = SubRequest {
        method,
        path: uri.path().trim_start_matches("/services/data/").to_string(),
        query: uri.query().map(str::to_string),
        body: body.to_vec(),
        allow_duplicates,
        user_id,
    };
    let outcome = {
        let mut store = state.store();
        dispatch(&state, &mut store, &req)
    };
    let mut response = outcome.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{limit}")) {
        response.headers_mut().insert("sforce-limit-info", v);
    }
    response
}

/// `v60.0` → 60 when supported.
pub(crate) fn version(state: &SalesforceState, segment: &str) -> Option<u32> {
    let rest = segment.strip_prefix('v')?;
    let (major, minor) = rest.split_once('.')?;
    let major: u32 = major.parse().ok()?;
    if minor != "0" {
        return None;
    }
    let c = &state.inner.config;
    (c.min_api_version..=c.max_api_version)
        .contains(&major)
        .then_some(major)
}

use crate::common::query_param;

/// Routes a request to its resource.
pub(crate) fn dispatch(state: &SalesforceState, store: &mut Store, req: &SubRequest) -> Outcome {
    let segments: Vec<&str> = req.path.trim_end_matches('/').split('/').collect();
    let Some(v) = segments.first().and_then(|s| version(state, s)) else {
        return errors::not_found().into();
    };
    let version = format!("v{v}.0");
    let m = &req.method;
    let result: Result<Outcome, RestError> = match segments.get(1..).unwrap_or_default() {
        ["sobjects"] if m == Method::GET => Ok(list_sobjects(state)),
        ["sobjects", obj] => match *m {
            Method::POST => object_def(state, obj).and_then(|def| {
                let body = parse_body(&req.body)?;
                let id = create(state, store, def, &body, req, &version)?;
                Ok(Outcome {
                    status: StatusCode::CREATED,
                    body: Some(json!({"id": id, "success": true, "errors": []})),
                    location: Some(format!(
                        "/services/data/{version}/sobjects/{}/{id}",
                        def.name
                    )),
                })
            }),
            Method::GET => object_def(state, obj).map(|def| {
                Outcome::json(
                    StatusCode::OK,
                    json!({"objectDescribe": object_summary(def), "recentItems": []}),
                )
            }),
            _ => Err(errors::method_not_allowed(m.as_str(), "GET, HEAD, POST")),
        },
        ["sobjects", obj, "describe"] if m == Method::GET => {
            object_def(state, obj).map(|def| Outcome::json(StatusCode::OK, describe(def)))
        }
        ["sobjects", obj, id] => {
            object_def(state, obj).and_then(|def| by_id(state, store, def, id, req, &version))
        }
        ["sobjects", obj, field, value] => object_def(state, obj)
            .and_then(|def| by_external_id(state, store, def, field, value, req, &version)),
        ["query"] if m == Method::GET => match query_param(req.query.as_deref(), "q") {
            Some(q) => {
                soql::run(state, store, &version, &q).map(|v| Outcome::json(StatusCode::OK, v))
            }
            None => Err(RestError::bad(SfError::new(
                "MALFORMED_QUERY",
                "A query string has to be specified",
            ))),
        },
        ["query", cursor] if m == Method::GET => {
            soql::more(state, store, &version, cursor).map(|v| Outcome::json(StatusCode::OK, v))
        }
        ["limits"] if m == Method::GET => Ok(Outcome::json(StatusCode::OK, limits(state))),
        ["composite"] if m == Method::POST => Ok(composite::composite(state, store, req, &version)),
        ["composite", "sobjects"] if m == Method::POST || m == Method::PATCH => {
            Ok(composite::collections(state, store, req, &version))
        }
        ["composite", "sobjects"] if m == Method::DELETE => {
            Ok(composite::delete_collection(store, req))
        }
        _ => Err(errors::not_found()),
    };
    result.unwrap_or_else(Outcome::from)
}

fn object_def<'a>(
    state: &'a SalesforceState,
    name: &str,
) -> Result<&'a SalesforceObjectDef, RestError> {
    state.object(name).ok_or_else(errors::not_found)
}

pub(crate) fn field<'a>(
    def: &'a SalesforceObjectDef,
    name: &str,
) -> Option<&'a SalesforceFieldDef> {
    def.fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
}

/// Parses a JSON object body the way Salesforce's deserializer reports problems.
pub(crate) fn parse_body(body: &[u8]) -> Result<Map<String, Value>, RestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(errors::json_parser("No content to map due to end-of-input"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Array(_)) => Err(errors::json_parser(
            "Cannot deserialize instance of SObject out of START_ARRAY token",
        )),
        Ok(_) => Err(errors::json_parser(
            "Cannot deserialize instance of SObject out of VALUE token",
        )),
        Err(e) => Err(errors::json_parser(format!(
            "{e} at [line:{}, column:{}]",
            e.line(),
            e.column()
        ))),
    }
}

pub(crate) fn sf_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

fn plausible_email(v: &str) -> bool {
    let mut parts = v.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !v.chars().any(char::is_whitespace)
}

fn deserialize_error(kind: &str, v: &Value) -> RestError {
    let token = if v.is_string() {
        "VALUE_STRING"
    } else if v.is_object() {
        "START_OBJECT"
    } else if v.is_array() {
        "START_ARRAY"
    } else {
        "VALUE"
    };
    let shown = v
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string());
    errors::json_parser(format!(
        "Cannot deserialize instance of {kind} from {token} value {shown} or request may be missing a required field"
    ))
}

/// Converts a JSON value to what the field stores, or the deserializer's error.
fn coerce(f: &SalesforceFieldDef, v: &Value) -> Result<Value, RestError> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    match &f.field_type {
        T::String(_)
        | T::TextArea(_)
        | T::Email
        | T::Phone
        | T::Url
        | T::Picklist { .. }
        | T::Reference(_)
        | T::Id => match v {
            Value::String(_) => Ok(v.clone()),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            other => Err(deserialize_error("string", other)),
        },
        T::Boolean => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            other => Err(deserialize_error("boolean", other)),
        },
        T::Date => match v.as_str() {
            Some("") => Ok(Value::Null),
            Some(s) if NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => Ok(v.clone()),
            _ => Err(deserialize_error("date", v)),
        },
        T::DateTime => match v.as_str() {
            Some("") => Ok(Value::Null),
            Some(s) => DateTime::parse_from_rfc3339(s)
                .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
                .map(|t| Value::String(sf_time(t.with_timezone(&Utc))))
                .or_else(|_| {
                    NaiveDate::parse_from_str(s, "%Y-%m-%d")
                        .map(|d| Value::String(format!("{d}T00:00:00.000+0000")))
                        .map_err(|_| deserialize_error("datetime", v))
                }),
            None => Err(deserialize_error("datetime", v)),
        },
        T::Double | T::Currency | T::Percent => match v {
            Value::Number(_) => Ok(v.clone()),
            Value::String(s) if s.is_empty() => Ok(Value::Null),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .map(|n| json!(n))
                .map_err(|_| deserialize_error("double", v)),
            other => Err(deserialize_error("double", other)),
        },
        T::Int => {
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) if s.is_empty() => return Ok(Value::Null),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if n.fract() == 0.0 => Ok(json!(n as i64)),
                _ => Err(deserialize_error("int", v)),
            }
        }
    }
}

fn id_prefix_ok(state: &SalesforceState, targets: &[String], id: &str) -> bool {
    let prefix = &id[..3.min(id.len())];
    targets.iter().any(|t| {
        if t == "User" {
            prefix == "005"
        } else {
            state.object(t).is_some_and(|o| o.key_prefix == prefix)
        }
    })
}

fn reference_exists(state: &SalesforceState, store: &Store, id: &str) -> bool {
    let id = schema::id18(id);
    store.records.contains_key(&id)
        || state
            .inner
            .config
            .users
            .iter()
            .any(|u| schema::id18(&u.id) == id)
}

fn is_blank(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        _ => false,
    }
}

/// Checks a create/update body. Returns the changes keyed by API name.
pub(crate) fn prepare(
    state: &SalesforceState,
    store: &Store,
    def: &SalesforceObjectDef,
    body: &Map<String, Value>,
    existing: Option<&SalesforceRecord>,
) -> Result<Map<String, Value>, RestError> {
    let creating = existing.is_none();
    let mut changes = Map::new();
    let mut not_writable = Vec::new();
    for (k, v) in body {
        if k == "attributes" {
            continue;
        }
        let Some(f) = field(def, k) else {
            return Err(RestError::bad(SfError::new(
                "INVALID_FIELD",
                format!("No such column '{k}' on sobject of type {}", def.name),
            )));
        };
        let value = coerce(f, v)?;
        if (creating && !f.createable) || (!creating && !f.updateable) {
            not_writable.push(f.name.clone());
            continue;
        }
        changes.insert(f.name.clone(), value);
    }
    if !not_writable.is_empty() {
        return Err(RestError::bad(SfError::with_fields(
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            format!(
                "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                not_writable.join(", ")
            ),
            not_writable,
        )));
    }
    // Required fields: missing on create, or cleared on update.
    let missing: Vec<String> = def
        .fields
        .iter()
        .filter(|f| f.required)
        .filter(|f| match (creating, changes.get(&f.name)) {
            (true, v) => is_blank(v) && f.default.is_none(),
            (false, Some(v)) => is_blank(Some(v)),
            (false, None) => false,
        })
        .map(|f| f.name.clone())
        .collect();
    if !missing.is_empty() {
        return Err(RestError::bad(SfError::with_fields(
            "REQUIRED_FIELD_MISSING",
            format!("Required fields are missing: [{}]", missing.join(", ")),
            missing,
        )));
    }
    let mut problems = Vec::new();
    for (name, v) in &changes {
        let Some(f) = field(def, name) else { continue };
        let Some(text) = v.as_str() else { continue };
        match &f.field_type {
            T::String(max) | T::TextArea(max) if text.chars().count() > *max => {
                problems.push(SfError::with_fields(
                    "STRING_TOO_LONG",
                    format!(
                        "{}: data value too large: {text} (max length={max})",
                        f.label
                    ),
                    vec![f.name.clone()],
                ))
            }
            T::Email if !text.is_empty() && !plausible_email(text) => {
                problems.push(SfError::with_fields(
                    "INVALID_EMAIL_ADDRESS",
                    format!("{}: invalid email address: {text}", f.label),
                    vec![f.name.clone()],
                ))
            }
            T::Picklist {
                values,
                restricted: true,
            } if !values.iter().any(|x| x == text) => problems.push(SfError::with_fields(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                format!(
                    "{}: bad value for restricted picklist field: {text}",
                    f.label
                ),
                vec![f.name.clone()],
            )),
            T::Reference(targets) if !text.is_empty() => {
                if !looks_like_id(text) || !id_prefix_ok(state, targets, text) {
                    problems.push(SfError::with_fields(
                        "MALFORMED_ID",
                        format!("{}: id value of incorrect type: {text}", f.label),
                        vec![f.name.clone()],
                    ));
                } else if !reference_exists(state, store, text) {
                    problems.push(SfError::with_fields(
                        "INVALID_CROSS_REFERENCE_KEY",
                        format!("{}: invalid cross reference id", f.label),
                        vec![f.name.clone()],
                    ));
                }
            }
            _ => {}
        }
    }
    if !problems.is_empty() {
        return Err(RestError {
            status: StatusCode::BAD_REQUEST,
            errors: problems,
        });
    }
    let mut merged = existing.map(|r| r.fields.clone()).unwrap_or_default();
    for (k, v) in &changes {
        merged.insert(k.clone(), v.clone());
    }
    let failures: Vec<SfError> = state
        .inner
        .config
        .validation_rules
        .iter()
        .filter(|r| r.object.eq_ignore_ascii_case(&def.name) && (r.fails)(&merged))
        .map(|r| {
            SfError::with_fields(
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                r.error_message.clone(),
                r.error_field.iter().cloned().collect(),
            )
        })
        .collect();
    if !failures.is_empty() {
        return Err(RestError {
            status: StatusCode::BAD_REQUEST,
            errors: failures,
        });
    }
    Ok(changes)
}

/// Takes one injected `UNABLE_TO_LOCK_ROW`, if any.
fn lock_failure(state: &SalesforceState, id: Option<&str>) -> Result<(), RestError> {
    let mut n = state
        .inner
        .lock_failures
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if *n == 0 {
        return Ok(());
    }
    *n -= 1;
    let message = match id {
        Some(id) => format!("unable to obtain exclusive access to this record or 1 records: {id}"),
        None => "unable to obtain exclusive access to this record".to_string(),
    };
    Err(RestError::bad(SfError::with_fields(
        "UNABLE_TO_LOCK_ROW",
        message,
        Vec::new(),
    )))
}

/// One standard matching rule: a record matches on the same Email (exact,
/// case-insensitive) or, fuzzily, on the same first name, last name and
/// company (`Company` on a Lead, the Account's `Name` on a Contact) — so a
/// match need not be the same person.
fn rule_matches(
    store: &Store,
    candidate: &SalesforceRecord,
    email: Option<&str>,
    name: (&str, &str, &str),
) -> bool {
    let same = |a: &str, b: &str| !a.trim().is_empty() && a.trim().eq_ignore_ascii_case(b.trim());
    if let (Some(e), Some(theirs)) = (email, candidate.text("Email"))
        && same(e, theirs)
    {
        return true;
    }
    let company = if candidate.object == "Contact" {
        candidate
            .text("AccountId")
            .and_then(|a| store.records.get(a))
            .and_then(|a| a.text("Name"))
            .unwrap_or_default()
    } else {
        candidate.text("Company").unwrap_or_default()
    };
    same(name.0, candidate.text("FirstName").unwrap_or_default())
        && same(name.1, candidate.text("LastName").unwrap_or_default())
        && same(name.2, company)
}

/// `DUPLICATES_DETECTED` from the standard duplicate rules (on by default
/// since Summer '17): the Standard Lead Duplicate Rule checks a Lead against
/// Leads *and* Contacts, the Standard Contact Duplicate Rule a Contact
/// against Contacts; each object's matches are one `matchResults` entry
/// with its `entityType` and matching rule.
fn duplicate_check(
    state: &SalesforceState,
    store: &Store,
    def: &SalesforceObjectDef,
    merged: &Map<String, Value>,
    own_id: Option<&str>,
    allow_save: bool,
    version: &str,
) -> Result<(), RestError> {
    let block = state.inner.config.duplicate_rules_block;
    if !state.inner.config.duplicate_rules
        || (allow_save && !block)
        || !matches!(def.name.as_str(), "Lead" | "Contact")
    {
        return Ok(());
    }
    let text = |f: &str| merged.get(f).and_then(Value::as_str).unwrap_or_default();
    let email = Some(text("Email")).filter(|e| !e.is_empty());
    let company = if def.name == "Lead" {
        text("Company").to_string()
    } else {
        store
            .records
            .get(text("AccountId"))
            .and_then(|a| a.text("Name"))
            .unwrap_or_default()
            .to_string()
    };
    let name = (text("FirstName"), text("LastName"), company.as_str());
    let (rule, checked): (&str, &[(&str, &str)]) = if def.name == "Lead" {
        (
            "Standard_Lead_Duplicate_Rule",
            &[
                ("Lead", "Standard_Lead_Match_Rule_v1_0"),
                ("Contact", "Standard_Contact_Match_Rule_v1_1"),
            ],
        )
    } else {
        (
            "Standard_Contact_Duplicate_Rule",
            &[("Contact", "Standard_Contact_Match_Rule_v1_1")],
        )
    };
    let mut results = Vec::new();
    for (object, match_rule) in checked {
        let records: Vec<Value> = store
            .of(object)
            .filter(|r| Some(r.id.as_str()) != own_id && rule_matches(store, r, email, name))
            .map(|r| {
                json!({
                    "additionalInformation": [],
                    "fieldDiffs": [],
                    "matchConfidence": 100.0,
                    "record": {
                        "attributes": {"type": object, "url": format!("/services/data/{version}/sobjects/{object}/{}", r.id)},
                        "Id": r.id,
                    },
                })
            })
            .collect();
        if records.is_empty() {
            continue;
        }
        results.push(json!({
            "entityType": object,
            "errors": [],
            "matchEngine": "FuzzyMatchEngine",
            "matchRecords": records,
            "rule": match_rule,
            "size": records.len(),
            "success": true,
        }));
    }
    if results.is_empty() {
        return Ok(());
    }
    let message = "Use one of these records?";
    let result = json!({
        "allowSave": !block,
        "duplicateRule": rule,
        "duplicateRuleEntityType": def.name,
        "errorMessage": message,
        "matchResults": results,
    });
    let mut e = SfError::new("DUPLICATES_DETECTED", message);
    e.extra = Some(("duplicateResult", result));
    Err(RestError::bad(e))
}

fn full_name(fields: &Map<String, Value>) -> Value {
    let first = fields
        .get("FirstName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let last = fields
        .get("LastName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = format!("{first} {last}");
    Value::String(name.trim().to_string())
}

/// Stores a new record with its system fields and defaults; returns the id.
pub(crate) fn insert(state: &SalesforceState, object: &str, changes: Map<String, Value>) -> String {
    let user = state
        .inner
        .config
        .users
        .first()
        .map(|u| u.id.clone())
        .unwrap_or_default();
    let mut store = state.store();
    insert_into(state, &mut store, object, changes, &user)
}

pub(crate) fn insert_into(
    state: &SalesforceState,
    store: &mut Store,
    object: &str,
    changes: Map<String, Value>,
    user: &str,
) -> String {
    let def = state.object(object);
    let prefix = def
        .map(|d| d.key_prefix.clone())
        .unwrap_or_else(|| "a00".into());
    let n = store.next();
    let id = schema::new_id(&prefix, n);
    let now = sf_time(Utc::now());
    let mut fields = Map::new();
    if let Some(def) = def {
        for f in &def.fields {
            let value = changes
                .get(&f.name)
                .cloned()
                .filter(|v| !v.is_null())
                .or_else(|| f.default.clone())
                .unwrap_or(Value::Null);
            fields.insert(f.name.clone(), value);
        }
    } else {
        fields.extend(changes);
    }
    fields.insert("Id".into(), json!(id));
    fields.insert("IsDeleted".into(), json!(false));
    if fields.get("OwnerId").is_none_or(Value::is_null) {
        fields.insert("OwnerId".into(), json!(user));
    }
    for k in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
        // Only a seed (no API request can write them) may give its times.
        if fields.get(k).is_none_or(Value::is_null) {
            fields.insert(k.into(), json!(now));
        }
    }
    fields.insert("CreatedById".into(), json!(user));
    fields.insert("LastModifiedById".into(), json!(user));
    if matches!(object, "Lead" | "Contact") {
        let name = full_name(&fields);
        fields.insert("Name".into(), name);
    }
    store.records.insert(
        id.clone(),
        SalesforceRecord {
            object: object.to_string(),
            id: id.clone(),
            fields,
        },
    );
    id
}

/// A member's `Status` is one of its campaign's member statuses: the
/// defaults every campaign starts with (Sent, Responded) and the
/// `CampaignMemberStatus` records an admin added to that campaign.
fn member_status_check(
    store: &Store,
    def: &SalesforceObjectDef,
    fields: &Map<String, Value>,
) -> Result<(), RestError> {
    if def.name != "CampaignMember" {
        return Ok(());
    }
    let Some(status) = fields.get("Status").and_then(Value::as_str) else {
        return Ok(());
    };
    let campaign = fields
        .get("CampaignId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let known = super::schema::CAMPAIGN_MEMBER_STATUSES.contains(&status)
        || store
            .of("CampaignMemberStatus")
            .any(|s| s.text("CampaignId") == Some(campaign) && s.text("Label") == Some(status));
    if known {
        return Ok(());
    }
    Err(RestError::bad(SfError::with_fields(
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        format!("Status: bad value for restricted picklist field: {status}"),
        vec!["Status".into()],
    )))
}

/// A person is a member of a campaign once; a member names a lead or a
/// contact (DUPLICATE_VALUE / REQUIRED_FIELD_MISSING as Salesforce answers).
fn campaign_member_check(
    store: &Store,
    def: &SalesforceObjectDef,
    fields: &Map<String, Value>,
    own_id: Option<&str>,
) -> Result<(), RestError> {
    if def.name != "CampaignMember" {
        return Ok(());
    }
    let text = |f: &str| {
        fields
            .get(f)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (campaign, lead, contact) = (text("CampaignId"), text("LeadId"), text("ContactId"));
    if lead.is_empty() && contact.is_empty() {
        return Err(RestError::bad(SfError::with_fields(
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [LeadId, ContactId]",
            vec!["LeadId".into(), "ContactId".into()],
        )));
    }
    member_status_check(store, def, fields)?;
    let taken = store.of("CampaignMember").any(|m| {
        Some(m.id.as_str()) != own_id
            && m.text("CampaignId") == Some(campaign.as_str())
            && ((!lead.is_empty() && m.text("LeadId") == Some(lead.as_str()))
                || (!contact.is_empty() && m.text("ContactId") == Some(contact.as_str())))
    });
    if taken {
        return Err(RestError::bad(SfError::new(
            "DUPLICATE_VALUE",
            "Already a campaign member.",
        )));
    }
    Ok(())
}

/// Deletes a record and what Salesforce deletes with it: an
/// Opportunity's or a Contact's contact roles.
pub(crate) fn remove(store: &mut Store, id: &str) -> Option<SalesforceRecord> {
    let record = store.records.remove(id)?;
    if matches!(record.object.as_str(), "Opportunity" | "Contact") {
        store.records.retain(|_, r| {
            r.object != "OpportunityContactRole"
                || (r.text("OpportunityId") != Some(id) && r.text("ContactId") != Some(id))
        });
    }
    Some(record)
}

/// An Opportunity has one primary contact: a contact role saved as
/// primary makes the opportunity's others not primary.
fn one_primary(store: &mut Store, id: &str) {
    let Some(record) = store.records.get(id) else {
        return;
    };
    if record.object != "OpportunityContactRole"
        || record.get("IsPrimary") != Some(&Value::Bool(true))
    {
        return;
    }
    let opportunity = record.text("OpportunityId").map(str::to_string);
    let now = json!(sf_time(Utc::now()));
    for r in store.records.values_mut() {
        if r.id != id
            && r.object == "OpportunityContactRole"
            && r.text("OpportunityId") == opportunity.as_deref()
            && r.get("IsPrimary") == Some(&Value::Bool(true))
        {
            r.fields.insert("IsPrimary".into(), json!(false));
            r.fields.insert("SystemModstamp".into(), now.clone());
        }
    }
}

/// Creates a record after every check.
pub(crate) fn create(
    state: &SalesforceState,
    store: &mut Store,
    def: &SalesforceObjectDef,
    body: &Map<String, Value>,
    req: &SubRequest,
    version: &str,
) -> Result<String, RestError> {
    let changes = prepare(state, store, def, body, None)?;
    campaign_member_check(store, def, &changes, None)?;
    duplicate_check(
        state,
        store,
        def,
        &changes,
        None,
        req.allow_duplicates,
        version,
    )?;
    lock_failure(state, None)?;
    let id = insert_into(state, store, &def.name, changes, &req.user_id);
    one_primary(store, &id);
    state.record_saved(&def.name, &id);
    Ok(id)
}

/// Updates a record after every check.
pub(crate) fn update(
    state: &SalesforceState,
    store: &mut Store,
    def: &SalesforceObjectDef,
    id: &str,
    body: &Map<String, Value>,
    req: &SubRequest,
    version: &str,
) -> Result<(), RestError> {
    let existing = store
        .records
        .get(id)
        .cloned()
        .ok_or_else(errors::not_found)?;
    // A converted lead is read-only ("cannot reference converted lead").
    if existing.object == "Lead" && existing.get("IsConverted") == Some(&Value::Bool(true)) {
        return Err(RestError::bad(SfError::new(
            "CANNOT_UPDATE_CONVERTED_LEAD",
            "cannot reference converted lead",
        )));
    }
    let changes = prepare(state, store, def, body, Some(&existing))?;
    let mut merged = existing.fields.clone();
    merged.extend(changes.clone());
    member_status_check(store, def, &merged)?;
    duplicate_check(
        state,
        store,
        def,
        &merged,
        Some(id),
        req.allow_duplicates,
        version,
    )?;
    lock_failure(state, Some(id))?;
    let user = req.user_id.clone();
    let record = store.records.get_mut(id).ok_or_else(errors::not_found)?;
    for (k, v) in changes {
        record.fields.insert(k, v);
    }
    let now = sf_time(Utc::now());
    record.fields.insert("LastModifiedDate".into(), json!(now));
    record.fields.insert("SystemModstamp".into(), json!(now));
    record.fields.insert("LastModifiedById".into(), json!(user));
    if matches!(record.object.as_str(), "Lead" | "Contact") {
        let name = full_name(&record.fields);
        record.fields.insert("Name".into(), name);
    }
    one_primary(store, id);
    state.record_saved(&def.name, id);
    Ok(())
}

/// A record as the REST API returns it (all fields, or `only` these).
pub(crate) fn record_json(
    record: &SalesforceRecord,
    version: &str,
    only: Option<&[String]>,
) -> Value {
    let mut out = Map::new();
    out.insert(
        "attributes".into(),
        json!({"type": record.object, "url": format!("/services/data/{version}/sobjects/{}/{}", record.object, record.id)}),
    );
    match only {
        Some(names) => {
            for n in names {
                let (key, value) = record
                    .fields
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .unwrap_or((n.clone(), Value::Null));
                out.insert(key, value);
            }
        }
        None => {
            for (k, v) in &record.fields {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn find_record<'a>(
    store: &'a Store,
    def: &SalesforceObjectDef,
    id: &str,
) -> Option<&'a SalesforceRecord> {
    if !looks_like_id(id) {
        return None;
    }
    store
        .records
        .get(&schema::id18(id))
        .filter(|r| r.object == def.name)
}

fn fields_param(
    query: Option<&str>,
    def: &SalesforceObjectDef,
) -> Result<Option<Vec<String>>, RestError> {
    let Some(list) = query_param(query, "fields") else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let f = field(def, name).ok_or_else(|| {
            RestError::bad(SfError::new(
                "INVALID_FIELD",
                format!("No such column '{name}' on entity '{}'", def.name),
            ))
        })?;
        out.push(f.name.clone());
    }
    Ok(Some(out))
}

/// `sobjects/{obj}/{id}`: GET, PATCH, DELETE.
fn by_id(
    state: &SalesforceState,
    store: &mut Store,
    def: &SalesforceObjectDef,
    id: &str,
    req: &SubRequest,
    version: &str,
) -> Result<Outcome, RestError> {
    if !looks_like_id(id) {
        return Err(errors::external_id_not_found(id));
    }
    match req.method {
        Method::GET => {
            let record = find_record(store, def, id).ok_or_else(errors::not_found)?;
            let only = fields_param(req.query.as_deref(), def)?;
            Ok(Outcome::json(
                StatusCode::OK,
                record_json(record, version, only.as_deref()),
            ))
        }
        Method::PATCH => {
            let body = parse_body(&req.body)?;
            let id = find_record(store, def, id)
                .map(|r| r.id.clone())
                .ok_or_else(errors::not_found)?;
            update(state, store, def, &id, &body, req, version)?;
            Ok(Outcome::empty(StatusCode::NO_CONTENT))
        }
        Method::DELETE => {
            let id = find_record(store, def, id)
                .map(|r| r.id.clone())
                .ok_or_else(errors::not_found)?;
            lock_failure(state, Some(&id))?;
            remove(store, &id);
            Ok(Outcome::empty(StatusCode::NO_CONTENT))
        }
        _ => Err(errors::method_not_allowed(
            req.method.as_str(),
            "GET, HEAD, PATCH, DELETE",
        )),
    }
}

/// `sobjects/{obj}/{externalIdField}/{value}`: GET, PATCH (upsert), DELETE.
fn by_external_id(
    state: &SalesforceState,
    store: &mut Store,
    def: &SalesforceObjectDef,
    field_name: &str,
    value: &str,
    req: &SubRequest,
    version: &str,
) -> Result<Outcome, RestError> {
    let Some(f) = field(def, field_name).filter(|f| f.external_id || f.name == "Id") else {
        return Err(errors::external_id_not_found(field_name));
    };
    let value = percent_decode(value);
    let matches: Vec<String> = store
        .of(&def.name)
        .filter(|r| {
            r.fields.get(&f.name).is_some_and(|v| match v {
                Value::String(s) => s.eq_ignore_ascii_case(&value),
                Value::Number(n) => n.to_string() == value,
                _ => false,
            })
        })
        .map(|r| r.id.clone())
        .collect();
    if matches.len() > 1 {
        let urls: Vec<String> = matches
            .iter()
            .map(|id| format!("/services/data/{version}/sobjects/{}/{id}", def.name))
            .collect();
        return Ok(Outcome::json(StatusCode::MULTIPLE_CHOICES, json!(urls)));
    }
    let existing = matches.into_iter().next();
    match req.method {
        Method::GET => {
            let id = existing.ok_or_else(errors::not_found)?;
            let record = store.records.get(&id).ok_or_else(errors::not_found)?;
            let only = fields_param(req.query.as_deref(), def)?;
            Ok(Outcome::json(
                StatusCode::OK,
                record_json(record, version, only.as_deref()),
            ))
        }
        Method::PATCH => {
            let mut body = parse_body(&req.body)?;
            match existing {
                Some(id) => {
                    body.retain(|k, _| !k.eq_ignore_ascii_case(&f.name));
                    update(state, store, def, &id, &body, req, version)?;
                    Ok(Outcome::json(
                        StatusCode::OK,
                        json!({"id": id, "success": true, "errors": [], "created": false}),
                    ))
                }
                None => {
                    if query_param(req.query.as_deref(), "updateOnly").as_deref() == Some("true")
                        || f.name == "Id"
                    {
                        return Err(errors::not_found());
                    }
                    body.retain(|k, _| !k.eq_ignore_ascii_case(&f.name));
                    body.insert(f.name.clone(), Value::String(value.clone()));
                    let id = create(state, store, def, &body, req, version)?;
                    Ok(Outcome {
                        status: StatusCode::CREATED,
                        body: Some(
                            json!({"id": id, "success": true, "errors": [], "created": true}),
                        ),
                        location: Some(format!(
                            "/services/data/{version}/sobjects/{}/{id}",
                            def.name
                        )),
                    })
                }
            }
        }
        Method::DELETE => {
            let id = existing.ok_or_else(errors::not_found)?;
            lock_failure(state, Some(&id))?;
            store.records.remove(&id);
            Ok(Outcome::empty(StatusCode::NO_CONTENT))
        }
        _ => Err(errors::method_not_allowed(
            req.method.as_str(),
            "GET, HEAD, PATCH, DELETE",
        )),
    }
}

/// `%40` → `@` etc. in path segments.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn object_summary(def: &SalesforceObjectDef) -> Value {
    json!({
        "name": def.name,
        "label": def.label,
        "keyPrefix": def.key_prefix,
        "custom": def.custom,
        "createable": true,
        "updateable": true,
        "deletable": true,
        "queryable": true,
        "urls": {
            "sobject": format!("/services/data/vXX.X/sobjects/{}", def.name),
            "describe": format!("/services/data/vXX.X/sobjects/{}/describe", def.name),
            "rowTemplate": format!("/services/data/vXX.X/sobjects/{}/{{ID}}", def.name),
        },
    })
}

fn list_sobjects(state: &SalesforceState) -> Outcome {
    let list: Vec<Value> = state.inner.objects.iter().map(object_summary).collect();
    Outcome::json(
        StatusCode::OK,
        json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": list}),
    )
}

fn describe(def: &SalesforceObjectDef) -> Value {
    let mut v = object_summary(def);
    v["fields"] = Value::Array(def.fields.iter().map(schema::describe_field).collect());
    v
}

fn limits(state: &SalesforceState) -> Value {
    let c = &state.inner.config;
    let used = state
        .inner
        .api
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .used;
    json!({
        "DailyApiRequests": {"Max": c.api_request_limit, "Remaining": c.api_request_limit.saturating_sub(used)},
        "DataStorageMB": {"Max": 5, "Remaining": 5},
        "FileStorageMB": {"Max": 20, "Remaining": 20},
    })
}
