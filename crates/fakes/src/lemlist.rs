//! Fake lemlist: the part of the lemlist API a sequence enrollment uses.
//!
//! # Followed references
//! - developer.lemlist.com, "Authentication": HTTP Basic with an empty user
//!   and the API key as password (or `?access_token=KEY`), on
//!   `https://api.lemlist.com/api/...`.
//! - "Rate Limit": 20 requests per 2 seconds per API key; a 429 carries
//!   `Retry-After` (seconds), `X-RateLimit-Limit`, `X-RateLimit-Remaining`
//!   and `X-RateLimit-Reset`.
//! - "Get Team Information": `GET /api/team`.
//! - "Get Campaign": `GET /api/campaigns/{campaignId}`.
//! - "Create Lead in Campaign": `POST /api/campaigns/{campaignId}/leads/`
//!   with the lead as a JSON object (`email`, `firstName`, `lastName`,
//!   `companyName`, `companyDomain`, `jobTitle`, `phone`, `linkedinUrl`,
//!   `icebreaker`, and any other key as a custom variable), query
//!   `deduplicate=true` to refuse a lead already in another campaign of the
//!   team; answered with the Lead object (`_id` `lea_…`, `isPaused`,
//!   `campaignId`, `contactId` `ctc_…`).
//! - "Get Lead by Email": `GET /api/leads/{email}?version=v2` (the
//!   `version=v2` parameter is mandatory) answers the person's leads, one
//!   per campaign, each with `_id`, `email`, `campaignId` and `status`
//!   (`running`, `paused`, `done`, `unsubscribed`, …); 404 when unknown.
//! - "Delete or Unsubscribe Lead": `DELETE /api/campaigns/{campaignId}/leads/{leadId}`;
//!   with `action=remove` the lead is deleted from the campaign and the
//!   Lead object answered.
//!
//! # What it enforces
//! Authentication (401); the 20-per-2-seconds window per key (429 with the
//! headers above); unknown campaigns (404); a JSON object body whose
//! variables are strings, numbers or booleans (400 otherwise); a valid
//! `email` (400); a lead already in the campaign, or with `deduplicate=true`
//! in another campaign (409 — as clients of the real API expect; the exact
//! wording of lemlist's error texts is not documented and is ours);
//! unsubscribed addresses (400).
//!
//! # What it simplifies
//! Email finding/verification and LinkedIn enrichment options are accepted
//! and ignored; leads never move through a sequence (no sends, no
//! activities, no webhooks). `DELETE` without `action=remove` (unsubscribe)
//! is not modelled: it answers 400 saying so. A lead or campaign it does not
//! have answers 404 (lemlist's exact text is not documented; ours).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use crate::common::{
    FakeServer, Faults, RequestLog, RollingWindow, guard, query_param, too_many_requests, wait_secs,
};

/// The fake team: its API key, campaigns and unsubscribed addresses.
#[derive(Debug, Clone)]
pub struct LemlistConfig {
    pub api_key: String,
    pub team_id: String,
    /// Campaign id → name.
    pub campaigns: Vec<(String, String)>,
    pub unsubscribed: Vec<String>,
    pub rate_limit: usize,
    pub rate_window: Duration,
}

impl LemlistConfig {
    pub const DEFAULT_API_KEY: &'static str = "fake-lemlist-key-0001";
    pub const DEFAULT_CAMPAIGN: &'static str = "cam_fakeOnboarding01";
    pub const OTHER_CAMPAIGN: &'static str = "cam_fakeNurture00002";
    pub const UNSUBSCRIBED: &'static str = "gone@example.com";
}

impl Default for LemlistConfig {
    fn default() -> Self {
        Self {
            api_key: Self::DEFAULT_API_KEY.into(),
            team_id: "tea_fakeTeam000001".into(),
            campaigns: vec![
                (Self::DEFAULT_CAMPAIGN.into(), "SQL follow-up".into()),
                (Self::OTHER_CAMPAIGN.into(), "Nurture".into()),
            ],
            unsubscribed: vec![Self::UNSUBSCRIBED.into()],
            rate_limit: 20,
            rate_window: Duration::from_secs(2),
        }
    }
}

/// A lead the fake holds in a campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct LemlistLead {
    pub id: String,
    pub campaign_id: String,
    pub email: String,
    /// Every variable sent, `email` included.
    pub fields: Map<String, Value>,
}

#[derive(Debug)]
struct Inner {
    config: LemlistConfig,
    leads: Mutex<Vec<LemlistLead>>,
    window: RollingWindow,
    faults: Faults,
    requests: RequestLog,
}

/// The fake team's state, shared by the router and the test that inspects it.
#[derive(Debug, Clone)]
pub struct LemlistState {
    inner: Arc<Inner>,
}

