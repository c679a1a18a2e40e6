//! The PostgreSQL store: for several leadrelay nodes on one database.
//!
//! - Ingest and delivery outcomes are batched in-process (group commit, as
//!   in SQLite) and written with multi-row `UNNEST` statements, so a batch
//!   of a hundred leads costs a handful of round trips and one WAL flush.
//! - Workers on every node claim with `FOR UPDATE SKIP LOCKED` under a lease;
//!   only the oldest unfinished delivery per contact is claimable, so one
//!   person's deliveries stay in order across nodes.
//! - New deliveries `NOTIFY` the channel `leadrelay_wake`; every node
//!   LISTENs and wakes its dispatcher (polling remains the fallback).
//! - Throttling pauses, circuit state, alert incidents and rate-limit budgets
//!   live in tables, so every node honours them: a "100/10s" destination
//!   gets 100 per window in total, not per node.
//! - Concurrent writers on different nodes may collide (same new contact,
//!   same vendor event id); such a batch is rolled back and run again.

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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use leadrelay_model::{Contact, Event, new_id};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Row};
use uuid::Uuid;

use super::common::{
    KeyCheck, escape_like, event_doc, from_ms, merge_overrides, percentile, skip_unreadable,
    unreadable, uuid_v7_floor_id,
};
use super::*;
use crate::contacts;
use rows::*;

pub use schema::current_version;

/// The channel new deliveries are announced on.
const WAKE_CHANNEL: &str = "leadrelay_wake";
/// Attempts a batch gets when it collides with another node's writes.
const CONFLICT_RETRIES: usize = 8;
/// Longest a background ANALYZE may take.
const ANALYZE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the LISTEN connection is checked.
const LISTEN_CHECK: Duration = Duration::from_secs(15);

/// The deadline of a batch written in the background (`storage.timeout`):
/// past it, the batch's callers get `Unavailable` and the pool's
/// connections are distrusted, so one dead connection cannot stall ingest.
#[derive(Clone)]
struct Deadline {
    limit: Duration,
    trust: Arc<Trust>,
}

impl Deadline {
    /// `work`'s result, or (outer `Err`) the error for a deadline passed.
    async fn run<T>(
        &self,
        pool: &PgPool,
        what: &str,
        work: impl std::future::Future<Output = StoreResult<T>>,
    ) -> Result<StoreResult<T>, StoreError> {
        let mut work = Box::pin(work);
        let result = tokio::time::timeout(self.limit, &mut work).await;
        // The connection goes back to the pool before the pool is purged.
        drop(work);
        result.map_err(|_| {
            self.trust.distrust(pool);
            StoreError::Unavailable(format!(
                "PostgreSQL did not answer {what} within {}",
                humantime::format_duration(self.limit)
            ))
        })
    }
}

type PgError = tokio_postgres::Error;
type PgPool = Pool;
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Runs a statement (prepared once per connection and cached).
pub(crate) async fn exec<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, PgError> {
    let st = c.prepare_cached(sql).await?;
    c.execute(&st, params).await
}

pub(crate) async fn query<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, PgError> {
    let st = c.prepare_cached(sql).await?;
    c.query(&st, params).await
}

async fn query_opt<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, PgError> {
    let st = c.prepare_cached(sql).await?;
    c.query_opt(&st, params).await
}

async fn query_one<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, PgError> {
    let st = c.prepare_cached(sql).await?;
    c.query_one(&st, params).await
}

struct IngestJob {
    items: Vec<IngestItem>,
    docs: Vec<String>,
    reply: oneshot::Sender<StoreResult<Vec<IngestOutcome>>>,
}

struct CompleteJob {
    completions: Vec<Completion>,
    reply: oneshot::Sender<StoreResult<()>>,
}

pub struct PostgresStore {
    pool: Pool,
    trust: Arc<Trust>,
    hub: Arc<WakeHub>,
    ingest_tx: Mutex<Option<mpsc::Sender<IngestJob>>>,
    complete_tx: Mutex<Option<mpsc::Sender<CompleteJob>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// The leases this node claims begin with these bytes (from its
    /// `node_id`), so a restart can find its previous run's leases.
    lease_prefix: Option<[u8; LEASE_PREFIX]>,
}

/// Bytes of a lease id that name the node that claimed it.
const LEASE_PREFIX: usize = 6;

/// The lease-id prefix of a node: the first bytes of a hash of its name.
fn lease_prefix(node_id: &str) -> [u8; LEASE_PREFIX] {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(node_id.as_bytes());
    let mut p = [0u8; LEASE_PREFIX];
    p.copy_from_slice(&hash[..LEASE_PREFIX]);
    p
}

/// A fresh lease id: a node's prefix then random bytes (a UUIDv8), or a
/// UUIDv7 for a node without a name.
fn new_lease_id(prefix: Option<[u8; LEASE_PREFIX]>) -> Uuid {
    let Some(p) = prefix else {
        return new_id();
    };
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes[LEASE_PREFIX..]);
    bytes[..LEASE_PREFIX].copy_from_slice(&p);
    // Version 8 (custom) and the RFC 9562 variant, after the prefix.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// The smallest and largest lease id with `prefix` (uuid order is byte order).
fn lease_range(prefix: [u8; LEASE_PREFIX]) -> (Uuid, Uuid) {
    let (mut lo, mut hi) = ([0u8; 16], [0xffu8; 16]);
    lo[..LEASE_PREFIX].copy_from_slice(&prefix);
    hi[..LEASE_PREFIX].copy_from_slice(&prefix);
    (Uuid::from_bytes(lo), Uuid::from_bytes(hi))
}

/// Maps driver errors: an unreachable database is `Unavailable` (503);
/// unique violations are conflicts.
fn map_err(e: PgError) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        return StoreError::Conflict(e.to_string());
    }
    StoreError::Unavailable(describe(&e))
}

/// The driver's error with its cause (the database's message).
fn describe(e: &PgError) -> String {
    match std::error::Error::source(e) {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

/// TCP settings for every database socket, so the kernel notices a peer
/// that vanished (a partition, a dead primary) in seconds rather than the
/// ~15 minutes of retransmissions it would otherwise wait.
fn harden(config: &mut tokio_postgres::Config) {
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        // Unacknowledged data for this long fails the socket (Linux).
        .tcp_user_timeout(Duration::from_secs(15));
}

/// Which pooled connections are still trusted. A call that ran past its
/// deadline (the database stopped answering) drops every idle connection,
/// and connections that were out of the pool then are checked with an
/// empty query before they are handed out again.
#[derive(Default)]
struct Trust {
    distrusted_at: Mutex<Option<std::time::Instant>>,
}

/// How long the check of a distrusted connection may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(2);

impl Trust {
    fn distrust(&self, pool: &PgPool) {
        *self.distrusted_at.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::time::Instant::now());
        let dropped = pool.retain(|_, _| false).removed.len();
        tracing::debug!(dropped, "dropped idle database connections after a timeout");
    }

    /// Whether a connection last handed out `last_used` ago predates the
    /// latest timeout.
    fn suspect(&self, last_used: Duration) -> bool {
        self.distrusted_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| last_used >= at.elapsed())
    }

    /// The pool hook that checks suspect connections before reuse.
    fn verify_hook(self: &Arc<Self>) -> deadpool_postgres::Hook {
        let trust = self.clone();
        deadpool_postgres::Hook::async_fn(move |client, metrics| {
            let suspect = trust.suspect(metrics.last_used());
            Box::pin(async move {
                if !suspect {
                    return Ok(());
                }
                match tokio::time::timeout(VERIFY_TIMEOUT, client.simple_query("")).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(deadpool_postgres::HookError::Backend(e)),
                    Err(_) => Err(deadpool_postgres::HookError::message(
                        "the connection did not answer its check",
                    )),
                }
            })
        })
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("PostgreSQL unavailable: {e}"))
}

/// Errors worth running the whole batch again for: serialization failures,
/// deadlocks, and unique violations from a concurrent node.
fn is_retryable(e: &PgError) -> bool {
    matches!(
        e.code(),
        Some(c) if c == &SqlState::T_R_SERIALIZATION_FAILURE || c == &SqlState::T_R_DEADLOCK_DETECTED || c == &SqlState::UNIQUE_VIOLATION
    )
}

