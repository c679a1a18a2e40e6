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
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
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
