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

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{NaiveDate, Utc};

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

    /// Appends `bytes` as one record of no event (tests).
    #[cfg(test)]
    pub fn append(&self, bytes: &[u8]) -> std::io::Result<PathBuf> {
        self.append_records(&[(String::new(), bytes.to_vec())])
            .map(|(path, _)| path)
    }

    /// Appends the records `(event id, bytes)` as one write, leaving out
    /// those of events a privacy erase removed from this series (a delivery
    /// that was in flight during the erase). Returns the path written (the
    /// directory when nothing was) and how many records were left out.
    pub fn append_records(
        &self,
        records: &[(String, Vec<u8>)],
    ) -> std::io::Result<(PathBuf, usize)> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        crate::private_fs::create_dir_all(&self.dir)?;
        let _lock = SeriesLock::acquire(&self.dir, &self.prefix, self.extension)?;
        let erased = self.erased_ids()?;
        let mut bytes = Vec::with_capacity(records.iter().map(|(_, r)| r.len()).sum());
        let mut left_out = 0;
        for (id, record) in records {
            if erased.contains(id) {
                left_out += 1;
            } else {
                bytes.extend_from_slice(record);
            }
        }
        if bytes.is_empty() {
            return Ok((self.dir.clone(), left_out));
        }
        Ok((self.append_locked(&mut guard, &bytes)?, left_out))
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

    /// Appends `bytes` as one write (after the header, in a new file),
    /// rotating first if needed; fsyncs when configured. Returns the path.
    fn append_locked(
        &self,
        guard: &mut Option<OpenFile>,
        bytes: &[u8],
    ) -> std::io::Result<PathBuf> {
        if guard.as_ref().is_some_and(|f| !Self::still_current(f)) {
            *guard = None;
        }
        let today = Utc::now().date_naive();
        let header_len = self.header.as_ref().map_or(0, |h| h.len() as u64);
        let needs_new = match guard.as_ref() {
            None => true,
            Some(f) => f.day != today || f.size + bytes.len() as u64 > self.rotate_bytes,
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
                let room = size == 0 || size + bytes.len() as u64 <= self.rotate_bytes;
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
        let f = guard
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no open file"))?;
        if f.size == 0
            && let Some(h) = &self.header
        {
            let mut all = Vec::with_capacity(h.len() + bytes.len());
            all.extend_from_slice(h);
            all.extend_from_slice(bytes);
            f.file.write_all(&all)?;
            f.size += header_len;
        } else {
            f.file.write_all(bytes)?;
        }
        if self.fsync {
            f.file.sync_data()?;
        }
        f.size += bytes.len() as u64;
        Ok(f.path.clone())
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
