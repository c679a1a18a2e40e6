//! Sequence enrollment in the admin API: a person's memberships across the
//! sequence tools (`GET /api/v1/contacts/{id}/memberships`), kept by the
//! shared enrollment model, and the overflow queue
//! (`GET /api/v1/enrollment/overflow`): the enrollments waiting for the next
//! add-limit window, a full sequence, or another sequence to end.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{ApiPath, ApiQuery, Auth, check_len, page_limit};
use super::{ItemErrors, ReadErrors};
use crate::connectors::enroll::OVERFLOW;
use crate::error::ApiError;
use crate::http::AppState;
use crate::redact::redact_text;
use crate::store::{DeliveryFilter, DeliveryState, Membership, Store};

/// A person's sequence memberships.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MembershipList {
    pub contact_id: Uuid,
    /// One per sequence destination the person was enrolled in, queued for,
    /// skipped by or taken out of, by destination name.
    pub items: Vec<Membership>,
}

/// A person's sequence memberships across every sequence tool: tool,
/// sequence, state (`active`, `queued`, `exited`, `skipped`), since when,
/// and the last change.
#[utoipa::path(get, path = "/api/v1/contacts/{id}/memberships", tag = "contacts",
    params(("id" = Uuid, Path, description = "Contact id")),
    responses((status = 200, description = "The contact's memberships", body = MembershipList), ItemErrors))]
pub async fn contact_memberships(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<MembershipList>, ApiError> {
    let contact = app
        .store
        .get_contact(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no contact {id}")))?;
    let mut items = match &contact.data.email {
        Some(e) => {
            app.store
                .memberships(&format!("email:{}", e.as_str()))
                .await?
        }
        None => Vec::new(),
    };
    if auth.mask() {
        for m in &mut items {
            m.last_change = redact_text(&m.last_change);
        }
    }
    Ok(Json(MembershipList {
        contact_id: id,
        items,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OverflowQuery {
    /// Only this destination.
    pub destination: Option<String>,
    /// At most this many entries (1-200, default 50), the next to go out first.
    pub limit: Option<u32>,
}

/// One enrollment waiting in the overflow queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OverflowEntry {
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub destination: String,
    /// The person (`email:…`; masked for viewer keys).
    pub person: String,
    /// When the enrollment was first asked for.
    pub waiting_since: DateTime<Utc>,
    /// When it is tried again: the next add-limit window, or the recheck.
    pub next_window: Option<DateTime<Utc>>,
    /// Why it waits (`add limit 200/1d reached for this window`, `the
    /// sequence is full`, `active in another sequence …`).
    pub reason: String,
}

/// The overflow queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OverflowQueue {
    /// Entries found (each destination's scheduled deliveries are read up
    /// to [`SCAN_LIMIT`]).
    pub total: u64,
    /// The first `limit` entries, the next to go out first.
    pub items: Vec<OverflowEntry>,
}

/// Scheduled deliveries read per destination.
pub const SCAN_LIMIT: usize = 10_000;

/// The entries of the overflow queue, the next to go out first (every
/// destination unless `destination` names one).
pub async fn overflow_entries(
    store: &dyn Store,
    destinations: &[String],
    mask: bool,
) -> Result<Vec<OverflowEntry>, ApiError> {
    let mut out = Vec::new();
    for name in destinations {
        let filter = DeliveryFilter {
            destination: Some(name.clone()),
            state: Some(DeliveryState::Scheduled),
            ..Default::default()
        };
        let mut cursor = None;
        let mut read = 0;
        while read < SCAN_LIMIT {
            let page = store.list_deliveries(&filter, cursor, 1000).await?;
            read += page.len();
            let full = page.len() == 1000;
            cursor = page.last().map(|d| d.id);
            for d in page {
                let Some(reason) = d
                    .last_error
                    .as_deref()
                    .and_then(|e| e.strip_prefix(OVERFLOW))
                else {
                    continue;
                };
                out.push(OverflowEntry {
                    delivery_id: d.id,
                    event_id: d.event_id,
                    destination: d.destination.clone(),
                    person: if mask {
                        redact_text(&d.contact_key)
                    } else {
                        d.contact_key.clone()
                    },
                    waiting_since: d.created_at,
                    next_window: d.next_attempt_at,
                    reason: reason.to_string(),
                });
            }
            if !full {
                break;
            }
        }
    }
    out.sort_by_key(|e| (e.next_window, e.waiting_since));
    Ok(out)
}

/// The overflow queue: enrollments waiting for the next add-limit window,
/// for room in a full sequence, or for another sequence to end. They are
/// never dead-lettered for their age.
#[utoipa::path(get, path = "/api/v1/enrollment/overflow", tag = "deliveries", params(OverflowQuery),
    responses((status = 200, description = "The overflow queue", body = OverflowQueue), ReadErrors))]
pub async fn overflow_queue(
    State(app): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<OverflowQuery>,
) -> Result<Json<OverflowQueue>, ApiError> {
    let limit = page_limit(q.limit)?;
    check_len("destination", q.destination.as_deref(), 100)?;
    let names: Vec<String> = app
        .admin
        .destinations
        .iter()
        .map(|d| d.name.clone())
        .filter(|n| q.destination.as_ref().is_none_or(|w| w == n))
        .collect();
    let mut items = overflow_entries(app.store.as_ref(), &names, auth.mask()).await?;
    let total = items.len() as u64;
    items.truncate(limit);
    Ok(Json(OverflowQueue { total, items }))
}
