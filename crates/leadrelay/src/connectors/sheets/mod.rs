//! `sheets`: Google Sheets as a backup store — one row per delivery,
//! appended in batches with `spreadsheets.values.append`, under a header row
//! kept in step with the column mapping. A second `sheets` destination with
//! `columns = "dead_letters"`, named in `[delivery] dead_letter_copies`,
//! is the seeds' "failed integrations" sheet.
//!
//! Settings:
//! - `spreadsheet_id` (required), `sheet` (the tab, default `Sheet1`).
//! - `service_account_env` (default `GOOGLE_SERVICE_ACCOUNT`): the env var
//!   holding the service-account key file's JSON, or a path to the file.
//!   Share the spreadsheet with the account's `client_email`.
//! - `columns`: `"leads"` (default), `"dead_letters"`, or a list of
//!   `{ header = "…", value = "<expression>" }` — minijinja expressions over
//!   the values notification templates see (`contact.email`,
//!   `data.message`, `attribution.utm_source`, `dead_letter.reason` …); a
//!   plain string `"contact.email"` is its own header.
//! - `create_sheet` (default `false`): add the tab if it does not exist.
//! - `value_input_option`: `RAW` (default: a lead named `=HYPERLINK(…)`
//!   stays text) or `USER_ENTERED` (Sheets parses what it is sent as if
//!   typed in: text starting with `=`, `+`, `-`, `@`, a tab or a CR, phone
//!   numbers included, is sent with a leading `'`, which Sheets keeps as
//!   text and does not show, so a lead's text never becomes a formula).
//! - `quota_pause` (default `"30s"`): how long the destination pauses after
//!   a 429 without `Retry-After` (the quota is per minute).
//! - `token_url` (default: the key file's `token_uri`), `base_url` (default
//!   `https://sheets.googleapis.com`), `allow_private_networks`.
//!
//! Quota: Sheets allows 60 write requests per minute per user (the service
//! account). Each batch is one append request (up to `batch_size` rows,
//! default 100), and the default rate limit is 30 requests a minute, so two
//! sheets destinations on one account (leads and failed) stay inside it.
//! A 429 `RESOURCE_EXHAUSTED` pauses the destination; a 401 drops the cached
//! token and retries once with a new one.

mod auth;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{self as shared, HttpResponse};
use super::{
    AttemptReport, BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob,
    ErrorClass, JobResult, Outcome,
};
use crate::config::{HumanDuration, Problem, Rate, parse_settings};
use crate::redact;

use super::columns::{Columns, ColumnsSetting};
pub use auth::{ServiceAccountKey, TokenSource};

/// The OAuth scope for reading and writing spreadsheets.
pub const SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets";
const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

#[derive(Debug, Deserialize)]
struct Settings {
    spreadsheet_id: String,
    #[serde(default = "default_sheet")]
    sheet: String,
    #[serde(default = "default_key_env")]
    service_account_env: String,
    #[serde(default)]
    columns: Option<ColumnsSetting>,
    #[serde(default)]
    create_sheet: bool,
    #[serde(default)]
    value_input_option: Option<String>,
    #[serde(default)]
    quota_pause: Option<HumanDuration>,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    allow_private_networks: bool,
}

fn default_sheet() -> String {
    "Sheet1".into()
}
fn default_key_env() -> String {
    "GOOGLE_SERVICE_ACCOUNT".into()
}

pub fn kind() -> ConnectorKind {
    ConnectorKind {
        name: "sheets",
        summary: "Google Sheets backup: rows appended in batches under a managed header row",
        defaults: Defaults {
            // 60 write requests per minute per user: half each, so a leads
            // sheet and a failed sheet on one service account fit.
            rate_limit: Some(Rate {
                count: 30,
                period: Duration::from_secs(60),
            }),
            concurrency: 1,
            batch_size: 100,
            max_batch_size: 500,
        },
        personal_data: true,
        build,
    }
}

