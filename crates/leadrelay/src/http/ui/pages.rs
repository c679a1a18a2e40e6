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
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
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
use crate::http::api::views::EventSummary;
use crate::store::{DeliveryFilter, DeliveryState, EventFilter, NewSession};

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
pub(super) fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "replayed" => "Replayed: a new delivery is on its way.",
        "not_replayed" => "Nothing was replayed: it was already replayed or is no longer dead.",
        "discarded" => "Discarded: the dead letter is kept but will not be retried.",
        "discarded_n" => "Discarded: the dead letters are kept but will not be retried.",
        "muted" => "Issue muted: it stays listed under muted issues and can be unmuted.",
        "unmuted" => "Issue unmuted.",
        "resolved" => "Review item resolved.",
        "dismissed" => "Review item dismissed.",
        "decided" => {
            "Sync conflict decided: the sync writes the value to both systems in its next round."
        }
        "erased" => "Erased: the person's data is removed; the audit log records the erasure.",
        "paused" => "Destination paused.",
        "rated" => {
            "Rating recorded: the lead's quality rating and the feedback reports include it within seconds."
        }
        "resumed" => "Destination resumed.",
        "signed_out" => "You are signed out.",
        _ => return None,
    })
}

#[derive(Debug, Deserialize, Default)]
pub struct NoticeQuery {
    notice: Option<String>,
    refresh: Option<String>,
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

#[derive(Debug, Deserialize, Default)]
pub struct OverviewQuery {
    notice: Option<String>,
    /// `24h`, `7d` (default) or `30d`: what the charts cover.
    range: Option<String>,
    /// Seconds between automatic reloads (30, 60 or 300), or none.
    refresh: Option<String>,
}

/// What a chart range covers: buckets for leads and for the success rate
/// (also the buckets of a destination's charts).
pub(super) struct ChartRange {
    pub key: &'static str,
    lead_secs: i64,
    lead_n: i64,
    lead_fmt: &'static str,
    pub rate_secs: i64,
    pub rate_n: i64,
    pub rate_fmt: &'static str,
    pub text: &'static str,
}

/// The range of a `range` query value (default `7d`), or the error to show.
pub(super) fn chart_range(v: Option<&str>) -> Result<&'static ChartRange, &'static str> {
    let key = v.map(str::trim).filter(|v| !v.is_empty()).unwrap_or("7d");
    RANGES
        .iter()
        .find(|r| r.key == key)
        .ok_or("range: use 24h, 7d or 30d")
}

/// The ranges a picker offers: (key, text).
pub(super) fn range_options() -> Vec<(&'static str, &'static str)> {
    RANGES.iter().map(|r| (r.key, r.text)).collect()
}

const RANGES: [ChartRange; 3] = [
    ChartRange {
        key: "24h",
        lead_secs: 3600,
        lead_n: 24,
        lead_fmt: "%H:00",
        rate_secs: 3600,
        rate_n: 24,
        rate_fmt: "%H:00",
        text: "last 24 hours",
    },
    ChartRange {
        key: "7d",
        lead_secs: 86_400,
        lead_n: 7,
        lead_fmt: "%a %d",
        rate_secs: 86_400,
        rate_n: 7,
        rate_fmt: "%a %d",
        text: "last 7 days",
    },
    ChartRange {
        key: "30d",
        lead_secs: 86_400,
        lead_n: 30,
        lead_fmt: "%d %b",
        rate_secs: 86_400,
        rate_n: 30,
        rate_fmt: "%d %b",
        text: "last 30 days",
    },
];

/// The auto-refresh intervals offered (seconds).
pub(super) const REFRESH: [u32; 3] = [30, 60, 300];

/// `refresh` of a query: one of [`REFRESH`], or none.
pub(super) fn refresh_of(v: Option<&str>) -> Result<Option<u32>, String> {
    match v.map(str::trim).filter(|v| !v.is_empty() && *v != "off") {
        None => Ok(None),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|s| REFRESH.contains(s))
            .map(Some)
            .ok_or_else(|| format!("refresh: {v:?} is not one of 30, 60 or 300 seconds")),
    }
}

