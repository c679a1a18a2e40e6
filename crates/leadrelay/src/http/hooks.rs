//! `POST /v1/hooks/{source}`: vendor webhooks.
//!
//! In this order, and nothing else: read the body (within the source's size
//! limit: its `max_body_bytes`, else its kind's default),
//! authenticate the request exactly as the vendor signs it (before anything
//! is parsed or stored; failures answer 401, are counted in
//! `leadrelay_hook_auth_failures_total`, and store nothing), parse it into
//! canonical events, store them all in ONE transaction, and only then
//! answer the vendor with what it expects (JSON, or Salesforce's SOAP Ack).
//! Nothing here calls out, so vendors get their answer within their timeouts
//! whatever the destinations are doing.
//!
//! Per-IP throttling does not apply: vendors send from shared address pools,
//! and every request must authenticate before it costs any storage.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use leadrelay_sources::{HookError, HookParse, HookResponse, InboundRequest, SourceKind};

use super::AppState;
use super::client::client_ip;
use super::forms::read_body;
use crate::error::ApiError;
use crate::ingest::HookRequest;
use crate::store::IngestOutcome;

/// What happened to one request, for the answer and the metrics.
enum Outcome {
    /// Stored (or all duplicates): the vendor's expected answer.
    Answered {
        response: HookResponse,
        outcome: &'static str,
    },
    Refused(ApiError),
}

pub async fn receive(
    State(app): State<AppState>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let Some(source) = app.sources.get(&name) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!("there is no source named {name:?}"),
        )
        .into_response();
    };
    let outcome = receive_inner(&app, &name, source.as_ref(), peer, &uri, &headers, body).await;
    let label = match &outcome {
        Outcome::Answered { outcome, .. } => outcome,
        Outcome::Refused(e) => e.code,
    };
    app.metrics
        .ingest(&format!("source:{name}"), label, started.elapsed());
    match outcome {
        Outcome::Answered { response, .. } => vendor_response(response),
        Outcome::Refused(e) => e.into_response(),
    }
}

async fn receive_inner(
    app: &AppState,
    name: &str,
    source: &dyn SourceKind,
    peer: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Outcome {
    let limit = crate::sources::body_limit(&app.config, name);
    let body = match read_body(headers, body, limit).await {
        Ok(b) => b,
        Err(e) => return Outcome::Refused(e),
    };
    let received_at = Utc::now();
    let url = match uri.query() {
        Some(q) => format!("{}{}?{q}", app.config.server.public_url(), uri.path()),
        None => format!("{}{}", app.config.server.public_url(), uri.path()),
    };
    let header_list: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let req = InboundRequest {
        method: "POST",
        url: &url,
        headers: &header_list,
        body: &body,
        received_at,
    };

    if let Err(e) = source.authenticate(&req) {
        if matches!(e, HookError::Unauthorized(_) | HookError::Stale(_)) {
            app.metrics.hook_auth_failure(name);
            tracing::warn!(source = name, kind = source.kind(), code = e.code(), reason = %e, "webhook refused: authentication failed");
        } else {
            tracing::info!(
                source = name,
                kind = source.kind(),
                code = e.code(),
                "webhook refused"
            );
        }
        return Outcome::Refused(hook_error(&e));
    }
    let parsed = match source.parse(&req) {
        Ok(p) => p,
        Err(e) => {
            // The message may quote the body: it goes back to the vendor, never to the logs.
            tracing::info!(
                source = name,
                kind = source.kind(),
                code = e.code(),
                "webhook refused"
            );
            return Outcome::Refused(hook_error(&e));
        }
    };
    // The answer depends only on what was parsed; it is sent after the commit.
    let response = source.acknowledge(&parsed);
    let events = match parsed {
        HookParse::Ping => {
            tracing::debug!(source = name, "webhook ping answered");
            return Outcome::Answered {
                response,
                outcome: "ping",
            };
        }
        HookParse::Events(events) => events,
    };
    let hook = HookRequest {
        source: name,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        body: &body,
        client_ip: Some(client_ip(peer, headers, &app.config.server.trusted_proxies)),
        received_at,
    };
    match app.ingestor.submit_hook(&hook, events).await {
        Ok(outcomes) => {
            let stored = outcomes
                .iter()
                .filter(|o| matches!(o, IngestOutcome::Stored(_)))
                .count();
            tracing::debug!(
                source = name,
                events = outcomes.len(),
                stored,
                "webhook stored"
            );
            // After the commit: a CRM change notification starts the
            // rounds of the syncs that listen to this source.
            if stored > 0 {
                app.sync_wakers.wake(name);
            }
            Outcome::Answered {
                response,
                outcome: if stored == 0 { "duplicate" } else { "accepted" },
            }
        }
        // Whatever went wrong, the vendor must retry: never a 2xx, never a 4xx it would give up on.
        Err(e) => {
            tracing::error!(source = name, error = %e, "storage error; webhook not stored");
            Outcome::Refused(ApiError::unavailable(
                "storage is unavailable; nothing was stored, retry later",
            ))
        }
    }
}

/// A refusal in the JSON error shape, with the status the vendor's error maps to.
fn hook_error(e: &HookError) -> ApiError {
    if let HookError::TooDeep { path } = e {
        return ApiError::validation(vec![crate::error::FieldError::new(
            path,
            e.code(),
            leadrelay_model::too_deep_message(leadrelay_model::MAX_JSON_DEPTH),
        )]);
    }
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(status, e.code(), e.to_string())
}

fn vendor_response(r: HookResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, r.body).into_response();
    if let Ok(v) = HeaderValue::from_str(r.content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}
