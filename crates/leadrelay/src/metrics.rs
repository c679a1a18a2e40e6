//! Prometheus metrics, served at `/metrics`.
//!
//! Counters and histograms are updated where things happen; gauges that
//! describe the store (backlog, dead letters) are refreshed at scrape time.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(String, String)>;
type HistFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

pub struct Metrics {
    registry: Registry,
    ingest_total: Family<Labels, Counter>,
    ingest_seconds: HistFamily,
    deliveries_total: Family<Labels, Counter>,
    attempt_seconds: HistFamily,
    rate_limit_wait_seconds: Family<Labels, Counter<f64, AtomicU64>>,
    rate_limit_waits: Family<Labels, Counter>,
    circuit_state: Family<Labels, Gauge>,
    backlog: Family<Labels, Gauge>,
    dead_letters: Family<Labels, Gauge>,
    circuit_open: Family<Labels, Gauge>,
    paused: Family<Labels, Gauge>,
    hook_auth_failures: Family<Labels, Counter>,
    kpi_value: Family<Labels, Gauge<f64, AtomicU64>>,
    kpi_target: Family<Labels, Gauge<f64, AtomicU64>>,
    sync: SyncGauges,
}

/// Per-sync gauges (`[syncs]`), refreshed at scrape time from the stored
/// health figures.
#[derive(Default)]
struct SyncGauges {
    records: Family<Labels, Gauge>,
    pending: Family<Labels, Gauge>,
    conflicts_waiting: Family<Labels, Gauge>,
    errors: Family<Labels, Gauge>,
    echoes_dropped: Family<Labels, Gauge>,
    writes: Family<Labels, Gauge>,
    cursor_lag_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("leadrelay");
        let ingest_total = Family::<Labels, Counter>::default();
        registry.register(
            "ingest",
            "Submissions received, by form or source and outcome",
            ingest_total.clone(),
        );
        let ingest_seconds: HistFamily =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "ingest_seconds",
            "Time to acknowledge a submission (durably stored)",
            ingest_seconds.clone(),
        );
        let deliveries_total = Family::<Labels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts by destination and outcome",
            deliveries_total.clone(),
        );
        let attempt_seconds: HistFamily =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "attempt_seconds",
            "Latency of delivery attempts",
            attempt_seconds.clone(),
        );
        let rate_limit_wait_seconds = Family::<Labels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "rate_limit_wait_seconds",
            "Time spent waiting for a destination's rate limit",
            rate_limit_wait_seconds.clone(),
        );
        let rate_limit_waits = Family::<Labels, Counter>::default();
        registry.register(
            "rate_limit_waits",
            "Sends that had to wait for a destination's rate limit",
            rate_limit_waits.clone(),
        );
        let circuit_state = Family::<Labels, Gauge>::default();
        registry.register(
            "circuit_state",
            "Circuit breaker state per destination: 1 for the current state (closed, open, half_open), 0 for the others",
            circuit_state.clone(),
        );
        let backlog = Family::<Labels, Gauge>::default();
        registry.register(
            "backlog",
            "Deliveries not yet finished, by destination",
            backlog.clone(),
        );
        let dead_letters = Family::<Labels, Gauge>::default();
        registry.register(
            "dead_letters",
            "Dead letters waiting for a person, by destination",
            dead_letters.clone(),
        );
        let circuit_open = Family::<Labels, Gauge>::default();
        registry.register(
            "circuit_open",
            "1 when a destination's circuit breaker is open",
            circuit_open.clone(),
        );
        let paused = Family::<Labels, Gauge>::default();
        registry.register(
            "destination_paused",
            "1 when a destination is paused (throttled or by an operator)",
            paused.clone(),
        );
        let hook_auth_failures = Family::<Labels, Counter>::default();
        registry.register(
            "hook_auth_failures",
            "Inbound webhooks refused for bad authentication",
            hook_auth_failures.clone(),
        );
        let kpi_value = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "kpi_value",
            "A KPI's value over its window (reports.kpis.window)",
            kpi_value.clone(),
        );
        let kpi_target = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register("kpi_target", "A KPI's target", kpi_target.clone());
        let sync = SyncGauges::default();
        for (name, help, family) in [
            (
                "sync_records",
                "Records a sync has matched and decided, by sync",
                &sync.records,
            ),
            (
                "sync_pending",
                "Sync writes that failed in the last round and wait for the next, by sync",
                &sync.pending,
            ),
            (
                "sync_conflicts_waiting",
                "Sync conflicts waiting in the review queue for a person, by sync",
                &sync.conflicts_waiting,
            ),
            (
                "sync_errors",
                "Sync poll, write and storage errors since the sync first ran, by sync",
                &sync.errors,
            ),
            (
                "sync_echoes_dropped",
                "Values a sync recognised as its own writes coming back, since it first ran",
                &sync.echoes_dropped,
            ),
            (
                "sync_writes",
                "Record writes a sync made, by sync and system, since it first ran",
                &sync.writes,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "sync_cursor_lag_seconds",
            "How far a sync's poll cursor is behind now, by sync and system",
            sync.cursor_lag_seconds.clone(),
        );
        Arc::new(Self {
            sync,
            registry,
            ingest_total,
            ingest_seconds,
            deliveries_total,
            attempt_seconds,
            rate_limit_wait_seconds,
            rate_limit_waits,
            circuit_state,
            backlog,
            dead_letters,
            circuit_open,
            paused,
            hook_auth_failures,
            kpi_value,
            kpi_target,
        })
    }

    /// One submission answered: `outcome` is `accepted`, `spam`, `duplicate`
    /// or the error code.
    pub fn ingest(&self, origin: &str, outcome: &str, elapsed: Duration) {
        self.ingest_total
            .get_or_create(&l(&[("origin", origin), ("outcome", outcome)]))
            .inc();
        self.ingest_seconds
            .get_or_create(&l(&[("origin", origin)]))
            .observe(elapsed.as_secs_f64());
    }

    pub fn attempt(&self, destination: &str, outcome: &str, elapsed: Duration) {
        self.deliveries_total
            .get_or_create(&l(&[("destination", destination), ("outcome", outcome)]))
            .inc();
        self.attempt_seconds
            .get_or_create(&l(&[("destination", destination)]))
            .observe(elapsed.as_secs_f64());
    }

    pub fn rate_limit_wait(&self, destination: &str, waited: Duration) {
        let labels = l(&[("destination", destination)]);
        self.rate_limit_wait_seconds
            .get_or_create(&labels)
            .inc_by(waited.as_secs_f64());
        if waited >= Duration::from_millis(1) {
            self.rate_limit_waits.get_or_create(&labels).inc();
        }
    }

    /// Sets the circuit state of a destination (`closed`, `open`, `half_open`).
    pub fn set_circuit_state(&self, destination: &str, state: &str) {
        for s in ["closed", "open", "half_open"] {
            self.circuit_state
                .get_or_create(&l(&[("destination", destination), ("state", s)]))
                .set(i64::from(s == state));
        }
    }

    pub fn hook_auth_failure(&self, source: &str) {
        self.hook_auth_failures
            .get_or_create(&l(&[("source", source)]))
            .inc();
    }

    pub fn set_destination(
        &self,
        destination: &str,
        backlog: u64,
        dead: u64,
        circuit_open: bool,
        paused: bool,
    ) {
        let labels = l(&[("destination", destination)]);
        self.backlog.get_or_create(&labels).set(backlog as i64);
        self.dead_letters.get_or_create(&labels).set(dead as i64);
        self.circuit_open
            .get_or_create(&labels)
            .set(circuit_open as i64);
        self.paused.get_or_create(&labels).set(paused as i64);
    }

    /// A KPI's value (None: nothing to measure in the window; the value
    /// gauge is then removed rather than left at an old figure) and target.
    pub fn set_kpi(&self, name: &str, value: Option<f64>, target: f64) {
        let labels = l(&[("kpi", name)]);
        match value {
            Some(v) => {
                self.kpi_value.get_or_create(&labels).set(v);
            }
            None => {
                self.kpi_value.remove(&labels);
            }
        }
        self.kpi_target.get_or_create(&labels).set(target);
    }

    /// A sync's figures: its stored health, the conflicts waiting for a
    /// person, and the cursors' lag behind `now`.
    pub fn set_sync(
        &self,
        h: &crate::sync::Health,
        conflicts_waiting: u64,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let g = &self.sync;
        let labels = l(&[("sync", &h.sync)]);
        let set = |f: &Family<Labels, Gauge>, v: u64| {
            f.get_or_create(&labels)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&g.records, h.records);
        set(&g.pending, h.pending);
        set(&g.conflicts_waiting, conflicts_waiting);
        set(&g.errors, h.errors);
        set(&g.echoes_dropped, h.echoes_dropped);
        for (system, writes, cursor) in [
            (&h.a, h.writes_a, h.cursor_a),
            (&h.b, h.writes_b, h.cursor_b),
        ] {
            let labels = l(&[("sync", &h.sync), ("system", system)]);
            g.writes
                .get_or_create(&labels)
                .set(i64::try_from(writes).unwrap_or(i64::MAX));
            match cursor {
                Some(c) => {
                    let lag = (now - c).num_milliseconds().max(0) as f64 / 1000.0;
                    g.cursor_lag_seconds.get_or_create(&labels).set(lag);
                }
                None => {
                    g.cursor_lag_seconds.remove(&labels);
                }
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
