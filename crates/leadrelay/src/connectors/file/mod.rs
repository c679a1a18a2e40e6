//! `file`: the local backup. Appends one JSON line per delivery to
//! `{path}/{prefix}-{YYYY-MM-DD}.jsonl`, rotating by day and by size, and
//! fsyncs each batch before reporting it delivered.
//!
//! Settings:
//! - `path` (required): directory for the files (created if missing).
//! - `prefix` (default `"leads"`).
//! - `rotate_bytes` (default `"100MiB"`): start a new file beyond this size.
//! - `fsync` (default `true`): flush to disk before acknowledging.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{NaiveDate, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    AttemptReport, BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob,
    ErrorClass, JobResult, Outcome, payload,
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
        inner: Arc::new(BackupFile {
            settings: s,
            state: Mutex::new(None),
        }),
    }))
}

struct OpenFile {
    day: NaiveDate,
    index: u32,
    path: PathBuf,
    file: File,
    size: u64,
}

struct FileConnector {
    inner: Arc<BackupFile>,
}

/// The current file, shared with the blocking writer task.
struct BackupFile {
    settings: Settings,
    state: Mutex<Option<OpenFile>>,
}

impl BackupFile {
    fn file_path(&self, day: NaiveDate, index: u32) -> PathBuf {
        let name = if index == 0 {
            format!("{}-{}.jsonl", self.settings.prefix, day.format("%Y-%m-%d"))
        } else {
            format!(
                "{}-{}.{index}.jsonl",
                self.settings.prefix,
                day.format("%Y-%m-%d")
            )
        };
        self.settings.path.join(name)
    }

    /// Appends `lines` as one write, rotating first if needed; fsyncs.
    fn append(&self, lines: &[u8]) -> std::io::Result<PathBuf> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let today = Utc::now().date_naive();
        let needs_new = match guard.as_ref() {
            None => true,
            Some(f) => {
                f.day != today || f.size + lines.len() as u64 > self.settings.rotate_bytes.bytes()
            }
        };
        if needs_new {
            std::fs::create_dir_all(&self.settings.path)?;
            let mut index = match guard.as_ref() {
                Some(f) if f.day == today => f.index + 1,
                _ => 0,
            };
            // Skip files that are already full (e.g. after a restart).
            loop {
                let p = self.file_path(today, index);
                let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                if size + lines.len() as u64 <= self.settings.rotate_bytes.bytes() || size == 0 {
                    let file = OpenOptions::new().create(true).append(true).open(&p)?;
                    *guard = Some(OpenFile {
                        day: today,
                        index,
                        path: p,
                        file,
                        size,
                    });
                    break;
                }
                index += 1;
            }
        }
        let f = guard
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no open file"))?;
        f.file.write_all(lines)?;
        if self.settings.fsync {
            f.file.sync_data()?;
        }
        f.size += lines.len() as u64;
        Ok(f.path.clone())
    }
}

#[async_trait]
impl Connector for FileConnector {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        let started = Utc::now();
        let clock = Instant::now();
        let mut buf = Vec::with_capacity(jobs.len() * 1024);
        for job in jobs {
            // Serializing a Value cannot fail; fall back to an empty object regardless.
            let line =
                serde_json::to_vec(&payload::envelope(job)).unwrap_or_else(|_| b"{}".to_vec());
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        let sha = hex::encode(Sha256::digest(&buf));
        let bytes = buf.len() as u64;
        // File I/O and fsync block: keep them off the async workers.
        let inner = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || inner.append(&buf))
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
        };
        match result {
            Ok(path) => {
                let r = report(
                    format!("{} line(s) written", jobs.len()),
                    Some(path.display().to_string()),
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
                let r = report(
                    msg.clone(),
                    Some(self.inner.settings.path.display().to_string()),
                );
                jobs.iter()
                    .map(|_| JobResult {
                        outcome: Outcome::retry(ErrorClass::Io, msg.clone()),
                        report: r.clone(),
                    })
                    .collect()
            }
        }
    }

    async fn check(&self) -> CheckReport {
        let dir = self.inner.settings.path.clone();
        match std::fs::create_dir_all(&dir).and_then(|_| {
            let probe = dir.join(".leadrelay-write-test");
            std::fs::write(&probe, b"ok")?;
            std::fs::remove_file(probe)
        }) {
            Ok(()) => CheckReport::ok(format!("{} is writable", dir.display())),
            Err(e) => CheckReport::failed(format!("{} is not writable: {e}", dir.display())),
        }
    }
}
