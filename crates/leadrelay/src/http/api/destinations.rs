//! Destinations with their health (success rate, p50/p99 latency, backlog,
//! dead letters, paused, circuit state); pause and resume.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, TimeZone, Utc};

use super::extract::{ApiPath, Auth, OptionalJson};
use super::views::*;
use super::{ItemErrors, ReadErrors, WriteErrors};
use crate::error::{ApiError, FieldError};
use crate::http::AppState;
use crate::http::admin::{destination_health, one_destination_health};

/// The pause "until resumed" is stored as.
pub fn indefinitely() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Every destination and its health over the last 24 hours.
#[utoipa::path(get, path = "/api/v1/destinations", tag = "destinations",
    responses((status = 200, description = "Every destination with its health", body = Vec<DestinationHealth>), ReadErrors))]
pub async fn list_destinations(
    State(app): State<AppState>,
    _auth: Auth,
) -> Result<Json<Vec<DestinationHealth>>, ApiError> {
    Ok(Json(destination_health(&app).await?))
}

/// One destination's health.
#[utoipa::path(get, path = "/api/v1/destinations/{name}", tag = "destinations",
    params(("name" = String, Path, description = "Destination name")),
    responses((status = 200, description = "The destination and its health", body = DestinationHealth), ItemErrors))]
pub async fn get_destination(
    State(app): State<AppState>,
    _auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<DestinationHealth>, ApiError> {
    Ok(Json(one_destination_health(&app, &name).await?))
}

/// Pauses a destination (every node honours it) until `until` or until resumed.
#[utoipa::path(post, path = "/api/v1/destinations/{name}/pause", tag = "destinations",
    params(("name" = String, Path, description = "Destination name")),
    request_body(content = Option<PauseRequest>, description = "Optional: until when, and why"),
    responses((status = 200, description = "The destination and its health", body = DestinationHealth), WriteErrors))]
pub async fn pause_destination(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    OptionalJson(body): OptionalJson<PauseRequest>,
) -> Result<Json<DestinationHealth>, ApiError> {
    let who = auth.require_admin()?;
    one_destination_health(&app, &name).await?;
    // A time already past pauses nothing (and never shortens a longer pause).
    let until = body.until.unwrap_or_else(indefinitely);
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
    let reason = match body.reason.as_deref().map(str::trim) {
        Some(r) if !r.is_empty() => format!("paused by {}: {r}", who.actor()),
        _ => format!("paused by {}", who.actor()),
    };
    app.store.pause_destination(&name, until, &reason).await?;
    tracing::info!(destination = %name, actor = %who.actor(), "destination paused");
    Ok(Json(one_destination_health(&app, &name).await?))
}

/// Resumes a paused destination (and re-enables one disabled after `410 Gone`).
#[utoipa::path(post, path = "/api/v1/destinations/{name}/resume", tag = "destinations",
    params(("name" = String, Path, description = "Destination name")),
    responses((status = 200, description = "The destination and its health", body = DestinationHealth), WriteErrors))]
pub async fn resume_destination(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<DestinationHealth>, ApiError> {
    let who = auth.require_admin()?;
    resume(&app, &name).await?;
    tracing::info!(destination = %name, actor = %who.actor(), "destination resumed");
    Ok(Json(one_destination_health(&app, &name).await?))
}

/// Clears a pause and a `410 Gone` disable.
pub async fn resume(app: &AppState, name: &str) -> Result<(), ApiError> {
    let health = one_destination_health(app, name).await?;
    if health.disabled {
        app.store
            .set_destination_disabled(name, false, None)
            .await?;
    }
    app.store.resume_destination(name).await?;
    Ok(())
}
