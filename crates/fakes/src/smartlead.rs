//! Fake Smartlead: the part of the Smartlead API a sequence enrollment uses.
//!
//! # Followed references
//! - api.smartlead.ai, "Authentication": the API key as the `api_key` query
//!   parameter, on `https://server.smartlead.ai/api/v1/...`.
//! - "Rate Limits": per API key, all endpoints together; the Standard tier
//!   allows 60 requests per minute with bursts of 10 per second. A 429
//!   carries `{"error": {"code": "RATE_LIMIT_EXCEEDED", "message": …,
//!   "retry_after": N}}`, `Retry-After`, `X-RateLimit-Limit`,
//!   `X-RateLimit-Remaining` and `X-RateLimit-Reset` (a Unix timestamp).
//! - "Add leads to a campaign": `POST /campaigns/{campaign_id}/leads` with
//!   `lead_list` (at most 100 leads, each with `email`, `first_name`,
//!   `last_name`, `company_name`, `phone_number`, `website`, `location`,
//!   `linkedin_profile`, `company_url`, `custom_fields`) and `settings`
//!   (`ignore_global_block_list`, `ignore_unsubscribe_list`,
//!   `ignore_community_bounce_list`,
//!   `ignore_duplicate_leads_in_other_campaign`; any other key is refused,
//!   e.g. `"settings.update" is not allowed`). The answer counts:
//!   `ok`, `upload_count`, `total_leads`, `already_added_to_campaign`,
//!   `duplicate_count`, `invalid_email_count`, `invalid_emails`,
//!   `unsubscribed_leads`, `is_lead_limit_exhausted`,
//!   `lead_import_stopped_count`, `bounce_count`, `block_count`.
//! - "Fetch lead by email": `GET /leads/?email=` answers the lead with
//!   `id` and `lead_campaign_data` (one entry per campaign: `campaign_id`,
//!   `campaign_name`, `campaign_lead_map_id`, `status`).
//! - "Fetch leads by campaign": `GET /campaigns/{campaign_id}/leads` with
//!   `offset` (default 0) and `limit` (default 100, at most 100) answers
//!   `total_leads`, `offset`, `limit` and `data`: one item per lead of the
//!   campaign, in the order they were added, with `campaign_lead_map_id`,
//!   `status` (`STARTED`, `INPROGRESS`, `COMPLETED`, `PAUSED`, `STOPPED`),
//!   `created_at` and `lead` (`id`, `email`, `first_name`, …).
//! - "Delete lead by campaign": `DELETE /campaigns/{campaign_id}/leads/{lead_id}`.
//! - "Pause lead by campaign": `POST /campaigns/{campaign_id}/leads/{lead_id}/pause`.
//! - "Get campaign by id": `GET /campaigns/{campaign_id}`.
//!
//! # What it enforces
//! The key (401); both rate windows (429 as above); unknown campaigns
//! (404); at most 100 leads per request and unknown settings (400); one
//! lead per email across the workspace, added to a campaign once (a repeat
//! is `already_added_to_campaign`), refused when it is in another campaign
//! unless `ignore_duplicate_leads_in_other_campaign` (`duplicate_count`);
//! unsubscribed addresses (`unsubscribed_leads`); a campaign's lead
//! capacity (`max_leads`: the rest is `lead_import_stopped_count` with
//! `is_lead_limit_exhausted`).
//!
//! # What it simplifies
//! Error texts for 400/401/404 are ours (Smartlead documents the codes, not
//! the words); a lead found by email that does not exist answers 404 (the
//! real API's answer for an unknown address is not documented). Leads
//! never move through the sequence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use crate::common::{
    FakeServer, Faults, RequestLog, RollingWindow, guard, json_response, query_param,
    too_many_requests, wait_secs,
};

