//! Waiting deliveries (pending, or scheduled for a retry; not in flight):
//! the list with filters (destination, cause, created date range, source)
//! and bulk actions on a selection or on every match — retry now, or
//! cancel with a recorded reason — which show the count before anything
//! changes and run as a job with a progress page. Admins only act; viewers
//! see the list with personal data masked.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Duration, NaiveDate, NaiveTime, Utc};
use minijinja::context;
use serde::Serialize;
use uuid::Uuid;

use super::issues::{check_days, day_field, query_of, text_field};
use super::ops::{bad, dead_rows, pairs, selected_ids, single};
use super::pages::{failed, form_origins};
use super::{UiSession, issues, render, ser};
use crate::http::AppState;
use crate::http::admin::{BulkWork, WaitingAction, destination_health};
use crate::store::WaitingFilter;

/// Rows per page.
const PAGE: usize = 50;
/// Longest cancel reason kept.
const REASON_CHARS: usize = 300;

/// The filter as the form shows it (dates as typed).
#[derive(Debug, Clone, Default, Serialize)]
struct Form {
    destination: Option<String>,
    cause: Option<String>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    origin: Option<String>,
}

impl Form {
    /// Reads the filter fields of a query or form; errors name the field.
    fn parse(fields: &HashMap<String, String>) -> Result<Self, String> {
        let f = Self {
            destination: text_field(fields, "destination"),
            cause: text_field(fields, "cause"),
            from: day_field(fields, "from")?,
            to: day_field(fields, "to")?,
            origin: text_field(fields, "origin"),
        };
        check_days(f.from, f.to)?;
        if let Some(c) = &f.cause
            && c.chars().count() > 200
        {
            return Err("cause: longer than 200 characters".into());
        }
        if let Some(o) = &f.origin
            && !o
                .split_once(':')
                .is_some_and(|(k, n)| !k.is_empty() && !n.is_empty())
        {
            return Err(format!(
                "origin: {o:?} is not KIND:NAME (form:contact, source:hubspot, api:KEY)"
            ));
        }
        Ok(f)
    }

    fn store_filter(&self) -> WaitingFilter {
        let midnight = |d: NaiveDate| d.and_time(NaiveTime::MIN).and_utc();
        WaitingFilter {
            destination: self.destination.clone(),
            cause: self.cause.clone(),
            from: self.from.map(midnight),
            until: self.to.map(|d| midnight(d) + Duration::days(1)),
            origin: self.origin.as_deref().and_then(|o| {
                o.split_once(':')
                    .map(|(k, n)| (k.to_string(), n.to_string()))
            }),
        }
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(d) = &self.destination {
            v.push(("destination", d.clone()));
        }
        if let Some(c) = &self.cause {
            v.push(("cause", c.clone()));
        }
        if let Some(d) = self.from {
            v.push(("from", d.to_string()));
        }
        if let Some(d) = self.to {
            v.push(("to", d.to_string()));
        }
        if let Some(o) = &self.origin {
            v.push(("origin", o.clone()));
        }
        v
    }

    fn query(&self) -> String {
        query_of(&self.pairs())
    }
}

/// `GET /ui/waiting`.
pub async fn list(
    State(app): State<AppState>,
    session: UiSession,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let me = session.me();
    let form = match Form::parse(&q) {
        Ok(f) => f,
        Err(e) => return bad(&format!("Bad filter: {e}."), &me),
    };
    let cursor = match q.get("before").map(|b| Uuid::parse_str(b)) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return bad("Bad filter: before is not a delivery id.", &me),
    };
    let filter = form.store_filter();
    let total = match app.store.count_waiting(&filter).await {
        Ok(n) => n,
        Err(e) => return failed(e.into(), &me),
    };
    let rows = match app.store.waiting_deliveries(&filter, cursor, PAGE).await {
        Ok(r) => r,
        Err(e) => return failed(e.into(), &me),
    };
    let people = match issues::people(&app, &rows, session.mask()).await {
        Ok(p) => p,
        Err(e) => return failed(e, &me),
    };
    let names: Vec<String> = match destination_health(&app).await {
        Ok(h) => h.into_iter().map(|h| h.name).collect(),
        Err(e) => return failed(e, &me),
    };
    let base = form.query();
    let next = (rows.len() == PAGE)
        .then(|| rows.last().map(|d| d.id))
        .flatten()
        .map(|id| {
            if base.is_empty() {
                format!("/ui/waiting?before={id}")
            } else {
                format!("/ui/waiting?{base}&before={id}")
            }
        });
    render(
        "waiting.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "waiting",
            rows => ser(&dead_rows(&rows, &people, session.mask())),
            total, next, names, origins => form_origins(&app),
            f => ser(&form), hidden => form.pairs(), filtered => !form.pairs().is_empty(),
            first_page => cursor.is_none(),
        },
    )
}

