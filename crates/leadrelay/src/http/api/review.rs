//! The review queue: decisions a person must make, such as sync conflicts
//! no field-ownership rule settles. Items are added by the sync engine;
//! here they are listed, read and closed.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, ApiQuery, Auth, page_limit, paginate};
use super::views::*;
use super::{ItemErrors, ReadErrors, WriteErrors};
use crate::error::{ApiError, FieldError};
use crate::http::AppState;
use crate::store::ReviewStatus;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    pub status: Option<ReviewStatus>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// Review items, newest first.
#[utoipa::path(get, path = "/api/v1/review", tag = "review", params(ReviewQuery),
    responses((status = 200, description = "A page of review items", body = ReviewPage), ReadErrors))]
pub async fn list_review_items(
    State(app): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ReviewQuery>,
) -> Result<Json<ReviewPage>, ApiError> {
    let limit = page_limit(q.limit)?;
    let rows = app
        .store
        .list_review_items(q.status, q.cursor, limit + 1)
        .await?;
    let (rows, next_cursor) = paginate(rows, limit, |r| r.id);
    let mask = auth.mask();
    Ok(Json(ReviewPage {
        items: rows.iter().map(|r| ReviewItemView::new(r, mask)).collect(),
        next_cursor,
    }))
}

/// One review item.
#[utoipa::path(get, path = "/api/v1/review/{id}", tag = "review",
    params(("id" = Uuid, Path, description = "Review item id")),
    responses((status = 200, description = "The review item", body = ReviewItemView), ItemErrors))]
pub async fn get_review_item(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ReviewItemView>, ApiError> {
    let item = app
        .store
        .get_review_item(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no review item {id}")))?;
    Ok(Json(ReviewItemView::new(&item, auth.mask())))
}

/// Closes an open review item as resolved or dismissed.
#[utoipa::path(post, path = "/api/v1/review/{id}/resolve", tag = "review",
    params(("id" = Uuid, Path, description = "Review item id")),
    request_body = ResolveRequest,
    responses((status = 200, description = "The review item", body = ReviewItemView), WriteErrors))]
pub async fn resolve_review_item(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ResolveRequest>,
) -> Result<Json<ReviewItemView>, ApiError> {
    let who = auth.require_admin()?;
    if body
        .resolution
        .as_deref()
        .is_some_and(|r| r.chars().count() > 2000)
    {
        return Err(ApiError::validation(vec![FieldError::new(
            "resolution",
            "too_long",
            "at most 2000 characters",
        )]));
    }
    if let Some(m) = app
        .store
        .get_review_item(id)
        .await?
        .as_ref()
        .and_then(crate::sync::plain_close_refused)
    {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "conflict",
            m,
        ));
    }
    let item = app
        .store
        .resolve_review_item(id, body.status.into(), body.resolution, &who.actor())
        .await?;
    Ok(Json(ReviewItemView::new(&item, false)))
}
