//! API v2: persons, organizations, deals, activities, their searches, and the
//! pipeline/stage reads. v2 validates bodies strictly: unknown fields and wrong
//! JSON types answer 400 `ERR_SCHEMA_VALIDATION_FAILED`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, NaiveTime, Utc};
use serde_json::{Map, Value, json};

use super::errors::{self, PdError};
use super::webhooks::ChangeSource;
use super::{
    PipedriveActivity, PipedriveContactPoint, PipedriveDeal, PipedriveOrganization,
    PipedrivePerson, PipedriveState, Store, rfc3339,
};

pub(crate) type PdResult = Result<Response, PdError>;

pub(crate) fn finish(r: PdResult) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// The JSON types a v2 field may have.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Str,
    Int,
    Num,
    Bool,
    IntList,
    Object,
    /// `[{value, primary, label}]`
    Points,
    /// `YYYY-MM-DD`
    Date,
    /// `HH:MM`
    Time,
    /// 1, 3, 5 or 7
    Visibility,
    /// `[{person_id, primary}]`
    Participants,
    /// An array of objects.
    ObjectList,
}

fn kind_text(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "a string",
        Kind::Int | Kind::Visibility => "an integer",
        Kind::Num => "a number",
        Kind::Bool => "a boolean",
        Kind::IntList => "an array of integers",
        Kind::Object => "an object",
        Kind::Points => "an array of objects with a string 'value'",
        Kind::Date => "a date in format YYYY-MM-DD",
        Kind::Time => "a time in format HH:MM",
        Kind::Participants => "an array of objects with an integer 'person_id'",
        Kind::ObjectList => "an array of objects",
    }
}

pub(crate) fn valid_date(s: &str) -> bool {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

fn valid_time(s: &str) -> bool {
    NaiveTime::parse_from_str(s, "%H:%M").is_ok()
        || NaiveTime::parse_from_str(s, "%H:%M:%S").is_ok()
}

fn kind_ok(kind: Kind, v: &Value) -> bool {
    match kind {
        Kind::Str => v.is_string(),
        Kind::Int => v.is_u64(),
        Kind::Num => v.is_number(),
        Kind::Bool => v.is_boolean(),
        Kind::IntList => v.as_array().is_some_and(|a| a.iter().all(Value::is_u64)),
        Kind::Object => v.is_object(),
        Kind::Points => v.as_array().is_some_and(|a| {
            a.iter().all(|p| {
                p.get("value")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.trim().is_empty())
                    && p.get("primary")
                        .is_none_or(|x| x.is_boolean() || x.is_null())
                    && p.get("label").is_none_or(|x| x.is_string() || x.is_null())
            })
        }),
        Kind::Date => v.as_str().is_some_and(valid_date),
        Kind::Time => v.as_str().is_some_and(valid_time),
        Kind::Visibility => v.as_u64().is_some_and(|n| matches!(n, 1 | 3 | 5 | 7)),
        Kind::Participants => v.as_array().is_some_and(|a| {
            a.iter()
                .all(|p| p.get("person_id").is_some_and(Value::is_u64))
        }),
        Kind::ObjectList => v.as_array().is_some_and(|a| a.iter().all(Value::is_object)),
    }
}

/// Checks a v2 body against its schema: an object, known fields, right types.
pub(crate) fn check_body(
    body: &[u8],
    allowed: &[(&str, Kind)],
) -> Result<Map<String, Value>, PdError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| errors::schema(format!("Invalid JSON body: {e}")))?;
    let Value::Object(map) = value else {
        return Err(errors::schema("Request body must be an object"));
    };
    for (k, v) in &map {
        let Some((_, kind)) = allowed.iter().find(|(n, _)| n == k) else {
            return Err(errors::schema(format!(
                "Parameter '{k}' is not allowed for this request"
            )));
        };
        if !v.is_null() && !kind_ok(*kind, v) {
            return Err(errors::schema(format!(
                "{k}: Parameter '{k}' must be {}",
                kind_text(*kind)
            )));
        }
    }
    Ok(map)
}

pub(crate) fn opt_u64(m: &Map<String, Value>, k: &str) -> Option<u64> {
    m.get(k).and_then(Value::as_u64)
}

pub(crate) fn opt_str(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k).and_then(Value::as_str).map(str::to_string)
}

fn path_id(raw: &str, entity: &str) -> Result<u64, PdError> {
    raw.parse().map_err(|_| {
        errors::schema(format!(
            "id: Parameter 'id' must be an integer, got '{raw}' for {entity}"
        ))
    })
}

