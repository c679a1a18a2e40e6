//! The sales pipeline in the admin API: durable handoff and SLA timers
//! (`GET /api/v1/timers`), the lead state shown in the contact view, and
//! accepting or disqualifying a lead (`POST /api/v1/contacts/{id}/accept`,
//! `…/disqualify`), which store `lead.accepted` / `lead.disqualified` events.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use leadrelay_model::{ContactData, Event, EventType, LeadState, Origin, Stage};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{ApiPath, ApiQuery, Auth, OptionalJson, page_limit, paginate};
use super::views::ContactView;
use super::{ReadErrors, WriteErrors};
use crate::error::{ApiError, FieldError};
use crate::http::AppState;
use crate::store::{IngestItem, TIMER_CANCELED, TIMER_DONE, TIMER_PENDING, Timer, TimerFilter};

/// A contact's score, stage, owner and handoff times.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LeadView {
    /// The score when last computed (`scored_at`).
    pub score: f64,
    /// `lead`, `mql`, `sql` or `disqualified`.
    pub stage: String,
    pub scored_at: Option<DateTime<Utc>>,
    pub owner: Option<String>,
    /// Why the owner was chosen.
    pub owner_reason: Option<String>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub qualified_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub disqualified_at: Option<DateTime<Utc>>,
    pub requalified: u32,
}

impl From<&LeadState> for LeadView {
    fn from(l: &LeadState) -> Self {
        Self {
            score: l.score,
            stage: l.stage.as_str().to_string(),
            scored_at: l.scored_at,
            owner: l.owner.as_ref().map(|o| o.owner.clone()),
            owner_reason: l.owner.as_ref().map(|o| o.reason.clone()),
            assigned_at: l.owner.as_ref().map(|o| o.assigned_at),
            qualified_at: l.qualified_at,
            accepted_at: l.accepted_at,
            last_activity_at: l.last_activity_at,
            disqualified_at: l.disqualified_at,
            requalified: l.requalified,
        }
    }
}

/// A timer's state.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TimerState {
    Pending,
    Done,
    Canceled,
}

impl TimerState {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerState::Pending => TIMER_PENDING,
            TimerState::Done => TIMER_DONE,
            TimerState::Canceled => TIMER_CANCELED,
        }
    }
}

/// A timer's kind.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// Assign the owner, notify, start the SLA (due at once).
    Handoff,
    /// The owner's time to accept or act.
    Sla,
}

impl TimerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Handoff => crate::pipeline::HANDOFF_TIMER,
            TimerKind::Sla => crate::pipeline::SLA_TIMER,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimerQuery {
    /// Only this contact's timers.
    pub contact_id: Option<Uuid>,
    #[param(inline)]
    pub state: Option<TimerState>,
    #[param(inline)]
    pub kind: Option<TimerKind>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// The lead state and timers of an event's contact, for the dashboard's
/// lead page (nothing when there is none, or the store cannot say).
pub async fn lead_of(app: &AppState, contact_id: Option<Uuid>) -> (Option<LeadView>, Vec<Timer>) {
    let Some(id) = contact_id else {
        return (None, vec![]);
    };
    let lead = match app.store.get_contact(id).await {
        Ok(Some(c)) if !c.lead.is_empty() => LeadView::from(&c.lead),
        _ => return (None, vec![]),
    };
    let timers = contact_timers(app, id).await.unwrap_or_default();
    (Some(lead), timers)
}

/// A contact's timers, newest first (the latest 50).
pub async fn contact_timers(app: &AppState, contact_id: Uuid) -> Result<Vec<Timer>, ApiError> {
    let filter = TimerFilter {
        contact_id: Some(contact_id),
        ..Default::default()
    };
    Ok(app.store.list_timers(&filter, None, 50).await?)
}

/// A page of timers, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TimerPage {
    pub items: Vec<Timer>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<Uuid>,
}

/// Handoff and SLA timers, newest first: what is due when, and what firing did.
#[utoipa::path(get, path = "/api/v1/timers", tag = "contacts", params(TimerQuery),
    responses((status = 200, description = "A page of timers", body = TimerPage), ReadErrors))]
