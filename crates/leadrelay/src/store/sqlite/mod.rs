//! The SQLite store: the embedded default.
//!
//! All writes go through one writer thread that owns the only write
//! connection and commits *groups* of write jobs in one transaction (group
//! commit): many concurrent form posts share one fsync, so durability does
//! not cost throughput. Each job runs inside its own savepoint, so one bad
//! job never takes the others down with it, and every caller hears back only
//! after the COMMIT that made its write durable. Reads use a small pool of
//! read-only connections (WAL lets them run beside the writer).

mod admin;
mod feedback;
mod fixable;
mod golden;
mod lead;
mod membership;
mod ops;
mod report;
mod rows;
mod schema;

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadrelay_model::{Contact, Event, new_id};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::common::{KeyCheck, merge_overrides, percentile, skip_unreadable, unreadable};
use super::*;
use crate::contacts;
use rows::*;

pub use schema::current_version;

type JobResult = Result<Box<dyn Any + Send>, StoreError>;

/// A write job. Jobs are re-runnable (`Fn`): a batch runs in one
/// transaction, and only if one of its jobs fails is the batch rolled back
/// and each job run again in a transaction of its own.
struct Job {
    run: Box<dyn Fn(&Connection) -> JobResult + Send>,
    reply: oneshot::Sender<JobResult>,
}

/// SQLite behind the [`Store`] trait.
pub struct SqliteStore {
    writer: RwLock<Option<mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<
        Option<(
            Arc<std::sync::atomic::AtomicBool>,
            std::thread::JoinHandle<()>,
        )>,
    >,
    readers: Arc<ReadPool>,
    /// Asks the checkpoint thread to empty the write-ahead log (after an
    /// erase, so the person's older page versions leave the disk too).
    truncate_wal: Arc<std::sync::atomic::AtomicBool>,
    hub: Arc<WakeHub>,
    contact_rules: Arc<contacts::MergeRules>,
    lead_hook: Option<Arc<crate::pipeline::LeadHook>>,
}

struct ReadPool {
    conns: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies migrations
    /// and starts the writer thread.
    pub async fn open(path: &str, options: &OpenOptions) -> StoreResult<Self> {
        let path = PathBuf::from(path);
        let opts = options.clone();
        let checkpoint_path = path.clone();
        let (conn, readers) = tokio::task::spawn_blocking(move || open_connections(&path, &opts))
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the database failed: {e}")))??;

        let (tx, rx) = mpsc::channel::<Job>(8192);
        let max = options.group_commit_max.max(1);
        let handle = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, max))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checkpoint_conn = Connection::open(&checkpoint_path).map_err(map_err)?;
        let stop_flag = stop.clone();
        let truncate_wal = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let truncate_flag = truncate_wal.clone();
        let checkpointer = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, stop_flag, truncate_flag))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}"))
            })?;
        let n = readers.len();
        Ok(Self {
            writer: RwLock::new(Some(tx)),
            writer_thread: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(Some((stop, checkpointer))),
            readers: Arc::new(ReadPool {
                conns: Mutex::new(readers),
                permits: Arc::new(Semaphore::new(n)),
            }),
            truncate_wal,
            hub: Arc::new(WakeHub::default()),
            contact_rules: options.contact_rules.clone(),
            lead_hook: options.lead_hook.clone(),
        })
    }

    /// Runs `f` inside the next group commit; resolves after COMMIT.
    async fn write<T: Send + 'static>(
        &self,
        f: impl Fn(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let sender = self
            .writer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
        let (reply, rx) = oneshot::channel();
        let job = Job {
            run: Box::new(move |c| f(c).map(|v| Box::new(v) as Box<dyn Any + Send>)),
            reply,
        };
        sender
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the storage writer has stopped".into()))?;
        let out = rx
            .await
            .map_err(|_| StoreError::Unavailable("the storage writer has stopped".into()))??;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Corrupt("writer returned an unexpected type".into()))
    }

    /// Runs `f` on a read connection in the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let permit = self
            .readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = pool
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .ok_or_else(|| StoreError::Unavailable("no read connection available".into()))?;
            let result = f(&conn);
            pool.conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

/// Reads one golden contact by email through a read-only connection: the
/// file is never created, migrated or written (for `leadrelay simulate`).
/// None when there is no database file yet.
pub async fn peek_contact(path: &str, email: &str) -> StoreResult<Option<Contact>> {
    let email = email.to_string();
    peek(path, move |c| contact_by(c, "email", &email), None).await
}

/// The contacts of a company domain, read like [`peek_contact`].
pub async fn peek_contacts_by_domain(path: &str, domain: &str) -> StoreResult<Vec<Contact>> {
    let domain = domain.to_string();
    peek(path, move |c| contacts_by_domain(c, &domain), Vec::new()).await
}

/// Rows of a read-only query whose columns are all text (or NULL), with
/// text parameters `$1`, `$2` …; no rows when there is no file.
pub async fn peek_rows(
    path: &str,
    sql: &str,
    params: Vec<String>,
) -> StoreResult<Vec<Vec<Option<String>>>> {
    let sql = sql.to_string();
    peek(
        path,
        move |c| {
            let mut stmt = c.prepare(&sql).map_err(map_err)?;
            let n = stmt.column_count();
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                    (0..n).map(|i| r.get::<_, Option<String>>(i)).collect()
                })
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        },
        Vec::new(),
    )
    .await
}

/// Runs `f` on a read-only connection; `missing` when there is no file.
async fn peek<T: Send + 'static>(
    path: &str,
    f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    missing: T,
) -> StoreResult<T> {
    let path = PathBuf::from(path);
    tokio::task::spawn_blocking(move || {
        if !path.exists() {
            return Ok(missing);
        }
        let c = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(map_err)?;
        c.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
        f(&c)
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
}

/// SQLite's in-memory and temporary databases have no file.
fn is_in_memory(path: &Path) -> bool {
    let s = path.to_string_lossy();
    s.is_empty() || s == ":memory:" || s.starts_with("file:")
}

fn open_connections(
    path: &Path,
    options: &OpenOptions,
) -> StoreResult<(Connection, Vec<Connection>)> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::private_fs::create_dir_all(parent).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    // Owner-only from the start; SQLite gives the -wal and -shm files the
    // database file's permissions.
    if !is_in_memory(path) {
        crate::private_fs::ensure_file(path).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))
        })?;
    }
    let conn = Connection::open(path).map_err(map_err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
    retry_busy(|| conn.pragma_update(None, "journal_mode", "WAL")).map_err(map_err)?;
    conn.pragma_update(
        None,
        "synchronous",
        if options.sqlite_full_sync {
            "FULL"
        } else {
            "NORMAL"
        },
    )
    .map_err(map_err)?;
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(map_err)?;
    conn.pragma_update(None, "cache_size", -16_000)
        .map_err(map_err)?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(map_err)?;
    // Deleted and rewritten row content is zeroed wherever that costs no
    // extra I/O (the page is written anyway); an erase switches to full
    // zeroing for its own transaction (`privacy_erase_impl`).
    conn.pragma_update(None, "secure_delete", "FAST")
        .map_err(map_err)?;
    // Checkpoints run on their own thread (see `checkpoint_loop`), never
    // inside a commit on the writer.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(map_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    grow_in_chunks(&conn);
    migrate(&conn)?;

    let mut readers = Vec::new();
    for _ in 0..options.read_pool.max(1) {
        let r = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(map_err)?;
        r.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
        r.set_prepared_statement_cache_capacity(64);
        readers.push(r);
    }
    Ok((conn, readers))
}

