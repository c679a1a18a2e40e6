//! One destination's page: its health, latency and error charts over a
//! chosen range (24 hours by hour, 7 or 30 days by day), the figures as a
//! table, and links to its waiting deliveries, dead letters and issues.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use minijinja::context;
use serde::Serialize;

use super::pages::{buckets, chart_error, chart_range, failed, range_options, refresh_of};
use super::{UiSession, charts, message, render, ser};
use crate::error::ApiError;
use crate::http::AppState;
use crate::http::admin::one_destination_health;
use crate::store::SeriesBucket;

/// A bucket as the table shows it.
#[derive(Debug, Serialize)]
struct Row {
    from: String,
    #[serde(flatten)]
    b: SeriesBucket,
    failed: u64,
    success_rate: Option<f64>,
}

pub async fn page(
    State(app): State<AppState>,
    session: UiSession,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let me = session.me();
    let range = match chart_range(q.get("range").map(String::as_str)) {
        Ok(r) => r,
        Err(e) => return message(StatusCode::BAD_REQUEST, "Bad filter", e, Some(&me)),
    };
    let refresh = match refresh_of(q.get("refresh").map(String::as_str)) {
        Ok(r) => r,
        Err(e) => return message(StatusCode::BAD_REQUEST, "Bad filter", &e, Some(&me)),
    };
    match inner(&app, &session, &name, range, refresh).await {
        Ok(r) => r,
        Err(e) => failed(e, &me),
    }
}

async fn inner(
    app: &AppState,
    session: &UiSession,
    name: &str,
    range: &super::pages::ChartRange,
    refresh: Option<u32>,
) -> Result<Response, ApiError> {
    let health = one_destination_health(app, name).await?;
    let starts = buckets(Utc::now(), range.rate_secs, range.rate_n);
    let found = app
        .store
        .destination_series(name, starts[0], range.rate_secs)
        .await?;
    let n = starts.len();
    let mut avg = vec![None; n];
    let mut max = vec![None; n];
    let mut errors: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut rows = Vec::new();
    for b in found {
        let Some(i) = starts.iter().position(|s| *s == b.bucket_start) else {
            continue;
        };
        avg[i] = b.avg_ms;
        max[i] = b.max_ms;
        for (series, count) in [
            ("4xx answers", b.client_errors),
            ("5xx answers", b.server_errors),
            ("no answer (timeout, network)", b.other_errors),
            ("throttled", b.throttled),
        ] {
            if count > 0 {
                errors
                    .entry(series.to_string())
                    .or_insert_with(|| vec![0; n])[i] += count;
            }
        }
        let failed = b.failed();
        rows.push(Row {
            from: b.bucket_start.format("%Y-%m-%d %H:%M").to_string(),
            success_rate: (b.succeeded + failed > 0)
                .then(|| b.succeeded as f64 / (b.succeeded + failed) as f64),
            failed,
            b,
        });
    }
    let labels: Vec<String> = starts
        .iter()
        .map(|d| d.format(range.rate_fmt).to_string())
        .collect();
    let per = if range.rate_secs == 3600 {
        "hour"
    } else {
        "day"
    };
    let latency_caption = format!("{name}: attempt latency per {per}, {}", range.text);
    let errors_caption = format!(
        "{name}: failed and throttled attempts per {per}, {}",
        range.text
    );
    let latency_chart =
        charts::latency(&labels, &avg, &max, &latency_caption).map_err(chart_error)?;
    let errors_chart =
        charts::stacked_bars(&labels, &errors, &errors_caption).map_err(chart_error)?;
    let (issues, _) = super::issues::open_issues(app).await?;
    let issues: Vec<_> = issues
        .into_iter()
        .filter(|i| i.destination == name)
        .collect();
    let me = session.me();
    Ok(render(
        "destination.html",
        context! {
            me => ser(&me), csrf => session.csrf.clone(), nav => "destinations", refresh,
            d => ser(&health), destinations => ser(&[&health]), actions => true,
            latency_chart, errors_chart, latency_caption, errors_caption,
            rows => ser(&rows), any_errors => !errors.is_empty(),
            range => range.key, ranges => range_options(),
            here => format!("/ui/destinations/{}", url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()),
            issues => ser(&issues),
        },
    ))
}
