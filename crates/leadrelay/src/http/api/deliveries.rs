//! Deliveries with their attempts, and the dead-letter queue: replay one or
//! many (history is kept), discard.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::extract::{
    ApiJson, ApiPath, ApiQuery, Auth, OptionalJson, check_len, page_limit, paginate,
};
use super::views::*;
use super::{ItemErrors, ReadErrors, WriteErrors};
use crate::error::{ApiError, FieldError};
use crate::http::AppState;
use crate::store::{Delivery, DeliveryFilter, DeliveryState, dead_letter_ids};

/// Most dead letters one bulk request names.
const MAX_IDS: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    #[param(max_length = 100)]
    pub destination: Option<String>,
    pub state: Option<DeliveryState>,
    pub event_id: Option<Uuid>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

async fn page(
    app: &AppState,
    filter: &DeliveryFilter,
    cursor: Option<Uuid>,
    limit: Option<u32>,
    mask: bool,
) -> Result<DeliveryPage, ApiError> {
    let limit = page_limit(limit)?;
    let rows = app.store.list_deliveries(filter, cursor, limit + 1).await?;
    let (rows, next_cursor) = paginate(rows, limit, |d| d.id);
    Ok(DeliveryPage {
        items: rows.iter().map(|d| DeliveryView::new(d, mask)).collect(),
        next_cursor,
    })
}

/// Deliveries, newest first.
#[utoipa::path(get, path = "/api/v1/deliveries", tag = "deliveries", params(DeliveryQuery),
    responses((status = 200, description = "A page of deliveries", body = DeliveryPage), ReadErrors))]
pub async fn list_deliveries(
    State(app): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    check_len("destination", q.destination.as_deref(), 100)?;
    let filter = DeliveryFilter {
        destination: q.destination,
        state: q.state,
        event_id: q.event_id,
        since: q.since,
        ..Default::default()
    };
    Ok(Json(
        page(&app, &filter, q.cursor, q.limit, auth.mask()).await?,
    ))
}

/// The delivery with this id, or 404.
pub async fn find(app: &AppState, id: Uuid) -> Result<Delivery, ApiError> {
    app.store
        .get_delivery(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no delivery {id}")))
}

/// One delivery with every attempt.
#[utoipa::path(get, path = "/api/v1/deliveries/{id}", tag = "deliveries",
    params(("id" = Uuid, Path, description = "Delivery id")),
    responses((status = 200, description = "The delivery and its attempts", body = DeliveryDetail), ItemErrors))]
