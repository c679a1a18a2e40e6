//! The admin API under `/api/v1`, authenticated with API keys (`Bearer
//! lr_…`): viewers read with emails and phones masked; admins also replay,
//! discard, pause and resume, and run privacy export and erase.
//!
//! Routes are registered through utoipa-axum's `OpenApiRouter`, so every
//! route is in `/api/openapi.json` with the types its handler really
//! returns — the document is generated from the code, not written beside it.

pub mod deliveries;
pub mod destinations;
pub mod enrollment;
pub mod events;
pub mod extract;
pub mod pipeline;
mod privacy;
pub mod reports;
mod review;
mod sync;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use views::ErrorBody;

/// Answers of every read: bad query, no or bad key, storage down.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "describes answers in the OpenAPI document only")]
pub enum ReadErrors {
    /// A query parameter or path parameter does not parse.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No API key, an unknown one, or a revoked one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Storage unavailable; retry later.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Answers of a read of one thing.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "describes answers in the OpenAPI document only")]
pub enum ItemErrors {
    /// A path parameter does not parse.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No API key, an unknown one, or a revoked one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Nothing with that id.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Storage unavailable; retry later.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Answers of an admin action.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "describes answers in the OpenAPI document only")]
pub enum WriteErrors {
    /// Malformed body or parameter.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No API key, an unknown one, or a revoked one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// A viewer key: only admin keys act.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Nothing with that id or name.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The thing is not in a state that allows this.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is larger than 1 MiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not `application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// The body parses but does not fit.
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// Storage unavailable; retry later.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("lr_…")
                    .description(Some(
                        "An API key from `leadrelay keys create --name N --role admin|viewer|ingest`.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "leadrelay API",
        description = "Sending events (`POST /v1/events`, ingest or admin keys) and the admin API: events, contacts, deliveries and their attempts, dead letters, destinations and their health, the review queue, and privacy export/erase. Lists are newest first with cursor pagination: pass `next_cursor` as `cursor`. Errors are `{\"error\": {\"code\", \"message\", \"fields\"}}`. Viewer keys read with emails and phone numbers masked; admin keys also act."
    ),
    components(schemas(ErrorBody, views::ErrorDetail, views::FieldErrorView)),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    tags(
        (name = "ingest", description = "Events from your own systems"),
        (name = "events", description = "Stored events with raw payloads and enrichment"),
        (name = "contacts", description = "Golden records with field provenance"),
        (name = "deliveries", description = "Deliveries and their attempts"),
        (name = "dead letters", description = "Deliveries waiting for a person: replay or discard"),
        (name = "destinations", description = "Destination health; pause and resume"),
        (name = "review", description = "Decisions for a person (sync conflicts)"),
        (name = "syncs", description = "CRM record syncs: their health, and decisions on their conflicts"),
        (name = "privacy", description = "Export and erase a person, withdraw their consent, with the audit log"),
        (name = "reports", description = "Pipeline reports and multi-touch attribution from the rollups; CSV export; campaign costs"),
    )
)]
struct ApiDoc;

/// The routes and the OpenAPI document describing exactly them.
pub fn router_and_doc() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(crate::http::events::submit))
        .routes(routes!(events::me))
        .routes(routes!(events::list_events))
        .routes(routes!(events::get_event))
        .routes(routes!(events::list_contacts))
        .routes(routes!(events::get_contact))
        .routes(routes!(enrollment::contact_memberships))
        .routes(routes!(enrollment::overflow_queue))
        .routes(routes!(pipeline::list_timers))
        .routes(routes!(pipeline::accept_lead))
        .routes(routes!(pipeline::disqualify_lead))
        .routes(routes!(deliveries::list_deliveries))
        .routes(routes!(deliveries::get_delivery))
        .routes(routes!(deliveries::list_dead_letters))
        .routes(routes!(deliveries::replay_dead_letter))
        .routes(routes!(deliveries::replay_dead_letters))
        .routes(routes!(deliveries::discard_dead_letter))
        .routes(routes!(deliveries::discard_dead_letters))
        .routes(routes!(destinations::list_destinations))
        .routes(routes!(destinations::get_destination))
        .routes(routes!(destinations::pause_destination))
        .routes(routes!(destinations::resume_destination))
        .routes(routes!(review::list_review_items))
        .routes(routes!(review::get_review_item))
        .routes(routes!(review::resolve_review_item))
        .routes(routes!(sync::decide_sync_conflict))
        .routes(routes!(sync::list_syncs))
        .routes(routes!(privacy::export))
        .routes(routes!(privacy::erase))
        .routes(routes!(privacy::withdraw))
        .routes(routes!(privacy::audit))
        .routes(routes!(reports::list_reports))
        .routes(routes!(reports::list_kpis))
        .routes(routes!(reports::get_report))
        .routes(routes!(reports::import_costs, reports::list_costs))
        .split_for_parts()
}

/// `/api/v1/…`, `POST /v1/events` and `/api/openapi.json`.
pub fn router() -> Router<AppState> {
    let (routes, doc) = router_and_doc();
    let json: Arc<str> = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        .into();
    routes.route(
        "/api/openapi.json",
        get(move || {
            let json = json.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    json.to_string(),
                )
                    .into_response()
            }
        }),
    )
}
