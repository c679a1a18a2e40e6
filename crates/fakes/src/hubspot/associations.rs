//! Associations v4: default (unlabeled) associations one at a time and in
//! batches, and listing a record's associations.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::errors::{self, HsError};
use super::objects::{self, AssociationTarget, id_text, parse_json, resolve};
use super::{HubSpotState, iso};

type HsResult = Result<Response, HsError>;

/// The two directions of a default association, as HubSpot reports them.
fn spec_results(
    state: &HubSpotState,
    from: (&str, &str),
    to: (&str, &str),
) -> Result<Vec<Value>, HsError> {
    let schema = &state.schema();
    let forward = schema.default_assoc(from.0, to.0).ok_or_else(|| {
        errors::validation(format!(
            "No default association type exists from {} to {}",
            from.0, to.0
        ))
    })?;
    let mut out = vec![json!({
        "associationSpec": {"associationCategory": forward.category, "associationTypeId": forward.type_id},
        "from": {"id": from.1}, "to": {"id": to.1},
    })];
    if let Some(inverse) = schema.default_assoc(to.0, from.0) {
        out.push(json!({
            "associationSpec": {"associationCategory": inverse.category, "associationTypeId": inverse.type_id},
            "from": {"id": to.1}, "to": {"id": from.1},
        }));
    }
    Ok(out)
}

fn associate_default(
    state: &HubSpotState,
    from: (&str, &str),
    to: (&str, &str),
) -> Result<Vec<Value>, HsError> {
    let results = spec_results(state, from, to)?;
    let mut store = state.store();
    if store.get(from.0, from.1).is_none() || store.get(to.0, to.1).is_none() {
        return Err(errors::not_found());
    }
    let schema = state.schema();
    let forward = schema
        .default_assoc(from.0, to.0)
        .ok_or_else(errors::not_found)?;
    objects::store_association(
        state,
        &mut store,
        from,
        to,
        forward.type_id,
        forward.category,
    );
    Ok(results)
}