enum BatchError {
    /// Another node wrote the same thing first: run the batch again.
    Collision,
    Failed(StoreError),
}

impl From<PgError> for BatchError {
    fn from(e: PgError) -> Self {
        if is_retryable(&e) {
            BatchError::Collision
        } else {
            BatchError::Failed(map_err(e))
        }
    }
}

impl From<deadpool_postgres::PoolError> for BatchError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        BatchError::Failed(pool_err(e))
    }
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        BatchError::Failed(e)
    }
}

impl PostgresStore {
    pub async fn open(url: &str, options: &OpenOptions) -> StoreResult<Self> {
        crate::init_crypto();
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        config
            .application_name("leadrelay")
            // Custom plans: the outbox grows and shrinks by orders of
            // magnitude, and a generic plan cached while it was small (a
            // nested loop of sequential scans) would stall claims later.
            .options(format!(
                "-c statement_timeout={} -c plan_cache_mode=force_custom_plan",
                options.statement_timeout.as_millis()
            ))
            .connect_timeout(Duration::from_secs(5));
        harden(&mut config);
        let tls = tls_connector(options.tls_verify);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let trust = Arc::new(Trust::default());
        let pool = Pool::builder(manager)
            .pre_recycle(trust.verify_hook())
            .max_size(options.pool_size.max(4))
            .wait_timeout(Some(Duration::from_secs(3)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(format!("cannot build the connection pool: {e}")))?;
        migrate(&pool).await?;

        let hub = Arc::new(WakeHub::default());
        let (ingest_tx, ingest_rx) = mpsc::channel::<IngestJob>(4096);
        let (complete_tx, complete_rx) = mpsc::channel::<CompleteJob>(4096);
        let max = options.group_commit_max.max(1);
        let ingest_rx = Arc::new(tokio::sync::Mutex::new(ingest_rx));
        let mut tasks = Vec::new();
        let analyzer = Arc::new(Analyzer::default());
        // Two ingest batchers overlap one batch's commit with the next batch.
        for _ in 0..2 {
            tasks.push(tokio::spawn(ingest_loop(
                pool.clone(),
                ingest_rx.clone(),
                max,
                analyzer.clone(),
                options.contact_rules.clone(),
                options.lead_hook.clone(),
                Deadline {
                    limit: options.call_timeout,
                    trust: trust.clone(),
                },
            )));
        }
        tasks.push(tokio::spawn(complete_loop(
            pool.clone(),
            complete_rx,
            max,
            Deadline {
                limit: options.call_timeout,
                trust: trust.clone(),
            },
        )));
        let listener = tokio::spawn(listen_loop(config, tls, hub.clone(), options.call_timeout));
        Ok(Self {
            pool,
            trust,
            hub,
            ingest_tx: Mutex::new(Some(ingest_tx)),
            complete_tx: Mutex::new(Some(complete_tx)),
            tasks: Mutex::new(tasks),
            listener: Mutex::new(Some(listener)),
            lease_prefix: options
                .node_id
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(lease_prefix),
        })
    }

    async fn conn(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }
}

/// TLS for PostgreSQL connections, as libpq does it: with the URL's
/// default `sslmode=prefer` (or `require`) the connection is encrypted when
/// the server offers TLS, without checking its certificate; with
/// `storage.tls_verify = true` the certificate must chain to the Mozilla
/// roots and match the host name. `sslmode=disable` turns TLS off.
fn tls_connector(verify: bool) -> tokio_postgres_rustls::MakeRustlsConnect {
    if verify {
        return tokio_postgres_rustls::MakeRustlsConnect::with_webpki_roots();
    }
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(EncryptOnly))
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// Accepts the server's certificate without checking it (libpq's
/// `sslmode=require`): the link is encrypted, the server not authenticated.
#[derive(Debug)]
struct EncryptOnly;

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

async fn migrate(pool: &PgPool) -> StoreResult<()> {
    let conn = pool.get().await.map_err(pool_err)?;
    // Several nodes may start at once: one migrates, the others wait. The
    // lock comes first: two sessions running CREATE TABLE IF NOT EXISTS on
    // a fresh database at the same moment can both try to create it, and
    // the loser fails on PostgreSQL's catalog (a unique violation).
    exec(
        &conn,
        "SELECT pg_advisory_lock($1)",
        &[&schema::MIGRATION_LOCK],
    )
    .await
    .map_err(map_err)?;
    let mut conn = conn;
    let result: StoreResult<()> = async {
        conn.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .await
            .map_err(map_err)?;
        let applied: i32 =
            query_one(&conn, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await.map_err(map_err)?.get(0);
        let applied = applied.max(0) as u32;
        if applied > schema::current_version() {
            return Err(StoreError::Config(format!(
                "the database schema (version {applied}) is newer than this leadrelay (version {}); upgrade leadrelay",
                schema::current_version()
            )));
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(applied as usize) {
            let version = i as i32 + 1;
            let tx = conn.transaction().await.map_err(map_err)?;
            tx.batch_execute(sql).await.map_err(|e| StoreError::Unavailable(format!("migration {version} failed: {}", describe(&e))))?;
            exec(&tx, "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", &[&version, &Utc::now().timestamp_millis()])
                .await
                .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
        }
        Ok(())
    }
    .await;
    let _ = exec(
        &conn,
        "SELECT pg_advisory_unlock($1)",
        &[&schema::MIGRATION_LOCK],
    )
    .await;
    result
}

/// Wakes local dispatchers when any node commits new deliveries. Runs on
/// its own connection (LISTEN needs one), reconnecting with backoff;
/// polling covers the gaps.
async fn listen_loop(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    hub: Arc<WakeHub>,
    check_timeout: Duration,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let (client, mut connection) = match config.connect(tls.clone()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %describe(&e), "LISTEN connection failed; polling meanwhile");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<AsyncMessage>();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = futures::StreamExt::next(&mut messages).await {
                match m {
                    Ok(msg) => {
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %describe(&e), "LISTEN connection lost");
                        return;
                    }
                }
            }
        });
        if let Err(e) = client
            .batch_execute(&format!("LISTEN {WAKE_CHANNEL}"))
            .await
        {
            tracing::warn!(error = %describe(&e), "LISTEN failed; polling meanwhile");
            driver.abort();
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(200);
        // A connection that died silently delivers nothing: check it now
        // and then, and connect again when it does not answer.
        let mut check = tokio::time::interval(LISTEN_CHECK);
        check.tick().await;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(AsyncMessage::Notification(n)) => {
                        for d in n.payload().split(',').filter(|d| !d.is_empty()) {
                            hub.wake(d);
                        }
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = check.tick() => {
                    if !matches!(tokio::time::timeout(check_timeout, client.simple_query("")).await, Ok(Ok(_))) {
                        tracing::warn!("LISTEN connection stopped answering; connecting again");
                        break;
                    }
                }
            }
        }
        driver.abort();
        drop(client);
        tokio::time::sleep(backoff).await;
    }
}

/// Keeps the planner's statistics up with a fast-growing outbox.
///
/// The partial indexes of `deliveries` are created on an empty table, so
/// until the first ANALYZE PostgreSQL believes they hold no rows and plans
/// the claim's per-contact check as a scan of every active delivery (O(n²)
/// over a backlog). Autovacuum first looks after up to a minute; a backlog of
/// tens of thousands can arrive in seconds. So the store runs ANALYZE itself
/// each time the rows it added grow by a quarter (at least 1,000).
#[derive(Default)]
pub(crate) struct Analyzer {
    added: std::sync::atomic::AtomicU64,
    analyzed_at: std::sync::atomic::AtomicU64,
    running: std::sync::atomic::AtomicBool,
}

impl Analyzer {
    fn record(self: &Arc<Self>, pool: &PgPool, rows: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.added.fetch_add(rows, Relaxed) + rows;
        let last = self.analyzed_at.load(Relaxed);
        if total - last < (last / 4).max(1000) || self.running.swap(true, Relaxed) {
            return;
        }
        let (this, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            let analyze = async {
                if let Ok(c) = pool.get().await
                    && let Err(e) = c.batch_execute("ANALYZE deliveries, events").await
                {
                    tracing::debug!(error = %describe(&e), "ANALYZE failed");
                }
            };
            // A database that stopped answering must not stop statistics for good.
            if tokio::time::timeout(ANALYZE_TIMEOUT, analyze)
                .await
                .is_err()
            {
                tracing::debug!("ANALYZE did not finish in time");
            }
            this.analyzed_at.store(total, Relaxed);
            this.running.store(false, Relaxed);
        });
    }
}

