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

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub dir: TempDir,
    running: Option<Running>,
}

/// Builds a test app from configuration text.
pub struct Builder {
    toml: String,
    env: HashMap<String, String>,
    keep_throttle: bool,
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

    /// Reuse a data directory (to restart on the same database).
    pub fn dir(mut self, dir: TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    pub async fn start(self) -> TestApp {
        leadrelay::init_crypto();
        let dir = self
            .dir
            .unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
        let env = self.env.clone();
        let lookup = move |k: &str| env.get(k).cloned();
        let loaded =
            config::load_str(&self.toml, "test.toml", &lookup).unwrap_or_else(|e| panic!("{e}"));
        let mut cfg = loaded.config;
        cfg.storage.url = format!("sqlite://{}/leadrelay.db", dir.path().display());
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

    /// Stops the app and returns its data directory (for a restart).
    pub async fn stop(mut self) -> TempDir {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        self.dir
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
        vendor_refs: vec![],
        changes: vec![],
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
