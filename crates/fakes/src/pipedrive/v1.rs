//! API v1 endpoints that have no v2 counterpart: leads, notes and `users/me`.
//! v1 accepts JSON and, for notes, form-encoded bodies.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::errors::{self, PdError};
use super::v2::{
    PdResult, finish, opt_str, require_deal, require_lead, require_org, require_person, valid_date,
};
use super::{PipedriveLead, PipedriveNote, PipedriveState, v1_time};

fn iso_ms(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A JSON object body, or a form body turned into one (ids stay strings).
fn body_map(
    headers: &HeaderMap,
    body: &[u8],
    allow_form: bool,
) -> Result<Map<String, Value>, PdError> {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if form && allow_form {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|e| errors::bad_request(format!("Invalid form body: {e}")))?;
        return Ok(pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(errors::bad_request("Request body must be a JSON object")),
        Err(e) => Err(errors::bad_request(format!("Invalid JSON body: {e}"))),
    }
}

/// An integer id given as a number, or (form bodies) as a numeric string.
fn id_field(m: &Map<String, Value>, k: &str, strict: bool) -> Result<Option<u64>, PdError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            errors::bad_request(format!("Validation failed: {k}: must be an integer"))
        }),
        Some(Value::String(s)) if !strict => s.trim().parse().map(Some).map_err(|_| {
            errors::bad_request(format!("Validation failed: {k}: must be an integer"))
        }),
        Some(_) => Err(errors::bad_request(format!(
            "Validation failed: {k}: must be an integer"
        ))),
    }
}

pub(crate) fn lead_json(l: &PipedriveLead) -> Value {
    json!({
        "id": l.id,
        "title": l.title,
        "owner_id": l.owner_id,
        "creator_id": l.owner_id,
        "label_ids": l.label_ids,
        "person_id": l.person_id,
        "organization_id": l.organization_id,
        "source_name": "API",
        "origin": "API",
        "origin_id": l.origin_id,
        "channel": l.channel,
        "channel_id": l.channel_id,
        "is_archived": false,
        "was_seen": l.was_seen,
        "value": l.value.as_ref().map(|(amount, currency)| json!({"amount": amount, "currency": currency})),
        "expected_close_date": l.expected_close_date,
        "next_activity_id": Value::Null,
        "add_time": iso_ms(l.add_time),
        "update_time": iso_ms(l.update_time),
        "visible_to": l.visible_to,
        "cc_email": format!("leadrelay-fake+lead{}@pipedrivemail.com", l.id.split('-').next().unwrap_or_default()),
    })
}

/// `POST /api/v1/leads`
pub(crate) async fn create_lead(
    State(state): State<PipedriveState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    finish((|| -> PdResult {
        let body = body_map(&headers, &body, false)?;
        let title = match body.get("title") {
            Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(errors::bad_request(
                    "Validation failed: title: Parameter 'title' is required",
                ));
            }
            Some(_) => {
                return Err(errors::bad_request(
                    "Validation failed: title: Parameter 'title' must be a string",
                ));
            }
        };
        let person_id = id_field(&body, "person_id", true)?;
        let organization_id = id_field(&body, "organization_id", true)?;
        if person_id.is_none() && organization_id.is_none() {
            return Err(errors::bad_request(
                "Validation failed: person_id: Parameter 'person_id' is required unless 'organization_id' is specified",
            ));
        }
        let value = match body.get("value") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let amount = v.get("amount").and_then(Value::as_f64);
                let currency = v.get("currency").and_then(Value::as_str);
                match (amount, currency) {
                    (Some(a), Some(c)) if c.len() == 3 => Some((a, c.to_uppercase())),
                    _ => {
                        return Err(errors::bad_request(
                            "Validation failed: value: Both 'amount' (number) and 'currency' (3-letter code) are required",
                        ));
                    }
                }
            }
        };
        let expected_close_date = match body.get("expected_close_date") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) if valid_date(d) => Some(d.clone()),
            Some(_) => {
                return Err(errors::bad_request(
                    "Validation failed: expected_close_date: must be a date in format YYYY-MM-DD",
                ));
            }
        };
        let label_ids = match body.get("label_ids") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(_) => {
                return Err(errors::bad_request(
                    "Validation failed: label_ids: must be an array of strings",
                ));
            }
        };
        let owner_id = id_field(&body, "owner_id", true)?.unwrap_or(state.inner.config.user.id);
        let visible_to = match body.get("visible_to") {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) if matches!(v.as_str(), "1" | "3" | "5" | "7") => {
                Some(v.clone())
            }
            Some(_) => {
                return Err(errors::bad_request(
                    "Validation failed: visible_to: must be one of \"1\", \"3\", \"5\", \"7\"",
                ));
            }
        };
        let mut store = state.store();
        require_person(&store, person_id)?;
        require_org(&store, organization_id)?;
        let now = Utc::now();
        let lead = PipedriveLead {
            id: uuid::Uuid::now_v7().to_string(),
            title,
            owner_id,
            person_id,
            organization_id,
            value,
            expected_close_date,
            label_ids,
            origin_id: opt_str(&body, "origin_id"),
            channel: body.get("channel").and_then(Value::as_i64),
            channel_id: opt_str(&body, "channel_id"),
            visible_to,
            was_seen: body
                .get("was_seen")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            add_time: now,
            update_time: now,
        };
        let out = lead_json(&lead);
        store.leads.push(lead);
        Ok(errors::ok(StatusCode::CREATED, out))
    })())
}