/// A campaign of the fake workspace.
#[derive(Debug, Clone)]
pub struct SmartleadCampaign {
    pub id: u64,
    pub name: String,
    /// How many leads it takes (None: no limit).
    pub max_leads: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct SmartleadConfig {
    pub api_key: String,
    pub campaigns: Vec<SmartleadCampaign>,
    pub unsubscribed: Vec<String>,
    /// Requests per minute, and per second (burst).
    pub per_minute: usize,
    pub per_second: usize,
}

impl SmartleadConfig {
    pub const DEFAULT_API_KEY: &'static str = "fake-smartlead-key-0001";
    pub const DEFAULT_CAMPAIGN: u64 = 1001;
    pub const OTHER_CAMPAIGN: u64 = 1002;
    pub const UNSUBSCRIBED: &'static str = "gone@example.com";
}

impl Default for SmartleadConfig {
    fn default() -> Self {
        Self {
            api_key: Self::DEFAULT_API_KEY.into(),
            campaigns: vec![
                SmartleadCampaign {
                    id: Self::DEFAULT_CAMPAIGN,
                    name: "SQL follow-up".into(),
                    max_leads: None,
                },
                SmartleadCampaign {
                    id: Self::OTHER_CAMPAIGN,
                    name: "Nurture".into(),
                    max_leads: None,
                },
            ],
            unsubscribed: vec![Self::UNSUBSCRIBED.into()],
            per_minute: 60,
            per_second: 10,
        }
    }
}

/// A person in the workspace and the campaigns they are in.
#[derive(Debug, Clone, PartialEq)]
pub struct SmartleadLead {
    pub id: u64,
    pub email: String,
    pub fields: Map<String, Value>,
    /// (campaign id, status: `STARTED`, `INPROGRESS`, `COMPLETED`,
    /// `PAUSED`, `STOPPED`)
    pub campaigns: Vec<(u64, String)>,
}

#[derive(Debug)]
struct Inner {
    config: SmartleadConfig,
    leads: Mutex<Vec<SmartleadLead>>,
    minute: RollingWindow,
    second: RollingWindow,
    faults: Faults,
    requests: RequestLog,
}

#[derive(Debug, Clone)]
pub struct SmartleadState {
    inner: Arc<Inner>,
}

impl SmartleadState {
    pub fn new(config: SmartleadConfig) -> Self {
        let minute = RollingWindow::new(config.per_minute.max(1), Duration::from_secs(60));
        let second = RollingWindow::new(config.per_second.max(1), Duration::from_secs(1));
        Self {
            inner: Arc::new(Inner {
                config,
                leads: Mutex::new(Vec::new()),
                minute,
                second,
                faults: Faults::default(),
                requests: RequestLog::default(),
            }),
        }
    }

    fn leads_mut(&self) -> MutexGuard<'_, Vec<SmartleadLead>> {
        self.inner.leads.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub fn requests(&self) -> &RequestLog {
        &self.inner.requests
    }

    /// Every lead of the workspace.
    pub fn leads(&self) -> Vec<SmartleadLead> {
        self.leads_mut().clone()
    }

    /// The emails in one campaign.
    pub fn campaign_emails(&self, campaign: u64) -> Vec<String> {
        self.leads_mut()
            .iter()
            .filter(|l| l.campaigns.iter().any(|(c, _)| *c == campaign))
            .map(|l| l.email.clone())
            .collect()
    }

    /// Puts a person in a campaign directly (as if added in the app).
    pub fn seed_lead(&self, campaign: u64, email: &str) {
        let mut leads = self.leads_mut();
        let id = next_id(&leads);
        leads.push(SmartleadLead {
            id,
            email: email.to_lowercase(),
            fields: Map::new(),
            campaigns: vec![(campaign, "STARTED".into())],
        });
    }

    /// Sets a person's status in a campaign, as Smartlead does when they
    /// finish it (`COMPLETED`) or a user stops them (`STOPPED`). Returns
    /// whether they are in it.
    pub fn set_status(&self, campaign: u64, email: &str, status: &str) -> bool {
        let mut leads = self.leads_mut();
        let Some(m) = leads
            .iter_mut()
            .filter(|l| l.email.eq_ignore_ascii_case(email))
            .flat_map(|l| l.campaigns.iter_mut())
            .find(|(c, _)| *c == campaign)
        else {
            return false;
        };
        m.1 = status.to_string();
        true
    }

