//! A node whose PostgreSQL stops answering: a TCP relay between leadrelay
//! and the database refuses connections, holds every byte, or silently
//! drops the connections open at that moment while new ones work (what a
//! failover looks like to a client). Ingest must answer 503 with
//! `Retry-After` within seconds in each case, `/readyz` must answer, and
//! ingest must answer 202 again within seconds after the fault.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::binary::{FORM, Server, http_client};
use crate::support::{TestDb, eventually, lead};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    /// Open connections are closed, new ones closed on accept.
    Refuse,
    /// Nothing moves either way (bytes wait, as with a frozen primary).
    Hold,
}

struct RelayState {
    mode: watch::Sender<Mode>,
    /// Connections numbered below this never forward another byte, but
    /// stay open (their peer vanished without a word).
    cut: AtomicU64,
    next: AtomicU64,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

/// A TCP relay to `upstream` whose faults the test switches.
struct Relay {
    addr: SocketAddr,
    state: Arc<RelayState>,
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(RelayState {
            mode: watch::channel(Mode::Forward).0,
            cut: AtomicU64::new(0),
            next: AtomicU64::new(0),
            pumps: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move { relay(client, upstream, st).await });
            }
        });
        Relay {
            addr,
            state,
            accept,
        }
    }

    fn set(&self, mode: Mode) {
        if mode == Mode::Refuse {
            for p in self.state.pumps.lock().unwrap().drain(..) {
                p.abort();
            }
        }
        self.state.mode.send_replace(mode);
    }

    /// Every connection open now goes silent for good; new ones work.
    fn drop_open_connections(&self) {
        let next = self.state.next.load(Ordering::SeqCst);
        self.state.cut.store(next, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        for p in self.state.pumps.lock().unwrap().drain(..) {
            p.abort();
        }
    }
}

/// Waits until connection `id` may forward; false when it must close.
async fn may_forward(id: u64, state: &RelayState) -> bool {
    let mut mode = state.mode.subscribe();
    loop {
        if id < state.cut.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        match *mode.borrow_and_update() {
            Mode::Forward => return true,
            Mode::Refuse => return false,
            Mode::Hold => {}
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, state: Arc<RelayState>) {
    let id = state.next.fetch_add(1, Ordering::SeqCst);
    if !may_forward(id, &state).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let mut pumps = state.pumps.lock().unwrap();
    pumps.push(tokio::spawn(pump(cr, sw, id, state.clone())));
    pumps.push(tokio::spawn(pump(sr, cw, id, state.clone())));
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    state: Arc<RelayState>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !may_forward(id, &state).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Posts one lead; the status and whether `Retry-After` was set. Panics
/// when no answer comes within `wait` (the deadline is 2 s).
async fn post(client: &reqwest::Client, base: &str, email: &str) -> (u16, bool) {
    let wait = Duration::from_secs(15);
    let resp = client
        .post(format!("{base}/v1/forms/contact"))
        .json(&lead(email))
        .timeout(wait)
        .send()
        .await
        .unwrap_or_else(|e| panic!("no answer within {wait:?} for {email}: {e}"));
    (
        resp.status().as_u16(),
        resp.headers().contains_key("retry-after"),
    )
}

async fn ready_status(client: &reqwest::Client, base: &str) -> u16 {
    client
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .expect("/readyz answers within its deadline")
        .status()
        .as_u16()
}

/// 202 again within seconds once the fault is over.
async fn recovers(client: &reqwest::Client, base: &str, what: &str) {
    let n = AtomicU64::new(0);
    eventually(
        &format!("ingest answers 202 again after {what}"),
        Duration::from_secs(20),
        || async {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let (status, _) = post(client, base, &format!("after-{what}-{i}@relay.io")).await;
            (status == 202).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_answers_503_fast_when_postgres_refuses_hangs_or_drops_connections_and_recovers() {
    let db = TestDb::create_postgres().await;
    let url = url::Url::parse(&db.url).unwrap();
    let upstream: SocketAddr =
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
            .parse()
            .unwrap();
    let relay = Relay::start(upstream).await;
    let mut via_relay = url.clone();
    via_relay.set_port(Some(relay.addr.port())).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("leadrelay.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = \"{via_relay}\"\ntimeout = \"2s\"\n[server]\nper_ip_limit = \"off\"\n{FORM}"
        ),
    )
    .unwrap();
    // API only: no workers share the pool, so the first lead after a fault
    // is the first to meet it.
    let server = Server::start_with_args(&config, dir.path(), &["--role", "api"]).await;
    let client = http_client();
    assert_eq!(post(&client, &server.base, "before@relay.io").await.0, 202);

    // (a) The database refuses connections.
    relay.set(Mode::Refuse);
    let (status, retry_after) = post(&client, &server.base, "refused@relay.io").await;
    assert_eq!((status, retry_after), (503, true), "refused");
    assert_eq!(ready_status(&client, &server.base).await, 503);
    relay.set(Mode::Forward);
    recovers(&client, &server.base, "refused").await;

    // (b) The database holds every byte.
    relay.set(Mode::Hold);
    let (status, retry_after) = post(&client, &server.base, "held@relay.io").await;
    assert_eq!((status, retry_after), (503, true), "held");
    assert_eq!(ready_status(&client, &server.base).await, 503);
    relay.set(Mode::Forward);
    recovers(&client, &server.base, "held").await;

    // (c) Every open connection dies silently; new ones work.
    relay.drop_open_connections();
    let (status, retry_after) = post(&client, &server.base, "dropped@relay.io").await;
    assert_eq!((status, retry_after), (503, true), "dropped");
    recovers(&client, &server.base, "dropped").await;
    assert_eq!(ready_status(&client, &server.base).await, 200);

    let log = server.log_text();
    assert!(log.contains("storage unavailable"), "{log}");
    assert!(log.contains("storage available again"), "{log}");
}
