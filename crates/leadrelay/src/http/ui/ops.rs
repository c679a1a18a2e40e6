//! The pages for fixing failures: issues (dead letters grouped by cause)
//! with actions on a whole group, the dead-letter list with filters and
//! selection, and bulk actions that show their count before confirming.

use std::collections::{BTreeSet, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Serialize;
use uuid::Uuid;

use super::issues::{self, DeadFilter, Issue};
use super::pages::{failed, notice};
use super::{Me, UiSession, message, render, ser};
use crate::cli::inspect::parse_overrides;
use crate::http::AppState;
use crate::http::admin::{BulkWork, destination_health};
use crate::http::api::views::{AttemptView, DeliveryView};

/// Rows per page of the dead-letter list.
const PAGE: usize = 50;
/// Most field overrides a group retry takes.
const MAX_OVERRIDES: usize = 20;

pub(super) fn bad(text: &str, me: &Me) -> Response {
    message(StatusCode::BAD_REQUEST, "Bad request", text, Some(me))
}

/// Every `name=value` pair of an urlencoded body or query, in order.
pub(super) fn pairs(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The `id` fields of a form (a selection); `None` if one is not an id.
pub(super) fn selected_ids(pairs: &[(String, String)]) -> Option<BTreeSet<Uuid>> {
    pairs
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| Uuid::parse_str(v).ok())
        .collect()
}

pub(super) fn single(pairs: &[(String, String)]) -> HashMap<String, String> {
    pairs.iter().cloned().collect()
}

pub async fn issues_page(
    State(app): State<AppState>,
    session: UiSession,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let me = session.me();
    let refresh = match super::pages::refresh_of(q.get("refresh").map(String::as_str)) {
        Ok(r) => r,
        Err(e) => return bad(&format!("Bad filter: {e}."), &me),
    };
    let (all, capped) = match issues::open_issues(&app).await {
        Ok(x) => x,
        Err(e) => return failed(e, &me),
    };
    let (muted, open): (Vec<Issue>, Vec<Issue>) = all.into_iter().partition(|i| i.muted);
    render(
        "issues.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "issues", refresh,
            notice => notice(q.get("notice").map(String::as_str)),
            open => ser(&open), muted => ser(&muted), capped, cap => issues::SCAN_CAP,
        },
    )
}

async fn find_issue(app: &AppState, key: &str, me: &Me) -> Result<Issue, Response> {
    let (all, _) = issues::open_issues(app).await.map_err(|e| failed(e, me))?;
    all.into_iter().find(|i| i.key == key).ok_or_else(|| {
        message(
            StatusCode::NOT_FOUND,
            "No such open issue",
            "There is no open issue with that id: its dead letters were replayed or discarded, so it is resolved.",
            Some(me),
        )
    })
}

pub async fn issue_page(
    State(app): State<AppState>,
    session: UiSession,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let me = session.me();
    let issue = match find_issue(&app, &key, &me).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let sample_attempts = match app.store.attempts(issue.sample).await {
        Ok(a) => a,
        Err(e) => return failed(e.into(), &me),
    };
    let filter = DeadFilter {
        issue: Some(issue.key.clone()),
        destination: Some(issue.destination.clone()),
        ..Default::default()
    };
    let (rows, _) = match issues::matching(&app, &filter, None).await {
        Ok(x) => x,
        Err(e) => return failed(e, &me),
    };
    let rows: Vec<_> = rows.into_iter().take(PAGE).collect();
    let people = match issues::people(&app, &rows, session.mask()).await {
        Ok(p) => p,
        Err(e) => return failed(e, &me),
    };
    let rows = dead_rows(&rows, &people, session.mask());
    let mask = session.mask();
    render(
        "issue.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "issues",
            notice => notice(q.get("notice").map(String::as_str)),
            issue => ser(&issue),
            attempts => ser(&sample_attempts.iter().map(|a| AttemptView::new(a, mask)).collect::<Vec<_>>()),
            rows => ser(&rows), list_query => filter.query(),
        },
    )
}