impl LemlistState {
    pub fn new(config: LemlistConfig) -> Self {
        let window = RollingWindow::new(config.rate_limit.max(1), config.rate_window);
        Self {
            inner: Arc::new(Inner {
                config,
                leads: Mutex::new(Vec::new()),
                window,
                faults: Faults::default(),
                requests: RequestLog::default(),
            }),
        }
    }

    fn leads_mut(&self) -> MutexGuard<'_, Vec<LemlistLead>> {
        self.inner.leads.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub fn requests(&self) -> &RequestLog {
        &self.inner.requests
    }

    /// Every lead of every campaign, oldest first.
    pub fn leads(&self) -> Vec<LemlistLead> {
        self.leads_mut().clone()
    }

    /// The leads of one campaign.
    pub fn campaign_leads(&self, campaign: &str) -> Vec<LemlistLead> {
        self.leads_mut()
            .iter()
            .filter(|l| l.campaign_id == campaign)
            .cloned()
            .collect()
    }

    /// Puts a lead in a campaign directly (as if added in the app).
    pub fn seed_lead(&self, campaign: &str, email: &str) {
        let mut fields = Map::new();
        fields.insert("email".into(), json!(email));
        self.leads_mut().push(LemlistLead {
            id: random_id("lea_"),
            campaign_id: campaign.into(),
            email: email.to_lowercase(),
            fields,
        });
    }

    /// Takes a person out of a campaign (as if their sequence ended).
    pub fn remove_lead(&self, campaign: &str, email: &str) {
        self.leads_mut()
            .retain(|l| !(l.campaign_id == campaign && l.email.eq_ignore_ascii_case(email)));
    }

    /// For `leadrelay fake lemlist`.
    pub fn credentials_banner(&self, base_url: &str) -> String {
        let c = &self.inner.config;
        let mut out = format!("fake lemlist listening on {base_url}\n");
        out.push_str(&format!("  LEMLIST_API_KEY={}\n", c.api_key));
        for (id, name) in &c.campaigns {
            out.push_str(&format!("  campaign {id} ({name})\n"));
        }
        out
    }
}

fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let tail: String = (0..17)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, json_body(json!({ "error": message }))).into_response()
}

fn json_body(v: Value) -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", "application/json")], v.to_string())
}

/// Authentication, the rate window, injected faults and the request log.
async fn observe(State(state): State<LemlistState>, req: Request, next: Next) -> Response {
    let inner = &state.inner;
    guard(&inner.faults, &inner.requests, req, next, |req| {
        authenticate(&state, req.headers(), req.uri().query())
            .map_err(|why| error(StatusCode::UNAUTHORIZED, why))?;
        let limit = ("x-ratelimit-limit", inner.window.limit().to_string());
        match inner.window.hit() {
            Ok(remaining) => Ok(vec![
                limit,
                ("x-ratelimit-remaining", remaining.to_string()),
            ]),
            Err(wait) => {
                let secs = wait_secs(wait);
                let reset = chrono::Utc::now() + chrono::Duration::seconds(secs as i64);
                Err(too_many_requests(
                    &json!({"error": "Too many requests"}),
                    Some(secs),
                    &[
                        limit,
                        ("x-ratelimit-remaining", "0".into()),
                        ("x-ratelimit-reset", reset.to_rfc2822()),
                    ],
                ))
            }
        }
    })
    .await
}

fn authenticate(
    state: &LemlistState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), &'static str> {
    let key = &state.inner.config.api_key;
    let from_query = query_param(query, "access_token");
    let from_header = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(_, pw)| pw.to_string()));
    match from_header.or(from_query) {
        Some(k) if &k == key => Ok(()),
        Some(_) => Err("Invalid API key"),
        None => Err("Missing API key"),
    }
}

async fn team(State(state): State<LemlistState>) -> Response {
    let c = &state.inner.config;
    json_body(json!({"_id": c.team_id, "name": "leadrelay fake team"})).into_response()
}

