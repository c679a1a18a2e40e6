//! The listener loop. It owns what a connection may cost: hyper's HTTP/1
//! with a header-read timeout on hyper's timer (a client that sends nothing,
//! half a request head, or idles between kept-alive requests is closed), a
//! cap on open connections sized to the process's open-file limit, and an
//! orderly shutdown (stop accepting, let requests in flight finish within
//! the grace period).

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ServerConfig;

/// Open files kept free for everything that is not a client connection:
/// database connections, SQLite files, CRM connections, backups, logs.
const FILE_RESERVE: u64 = 256;

/// What the listener allows per process and per connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// How long shutdown waits for connections with requests in flight.
    pub grace: Duration,
}

impl Limits {
    /// The configured limits, the connection cap lowered to fit the open-file
    /// limit in force (less [`FILE_RESERVE`]).
    pub fn from_config(server: &ServerConfig) -> Limits {
        let mut max_connections = server.max_connections.max(1);
        if let Some(files) = open_file_limit() {
            let fit = files.saturating_sub(FILE_RESERVE).max(16);
            if (max_connections as u64) > fit {
                tracing::warn!(
                    configured = max_connections,
                    open_file_limit = files,
                    allowed = fit,
                    "server.max_connections lowered to fit the open-file limit (raise LimitNOFILE / ulimit -n)"
                );
                max_connections = fit as usize;
            }
        }
        Limits {
            header_read_timeout: server.header_read_timeout.get(),
            max_connections,
            grace: server.shutdown_grace.get(),
        }
    }
}

/// The soft open-file limit in force (None where there is none).
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::Resource::NOFILE.get_soft().ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the soft open-file limit to the hard limit (systemd gives services
/// a soft limit of 1,024 unless `LimitNOFILE` says otherwise). Returns the
/// soft limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Serves `app` on `listener` until `shutdown` fires; then stops accepting,
/// closes idle connections, and waits up to `limits.grace` for requests in
/// flight before closing the rest.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    // Fired when the grace period is over: connections still open close.
    let hard_stop = CancellationToken::new();
    loop {
        // At the cap, new connections wait in the kernel's listen queue
        // until one closes (idle ones close after the header-read timeout).
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, shutdown, hard_stop) = (app.clone(), shutdown.clone(), hard_stop.clone());
        connections.spawn(async move {
            let _permit = permit;
            serve_connection(stream, remote, app, limits, shutdown, hard_stop).await;
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the shutdown grace period; closing them"
        );
        hard_stop.cancel();
        connections.wait().await;
    }
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        app.clone().oneshot(req.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            return;
        }
        _ = shutdown.cancelled() => {}
    }
    // Finish the request in flight (an idle connection closes at once).
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = hard_stop.cancelled() => {}
    }
}

/// A failed accept: a client that gave up is nothing; running out of file
/// descriptors is logged and waited out rather than spun on.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
