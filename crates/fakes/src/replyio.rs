//! Fake Reply.io: the part of the Reply API (v1) a sequence enrollment uses.
//!
//! # Followed references
//! - docs.reply.io "Authentication": the API key in the `X-Api-Key` header
//!   (the v1 endpoints also take `apiKey` in the query), on
//!   `https://api.reply.io/v1/...`; 401 "User not found" for a key that
//!   matches no user, 404 for a missing resource, 400 for a bad parameter.
//! - "Rate limits": 100 requests per minute and 3,000 per hour per user; a
//!   429 carries `Retry-After` (seconds) and `Content-Type:
//!   application/problem+json`.
//! - v1 "Get contact by email": `GET /v1/people?email=…`; the contact's
//!   sequences: `GET /v1/people/{id}/sequences`.
//! - v1 "Create and push contact to campaign": `POST
//!   /v1/actions/addandpushtocampaign` with `campaignId`, `email`,
//!   `firstName`, `lastName`, `company`, `title`, `phone`, `customFields`
//!   (`[{key, value}]`); `forcePush` moves a contact who is in another
//!   active campaign, without it such a contact is refused.
//! - v1 "Remove contact from campaign": `POST
//!   /v1/actions/removepersonfromcampaignbyid` (`campaignId`, `email`);
//!   "Remove contact from all campaigns": `POST
//!   /v1/actions/removepersonfromallcampaigns` (`email`).
//! - v1 "Delete contact": `DELETE /v1/people/{id}`; "Get campaign":
//!   `GET /v1/campaigns/{id}`.
//!
//! # What it enforces
//! The key (401); both rate windows (429 as above); unknown campaigns
//! (404); one contact per email; a contact pushed to a campaign once (a
//! repeat is answered 200 without a second membership); a contact active
//! in another campaign refused unless `forcePush`; opted-out contacts
//! refused (400); invalid addresses (400).
//!
//! # What it simplifies
//! Error bodies are `{"error": …}` with our words (Reply documents the
//! statuses, not the texts); the monthly call quota (15,000 per key) is
//! not counted; contacts never move through a sequence on their own
//! ([`ReplyState::set_status`] does it).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use crate::common::{
    FakeServer, Faults, RequestLog, RollingWindow, json_response, plausible_email, query_param,
};

#[derive(Debug, Clone)]
pub struct ReplyConfig {
    pub api_key: String,
    /// (id, name)
    pub campaigns: Vec<(u64, String)>,
    /// Addresses that opted out.
    pub opted_out: Vec<String>,
    pub per_minute: usize,
    pub per_hour: usize,
}

impl ReplyConfig {
    pub const DEFAULT_API_KEY: &'static str = "fake-replyio-key-0001";
    pub const DEFAULT_CAMPAIGN: u64 = 4001;
    pub const OTHER_CAMPAIGN: u64 = 4002;
    pub const OPTED_OUT: &'static str = "gone@example.com";
}

impl Default for ReplyConfig {
    fn default() -> Self {
        Self {
            api_key: Self::DEFAULT_API_KEY.into(),
            campaigns: vec![
                (Self::DEFAULT_CAMPAIGN, "SQL follow-up".into()),
                (Self::OTHER_CAMPAIGN, "Nurture".into()),
            ],
            opted_out: vec![Self::OPTED_OUT.into()],
            per_minute: 100,
            per_hour: 3000,
        }
    }
}

/// A contact and its campaigns.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyContact {
    pub id: u64,
    pub email: String,
    pub fields: Map<String, Value>,
    /// (campaign id, status: Active, Paused, Finished …)
    pub campaigns: Vec<(u64, String)>,
}

#[derive(Debug)]
struct Inner {
    config: ReplyConfig,
    contacts: Mutex<Vec<ReplyContact>>,
    minute: RollingWindow,
    hour: RollingWindow,
    faults: Faults,
    requests: RequestLog,
}

#[derive(Debug, Clone)]
pub struct ReplyState {
    inner: Arc<Inner>,
}

impl ReplyState {
    pub fn new(config: ReplyConfig) -> Self {
        let minute = RollingWindow::new(config.per_minute.max(1), Duration::from_secs(60));
        let hour = RollingWindow::new(config.per_hour.max(1), Duration::from_secs(3600));
        Self {
            inner: Arc::new(Inner {
                config,
                contacts: Mutex::new(Vec::new()),
                minute,
                hour,
                faults: Faults::default(),
                requests: RequestLog::default(),
            }),
        }
    }

