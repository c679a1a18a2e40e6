//! Erasure in the local backups (`file` JSON Lines and `csv`): a privacy
//! erase rewrites every file of the series — rotated ones included —
//! without the person's lines.
//!
//! A line is the person's when any of its values (a JSON string anywhere in
//! the line, or a CSV cell) is their email address (compared without regard
//! to case) or the id of one of their events (the erase report's
//! `event_ids`), which also catches lines that carry a phone number but no
//! address, and dead-letter copies naming the original event.
//!
//! Each file is rewritten atomically: the kept lines go to a temporary file
//! beside it, which is fsynced and renamed over the original (then the
//! directory is fsynced), under the series lock appenders take, so a crash
//! leaves either the old file or the new one, and no append is lost.
//!
//! A delivery already in flight when the erase ran may append the person's
//! line after the rewrite. So the erase also records the erased event ids
//! (ids only, no personal data) in the series' tombstone file
//! `{dir}/.{prefix}.{ext}.erased`, kept for [`TOMBSTONE_DAYS`] days, and
//! every append, under the same lock, leaves out the lines of those events.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::rotate::SeriesLock;

/// Whose lines to remove.
#[derive(Debug, Clone)]
pub struct Subject {
    /// Lower-case email.
    pub email: String,
    /// Ids of the person's events.
    pub event_ids: BTreeSet<String>,
}

impl Subject {
    fn names(&self, text: &str) -> bool {
        let t = text.trim();
        // A CSV cell may carry the formula guard.
        let t = t.strip_prefix('\'').unwrap_or(t);
        t.eq_ignore_ascii_case(&self.email) || self.event_ids.contains(t)
    }

    fn in_json(&self, v: &Value) -> bool {
        match v {
            Value::String(s) => self.names(s),
            Value::Array(items) => items.iter().any(|i| self.in_json(i)),
            Value::Object(m) => m.values().any(|i| self.in_json(i)),
            _ => false,
        }
    }
}

/// How a series' files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }
}

/// Lines removed from one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileErasure {
    pub path: PathBuf,
    pub lines_removed: u64,
}

/// The files of the series `{dir}/{prefix}-*.{ext}`, oldest name first.
fn series_files(dir: &Path, prefix: &str, ext: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    let start = format!("{prefix}-");
    let end = format!(".{ext}");
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&start) && name.ends_with(&end) && entry.file_type()?.is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Splits JSON Lines into lines (each with its `\n`).
fn jsonl_records(bytes: &[u8]) -> Vec<&[u8]> {
    bytes.split_inclusive(|b| *b == b'\n').collect()
}

