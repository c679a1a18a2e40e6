//! `composite` (subrequests with `referenceId` and `@{ref.field}`
//! references, `allOrNone` rollback) and `composite/sobjects` (sObject
//! Collections create, update and delete).

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::errors::{self, RestError, SfError};
use super::rest::{Outcome, SubRequest, create, dispatch, remove, update};
use super::{SalesforceState, Store};
use crate::common::query_param;

const MAX_SUBREQUESTS: usize = 25;
const MAX_COLLECTION_RECORDS: usize = 200;

fn halted(message: String) -> Outcome {
    Outcome::json(
        StatusCode::BAD_REQUEST,
        json!([{"errorCode": "PROCESSING_HALTED", "message": message}]),
    )
}

fn rolled_back() -> Outcome {
    halted(
        "The transaction was rolled back since another operation in the same transaction failed."
            .into(),
    )
}

/// Follows `records[0].Id`-style paths into a response body.
fn lookup<'a>(body: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = body;
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

/// Replaces `@{ref.path}` in `text`. `in_json` escapes for a JSON string.
fn substitute(
    text: &str,
    results: &HashMap<String, Value>,
    in_json: bool,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("@{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("Invalid reference specified: {}", &rest[start..]));
        };
        let expr = &after[..end];
        let (reference, path) = expr.split_once('.').unwrap_or((expr, ""));
        let value = results.get(reference).and_then(|body| lookup(body, path)).filter(|v| !v.is_null()).ok_or_else(|| {
            format!(
                "Invalid reference specified. No value for {expr} found in {reference}. Provided referenceId ({reference}) is not a prior successful subrequest or the path does not exist."
            )
        })?;
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if in_json {
            let quoted = serde_json::to_string(&text).unwrap_or_default();
            out.push_str(quoted.trim_start_matches('"').trim_end_matches('"'));
        } else {
            out.push_str(&text);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_reference_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Planned {
    method: Method,
    url: String,
    reference_id: String,
    body: Option<Value>,
    allow_duplicates: bool,
}

fn plan(req: &SubRequest) -> Result<(bool, Vec<Planned>), RestError> {
    let body: Value =
        serde_json::from_slice(&req.body).map_err(|e| errors::json_parser(e.to_string()))?;
    let all_or_none = body
        .get("allOrNone")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(subs) = body.get("compositeRequest").and_then(Value::as_array) else {
        return Err(errors::json_parser(
            "Missing required field: compositeRequest",
        ));
    };
    if subs.is_empty() || subs.len() > MAX_SUBREQUESTS {
        return Err(RestError::bad(SfError::new(
            "INVALID_API_INPUT",
            format!(
                "Composite API requires between 1 and {MAX_SUBREQUESTS} subrequests, got {}",
                subs.len()
            ),
        )));
    }
    let mut planned = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for sub in subs {
        let method = sub
            .get("method")
            .and_then(Value::as_str)
            .and_then(|m| m.parse::<Method>().ok())
            .filter(|m| {
                matches!(
                    *m,
                    Method::GET | Method::POST | Method::PATCH | Method::PUT | Method::DELETE
                )
            })
            .ok_or_else(|| errors::json_parser("Missing or invalid subrequest field: method"))?;
        let url = sub
            .get("url")
            .and_then(Value::as_str)
            .filter(|u| u.starts_with("/services/data/"))
            .ok_or_else(|| errors::json_parser("Missing or invalid subrequest field: url"))?;
        let reference_id = sub
            .get("referenceId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !valid_reference_id(reference_id) {
            return Err(RestError::bad(SfError::new(
                "JSON_PARSER_ERROR",
                format!(
                    "Invalid referenceId '{reference_id}': it must start with a letter and contain only letters, numbers and underscores"
                ),
            )));
        }
        if !seen.insert(reference_id.to_string()) {
            return Err(RestError::bad(SfError::new(
                "INVALID_API_INPUT",
                format!("Duplicate referenceId provided in the request: {reference_id}"),
            )));
        }
        let allow_duplicates = req.allow_duplicates
            || sub
                .get("httpHeaders")
                .and_then(|h| h.as_object())
                .and_then(|h| {
                    h.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("Sforce-Duplicate-Rule-Header"))
                })
                .and_then(|(_, v)| v.as_str())
                .is_some_and(|v| {
                    v.replace(' ', "")
                        .to_ascii_lowercase()
                        .contains("allowsave=true")
                });
        planned.push(Planned {
            method,
            url: url.to_string(),
            reference_id: reference_id.to_string(),
            body: sub.get("body").cloned(),
            allow_duplicates,
        });
    }
    Ok((all_or_none, planned))
}

/// `POST composite`
pub(crate) fn composite(
    state: &SalesforceState,
    store: &mut Store,
    req: &SubRequest,
    _version: &str,
) -> Outcome {
    let (all_or_none, planned) = match plan(req) {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    let snapshot = all_or_none.then(|| store.clone());
    let mut bodies: HashMap<String, Value> = HashMap::new();
    let mut results: Vec<(String, Outcome)> = Vec::new();
    let mut failed = false;
    for sub in planned {
        if failed && all_or_none {
            results.push((sub.reference_id, rolled_back()));
            continue;
        }
        let outcome = (|| {
            let url = substitute(&sub.url, &bodies, false).map_err(halted)?;
            let body = match &sub.body {
                Some(b) => substitute(&b.to_string(), &bodies, true)
                    .map_err(halted)?
                    .into_bytes(),
                None => Vec::new(),
            };
            let target = url.trim_start_matches("/services/data/");
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_string(), Some(q.to_string())),
                None => (target.to_string(), None),
            };
            let sub_req = SubRequest {
                method: sub.method.clone(),
                path,
                query,
                body,
                allow_duplicates: sub.allow_duplicates,
                user_id: req.user_id.clone(),
            };
            Ok::<Outcome, Outcome>(dispatch(state, store, &sub_req))
        })()
        .unwrap_or_else(|halt| halt);
        if outcome.status.as_u16() >= 400 {
            failed = true;
        } else if let Some(b) = &outcome.body {
            bodies.insert(sub.reference_id.clone(), b.clone());
        }
        results.push((sub.reference_id, outcome));
    }
    if failed && let Some(snapshot) = snapshot {
        *store = snapshot;
        for (_, outcome) in results.iter_mut() {
            if outcome.status.as_u16() < 400 {
                *outcome = rolled_back();
            }
        }
    }
    let list: Vec<Value> = results
        .into_iter()
        .map(|(reference_id, o)| {
            let headers = match &o.location {
                Some(l) => json!({"Location": l}),
                None => json!({}),
            };
            json!({"body": o.body.unwrap_or(Value::Null), "httpHeaders": headers, "httpStatusCode": o.status.as_u16(), "referenceId": reference_id})
        })
        .collect();
    Outcome::json(StatusCode::OK, json!({ "compositeResponse": list }))
}