/// A v1 list's query string: `limit` (1–500, default 100), `start`, and
/// integer filters, refused with v1's validation messages.
struct ListQuery(Vec<(String, String)>);

impl ListQuery {
    fn parse(query: Option<&str>) -> Self {
        ListQuery(
            query
                .and_then(|q| serde_urlencoded::from_str(q).ok())
                .unwrap_or_default(),
        )
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn number(&self, k: &str) -> Result<Option<u64>, PdError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                errors::bad_request(format!("Validation failed: {k}: must be an integer"))
            }),
        }
    }

    /// `(limit, start)`.
    fn page(&self) -> Result<(u64, usize), PdError> {
        let limit = self.number("limit")?.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(errors::bad_request(
                "Validation failed: limit: must be between 1 and 500",
            ));
        }
        Ok((limit, self.number("start")?.unwrap_or(0) as usize))
    }
}

/// `GET /api/v1/leads`: `limit` (1–500, default 100), `start`,
/// `person_id`, `organization_id`, `owner_id`, `archived_status`
/// (`archived`, `not_archived`, `all`; this fake's leads are never
/// archived). Oldest first, with v1's pagination block.
pub(crate) async fn list_leads(
    State(state): State<PipedriveState>,
    RawQuery(query): RawQuery,
) -> Response {
    finish((|| -> PdResult {
        let q = ListQuery::parse(query.as_deref());
        let (get, number) = (|k: &str| q.get(k), |k: &str| q.number(k));
        let (limit, start) = q.page()?;
        let (person, org, owner) = (
            number("person_id")?,
            number("organization_id")?,
            number("owner_id")?,
        );
        let archived = match get("archived_status").unwrap_or("all") {
            "archived" => true,
            "not_archived" | "all" => false,
            other => {
                return Err(errors::bad_request(format!(
                    "Validation failed: archived_status: must be one of archived, not_archived, all (got '{other}')"
                )));
            }
        };
        let store = state.store();
        let matching: Vec<&PipedriveLead> = store
            .leads
            .iter()
            .filter(|_| !archived)
            .filter(|l| person.is_none_or(|p| l.person_id == Some(p)))
            .filter(|l| org.is_none_or(|o| l.organization_id == Some(o)))
            .filter(|l| owner.is_none_or(|o| l.owner_id == o))
            .collect();
        let page: Vec<Value> = matching
            .iter()
            .skip(start)
            .take(limit as usize)
            .map(|l| lead_json(l))
            .collect();
        let more = matching.len() > start + page.len();
        Ok(errors::ok_with(
            StatusCode::OK,
            Value::Array(page),
            json!({"pagination": {"start": start, "limit": limit, "more_items_in_collection": more}}),
        ))
    })())
}

/// `GET /api/v1/leads/{id}`
pub(crate) async fn get_lead(
    State(state): State<PipedriveState>,
    Path(id): Path<String>,
) -> Response {
    finish((|| -> PdResult {
        let store = state.store();
        let lead = store
            .leads
            .iter()
            .find(|l| l.id == id)
            .ok_or_else(|| errors::not_found("Lead"))?;
        Ok(errors::ok(StatusCode::OK, lead_json(lead)))
    })())
}

