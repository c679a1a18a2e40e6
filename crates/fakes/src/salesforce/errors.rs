//! Salesforce's error bodies: REST errors are arrays of
//! `{"message","errorCode","fields"}`; the OAuth token endpoint answers
//! `{"error","error_description"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One REST error entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SfError {
    pub code: &'static str,
    pub message: String,
    pub fields: Option<Vec<String>>,
    /// Extra members (e.g. `duplicateResult`).
    pub extra: Option<(&'static str, Value)>,
}

impl SfError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            fields: None,
            extra: None,
        }
    }

    pub fn with_fields(
        code: &'static str,
        message: impl Into<String>,
        fields: Vec<String>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            fields: Some(fields),
            extra: None,
        }
    }

    pub fn json(&self) -> Value {
        let mut v = json!({"message": self.message, "errorCode": self.code});
        if let Some(f) = &self.fields {
            v["fields"] = json!(f);
        }
        if let Some((k, extra)) = &self.extra {
            v[*k] = extra.clone();
        }
        v
    }

    /// The entry as sObject Collections report it (`statusCode` instead of `errorCode`).
    pub fn collection_json(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields.clone().unwrap_or_default()})
    }
}

/// A REST failure: a status and its error entries.
#[derive(Debug, Clone)]
pub(crate) struct RestError {
    pub status: StatusCode,
    pub errors: Vec<SfError>,
}

impl RestError {
    pub fn one(status: StatusCode, e: SfError) -> Self {
        Self {
            status,
            errors: vec![e],
        }
    }

    pub fn bad(e: SfError) -> Self {
        Self::one(StatusCode::BAD_REQUEST, e)
    }

    pub fn body(&self) -> Value {
        Value::Array(self.errors.iter().map(SfError::json).collect())
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

pub(crate) fn not_found() -> RestError {
    RestError::one(
        StatusCode::NOT_FOUND,
        SfError::new("NOT_FOUND", "The requested resource does not exist"),
    )
}

pub(crate) fn external_id_not_found(field: &str) -> RestError {
    RestError::one(
        StatusCode::NOT_FOUND,
        SfError::new(
            "NOT_FOUND",
            format!("Provided external ID field does not exist or is not accessible: {field}"),
        ),
    )
}

pub(crate) fn invalid_session() -> RestError {
    RestError::one(
        StatusCode::UNAUTHORIZED,
        SfError::new("INVALID_SESSION_ID", "Session expired or invalid"),
    )
}

pub(crate) fn request_limit() -> RestError {
    RestError::one(
        StatusCode::FORBIDDEN,
        SfError::new("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    )
}

pub(crate) fn json_parser(message: impl Into<String>) -> RestError {
    RestError::bad(SfError::new("JSON_PARSER_ERROR", message))
}

pub(crate) fn method_not_allowed(method: &str, allowed: &str) -> RestError {
    RestError::one(
        StatusCode::METHOD_NOT_ALLOWED,
        SfError::new(
            "METHOD_NOT_ALLOWED",
            format!("HTTP Method '{method}' not allowed. Allowed are {allowed}"),
        ),
    )
}

/// An OAuth token endpoint error (always 400 here, as Salesforce answers them).
pub(crate) fn oauth(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}