    /// Takes a person out of a campaign (as if their sequence ended).
    pub fn remove_from_campaign(&self, campaign: u64, email: &str) {
        for l in self.leads_mut().iter_mut() {
            if l.email.eq_ignore_ascii_case(email) {
                l.campaigns.retain(|(c, _)| *c != campaign);
            }
        }
    }

    pub fn credentials_banner(&self, base_url: &str) -> String {
        let c = &self.inner.config;
        let mut out = format!("fake Smartlead listening on {base_url}/api/v1\n");
        out.push_str(&format!("  SMARTLEAD_API_KEY={}\n", c.api_key));
        for camp in &c.campaigns {
            out.push_str(&format!("  campaign {} ({})\n", camp.id, camp.name));
        }
        out
    }
}

fn next_id(leads: &[SmartleadLead]) -> u64 {
    2_000_000 + leads.len() as u64 + 1
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({"error": message}))
}

fn ok_json(v: Value) -> Response {
    json_response(StatusCode::OK, &v)
}

fn throttled(window: &RollingWindow, wait: Duration) -> Response {
    let secs = wait_secs(wait);
    let body = json!({"error": {
        "code": "RATE_LIMIT_EXCEEDED",
        "message": format!("Too many requests. Please retry after {secs} seconds."),
        "retry_after": secs,
    }});
    let reset = chrono::Utc::now().timestamp() as u64 + secs;
    too_many_requests(
        &body,
        Some(secs),
        &[
            ("x-ratelimit-limit", window.limit().to_string()),
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", reset.to_string()),
        ],
    )
}

async fn observe(State(state): State<SmartleadState>, req: Request, next: Next) -> Response {
    let inner = &state.inner;
    guard(
        &inner.faults,
        &inner.requests,
        req,
        next,
        |req| match query_param(req.uri().query(), "api_key") {
            None => Err(error(StatusCode::UNAUTHORIZED, "api_key is required")),
            Some(k) if k != inner.config.api_key => {
                Err(error(StatusCode::UNAUTHORIZED, "Invalid API key"))
            }
            Some(_) => match inner.second.hit().and_then(|_| {
                inner
                    .minute
                    .hit()
                    .map_err(|wait| wait.max(Duration::from_secs(1)))
            }) {
                Err(wait) => Err(throttled(&inner.minute, wait)),
                Ok(remaining) => Ok(vec![
                    ("x-ratelimit-limit", inner.minute.limit().to_string()),
                    ("x-ratelimit-remaining", remaining.to_string()),
                ]),
            },
        },
    )
    .await
}

fn campaign_of(state: &SmartleadState, id: u64) -> Option<SmartleadCampaign> {
    state
        .inner
        .config
        .campaigns
        .iter()
        .find(|c| c.id == id)
        .cloned()
}

async fn get_campaign(State(state): State<SmartleadState>, Path(id): Path<String>) -> Response {
    match id.parse().ok().and_then(|id| campaign_of(&state, id)) {
        Some(c) => ok_json(json!({"id": c.id, "name": c.name, "status": "ACTIVE"})),
        None => error(StatusCode::NOT_FOUND, "Campaign not found"),
    }
}

const SETTINGS: [&str; 4] = [
    "ignore_global_block_list",
    "ignore_unsubscribe_list",
    "ignore_community_bounce_list",
    "ignore_duplicate_leads_in_other_campaign",
];

