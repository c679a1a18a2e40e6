//! `/ui/fixable`: the causes that hold fixable dead letters (a property
//! missing in the destination, a value not allowed …), how many each
//! holds, and when they are next tried by themselves.

use axum::extract::State;
use axum::response::Response;
use minijinja::context;

use super::{UiSession, render, ser};
use crate::http::AppState;

pub async fn page(State(app): State<AppState>, session: UiSession) -> Response {
    let me = session.me();
    let fixable = &app.config.delivery.fixable;
    let causes = match app.store.fixable_causes(fixable.max_retries).await {
        Ok(c) => c,
        Err(e) => return super::pages::failed(e.into(), &me),
    };
    let waiting: u64 = causes.iter().map(|c| c.waiting).sum();
    let exhausted: u64 = causes.iter().map(|c| c.exhausted).sum();
    render(
        "fixable.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "dead-letters",
            causes => ser(&causes), waiting, exhausted,
            enabled => fixable.enabled,
            max_retries => fixable.max_retries,
            retry_every => fixable.retry_every.to_string(),
            check_every => fixable.check_every.to_string(),
        },
    )
}
