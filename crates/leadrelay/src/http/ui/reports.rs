//! The report pages: every report of `/api/v1/reports` (and the KPIs with
//! their targets) as a chart, its table and totals, with the API's filters
//! (date range, form, source, campaign, channel, owner, team, grouping,
//! attribution model) and a CSV download of the same table. Reports hold no
//! lead's personal data (deals, owners and aggregates), so viewers see them
//! as admins do.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{Duration, NaiveDate, Utc};
use minijinja::context;
use serde::Serialize;
use serde_json::Value;

use super::pages::{chart_error, failed};
use super::{UiSession, charts, message, render, ser};
use crate::error::ApiError;
use crate::http::AppState;
use crate::http::api::reports::{csv_response, run_report};
use crate::reports::{Filter, Table};

/// Every report the dashboard shows: (name, title, groupings offered,
/// whether it takes an attribution model).
const PAGES: [Page; 11] = [
    ("funnel", "Funnel and conversion", &[], false),
    ("velocity", "Pipeline velocity", &[], false),
    (
        "win-rates",
        "Win rate and deal size",
        &["source", "campaign", "channel", "form", "owner"],
        false,
    ),
    ("time-in-stage", "Time in stage", &[], false),
    ("outliers", "Stage duration outliers", &[], false),
    (
        "channels",
        "Channel contribution and ROI",
        &["channel", "campaign", "source"],
        true,
    ),
    ("attribution", "Attribution by model", &[], true),
    ("forecast", "Weighted forecast", &[], false),
    ("forecast-accuracy", "Forecast accuracy", &[], false),
    (
        "feedback",
        "Sales feedback on lead quality",
        &["source", "campaign", "channel", "form", "owner", "band"],
        false,
    ),
    ("calibration", "Scoring calibration", &[], false),
];

const MODELS: [&str; 6] = [
    "linear",
    "first_touch",
    "last_touch",
    "u_shaped",
    "w_shaped",
    "time_decay",
];

/// Rows a chart shows at most (the table has them all).
const CHART_ROWS: usize = 25;

/// The filter form's values, as typed (to show them again and build links).
#[derive(Debug, Default, Serialize)]
struct Form {
    since: String,
    until: String,
    form: String,
    source: String,
    campaign: String,
    channel: String,
    owner: String,
    team: String,
    by: String,
    model: String,
}

fn field(q: &HashMap<String, String>, k: &str) -> String {
    q.get(k).map(|v| v.trim().to_string()).unwrap_or_default()
}

impl Form {
    fn of(q: &HashMap<String, String>) -> Self {
        Form {
            since: field(q, "since"),
            until: field(q, "until"),
            form: field(q, "form"),
            source: field(q, "source"),
            campaign: field(q, "campaign"),
            channel: field(q, "channel"),
            owner: field(q, "owner"),
            team: field(q, "team"),
            by: field(q, "by"),
            model: field(q, "model"),
        }
    }

    /// The query string of the filters that are set.
    fn query(&self) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("since", &self.since),
            ("until", &self.until),
            ("form", &self.form),
            ("source", &self.source),
            ("campaign", &self.campaign),
            ("channel", &self.channel),
            ("owner", &self.owner),
            ("team", &self.team),
            ("by", &self.by),
            ("model", &self.model),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        s.finish()
    }

    /// The report filter, or the error to show (field: reason).
    fn filter(&self) -> Result<Filter, String> {
        let date = |name: &str, v: &str| -> Result<Option<chrono::DateTime<Utc>>, String> {
            if v.is_empty() {
                return Ok(None);
            }
            NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| Some(t.and_utc()))
                .ok_or_else(|| format!("{name}: {v:?} is not a date (YYYY-MM-DD)"))
        };
        let since = date("since", &self.since)?;
        // The last day is included.
        let until = date("until", &self.until)?.map(|t| t + Duration::days(1));
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            return Err("since: must not be after until".into());
        }
        let text = |name: &str, v: &str| -> Result<Option<String>, String> {
            if v.chars().count() > 200 {
                return Err(format!("{name}: at most 200 characters"));
            }
            Ok((!v.is_empty()).then(|| v.to_string()))
        };
        if !self.model.is_empty() && !MODELS.contains(&self.model.as_str()) {
            return Err(format!(
                "model: {:?} is not one of {}",
                self.model,
                MODELS.join(", ")
            ));
        }
        Ok(Filter {
            since,
            until,
            form: text("form", &self.form)?,
            source: text("source", &self.source)?,
            campaign: text("campaign", &self.campaign)?,
            channel: text("channel", &self.channel)?,
            owner: text("owner", &self.owner)?,
            team: text("team", &self.team)?,
            by: text("by", &self.by)?,
            model: text("model", &self.model)?,
        })
    }
}

