//! Lists (the "Lists API", ILS lists): create, read, search, and the
//! memberships of a list — read by record id or in join order, 250 at most a
//! page with an opaque `after` token, added and removed (only for `MANUAL`
//! and `SNAPSHOT` lists; `DYNAMIC` lists are kept by their filters, which the
//! fake's tests and accessors play).
//!
//! Followed reference: HubSpot's public CRM Lists OpenAPI document (v3 and
//! the dated versions): `POST /crm/v3/lists` (`name`, `objectTypeId`,
//! `processingType` required) answering `{"list": PublicObjectList}`,
//! `GET /crm/v3/lists/{listId}`, `POST /crm/v3/lists/search` (`count`
//! default 20, at most 500; `offset`; answers `lists`, `hasMore`, `offset`,
//! `total`), `GET …/{listId}/memberships` (sorted by `recordId` ascending)
//! and `…/memberships/join-order` (by the time the record was added), both
//! `limit` default 100, at most 250, answering `results` of
//! `{recordId, membershipTimestamp}`, `paging.next.after` and `total`;
//! `PUT …/memberships/add` and `…/remove` (a JSON array of record ids;
//! ids that do not exist are reported in `recordIdsMissing`).
//!
//! Simplified: list names are unique among all lists (HubSpot: among public
//! lists); a deleted contact leaves every list at once; `processingStatus`
//! is `COMPLETE` unless a test sets it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;

use super::errors::{self, HsError};
use super::objects::{parse_json, query_pairs};
use super::{HubSpotState, iso};

type HsResult = Result<Response, HsError>;

fn finish(r: HsResult) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// The largest `limit` of a memberships page.
pub const MAX_MEMBERSHIPS_PAGE: usize = 250;
/// The largest `count` of a list search.
pub const MAX_SEARCH_COUNT: usize = 500;

/// A list of the fake portal.
#[derive(Debug, Clone, PartialEq)]
pub struct HubSpotList {
    pub id: String,
    pub name: String,
    /// `0-1` for contacts.
    pub object_type_id: String,
    /// `MANUAL`, `SNAPSHOT` or `DYNAMIC`.
    pub processing_type: String,
    /// `COMPLETE`, or `PROCESSING` while HubSpot evaluates the filters.
    pub processing_status: String,
    pub version: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Record id (numeric) → when it was added.
    pub members: BTreeMap<u64, DateTime<Utc>>,
}

impl HubSpotList {
    fn json(&self) -> Value {
        json!({
            "listId": self.id,
            "listVersion": self.version,
            "name": self.name,
            "objectTypeId": self.object_type_id,
            "processingType": self.processing_type,
            "processingStatus": self.processing_status,
            "size": self.members.len(),
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "createdById": "1",
            "updatedById": "1",
        })
    }
}

/// The record type a list's `objectTypeId` holds (contacts, companies,
/// deals), as the store names it.
fn record_type(object_type_id: &str) -> Option<&'static str> {
    match object_type_id {
        "0-1" => Some("contacts"),
        "0-2" => Some("companies"),
        "0-3" => Some("deals"),
        _ => None,
    }
}

fn list_not_found(id: &str) -> HsError {
    errors::error(
        axum::http::StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        format!("List with id {id} does not exist."),
    )
}

impl HubSpotState {
    /// Creates a list as a person would in HubSpot; returns its id.
    pub fn create_list(&self, name: &str, processing_type: &str) -> String {
        let mut store = self.store();
        store.new_list(name, "0-1", processing_type).id
    }

    /// Adds contacts (by id) to a list, as a person or a workflow would
    /// (any processing type). Returns false when the list is unknown.
    pub fn add_to_list(&self, list_id: &str, record_ids: &[&str]) -> bool {
        let mut store = self.store();
        let Some(list) = store.list_mut(list_id) else {
            return false;
        };
        let now = Utc::now();
        for id in record_ids {
            if let Ok(n) = id.parse::<u64>() {
                list.members.entry(n).or_insert(now);
            }
        }
        list.updated_at = now;
        true
    }

    /// Takes contacts out of a list. Returns false when the list is unknown.
    pub fn remove_from_list(&self, list_id: &str, record_ids: &[&str]) -> bool {
        let mut store = self.store();
        let Some(list) = store.list_mut(list_id) else {
            return false;
        };
        for id in record_ids {
            if let Ok(n) = id.parse::<u64>() {
                list.members.remove(&n);
            }
        }
        list.updated_at = Utc::now();
        true
    }

    /// Deletes a list (as `DELETE /crm/v3/lists/{listId}` would).
    pub fn delete_list(&self, list_id: &str) -> bool {
        self.store().lists.remove(list_id).is_some()
    }

    /// Sets a list's `processingStatus` (e.g. `PROCESSING` while its
    /// filters are evaluated).
    pub fn set_list_processing(&self, list_id: &str, status: &str) {
        if let Some(l) = self.store().list_mut(list_id) {
            l.processing_status = status.to_string();
        }
    }