async fn add_leads(
    State(state): State<SmartleadState>,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let Some(campaign) = id.parse().ok().and_then(|id| campaign_of(&state, id)) else {
        return error(StatusCode::NOT_FOUND, "Campaign not found");
    };
    let Ok(Value::Object(body)) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body must be a JSON object");
    };
    let Some(list) = body.get("lead_list").and_then(Value::as_array) else {
        return error(StatusCode::BAD_REQUEST, "\"lead_list\" is required");
    };
    if list.is_empty() || list.len() > 100 {
        return error(
            StatusCode::BAD_REQUEST,
            "\"lead_list\" must contain between 1 and 100 leads",
        );
    }
    let settings = body
        .get("settings")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(k) = settings.keys().find(|k| !SETTINGS.contains(&k.as_str())) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("\"settings.{k}\" is not allowed"),
        );
    }
    let flag = |k: &str| settings.get(k).and_then(Value::as_bool).unwrap_or(false);
    let ignore_dupes = flag("ignore_duplicate_leads_in_other_campaign");
    let ignore_unsub = flag("ignore_unsubscribe_list");

    let mut leads = state.leads_mut();
    let mut in_campaign = leads
        .iter()
        .filter(|l| l.campaigns.iter().any(|(c, _)| *c == campaign.id))
        .count();
    let (mut uploaded, mut already, mut dupes, mut stopped) = (0, 0, 0, 0);
    let mut invalid: Vec<String> = Vec::new();
    let mut unsubscribed: Vec<String> = Vec::new();
    for item in list {
        let Some(lead) = item.as_object() else {
            return error(StatusCode::BAD_REQUEST, "each lead must be an object");
        };
        let email = lead
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_lowercase();
        if !crate::common::plausible_email(&email) {
            invalid.push(email);
            continue;
        }
        if !ignore_unsub
            && state
                .inner
                .config
                .unsubscribed
                .iter()
                .any(|u| u.eq_ignore_ascii_case(&email))
        {
            unsubscribed.push(email);
            continue;
        }
        let existing = leads.iter().position(|l| l.email == email);
        if let Some(i) = existing {
            let l = &leads[i];
            if l.campaigns.iter().any(|(c, _)| *c == campaign.id) {
                already += 1;
                continue;
            }
            // A campaign the lead finished or was stopped in does not hold
            // them back (it is over for them).
            if !ignore_dupes && l.campaigns.iter().any(|(_, s)| is_live(s)) {
                dupes += 1;
                continue;
            }
        }
        if campaign.max_leads.is_some_and(|m| in_campaign >= m) {
            stopped += 1;
            continue;
        }
        in_campaign += 1;
        uploaded += 1;
        match existing {
            Some(i) => leads[i].campaigns.push((campaign.id, "STARTED".into())),
            None => {
                let id = next_id(&leads);
                leads.push(SmartleadLead {
                    id,
                    email,
                    fields: lead.clone(),
                    campaigns: vec![(campaign.id, "STARTED".into())],
                });
            }
        }
    }
    ok_json(json!({
        "ok": true,
        "upload_count": uploaded,
        "total_leads": uploaded,
        "already_added_to_campaign": already,
        "duplicate_count": dupes,
        "invalid_email_count": invalid.len(),
        "invalid_emails": invalid,
        "unsubscribed_leads": unsubscribed,
        "is_lead_limit_exhausted": stopped > 0,
        "lead_import_stopped_count": stopped,
        "bounce_count": 0,
        "block_count": 0,
    }))
}

/// Whether a lead's status in a campaign means it is still under way.
fn is_live(status: &str) -> bool {
    !matches!(status, "COMPLETED" | "STOPPED")
}

async fn campaign_leads(
    State(state): State<SmartleadState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(campaign) = id.parse().ok().and_then(|id| campaign_of(&state, id)) else {
        return error(StatusCode::NOT_FOUND, "Campaign not found");
    };
    let number = |k: &str, default: usize| match q.get(k) {
        None => Ok(default),
        Some(v) => v.parse::<usize>().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("\"{k}\" must be a number"),
            )
        }),
    };
    let (offset, limit) = match (number("offset", 0), number("limit", 100)) {
        (Ok(o), Ok(l)) => (o, l),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if limit == 0 || limit > 100 {
        return error(
            StatusCode::BAD_REQUEST,
            "\"limit\" must be between 1 and 100",
        );
    }
    let leads = state.leads_mut();
    let members: Vec<Value> = leads
        .iter()
        .filter_map(|l| {
            let (c, status) = l.campaigns.iter().find(|(c, _)| *c == campaign.id)?;
            let mut lead = l.fields.clone();
            lead.insert("id".into(), json!(l.id));
            lead.insert("email".into(), json!(l.email));
            Some(json!({
                "campaign_lead_map_id": l.id * 10 + c % 10,
                "status": status,
                "created_at": "2026-03-04T17:05:09.000Z",
                "lead": lead,
            }))
        })
        .collect();
    let total = members.len();
    let data: Vec<Value> = members.into_iter().skip(offset).take(limit).collect();
    ok_json(json!({
        "total_leads": total.to_string(),
        "offset": offset,
        "limit": limit,
        "data": data,
    }))
}

