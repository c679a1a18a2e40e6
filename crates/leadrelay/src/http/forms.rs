//! `POST /v1/forms/{form}` and its CORS preflight: browser form posts get a
//! 303 to the thank-you page, API clients a 202 with the event id — both
//! only after the submission is committed.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::client::client_ip;
use super::html;
use crate::config::FormConfig;
use crate::error::ApiError;
use crate::ingest::enrich::RequestContext;
use crate::ingest::{Accepted, FormSubmission};

/// True when the client prefers HTML (a plain browser form post).
pub fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let html = accept.find("text/html");
    let json = accept.find("application/json");
    match (html, json) {
        (Some(h), Some(j)) => h < j,
        (Some(_), None) => true,
        _ => false,
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The origin to echo in CORS headers, if this form allows it.
fn allowed_origin(form: &FormConfig, headers: &HeaderMap) -> Result<Option<HeaderValue>, ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    if form.allowed_origins.is_empty() {
        return Ok(None);
    }
    let o = origin.to_str().unwrap_or("");
    if form
        .allowed_origins
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(o))
    {
        Ok(Some(origin.clone()))
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!("origin {o:?} may not post to this form"),
        ))
    }
}

fn add_cors(resp: &mut Response, origin: Option<HeaderValue>) {
    if let Some(o) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After, Idempotent-Replayed"),
        );
    }
}

fn error_response(err: ApiError, html_client: bool) -> Response {
    if html_client {
        let mut resp = (err.status, Html(html::error(&err))).into_response();
        if let Some(s) = err.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    } else {
        err.into_response()
    }
}

pub async fn submit(
    State(app): State<AppState>,
    Path(form_name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let html_client = wants_html(&headers);
    let Some(form) = app.ingestor.form(&form_name) else {
        let err = ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_form",
            format!("there is no form named {form_name:?}"),
        );
        return error_response(err, html_client);
    };
    let origin = match allowed_origin(form, &headers) {
        Ok(o) => o,
        Err(e) => return error_response(e, html_client),
    };
    let result = submit_inner(&app, &form_name, form, peer, &uri, &headers, body).await;
    let outcome = match &result {
        Ok(a) if a.spam => "spam",
        Ok(a) if a.duplicate => "duplicate",
        Ok(_) => "accepted",
        Err(e) => e.code,
    };
    app.metrics
        .ingest(&format!("form:{form_name}"), outcome, started.elapsed());
    let mut resp = match result {
        Ok(Accepted { id, duplicate, .. }) => {
            let mut resp = if html_client {
                let target = form
                    .redirect_url
                    .clone()
                    .unwrap_or_else(|| format!("/v1/forms/{form_name}/thanks"));
                let mut r = StatusCode::SEE_OTHER.into_response();
                if let Ok(v) = HeaderValue::from_str(&target) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            } else {
                (
                    StatusCode::ACCEPTED,
                    axum::Json(serde_json::json!({"id": id.to_string(), "status": "accepted"})),
                )
                    .into_response()
            };
            if duplicate {
                resp.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            resp
        }
        Err(e) => error_response(e, html_client),
    };
    add_cors(&mut resp, origin);
    resp
}

async fn submit_inner(
    app: &AppState,
    form_name: &str,
    form: &FormConfig,
    peer: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    let ip = client_ip(peer, headers, &app.config.server.trusted_proxies);
    if let Some(t) = &app.throttle {
        t.check(ip).map_err(ApiError::throttled)?;
    }
    let limit = form
        .max_body_bytes
        .unwrap_or(app.config.server.max_body_bytes)
        .bytes() as usize;
    let bytes = read_body(headers, body, limit).await?;
    app.ingestor
        .submit_form(FormSubmission {
            form: form_name,
            content_type: header_str(headers, header::CONTENT_TYPE),
            body: bytes,
            idempotency_header: headers
                .get("idempotency-key")
                .map(|v| v.to_str().unwrap_or("\u{0}")),
            client_ip: Some(ip),
            context: RequestContext {
                query: uri.query(),
                referer_header: header_str(headers, header::REFERER),
                user_agent: header_str(headers, header::USER_AGENT),
            },
        })
        .await
}

/// Reads a request body of at most `limit` bytes: 413 beyond it (refused
/// from `Content-Length` before reading when the client declares it).
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {limit} bytes"),
        )
    };
    if let Some(len) =
        header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let is_limit = std::error::Error::source(&e).is_some_and(|s| {
            s.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
        }) || e.to_string().contains("length limit");
        if is_limit {
            too_large()
        } else if is_body_timeout(&e) {
            body_timeout()
        } else {
            ApiError::bad_request(format!("could not read the body: {e}"))
        }
    })
}

/// Whether a body read failed because the body's deadline
/// (`server.body_read_timeout`) passed.
pub(super) fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// 408: the client did not send its body in time; nothing was stored.
pub(super) fn body_timeout() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request body did not arrive in time; nothing was stored",
    )
}

/// CORS preflight for a form.
pub async fn preflight(
    State(app): State<AppState>,
    Path(form_name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(form) = app.ingestor.form(&form_name) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_form",
            format!("there is no form named {form_name:?}"),
        )
        .into_response();
    };
    let requested = header_str(&headers, header::ACCESS_CONTROL_REQUEST_METHOD).unwrap_or("POST");
    if !requested.eq_ignore_ascii_case(Method::POST.as_str()) {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "forms accept POST only",
        )
        .into_response();
    }
    match allowed_origin(form, &headers) {
        Ok(Some(origin)) => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            add_cors(&mut resp, Some(origin));
            let h = resp.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Content-Type, Idempotency-Key, Accept"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            resp
        }
        Ok(None) => ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this form does not allow cross-origin requests (set allowed_origins)",
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The built-in thank-you page.
pub async fn thanks(State(app): State<AppState>, Path(form_name): Path<String>) -> Response {
    match app.ingestor.form(&form_name) {
        Some(f) => Html(html::thanks(f.title.as_deref().unwrap_or(&form_name))).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_form",
            format!("there is no form named {form_name:?}"),
        )
        .into_response(),
    }
}