/// `POST composite/sobjects` creates, `PATCH composite/sobjects` updates
/// (each record with its `id`) up to 200 records.
pub(crate) fn collections(
    state: &SalesforceState,
    store: &mut Store,
    req: &SubRequest,
    version: &str,
) -> Outcome {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return errors::json_parser(e.to_string()).into(),
    };
    let all_or_none = body
        .get("allOrNone")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(records) = body.get("records").and_then(Value::as_array) else {
        return errors::json_parser("Missing required field: records").into();
    };
    if records.len() > MAX_COLLECTION_RECORDS {
        return RestError::bad(SfError::new(
            "EXCEEDED_ID_LIMIT",
            format!("record limit reached. cannot submit more than {MAX_COLLECTION_RECORDS} records into this call"),
        ))
        .into();
    }
    let snapshot = all_or_none.then(|| store.clone());
    let mut results: Vec<Result<String, Vec<SfError>>> = Vec::new();
    for record in records {
        let outcome = (|| {
            let Some(map) = record.as_object() else {
                return Err(vec![SfError::new(
                    "JSON_PARSER_ERROR",
                    "Each record must be an object",
                )]);
            };
            let object = map
                .get("attributes")
                .and_then(|a| a.get("type"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let Some(def) = state.object(object) else {
                return Err(vec![SfError::new(
                    "INVALID_TYPE",
                    format!("sObject type '{object}' is not supported."),
                )]);
            };
            if req.method != Method::PATCH {
                return create(state, store, def, map, req, version).map_err(|e| e.errors);
            }
            let Some(id) = map
                .get("id")
                .and_then(Value::as_str)
                .map(super::schema::id18)
            else {
                return Err(vec![SfError::new(
                    "MISSING_ARGUMENT",
                    "Id not specified in an update call",
                )]);
            };
            let mut changes = map.clone();
            changes.remove("id");
            if store.records.get(&id).is_none_or(|r| r.object != def.name) {
                return Err(vec![SfError::new(
                    "INVALID_CROSS_REFERENCE_KEY",
                    format!("invalid cross reference id: {id}"),
                )]);
            }
            update(state, store, def, &id, &changes, req, version)
                .map(|()| id)
                .map_err(|e| e.errors)
        })();
        results.push(outcome);
    }
    let any_failed = results.iter().any(Result::is_err);
    if any_failed && let Some(snapshot) = snapshot {
        *store = snapshot;
    }
    let list: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(_) if any_failed && all_or_none => json!({"success": false, "errors": [{
                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
                "fields": [],
            }]}),
            Ok(id) => json!({"id": id, "success": true, "errors": []}),
            Err(errs) => json!({"success": false, "errors": errs.iter().map(SfError::collection_json).collect::<Vec<_>>()}),
        })
        .collect();
    Outcome::json(StatusCode::OK, Value::Array(list))
}