/// Bucket starts (oldest first) ending with the one holding `now`.
pub(super) fn buckets(now: DateTime<Utc>, secs: i64, n: i64) -> Vec<DateTime<Utc>> {
    let last = now.duration_trunc(Duration::seconds(secs)).unwrap_or(now);
    (0..n)
        .map(|i| last - Duration::seconds(secs * (n - 1 - i)))
        .collect()
}

pub async fn overview(
    State(app): State<AppState>,
    session: UiSession,
    Query(q): Query<OverviewQuery>,
) -> Response {
    let me = session.me();
    let range = match chart_range(q.range.as_deref()) {
        Ok(r) => r,
        Err(e) => return message(StatusCode::BAD_REQUEST, "Bad filter", e, Some(&me)),
    };
    let refresh = match refresh_of(q.refresh.as_deref()) {
        Ok(r) => r,
        Err(e) => return message(StatusCode::BAD_REQUEST, "Bad filter", &e, Some(&me)),
    };
    match overview_inner(&app, &session, q.notice.as_deref(), range, refresh).await {
        Ok(r) => r,
        Err(e) => failed(e, &me),
    }
}

async fn overview_inner(
    app: &AppState,
    session: &UiSession,
    notice_code: Option<&str>,
    range: &ChartRange,
    refresh: Option<u32>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let today = day_start(now);
    let first_day = today - Duration::days(6);
    let days: Vec<DateTime<Utc>> = (0..7).map(|i| first_day + Duration::days(i)).collect();
    let counts = app.store.lead_counts(first_day, 86_400).await?;
    let mut week: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in &counts {
        if let Some(i) = days.iter().position(|d| *d == c.bucket_start) {
            week.entry(c.origin.clone()).or_insert_with(|| vec![0; 7])[i] += c.count;
        }
    }
    let by_source: Vec<_> = week
        .iter()
        .map(|(source, v)| context! { source, today => v[6], week => v.iter().sum::<u64>() })
        .collect();
    let leads_today: u64 = week.values().map(|v| v[6]).sum();
    let leads_week: u64 = week.values().map(|v| v.iter().sum::<u64>()).sum();

    // The charts' range.
    let lead_buckets = buckets(now, range.lead_secs, range.lead_n);
    let n = lead_buckets.len();
    let counts = app
        .store
        .lead_counts(lead_buckets[0], range.lead_secs)
        .await?;
    let mut series: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in &counts {
        if let Some(i) = lead_buckets.iter().position(|d| *d == c.bucket_start) {
            series.entry(c.origin.clone()).or_insert_with(|| vec![0; n])[i] += c.count;
        }
    }
    let lead_labels: Vec<String> = lead_buckets
        .iter()
        .map(|d| d.format(range.lead_fmt).to_string())
        .collect();

    let rate_buckets = buckets(now, range.rate_secs, range.rate_n);
    let found = app
        .store
        .attempt_buckets(rate_buckets[0], range.rate_secs)
        .await?;
    let mut rates = vec![None; rate_buckets.len()];
    let mut hourly = Vec::new();
    for b in &found {
        let n = b.succeeded + b.failed;
        if let Some(i) = rate_buckets.iter().position(|d| *d == b.bucket_start)
            && n > 0
        {
            rates[i] = Some(b.succeeded as f64 / n as f64);
            hourly.push(context! {
                hour => b.bucket_start.format("%Y-%m-%d %H:00").to_string(),
                succeeded => b.succeeded, failed => b.failed,
                rate => b.succeeded as f64 / n as f64,
            });
        }
    }
    let rate_labels: Vec<String> = rate_buckets
        .iter()
        .map(|d| d.format(range.rate_fmt).to_string())
        .collect();
    let lead_caption = format!(
        "Leads per {} by source, {}",
        if range.lead_secs == 3600 {
            "hour"
        } else {
            "day"
        },
        range.text
    );
    let rate_caption = format!(
        "Delivery success rate per {}, {}",
        if range.rate_secs == 3600 {
            "hour"
        } else {
            "day"
        },
        range.text
    );
    let leads_chart =
        charts::stacked_bars(&lead_labels, &series, &lead_caption).map_err(chart_error)?;
    let success_chart =
        charts::success_rate(&rate_labels, &rates, &rate_caption).map_err(chart_error)?;

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
            day_labels => lead_labels,
            series,
            hourly,
            leads_chart, success_chart, lead_caption, rate_caption,
            range => range.key, ranges => range_options(), here => "/ui/",
            refresh, refresh_options => REFRESH,
            destinations => ser(&health),
        },
    ))
}