pub async fn get_delivery(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<DeliveryDetail>, ApiError> {
    let d = find(&app, id).await?;
    let attempts = app.store.attempts(id).await?;
    let mask = auth.mask();
    Ok(Json(DeliveryDetail {
        delivery: DeliveryView::new(&d, mask),
        attempts: attempts.iter().map(|a| AttemptView::new(a, mask)).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    #[param(max_length = 100)]
    pub destination: Option<String>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// Dead letters waiting for a person (not yet replayed), newest first; the
/// reason is in `reason`.
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "dead letters", params(DeadLetterQuery),
    responses((status = 200, description = "A page of dead letters", body = DeliveryPage), ReadErrors))]
pub async fn list_dead_letters(
    State(app): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    check_len("destination", q.destination.as_deref(), 100)?;
    let filter = DeliveryFilter {
        destination: q.destination,
        state: Some(DeliveryState::Dead),
        since: q.since,
        exclude_replayed: true,
        ..Default::default()
    };
    Ok(Json(
        page(&app, &filter, q.cursor, q.limit, auth.mask()).await?,
    ))
}

fn replayable(d: &Delivery) -> bool {
    matches!(
        d.state,
        DeliveryState::Dead | DeliveryState::Discarded | DeliveryState::Skipped
    ) && d.replayed_by.is_none()
}

/// Replays `ids` in chunks; answers what happened to each.
pub async fn replay_ids(
    app: &AppState,
    ids: Vec<Uuid>,
    overrides: Option<serde_json::Map<String, serde_json::Value>>,
) -> Result<ReplayResult, ApiError> {
    let requested = ids.len();
    let mut replayed = Vec::new();
    for chunk in ids.chunks(crate::http::admin::REPLAY_CHUNK) {
        let pairs = app.store.replay(chunk.to_vec(), overrides.clone()).await?;
        replayed.extend(pairs.into_iter().map(|(old, new)| ReplayPair {
            dead_letter_id: old,
            delivery_id: new,
        }));
    }
    let done: std::collections::HashSet<Uuid> = replayed.iter().map(|p| p.dead_letter_id).collect();
    let skipped = ids.into_iter().filter(|i| !done.contains(i)).collect();
    Ok(ReplayResult {
        requested,
        replayed,
        skipped,
    })
}

/// Replays one dead letter as a new delivery (its history is kept).
#[utoipa::path(post, path = "/api/v1/dead-letters/{id}/replay", tag = "dead letters",
    params(("id" = Uuid, Path, description = "Dead letter (delivery) id")),
    request_body(content = Option<ReplayRequest>, description = "Optional field overrides"),
    responses((status = 200, description = "How many were replayed as new deliveries", body = ReplayResult), WriteErrors))]
pub async fn replay_dead_letter(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    OptionalJson(body): OptionalJson<ReplayRequest>,
) -> Result<Json<ReplayResult>, ApiError> {
    auth.require_admin()?;
    let d = find(&app, id).await?;
    if !replayable(&d) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_replayable",
            format!(
                "delivery {id} is {}{}; only dead, discarded or skipped deliveries not yet replayed can be replayed",
                d.state.as_str(),
                if d.replayed_by.is_some() {
                    " and already replayed"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(Json(replay_ids(&app, vec![id], body.overrides).await?))
}

/// Replays many dead letters: by `ids`, or every one of a `destination` (`"*"`: all).
#[utoipa::path(post, path = "/api/v1/dead-letters/replay", tag = "dead letters",
    request_body = BulkReplayRequest,
    responses((status = 200, description = "How many were replayed as new deliveries", body = ReplayResult), WriteErrors))]
pub async fn replay_dead_letters(
    State(app): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<BulkReplayRequest>,
) -> Result<Json<ReplayResult>, ApiError> {
    auth.require_admin()?;
    let (ids, overrides) = match body {
        BulkReplayRequest::Ids(b) if b.ids.len() > MAX_IDS => {
            return Err(ApiError::validation(vec![FieldError::new(
                "ids",
                "too_many",
                format!("at most {MAX_IDS} ids per request; name a destination for more"),
            )]));
        }
        BulkReplayRequest::Ids(b) => (b.ids, b.overrides),
        BulkReplayRequest::Destination(b) => {
            let n = b.destination.chars().count();
            if n == 0 || n > 100 {
                return Err(ApiError::validation(vec![FieldError::new(
                    "destination",
                    "length",
                    "a destination name of 1 to 100 characters, or \"*\" for all",
                )]));
            }
            let destination = (b.destination != "*").then_some(b.destination);
            let ids = dead_letter_ids(app.store.as_ref(), destination.clone(), b.since).await?;
            // A name that is neither configured nor holds dead letters is a
            // typo, not "nothing to replay".
            if let Some(name) = destination
                && ids.is_empty()
                && app.admin.configured(&name).is_none()
            {
                return Err(ApiError::not_found(format!(
                    "there is no destination named {name:?}"
                )));
            }
            (ids, b.overrides)
        }
    };
    Ok(Json(replay_ids(&app, ids, overrides).await?))
}

fn not_discardable(d: &Delivery) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_discardable",
        format!(
            "delivery {} is {}; only dead letters can be discarded",
            d.id,
            d.state.as_str()
        ),
    )
}

/// Discards one dead letter: kept, never retried.
#[utoipa::path(post, path = "/api/v1/dead-letters/{id}/discard", tag = "dead letters",
    params(("id" = Uuid, Path, description = "Dead letter (delivery) id")),
    responses((status = 200, description = "How many were discarded", body = DiscardResult), WriteErrors))]
pub async fn discard_dead_letter(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<DiscardResult>, ApiError> {
    auth.require_admin()?;
    let d = find(&app, id).await?;
    if d.state != DeliveryState::Dead {
        return Err(not_discardable(&d));
    }
    let discarded = app.store.discard(vec![id]).await?;
    Ok(Json(DiscardResult {
        requested: 1,
        discarded,
    }))
}

/// Discards many dead letters (those that are not dead are left alone).
#[utoipa::path(post, path = "/api/v1/dead-letters/discard", tag = "dead letters",
    request_body = DiscardRequest,
    responses((status = 200, description = "How many were discarded", body = DiscardResult), WriteErrors))]
pub async fn discard_dead_letters(
    State(app): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<DiscardRequest>,
) -> Result<Json<DiscardResult>, ApiError> {
    auth.require_admin()?;
    if body.ids.len() > MAX_IDS {
        return Err(ApiError::validation(vec![FieldError::new(
            "ids",
            "too_many",
            format!("at most {MAX_IDS} ids per request"),
        )]));
    }
    let requested = body.ids.len();
    let discarded = app.store.discard(body.ids).await?;
    Ok(Json(DiscardResult {
        requested,
        discarded,
    }))
}