/// Grows the database file 8 MiB at a time: far fewer file-size changes,
/// so a commit's fsync rarely waits on block allocation for the checkpoint's
/// writes.
fn grow_in_chunks(conn: &Connection) {
    let mut chunk: std::ffi::c_int = 8 * 1024 * 1024;
    // SAFETY: a valid open connection handle, the "main" schema name, and a
    // pointer to an int, as SQLITE_FCNTL_CHUNK_SIZE expects.
    unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_CHUNK_SIZE,
            (&mut chunk as *mut std::ffi::c_int).cast(),
        );
    }
}

/// Runs `f` again, for up to 10 s, while SQLite answers "database is
/// locked" without waiting out the busy timeout: it does so when waiting
/// could deadlock, as when processes opening the same fresh file at once
/// (a server and a CLI command, several nodes' first start) each switch it
/// to WAL, or a statement's read snapshot went stale before its write.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_millis(5);
    loop {
        match f() {
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

/// Applies pending migrations, each in its own transaction.
fn migrate(conn: &Connection) -> StoreResult<()> {
    retry_busy(|| {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
    })
    .map_err(map_err)?;
    // Each step reads the applied version inside its own write lock (BEGIN
    // IMMEDIATE), so processes opening a fresh file at the same moment (the
    // server and a CLI command started beside it) apply each migration once:
    // the others wait on the lock and then see it applied.
    loop {
        retry_busy(|| conn.execute_batch("BEGIN IMMEDIATE")).map_err(map_err)?;
        let step = (|| {
            let applied: u32 = conn
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    [],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            if applied > schema::current_version() {
                return Err(StoreError::Config(format!(
                    "the database schema (version {applied}) is newer than this leadrelay (version {}); upgrade leadrelay",
                    schema::current_version()
                )));
            }
            let Some(sql) = schema::MIGRATIONS.get(applied as usize) else {
                return Ok(false);
            };
            let version = applied + 1;
            conn.execute_batch(&format!(
                "{sql}\nINSERT INTO schema_migrations (version, applied_at) VALUES ({version}, {});",
                Utc::now().timestamp_millis()
            ))
            .map_err(|e| StoreError::Unavailable(format!("migration {version} failed: {e}")))?;
            Ok(true)
        })();
        match step {
            Ok(more) => {
                conn.execute_batch("COMMIT").map_err(map_err)?;
                if !more {
                    return Ok(());
                }
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
}

/// The group-commit loop: take every job waiting (up to `max`), run them
/// all in one transaction, commit once, then answer every caller. If a job
/// fails, the batch is rolled back and each job runs again alone, so one bad
/// job never fails the others.
fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>, max: usize) {
    let mut batch: Vec<Job> = Vec::with_capacity(max);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match run_batch(&conn, &batch) {
            Ok(results) => {
                for (job, result) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(Ok(result));
                }
            }
            Err(BatchFailure::Storage(err)) => {
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(err.clone()));
                }
            }
            Err(BatchFailure::Job) => {
                for job in batch.drain(..) {
                    let result =
                        run_batch(&conn, std::slice::from_ref(&job)).map(|mut r| r.remove(0));
                    let _ = job.reply.send(match result {
                        Ok(v) => Ok(v),
                        Err(BatchFailure::Storage(e)) => Err(e),
                        // Run alone, the job's own error is the answer.
                        Err(BatchFailure::Job) => (job.run)(&conn)
                            .and(Err(StoreError::Unavailable("write failed".into()))),
                    });
                }
            }
        }
    }
}

enum BatchFailure {
    /// The transaction itself failed (disk full, I/O error): all jobs fail.
    Storage(StoreError),
    /// A job returned an error; the batch was rolled back.
    Job,
}

/// Runs jobs in one transaction; commits only if every job succeeded.
fn run_batch(conn: &Connection, jobs: &[Job]) -> Result<Vec<Box<dyn Any + Send>>, BatchFailure> {
    run_cached(conn, "BEGIN IMMEDIATE").map_err(|e| BatchFailure::Storage(map_err(e)))?;
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        match (job.run)(conn) {
            Ok(v) => out.push(v),
            Err(e) => {
                let _ = run_cached(conn, "ROLLBACK");
                return Err(if jobs.len() == 1 {
                    BatchFailure::Storage(e)
                } else {
                    BatchFailure::Job
                });
            }
        }
    }
    if let Err(e) = run_cached(conn, "COMMIT") {
        let _ = run_cached(conn, "ROLLBACK");
        return Err(BatchFailure::Storage(map_err(e)));
    }
    Ok(out)
}

