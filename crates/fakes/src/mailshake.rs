//! Fake Mailshake: the part of the Mailshake API (2017-04-01) a sequence
//! enrollment and a push resolution use.
//!
//! # Followed references
//! - api-docs.mailshake.com "Authentication": the API key as the `apiKey`
//!   query or body parameter, or `Authorization: Basic` with the key as
//!   user name; endpoints under `https://api.mailshake.com/2017-04-01/`,
//!   GET or POST, JSON or form bodies.
//! - "Limits": every call costs quota units per hour (Recipients > Add 10
//!   plus one per recipient, Pause and Unpause 5, Unsubscribe 2, anything
//!   else 1); over the quota the answer is the error `limit_reached`, whose
//!   message says when to try again (here also `retryAfter`).
//! - "Errors": `{"code": …, "message": …, "time": …}` — `invalid_api_key`,
//!   `missing_parameter`, `invalid_parameter`, `missing_dependent_data`,
//!   `not_found`, `limit_reached`.
//! - "Recipients > Add": `campaignID` and `addresses` (`emailAddress`,
//!   `fullName`, `fields`); answers `AddedRecipients` (`invalidEmails`,
//!   `isEmpty`, `checkStatusID`): adding is asynchronous. Addresses on the
//!   unsubscribe list or already in the campaign are ignored.
//! - "Recipients > AddStatus": `statusID` → `isFinished` and `problems`
//!   (`unsubscribedEmails`, `alreadyInCampaignEmails`,
//!   `passedAccountLimitEmails`, `hasProblems`).
//! - "Recipients > Get / Pause / Unpause" (`campaignID`, `emailAddress`;
//!   `not_found` when absent) and "Unsubscribe" (`emailAddresses`).
//! - "Push": a push carries only a `resource_url` to GET with the key.
//!
//! # What it enforces
//! The key (401); the quota units (429 `limit_reached`); a campaign's
//! capacity (`max_recipients`, 5,000 by default: the rest is
//! `passedAccountLimitEmails`); one recipient per address and campaign;
//! the unsubscribe list; an import that finishes only after
//! `polls_to_finish` status checks.
//!
//! # What it simplifies
//! The HTTP statuses of errors (401, 404, 429, 400) and the resource URL's
//! path (`/2017-04-01/activity/{id}`) are ours; the monthly recipient limit
//! is not counted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use crate::common::{
    FakeServer, Faults, RequestLog, basic_credentials, json_response, plausible_email, query_param,
};

const PREFIX: &str = "/2017-04-01";

#[derive(Debug, Clone)]
pub struct MailshakeConfig {
    pub api_key: String,
    /// (id, title)
    pub campaigns: Vec<(u64, String)>,
    pub max_recipients: usize,
    pub unsubscribed: Vec<String>,
    /// Quota units per hour.
    pub units_per_hour: u32,
    /// Status checks an import needs before it is finished.
    pub polls_to_finish: u32,
}

impl MailshakeConfig {
    pub const DEFAULT_API_KEY: &'static str = "fake-mailshake-key-0001";
    pub const DEFAULT_CAMPAIGN: u64 = 6001;
    pub const OTHER_CAMPAIGN: u64 = 6002;
    pub const UNSUBSCRIBED: &'static str = "gone@example.com";
}

impl Default for MailshakeConfig {
    fn default() -> Self {
        Self {
            api_key: Self::DEFAULT_API_KEY.into(),
            campaigns: vec![
                (Self::DEFAULT_CAMPAIGN, "SQL follow-up".into()),
                (Self::OTHER_CAMPAIGN, "Nurture".into()),
            ],
            max_recipients: 5000,
            unsubscribed: vec![Self::UNSUBSCRIBED.into()],
            units_per_hour: 10_000,
            polls_to_finish: 1,
        }
    }
}

/// A recipient of a campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct MailshakeRecipient {
    pub id: u64,
    pub campaign: u64,
    pub email: String,
    pub full_name: String,
    pub fields: Map<String, Value>,
    pub paused: bool,
}