/// The teams (owner groups) of the configuration.
fn teams(app: &AppState) -> Vec<String> {
    let mut t: Vec<String> = app
        .config
        .owners
        .iter()
        .flat_map(|o| o.groups.iter().cloned())
        .collect();
    t.sort();
    t.dedup();
    t
}

/// A cell as a number, when it is one.
fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn col(t: &Table, name: &str) -> Option<usize> {
    t.columns.iter().position(|c| c == name)
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

type Series = Vec<(String, Vec<Option<f64>>)>;

/// What a report's chart plots: categories, series, percent axis, caption.
fn chart_data(t: &Table) -> (Vec<String>, Series, bool, String) {
    let pick = |cols: &[(&str, &str)]| -> Series {
        cols.iter()
            .filter_map(|(c, label)| {
                let i = col(t, c)?;
                Some((
                    label.to_string(),
                    t.rows
                        .iter()
                        .take(CHART_ROWS)
                        .map(|r| r.get(i).and_then(num))
                        .collect(),
                ))
            })
            .collect()
    };
    let first: Vec<String> = t
        .rows
        .iter()
        .take(CHART_ROWS)
        .map(|r| r.first().map(text_of).unwrap_or_default())
        .collect();
    match t.report.as_str() {
        "funnel" => (
            first,
            pick(&[("count", "count")]),
            false,
            "Leads, opportunities, stages reached and won".into(),
        ),
        "velocity" => {
            let keep = ["open_opportunities", "won_deals", "lost_deals"];
            let rows: Vec<&Vec<Value>> = t
                .rows
                .iter()
                .filter(|r| {
                    r.first()
                        .and_then(Value::as_str)
                        .is_some_and(|m| keep.contains(&m))
                })
                .collect();
            (
                rows.iter()
                    .map(|r| text_of(&r[0]).replace('_', " "))
                    .collect(),
                vec![(
                    "deals".into(),
                    rows.iter().map(|r| r.get(1).and_then(num)).collect(),
                )],
                false,
                "Open, won and lost opportunities".into(),
            )
        }
        "win-rates" => (
            first,
            pick(&[("win_rate", "win rate")]),
            true,
            format!("Win rate by {}", t.columns[0]),
        ),
        "time-in-stage" => (
            first,
            pick(&[
                ("median_hours", "median hours"),
                ("p90_hours", "90th percentile hours"),
            ]),
            false,
            "Hours in each stage".into(),
        ),
        "outliers" => {
            let stage = col(t, "stage");
            let cats = t
                .rows
                .iter()
                .take(CHART_ROWS)
                .map(|r| {
                    let s = stage
                        .and_then(|i| r.get(i))
                        .map(text_of)
                        .unwrap_or_default();
                    format!("{} · {s}", r.first().map(text_of).unwrap_or_default())
                })
                .collect();
            (
                cats,
                pick(&[
                    ("hours", "hours in stage"),
                    ("threshold_hours", "outlier threshold"),
                ]),
                false,
                "Stays longer than their stage's threshold".into(),
            )
        }
        "channels" => (
            first,
            pick(&[("revenue", "attributed revenue"), ("cost", "cost")]),
            false,
            format!("Attributed revenue and cost by {}", t.columns[0]),
        ),
        "attribution" => {
            let (ci, ri) = (col(t, "channel"), col(t, "revenue"));
            let mut by: BTreeMap<String, f64> = BTreeMap::new();
            for r in &t.rows {
                let ch = ci.and_then(|i| r.get(i)).map(text_of).unwrap_or_default();
                *by.entry(ch).or_default() +=
                    ri.and_then(|i| r.get(i)).and_then(num).unwrap_or(0.0);
            }
            let model = t.totals.get("model").map(text_of).unwrap_or_default();
            (
                by.keys().cloned().collect(),
                vec![("revenue".into(), by.values().map(|v| Some(*v)).collect())],
                false,
                format!(
                    "Won revenue credited to each channel{}",
                    if model.is_empty() {
                        String::new()
                    } else {
                        format!(" ({model})")
                    }
                ),
            )
        }
        "forecast" => (
            first,
            pick(&[("pipeline", "pipeline"), ("weighted", "weighted")]),
            false,
            "Open pipeline by expected close month".into(),
        ),
        "forecast-accuracy" => (
            first,
            pick(&[("forecast", "forecast"), ("won", "won")]),
            false,
            "Forecast at the start of each month against what was won".into(),
        ),
        "feedback" => (
            first,
            pick(&[("average_rating", "average rating (1–5)")]),
            false,
            format!("Average rating by {}", t.columns[0]),
        ),
        "calibration" => (
            first,
            pick(&[
                ("conversion_lift", "conversion lift"),
                ("rating_lift", "rating lift"),
            ]),
            false,
            "Each score band against all leads (1 = the average)".into(),
        ),
        _ => (first, Vec::new(), false, String::new()),
    }
}

/// A KPI window as a phrase: `24 hours`, `7 days`, else humantime's form.
fn window_text(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        86_400 => "24 hours".into(),
        s if s > 0 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        3600 => "hour".into(),
        s if s > 0 && s % 3600 == 0 => format!("{} hours", s / 3600),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// `/ui/reports`: the KPIs against their targets and the list of reports.
pub async fn index(
    State(app): State<AppState>,
    session: UiSession,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let me = session.me();
    let form = Form::of(&q);
    let now = Utc::now();
    let kpis = async {
        crate::reports::rollup::catch_up(app.store.as_ref(), &app.config.reports, now).await?;
        crate::reports::kpi::compute(app.store.as_ref(), &app.config.reports.kpis, now).await
    }
    .await;
    let kpis = match kpis {
        Ok(k) => k,
        Err(e) => return failed(e.into(), &me),
    };
    let shares: Vec<&crate::reports::kpi::Kpi> =
        kpis.iter().filter(|k| k.comparison == "at_least").collect();
    let caption = "KPIs against their targets (shares)";
    let chart = match charts::hbars(
        &shares
            .iter()
            .map(|k| k.name.replace('_', " "))
            .collect::<Vec<_>>(),
        &[
            ("value".into(), shares.iter().map(|k| k.value).collect()),
            (
                "target".into(),
                shares.iter().map(|k| Some(k.target)).collect(),
            ),
        ],
        caption,
        true,
    ) {
        Ok(c) => c,
        Err(e) => return failed(chart_error(e), &me),
    };
    let query = form.query();
    render(
        "reports.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "reports",
            kpis => ser(&kpis), chart, caption,
            window => window_text(app.config.reports.kpis.window.get()),
            pages => PAGES.iter().map(|(n, t, _, _)| (n.to_string(), t.to_string())).collect::<Vec<_>>(),
            query,
        },
    )
}

type Page = (&'static str, &'static str, &'static [&'static str], bool);