/// Retry (optionally with field overrides), discard, mute or unmute a
/// whole issue.
pub async fn issue_action(
    State(app): State<AppState>,
    session: UiSession,
    Path((key, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    let me = session.me();
    let form = single(&pairs(&body));
    match action.as_str() {
        "mute" | "unmute" => {
            let v = if action == "mute" { "1" } else { "0" };
            if key.len() != 16 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad("Not an issue id.", &me);
            }
            if let Err(e) = app.store.kv_set(&issues::mute_key(&key), v).await {
                return failed(e.into(), &me);
            }
            tracing::info!(issue = %key, actor = %session.principal.actor(), action, "issue {action}d");
            let code = if action == "mute" { "muted" } else { "unmuted" };
            Redirect::to(&format!("/ui/issues?notice={code}")).into_response()
        }
        "retry" | "discard" => {
            let issue = match find_issue(&app, &key, &me).await {
                Ok(i) => i,
                Err(r) => return r,
            };
            let overrides = if action == "retry" {
                let lines: Vec<String> = form
                    .get("overrides")
                    .map(|t| {
                        t.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                if lines.len() > MAX_OVERRIDES {
                    return bad("At most 20 field overrides.", &me);
                }
                match parse_overrides(&lines) {
                    Ok(o) => o,
                    Err(e) => {
                        return bad(
                            &format!("Field overrides: {}", e.replace("--set ", "")),
                            &me,
                        );
                    }
                }
            } else {
                None
            };
            act(&app, &session, &action, issue.ids, overrides).await
        }
        _ => message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such action.",
            Some(&me),
        ),
    }
}

/// Replays (as a background job with progress) or discards dead letters.
async fn act(
    app: &AppState,
    session: &UiSession,
    action: &str,
    ids: Vec<Uuid>,
    overrides: Option<serde_json::Map<String, serde_json::Value>>,
) -> Response {
    let me = session.me();
    let actor = session.principal.actor();
    if action == "discard" {
        let mut n = 0;
        for chunk in ids.chunks(crate::http::admin::REPLAY_CHUNK) {
            match app.store.discard(chunk.to_vec()).await {
                Ok(k) => n += k,
                Err(e) => return failed(e.into(), &me),
            }
        }
        tracing::info!(count = n, actor = %actor, "dead letters discarded from the dashboard");
        return Redirect::to(&format!("/ui/dead-letters?notice=discarded_n&n={n}")).into_response();
    }
    match app
        .admin
        .jobs
        .start(
            app.store.clone(),
            BulkWork::Replay { ids, overrides },
            &actor,
        )
        .await
    {
        Ok(job) => Redirect::to(&format!("/ui/jobs/{job}")).into_response(),
        Err(e) => failed(e, &me),
    }
}

/// A dead letter as the list shows it: with the person it is about.
#[derive(Debug, Serialize)]
pub(super) struct DeadRow {
    #[serde(flatten)]
    d: DeliveryView,
    person: Option<issues::Person>,
    cause: String,
}

pub(super) fn dead_rows(
    rows: &[crate::store::Delivery],
    people: &HashMap<Uuid, issues::Person>,
    mask: bool,
) -> Vec<DeadRow> {
    rows.iter()
        .map(|d| DeadRow {
            d: DeliveryView::new(d, mask),
            person: people.get(&d.event_id).cloned(),
            cause: issues::cause_of(d),
        })
        .collect()
}

pub async fn dead_letters(
    State(app): State<AppState>,
    session: UiSession,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let me = session.me();
    let filter = match DeadFilter::parse(&q) {
        Ok(f) => f,
        Err(e) => return bad(&format!("Bad filter: {e}."), &me),
    };
    let page: usize = match q.get("page").map(|p| p.parse::<usize>()) {
        None => 0,
        Some(Ok(p)) if p < 10_000 => p,
        Some(_) => return bad("Bad filter: page is not a page number.", &me),
    };
    let (all, capped) = match issues::matching(&app, &filter, None).await {
        Ok(x) => x,
        Err(e) => return failed(e, &me),
    };
    let total = all.len();
    let rows: Vec<_> = all.into_iter().skip(page * PAGE).take(PAGE).collect();
    let people = match issues::people(&app, &rows, session.mask()).await {
        Ok(p) => p,
        Err(e) => return failed(e, &me),
    };
    let health = match destination_health(&app).await {
        Ok(h) => h,
        Err(e) => return failed(e, &me),
    };
    let names: Vec<String> = health.iter().map(|h| h.name.clone()).collect();
    let base = filter.query();
    let link = |p: usize| {
        if base.is_empty() {
            format!("/ui/dead-letters?page={p}")
        } else {
            format!("/ui/dead-letters?{base}&page={p}")
        }
    };
    let next = ((page + 1) * PAGE < total).then(|| link(page + 1));
    let prev = (page > 0).then(|| link(page - 1));
    let origins = super::pages::form_origins(&app);
    let n = q.get("n").and_then(|n| n.parse::<u64>().ok());
    render(
        "dead_letters.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "dead-letters",
            notice => notice(q.get("notice").map(String::as_str)), n,
            rows => ser(&dead_rows(&rows, &people, session.mask())),
            next, prev, names, origins, total, capped, cap => issues::SCAN_CAP,
            f => ser(&filter), hidden => filter.pairs(), filtered => !filter.is_empty(),
        },
    )
}

/// `POST /ui/dead-letters/bulk`: `action` (replay or discard), the filter
/// fields, optionally `id` fields (a selection within the filter), and
/// `confirm`. Without `confirm` it only counts and asks.
pub async fn dead_letters_bulk(
    State(app): State<AppState>,
    session: UiSession,
    body: Bytes,
) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    let me = session.me();
    let all = pairs(&body);
    let form = single(&all);
    let filter = match DeadFilter::parse(&form) {
        Ok(f) => f,
        Err(e) => return bad(&format!("Bad filter: {e}."), &me),
    };
    let action = form.get("action").map(String::as_str).unwrap_or("");
    if !matches!(action, "replay" | "discard") {
        return bad("Choose replay or discard.", &me);
    }
    let Some(selected) = selected_ids(&all) else {
        return bad("A selected dead letter id is not valid.", &me);
    };
    let scope = form.get("scope").map(String::as_str).unwrap_or("filter");
    if scope == "selected" && selected.is_empty() {
        return bad(
            "Nothing is selected: tick the dead letters to act on, or act on every match of the filter.",
            &me,
        );
    }
    let selection = (scope == "selected").then_some(&selected);
    let (rows, capped) = match issues::matching(&app, &filter, selection).await {
        Ok(x) => x,
        Err(e) => return failed(e, &me),
    };
    let ids: Vec<Uuid> = rows.iter().map(|d| d.id).collect();
    if form.get("confirm").map(String::as_str) != Some("yes") {
        let hidden: Vec<(String, String)> = all
            .into_iter()
            .filter(|(k, _)| k != "csrf" && k != "confirm")
            .collect();
        return render(
            "confirm.html",
            context! {
                me => ser(&me), csrf => session.csrf.clone(), nav => "dead-letters",
                action, count => ids.len(), capped, cap => issues::SCAN_CAP,
                hidden, back => format!("/ui/dead-letters?{}", filter.query()),
                f => ser(&filter), selected => scope == "selected",
            },
        );
    }
    act(&app, &session, action, ids, None).await
}
