//! Fake Woodpecker: the part of the Woodpecker API (v1) a sequence
//! enrollment uses.
//!
//! # Followed references
//! - docs.woodpecker.co "API reference": API key authorization (HTTP Basic
//!   with the key as user name, or the `x-api-key` header), on
//!   `https://api.woodpecker.co/rest/v1/...`. Rate limits: "Only 1 request
//!   can be processed at time. The time limit for queued requests is 15
//!   seconds. The maximum number of queued API requests is 6. Every
//!   request above this number will be immediately dropped."
//! - "Error codes": errors carry `{"status": {"status": "ERROR", "code":
//!   "E_…", "msg": …}}` — `E_SESSION` (bad key), `E_RECORD_NOT_FOUND`
//!   (no such campaign), `E_TOO_MANY_REQUESTS` (too many simultaneous
//!   requests), `E_REQUIRED_ELEMENT`, `E_INV_STATUS` (a prospect whose
//!   status is not ACTIVE, e.g. blacklisted or bounced), `E_DUPLICATE`,
//!   `E_EMAIL` (invalid address), `E_URL_NOT_FOUND`.
//! - "Add prospects to a campaign": `POST /add_prospects_campaign` with
//!   `campaign.campaign_id` and `prospects` (`email` required; `first_name`,
//!   `last_name`, `company`, `website`, `tags`, `title`, `phone`, `snippet1`…);
//!   one prospect per email in the database; the answer lists each
//!   prospect with its `id` and a `status` (`OK`, `DUPLICATE` when it is
//!   already in the campaign, `ERROR` with a `code`).
//! - "Get a list of prospects": `GET /prospects?email=…` (`campaigns_details=true`
//!   adds each campaign with its `campaign_prospect_status`; `campaigns_id`
//!   keeps the prospects of that campaign; `page`, from 1, and `per_page`,
//!   at most 500, page the list); an empty result is `204 No Content`.
//! - "Delete prospects": `DELETE /prospects?id=…` (with `campaigns_id=…`
//!   only from that campaign).
//! - "Get campaigns": `GET /campaign_list?id=…`.
//!
//! # What it enforces
//! The key (401 `E_SESSION`); one request processed at a time, up to 6
//! waiting at most 15 s, every further one answered at once with 429
//! `E_TOO_MANY_REQUESTS` (it also counts requests that arrived while
//! another was being processed: [`WoodpeckerState::overlapping`]); one
//! prospect per email; a prospect added to a campaign once (`DUPLICATE`);
//! blacklisted and bounced prospects refused (`E_INV_STATUS`); invalid
//! addresses (`E_EMAIL`); unknown campaigns (400 `E_RECORD_NOT_FOUND`).
//!
//! # What it simplifies
//! The 401 status for a bad key and 429 for a dropped request are ours (the
//! docs list the codes, not every status); prospects never move through a
//! campaign on their own ([`WoodpeckerState::set_campaign_status`] does it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::common::{
    FakeServer, Faults, RequestLog, basic_credentials, json_response, plausible_email, query_param,
};

#[derive(Debug, Clone)]
pub struct WoodpeckerConfig {
    pub api_key: String,
    /// (id, name)
    pub campaigns: Vec<(u64, String)>,
    /// Addresses whose prospect status is BLACKLIST.
    pub blacklisted: Vec<String>,
    /// Requests that may wait while one is processed.
    pub max_queued: usize,
    pub queue_timeout: Duration,
    /// How long processing one request takes (to make overlaps visible).
    pub processing_time: Duration,
}

impl WoodpeckerConfig {
    pub const DEFAULT_API_KEY: &'static str = "fake-woodpecker-key-0001";
    pub const DEFAULT_CAMPAIGN: u64 = 3001;
    pub const OTHER_CAMPAIGN: u64 = 3002;
    pub const BLACKLISTED: &'static str = "gone@example.com";
}

impl Default for WoodpeckerConfig {
    fn default() -> Self {
        Self {
            api_key: Self::DEFAULT_API_KEY.into(),
            campaigns: vec![
                (Self::DEFAULT_CAMPAIGN, "SQL follow-up".into()),
                (Self::OTHER_CAMPAIGN, "Nurture".into()),
            ],
            blacklisted: vec![Self::BLACKLISTED.into()],
            max_queued: 6,
            queue_timeout: Duration::from_secs(15),
            processing_time: Duration::ZERO,
        }
    }
}

