//! Privacy export, erase and consent withdrawal (admin keys only), and
//! their audit log.

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
use crate::privacy::{Privacy, WithdrawError};
use leadrelay_model::ConsentPurpose;

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
    responses((status = 200, description = "Everything held about the person", body = PrivacyExportView), WriteErrors))]
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
    responses((status = 200, description = "What was erased", body = EraseReportView), WriteErrors))]
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

/// Withdraws a person's consent for purposes (default: the configured
/// `privacy.unsubscribe_withdraws`): stored as an `unsubscribed` event whose
/// answers become the contact's latest, so deliveries still waiting for the
/// person to destinations needing a withdrawn purpose end `skipped`
/// (consent) at their next send attempt. Recorded in the audit log.
#[utoipa::path(post, path = "/api/v1/privacy/withdraw", tag = "privacy",
    request_body = WithdrawRequestBody,
    responses((status = 200, description = "What was withdrawn", body = WithdrawReportView), WriteErrors))]
pub async fn withdraw(
    State(app): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<WithdrawRequestBody>,
) -> Result<Json<WithdrawReportView>, ApiError> {
    let who = auth.require_admin()?;
    let email = check(&PrivacyRequestBody {
        email: body.email.clone(),
        reason: body.reason.clone(),
    })?;
    let names = body.purposes.unwrap_or_default();
    if names.len() > 32 {
        return Err(ApiError::validation(vec![FieldError::new(
            "purposes",
            "too_many",
            "at most 32 purposes",
        )]));
    }
    let mut purposes: Vec<ConsentPurpose> = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let p = ConsentPurpose::parse(&n.0).map_err(|e| {
            ApiError::validation(vec![FieldError::new(
                &format!("purposes[{i}]"),
                "invalid_purpose",
                e.to_string(),
            )])
        })?;
        if !purposes.contains(&p) {
            purposes.push(p);
        }
    }
    let report = app
        .admin
        .privacy
        .withdraw(&email, &purposes, &who.actor(), body.reason)
        .await
        .map_err(|e| match e {
            WithdrawError::Invalid { field, message } => {
                ApiError::validation(vec![FieldError::new(field, "invalid", message)])
            }
            WithdrawError::Store(s) => s.into(),
        })?;
    Ok(Json(WithdrawReportView::from(&report)))
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
    responses((status = 200, description = "A page of the audit log", body = AuditPage), WriteErrors))]
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
