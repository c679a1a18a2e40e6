//! The HTTP server: public endpoints (forms, vendor hooks), the admin API
//! (`/api`), the dashboard (`/ui`), operations (`/healthz`, `/readyz`,
//! `/metrics`). Listeners are injected so tests bind port 0.

pub mod admin;
pub mod api;
pub mod client;
pub mod events;
mod forms;
mod hooks;
pub(crate) mod html;
mod ops;
pub mod server;
mod slack;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::ApiError;
use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::sources::Sources;
use crate::store::Store;
use client::IpThrottle;

pub use forms::wants_html;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub ingestor: Arc<Ingestor>,
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub throttle: Option<IpThrottle>,
    pub metrics: Arc<Metrics>,
    /// The configured vendor webhooks, built once at start-up.
    pub sources: Arc<Sources>,
    /// Admin API and dashboard: keys, privacy, destinations, replay jobs.
    pub admin: Arc<admin::AdminContext>,
    /// The Slack app's signing secret (`feedback.slack_signing_secret_env`):
    /// the rating buttons' interactions are refused without it.
    pub slack_signing_secret: Option<Arc<str>>,
    /// Syncs woken by the change webhooks of their `change_sources`.
    pub sync_wakers: crate::sync::Wakers,
}

/// Beyond the body's deadline and the store's long deadline: a request
/// still unanswered then is cut off with 503 and `Retry-After`.
const REQUEST_MARGIN: Duration = Duration::from_secs(5);

pub fn router(state: AppState) -> Router {
    let body_deadline = state.config.server.body_read_timeout.get();
    let request_deadline = body_deadline + state.config.storage.long_timeout.get() + REQUEST_MARGIN;
    Router::new()
        .route(
            "/v1/forms/{form}",
            post(forms::submit).options(forms::preflight),
        )
        .route("/v1/forms/{form}/thanks", get(forms::thanks))
        .route("/v1/hooks/{source}", post(hooks::receive))
        .route("/v1/slack/interactions", post(slack::interactions))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(api::router())
        .merge(ui::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(one_content_type))
        // A body that trickles in forever fails its read (408, see
        // `forms::read_body`); store calls have deadlines of their own.
        .layer(tower_http::timeout::RequestBodyDeadlineLayer::new(
            body_deadline,
        ))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                match tokio::time::timeout(request_deadline, next.run(req)).await {
                    Ok(resp) => resp,
                    Err(_) => ApiError::unavailable(
                        "the request was not finished in time; nothing is confirmed stored, retry later",
                    )
                    .into_response(),
                }
            },
        ))
        .with_state(state)
}

/// 400 for a request with more than one `Content-Type` header: which one
/// describes the body is ambiguous, and a parser and a signature check
/// reading different ones would disagree about what was sent.
async fn one_content_type(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if req
        .headers()
        .get_all(axum::http::header::CONTENT_TYPE)
        .iter()
        .nth(1)
        .is_some()
    {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "ambiguous_content_type",
            "the request has more than one Content-Type header; send exactly one",
        )
        .into_response();
    }
    next.run(req).await
}

async fn not_found() -> impl IntoResponse {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> impl IntoResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

/// Serves until `shutdown` fires, then stops accepting and finishes the
/// requests in flight (see [`server`] for the per-connection limits).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: server::Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    server::serve(listener, app, limits, shutdown).await
}