/// A prospect of the database and its campaigns.
#[derive(Debug, Clone, PartialEq)]
pub struct WoodpeckerProspect {
    pub id: u64,
    pub email: String,
    /// ACTIVE, BLACKLIST, BOUNCED …
    pub status: String,
    pub fields: Map<String, Value>,
    /// (campaign id, campaign prospect status: ACTIVE, STOPPED, …)
    pub campaigns: Vec<(u64, String)>,
}

#[derive(Debug)]
struct Inner {
    config: WoodpeckerConfig,
    prospects: Mutex<Vec<WoodpeckerProspect>>,
    processing: Semaphore,
    /// Requests at the server now (processed or waiting).
    present: AtomicUsize,
    waiting: AtomicUsize,
    overlapping: AtomicUsize,
    dropped: AtomicUsize,
    /// Time spent processing requests (the one-at-a-time turn held), in
    /// nanoseconds: the busy share of a run is what a client can use.
    busy_nanos: AtomicU64,
    faults: Faults,
    requests: RequestLog,
}

#[derive(Debug, Clone)]
pub struct WoodpeckerState {
    inner: Arc<Inner>,
}

impl WoodpeckerState {
    pub fn new(config: WoodpeckerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                prospects: Mutex::new(Vec::new()),
                processing: Semaphore::new(1),
                present: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                overlapping: AtomicUsize::new(0),
                dropped: AtomicUsize::new(0),
                busy_nanos: AtomicU64::new(0),
                faults: Faults::default(),
                requests: RequestLog::default(),
            }),
        }
    }

    fn prospects_mut(&self) -> MutexGuard<'_, Vec<WoodpeckerProspect>> {
        self.inner
            .prospects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub fn requests(&self) -> &RequestLog {
        &self.inner.requests
    }

    /// Requests that arrived while another one was at the server.
    pub fn overlapping(&self) -> usize {
        self.inner.overlapping.load(Ordering::SeqCst)
    }

    /// Requests dropped with `E_TOO_MANY_REQUESTS`.
    pub fn dropped(&self) -> usize {
        self.inner.dropped.load(Ordering::SeqCst)
    }

    /// How long the fake has spent processing requests, one at a time (the
    /// processing time and the handler's own work). A client that keeps
    /// Woodpecker busy all the time has this equal to the wall time.
    pub fn busy_time(&self) -> Duration {
        Duration::from_nanos(self.inner.busy_nanos.load(Ordering::SeqCst))
    }

    pub fn prospects(&self) -> Vec<WoodpeckerProspect> {
        self.prospects_mut().clone()
    }

    /// The emails in a campaign whose campaign status is ACTIVE.
    pub fn active_in(&self, campaign: u64) -> Vec<String> {
        self.prospects_mut()
            .iter()
            .filter(|p| {
                p.campaigns
                    .iter()
                    .any(|(c, s)| *c == campaign && s == "ACTIVE")
            })
            .map(|p| p.email.clone())
            .collect()
    }

    /// Puts a person in a campaign (as if added in the app).
    pub fn seed(&self, campaign: u64, email: &str) {
        let mut ps = self.prospects_mut();
        let id = next_id(&ps);
        ps.push(WoodpeckerProspect {
            id,
            email: email.to_lowercase(),
            status: "ACTIVE".into(),
            fields: Map::new(),
            campaigns: vec![(campaign, "ACTIVE".into())],
        });
    }

    /// Sets a prospect's status in a campaign (as if the sequence moved).
    pub fn set_campaign_status(&self, campaign: u64, email: &str, status: &str) {
        for p in self.prospects_mut().iter_mut() {
            if p.email.eq_ignore_ascii_case(email) {
                for m in p.campaigns.iter_mut().filter(|(c, _)| *c == campaign) {
                    m.1 = status.to_string();
                }
            }
        }
    }

    pub fn credentials_banner(&self, base_url: &str) -> String {
        let c = &self.inner.config;
        let mut out = format!("fake Woodpecker listening on {base_url}/rest/v1\n");
        out.push_str(&format!("  WOODPECKER_API_KEY={}\n", c.api_key));
        for (id, name) in &c.campaigns {
            out.push_str(&format!("  campaign {id} ({name})\n"));
        }
        out
    }
}

fn next_id(ps: &[WoodpeckerProspect]) -> u64 {
    5_000_000 + ps.len() as u64 + 1
}

fn error(status: u16, code: &str, msg: &str) -> Response {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"status": {"status": "ERROR", "code": code, "msg": msg}}),
    )
}

