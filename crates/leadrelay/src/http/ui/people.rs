//! The people pages: contacts (golden records with field provenance), the
//! review queue (any kind of review item), and privacy (export, erase with
//! confirmation, the audit log). Viewers read masked data; only admins act,
//! and privacy is admin-only as in the API.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use uuid::Uuid;

use super::pages::{failed, notice};
use super::{Me, UiSession, message, render, ser};
use crate::http::AppState;
use crate::http::api::views::{
    AuditRecordView, ContactView, EraseReportView, PrivacyExportView, ReviewItemView,
};
use crate::privacy::Privacy;
use crate::store::{ContactFilter, ReviewStatus};

const PAGE: usize = 50;

fn bad(text: &str, me: &Me) -> Response {
    message(StatusCode::BAD_REQUEST, "Bad request", text, Some(me))
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn get<'a>(q: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn cursor(q: &HashMap<String, String>) -> Result<Option<Uuid>, &'static str> {
    get(q, "cursor")
        .map(Uuid::parse_str)
        .transpose()
        .map_err(|_| "Bad filter: cursor is not valid.")
}

pub async fn contacts(
    State(app): State<AppState>,
    session: UiSession,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let me = session.me();
    let search = get(&q, "q").map(String::from);
    if search.as_ref().is_some_and(|s| s.chars().count() > 200) {
        return bad("Bad filter: search at most 200 characters.", &me);
    }
    let before = match cursor(&q) {
        Ok(c) => c,
        Err(e) => return bad(e, &me),
    };
    let filter = ContactFilter {
        search: search.clone(),
    };
    let rows = match app.store.list_contacts(&filter, before, PAGE + 1).await {
        Ok(r) => r,
        Err(e) => return failed(e.into(), &me),
    };
    let more = rows.len() > PAGE;
    let rows: Vec<ContactView> = rows
        .iter()
        .take(PAGE)
        .map(|c| ContactView::new(c, session.mask()))
        .collect();
    let next = more.then(|| {
        let mut qs = url::form_urlencoded::Serializer::new(String::new());
        if let Some(s) = &search {
            qs.append_pair("q", s);
        }
        if let Some(last) = rows.last() {
            qs.append_pair("cursor", &last.id.to_string());
        }
        format!("/ui/contacts?{}", qs.finish())
    });
    render(
        "contacts.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "contacts",
            rows => ser(&rows), next, q => search, paged => before.is_some(),
        },
    )
}

pub async fn contact(
    State(app): State<AppState>,
    session: UiSession,
    Path(id): Path<String>,
) -> Response {
    let me = session.me();
    let not_found = || {
        message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no contact with that id (it may have been erased).",
            Some(&me),
        )
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found();
    };
    let c = match app.store.get_contact(id).await {
        Ok(Some(c)) => c,
        Ok(None) => return not_found(),
        Err(e) => return failed(e.into(), &me),
    };
    let view = ContactView::new(&c, session.mask());
    let fields = serde_json::to_value(&view.fields).unwrap_or_default();
    let rows: Vec<(String, String)> = fields
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, v)| !v.is_null() && *k != "custom")
                .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), String::from)))
                .chain(
                    view.fields
                        .custom
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), String::from))),
                )
                .collect()
        })
        .unwrap_or_default();
    let events = match app
        .store
        .list_events(
            &crate::store::EventFilter {
                contact_id: Some(id),
                ..Default::default()
            },
            None,
            PAGE,
        )
        .await
    {
        Ok(e) => e,
        Err(e) => return failed(e.into(), &me),
    };
    let events: Vec<_> = events
        .iter()
        .map(|e| crate::http::api::views::EventSummary::new(e, session.mask()))
        .collect();
    let memberships = match &c.data.email {
        Some(e) => match app
            .store
            .memberships(&format!("email:{}", e.as_str()))
            .await
        {
            Ok(m) => m,
            Err(e) => return failed(e.into(), &me),
        },
        None => Vec::new(),
    };
    render(
        "contact.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "contacts",
            c => ser(&view), rows, name => view.fields.display_name(), events => ser(&events),
            memberships => ser(&memberships),
        },
    )
}

/// The overflow queue: enrollments waiting for their next window.
pub async fn overflow(State(app): State<AppState>, session: UiSession) -> Response {
    let me = session.me();
    let names: Vec<String> = app
        .admin
        .destinations
        .iter()
        .map(|d| d.name.clone())
        .collect();
    let entries = match crate::http::api::enrollment::overflow_entries(
        app.store.as_ref(),
        &names,
        session.mask(),
    )
    .await
    {
        Ok(e) => e,
        Err(e) => return failed(e, &me),
    };
    let total = entries.len();
    let shown: Vec<_> = entries.into_iter().take(PAGE).collect();
    render(
        "overflow.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "overflow",
            entries => ser(&shown), total,
        },
    )
}