#[derive(Debug, Clone)]
struct Import {
    polls_left: u32,
    problems: Value,
}

#[derive(Debug, Default)]
struct Data {
    recipients: Vec<MailshakeRecipient>,
    unsubscribed: Vec<String>,
    imports: HashMap<u64, Import>,
    activities: HashMap<u64, Value>,
    units: VecDeque<(Instant, u32)>,
}

#[derive(Debug)]
struct Inner {
    config: MailshakeConfig,
    data: Mutex<Data>,
    faults: Faults,
    requests: RequestLog,
}

#[derive(Debug, Clone)]
pub struct MailshakeState {
    inner: Arc<Inner>,
}

impl MailshakeState {
    pub fn new(config: MailshakeConfig) -> Self {
        let data = Data {
            unsubscribed: config
                .unsubscribed
                .iter()
                .map(|e| e.to_lowercase())
                .collect(),
            ..Default::default()
        };
        Self {
            inner: Arc::new(Inner {
                config,
                data: Mutex::new(data),
                faults: Faults::default(),
                requests: RequestLog::default(),
            }),
        }
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        self.inner.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub fn requests(&self) -> &RequestLog {
        &self.inner.requests
    }

    pub fn recipients(&self) -> Vec<MailshakeRecipient> {
        self.data().recipients.clone()
    }

    /// The addresses in a campaign that are not paused.
    pub fn active_in(&self, campaign: u64) -> Vec<String> {
        self.data()
            .recipients
            .iter()
            .filter(|r| r.campaign == campaign && !r.paused)
            .map(|r| r.email.clone())
            .collect()
    }

    pub fn unsubscribed(&self) -> Vec<String> {
        self.data().unsubscribed.clone()
    }

    /// Records a reply of `email` in `campaign` and returns the push body
    /// Mailshake would send for it: only `{"resource_url": …}` on `base`.
    pub fn reply_push(&self, base: &str, campaign: u64, email: &str, text: &str) -> Value {
        let mut d = self.data();
        let id = 9_000 + d.activities.len() as u64 + 1;
        let title = self
            .inner
            .config
            .campaigns
            .iter()
            .find(|(c, _)| *c == campaign)
            .map(|(_, t)| t.clone());
        d.activities.insert(
            id,
            json!({
                "object": "reply", "id": id, "actionDate": "2026-03-04T17:42:54.475Z",
                "recipient": {"object": "recipient", "id": id * 10, "emailAddress": email,
                    "fullName": "", "fields": {}},
                "campaign": {"object": "campaign", "id": campaign, "title": title},
                "type": "reply", "subject": "Re: hello", "plainTextBody": text,
            }),
        );
        json!({"resource_url": format!("{base}{PREFIX}/activity/{id}")})
    }

    pub fn credentials_banner(&self, base_url: &str) -> String {
        let c = &self.inner.config;
        let mut out = format!("fake Mailshake listening on {base_url}{PREFIX}\n");
        out.push_str(&format!("  MAILSHAKE_API_KEY={}\n", c.api_key));
        for (id, title) in &c.campaigns {
            out.push_str(&format!("  campaign {id} ({title})\n"));
        }
        out
    }
}

fn error(status: u16, code: &str, message: &str) -> Response {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"code": code, "message": message, "time": chrono::Utc::now().to_rfc3339()}),
    )
}

/// The units a call costs (the documented table).
fn cost(path: &str, params: &Map<String, Value>) -> u32 {
    match path.trim_start_matches(PREFIX) {
        "/recipients/add" => {
            10 + params
                .get("addresses")
                .and_then(Value::as_array)
                .map_or(1, |a| a.len() as u32)
        }
        "/recipients/pause" | "/recipients/unpause" | "/campaigns/pause" | "/campaigns/unpause" => {
            5
        }
        "/recipients/unsubscribe" => 2,
        _ => 1,
    }
}