/// Copies committed WAL frames into the database in the background
/// (PASSIVE: never blocks the writer or readers), so the WAL stays small
/// without checkpoint pauses in the ingest path.
///
/// When `truncate` is set, a TRUNCATE checkpoint copies everything and
/// empties the log instead (retried every tick while readers hold it up).
fn checkpoint_loop(
    conn: Connection,
    stop: Arc<std::sync::atomic::AtomicBool>,
    truncate: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let _ = conn.busy_timeout(Duration::from_millis(100));
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        if truncate.swap(false, Ordering::AcqRel) {
            // (busy, log frames, checkpointed frames); busy = 1: not done.
            match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            }) {
                Ok(0) => continue,
                Ok(_) => tracing::debug!("truncating checkpoint busy; retrying"),
                Err(e) => tracing::debug!(error = %e, "truncating checkpoint failed; retrying"),
            }
            truncate.store(true, Ordering::Release);
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "background checkpoint skipped");
        }
    }
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute([])
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn wake_hub(&self) -> Arc<WakeHub> {
        self.hub.clone()
    }

    async fn ready(&self) -> StoreResult<()> {
        let v = self.schema_version().await?;
        if v != schema::current_version() {
            return Err(StoreError::Unavailable(format!(
                "schema version {v}, expected {}",
                schema::current_version()
            )));
        }
        // A write round-trip proves the writer thread is alive.
        self.write(|_| Ok(())).await
    }

    async fn schema_version(&self) -> StoreResult<u32> {
        self.read(|c| {
            c.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(map_err)
        })
        .await
    }

    async fn ingest(&self, mut items: Vec<IngestItem>) -> StoreResult<Vec<IngestOutcome>> {
        let destinations: Vec<String> = items
            .iter()
            .filter(|i| !i.event.spam)
            .flat_map(|i| i.destinations.iter().cloned())
            .collect();
        let docs = items
            .iter_mut()
            .map(|i| event_doc(&mut i.event))
            .collect::<StoreResult<Vec<String>>>()?;
        let rules = self.contact_rules.clone();
        let hook = self.lead_hook.clone();
        // A reused key is the caller's answer, not a failed write: the group
        // commit it shares with other callers goes on.
        let outcomes = self
            .write(move |c| ingest_tx(c, &rules, &items, &docs, Utc::now(), hook.as_deref()))
            .await?
            .map_err(StoreError::IdempotencyKeyReused)?;
        for d in destinations {
            self.hub.wake(&d);
        }
        Ok(outcomes)
    }

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<Event>> {
        self.read(move |c| {
            c.prepare_cached(&format!("SELECT {EVENT_COLS} FROM events WHERE id = ?1"))
                .map_err(map_err)?
                .query_row([id.to_string()], event_from_row)
                .optional()
                .map_err(map_err)?
                .transpose()
        })
        .await
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        let filter = filter.clone();
        self.read(move |c| {
            let mut q = QueryBuilder::new(&format!("SELECT {EVENT_COLS} FROM events WHERE 1=1"));
            if let Some(t) = &filter.event_type {
                q.and("type = ?", t.as_str().to_string());
            }
            if let Some(k) = filter.origin_kind {
                q.and("origin_kind = ?", k.as_str().to_string());
            }
            if let Some(n) = &filter.origin_name {
                q.and("origin_name = ?", n.clone());
            }
            // Ids are UUIDv7: their text order is their time order.
            if let Some(s) = filter.since {
                q.and("id >= ?", uuid_v7_floor(s));
            }
            if let Some(u) = filter.until {
                q.and("id < ?", uuid_v7_floor(u));
            }
            if let Some(spam) = filter.spam {
                q.and("spam = ?", spam as i64);
            }
            if let Some(cid) = filter.contact_id {
                q.and("contact_id = ?", cid.to_string());
            }
            q.and_text_search(filter.search.as_deref());
            if let Some(b) = before {
                q.and("id < ?", b.to_string());
            }
            q.push(&format!(" ORDER BY id DESC LIMIT {}", limit.clamp(1, 1000)));
            skip_unreadable(q.query(c, event_from_row)?)
        })
        .await
    }

    async fn get_contact(&self, id: Uuid) -> StoreResult<Option<Contact>> {
        self.read(move |c| contact_by(c, "id", &id.to_string()))
            .await
    }

    async fn find_contact_by_email(&self, email: &str) -> StoreResult<Option<Contact>> {
        let email = email.trim().to_lowercase();
        self.read(move |c| contact_by(c, "email", &email)).await
    }

    async fn claim(
        &self,
        destination: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let dest = destination.to_string();
        let deliveries = self
            .write(move |c| claim_tx(c, &dest, limit, lease, Utc::now()))
            .await?;
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        // Events are immutable: read them (and the contacts) on the read
        // pool, outside the write transaction.
        let (claimed, orphans) = self
            .read(move |c| {
                let mut ev = c
                    .prepare_cached(&format!("SELECT {EVENT_COLS} FROM events WHERE id = ?1"))
                    .map_err(map_err)?;
                let mut claimed = Vec::with_capacity(deliveries.len());
                let mut orphans = Vec::new();
                for d in deliveries {
                    let found = ev
                        .query_row([d.event_id.to_string()], event_from_row)
                        .optional()
                        .map_err(map_err)?;
                    let Some(event) = found else {
                        // The event is gone (erased): it can never be sent.
                        orphans.push(Completion {
                            delivery_id: d.id,
                            lease_id: d.lease_id.unwrap_or_default(),
                            attempt: None,
                            transition: Transition::Skipped {
                                reason: "event erased".into(),
                            },
                            follow_up: None,
                        });
                        continue;
                    };
                    // An unreadable row dead-letters its own delivery, not
                    // the whole claim.
                    let read = event.and_then(|event| {
                        let contact = match event.contact_id {
                            Some(id) => contact_by(c, "id", &id.to_string())?,
                            None => None,
                        };
                        Ok((event, contact))
                    });
                    match read {
                        Ok((event, contact)) => claimed.push(ClaimedDelivery {
                            event,
                            contact,
                            delivery: d,
                        }),
                        Err(e @ StoreError::Corrupt(_)) => orphans.push(unreadable(&d, &e)),
                        Err(e) => return Err(e),
                    }
                }
                claimed.sort_by_key(|c| c.delivery.id);
                Ok((claimed, orphans))
            })
            .await?;
        if !orphans.is_empty() {
            self.complete(orphans).await?;
        }
        Ok(claimed)
    }

    async fn release_own_leases(&self) -> StoreResult<u64> {
        self.write(move |c| {
            let now = Utc::now().timestamp_millis();
            let n = c
                .prepare_cached(
                    "UPDATE deliveries SET state = CASE WHEN attempts = 0 THEN 'pending' ELSE 'scheduled' END, \
                     lease_id = NULL, next_attempt_at = ?1, updated_at = ?1 WHERE state = 'in_flight'",
                )
                .map_err(map_err)?
                .execute(params![now])
                .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn next_due(&self, destination: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let destination = destination.to_string();
        self.read(move |c| {
            let ms: Option<i64> = c
                .prepare_cached(
                    "SELECT MIN(next_attempt_at) FROM deliveries \
                     WHERE destination = ?1 AND state IN ('pending', 'scheduled', 'in_flight')",
                )
                .map_err(map_err)?
                .query_row([destination], |r| r.get(0))
                .map_err(map_err)?;
            Ok(ms.map(from_ms))
        })
        .await
    }

    async fn complete(&self, completions: Vec<Completion>) -> StoreResult<()> {
        if completions.is_empty() {
            return Ok(());
        }
        let woken = self
            .write(move |c| complete_tx(c, &completions, Utc::now()))
            .await?;
        for d in woken {
            self.hub.wake(&d);
        }
        Ok(())
    }

    async fn get_delivery(&self, id: Uuid) -> StoreResult<Option<Delivery>> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE id = ?1"
            ))
            .map_err(map_err)?
            .query_row([id.to_string()], delivery_from_row)
            .optional()
            .map_err(map_err)?
            .transpose()
        })
        .await
    }

    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let filter = filter.clone();
        self.read(move |c| {
            let mut q =
                QueryBuilder::new(&format!("SELECT {DELIVERY_COLS} FROM deliveries WHERE 1=1"));
            if let Some(s) = filter.state {
                q.and("state = ?", s.as_str().to_string());
            }
            if let Some(d) = &filter.destination {
                q.and("destination = ?", d.clone());
            }
            if let Some(e) = filter.event_id {
                q.and("event_id = ?", e.to_string());
            }
            if let Some(s) = filter.since {
                q.and("id >= ?", uuid_v7_floor(s));
            }
            if filter.exclude_replayed {
                q.push(" AND replayed_by IS NULL");
            }
            if let Some(b) = before {
                q.and("id < ?", b.to_string());
            }
            q.push(&format!(
                " ORDER BY id DESC LIMIT {}",
                limit.clamp(1, 10_000)
            ));
            q.query(c, delivery_from_row)?.into_iter().collect()
        })
        .await
    }

    async fn deliveries_for_event(&self, event_id: Uuid) -> StoreResult<Vec<Delivery>> {
        let filter = DeliveryFilter {
            event_id: Some(event_id),
            ..Default::default()
        };
        let mut list = self.list_deliveries(&filter, None, 10_000).await?;
        list.reverse();
        Ok(list)
    }

    async fn attempts(&self, delivery_id: Uuid) -> StoreResult<Vec<Attempt>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE delivery_id = ?1 ORDER BY number, started_at"))
                .map_err(map_err)?;
            let rows = stmt.query_map([delivery_id.to_string()], attempt_from_row).map_err(map_err)?;
            rows.map(|r| r.map_err(map_err).and_then(|x| x)).collect()
        })
        .await
    }

    async fn replay(
        &self,
        ids: Vec<Uuid>,
        overrides: Option<Map<String, Value>>,
    ) -> StoreResult<Vec<(Uuid, Uuid)>> {
        let (pairs, destinations) = self
            .write(move |c| replay_tx(c, &ids, overrides.as_ref(), Utc::now()))
            .await?;
        for d in destinations {
            self.hub.wake(&d);
        }
        Ok(pairs)
    }

    async fn discard(&self, ids: Vec<Uuid>) -> StoreResult<usize> {
        self.write(move |c| {
            let now = Utc::now().timestamp_millis();
            let mut n = 0;
            let mut stmt = c
                .prepare_cached("UPDATE deliveries SET state = 'discarded', updated_at = ?2 WHERE id = ?1 AND state = 'dead'")
                .map_err(map_err)?;
            for id in &ids {
                n += stmt.execute(params![id.to_string(), now]).map_err(map_err)?;
            }
            Ok(n)
        })
        .await
    }

    async fn destination_states(&self) -> StoreResult<Vec<DestinationState>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {DEST_COLS} FROM destination_state ORDER BY name"
                ))
                .map_err(map_err)?;
            let rows = stmt.query_map([], dest_state_from_row).map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)).collect()
        })
        .await
    }

    async fn destination_state(&self, name: &str) -> StoreResult<DestinationState> {
        let name = name.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {DEST_COLS} FROM destination_state WHERE name = ?1"
            ))
            .map_err(map_err)?
            .query_row([&name], dest_state_from_row)
            .optional()
            .map_err(map_err)?
            .unwrap_or_else(|| DestinationState::new(&name)))
        })
        .await
    }

    async fn pause_destination(
        &self,
        name: &str,
        until: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<()> {
        let (name, reason) = (name.to_string(), reason.to_string());
        self.write(move |c| {
            // Never shorten a longer pause another worker already recorded.
            upsert_dest(
                c,
                &name,
                "paused_until = MAX(COALESCE(paused_until, 0), ?2), pause_reason = ?3",
                &[&until.timestamp_millis(), &reason],
            )
        })
        .await
    }

    async fn resume_destination(&self, name: &str) -> StoreResult<()> {
        let owned = name.to_string();
        self.write(move |c| {
            upsert_dest(c, &owned, "paused_until = NULL, pause_reason = NULL", &[])
        })
        .await?;
        self.hub.wake(name);
        Ok(())
    }

    async fn set_destination_disabled(
        &self,
        name: &str,
        disabled: bool,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        let (name, reason) = (name.to_string(), reason.map(String::from));
        self.write(move |c| {
            upsert_dest(
                c,
                &name,
                "disabled = ?2, disabled_reason = ?3",
                &[&(disabled as i64), &reason],
            )
        })
        .await
    }

    async fn set_circuit_state(&self, name: &str, state: &str) -> StoreResult<()> {
        let (name, state) = (name.to_string(), state.to_string());
        self.write(move |c| upsert_dest(c, &name, "circuit = ?2", &[&state]))
            .await
    }

    async fn remote_ids(&self, destination: &str, keys: &[String]) -> StoreResult<Vec<RemoteId>> {
        let destination = destination.to_string();
        let keys = keys.to_vec();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT object, key, remote_id FROM remote_ids WHERE destination = ?1 AND key = ?2")
                .map_err(map_err)?;
            let mut out = Vec::new();
            for key in keys {
                let rows = stmt
                    .query_map(params![destination, key], |r| {
                        Ok(RemoteId { object: r.get(0)?, key: r.get(1)?, id: r.get(2)? })
                    })
                    .map_err(map_err)?;
                for r in rows {
                    out.push(r.map_err(map_err)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn save_remote_ids(&self, destination: &str, ids: &[RemoteId]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let destination = destination.to_string();
        let ids = ids.to_vec();
        self.write(move |c| {
            let now_ms = Utc::now().timestamp_millis();
            let mut up = c
                .prepare_cached(
                    "INSERT INTO remote_ids (destination, object, key, remote_id, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT(destination, key, object) DO UPDATE SET remote_id = excluded.remote_id, updated_at = excluded.updated_at",
                )
                .map_err(map_err)?;
            for r in &ids {
                up.execute(params![destination, r.object, r.key, r.id, now_ms])
                    .map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn kv_get(&self, key: &str) -> StoreResult<Option<String>> {
        let key = key.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT value FROM kv WHERE key = ?1")
                .map_err(map_err)?
                .query_row([key], |r| r.get(0))
                .optional()
                .map_err(map_err)
        })
        .await
    }

    async fn kv_set(&self, key: &str, value: &str) -> StoreResult<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO kv (key, value, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .map_err(map_err)?
            .execute(params![key, value, Utc::now().timestamp_millis()])
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn kv_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT OR IGNORE INTO kv (key, value, updated_at) VALUES (?1, ?2, ?3)",
            )
            .map_err(map_err)?
            .execute(params![key, value, Utc::now().timestamp_millis()])
            .map_err(map_err)?;
            c.prepare_cached("SELECT value FROM kv WHERE key = ?1")
                .map_err(map_err)?
                .query_row([&key], |r| r.get(0))
                .map_err(map_err)
        })
        .await
    }

    async fn kv_compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> StoreResult<bool> {
        let (key, expected, value) = (
            key.to_string(),
            expected.map(String::from),
            value.to_string(),
        );
        self.write(move |c| {
            let now = Utc::now().timestamp_millis();
            let n = match &expected {
                None => c
                    .prepare_cached(
                        "INSERT OR IGNORE INTO kv (key, value, updated_at) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(map_err)?
                    .execute(params![key, value, now]),
                Some(old) => c
                    .prepare_cached(
                        "UPDATE kv SET value = ?2, updated_at = ?3 WHERE key = ?1 AND value = ?4",
                    )
                    .map_err(map_err)?
                    .execute(params![key, value, now, old]),
            }
            .map_err(map_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn rate_acquire(
        &self,
        destination: &str,
        interval: Duration,
    ) -> StoreResult<Option<Duration>> {
        let destination = destination.to_string();
        self.write(move |c| {
            let now = Utc::now().timestamp_millis();
            let step = interval.as_millis().max(1) as i64;
            let tat: Option<i64> = c
                .prepare_cached("SELECT tat FROM rate_limits WHERE destination = ?1")
                .map_err(map_err)?
                .query_row([&destination], |r| r.get(0))
                .optional()
                .map_err(map_err)?;
            match tat {
                Some(t) if t > now => Ok(Some(Duration::from_millis((t - now) as u64))),
                _ => {
                    let next = tat.unwrap_or(now).max(now) + step;
                    c.prepare_cached(
                        "INSERT INTO rate_limits (destination, tat) VALUES (?1, ?2) \
                         ON CONFLICT(destination) DO UPDATE SET tat = excluded.tat",
                    )
                    .map_err(map_err)?
                    .execute(params![destination, next])
                    .map_err(map_err)?;
                    Ok(None)
                }
            }
        })
        .await
    }

    async fn destination_stats(&self, since: DateTime<Utc>) -> StoreResult<Vec<DestinationStats>> {
        self.read(move |c| stats(c, since)).await
    }

    async fn purge(&self, policy: &PurgePolicy) -> StoreResult<PurgeReport> {
        let mut report = PurgeReport::default();
        // Small chunks, each its own write job, so ingest never waits long.
        // Ids are UUIDv7, so "older than" is an id range on the primary key.
        use rusqlite::types::Value as SqlValue;
        let steps: [(&str, SqlValue); 4] = [
            (
                "UPDATE events SET raw_body = NULL WHERE id IN \
                 (SELECT id FROM events WHERE id < ?1 AND raw_body IS NOT NULL LIMIT 2000)",
                SqlValue::Text(uuid_v7_floor(policy.raw_payloads_before)),
            ),
            (
                "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE id < ?1 LIMIT 2000)",
                SqlValue::Text(uuid_v7_floor(policy.attempts_before)),
            ),
            (
                "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries WHERE id < ?1 AND state IN \
                 ('delivered', 'skipped', 'discarded') LIMIT 2000)",
                SqlValue::Text(uuid_v7_floor(policy.finished_deliveries_before)),
            ),
            (
                "DELETE FROM idempotency_keys WHERE rowid IN \
                 (SELECT rowid FROM idempotency_keys WHERE created_at < ?1 LIMIT 2000)",
                SqlValue::Integer(policy.idempotency_before.timestamp_millis()),
            ),
        ];
        for (i, (sql, cutoff)) in steps.into_iter().enumerate() {
            loop {
                let cutoff = cutoff.clone();
                let n = self
                    .write(move |c| {
                        c.prepare_cached(sql)
                            .map_err(map_err)?
                            .execute([&cutoff])
                            .map_err(map_err)
                    })
                    .await? as u64;
                match i {
                    0 => report.raw_payloads += n,
                    1 => report.attempts += n,
                    2 => report.deliveries += n,
                    _ => report.idempotency_keys += n,
                }
                if n < 2000 {
                    break;
                }
            }
        }
        Ok(report)
    }

    async fn list_contacts(
        &self,
        filter: &ContactFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Contact>> {
        self.list_contacts_impl(filter, before, limit).await
    }

    async fn create_api_key(&self, key: NewApiKey) -> StoreResult<ApiKey> {
        self.create_api_key_impl(key).await
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.api_keys_impl().await
    }

    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        self.api_key_by_hash_impl(hash).await
    }

    async fn revoke_api_key(&self, name_or_id: &str) -> StoreResult<ApiKey> {
        self.revoke_api_key_impl(name_or_id).await
    }

    async fn touch_api_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        self.touch_api_key_impl(id, at).await
    }

    async fn create_session(&self, session: NewSession) -> StoreResult<()> {
        self.create_session_impl(session).await
    }

    async fn session(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<Session>> {
        self.session_impl(token_hash, now).await
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        self.delete_session_impl(token_hash).await
    }

    async fn add_review_item(&self, item: ReviewItem) -> StoreResult<()> {
        self.add_review_item_impl(item).await
    }

    async fn list_review_items(
        &self,
        status: Option<ReviewStatus>,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<ReviewItem>> {
        self.list_review_items_impl(status, before, limit).await
    }

    async fn get_review_item(&self, id: Uuid) -> StoreResult<Option<ReviewItem>> {
        self.get_review_item_impl(id).await
    }

    async fn resolve_review_item(
        &self,
        id: Uuid,
        status: ReviewStatus,
        resolution: Option<String>,
        actor: &str,
    ) -> StoreResult<ReviewItem> {
        self.resolve_review_item_impl(id, status, resolution, actor)
            .await
    }

    async fn privacy_export(&self, request: &PrivacyRequest) -> StoreResult<PrivacyExport> {
        self.privacy_export_impl(request).await
    }

    async fn privacy_erase(&self, request: &PrivacyRequest) -> StoreResult<EraseReport> {
        self.privacy_erase_impl(request).await
    }

    async fn stale_contacts(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.stale_contacts_impl(before, limit).await
    }

    async fn add_privacy_audit(&self, record: &AuditRecord) -> StoreResult<()> {
        self.add_privacy_audit_impl(record).await
    }

    async fn privacy_audit(
        &self,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<AuditRecord>> {
        self.privacy_audit_impl(before, limit).await
    }

    async fn lead_counts(
        &self,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<LeadCount>> {
        self.lead_counts_impl(since, bucket_secs).await
    }

    async fn attempt_buckets(
        &self,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<AttemptBucket>> {
        self.attempt_buckets_impl(since, bucket_secs).await
    }

    async fn close(&self) {
        let sender = self
            .writer
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(sender);
        let handle = self
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        // Then the checkpointer, which truncates the WAL on its way out.
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((stop, h)) = checkpointer {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

fn ingest_tx(
    c: &Connection,
    rules: &contacts::MergeRules,
    items: &[IngestItem],
    docs: &[String],
    now: DateTime<Utc>,
    hook: Option<&crate::pipeline::LeadHook>,
) -> StoreResult<Result<Vec<IngestOutcome>, Vec<usize>>> {
    let now_ms = now.timestamp_millis();
    let idem_cutoff = now_ms - IDEMPOTENCY_WINDOW_HOURS * 3_600_000;
    // Keys reused for another request: refused before anything is written.
    let reused = KeyCheck::default().reused(items, |k| {
        let row: Option<(i64, Option<String>)> = c
            .prepare_cached("SELECT created_at, fingerprint FROM idempotency_keys WHERE scope = ?1 AND key = ?2")
            .map_err(map_err)?
            .query_row(params![k.scope, k.key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(map_err)?;
        Ok(row.filter(|(created, _)| *created >= idem_cutoff).map(|(_, fp)| fp))
    })?;
    if !reused.is_empty() {
        return Ok(Err(reused));
    }
    let mut outcomes = Vec::with_capacity(items.len());
    for (item, doc) in items.iter().zip(docs) {
        let IngestItem {
            event,
            destinations,
            idempotency,
        } = item;
        let mut contact_id = None;
        if let Some(k) = &idempotency {
            let found: Option<(String, i64)> = c
                .prepare_cached("SELECT event_id, created_at FROM idempotency_keys WHERE scope = ?1 AND key = ?2")
                .map_err(map_err)?
                .query_row(params![k.scope, k.key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(map_err)?;
            match found {
                Some((id, created)) if created >= idem_cutoff => {
                    outcomes.push(IngestOutcome::Duplicate(parse_uuid(&id)?));
                    continue;
                }
                Some(_) => {
                    c.prepare_cached("DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2")
                        .map_err(map_err)?
                        .execute(params![k.scope, k.key])
                        .map_err(map_err)?;
                }
                None => {}
            }
        }
        if let Some(x) = &event.external_id {
            let found: Option<String> = c
                .prepare_cached("SELECT id FROM events WHERE origin_kind = ?1 AND origin_name = ?2 AND external_id = ?3")
                .map_err(map_err)?
                .query_row(params![event.origin.kind.as_str(), event.origin.name, x], |r| r.get(0))
                .optional()
                .map_err(map_err)?;
            if let Some(id) = found {
                outcomes.push(IngestOutcome::Duplicate(parse_uuid(&id)?));
                continue;
            }
        }
        let mut contact_key = event.contact_key();
        if !event.spam {
            let existing = find_contact(c, event, now)?;
            if let Some(mut merged) = contacts::merge_with(rules, existing, event, now) {
                let effects = hook.map(|h| h.on_merge(&mut merged, event, now));
                upsert_contact(c, &merged)?;
                if let Some(e) = effects {
                    lead::write_effects(c, merged.id, &e, now_ms)?;
                }
                contact_id = Some(merged.id);
                if let Some(e) = &merged.data.email {
                    contact_key = format!("email:{}", e.as_str());
                }
            }
        }
        insert_event(c, event, doc, contact_id)?;
        if let Some(k) = &idempotency {
            c.prepare_cached("INSERT INTO idempotency_keys (scope, key, event_id, created_at, fingerprint) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(map_err)?
                .execute(params![k.scope, k.key, event.id.to_string(), now_ms, k.fingerprint])
                .map_err(map_err)?;
        }
        if !event.spam {
            let mut stmt = c
                .prepare_cached(
                    "INSERT INTO deliveries (id, event_id, destination, contact_key, state, created_at, updated_at, next_attempt_at) \
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?5)",
                )
                .map_err(map_err)?;
            for d in destinations {
                stmt.execute(params![
                    new_id().to_string(),
                    event.id.to_string(),
                    d,
                    contact_key,
                    now_ms
                ])
                .map_err(map_err)?;
            }
        }
        outcomes.push(IngestOutcome::Stored(event.id));
    }
    Ok(Ok(outcomes))
}

/// The golden contact an event is about: by email, else by the secondary
/// match (company domain + name; an ambiguous match is recorded for review).
fn find_contact(c: &Connection, event: &Event, now: DateTime<Utc>) -> StoreResult<Option<Contact>> {
    if let Some(email) = &event.contact.email {
        return contact_by(c, "email", email.as_str());
    }
    let Some(key) = contacts::secondary_key(&event.contact) else {
        return Ok(None);
    };
    let mut candidates = contacts_by_domain(c, &key.domain)?;
    match contacts::secondary_match(&key, &event.contact, &candidates) {
        contacts::SecondaryMatch::Unique(i) => Ok(Some(candidates.swap_remove(i))),
        contacts::SecondaryMatch::Ambiguous(ids) => {
            let item = contacts::ambiguous_match_review(event, &key, &ids, now);
            admin::insert_review_item(c, &item)?;
            Ok(None)
        }
        contacts::SecondaryMatch::None => Ok(None),
    }
}

fn claim_tx(
    c: &Connection,
    destination: &str,
    limit: usize,
    lease: Duration,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Delivery>> {
    let lease_id = new_id();
    let now_ms = now.timestamp_millis();
    let expires = now_ms + lease.as_millis() as i64;
    // Per contact in order: a delivery waits for the contact's earlier
    // ones, except those waiting in a sequence tool's overflow queue
    // (`overflow: …`), which may wait days for a window.
    let mut stmt = c
        .prepare_cached(&format!(
            "UPDATE deliveries SET state = 'in_flight', lease_id = ?1, next_attempt_at = ?2, updated_at = ?3 \
             WHERE id IN ( \
               SELECT d.id FROM deliveries d \
               WHERE d.destination = ?4 AND d.state IN ('pending', 'scheduled', 'in_flight') AND d.next_attempt_at <= ?3 \
                 AND NOT EXISTS ( \
                   SELECT 1 FROM deliveries p \
                   WHERE p.destination = d.destination AND p.contact_key = d.contact_key \
                     AND p.state IN ('pending', 'scheduled', 'in_flight') AND p.id < d.id \
                     AND NOT (p.state = 'scheduled' AND p.last_error LIKE 'overflow: %')) \
               ORDER BY d.next_attempt_at, d.id LIMIT ?5) \
             RETURNING {DELIVERY_COLS}"
        ))
        .map_err(map_err)?;
    let deliveries: Vec<Delivery> = stmt
        .query_map(
            params![
                lease_id.to_string(),
                expires,
                now_ms,
                destination,
                limit as i64
            ],
            delivery_from_row,
        )
        .map_err(map_err)?
        .map(|r| r.map_err(map_err).and_then(|x| x))
        .collect::<StoreResult<_>>()?;
    Ok(deliveries)
}

/// Applies completions; returns the destinations that got new deliveries
/// from follow-up events (to wake their workers after COMMIT).
fn complete_tx(
    c: &Connection,
    completions: &[Completion],
    now: DateTime<Utc>,
) -> StoreResult<Vec<String>> {
    let now_ms = now.timestamp_millis();
    let mut woken = Vec::new();
    // Every attempt is kept, current lease or not: multi-row INSERTs.
    let attempts: Vec<&Attempt> = completions
        .iter()
        .filter_map(|c| c.attempt.as_ref())
        .collect();
    insert_attempts(c, &attempts)?;
    // Plain successes (no remote ids, no follow-up) of one claim with the
    // same status: one UPDATE per group (a backup batch is one group).
    let mut plain: Vec<(PlainKey, Vec<String>)> = Vec::new();
    for comp in completions {
        if let Transition::Delivered { remote_ids } = &comp.transition
            && remote_ids.is_empty()
            && comp.follow_up.is_none()
        {
            let key = PlainKey {
                lease: comp.lease_id,
                status: comp.attempt.as_ref().and_then(|a| a.status),
                tried: comp.attempt.is_some(),
            };
            let id = comp.delivery_id.to_string();
            match plain.iter_mut().find(|(k, _)| *k == key) {
                Some((_, ids)) => ids.push(id),
                None => plain.push((key, vec![id])),
            }
            continue;
        }
        // One statement per completion: the transition applies only while
        // our lease holds (in flight under our lease id); otherwise the lease
        // expired and someone else holds the delivery now, and nothing
        // changes.
        let tried = comp.attempt.is_some() as i64;
        let id = comp.delivery_id.to_string();
        let lease = comp.lease_id.to_string();
        macro_rules! held {
            ($set:literal) => {
                concat!(
                    "UPDATE deliveries SET ",
                    $set,
                    " WHERE id = ?1 AND state = 'in_flight' AND lease_id = ?2 RETURNING destination"
                )
            };
        }
        let updated: Option<String> = match &comp.transition {
            Transition::Delivered { .. } => {
                let status = comp.attempt.as_ref().and_then(|a| a.status).map(i64::from);
                c.prepare_cached(held!(
                    "state = 'delivered', attempts = attempts + ?3, last_status = ?4, \
                     last_error = NULL, lease_id = NULL, next_attempt_at = NULL, finished_at = ?5, updated_at = ?5"
                ))
                .map_err(map_err)?
                .query_row(params![id, lease, tried, status, now_ms], |r| r.get(0))
            }
            Transition::Scheduled {
                at,
                failed,
                status,
                error,
            } => c
                .prepare_cached(held!(
                    "state = 'scheduled', attempts = attempts + ?3, failures = failures + ?4, \
                     last_status = ?5, last_error = ?6, lease_id = NULL, next_attempt_at = ?7, updated_at = ?8"
                ))
                .map_err(map_err)?
                .query_row(
                    params![id, lease, tried, *failed as i64, status.map(i64::from), error, at.timestamp_millis(), now_ms],
                    |r| r.get(0),
                ),
            Transition::Dead { status, reason } => c
                .prepare_cached(held!(
                    "state = 'dead', attempts = attempts + ?3, failures = failures + ?3, \
                     last_status = ?4, last_error = ?5, reason = ?5, lease_id = NULL, next_attempt_at = NULL, \
                     finished_at = ?6, updated_at = ?6"
                ))
                .map_err(map_err)?
                .query_row(params![id, lease, tried, status.map(i64::from), reason, now_ms], |r| r.get(0)),
            Transition::Skipped { reason } => c
                .prepare_cached(held!(
                    "state = 'skipped', reason = ?3, lease_id = NULL, next_attempt_at = NULL, \
                     finished_at = ?4, updated_at = ?4"
                ))
                .map_err(map_err)?
                .query_row(params![id, lease, reason, now_ms], |r| r.get(0)),
            Transition::Released => c
                .prepare_cached(held!(
                    "state = CASE WHEN attempts = 0 THEN 'pending' ELSE 'scheduled' END, \
                     lease_id = NULL, next_attempt_at = ?3, updated_at = ?3"
                ))
                .map_err(map_err)?
                .query_row(params![id, lease, now_ms], |r| r.get(0)),
        }
        .optional()
        .map_err(map_err)?;
        let Some(destination) = updated else {
            continue;
        };
        if let Transition::Delivered { remote_ids } = &comp.transition
            && !remote_ids.is_empty()
        {
            let mut up = c
                .prepare_cached(
                    "INSERT INTO remote_ids (destination, object, key, remote_id, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT(destination, key, object) DO UPDATE SET remote_id = excluded.remote_id, updated_at = excluded.updated_at",
                )
                .map_err(map_err)?;
            for r in remote_ids {
                up.execute(params![destination, r.object, r.key, r.id, now_ms])
                    .map_err(map_err)?;
            }
        }
        if let Some(item) = &comp.follow_up {
            woken.extend(insert_follow_up(c, item, now_ms)?);
        }
    }
    for (key, ids) in &plain {
        deliver_many(c, key, ids, now_ms)?;
    }
    Ok(woken)
}

/// What the deliveries of one [`deliver_many`] statement share.
#[derive(PartialEq)]
struct PlainKey {
    lease: Uuid,
    status: Option<u16>,
    tried: bool,
}

/// Marks deliveries delivered that are still in flight under `key.lease`
/// (one statement per [`row_chunks`] run); any whose lease passed are left
/// to their new holder, as in [`complete_tx`].
fn deliver_many(c: &Connection, key: &PlainKey, ids: &[String], now_ms: i64) -> StoreResult<()> {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        ROW_CHUNKS
            .iter()
            .map(|n| {
                format!(
                    "UPDATE deliveries SET state = 'delivered', attempts = attempts + ?1, last_status = ?2, \
                     last_error = NULL, lease_id = NULL, next_attempt_at = NULL, finished_at = ?3, updated_at = ?3 \
                     WHERE lease_id = ?4 AND state = 'in_flight' AND id IN ({})",
                    vec!["?"; *n].join(", ")
                )
            })
            .collect()
    });
    let lease = key.lease.to_string();
    for (start, len) in row_chunks(ids.len()) {
        let i = ROW_CHUNKS.iter().position(|n| *n == len).unwrap_or(0);
        let mut stmt = c.prepare_cached(&all[i]).map_err(map_err)?;
        stmt.raw_bind_parameter(1, key.tried as i64)
            .map_err(map_err)?;
        stmt.raw_bind_parameter(2, key.status.map(i64::from))
            .map_err(map_err)?;
        stmt.raw_bind_parameter(3, now_ms).map_err(map_err)?;
        stmt.raw_bind_parameter(4, &lease).map_err(map_err)?;
        for (n, id) in ids[start..start + len].iter().enumerate() {
            stmt.raw_bind_parameter(5 + n, id).map_err(map_err)?;
        }
        stmt.raw_execute().map_err(map_err)?;
    }
    Ok(())
}

/// Stores a follow-up event as it is (no contact merge: it is about a person
/// already on record) with one pending delivery per destination. An event
/// with the same origin and external id already stored is not stored twice.
fn insert_follow_up(c: &Connection, item: &IngestItem, now_ms: i64) -> StoreResult<Vec<String>> {
    let event = &item.event;
    if item.destinations.is_empty() || event.spam {
        return Ok(Vec::new());
    }
    if let Some(x) = &event.external_id {
        let exists: Option<String> = c
            .prepare_cached("SELECT id FROM events WHERE origin_kind = ?1 AND origin_name = ?2 AND external_id = ?3")
            .map_err(map_err)?
            .query_row(params![event.origin.kind.as_str(), event.origin.name, x], |r| r.get(0))
            .optional()
            .map_err(map_err)?;
        if exists.is_some() {
            return Ok(Vec::new());
        }
    }
    let mut doc_event = event.clone();
    let doc = event_doc(&mut doc_event)?;
    insert_event(c, event, &doc, event.contact_id)?;
    let contact_key = event.contact_key();
    let mut stmt = c
        .prepare_cached(
            "INSERT INTO deliveries (id, event_id, destination, contact_key, state, created_at, updated_at, next_attempt_at) \
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?5)",
        )
        .map_err(map_err)?;
    for d in &item.destinations {
        stmt.execute(params![
            new_id().to_string(),
            event.id.to_string(),
            d,
            contact_key,
            now_ms
        ])
        .map_err(map_err)?;
    }
    Ok(item.destinations.clone())
}

type ReplayResult = (Vec<(Uuid, Uuid)>, Vec<String>);

fn replay_tx(
    c: &Connection,
    ids: &[Uuid],
    overrides: Option<&Map<String, Value>>,
    now: DateTime<Utc>,
) -> StoreResult<ReplayResult> {
    let now_ms = now.timestamp_millis();
    let mut pairs = Vec::new();
    let mut dests = Vec::new();
    for id in ids {
        let row: Option<(String, String, String, Option<String>)> = c
            .prepare_cached(
                "SELECT event_id, destination, contact_key, overrides FROM deliveries \
                 WHERE id = ?1 AND state IN ('dead', 'discarded', 'skipped') AND replayed_by IS NULL",
            )
            .map_err(map_err)?
            .query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()
            .map_err(map_err)?;
        let Some((event_id, destination, contact_key, old_overrides)) = row else {
            continue;
        };
        let new = new_id();
        let merged = merge_overrides(old_overrides.as_deref(), overrides);
        c.prepare_cached(
            "INSERT INTO deliveries (id, event_id, destination, contact_key, state, created_at, updated_at, next_attempt_at, replay_of, overrides) \
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?5, ?6, ?7)",
        )
        .map_err(map_err)?
        .execute(params![new.to_string(), event_id, destination, contact_key, now_ms, id.to_string(), merged])
        .map_err(map_err)?;
        c.prepare_cached("UPDATE deliveries SET replayed_by = ?2, updated_at = ?3 WHERE id = ?1")
            .map_err(map_err)?
            .execute(params![id.to_string(), new.to_string(), now_ms])
            .map_err(map_err)?;
        pairs.push((*id, new));
        dests.push(destination);
    }
    Ok((pairs, dests))
}

/// Updates a destination's state row (creating it first). `set` uses ?2, ?3 …
/// for `extra`; `updated_at` is set too.
fn upsert_dest(
    c: &Connection,
    name: &str,
    set: &str,
    extra: &[&dyn rusqlite::ToSql],
) -> StoreResult<()> {
    let now = Utc::now().timestamp_millis();
    c.prepare_cached("INSERT OR IGNORE INTO destination_state (name, updated_at) VALUES (?1, ?2)")
        .map_err(map_err)?
        .execute(params![name, now])
        .map_err(map_err)?;
    let sql = format!(
        "UPDATE destination_state SET {set}, updated_at = ?{} WHERE name = ?1",
        extra.len() + 2
    );
    let mut all: Vec<&dyn rusqlite::ToSql> = vec![&name];
    all.extend_from_slice(extra);
    all.push(&now);
    c.prepare_cached(&sql)
        .map_err(map_err)?
        .execute(all.as_slice())
        .map_err(map_err)?;
    Ok(())
}

fn stats(c: &Connection, since: DateTime<Utc>) -> StoreResult<Vec<DestinationStats>> {
    use std::collections::BTreeMap;
    let since_ms = since.timestamp_millis();
    let since_id = uuid_v7_floor(since);
    let mut by: BTreeMap<String, DestinationStats> = BTreeMap::new();
    {
        let mut stmt = c
            .prepare_cached(
                "SELECT destination, state, COUNT(*) FROM deliveries \
                 WHERE state IN ('pending', 'scheduled', 'in_flight') OR (state = 'dead' AND replayed_by IS NULL) \
                 GROUP BY destination, state",
            )
            .map_err(map_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(map_err)?;
        for row in rows {
            let (d, state, n) = row.map_err(map_err)?;
            let s = by.entry(d.clone()).or_insert_with(|| DestinationStats {
                destination: d,
                ..Default::default()
            });
            let n = n as u64;
            match DeliveryState::parse(&state) {
                Some(DeliveryState::Pending) => s.pending += n,
                Some(DeliveryState::InFlight) => s.in_flight += n,
                Some(DeliveryState::Scheduled) => s.scheduled += n,
                Some(DeliveryState::Dead) => s.dead += n,
                _ => {}
            }
        }
    }
    {
        let mut stmt = c
            .prepare_cached("SELECT destination, outcome, COUNT(*) FROM attempts WHERE id >= ?1 GROUP BY destination, outcome")
            .map_err(map_err)?;
        let rows = stmt
            .query_map([&since_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(map_err)?;
        for row in rows {
            let (d, outcome, n) = row.map_err(map_err)?;
            let s = by.entry(d.clone()).or_insert_with(|| DestinationStats {
                destination: d,
                ..Default::default()
            });
            let n = n as u64;
            s.window_attempts += n;
            match outcome.as_str() {
                "delivered" => s.window_succeeded += n,
                "retry" | "dead" => s.window_failed += n,
                _ => {}
            }
        }
    }
    {
        let mut stmt = c
            .prepare_cached(
                "SELECT destination, COUNT(*) FROM deliveries WHERE state = 'dead' AND finished_at >= ?1 GROUP BY destination",
            )
            .map_err(map_err)?;
        let rows = stmt
            .query_map([since_ms], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(map_err)?;
        for row in rows {
            let (d, n) = row.map_err(map_err)?;
            let s = by.entry(d.clone()).or_insert_with(|| DestinationStats {
                destination: d,
                ..Default::default()
            });
            s.window_dead = n as u64;
        }
    }
    for s in by.values_mut() {
        let mut stmt = c
            .prepare_cached(
                "SELECT duration_ms FROM attempts WHERE id >= ?2 AND destination = ?1 AND outcome = 'delivered' \
                 ORDER BY id DESC LIMIT 20000",
            )
            .map_err(map_err)?;
        let mut lat: Vec<u64> = stmt
            .query_map(params![s.destination, since_id], |r| r.get::<_, i64>(0))
            .map_err(map_err)?
            .filter_map(|r| r.ok())
            .map(|v| v.max(0) as u64)
            .collect();
        lat.sort_unstable();
        s.latency_p50_ms = percentile(&lat, 0.50);
        s.latency_p99_ms = percentile(&lat, 0.99);
    }
    Ok(by.into_values().collect())
}

#[cfg(test)]
mod open_tests {
    use super::*;

    fn failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn a_busy_answer_is_tried_again_and_another_error_is_not() {
        let mut calls = 0;
        let r = retry_busy(|| {
            calls += 1;
            match calls {
                1 => Err(failure(rusqlite::ffi::SQLITE_BUSY)),
                // SQLITE_BUSY_SNAPSHOT: a read snapshot gone stale.
                2 => Err(failure(rusqlite::ffi::SQLITE_BUSY | (2 << 8))),
                3 => Err(failure(rusqlite::ffi::SQLITE_LOCKED)),
                _ => Ok(calls),
            }
        });
        assert_eq!(r.ok(), Some(4));
        let mut calls = 0;
        let r: rusqlite::Result<()> = retry_busy(|| {
            calls += 1;
            Err(failure(rusqlite::ffi::SQLITE_CORRUPT))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[test]
    fn processes_opening_one_fresh_file_at_once_all_open_it() {
        // Eight threads each open their own connections on one new file,
        // as eight processes would, and switch it to WAL and migrate it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.db");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    open_connections(&path, &OpenOptions::default()).map(|_| ())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .unwrap()
                .expect("every opener gets a migrated database");
        }
    }
}