    fn contacts_mut(&self) -> MutexGuard<'_, Vec<ReplyContact>> {
        self.inner
            .contacts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub fn requests(&self) -> &RequestLog {
        &self.inner.requests
    }

    pub fn contacts(&self) -> Vec<ReplyContact> {
        self.contacts_mut().clone()
    }

    /// The emails active in a campaign.
    pub fn active_in(&self, campaign: u64) -> Vec<String> {
        self.contacts_mut()
            .iter()
            .filter(|p| {
                p.campaigns
                    .iter()
                    .any(|(c, s)| *c == campaign && s == "Active")
            })
            .map(|p| p.email.clone())
            .collect()
    }

    /// Puts a person in a campaign (as if added in the app).
    pub fn seed(&self, campaign: u64, email: &str) {
        let mut cs = self.contacts_mut();
        let id = 7_000_000 + cs.len() as u64 + 1;
        cs.push(ReplyContact {
            id,
            email: email.to_lowercase(),
            fields: Map::new(),
            campaigns: vec![(campaign, "Active".into())],
        });
    }

    /// Sets a contact's status in a campaign (as if the sequence moved).
    pub fn set_status(&self, campaign: u64, email: &str, status: &str) {
        for p in self.contacts_mut().iter_mut() {
            if p.email.eq_ignore_ascii_case(email) {
                for m in p.campaigns.iter_mut().filter(|(c, _)| *c == campaign) {
                    m.1 = status.to_string();
                }
            }
        }
    }

    pub fn credentials_banner(&self, base_url: &str) -> String {
        let c = &self.inner.config;
        let mut out = format!("fake Reply.io listening on {base_url}/v1\n");
        out.push_str(&format!("  REPLYIO_API_KEY={}\n", c.api_key));
        for (id, name) in &c.campaigns {
            out.push_str(&format!("  campaign {id} ({name})\n"));
        }
        out
    }
}

fn error(status: u16, message: &str) -> Response {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"error": message}),
    )
}

fn throttled(window: &RollingWindow, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let body = json!({
        "type": "https://tools.ietf.org/html/rfc6585#section-4",
        "title": "Too Many Requests",
        "status": 429,
        "detail": format!("Rate limit of {} requests exceeded. Retry after {secs} seconds.", window.limit()),
    });
    Response::builder()
        .status(429)
        .header("content-type", "application/problem+json")
        .header("retry-after", secs.to_string())
        .body(axum::body::Body::from(body.to_string()))
        .unwrap_or_default()
}

async fn observe(State(state): State<ReplyState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_param(req.uri().query(), "apiKey"));
    let inner = state.inner.clone();
    let response = inner
        .faults
        .around(async {
            if key.as_deref() != Some(inner.config.api_key.as_str()) {
                return error(401, "User not found. No users match the API key provided.");
            }
            if let Err(wait) = inner.minute.hit() {
                return throttled(&inner.minute, wait);
            }
            if let Err(wait) = inner.hour.hit() {
                return throttled(&inner.hour, wait);
            }
            next.run(req).await
        })
        .await;
    inner
        .requests
        .record(&method, &path, response.status().as_u16());
    response
}

fn has_campaign(state: &ReplyState, id: u64) -> bool {
    state.inner.config.campaigns.iter().any(|(c, _)| *c == id)
}

fn contact_json(c: &ReplyContact) -> Value {
    let mut o = c.fields.clone();
    o.insert("id".into(), json!(c.id));
    o.insert("email".into(), json!(c.email));
    Value::Object(o)
}

async fn person_by_email(State(state): State<ReplyState>, req: Request) -> Response {
    let Some(email) = query_param(req.uri().query(), "email") else {
        return error(400, "email is required");
    };
    let cs = state.contacts_mut();
    match cs
        .iter()
        .find(|c| c.email.eq_ignore_ascii_case(email.trim()))
    {
        Some(c) => json_response(StatusCode::OK, &contact_json(c)),
        None => error(404, "Contact not found"),
    }
}

async fn person_sequences(State(state): State<ReplyState>, Path(id): Path<String>) -> Response {
    let cs = state.contacts_mut();
    let Some(c) = id
        .parse::<u64>()
        .ok()
        .and_then(|id| cs.iter().find(|c| c.id == id))
    else {
        return error(404, "Contact not found");
    };
    let names = &state.inner.config.campaigns;
    let list: Vec<Value> = c
        .campaigns
        .iter()
        .map(|(id, status)| {
            let name = names.iter().find(|(c, _)| c == id).map(|(_, n)| n.clone());
            json!({"id": id, "name": name, "status": status})
        })
        .collect();
    json_response(StatusCode::OK, &Value::Array(list))
}

