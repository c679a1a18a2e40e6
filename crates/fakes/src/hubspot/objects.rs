//! CRM v3 objects: create, read, update, archive, list, search, batch upsert,
//! GDPR delete, plus the properties and pipelines reads. Every write goes
//! through [`validate`], which is where HubSpot's property rules live.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::errors::{self, HsError, PropertyError};
use super::schema::AssocType;
use super::{
    HubSpotAssociation, HubSpotRecord, HubSpotState, PropertyKind, Store, StoredRecord, iso,
};

type HsResult = Result<Response, HsError>;

fn finish(r: HsResult) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, HsError> {
    serde_json::from_slice(body).map_err(|e| errors::invalid_json(&e))
}

pub(crate) fn resolve(state: &HubSpotState, segment: &str) -> Result<String, HsError> {
    state
        .schema()
        .resolve(segment)
        .ok_or_else(|| errors::unknown_object_type(segment))
}

/// Query parameters in order; repeated keys kept.
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
}

fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `properties=a,b&properties=c` → `[a, b, c]`, or `None` when absent.
fn requested_properties(pairs: &[(String, String)]) -> Option<Vec<String>> {
    let list: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "properties")
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect();
    (!list.is_empty()).then_some(list)
}

/// The JSON of a record. With `only`, exactly those properties (missing ones
/// as `null`); without, every property that has a value.
pub(crate) fn record_json(record: &HubSpotRecord, only: Option<&[String]>) -> Value {
    let props: Map<String, Value> = match only {
        Some(names) => names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    record
                        .get(n)
                        .map(|v| Value::String(v.to_string()))
                        .unwrap_or(Value::Null),
                )
            })
            .collect(),
        None => record
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    };
    json!({
        "id": record.id,
        "properties": props,
        "createdAt": iso(record.created_at),
        "updatedAt": iso(record.updated_at),
        "archived": false,
    })
}

fn index_time(state: &HubSpotState) -> Instant {
    Instant::now() + state.inner.config.search_index_delay
}

/// Creates a record with its system properties.
pub(crate) fn insert_record(
    store: &mut Store,
    object_type: &str,
    mut props: BTreeMap<String, String>,
) -> HubSpotRecord {
    let id = store.next_id();
    let now = Utc::now();
    props.retain(|_, v| !v.is_empty());
    props.insert("hs_object_id".into(), id.to_string());
    props.insert("hs_createdate".into(), iso(now));
    props.insert("hs_lastmodifieddate".into(), iso(now));
    if matches!(object_type, "contacts" | "companies" | "deals") {
        props.insert("createdate".into(), iso(now));
    }
    if object_type == "contacts" {
        props.insert("lastmodifieddate".into(), iso(now));
    }
    let record = HubSpotRecord {
        object_type: object_type.into(),
        id: id.to_string(),
        properties: props,
        created_at: now,
        updated_at: now,
    };
    store.records.insert(
        (object_type.to_string(), id),
        StoredRecord {
            record: record.clone(),
            indexed_at: Instant::now(),
        },
    );
    record
}

