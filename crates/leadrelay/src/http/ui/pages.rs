//! The dashboard's pages and form actions. Reads go through the same views
//! as the admin API (masked for viewers); actions through the same store
//! calls, after the CSRF guard and an admin check.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, DurationRound, Utc};
use leadrelay_model::{EventType, OriginKind};
use minijinja::context;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::{
    LOGIN_CSRF_COOKIE, Me, SESSION_COOKIE, SESSION_HOURS, UiSession, charts, message, render, ser,
    set_cookie,
};
use crate::auth::{hash_secret, random_token};
use crate::error::ApiError;
use crate::http::AppState;
use crate::http::admin::{destination_health, one_destination_health};
use crate::http::api::deliveries::{find as find_delivery, replay_ids};
use crate::http::api::destinations::{indefinitely, resume as resume_destination};
use crate::http::api::events::event_detail;
use crate::http::api::views::{DeliveryView, EventSummary};
use crate::store::{DeliveryFilter, DeliveryState, EventFilter, NewSession, dead_letter_ids};

const PAGE: usize = 50;

/// A form body (the CSRF guard has already checked its token).
pub struct UiForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for UiForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Response> {
        let bytes = axum::body::to_bytes(req.into_body(), 64 * 1024)
            .await
            .map_err(|_| bad_form("The form could not be read."))?;
        serde_urlencoded::from_bytes(&bytes)
            .map(UiForm)
            .map_err(|e| bad_form(&format!("The form could not be read: {e}.")))
    }
}

fn bad_form(text: &str) -> Response {
    message(StatusCode::BAD_REQUEST, "Bad request", text, None)
}

/// An error page for a failed read or action.
pub(super) fn failed(e: ApiError, me: &Me) -> Response {
    let title = match e.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::SERVICE_UNAVAILABLE => "Storage unavailable",
        StatusCode::CONFLICT => "Not possible",
        _ => "Something went wrong",
    };
    message(e.status, title, &e.message, Some(me))
}

/// Fixed messages shown after an action (never text from the request).
fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "replayed" => "Replayed: a new delivery is on its way.",
        "not_replayed" => "Nothing was replayed: it was already replayed or is no longer dead.",
        "discarded" => "Discarded: the dead letter is kept but will not be retried.",
        "paused" => "Destination paused.",
        "resumed" => "Destination resumed.",
        "signed_out" => "You are signed out.",
        _ => return None,
    })
}

#[derive(Debug, Deserialize, Default)]
pub struct NoticeQuery {
    notice: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
    notice: Option<String>,
}

/// Only dashboard paths are followed after sign-in (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        // It becomes the Location header: only visible ASCII (a line break
        // or any other byte would make the redirect panic, or start a
        // header of its own; browsers percent-encode the rest).
        Some(n)
            if n.starts_with("/ui/")
                && !n.starts_with("/ui//")
                && !n.contains('\\')
                && n.bytes().all(|b| (b' '..=b'~').contains(&b)) =>
        {
            n.to_string()
        }
        _ => "/ui/".to_string(),
    }
}

fn login_form(
    app: &AppState,
    next: &str,
    error: Option<&str>,
    note: Option<&str>,
    status: StatusCode,
) -> Response {
    let token = random_token(24);
    let mut resp = render(
        "login.html",
        context! { csrf => token.clone(), next, error, notice => note },
    );
    *resp.status_mut() = status;
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_CSRF_COOKIE,
            &token,
            "/ui/login",
            600,
            app.admin.secure_cookies,
        ),
    );
    resp
}

