//! Privacy export and erase (admin keys only), and their audit log.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::WriteErrors;
use super::extract::{ApiJson, ApiQuery, Auth, page_limit, paginate};
use super::views::*;
use crate::error::{ApiError, FieldError};
use crate::http::AppState;
use crate::privacy::Privacy;

fn check(body: &PrivacyRequestBody) -> Result<String, ApiError> {
    let email = Privacy::normalise(&body.email)
        .map_err(|m| ApiError::validation(vec![FieldError::new("email", "invalid_email", m)]))?;
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
    Ok(email)
}

/// Everything held about a person: contact with provenance, events with raw
/// payloads, deliveries, attempts. Recorded in the audit log.
#[utoipa::path(post, path = "/api/v1/privacy/export", tag = "privacy",
    request_body = PrivacyRequestBody,
    responses((status = 200, body = PrivacyExportView), WriteErrors))]
pub async fn export(
    State(app): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<PrivacyRequestBody>,
) -> Result<Json<PrivacyExportView>, ApiError> {
    let who = auth.require_admin()?;
    let email = check(&body)?;
    let x = app
        .admin
        .privacy
        .export(&email, &who.actor(), body.reason)
        .await?;
    Ok(Json(PrivacyExportView::from(&x)))
}

/// Erases a person: deletes the contact, removes their events' personal data
/// and raw payloads, stops unsent deliveries, clears replay overrides.
/// Recorded in the audit log (who, when, what — never the address).
#[utoipa::path(post, path = "/api/v1/privacy/erase", tag = "privacy",
    request_body = PrivacyRequestBody,
    responses((status = 200, body = EraseReportView), WriteErrors))]
pub async fn erase(
    State(app): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<PrivacyRequestBody>,
) -> Result<Json<EraseReportView>, ApiError> {
    let who = auth.require_admin()?;
    let email = check(&body)?;
    let report = app
        .admin
        .privacy
        .erase(&email, &who.actor(), body.reason)
        .await?;
    Ok(Json(EraseReportView::from(&report)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// The privacy audit log (admin keys only), newest first.
#[utoipa::path(get, path = "/api/v1/privacy/audit", tag = "privacy", params(AuditQuery),
    responses((status = 200, body = AuditPage), WriteErrors))]
pub async fn audit(
    State(app): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    auth.require_admin()?;
    let limit = page_limit(q.limit)?;
    let rows = app.store.privacy_audit(q.cursor, limit + 1).await?;
    let (rows, next_cursor) = paginate(rows, limit, |a| a.id);
    Ok(Json(AuditPage {
        items: rows.iter().map(AuditRecordView::from).collect(),
        next_cursor,
    }))
}