    /// A list as it is now.
    pub fn list(&self, list_id: &str) -> Option<HubSpotList> {
        self.store().lists.get(list_id).cloned()
    }
}

impl super::Store {
    pub(crate) fn new_list(
        &mut self,
        name: &str,
        object_type_id: &str,
        processing_type: &str,
    ) -> HubSpotList {
        let id = self.next_id().to_string();
        let now = Utc::now();
        let list = HubSpotList {
            id: id.clone(),
            name: name.to_string(),
            object_type_id: object_type_id.to_string(),
            processing_type: processing_type.to_string(),
            processing_status: "COMPLETE".into(),
            version: 1,
            created_at: now,
            updated_at: now,
            members: BTreeMap::new(),
        };
        self.lists.insert(id, list.clone());
        list
    }

    pub(crate) fn list_mut(&mut self, id: &str) -> Option<&mut HubSpotList> {
        self.lists.get_mut(id)
    }

    /// A deleted record leaves every list.
    pub(crate) fn drop_memberships(&mut self, object_type: &str, id: u64) {
        for l in self.lists.values_mut() {
            if record_type(&l.object_type_id) == Some(object_type) {
                l.members.remove(&id);
            }
        }
    }
}

/// `POST /crm/v3/lists`
pub(crate) async fn create(State(state): State<HubSpotState>, body: Bytes) -> Response {
    finish(create_inner(&state, &body))
}

fn create_inner(state: &HubSpotState, body: &[u8]) -> HsResult {
    let v: Value = parse_json(body)?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::trim);
    let mut missing = Vec::new();
    for k in ["name", "objectTypeId", "processingType"] {
        if text(k).is_none_or(str::is_empty) {
            missing.push(k);
        }
    }
    if !missing.is_empty() {
        return Err(errors::validation(format!(
            "Invalid input JSON: missing required fields {}",
            missing.join(", ")
        )));
    }
    let (name, object_type_id, processing) = (
        text("name").unwrap_or_default(),
        text("objectTypeId").unwrap_or_default(),
        text("processingType").unwrap_or_default(),
    );
    if record_type(object_type_id).is_none() {
        return Err(errors::validation(format!(
            "objectTypeId {object_type_id} does not support lists"
        )));
    }
    if !["MANUAL", "SNAPSHOT", "DYNAMIC"].contains(&processing) {
        return Err(errors::validation(format!(
            "processingType must be one of MANUAL, SNAPSHOT, DYNAMIC (got {processing})"
        )));
    }
    let mut store = state.store();
    if store
        .lists
        .values()
        .any(|l| l.name.eq_ignore_ascii_case(name))
    {
        return Err(errors::validation(format!(
            "A list with the name '{name}' already exists."
        )));
    }
    let list = store.new_list(name, object_type_id, processing);
    Ok(Json(json!({"list": list.json()})).into_response())
}

/// `GET /crm/v3/lists/{listId}`
pub(crate) async fn read(
    State(state): State<HubSpotState>,
    Path(list_id): Path<String>,
) -> Response {
    match state.store().lists.get(&list_id) {
        Some(l) => Json(json!({"list": l.json()})).into_response(),
        None => list_not_found(&list_id).into_response(),
    }
}

/// `POST /crm/v3/lists/search`
pub(crate) async fn search(State(state): State<HubSpotState>, body: Bytes) -> Response {
    finish(search_inner(&state, &body))
}

fn search_inner(state: &HubSpotState, body: &[u8]) -> HsResult {
    let v: Value = parse_json(body)?;
    let count = match v.get("count") {
        None | Some(Value::Null) => 20,
        Some(c) => match c.as_u64() {
            Some(n) if (1..=MAX_SEARCH_COUNT as u64).contains(&n) => n as usize,
            _ => {
                return Err(errors::validation(format!(
                    "count must be between 1 and {MAX_SEARCH_COUNT}"
                )));
            }
        },
    };
    let offset = v.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
    let query = v
        .get("query")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_lowercase();
    let store = state.store();
    let found: Vec<&HubSpotList> = store
        .lists
        .values()
        .filter(|l| query.is_empty() || l.name.to_lowercase().contains(&query))
        .collect();
    let page: Vec<Value> = found
        .iter()
        .skip(offset)
        .take(count)
        .map(|l| {
            let mut j = l.json();
            j["additionalProperties"] = json!({
                "hs_list_size": l.members.len().to_string(),
            });
            j
        })
        .collect();
    let next = offset + page.len();
    Ok(Json(json!({
        "lists": page,
        "hasMore": next < found.len(),
        "offset": next,
        "total": found.len(),
    }))
    .into_response())
}

/// How a memberships page is ordered.
#[derive(Clone, Copy)]
enum Order {
    RecordId,
    JoinTime,
}