pub(super) fn chart_error(e: String) -> ApiError {
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
    /// `failed`, `pending`, `skipped` or `delivered`: leads with a delivery
    /// in that state.
    delivery: Option<String>,
    cursor: Option<String>,
    notice: Option<String>,
}

/// Most leads a delivery-state filter lists (newest first).
const DELIVERY_FILTER_CAP: usize = 200;

/// The delivery states a leads-list filter stands for.
fn delivery_states(filter: &str) -> Option<&'static [DeliveryState]> {
    Some(match filter {
        "failed" => &[DeliveryState::Dead],
        "pending" => &[
            DeliveryState::Pending,
            DeliveryState::InFlight,
            DeliveryState::Scheduled,
        ],
        "skipped" => &[DeliveryState::Skipped],
        "delivered" => &[DeliveryState::Delivered],
        _ => return None,
    })
}

/// Newest events with a delivery in one of `states` (open dead letters
/// only for `dead`), matching `filter` — checked here, as the store's event
/// filter cannot join deliveries.
async fn events_by_delivery_state(
    app: &AppState,
    states: &[DeliveryState],
    filter: &EventFilter,
) -> Result<Vec<leadrelay_model::Event>, ApiError> {
    let mut ids: Vec<(DateTime<Utc>, Uuid)> = Vec::new();
    for st in states {
        let f = DeliveryFilter {
            state: Some(*st),
            exclude_replayed: *st == DeliveryState::Dead,
            since: filter.since,
            ..Default::default()
        };
        for d in app.store.list_deliveries(&f, None, 1000).await? {
            ids.push((d.created_at, d.event_id));
        }
    }
    ids.sort_by(|a, b| b.cmp(a));
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let needle = filter.search.as_deref().map(str::to_lowercase);
    for (_, id) in ids {
        if out.len() >= DELIVERY_FILTER_CAP {
            break;
        }
        if !seen.insert(id) {
            continue;
        }
        let Some(e) = app.store.get_event(id).await? else {
            continue;
        };
        let keep = filter
            .event_type
            .as_ref()
            .is_none_or(|t| e.event_type == *t)
            && filter.origin_kind.is_none_or(|k| e.origin.kind == k)
            && filter
                .origin_name
                .as_deref()
                .is_none_or(|n| e.origin.name == n)
            && needle.as_deref().is_none_or(|n| {
                serde_json::to_string(&e.contact)
                    .map(|c| c.to_lowercase().contains(n))
                    .unwrap_or(false)
            });
        if keep {
            out.push(e);
        }
    }
    Ok(out)
}

/// One destination's delivery of a lead, as the list shows it.
#[derive(Debug, Serialize)]
struct DeliveryChip {
    destination: String,
    state: &'static str,
}

