//! HubSpot's error bodies: `{"status":"error","message","correlationId","category"}`,
//! with property validation failures folded into the message as HubSpot does
//! (`Property values were not valid: [{"isValid":false,...}]`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error response in HubSpot's shape.
#[derive(Debug)]
pub(crate) struct HsError {
    pub status: StatusCode,
    pub body: Value,
}

impl IntoResponse for HsError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

pub(crate) fn correlation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub(crate) fn error(status: StatusCode, category: &str, message: impl Into<String>) -> HsError {
    HsError {
        status,
        body: json!({
            "status": "error",
            "message": message.into(),
            "correlationId": correlation_id(),
            "category": category,
        }),
    }
}

pub(crate) fn validation(message: impl Into<String>) -> HsError {
    error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
}

/// `Invalid input JSON on line L, column C: ...` for bodies that do not parse.
pub(crate) fn invalid_json(e: &serde_json::Error) -> HsError {
    validation(format!(
        "Invalid input JSON on line {}, column {}: {}",
        e.line(),
        e.column(),
        e
    ))
}

pub(crate) fn not_found() -> HsError {
    error(
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        "resource not found",
    )
}

pub(crate) fn unknown_object_type(segment: &str) -> HsError {
    validation(format!("Unable to infer object type from: {segment}"))
}

pub(crate) fn unauthorized() -> HsError {
    error(
        StatusCode::UNAUTHORIZED,
        "INVALID_AUTHENTICATION",
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more \
         details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
    )
}

pub(crate) fn conflict(message: impl Into<String>) -> HsError {
    error(StatusCode::CONFLICT, "CONFLICT", message)
}

/// One failed property, as listed inside `Property values were not valid: [...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PropertyError {
    pub name: String,
    pub error: &'static str,
    pub message: String,
}

impl PropertyError {
    pub fn doesnt_exist(name: &str) -> Self {
        Self {
            name: name.into(),
            error: "PROPERTY_DOESNT_EXIST",
            message: format!("Property \"{name}\" does not exist"),
        }
    }

    pub fn read_only(name: &str) -> Self {
        Self {
            name: name.into(),
            error: "READ_ONLY_VALUE",
            message: format!("\"{name}\" is a read only property; its value cannot be set."),
        }
    }

    pub fn invalid_option(name: &str, value: &str, allowed: &[String]) -> Self {
        Self {
            name: name.into(),
            error: "INVALID_OPTION",
            message: format!(
                "{value} was not one of the allowed options: [{}]",
                allowed.join(", ")
            ),
        }
    }

    pub fn invalid_email(name: &str, value: &str) -> Self {
        Self {
            name: name.into(),
            error: "INVALID_EMAIL",
            message: format!("Email address {value} is invalid"),
        }
    }

    pub fn required(name: &str) -> Self {
        Self {
            name: name.into(),
            error: "REQUIRED",
            message: format!("{name} is required"),
        }
    }

    pub fn invalid_value(name: &str, message: String) -> Self {
        Self {
            name: name.into(),
            error: "INVALID_VALUE",
            message,
        }
    }
}

/// `400 VALIDATION_ERROR` listing every invalid property.
pub(crate) fn property_errors(errors: &[PropertyError]) -> HsError {
    let list: Vec<Value> = errors
        .iter()
        .map(|e| json!({"isValid": false, "message": e.message, "error": e.error, "name": e.name}))
        .collect();
    let encoded = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
    validation(format!("Property values were not valid: {encoded}"))
}

/// The 429 body HubSpot's usage guidelines show, for the policy that was hit.
pub(crate) fn rate_limited(policy: &str) -> HsError {
    let message = match policy {
        "DAILY" => "You have reached your daily limit.",
        "SECONDLY" => "You have reached your secondly limit.",
        _ => "You have reached your ten_secondly_rolling limit.",
    };
    HsError {
        status: StatusCode::TOO_MANY_REQUESTS,
        body: json!({
            "status": "error",
            "message": message,
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(),
            "policyName": policy,
            "requestId": uuid::Uuid::now_v7().to_string(),
        }),
    }
}