pub async fn login_page(State(app): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    login_form(
        &app,
        &next,
        None,
        notice(q.notice.as_deref()),
        StatusCode::OK,
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    key: String,
    next: Option<String>,
}

pub async fn login(State(app): State<AppState>, UiForm(f): UiForm<LoginForm>) -> Response {
    let next = safe_next(f.next.as_deref());
    let key = match app.admin.auth.verify(&f.key).await {
        Ok((_, key)) => key,
        Err(crate::auth::AuthError::Storage(e)) => {
            tracing::error!(error = %e, "sign-in: storage unavailable");
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Storage unavailable",
                "Signing in is not possible right now. Try again in a moment.",
                None,
            );
        }
        Err(_) => {
            return login_form(
                &app,
                &next,
                Some("That key is not valid: it is unknown or was revoked."),
                None,
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    if key.role == crate::store::Role::Ingest {
        return login_form(
            &app,
            &next,
            Some(
                "That is an ingest key: it only sends events. Sign in with an admin or viewer key.",
            ),
            None,
            StatusCode::FORBIDDEN,
        );
    }
    let token = random_token(32);
    let now = Utc::now();
    let session = NewSession {
        token_hash: hash_secret(&token),
        key_id: key.id,
        csrf_token: random_token(24),
        created_at: now,
        expires_at: now + Duration::hours(SESSION_HOURS),
    };
    if let Err(e) = app.store.create_session(session).await {
        return failed(
            e.into(),
            &Me {
                name: key.name,
                role: key.role.as_str(),
                admin: false,
                csrf: String::new(),
            },
        );
    }
    tracing::info!(key = %key.name, "dashboard sign-in");
    let mut resp = Redirect::to(&next).into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &token,
            "/ui",
            SESSION_HOURS * 3600,
            app.admin.secure_cookies,
        ),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_CSRF_COOKIE,
            "",
            "/ui/login",
            0,
            app.admin.secure_cookies,
        ),
    );
    resp
}

pub async fn logout(State(app): State<AppState>, session: UiSession) -> Response {
    if let Err(e) = app.store.delete_session(&session.token_hash).await {
        return failed(e.into(), &session.me());
    }
    let mut resp = Redirect::to("/ui/login?notice=signed_out").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", "/ui", 0, app.admin.secure_cookies),
    );
    resp
}

fn day_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::days(1)).unwrap_or(t)
}

pub async fn overview(
    State(app): State<AppState>,
    session: UiSession,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let me = session.me();
    match overview_inner(&app, &session, q.notice.as_deref()).await {
        Ok(r) => r,
        Err(e) => failed(e, &me),
    }
}

async fn overview_inner(
    app: &AppState,
    session: &UiSession,
    notice_code: Option<&str>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let today = day_start(now);
    let first_day = today - Duration::days(6);
    let days: Vec<DateTime<Utc>> = (0..7).map(|i| first_day + Duration::days(i)).collect();
    let counts = app.store.lead_counts(first_day, 86_400).await?;
    let mut series: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in &counts {
        let idx = days.iter().position(|d| *d == c.bucket_start);
        if let Some(i) = idx {
            series.entry(c.origin.clone()).or_insert_with(|| vec![0; 7])[i] += c.count;
        }
    }
    let by_source: Vec<_> = series
        .iter()
        .map(|(source, v)| context! { source, today => v[6], week => v.iter().sum::<u64>() })
        .collect();
    let leads_today: u64 = series.values().map(|v| v[6]).sum();
    let leads_week: u64 = series.values().map(|v| v.iter().sum::<u64>()).sum();

    let hour0 = now.duration_trunc(Duration::hours(1)).unwrap_or(now) - Duration::hours(23);
    let buckets = app.store.attempt_buckets(hour0, 3600).await?;
    let mut rates = vec![None; 24];
    let mut hourly = Vec::new();
    for b in &buckets {
        let i = (b.bucket_start - hour0).num_hours();
        let n = b.succeeded + b.failed;
        if (0..24).contains(&i) && n > 0 {
            rates[i as usize] = Some(b.succeeded as f64 / n as f64);
            hourly.push(context! {
                hour => b.bucket_start.format("%Y-%m-%d %H:00").to_string(),
                succeeded => b.succeeded, failed => b.failed,
                rate => b.succeeded as f64 / n as f64,
            });
        }
    }
    let leads_chart = charts::leads_per_day(&days, &series).map_err(chart_error)?;
    let success_chart = charts::success_rate(hour0, 24, &rates).map_err(chart_error)?;

    let health = destination_health(app).await?;
    let succeeded: u64 = health.iter().map(|h| h.succeeded).sum();
    let failed_n: u64 = health.iter().map(|h| h.failed).sum();
    let success_rate =
        (succeeded + failed_n > 0).then(|| succeeded as f64 / (succeeded + failed_n) as f64);
    let me = session.me();
    Ok(render(
        "overview.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "overview", notice => notice(notice_code),
            leads_today, leads_week, success_rate,
            backlog => health.iter().map(|h| h.backlog).sum::<u64>(),
            dead_letters => health.iter().map(|h| h.dead_letters).sum::<u64>(),
            by_source,
            day_labels => days.iter().map(|d| d.format("%a %d %b").to_string()).collect::<Vec<_>>(),
            series,
            hourly,
            leads_chart, success_chart,
            destinations => ser(&health),
        },
    ))
}

