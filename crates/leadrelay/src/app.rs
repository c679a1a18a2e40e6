//! Wiring: from a validated configuration to a running server and engine,
//! and an orderly shutdown. `leadrelay serve` and the integration tests
//! both start leadrelay through here.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::{self, Engine, EngineSettings};
use crate::http::{self, AppState, client::IpThrottle};
use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::routing::RouteTable;
use crate::store::{self, OpenOptions, Store};

/// What runs in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Accept submissions only.
    Api,
    /// Deliver only.
    Worker,
    /// Both (the default).
    #[default]
    All,
}

pub struct Running {
    pub addr: Option<SocketAddr>,
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    throttle_pruner: Option<JoinHandle<()>>,
    /// Fires handoff and SLA timers (`pipeline::handoff`).
    timers: Option<JoinHandle<()>>,
    /// The report rollup pass (`reports::rollup`).
    rollups: Option<tokio::task::JoinHandle<()>>,
    /// KPI alert checks (workers) and the uptime heartbeat (ingest).
    kpi_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// One task per `[syncs.NAME]`, and the thin-push resolver.
    syncs: Vec<JoinHandle<()>>,
}

/// Configuration problems found at start-up, one per line.
fn problems_error(ps: Vec<crate::config::Problem>) -> anyhow::Error {
    anyhow::anyhow!(
        ps.iter()
            .map(|p| p.render("config"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// Opens the store named by the configuration and applies migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let options = OpenOptions {
        sqlite_full_sync: config.storage.sqlite_synchronous
            == crate::config::SqliteSynchronous::Full,
        group_commit_max: config.storage.group_commit_max,
        pool_size: config.storage.pool_size,
        statement_timeout: config.storage.statement_timeout.get(),
        tls_verify: config.storage.tls_verify,
        call_timeout: config.storage.timeout.get(),
        long_call_timeout: config.storage.long_timeout.get(),
        contact_rules: Arc::new(
            crate::contacts::MergeRules::compile(&config.contacts).map_err(|ps| {
                anyhow::anyhow!(
                    ps.into_iter()
                        .map(|(p, m)| format!("{p}: {m}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?,
        ),
        lead_hook: crate::pipeline::LeadHook::from_config(config).map(Arc::new),
        node_id: config.storage.node_id.clone(),
        ..Default::default()
    };
    store::open(&config.storage.url, &options)
        .await
        .map_err(|e| match e {
            store::StoreError::Unavailable(_) => {
                anyhow::anyhow!("{e}{}", store_hint(&config.storage.url))
            }
            e => e.into(),
        })
}

/// What to try when the store cannot be opened.
fn store_hint(url: &str) -> String {
    if url.starts_with("sqlite:") {
        " — is the database's directory writable by this user? Choose another file with \
         --storage-url sqlite://PATH (or storage.url)"
            .to_string()
    } else {
        " — is PostgreSQL running and reachable with these credentials? Choose the database \
         with --storage-url postgres://USER@HOST/DB (or DATABASE_URL, storage.url)"
            .to_string()
    }
}

/// Starts leadrelay: the engine (unless `role` is `api`) and, given a
/// listener, the HTTP server (unless `role` is `worker`).
pub async fn start(
    config: Config,
    env: &dyn Fn(&str) -> Option<String>,
    listener: Option<TcpListener>,
    role: Role,
) -> anyhow::Result<Running> {
    crate::init_crypto();
    let config = Arc::new(config);
    let store = open_store(&config).await?;
    let metrics = Metrics::new();
    let enabled = delivery::enabled_destinations(&config, env);
    let destinations = delivery::build_destinations(&config, env).map_err(problems_error)?;
    let privacy = Arc::new(crate::privacy::Privacy::new(store.clone(), config.clone()));
    let engine = Engine::new(
        store.clone(),
        destinations,
        EngineSettings {
            poll_interval: config.delivery.poll_interval.get(),
            shutdown_grace: config.server.shutdown_grace.get(),
            alerts: config.alerts.clone(),
            retention: config.privacy.retention.clone(),
            privacy: privacy.clone(),
            fixable: config.delivery.fixable.clone(),
            config_fingerprints: delivery::fixable::config_fingerprints(&config),
            public_url: config.server.public_url(),
            owners: Arc::new(config.owners.iter().cloned().map(Arc::new).collect()),
        },
        enabled.clone(),
        metrics.clone(),
    );
    let admin = Arc::new(http::admin::AdminContext::new(
        store.clone(),
        privacy,
        &config,
        &enabled,
    ));
    let kpi_alerts = crate::delivery::AlertMonitor::new(
        store.clone(),
        config.alerts.clone(),
        Vec::new(),
        enabled.clone(),
    );
    let routes = RouteTable::compile(&config.routes, enabled.clone()).map_err(|ps| {
        anyhow::anyhow!(
            ps.into_iter()
                .map(|(p, m)| format!("{p}: {m}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let sources = crate::sources::build_all(&config, env).map_err(problems_error)?;
    let ingestor = Arc::new(Ingestor::new(store.clone(), config.clone(), routes, env).await?);

    let shutdown = CancellationToken::new();
    // Only where the syncs run (not on an API-only node, whose change
    // webhooks the syncs on the worker nodes find by polling).
    let sync_wakers = if role != Role::Api {
        crate::sync::Wakers::new(&config)
    } else {
        crate::sync::Wakers::default()
    };
    let mut timers = None;
    let mut rollups = None;
    let mut kpi_tasks = Vec::new();
    let mut syncs = Vec::new();
    if role != Role::Api {
        // Before the first claim: what a killed previous run held is due now.
        match store.release_own_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                count = n,
                "gave back the delivery leases of the previous run"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not give back the previous run's leases; they will expire")
            }
        }
        engine.start();
        syncs = crate::sync::start_all(&config, env, &store, &sync_wakers, &shutdown)
            .map_err(problems_error)?;
        syncs.extend(
            crate::connectors::hubspot::read::start_all(
                &config, env, &enabled, &store, &ingestor, &shutdown,
            )
            .map_err(problems_error)?,
        );
        syncs.extend(crate::thin_push::start(
            store.clone(),
            &config,
            ingestor.clone(),
            env,
            shutdown.clone(),
        ));
        timers = crate::pipeline::handoff::HandoffJob::new(
            store.clone(),
            config.clone(),
            ingestor.clone(),
        )
        .start(shutdown.clone());
        rollups = Some(tokio::spawn(crate::reports::rollup::run(
            store.clone(),
            config.reports.clone(),
            shutdown.clone(),
        )));
        kpi_tasks.push(tokio::spawn(crate::feedback::pass::run(
            store.clone(),
            config.clone(),
            shutdown.clone(),
        )));
        kpi_tasks.push(tokio::spawn(crate::reports::kpi::watch(
            store.clone(),
            config.reports.kpis.clone(),
            kpi_alerts,
            shutdown.clone(),
        )));
    }
    let mut addr = None;
    let mut server = None;
    let mut throttle_pruner = None;
    if let (Some(listener), true) = (listener, role != Role::Worker) {
        addr = Some(listener.local_addr()?);
        let throttle = config.server.per_ip_limit.rate().and_then(IpThrottle::new);
        if let Some(t) = throttle.clone() {
            let stop = shutdown.clone();
            throttle_pruner = Some(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => t.prune(),
                        _ = stop.cancelled() => return,
                    }
                }
            }));
        }
        let state = AppState {
            ingestor,
            store: store.clone(),
            config: config.clone(),
            throttle,
            metrics: metrics.clone(),
            sources: Arc::new(sources),
            admin,
            slack_signing_secret: config
                .feedback
                .slack_signing_secret_env
                .as_deref()
                .and_then(env)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(Arc::from),
            sync_wakers,
        };
        kpi_tasks.push(tokio::spawn(crate::reports::kpi::heartbeat(
            store.clone(),
            shutdown.clone(),
        )));
        let app = http::router(state);
        let limits = http::server::Limits::from_config(&config.server);
        server = Some(tokio::spawn(http::serve(
            listener,
            app,
            limits,
            shutdown.clone(),
        )));
    }
    Ok(Running {
        addr,
        store,
        engine,
        metrics,
        shutdown,
        server,
        throttle_pruner,
        timers,
        rollups,
        kpi_tasks,
        syncs,
    })
}

impl Running {
    /// Stops accepting, finishes in-flight requests, lets deliveries in
    /// flight finish (or releases their leases), and flushes the store.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            match s.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "server stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "server task failed"),
                Ok(Ok(())) => {}
            }
        }
        if let Some(p) = self.throttle_pruner.take() {
            p.abort();
        }
        if let Some(t) = self.timers.take() {
            // Cancelled with the server; a timer cut short keeps its lease
            // and falls due again after a restart.
            let _ = t.await;
        }
        if let Some(r) = self.rollups.take() {
            let _ = r.await;
        }
        for k in self.kpi_tasks.drain(..) {
            let _ = k.await;
        }
        for s in self.syncs.drain(..) {
            // Cancelled with the server: a round cut short is repeated.
            let _ = s.await;
        }
        self.engine.shutdown().await;
        self.store.close().await;
    }
}