async fn lead_by_email(
    State(state): State<SmartleadState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(email) = q.get("email") else {
        return error(StatusCode::BAD_REQUEST, "\"email\" is required");
    };
    let leads = state.leads_mut();
    let Some(l) = leads.iter().find(|l| l.email.eq_ignore_ascii_case(email)) else {
        return error(StatusCode::NOT_FOUND, "Lead not found");
    };
    let names: HashMap<u64, String> = state
        .inner
        .config
        .campaigns
        .iter()
        .map(|c| (c.id, c.name.clone()))
        .collect();
    let data: Vec<Value> = l
        .campaigns
        .iter()
        .map(|(c, status)| {
            json!({
                "campaign_id": c,
                "campaign_name": names.get(c),
                "campaign_lead_map_id": l.id * 10 + c % 10,
                "status": status,
            })
        })
        .collect();
    ok_json(json!({"id": l.id, "email": l.email, "lead_campaign_data": data}))
}

fn with_membership(
    state: &SmartleadState,
    campaign: &str,
    lead: &str,
    change: impl FnOnce(&mut SmartleadLead, u64) -> bool,
) -> Response {
    let Some(campaign) = campaign.parse().ok().and_then(|id| campaign_of(state, id)) else {
        return error(StatusCode::NOT_FOUND, "Campaign not found");
    };
    let Ok(lead) = lead.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, "lead_id must be a number");
    };
    let mut leads = state.leads_mut();
    let changed = leads
        .iter_mut()
        .find(|l| l.id == lead)
        .is_some_and(|l| change(l, campaign.id));
    if changed {
        ok_json(json!({"ok": true}))
    } else {
        error(StatusCode::NOT_FOUND, "Lead not found in this campaign")
    }
}

async fn delete_lead(
    State(state): State<SmartleadState>,
    Path((campaign, lead)): Path<(String, String)>,
) -> Response {
    with_membership(&state, &campaign, &lead, |l, c| {
        let before = l.campaigns.len();
        l.campaigns.retain(|(id, _)| *id != c);
        l.campaigns.len() < before
    })
}

async fn pause_lead(
    State(state): State<SmartleadState>,
    Path((campaign, lead)): Path<(String, String)>,
) -> Response {
    with_membership(&state, &campaign, &lead, |l, c| {
        match l.campaigns.iter_mut().find(|(id, _)| *id == c) {
            Some(m) => {
                m.1 = "PAUSED".into();
                true
            }
            None => false,
        }
    })
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not found")
}