fn chart_error(e: String) -> ApiError {
    tracing::error!(error = %e, "chart could not be drawn");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "chart_failed",
        "a chart could not be drawn",
    )
}

#[derive(Debug, Deserialize, Default)]
pub struct LeadsQuery {
    q: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    origin: Option<String>,
    /// `24h`, `7d`, `30d` or empty (any time).
    since: Option<String>,
    cursor: Option<String>,
    notice: Option<String>,
}

fn blank(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

pub async fn leads(
    State(app): State<AppState>,
    session: UiSession,
    Query(q): Query<LeadsQuery>,
) -> Response {
    let me = session.me();
    let bad = |text: String| message(StatusCode::BAD_REQUEST, "Bad filter", &text, Some(&me));
    let mut filter = EventFilter {
        search: blank(&q.q).map(String::from),
        ..Default::default()
    };
    if let Some(t) = blank(&q.event_type) {
        match EventType::parse(t) {
            Ok(t) => filter.event_type = Some(t),
            Err(e) => return bad(e.to_string()),
        }
    }
    if let Some(o) = blank(&q.origin) {
        let (kind, name) = o.split_once(':').unwrap_or(("form", o));
        match OriginKind::parse(kind) {
            Some(k) => {
                filter.origin_kind = Some(k);
                filter.origin_name = Some(name.to_string());
            }
            None => {
                return bad(format!(
                    "unknown origin kind {kind:?}: use form:NAME, source:NAME or api:KEY"
                ));
            }
        }
    }
    filter.since = match blank(&q.since) {
        None => None,
        Some("24h") => Some(Utc::now() - Duration::hours(24)),
        Some("7d") => Some(Utc::now() - Duration::days(7)),
        Some("30d") => Some(Utc::now() - Duration::days(30)),
        Some(other) => return bad(format!("unknown period {other:?}")),
    };
    let cursor = match blank(&q.cursor).map(Uuid::parse_str).transpose() {
        Ok(c) => c,
        Err(e) => return bad(format!("bad cursor: {e}")),
    };
    let rows = match app.store.list_events(&filter, cursor, PAGE + 1).await {
        Ok(r) => r,
        Err(e) => return failed(e.into(), &me),
    };
    let more = rows.len() > PAGE;
    let rows: Vec<EventSummary> = rows
        .iter()
        .take(PAGE)
        .map(|e| EventSummary::new(e, session.mask()))
        .collect();
    let next = more.then(|| {
        let mut qs = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("q", &q.q),
            ("type", &q.event_type),
            ("origin", &q.origin),
            ("since", &q.since),
        ] {
            if let Some(v) = blank(v) {
                qs.append_pair(k, v);
            }
        }
        if let Some(last) = rows.last() {
            qs.append_pair("cursor", &last.id.to_string());
        }
        format!("/ui/leads?{}", qs.finish())
    });
    let origins: Vec<String> = app
        .config
        .forms
        .keys()
        .map(|f| format!("form:{f}"))
        .collect();
    render(
        "leads.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "leads", notice => notice(q.notice.as_deref()),
            rows => ser(&rows), next, origins,
            q => blank(&q.q), event_type => blank(&q.event_type), origin => blank(&q.origin),
            since => blank(&q.since), paged => cursor.is_some(),
        },
    )
}

