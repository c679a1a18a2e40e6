//! `csv`: a CSV backup on local disk beside the JSON Lines one — one row
//! per delivery in a stable column order, a header row at the top of every
//! file, rotated by day and size like `file` (it shares its rotation code),
//! fsynced per batch.
//!
//! Settings:
//! - `path` (required), `prefix` (default `"leads"`): files are
//!   `{path}/{prefix}-{YYYY-MM-DD}.csv`, then `.1.csv`, `.2.csv` …
//! - `rotate_bytes` (default `"100MiB"`), `fsync` (default `true`).
//! - `columns`: `"leads"` (default), `"dead_letters"`, or a list — the same
//!   mapping as the `sheets` connector.
//! - `escape_formulas` (default `true`): a text cell starting with `=`,
//!   `+`, `-`, `@`, a tab or a CR (OWASP's list; phone numbers such as
//!   `+14155550123` included) is written quoted with a leading `'`
//!   (`"'+14155550123"`), so a spreadsheet opening the file shows it as
//!   text and never runs a lead's text as a formula. Numbers (`-5` from a
//!   JSON number, never text) are written as they are.
//!
//! Quoting follows RFC 4180: a field with a comma, a quote, CR or LF, or
//! leading/trailing spaces is quoted, quotes are doubled; lines end CRLF.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::columns::{Columns, ColumnsSetting, formula_like};
use super::file::rotate::{Appended, Record, RotatingFile};
use super::{
    AttemptReport, BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob,
    ErrorClass, JobResult, Outcome, notify,
};
use crate::config::{ByteSize, Problem, parse_settings};

#[derive(Debug, Deserialize)]
struct Settings {
    path: PathBuf,
    #[serde(default = "default_prefix")]
    prefix: String,
    #[serde(default = "default_rotate")]
    rotate_bytes: ByteSize,
    #[serde(default = "default_true")]
    fsync: bool,
    #[serde(default)]
    columns: Option<ColumnsSetting>,
    #[serde(default = "default_true")]
    escape_formulas: bool,
}

fn default_prefix() -> String {
    "leads".into()
}
fn default_rotate() -> ByteSize {
    ByteSize(100 * 1024 * 1024)
}
fn default_true() -> bool {
    true
}

pub fn kind() -> ConnectorKind {
    ConnectorKind {
        name: "csv",
        summary: "CSV backup on local disk, stable columns, rotated by day and size, fsynced per batch",
        defaults: Defaults {
            rate_limit: None,
            concurrency: 1,
            batch_size: 200,
            max_batch_size: 1000,
        },
        personal_data: true,
        build,
    }
}

struct CsvConnector {
    file: Arc<RotatingFile>,
    columns: Columns,
    escape_formulas: bool,
    public_url: String,
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let s: Settings = parse_settings(ctx.settings)?;
    let mut problems = Vec::new();
    if s.prefix.is_empty() || s.prefix.contains(['/', '\\']) {
        problems.push(Problem::error("prefix", "must be a plain file-name prefix"));
    }
    if s.rotate_bytes.bytes() < 1024 {
        problems.push(Problem::error("rotate_bytes", "must be at least 1KiB"));
    }
    let columns = Columns::compile(s.columns.as_ref())
        .map_err(|ps| problems.extend(ps))
        .ok();
    let (Some(columns), true) = (columns, problems.is_empty()) else {
        return Err(problems);
    };
    let header = line(
        &columns
            .headers()
            .iter()
            .map(|h| Value::String(h.clone()))
            .collect::<Vec<_>>(),
        false,
    );
    Ok(Arc::new(CsvConnector {
        file: Arc::new(RotatingFile::new(
            s.path,
            s.prefix,
            "csv",
            s.rotate_bytes.bytes(),
            s.fsync,
            Some(header.into_bytes()),
        )),
        columns,
        escape_formulas: s.escape_formulas,
        public_url: ctx.public_url.to_string(),
    }))
}

/// One field, quoted when needed (RFC 4180); with `escape_formulas`, text a
/// spreadsheet would evaluate gets a leading `'` and quotes (OWASP).
pub fn field(t: &str, escape_formulas: bool) -> String {
    if escape_formulas && formula_like(t) {
        return format!("\"'{}\"", t.replace('"', "\"\""));
    }
    let needs_quotes = t.contains([',', '"', '\r', '\n'])
        || t.starts_with(' ')
        || t.ends_with(' ')
        || t.starts_with('\t');
    if needs_quotes {
        format!("\"{}\"", t.replace('"', "\"\""))
    } else {
        t.to_string()
    }
}

/// A CSV line (CRLF-terminated). Numbers are never formulas: only text is
/// escaped.
fn line(cells: &[Value], escape_formulas: bool) -> String {
    let mut out = cells
        .iter()
        .map(|c| field(&notify::text_of(c), escape_formulas && !c.is_number()))
        .collect::<Vec<_>>()
        .join(",");
    out.push_str("\r\n");
    out
}

