//! The delivery engine: what makes "no lead is lost" true.
//!
//! One dispatcher task per destination claims due deliveries under a lease,
//! checks consent, waits for the rate limiter and the circuit breaker, sends
//! through the destination's connector, and records the outcome — never
//! holding a database transaction open while waiting on the network. A slow
//! or dead destination only occupies its own dispatcher, so it never delays
//! the others; within a destination, only the oldest unfinished delivery
//! per contact is claimable, so one person's updates stay in order while
//! other people's go ahead.

mod alerts;
mod circuit;
pub mod consent;
mod dispatcher;
pub mod fixable;
pub mod issues;
pub mod policy;
pub mod refresh;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use leadrelay_model::ConsentPurpose;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{
    AlertsConfig, CircuitConfig, Config, Enabled, LegalBasis, Problem, Rate, RetentionConfig,
    RetryConfig,
};
use crate::connectors::{self, BuildContext, Connector};
use crate::metrics::Metrics;
use crate::store::Store;

pub use alerts::{ALERT_EVENT_TYPE, AlertMonitor};
pub use circuit::{CircuitBreaker, CircuitState};
pub use dispatcher::DEAD_LETTER_EVENT_TYPE;

/// A destination ready to deliver to.
pub struct Destination {
    pub name: String,
    pub connector_kind: &'static str,
    pub connector: Arc<dyn Connector>,
    pub retry: RetryConfig,
    pub circuit: CircuitConfig,
    pub concurrency: usize,
    pub batch_size: usize,
    pub rate: Option<Rate>,
    pub timeout: Duration,
    pub lease: Duration,
    pub purposes: Vec<ConsentPurpose>,
    pub legal_basis: Option<LegalBasis>,
    /// Enabled destinations that receive a copy of each dead letter.
    pub dead_letter_copies: Vec<String>,
}