pub fn router(state: SmartleadState) -> Router {
    Router::new()
        .route("/api/v1/campaigns/{id}", get(get_campaign))
        .route(
            "/api/v1/campaigns/{id}/leads",
            post(add_leads).get(campaign_leads),
        )
        .route("/api/v1/campaigns/{id}/leads/{lead}", delete(delete_lead))
        .route(
            "/api/v1/campaigns/{id}/leads/{lead}/pause",
            post(pause_lead),
        )
        .route("/api/v1/leads/", get(lead_by_email))
        .route("/api/v1/leads", get(lead_by_email))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

pub struct FakeSmartlead {
    server: FakeServer,
    state: SmartleadState,
}

impl FakeSmartlead {
    pub async fn start(config: SmartleadConfig) -> std::io::Result<Self> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    pub async fn start_on(config: SmartleadConfig, listen: &str) -> std::io::Result<Self> {
        let state = SmartleadState::new(config);
        let server = FakeServer::start(router(state.clone()), listen).await?;
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:PORT` (the real API is `https://server.smartlead.ai`;
    /// the connector adds `/api/v1`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }
}

impl std::ops::Deref for FakeSmartlead {
    type Target = SmartleadState;
    fn deref(&self) -> &SmartleadState {
        &self.state
    }
}

pub async fn serve(listen: &str, config: SmartleadConfig) -> std::io::Result<()> {
    let state = SmartleadState::new(config);
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

    async fn add(base: &str, key: &str, campaign: u64, body: Value) -> (u16, Value) {
        let r = client()
            .post(format!(
                "{base}/api/v1/campaigns/{campaign}/leads?api_key={key}"
            ))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn adds_once_refuses_duplicates_elsewhere_and_enforces_limits() {
        let fake = FakeSmartlead::start(SmartleadConfig {
            campaigns: vec![
                SmartleadCampaign {
                    id: 1,
                    name: "small".into(),
                    max_leads: Some(2),
                },
                SmartleadCampaign {
                    id: 2,
                    name: "other".into(),
                    max_leads: None,
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap();
        let base = fake.base_url();
        let key = SmartleadConfig::DEFAULT_API_KEY;
        fake.seed_lead(2, "busy@example.com");
        let (s, _) = add(
            &base,
            "wrong",
            1,
            json!({"lead_list": [{"email": "a@x.io"}]}),
        )
        .await;
        assert_eq!(s, 401);
        let list = json!({"lead_list": [
            {"email": "a@x.io"}, {"email": "busy@example.com"}, {"email": "nope"},
            {"email": SmartleadConfig::UNSUBSCRIBED}, {"email": "b@x.io"}, {"email": "c@x.io"}
        ]});
        let (s, r) = add(&base, key, 1, list.clone()).await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["upload_count"], 2);
        assert_eq!(r["duplicate_count"], 1);
        assert_eq!(r["invalid_emails"], json!(["nope"]));
        assert_eq!(
            r["unsubscribed_leads"],
            json!([SmartleadConfig::UNSUBSCRIBED])
        );
        assert_eq!(r["lead_import_stopped_count"], 1);
        assert_eq!(r["is_lead_limit_exhausted"], true);
        let (_, r) = add(&base, key, 1, json!({"lead_list": [{"email": "A@x.io"}]})).await;
        assert_eq!(r["already_added_to_campaign"], 1);
        assert_eq!(fake.campaign_emails(1), ["a@x.io", "b@x.io"]);

        let many: Vec<Value> = (0..101)
            .map(|i| json!({"email": format!("p{i}@x.io")}))
            .collect();
        let (s, _) = add(&base, key, 2, json!({"lead_list": many})).await;
        assert_eq!(s, 400);
        let (s, r) = add(
            &base,
            key,
            2,
            json!({"lead_list": [{"email": "a@x.io"}], "settings": {"update": true}}),
        )
        .await;
        assert_eq!(s, 400);
        assert_eq!(r["error"], "\"settings.update\" is not allowed");
        let (s, _) = add(&base, key, 99, json!({"lead_list": [{"email": "a@x.io"}]})).await;
        assert_eq!(s, 404);

        let r: Value = client()
            .get(format!(
                "{base}/api/v1/leads/?email=busy@example.com&api_key={key}"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["lead_campaign_data"][0]["campaign_id"], 2);
    }

    #[tokio::test]
    async fn the_burst_window_answers_429_with_the_documented_body() {
        // The minute window too, so a slow machine still sees the 429.
        let fake = FakeSmartlead::start(SmartleadConfig {
            per_second: 2,
            per_minute: 2,
            ..Default::default()
        })
        .await
        .unwrap();
        let url = format!(
            "{}/api/v1/campaigns/{}?api_key={}",
            fake.base_url(),
            SmartleadConfig::DEFAULT_CAMPAIGN,
            SmartleadConfig::DEFAULT_API_KEY
        );
        let mut last = None;
        for _ in 0..3 {
            last = Some(client().get(&url).send().await.unwrap());
        }
        let r = last.unwrap();
        assert_eq!(r.status(), 429);
        assert!(r.headers().contains_key("retry-after"));
        assert!(r.headers().contains_key("x-ratelimit-reset"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
        assert!(body["error"]["retry_after"].as_u64().unwrap() >= 1);
    }
}
