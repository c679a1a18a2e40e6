//! Forms and marketing events, read side: a form's definition and its
//! submissions, and a marketing event's participations (who registered,
//! attended, cancelled or did not show).
//!
//! Followed reference: developers.hubspot.com, "Forms" (`GET
//! /marketing/v3/forms/{formId}` answering the form with `id`, `name`,
//! `formType`, `createdAt`, `updatedAt`, `archived`), "Get submissions for a
//! form" (`GET /form-integrations/v1/submissions/forms/{form_guid}`: newest
//! first, `limit` default 20 and at most 50, an opaque `after`; each result
//! `conversionId`, `submittedAt` in epoch milliseconds, `values` of
//! `{name, value}` and `pageUrl`; `paging.next.after` while more remain) and
//! "Marketing events — participant state" (`GET
//! /marketing/v3/marketing-events/participations/{marketingEventId}/breakdown`:
//! `results` of `{id, createdAt, associations: {contact: {contactId, email,
//! firstname, lastname}, marketingEvent: {marketingEventId, name,
//! externalAccountId, externalEventId}}, properties: {attendanceState,
//! occurredAt, attendanceDurationSeconds, attendancePercentage}}`, `total`,
//! `paging.next.after`; optional `state` and `contactIdentifier` filters).
//! Dated versions live at `/marketing/forms/{version}/…` and
//! `/marketing/marketing-events/{version}/…`; submissions stay v1.
//!
//! Simplified: a submission creates or updates the contact by its `email`
//! value (HubSpot also merges by cookie), one participation per contact and
//! event (the latest state, as the Attendance State object keeps it), and the
//! page size of a participations breakdown is at most 100 (the reference
//! names no maximum).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::errors::{self, HsError};
use super::objects::{insert_record, query_pairs};
use super::{HubSpotState, iso};

/// The largest `limit` of a submissions page.
pub const MAX_SUBMISSIONS_PAGE: usize = 50;
/// The largest `limit` of a participations page (see the module's notes).
pub const MAX_PARTICIPATIONS_PAGE: usize = 100;

/// A form of the fake portal.
#[derive(Debug, Clone, PartialEq)]
pub struct HubSpotForm {
    /// The form's GUID.
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Oldest first.
    pub submissions: Vec<FormSubmission>,
}

/// One submission of a form.
#[derive(Debug, Clone, PartialEq)]
pub struct FormSubmission {
    pub conversion_id: String,
    pub submitted_at: DateTime<Utc>,
    /// (property name, value) in the order the form sent them.
    pub values: Vec<(String, String)>,
    pub page_url: String,
}

/// A marketing event and its participations.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketingEvent {
    /// HubSpot's object id of the event (`marketingEventId`).
    pub id: String,
    pub name: String,
    pub external_account_id: String,
    pub external_event_id: String,
    /// Contact id → its participation.
    pub participations: BTreeMap<u64, Participation>,
}

/// A contact's participation in a marketing event.
#[derive(Debug, Clone, PartialEq)]
pub struct Participation {
    pub id: String,
    /// `REGISTERED`, `ATTENDED`, `CANCELLED`, `NO_SHOW`.
    pub state: String,
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub duration_seconds: Option<u64>,
}

type HsResult = Result<Response, HsError>;

fn finish(r: HsResult) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

fn not_found(what: &str, id: &str) -> HsError {
    errors::error(
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        format!("{what} {id} does not exist."),
    )
}

/// A random-looking GUID built from a counter (stable within a run).
fn guid(n: u64) -> String {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) as u16,
        (h & 0xfff) as u16,
        ((h >> 12) & 0xfff) as u16,
        n
    )
}

/// `limit`: absent → `default`; otherwise 1..=`max` or a validation error.
fn page_limit(pairs: &[(String, String)], default: usize, max: usize) -> Result<usize, HsError> {
    match pairs.iter().find(|(k, _)| k == "limit").map(|(_, v)| v) {
        None => Ok(default),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(errors::validation(format!(
                "limit must be between 1 and {max} (got {l})"
            ))),
        },
    }
}

/// The offset an `after` token names (tokens are opaque to clients: the
/// fake hides a plain offset in base-36 behind a prefix).
fn page_start(pairs: &[(String, String)]) -> Result<usize, HsError> {
    match pairs.iter().find(|(k, _)| k == "after").map(|(_, v)| v) {
        None => Ok(0),
        Some(a) if a.is_empty() => Ok(0),
        Some(a) => a
            .strip_prefix("Pg")
            .and_then(|n| usize::from_str_radix(n, 36).ok())
            .ok_or_else(|| errors::validation(format!("Invalid paging token: {a}"))),
    }
}