#[async_trait]
impl Connector for CsvConnector {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        let started = Utc::now();
        let clock = Instant::now();
        let mut records = Vec::new();
        let mut results: Vec<Option<JobResult>> = vec![None; jobs.len()];
        let mut written = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let ctx = notify::context(job, &self.public_url);
            match self.columns.row(&ctx) {
                Ok(cells) => {
                    records.push(Record {
                        delivery_id: job.delivery.id.to_string(),
                        event_id: job.event.id.to_string(),
                        bytes: line(&cells, self.escape_formulas).into_bytes(),
                    });
                    written.push(i);
                }
                Err(m) => {
                    results[i] = Some(JobResult {
                        outcome: Outcome::permanent(ErrorClass::Mapping, m),
                        report: Default::default(),
                    })
                }
            }
        }
        if !written.is_empty() {
            let mut sha = Sha256::new();
            let mut size = 0u64;
            for r in &records {
                sha.update(&r.bytes);
                size += r.bytes.len() as u64;
            }
            let sha = hex::encode(sha.finalize());
            let file = self.file.clone();
            // File I/O and fsync block: keep them off the async workers.
            let result = tokio::task::spawn_blocking(move || file.append_records(&records))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(format!("writer task failed: {e}"))));
            let (outcome, excerpt, path) = match result {
                Ok(a) => (
                    Outcome::delivered(),
                    written_text(written.len(), &a, "row"),
                    a.path.display().to_string(),
                ),
                Err(e) => {
                    let m = format!("writing the CSV backup failed: {e}");
                    (
                        Outcome::retry(ErrorClass::Io, m.clone()),
                        m,
                        self.file.dir().display().to_string(),
                    )
                }
            };
            let report = AttemptReport {
                started_at: Some(started),
                duration: clock.elapsed(),
                method: Some("APPEND".into()),
                url: Some(path),
                request_bytes: Some(size),
                request_sha256: Some(sha),
                status: None,
                response_excerpt: Some(excerpt),
                exchange: None,
            };
            for i in written {
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
                    outcome: Outcome::retry(ErrorClass::Io, "no result"),
                    report: Default::default(),
                })
            })
            .collect()
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<Value, String>> {
        Some(
            self.columns
                .preview(&notify::context(job, &self.public_url)),
        )
    }

    /// A CSV row never names records in other systems: no remote-id lookup
    /// per batch.
    fn lookup_keys(&self, _job: &DeliveryJob) -> Vec<String> {
        Vec::new()
    }

    async fn check(&self) -> CheckReport {
        let dir = self.file.dir().clone();
        match crate::private_fs::create_dir_all(&dir).and_then(|_| {
            let probe = dir.join(".leadrelay-write-test");
            crate::private_fs::write(&probe, b"ok")?;
            std::fs::remove_file(probe)
        }) {
            Ok(()) => CheckReport::ok(format!("{} is writable", dir.display())),
            Err(e) => CheckReport::failed(format!("{} is not writable: {e}", dir.display())),
        }
    }
}

/// The attempt log's excerpt for an append of `total` records: `"3 row(s)
/// written"`, how many were already written (a batch sent again after a
/// crash) and how many left out because their person was erased meanwhile.
pub(super) fn written_text(total: usize, a: &Appended, what: &str) -> String {
    let written = total.saturating_sub(a.left_out + a.already);
    let mut text = format!("{written} {what}(s) written");
    if a.already > 0 {
        text.push_str(&format!(
            "; {} already written before (sent again after a crash), not repeated",
            a.already
        ));
    }
    if a.left_out > 0 {
        text.push_str(&format!(
            "; {} left out: their person was erased while they were in flight",
            a.left_out
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoting() {
        assert_eq!(field("plain", true), "plain");
        assert_eq!(field("a,b", true), "\"a,b\"");
        assert_eq!(field("say \"hi\"", true), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines", true), "\"two\nlines\"");
        assert_eq!(field(" padded", true), "\" padded\"");
        assert_eq!(
            field("=HYPERLINK(\"x\")", true),
            "\"'=HYPERLINK(\"\"x\"\")\""
        );
        assert_eq!(field("@SUM(A1)", true), "\"'@SUM(A1)\"");
        assert_eq!(field("=1+1", false), "=1+1");
        assert_eq!(
            line(&[json!("a"), json!(2), json!(""), json!(true)], true),
            "a,2,,yes\r\n"
        );
    }

    #[test]
    fn every_cell_a_spreadsheet_would_evaluate_is_escaped() {
        // OWASP's examples, which start with a sign and a digit.
        assert_eq!(
            field("-2+3+cmd|' /C calc'!A0", true),
            "\"'-2+3+cmd|' /C calc'!A0\""
        );
        assert_eq!(
            field("+1+HYPERLINK(\"http://evil\",\"x\")", true),
            "\"'+1+HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\""
        );
        assert_eq!(field("+14155550123", true), "\"'+14155550123\"");
        assert_eq!(field("-5", true), "\"'-5\"");
        assert_eq!(field("\t=1", true), "\"'\t=1\"");
        assert_eq!(field("\r=1", true), "\"'\r=1\"");
        assert_eq!(field("a-1", true), "a-1");
        // A number is never a formula: written as it is.
        assert_eq!(
            line(&[json!(-5), json!("-5"), json!(1.5)], true),
            "-5,\"'-5\",1.5\r\n"
        );
    }
}