pub async fn review(
    State(app): State<AppState>,
    session: UiSession,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let me = session.me();
    let status = match get(&q, "status") {
        None => Some(ReviewStatus::Open),
        Some("all") => None,
        Some(s) => match ReviewStatus::parse(s) {
            Some(s) => Some(s),
            None => {
                return bad(
                    "Bad filter: status is open, resolved, dismissed or all.",
                    &me,
                );
            }
        },
    };
    let before = match cursor(&q) {
        Ok(c) => c,
        Err(e) => return bad(e, &me),
    };
    let rows = match app.store.list_review_items(status, before, PAGE + 1).await {
        Ok(r) => r,
        Err(e) => return failed(e.into(), &me),
    };
    let more = rows.len() > PAGE;
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .take(PAGE)
        .map(|r| {
            let v = ReviewItemView::new(r, session.mask());
            let details = serde_json::to_string_pretty(&v.details).unwrap_or_default();
            let mut j = serde_json::to_value(&v).unwrap_or_default();
            j["details_text"] = details.into();
            j
        })
        .collect();
    let status_name = status.map_or("all", |s| s.as_str());
    let next = more.then(|| {
        let last = rows.last().and_then(|r| r["id"].as_str()).unwrap_or("");
        format!("/ui/review?status={status_name}&cursor={last}")
    });
    render(
        "review.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "review",
            notice => notice(get(&q, "notice")),
            rows => ser(&rows), next, status => status_name,
        },
    )
}

/// Resolves or dismisses one review item (`status`, optional `resolution`).
pub async fn review_action(
    State(app): State<AppState>,
    session: UiSession,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    let me = session.me();
    let f = form(&body);
    let status = match get(&f, "status") {
        Some("resolved") => ReviewStatus::Resolved,
        Some("dismissed") => ReviewStatus::Dismissed,
        _ => return bad("Resolve or dismiss.", &me),
    };
    match app.store.get_review_item(id).await {
        Ok(Some(item)) => {
            if let Some(m) = crate::sync::plain_close_refused(&item) {
                return message(StatusCode::CONFLICT, "Not possible", &m, Some(&me));
            }
        }
        Ok(None) => {}
        Err(e) => return failed(e.into(), &me),
    }
    let resolution = get(&f, "resolution").map(String::from);
    if resolution
        .as_ref()
        .is_some_and(|r| r.chars().count() > 2000)
    {
        return bad("The resolution note is at most 2000 characters.", &me);
    }
    match app
        .store
        .resolve_review_item(id, status, resolution, &session.principal.actor())
        .await
    {
        Ok(_) => Redirect::to(&format!("/ui/review?notice={}", status.as_str())).into_response(),
        Err(e) => failed(e.into(), &me),
    }
}

pub async fn privacy(
    State(app): State<AppState>,
    session: UiSession,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    let me = session.me();
    let before = match cursor(&q) {
        Ok(c) => c,
        Err(e) => return bad(e, &me),
    };
    let rows = match app.store.privacy_audit(before, PAGE + 1).await {
        Ok(r) => r,
        Err(e) => return failed(e.into(), &me),
    };
    let more = rows.len() > PAGE;
    let rows: Vec<AuditRecordView> = rows.iter().take(PAGE).map(Into::into).collect();
    let next = more
        .then(|| rows.last().map(|r| format!("/ui/privacy?cursor={}", r.id)))
        .flatten();
    render(
        "privacy.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "privacy",
            notice => notice(get(&q, "notice")), rows => ser(&rows), next,
        },
    )
}

/// The form's email (normalised) and reason, or what is wrong with them.
fn checked_email(f: &HashMap<String, String>) -> Result<(String, Option<String>), String> {
    let email = get(f, "email").unwrap_or("");
    let email = Privacy::normalise(email).map_err(|m| format!("Email: {m}."))?;
    let reason = get(f, "reason").map(String::from);
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err("The reason is at most 500 characters.".into());
    }
    Ok((email, reason))
}

/// Downloads everything held about a person as JSON (audited).
pub async fn export(State(app): State<AppState>, session: UiSession, body: Bytes) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    let me = session.me();
    let (email, reason) = match checked_email(&form(&body)) {
        Ok(x) => x,
        Err(e) => return bad(&e, &me),
    };
    match app
        .admin
        .privacy
        .export(&email, &session.principal.actor(), reason)
        .await
    {
        Ok(x) => {
            let view = PrivacyExportView::from(&x);
            let json = serde_json::to_string_pretty(&view).unwrap_or_default();
            (
                [
                    (header::CONTENT_TYPE, "application/json".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!(
                            "attachment; filename=\"privacy-export-{}.json\"",
                            x.audit_id
                        ),
                    ),
                ],
                json,
            )
                .into_response()
        }
        Err(e) => failed(e.into(), &me),
    }
}

/// Erases a person. The form must repeat the address in `confirm_email`.
pub async fn erase(State(app): State<AppState>, session: UiSession, body: Bytes) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    let me = session.me();
    let f = form(&body);
    let (email, reason) = match checked_email(&f) {
        Ok(x) => x,
        Err(e) => return bad(&e, &me),
    };
    let confirmed = get(&f, "confirm_email")
        .and_then(|c| Privacy::normalise(c).ok())
        .is_some_and(|c| c == email);
    if !confirmed {
        return bad(
            "Nothing was erased: type the address a second time to confirm the erasure.",
            &me,
        );
    }
    match app
        .admin
        .privacy
        .erase(&email, &session.principal.actor(), reason)
        .await
    {
        Ok(report) => {
            let view = EraseReportView::from(&report);
            render(
                "privacy.html",
                context! {
                    me => ser(&me), csrf => session.csrf.clone(), nav => "privacy",
                    notice => notice(Some("erased")), erased => ser(&view), rows => Vec::<()>::new(),
                },
            )
        }
        Err(e) => failed(e.into(), &me),
    }
}
