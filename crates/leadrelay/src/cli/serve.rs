//! `serve`, `check` and `migrate`.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::net::TcpListener;

use super::output::{errln, outln};
use super::{CheckArgs, ServeArgs, StorageArgs, load_config, process_env};
use crate::app;
use crate::delivery;

pub async fn serve(config_path: Option<&PathBuf>, args: ServeArgs) -> ExitCode {
    let Ok(loaded) = load_config(config_path) else {
        return ExitCode::FAILURE;
    };
    let mut config = loaded.config;
    // Every client connection is a file descriptor: use all the hard limit
    // allows rather than the 1,024 a service often starts with.
    match crate::http::server::raise_open_file_limit() {
        Ok(n) => tracing::debug!(open_file_limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    if let Some(l) = args.listen {
        config.server.listen = l;
    }
    if let Some(u) = args.storage.storage_url {
        config.storage.url = u;
    }
    let listener = if args.role == app::Role::Worker {
        None
    } else {
        match TcpListener::bind(config.server.listen).await {
            Ok(l) => Some(l),
            Err(e) => {
                errln!(
                    "{}",
                    super::listen_error(&config.server.listen.to_string(), &e)
                );
                return ExitCode::FAILURE;
            }
        }
    };
    let running = match app::start(config, &process_env, listener, args.role).await {
        Ok(r) => r,
        Err(e) => {
            errln!("cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = running.addr {
        tracing::info!(%addr, storage = running.store.backend(), source = %loaded.source_name, "leadrelay is listening");
    } else {
        tracing::info!(
            storage = running.store.backend(),
            "leadrelay worker started"
        );
    }
    wait_for_signal().await;
    tracing::info!("shutting down: finishing requests and deliveries in flight");
    running.stop().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn check(config_path: Option<&PathBuf>, args: CheckArgs) -> ExitCode {
    let Ok(loaded) = load_config(config_path) else {
        return ExitCode::FAILURE;
    };
    outln!("{}: configuration is valid", loaded.source_name);
    if args.offline {
        return ExitCode::SUCCESS;
    }
    let destinations = match delivery::build_destinations(&loaded.config, &process_env) {
        Ok(d) => d,
        Err(problems) => {
            for p in problems {
                errln!("{}", p.render(&loaded.source_name));
            }
            return ExitCode::FAILURE;
        }
    };
    // Connectors that keep state in the store (a rotated OAuth refresh
    // token) check with it, when the database exists.
    let store = existing_store(&loaded.config).await;
    if let Some(store) = &store {
        for d in &destinations {
            d.connector.attach_store(store.clone());
        }
    }
    let mut failed = false;
    for d in &destinations {
        let report = d.connector.check().await;
        let mark = if report.ok { "ok  " } else { "FAIL" };
        outln!(
            "{mark} {} ({}): {}",
            d.name,
            d.connector_kind,
            report.message
        );
        failed |= !report.ok;
    }
    if let Some(store) = store {
        store.close().await;
    }
    check_fixable(&loaded.config, destinations).await;
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The configured store when its database exists (`check` creates none).
async fn existing_store(
    config: &crate::config::Config,
) -> Option<std::sync::Arc<dyn crate::store::Store>> {
    if !database_exists(config) {
        return None;
    }
    app::open_store(config).await.ok()
}

/// False for a SQLite file that is not there (PostgreSQL: assumed).
fn database_exists(config: &crate::config::Config) -> bool {
    let url = &config.storage.url;
    match url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Some(path) => std::path::Path::new(path).exists(),
        None => true,
    }
}

/// Asks each destination whether the causes of its fixable dead letters
/// are gone, and retries those at once. Only against a store that exists
/// (`check` creates no database).
async fn check_fixable(config: &crate::config::Config, destinations: Vec<delivery::Destination>) {
    let settings = &config.delivery.fixable;
    if !settings.enabled {
        return;
    }
    if !database_exists(config) {
        return;
    }
    let store = match app::open_store(config).await {
        Ok(s) => s,
        Err(e) => {
            errln!("fixable dead letters not checked: {e:#}");
            return;
        }
    };
    let causes = match store.fixable_causes(settings.max_retries).await {
        Ok(c) => c,
        Err(e) => {
            errln!("fixable dead letters not checked: {e}");
            store.close().await;
            return;
        }
    };
    let destinations: Vec<_> = destinations.into_iter().map(std::sync::Arc::new).collect();
    let answers = delivery::fixable::probe(store.as_ref(), &destinations, causes).await;
    let retried = delivery::fixable::retry_due(store.as_ref(), settings).await;
    for (c, fixed) in &answers {
        let what = match &c.value {
            Some(v) => format!("{} {} = {v:?}", c.kind.replace('_', " "), c.field),
            None => format!("{} {}", c.kind.replace('_', " "), c.field),
        };
        let verdict = match fixed {
            Some(true) => "fixed: retried now".to_string(),
            Some(false) => "still there".to_string(),
            None => "cannot tell from here".to_string(),
        };
        outln!(
            "fixable {}: {} dead letter(s) held by {what}: {verdict}",
            c.destination,
            c.waiting
        );
    }
    if retried > 0 {
        outln!("{retried} fixable dead letter(s) retried");
    }
    store.close().await;
}

pub async fn migrate(config_path: Option<&PathBuf>, args: StorageArgs) -> ExitCode {
    let Ok(loaded) = load_config(config_path) else {
        return ExitCode::FAILURE;
    };
    let mut config = loaded.config;
    if let Some(u) = args.storage_url {
        config.storage.url = u;
    }
    match app::open_store(&config).await {
        Ok(store) => {
            let v = store.schema_version().await.unwrap_or(0);
            store.close().await;
            outln!(
                "{} is at schema version {v}",
                crate::redact::url_without_password(&config.storage.url)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("migration failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