/// Splits CSV into records (each with its line end); a quoted field may
/// hold line breaks.
fn csv_records(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => {
                out.push(&bytes[start..=i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < bytes.len() {
        out.push(&bytes[start..]);
    }
    out
}

/// The cells of one CSV record (RFC 4180 quoting).
fn csv_cells(record: &str) -> Vec<String> {
    let record = record.trim_end_matches(['\r', '\n']);
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = record.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(std::mem::take(&mut cell)),
            (c, _) => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

fn is_subjects(format: Format, record: &[u8], subject: &Subject) -> bool {
    let text = String::from_utf8_lossy(record);
    match format {
        Format::Jsonl => serde_json::from_str::<Value>(text.trim())
            .map(|v| subject.in_json(&v))
            .unwrap_or(false),
        Format::Csv => csv_cells(&text).iter().any(|c| subject.names(c)),
    }
}

/// Rewrites one file without the subject's records; the number removed.
fn rewrite(path: &Path, format: Format, subject: &Subject) -> std::io::Result<u64> {
    let bytes = std::fs::read(path)?;
    let records = match format {
        Format::Jsonl => jsonl_records(&bytes),
        Format::Csv => csv_records(&bytes),
    };
    let mut kept = Vec::with_capacity(bytes.len());
    let mut removed = 0u64;
    for (i, r) in records.iter().enumerate() {
        // The CSV header row stays.
        let header = format == Format::Csv && i == 0;
        if !header && is_subjects(format, r, subject) {
            removed += 1;
        } else {
            kept.extend_from_slice(r);
        }
    }
    if removed == 0 {
        return Ok(0);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.erase-tmp"));
    let written = (|| {
        let mut f = crate::private_fs::open_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(&kept)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|_| removed)
}

/// How long an erased event's id keeps its lines out of the series: far
/// longer than any delivery stays in flight.
pub const TOMBSTONE_DAYS: i64 = 7;

fn tombstone_path(dir: &Path, prefix: &str, ext: &str) -> PathBuf {
    dir.join(format!(".{prefix}.{ext}.erased"))
}

/// `(event id, erased at, unix seconds)` of the series' tombstone file.
fn read_tombstone_entries(path: &Path) -> std::io::Result<Vec<(String, i64)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let (id, at) = l.split_once(' ')?;
            Some((id.to_string(), at.trim().parse().ok()?))
        })
        .collect())
}

/// The tombstone file grows by appends; past this size an erase rewrites
/// it without the expired entries.
const TOMBSTONE_COMPACT_BYTES: u64 = 1024 * 1024;

/// The event ids whose lines the series must not take, erased within
/// [`TOMBSTONE_DAYS`] (call under the series lock).
pub fn read_tombstones(
    dir: &Path,
    prefix: &str,
    ext: &str,
    now: i64,
) -> std::io::Result<HashSet<String>> {
    let oldest = now - TOMBSTONE_DAYS * 86_400;
    Ok(read_tombstone_entries(&tombstone_path(dir, prefix, ext))?
        .into_iter()
        .filter(|(_, at)| *at >= oldest)
        .map(|(id, _)| id)
        .collect())
}

/// A file's inode, size and modification time (nanoseconds).
pub type Stamp = (u64, u64, i64);

/// The tombstone file's identity and size, to re-read it only when changed.
pub fn tombstone_stamp(dir: &Path, prefix: &str, ext: &str) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(tombstone_path(dir, prefix, ext)).ok()?;
    Some((m.ino(), m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000))
}

/// Adds `ids` to the series' tombstones (call under the series lock): one
/// append, fsynced; past [`TOMBSTONE_COMPACT_BYTES`] the file is rewritten
/// without the expired entries.
fn add_tombstones(
    dir: &Path,
    prefix: &str,
    ext: &str,
    ids: &BTreeSet<String>,
    now: i64,
) -> std::io::Result<()> {
    let path = tombstone_path(dir, prefix, ext);
    let mut text = String::with_capacity(ids.len() * 48);
    for id in ids {
        text.push_str(&format!("{id} {now}\n"));
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if size < TOMBSTONE_COMPACT_BYTES {
        let mut f = crate::private_fs::open_options()
            .create(true)
            .append(true)
            .open(&path)?;
        f.write_all(text.as_bytes())?;
        return f.sync_data();
    }
    let oldest = now - TOMBSTONE_DAYS * 86_400;
    let mut kept = String::new();
    for (id, at) in read_tombstone_entries(&path)? {
        if at >= oldest {
            kept.push_str(&format!("{id} {at}\n"));
        }
    }
    kept.push_str(&text);
    let tmp = dir.join(format!(".{prefix}.{ext}.erased-tmp"));
    let mut f = crate::private_fs::open_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(kept.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// Removes the subject's lines from every file of the series
/// `{dir}/{prefix}-*.{ext}`, and keeps their events' future lines out; the
/// files changed and how many lines each lost.
pub fn erase_series(
    dir: &Path,
    prefix: &str,
    format: Format,
    subject: &Subject,
) -> std::io::Result<Vec<FileErasure>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let _lock = SeriesLock::acquire(dir, prefix, format.extension())?;
    if !subject.event_ids.is_empty() {
        add_tombstones(
            dir,
            prefix,
            format.extension(),
            &subject.event_ids,
            chrono::Utc::now().timestamp(),
        )?;
    }
    let files = series_files(dir, prefix, format.extension())?;
    let mut out = Vec::new();
    for path in files {
        let lines_removed = rewrite(&path, format, subject)?;
        if lines_removed > 0 {
            out.push(FileErasure {
                path,
                lines_removed,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::file::rotate::RotatingFile;

    fn subject() -> Subject {
        Subject {
            email: "jane@acme.io".into(),
            event_ids: ["0190-ev-phone-only".to_string()].into_iter().collect(),
        }
    }

    #[test]
    fn a_line_in_flight_during_the_erase_is_left_out_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let file = RotatingFile::new(
            d.to_path_buf(),
            "leads".into(),
            "jsonl",
            1 << 20,
            false,
            None,
        );
        let rec = |id: &str, email: &str| super::super::rotate::Record {
            delivery_id: format!("d-{id}"),
            event_id: id.to_string(),
            bytes: format!(
                "{{\"data\":{{\"event_id\":\"{id}\",\"contact\":{{\"email\":\"{email}\"}}}}}}\n"
            )
            .into_bytes(),
        };
        file.append_records(&[rec("ev-a", "jane@acme.io"), rec("ev-b", "bob@x.io")])
            .unwrap();
        let subject = Subject {
            email: "jane@acme.io".into(),
            event_ids: ["ev-a".to_string(), "ev-a2".to_string()]
                .into_iter()
                .collect(),
        };
        let done = erase_series(d, "leads", Format::Jsonl, &subject).unwrap();
        assert_eq!(done[0].lines_removed, 1);
        // A delivery of the erased event that was in flight appends now.
        let a = file
            .append_records(&[rec("ev-a2", "jane@acme.io"), rec("ev-c", "carl@x.io")])
            .unwrap();
        assert_eq!(a.left_out, 1);
        let text = std::fs::read_to_string(a.path).unwrap();
        assert!(!text.contains("jane"), "{text}");
        assert!(
            text.contains("bob@x.io") && text.contains("carl@x.io"),
            "{text}"
        );
        // Nothing but all-erased records: nothing written.
        let a = file.append_records(&[rec("ev-a", "jane@acme.io")]).unwrap();
        assert_eq!(a.left_out, 1);
        // The tombstones hold event ids only, and expire.
        let stones = std::fs::read_to_string(d.join(".leads.jsonl.erased")).unwrap();
        assert!(
            stones.contains("ev-a2") && !stones.contains('@'),
            "{stones}"
        );
        let now = chrono::Utc::now().timestamp();
        assert_eq!(read_tombstones(d, "leads", "jsonl", now).unwrap().len(), 2);
        let later = now + (TOMBSTONE_DAYS + 1) * 86_400;
        assert!(
            read_tombstones(d, "leads", "jsonl", later)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn jsonl_lines_of_the_person_go_in_every_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("leads-2026-01-01.jsonl"),
            "{\"data\":{\"contact\":{\"email\":\"JANE@acme.io\"}}}\n{\"data\":{\"contact\":{\"email\":\"bob@x.io\"}}}\n",
        )
        .unwrap();
        std::fs::write(
            d.join("leads-2026-01-01.1.jsonl"),
            "{\"data\":{\"event_id\":\"0190-ev-phone-only\",\"contact\":{\"phone\":\"+1\"}}}\nnot json\n",
        )
        .unwrap();
        std::fs::write(
            d.join("other-2026-01-01.jsonl"),
            "{\"e\":\"jane@acme.io\"}\n",
        )
        .unwrap();
        let done = erase_series(d, "leads", Format::Jsonl, &subject()).unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(
            std::fs::read_to_string(d.join("leads-2026-01-01.jsonl")).unwrap(),
            "{\"data\":{\"contact\":{\"email\":\"bob@x.io\"}}}\n"
        );
        assert_eq!(
            std::fs::read_to_string(d.join("leads-2026-01-01.1.jsonl")).unwrap(),
            "not json\n",
            "unreadable lines are kept"
        );
        assert!(
            std::fs::read_to_string(d.join("other-2026-01-01.jsonl"))
                .unwrap()
                .contains("jane"),
            "another series is not touched"
        );
        assert!(
            erase_series(d, "leads", Format::Jsonl, &subject())
                .unwrap()
                .is_empty()
        );
        let leftovers: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("erase-tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn csv_rows_with_quoted_line_breaks_by_email_or_event_id() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let text = "Email,Message\r\n\
                    jane@acme.io,\"two\r\nlines, with \"\"quotes\"\"\"\r\n\
                    bob@x.io,\"jane@acme.io is my colleague\"\r\n\
                    \"0190-ev-phone-only\",x\r\n";
        std::fs::write(d.join("leads-2026-01-01.csv"), text).unwrap();
        let done = erase_series(d, "leads", Format::Csv, &subject()).unwrap();
        assert_eq!(done[0].lines_removed, 2);
        let after = std::fs::read_to_string(d.join("leads-2026-01-01.csv")).unwrap();
        assert_eq!(
            after, "Email,Message\r\nbob@x.io,\"jane@acme.io is my colleague\"\r\n",
            "a mention inside someone else's text is not their record"
        );
        assert_eq!(
            csv_cells("a,\"b,\"\"c\"\"\",d\r\n"),
            vec!["a", "b,\"c\"", "d"]
        );
    }

    #[test]
    fn an_appender_continues_in_the_rewritten_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = RotatingFile::new(
            dir.path().to_path_buf(),
            "leads".into(),
            "jsonl",
            1 << 20,
            false,
            None,
        );
        let p = r.append(b"{\"email\":\"jane@acme.io\"}\n").unwrap();
        r.append(b"{\"email\":\"bob@x.io\"}\n").unwrap();
        erase_series(dir.path(), "leads", Format::Jsonl, &subject()).unwrap();
        let p2 = r.append(b"{\"email\":\"carl@x.io\"}\n").unwrap();
        assert_eq!(p, p2);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"email\":\"bob@x.io\"}\n{\"email\":\"carl@x.io\"}\n",
            "the append after the rewrite lands in the new file"
        );
    }
}