/// `GET /crm/v3/lists/{listId}/memberships`
pub(crate) async fn memberships(
    State(state): State<HubSpotState>,
    Path(list_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    finish(memberships_inner(
        &state,
        &list_id,
        q.as_deref(),
        Order::RecordId,
    ))
}

/// `GET /crm/v3/lists/{listId}/memberships/join-order`
pub(crate) async fn join_order(
    State(state): State<HubSpotState>,
    Path(list_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    finish(memberships_inner(
        &state,
        &list_id,
        q.as_deref(),
        Order::JoinTime,
    ))
}

/// The sort key of a membership, and its `after` token: the record id, or
/// the join time in milliseconds and the record id.
fn token(order: Order, id: u64, at: DateTime<Utc>) -> String {
    match order {
        Order::RecordId => id.to_string(),
        Order::JoinTime => format!("{}_{id}", at.timestamp_millis()),
    }
}

fn memberships_inner(
    state: &HubSpotState,
    list_id: &str,
    q: Option<&str>,
    order: Order,
) -> HsResult {
    let pairs = query_pairs(q);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit = match get("limit") {
        None => 100,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_MEMBERSHIPS_PAGE).contains(&n) => n,
            _ => {
                return Err(errors::validation(format!(
                    "limit must be between 1 and {MAX_MEMBERSHIPS_PAGE} (got {l})"
                )));
            }
        },
    };
    let store = state.store();
    let Some(list) = store.lists.get(list_id) else {
        return Err(list_not_found(list_id));
    };
    let mut all: Vec<(u64, DateTime<Utc>)> = list.members.iter().map(|(k, v)| (*k, *v)).collect();
    if let Order::JoinTime = order {
        all.sort_by_key(|(id, at)| (at.timestamp_millis(), *id));
    }
    let start = match get("after") {
        None | Some("") => 0,
        Some(after) => {
            let key = |(id, at): &(u64, DateTime<Utc>)| match order {
                Order::RecordId => (0, *id),
                Order::JoinTime => (at.timestamp_millis(), *id),
            };
            let wanted = match order {
                Order::RecordId => after.parse::<u64>().ok().map(|id| (0, id)),
                Order::JoinTime => after
                    .split_once('_')
                    .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.parse::<u64>().ok()?))),
            };
            let Some(wanted) = wanted else {
                return Err(errors::validation(format!(
                    "Invalid paging offset token: {after}"
                )));
            };
            all.iter().take_while(|m| key(m) <= wanted).count()
        }
    };
    let page: Vec<&(u64, DateTime<Utc>)> = all.iter().skip(start).take(limit).collect();
    let results: Vec<Value> = page
        .iter()
        .map(|(id, at)| json!({"recordId": id.to_string(), "membershipTimestamp": iso(*at)}))
        .collect();
    let mut out = json!({"results": results, "total": all.len()});
    if start + page.len() < all.len()
        && let Some((id, at)) = page.last()
    {
        out["paging"] = json!({"next": {"after": token(order, *id, *at)}});
    }
    Ok(Json(out).into_response())
}

/// `PUT /crm/v3/lists/{listId}/memberships/add`
pub(crate) async fn add(
    State(state): State<HubSpotState>,
    Path(list_id): Path<String>,
    body: Bytes,
) -> Response {
    finish(change(&state, &list_id, &body, true))
}

/// `PUT /crm/v3/lists/{listId}/memberships/remove`
pub(crate) async fn remove(
    State(state): State<HubSpotState>,
    Path(list_id): Path<String>,
    body: Bytes,
) -> Response {
    finish(change(&state, &list_id, &body, false))
}

fn change(state: &HubSpotState, list_id: &str, body: &[u8], add: bool) -> HsResult {
    let ids: Vec<Value> = parse_json(body)?;
    let mut store = state.store();
    let Some(list) = store.lists.get(list_id) else {
        return Err(list_not_found(list_id));
    };
    if list.processing_type == "DYNAMIC" {
        return Err(errors::validation(format!(
            "List {list_id} has processingType DYNAMIC: memberships can only be changed for MANUAL or SNAPSHOT lists."
        )));
    }
    let object = record_type(&list.object_type_id).unwrap_or("contacts");
    let (mut changed, mut missing) = (Vec::new(), Vec::new());
    let mut known = Vec::new();
    for v in &ids {
        let id = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(errors::validation(
                    "Invalid input JSON: record ids are strings",
                ));
            }
        };
        match id.parse::<u64>() {
            Ok(n) if store.get(object, &id).is_some() => known.push((id, n)),
            _ => missing.push(id),
        }
    }
    let now = Utc::now();
    let Some(list) = store.list_mut(list_id) else {
        return Err(list_not_found(list_id));
    };
    for (id, n) in known {
        let did = if add {
            if let std::collections::btree_map::Entry::Vacant(e) = list.members.entry(n) {
                e.insert(now);
                true
            } else {
                false
            }
        } else {
            list.members.remove(&n).is_some()
        };
        if did {
            changed.push(id);
        }
    }
    list.updated_at = now;
    let key = if add {
        "recordIdsAdded"
    } else {
        "recordIdsRemoved"
    };
    Ok(Json(json!({key: changed, "recordIdsMissing": missing})).into_response())
}
