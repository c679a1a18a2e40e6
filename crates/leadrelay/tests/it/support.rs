//! Test support: start leadrelay in-process on port 0 against a fresh
//! SQLite file, a scriptable webhook receiver, and polling helpers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use leadrelay::app::{self, Role, Running};
use leadrelay::config::{self, RateLimit};
use leadrelay::store::{Delivery, DeliveryFilter, Store};
use leadrelay_fakes::common::{FakeServer, Fault, Faults};
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;

/// Which store the tests run against: `LEADRELAY_TEST_BACKEND=postgres`
/// runs every test on its own fresh PostgreSQL database
/// (`LEADRELAY_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432`);
/// anything else, SQLite files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    match std::env::var("LEADRELAY_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    }
}

pub fn pg_base_url() -> String {
    std::env::var("LEADRELAY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database for one test: a SQLite file in the test's directory, or a
/// PostgreSQL database created for the test and dropped afterwards.
pub struct TestDb {
    pub url: String,
    sqlite_dir: Option<std::path::PathBuf>,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn create(dir: &std::path::Path) -> TestDb {
        match backend() {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}/leadrelay.db", dir.display()),
                sqlite_dir: Some(dir.to_path_buf()),
                pg_name: None,
            },
            Backend::Postgres => Self::create_postgres().await,
        }
    }

    /// A fresh PostgreSQL database whatever the backend (multi-node tests).
    pub async fn create_postgres() -> TestDb {
        let name = format!("lr_test_{}", uuid::Uuid::now_v7().simple());
        let base = pg_base_url();
        pg_admin(&base, &format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {base} is needed for these tests: {e}"));
        TestDb {
            url: format!("{base}/{name}"),
            sqlite_dir: None,
            pg_name: Some(name),
        }
    }

    /// Whether anything stored contains `needle` (the SQLite files' bytes,
    /// or a `pg_dump` of the PostgreSQL database).
    pub fn contains(&self, needle: &str) -> bool {
        if let Some(dir) = &self.sqlite_dir {
            let mut all = Vec::new();
            for entry in std::fs::read_dir(dir).unwrap() {
                let p = entry.unwrap().path();
                if p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("leadrelay.db")
                {
                    all.extend(std::fs::read(&p).unwrap());
                }
            }
            return all.windows(needle.len()).any(|w| w == needle.as_bytes());
        }
        let out = std::process::Command::new("pg_dump")
            .arg("--data-only")
            .arg(&self.url)
            .output()
            .expect("pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }
}

impl Drop for TestDb {
    // The `psql` child is detached on purpose: nobody waits for it.
    #[allow(clippy::zombie_processes)]
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let base = pg_base_url();
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        // A drop makes the server checkpoint, which takes a second or more
        // while other tests write: hand it to a detached `psql` so the test
        // does not wait for it (the server finishes it after this process
        // has exited). Without `psql`, drop here.
        let detached = std::process::Command::new("psql")
            .arg("-qX")
            .arg(format!("{base}/postgres"))
            .arg("-c")
            .arg(&sql)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Ok(child) = detached {
            drop(child);
            return;
        }
        // Dropping needs async I/O; do it on a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let _ = pg_admin(&base, &sql).await;
            })
        })
        .join();
    }
}

/// Runs one statement on the server's `postgres` database.
async fn pg_admin(base: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) =
        tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let result = client.batch_execute(sql).await;
    drop(client);
    let _ = driver.await;
    result
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub dir: TempDir,
    pub db: TestDb,
    running: Option<Running>,
}

/// A stopped app's data, to start again on the same database.
pub struct Stopped {
    dir: TempDir,
    db: TestDb,
}

/// Builds a test app from configuration text.
pub struct Builder {
    toml: String,
    env: HashMap<String, String>,
    keep_throttle: bool,
    resume: Option<Stopped>,
    dir: Option<TempDir>,
}

