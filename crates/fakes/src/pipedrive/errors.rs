//! Pipedrive's response envelopes: `{"success":true,"data":...,"additional_data":...}`
//! and `{"success":false,"error":"...","error_info":"...","data":null,"additional_data":null}`
//! (API v2 adds a machine-readable `code`, e.g. `ERR_SCHEMA_VALIDATION_FAILED`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub(crate) const ERROR_INFO: &str =
    "Please check developers.pipedrive.com for more information about Pipedrive API.";

/// An error in Pipedrive's envelope.
#[derive(Debug)]
pub(crate) struct PdError {
    pub status: StatusCode,
    pub body: Value,
}

impl IntoResponse for PdError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// A v1-style error (`success`, `error`, `error_info`, `data`, `additional_data`).
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> PdError {
    PdError {
        status,
        body: json!({
            "success": false,
            "error": message.into(),
            "error_info": ERROR_INFO,
            "data": Value::Null,
            "additional_data": Value::Null,
        }),
    }
}

/// A v2 request that fails schema validation: 400 `ERR_SCHEMA_VALIDATION_FAILED`.
pub(crate) fn schema(message: impl Into<String>) -> PdError {
    let mut e = error(
        StatusCode::BAD_REQUEST,
        format!("Validation failed: {}", message.into()),
    );
    e.body["code"] = json!("ERR_SCHEMA_VALIDATION_FAILED");
    e
}

pub(crate) fn bad_request(message: impl Into<String>) -> PdError {
    error(StatusCode::BAD_REQUEST, message)
}

pub(crate) fn not_found(entity: &str) -> PdError {
    error(StatusCode::NOT_FOUND, format!("{entity} not found"))
}

/// 401 for a missing or unknown API token.
pub(crate) fn unauthorized() -> PdError {
    PdError {
        status: StatusCode::UNAUTHORIZED,
        body: json!({
            "success": false,
            "error": "unauthorized access",
            "errorCode": 401,
            "error_info": ERROR_INFO,
        }),
    }
}

/// 429 when the burst window or the daily token budget is spent.
pub(crate) fn rate_limited(daily: bool) -> PdError {
    let message = if daily {
        "Daily API token budget has been exceeded"
    } else {
        "Rate limit has been exceeded"
    };
    PdError {
        status: StatusCode::TOO_MANY_REQUESTS,
        body: json!({
            "success": false,
            "error": message,
            "errorCode": 429,
            "error_info": ERROR_INFO,
            "data": Value::Null,
            "additional_data": Value::Null,
        }),
    }
}

/// `{"success":true,"data":data}` with `status`.
pub(crate) fn ok(status: StatusCode, data: Value) -> Response {
    (status, Json(json!({ "success": true, "data": data }))).into_response()
}

/// `{"success":true,"data":data,"additional_data":additional}`.
pub(crate) fn ok_with(status: StatusCode, data: Value, additional: Value) -> Response {
    (
        status,
        Json(json!({ "success": true, "data": data, "additional_data": additional })),
    )
        .into_response()
}
