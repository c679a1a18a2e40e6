//! `POST /v1/events`: events from your own systems (a backend, a product,
//! a backfill script), authenticated with an `ingest` or `admin` API key.
//!
//! One event as a JSON object answers 202 `{"id": ..., "status":
//! "accepted"}` (`Idempotent-Replayed: true` when its idempotency key was
//! seen); an array of up to 100 answers 202 `{"events": [{"id", "status":
//! "accepted" | "duplicate"}, ...]}` in the same order. Either way the answer
//! goes out only after every event and its outbox rows are committed, in one
//! transaction (see [`crate::ingest::api`]).

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::api::extract::unauthorized;
use super::forms::read_body;
use crate::error::ApiError;
use crate::ingest::api::{EventsAccepted, EventsRequest};

pub async fn submit(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let principal = match app
        .admin
        .auth
        .verify_header(
            headers
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or("\u{0}")),
        )
        .await
    {
        Ok(p) => p,
        Err(e) => return unauthorized(e.into()),
    };
    if !principal.can_send_events() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "viewer keys only read; send events with an ingest or admin key",
        )
        .into_response();
    }
    let result = submit_inner(&app, &principal.key_name, &headers, body).await;
    let outcome = match &result {
        Ok(a) if a.events.iter().all(|e| e.duplicate) => "duplicate",
        Ok(_) => "accepted",
        Err(e) => e.code,
    };
    app.metrics.ingest(
        &format!("api:{}", principal.key_name),
        outcome,
        started.elapsed(),
    );
    match result {
        Ok(a) => accepted(a),
        Err(e) => e.into_response(),
    }
}

async fn submit_inner(
    app: &AppState,
    key_name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<EventsAccepted, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or(""));
    if !content_type.is_some_and(is_json) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the events as application/json",
        ));
    }
    let limit = app.config.server.max_events_body_bytes.bytes() as usize;
    let bytes = read_body(headers, body, limit).await?;
    app.ingestor
        .submit_events(EventsRequest {
            key_name,
            body: &bytes,
            idempotency_header: headers
                .get("idempotency-key")
                .map(|v| v.to_str().unwrap_or("\u{0}")),
        })
        .await
}

/// `application/json` or `application/<something>+json`, any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn accepted(a: EventsAccepted) -> Response {
    if a.batch {
        let events: Vec<_> = a
            .events
            .iter()
            .map(|e| {
                json!({
                    "id": e.id.to_string(),
                    "status": if e.duplicate { "duplicate" } else { "accepted" },
                })
            })
            .collect();
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "events": events })),
        )
            .into_response();
    }
    let Some(one) = a.events.first() else {
        return ApiError::unavailable("the store returned no result").into_response();
    };
    let mut resp = (
        StatusCode::ACCEPTED,
        axum::Json(json!({"id": one.id.to_string(), "status": "accepted"})),
    )
        .into_response();
    if one.duplicate {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/vnd.acme+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json(""));
    }
}
