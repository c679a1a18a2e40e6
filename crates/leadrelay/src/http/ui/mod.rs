//! The dashboard at `/ui/`: server-rendered pages (minijinja templates
//! embedded in the binary), one small stylesheet, no JavaScript.
//!
//! Sign-in takes an API key and opens a server-side session: the cookie
//! (`lr_session`: HttpOnly, SameSite=Strict, Path=/ui, Secure when the
//! public URL is https) holds a random token, the store only its SHA-256,
//! with an expiry; revoking the key ends its sessions. Every POST passes
//! one guard ([`csrf_guard`]) that checks the form's `csrf` field against
//! the session's token (the sign-in form against a short-lived cookie of
//! its own) before any handler runs, so no form can be forgotten.

mod charts;
mod destination;
mod fixable;
mod issues;
mod ops;
mod pages;
mod people;
mod reports;
mod syncs;
mod waiting;

use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use minijinja::Environment;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::auth::{Principal, hash_secret};
use crate::store::Session;

pub const SESSION_COOKIE: &str = "lr_session";
pub const LOGIN_CSRF_COOKIE: &str = "lr_login_csrf";
/// How long a dashboard session lasts.
pub const SESSION_HOURS: i64 = 12;
/// Largest form body the dashboard reads.
const MAX_FORM: usize = 64 * 1024;

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, src) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("overview.html", include_str!("templates/overview.html")),
        ("leads.html", include_str!("templates/leads.html")),
        ("lead.html", include_str!("templates/lead.html")),
        (
            "dead_letters.html",
            include_str!("templates/dead_letters.html"),
        ),
        ("job.html", include_str!("templates/job.html")),
        (
            "destinations.html",
            include_str!("templates/destinations.html"),
        ),
        (
            "destination_table.html",
            include_str!("templates/destination_table.html"),
        ),
        ("message.html", include_str!("templates/message.html")),
        ("issues.html", include_str!("templates/issues.html")),
        ("refresh.html", include_str!("templates/refresh.html")),
        ("issue.html", include_str!("templates/issue.html")),
        ("confirm.html", include_str!("templates/confirm.html")),
        ("attempts.html", include_str!("templates/attempts.html")),
        ("contacts.html", include_str!("templates/contacts.html")),
        ("contact.html", include_str!("templates/contact.html")),
        ("review.html", include_str!("templates/review.html")),
        ("overflow.html", include_str!("templates/overflow.html")),
        ("privacy.html", include_str!("templates/privacy.html")),
        ("fixable.html", include_str!("templates/fixable.html")),
        ("waiting.html", include_str!("templates/waiting.html")),
        (
            "waiting_confirm.html",
            include_str!("templates/waiting_confirm.html"),
        ),
        (
            "destination.html",
            include_str!("templates/destination.html"),
        ),
        (
            "range_picker.html",
            include_str!("templates/range_picker.html"),
        ),
        ("syncs.html", include_str!("templates/syncs.html")),
        ("reports.html", include_str!("templates/reports.html")),
        ("report.html", include_str!("templates/report.html")),
    ] {
        if let Err(e) = env.add_template(name, src) {
            tracing::error!(template = name, error = %e, "dashboard template does not compile");
        }
    }
    env.add_filter("dt", format_time);
    env.add_filter("pct", format_pct);
    env.add_filter("urlencode", |v: String| -> String {
        url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
    });
    env
});

/// `2026-01-02T03:04:05.678Z` → `2026-01-02 03:04:05 UTC`.
fn format_time(value: String) -> String {
    chrono::DateTime::parse_from_rfc3339(&value)
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or(value)
}

/// 0.9731 → `97.3%`; none → `–`.
fn format_pct(value: Option<f64>) -> String {
    value
        .map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "–".into())
}

/// Any serialisable value as a template value.
pub fn ser<T: Serialize>(v: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

const STYLE: &str = include_str!("static/style.css");

/// Renders a template, or a plain error page if rendering fails.
pub fn render(name: &str, ctx: impl Serialize) -> Response {
    match TEMPLATES
        .get_template(name)
        .and_then(|t| t.render(ser(&ctx)))
    {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "dashboard page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><h1>This page could not be rendered</h1>"),
            )
                .into_response()
        }
    }
}

/// A page with a title and one message (errors, refusals).
pub fn message(status: StatusCode, title: &str, text: &str, me: Option<&Me>) -> Response {
    let mut resp = render(
        "message.html",
        minijinja::context! { title, text, me => ser(&me), csrf => me.map(|m| m.csrf.clone()) },
    );
    *resp.status_mut() = status;
    resp
}

/// The signed-in caller, as pages show them.
#[derive(Debug, Clone, Serialize)]
pub struct Me {
    pub name: String,
    pub role: &'static str,
    pub admin: bool,
    #[serde(skip)]
    pub csrf: String,
}

/// A signed-in dashboard user.
#[derive(Debug, Clone)]
pub struct UiSession {
    pub principal: Principal,
    pub csrf: String,
    pub token_hash: String,
}

impl UiSession {
    pub fn me(&self) -> Me {
        Me {
            name: self.principal.key_name.clone(),
            role: self.principal.role.as_str(),
            admin: self.principal.is_admin(),
            csrf: self.csrf.clone(),
        }
    }