/// Leaves the count of requests at the server when dropped.
struct Present<'a>(&'a AtomicUsize);
impl Drop for Present<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One request processed at a time; up to `max_queued` wait at most
/// `queue_timeout`; the rest are dropped.
async fn one_at_a_time(
    inner: &Inner,
    handle: impl std::future::Future<Output = Response>,
) -> Response {
    let too_many = || {
        inner.dropped.fetch_add(1, Ordering::SeqCst);
        error(
            429,
            "E_TOO_MANY_REQUESTS",
            "Too many requests simultaneously. Woodpecker processes one request at a time.",
        )
    };
    let permit = match inner.processing.try_acquire() {
        Ok(p) => p,
        Err(_) => {
            if inner.waiting.fetch_add(1, Ordering::SeqCst) >= inner.config.max_queued {
                inner.waiting.fetch_sub(1, Ordering::SeqCst);
                return too_many();
            }
            let got =
                tokio::time::timeout(inner.config.queue_timeout, inner.processing.acquire()).await;
            inner.waiting.fetch_sub(1, Ordering::SeqCst);
            match got {
                Ok(Ok(p)) => p,
                _ => return too_many(),
            }
        }
    };
    let started = std::time::Instant::now();
    if !inner.config.processing_time.is_zero() {
        tokio::time::sleep(inner.config.processing_time).await;
    }
    let response = handle.await;
    let busy = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    inner.busy_nanos.fetch_add(busy, Ordering::SeqCst);
    drop(permit);
    response
}

async fn observe(State(state): State<WoodpeckerState>, req: Request, next: Next) -> Response {
    let inner = state.inner.clone();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let authorized = basic_credentials(
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
    )
    .map(|(user, _)| user)
    .or_else(|| {
        req.headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
    .is_some_and(|k| k == inner.config.api_key);
    let response = inner
        .faults
        .around(async {
            // An answer delayed by a fault is no longer being processed.
            if inner.present.fetch_add(1, Ordering::SeqCst) > 0 {
                inner.overlapping.fetch_add(1, Ordering::SeqCst);
            }
            let _present = Present(&inner.present);
            if !authorized {
                return error(
                    401,
                    "E_SESSION",
                    "The API key you've entered is incorrect or no longer valid.",
                );
            }
            one_at_a_time(&inner, next.run(req)).await
        })
        .await;
    inner
        .requests
        .record(&method, &path, response.status().as_u16());
    response
}

fn campaign_name(state: &WoodpeckerState, id: u64) -> Option<String> {
    state
        .inner
        .config
        .campaigns
        .iter()
        .find(|(c, _)| *c == id)
        .map(|(_, n)| n.clone())
}

async fn add_to_campaign(State(state): State<WoodpeckerState>, body: String) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_str::<Value>(&body) else {
        return error(400, "E_WRONG_PARAM", "Invalid request");
    };
    let campaign = body
        .get("campaign")
        .and_then(|c| c.get("campaign_id"))
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    let Some(campaign) = campaign.filter(|c| campaign_name(&state, *c).is_some()) else {
        return error(
            400,
            "E_RECORD_NOT_FOUND",
            "A campaign you want to add prospects to cannot be found",
        );
    };
    let Some(list) = body
        .get("prospects")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
    else {
        return error(400, "E_REQUIRED_ELEMENT", "Element Prospects is required");
    };
    let mut answers = Vec::new();
    let mut ps = state.prospects_mut();
    for item in list {
        let fields = item.as_object().cloned().unwrap_or_default();
        let email = fields
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_lowercase();
        if !plausible_email(&email) {
            answers.push(json!({"email": email, "status": "ERROR", "code": "E_EMAIL",
                "msg": "Emails could not be added or look like invalid email format"}));
            continue;
        }
        let blacklisted = state
            .inner
            .config
            .blacklisted
            .iter()
            .any(|b| b.eq_ignore_ascii_case(&email));
        let i = match ps.iter().position(|p| p.email == email) {
            Some(i) => i,
            None => {
                let id = next_id(&ps);
                let status = if blacklisted { "BLACKLIST" } else { "ACTIVE" };
                let mut stored = fields.clone();
                stored.remove("email");
                ps.push(WoodpeckerProspect {
                    id,
                    email: email.clone(),
                    status: status.into(),
                    fields: stored,
                    campaigns: Vec::new(),
                });
                ps.len() - 1
            }
        };
        let p = &mut ps[i];
        if p.status != "ACTIVE" {
            answers.push(
                json!({"email": email, "id": p.id, "status": "ERROR", "code": "E_INV_STATUS",
                "msg": format!("Prospect's status is {}, not ACTIVE", p.status)}),
            );
        } else if p.campaigns.iter().any(|(c, _)| *c == campaign) {
            answers.push(json!({"email": email, "id": p.id, "status": "DUPLICATE",
                "msg": "Prospect is already in this campaign"}));
        } else {
            p.campaigns.push((campaign, "ACTIVE".into()));
            answers.push(json!({"email": email, "id": p.id, "status": "OK"}));
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"status": {"status": "OK", "code": "OK", "msg": "Success"}, "prospects": answers}),
    )
}