/// The report page named `name` and the filter of the query, or the page
/// to answer instead (404 for an unknown report, 400 naming a bad filter).
fn report_and_filter(
    name: &str,
    form: &Form,
    me: &super::Me,
) -> Result<(&'static Page, Filter), Box<Response>> {
    let Some(page) = PAGES.iter().find(|p| p.0 == name) else {
        return Err(Box::new(message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no report by that name.",
            Some(me),
        )));
    };
    let groupings = page.2;
    if !form.by.is_empty() && !groupings.contains(&form.by.as_str()) {
        let text = if groupings.is_empty() {
            format!("by: the {name} report has no grouping")
        } else {
            format!("by: {:?} is not one of {}", form.by, groupings.join(", "))
        };
        return Err(Box::new(message(
            StatusCode::BAD_REQUEST,
            "Bad filter",
            &text,
            Some(me),
        )));
    }
    form.filter()
        .map(|f| (page, f))
        .map_err(|e| Box::new(message(StatusCode::BAD_REQUEST, "Bad filter", &e, Some(me))))
}

/// `/ui/reports/{name}`: one report's chart, table and totals.
pub async fn page(
    State(app): State<AppState>,
    session: UiSession,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let me = session.me();
    let form = Form::of(&q);
    let ((_, title, groupings, takes_model), filter) = match report_and_filter(&name, &form, &me) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let table = match run_report(&app, &name, &filter).await {
        Ok(t) => t,
        Err(e) => return failed(e, &me),
    };
    let (cats, series, percent, caption) = chart_data(&table);
    let chart = if table.rows.is_empty() || series.is_empty() {
        String::new()
    } else {
        match charts::hbars(&cats, &series, &format!("{title}: {caption}"), percent) {
            Ok(c) => c,
            Err(e) => return failed(chart_error(e), &me),
        }
    };
    let rows: Vec<Vec<String>> = table
        .rows
        .iter()
        .map(|r| r.iter().map(text_of).collect())
        .collect();
    let totals: Vec<(String, String)> = table
        .totals
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Array(a) if a.is_empty() => "none".to_string(),
                Value::Array(a) => a.iter().map(text_of).collect::<Vec<_>>().join(", "),
                other => text_of(other),
            };
            (k.replace('_', " "), v)
        })
        .collect();
    let query = form.query();
    let csv = if query.is_empty() {
        format!("/ui/reports/{name}/csv")
    } else {
        format!("/ui/reports/{name}/csv?{query}")
    };
    render(
        "report.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "reports",
            name, title => title.to_string(), caption, chart, more => table.rows.len() > CHART_ROWS, chart_rows => CHART_ROWS,
            columns => table.columns.iter().map(|c| c.replace('_', " ")).collect::<Vec<_>>(),
            rows, totals, csv,
            since_shown => table.since.format("%Y-%m-%d %H:%M UTC").to_string(),
            until_shown => table.until.format("%Y-%m-%d %H:%M UTC").to_string(),
            f => ser(&form), groupings => groupings.to_vec(), takes_model, models => MODELS.to_vec(),
            forms => app.config.forms.keys().cloned().collect::<Vec<_>>(), teams => teams(&app),
            pages => PAGES.iter().map(|(n, t, _, _)| (n.to_string(), t.to_string())).collect::<Vec<_>>(),
            query,
        },
    )
}