pub(crate) fn update_record(
    store: &mut Store,
    object_type: &str,
    id: &str,
    changes: BTreeMap<String, String>,
    indexed_at: Instant,
) -> Option<HubSpotRecord> {
    let num: u64 = id.parse().ok()?;
    let stored = store.records.get_mut(&(object_type.to_string(), num))?;
    let now = Utc::now();
    for (k, v) in changes {
        if v.is_empty() {
            stored.record.properties.remove(&k);
        } else {
            stored.record.properties.insert(k, v);
        }
    }
    stored
        .record
        .properties
        .insert("hs_lastmodifieddate".into(), iso(now));
    if object_type == "contacts" {
        stored
            .record
            .properties
            .insert("lastmodifieddate".into(), iso(now));
    }
    stored.record.updated_at = now;
    stored.indexed_at = indexed_at;
    Some(stored.record.clone())
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

/// Checks a `properties` object against the schema. Returns the values as
/// strings (empty string clears a property) or every problem found.
pub(crate) fn validate(
    state: &HubSpotState,
    object_type: &str,
    raw: &Map<String, Value>,
    existing: Option<&HubSpotRecord>,
) -> Result<BTreeMap<String, String>, Vec<PropertyError>> {
    let schema = &state.schema();
    let mut problems = Vec::new();
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        let Some(def) = schema.property(object_type, name) else {
            problems.push(PropertyError::doesnt_exist(name));
            continue;
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            other => {
                problems.push(PropertyError::invalid_value(
                    name,
                    format!("{other} is not a valid value for {name}"),
                ));
                continue;
            }
        };
        if def.read_only {
            problems.push(PropertyError::read_only(name));
            continue;
        }
        if !text.is_empty() {
            if let PropertyKind::Enumeration(options) = &def.kind
                && !options.iter().any(|o| o == &text)
            {
                problems.push(PropertyError::invalid_option(name, &text, options));
                continue;
            }
            if object_type == "contacts" && name == "email" && !plausible_email(&text) {
                problems.push(PropertyError::invalid_email(name, &text));
                continue;
            }
        }
        out.insert(name.clone(), text);
    }
    if object_type == "deals" {
        check_pipeline(state, &out, existing, &mut problems);
    }
    // "Meetings": a meeting created without `hs_timestamp` takes its start
    // time (HubSpot changelog, November 2024).
    if object_type == "meetings"
        && existing.is_none()
        && out.get("hs_timestamp").is_none_or(|v| v.is_empty())
        && let Some(start) = out.get("hs_meeting_start_time").filter(|v| !v.is_empty())
    {
        out.insert("hs_timestamp".into(), start.clone());
    }
    if existing.is_none() {
        for required in schema.required_on_create(object_type) {
            if out.get(&required).is_none_or(|v| v.is_empty())
                && !problems.iter().any(|p| p.name == required)
            {
                problems.push(PropertyError::required(&required));
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// `pipeline` must be a configured pipeline and `dealstage` one of its stages.
fn check_pipeline(
    state: &HubSpotState,
    props: &BTreeMap<String, String>,
    existing: Option<&HubSpotRecord>,
    problems: &mut Vec<PropertyError>,
) {
    let schema = &state.schema();
    let pipeline_id = props
        .get("pipeline")
        .filter(|v| !v.is_empty())
        .cloned()
        .or_else(|| existing.and_then(|r| r.get("pipeline").map(String::from)))
        .or_else(|| schema.pipelines.first().map(|p| p.id.clone()));
    let Some(pipeline_id) = pipeline_id else {
        return;
    };
    let Some(pipeline) = schema.pipeline(&pipeline_id) else {
        let ids: Vec<String> = schema.pipelines.iter().map(|p| p.id.clone()).collect();
        problems.push(PropertyError::invalid_option(
            "pipeline",
            &pipeline_id,
            &ids,
        ));
        return;
    };
    let stage = props
        .get("dealstage")
        .filter(|v| !v.is_empty())
        .cloned()
        .or_else(|| {
            // A pipeline change re-checks the stage the deal already has.
            props
                .contains_key("pipeline")
                .then(|| existing.and_then(|r| r.get("dealstage").map(String::from)))
                .flatten()
        });
    if let Some(stage) = stage
        && !pipeline.stages.iter().any(|s| s.id == stage)
    {
        let ids: Vec<String> = pipeline.stages.iter().map(|s| s.id.clone()).collect();
        problems.push(PropertyError::invalid_option("dealstage", &stage, &ids));
    }
}

/// 409 when another contact already has this email.
fn email_conflict(
    store: &Store,
    object_type: &str,
    props: &BTreeMap<String, String>,
    own_id: Option<&str>,
) -> Result<(), HsError> {
    if object_type != "contacts" {
        return Ok(());
    }
    let Some(email) = props.get("email").filter(|e| !e.is_empty()) else {
        return Ok(());
    };
    match store.find_by("contacts", "email", email) {
        Some(other) if Some(other.record.id.as_str()) != own_id => Err(errors::conflict(format!(
            "Contact already exists. Existing ID: {}",
            other.record.id
        ))),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
struct InlineAssociation {
    to: AssociationTarget,
    types: Vec<AssociationSpec>,
}

#[derive(Deserialize)]
pub(crate) struct AssociationTarget {
    pub id: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssociationSpec {
    association_category: String,
    association_type_id: u32,
}

/// `"123"` or `123` → `"123"`.
pub(crate) fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Resolves inline `associations` of a create to (type, target id) pairs,
/// checking that each type exists for this object and each target exists.
fn inline_associations(
    state: &HubSpotState,
    store: &Store,
    from_type: &str,
    raw: Option<&Value>,
) -> Result<Vec<(String, u32, &'static str, String)>, HsError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let list: Vec<InlineAssociation> = serde_json::from_value(raw.clone())
        .map_err(|e| errors::validation(format!("Invalid input JSON: associations: {e}")))?;
    let mut out = Vec::new();
    for a in list {
        let Some(to_id) = id_text(&a.to.id) else {
            return Err(errors::validation(
                "Invalid input JSON: associations[].to.id must be a record id",
            ));
        };
        if a.types.is_empty() {
            return Err(errors::validation(
                "associations[].types must contain at least one association type",
            ));
        }
        let schema = state.schema();
        for spec in a.types {
            let Some(AssocType {
                to,
                category,
                type_id,
                ..
            }) = schema.assoc_by_id(from_type, spec.association_type_id)
            else {
                return Err(errors::validation(format!(
                    "{} is not a valid association type id from {from_type}",
                    spec.association_type_id
                )));
            };
            let category_ok = spec.association_category == category
                || (category == "USER_DEFINED" && spec.association_category == "HUBSPOT_DEFINED");
            if !category_ok {
                return Err(errors::validation(format!(
                    "association type {type_id} is {category}, not {}",
                    spec.association_category
                )));
            }
            if store.get(to, &to_id).is_none() {
                return Err(errors::validation(format!(
                    "One or more associations are invalid: no {to} record with ID {to_id} exists"
                )));
            }
            out.push((to.to_string(), type_id, category, to_id.clone()));
        }
    }
    Ok(out)
}

/// Stores an association and, for default types, the inverse default one.
pub(crate) fn store_association(
    state: &HubSpotState,
    store: &mut Store,
    from: (&str, &str),
    to: (&str, &str),
    type_id: u32,
    category: &str,
) {
    store.associate(HubSpotAssociation {
        from_type: from.0.into(),
        from_id: from.1.into(),
        to_type: to.0.into(),
        to_id: to.1.into(),
        category: category.into(),
        type_id,
    });
    if let Some(inverse) = state.schema().default_assoc(to.0, from.0) {
        store.associate(HubSpotAssociation {
            from_type: to.0.into(),
            from_id: to.1.into(),
            to_type: from.0.into(),
            to_id: from.1.into(),
            category: inverse.category.into(),
            type_id: inverse.type_id,
        });
    }
}

fn properties_object(body: &Value) -> Result<Map<String, Value>, HsError> {
    match body.get("properties") {
        Some(Value::Object(m)) => Ok(m.clone()),
        None | Some(Value::Null) => Ok(Map::new()),
        Some(_) => Err(errors::validation(
            "Invalid input JSON: properties must be an object",
        )),
    }
}

// ---------------------------------------------------------------------------
// Handlers

/// `POST /crm/v3/objects/{objectType}`
pub(crate) async fn create(
    State(state): State<HubSpotState>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> Response {
    finish(create_inner(&state, &object_type, &body))
}

fn create_inner(state: &HubSpotState, segment: &str, body: &[u8]) -> HsResult {
    let object_type = resolve(state, segment)?;
    let body: Value = parse_json(body)?;
    if !body.is_object() {
        return Err(errors::validation("Invalid input JSON: expected an object"));
    }
    let raw = properties_object(&body)?;
    let mut props =
        validate(state, &object_type, &raw, None).map_err(|p| errors::property_errors(&p))?;
    let mut store = state.store();
    email_conflict(&store, &object_type, &props, None)?;
    let links = inline_associations(state, &store, &object_type, body.get("associations"))?;
    if object_type == "deals"
        && !props.contains_key("pipeline")
        && let Some(p) = state.schema().pipelines.first()
    {
        props.insert("pipeline".into(), p.id.clone());
    }
    let record = insert_record(&mut store, &object_type, props);
    if let Some(stored) = store
        .records
        .get_mut(&(object_type.clone(), record.id.parse().unwrap_or_default()))
    {
        stored.indexed_at = index_time(state);
    }
    for (to_type, type_id, category, to_id) in links {
        store_association(
            state,
            &mut store,
            (&object_type, &record.id),
            (&to_type, &to_id),
            type_id,
            category,
        );
    }
    Ok((StatusCode::CREATED, Json(record_json(&record, None))).into_response())
}

/// `GET /crm/v3/objects/{objectType}/{id}` (optionally `?idProperty=email`).
pub(crate) async fn read(
    State(state): State<HubSpotState>,
    Path((object_type, object_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    finish(read_inner(
        &state,
        &object_type,
        &object_id,
        query.as_deref(),
    ))
}

fn find_target<'a>(
    state: &HubSpotState,
    store: &'a Store,
    object_type: &str,
    id: &str,
    pairs: &[(String, String)],
) -> Result<&'a StoredRecord, HsError> {
    let found = match query_value(pairs, "idProperty") {
        Some(prop) if prop != "hs_object_id" => {
            let schema = state.schema();
            let def = schema.property(object_type, prop);
            if !def.is_some_and(|d| d.unique) {
                return Err(errors::validation(format!(
                    "{prop} is not a unique identifier property for {object_type}"
                )));
            }
            store.find_by(object_type, prop, id)
        }
        _ => store.get(object_type, id),
    };
    found.ok_or_else(errors::not_found)
}

fn read_inner(state: &HubSpotState, segment: &str, id: &str, query: Option<&str>) -> HsResult {
    let object_type = resolve(state, segment)?;
    let pairs = query_pairs(query);
    let store = state.store();
    let record = &find_target(state, &store, &object_type, id, &pairs)?.record;
    let props = requested_properties(&pairs)
        .unwrap_or_else(|| state.schema().default_read_properties(&object_type));
    Ok(Json(record_json(record, Some(&props))).into_response())
}

/// `PATCH /crm/v3/objects/{objectType}/{id}` (optionally `?idProperty=email`).
pub(crate) async fn update(
    State(state): State<HubSpotState>,
    Path((object_type, object_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    finish(update_inner(
        &state,
        &object_type,
        &object_id,
        query.as_deref(),
        &body,
    ))
}

fn update_inner(
    state: &HubSpotState,
    segment: &str,
    id: &str,
    query: Option<&str>,
    body: &[u8],
) -> HsResult {
    let object_type = resolve(state, segment)?;
    let pairs = query_pairs(query);
    let body: Value = parse_json(body)?;
    let raw = properties_object(&body)?;
    let mut store = state.store();
    let existing = find_target(state, &store, &object_type, id, &pairs)?
        .record
        .clone();
    let props = validate(state, &object_type, &raw, Some(&existing))
        .map_err(|p| errors::property_errors(&p))?;
    email_conflict(&store, &object_type, &props, Some(&existing.id))?;
    let updated = update_record(
        &mut store,
        &object_type,
        &existing.id,
        props,
        index_time(state),
    )
    .ok_or_else(errors::not_found)?;
    Ok(Json(record_json(&updated, None)).into_response())
}

/// `DELETE /crm/v3/objects/{objectType}/{id}`: archives the record.
pub(crate) async fn archive(
    State(state): State<HubSpotState>,
    Path((object_type, object_id)): Path<(String, String)>,
) -> Response {
    finish((|| -> HsResult {
        let object_type = resolve(&state, &object_type)?;
        // Archiving an unknown id is not an error in HubSpot's v3 API.
        state.store().remove(&object_type, &object_id);
        Ok(StatusCode::NO_CONTENT.into_response())
    })())
}

/// `GET /crm/v3/objects/{objectType}?limit=&after=&properties=`
pub(crate) async fn list(
    State(state): State<HubSpotState>,
    Path(object_type): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    finish((|| -> HsResult {
        let object_type = resolve(&state, &object_type)?;
        let pairs = query_pairs(query.as_deref());
        let limit = match query_value(&pairs, "limit") {
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| errors::validation(format!("limit: {v} is not a valid integer")))?,
            None => 10,
        };
        if limit > 100 {
            return Err(errors::validation(
                "limit must be less than or equal to 100",
            ));
        }
        let after: u64 = query_value(&pairs, "after")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let props = requested_properties(&pairs)
            .unwrap_or_else(|| state.schema().default_read_properties(&object_type));
        let store = state.store();
        let page: Vec<&StoredRecord> = store
            .of_type(&object_type)
            .filter(|r| r.record.id.parse::<u64>().unwrap_or(0) > after)
            .take(limit + 1)
            .collect();
        let results: Vec<Value> = page
            .iter()
            .take(limit)
            .map(|r| record_json(&r.record, Some(&props)))
            .collect();
        let mut body = json!({ "results": results });
        if page.len() > limit
            && let Some(last) = page.get(limit.saturating_sub(1))
        {
            let next = (last.record.id.parse::<u64>().unwrap_or(0)).to_string();
            body["paging"] = json!({"next": {"after": next, "link": format!("?after={next}")}});
        }
        Ok(Json(body).into_response())
    })())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SearchRequest {
    #[serde(default)]
    filter_groups: Vec<FilterGroup>,
    #[serde(default)]
    properties: Vec<String>,
    limit: Option<i64>,
    after: Option<Value>,
    #[serde(default)]
    sorts: Vec<Value>,
    query: Option<String>,
}

#[derive(Deserialize)]
struct FilterGroup {
    #[serde(default)]
    filters: Vec<Filter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    property_name: String,
    operator: String,
    value: Option<Value>,
    #[serde(default)]
    values: Vec<Value>,
    high_value: Option<Value>,
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Epoch milliseconds of a datetime property's value (ISO 8601 as stored,
/// or already milliseconds, as search filters may give it).
fn millis(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().or_else(|| {
        chrono::DateTime::parse_from_rfc3339(v)
            .ok()
            .map(|t| t.timestamp_millis() as f64)
    })
}

fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    match (millis(a), millis(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        _ => a.to_lowercase().cmp(&b.to_lowercase()),
    }
}

fn filter_matches(record: &HubSpotRecord, f: &Filter) -> Result<bool, HsError> {
    let actual = record.get(&f.property_name);
    let wanted = f.value.as_ref().map(value_text);
    let need_value = || {
        wanted.clone().ok_or_else(|| {
            errors::validation(format!("filter on {} needs a value", f.property_name))
        })
    };
    use std::cmp::Ordering::*;
    Ok(match f.operator.as_str() {
        "EQ" => {
            let v = need_value()?;
            actual.is_some_and(|a| a.eq_ignore_ascii_case(&v))
        }
        "NEQ" => {
            let v = need_value()?;
            !actual.is_some_and(|a| a.eq_ignore_ascii_case(&v))
        }
        "LT" => actual.is_some_and(|a| compare(a, &wanted.clone().unwrap_or_default()) == Less),
        "LTE" => actual.is_some_and(|a| compare(a, &wanted.clone().unwrap_or_default()) != Greater),
        "GT" => actual.is_some_and(|a| compare(a, &wanted.clone().unwrap_or_default()) == Greater),
        "GTE" => actual.is_some_and(|a| compare(a, &wanted.clone().unwrap_or_default()) != Less),
        "BETWEEN" => {
            let high = f.high_value.as_ref().map(value_text).unwrap_or_default();
            actual.is_some_and(|a| {
                compare(a, &wanted.clone().unwrap_or_default()) != Less
                    && compare(a, &high) != Greater
            })
        }
        "IN" => actual.is_some_and(|a| {
            f.values
                .iter()
                .any(|v| a.eq_ignore_ascii_case(&value_text(v)))
        }),
        "NOT_IN" => !actual.is_some_and(|a| {
            f.values
                .iter()
                .any(|v| a.eq_ignore_ascii_case(&value_text(v)))
        }),
        "HAS_PROPERTY" => actual.is_some(),
        "NOT_HAS_PROPERTY" => actual.is_none(),
        "CONTAINS_TOKEN" => {
            let token = need_value()?.to_lowercase().replace('*', "");
            actual.is_some_and(|a| a.to_lowercase().contains(&token))
        }
        "NOT_CONTAINS_TOKEN" => {
            let token = need_value()?.to_lowercase().replace('*', "");
            !actual.is_some_and(|a| a.to_lowercase().contains(&token))
        }
        other => {
            return Err(errors::validation(format!(
                "Unknown filter operator: {other}"
            )));
        }
    })
}

/// `POST /crm/v3/objects/{objectType}/search`
pub(crate) async fn search(
    State(state): State<HubSpotState>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> Response {
    finish(search_inner(&state, &object_type, &body))
}

fn search_inner(state: &HubSpotState, segment: &str, body: &[u8]) -> HsResult {
    let object_type = resolve(state, segment)?;
    let req: SearchRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SearchRequest::default()
    } else {
        parse_json(body)?
    };
    if req.filter_groups.len() > 5 {
        return Err(errors::validation(
            "The maximum number of filterGroups is 5",
        ));
    }
    if req.filter_groups.iter().any(|g| g.filters.len() > 6) {
        return Err(errors::validation(
            "The maximum number of filters in a filterGroup is 6",
        ));
    }
    if req
        .filter_groups
        .iter()
        .map(|g| g.filters.len())
        .sum::<usize>()
        > 18
    {
        return Err(errors::validation(
            "The maximum number of filters across all filterGroups is 18",
        ));
    }
    let limit = req.limit.unwrap_or(10);
    if !(0..=200).contains(&limit) {
        return Err(errors::validation("limit must be between 0 and 200"));
    }
    let limit = limit as usize;
    let offset: usize = req
        .after
        .as_ref()
        .map(value_text)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let now = Instant::now();
    let store = state.store();
    let mut hits: Vec<&HubSpotRecord> = Vec::new();
    for stored in store.of_type(&object_type) {
        if stored.indexed_at > now {
            continue;
        }
        let r = &stored.record;
        let mut groups_ok = req.filter_groups.is_empty();
        for g in &req.filter_groups {
            let mut all = true;
            for f in &g.filters {
                if !filter_matches(r, f)? {
                    all = false;
                    break;
                }
            }
            if all {
                groups_ok = true;
                break;
            }
        }
        let query_ok = req
            .query
            .as_deref()
            .filter(|q| !q.is_empty())
            .is_none_or(|q| {
                let q = q.to_lowercase();
                r.properties.values().any(|v| v.to_lowercase().contains(&q))
            });
        if groups_ok && query_ok {
            hits.push(r);
        }
    }
    if let Some(sort) = req.sorts.first() {
        let (prop, desc) = match sort {
            Value::String(s) => (s.trim_start_matches('-').to_string(), s.starts_with('-')),
            other => (
                other
                    .get("propertyName")
                    .and_then(Value::as_str)
                    .unwrap_or("hs_object_id")
                    .to_string(),
                other.get("direction").and_then(Value::as_str) == Some("DESCENDING"),
            ),
        };
        hits.sort_by(|a, b| {
            let o = compare(a.get(&prop).unwrap_or(""), b.get(&prop).unwrap_or(""));
            if desc { o.reverse() } else { o }
        });
    }
    let props = if req.properties.is_empty() {
        state.schema().default_read_properties(&object_type)
    } else {
        req.properties.clone()
    };
    let total = hits.len();
    let results: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| record_json(r, Some(&props)))
        .collect();
    let mut out = json!({"total": total, "results": results});
    if offset + limit < total {
        let next = (offset + limit).to_string();
        out["paging"] = json!({"next": {"after": next, "link": format!("?after={next}")}});
    }
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
struct BatchInput {
    inputs: Vec<Value>,
}

/// `POST /crm/v3/objects/{objectType}/batch/upsert`
pub(crate) async fn batch_upsert(
    State(state): State<HubSpotState>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> Response {
    finish(batch_upsert_inner(&state, &object_type, &body))
}

fn batch_upsert_inner(state: &HubSpotState, segment: &str, body: &[u8]) -> HsResult {
    let started = Utc::now();
    let object_type = resolve(state, segment)?;
    let batch: BatchInput = parse_json(body)?;
    let max = state.inner.config.batch_limit;
    if batch.inputs.len() > max {
        return Err(errors::validation(format!(
            "The maximum number of inputs supported in a batch request is {max}. Please reduce the number of items and try again"
        )));
    }
    // Validate everything first: a batch is applied entirely or not at all.
    let mut planned: Vec<(String, String, BTreeMap<String, String>)> = Vec::new();
    let mut seen = HashSet::new();
    let mut duplicates = Vec::new();
    let mut problems = Vec::new();
    {
        let store = state.store();
        for input in &batch.inputs {
            let id_property = input
                .get("idProperty")
                .and_then(Value::as_str)
                .unwrap_or("hs_object_id")
                .to_string();
            let Some(id) = input.get("id").and_then(id_text) else {
                return Err(errors::validation(
                    "Invalid input JSON: every input needs an id",
                ));
            };
            if id_property != "hs_object_id"
                && !state
                    .schema()
                    .property(&object_type, &id_property)
                    .is_some_and(|d| d.unique)
            {
                return Err(errors::validation(format!(
                    "{id_property} is not a unique identifier property for {object_type}"
                )));
            }
            if !seen.insert(id.to_lowercase()) {
                duplicates.push(id.clone());
            }
            let mut raw = properties_object(input)?;
            // The id becomes the idProperty's value, so it is checked like one.
            if id_property != "hs_object_id" {
                raw.entry(id_property.clone())
                    .or_insert_with(|| Value::String(id.clone()));
            }
            let existing = store
                .find_by(&object_type, &id_property, &id)
                .map(|s| s.record.clone());
            match validate(state, &object_type, &raw, existing.as_ref()) {
                Ok(props) => planned.push((id_property, id, props)),
                Err(p) => problems.extend(p),
            }
        }
    }
    if !duplicates.is_empty() {
        return Err(errors::validation(format!(
            "Duplicate IDs found in batch input: [{}]. IDs must be unique",
            duplicates.join(", ")
        )));
    }
    if !problems.is_empty() {
        return Err(errors::property_errors(&problems));
    }
    let mut store = state.store();
    let mut results = Vec::new();
    for (id_property, id, mut props) in planned {
        let existing = store
            .find_by(&object_type, &id_property, &id)
            .map(|s| s.record.id.clone());
        match existing {
            Some(own) => {
                email_conflict(&store, &object_type, &props, Some(&own))?;
                let r = update_record(&mut store, &object_type, &own, props, index_time(state))
                    .ok_or_else(errors::not_found)?;
                let mut v = record_json(&r, None);
                v["new"] = json!(false);
                results.push(v);
            }
            None => {
                if id_property == "hs_object_id" {
                    return Err(errors::validation(format!(
                        "No {object_type} with ID {id} exists; upsert by hs_object_id cannot create"
                    )));
                }
                props.insert(id_property.clone(), id.clone());
                email_conflict(&store, &object_type, &props, None)?;
                let r = insert_record(&mut store, &object_type, props);
                if let Some(s) = store
                    .records
                    .get_mut(&(object_type.clone(), r.id.parse().unwrap_or_default()))
                {
                    s.indexed_at = index_time(state);
                }
                let mut v = record_json(&r, None);
                v["new"] = json!(true);
                results.push(v);
            }
        }
    }
    Ok(Json(json!({
        "status": "COMPLETE",
        "results": results,
        "requestedAt": iso(started),
        "startedAt": iso(started),
        "completedAt": iso(Utc::now()),
    }))
    .into_response())
}

/// `POST /crm/v3/objects/{objectType}/batch/create`: every input is
/// validated first and the batch is applied entirely or not at all; results
/// echo each input's `objectWriteTraceId`.
pub(crate) async fn batch_create(
    State(state): State<HubSpotState>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> Response {
    finish(batch_create_inner(&state, &object_type, &body))
}

fn trace_id(input: &Value) -> Option<String> {
    input
        .get("objectWriteTraceId")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn batch_create_inner(state: &HubSpotState, segment: &str, body: &[u8]) -> HsResult {
    let started = Utc::now();
    let object_type = resolve(state, segment)?;
    let batch: BatchInput = parse_json(body)?;
    let max = state.inner.config.batch_limit;
    if batch.inputs.len() > max {
        return Err(errors::validation(format!(
            "The maximum number of inputs supported in a batch request is {max}. Please reduce the number of items and try again"
        )));
    }
    let mut planned = Vec::new();
    let mut problems = Vec::new();
    let mut store = state.store();
    let mut emails = HashSet::new();
    for input in &batch.inputs {
        if !input.is_object() {
            return Err(errors::validation(
                "Invalid input JSON: every input must be an object",
            ));
        }
        let raw = properties_object(input)?;
        match validate(state, &object_type, &raw, None) {
            Ok(mut props) => {
                email_conflict(&store, &object_type, &props, None)?;
                if object_type == "contacts"
                    && let Some(e) = props.get("email").filter(|e| !e.is_empty())
                    && !emails.insert(e.to_lowercase())
                {
                    return Err(errors::validation(format!(
                        "Duplicate IDs found in batch input: [{e}]. IDs must be unique"
                    )));
                }
                let links =
                    inline_associations(state, &store, &object_type, input.get("associations"))?;
                if object_type == "deals"
                    && !props.contains_key("pipeline")
                    && let Some(p) = state.schema().pipelines.first()
                {
                    props.insert("pipeline".into(), p.id.clone());
                }
                planned.push((props, links, trace_id(input)));
            }
            Err(p) => problems.extend(p),
        }
    }
    if !problems.is_empty() {
        return Err(errors::property_errors(&problems));
    }
    let mut results = Vec::new();
    for (props, links, trace) in planned {
        let record = insert_record(&mut store, &object_type, props);
        if let Some(stored) = store
            .records
            .get_mut(&(object_type.clone(), record.id.parse().unwrap_or_default()))
        {
            stored.indexed_at = index_time(state);
        }
        for (to_type, type_id, category, to_id) in links {
            store_association(
                state,
                &mut store,
                (&object_type, &record.id),
                (&to_type, &to_id),
                type_id,
                category,
            );
        }
        let mut v = record_json(&record, None);
        if let Some(t) = trace {
            v["objectWriteTraceId"] = json!(t);
        }
        results.push(v);
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "status": "COMPLETE",
            "results": results,
            "requestedAt": iso(started),
            "startedAt": iso(started),
            "completedAt": iso(Utc::now()),
        })),
    )
        .into_response())
}

/// `POST /crm/v3/objects/{objectType}/batch/update`: updates by id (or a
/// unique `idProperty`); inputs whose record does not exist are reported in
/// `errors` with 207, the others are applied.
pub(crate) async fn batch_update(
    State(state): State<HubSpotState>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> Response {
    finish(batch_update_inner(&state, &object_type, &body))
}

fn batch_update_inner(state: &HubSpotState, segment: &str, body: &[u8]) -> HsResult {
    let started = Utc::now();
    let object_type = resolve(state, segment)?;
    let batch: BatchInput = parse_json(body)?;
    let max = state.inner.config.batch_limit;
    if batch.inputs.len() > max {
        return Err(errors::validation(format!(
            "The maximum number of inputs supported in a batch request is {max}. Please reduce the number of items and try again"
        )));
    }
    let mut store = state.store();
    let mut planned = Vec::new();
    let mut missing = Vec::new();
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for input in &batch.inputs {
        let Some(id) = input.get("id").and_then(id_text) else {
            return Err(errors::validation(
                "Invalid input JSON: every input needs an id",
            ));
        };
        if !seen.insert(id.clone()) {
            return Err(errors::validation(format!(
                "Duplicate IDs found in batch input: [{id}]. IDs must be unique"
            )));
        }
        let id_property = input
            .get("idProperty")
            .and_then(Value::as_str)
            .unwrap_or("hs_object_id")
            .to_string();
        if id_property != "hs_object_id"
            && !state
                .schema()
                .property(&object_type, &id_property)
                .is_some_and(|d| d.unique)
        {
            return Err(errors::validation(format!(
                "{id_property} is not a unique identifier property for {object_type}"
            )));
        }
        let Some(existing) = store
            .find_by(&object_type, &id_property, &id)
            .map(|s| s.record.clone())
        else {
            missing.push(id);
            continue;
        };
        let raw = properties_object(input)?;
        match validate(state, &object_type, &raw, Some(&existing)) {
            Ok(props) => {
                email_conflict(&store, &object_type, &props, Some(&existing.id))?;
                planned.push((existing.id.clone(), props, trace_id(input)));
            }
            Err(p) => problems.extend(p),
        }
    }
    if !problems.is_empty() {
        return Err(errors::property_errors(&problems));
    }
    let mut results = Vec::new();
    for (id, props, trace) in planned {
        let r = update_record(&mut store, &object_type, &id, props, index_time(state))
            .ok_or_else(errors::not_found)?;
        let mut v = record_json(&r, None);
        if let Some(t) = trace {
            v["objectWriteTraceId"] = json!(t);
        }
        results.push(v);
    }
    let mut out = json!({
        "status": "COMPLETE",
        "results": results,
        "requestedAt": iso(started),
        "startedAt": iso(started),
        "completedAt": iso(Utc::now()),
    });
    if missing.is_empty() {
        return Ok(Json(out).into_response());
    }
    out["numErrors"] = json!(missing.len());
    out["errors"] = Value::Array(
        missing
            .iter()
            .map(|id| {
                json!({
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": format!("Could not get some {object_type} objects, they may be deleted or not exist. Check that ids are valid."),
                    "context": {"ids": [id]},
                })
            })
            .collect(),
    );
    Ok((StatusCode::MULTI_STATUS, Json(out)).into_response())
}

/// `POST /crm/v3/objects/{objectType}/batch/read`: `inputs` (`{"id"}`, at
/// most the batch limit), `properties` (the default read set when absent),
/// optional `idProperty`. Reads the records (no index lag); ids not found
/// come back as an `OBJECT_NOT_FOUND` error with 207.
pub(crate) async fn batch_read(
    State(state): State<HubSpotState>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> Response {
    finish(batch_read_inner(&state, &object_type, &body))
}

fn batch_read_inner(state: &HubSpotState, segment: &str, body: &[u8]) -> HsResult {
    let started = Utc::now();
    let object_type = resolve(state, segment)?;
    let batch: Value = parse_json(body)?;
    let Some(inputs) = batch.get("inputs").and_then(Value::as_array) else {
        return Err(errors::validation("Invalid input JSON: inputs is required"));
    };
    let max = state.inner.config.batch_limit;
    if inputs.len() > max {
        return Err(errors::validation(format!(
            "The maximum number of inputs supported in a batch request is {max}. Please reduce the number of items and try again"
        )));
    }
    let id_property = batch
        .get("idProperty")
        .and_then(Value::as_str)
        .unwrap_or("hs_object_id");
    if id_property != "hs_object_id"
        && !state
            .schema()
            .property(&object_type, id_property)
            .is_some_and(|d| d.unique)
    {
        return Err(errors::validation(format!(
            "{id_property} is not a unique identifier property for {object_type}"
        )));
    }
    let props: Vec<String> = match batch.get("properties").and_then(Value::as_array) {
        Some(names) if !names.is_empty() => names
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect(),
        _ => state.schema().default_read_properties(&object_type),
    };
    let store = state.store();
    let (mut results, mut missing) = (Vec::new(), Vec::new());
    for input in inputs {
        let Some(id) = input.get("id").and_then(id_text) else {
            return Err(errors::validation(
                "Invalid input JSON: every input needs an id",
            ));
        };
        match store.find_by(&object_type, id_property, &id) {
            Some(r) => results.push(record_json(&r.record, Some(&props))),
            None => missing.push(id),
        }
    }
    let mut out = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso(started),
        "completedAt": iso(Utc::now()),
    });
    if missing.is_empty() {
        return Ok(Json(out).into_response());
    }
    out["numErrors"] = json!(1);
    out["errors"] = json!([{
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": format!("Could not get some {object_type} objects, they may be deleted or not exist. Check that ids are valid."),
        "context": {"ids": missing},
    }]);
    Ok((StatusCode::MULTI_STATUS, Json(out)).into_response())
}

/// `POST /crm/v3/objects/contacts/gdpr-delete`
pub(crate) async fn gdpr_delete(
    State(state): State<HubSpotState>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> Response {
    finish((|| -> HsResult {
        let object_type = resolve(&state, &object_type)?;
        if object_type != "contacts" {
            return Err(errors::validation(
                "GDPR delete is only supported for contacts",
            ));
        }
        let body: Value = parse_json(&body)?;
        let Some(object_id) = body.get("objectId").and_then(id_text) else {
            return Err(errors::validation(
                "Invalid input JSON: objectId is required",
            ));
        };
        let id_property = body
            .get("idProperty")
            .and_then(Value::as_str)
            .unwrap_or("hs_object_id");
        let mut store = state.store();
        let id = store
            .find_by("contacts", id_property, &object_id)
            .map(|r| r.record.id.clone())
            .ok_or_else(errors::not_found)?;
        if let Some(removed) = store.remove("contacts", &id)
            && let Some(email) = removed.get("email")
        {
            let email = email.to_string();
            store.gdpr_deleted.push(email);
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    })())
}

/// `GET /crm/v3/properties/{objectType}`
pub(crate) async fn list_properties(
    State(state): State<HubSpotState>,
    Path(object_type): Path<String>,
) -> Response {
    finish((|| -> HsResult {
        let object_type = resolve(&state, &object_type)?;
        let schema = &state.schema();
        let results: Vec<Value> = schema
            .properties
            .get(&object_type)
            .map(|m| {
                m.values()
                    .map(|d| schema.property_json(&object_type, d))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Json(json!({ "results": results })).into_response())
    })())
}

/// `GET /crm/v3/properties/{objectType}/{propertyName}`
pub(crate) async fn get_property(
    State(state): State<HubSpotState>,
    Path((object_type, name)): Path<(String, String)>,
) -> Response {
    finish((|| -> HsResult {
        let object_type = resolve(&state, &object_type)?;
        let schema = &state.schema();
        let def = schema
            .property(&object_type, &name)
            .ok_or_else(errors::not_found)?;
        Ok(Json(schema.property_json(&object_type, def)).into_response())
    })())
}

/// `GET /crm/v3/pipelines/deals`
pub(crate) async fn list_pipelines(
    State(state): State<HubSpotState>,
    Path(object_type): Path<String>,
) -> Response {
    finish((|| -> HsResult {
        let object_type = resolve(&state, &object_type)?;
        let pipelines = if object_type == "deals" {
            state.schema().pipelines.clone()
        } else {
            Vec::new()
        };
        let results: Vec<Value> = pipelines
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let stages: Vec<Value> = p
                    .stages
                    .iter()
                    .enumerate()
                    .map(|(j, s)| {
                        json!({
                            "id": s.id, "label": s.label, "displayOrder": j, "archived": false,
                            "metadata": {"isClosed": s.closed.to_string(), "probability": s.probability.to_string()},
                            "createdAt": "2020-01-01T00:00:00Z", "updatedAt": "2020-01-01T00:00:00Z",
                        })
                    })
                    .collect();
                json!({"id": p.id, "label": p.label, "displayOrder": i, "archived": false, "stages": stages,
                       "createdAt": "2020-01-01T00:00:00Z", "updatedAt": "2020-01-01T00:00:00Z"})
            })
            .collect();
        Ok(Json(json!({ "results": results })).into_response())
    })())
}
