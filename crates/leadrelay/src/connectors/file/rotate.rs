//! Append-only files rotated by day and by size, shared by the local
//! backups (`file` writes JSON Lines, `csv` writes CSV):
//! `{dir}/{prefix}-{YYYY-MM-DD}.{ext}`, then `….1.{ext}`, `….2.{ext}` once a
//! file would pass `rotate_bytes`. A new file may start with a header (the
//! CSV header row). Each append is one write, fsynced when asked.
//!
//! A privacy erase rewrites these files without the person's lines (write a
//! copy, rename it over the original), possibly from another process (the
//! CLI). Appends and rewrites of one series hold an exclusive `flock` on its
//! lock file (`{dir}/.{prefix}.{ext}.lock`), and an append first checks that
//! its open file is still the one at its path, reopening it otherwise, so no
//! line is ever written into a file that was just replaced.
//!
//! Appends are idempotent by delivery id. A delivery whose batch was written
//! and fsynced but whose outcome never reached the store (kill -9 in
//! between) is sent again once its lease expires; it must not become a
//! second line. Before the data, each append writes (and fsyncs) an intent
//! line per record to the series' journal (`{dir}/.{prefix}.{ext}.appended`):
//! the delivery id, the file, the offset, the length and a hash of the
//! bytes. A record whose delivery id the journal names, and whose bytes are
//! at that place, is already written and is skipped; an intent whose data
//! never made it to disk (a kill between the two fsyncs) does not match and
//! the record is written. The journal keeps the latest
//! [`JOURNAL_KEEP`]..2×[`JOURNAL_KEEP`] entries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{NaiveDate, Utc};
use sha2::{Digest, Sha256};

/// How many appended records the journal remembers at least: far more than
/// a destination has in flight, and than are appended between a crash and
/// the re-claim of its deliveries after the restart (expired leases are due
/// first).
pub const JOURNAL_KEEP: usize = 50_000;

/// One record to append: the delivery it carries, its event (for erase
/// tombstones) and its bytes.
#[derive(Debug, Clone)]
pub struct Record {
    pub delivery_id: String,
    pub event_id: String,
    pub bytes: Vec<u8>,
}

/// What an append did.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The file written (the directory when nothing was).
    pub path: PathBuf,
    /// Records left out: their person was erased while they were in flight.
    pub left_out: usize,
    /// Records already in the series (a re-sent delivery): not written again.
    pub already: usize,
}

struct OpenFile {
    day: NaiveDate,
    index: u32,
    path: PathBuf,
    file: File,
    size: u64,
}

/// One rotating file series.
pub struct RotatingFile {
    dir: PathBuf,
    prefix: String,
    extension: &'static str,
    rotate_bytes: u64,
    fsync: bool,
    /// Written first into every new (empty) file.
    header: Option<Vec<u8>>,
    state: Mutex<Option<OpenFile>>,
    /// The erased event ids last read from the tombstone file, with the
    /// file's stamp then (see `erase::read_tombstones`).
    tombstones: Mutex<Option<Tombstones>>,
    /// The append journal, loaded at the first append (used under the
    /// series lock).
    journal: Mutex<Option<Journal>>,
}

/// Erased event ids as read at one stamp of the tombstone file.
type Tombstones = (Option<super::erase::Stamp>, Arc<HashSet<String>>);

impl RotatingFile {
    pub fn new(
        dir: PathBuf,
        prefix: String,
        extension: &'static str,
        rotate_bytes: u64,
        fsync: bool,
        header: Option<Vec<u8>>,
    ) -> Self {
        Self {
            dir,
            prefix,
            extension,
            rotate_bytes,
            fsync,
            header,
            state: Mutex::new(None),
            tombstones: Mutex::new(None),
            journal: Mutex::new(None),
        }
    }

    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// Whether the open file is still the one at its path (not replaced by
    /// an erase's rewrite).
    fn still_current(f: &OpenFile) -> bool {
        match (std::fs::metadata(&f.path), f.file.metadata()) {
            (Ok(at_path), Ok(open)) => at_path.ino() == open.ino() && at_path.dev() == open.dev(),
            _ => false,
        }
    }

    fn file_path(&self, day: NaiveDate, index: u32) -> PathBuf {
        let day = day.format("%Y-%m-%d");
        let name = if index == 0 {
            format!("{}-{day}.{}", self.prefix, self.extension)
        } else {
            format!("{}-{day}.{index}.{}", self.prefix, self.extension)
        };
        self.dir.join(name)
    }

    /// Appends `bytes` as one record of no delivery or event (tests).
    #[cfg(test)]
    pub fn append(&self, bytes: &[u8]) -> std::io::Result<PathBuf> {
        self.append_records(&[Record {
            delivery_id: String::new(),
            event_id: String::new(),
            bytes: bytes.to_vec(),
        }])
        .map(|a| a.path)
    }

