//! Reports in the admin API: `GET /api/v1/reports/{report}` (JSON, or CSV
//! with `format=csv`) with date-range and dimension filters, and the
//! campaign cost import (`POST /api/v1/reports/campaign-costs`, a CSV body)
//! that the channel report's ROI uses.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiPath, ApiQuery, Auth};
use super::{ItemErrors, ReadErrors, WriteErrors};
use crate::error::{ApiError, FieldError};
use crate::http::AppState;
use crate::reports::attribution::Model;
use crate::reports::kpi::Kpi;
use crate::reports::{self, Filter, ReportError, Table};
use crate::store::CampaignCost;

/// A report's name.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReportName {
    /// Leads → opportunities → each stage → won, with conversion rates.
    Funnel,
    /// Open opportunities × average won deal × win rate ÷ sales cycle.
    Velocity,
    /// Win rate and deal size by source, campaign, channel, form or owner.
    WinRates,
    /// Average, median and p90 hours per stage.
    TimeInStage,
    /// Stays longer than the stage's Tukey fence.
    Outliers,
    /// Attributed revenue per channel (campaign, source) with cost and ROI.
    Channels,
    /// Each won deal's credits under a model; attribution coverage.
    Attribution,
    /// Open pipeline × probability by expected close month.
    Forecast,
    /// Forecast at the start of each month against what was won.
    ForecastAccuracy,
    /// Sales' ratings of lead quality and conversion by source, campaign,
    /// channel, form, owner or score band.
    Feedback,
    /// Per score band: conversion and rating against all leads', and where
    /// the scoring over- or under-rates.
    Calibration,
}

impl ReportName {
    fn as_str(self) -> &'static str {
        match self {
            ReportName::Funnel => "funnel",
            ReportName::Velocity => "velocity",
            ReportName::WinRates => "win-rates",
            ReportName::TimeInStage => "time-in-stage",
            ReportName::Outliers => "outliers",
            ReportName::Channels => "channels",
            ReportName::Attribution => "attribution",
            ReportName::Forecast => "forecast",
            ReportName::ForecastAccuracy => "forecast-accuracy",
            ReportName::Feedback => "feedback",
            ReportName::Calibration => "calibration",
        }
    }
}

/// How rows are grouped.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Source,
    Campaign,
    Channel,
    Form,
    Owner,
    /// Score band (`feedback` only).
    Band,
}

/// The answer's format.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Json,
    Csv,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Start of the range (RFC 3339); default 90 days before `until`.
    pub since: Option<DateTime<Utc>>,
    /// End of the range, exclusive; default now.
    pub until: Option<DateTime<Utc>>,
    /// The person's first lead event came from this form (`contact`) or
    /// origin (`form:contact`, `source:typeform`, `api:backend`).
    #[param(max_length = 200)]
    pub form: Option<String>,
    /// First-touch source (`utm_source` or the referrer's host).
    #[param(max_length = 200)]
    pub source: Option<String>,
    /// First-touch campaign.
    #[param(max_length = 200)]
    pub campaign: Option<String>,
    /// First-touch channel (`paid_search`, `email`, `direct`, …).
    #[param(max_length = 200)]
    pub channel: Option<String>,
    /// The deal's owner as the CRM names it.
    #[param(max_length = 200)]
    pub owner: Option<String>,
    /// An owner group from `[[owners]] groups`.
    #[param(max_length = 200)]
    pub team: Option<String>,
    /// Grouping of `win-rates` and `feedback` (default source; `band` for
    /// `feedback` only) and `channels` (default channel).
    #[param(inline)]
    pub by: Option<GroupBy>,
    /// Model of `channels` and `attribution` (default linear).
    #[param(inline)]
    pub model: Option<Model>,
    #[param(inline)]
    pub format: Option<Format>,
}

fn plain(v: impl Serialize) -> Option<String> {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
}

impl ReportQuery {
    /// The text filters' documented bound (`max_length = 200`).
    fn check(&self) -> Result<(), ApiError> {
        let texts = [
            ("form", &self.form),
            ("source", &self.source),
            ("campaign", &self.campaign),
            ("channel", &self.channel),
            ("owner", &self.owner),
            ("team", &self.team),
        ];
        for (name, v) in texts {
            if v.as_ref().is_some_and(|v| v.chars().count() > 200) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("{name}: at most 200 characters"),
                ));
            }
        }
        Ok(())
    }

    pub fn filter(&self) -> Filter {
        Filter {
            since: self.since,
            until: self.until,
            form: self.form.clone(),
            source: self.source.clone(),
            campaign: self.campaign.clone(),
            channel: self.channel.clone(),
            owner: self.owner.clone(),
            team: self.team.clone(),
            by: self.by.and_then(plain),
            model: self.model.map(|m| m.as_str().to_string()),
        }
    }
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Unknown(name) => ApiError::not_found(format!("no report {name:?}")),
            ReportError::Invalid { field, message } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("{field}: {message}"),
            ),
            ReportError::Store(e) => e.into(),
        }
    }
}