/// The destinations that are switched on: `enabled = true`, or `"auto"`
/// with every env var their settings name set.
pub fn enabled_destinations(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> BTreeSet<String> {
    config
        .destinations
        .iter()
        .filter(|(_, d)| match d.enabled {
            Enabled::On => true,
            Enabled::Off => false,
            Enabled::Auto => {
                let vars = connectors::referenced_env_vars(&d.settings);
                !vars.is_empty()
                    && vars
                        .iter()
                        .all(|v| env(v).is_some_and(|x| !x.trim().is_empty()))
            }
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// Builds every enabled destination's connector. Problems carry paths
/// relative to the file (`destinations.NAME.KEY`).
pub fn build_destinations(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Destination>, Vec<Problem>> {
    let enabled = enabled_destinations(config, env);
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (name, d) in &config.destinations {
        if !enabled.contains(name) {
            continue;
        }
        match build_destination(config, name, d, env, &enabled) {
            Ok(dest) => out.push(dest),
            Err(ps) => problems.extend(ps),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Every problem of the `enabled = "auto"` destinations that are switched
/// off because a secret is unset, except the unset secrets themselves: a
/// misspelt connector or a bad setting is reported before the day the
/// token is set.
pub fn check_switched_off(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
    let enabled = enabled_destinations(config, env);
    let mut problems = Vec::new();
    for (name, d) in &config.destinations {
        if enabled.contains(name) || d.enabled != Enabled::Auto {
            continue;
        }
        if let Err(ps) = build_destination(config, name, d, env, &enabled) {
            problems.extend(ps.into_iter().filter(|p| p.unset_env.is_none()));
        }
    }
    problems
}

/// Builds one destination's connector and delivery settings.
fn build_destination(
    config: &Config,
    name: &String,
    d: &crate::config::DestinationConfig,
    env: &dyn Fn(&str) -> Option<String>,
    enabled: &BTreeSet<String>,
) -> Result<Destination, Vec<Problem>> {
    let mut problems = Vec::new();
    let prefix = format!("destinations.{name}");
    let Some(kind) = connectors::kind(&d.connector) else {
        let known: Vec<&str> = connectors::kinds().iter().map(|k| k.name).collect();
        return Err(vec![Problem::error(
            format!("{prefix}.connector"),
            format!(
                "unknown connector {:?} (known: {})",
                d.connector,
                known.join(", ")
            ),
        )]);
    };
    let timeout = d.timeout.unwrap_or(config.delivery.timeout).get();
    let ctx = BuildContext {
        destination: name,
        settings: &d.settings,
        env,
        timeout,
        public_url: &config.server.public_url(),
    };
    let connector = match (kind.build)(&ctx) {
        Ok(c) => c,
        Err(ps) => {
            for mut p in ps {
                p.path = if p.path.is_empty() {
                    prefix.clone()
                } else {
                    format!("{prefix}.{}", p.path)
                };
                problems.push(p);
            }
            return Err(problems);
        }
    };
    if kind.personal_data
        && d.purposes.is_empty()
        && d.legal_basis != Some(LegalBasis::LegitimateInterest)
    {
        problems.push(Problem::error(
            format!("{prefix}.purposes"),
            "this destination receives personal data: declare the consent purposes it needs \
             (purposes = [\"crm\"]) or legal_basis = \"legitimate_interest\"",
        ));
    }
    let batch_size = d.batch_size.unwrap_or(kind.defaults.batch_size);
    if batch_size == 0 || batch_size > kind.defaults.max_batch_size {
        problems.push(Problem::error(
            format!("{prefix}.batch_size"),
            format!(
                "must be between 1 and {} for {}",
                kind.defaults.max_batch_size, kind.name
            ),
        ));
    }
    let concurrency = d.concurrency.unwrap_or(kind.defaults.concurrency);
    if concurrency == 0 || concurrency > 256 {
        problems.push(Problem::error(
            format!("{prefix}.concurrency"),
            "must be between 1 and 256",
        ));
    }
    let rate = match d.rate_limit {
        Some(r) => r.rate(),
        None => kind.defaults.rate_limit,
    };
    // A lease must outlive the longest send (several calls for CRMs).
    let lease = config.delivery.lease.get().max(timeout * 6);
    let destination = Destination {
        name: name.clone(),
        connector_kind: kind.name,
        connector,
        retry: d
            .retry
            .clone()
            .unwrap_or_else(|| config.delivery.retry.clone()),
        circuit: d
            .circuit
            .clone()
            .unwrap_or_else(|| config.delivery.circuit.clone()),
        concurrency: concurrency.clamp(1, 256),
        batch_size: batch_size.clamp(1, kind.defaults.max_batch_size),
        rate,
        timeout,
        lease,
        purposes: d.purposes.clone(),
        legal_basis: d.legal_basis,
        dead_letter_copies: d
            .dead_letter_copies
            .as_ref()
            .unwrap_or(&config.delivery.dead_letter_copies)
            .iter()
            .filter(|n| *n != name && enabled.contains(*n))
            .cloned()
            .collect(),
    };
    if problems.is_empty() {
        Ok(destination)
    } else {
        Err(problems)
    }
}

/// Settings shared by every dispatcher.
#[derive(Clone)]
pub struct EngineSettings {
    pub poll_interval: Duration,
    pub shutdown_grace: Duration,
    pub alerts: AlertsConfig,
    pub retention: RetentionConfig,
    /// Erases contacts past `retention.contacts`.
    pub privacy: Arc<crate::privacy::Privacy>,
    /// Automatic retries of fixable dead letters.
    pub fixable: crate::config::FixableConfig,
    /// Each destination's configuration fingerprint (see [`fixable`]).
    pub config_fingerprints: std::collections::BTreeMap<String, String>,
    /// `server.public_url`, for links to the dashboard in alerts.
    pub public_url: String,
    /// `[[owners]]`: the assigned owner each job carries.
    pub owners: Arc<Vec<Arc<crate::pipeline::OwnerConfig>>>,
}

/// The running engine.
pub struct Engine {
    store: Arc<dyn Store>,
    destinations: Vec<Arc<Destination>>,
    settings: EngineSettings,
    shutdown: CancellationToken,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    alerts: Arc<AlertMonitor>,
    metrics: Arc<Metrics>,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        destinations: Vec<Destination>,
        settings: EngineSettings,
        enabled: BTreeSet<String>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let destinations: Vec<Arc<Destination>> = destinations.into_iter().map(Arc::new).collect();
        for d in &destinations {
            d.connector.attach_store(store.clone());
        }
        let names = destinations.iter().map(|d| d.name.clone()).collect();
        let alerts = Arc::new(
            AlertMonitor::new(store.clone(), settings.alerts.clone(), names, enabled)
                .with_public_url(&settings.public_url),
        );
        Arc::new(Self {
            store,
            destinations,
            settings,
            shutdown: CancellationToken::new(),
            tasks: std::sync::Mutex::new(Vec::new()),
            alerts,
            metrics,
        })
    }

    pub fn destinations(&self) -> &[Arc<Destination>] {
        &self.destinations
    }

    /// Starts one dispatcher per destination, the alert monitor and the
    /// retention job.
    pub fn start(self: &Arc<Self>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for d in &self.destinations {
            // The dispatcher and the sequence refresh share the
            // destination's throttling hold (a 429 to either pauses both).
            // The refresh paces itself at the destination's rate with a
            // gate of its own: the dispatcher takes a cell before every
            // claim, also when nothing is due, so a shared gate would leave
            // the refresh waiting for ever.
            let gate = Arc::new(connectors::pace::RateGate::new(
                &d.name,
                d.rate,
                &self.store,
            ));
            let hold = Arc::new(connectors::pace::Hold::default());
            let refresh_gate = Arc::new(connectors::pace::RateGate::new(
                &format!("{}#refresh", d.name),
                d.rate,
                &self.store,
            ));
            if let Some(every) = d.connector.enrollment().and_then(|p| p.refresh) {
                let tool_destinations = self
                    .destinations
                    .iter()
                    .filter(|o| o.connector_kind == d.connector_kind)
                    .map(|o| o.name.clone())
                    .collect();
                tasks.push(tokio::spawn(refresh::run(
                    self.store.clone(),
                    d.clone(),
                    tool_destinations,
                    every,
                    connectors::pace::Pacer::new(&refresh_gate, &hold),
                    self.shutdown.clone(),
                )));
            }
            let ctx = dispatcher::Context {
                pace: Some((gate, hold)),
                store: self.store.clone(),
                shutdown: self.shutdown.clone(),
                poll: self.settings.poll_interval,
                grace: self.settings.shutdown_grace,
                alerts: self.alerts.clone(),
                metrics: self.metrics.clone(),
                fixable: self
                    .settings
                    .fixable
                    .enabled
                    .then(|| self.settings.fixable.clone()),
                owners: self.settings.owners.clone(),
            };
            tasks.push(tokio::spawn(dispatcher::run(d.clone(), ctx)));
        }
        let alerts = self.alerts.clone();
        let shutdown = self.shutdown.clone();
        tasks.push(tokio::spawn(async move { alerts.run(shutdown).await }));
        if self.settings.fixable.enabled {
            tasks.push(tokio::spawn(fixable::run(
                self.store.clone(),
                self.destinations.clone(),
                self.settings.fixable.clone(),
                self.settings.config_fingerprints.clone(),
                self.shutdown.clone(),
            )));
        }
        let store = self.store.clone();
        let retention = self.settings.retention.clone();
        let privacy = self.settings.privacy.clone();
        let shutdown = self.shutdown.clone();
        tasks.push(tokio::spawn(async move {
            retention_job(store, privacy, retention, shutdown).await
        }));
    }

    /// Stops claiming; in-flight sends finish within the grace period or
    /// their leases are released. Nothing is marked delivered that was not.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Purges data past its retention, every `retention.interval` (hourly by
/// default): raw payloads, attempts, finished deliveries, idempotency keys,
/// and contacts with no event for `retention.contacts`.
async fn retention_job(
    store: Arc<dyn Store>,
    privacy: Arc<crate::privacy::Privacy>,
    retention: RetentionConfig,
    shutdown: CancellationToken,
) {
    let every = retention.interval.get();
    loop {
        let now = chrono::Utc::now();
        let ago =
            |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX / 2);
        let policy = crate::store::PurgePolicy {
            raw_payloads_before: ago(retention.raw_payloads.get()),
            attempts_before: ago(retention.attempts.get()),
            finished_deliveries_before: ago(retention.deliveries.get()),
            idempotency_before: now
                - chrono::Duration::hours(crate::store::IDEMPOTENCY_WINDOW_HOURS),
        };
        match store.purge(&policy).await {
            Ok(r) if r != Default::default() => tracing::info!(?r, "retention purge"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention purge failed"),
        }
        if let Some(keep) = retention.contacts {
            match privacy.purge_stale_contacts(ago(keep.get())).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(contacts = n, "retention purge: idle contacts erased"),
                Err(e) => tracing::warn!(error = %e, "retention purge of contacts failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
