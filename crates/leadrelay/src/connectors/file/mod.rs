//! `file`: the local backup. Appends one JSON line per delivery to
//! `{path}/{prefix}-{YYYY-MM-DD}.jsonl`, rotating by day and by size, and
//! fsyncs each batch before reporting it delivered. A delivery sent again
//! after a crash is not written twice (see [`rotate`]).
//!
//! Settings:
//! - `path` (required): directory for the files (created if missing).
//! - `prefix` (default `"leads"`).
//! - `rotate_bytes` (default `"100MiB"`): start a new file beyond this size.
//! - `fsync` (default `true`): flush to disk before acknowledging.

pub mod erase;
pub mod rotate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    AttemptReport, BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob,
    ErrorClass, JobResult, Outcome, payload,
};
use crate::config::{ByteSize, Problem, parse_settings};
use rotate::{Record, RotatingFile};

#[derive(Debug, Deserialize)]
struct Settings {
    path: PathBuf,
    #[serde(default = "default_prefix")]
    prefix: String,
    #[serde(default = "default_rotate")]
    rotate_bytes: ByteSize,
    #[serde(default = "default_true")]
    fsync: bool,
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
        name: "file",
        summary: "JSON Lines backup on local disk, rotated by day and size, fsynced per batch",
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

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let s: Settings = parse_settings(ctx.settings)?;
    if s.prefix.is_empty() || s.prefix.contains(['/', '\\']) {
        return Err(vec![Problem::error(
            "prefix",
            "must be a plain file-name prefix",
        )]);
    }
    if s.rotate_bytes.bytes() < 1024 {
        return Err(vec![Problem::error(
            "rotate_bytes",
            "must be at least 1KiB",
        )]);
    }
    Ok(Arc::new(FileConnector {
        inner: Arc::new(RotatingFile::new(
            s.path,
            s.prefix,
            "jsonl",
            s.rotate_bytes.bytes(),
            s.fsync,
            None,
        )),
    }))
}

struct FileConnector {
    inner: Arc<RotatingFile>,
}

#[async_trait]
impl Connector for FileConnector {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        let started = Utc::now();
        let clock = Instant::now();
        let mut records = Vec::with_capacity(jobs.len());
        let mut sha = Sha256::new();
        let mut bytes = 0u64;
        for job in jobs {
            // Serializing a Value cannot fail; fall back to an empty object regardless.
            let mut line =
                serde_json::to_vec(&payload::envelope(job)).unwrap_or_else(|_| b"{}".to_vec());
            line.push(b'\n');
            sha.update(&line);
            bytes += line.len() as u64;
            records.push(Record {
                delivery_id: job.delivery.id.to_string(),
                event_id: job.event.id.to_string(),
                bytes: line,
            });
        }
        let sha = hex::encode(sha.finalize());
        // File I/O and fsync block: keep them off the async workers.
        let inner = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || inner.append_records(&records))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("writer task failed: {e}"))));
        let report = |excerpt: String, path: Option<String>| AttemptReport {
            started_at: Some(started),
            duration: clock.elapsed(),
            method: Some("APPEND".into()),
            url: path,
            request_bytes: Some(bytes),
            request_sha256: Some(sha.clone()),
            status: None,
            response_excerpt: Some(excerpt),
            exchange: None,
        };
        match result {
            Ok(a) => {
                let r = report(
                    super::csv::written_text(jobs.len(), &a, "line"),
                    Some(a.path.display().to_string()),
                );
                jobs.iter()
                    .map(|_| JobResult {
                        outcome: Outcome::delivered(),
                        report: r.clone(),
                    })
                    .collect()
            }
            Err(e) => {
                let msg = format!("writing the backup failed: {e}");
                let r = report(msg.clone(), Some(self.inner.dir().display().to_string()));
                jobs.iter()
                    .map(|_| JobResult {
                        outcome: Outcome::retry(ErrorClass::Io, msg.clone()),
                        report: r.clone(),
                    })
                    .collect()
            }
        }
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<serde_json::Value, String>> {
        Some(Ok(payload::envelope(job)))
    }

    /// A backup line never names records in other systems: no remote-id
    /// lookup per batch.
    fn lookup_keys(&self, _job: &DeliveryJob) -> Vec<String> {
        Vec::new()
    }

    async fn check(&self) -> CheckReport {
        let dir = self.inner.dir().clone();
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