impl Builder {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.to_string(), v.to_string());
        self
    }

    /// Keep `server.per_ip_limit` as configured (tests otherwise switch it off).
    pub fn keep_throttle(mut self) -> Self {
        self.keep_throttle = true;
        self
    }

    /// Use this data directory (the test keeps files of its own there).
    pub fn dir(mut self, dir: TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Start again on a stopped app's database.
    pub fn resume(mut self, stopped: Stopped) -> Self {
        self.resume = Some(stopped);
        self
    }

    pub async fn start(self) -> TestApp {
        leadrelay::init_crypto();
        let (dir, db) = match self.resume {
            Some(s) => (s.dir, s.db),
            None => {
                let dir = match self.dir {
                    Some(d) => d,
                    None => tempfile::tempdir().expect("tempdir"),
                };
                let db = TestDb::create(dir.path()).await;
                (dir, db)
            }
        };
        let env = self.env.clone();
        let lookup = move |k: &str| env.get(k).cloned();
        let loaded =
            config::load_str(&self.toml, "test.toml", &lookup).unwrap_or_else(|e| panic!("{e}"));
        let mut cfg = loaded.config;
        cfg.storage.url = db.url.clone();
        if !self.keep_throttle {
            cfg.server.per_ip_limit = RateLimit::Off;
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let running = app::start(cfg, &lookup, Some(listener), Role::All)
            .await
            .expect("start");
        let addr = running.addr.expect("listening");
        TestApp {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            store: running.store.clone(),
            dir,
            db,
            running: Some(running),
        }
    }
}

impl TestApp {
    pub fn builder(toml: &str) -> Builder {
        Builder {
            toml: toml.to_string(),
            env: HashMap::new(),
            keep_throttle: false,
            resume: None,
            dir: None,
        }
    }

    pub async fn spawn(toml: &str) -> TestApp {
        Self::builder(toml).start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// `GET path` with the API key `key`: the JSON body of a 200.
    pub async fn get_json(&self, path: &str, key: &str) -> Value {
        let res = self
            .client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "GET {path}");
        res.json().await.expect("a JSON body")
    }

    /// Stops the app and returns its data (for a restart).
    pub async fn stop(mut self) -> Stopped {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        Stopped {
            dir: self.dir,
            db: self.db,
        }
    }

    pub async fn deliveries(&self, destination: &str) -> Vec<Delivery> {
        let f = DeliveryFilter {
            destination: Some(destination.into()),
            ..Default::default()
        };
        self.store
            .list_deliveries(&f, None, 10_000)
            .await
            .expect("list deliveries")
    }
}

/// Polls `f` until it returns Some, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One request the receiver saw.
#[derive(Debug, Clone)]
pub struct Hit {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }
}

#[derive(Clone, Default)]
struct ReceiverState {
    hits: Arc<Mutex<Vec<Hit>>>,
    faults: Faults,
}

/// A webhook receiver that answers 200 unless told otherwise (`faults`).
pub struct Receiver {
    server: FakeServer,
    state: ReceiverState,
}

async fn receive(State(s): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> Response {
    match s.faults.next() {
        Some(Fault::Status {
            status,
            body: text,
            headers: extra,
        }) => {
            s.hits.lock().unwrap().push(Hit {
                headers,
                body,
                status,
            });
            let mut resp = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                text,
            )
                .into_response();
            for (k, v) in extra {
                if let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(k.as_bytes()),
                    axum::http::HeaderValue::from_str(&v),
                ) {
                    resp.headers_mut().insert(k, v);
                }
            }
            resp
        }
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            s.hits.lock().unwrap().push(Hit {
                headers,
                body,
                status: 200,
            });
            StatusCode::OK.into_response()
        }
        // Received, then answered late.
        Some(Fault::DelayAnswer(d)) => {
            s.hits.lock().unwrap().push(Hit {
                headers,
                body,
                status: 200,
            });
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
        // Dropping the connection without an answer.
        Some(Fault::Reset) => std::panic::resume_unwind(Box::new("reset on command")),
        None => {
            s.hits.lock().unwrap().push(Hit {
                headers,
                body,
                status: 200,
            });
            StatusCode::OK.into_response()
        }
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = ReceiverState::default();
        let router = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let server = FakeServer::start(router, "127.0.0.1:0")
            .await
            .expect("receiver");
        Receiver { server, state }
    }

    pub fn url(&self) -> String {
        format!("{}/hook", self.server.base_url())
    }

    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Every request answered (failed ones included).
    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    /// Requests answered 2xx.
    pub fn delivered(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| (200..300).contains(&h.status))
            .collect()
    }

    pub fn fail_next(&self, status: u16, body: &str, times: usize) {
        self.faults().push(
            Fault::Status {
                status,
                body: body.to_string(),
                headers: vec![],
            },
            times,
        );
    }

    pub fn fail_next_with(&self, status: u16, headers: &[(&str, &str)], times: usize) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.faults().push(
            Fault::Status {
                status,
                body: String::new(),
                headers,
            },
            times,
        );
    }
}