/// `POST /ui/waiting/bulk`: `action` (`retry_now` or `cancel`), the filter
/// fields, `scope` (`filter` or `selected` with `id` fields), `reason`
/// (cancel) and `confirm`. Without `confirm` it only counts and asks.
pub async fn bulk(State(app): State<AppState>, session: UiSession, body: Bytes) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    let me = session.me();
    let all = pairs(&body);
    let fields = single(&all);
    let form = match Form::parse(&fields) {
        Ok(f) => f,
        Err(e) => return bad(&format!("Bad filter: {e}."), &me),
    };
    let action = fields.get("action").map(String::as_str).unwrap_or("");
    if !matches!(action, "retry_now" | "cancel") {
        return bad("action: choose retry_now or cancel.", &me);
    }
    let Some(selected) = selected_ids(&all) else {
        return bad("id: a selected delivery id is not valid.", &me);
    };
    let scope = fields.get("scope").map(String::as_str).unwrap_or("filter");
    if !matches!(scope, "filter" | "selected") {
        return bad("scope: choose filter or selected.", &me);
    }
    if scope == "selected" && selected.is_empty() {
        return bad(
            "Nothing is selected: tick the deliveries to act on, or act on every match of the filter.",
            &me,
        );
    }
    let reason = fields
        .get("reason")
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
        .map(String::from);
    let confirmed = fields.get("confirm").map(String::as_str) == Some("yes");
    if action == "cancel" && confirmed {
        match &reason {
            None => {
                return bad(
                    "reason: say why these deliveries are cancelled (it is recorded on each).",
                    &me,
                );
            }
            Some(r) if r.chars().count() > REASON_CHARS => {
                return bad("reason: at most 300 characters.", &me);
            }
            Some(_) => {}
        }
    }
    let filter = form.store_filter();
    let count = if scope == "selected" {
        selected.len() as u64
    } else {
        match app.store.count_waiting(&filter).await {
            Ok(n) => n,
            Err(e) => return failed(e.into(), &me),
        }
    };
    if !confirmed {
        let hidden: Vec<(String, String)> = all
            .into_iter()
            .filter(|(k, _)| k != "csrf" && k != "confirm" && k != "reason")
            .collect();
        return render(
            "waiting_confirm.html",
            context! {
                me => ser(&me), csrf => session.csrf.clone(), nav => "waiting",
                action, count, hidden, reason,
                back => format!("/ui/waiting?{}", form.query()),
                f => ser(&form), selected => scope == "selected",
            },
        );
    }
    let actor = session.principal.actor();
    let action = match action {
        "retry_now" => WaitingAction::RetryNow,
        _ => WaitingAction::Cancel(format!(
            "cancelled by {actor} at {}: {}",
            Utc::now().format("%Y-%m-%d %H:%M UTC"),
            reason.unwrap_or_default()
        )),
    };
    let work = BulkWork::Waiting {
        action,
        filter,
        selected: (scope == "selected").then(|| selected.into_iter().collect()),
    };
    match app.admin.jobs.start(app.store.clone(), work, &actor).await {
        Ok(job) => {
            tracing::info!(job = %job, actor = %actor, "bulk action on waiting deliveries started from the dashboard");
            Redirect::to(&format!("/ui/jobs/{job}")).into_response()
        }
        Err(e) => failed(e, &me),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Form, String> {
        Form::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn filter_fields_are_checked_and_dates_cover_whole_days() {
        assert!(
            parse(&[("to", "yesterday")])
                .unwrap_err()
                .starts_with("to:")
        );
        assert!(
            parse(&[("origin", "contact")])
                .unwrap_err()
                .starts_with("origin:")
        );
        assert!(
            parse(&[("from", "2026-03-02"), ("to", "2026-03-01")])
                .unwrap_err()
                .contains("after")
        );
        let f = parse(&[
            ("from", "2026-03-01"),
            ("to", "2026-03-01"),
            ("origin", "form:contact"),
            ("cause", " HTTP 503 "),
            ("destination", ""),
        ])
        .unwrap();
        let s = f.store_filter();
        assert_eq!(s.destination, None);
        assert_eq!(s.cause.as_deref(), Some("HTTP 503"));
        assert_eq!(s.until.unwrap() - s.from.unwrap(), Duration::days(1));
        assert_eq!(s.origin, Some(("form".into(), "contact".into())));
        assert_eq!(
            f.query(),
            "cause=HTTP+503&from=2026-03-01&to=2026-03-01&origin=form%3Acontact"
        );
    }
}