fn note_json(state: &PipedriveState, store: &super::Store, n: &PipedriveNote) -> Value {
    let user = &state.inner.config.user;
    json!({
        "id": n.id,
        "user_id": n.user_id,
        "deal_id": n.deal_id,
        "person_id": n.person_id,
        "org_id": n.org_id,
        "lead_id": n.lead_id,
        "project_id": n.project_id,
        "content": n.content,
        "add_time": v1_time(n.add_time),
        "update_time": v1_time(n.update_time),
        "active_flag": true,
        "pinned_to_deal_flag": false,
        "pinned_to_person_flag": false,
        "pinned_to_organization_flag": false,
        "pinned_to_lead_flag": false,
        "last_update_user_id": Value::Null,
        "organization": n.org_id.and_then(|id| store.organizations.get(&id)).map(|o| json!({"name": o.name})),
        "person": n.person_id.and_then(|id| store.persons.get(&id)).map(|p| json!({"name": p.name})),
        "deal": n.deal_id.and_then(|id| store.deals.get(&id)).map(|d| json!({"title": d.title})),
        "lead": n.lead_id.as_ref().and_then(|id| store.leads.iter().find(|l| &l.id == id)).map(|l| json!({"title": l.title})),
        "user": {"email": user.email, "name": user.name, "icon_url": Value::Null, "is_you": true},
    })
}

/// `GET /api/v1/notes`: `person_id`, `deal_id`, `org_id`, `lead_id`,
/// `start`, `limit` (1–500, default 100), `sort` (`field ASC|DESC`, fields
/// `id`, `add_time`, `update_time`; oldest first by default), with v1's
/// pagination block. Read from the records: a new note is listed at once.
pub(crate) async fn list_notes(
    State(state): State<PipedriveState>,
    RawQuery(query): RawQuery,
) -> Response {
    finish((|| -> PdResult {
        let q = ListQuery::parse(query.as_deref());
        let (get, number) = (|k: &str| q.get(k), |k: &str| q.number(k));
        let (limit, start) = q.page()?;
        let (person, deal, org) = (number("person_id")?, number("deal_id")?, number("org_id")?);
        let lead = get("lead_id");
        let sort = get("sort").unwrap_or("id ASC");
        let mut words = sort.split_whitespace();
        let (field, dir) = (words.next().unwrap_or("id"), words.next().unwrap_or("ASC"));
        if !matches!(field, "id" | "add_time" | "update_time")
            || !matches!(dir.to_uppercase().as_str(), "ASC" | "DESC")
        {
            return Err(errors::bad_request(format!(
                "Validation failed: sort: unsupported sort '{sort}'"
            )));
        }
        let store = state.store();
        let mut matching: Vec<&PipedriveNote> = store
            .notes
            .values()
            .filter(|n| person.is_none_or(|p| n.person_id == Some(p)))
            .filter(|n| deal.is_none_or(|d| n.deal_id == Some(d)))
            .filter(|n| org.is_none_or(|o| n.org_id == Some(o)))
            .filter(|n| lead.is_none_or(|l| n.lead_id.as_deref() == Some(l)))
            .collect();
        match field {
            "add_time" => matching.sort_by_key(|n| (n.add_time, n.id)),
            "update_time" => matching.sort_by_key(|n| (n.update_time, n.id)),
            _ => matching.sort_by_key(|n| n.id),
        }
        if dir.eq_ignore_ascii_case("DESC") {
            matching.reverse();
        }
        let page: Vec<Value> = matching
            .iter()
            .skip(start)
            .take(limit as usize)
            .map(|n| note_json(&state, &store, n))
            .collect();
        let more = matching.len() > start + page.len();
        Ok(errors::ok_with(
            StatusCode::OK,
            Value::Array(page),
            json!({"pagination": {"start": start, "limit": limit, "more_items_in_collection": more}}),
        ))
    })())
}

/// `POST /api/v1/notes`
pub(crate) async fn create_note(
    State(state): State<PipedriveState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    finish((|| -> PdResult {
        let body = body_map(&headers, &body, true)?;
        let content = opt_str(&body, "content").filter(|c| !c.trim().is_empty());
        let Some(content) = content else {
            return Err(errors::bad_request(
                "Validation failed: content: Parameter 'content' is required",
            ));
        };
        let deal_id = id_field(&body, "deal_id", false)?;
        let person_id = id_field(&body, "person_id", false)?;
        let org_id = id_field(&body, "org_id", false)?;
        let project_id = id_field(&body, "project_id", false)?;
        let lead_id = opt_str(&body, "lead_id").filter(|l| !l.is_empty());
        if deal_id.is_none()
            && person_id.is_none()
            && org_id.is_none()
            && project_id.is_none()
            && lead_id.is_none()
        {
            return Err(errors::bad_request(
                "Validation failed: one of lead_id, deal_id, person_id, org_id or project_id is required",
            ));
        }
        let mut store = state.store();
        require_deal(&store, deal_id)?;
        require_person(&store, person_id)?;
        require_org(&store, org_id)?;
        require_lead(&store, lead_id.as_deref())?;
        if let Some(p) = project_id {
            return Err(errors::bad_request(format!(
                "Project with id {p} not found"
            )));
        }
        let id = store.next_id();
        let now = Utc::now();
        let note = PipedriveNote {
            id,
            content,
            lead_id,
            deal_id,
            person_id,
            org_id,
            project_id,
            user_id: state.inner.config.user.id,
            add_time: now,
            update_time: now,
        };
        let out = note_json(&state, &store, &note);
        store.notes.insert(id, note);
        Ok(errors::ok(StatusCode::CREATED, out))
    })())
}