    /// Appends the records as one write, leaving out those of events a
    /// privacy erase removed from this series (a delivery that was in flight
    /// during the erase) and those of deliveries already written (a batch
    /// sent again after a crash).
    pub fn append_records(&self, records: &[Record]) -> std::io::Result<Appended> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        crate::private_fs::create_dir_all(&self.dir)?;
        let _lock = SeriesLock::acquire(&self.dir, &self.prefix, self.extension)?;
        let erased = self.erased_ids()?;
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let journal = match journal.as_mut() {
            Some(j) => j,
            None => journal.insert(Journal::load(
                self.dir
                    .join(format!(".{}.{}.appended", self.prefix, self.extension)),
            )?),
        };
        let mut out = Appended {
            path: self.dir.clone(),
            left_out: 0,
            already: 0,
        };
        let mut fresh: Vec<&Record> = Vec::with_capacity(records.len());
        for r in records {
            if erased.contains(&r.event_id) {
                out.left_out += 1;
            } else if journal.get(&r.delivery_id).is_some_and(|w| self.holds(w)) {
                out.already += 1;
            } else {
                fresh.push(r);
            }
        }
        if fresh.is_empty() {
            return Ok(out);
        }
        let mut bytes = Vec::with_capacity(fresh.iter().map(|r| r.bytes.len()).sum());
        for r in &fresh {
            bytes.extend_from_slice(&r.bytes);
        }
        let f = self.open_for(&mut guard, bytes.len() as u64)?;
        let header = match &self.header {
            Some(h) if f.size == 0 => h.as_slice(),
            _ => &[],
        };
        // The intent first, fsynced: data without it could be written twice.
        let mut offset = f.size + header.len() as u64;
        let mut intents = Vec::with_capacity(fresh.len());
        for r in &fresh {
            if !r.delivery_id.is_empty() {
                intents.push((
                    r.delivery_id.clone(),
                    Written {
                        day: f.day,
                        index: f.index,
                        offset,
                        len: r.bytes.len() as u64,
                        sha: short_sha(&r.bytes),
                    },
                ));
            }
            offset += r.bytes.len() as u64;
        }
        journal.record(intents, self.fsync)?;
        let all = [header, &bytes].concat();
        f.file.write_all(&all)?;
        if self.fsync {
            f.file.sync_data()?;
        }
        f.size += all.len() as u64;
        out.path = f.path.clone();
        Ok(out)
    }

    /// Whether the series holds the bytes a journal entry describes.
    fn holds(&self, w: &Written) -> bool {
        let check = || -> std::io::Result<bool> {
            let mut file = File::open(self.file_path(w.day, w.index))?;
            if file.metadata()?.len() < w.offset + w.len {
                return Ok(false);
            }
            file.seek(SeekFrom::Start(w.offset))?;
            let mut buf = vec![0; w.len as usize];
            file.read_exact(&mut buf)?;
            Ok(short_sha(&buf) == w.sha)
        };
        check().unwrap_or(false)
    }

    /// The series' erased event ids, re-read only when the tombstone file
    /// changed (call under the series lock).
    fn erased_ids(&self) -> std::io::Result<Arc<HashSet<String>>> {
        let stamp = super::erase::tombstone_stamp(&self.dir, &self.prefix, self.extension);
        let mut cache = self.tombstones.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, ids)) = cache.as_ref()
            && *seen == stamp
        {
            return Ok(ids.clone());
        }
        let ids = Arc::new(match stamp {
            None => HashSet::new(),
            Some(_) => super::erase::read_tombstones(
                &self.dir,
                &self.prefix,
                self.extension,
                Utc::now().timestamp(),
            )?,
        });
        *cache = Some((stamp, ids.clone()));
        Ok(ids)
    }

    /// The file the next `len` bytes go to (after the header, in a new
    /// file), rotating first if needed.
    fn open_for<'g>(
        &self,
        guard: &'g mut Option<OpenFile>,
        len: u64,
    ) -> std::io::Result<&'g mut OpenFile> {
        if guard.as_ref().is_some_and(|f| !Self::still_current(f)) {
            *guard = None;
        }
        let today = Utc::now().date_naive();
        let needs_new = match guard.as_ref() {
            None => true,
            Some(f) => f.day != today || f.size + len > self.rotate_bytes,
        };
        if needs_new {
            crate::private_fs::create_dir_all(&self.dir)?;
            let mut index = match guard.as_ref() {
                Some(f) if f.day == today => f.index + 1,
                _ => 0,
            };
            // Skip files that are already full (e.g. after a restart).
            loop {
                let p = self.file_path(today, index);
                let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                let room = size == 0 || size + len <= self.rotate_bytes;
                if room {
                    let file = crate::private_fs::open_options()
                        .create(true)
                        .append(true)
                        .open(&p)?;
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
        guard
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no open file"))
    }
}

/// The first 16 hex digits of the SHA-256 of a record.
fn short_sha(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// Where a delivery's record was (to be) written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    day: NaiveDate,
    index: u32,
    offset: u64,
    len: u64,
    sha: String,
}

/// The series' append journal: one line per record,
/// `{delivery id} {YYYY-MM-DD} {file index} {offset} {length} {sha}`.
struct Journal {
    path: PathBuf,
    file: File,
    entries: HashMap<String, Written>,
    /// Delivery ids, oldest first (compaction keeps the newest).
    order: VecDeque<String>,
}

impl Journal {
    /// Reads the journal (a torn last line from a crash is ignored).
    fn load(path: PathBuf) -> std::io::Result<Self> {
        let text = match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut entries = HashMap::new();
        let mut order = VecDeque::new();
        for line in text.lines() {
            if let Some((id, w)) = Self::parse(line)
                && entries.insert(id.clone(), w).is_none()
            {
                order.push_back(id);
            }
        }
        let mut file = crate::private_fs::open_options()
            .create(true)
            .append(true)
            .open(&path)?;
        if !text.is_empty() && !text.ends_with('\n') {
            // End the torn line, so the next entry starts on its own line.
            file.write_all(b"\n")?;
        }
        Ok(Self {
            path,
            file,
            entries,
            order,
        })
    }

    fn parse(line: &str) -> Option<(String, Written)> {
        let mut parts = line.split(' ');
        let id = parts.next().filter(|s| !s.is_empty())?.to_string();
        let day = NaiveDate::parse_from_str(parts.next()?, "%Y-%m-%d").ok()?;
        let index = parts.next()?.parse().ok()?;
        let offset = parts.next()?.parse().ok()?;
        let len = parts.next()?.parse().ok()?;
        let sha = parts.next().filter(|s| s.len() == 16)?.to_string();
        parts.next().is_none().then_some((
            id,
            Written {
                day,
                index,
                offset,
                len,
                sha,
            },
        ))
    }

    fn line(id: &str, w: &Written) -> String {
        format!(
            "{id} {} {} {} {} {}\n",
            w.day.format("%Y-%m-%d"),
            w.index,
            w.offset,
            w.len,
            w.sha
        )
    }

    fn get(&self, delivery_id: &str) -> Option<&Written> {
        self.entries.get(delivery_id)
    }

    /// Writes the entries as one append (fsynced when asked), then drops the
    /// oldest half once it holds 2×[`JOURNAL_KEEP`].
    fn record(&mut self, new: Vec<(String, Written)>, fsync: bool) -> std::io::Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let text: String = new.iter().map(|(id, w)| Self::line(id, w)).collect();
        self.file.write_all(text.as_bytes())?;
        if fsync {
            self.file.sync_data()?;
        }
        for (id, w) in new {
            if self.entries.insert(id.clone(), w).is_none() {
                self.order.push_back(id);
            }
        }
        if self.order.len() >= 2 * JOURNAL_KEEP {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the journal with its newest [`JOURNAL_KEEP`] entries (a
    /// copy renamed over the original).
    fn compact(&mut self) -> std::io::Result<()> {
        while self.order.len() > JOURNAL_KEEP {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
        let text: String = self
            .order
            .iter()
            .filter_map(|id| self.entries.get(id).map(|w| Self::line(id, w)))
            .collect();
        let tmp = self.path.with_extension("appended.tmp");
        let mut f = crate::private_fs::open_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }
}

/// An exclusive advisory lock (`flock` on Unix, through `File::lock`) on a
/// file series, released when dropped (closing the descriptor releases it).
pub struct SeriesLock {
    _file: File,
}

impl SeriesLock {
    /// Blocks until the series `{dir}/{prefix}-*.{ext}` is free.
    pub fn acquire(dir: &Path, prefix: &str, ext: &str) -> std::io::Result<Self> {
        let file = crate::private_fs::open_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!(".{prefix}.{ext}.lock")))?;
        file.lock()?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(delivery: &str, text: &str) -> Record {
        Record {
            delivery_id: delivery.into(),
            event_id: format!("ev-{delivery}"),
            bytes: format!("{text}\n").into_bytes(),
        }
    }

    fn series(dir: &Path, header: Option<&[u8]>) -> RotatingFile {
        RotatingFile::new(
            dir.to_path_buf(),
            "leads".into(),
            "csv",
            1 << 20,
            true,
            header.map(<[u8]>::to_vec),
        )
    }

    #[test]
    fn a_batch_sent_again_is_not_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let r = series(dir.path(), Some(b"h\n"));
        let a = r
            .append_records(&[rec("d1", "one"), rec("d2", "two")])
            .unwrap();
        assert_eq!((a.already, a.left_out), (0, 0));
        // The batch again with a new delivery (its outcome was lost): only
        // the new one is written.
        let b = r
            .append_records(&[rec("d1", "one"), rec("d2", "two"), rec("d3", "three")])
            .unwrap();
        assert_eq!(b.already, 2);
        assert_eq!(
            std::fs::read_to_string(&b.path).unwrap(),
            "h\none\ntwo\nthree\n"
        );
        // After a restart (kill -9 after the fsync, before the store heard
        // of it), the journal on disk still knows them.
        let again = series(dir.path(), Some(b"h\n"));
        let c = again
            .append_records(&[rec("d2", "two"), rec("d4", "four")])
            .unwrap();
        assert_eq!(c.already, 1);
        assert_eq!(
            std::fs::read_to_string(&c.path).unwrap(),
            "h\none\ntwo\nthree\nfour\n"
        );
    }

    #[test]
    fn an_intent_whose_data_never_reached_the_disk_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let r = series(dir.path(), None);
        let a = r.append_records(&[rec("d1", "one")]).unwrap();
        // A kill between the journal's fsync and the data's: the journal
        // names d1, the file does not hold it; a torn journal line too.
        std::fs::write(&a.path, b"").unwrap();
        let journal = dir.path().join(".leads.csv.appended");
        let mut j = OpenOptions::new().append(true).open(&journal).unwrap();
        j.write_all(b"d9 2026-01-01 0 0").unwrap();
        drop(j);
        let restarted = series(dir.path(), None);
        // Another delivery takes d1's place in the file first.
        restarted.append_records(&[rec("d2", "two")]).unwrap();
        let b = restarted.append_records(&[rec("d1", "one")]).unwrap();
        assert_eq!(b.already, 0, "d1's bytes are not where the journal says");
        assert_eq!(std::fs::read_to_string(&b.path).unwrap(), "two\none\n");
        let c = restarted.append_records(&[rec("d1", "one")]).unwrap();
        assert_eq!(c.already, 1);
        assert_eq!(std::fs::read_to_string(&b.path).unwrap(), "two\none\n");
    }

    #[test]
    fn the_journal_keeps_the_newest_entries() {
        let dir = tempfile::tempdir().unwrap();
        let r = RotatingFile::new(
            dir.path().to_path_buf(),
            "leads".into(),
            "jsonl",
            1 << 30,
            false,
            None,
        );
        let batch = 5_000;
        for b in 0..(2 * JOURNAL_KEEP / batch) {
            let records: Vec<Record> = (0..batch)
                .map(|i| rec(&format!("d{}", b * batch + i), "x"))
                .collect();
            r.append_records(&records).unwrap();
        }
        let journal = std::fs::read_to_string(dir.path().join(".leads.jsonl.appended")).unwrap();
        assert_eq!(journal.lines().count(), JOURNAL_KEEP, "compacted");
        let newest = format!("d{}", 2 * JOURNAL_KEEP - 1);
        assert_eq!(r.append_records(&[rec(&newest, "x")]).unwrap().already, 1);
        let restarted = RotatingFile::new(
            dir.path().to_path_buf(),
            "leads".into(),
            "jsonl",
            1 << 30,
            false,
            None,
        );
        assert_eq!(
            restarted
                .append_records(&[rec(&newest, "x")])
                .unwrap()
                .already,
            1
        );
    }

    #[test]
    fn rotates_by_size_with_a_header_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = RotatingFile::new(
            dir.path().to_path_buf(),
            "leads".into(),
            "csv",
            40,
            false,
            Some(b"h1,h2\n".to_vec()),
        );
        let p1 = r.append(b"aaaaaaaaaa,bbbbbbbbbb\n").unwrap();
        let p2 = r.append(b"cccccccccc,dddddddddd\n").unwrap();
        assert_ne!(p1, p2, "the second row does not fit: a new file");
        let day = Utc::now().date_naive().format("%Y-%m-%d").to_string();
        assert!(p1.ends_with(format!("leads-{day}.csv")));
        assert!(p2.ends_with(format!("leads-{day}.1.csv")));
        assert_eq!(
            std::fs::read_to_string(&p2).unwrap(),
            "h1,h2\ncccccccccc,dddddddddd\n"
        );
        // A restart continues in the last file with room.
        let again = RotatingFile::new(
            dir.path().to_path_buf(),
            "leads".into(),
            "csv",
            40,
            false,
            Some(b"h1,h2\n".to_vec()),
        );
        let p3 = again.append(b"e,f\n").unwrap();
        assert_eq!(p3, p1);
        assert_eq!(
            std::fs::read_to_string(&p1).unwrap(),
            "h1,h2\naaaaaaaaaa,bbbbbbbbbb\ne,f\n"
        );
    }
}
