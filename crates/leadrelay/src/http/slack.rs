//! `POST /v1/slack/interactions`: the Interactivity Request URL of the
//! Slack app whose messages carry the rating buttons. The request's Slack
//! signature is checked first (401 when it is missing, stale or wrong);
//! each rating click becomes a `lead.rated` event (see [`crate::feedback`]).
//! Slack shows the clicking user an error for any answer but 200, so every
//! refusal is also logged.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::AppState;
use crate::error::ApiError;
use crate::feedback::slack::{self, SlackRequestError};
use crate::feedback::{RateError, Rating, rate};

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub async fn interactions(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(secret) = app.slack_signing_secret.as_deref() else {
        return Err(ApiError::not_found(
            "Slack interactivity is off: set feedback.slack_signing_secret_env",
        ));
    };
    let refused = |e: SlackRequestError| {
        tracing::warn!(error = %e, "Slack interaction refused");
        let status = match e {
            SlackRequestError::BadPayload(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        };
        let code = if status == StatusCode::BAD_REQUEST {
            "invalid_payload"
        } else {
            "invalid_signature"
        };
        ApiError::new(status, code, e.to_string())
    };
    slack::verify(
        secret,
        header(&headers, "x-slack-request-timestamp"),
        header(&headers, "x-slack-signature"),
        &body,
        Utc::now().timestamp(),
    )
    .map_err(refused)?;
    let clicks = slack::clicks(&body).map_err(refused)?;
    for c in clicks {
        let rating = Rating {
            contact_id: c.contact_id,
            rating: c.rating,
            via: "slack".into(),
            by: Some(c.user),
            key: Some(c.key),
        };
        match rate(app.store.as_ref(), &app.ingestor, rating, Utc::now()).await {
            Ok(id) => tracing::info!(event = %id, "lead rated from Slack"),
            Err(RateError::NoContact(id)) => {
                tracing::warn!(contact = %id, "Slack rating for an unknown (or erased) contact");
                return Err(ApiError::not_found(format!("there is no contact {id}")));
            }
            Err(RateError::OutOfRange(r)) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_payload",
                    format!("rating {r} is not 1 to 5"),
                ));
            }
            Err(RateError::Store(e)) => return Err(e.into()),
        }
    }
    Ok(StatusCode::OK.into_response())
}