pub async fn lead(
    State(app): State<AppState>,
    session: UiSession,
    Path(event_id): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let me = session.me();
    let Ok(id) = Uuid::parse_str(&event_id) else {
        return message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no lead with that id.",
            Some(&me),
        );
    };
    match event_detail(&app, id, session.mask()).await {
        Ok(detail) => {
            let (lead, timers) =
                crate::http::api::pipeline::lead_of(&app, detail.event.contact_id).await;
            render(
                "lead.html",
                context! {
                    me => ser(&me), csrf => session.csrf.clone(), nav => "leads", notice => notice(q.notice.as_deref()),
                    lead => ser(&lead), timers => ser(&timers),
                    detail => ser(&detail), name => detail.event.contact.display_name(),
                    // Form answers that are not already shown as contact fields.
                    data => detail.event.data.iter()
                        .filter(|(k, _)| !leadrelay_model::CONTACT_FIELDS.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })).collect::<Vec<_>>(),
                },
            )
        }
        Err(e) => failed(e, &me),
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct DeadLettersQuery {
    destination: Option<String>,
    cursor: Option<String>,
    notice: Option<String>,
}

pub async fn dead_letters(
    State(app): State<AppState>,
    session: UiSession,
    Query(q): Query<DeadLettersQuery>,
) -> Response {
    let me = session.me();
    let cursor = match blank(&q.cursor).map(Uuid::parse_str).transpose() {
        Ok(c) => c,
        Err(e) => {
            return message(
                StatusCode::BAD_REQUEST,
                "Bad filter",
                &format!("bad cursor: {e}"),
                Some(&me),
            );
        }
    };
    let destination = blank(&q.destination).map(String::from);
    let filter = DeliveryFilter {
        destination: destination.clone(),
        state: Some(DeliveryState::Dead),
        exclude_replayed: true,
        ..Default::default()
    };
    let rows = match app.store.list_deliveries(&filter, cursor, PAGE + 1).await {
        Ok(r) => r,
        Err(e) => return failed(e.into(), &me),
    };
    let health = match destination_health(&app).await {
        Ok(h) => h,
        Err(e) => return failed(e, &me),
    };
    let more = rows.len() > PAGE;
    let rows: Vec<DeliveryView> = rows
        .iter()
        .take(PAGE)
        .map(|d| DeliveryView::new(d, session.mask()))
        .collect();
    let next = more.then(|| {
        let mut qs = url::form_urlencoded::Serializer::new(String::new());
        if let Some(d) = &destination {
            qs.append_pair("destination", d);
        }
        if let Some(last) = rows.last() {
            qs.append_pair("cursor", &last.id.to_string());
        }
        format!("/ui/dead-letters?{}", qs.finish())
    });
    let total: u64 = health
        .iter()
        .filter(|h| destination.as_deref().is_none_or(|d| d == h.name))
        .map(|h| h.dead_letters)
        .sum();
    let names: Vec<String> = health.iter().map(|h| h.name.clone()).collect();
    render(
        "dead_letters.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "dead-letters", notice => notice(q.notice.as_deref()),
            rows => ser(&rows), next, destination, names, total, paged => cursor.is_some(),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct ReturnForm {
    /// Where to go back to: `lead` returns to the lead's timeline.
    back: Option<String>,
}

fn back_to(back: Option<&str>, event_id: Uuid, notice: &str) -> Response {
    let to = match back {
        Some("lead") => format!("/ui/leads/{event_id}?notice={notice}"),
        _ => format!("/ui/dead-letters?notice={notice}"),
    };
    Redirect::to(&to).into_response()
}

pub async fn replay_one(
    State(app): State<AppState>,
    session: UiSession,
    Path(id): Path<Uuid>,
    UiForm(f): UiForm<ReturnForm>,
) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    let me = session.me();
    let d = match find_delivery(&app, id).await {
        Ok(d) => d,
        Err(e) => return failed(e, &me),
    };
    match replay_ids(&app, vec![id], None).await {
        Ok(r) => {
            tracing::info!(delivery = %id, actor = %session.principal.actor(), "dead letter replayed");
            let code = if r.replayed.is_empty() {
                "not_replayed"
            } else {
                "replayed"
            };
            back_to(f.back.as_deref(), d.event_id, code)
        }
        Err(e) => failed(e, &me),
    }
}

pub async fn discard_one(
    State(app): State<AppState>,
    session: UiSession,
    Path(id): Path<Uuid>,
    UiForm(f): UiForm<ReturnForm>,
) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    let me = session.me();
    let d = match find_delivery(&app, id).await {
        Ok(d) => d,
        Err(e) => return failed(e, &me),
    };
    match app.store.discard(vec![id]).await {
        Ok(_) => back_to(f.back.as_deref(), d.event_id, "discarded"),
        Err(e) => failed(e.into(), &me),
    }
}

