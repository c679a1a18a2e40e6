//! Operations endpoints: liveness, readiness (storage reachable, schema
//! current) and Prometheus metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;

use super::AppState;

pub async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

/// `/readyz` answers within this even when the store does not.
const READY_DEADLINE: Duration = Duration::from_secs(3);

pub async fn readyz(State(app): State<AppState>) -> Response {
    let deadline = READY_DEADLINE.min(app.config.storage.timeout.get());
    let ready = tokio::time::timeout(deadline, app.store.ready())
        .await
        .unwrap_or_else(|_| {
            Err(crate::store::StoreError::Unavailable(format!(
                "storage did not answer within {}",
                humantime::format_duration(deadline)
            )))
        });
    match ready {
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
        // Every configured destination gets its gauges, so a backlog that
        // drained to nothing reads 0 rather than its last value.
        let mut names: std::collections::BTreeSet<&str> = app
            .admin
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        names.extend(stats.iter().map(|s| s.destination.as_str()));
        for name in names {
            let s = stats.iter().find(|s| s.destination == name);
            let st = states.iter().find(|d| d.name == name);
            let circuit = st.map_or("closed", |d| d.circuit.as_str());
            let paused = st.is_some_and(|d| d.paused_at(now) || d.disabled);
            app.metrics.set_destination(
                name,
                s.map_or(0, |s| s.backlog()),
                s.map_or(0, |s| s.dead),
                circuit == "open",
                paused,
            );
            app.metrics.set_circuit_state(name, circuit);
        }
    }
    if let Ok(syncs) = crate::sync::health(&app.config, &app.store).await {
        for h in &syncs {
            app.metrics.set_sync(h, h.conflicts_waiting, now);
        }
    }
    if let Ok(kpis) =
        crate::reports::kpi::compute(app.store.as_ref(), &app.config.reports.kpis, now).await
    {
        for k in kpis.iter().filter(|k| k.measured) {
            app.metrics.set_kpi(&k.name, k.value, k.target);
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
