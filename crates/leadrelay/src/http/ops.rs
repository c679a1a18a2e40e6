//! Operations endpoints: liveness, readiness (storage reachable, schema
//! current) and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;

use super::AppState;

pub async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

pub async fn readyz(State(app): State<AppState>) -> Response {
    match app.store.ready().await {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "ready", "storage": app.store.backend()}))).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            axum::Json(json!({"status": "unavailable", "error": {"code": "storage_unavailable", "message": e.to_string()}})),
        )
            .into_response(),
    }
}

pub async fn metrics(State(app): State<AppState>) -> Response {
    // Store-derived gauges are refreshed at scrape time.
    let now = Utc::now();
    if let (Ok(stats), Ok(states)) = (
        app.store
            .destination_stats(now - chrono::Duration::minutes(15))
            .await,
        app.store.destination_states().await,
    ) {
        for s in &stats {
            let st = states.iter().find(|d| d.name == s.destination);
            let open = st.is_some_and(|d| d.circuit == "open");
            let paused = st.is_some_and(|d| d.paused_at(now) || d.disabled);
            app.metrics
                .set_destination(&s.destination, s.backlog(), s.dead, open, paused);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