#[derive(Debug, Deserialize)]
pub struct BulkReplayForm {
    /// Empty: every destination.
    destination: Option<String>,
}

pub async fn replay_bulk(
    State(app): State<AppState>,
    session: UiSession,
    UiForm(f): UiForm<BulkReplayForm>,
) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    let me = session.me();
    let destination = blank(&f.destination).map(String::from);
    let ids = match dead_letter_ids(app.store.as_ref(), destination, None).await {
        Ok(ids) => ids,
        Err(e) => return failed(e.into(), &me),
    };
    let job = app
        .admin
        .jobs
        .start(app.store.clone(), ids, &session.principal.actor());
    Redirect::to(&format!("/ui/jobs/{job}")).into_response()
}

pub async fn job(
    State(app): State<AppState>,
    session: UiSession,
    Path(id): Path<String>,
) -> Response {
    let me = session.me();
    let Some(job) = Uuid::parse_str(&id)
        .ok()
        .and_then(|id| app.admin.jobs.get(id))
    else {
        return message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no replay job with that id (jobs are kept in memory until restart).",
            Some(&me),
        );
    };
    render(
        "job.html",
        context! { me => ser(&me), csrf => session.csrf.clone(), nav => "dead-letters", percent => job.percent(), job => ser(&job) },
    )
}

pub async fn destinations(
    State(app): State<AppState>,
    session: UiSession,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let me = session.me();
    match destination_health(&app).await {
        Ok(destinations) => render(
            "destinations.html",
            context! {
                me => ser(&me), csrf => session.csrf.clone(), nav => "destinations",
                notice => notice(q.notice.as_deref()), destinations => ser(&destinations), actions => true,
            },
        ),
        Err(e) => failed(e, &me),
    }
}

#[derive(Debug, Deserialize)]
pub struct PauseForm {
    /// Hours, or empty: until resumed.
    hours: Option<String>,
}

pub async fn pause(
    State(app): State<AppState>,
    session: UiSession,
    Path(name): Path<String>,
    UiForm(f): UiForm<PauseForm>,
) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    let me = session.me();
    if let Err(e) = one_destination_health(&app, &name).await {
        return failed(e, &me);
    }
    let until = match blank(&f.hours).map(str::parse::<u32>) {
        None => indefinitely(),
        Some(Ok(h)) if (1..=720).contains(&h) => Utc::now() + Duration::hours(i64::from(h)),
        Some(_) => return bad_form("Pause for 1 to 720 hours, or until resumed."),
    };
    let reason = format!("paused by {} from the dashboard", session.principal.actor());
    match app.store.pause_destination(&name, until, &reason).await {
        Ok(()) => Redirect::to("/ui/destinations?notice=paused").into_response(),
        Err(e) => failed(e.into(), &me),
    }
}

pub async fn resume(
    State(app): State<AppState>,
    session: UiSession,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    match resume_destination(&app, &name).await {
        Ok(()) => Redirect::to("/ui/destinations?notice=resumed").into_response(),
        Err(e) => failed(e, &session.me()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_dashboard_path_without_control_characters() {
        assert_eq!(safe_next(Some("/ui/leads?x=1")), "/ui/leads?x=1");
        for bad in [
            "https://evil.test/",
            "/ui//evil.test",
            "/ui/\\evil",
            "/ui/\r\nSet-Cookie: a=b",
            "/ui/\u{0}",
            "/ui/\t",
            "/ui/caf\u{e9}",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad:?}");
        }
        // What it lets through is always a valid Location.
        let _ = Redirect::to(&safe_next(Some("/ui/\nx"))).into_response();
    }
}
