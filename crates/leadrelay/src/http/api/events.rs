//! Events (with raw payloads and enrichment), contacts (with field
//! provenance), and who the caller is.

use axum::Json;
use chrono::{DateTime, Utc};
use leadrelay_model::{EventType, OriginKind};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::extract::{ApiPath, ApiQuery, Auth, check_len, page_limit, paginate};
use super::views::*;
use super::{ItemErrors, ReadErrors};
use crate::error::ApiError;
use crate::http::AppState;
use crate::store::{ContactFilter, EventFilter};
use axum::extract::State;

/// The caller's key name and role.
#[utoipa::path(get, path = "/api/v1/me", tag = "events",
    responses((status = 200, description = "The key's name and role", body = MeView), ReadErrors))]
pub async fn me(auth: Auth) -> Json<MeView> {
    Json(MeView {
        name: auth.0.key_name.clone(),
        role: auth.0.role,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Event type, e.g. `lead.created`.
    #[serde(rename = "type")]
    #[param(pattern = r"^[a-z0-9][a-z0-9.:_-]{0,63}$")]
    pub event_type: Option<String>,
    /// Only events from this form.
    #[param(max_length = 100)]
    pub form: Option<String>,
    /// Only events from this source (vendor webhook).
    #[param(max_length = 100)]
    pub source: Option<String>,
    /// Only events sent to `POST /v1/events` with this API key (its name).
    #[param(max_length = 100)]
    pub api: Option<String>,
    /// Received at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Received before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Text to find: an email or any value of the event.
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// Only spam (true) or only real submissions (false).
    pub spam: Option<bool>,
    /// Only events merged into this contact.
    pub contact_id: Option<Uuid>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// Events, newest first, filtered by type, origin (form, source or API
/// key), time and text.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, description = "A page of events", body = EventPage), ReadErrors))]
pub async fn list_events(
    State(app): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = page_limit(q.limit)?;
    check_len("form", q.form.as_deref(), 100)?;
    check_len("source", q.source.as_deref(), 100)?;
    check_len("api", q.api.as_deref(), 100)?;
    check_len("q", q.q.as_deref(), 200)?;
    let mut filter = EventFilter {
        search: q.q.clone(),
        spam: q.spam,
        since: q.since,
        until: q.until,
        contact_id: q.contact_id,
        ..Default::default()
    };
    if let Some(t) = &q.event_type {
        filter.event_type = Some(EventType::parse(t).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_query",
                e.to_string(),
            )
        })?);
    }
    let origins = [
        (OriginKind::Form, &q.form),
        (OriginKind::Source, &q.source),
        (OriginKind::Api, &q.api),
    ];
    let mut given = origins
        .iter()
        .filter_map(|(k, n)| n.as_ref().map(|n| (*k, n)));
    if let Some((kind, name)) = given.next() {
        // No event has two origins.
        if given.next().is_some() {
            return Ok(Json(EventPage {
                items: Vec::new(),
                next_cursor: None,
            }));
        }
        filter.origin_kind = Some(kind);
        filter.origin_name = Some(name.clone());
    }
    let rows = app.store.list_events(&filter, q.cursor, limit + 1).await?;
    let (rows, next_cursor) = paginate(rows, limit, |e| e.id);
    let mask = auth.mask();
    Ok(Json(EventPage {
        items: rows.iter().map(|e| EventSummary::new(e, mask)).collect(),
        next_cursor,
    }))
}

/// Builds an event's timeline: the event, its deliveries, their attempts.
pub async fn event_detail(app: &AppState, id: Uuid, mask: bool) -> Result<EventDetail, ApiError> {
    let event = app
        .store
        .get_event(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no event {id}")))?;
    let mut deliveries = Vec::new();
    for d in app.store.deliveries_for_event(id).await? {
        let attempts = app.store.attempts(d.id).await?;
        deliveries.push(DeliveryDetail {
            delivery: DeliveryView::new(&d, mask),
            attempts: attempts.iter().map(|a| AttemptView::new(a, mask)).collect(),
        });
    }
    Ok(EventDetail {
        event: EventView::new(&event, mask),
        deliveries,
    })
}

/// One event with its raw payload, enrichment, deliveries and attempts.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events",
    params(("id" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "The event with its deliveries and attempts", body = EventDetail), ItemErrors))]
pub async fn get_event(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EventDetail>, ApiError> {
    Ok(Json(event_detail(&app, id, auth.mask()).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContactQuery {
    /// Text to find: an email or any value of the record.
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// Contacts (golden records), newest first.
#[utoipa::path(get, path = "/api/v1/contacts", tag = "contacts", params(ContactQuery),
    responses((status = 200, description = "A page of contacts", body = ContactPage), ReadErrors))]
pub async fn list_contacts(
    State(app): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ContactQuery>,
) -> Result<Json<ContactPage>, ApiError> {
    let limit = page_limit(q.limit)?;
    check_len("q", q.q.as_deref(), 200)?;
    let filter = ContactFilter { search: q.q };
    let rows = app
        .store
        .list_contacts(&filter, q.cursor, limit + 1)
        .await?;
    let (rows, next_cursor) = paginate(rows, limit, |c| c.id);
    let mask = auth.mask();
    Ok(Json(ContactPage {
        items: rows.iter().map(|c| ContactView::new(c, mask)).collect(),
        next_cursor,
    }))
}

/// One contact with the provenance of each field.
#[utoipa::path(get, path = "/api/v1/contacts/{id}", tag = "contacts",
    params(("id" = Uuid, Path, description = "Contact id")),
    responses((status = 200, description = "The contact", body = ContactView), ItemErrors))]
pub async fn get_contact(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ContactView>, ApiError> {
    let c = app
        .store
        .get_contact(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no contact {id}")))?;
    let mut view = ContactView::new(&c, auth.mask());
    view.timers = Some(super::pipeline::contact_timers(&app, id).await?);
    Ok(Json(view))
}
