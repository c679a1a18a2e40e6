//! CRM record syncs in the admin API: each sync's health, and the decision
//! on a sync conflict waiting in the review queue (keep one side's value or
//! set an edited one; the sync then writes it to both systems).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, Auth};
use super::views::ReviewItemView;
use super::{ReadErrors, WriteErrors};
use crate::config::sync::Side;
use crate::connectors::hubspot::read::{self, ReadStatus};
use crate::error::{ApiError, FieldError};
use crate::http::AppState;
use crate::sync::{Choice, DecideError, Health};

/// The configured syncs and their health, and what the HubSpot
/// destinations read into leadrelay (lists, forms, marketing events).
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncList {
    pub syncs: Vec<Health>,
    pub reads: Vec<ReadStatus>,
}

/// The decision on a sync conflict: `take` one side, or a `value` (in
/// system `a`'s vocabulary; `null` clears the field).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    /// `a` or `b`: keep that system's value.
    pub take: Option<TakeSide>,
    /// An edited value, written to both systems.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub value: Option<Option<String>>,
}

/// A side of a sync.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TakeSide {
    A,
    B,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Each sync: records, cursors, writes, echoes dropped, conflicts, errors;
/// and each HubSpot destination's reads: the latest round's events and
/// errors.
#[utoipa::path(get, path = "/api/v1/syncs", tag = "syncs",
    responses((status = 200, description = "The configured syncs", body = SyncList), ReadErrors))]
pub async fn list_syncs(
    State(app): State<AppState>,
    _auth: Auth,
) -> Result<Json<SyncList>, ApiError> {
    let syncs = crate::sync::health(&app.config, &app.store).await?;
    let reads = read::statuses(&app.config, &app.store).await;
    Ok(Json(SyncList { syncs, reads }))
}

/// Decides a sync conflict; the sync writes the value to both systems in
/// its next round.
#[utoipa::path(post, path = "/api/v1/review/{id}/decide", tag = "syncs",
    params(("id" = Uuid, Path, description = "Review item id of a sync conflict")),
    request_body = DecideRequest,
    responses((status = 200, description = "The resolved review item", body = ReviewItemView), WriteErrors))]
pub async fn decide_sync_conflict(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<DecideRequest>,
) -> Result<Json<ReviewItemView>, ApiError> {
    let who = auth.require_admin()?;
    let choice = match (body.take, body.value) {
        (Some(side), None) => Choice::Take(match side {
            TakeSide::A => Side::A,
            TakeSide::B => Side::B,
        }),
        (None, Some(v)) => {
            if v.as_ref().is_some_and(|v| v.chars().count() > 10_000) {
                return Err(ApiError::validation(vec![FieldError::new(
                    "value",
                    "too_long",
                    "at most 10000 characters",
                )]));
            }
            Choice::Value(v)
        }
        _ => {
            return Err(ApiError::validation(vec![FieldError::new(
                "take",
                "one_of",
                "give either take (\"a\" or \"b\") or value",
            )]));
        }
    };
    match crate::sync::decide_conflict(&app.store, id, choice, &who.actor()).await {
        Ok(item) => Ok(Json(ReviewItemView::new(&item, false))),
        Err(DecideError::NotFound(m)) => Err(ApiError::not_found(m)),
        Err(DecideError::Conflict(m)) => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "conflict",
            m,
        )),
        Err(DecideError::Store(e)) => Err(e.into()),
    }
}