/// The request's parameters: query, then a JSON or form body.
async fn params_of(req: Request) -> (Map<String, Value>, Option<String>, String) {
    let query = req.uri().query().map(str::to_string);
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = req.uri().path().to_string();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let mut params: Map<String, Value> = query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(o)) => params.extend(o),
        _ => {
            if let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) {
                params.extend(form.into_iter().map(|(k, v)| (k, Value::String(v))));
            }
        }
    }
    let key = basic_credentials(auth.as_deref())
        .map(|(user, _)| user)
        .or_else(|| {
            params
                .get("apiKey")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| query_param(query.as_deref(), "apiKey"));
    (params, key, path)
}

async fn observe(State(state): State<MailshakeState>, req: Request, _next: Next) -> Response {
    let method = req.method().to_string();
    let inner = state.inner.clone();
    let (params, key, path) = params_of(req).await;
    let response = inner
        .faults
        .around(async {
            if key.as_deref() != Some(inner.config.api_key.as_str()) {
                return error(401, "invalid_api_key", "The key you provided us was either missing or invalid.");
            }
            if let Err(at) = spend(&state, cost(&path, &params)) {
                let when = chrono::Utc::now()
                    + chrono::Duration::from_std(at).unwrap_or_default();
                let r = json!({"code": "limit_reached",
                    "message": format!("You have exceeded your quota of {} units per hour. You can try again at {}.", inner.config.units_per_hour, when.to_rfc3339()),
                    "time": chrono::Utc::now().to_rfc3339(), "retryAfter": when.to_rfc3339()});
                return json_response(StatusCode::TOO_MANY_REQUESTS, &r);
            }
            route(&state, &path, &params)
        })
        .await;
    inner
        .requests
        .record(&method, &path, response.status().as_u16());
    response
}

/// Spends `units` of the hourly quota, or says how long until they are free.
fn spend(state: &MailshakeState, units: u32) -> Result<(), Duration> {
    let hour = Duration::from_secs(3600);
    let now = Instant::now();
    let mut d = state.data();
    while d
        .units
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) >= hour)
    {
        d.units.pop_front();
    }
    let used: u32 = d.units.iter().map(|(_, u)| u).sum();
    if used + units > state.inner.config.units_per_hour {
        let oldest = d.units.front().map_or(now, |(t, _)| *t);
        return Err(hour
            .saturating_sub(now.duration_since(oldest))
            .max(Duration::from_secs(1)));
    }
    d.units.push_back((now, units));
    Ok(())
}