fn points(v: Option<&Value>, default_label: &str) -> Vec<PipedriveContactPoint> {
    let mut out: Vec<PipedriveContactPoint> = v
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some(PipedriveContactPoint {
                        value: p.get("value")?.as_str()?.trim().to_string(),
                        primary: p.get("primary").and_then(Value::as_bool).unwrap_or(false),
                        label: p
                            .get("label")
                            .and_then(Value::as_str)
                            .unwrap_or(default_label)
                            .to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let primaries = out.iter().filter(|p| p.primary).count();
    if primaries != 1 {
        for (i, p) in out.iter_mut().enumerate() {
            p.primary = i == 0;
        }
    }
    out
}

fn points_json(points: &[PipedriveContactPoint]) -> Value {
    Value::Array(
        points
            .iter()
            .map(|p| json!({"value": p.value, "primary": p.primary, "label": p.label}))
            .collect(),
    )
}

pub(crate) fn require_person(store: &Store, id: Option<u64>) -> Result<(), PdError> {
    match id {
        Some(id) if !store.persons.contains_key(&id) => Err(errors::bad_request(format!(
            "Person with id {id} not found"
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn require_org(store: &Store, id: Option<u64>) -> Result<(), PdError> {
    match id {
        Some(id) if !store.organizations.contains_key(&id) => Err(errors::bad_request(format!(
            "Organization with id {id} not found"
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn require_deal(store: &Store, id: Option<u64>) -> Result<(), PdError> {
    match id {
        Some(id) if !store.deals.contains_key(&id) => {
            Err(errors::bad_request(format!("Deal with id {id} not found")))
        }
        _ => Ok(()),
    }
}

pub(crate) fn require_lead(store: &Store, id: Option<&str>) -> Result<(), PdError> {
    match id {
        Some(id) if !store.leads.iter().any(|l| l.id == id) => {
            Err(errors::bad_request(format!("Lead with id {id} not found")))
        }
        _ => Ok(()),
    }
}

fn index(state: &PipedriveState, store: &mut Store, kind: &'static str, id: u64) {
    store.indexed_at.insert(
        (kind, id),
        Instant::now() + state.inner.config.search_index_delay,
    );
}

fn split_name(name: &str) -> (String, String) {
    let mut parts = name.trim().rsplitn(2, ' ');
    let last = parts.next().unwrap_or_default().to_string();
    match parts.next() {
        Some(first) => (first.to_string(), last),
        None => (last, String::new()),
    }
}

// ---------------------------------------------------------------------------
// Persons

const PERSON_FIELDS: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("owner_id", Kind::Int),
    ("org_id", Kind::Int),
    ("add_time", Kind::Str),
    ("update_time", Kind::Str),
    ("emails", Kind::Points),
    ("phones", Kind::Points),
    ("visible_to", Kind::Visibility),
    ("label_ids", Kind::IntList),
    ("marketing_status", Kind::Str),
    ("custom_fields", Kind::Object),
];

const MARKETING_STATUSES: &[&str] = &["no_consent", "unsubscribed", "subscribed", "archived"];

pub(crate) fn person_json(p: &PipedrivePerson) -> Value {
    let (first, last) = split_name(&p.name);
    let mut v = json!({
        "id": p.id,
        "name": p.name,
        "first_name": first,
        "last_name": last,
        "owner_id": p.owner_id,
        "org_id": p.org_id,
        "add_time": rfc3339(p.add_time),
        "update_time": rfc3339(p.update_time),
        "emails": points_json(&p.emails),
        "phones": points_json(&p.phones),
        "is_deleted": false,
        "visible_to": p.visible_to,
        "label_ids": p.label_ids,
        "picture_id": Value::Null,
        "custom_fields": p.custom_fields,
    });
    if let Some(m) = &p.marketing_status {
        v["marketing_status"] = json!(m);
    }
    v
}

fn apply_person(p: &mut PipedrivePerson, body: &Map<String, Value>) {
    if let Some(name) = opt_str(body, "name") {
        p.name = name;
    }
    if let Some(o) = opt_u64(body, "owner_id") {
        p.owner_id = o;
    }
    if body.contains_key("org_id") {
        p.org_id = opt_u64(body, "org_id");
    }
    if body.contains_key("emails") {
        p.emails = points(body.get("emails"), "work");
    }
    if body.contains_key("phones") {
        p.phones = points(body.get("phones"), "work");
    }
    if let Some(v) = opt_u64(body, "visible_to") {
        p.visible_to = v;
    }
    if let Some(Value::Array(ids)) = body.get("label_ids") {
        p.label_ids = ids.iter().filter_map(Value::as_u64).collect();
    }
    if let Some(m) = opt_str(body, "marketing_status") {
        p.marketing_status = Some(m);
    }
    if let Some(Value::Object(cf)) = body.get("custom_fields") {
        for (k, v) in cf {
            p.custom_fields.insert(k.clone(), v.clone());
        }
    }
    p.update_time = Utc::now();
}

fn check_person(store: &Store, body: &Map<String, Value>) -> Result<(), PdError> {
    if let Some(m) = opt_str(body, "marketing_status")
        && !MARKETING_STATUSES.contains(&m.as_str())
    {
        return Err(errors::schema(format!(
            "marketing_status: Parameter 'marketing_status' must be one of {}",
            MARKETING_STATUSES.join(", ")
        )));
    }
    if body
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| n.trim().is_empty())
    {
        return Err(errors::schema("name: Parameter 'name' must not be empty"));
    }
    require_org(store, opt_u64(body, "org_id"))
}

/// `POST /api/v2/persons`
pub(crate) async fn create_person(State(state): State<PipedriveState>, body: Bytes) -> Response {
    finish((|| -> PdResult {
        let body = check_body(&body, PERSON_FIELDS)?;
        let mut store = state.store();
        check_person(&store, &body)?;
        let id = store.next_id();
        let now = Utc::now();
        let mut p = PipedrivePerson {
            id,
            name: String::new(),
            owner_id: state.inner.config.user.id,
            org_id: None,
            emails: Vec::new(),
            phones: Vec::new(),
            visible_to: 3,
            label_ids: Vec::new(),
            marketing_status: None,
            custom_fields: Map::new(),
            add_time: now,
            update_time: now,
        };
        apply_person(&mut p, &body);
        if p.marketing_status.is_none()
            && p.primary_email().is_some()
            && body.contains_key("marketing_status")
        {
            p.marketing_status = Some("no_consent".into());
        }
        let out = person_json(&p);
        store.persons.insert(id, p);
        index(&state, &mut store, "person", id);
        state.changed("person", id, None, Some(out.clone()), ChangeSource::Api);
        Ok(errors::ok(StatusCode::OK, out))
    })())
}

/// `GET /api/v2/persons/{id}`
pub(crate) async fn get_person(
    State(state): State<PipedriveState>,
    Path(id): Path<String>,
) -> Response {
    finish((|| -> PdResult {
        let id = path_id(&id, "person")?;
        let store = state.store();
        let p = store
            .persons
            .get(&id)
            .ok_or_else(|| errors::not_found("Person"))?;
        Ok(errors::ok(StatusCode::OK, person_json(p)))
    })())
}

/// `PATCH /api/v2/persons/{id}`
pub(crate) async fn update_person(
    State(state): State<PipedriveState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    finish((|| -> PdResult {
        let id = path_id(&id, "person")?;
        let body = check_body(&body, PERSON_FIELDS)?;
        let mut store = state.store();
        if !store.persons.contains_key(&id) {
            return Err(errors::not_found("Person"));
        }
        check_person(&store, &body)?;
        let (before, out) = {
            let p = store
                .persons
                .get_mut(&id)
                .ok_or_else(|| errors::not_found("Person"))?;
            let before = person_json(p);
            apply_person(p, &body);
            (before, person_json(p))
        };
        index(&state, &mut store, "person", id);
        state.changed(
            "person",
            id,
            Some(before),
            Some(out.clone()),
            ChangeSource::Api,
        );
        Ok(errors::ok(StatusCode::OK, out))
    })())
}

/// `DELETE /api/v2/persons/{id}`
pub(crate) async fn delete_person(
    State(state): State<PipedriveState>,
    Path(id): Path<String>,
) -> Response {
    finish((|| -> PdResult {
        let id = path_id(&id, "person")?;
        let mut store = state.store();
        let gone = store
            .persons
            .remove(&id)
            .ok_or_else(|| errors::not_found("Person"))?;
        state.changed(
            "person",
            id,
            Some(person_json(&gone)),
            None,
            ChangeSource::Api,
        );
        Ok(errors::ok(StatusCode::OK, json!({ "id": id })))
    })())
}

// ---------------------------------------------------------------------------
// Search

struct SearchParams {
    term: String,
    fields: Vec<String>,
    exact: bool,
    organization_id: Option<u64>,
    limit: usize,
    offset: usize,
}

fn search_params(query: Option<&str>, allowed_fields: &[&str]) -> Result<SearchParams, PdError> {
    let pairs: Vec<(String, String)> = query
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let exact = match get("exact_match").as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(errors::schema(format!(
                "exact_match: Parameter 'exact_match' must be a boolean, got '{other}'"
            )));
        }
    };
    let Some(term) = get("term") else {
        return Err(errors::schema("term: Parameter 'term' is required"));
    };
    let min = if exact { 1 } else { 2 };
    if term.trim().chars().count() < min {
        return Err(errors::schema(format!(
            "term: Parameter 'term' must be at least {min} characters long"
        )));
    }
    let fields: Vec<String> = match get("fields") {
        Some(f) => f
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => allowed_fields.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(bad) = fields
        .iter()
        .find(|f| !allowed_fields.contains(&f.as_str()))
    {
        return Err(errors::schema(format!(
            "fields: '{bad}' is not one of {}",
            allowed_fields.join(", ")
        )));
    }
    let organization_id = match get("organization_id") {
        Some(v) => Some(v.parse().map_err(|_| {
            errors::schema("organization_id: Parameter 'organization_id' must be an integer")
        })?),
        None => None,
    };
    let limit = match get("limit") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| errors::schema("limit: Parameter 'limit' must be an integer"))?,
        None => 100,
    };
    if limit == 0 || limit > 500 {
        return Err(errors::schema(
            "limit: Parameter 'limit' must be between 1 and 500",
        ));
    }
    let offset = get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok(SearchParams {
        term: term.trim().to_string(),
        fields,
        exact,
        organization_id,
        limit,
        offset,
    })
}

/// Score of `value` against the term: 1.0 exact, 0.5 partial, None no match.
fn score(value: &str, term: &str, exact: bool) -> Option<f64> {
    let v = value.trim().to_lowercase();
    let t = term.to_lowercase();
    if v == t {
        Some(1.0)
    } else if !exact && v.contains(&t) {
        Some(0.5)
    } else {
        None
    }
}

fn custom_values(cf: &Map<String, Value>) -> Vec<String> {
    cf.values()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

fn page(mut hits: Vec<(f64, Value)>, params: &SearchParams) -> Response {
    hits.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    let total = hits.len();
    let items: Vec<Value> = hits
        .into_iter()
        .skip(params.offset)
        .take(params.limit)
        .map(|(s, item)| json!({"result_score": s, "item": item}))
        .collect();
    let next =
        (params.offset + params.limit < total).then(|| (params.offset + params.limit).to_string());
    errors::ok_with(
        StatusCode::OK,
        json!({ "items": items }),
        json!({ "next_cursor": next }),
    )
}

/// `GET /api/v2/persons/search?term=&fields=&exact_match=&organization_id=`
pub(crate) async fn search_persons(
    State(state): State<PipedriveState>,
    RawQuery(query): RawQuery,
) -> Response {
    finish((|| -> PdResult {
        let params = search_params(
            query.as_deref(),
            &["custom_fields", "email", "notes", "phone", "name"],
        )?;
        let now = Instant::now();
        let store = state.store();
        let mut hits = Vec::new();
        for p in store.persons.values() {
            if !store.searchable("person", p.id, now) {
                continue;
            }
            if params.organization_id.is_some_and(|o| p.org_id != Some(o)) {
                continue;
            }
            let mut best: Option<f64> = None;
            let mut consider = |value: &str| {
                if let Some(s) = score(value, &params.term, params.exact) {
                    best = Some(best.map_or(s, |b: f64| b.max(s)));
                }
            };
            for f in &params.fields {
                match f.as_str() {
                    "name" => consider(&p.name),
                    "email" => p.emails.iter().for_each(|e| consider(&e.value)),
                    "phone" => p.phones.iter().for_each(|e| consider(&e.value)),
                    "custom_fields" => custom_values(&p.custom_fields)
                        .iter()
                        .for_each(|v| consider(v)),
                    _ => {}
                }
            }
            if let Some(s) = best {
                let org = p
                    .org_id
                    .and_then(|o| store.organizations.get(&o))
                    .map(|o| json!({"id": o.id, "name": o.name, "address": o.address}));
                hits.push((
                    s,
                    json!({
                        "id": p.id,
                        "type": "person",
                        "name": p.name,
                        "phones": p.phones.iter().map(|x| x.value.clone()).collect::<Vec<_>>(),
                        "emails": p.emails.iter().map(|x| x.value.clone()).collect::<Vec<_>>(),
                        "primary_email": p.primary_email(),
                        "visible_to": p.visible_to,
                        "owner": {"id": p.owner_id},
                        "organization": org,
                        "custom_fields": custom_values(&p.custom_fields),
                        "notes": [],
                        "update_time": rfc3339(p.update_time),
                    }),
                ));
            }
        }
        Ok(page(hits, &params))
    })())
}

// ---------------------------------------------------------------------------
// Organizations

const ORG_FIELDS: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("owner_id", Kind::Int),
    ("add_time", Kind::Str),
    ("update_time", Kind::Str),
    ("visible_to", Kind::Visibility),
    ("label_ids", Kind::IntList),
    ("address", Kind::Object),
    ("custom_fields", Kind::Object),
];

pub(crate) fn org_json(o: &PipedriveOrganization) -> Value {
    json!({
        "id": o.id,
        "name": o.name,
        "owner_id": o.owner_id,
        "add_time": rfc3339(o.add_time),
        "update_time": rfc3339(o.update_time),
        "is_deleted": false,
        "visible_to": o.visible_to,
        "label_ids": o.label_ids,
        "address": o.address.as_ref().map(|a| json!({"value": a})),
        "custom_fields": o.custom_fields,
    })
}

pub(crate) fn apply_org(o: &mut PipedriveOrganization, body: &Map<String, Value>) {
    if let Some(n) = opt_str(body, "name") {
        o.name = n;
    }
    if let Some(v) = opt_u64(body, "owner_id") {
        o.owner_id = v;
    }
    if let Some(v) = opt_u64(body, "visible_to") {
        o.visible_to = v;
    }
    if let Some(Value::Array(ids)) = body.get("label_ids") {
        o.label_ids = ids.iter().filter_map(Value::as_u64).collect();
    }
    if body.contains_key("address") {
        o.address = body
            .get("address")
            .and_then(|a| a.get("value"))
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if let Some(Value::Object(cf)) = body.get("custom_fields") {
        for (k, v) in cf {
            o.custom_fields.insert(k.clone(), v.clone());
        }
    }
    o.update_time = Utc::now();
}

/// Each `custom_fields` key must be a custom field of `object` in the
/// company (Pipedrive refuses unknown keys).
fn check_custom_keys(
    state: &PipedriveState,
    object: &str,
    body: &Map<String, Value>,
) -> Result<(), PdError> {
    let Some(Value::Object(cf)) = body.get("custom_fields") else {
        return Ok(());
    };
    for key in cf.keys() {
        let known = state
            .inner
            .config
            .custom_fields
            .iter()
            .any(|f| f.object == object && &f.key == key);
        if !known {
            return Err(errors::schema(format!(
                "custom_fields: '{key}' is not a custom field of {object}s"
            )));
        }
    }
    Ok(())
}

fn check_org_name(body: &Map<String, Value>, creating: bool) -> Result<(), PdError> {
    let name = body.get("name").and_then(Value::as_str);
    let cleared = body.get("name").is_some_and(Value::is_null);
    if (creating && name.is_none()) || cleared || name.is_some_and(|n| n.trim().is_empty()) {
        return Err(errors::schema("name: Parameter 'name' is required"));
    }
    Ok(())
}

/// `POST /api/v2/organizations`
pub(crate) async fn create_organization(
    State(state): State<PipedriveState>,
    body: Bytes,
) -> Response {
    finish((|| -> PdResult {
        let body = check_body(&body, ORG_FIELDS)?;
        check_org_name(&body, true)?;
        check_custom_keys(&state, "organization", &body)?;
        let mut store = state.store();
        let id = store.next_id();
        let now = Utc::now();
        let mut o = PipedriveOrganization {
            id,
            name: String::new(),
            owner_id: state.inner.config.user.id,
            address: None,
            visible_to: 3,
            label_ids: Vec::new(),
            custom_fields: Map::new(),
            add_time: now,
            update_time: now,
        };
        apply_org(&mut o, &body);
        let out = org_json(&o);
        store.organizations.insert(id, o);
        index(&state, &mut store, "organization", id);
        state.changed(
            "organization",
            id,
            None,
            Some(out.clone()),
            ChangeSource::Api,
        );
        Ok(errors::ok(StatusCode::OK, out))
    })())
}

/// `GET /api/v2/organizations/{id}`
pub(crate) async fn get_organization(
    State(state): State<PipedriveState>,
    Path(id): Path<String>,
) -> Response {
    finish((|| -> PdResult {
        let id = path_id(&id, "organization")?;
        let store = state.store();
        let o = store
            .organizations
            .get(&id)
            .ok_or_else(|| errors::not_found("Organization"))?;
        Ok(errors::ok(StatusCode::OK, org_json(o)))
    })())
}

/// `PATCH /api/v2/organizations/{id}`
pub(crate) async fn update_organization(
    State(state): State<PipedriveState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    finish((|| -> PdResult {
        let id = path_id(&id, "organization")?;
        let body = check_body(&body, ORG_FIELDS)?;
        check_org_name(&body, false)?;
        check_custom_keys(&state, "organization", &body)?;
        let mut store = state.store();
        let (before, out) = {
            let o = store
                .organizations
                .get_mut(&id)
                .ok_or_else(|| errors::not_found("Organization"))?;
            let before = org_json(o);
            apply_org(o, &body);
            (before, org_json(o))
        };
        index(&state, &mut store, "organization", id);
        state.changed(
            "organization",
            id,
            Some(before),
            Some(out.clone()),
            ChangeSource::Api,
        );
        Ok(errors::ok(StatusCode::OK, out))
    })())
}

/// `GET /api/v2/organizations/search?term=&fields=&exact_match=`
pub(crate) async fn search_organizations(
    State(state): State<PipedriveState>,
    RawQuery(query): RawQuery,
) -> Response {
    finish((|| -> PdResult {
        let params = search_params(
            query.as_deref(),
            &["address", "custom_fields", "notes", "name"],
        )?;
        let now = Instant::now();
        let store = state.store();
        let mut hits = Vec::new();
        for o in store.organizations.values() {
            if !store.searchable("organization", o.id, now) {
                continue;
            }
            let mut best: Option<f64> = None;
            for f in &params.fields {
                let values: Vec<String> = match f.as_str() {
                    "name" => vec![o.name.clone()],
                    "address" => o.address.iter().cloned().collect(),
                    "custom_fields" => custom_values(&o.custom_fields),
                    _ => Vec::new(),
                };
                for v in values {
                    if let Some(s) = score(&v, &params.term, params.exact) {
                        best = Some(best.map_or(s, |b: f64| b.max(s)));
                    }
                }
            }
            if let Some(s) = best {
                hits.push((
                    s,
                    json!({
                        "id": o.id,
                        "type": "organization",
                        "name": o.name,
                        "address": o.address,
                        "visible_to": o.visible_to,
                        "owner": {"id": o.owner_id},
                        "custom_fields": custom_values(&o.custom_fields),
                        "notes": [],
                        "update_time": rfc3339(o.update_time),
                    }),
                ));
            }
        }
        Ok(page(hits, &params))
    })())
}

// ---------------------------------------------------------------------------
// Deals

const DEAL_FIELDS: &[(&str, Kind)] = &[
    ("title", Kind::Str),
    ("owner_id", Kind::Int),
    ("person_id", Kind::Int),
    ("org_id", Kind::Int),
    ("pipeline_id", Kind::Int),
    ("stage_id", Kind::Int),
    ("value", Kind::Num),
    ("currency", Kind::Str),
    ("add_time", Kind::Str),
    ("update_time", Kind::Str),
    ("stage_change_time", Kind::Str),
    ("is_deleted", Kind::Bool),
    ("is_archived", Kind::Bool),
    ("archive_time", Kind::Str),
    ("status", Kind::Str),
    ("probability", Kind::Num),
    ("lost_reason", Kind::Str),
    ("visible_to", Kind::Visibility),
    ("close_time", Kind::Str),
    ("won_time", Kind::Str),
    ("lost_time", Kind::Str),
    ("expected_close_date", Kind::Date),
    ("label_ids", Kind::IntList),
    ("custom_fields", Kind::Object),
];

pub(crate) fn deal_json(d: &PipedriveDeal) -> Value {
    json!({
        "id": d.id,
        "title": d.title,
        "creator_user_id": d.owner_id,
        "owner_id": d.owner_id,
        "value": d.value,
        "person_id": d.person_id,
        "org_id": d.org_id,
        "stage_id": d.stage_id,
        "pipeline_id": d.pipeline_id,
        "currency": d.currency,
        "add_time": rfc3339(d.add_time),
        "update_time": rfc3339(d.update_time),
        "stage_change_time": Value::Null,
        "is_deleted": false,
        "is_archived": false,
        "status": d.status,
        "probability": d.probability,
        "lost_reason": d.lost_reason,
        "visible_to": d.visible_to,
        "close_time": Value::Null,
        "won_time": Value::Null,
        "lost_time": Value::Null,
        "expected_close_date": d.expected_close_date,
        "label_ids": d.label_ids,
        "origin": "API",
        "origin_id": Value::Null,
        "channel": Value::Null,
        "channel_id": Value::Null,
        "custom_fields": d.custom_fields,
    })
}

/// Resolves (pipeline, stage) from the body and the deal's current values.
pub(crate) fn resolve_stage(
    state: &PipedriveState,
    body: &Map<String, Value>,
    current: Option<(u64, u64)>,
) -> Result<(u64, u64), PdError> {
    let pipelines = &state.inner.config.pipelines;
    let pipeline_id = opt_u64(body, "pipeline_id");
    let stage_id = opt_u64(body, "stage_id");
    if let Some(p) = pipeline_id
        && !pipelines.iter().any(|x| x.id == p)
    {
        return Err(errors::bad_request(format!(
            "Pipeline with id {p} not found"
        )));
    }
    match (pipeline_id, stage_id) {
        (_, Some(s)) => {
            let Some(owner) = pipelines
                .iter()
                .find(|p| p.stages.iter().any(|st| st.id == s))
            else {
                return Err(errors::bad_request(format!("Stage with id {s} not found")));
            };
            if pipeline_id.is_some_and(|p| p != owner.id) {
                return Err(errors::bad_request(format!(
                    "Stage with id {s} does not belong to pipeline with id {}",
                    pipeline_id.unwrap_or_default()
                )));
            }
            Ok((owner.id, s))
        }
        (Some(p), None) => {
            let pipeline = pipelines
                .iter()
                .find(|x| x.id == p)
                .ok_or_else(|| errors::bad_request(format!("Pipeline with id {p} not found")))?;
            match current {
                Some((cp, cs)) if cp == p => Ok((cp, cs)),
                _ => pipeline.stages.first().map(|s| (p, s.id)).ok_or_else(|| {
                    errors::bad_request(format!("Pipeline with id {p} has no stages"))
                }),
            }
        }
        (None, None) => match current {
            Some(c) => Ok(c),
            None => pipelines
                .first()
                .and_then(|p| p.stages.first().map(|s| (p.id, s.id)))
                .ok_or_else(|| errors::bad_request("The company has no pipelines")),
        },
    }
}

fn check_deal(store: &Store, body: &Map<String, Value>, creating: bool) -> Result<(), PdError> {
    let title = body.get("title").and_then(Value::as_str);
    let cleared = body.get("title").is_some_and(Value::is_null);
    if (creating && title.is_none()) || cleared || title.is_some_and(|t| t.trim().is_empty()) {
        return Err(errors::schema("title: Parameter 'title' is required"));
    }
    for k in ["currency", "status", "stage_id", "pipeline_id"] {
        if body.get(k).is_some_and(Value::is_null) {
            return Err(errors::schema(format!(
                "{k}: Parameter '{k}' cannot be null"
            )));
        }
    }
    if let Some(status) = opt_str(body, "status") {
        if !matches!(status.as_str(), "open" | "won" | "lost") {
            return Err(errors::schema(
                "status: Parameter 'status' must be one of open, won, lost",
            ));
        }
        if status != "lost" && body.get("lost_reason").is_some_and(|v| !v.is_null()) {
            return Err(errors::bad_request(
                "lost_reason can only be set if deal status is lost",
            ));
        }
    }
    if let Some(p) = body.get("probability").and_then(Value::as_f64)
        && !(0.0..=100.0).contains(&p)
    {
        return Err(errors::schema(
            "probability: Parameter 'probability' must be between 0 and 100",
        ));
    }
    if let Some(c) = opt_str(body, "currency")
        && (c.len() != 3 || !c.chars().all(|x| x.is_ascii_alphabetic()))
    {
        return Err(errors::bad_request(format!(
            "Currency {c} is not a valid currency code"
        )));
    }
    require_person(store, opt_u64(body, "person_id"))?;
    require_org(store, opt_u64(body, "org_id"))
}

pub(crate) fn apply_deal(d: &mut PipedriveDeal, body: &Map<String, Value>, stage: (u64, u64)) {
    if let Some(t) = opt_str(body, "title") {
        d.title = t;
    }
    if let Some(v) = opt_u64(body, "owner_id") {
        d.owner_id = v;
    }
    if body.contains_key("person_id") {
        d.person_id = opt_u64(body, "person_id");
    }
    if body.contains_key("org_id") {
        d.org_id = opt_u64(body, "org_id");
    }
    (d.pipeline_id, d.stage_id) = stage;
    if let Some(v) = body.get("value").and_then(Value::as_f64) {
        d.value = v;
    }
    if let Some(c) = opt_str(body, "currency") {
        d.currency = c.to_uppercase();
    }
    if let Some(s) = opt_str(body, "status") {
        d.status = s;
    }
    if body.contains_key("probability") {
        d.probability = body.get("probability").and_then(Value::as_f64);
    }
    if body.contains_key("lost_reason") {
        d.lost_reason = opt_str(body, "lost_reason");
    }
    if body.contains_key("expected_close_date") {
        d.expected_close_date = opt_str(body, "expected_close_date");
    }
    if let Some(v) = opt_u64(body, "visible_to") {
        d.visible_to = v;
    }
    if let Some(Value::Array(ids)) = body.get("label_ids") {
        d.label_ids = ids.iter().filter_map(Value::as_u64).collect();
    }
    if let Some(Value::Object(cf)) = body.get("custom_fields") {
        for (k, v) in cf {
            d.custom_fields.insert(k.clone(), v.clone());
        }
    }
    d.update_time = Utc::now();
}

/// `POST /api/v2/deals`
pub(crate) async fn create_deal(State(state): State<PipedriveState>, body: Bytes) -> Response {
    finish((|| -> PdResult {
        let body = check_body(&body, DEAL_FIELDS)?;
        let mut store = state.store();
        check_deal(&store, &body, true)?;
        check_custom_keys(&state, "deal", &body)?;
        let stage = resolve_stage(&state, &body, None)?;
        let id = store.next_id();
        let now = Utc::now();
        let mut d = PipedriveDeal {
            id,
            title: String::new(),
            owner_id: state.inner.config.user.id,
            person_id: None,
            org_id: None,
            pipeline_id: stage.0,
            stage_id: stage.1,
            value: 0.0,
            currency: "USD".into(),
            status: "open".into(),
            probability: None,
            lost_reason: None,
            expected_close_date: None,
            visible_to: 3,
            label_ids: Vec::new(),
            custom_fields: Map::new(),
            add_time: now,
            update_time: now,
        };
        apply_deal(&mut d, &body, stage);
        let out = deal_json(&d);
        store.deals.insert(id, d);
        index(&state, &mut store, "deal", id);
        state.changed("deal", id, None, Some(out.clone()), ChangeSource::Api);
        Ok(errors::ok(StatusCode::OK, out))
    })())
}

/// `GET /api/v2/organizations`: see [`list_page`].
pub(crate) async fn list_organizations(
    State(state): State<PipedriveState>,
    RawQuery(query): RawQuery,
) -> Response {
    let rows = state
        .store()
        .organizations
        .values()
        .map(|o| (o.id, o.add_time, o.update_time, org_json(o)))
        .collect();
    finish(list_page(query.as_deref(), rows))
}

/// A v2 list page of `rows` (id, add time, update time, JSON): filtered by
/// `updated_since` (RFC 3339), sorted by `sort_by` (`id` default,
/// `update_time`, `add_time`) in `sort_direction` (`asc` default, `desc`),
/// `limit` (1–500, default 100) from `cursor`. Read from the records: a new
/// record is listed at once (only search lags).
fn list_page(
    query: Option<&str>,
    mut rows: Vec<(u64, chrono::DateTime<Utc>, chrono::DateTime<Utc>, Value)>,
) -> PdResult {
    let pairs: Vec<(String, String)> = query
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit: usize = match get("limit") {
        None => 100,
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| errors::schema("limit: Parameter 'limit' must be between 1 and 500"))?,
    };
    let offset: usize = get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    if let Some(since) = get("updated_since") {
        let since = chrono::DateTime::parse_from_rfc3339(since).map_err(|_| {
            errors::schema("updated_since: Parameter 'updated_since' must be an RFC 3339 date-time")
        })?;
        rows.retain(|r| r.2 >= since);
    }
    match get("sort_by").unwrap_or("id") {
        "id" => rows.sort_by_key(|r| r.0),
        "add_time" => rows.sort_by_key(|r| (r.1, r.0)),
        "update_time" => rows.sort_by_key(|r| (r.2, r.0)),
        other => {
            return Err(errors::schema(format!(
                "sort_by: Parameter 'sort_by' must be one of id, update_time, add_time (got '{other}')"
            )));
        }
    }
    match get("sort_direction").unwrap_or("asc") {
        "asc" => {}
        "desc" => rows.reverse(),
        other => {
            return Err(errors::schema(format!(
                "sort_direction: Parameter 'sort_direction' must be one of asc, desc (got '{other}')"
            )));
        }
    }
    let total = rows.len();
    let page: Vec<Value> = rows
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|r| r.3)
        .collect();
    let next = (total > offset + page.len()).then(|| (offset + page.len()).to_string());
    Ok(errors::ok_with(
        StatusCode::OK,
        Value::Array(page),
        json!({ "next_cursor": next }),
    ))
}

/// `GET /api/v2/deals`: `person_id`, `org_id`, `status` (comma-separated
/// `open`, `won`, `lost`; all of them by default), and [`list_page`]'s
/// parameters.
pub(crate) async fn list_deals(
    State(state): State<PipedriveState>,
    RawQuery(query): RawQuery,
) -> Response {
    finish((|| -> PdResult {
        let pairs: Vec<(String, String)> = query
            .as_deref()
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let number = |k: &str| -> Result<Option<u64>, PdError> {
            match get(k) {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| {
                    errors::schema(format!("{k}: Parameter '{k}' must be an integer"))
                }),
            }
        };
        let (person, org) = (number("person_id")?, number("org_id")?);
        let statuses: Vec<&str> = match get("status") {
            None => vec!["open", "won", "lost"],
            Some(s) => s.split(',').map(str::trim).collect(),
        };
        if let Some(bad) = statuses
            .iter()
            .find(|s| !matches!(**s, "open" | "won" | "lost" | "deleted"))
        {
            return Err(errors::schema(format!(
                "status: Parameter 'status' must be one of open, won, lost, deleted (got '{bad}')"
            )));
        }
        let rows = state
            .store()
            .deals
            .values()
            .filter(|d| statuses.contains(&d.status.as_str()))
            .filter(|d| person.is_none_or(|p| d.person_id == Some(p)))
            .filter(|d| org.is_none_or(|o| d.org_id == Some(o)))
            .map(|d| (d.id, d.add_time, d.update_time, deal_json(d)))
            .collect();
        list_page(query.as_deref(), rows)
    })())
}

/// `GET /api/v2/deals/{id}`
pub(crate) async fn get_deal(
    State(state): State<PipedriveState>,
    Path(id): Path<String>,
) -> Response {
    finish((|| -> PdResult {
        let id = path_id(&id, "deal")?;
        let store = state.store();
        let d = store
            .deals
            .get(&id)
            .ok_or_else(|| errors::not_found("Deal"))?;
        Ok(errors::ok(StatusCode::OK, deal_json(d)))
    })())
}

/// `PATCH /api/v2/deals/{id}`
pub(crate) async fn update_deal(
    State(state): State<PipedriveState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    finish((|| -> PdResult {
        let id = path_id(&id, "deal")?;
        let body = check_body(&body, DEAL_FIELDS)?;
        let mut store = state.store();
        let current = store
            .deals
            .get(&id)
            .map(|d| (d.pipeline_id, d.stage_id))
            .ok_or_else(|| errors::not_found("Deal"))?;
        check_deal(&store, &body, false)?;
        check_custom_keys(&state, "deal", &body)?;
        let stage = resolve_stage(&state, &body, Some(current))?;
        let (before, out) = {
            let d = store
                .deals
                .get_mut(&id)
                .ok_or_else(|| errors::not_found("Deal"))?;
            let before = deal_json(d);
            apply_deal(d, &body, stage);
            (before, deal_json(d))
        };
        index(&state, &mut store, "deal", id);
        state.changed(
            "deal",
            id,
            Some(before),
            Some(out.clone()),
            ChangeSource::Api,
        );
        Ok(errors::ok(StatusCode::OK, out))
    })())
}

/// `DELETE /api/v2/deals/{id}`
pub(crate) async fn delete_deal(
    State(state): State<PipedriveState>,
    Path(id): Path<String>,
) -> Response {
    finish((|| -> PdResult {
        let id = path_id(&id, "deal")?;
        let mut store = state.store();
        let gone = store
            .deals
            .remove(&id)
            .ok_or_else(|| errors::not_found("Deal"))?;
        state.changed("deal", id, Some(deal_json(&gone)), None, ChangeSource::Api);
        Ok(errors::ok(StatusCode::OK, json!({ "id": id })))
    })())
}

/// `DELETE /api/v2/organizations/{id}`: the organization's deals and
/// persons lose it.
pub(crate) async fn delete_organization(
    State(state): State<PipedriveState>,
    Path(id): Path<String>,
) -> Response {
    finish((|| -> PdResult {
        let id = path_id(&id, "organization")?;
        let mut store = state.store();
        let gone = store
            .organizations
            .remove(&id)
            .ok_or_else(|| errors::not_found("Organization"))?;
        state.changed(
            "organization",
            id,
            Some(org_json(&gone)),
            None,
            ChangeSource::Api,
        );
        for d in store.deals.values_mut().filter(|d| d.org_id == Some(id)) {
            d.org_id = None;
        }
        for p in store.persons.values_mut().filter(|p| p.org_id == Some(id)) {
            p.org_id = None;
        }
        Ok(errors::ok(StatusCode::OK, json!({ "id": id })))
    })())
}

/// `GET /api/v2/deals/search?term=&fields=&exact_match=&organization_id=`
/// (fields `custom_fields`, `notes`, `title`).
pub(crate) async fn search_deals(
    State(state): State<PipedriveState>,
    RawQuery(query): RawQuery,
) -> Response {
    finish((|| -> PdResult {
        let params = search_params(query.as_deref(), &["custom_fields", "notes", "title"])?;
        let now = Instant::now();
        let store = state.store();
        let mut hits = Vec::new();
        for d in store.deals.values() {
            if !store.searchable("deal", d.id, now)
                || params.organization_id.is_some_and(|o| d.org_id != Some(o))
            {
                continue;
            }
            let mut best: Option<f64> = None;
            for f in &params.fields {
                let values: Vec<String> = match f.as_str() {
                    "title" => vec![d.title.clone()],
                    "custom_fields" => custom_values(&d.custom_fields),
                    _ => Vec::new(),
                };
                for v in values {
                    if let Some(s) = score(&v, &params.term, params.exact) {
                        best = Some(best.map_or(s, |b: f64| b.max(s)));
                    }
                }
            }
            if let Some(s) = best {
                let stage_name = state
                    .inner
                    .config
                    .pipelines
                    .iter()
                    .flat_map(|p| &p.stages)
                    .find(|st| st.id == d.stage_id)
                    .map(|st| st.name.clone());
                hits.push((
                    s,
                    json!({
                        "id": d.id,
                        "type": "deal",
                        "title": d.title,
                        "value": d.value,
                        "currency": d.currency,
                        "status": d.status,
                        "visible_to": d.visible_to,
                        "owner": {"id": d.owner_id},
                        "stage": {"id": d.stage_id, "name": stage_name},
                        "person": d.person_id.map(|id| json!({"id": id})),
                        "organization": d.org_id.map(|id| json!({"id": id})),
                        "custom_fields": custom_values(&d.custom_fields),
                        "notes": [],
                    }),
                ));
            }
        }
        Ok(page(hits, &params))
    })())
}

// ---------------------------------------------------------------------------
// Activities

const ACTIVITY_FIELDS: &[(&str, Kind)] = &[
    ("subject", Kind::Str),
    ("type", Kind::Str),
    ("owner_id", Kind::Int),
    ("deal_id", Kind::Int),
    ("lead_id", Kind::Str),
    ("person_id", Kind::Int),
    ("org_id", Kind::Int),
    ("project_id", Kind::Int),
    ("due_date", Kind::Date),
    ("due_time", Kind::Time),
    ("duration", Kind::Time),
    ("busy", Kind::Bool),
    ("done", Kind::Bool),
    ("location", Kind::Object),
    ("participants", Kind::Participants),
    ("attendees", Kind::ObjectList),
    ("public_description", Kind::Str),
    ("priority", Kind::Int),
    ("note", Kind::Str),
];

pub(crate) fn activity_json(a: &PipedriveActivity) -> Value {
    json!({
        "id": a.id,
        "subject": a.subject,
        "type": a.activity_type,
        "owner_id": a.owner_id,
        "creator_user_id": a.owner_id,
        "is_deleted": false,
        "add_time": rfc3339(a.add_time),
        "update_time": rfc3339(a.update_time),
        "deal_id": a.deal_id,
        "lead_id": a.lead_id,
        "person_id": a.person_id,
        "org_id": a.org_id,
        "project_id": Value::Null,
        "due_date": a.due_date,
        "due_time": a.due_time,
        "duration": a.duration,
        "busy": a.busy,
        "done": a.done,
        "marked_as_done_time": Value::Null,
        "location": Value::Null,
        "participants": a.participants.iter().map(|(p, primary)| json!({"person_id": p, "primary": primary})).collect::<Vec<_>>(),
        "attendees": [],
        "public_description": a.public_description,
        "priority": a.priority,
        "note": a.note,
    })
}

/// `POST /api/v2/activities`
pub(crate) async fn create_activity(State(state): State<PipedriveState>, body: Bytes) -> Response {
    finish((|| -> PdResult {
        let body = check_body(&body, ACTIVITY_FIELDS)?;
        let types = &state.inner.config.activity_types;
        let activity_type = match opt_str(&body, "type") {
            Some(t) if types.contains(&t) => t,
            Some(t) => {
                return Err(errors::bad_request(format!(
                    "Activity type '{t}' does not exist or is not active"
                )));
            }
            None => types.first().cloned().unwrap_or_else(|| "task".into()),
        };
        let mut store = state.store();
        require_person(&store, opt_u64(&body, "person_id"))?;
        require_org(&store, opt_u64(&body, "org_id"))?;
        require_deal(&store, opt_u64(&body, "deal_id"))?;
        require_lead(&store, body.get("lead_id").and_then(Value::as_str))?;
        let participants: Vec<(u64, bool)> = body
            .get("participants")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| {
                        Some((
                            p.get("person_id")?.as_u64()?,
                            p.get("primary").and_then(Value::as_bool).unwrap_or(false),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (p, _) in &participants {
            require_person(&store, Some(*p))?;
        }
        let id = store.next_id();
        let now = Utc::now();
        let subject = opt_str(&body, "subject")
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| {
                let mut c = activity_type.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            });
        let a = PipedriveActivity {
            id,
            subject,
            activity_type,
            owner_id: opt_u64(&body, "owner_id").unwrap_or(state.inner.config.user.id),
            deal_id: opt_u64(&body, "deal_id"),
            lead_id: opt_str(&body, "lead_id"),
            person_id: opt_u64(&body, "person_id").or_else(|| {
                participants
                    .iter()
                    .find(|(_, p)| *p)
                    .or(participants.first())
                    .map(|(id, _)| *id)
            }),
            org_id: opt_u64(&body, "org_id"),
            due_date: opt_str(&body, "due_date"),
            due_time: opt_str(&body, "due_time"),
            duration: opt_str(&body, "duration"),
            busy: body.get("busy").and_then(Value::as_bool).unwrap_or(false),
            done: body.get("done").and_then(Value::as_bool).unwrap_or(false),
            note: opt_str(&body, "note"),
            public_description: opt_str(&body, "public_description"),
            participants,
            priority: body.get("priority").and_then(Value::as_i64),
            add_time: now,
            update_time: now,
        };
        let out = activity_json(&a);
        store.activities.insert(id, a);
        Ok(errors::ok(StatusCode::OK, out))
    })())
}

/// `GET /api/v2/activities`: `person_id` (the activities the person takes
/// part in), `deal_id`, and [`list_page`]'s parameters. Read from the
/// records: a new activity is listed at once.
pub(crate) async fn list_activities(
    State(state): State<PipedriveState>,
    RawQuery(query): RawQuery,
) -> Response {
    finish((|| -> PdResult {
        let pairs: Vec<(String, String)> = query
            .as_deref()
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let number = |k: &str| -> Result<Option<u64>, PdError> {
            match get(k) {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| {
                    errors::schema(format!("{k}: Parameter '{k}' must be an integer"))
                }),
            }
        };
        let (person, deal) = (number("person_id")?, number("deal_id")?);
        let rows = state
            .store()
            .activities
            .values()
            .filter(|a| {
                person.is_none_or(|p| {
                    a.person_id == Some(p) || a.participants.iter().any(|(id, _)| *id == p)
                })
            })
            .filter(|a| deal.is_none_or(|d| a.deal_id == Some(d)))
            .map(|a| (a.id, a.add_time, a.update_time, activity_json(a)))
            .collect();
        list_page(query.as_deref(), rows)
    })())
}

/// `GET /api/v2/activities/{id}`
pub(crate) async fn get_activity(
    State(state): State<PipedriveState>,
    Path(id): Path<String>,
) -> Response {
    finish((|| -> PdResult {
        let id = path_id(&id, "activity")?;
        let store = state.store();
        let a = store
            .activities
            .get(&id)
            .ok_or_else(|| errors::not_found("Activity"))?;
        Ok(errors::ok(StatusCode::OK, activity_json(a)))
    })())
}

// ---------------------------------------------------------------------------
// Pipelines and stages

/// `GET /api/v2/pipelines`
pub(crate) async fn list_pipelines(State(state): State<PipedriveState>) -> Response {
    let data: Vec<Value> = state
        .inner
        .config
        .pipelines
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({"id": p.id, "name": p.name, "order_nr": i, "is_deleted": false, "is_deal_probability_enabled": true,
                   "add_time": "2020-01-01T00:00:00Z", "update_time": "2020-01-01T00:00:00Z", "is_selected": i == 0})
        })
        .collect();
    errors::ok_with(
        StatusCode::OK,
        Value::Array(data),
        json!({"next_cursor": Value::Null}),
    )
}

/// `GET /api/v2/stages?pipeline_id=`
pub(crate) async fn list_stages(
    State(state): State<PipedriveState>,
    RawQuery(query): RawQuery,
) -> Response {
    let pairs: Vec<(String, String)> = query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let filter: Option<u64> = pairs
        .iter()
        .find(|(k, _)| k == "pipeline_id")
        .and_then(|(_, v)| v.parse().ok());
    let data: Vec<Value> = state
        .inner
        .config
        .pipelines
        .iter()
        .filter(|p| filter.is_none_or(|f| f == p.id))
        .flat_map(|p| {
            p.stages.iter().enumerate().map(move |(i, s)| {
                json!({"id": s.id, "order_nr": i, "name": s.name, "is_deleted": false, "deal_probability": s.probability,
                       "pipeline_id": p.id, "is_deal_rot_enabled": false, "days_to_rotten": Value::Null,
                       "add_time": "2020-01-01T00:00:00Z", "update_time": "2020-01-01T00:00:00Z"})
            })
        })
        .collect();
    errors::ok_with(
        StatusCode::OK,
        Value::Array(data),
        json!({"next_cursor": Value::Null}),
    )
}
