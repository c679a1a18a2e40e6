//! Extractors for the admin API that answer bad input with the JSON error
//! body (never axum's plain-text rejections): the caller's key, query
//! strings, path parameters and JSON bodies; and cursor pagination.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::auth::{AuthError, Principal};
use crate::error::{ApiError, FieldError};
use crate::http::AppState;

/// Largest JSON body the admin API reads.
pub const MAX_BODY: usize = 1024 * 1024;

/// Default and largest page size.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Storage(s) => ApiError::from(s),
            other => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", other.to_string()),
        }
    }
}

/// 401 with the `WWW-Authenticate` challenge.
pub fn unauthorized(err: ApiError) -> Response {
    let status = err.status;
    let mut resp = err.into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"leadrelay\""),
        );
    }
    resp
}

/// The caller, authenticated by `Authorization: Bearer lr_…`.
pub struct Auth(pub Principal);

impl Auth {
    /// 403 unless the key is an admin key.
    pub fn require_admin(&self) -> Result<&Principal, ApiError> {
        if self.0.is_admin() {
            Ok(&self.0)
        } else {
            Err(forbidden())
        }
    }

    pub fn mask(&self) -> bool {
        self.0.masks_personal_data()
    }
}

pub fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this action needs an admin key; viewer keys only read",
    )
}

/// The caller, by the request's `Authorization: Bearer lr_…` header; a
/// missing, malformed, unknown or revoked key answers 401 with the challenge.
pub async fn principal(app: &AppState, headers: &HeaderMap) -> Result<Principal, Response> {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    app.admin
        .auth
        .verify_header(header)
        .await
        .map_err(|e| unauthorized(e.into()))
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        let principal = principal(app, &parts.headers).await?;
        if !principal.can_read() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this is an ingest key: it only sends events to POST /v1/events",
            )
            .into_response());
        }
        Ok(Auth(principal))
    }
}

/// A query string, 400 `invalid_query` when it does not parse.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))
    }
}

/// Path parameters, 400 `invalid_path` when they do not parse.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text()))
    }
}

/// A JSON body: 415 for another content type, 400 malformed, 422 when it
/// parses but does not fit.
pub struct ApiJson<T>(pub T);

/// A JSON body that may be left out (then `T::default()`).
pub struct OptionalJson<T>(pub T);

/// `Content-Type: application/json` or `application/…+json`, any parameters.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            m.type_() == mime::APPLICATION
                && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
        })
}

/// Reads the body; None when it is empty or JSON `null`.
async fn read_json<T: DeserializeOwned>(req: Request) -> Result<Option<T>, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        if crate::http::forms::is_body_timeout(&e) {
            return crate::http::forms::body_timeout();
        }
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {MAX_BODY} bytes, or could not be read"),
        )
    })?;
    if bytes.is_empty() {
        return Ok(None);
    }
    if !is_json(&parts.headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    let invalid = |e: String| {
        let mut err = ApiError::validation(vec![FieldError::new("body", "invalid", e.clone())]);
        err.message = format!("the body does not fit: {e}");
        err
    };
    let value = crate::ingest::parse_json_limited(&bytes, false, |e| {
        ApiError::bad_request(format!("the body is not valid JSON: {e}"))
    })?;
    match value {
        // `null` is an absent body.
        serde_json::Value::Null => Ok(None),
        // Only objects: serde would otherwise read a struct from an array.
        serde_json::Value::Object(_) => serde_json::from_value::<T>(value)
            .map(Some)
            .map_err(|e| invalid(e.to_string())),
        other => Err(invalid(format!(
            "expected a JSON object, got {}",
            leadrelay_sources::json_kind(&other)
        ))),
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        match read_json(req).await? {
            Some(v) => Ok(ApiJson(v)),
            None => Err(ApiError::bad_request("a JSON body is required")),
        }
    }
}

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        Ok(OptionalJson(read_json(req).await?.unwrap_or_default()))
    }
}

/// The page size asked for: 1–200, default 50.
pub fn page_limit(limit: Option<u32>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n as usize),
        n => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit {n}: use 1 to {MAX_LIMIT}"),
        )),
    }
}

/// Cuts a page fetched with `limit + 1` rows to `limit`; the cursor is the
/// id of the last row kept when more rows follow.
pub fn paginate<T>(
    mut rows: Vec<T>,
    limit: usize,
    id: impl Fn(&T) -> Uuid,
) -> (Vec<T>, Option<Uuid>) {
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(id);
        (rows, next)
    } else {
        (rows, None)
    }
}

/// 400 when a text parameter is longer than `max` characters.
pub fn check_len(name: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.chars().count() > max => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("{name} is longer than {max} characters"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let is = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            is_json(&h)
        };
        assert!(is("application/json"));
        assert!(is("Application/JSON; charset=utf-8"));
        assert!(is("application/vnd.acme+json"));
        assert!(!is("text/plain"));
        assert!(!is("application/x-www-form-urlencoded"));
        assert!(!is(""));
    }
}