fn text(params: &Map<String, Value>, k: &str) -> Option<String> {
    match params.get(k)? {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn route(state: &MailshakeState, path: &str, params: &Map<String, Value>) -> Response {
    let campaign = text(params, "campaignID").and_then(|c| c.parse::<u64>().ok());
    let known = campaign.filter(|c| state.inner.config.campaigns.iter().any(|(id, _)| id == c));
    let email = text(params, "emailAddress").map(|e| e.to_lowercase());
    match path.trim_start_matches(PREFIX) {
        "/me" => json_response(
            StatusCode::OK,
            &json!({"user": {"object": "user", "id": 1, "teamName": "leadrelay fake"}}),
        ),
        "/campaigns/get" => match known {
            Some(c) => json_response(StatusCode::OK, &json!({"object": "campaign", "id": c})),
            None => error(404, "not_found", "Campaign not found"),
        },
        "/recipients/add" => add(state, campaign, known, params),
        "/recipients/add-status" => {
            let id = text(params, "statusID").and_then(|s| s.parse::<u64>().ok());
            let mut d = state.data();
            match id.and_then(|id| d.imports.get_mut(&id)) {
                None => error(404, "not_found", "No import with this statusID"),
                Some(i) => {
                    i.polls_left = i.polls_left.saturating_sub(1);
                    let finished = i.polls_left == 0;
                    json_response(
                        StatusCode::OK,
                        &json!({"isFinished": finished,
                        "problems": if finished { i.problems.clone() } else { Value::Null }}),
                    )
                }
            }
        }
        "/recipients/get" | "/recipients/pause" | "/recipients/unpause" => {
            let (Some(c), Some(e)) = (campaign, email) else {
                return error(
                    400,
                    "missing_parameter",
                    "campaignID and emailAddress are required",
                );
            };
            let pause = path.ends_with("/pause");
            let unpause = path.ends_with("/unpause");
            let mut d = state.data();
            match d
                .recipients
                .iter_mut()
                .find(|r| r.campaign == c && r.email == e)
            {
                None => error(404, "not_found", "The recipient could not be found"),
                Some(r) => {
                    if pause {
                        r.paused = true;
                    } else if unpause {
                        r.paused = false;
                    }
                    json_response(
                        StatusCode::OK,
                        &json!({"object": "recipient", "id": r.id,
                        "emailAddress": r.email, "fullName": r.full_name, "fields": r.fields}),
                    )
                }
            }
        }
        "/recipients/unsubscribe" => {
            let Some(list) = text(params, "emailAddresses") else {
                return error(400, "missing_parameter", "emailAddresses is required");
            };
            let mut d = state.data();
            for e in list
                .split(',')
                .map(|e| e.trim().to_lowercase())
                .filter(|e| !e.is_empty())
            {
                if !d.unsubscribed.contains(&e) {
                    d.unsubscribed.push(e);
                }
            }
            json_response(StatusCode::OK, &json!({}))
        }
        other => match other
            .strip_prefix("/activity/")
            .and_then(|id| id.parse::<u64>().ok())
        {
            Some(id) => match state.data().activities.get(&id) {
                Some(a) => json_response(StatusCode::OK, &a.clone()),
                None => error(404, "not_found", "No such activity"),
            },
            None => error(404, "not_found", "No such endpoint"),
        },
    }
}

fn add(
    state: &MailshakeState,
    campaign: Option<u64>,
    known: Option<u64>,
    params: &Map<String, Value>,
) -> Response {
    let Some(_) = campaign else {
        return error(400, "missing_parameter", "campaignID is required");
    };
    let Some(c) = known else {
        return error(404, "missing_dependent_data", "The campaign was not found");
    };
    let Some(addresses) = params.get("addresses").and_then(Value::as_array) else {
        return error(
            400,
            "missing_parameter",
            "One is required: listOfEmails, addresses, csvData",
        );
    };
    let mut d = state.data();
    let mut in_campaign = d.recipients.iter().filter(|r| r.campaign == c).count();
    let (mut invalid, mut unsub, mut already, mut passed) = (vec![], vec![], vec![], vec![]);
    let mut added = 0;
    for a in addresses {
        let email = a["emailAddress"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_lowercase();
        if !plausible_email(&email) {
            invalid.push(email);
        } else if d.unsubscribed.contains(&email) {
            unsub.push(email);
        } else if d
            .recipients
            .iter()
            .any(|r| r.campaign == c && r.email == email)
        {
            already.push(email);
        } else if in_campaign >= state.inner.config.max_recipients {
            passed.push(email);
        } else {
            in_campaign += 1;
            added += 1;
            let id = 100_000 + d.recipients.len() as u64 + 1;
            d.recipients.push(MailshakeRecipient {
                id,
                campaign: c,
                email,
                full_name: a["fullName"].as_str().unwrap_or_default().to_string(),
                fields: a["fields"].as_object().cloned().unwrap_or_default(),
                paused: false,
            });
        }
    }
    let status_id = 500 + d.imports.len() as u64 + 1;
    let has_problems = !(unsub.is_empty() && already.is_empty() && passed.is_empty());
    d.imports.insert(
        status_id,
        Import {
            polls_left: state.inner.config.polls_to_finish.max(1),
            problems: json!({"unsubscribedEmails": unsub, "alreadyInCampaignEmails": already,
                "passedAccountLimitEmails": passed, "hasProblems": has_problems}),
        },
    );
    json_response(
        StatusCode::OK,
        &json!({"invalidEmails": invalid, "isEmpty": added == 0, "checkStatusID": status_id}),
    )
}

async fn unreachable_handler() -> Response {
    error(404, "not_found", "No such endpoint")
}

pub fn router(state: MailshakeState) -> Router {
    // Every call is answered by `observe` (it reads GET and POST alike).
    Router::new()
        .route("/", get(unreachable_handler))
        .fallback(any(unreachable_handler))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

pub struct FakeMailshake {
    server: FakeServer,
    state: MailshakeState,
}

impl FakeMailshake {
    pub async fn start(config: MailshakeConfig) -> std::io::Result<Self> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    pub async fn start_on(config: MailshakeConfig, listen: &str) -> std::io::Result<Self> {
        let state = MailshakeState::new(config);
        let server = FakeServer::start(router(state.clone()), listen).await?;
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:PORT` (the real API is
    /// `https://api.mailshake.com`; the connector adds `/2017-04-01`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The push body for a new reply (see [`MailshakeState::reply_push`]).
    pub fn push_reply(&self, campaign: u64, email: &str, text: &str) -> Value {
        self.state
            .reply_push(&self.base_url(), campaign, email, text)
    }
}

impl std::ops::Deref for FakeMailshake {
    type Target = MailshakeState;
    fn deref(&self) -> &MailshakeState {
        &self.state
    }
}

pub async fn serve(listen: &str, config: MailshakeConfig) -> std::io::Result<()> {
    let state = MailshakeState::new(config);
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

    async fn call(base: &str, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = client()
            .post(format!("{base}{PREFIX}{path}"))
            .basic_auth(key, Some(""))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn adds_asynchronously_with_problems_and_quota() {
        let fake = FakeMailshake::start(MailshakeConfig {
            max_recipients: 1,
            polls_to_finish: 2,
            units_per_hour: 30,
            ..Default::default()
        })
        .await
        .unwrap();
        let base = fake.base_url();
        let key = MailshakeConfig::DEFAULT_API_KEY;
        let c = MailshakeConfig::DEFAULT_CAMPAIGN;
        let (s, r) = call(&base, "bad", "/me", json!({})).await;
        assert_eq!((s, r["code"].as_str()), (401, Some("invalid_api_key")));
        let addrs = json!([{"emailAddress": "a@x.io"}, {"emailAddress": "b@x.io"},
            {"emailAddress": MailshakeConfig::UNSUBSCRIBED}, {"emailAddress": "nope"}]);
        let (s, r) = call(
            &base,
            key,
            "/recipients/add",
            json!({"campaignID": c, "addresses": addrs}),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["invalidEmails"], json!(["nope"]));
        let id = r["checkStatusID"].clone();
        let (_, r) = call(
            &base,
            key,
            "/recipients/add-status",
            json!({"statusID": id}),
        )
        .await;
        assert_eq!(r["isFinished"], false);
        let (_, r) = call(
            &base,
            key,
            "/recipients/add-status",
            json!({"statusID": id}),
        )
        .await;
        assert_eq!(r["isFinished"], true);
        assert_eq!(r["problems"]["passedAccountLimitEmails"], json!(["b@x.io"]));
        assert_eq!(
            r["problems"]["unsubscribedEmails"],
            json!([MailshakeConfig::UNSUBSCRIBED])
        );
        // 14 + 1 + 1 units spent, a pause 5 more: the next add (11) is over 30.
        let (s, _) = call(
            &base,
            key,
            "/recipients/pause",
            json!({"campaignID": c, "emailAddress": "a@x.io"}),
        )
        .await;
        assert_eq!(s, 200);
        assert!(fake.active_in(c).is_empty());
        let (s, r) = call(
            &base,
            key,
            "/recipients/add",
            json!({"campaignID": c, "addresses": [{"emailAddress": "c@x.io"}]}),
        )
        .await;
        assert_eq!(s, 429, "{r}");
        assert_eq!(r["code"], "limit_reached");
        assert!(r["retryAfter"].as_str().is_some());
    }
}