/// `PUT /crm/v4/objects/{fromObjectType}/{fromObjectId}/associations/default/{toObjectType}/{toObjectId}`
pub(crate) async fn put_default(
    State(state): State<HubSpotState>,
    Path((from_type, from_id, to_type, to_id)): Path<(String, String, String, String)>,
) -> Response {
    let result = (|| -> HsResult {
        let started = Utc::now();
        let from = resolve(&state, &from_type)?;
        let to = resolve(&state, &to_type)?;
        let results = associate_default(&state, (&from, &from_id), (&to, &to_id))?;
        Ok(Json(json!({
            "status": "COMPLETE",
            "results": results,
            "startedAt": iso(started),
            "completedAt": iso(Utc::now()),
        }))
        .into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct BatchPair {
    from: AssociationTarget,
    to: AssociationTarget,
}

#[derive(Deserialize)]
struct BatchPairs {
    inputs: Vec<BatchPair>,
}

/// `POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/associate/default`:
/// associates what it can; missing records are reported in `errors` with 207.
pub(crate) async fn batch_default(
    State(state): State<HubSpotState>,
    Path((from_type, to_type)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let result = (|| -> HsResult {
        let started = Utc::now();
        let from = resolve(&state, &from_type)?;
        let to = resolve(&state, &to_type)?;
        let batch: BatchPairs = parse_json(&body)?;
        if batch.inputs.len() > state.inner.config.batch_limit {
            return Err(errors::validation(format!(
                "The maximum number of inputs supported in a batch request is {}. Please reduce the number of items and try again",
                state.inner.config.batch_limit
            )));
        }
        let mut results = Vec::new();
        let mut failures = Vec::new();
        for pair in batch.inputs {
            let (Some(from_id), Some(to_id)) = (id_text(&pair.from.id), id_text(&pair.to.id))
            else {
                return Err(errors::validation(
                    "Invalid input JSON: from.id and to.id are required",
                ));
            };
            match associate_default(&state, (&from, &from_id), (&to, &to_id)) {
                Ok(r) => results.extend(r),
                Err(e) if e.status == StatusCode::NOT_FOUND => failures.push(json!({
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": format!("No {from} with ID {from_id} or no {to} with ID {to_id} exists"),
                    "context": {"fromId": [from_id], "toId": [to_id]},
                })),
                Err(e) => return Err(e),
            }
        }
        let mut body = json!({
            "status": "COMPLETE",
            "results": results,
            "startedAt": iso(started),
            "completedAt": iso(Utc::now()),
        });
        let status = if failures.is_empty() {
            StatusCode::OK
        } else {
            body["numErrors"] = json!(failures.len());
            body["errors"] = Value::Array(failures);
            StatusCode::MULTI_STATUS
        };
        Ok((status, Json(body)).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /crm/v4/objects/{fromObjectType}/{fromObjectId}/associations/{toObjectType}/{toObjectId}`:
/// removes every association between the two records (both directions);
/// 204, or 404 when either record does not exist.
pub(crate) async fn remove(
    State(state): State<HubSpotState>,
    Path((from_type, from_id, to_type, to_id)): Path<(String, String, String, String)>,
) -> Response {
    let result = (|| -> HsResult {
        let from = resolve(&state, &from_type)?;
        let to = resolve(&state, &to_type)?;
        let mut store = state.store();
        if store.get(&from, &from_id).is_none() || store.get(&to, &to_id).is_none() {
            return Err(errors::not_found());
        }
        store.dissociate((&from, &from_id), (&to, &to_id));
        Ok(StatusCode::NO_CONTENT.into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /crm/v4/objects/{fromObjectType}/{fromObjectId}/associations/{toObjectType}`
pub(crate) async fn list(
    State(state): State<HubSpotState>,
    Path((from_type, from_id, to_type)): Path<(String, String, String)>,
) -> Response {
    let result = (|| -> HsResult {
        let from = resolve(&state, &from_type)?;
        let to = resolve(&state, &to_type)?;
        let store = state.store();
        if store.get(&from, &from_id).is_none() {
            return Err(errors::not_found());
        }
        let results = associated(&store, &from, &from_id, &to);
        Ok(Json(json!({ "results": results })).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read`:
/// `inputs` (`{"id"}`, at most 1000); each found record's associated ids
/// (with their types) under `to`. Reads the records (no index lag); ids
/// not found come back in `errors` with 207.
pub(crate) async fn batch_read(
    State(state): State<HubSpotState>,
    Path((from_type, to_type)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let result = (|| -> HsResult {
        let started = Utc::now();
        let from = resolve(&state, &from_type)?;
        let to = resolve(&state, &to_type)?;
        let batch: Value = parse_json(&body)?;
        let Some(inputs) = batch.get("inputs").and_then(Value::as_array) else {
            return Err(errors::validation("Invalid input JSON: inputs is required"));
        };
        if inputs.len() > 1000 {
            return Err(errors::validation(
                "The maximum number of inputs supported in a batch request is 1000. Please reduce the number of items and try again",
            ));
        }
        let store = state.store();
        let (mut results, mut missing) = (Vec::new(), Vec::new());
        for input in inputs {
            let Some(id) = input.get("id").and_then(id_text) else {
                return Err(errors::validation(
                    "Invalid input JSON: every input needs an id",
                ));
            };
            if store.get(&from, &id).is_none() {
                missing.push(id);
                continue;
            }
            let to_list = associated(&store, &from, &id, &to);
            if to_list.is_empty() {
                continue;
            }
            results.push(json!({"from": {"id": id}, "to": to_list}));
        }
        let mut body = json!({
            "status": "COMPLETE",
            "results": results,
            "startedAt": iso(started),
            "completedAt": iso(Utc::now()),
        });
        if missing.is_empty() {
            return Ok(Json(body).into_response());
        }
        body["numErrors"] = json!(1);
        body["errors"] = json!([{
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": format!("No {from} with these ids exists"),
            "context": {"fromId": missing},
        }]);
        Ok((StatusCode::MULTI_STATUS, Json(body)).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The records of type `to` associated with `from_id`, each with its
/// association types, as the v4 reads answer them.
fn associated(store: &super::Store, from: &str, from_id: &str, to: &str) -> Vec<Value> {
    let mut grouped: Vec<(String, Vec<Value>)> = Vec::new();
    for a in store
        .associations
        .iter()
        .filter(|a| a.from_type == from && a.from_id == from_id && a.to_type == to)
    {
        let t = json!({"category": a.category, "typeId": a.type_id, "label": Value::Null});
        match grouped.iter_mut().find(|(id, _)| *id == a.to_id) {
            Some((_, types)) => types.push(t),
            None => grouped.push((a.to_id.clone(), vec![t])),
        }
    }
    grouped
        .into_iter()
        .map(|(id, types)| json!({"toObjectId": id.parse::<u64>().map(Value::from).unwrap_or(Value::String(id)), "associationTypes": types}))
        .collect()
}