struct SheetsConnector {
    client: reqwest::Client,
    tokens: TokenSource,
    base: String,
    spreadsheet_id: String,
    sheet: String,
    columns: Columns,
    create_sheet: bool,
    value_input_option: &'static str,
    quota_pause: Duration,
    public_url: String,
    allow_private: bool,
    /// The header row is known to match the columns.
    header_ok: AtomicBool,
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let s: Settings = parse_settings(ctx.settings)?;
    let mut problems = Vec::new();
    if s.spreadsheet_id.trim().is_empty() || s.spreadsheet_id.contains(['/', '?', '#']) {
        problems.push(Problem::error(
            "spreadsheet_id",
            "the id from the spreadsheet's URL (…/spreadsheets/d/ID/edit)",
        ));
    }
    if s.sheet.trim().is_empty() {
        problems.push(Problem::error("sheet", "name the tab"));
    }
    let key = match ctx.secret("service_account_env", &s.service_account_env) {
        Ok(v) => ServiceAccountKey::from_env_value(&v)
            .map_err(|m| {
                problems.push(Problem::error(
                    "service_account_env",
                    format!("{}: {m}", s.service_account_env),
                ))
            })
            .ok(),
        Err(p) => {
            problems.push(p);
            None
        }
    };
    let columns = Columns::compile(s.columns.as_ref())
        .map_err(|ps| problems.extend(ps))
        .ok();
    let value_input_option = match s.value_input_option.as_deref() {
        None | Some("RAW") => "RAW",
        Some("USER_ENTERED") => "USER_ENTERED",
        Some(other) => {
            problems.push(Problem::error(
                "value_input_option",
                format!("{other:?}: use RAW or USER_ENTERED"),
            ));
            "RAW"
        }
    };
    let base = s
        .base_url
        .clone()
        .unwrap_or_else(|| "https://sheets.googleapis.com".into())
        .trim_end_matches('/')
        .to_string();
    for (setting, url) in [
        ("base_url", Some(&base)),
        ("token_url", s.token_url.as_ref()),
    ] {
        if let Some(u) = url
            && reqwest::Url::parse(u).is_err()
        {
            problems.push(Problem::error(setting, "not a valid URL"));
        }
    }
    let client = shared::client(ctx.timeout, s.allow_private_networks)
        .map_err(|m| problems.push(Problem::error("", m)))
        .ok();
    let (Some(key), Some(columns), Some(client), true) =
        (key, columns, client, problems.is_empty())
    else {
        return Err(problems);
    };
    let token_url = s
        .token_url
        .clone()
        .or_else(|| key.token_uri.clone())
        .unwrap_or_else(|| DEFAULT_TOKEN_URL.into());
    Ok(Arc::new(SheetsConnector {
        client,
        tokens: TokenSource::new(key, SCOPE, token_url, s.allow_private_networks),
        base,
        spreadsheet_id: s.spreadsheet_id.trim().to_string(),
        sheet: s.sheet,
        columns,
        create_sheet: s.create_sheet,
        value_input_option,
        quota_pause: s
            .quota_pause
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(30)),
        public_url: ctx.public_url.to_string(),
        allow_private: s.allow_private_networks,
        header_ok: AtomicBool::new(false),
    }))
}

/// `'Tab name'!A1` with quotes doubled.
fn a1(sheet: &str, cells: &str) -> String {
    format!("'{}'!{cells}", sheet.replace('\'', "''"))
}

/// The failure of a whole batch (every row shares it).
struct Failure {
    outcome: Outcome,
    report: AttemptReport,
}

impl SheetsConnector {
    /// `{base}/v4/spreadsheets/{id}/values/{range}{suffix}`, each piece encoded.
    fn values_url(&self, range: &str, suffix: &str) -> Result<reqwest::Url, String> {
        let mut url = reqwest::Url::parse(&self.base).map_err(|e| e.to_string())?;
        url.path_segments_mut()
            .map_err(|_| "base_url cannot have a path".to_string())?
            .pop_if_empty()
            .extend(["v4", "spreadsheets", &self.spreadsheet_id, "values"])
            .push(&format!("{range}{suffix}"));
        Ok(url)
    }

    fn spreadsheet_url(&self, suffix: &str) -> Result<reqwest::Url, String> {
        let mut url = reqwest::Url::parse(&self.base).map_err(|e| e.to_string())?;
        url.path_segments_mut()
            .map_err(|_| "base_url cannot have a path".to_string())?
            .pop_if_empty()
            .extend(["v4", "spreadsheets"])
            .push(&format!("{}{suffix}", self.spreadsheet_id));
        Ok(url)
    }

    /// Sends a request with a bearer token; on 401, refreshes the token once.
    async fn call(
        &self,
        make: impl Fn(&str) -> Result<reqwest::Request, String>,
    ) -> Result<(HttpResponse, AttemptReport), Failure> {
        let mut refreshed = false;
        loop {
            let token = self.tokens.token(&self.client).await.map_err(|e| Failure {
                outcome: e.outcome,
                report: e.report,
            })?;
            let request = make(&token).map_err(|m| Failure {
                outcome: Outcome::permanent(ErrorClass::Mapping, m),
                report: Default::default(),
            })?;
            let display = display_url(request.url());
            let (result, report) =
                shared::send(&self.client, request, &display, self.allow_private).await;
            match result {
                Ok(resp) if resp.status == 401 && !refreshed => {
                    // Expired or revoked: fetch a new token and try once more.
                    self.tokens.invalidate().await;
                    refreshed = true;
                }
                Ok(resp) => return Ok((resp, report)),
                Err(e) => {
                    return Err(Failure {
                        outcome: e.outcome(),
                        report,
                    });
                }
            }
        }
    }