fn body_object(body: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) => Some(o),
        _ => None,
    }
}

fn campaign_of(body: &Map<String, Value>) -> Option<u64> {
    let v = body.get("campaignId")?;
    v.as_u64().or_else(|| v.as_str()?.trim().parse().ok())
}

fn email_of(body: &Map<String, Value>) -> String {
    body.get("email")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_lowercase()
}

const ACTIVE: [&str; 2] = ["Active", "Paused"];

async fn add_and_push(State(state): State<ReplyState>, body: String) -> Response {
    let Some(body) = body_object(&body) else {
        return error(400, "The request body must be a JSON object");
    };
    let Some(campaign) = campaign_of(&body) else {
        return error(400, "campaignId is required");
    };
    if !has_campaign(&state, campaign) {
        return error(404, "Campaign not found");
    }
    let email = email_of(&body);
    if !plausible_email(&email) {
        return error(400, "Email is invalid");
    }
    let first = body
        .get("firstName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if first.trim().is_empty() {
        return error(400, "firstName is required");
    }
    if state
        .inner
        .config
        .opted_out
        .iter()
        .any(|o| o.eq_ignore_ascii_case(&email))
    {
        return error(
            400,
            "Contact has opted out and cannot be pushed to a campaign",
        );
    }
    let force = body
        .get("forcePush")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut cs = state.contacts_mut();
    let i = match cs.iter().position(|c| c.email == email) {
        Some(i) => i,
        None => {
            let id = 7_000_000 + cs.len() as u64 + 1;
            cs.push(ReplyContact {
                id,
                email: email.clone(),
                fields: Map::new(),
                campaigns: Vec::new(),
            });
            cs.len() - 1
        }
    };
    let c = &mut cs[i];
    for (k, v) in &body {
        if !matches!(k.as_str(), "campaignId" | "email" | "forcePush") {
            c.fields.insert(k.clone(), v.clone());
        }
    }
    if c.campaigns.iter().any(|(id, _)| *id == campaign) {
        let v = contact_json(c);
        return json_response(StatusCode::OK, &v);
    }
    let elsewhere = c
        .campaigns
        .iter()
        .any(|(_, s)| ACTIVE.contains(&s.as_str()));
    if elsewhere && !force {
        return error(400, "Contact is already in another active campaign");
    }
    if force {
        c.campaigns.retain(|(_, s)| !ACTIVE.contains(&s.as_str()));
    }
    c.campaigns.push((campaign, "Active".into()));
    let v = contact_json(c);
    json_response(StatusCode::OK, &v)
}

async fn remove_from_campaign(State(state): State<ReplyState>, body: String) -> Response {
    let Some(body) = body_object(&body) else {
        return error(400, "The request body must be a JSON object");
    };
    let Some(campaign) = campaign_of(&body) else {
        return error(400, "campaignId is required");
    };
    let email = email_of(&body);
    let mut cs = state.contacts_mut();
    let Some(c) = cs.iter_mut().find(|c| c.email == email) else {
        return error(404, "Contact not found");
    };
    c.campaigns.retain(|(id, _)| *id != campaign);
    json_response(StatusCode::OK, &json!({}))
}

async fn remove_from_all(State(state): State<ReplyState>, body: String) -> Response {
    let Some(body) = body_object(&body) else {
        return error(400, "The request body must be a JSON object");
    };
    let email = email_of(&body);
    let mut cs = state.contacts_mut();
    let Some(c) = cs.iter_mut().find(|c| c.email == email) else {
        return error(404, "Contact not found");
    };
    c.campaigns.clear();
    json_response(StatusCode::OK, &json!({}))
}

async fn delete_person(State(state): State<ReplyState>, Path(id): Path<String>) -> Response {
    let mut cs = state.contacts_mut();
    let before = cs.len();
    cs.retain(|c| Some(c.id) != id.parse::<u64>().ok());
    if cs.len() == before {
        return error(404, "Contact not found");
    }
    json_response(StatusCode::OK, &json!({}))
}

async fn get_campaign(State(state): State<ReplyState>, Path(id): Path<String>) -> Response {
    let found = id.parse::<u64>().ok().and_then(|id| {
        state
            .inner
            .config
            .campaigns
            .iter()
            .find(|(c, _)| *c == id)
            .cloned()
    });
    match found {
        Some((id, name)) => json_response(
            StatusCode::OK,
            &json!({"id": id, "name": name, "status": 2}),
        ),
        None => error(404, "Campaign not found"),
    }
}

