//! `POST /v1/events`: events from your own systems (a backend, a product,
//! a backfill script), authenticated with an `ingest` or `admin` API key.
//!
//! One event as a JSON object answers 202 `{"id": ..., "status":
//! "accepted"}` (`Idempotent-Replayed: true` when its idempotency key was
//! seen); an array of up to 100 answers 202 `{"events": [{"id", "status":
//! "accepted" | "duplicate"}, ...]}` in the same order. Either way the answer
//! goes out only after every event and its outbox rows are committed, in one
//! transaction (see [`crate::ingest::api`]).

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoResponses, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::api::extract::{is_json, principal};
use super::api::views::ErrorBody;
use super::forms::read_body;
use crate::error::ApiError;
use crate::ingest::api::{EventsAccepted, EventsRequest, MAX_BATCH};

/// One event (for the OpenAPI document; parsed by [`crate::ingest::api`]).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "describes the body in the OpenAPI document only")]
pub struct EventInput {
    /// The event type; default `lead.created`.
    #[serde(rename = "type")]
    #[schema(pattern = r"^[a-z0-9][a-z0-9.:_-]{0,63}$", example = "lead.created")]
    event_type: Option<String>,
    /// When it happened; default: when it was received.
    occurred_at: Option<DateTime<Utc>>,
    contact: Option<ContactInput>,
    /// The event's details.
    #[schema(value_type = Option<Object>)]
    data: Option<Map<String, Value>>,
    attribution: Option<AttributionInput>,
    #[schema(value_type = Option<ConsentInput>)]
    consent: Option<BTreeMap<String, bool>>,
    /// Stores the event once: the same key within 24 h answers the first
    /// event's id.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[!-~]+$")]
    idempotency_key: Option<String>,
}

/// The person. The standard fields are strings; any other key is a custom
/// field kept as given.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code, reason = "describes the body in the OpenAPI document only")]
pub struct ContactInput {
    /// Checked and lower-cased.
    #[schema(format = "email", max_length = 254)]
    email: Option<String>,
    /// International form (`+` and the country code); normalised to E.164.
    /// A number no country's numbering plan allows is refused (422).
    #[schema(
        max_length = 64,
        pattern = r"^\+[1-9][0-9 ().-]{5,62}$",
        example = "+14155552671"
    )]
    phone: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    full_name: Option<String>,
    company: Option<String>,
    /// Derived from the email or website when not given.
    domain: Option<String>,
    title: Option<String>,
    website: Option<String>,
    country: Option<String>,
    region: Option<String>,
    city: Option<String>,
    /// Custom fields.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    custom: Map<String, Value>,
}

/// Purpose → whether the person agreed to it (recorded when received).
/// Purpose names: a lowercase letter, then lowercase letters, digits or `_`.
pub struct ConsentInput;

impl utoipa::PartialSchema for ConsentInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .description(Some(
                "Purpose → whether the person agreed to it (recorded when received).",
            ))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[a-z][a-z0-9_]{0,63}$")),
            ))
            .additional_properties(Some(ObjectBuilder::new().schema_type(Type::Boolean)))
            .into()
    }
}

impl ToSchema for ConsentInput {}

/// Where the person came from.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "describes the body in the OpenAPI document only")]
pub struct AttributionInput {
    utm_source: Option<String>,
    utm_medium: Option<String>,
    utm_campaign: Option<String>,
    utm_term: Option<String>,
    utm_content: Option<String>,
    gclid: Option<String>,
    fbclid: Option<String>,
    msclkid: Option<String>,
    ttclid: Option<String>,
    li_fat_id: Option<String>,
    referrer: Option<String>,
    landing_page: Option<String>,
    user_agent: Option<String>,
}

/// One event, or an array of up to 100 events stored together.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "describes the body in the OpenAPI document only")]
pub enum EventsInput {
    One(Box<EventInput>),
    Many(EventBatch),
}

/// Up to [`MAX_BATCH`] events, stored in one transaction.
#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "describes the body in the OpenAPI document only")]
pub struct EventBatch(Vec<EventInput>);

impl utoipa::PartialSchema for EventBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name("EventInput"))
            .max_items(Some(MAX_BATCH))
            .into()
    }
}

impl ToSchema for EventBatch {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "EventInput".to_string(),
            <EventInput as utoipa::PartialSchema>::schema(),
        ));
        <EventInput as ToSchema>::schemas(schemas);
    }
}

/// The answer to one event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventAccepted {
    pub id: Uuid,
    /// Always `accepted` (`Idempotent-Replayed: true` marks a repeat).
    #[schema(pattern = "^accepted$")]
    pub status: &'static str,
}

/// The answer to an array: one entry per event, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAccepted {
    pub events: Vec<BatchItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    pub id: Uuid,
    /// `accepted`, or `duplicate` when its idempotency key was seen.
    #[schema(pattern = "^(accepted|duplicate)$")]
    pub status: &'static str,
}

/// Stored: one event's answer, or an array's.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(
    dead_code,
    reason = "describes the answer in the OpenAPI document only"
)]
pub enum EventsAnswer {
    One(EventAccepted),
    Many(BatchAccepted),
}

/// Answers of `POST /v1/events` that store nothing.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "describes answers in the OpenAPI document only")]
pub enum IngestErrors {
    /// Empty or malformed JSON, or a bad `Idempotency-Key`.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No API key, an unknown one, or a revoked one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// A viewer key: events are sent with ingest or admin keys.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The body is larger than `server.max_events_body_bytes`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not JSON.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// Every failing field of every event, with its path; or
    /// `idempotency_key_reused`: a key this API key already used for a
    /// different event in the last 24 hours (nothing stored).
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// Storage unavailable; nothing stored, retry later.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Stores events from your own systems: one event, or an array of up to
/// 100 stored in one transaction (all or nothing). Answers only after the
/// commit. Needs an `ingest` or `admin` key; the events' origin is
/// `api:<key name>`. A single event may also carry its idempotency key in
/// an `Idempotency-Key` header (refused with an array, and when it differs
/// from the body's). Keys are per API key: the same event again with the
/// same key is answered with the first one's id; a different event with a
/// key already used is refused with 422 `idempotency_key_reused`.
#[utoipa::path(post, path = "/v1/events", tag = "ingest",
    request_body(content = EventsInput, content_type = "application/json"),
    responses((status = 202, description = "Stored", body = EventsAnswer), IngestErrors))]
pub async fn submit(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let principal = match principal(&app, &headers).await {
        Ok(p) => p,
        Err(refused) => return refused,
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
        Ok(a) if a.events.is_empty() => "empty",
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
    if !is_json(headers) {
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

fn accepted(a: EventsAccepted) -> Response {
    if a.batch {
        let events = a
            .events
            .iter()
            .map(|e| BatchItem {
                id: e.id,
                status: if e.duplicate { "duplicate" } else { "accepted" },
            })
            .collect();
        return (StatusCode::ACCEPTED, axum::Json(BatchAccepted { events })).into_response();
    }
    let Some(one) = a.events.first() else {
        return ApiError::unavailable("the store returned no result").into_response();
    };
    let mut resp = (
        StatusCode::ACCEPTED,
        axum::Json(EventAccepted {
            id: one.id,
            status: "accepted",
        }),
    )
        .into_response();
    if one.duplicate {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}