    /// Google's answer as an outcome.
    fn classify(&self, resp: &HttpResponse) -> Outcome {
        if (200..300).contains(&resp.status) {
            return Outcome::delivered();
        }
        let parsed: Option<Value> = serde_json::from_str(&resp.body).ok();
        let status = parsed
            .as_ref()
            .and_then(|v| v.pointer("/error/status"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let text = parsed
            .as_ref()
            .and_then(|v| v.pointer("/error/message"))
            .and_then(Value::as_str)
            .map(|m| redact::excerpt(m, 300))
            .unwrap_or_else(|| redact::excerpt(&resp.body, 200));
        let message = format!("Google Sheets HTTP {} {status}: {text}", resp.status);
        match resp.status {
            429 => Outcome::Throttled {
                message,
                retry_after: shared::parse_retry_after(&resp.headers).or(Some(self.quota_pause)),
            },
            401 => Outcome::CredentialsRejected { message },
            403 => Outcome::permanent(
                ErrorClass::Auth,
                format!(
                    "{message} (share the spreadsheet with {})",
                    self.tokens.client_email()
                ),
            ),
            _ => match shared::classify(resp) {
                Outcome::Permanent { class, .. } => Outcome::permanent(class, message),
                Outcome::Retry {
                    class, retry_after, ..
                } => Outcome::Retry {
                    class,
                    message,
                    retry_after,
                },
                Outcome::Gone { .. } => Outcome::permanent(ErrorClass::Http4xx, message),
                other => other,
            },
        }
    }

    fn fail(&self, resp: &HttpResponse, report: AttemptReport) -> Failure {
        if resp.status == 400 {
            // A changed tab may have a changed header row too.
            self.header_ok.store(false, Ordering::Relaxed);
        }
        Failure {
            outcome: self.classify(resp),
            report,
        }
    }

    /// Makes row 1 hold the column headers (creating the tab first if
    /// allowed and missing). One read, and a write only when it differs.
    async fn ensure_header(&self) -> Result<(), Failure> {
        if self.header_ok.load(Ordering::Relaxed) {
            return Ok(());
        }
        let headers = self.columns.headers();
        let range = a1(&self.sheet, "1:1");
        let url = self.values_url(&range, "").map_err(mapping)?;
        let (resp, report) = self
            .call(|t| {
                self.client
                    .get(url.clone())
                    .bearer_auth(t)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .await?;
        let current: Vec<String> = if resp.status == 400 && self.create_sheet {
            self.add_sheet().await?;
            Vec::new()
        } else if resp.status != 200 {
            return Err(self.fail(&resp, report));
        } else {
            serde_json::from_str::<Value>(&resp.body)
                .ok()
                .and_then(|v| v.pointer("/values/0").cloned())
                .and_then(|row| row.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .map(super::notify::text_of)
                .collect()
        };
        if current.len() >= headers.len() && current[..headers.len()] == headers[..] {
            self.header_ok.store(true, Ordering::Relaxed);
            return Ok(());
        }
        let range = a1(&self.sheet, "A1");
        let mut url = self.values_url(&range, "").map_err(mapping)?;
        url.query_pairs_mut().append_pair("valueInputOption", "RAW");
        let body = json!({"range": range, "majorDimension": "ROWS", "values": [headers]});
        let (resp, report) = self
            .call(|t| {
                self.client
                    .put(url.clone())
                    .bearer_auth(t)
                    .json(&body)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .await?;
        if resp.status != 200 {
            return Err(self.fail(&resp, report));
        }
        tracing::info!(sheet = %self.sheet, "wrote the header row");
        self.header_ok.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn add_sheet(&self) -> Result<(), Failure> {
        let url = self.spreadsheet_url(":batchUpdate").map_err(mapping)?;
        let body = json!({"requests": [{"addSheet": {"properties": {"title": self.sheet}}}]});
        let (resp, report) = self
            .call(|t| {
                self.client
                    .post(url.clone())
                    .bearer_auth(t)
                    .json(&body)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .await?;
        if resp.status != 200 {
            return Err(self.fail(&resp, report));
        }
        tracing::info!(sheet = %self.sheet, "added the tab");
        Ok(())
    }

    /// Appends `rows` in one request.
    async fn append(&self, rows: &[Vec<Value>]) -> Result<AttemptReport, Failure> {
        let range = a1(&self.sheet, "A1");
        let mut url = self.values_url(&range, ":append").map_err(mapping)?;
        url.query_pairs_mut()
            .append_pair("valueInputOption", self.value_input_option)
            .append_pair("insertDataOption", "INSERT_ROWS");
        let body = json!({"range": range, "majorDimension": "ROWS", "values": rows});
        let (resp, report) = self
            .call(|t| {
                self.client
                    .post(url.clone())
                    .bearer_auth(t)
                    .json(&body)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .await?;
        if (200..300).contains(&resp.status) {
            Ok(report)
        } else {
            Err(self.fail(&resp, report))
        }
    }
}

fn mapping(m: String) -> Failure {
    Failure {
        outcome: Outcome::permanent(ErrorClass::Mapping, m),
        report: Default::default(),
    }
}

/// The URL without its query (no secrets are in it, but keep it short).
fn display_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

#[async_trait]
impl Connector for SheetsConnector {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        let mut results: Vec<Option<JobResult>> = vec![None; jobs.len()];
        let mut rows = Vec::new();
        let mut in_batch = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let ctx = super::notify::context(job, &self.public_url);
            match self.columns.row(&ctx) {
                Ok(mut row) => {
                    if self.value_input_option == "USER_ENTERED" {
                        escape_formulas(&mut row);
                    }
                    rows.push(row);
                    in_batch.push(i);
                }
                Err(m) => {
                    results[i] = Some(JobResult {
                        outcome: Outcome::permanent(ErrorClass::Mapping, m),
                        report: Default::default(),
                    })
                }
            }
        }
        if !rows.is_empty() {
            let sent = match self.ensure_header().await {
                Ok(()) => self.append(&rows).await,
                Err(f) => Err(f),
            };
            let (outcome, report) = match sent {
                Ok(mut report) => {
                    report.response_excerpt = Some(format!("{} row(s) appended", rows.len()));
                    (Outcome::delivered(), report)
                }
                Err(f) => (f.outcome, f.report),
            };
            for i in in_batch {
                results[i] = Some(JobResult {
                    outcome: outcome.clone(),
                    report: report.clone(),
                });
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| JobResult {
                    outcome: Outcome::retry(ErrorClass::Vendor, "no result"),
                    report: Default::default(),
                })
            })
            .collect()
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<Value, String>> {
        Some(
            self.columns
                .preview(&super::notify::context(job, &self.public_url)),
        )
    }

    async fn check(&self) -> CheckReport {
        let url = match self.spreadsheet_url("") {
            Ok(u) => u,
            Err(m) => return CheckReport::failed(m),
        };
        let sent = self
            .call(|t| {
                self.client
                    .get(url.clone())
                    .bearer_auth(t)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .await;
        match sent {
            Ok((resp, _)) if resp.status == 200 => {
                let tabs: Vec<String> = serde_json::from_str::<Value>(&resp.body)
                    .ok()
                    .and_then(|v| v.get("sheets").and_then(Value::as_array).cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|s| s.pointer("/properties/title").and_then(Value::as_str))
                    .map(String::from)
                    .collect();
                if tabs.contains(&self.sheet) || self.create_sheet {
                    CheckReport::ok(format!(
                        "{} can write to the spreadsheet (tab {})",
                        self.tokens.client_email(),
                        self.sheet
                    ))
                } else {
                    CheckReport::failed(format!(
                        "the spreadsheet has no tab {:?} (tabs: {}); add it or set create_sheet = true",
                        self.sheet,
                        tabs.join(", ")
                    ))
                }
            }
            Ok((resp, _)) => CheckReport::failed(format!("{:?}", self.classify(&resp))),
            Err(f) => CheckReport::failed(format!("{:?}", f.outcome)),
        }
    }
}

/// Prefixes text Sheets would parse as a formula with `'` (kept as text,
/// not shown): for `USER_ENTERED`, which parses values as if typed in.
fn escape_formulas(row: &mut [Value]) {
    for cell in row {
        if let Value::String(s) = cell
            && super::columns::formula_like(s)
        {
            s.insert(0, '\'');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_entered_text_never_becomes_a_formula() {
        let mut row = vec![
            json!("=HYPERLINK(\"http://evil\")"),
            json!("+14155550123"),
            json!("-2+3+cmd|' /C calc'!A0"),
            json!("@SUM(A1)"),
            json!("plain"),
            json!(-5),
        ];
        escape_formulas(&mut row);
        assert_eq!(
            row,
            vec![
                json!("'=HYPERLINK(\"http://evil\")"),
                json!("'+14155550123"),
                json!("'-2+3+cmd|' /C calc'!A0"),
                json!("'@SUM(A1)"),
                json!("plain"),
                json!(-5),
            ]
        );
    }

    #[test]
    fn a1_quotes_tab_names() {
        assert_eq!(a1("Leads", "A1"), "'Leads'!A1");
        assert_eq!(a1("Bob's leads", "1:1"), "'Bob''s leads'!1:1");
    }
}