async fn not_found() -> Response {
    error(404, "Resource not found")
}

pub fn router(state: ReplyState) -> Router {
    Router::new()
        .route("/v1/people", get(person_by_email))
        .route("/v1/people/{id}", axum::routing::delete(delete_person))
        .route("/v1/people/{id}/sequences", get(person_sequences))
        .route("/v1/actions/addandpushtocampaign", post(add_and_push))
        .route(
            "/v1/actions/removepersonfromcampaignbyid",
            post(remove_from_campaign),
        )
        .route(
            "/v1/actions/removepersonfromallcampaigns",
            post(remove_from_all),
        )
        .route("/v1/campaigns/{id}", get(get_campaign))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

pub struct FakeReply {
    server: FakeServer,
    state: ReplyState,
}

impl FakeReply {
    pub async fn start(config: ReplyConfig) -> std::io::Result<Self> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    pub async fn start_on(config: ReplyConfig, listen: &str) -> std::io::Result<Self> {
        let state = ReplyState::new(config);
        let server = FakeServer::start(router(state.clone()), listen).await?;
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:PORT` (the real API is `https://api.reply.io`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }
}

impl std::ops::Deref for FakeReply {
    type Target = ReplyState;
    fn deref(&self) -> &ReplyState {
        &self.state
    }
}

pub async fn serve(listen: &str, config: ReplyConfig) -> std::io::Result<()> {
    let state = ReplyState::new(config);
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

    async fn push(base: &str, key: &str, body: Value) -> (u16, Value) {
        let r = client()
            .post(format!("{base}/v1/actions/addandpushtocampaign"))
            .header("X-Api-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn pushes_once_refuses_active_elsewhere_and_opted_out() {
        let fake = FakeReply::start(ReplyConfig::default()).await.unwrap();
        let base = fake.base_url();
        let key = ReplyConfig::DEFAULT_API_KEY;
        let c = ReplyConfig::DEFAULT_CAMPAIGN;
        fake.seed(ReplyConfig::OTHER_CAMPAIGN, "busy@x.io");
        let (s, _) = push(&base, "nope", json!({"campaignId": c, "email": "a@x.io"})).await;
        assert_eq!(s, 401);
        for _ in 0..2 {
            let (s, r) = push(
                &base,
                key,
                json!({"campaignId": c, "email": "A@x.io", "firstName": "A"}),
            )
            .await;
            assert_eq!(s, 200, "{r}");
        }
        assert_eq!(fake.active_in(c), ["a@x.io"]);
        let (s, r) = push(
            &base,
            key,
            json!({"campaignId": c, "email": "busy@x.io", "firstName": "B"}),
        )
        .await;
        assert_eq!(s, 400);
        assert!(r["error"].as_str().unwrap().contains("another"), "{r}");
        let (s, _) = push(
            &base,
            key,
            json!({"campaignId": c, "email": "busy@x.io", "firstName": "B", "forcePush": true}),
        )
        .await;
        assert_eq!(s, 200);
        assert!(fake.active_in(ReplyConfig::OTHER_CAMPAIGN).is_empty());
        let (s, r) = push(
            &base,
            key,
            json!({"campaignId": c, "email": ReplyConfig::OPTED_OUT, "firstName": "G"}),
        )
        .await;
        assert_eq!(s, 400);
        assert!(r["error"].as_str().unwrap().contains("opted out"));
        let (s, _) = push(&base, key, json!({"campaignId": 1, "email": "a@x.io"})).await;
        assert_eq!(s, 404);
    }

    #[tokio::test]
    async fn the_minute_window_answers_429_problem_json() {
        let fake = FakeReply::start(ReplyConfig {
            per_minute: 2,
            ..Default::default()
        })
        .await
        .unwrap();
        let url = format!(
            "{}/v1/campaigns/{}",
            fake.base_url(),
            ReplyConfig::DEFAULT_CAMPAIGN
        );
        let mut last = None;
        for _ in 0..3 {
            last = Some(
                client()
                    .get(&url)
                    .header("X-Api-Key", ReplyConfig::DEFAULT_API_KEY)
                    .send()
                    .await
                    .unwrap(),
            );
        }
        let r = last.unwrap();
        assert_eq!(r.status(), 429);
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
}