async fn list_prospects(State(state): State<WoodpeckerState>, req: Request) -> Response {
    let q = req.uri().query();
    let email = query_param(q, "email");
    let id = query_param(q, "id").and_then(|v| v.parse::<u64>().ok());
    let details = query_param(q, "campaigns_details").as_deref() == Some("true");
    let campaign = match query_param(q, "campaigns_id").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => return error(400, "E_INV_PARAM", "campaigns_id must be a number"),
    };
    let number = |k: &str, default: usize| match query_param(q, k).map(|v| v.parse::<usize>()) {
        None => Ok(default),
        Some(Ok(n)) if n >= 1 => Ok(n),
        _ => Err(error(
            400,
            "E_INV_PARAM",
            &format!("{k} must be a number from 1"),
        )),
    };
    let (page, per_page) = match (number("page", 1), number("per_page", 100)) {
        (Ok(p), Ok(n)) if n <= 500 => (p, n),
        (Ok(_), Ok(_)) => return error(400, "E_INV_PARAM", "per_page must be at most 500"),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let ps = state.prospects_mut();
    let found: Vec<Value> = ps
        .iter()
        .filter(|p| {
            email
                .as_deref()
                .is_none_or(|e| p.email.eq_ignore_ascii_case(e))
        })
        .filter(|p| id.is_none_or(|i| p.id == i))
        .filter(|p| campaign.is_none_or(|c| p.campaigns.iter().any(|(pc, _)| *pc == c)))
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|p| {
            let mut v = json!({"id": p.id, "email": p.email, "status": p.status});
            if let (Value::Object(o), true) = (&mut v, details) {
                for (k, f) in &p.fields {
                    o.insert(k.clone(), f.clone());
                }
                let cs: Vec<Value> = p
                    .campaigns
                    .iter()
                    .map(|(c, s)| {
                        json!({"campaign_id": c, "campaign_name": campaign_name(&state, *c),
                            "campaign_status": "RUNNING", "campaign_prospect_status": s})
                    })
                    .collect();
                o.insert("campaigns_details".into(), Value::Array(cs));
            }
            v
        })
        .collect();
    if found.is_empty() {
        return Response::builder()
            .status(204)
            .body(axum::body::Body::empty())
            .unwrap_or_default();
    }
    json_response(StatusCode::OK, &Value::Array(found))
}

async fn delete_prospects(State(state): State<WoodpeckerState>, req: Request) -> Response {
    let q = req.uri().query();
    let Some(id) = query_param(q, "id").and_then(|v| v.parse::<u64>().ok()) else {
        return error(400, "E_WRONG_PARAM", "id is required");
    };
    let campaign = query_param(q, "campaigns_id").and_then(|v| v.parse::<u64>().ok());
    let mut ps = state.prospects_mut();
    let Some(i) = ps.iter().position(|p| p.id == id) else {
        return error(404, "E_RECORD_NOT_FOUND", "Prospect not found");
    };
    match campaign {
        Some(c) => {
            let before = ps[i].campaigns.len();
            ps[i].campaigns.retain(|(x, _)| *x != c);
            if ps[i].campaigns.len() == before {
                return error(404, "E_RECORD_NOT_FOUND", "Prospect not in this campaign");
            }
        }
        None => {
            ps.remove(i);
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"status": {"status": "OK", "code": "OK", "msg": "Deleted"}}),
    )
}

async fn campaign_list(State(state): State<WoodpeckerState>, req: Request) -> Response {
    let id = query_param(req.uri().query(), "id").and_then(|v| v.parse::<u64>().ok());
    let found: Vec<Value> = state
        .inner
        .config
        .campaigns
        .iter()
        .filter(|(c, _)| id.is_none_or(|i| *c == i))
        .map(|(c, n)| json!({"id": c, "name": n, "status": "RUNNING"}))
        .collect();
    if found.is_empty() {
        return Response::builder()
            .status(204)
            .body(axum::body::Body::empty())
            .unwrap_or_default();
    }
    json_response(StatusCode::OK, &Value::Array(found))
}

async fn not_found() -> Response {
    error(
        404,
        "E_URL_NOT_FOUND",
        "The Woodpecker API endpoint does not exist",
    )
}