/// Takes waiting ingest jobs (up to `max` items) and writes them in one transaction.
async fn ingest_loop(
    pool: PgPool,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<IngestJob>>>,
    max: usize,
    analyzer: Arc<Analyzer>,
    rules: Arc<contacts::MergeRules>,
    hook: Option<Arc<crate::pipeline::LeadHook>>,
    deadline: Deadline,
) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut n = first.items.len();
            jobs.push(first);
            while n < max {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.items.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
        }
        let batch = deadline
            .run(
                &pool,
                "the ingest batch",
                ingest_with_retries(&pool, &rules, &jobs, hook.as_deref()),
            )
            .await;
        let batch = match batch {
            Ok(b) => b,
            Err(timeout) => {
                // The database is not answering: running the jobs one by
                // one would only multiply the wait.
                for job in jobs {
                    let _ = job.reply.send(Err(timeout.clone()));
                }
                continue;
            }
        };
        match batch {
            Ok(outcomes) => {
                let added: u64 = jobs
                    .iter()
                    .flat_map(|j| j.items.iter())
                    .map(|i| i.destinations.len() as u64 + 1)
                    .sum();
                analyzer.record(&pool, added);
                for (job, out) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(out);
                }
            }
            Err(e) if jobs.len() > 1 => {
                // One job may be at fault: run each alone so the others succeed.
                tracing::debug!(error = %e, "ingest batch failed; retrying its jobs one by one");
                let mut gave_up: Option<StoreError> = None;
                for job in jobs {
                    if let Some(timeout) = &gave_up {
                        let _ = job.reply.send(Err(timeout.clone()));
                        continue;
                    }
                    let result = deadline
                        .run(
                            &pool,
                            "an ingest job",
                            ingest_with_retries(
                                &pool,
                                &rules,
                                std::slice::from_ref(&job),
                                hook.as_deref(),
                            ),
                        )
                        .await
                        .inspect_err(|timeout| gave_up = Some(timeout.clone()))
                        .and_then(|r| r)
                        .and_then(|mut v| v.remove(0));
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

async fn ingest_with_retries(
    pool: &PgPool,
    rules: &contacts::MergeRules,
    jobs: &[IngestJob],
    hook: Option<&crate::pipeline::LeadHook>,
) -> StoreResult<Vec<StoreResult<Vec<IngestOutcome>>>> {
    for attempt in 0..CONFLICT_RETRIES {
        match ingest_batch(pool, rules, jobs, hook).await {
            Ok(v) => return Ok(v),
            Err(BatchError::Collision) => {
                tokio::time::sleep(Duration::from_millis(5 * (attempt as u64 + 1))).await;
            }
            Err(BatchError::Failed(e)) => return Err(e),
        }
    }
    Err(StoreError::Unavailable(
        "ingest kept colliding with concurrent writers".into(),
    ))
}

/// What one item of a batch becomes.
enum Plan {
    Duplicate(Uuid),
    Store {
        contact_email: Option<String>,
        /// Without an email: the company domain + name to match by.
        secondary: Option<contacts::SecondaryKey>,
    },
}

async fn ingest_batch(
    pool: &PgPool,
    rules: &contacts::MergeRules,
    jobs: &[IngestJob],
    hook: Option<&crate::pipeline::LeadHook>,
) -> Result<Vec<StoreResult<Vec<IngestOutcome>>>, BatchError> {
    let now = Utc::now();
    let now_ms = now.timestamp_millis();
    let idem_cutoff = now_ms - IDEMPOTENCY_WINDOW_HOURS * 3_600_000;
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;

    // Idempotency keys and vendor event ids already stored.
    let (scopes, keys): (Vec<String>, Vec<String>) = jobs
        .iter()
        .flat_map(|j| j.items.iter())
        .filter_map(|i| {
            i.idempotency
                .as_ref()
                .map(|k| (k.scope.clone(), k.key.clone()))
        })
        .unzip();
    let mut known_keys: HashMap<(String, String), (Uuid, i64)> = HashMap::new();
    let mut known_prints: HashMap<(String, String), Option<String>> = HashMap::new();
    if !scopes.is_empty() {
        let rows = query(
            &tx,
            "SELECT k.scope, k.key, k.event_id, k.created_at, k.fingerprint FROM idempotency_keys k \
             JOIN UNNEST($1::text[], $2::text[]) AS u(scope, key) ON k.scope = u.scope AND k.key = u.key",
            &[&scopes, &keys],
        )
        .await?;
        for r in rows {
            let created: i64 = r.get(3);
            if created >= idem_cutoff {
                known_prints.insert((r.get(0), r.get(1)), r.get(4));
            }
            known_keys.insert((r.get(0), r.get(1)), (r.get(2), created));
        }
    }
    // A job whose key names another request of its client is refused whole,
    // before anything is written; the other jobs of the batch go on.
    let mut check = KeyCheck::default();
    let mut refused: Vec<Option<Vec<usize>>> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let reused = check.reused(&job.items, |k| {
            Ok(known_prints.get(&(k.scope.clone(), k.key.clone())).cloned())
        })?;
        refused.push((!reused.is_empty()).then_some(reused));
    }
    let items: Vec<(&IngestItem, &String)> = jobs
        .iter()
        .zip(&refused)
        .filter(|(_, r)| r.is_none())
        .flat_map(|(j, _)| j.items.iter().zip(j.docs.iter()))
        .collect();
    let mut ext = (
        Vec::<String>::new(),
        Vec::<String>::new(),
        Vec::<String>::new(),
    );
    for (i, _) in &items {
        if let Some(x) = &i.event.external_id {
            ext.0.push(i.event.origin.kind.as_str().to_string());
            ext.1.push(i.event.origin.name.clone());
            ext.2.push(x.clone());
        }
    }
    let mut known_ext: HashMap<(String, String, String), Uuid> = HashMap::new();
    if !ext.0.is_empty() {
        let rows = query(
            &tx,
            "SELECT e.origin_kind, e.origin_name, e.external_id, e.id FROM events e \
             JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS u(k, n, x) \
             ON e.origin_kind = u.k AND e.origin_name = u.n AND e.external_id = u.x",
            &[&ext.0, &ext.1, &ext.2],
        )
        .await?;
        for r in rows {
            known_ext.insert((r.get(0), r.get(1), r.get(2)), r.get(3));
        }
    }

    // Decide each item in order (earlier items of the batch count too).
    let mut stale_keys = (Vec::<String>::new(), Vec::<String>::new());
    let mut plans = Vec::with_capacity(items.len());
    for (item, _) in &items {
        let e = &item.event;
        if let Some(k) = &item.idempotency {
            match known_keys.get(&(k.scope.clone(), k.key.clone())) {
                Some((event_id, created)) if *created >= idem_cutoff => {
                    plans.push(Plan::Duplicate(*event_id));
                    continue;
                }
                Some(_) => {
                    stale_keys.0.push(k.scope.clone());
                    stale_keys.1.push(k.key.clone());
                }
                None => {}
            }
        }
        if let Some(x) = &e.external_id {
            let id = (
                e.origin.kind.as_str().to_string(),
                e.origin.name.clone(),
                x.clone(),
            );
            if let Some(event_id) = known_ext.get(&id) {
                plans.push(Plan::Duplicate(*event_id));
                continue;
            }
            known_ext.insert(id, e.id);
        }
        if let Some(k) = &item.idempotency {
            known_keys.insert((k.scope.clone(), k.key.clone()), (e.id, now_ms));
        }
        let email = (!e.spam)
            .then(|| e.contact.email.as_ref().map(|m| m.as_str().to_string()))
            .flatten();
        let secondary = (!e.spam && email.is_none())
            .then(|| contacts::secondary_key(&e.contact))
            .flatten();
        plans.push(Plan::Store {
            contact_email: email,
            secondary,
        });
    }

    // Golden contacts: lock the existing ones in a fixed order (no
    // deadlocks between nodes), merge in item order.
    // Events matched by company domain + name lock that domain's contacts
    // in the same statement (one lock order).
    let mut emails: BTreeSet<String> = BTreeSet::new();
    let mut domains: BTreeSet<String> = BTreeSet::new();
    for p in &plans {
        match p {
            Plan::Store {
                contact_email: Some(e),
                ..
            } => {
                emails.insert(e.clone());
            }
            Plan::Store {
                secondary: Some(k), ..
            } => {
                domains.insert(k.domain.clone());
            }
            _ => {}
        }
    }
    let mut contacts_by_email: HashMap<String, (Contact, bool)> = HashMap::new();
    if !emails.is_empty() || !domains.is_empty() {
        let list: Vec<String> = emails.iter().cloned().collect();
        let domain_list: Vec<String> = domains.iter().cloned().collect();
        let rows = query(
            &tx,
            "SELECT email, doc FROM contacts WHERE email = ANY($1) OR domain = ANY($2) ORDER BY email FOR UPDATE",
            &[&list, &domain_list],
        )
        .await?;
        for r in rows {
            let email: String = r.get(0);
            let doc: String = r.get(1);
            let c: Contact = contact_from_doc(&doc)?;
            contacts_by_email.insert(email, (c, false));
        }
    }
    let mut event_contact: Vec<Option<Uuid>> = Vec::with_capacity(items.len());
    // Per item, the email of the contact it was merged into.
    let mut event_email: Vec<Option<String>> = Vec::with_capacity(items.len());
    let mut reviews = Vec::new();
    let mut merged_emails: BTreeSet<String> = BTreeSet::new();
    let mut lead_effects = Vec::new();
    for ((item, _), plan) in items.iter().zip(&plans) {
        let email = match plan {
            Plan::Store {
                contact_email: Some(email),
                ..
            } => Some(email.clone()),
            Plan::Store {
                secondary: Some(key),
                ..
            } => {
                // Candidates include contacts created earlier in this batch.
                let mut candidates: Vec<&Contact> = contacts_by_email
                    .values()
                    .map(|(c, _)| c)
                    .filter(|c| c.data.domain.as_deref() == Some(key.domain.as_str()))
                    .collect();
                candidates.sort_by_key(|c| c.id);
                let owned: Vec<Contact> = candidates.into_iter().cloned().collect();
                match contacts::secondary_match(key, &item.event.contact, &owned) {
                    contacts::SecondaryMatch::Unique(i) => {
                        owned[i].data.email.as_ref().map(|e| e.as_str().to_string())
                    }
                    contacts::SecondaryMatch::Ambiguous(ids) => {
                        reviews.push(contacts::ambiguous_match_review(
                            &item.event,
                            key,
                            &ids,
                            now,
                        ));
                        None
                    }
                    contacts::SecondaryMatch::None => None,
                }
            }
            _ => None,
        };
        let Some(email) = email else {
            event_contact.push(None);
            event_email.push(None);
            continue;
        };
        event_email.push(Some(email.clone()));
        let email = &email;
        let existing = contacts_by_email.remove(email);
        let was_new = existing.as_ref().is_none_or(|(_, new)| *new);
        match contacts::merge_with(rules, existing.map(|(c, _)| c), &item.event, now) {
            Some(mut merged) => {
                if let Some(h) = hook {
                    lead_effects.push((merged.id, h.on_merge(&mut merged, &item.event, now)));
                }
                event_contact.push(Some(merged.id));
                merged_emails.insert(email.clone());
                contacts_by_email.insert(email.clone(), (merged, was_new));
            }
            None => event_contact.push(None),
        }
    }

    // Writes.
    if !stale_keys.0.is_empty() {
        exec(
            &tx,
            "DELETE FROM idempotency_keys k USING UNNEST($1::text[], $2::text[]) AS u(scope, key) \
             WHERE k.scope = u.scope AND k.key = u.key",
            &[&stale_keys.0, &stale_keys.1],
        )
        .await?;
    }
    let mut new_contacts = Vec::new();
    let mut old_contacts = Vec::new();
    // Contacts locked only as secondary-match candidates stay as they are.
    for (email, (c, is_new)) in &contacts_by_email {
        if !merged_emails.contains(email) {
            continue;
        }
        if *is_new {
            new_contacts.push(c)
        } else {
            old_contacts.push(c)
        }
    }
    if !new_contacts.is_empty() {
        let c = ContactColumns::new(&new_contacts)?;
        let inserted = exec(
            &tx,
            "INSERT INTO contacts (id, email, phone, domain, doc, created_at, updated_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[]) \
             ON CONFLICT (email) DO NOTHING",
            &[&c.id, &c.email, &c.phone, &c.domain, &c.doc, &c.created_at, &c.updated_at],
        )
        .await?;
        if inserted as usize != new_contacts.len() {
            // Another node created one of these people meanwhile.
            return Err(BatchError::Collision);
        }
    }
    if !old_contacts.is_empty() {
        let c = ContactColumns::new(&old_contacts)?;
        exec(
            &tx,
            "UPDATE contacts c SET phone = u.phone, domain = u.domain, doc = u.doc, updated_at = u.updated_at \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS u(id, phone, domain, doc, updated_at) \
             WHERE c.id = u.id",
            &[&c.id, &c.phone, &c.domain, &c.doc, &c.updated_at],
        )
        .await?;
    }

    for item in &reviews {
        admin::insert_review_item(&tx, item).await?;
    }
    lead::write_effects(&tx, &lead_effects, now_ms).await?;

    let mut ev = EventColumns::default();
    let mut dl = DeliveryColumns::default();
    let mut idem = (
        Vec::<String>::new(),
        Vec::<String>::new(),
        Vec::<Uuid>::new(),
        Vec::<Option<String>>::new(),
    );
    let mut woken: BTreeSet<String> = BTreeSet::new();
    for ((((item, doc), plan), contact_id), contact_email) in items
        .iter()
        .zip(&plans)
        .zip(&event_contact)
        .zip(&event_email)
    {
        if matches!(plan, Plan::Duplicate(_)) {
            continue;
        }
        let e = &item.event;
        ev.push(e, doc, *contact_id);
        if let Some(k) = &item.idempotency {
            idem.0.push(k.scope.clone());
            idem.1.push(k.key.clone());
            idem.2.push(e.id);
            idem.3.push(k.fingerprint.clone());
        }
        if !e.spam {
            let key = match contact_email {
                Some(email) => format!("email:{email}"),
                None => e.contact_key(),
            };
            for d in &item.destinations {
                dl.push(new_id(), e.id, d, &key, now_ms);
                woken.insert(d.clone());
            }
        }
    }
    if !ev.id.is_empty() {
        let n = ev.insert(&tx).await?;
        if n as usize != ev.id.len() {
            // A concurrent node stored one of these vendor events first.
            return Err(BatchError::Collision);
        }
    }
    if !idem.0.is_empty() {
        let n = exec(
            &tx,
            "INSERT INTO idempotency_keys (scope, key, event_id, created_at, fingerprint) \
             SELECT u.scope, u.key, u.event_id, $4, u.fingerprint \
             FROM UNNEST($1::text[], $2::text[], $3::uuid[], $5::text[]) AS u(scope, key, event_id, fingerprint) \
             ON CONFLICT DO NOTHING",
            &[&idem.0, &idem.1, &idem.2, &now_ms, &idem.3],
        )
        .await?;
        if n as usize != idem.0.len() {
            return Err(BatchError::Collision);
        }
    }
    if !dl.id.is_empty() {
        dl.insert(&tx).await?;
        let payload = woken.into_iter().collect::<Vec<_>>().join(",");
        exec(&tx, "SELECT pg_notify($1, $2)", &[&WAKE_CHANNEL, &payload]).await?;
    }
    tx.commit().await?;

    // Outcomes per job, in order.
    let mut plans = plans.into_iter().zip(items.iter());
    let mut out = Vec::with_capacity(jobs.len());
    for (job, refused) in jobs.iter().zip(refused) {
        if let Some(reused) = refused {
            out.push(Err(StoreError::IdempotencyKeyReused(reused)));
            continue;
        }
        let mut v = Vec::with_capacity(job.items.len());
        for _ in 0..job.items.len() {
            if let Some((plan, (item, _))) = plans.next() {
                v.push(match plan {
                    Plan::Duplicate(id) => IngestOutcome::Duplicate(id),
                    Plan::Store { .. } => IngestOutcome::Stored(item.event.id),
                });
            }
        }
        out.push(Ok(v));
    }
    Ok(out)
}

/// Applies waiting completions in one transaction.
async fn complete_loop(
    pool: PgPool,
    mut rx: mpsc::Receiver<CompleteJob>,
    max: usize,
    deadline: Deadline,
) {
    while let Some(first) = rx.recv().await {
        let mut n = first.completions.len();
        let mut jobs = vec![first];
        while n < max {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.completions.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let all: Vec<&Completion> = jobs.iter().flat_map(|j| j.completions.iter()).collect();
        let result = deadline
            .run(&pool, "the outcome batch", async {
                for attempt in 0..CONFLICT_RETRIES {
                    match complete_batch(&pool, &all).await {
                        Err(BatchError::Collision) => {
                            tokio::time::sleep(Duration::from_millis(5 * (attempt as u64 + 1)))
                                .await
                        }
                        Err(BatchError::Failed(e)) => return Err(e),
                        Ok(()) => return Ok(()),
                    }
                }
                Err(StoreError::Unavailable(
                    "outcomes kept colliding with concurrent writers".into(),
                ))
            })
            .await
            .and_then(|r| r);
        for job in jobs {
            let _ = job.reply.send(result.clone());
        }
    }
}

async fn complete_batch(pool: &PgPool, all: &[&Completion]) -> Result<(), BatchError> {
    let now_ms = Utc::now().timestamp_millis();
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    let mut at = AttemptColumns::default();
    let mut up = UpdateColumns::default();
    let mut rid = (
        Vec::<Uuid>::new(),
        Vec::<String>::new(),
        Vec::<String>::new(),
        Vec::<String>::new(),
    );
    for c in all {
        if let Some(a) = &c.attempt {
            at.push(a);
        }
        up.push(c);
        if let Transition::Delivered { remote_ids } = &c.transition {
            for r in remote_ids {
                rid.0.push(c.delivery_id);
                rid.1.push(r.key.clone());
                rid.2.push(r.object.clone());
                rid.3.push(r.id.clone());
            }
        }
    }
    if !at.id.is_empty() {
        at.insert(&tx).await?;
    }
    let applied: std::collections::HashSet<Uuid> =
        up.apply(&tx, now_ms).await?.into_iter().collect();
    // Follow-up events (dead-letter copies) only where the transition
    // applied; an external id already stored is not stored twice.
    let mut woken: BTreeSet<String> = BTreeSet::new();
    for c in all {
        let Some(item) = &c.follow_up else { continue };
        if !applied.contains(&c.delivery_id) || item.destinations.is_empty() || item.event.spam {
            continue;
        }
        let mut e = item.event.clone();
        let doc = event_doc(&mut e)?;
        let mut ev = EventColumns::default();
        ev.push(&item.event, &doc, item.event.contact_id);
        if ev.insert(&tx).await? == 0 {
            continue;
        }
        let mut dl = DeliveryColumns::default();
        let key = item.event.contact_key();
        for d in &item.destinations {
            dl.push(new_id(), item.event.id, d, &key, now_ms);
            woken.insert(d.clone());
        }
        dl.insert(&tx).await?;
    }
    if !woken.is_empty() {
        let payload = woken.into_iter().collect::<Vec<_>>().join(",");
        exec(&tx, "SELECT pg_notify($1, $2)", &[&WAKE_CHANNEL, &payload]).await?;
    }
    if !rid.0.is_empty() {
        // The destination comes from each delivery's own row. Several
        // deliveries of a batch can learn the same record (one company for
        // many people): the last one wins, as one upsert can touch a row
        // only once.
        exec(
            &tx,
            "INSERT INTO remote_ids (destination, key, object, remote_id, updated_at) \
             SELECT DISTINCT ON (d.destination, u.key, u.object) d.destination, u.key, u.object, u.remote_id, $5 \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS u(delivery_id, key, object, remote_id, n) \
             JOIN deliveries d ON d.id = u.delivery_id \
             ORDER BY d.destination, u.key, u.object, u.n DESC \
             ON CONFLICT (destination, key, object) DO UPDATE SET remote_id = EXCLUDED.remote_id, updated_at = EXCLUDED.updated_at",
            &[&rid.0, &rid.1, &rid.2, &rid.3, &now_ms],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Reads one golden contact by email over a single connection in a
/// read-only transaction: no pool, no migrations, no background tasks (for
/// `leadrelay simulate`, which must never write).
pub async fn peek_contact(
    url: &str,
    options: &OpenOptions,
    email: &str,
) -> StoreResult<Option<Contact>> {
    let docs = peek_docs(
        url,
        options,
        "SELECT doc FROM contacts WHERE email = $1",
        email,
    )
    .await?;
    docs.first().map(|d| contact_from_doc(d)).transpose()
}

/// The contacts of a company domain, read like [`peek_contact`].
pub async fn peek_contacts_by_domain(
    url: &str,
    options: &OpenOptions,
    domain: &str,
) -> StoreResult<Vec<Contact>> {
    let docs = peek_docs(
        url,
        options,
        "SELECT doc FROM contacts WHERE domain = $1 ORDER BY id",
        domain,
    )
    .await?;
    docs.iter().map(|d| contact_from_doc(d)).collect()
}

/// Runs one query with one text parameter returning `doc` rows, in a
/// read-only transaction on a connection of its own.
async fn peek_docs(
    url: &str,
    options: &OpenOptions,
    sql: &str,
    param: &str,
) -> StoreResult<Vec<String>> {
    let rows = peek_rows(url, options, sql, vec![param.to_string()]).await?;
    Ok(rows
        .into_iter()
        .filter_map(|mut r| r.drain(..).next().flatten())
        .collect())
}

/// Rows of a query whose columns are all text (or NULL), with text
/// parameters, in a read-only transaction on a connection of its own.
pub async fn peek_rows(
    url: &str,
    options: &OpenOptions,
    sql: &str,
    params: Vec<String>,
) -> StoreResult<Vec<Vec<Option<String>>>> {
    crate::init_crypto();
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
    config
        .application_name("leadrelay-simulate")
        .connect_timeout(Duration::from_secs(5));
    harden(&mut config);
    let (mut client, connection) = config
        .connect(tls_connector(options.tls_verify))
        .await
        .map_err(map_err)?;
    let driver = tokio::spawn(connection);
    let result = async {
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(map_err)?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = tx.query(sql, &refs).await.map_err(map_err)?;
        tx.rollback().await.map_err(map_err)?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get::<_, Option<String>>(i).map_err(map_err))
                    .collect()
            })
            .collect()
    }
    .await;
    drop(client);
    let _ = driver.await;
    result
}

fn contact_from_doc(doc: &str) -> StoreResult<Contact> {
    decode_doc(doc, &"contact")
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn wake_hub(&self) -> Arc<WakeHub> {
        self.hub.clone()
    }

    fn shared_rate_limits(&self) -> bool {
        true
    }

    async fn ready(&self) -> StoreResult<()> {
        let v = self.schema_version().await?;
        if v != schema::current_version() {
            return Err(StoreError::Unavailable(format!(
                "schema version {v}, expected {}",
                schema::current_version()
            )));
        }
        Ok(())
    }

    async fn schema_version(&self) -> StoreResult<u32> {
        let c = self.conn().await?;
        let v: i32 = query_one(
            &c,
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(map_err)?
        .get(0);
        Ok(v.max(0) as u32)
    }

    async fn ingest(&self, mut items: Vec<IngestItem>) -> StoreResult<Vec<IngestOutcome>> {
        let docs = items
            .iter_mut()
            .map(|i| event_doc(&mut i.event))
            .collect::<StoreResult<Vec<String>>>()?;
        let destinations: Vec<String> = items
            .iter()
            .filter(|i| !i.event.spam)
            .flat_map(|i| i.destinations.iter().cloned())
            .collect();
        let sender = self
            .ingest_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
        let (reply, rx) = oneshot::channel();
        sender
            .send(IngestJob { items, docs, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the ingest writer has stopped".into()))?;
        let out = rx
            .await
            .map_err(|_| StoreError::Unavailable("the ingest writer has stopped".into()))??;
        for d in destinations {
            self.hub.wake(&d);
        }
        Ok(out)
    }

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<Event>> {
        let c = self.conn().await?;
        let row = query_opt(
            &c,
            &format!("SELECT {EVENT_COLS} FROM events WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(map_err)?;
        row.map(|r| event_from_row(&r)).transpose()
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        let mut b = PgFilter::new(format!("SELECT {EVENT_COLS} FROM events WHERE TRUE"));
        if let Some(t) = &filter.event_type {
            b.push("type = ", Box::new(t.as_str().to_string()));
        }
        if let Some(k) = filter.origin_kind {
            b.push("origin_kind = ", Box::new(k.as_str().to_string()));
        }
        if let Some(n) = &filter.origin_name {
            b.push("origin_name = ", Box::new(n.clone()));
        }
        if let Some(s) = filter.since {
            b.push("id >= ", Box::new(uuid_v7_floor_id(s)));
        }
        if let Some(u) = filter.until {
            b.push("id < ", Box::new(uuid_v7_floor_id(u)));
        }
        if let Some(spam) = filter.spam {
            b.push("spam = ", Box::new(spam));
        }
        if let Some(cid) = filter.contact_id {
            b.push("contact_id = ", Box::new(cid));
        }
        if let Some(term) = filter
            .search
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            b.push_text_search(&format!("%{}%", escape_like(&term.to_lowercase())));
        }
        if let Some(bf) = before {
            b.push("id < ", Box::new(bf));
        }
        b.sql
            .push_str(&format!(" ORDER BY id DESC LIMIT {}", limit.clamp(1, 1000)));
        let c = self.conn().await?;
        let rows = b.fetch(&c).await?;
        skip_unreadable(rows.iter().map(event_from_row))
    }

    async fn get_contact(&self, id: Uuid) -> StoreResult<Option<Contact>> {
        let c = self.conn().await?;
        let row = query_opt(&c, "SELECT doc FROM contacts WHERE id = $1", &[&id])
            .await
            .map_err(map_err)?;
        row.map(|r| contact_from_doc(r.get(0))).transpose()
    }

    async fn find_contact_by_email(&self, email: &str) -> StoreResult<Option<Contact>> {
        let c = self.conn().await?;
        let email = email.trim().to_lowercase();
        let row = query_opt(&c, "SELECT doc FROM contacts WHERE email = $1", &[&email])
            .await
            .map_err(map_err)?;
        row.map(|r| contact_from_doc(r.get(0))).transpose()
    }

    async fn claim(
        &self,
        destination: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let now = Utc::now().timestamp_millis();
        let expires = now + lease.as_millis() as i64;
        let returning = DELIVERY_COLS
            .split(", ")
            .map(|c| format!("deliveries.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        // Per contact in order: a delivery waits for the contact's earlier
        // ones, except those waiting in a sequence tool's overflow queue
        // (`overflow: …`), which may wait days for a window.
        let sql = format!(
            "WITH due AS ( \
               SELECT d.id FROM deliveries d \
               WHERE d.destination = $1 AND d.state IN ('pending', 'scheduled', 'in_flight') AND d.next_attempt_at <= $2 \
                 AND NOT EXISTS ( \
                   SELECT 1 FROM deliveries p \
                   WHERE p.destination = d.destination AND p.contact_key = d.contact_key \
                     AND p.state IN ('pending', 'scheduled', 'in_flight') AND p.id < d.id \
                     AND NOT (p.state = 'scheduled' AND p.last_error LIKE 'overflow: %')) \
               ORDER BY d.next_attempt_at, d.id \
               LIMIT $3 \
               FOR UPDATE SKIP LOCKED) \
             UPDATE deliveries SET state = 'in_flight', lease_id = $4, next_attempt_at = $5, updated_at = $2 \
             FROM due WHERE deliveries.id = due.id \
             RETURNING {returning}"
        );
        let c = self.conn().await?;
        let rows = query(
            &c,
            &sql,
            &[
                &destination,
                &now,
                &(limit as i64),
                &new_lease_id(self.lease_prefix),
                &expires,
            ],
        )
        .await
        .map_err(map_err)?;
        let mut deliveries = rows
            .iter()
            .map(delivery_from_row)
            .collect::<StoreResult<Vec<Delivery>>>()?;
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        deliveries.sort_by_key(|d| d.id);
        let event_ids: Vec<Uuid> = deliveries.iter().map(|d| d.event_id).collect();
        let rows = query(
            &c,
            &format!("SELECT {EVENT_COLS} FROM events WHERE id = ANY($1)"),
            &[&event_ids],
        )
        .await
        .map_err(map_err)?;
        // A row that cannot be read dead-letters its own delivery, not the
        // whole claim.
        let mut events: HashMap<Uuid, StoreResult<Event>> = rows
            .iter()
            .map(|r| (r.get::<_, Uuid>(0), event_from_row(r)))
            .collect();
        let contact_ids: Vec<Uuid> = events
            .values()
            .filter_map(|e| e.as_ref().ok()?.contact_id)
            .collect();
        let mut contacts: HashMap<Uuid, StoreResult<Contact>> = HashMap::new();
        if !contact_ids.is_empty() {
            for r in query(
                &c,
                "SELECT id, doc FROM contacts WHERE id = ANY($1)",
                &[&contact_ids],
            )
            .await
            .map_err(map_err)?
            {
                contacts.insert(r.get(0), contact_from_doc(r.get(1)));
            }
        }
        drop(c);
        let mut claimed = Vec::with_capacity(deliveries.len());
        let mut orphans = Vec::new();
        for d in deliveries {
            let found = events.remove(&d.event_id).map(|event| {
                let event = event?;
                let contact = match event.contact_id.and_then(|id| contacts.get(&id)) {
                    Some(Err(e)) => return Err(e.clone()),
                    Some(Ok(c)) => Some(c.clone()),
                    None => None,
                };
                Ok((event, contact))
            });
            match found {
                Some(Ok((event, contact))) => {
                    claimed.push(ClaimedDelivery {
                        event,
                        contact,
                        delivery: d,
                    });
                }
                Some(Err(e)) => orphans.push(unreadable(&d, &e)),
                None => orphans.push(Completion {
                    delivery_id: d.id,
                    lease_id: d.lease_id.unwrap_or_default(),
                    attempt: None,
                    transition: Transition::Skipped {
                        reason: "event erased".into(),
                    },
                    follow_up: None,
                }),
            }
        }
        if !orphans.is_empty() {
            self.complete(orphans).await?;
        }
        Ok(claimed)
    }

    async fn release_own_leases(&self) -> StoreResult<u64> {
        let Some(prefix) = self.lease_prefix else {
            return Ok(0);
        };
        let (lo, hi) = lease_range(prefix);
        let now = Utc::now().timestamp_millis();
        let c = self.conn().await?;
        exec(
            &c,
            "UPDATE deliveries SET state = CASE WHEN attempts = 0 THEN 'pending' ELSE 'scheduled' END, \
             lease_id = NULL, next_attempt_at = $1, updated_at = $1 \
             WHERE state = 'in_flight' AND lease_id BETWEEN $2 AND $3",
            &[&now, &lo, &hi],
        )
        .await
        .map_err(map_err)
    }

    async fn next_due(&self, destination: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let c = self.conn().await?;
        let v: Option<i64> = query_one(
            &c,
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE destination = $1 AND state IN ('pending', 'scheduled', 'in_flight')",
            &[&destination],
        )
        .await
        .map_err(map_err)?
        .get(0);
        Ok(v.map(from_ms))
    }

    async fn complete(&self, completions: Vec<Completion>) -> StoreResult<()> {
        if completions.is_empty() {
            return Ok(());
        }
        let sender = self
            .complete_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
        let (reply, rx) = oneshot::channel();
        sender
            .send(CompleteJob { completions, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the outcome writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the outcome writer has stopped".into()))?
    }

    async fn get_delivery(&self, id: Uuid) -> StoreResult<Option<Delivery>> {
        let c = self.conn().await?;
        let row = query_opt(
            &c,
            &format!("SELECT {DELIVERY_COLS} FROM deliveries WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(map_err)?;
        row.map(|r| delivery_from_row(&r)).transpose()
    }

    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let mut b = PgFilter::new(format!("SELECT {DELIVERY_COLS} FROM deliveries WHERE TRUE"));
        if let Some(s) = filter.state {
            b.push("state = ", Box::new(s.as_str().to_string()));
        }
        if let Some(d) = &filter.destination {
            b.push("destination = ", Box::new(d.clone()));
        }
        if let Some(e) = filter.event_id {
            b.push("event_id = ", Box::new(e));
        }
        if let Some(s) = filter.since {
            b.push("id >= ", Box::new(uuid_v7_floor_id(s)));
        }
        if filter.exclude_replayed {
            b.sql.push_str(" AND replayed_by IS NULL");
        }
        if let Some(bf) = before {
            b.push("id < ", Box::new(bf));
        }
        b.sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {}",
            limit.clamp(1, 10_000)
        ));
        let c = self.conn().await?;
        let rows = b.fetch(&c).await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn deliveries_for_event(&self, event_id: Uuid) -> StoreResult<Vec<Delivery>> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            &format!("SELECT {DELIVERY_COLS} FROM deliveries WHERE event_id = $1 ORDER BY id"),
            &[&event_id],
        )
        .await
        .map_err(map_err)?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn attempts(&self, delivery_id: Uuid) -> StoreResult<Vec<Attempt>> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            &format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE delivery_id = $1 ORDER BY number, started_at"),
            &[&delivery_id],
        )
        .await
        .map_err(map_err)?;
        rows.iter().map(attempt_from_row).collect()
    }

    async fn replay(
        &self,
        ids: Vec<Uuid>,
        overrides: Option<Map<String, Value>>,
    ) -> StoreResult<Vec<(Uuid, Uuid)>> {
        let now = Utc::now().timestamp_millis();
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(map_err)?;
        let mut pairs = Vec::new();
        let mut woken = BTreeSet::new();
        for id in ids {
            let row = query_opt(
                &tx,
                "SELECT event_id, destination, contact_key, overrides FROM deliveries \
                 WHERE id = $1 AND state IN ('dead', 'discarded', 'skipped') AND replayed_by IS NULL FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(map_err)?;
            let Some(row) = row else { continue };
            let event_id: Uuid = row.get(0);
            let destination: String = row.get(1);
            let contact_key: String = row.get(2);
            let old: Option<String> = row.get(3);
            let merged = merge_overrides(old.as_deref(), overrides.as_ref());
            let new = new_id();
            exec(
                &tx,
                "INSERT INTO deliveries (id, event_id, destination, contact_key, state, created_at, updated_at, next_attempt_at, replay_of, overrides) \
                 VALUES ($1, $2, $3, $4, 'pending', $5, $5, $5, $6, $7)",
                &[&new, &event_id, &destination, &contact_key, &now, &id, &merged],
            )
            .await
            .map_err(map_err)?;
            exec(
                &tx,
                "UPDATE deliveries SET replayed_by = $2, updated_at = $3 WHERE id = $1",
                &[&id, &new, &now],
            )
            .await
            .map_err(map_err)?;
            pairs.push((id, new));
            woken.insert(destination);
        }
        if !woken.is_empty() {
            let payload = woken.iter().cloned().collect::<Vec<_>>().join(",");
            exec(&tx, "SELECT pg_notify($1, $2)", &[&WAKE_CHANNEL, &payload])
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        for d in woken {
            self.hub.wake(&d);
        }
        Ok(pairs)
    }

    async fn discard(&self, ids: Vec<Uuid>) -> StoreResult<usize> {
        let c = self.conn().await?;
        let n = exec(
            &c,
            "UPDATE deliveries SET state = 'discarded', updated_at = $2 WHERE id = ANY($1) AND state = 'dead'",
            &[&ids, &Utc::now().timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        Ok(n as usize)
    }

    async fn destination_states(&self) -> StoreResult<Vec<DestinationState>> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            &format!("SELECT {DEST_COLS} FROM destination_state ORDER BY name"),
            &[],
        )
        .await
        .map_err(map_err)?;
        rows.iter().map(dest_state_from_row).collect()
    }

    async fn destination_state(&self, name: &str) -> StoreResult<DestinationState> {
        let c = self.conn().await?;
        let row = query_opt(
            &c,
            &format!("SELECT {DEST_COLS} FROM destination_state WHERE name = $1"),
            &[&name],
        )
        .await
        .map_err(map_err)?;
        Ok(match row {
            Some(r) => dest_state_from_row(&r)?,
            None => DestinationState::new(name),
        })
    }

    async fn pause_destination(
        &self,
        name: &str,
        until: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<()> {
        let c = self.conn().await?;
        // Never shorten a longer pause another node already recorded.
        exec(
            &c,
            "INSERT INTO destination_state (name, paused_until, pause_reason, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET paused_until = GREATEST(COALESCE(destination_state.paused_until, 0), EXCLUDED.paused_until), \
             pause_reason = EXCLUDED.pause_reason, updated_at = EXCLUDED.updated_at",
            &[&name, &until.timestamp_millis(), &reason, &Utc::now().timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn resume_destination(&self, name: &str) -> StoreResult<()> {
        let c = self.conn().await?;
        exec(
            &c,
            "UPDATE destination_state SET paused_until = NULL, pause_reason = NULL, updated_at = $2 WHERE name = $1",
            &[&name, &Utc::now().timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        drop(c);
        self.notify(name).await;
        Ok(())
    }

    async fn set_destination_disabled(
        &self,
        name: &str,
        disabled: bool,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        let c = self.conn().await?;
        exec(
            &c,
            "INSERT INTO destination_state (name, disabled, disabled_reason, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET disabled = EXCLUDED.disabled, disabled_reason = EXCLUDED.disabled_reason, \
             updated_at = EXCLUDED.updated_at",
            &[&name, &disabled, &reason, &Utc::now().timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        drop(c);
        if !disabled {
            self.notify(name).await;
        }
        Ok(())
    }

    async fn set_circuit_state(&self, name: &str, state: &str) -> StoreResult<()> {
        let c = self.conn().await?;
        exec(
            &c,
            "INSERT INTO destination_state (name, circuit, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET circuit = EXCLUDED.circuit, updated_at = EXCLUDED.updated_at",
            &[&name, &state, &Utc::now().timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn remote_ids(&self, destination: &str, keys: &[String]) -> StoreResult<Vec<RemoteId>> {
        let c = self.conn().await?;
        let keys = keys.to_vec();
        let rows = query(&c, "SELECT object, key, remote_id FROM remote_ids WHERE destination = $1 AND key = ANY($2)", &[&destination, &keys])
            .await
            .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| RemoteId {
                object: r.get(0),
                key: r.get(1),
                id: r.get(2),
            })
            .collect())
    }

    async fn save_remote_ids(&self, destination: &str, ids: &[RemoteId]) -> StoreResult<()> {
        // Last wins per (key, object): one upsert can touch a row only once.
        let mut latest: HashMap<(&str, &str), &str> = HashMap::new();
        for r in ids {
            latest.insert((r.key.as_str(), r.object.as_str()), r.id.as_str());
        }
        if latest.is_empty() {
            return Ok(());
        }
        let (mut keys, mut objects, mut remote) = (Vec::new(), Vec::new(), Vec::new());
        for ((k, o), id) in latest {
            keys.push(k);
            objects.push(o);
            remote.push(id);
        }
        let c = self.conn().await?;
        exec(
            &c,
            "INSERT INTO remote_ids (destination, key, object, remote_id, updated_at) \
             SELECT $1, u.key, u.object, u.remote_id, $5 \
             FROM UNNEST($2::text[], $3::text[], $4::text[]) AS u(key, object, remote_id) \
             ON CONFLICT (destination, key, object) DO UPDATE SET remote_id = EXCLUDED.remote_id, updated_at = EXCLUDED.updated_at",
            &[&destination, &keys, &objects, &remote, &Utc::now().timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn kv_get(&self, key: &str) -> StoreResult<Option<String>> {
        let c = self.conn().await?;
        Ok(
            query_opt(&c, "SELECT value FROM kv WHERE key = $1", &[&key])
                .await
                .map_err(map_err)?
                .map(|r| r.get(0)),
        )
    }

    async fn kv_set(&self, key: &str, value: &str) -> StoreResult<()> {
        let c = self.conn().await?;
        exec(
            &c,
            "INSERT INTO kv (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
            &[&key, &value, &Utc::now().timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn kv_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        let c = self.conn().await?;
        exec(
            &c,
            "INSERT INTO kv (key, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
            &[&key, &value, &Utc::now().timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        drop(c);
        self.kv_get(key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("kv {key} vanished")))
    }

    async fn kv_compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> StoreResult<bool> {
        let c = self.conn().await?;
        let now = Utc::now().timestamp_millis();
        let n = match expected {
            None => {
                exec(&c, "INSERT INTO kv (key, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING", &[&key, &value, &now])
                    .await
            }
            Some(old) => {
                exec(&c, "UPDATE kv SET value = $2, updated_at = $3 WHERE key = $1 AND value = $4", &[&key, &value, &now, &old]).await
            }
        }
        .map_err(map_err)?;
        Ok(n == 1)
    }

    async fn rate_acquire(
        &self,
        destination: &str,
        interval: Duration,
    ) -> StoreResult<Option<Duration>> {
        let c = self.conn().await?;
        let now = Utc::now().timestamp_millis();
        let step = interval.as_millis().max(1) as i64;
        // GCRA with a burst of one: a request may go when the theoretical
        // arrival time has come; it then moves one interval on.
        let granted = query_opt(
            &c,
            "INSERT INTO rate_limits (destination, tat) VALUES ($1, $2::bigint + $3::bigint) \
             ON CONFLICT (destination) DO UPDATE SET tat = GREATEST(rate_limits.tat, $2::bigint) + $3::bigint \
             WHERE rate_limits.tat <= $2::bigint \
             RETURNING tat",
            &[&destination, &now, &step],
        )
        .await
        .map_err(map_err)?;
        if granted.is_some() {
            return Ok(None);
        }
        let tat: i64 = query_one(
            &c,
            "SELECT tat FROM rate_limits WHERE destination = $1",
            &[&destination],
        )
        .await
        .map_err(map_err)?
        .get(0);
        Ok(Some(Duration::from_millis((tat - now).max(1) as u64)))
    }

    async fn destination_stats(&self, since: DateTime<Utc>) -> StoreResult<Vec<DestinationStats>> {
        let since_ms = since.timestamp_millis();
        let since_id = uuid_v7_floor_id(since);
        let c = self.conn().await?;
        let mut by: std::collections::BTreeMap<String, DestinationStats> = Default::default();
        fn entry(
            by: &mut std::collections::BTreeMap<String, DestinationStats>,
            d: String,
        ) -> &mut DestinationStats {
            by.entry(d.clone()).or_insert_with(|| DestinationStats {
                destination: d,
                ..Default::default()
            })
        }
        for r in query(
            &c,
            "SELECT destination, state, COUNT(*) FROM deliveries \
             WHERE state IN ('pending', 'scheduled', 'in_flight', 'dead') GROUP BY destination, state",
            &[],
        )
        .await
        .map_err(map_err)?
        {
            let state: String = r.get(1);
            let n = r.get::<_, i64>(2) as u64;
            let s = entry(&mut by, r.get(0));
            match state.as_str() {
                "pending" => s.pending += n,
                "in_flight" => s.in_flight += n,
                "scheduled" => s.scheduled += n,
                "dead" => s.dead += n,
                _ => {}
            }
        }
        for r in query(&c, "SELECT destination, outcome, COUNT(*) FROM attempts WHERE id >= $1 GROUP BY destination, outcome", &[&since_id])
            .await
            .map_err(map_err)?
        {
            let outcome: String = r.get(1);
            let n = r.get::<_, i64>(2) as u64;
            let s = entry(&mut by, r.get(0));
            s.window_attempts += n;
            match outcome.as_str() {
                "delivered" => s.window_succeeded += n,
                "retry" | "dead" => s.window_failed += n,
                _ => {}
            }
        }
        for r in query(
            &c,
            "SELECT destination, COUNT(*) FROM deliveries WHERE state = 'dead' AND finished_at >= $1 GROUP BY destination",
            &[&since_ms],
        )
        .await
        .map_err(map_err)?
        {
            let n = r.get::<_, i64>(1) as u64;
            entry(&mut by, r.get(0)).window_dead = n;
        }
        for s in by.values_mut() {
            let mut lat: Vec<u64> = query(
                &c,
                "SELECT duration_ms FROM attempts WHERE id >= $1 AND destination = $2 AND outcome = 'delivered' ORDER BY id DESC LIMIT 20000",
                &[&since_id, &s.destination],
            )
            .await
            .map_err(map_err)?
            .iter()
            .map(|r| r.get::<_, i64>(0).max(0) as u64)
            .collect();
            lat.sort_unstable();
            s.latency_p50_ms = percentile(&lat, 0.50);
            s.latency_p99_ms = percentile(&lat, 0.99);
        }
        Ok(by.into_values().collect())
    }

    async fn purge(&self, policy: &PurgePolicy) -> StoreResult<PurgeReport> {
        let mut report = PurgeReport::default();
        let c = self.conn().await?;
        let chunked = [
            (
                "UPDATE events SET raw_body = NULL WHERE id IN (SELECT id FROM events WHERE id < $1 AND raw_body IS NOT NULL LIMIT 5000)",
                uuid_v7_floor_id(policy.raw_payloads_before),
            ),
            (
                "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE id < $1 LIMIT 5000)",
                uuid_v7_floor_id(policy.attempts_before),
            ),
            (
                "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries WHERE id < $1 AND state IN \
                 ('delivered', 'skipped', 'discarded') LIMIT 5000)",
                uuid_v7_floor_id(policy.finished_deliveries_before),
            ),
        ];
        for (i, (sql, cutoff)) in chunked.into_iter().enumerate() {
            loop {
                let n = exec(&c, sql, &[&cutoff]).await.map_err(map_err)?;
                match i {
                    0 => report.raw_payloads += n,
                    1 => report.attempts += n,
                    _ => report.deliveries += n,
                }
                if n < 5000 {
                    break;
                }
            }
        }
        report.idempotency_keys = exec(
            &c,
            "DELETE FROM idempotency_keys WHERE created_at < $1",
            &[&policy.idempotency_before.timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
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

    fn distrust_connections(&self) {
        self.trust.distrust(&self.pool);
    }

    async fn close(&self) {
        drop(
            self.ingest_tx
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        drop(
            self.complete_tx
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
        if let Some(l) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            l.abort();
        }
        self.pool.close();
    }
}

impl PostgresStore {
    /// Tells every node's dispatcher for `destination` to look for work.
    async fn notify(&self, destination: &str) {
        self.hub.wake(destination);
        if let Ok(c) = self.conn().await {
            let _ = exec(
                &c,
                "SELECT pg_notify($1, $2)",
                &[&WAKE_CHANNEL, &destination],
            )
            .await;
        }
    }
}

/// A SELECT with optional conditions and numbered parameters.
struct PgFilter {
    sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
    n: usize,
}

impl PgFilter {
    fn new(base: String) -> Self {
        Self {
            sql: base,
            params: Vec::new(),
            n: 0,
        }
    }

    fn push(&mut self, cond: &str, value: Box<dyn ToSql + Sync + Send>) {
        self.n += 1;
        self.sql.push_str(&format!(" AND {cond}${}", self.n));
        self.params.push(value);
    }

    /// Matches a LIKE pattern against the email or anywhere in the document.
    fn push_text_search(&mut self, like: &str) {
        self.n += 1;
        let i = self.n;
        self.sql.push_str(&format!(
            " AND (email LIKE ${i} ESCAPE '\\' OR lower(doc) LIKE ${i} ESCAPE '\\')"
        ));
        self.params.push(Box::new(like.to_string()));
    }

    async fn fetch<C: GenericClient + Sync>(self, c: &C) -> StoreResult<Vec<Row>> {
        let params: Vec<&(dyn ToSql + Sync)> = self
            .params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        query(c, &self.sql, &params).await.map_err(map_err)
    }
}