/// `GET /api/v1/users/me`: the cheap credential check.
pub(crate) async fn users_me(State(state): State<PipedriveState>) -> Response {
    let c = &state.inner.config;
    errors::ok(
        StatusCode::OK,
        json!({
            "id": c.user.id,
            "name": c.user.name,
            "email": c.user.email,
            "lang": 1,
            "locale": "en_US",
            "timezone_name": "UTC",
            "timezone_offset": "+00:00",
            "default_currency": "USD",
            "icon_url": Value::Null,
            "active_flag": true,
            "is_admin": 1,
            "role_id": 1,
            "created": "2020-01-01 00:00:00",
            "has_created_company": true,
            "is_you": true,
            "company_id": c.company_id,
            "company_name": c.company_name,
            "company_domain": c.company_domain,
            "company_country": "US",
            "company_industry": "Software",
            "language": {"language_code": "en", "country_code": "US"},
        }),
    )
}

/// The standard fields the fake lists before the custom ones (key, name,
/// type): a subset of Pipedrive's.
const PERSON_FIELDS: &[(&str, &str, &str)] = &[
    ("name", "Name", "varchar"),
    ("email", "Email", "varchar"),
    ("phone", "Phone", "phone"),
    ("org_id", "Organization", "org"),
    ("owner_id", "Owner", "user"),
];
const ORGANIZATION_FIELDS: &[(&str, &str, &str)] = &[
    ("name", "Name", "varchar"),
    ("address", "Address", "address"),
    ("owner_id", "Owner", "user"),
];

const DEAL_FIELDS: &[(&str, &str, &str)] = &[
    ("title", "Title", "varchar"),
    ("value", "Value", "monetary"),
    ("stage_id", "Stage", "stage"),
    ("person_id", "Contact person", "people"),
    ("owner_id", "Owner", "user"),
];

/// `GET /v1/personFields` / `dealFields`: every field, `start`/`limit`
/// paginated (limit at most 500), as Pipedrive lists them.
fn fields(state: &PipedriveState, object: &str, query: Option<&str>) -> Response {
    let pairs: Vec<(String, String)> = query
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let num = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.parse::<usize>())
    };
    let start = match num("start") {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return errors::bad_request("start must be a number").into_response(),
    };
    let limit = match num("limit") {
        None => 100,
        Some(Ok(n)) if (1..=500).contains(&n) => n,
        Some(_) => {
            return errors::bad_request("limit must be a number from 1 to 500").into_response();
        }
    };
    let standard = match object {
        "person" => PERSON_FIELDS,
        "organization" => ORGANIZATION_FIELDS,
        _ => DEAL_FIELDS,
    };
    let all: Vec<Value> = standard
        .iter()
        .map(|(k, n, t)| (k.to_string(), n.to_string(), t.to_string(), false))
        .chain(
            state
                .inner
                .config
                .custom_fields
                .iter()
                .filter(|f| f.object == object)
                .map(|f| (f.key.clone(), f.name.clone(), f.field_type.clone(), true)),
        )
        .enumerate()
        .map(|(i, (key, name, t, custom))| {
            json!({
                "id": i + 1, "key": key, "name": name, "field_type": t,
                "edit_flag": custom, "active_flag": true, "add_visible_flag": true,
                "mandatory_flag": false, "order_nr": i,
            })
        })
        .collect();
    let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
    let more = start + page.len() < all.len();
    errors::ok_with(
        StatusCode::OK,
        Value::Array(page),
        json!({"pagination": {
            "start": start, "limit": limit, "more_items_in_collection": more,
            "next_start": if more { json!(start + limit) } else { Value::Null },
        }}),
    )
}

pub(crate) async fn person_fields(
    State(state): State<PipedriveState>,
    RawQuery(query): RawQuery,
) -> Response {
    fields(&state, "person", query.as_deref())
}

pub(crate) async fn organization_fields(
    State(state): State<PipedriveState>,
    RawQuery(query): RawQuery,
) -> Response {
    fields(&state, "organization", query.as_deref())
}

pub(crate) async fn deal_fields(
    State(state): State<PipedriveState>,
    RawQuery(query): RawQuery,
) -> Response {
    fields(&state, "deal", query.as_deref())
}