async fn campaign(State(state): State<LemlistState>, Path(id): Path<String>) -> Response {
    match state.inner.config.campaigns.iter().find(|(c, _)| *c == id) {
        Some((id, name)) => {
            json_body(json!({"_id": id, "name": name, "status": "running"})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Campaign not found"),
    }
}

async fn add_lead(
    State(state): State<LemlistState>,
    Path(campaign): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let c = &state.inner.config;
    if !c.campaigns.iter().any(|(id, _)| *id == campaign) {
        return error(StatusCode::NOT_FOUND, "Campaign not found");
    }
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return error(
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/json",
        );
    }
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Body must be a JSON object");
    };
    if let Some((k, _)) = fields
        .iter()
        .find(|(_, v)| !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Variable {k} must be a string, a number or a boolean"),
        );
    }
    let Some(email) = fields.get("email").and_then(Value::as_str) else {
        return error(StatusCode::BAD_REQUEST, "email is required");
    };
    if !crate::common::plausible_email(email) {
        return error(StatusCode::BAD_REQUEST, "Invalid email");
    }
    let email = email.to_lowercase();
    if c.unsubscribed
        .iter()
        .any(|u| u.eq_ignore_ascii_case(&email))
    {
        return error(StatusCode::BAD_REQUEST, "Lead is unsubscribed");
    }
    let deduplicate = query.get("deduplicate").is_some_and(|v| v == "true");
    let mut leads = state.leads_mut();
    if leads
        .iter()
        .any(|l| l.email == email && l.campaign_id == campaign)
    {
        return error(StatusCode::CONFLICT, "Lead already in the campaign");
    }
    if deduplicate && leads.iter().any(|l| l.email == email) {
        return error(StatusCode::CONFLICT, "Lead already in another campaign");
    }
    let lead = LemlistLead {
        id: random_id("lea_"),
        campaign_id: campaign.clone(),
        email: email.clone(),
        fields: fields.clone(),
    };
    leads.push(lead.clone());
    let mut answer = fields;
    answer.insert("email".into(), json!(email));
    answer.insert("_id".into(), json!(lead.id));
    answer.insert("isPaused".into(), json!(false));
    answer.insert("campaignId".into(), json!(campaign));
    answer.insert("contactId".into(), json!(random_id("ctc_")));
    json_body(Value::Object(answer)).into_response()
}

async fn get_lead(
    State(state): State<LemlistState>,
    Path(email): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if query.get("version").map(String::as_str) != Some("v2") {
        return error(StatusCode::BAD_REQUEST, "version=v2 is mandatory");
    }
    let leads: Vec<Value> = state
        .leads_mut()
        .iter()
        .filter(|l| l.email.eq_ignore_ascii_case(&email))
        .map(|l| json!({"_id": l.id, "email": l.email, "campaignId": l.campaign_id, "status": "running"}))
        .collect();
    if leads.is_empty() {
        return error(StatusCode::NOT_FOUND, "Lead not found");
    }
    json_body(Value::Array(leads)).into_response()
}