/// A configuration with one form and one webhook destination pointing at
/// `receiver_url` (private network allowed), plus `extra` TOML.
pub fn webhook_config(receiver_url: &str, extra: &str) -> String {
    format!(
        r#"
[forms.contact]
[forms.contact.fields.email]
type = "email"
required = true
[forms.contact.fields.first_name]
type = "text"
[forms.contact.consent.crm]
field = "consent"
version = "v1"

[delivery]
poll_interval = "100ms"
[delivery.retry]
base = "50ms"
cap = "200ms"

[destinations.hook]
connector = "webhook"
url = "{receiver_url}"
allow_private_networks = true
purposes = ["crm"]
timeout = "2s"

[[routes]]
name = "all"
destinations = ["hook"]
{extra}
"#
    )
}

/// For tests that post a thousand leads at once from the test's own
/// single-threaded runtime: the clients share that thread with the server
/// and the fake vendor, so on a loaded machine a client may not write its
/// request until after the server's 10 s header-read timeout has closed the
/// connection. The subject of those tests is the vendor storm, not slow
/// clients (tests/it/connections.rs covers the timeout), so it is raised.
pub const MANY_CLIENTS_ON_ONE_THREAD: &str = "\n[server]\nheader_read_timeout = \"300s\"\n";

/// Posts `body` as a form client following the documented contract: a 503
/// means nothing was stored (the database did not answer in time, as it
/// may not under a thousand concurrent posts on a loaded machine), so the
/// post is sent again. Returns the final status.
pub async fn post_until_stored(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> reqwest::Result<u16> {
    let mut status = 0;
    // Up to about 30 s of shedding: a loaded machine (CI beside a build)
    // can keep the queue full for longer than a quiet one.
    for _ in 0..150 {
        status = client.post(url).json(body).send().await?.status().as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(status)
}

/// A lead with consent for `crm`.
pub fn lead(email: &str) -> Value {
    serde_json::json!({"email": email, "first_name": "Test", "consent": "yes"})
}

/// A form for CRM tests: names, company, phone, message and the `crm` consent.
pub const CRM_FORM: &str = r#"
[forms.contact]
[forms.contact.fields.email]
type = "email"
required = true
[forms.contact.fields.first_name]
type = "text"
[forms.contact.fields.last_name]
type = "text"
[forms.contact.fields.company]
type = "text"
[forms.contact.fields.phone]
type = "phone"
default_region = "US"
[forms.contact.fields.message]
type = "text"
max_length = 5000
[forms.contact.fields.colour]
type = "text"
[forms.contact.fields.tier]
type = "text"
[forms.contact.consent.crm]
field = "consent"
version = "v1"

[delivery]
poll_interval = "100ms"
[delivery.retry]
base = "50ms"
cap = "200ms"
"#;

/// A full lead: names, company, phone, a message, consent for `crm`.
pub fn full_lead(email: &str, first: &str, last: &str, company: &str, message: &str) -> Value {
    serde_json::json!({
        "email": email, "first_name": first, "last_name": last, "company": company,
        "phone": "+1 415 555 2671", "message": message, "consent": "yes",
    })
}

/// Stores an event directly (as a source endpoint would), routed to `destinations`.
pub async fn ingest_event(
    store: &Arc<dyn Store>,
    event_type: &str,
    email: &str,
    data: Value,
    destinations: &[&str],
) -> uuid::Uuid {
    ingest_event_with_refs(store, event_type, email, data, destinations, vec![]).await
}

/// [`ingest_event`] with the vendor references a source would set
/// (e.g. `("calendly", "invitee", "https://…")`).
pub async fn ingest_event_with_refs(
    store: &Arc<dyn Store>,
    event_type: &str,
    email: &str,
    data: Value,
    destinations: &[&str],
    refs: Vec<(&str, &str, &str)>,
) -> uuid::Uuid {
    use leadrelay_model::{ConsentPurpose, ConsentRecord, EmailAddress, Event, EventType, Origin};
    let now = chrono::Utc::now();
    let event = Event {
        id: leadrelay_model::new_id(),
        event_type: EventType::parse(event_type).expect("event type"),
        origin: Origin::source("test"),
        received_at: now,
        occurred_at: now,
        contact: leadrelay_model::ContactData {
            email: Some(EmailAddress::parse(email).expect("email")),
            ..Default::default()
        },
        contact_id: None,
        data: data.as_object().cloned().unwrap_or_default(),
        attribution: Default::default(),
        consent: vec![ConsentRecord {
            purpose: ConsentPurpose::parse("crm").expect("purpose"),
            granted: true,
            text_version: None,
            recorded_at: now,
        }],
        ip_hash: None,
        raw: Default::default(),
        spam: false,
        idempotency_key: None,
        external_id: None,
        vendor_refs: refs
            .into_iter()
            .map(|(system, object, id)| leadrelay_model::VendorRef {
                system: system.into(),
                object: object.into(),
                id: id.into(),
            })
            .collect(),
        changes: vec![],
        playbooks: vec![],
    };
    let out = store
        .ingest(vec![leadrelay::store::IngestItem {
            event,
            destinations: destinations.iter().map(|d| d.to_string()).collect(),
            idempotency: None,
        }])
        .await
        .expect("ingest");
    out[0].event_id()
}

impl TestApp {
    /// Waits until every delivery of `destination` is finished; returns them.
    pub async fn settled(
        &self,
        destination: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<Delivery> {
        eventually(
            &format!("{count} deliveries to {destination} finish"),
            timeout,
            || async {
                let all = self.deliveries(destination).await;
                (all.len() >= count && all.iter().all(|d| !d.state.is_active())).then_some(all)
            },
        )
        .await
    }
}

impl TestApp {
    /// Pauses `destination` until [`TestApp::release`], so that the leads
    /// posted meanwhile go out together. A time-limited pause is not enough:
    /// on a loaded machine the posts can outlast it and the first lead then
    /// leaves alone. The short wait lets a dispatcher that read the state
    /// just before the pause finish its (empty) claim.
    pub async fn hold(&self, destination: &str) {
        let far = chrono::Utc::now() + chrono::Duration::days(1);
        self.store
            .pause_destination(destination, far, "test: held")
            .await
            .expect("pause");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    /// Waits until `count` deliveries to `destination` are queued, then
    /// resumes it; they are claimed together within one poll interval.
    pub async fn release(&self, destination: &str, count: usize) {
        eventually(
            &format!("{count} deliveries to {destination} are queued"),
            Duration::from_secs(30),
            || async { (self.deliveries(destination).await.len() >= count).then_some(()) },
        )
        .await;
        self.store
            .resume_destination(destination)
            .await
            .expect("resume");
    }
}

impl TestApp {
    /// The delivery to `destination` of the newest event about `email`.
    pub async fn delivery_for(&self, destination: &str, email: &str) -> Delivery {
        for d in self.deliveries(destination).await {
            let event = self.store.get_event(d.event_id).await.expect("event");
            if event
                .and_then(|e| e.contact.email)
                .is_some_and(|m| m.as_str() == email)
            {
                return d;
            }
        }
        panic!("no delivery to {destination} for {email}");
    }
}

/// Waits until the server at `base` answers `/readyz` with 200.
pub async fn wait_ready(what: &str, base: &str, timeout: Duration) {
    let client = crate::binary::http_client();
    let url = format!("{base}/readyz");
    eventually(what, timeout, || {
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .get(&url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        }
    })
    .await;
}