pub async fn list_timers(
    State(app): State<AppState>,
    _auth: Auth,
    ApiQuery(q): ApiQuery<TimerQuery>,
) -> Result<Json<TimerPage>, ApiError> {
    let limit = page_limit(q.limit)?;
    let filter = TimerFilter {
        contact_id: q.contact_id,
        state: q.state.map(|s| s.as_str().to_string()),
        kind: q.kind.map(|k| k.as_str().to_string()),
    };
    let rows = app.store.list_timers(&filter, q.cursor, limit + 1).await?;
    let (items, next_cursor) = paginate(rows, limit, |t| t.id);
    Ok(Json(TimerPage { items, next_cursor }))
}

/// Accepting or disqualifying a lead (optional body).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadActionRequest {
    /// Why; kept in the stored event's data.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// The owner accepts a sales-qualified lead: stores `lead.accepted` (routed
/// like any event), which stops its SLA timer.
#[utoipa::path(post, path = "/api/v1/contacts/{id}/accept", tag = "contacts",
    params(("id" = Uuid, Path, description = "Contact id")),
    request_body(content = Option<LeadActionRequest>, description = "Optional: why"),
    responses((status = 200, description = "The contact", body = ContactView), WriteErrors))]
pub async fn accept_lead(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    OptionalJson(body): OptionalJson<LeadActionRequest>,
) -> Result<Json<ContactView>, ApiError> {
    lead_action(&app, &auth, id, body, crate::pipeline::ACCEPTED).await
}

/// Disqualifies a lead: stores `lead.disqualified` (routed like any event);
/// its score's event points are dropped, its SLA timer stops, and if it
/// qualifies again `handoff.requalify` decides what happens.
#[utoipa::path(post, path = "/api/v1/contacts/{id}/disqualify", tag = "contacts",
    params(("id" = Uuid, Path, description = "Contact id")),
    request_body(content = Option<LeadActionRequest>, description = "Optional: why"),
    responses((status = 200, description = "The contact", body = ContactView), WriteErrors))]
pub async fn disqualify_lead(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    OptionalJson(body): OptionalJson<LeadActionRequest>,
) -> Result<Json<ContactView>, ApiError> {
    lead_action(&app, &auth, id, body, crate::pipeline::score::DISQUALIFIED).await
}

async fn lead_action(
    app: &AppState,
    auth: &Auth,
    id: Uuid,
    body: LeadActionRequest,
    event_type: &str,
) -> Result<Json<ContactView>, ApiError> {
    let who = auth.require_admin()?;
    if body
        .reason
        .as_deref()
        .is_some_and(|r| r.chars().count() > 500)
    {
        return Err(ApiError::validation(vec![FieldError::new(
            "reason",
            "too_long",
            "at most 500 characters",
        )]));
    }
    if !app.config.scoring.enabled() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "scoring_off",
            "lead scoring is not configured ([scoring] has no rules)",
        ));
    }
    let contact = app
        .store
        .get_contact(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no contact {id}")))?;
    let stage = contact.lead.stage;
    let allowed = if event_type == crate::pipeline::ACCEPTED {
        stage == Stage::Sql
    } else {
        stage != Stage::Disqualified
    };
    if !allowed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "stage",
            format!(
                "contact {id} is {}: {event_type} does not apply",
                stage.as_str()
            ),
        ));
    }
    let now = Utc::now();
    let mut data = serde_json::Map::new();
    data.insert("by".into(), who.actor().into());
    if let Some(r) = body.reason {
        data.insert("reason".into(), r.into());
    }
    let mut event = Event::internal(
        EventType::parse(event_type).map_err(|e| ApiError::unavailable(e.to_string()))?,
        Origin::api(&who.key_name),
        ContactData {
            email: contact.data.email.clone(),
            ..Default::default()
        },
        data,
        now,
    );
    let destinations = app.ingestor.routes().route_and_record(&mut event);
    app.store
        .ingest_one(IngestItem {
            event,
            destinations,
            idempotency: None,
        })
        .await?;
    let updated = app
        .store
        .get_contact(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no contact {id}")))?;
    Ok(Json(ContactView::new(&updated, auth.mask())))
}