fn after_token(offset: usize) -> String {
    let mut n = offset;
    let mut digits = Vec::new();
    loop {
        digits.push(std::char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    format!("Pg{}", digits.into_iter().collect::<String>())
}

/// A page's body: the `results` from offset `start` of `total`, and
/// `paging.next` (an `after` token and its link) while more remain.
fn page_body(results: Vec<Value>, start: usize, total: usize) -> Value {
    let next = start + results.len();
    let mut body = json!({"results": results});
    if next < total {
        let after = after_token(next);
        body["paging"] = json!({"next": {"after": after, "link": format!("?after={after}")}});
    }
    body
}

impl HubSpotState {
    /// Creates a form as a person would in HubSpot; returns its GUID.
    pub fn create_form(&self, name: &str) -> String {
        let mut store = self.store();
        let id = guid(store.next_id());
        store.forms.insert(
            id.clone(),
            HubSpotForm {
                id: id.clone(),
                name: name.to_string(),
                created_at: Utc::now(),
                submissions: Vec::new(),
            },
        );
        id
    }

    /// A visitor submits the form `form_id` at `at`: the submission is
    /// kept and the contact with its `email` value created or updated with
    /// the values. Returns the `conversionId` (None: no such form).
    pub fn submit_form_at(
        &self,
        form_id: &str,
        values: &[(&str, &str)],
        page_url: &str,
        at: DateTime<Utc>,
    ) -> Option<String> {
        let mut store = self.store();
        let n = store.next_id();
        let form = store.forms.get_mut(form_id)?;
        let conversion_id = guid(n ^ 0x5a5a);
        form.submissions.push(FormSubmission {
            conversion_id: conversion_id.clone(),
            submitted_at: at,
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            page_url: page_url.to_string(),
        });
        form.submissions.sort_by_key(|s| s.submitted_at);
        if let Some((_, email)) = values.iter().find(|(k, _)| *k == "email") {
            let props: BTreeMap<String, String> = values
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let existing = store
                .find_by("contacts", "email", email)
                .map(|r| r.record.id.clone());
            match existing.and_then(|id| id.parse::<u64>().ok()) {
                Some(id) => {
                    if let Some(r) = store.records.get_mut(&("contacts".to_string(), id)) {
                        r.record.properties.extend(props);
                    }
                }
                None => {
                    insert_record(&mut store, "contacts", props);
                }
            }
        }
        Some(conversion_id)
    }

    /// [`submit_form_at`](Self::submit_form_at) now.
    pub fn submit_form(
        &self,
        form_id: &str,
        values: &[(&str, &str)],
        page_url: &str,
    ) -> Option<String> {
        self.submit_form_at(form_id, values, page_url, Utc::now())
    }

    /// Deletes a form and its submissions.
    pub fn delete_form(&self, form_id: &str) -> bool {
        self.store().forms.remove(form_id).is_some()
    }

    /// Creates a marketing event (as an event app would); returns its
    /// `marketingEventId`.
    pub fn create_marketing_event(&self, name: &str, external_event_id: &str) -> String {
        let mut store = self.store();
        let id = store.next_id().to_string();
        store.marketing_events.insert(
            id.clone(),
            MarketingEvent {
                id: id.clone(),
                name: name.to_string(),
                external_account_id: "leadrelay-fake-events".into(),
                external_event_id: external_event_id.to_string(),
                participations: BTreeMap::new(),
            },
        );
        id
    }

    /// Records a contact's state in a marketing event at `at` (as the
    /// event app's attendance calls would). False: no such event or contact.
    pub fn set_participation(
        &self,
        event_id: &str,
        contact_id: &str,
        state: &str,
        at: DateTime<Utc>,
    ) -> bool {
        let mut store = self.store();
        let Ok(contact) = contact_id.parse::<u64>() else {
            return false;
        };
        if store.get("contacts", contact_id).is_none() {
            return false;
        }
        let n = store.next_id();
        let Some(event) = store.marketing_events.get_mut(event_id) else {
            return false;
        };
        let p = event
            .participations
            .entry(contact)
            .or_insert_with(|| Participation {
                id: n.to_string(),
                state: String::new(),
                occurred_at: at,
                created_at: Utc::now(),
                duration_seconds: None,
            });
        p.state = state.to_string();
        p.occurred_at = at;
        p.duration_seconds = (state == "ATTENDED").then_some(3600);
        true
    }

    /// A form as it is now.
    pub fn form(&self, form_id: &str) -> Option<HubSpotForm> {
        self.store().forms.get(form_id).cloned()
    }
}

/// `GET /marketing/v3/forms/{formId}`
pub(crate) async fn read_form(
    State(state): State<HubSpotState>,
    Path(form_id): Path<String>,
) -> Response {
    match state.store().forms.get(&form_id) {
        Some(f) => Json(json!({
            "id": f.id,
            "name": f.name,
            "formType": "hubspot",
            "createdAt": iso(f.created_at),
            "updatedAt": iso(f.created_at),
            "archived": false,
            "fieldGroups": [],
        }))
        .into_response(),
        None => not_found("Form", &form_id).into_response(),
    }
}

/// `GET /form-integrations/v1/submissions/forms/{form_guid}`
pub(crate) async fn submissions(
    State(state): State<HubSpotState>,
    Path(form_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    finish(submissions_inner(&state, &form_id, q.as_deref()))
}

fn submissions_inner(state: &HubSpotState, form_id: &str, q: Option<&str>) -> HsResult {
    let pairs = query_pairs(q);
    let limit = page_limit(&pairs, 20, MAX_SUBMISSIONS_PAGE)?;
    let start = page_start(&pairs)?;
    let store = state.store();
    let Some(form) = store.forms.get(form_id) else {
        return Err(not_found("Form", form_id));
    };
    let total = form.submissions.len();
    let results = form
        .submissions
        .iter()
        .rev()
        .skip(start)
        .take(limit)
        .map(|s| {
            json!({
                "conversionId": s.conversion_id,
                "submittedAt": s.submitted_at.timestamp_millis(),
                "values": s.values.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
                "pageUrl": s.page_url,
            })
        })
        .collect();
    Ok(Json(page_body(results, start, total)).into_response())
}

/// `GET /marketing/v3/marketing-events/participations/{marketingEventId}/breakdown`
pub(crate) async fn participations(
    State(state): State<HubSpotState>,
    Path(event_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    finish(participations_inner(&state, &event_id, q.as_deref()))
}

fn participations_inner(state: &HubSpotState, event_id: &str, q: Option<&str>) -> HsResult {
    let pairs = query_pairs(q);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit = page_limit(&pairs, 10, MAX_PARTICIPATIONS_PAGE)?;
    let start = page_start(&pairs)?;
    let state_filter = get("state");
    if let Some(s) = state_filter
        && !["REGISTERED", "ATTENDED", "CANCELLED", "NO_SHOW"].contains(&s)
    {
        return Err(errors::validation(format!(
            "state must be one of REGISTERED, ATTENDED, CANCELLED, NO_SHOW (got {s})"
        )));
    }
    let store = state.store();
    let Some(event) = store.marketing_events.get(event_id) else {
        return Err(not_found("Marketing event", event_id));
    };
    let contact_filter = get("contactIdentifier");
    let matching: Vec<Value> = event
        .participations
        .iter()
        .filter(|(_, p)| state_filter.is_none_or(|s| p.state == s))
        .filter_map(|(contact, p)| {
            let c = store.get("contacts", &contact.to_string())?;
            let prop = |k: &str| c.record.get(k).unwrap_or_default().to_string();
            if let Some(f) = contact_filter
                && f != contact.to_string()
                && !prop("email").eq_ignore_ascii_case(f)
            {
                return None;
            }
            Some(json!({
                "id": p.id,
                "createdAt": iso(p.created_at),
                "associations": {
                    "contact": {
                        "contactId": contact.to_string(),
                        "email": prop("email"),
                        "firstname": prop("firstname"),
                        "lastname": prop("lastname"),
                    },
                    "marketingEvent": {
                        "marketingEventId": event.id,
                        "name": event.name,
                        "externalAccountId": event.external_account_id,
                        "externalEventId": event.external_event_id,
                    },
                },
                "properties": {
                    "attendanceState": p.state,
                    "occurredAt": p.occurred_at.timestamp_millis(),
                    "attendanceDurationSeconds": p.duration_seconds,
                    "attendancePercentage": p.duration_seconds.map(|_| "100"),
                },
            }))
        })
        .collect();
    let total = matching.len();
    let page = matching.into_iter().skip(start).take(limit).collect();
    let mut body = page_body(page, start, total);
    body["total"] = json!(total);
    Ok(Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_tokens_round_trip() {
        for n in [0, 1, 35, 36, 50, 1234, 99_999] {
            let t = after_token(n);
            assert!(t.starts_with("Pg"));
            assert_eq!(page_start(&[("after".into(), t)]).ok(), Some(n));
        }
        assert!(page_start(&[("after".into(), "50".into())]).is_err());
    }

    #[test]
    fn guids_are_distinct() {
        assert_ne!(guid(1), guid(2));
        assert_eq!(guid(7).len(), 36);
    }
}
