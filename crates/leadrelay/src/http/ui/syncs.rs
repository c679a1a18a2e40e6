//! Dashboard pages of the CRM syncs: each sync's health (records in sync,
//! pending writes, conflicts waiting, cursors, errors), and the decision on
//! a sync conflict from the review page (admins; CSRF-checked like every
//! dashboard form).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use uuid::Uuid;

use super::pages::failed;
use super::{UiSession, message, render, ser};
use crate::config::sync::Side;
use crate::error::ApiError;
use crate::http::AppState;
use crate::sync::{Choice, DecideError};

/// An edited value is at most this long (as in the API).
const MAX_VALUE: usize = 10_000;

pub async fn page(State(app): State<AppState>, session: UiSession) -> Response {
    let me = session.me();
    let reads = crate::connectors::hubspot::read::statuses(&app.config, &app.store).await;
    match crate::sync::health(&app.config, &app.store).await {
        Ok(syncs) => render(
            "syncs.html",
            context! { me => ser(&me), csrf => session.csrf.clone(), nav => "syncs", syncs => ser(&syncs), reads => ser(&reads) },
        ),
        Err(e) => failed(e.into(), &me),
    }
}

/// `POST /ui/review/{id}/decide`: `take` = `a` or `b`, or `value` (an
/// empty value clears the field in both systems).
pub async fn decide(
    State(app): State<AppState>,
    session: UiSession,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    let me = session.me();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let bad = |text: &str| message(StatusCode::BAD_REQUEST, "Bad request", text, Some(&me));
    let choice = match (field("take"), field("value")) {
        (Some("a"), None) => Choice::Take(Side::A),
        (Some("b"), None) => Choice::Take(Side::B),
        (None, Some(v)) if v.chars().count() > MAX_VALUE => {
            return bad("The value is at most 10000 characters.");
        }
        (None, Some(v)) => Choice::Value((!v.is_empty()).then(|| v.to_string())),
        _ => return bad("Keep one side's value (a or b) or set a value."),
    };
    match crate::sync::decide_conflict(&app.store, id, choice, &session.principal.actor()).await {
        Ok(_) => Redirect::to("/ui/review?notice=decided").into_response(),
        Err(DecideError::NotFound(m)) => failed(ApiError::not_found(m), &me),
        Err(DecideError::Conflict(m)) => {
            failed(ApiError::new(StatusCode::CONFLICT, "conflict", m), &me)
        }
        Err(DecideError::Store(e)) => failed(e.into(), &me),
    }
}