/// `/ui/reports/{name}/csv`: the report's table as a CSV download.
pub async fn csv(
    State(app): State<AppState>,
    session: UiSession,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let me = session.me();
    let (_, filter) = match report_and_filter(&name, &Form::of(&q), &me) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match run_report(&app, &name, &filter).await {
        Ok(t) => csv_response(&t),
        Err(e) => failed(e, &me),
    }
}

/// A rating from the lead page.
#[derive(Debug, serde::Deserialize)]
pub struct RateForm {
    rating: String,
}

/// `POST /ui/leads/{event_id}/rate`: an admin rates the lead's person.
pub async fn rate(
    State(app): State<AppState>,
    session: UiSession,
    Path(event_id): Path<uuid::Uuid>,
    super::pages::UiForm(f): super::pages::UiForm<RateForm>,
) -> Response {
    if let Some(r) = session.refuse_unless_admin() {
        return r;
    }
    let me = session.me();
    let Some(rating) = f
        .rating
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|r| (1..=5).contains(r))
    else {
        return message(
            StatusCode::BAD_REQUEST,
            "Bad rating",
            "rating: choose 1 (poor) to 5 (good).",
            Some(&me),
        );
    };
    let contact = match app.store.get_event(event_id).await {
        Ok(Some(e)) => e.contact_id,
        Ok(None) => None,
        Err(e) => return failed(e.into(), &me),
    };
    let Some(contact_id) = contact else {
        return message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no lead with that id (or it has no contact).",
            Some(&me),
        );
    };
    let r = crate::feedback::Rating {
        contact_id,
        rating,
        via: "dashboard".into(),
        by: Some(session.principal.key_name.clone()),
        key: None,
    };
    match crate::feedback::rate(app.store.as_ref(), &app.ingestor, r, Utc::now()).await {
        Ok(_) => {
            tracing::info!(actor = %session.principal.actor(), %rating, "lead rated from the dashboard");
            axum::response::IntoResponse::into_response(axum::response::Redirect::to(&format!(
                "/ui/leads/{event_id}?notice=rated"
            )))
        }
        Err(crate::feedback::RateError::Store(e)) => failed(e.into(), &me),
        Err(e) => failed(ApiError::not_found(e.to_string()), &me),
    }
}