    pub fn mask(&self) -> bool {
        self.principal.masks_personal_data()
    }

    /// The 403 page, unless an admin is signed in.
    pub fn refuse_unless_admin(&self) -> Option<Response> {
        (!self.principal.is_admin()).then(|| {
            message(
                StatusCode::FORBIDDEN,
                "Not allowed",
                "This action needs an admin key. Viewer keys can look but not change anything.",
                Some(&self.me()),
            )
        })
    }
}

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value with the dashboard's attributes.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn load_session(app: &AppState, headers: &HeaderMap) -> Result<Option<UiSession>, Response> {
    let Some(token) = cookie(headers, SESSION_COOKIE).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let token_hash = hash_secret(token);
    match app.store.session(&token_hash, Utc::now()).await {
        Ok(Some(Session {
            key, csrf_token, ..
        })) => Ok(Some(UiSession {
            principal: Principal::from_key(&key),
            csrf: csrf_token,
            token_hash,
        })),
        Ok(None) => Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the dashboard session");
            Err(message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Storage unavailable",
                "The dashboard cannot reach its storage right now. Try again in a moment.",
                None,
            ))
        }
    }
}

fn to_login(parts: &Parts) -> Response {
    let next = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/ui/");
    let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    Redirect::to(&format!("/ui/login?next={next}")).into_response()
}

impl FromRequestParts<AppState> for UiSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        if let Some(s) = parts.extensions.get::<UiSession>() {
            return Ok(s.clone());
        }
        match load_session(app, &parts.headers).await? {
            Some(s) => Ok(s),
            None => Err(to_login(parts)),
        }
    }
}

/// The value of `name` in an urlencoded body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn tokens_match(given: Option<&str>, expected: &str) -> bool {
    match given {
        Some(g) if !expected.is_empty() => g.as_bytes().ct_eq(expected.as_bytes()).into(),
        _ => false,
    }
}

/// Every POST under `/ui` carries the CSRF token of its session (or, for
/// sign-in, of the sign-in page); anything else is refused with 403 before
/// a handler sees it.
async fn csrf_guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return message(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Form too large",
            "The form sent more than 64 KiB.",
            None,
        );
    };
    let given = form_field(&bytes, "csrf");
    let refused = |me: Option<&Me>| {
        message(
            StatusCode::FORBIDDEN,
            "Form expired",
            "This form is missing its security token or the token has expired. Reload the page and try again.",
            me,
        )
    };
    if parts.uri.path() == "/ui/login" {
        let expected = cookie(&parts.headers, LOGIN_CSRF_COOKIE).unwrap_or("");
        if !tokens_match(given.as_deref(), expected) {
            return refused(None);
        }
    } else {
        let session = match load_session(&app, &parts.headers).await {
            Ok(Some(s)) => s,
            Ok(None) => return to_login(&parts),
            Err(resp) => return resp,
        };
        if !tokens_match(given.as_deref(), &session.csrf) {
            return refused(Some(&session.me()));
        }
        parts.extensions.insert(session);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Headers on every dashboard answer: no caching of pages with personal
/// data, no framing, no scripts.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

/// `/ui/…`.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(pages::login_page).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/leads", get(pages::leads))
        .route("/ui/leads/{event_id}", get(pages::lead))
        .route("/ui/leads/{event_id}/rate", post(reports::rate))
        .route("/ui/reports", get(reports::index))
        .route("/ui/reports/{name}", get(reports::page))
        .route("/ui/reports/{name}/csv", get(reports::csv))
        .route("/ui/issues", get(ops::issues_page))
        .route("/ui/issues/{key}", get(ops::issue_page))
        .route("/ui/issues/{key}/{action}", post(ops::issue_action))
        .route("/ui/dead-letters", get(ops::dead_letters))
        .route("/ui/dead-letters/bulk", post(ops::dead_letters_bulk))
        .route("/ui/dead-letters/{id}/replay", post(pages::replay_one))
        .route("/ui/dead-letters/{id}/discard", post(pages::discard_one))
        .route("/ui/waiting", get(waiting::list))
        .route("/ui/waiting/bulk", post(waiting::bulk))
        .route("/ui/fixable", get(fixable::page))
        .route("/ui/jobs/{id}", get(pages::job))
        .route("/ui/destinations", get(pages::destinations))
        .route("/ui/destinations/{name}", get(destination::page))
        .route("/ui/destinations/{name}/pause", post(pages::pause))
        .route("/ui/destinations/{name}/resume", post(pages::resume))
        .route("/ui/contacts", get(people::contacts))
        .route("/ui/contacts/{id}", get(people::contact))
        .route("/ui/review", get(people::review))
        .route("/ui/overflow", get(people::overflow))
        .route("/ui/review/{id}", post(people::review_action))
        .route("/ui/review/{id}/decide", post(syncs::decide))
        .route("/ui/syncs", get(syncs::page))
        .route("/ui/privacy", get(people::privacy))
        .route("/ui/privacy/export", post(people::export))
        .route("/ui/privacy/erase", post(people::erase))
        .route("/ui/static/style.css", get(stylesheet))
        .layer(middleware::from_fn_with_state(state, csrf_guard))
        .layer(middleware::from_fn(security_headers))
}