/// One report: columns, rows and totals over the range and filters.
#[utoipa::path(get, path = "/api/v1/reports/{report}", tag = "reports",
    params(("report" = inline(ReportName), Path, description = "Which report"), ReportQuery),
    responses(
        (status = 200, description = "The report", content(
            (Table = "application/json"),
            (String = "text/csv"),
        )),
        ItemErrors))]
pub async fn get_report(
    State(app): State<AppState>,
    _auth: Auth,
    ApiPath(report): ApiPath<ReportName>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    q.check()?;
    let table = run_report(&app, report.as_str(), &q.filter()).await?;
    Ok(match q.format.unwrap_or_default() {
        Format::Json => Json(table).into_response(),
        Format::Csv => csv_response(&table),
    })
}

/// Any report by name: the pipeline reports or the feedback ones.
pub async fn run_report(app: &AppState, name: &str, filter: &Filter) -> Result<Table, ApiError> {
    let now = Utc::now();
    let store = app.store.as_ref();
    Ok(
        if crate::feedback::report::REPORTS
            .iter()
            .any(|(r, _)| *r == name)
        {
            crate::feedback::report::run(store, &app.config, name, filter, now).await?
        } else {
            reports::run(store, &app.config, name, filter, now).await?
        },
    )
}

/// The table as a CSV download.
pub fn csv_response(table: &Table) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.csv\"", table.report),
            ),
        ],
        table.to_csv(),
    )
        .into_response()
}

/// The reports there are.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportInfo {
    pub report: String,
    pub title: String,
}

/// Every report's name and title.
#[utoipa::path(get, path = "/api/v1/reports", tag = "reports",
    responses((status = 200, description = "The reports", body = Vec<ReportInfo>), ReadErrors))]
pub async fn list_reports(_auth: Auth) -> Json<Vec<ReportInfo>> {
    Json(
        reports::REPORTS
            .iter()
            .chain(crate::feedback::report::REPORTS.iter())
            .map(|(r, t)| ReportInfo {
                report: r.to_string(),
                title: t.to_string(),
            })
            .collect(),
    )
}

/// What an import stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CostImport {
    /// Rows stored (a (campaign, month) already there is replaced).
    pub imported: usize,
}

/// Imports campaign costs from CSV (`text/csv`): a header naming
/// `campaign`, `month` (`YYYY-MM`) and `cost`, optionally `channel`. All
/// or nothing: any bad line answers 422 naming it, and nothing is stored.
#[utoipa::path(post, path = "/api/v1/reports/campaign-costs", tag = "reports",
    request_body(content = String, content_type = "text/csv",
        description = "campaign,month,cost[,channel]"),
    responses((status = 200, description = "Imported", body = CostImport), WriteErrors))]
pub async fn import_costs(
    State(app): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CostImport>, ApiError> {
    auth.require_admin()?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("text/csv") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the costs as text/csv",
        ));
    }
    if body.len() > 1 << 20 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "at most 1 MiB of CSV per import",
        ));
    }
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the CSV is not UTF-8"))?;
    let costs = reports::parse_costs(text).map_err(|errors| {
        ApiError::validation(
            errors
                .into_iter()
                .map(|(f, m)| FieldError::new(&f, "invalid", m))
                .collect(),
        )
    })?;
    let imported = app.store.set_campaign_costs(costs).await?;
    Ok(Json(CostImport { imported }))
}

/// Every imported campaign cost.
#[utoipa::path(get, path = "/api/v1/reports/campaign-costs", tag = "reports",
    responses((status = 200, description = "Costs by campaign and month", body = Vec<CampaignCost>), ReadErrors))]
pub async fn list_costs(
    State(app): State<AppState>,
    _auth: Auth,
) -> Result<Json<Vec<CampaignCost>>, ApiError> {
    Ok(Json(app.store.campaign_costs().await?))
}

/// KPIs against their targets over `reports.kpis.window` (the seed's
/// list; the ones leadrelay does not measure yet say `measured: false`).
#[utoipa::path(get, path = "/api/v1/kpis", tag = "reports",
    responses((status = 200, description = "Every KPI", body = Vec<Kpi>), ReadErrors))]
pub async fn list_kpis(
    State(app): State<AppState>,
    _auth: Auth,
) -> Result<Json<Vec<Kpi>>, ApiError> {
    let now = Utc::now();
    reports::rollup::catch_up(app.store.as_ref(), &app.config.reports, now).await?;
    Ok(Json(
        reports::kpi::compute(app.store.as_ref(), &app.config.reports.kpis, now).await?,
    ))
}