/// `DELETE composite/sobjects?ids=ID,ID&allOrNone=BOOL`: up to 200
/// records of any objects; one `{id, success, errors}` per id, in order.
/// An id that names no record answers `ENTITY_IS_DELETED` (the fake has
/// no recycle bin: deleted records are gone).
pub(crate) fn delete_collection(store: &mut Store, req: &SubRequest) -> Outcome {
    let Some(ids) = query_param(req.query.as_deref(), "ids") else {
        return RestError::bad(SfError::new(
            "MISSING_ARGUMENT",
            "ids parameter not specified",
        ))
        .into();
    };
    let ids: Vec<&str> = ids
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    if ids.len() > MAX_COLLECTION_RECORDS {
        return RestError::bad(SfError::new(
            "EXCEEDED_ID_LIMIT",
            format!("record limit reached. cannot submit more than {MAX_COLLECTION_RECORDS} records into this call"),
        ))
        .into();
    }
    let all_or_none = query_param(req.query.as_deref(), "allOrNone").is_some_and(|v| v == "true");
    let snapshot = all_or_none.then(|| store.clone());
    let results: Vec<(String, Result<(), SfError>)> = ids
        .iter()
        .map(|raw| {
            if !super::schema::looks_like_id(raw) {
                return (
                    raw.to_string(),
                    Err(SfError::new("MALFORMED_ID", format!("malformed id {raw}"))),
                );
            }
            let id = super::schema::id18(raw);
            match remove(store, &id) {
                Some(_) => (id, Ok(())),
                None => (
                    id,
                    Err(SfError::new("ENTITY_IS_DELETED", "entity is deleted")),
                ),
            }
        })
        .collect();
    let any_failed = results.iter().any(|(_, r)| r.is_err());
    if any_failed && let Some(snapshot) = snapshot {
        *store = snapshot;
    }
    let list: Vec<Value> = results
        .into_iter()
        .map(|(id, r)| match r {
            Ok(()) if any_failed && all_or_none => json!({"id": id, "success": false, "errors": [{
                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
                "fields": [],
            }]}),
            Ok(()) => json!({"id": id, "success": true, "errors": []}),
            Err(e) => json!({"id": id, "success": false, "errors": [e.collection_json()]}),
        })
        .collect();
    Outcome::json(StatusCode::OK, Value::Array(list))
}