/// Per lead, its current delivery per destination (a replayed dead letter
/// gives way to its replay).
async fn delivery_chips(
    app: &AppState,
    event_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<DeliveryChip>>, ApiError> {
    let mut out = std::collections::HashMap::new();
    for id in event_ids {
        let ds = app.store.deliveries_for_event(*id).await?;
        let chips = ds
            .iter()
            .filter(|d| d.replayed_by.is_none())
            .map(|d| DeliveryChip {
                destination: d.destination.clone(),
                state: d.state.as_str(),
            })
            .collect();
        out.insert(*id, chips);
    }
    Ok(out)
}

/// The configured forms as origin filter values (`form:NAME`).
pub(super) fn form_origins(app: &AppState) -> Vec<String> {
    app.config
        .forms
        .keys()
        .map(|f| format!("form:{f}"))
        .collect()
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
    let delivery = blank(&q.delivery);
    let rows = match delivery {
        Some(d) => {
            let Some(states) = delivery_states(d) else {
                return bad(format!(
                    "unknown delivery state {d:?}: use failed, pending, skipped or delivered"
                ));
            };
            events_by_delivery_state(&app, states, &filter).await
        }
        None => app
            .store
            .list_events(&filter, cursor, PAGE + 1)
            .await
            .map_err(ApiError::from),
    };
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return failed(e, &me),
    };
    let more = delivery.is_none() && rows.len() > PAGE;
    let page_size = if delivery.is_some() {
        DELIVERY_FILTER_CAP
    } else {
        PAGE
    };
    let rows: Vec<EventSummary> = rows
        .iter()
        .take(page_size)
        .map(|e| EventSummary::new(e, session.mask()))
        .collect();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let chips = match delivery_chips(&app, &ids).await {
        Ok(c) => c,
        Err(e) => return failed(e, &me),
    };
    let chips: std::collections::HashMap<String, Vec<DeliveryChip>> =
        chips.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let next = more.then(|| {
        let mut qs = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("q", &q.q),
            ("type", &q.event_type),
            ("origin", &q.origin),
            ("since", &q.since),
            ("delivery", &q.delivery),
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
    let origins = form_origins(&app);
    render(
        "leads.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "leads", notice => notice(q.notice.as_deref()),
            rows => ser(&rows), chips => ser(&chips), next, origins,
            q => blank(&q.q), event_type => blank(&q.event_type), origin => blank(&q.origin),
            since => blank(&q.since), delivery, paged => cursor.is_some(),
            capped => delivery.is_some() && rows.len() >= DELIVERY_FILTER_CAP, cap => DELIVERY_FILTER_CAP,
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
            let feedback = match detail.event.contact_id {
                Some(cid) => match app.store.feedback_people(vec![cid]).await {
                    Ok(mut p) => p.pop().map(|mut p| {
                        // Who rated is a colleague's name or Slack id: not for viewers.
                        if session.mask() && p.rated_by.is_some() {
                            p.rated_by = Some("(hidden)".into());
                        }
                        p
                    }),
                    Err(e) => return failed(e.into(), &me),
                },
                None => None,
            };
            render(
                "lead.html",
                context! {
                    me => ser(&me), csrf => session.csrf.clone(), nav => "leads", notice => notice(q.notice.as_deref()),
                    lead => ser(&lead), timers => ser(&timers), feedback => ser(&feedback),
                    ratings => [(5, "5 good"), (4, "4"), (3, "3"), (2, "2"), (1, "1 poor")],
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
            "There is no bulk job with that id (jobs are kept in memory until restart).",
            Some(&me),
        );
    };
    render(
        "job.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(),
            nav => if job.kind == "replay" { "dead-letters" } else { "waiting" },
            percent => job.percent(), job => ser(&job),
            what => match job.kind {
                "replay" => "Replaying dead letters",
                "retry_now" => "Retrying waiting deliveries now",
                _ => "Cancelling waiting deliveries",
            },
            verb => match job.kind {
                "replay" => "replayed",
                "retry_now" => "made due now",
                _ => "cancelled",
            },
        },
    )
}

pub async fn destinations(
    State(app): State<AppState>,
    session: UiSession,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let me = session.me();
    let refresh = match refresh_of(q.refresh.as_deref()) {
        Ok(r) => r,
        Err(e) => return message(StatusCode::BAD_REQUEST, "Bad filter", &e, Some(&me)),
    };
    match destination_health(&app).await {
        Ok(destinations) => render(
            "destinations.html",
            context! {
                me => ser(&me), csrf => session.csrf.clone(), nav => "destinations", refresh,
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