async fn delete_lead(
    State(state): State<LemlistState>,
    Path((campaign, lead)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !state
        .inner
        .config
        .campaigns
        .iter()
        .any(|(id, _)| *id == campaign)
    {
        return error(StatusCode::NOT_FOUND, "Campaign not found");
    }
    if query.get("action").map(String::as_str) != Some("remove") {
        return error(
            StatusCode::BAD_REQUEST,
            "the fake only deletes (action=remove); unsubscribing is not modelled",
        );
    }
    let mut leads = state.leads_mut();
    let Some(i) = leads.iter().position(|l| {
        l.campaign_id == campaign && (l.id == lead || l.email.eq_ignore_ascii_case(&lead))
    }) else {
        return error(StatusCode::NOT_FOUND, "Lead not found");
    };
    let gone = leads.remove(i);
    let mut answer = gone.fields;
    answer.insert("email".into(), json!(gone.email));
    answer.insert("_id".into(), json!(gone.id));
    answer.insert("isPaused".into(), json!(false));
    answer.insert("campaignId".into(), json!(gone.campaign_id));
    json_body(Value::Object(answer)).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not found")
}

/// The fake's routes, to serve on any listener.
pub fn router(state: LemlistState) -> Router {
    Router::new()
        .route("/api/team", get(team))
        .route("/api/campaigns/{campaign}", get(campaign))
        .route("/api/leads/{email}", get(get_lead))
        .route("/api/campaigns/{campaign}/leads", post(add_lead))
        .route("/api/campaigns/{campaign}/leads/", post(add_lead))
        .route(
            "/api/campaigns/{campaign}/leads/{lead}",
            axum::routing::delete(delete_lead),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A running fake lemlist. Derefs to [`LemlistState`] for the accessors.
pub struct FakeLemlist {
    server: FakeServer,
    state: LemlistState,
}

impl FakeLemlist {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(config: LemlistConfig) -> std::io::Result<Self> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    pub async fn start_on(config: LemlistConfig, listen: &str) -> std::io::Result<Self> {
        let state = LemlistState::new(config);
        let server = FakeServer::start(router(state.clone()), listen).await?;
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:PORT` (the real one is `https://api.lemlist.com`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }
}

impl std::ops::Deref for FakeLemlist {
    type Target = LemlistState;
    fn deref(&self) -> &LemlistState {
        &self.state
    }
}

/// Serves a fake lemlist on `listen` until the future is dropped (for
/// `leadrelay fake lemlist --listen ADDR`).
pub async fn serve(listen: &str, config: LemlistConfig) -> std::io::Result<()> {
    let state = LemlistState::new(config);
    let listener = TcpListener::bind(listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("{}", state.credentials_banner(&base));
    axum::serve(listener, router(state)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    async fn post(
        base: &str,
        path: &str,
        key: Option<&str>,
        body: Value,
    ) -> (u16, HeaderMap, Value) {
        let mut req = client().post(format!("{base}{path}")).json(&body);
        if let Some(k) = key {
            req = req.basic_auth("", Some(k));
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn deletes_a_lead_only_with_action_remove() {
        let fake = FakeLemlist::start(LemlistConfig::default()).await.unwrap();
        let base = fake.base_url();
        let key = LemlistConfig::DEFAULT_API_KEY;
        let campaign = LemlistConfig::DEFAULT_CAMPAIGN;
        let (_, _, lead) = post(
            &base,
            &format!("/api/campaigns/{campaign}/leads/"),
            Some(key),
            json!({"email": "ana@example.com"}),
        )
        .await;
        let id = lead["_id"].as_str().unwrap().to_string();
        let delete = |path: String| {
            client()
                .delete(format!("{base}{path}"))
                .basic_auth("", Some(key))
                .send()
        };
        let r = delete(format!("/api/campaigns/{campaign}/leads/{id}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "unsubscribing is not modelled");
        let r = delete(format!("/api/campaigns/cam_nope/leads/{id}?action=remove"))
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = delete(format!(
            "/api/campaigns/{campaign}/leads/{id}?action=remove"
        ))
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["_id"], id.as_str());
        assert!(fake.campaign_leads(campaign).is_empty());
        let r = delete(format!(
            "/api/campaigns/{campaign}/leads/{id}?action=remove"
        ))
        .await
        .unwrap();
        assert_eq!(r.status(), 404, "gone");
    }

    #[tokio::test]
    async fn adds_a_lead_once_and_enforces_auth_dedup_and_shapes() {
        let fake = FakeLemlist::start(LemlistConfig::default()).await.unwrap();
        let base = fake.base_url();
        let key = Some(LemlistConfig::DEFAULT_API_KEY);
        let path = format!("/api/campaigns/{}/leads/", LemlistConfig::DEFAULT_CAMPAIGN);
        let lead = json!({"email": "Ana@Example.com", "firstName": "Ana", "seats": 12});

        let (s, _, _) = post(&base, &path, None, lead.clone()).await;
        assert_eq!(s, 401);
        let (s, _, _) = post(&base, &path, Some("wrong"), lead.clone()).await;
        assert_eq!(s, 401);

        let (s, h, body) = post(&base, &path, key, lead.clone()).await;
        assert_eq!(s, 200, "{body}");
        assert!(body["_id"].as_str().unwrap().starts_with("lea_"));
        assert_eq!(body["email"], "ana@example.com");
        assert_eq!(body["campaignId"], LemlistConfig::DEFAULT_CAMPAIGN);
        assert!(h.contains_key("x-ratelimit-remaining"));

        let (s, _, body) = post(&base, &path, key, lead.clone()).await;
        assert_eq!(s, 409, "{body}");
        let other = format!(
            "/api/campaigns/{}/leads/?deduplicate=true",
            LemlistConfig::OTHER_CAMPAIGN
        );
        let (s, _, _) = post(&base, &other, key, lead.clone()).await;
        assert_eq!(s, 409);
        let other_plain = format!("/api/campaigns/{}/leads/", LemlistConfig::OTHER_CAMPAIGN);
        let (s, _, _) = post(&base, &other_plain, key, lead).await;
        assert_eq!(s, 200, "without deduplicate a lead may be in two campaigns");

        for bad in [
            json!({"firstName": "no email"}),
            json!({"email": "not-an-email"}),
            json!({"email": "x@example.com", "tags": ["a"]}),
            json!({"email": LemlistConfig::UNSUBSCRIBED}),
        ] {
            let (s, _, _) = post(&base, &path, key, bad.clone()).await;
            assert_eq!(s, 400, "{bad}");
        }
        let (s, _, _) = post(&base, "/api/campaigns/cam_nope/leads/", key, json!({})).await;
        assert_eq!(s, 404);
        assert_eq!(
            fake.campaign_leads(LemlistConfig::DEFAULT_CAMPAIGN).len(),
            1
        );
    }

    #[tokio::test]
    async fn the_rate_window_answers_429_with_retry_after() {
        let fake = FakeLemlist::start(LemlistConfig {
            rate_limit: 3,
            rate_window: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap();
        let client = client();
        let mut statuses = Vec::new();
        let mut retry_after = None;
        for _ in 0..4 {
            let r = client
                .get(format!("{}/api/team", fake.base_url()))
                .basic_auth("", Some(LemlistConfig::DEFAULT_API_KEY))
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
            retry_after = r.headers().get("retry-after").cloned();
        }
        assert_eq!(statuses, [200, 200, 200, 429]);
        let secs: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
        assert!((1..=30).contains(&secs));
    }
}