pub fn router(state: WoodpeckerState) -> Router {
    Router::new()
        .route("/rest/v1/add_prospects_campaign", post(add_to_campaign))
        .route(
            "/rest/v1/prospects",
            get(list_prospects).delete(delete_prospects),
        )
        .route("/rest/v1/campaign_list", get(campaign_list))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

pub struct FakeWoodpecker {
    server: FakeServer,
    state: WoodpeckerState,
}

impl FakeWoodpecker {
    pub async fn start(config: WoodpeckerConfig) -> std::io::Result<Self> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    pub async fn start_on(config: WoodpeckerConfig, listen: &str) -> std::io::Result<Self> {
        let state = WoodpeckerState::new(config);
        let server = FakeServer::start(router(state.clone()), listen).await?;
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:PORT` (the real API is `https://api.woodpecker.co`;
    /// the connector adds `/rest/v1`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }
}

impl std::ops::Deref for FakeWoodpecker {
    type Target = WoodpeckerState;
    fn deref(&self) -> &WoodpeckerState {
        &self.state
    }
}

pub async fn serve(listen: &str, config: WoodpeckerConfig) -> std::io::Result<()> {
    let state = WoodpeckerState::new(config);
    let listener = TcpListener::bind(listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("{}", state.credentials_banner(&base));
    axum::serve(listener, router(state)).await
}

/// Per campaign id, the emails with their campaign prospect status.
pub fn memberships(ps: &[WoodpeckerProspect]) -> HashMap<u64, Vec<(String, String)>> {
    let mut out: HashMap<u64, Vec<(String, String)>> = HashMap::new();
    for p in ps {
        for (c, s) in &p.campaigns {
            out.entry(*c)
                .or_default()
                .push((p.email.clone(), s.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    async fn add(base: &str, key: &str, campaign: u64, emails: &[&str]) -> (u16, Value) {
        let prospects: Vec<Value> = emails.iter().map(|e| json!({"email": e})).collect();
        let r = client()
            .post(format!("{base}/rest/v1/add_prospects_campaign"))
            .basic_auth(key, Some(""))
            .json(&json!({"campaign": {"campaign_id": campaign}, "prospects": prospects}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn adds_once_and_refuses_what_woodpecker_refuses() {
        let fake = FakeWoodpecker::start(WoodpeckerConfig::default())
            .await
            .unwrap();
        let base = fake.base_url();
        let key = WoodpeckerConfig::DEFAULT_API_KEY;
        let c = WoodpeckerConfig::DEFAULT_CAMPAIGN;
        let (s, r) = add(&base, "wrong", c, &["a@x.io"]).await;
        assert_eq!(s, 401);
        assert_eq!(r["status"]["code"], "E_SESSION");
        let (s, r) = add(
            &base,
            key,
            c,
            &["a@x.io", "nope", WoodpeckerConfig::BLACKLISTED],
        )
        .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["prospects"][0]["status"], "OK");
        assert_eq!(r["prospects"][1]["code"], "E_EMAIL");
        assert_eq!(r["prospects"][2]["code"], "E_INV_STATUS");
        let (_, r) = add(&base, key, c, &["A@x.io"]).await;
        assert_eq!(r["prospects"][0]["status"], "DUPLICATE");
        let (s, r) = add(&base, key, 99, &["a@x.io"]).await;
        assert_eq!(
            (s, r["status"]["code"].as_str()),
            (400, Some("E_RECORD_NOT_FOUND"))
        );
        assert_eq!(fake.active_in(c), ["a@x.io"]);
        let r = client()
            .get(format!("{base}/rest/v1/prospects?email=nobody@x.io"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }

    #[tokio::test]
    async fn one_request_at_a_time_and_the_queue_overflow_is_dropped() {
        let fake = FakeWoodpecker::start(WoodpeckerConfig {
            max_queued: 1,
            processing_time: Duration::from_millis(400),
            ..Default::default()
        })
        .await
        .unwrap();
        let url = format!("{}/rest/v1/campaign_list", fake.base_url());
        let calls = (0..3).map(|_| {
            let url = url.clone();
            async move {
                client()
                    .get(url)
                    .header("x-api-key", WoodpeckerConfig::DEFAULT_API_KEY)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        });
        let mut statuses = futures_join(calls).await;
        statuses.sort();
        assert_eq!(statuses, [200, 200, 429]);
        assert_eq!(fake.overlapping(), 2);
        assert_eq!(fake.dropped(), 1);
    }

    async fn futures_join<F: std::future::Future<Output = u16> + Send + 'static>(
        fs: impl Iterator<Item = F>,
    ) -> Vec<u16> {
        let handles: Vec<_> = fs.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
