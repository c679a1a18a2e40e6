//! Fake Pipedrive: API v2 persons, organizations, deals, activities,
//! pipelines and stages; API v1 leads, notes and `users/me`; token-based rate
//! limiting.
//!
//! # Followed references
//! - developers.pipedrive.com API reference v2: `POST/GET/PATCH/DELETE /api/v2/persons`
//!   (`emails`/`phones` arrays of `{value, primary, label}`), `GET /api/v2/persons/search`
//!   (`term` ≥ 2 characters or 1 with `exact_match`, `fields`, `organization_id`,
//!   `limit` ≤ 500, `cursor`), organizations and their search, deals (`title`
//!   required, `pipeline_id`/`stage_id`), activities (`subject`, `type`,
//!   `due_date`, `due_time`, `duration`, `person_id`/`deal_id`/`org_id`/`lead_id`,
//!   `participants`), pipelines and stages. v2 creates answer 200.
//!   `GET /api/v2/organizations` and `/api/v2/deals` (`updated_since`,
//!   `sort_by=update_time`, cursor paging), `GET /api/v2/deals/search`
//!   (fields `custom_fields`, `notes`, `title`; `exact_match`).
//! - API v1: `POST /api/v1/leads` (`title` required, `person_id` or
//!   `organization_id` required; `value` needs `amount` and `currency`; 201),
//!   `POST /api/v1/notes` (`content` plus one of `lead_id`, `deal_id`,
//!   `person_id`, `org_id`, `project_id`), `GET /api/v1/users/me`.
//! - "Core API concepts": authentication with the `x-api-token` header or the
//!   `api_token` query parameter; responses `{"success","data","additional_data"}`
//!   and errors `{"success":false,"error","error_info","data":null,"additional_data":null}`;
//!   status codes 400/401/402/403/404/429.
//! - "Guide for Webhooks v2": `POST /v1/webhooks` (`subscription_url`,
//!   `event_action`, `event_object`, `http_auth_user`, `http_auth_password`,
//!   `version`), bodies `{meta, data, previous}`, sent for changes made in
//!   the app and through the API (`meta.change_source`), 40 webhooks per
//!   user, retries of failed deliveries (see `webhooks`).
//! - "Rate limiting" (token-based): a daily token budget per company
//!   (30 000 × plan multiplier × seats), a token cost per request type (get one 2,
//!   list 20, update 10, delete 6, search 40 on v1; v2 "up to half"), burst
//!   limits per token in rolling 2-second windows (Growth: 40 requests; search:
//!   10), headers `x-ratelimit-limit`, `x-ratelimit-remaining`,
//!   `x-ratelimit-reset` and `x-daily-requests-left`, 429 when over.
//!
//! # What it enforces
//! - The API token (401 `unauthorized access` with `errorCode` 401).
//! - v2 body schemas: unknown top-level fields, wrong JSON types, `visible_to`
//!   values, email/phone objects without `value`, dates as `YYYY-MM-DD`,
//!   times as `HH:MM` (400 `ERR_SCHEMA_VALIDATION_FAILED`).
//! - Required fields (organization `name`, deal `title`, lead `title`, note
//!   `content`; not cleared by a PATCH either), lead/note links, linked
//!   records must exist, deal `pipeline_id`/`stage_id` must exist and match,
//!   activity `type` must be an active activity type, deal `status` ∈
//!   open/won/lost.
//! - Organization and deal `custom_fields` keys must be custom fields of
//!   that object (`organizationFields` / `dealFields`): an unknown key is
//!   refused (400).
//! - Deleted organizations and deals (`DELETE /api/v2/…/{id}`) answer 404
//!   and are gone from lists and search.
//! - Burst and daily-budget limits with `Retry-After` on 429.
//!
//! # What it simplifies
//! - One company and one user; person `custom_fields` are stored as given
//!   (keys not checked); no followers, products,
//!   files, filters. Deleted records are gone from reads and search.
//! - Search is consistent unless [`PipedriveConfig::search_index_delay`] is set
//!   (the real index lags); `cursor` is an offset.
//! - `x-daily-requests-left` reports the tokens left in the daily budget; the
//!   exact texts of 429 bodies and of most validation errors are not
//!   documented and are modelled on the documented envelopes.

mod changes;
mod errors;
mod v1;
mod v2;
mod webhooks;

#[cfg(test)]
mod tests;

pub use webhooks::{PipedriveWebhook, PipedriveWebhookSent};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use crate::common::{FakeServer, Faults, RequestLog, RollingWindow};

/// A pipeline stage.
#[derive(Debug, Clone)]
pub struct PipedriveStage {
    pub id: u64,
    pub name: String,
    /// Deal probability in percent.
    pub probability: u8,
}

/// A custom field of the company (`personFields` / `organizationFields` /
/// `dealFields` list it beside the standard fields), referenced in the API
/// by its `key`: a 40-character hash.
#[derive(Debug, Clone)]
pub struct PipedriveCustomField {
    /// `person`, `organization` or `deal`.
    pub object: String,
    pub key: String,
    pub name: String,
    /// `varchar`, `double`, `monetary`, `date`, …
    pub field_type: String,
}

/// A deal pipeline.
#[derive(Debug, Clone)]
pub struct PipedrivePipeline {
    pub id: u64,
    pub name: String,
    pub stages: Vec<PipedriveStage>,
}

/// The user the API token belongs to.
#[derive(Debug, Clone)]
pub struct PipedriveUser {
    pub id: u64,
    pub name: String,
    pub email: String,
}

/// Token costs of one API version's request types.
#[derive(Debug, Clone, Copy)]
pub struct PipedriveCosts {
    pub get_one: u64,
    pub list: u64,
    pub update: u64,
    pub delete: u64,
    pub search: u64,
}

/// What the fake company looks like. `Default`: one API token
/// ([`PipedriveConfig::DEFAULT_TOKEN`]), the Growth plan with one seat
/// (60 000 tokens a day, 40 requests per 2 s, 10 searches per 2 s), one
/// pipeline with five stages and the standard activity types.
#[derive(Debug, Clone)]
pub struct PipedriveConfig {
    pub api_tokens: Vec<String>,
    pub company_id: u64,
    pub company_name: String,
    pub company_domain: String,
    pub user: PipedriveUser,
    /// Requests per token per `burst_window`.
    pub burst_limit: usize,
    /// Search requests per token per `burst_window`.
    pub search_burst_limit: usize,
    pub burst_window: Duration,
    /// Tokens per day for the company.
    pub daily_token_budget: u64,
    pub v1_costs: PipedriveCosts,
    pub v2_costs: PipedriveCosts,
    pub pipelines: Vec<PipedrivePipeline>,
    /// Active activity type keys (`key_string`).
    pub activity_types: Vec<String>,
    /// Records become findable by search only this long after a write. Zero: immediately.
    pub search_index_delay: Duration,
    /// The company's custom person, organization and deal fields (none by
    /// default).
    pub custom_fields: Vec<PipedriveCustomField>,
    /// The waits before each retry of a webhook delivery that got no 2xx
    /// (Pipedrive: 3 s, 30 s, 150 s).
    pub webhook_retry_delays: Vec<Duration>,
}

impl PipedriveConfig {
    pub const DEFAULT_TOKEN: &'static str = "0123456789abcdef0123456789abcdef01234567";
}

impl Default for PipedriveConfig {
    fn default() -> Self {
        let stage = |id: u64, name: &str, probability: u8| PipedriveStage {
            id,
            name: name.into(),
            probability,
        };
        Self {
            api_tokens: vec![Self::DEFAULT_TOKEN.to_string()],
            company_id: 7_000_001,
            company_name: "leadrelay fake company".into(),
            company_domain: "leadrelay-fake".into(),
            user: PipedriveUser {
                id: 10_001,
                name: "Fake Owner".into(),
                email: "owner@leadrelay-fake.test".into(),
            },
            burst_limit: 40,
            search_burst_limit: 10,
            burst_window: Duration::from_secs(2),
            daily_token_budget: 30_000 * 2,
            v1_costs: PipedriveCosts {
                get_one: 2,
                list: 20,
                update: 10,
                delete: 6,
                search: 40,
            },
            v2_costs: PipedriveCosts {
                get_one: 1,
                list: 10,
                update: 5,
                delete: 3,
                search: 20,
            },
            pipelines: vec![PipedrivePipeline {
                id: 1,
                name: "Sales".into(),
                stages: vec![
                    stage(1, "Qualified", 10),
                    stage(2, "Contact Made", 20),
                    stage(3, "Demo Scheduled", 40),
                    stage(4, "Proposal Made", 60),
                    stage(5, "Negotiations Started", 80),
                ],
            }],
            activity_types: ["call", "meeting", "task", "deadline", "email", "lunch"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            search_index_delay: Duration::ZERO,
            custom_fields: Vec::new(),
            webhook_retry_delays: [3, 30, 150].map(Duration::from_secs).to_vec(),
        }
    }
}

/// An email address or phone number of a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipedriveContactPoint {
    pub value: String,
    pub primary: bool,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PipedrivePerson {
    pub id: u64,
    pub name: String,
    pub owner_id: u64,
    pub org_id: Option<u64>,
    pub emails: Vec<PipedriveContactPoint>,
    pub phones: Vec<PipedriveContactPoint>,
    pub visible_to: u64,
    pub label_ids: Vec<u64>,
    pub marketing_status: Option<String>,
    pub custom_fields: Map<String, Value>,
    pub add_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

impl PipedrivePerson {
    /// The primary email, or the first one.
    pub fn primary_email(&self) -> Option<&str> {
        self.emails
            .iter()
            .find(|e| e.primary)
            .or(self.emails.first())
            .map(|e| e.value.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PipedriveOrganization {
    pub id: u64,
    pub name: String,
    pub owner_id: u64,
    pub address: Option<String>,
    pub visible_to: u64,
    pub label_ids: Vec<u64>,
    pub custom_fields: Map<String, Value>,
    pub add_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PipedriveDeal {
    pub id: u64,
    pub title: String,
    pub owner_id: u64,
    pub person_id: Option<u64>,
    pub org_id: Option<u64>,
    pub pipeline_id: u64,
    pub stage_id: u64,
    pub value: f64,
    pub currency: String,
    /// `open`, `won` or `lost`.
    pub status: String,
    pub probability: Option<f64>,
    pub lost_reason: Option<String>,
    pub expected_close_date: Option<String>,
    pub visible_to: u64,
    pub label_ids: Vec<u64>,
    pub custom_fields: Map<String, Value>,
    pub add_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PipedriveActivity {
    pub id: u64,
    pub subject: String,
    /// Activity type key, e.g. `call`.
    pub activity_type: String,
    pub owner_id: u64,
    pub deal_id: Option<u64>,
    pub lead_id: Option<String>,
    pub person_id: Option<u64>,
    pub org_id: Option<u64>,
    pub due_date: Option<String>,
    pub due_time: Option<String>,
    pub duration: Option<String>,
    pub busy: bool,
    pub done: bool,
    pub note: Option<String>,
    pub public_description: Option<String>,
    /// (person id, primary)
    pub participants: Vec<(u64, bool)>,
    pub priority: Option<i64>,
    pub add_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PipedriveLead {
    /// UUID.
    pub id: String,
    pub title: String,
    pub owner_id: u64,
    pub person_id: Option<u64>,
    pub organization_id: Option<u64>,
    /// (amount, currency)
    pub value: Option<(f64, String)>,
    pub expected_close_date: Option<String>,
    pub label_ids: Vec<String>,
    pub origin_id: Option<String>,
    pub channel: Option<i64>,
    pub channel_id: Option<String>,
    pub visible_to: Option<String>,
    pub was_seen: bool,
    pub add_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PipedriveNote {
    pub id: u64,
    /// HTML content as sent.
    pub content: String,
    pub lead_id: Option<String>,
    pub deal_id: Option<u64>,
    pub person_id: Option<u64>,
    pub org_id: Option<u64>,
    pub project_id: Option<u64>,
    pub user_id: u64,
    pub add_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    next_id: u64,
    pub persons: BTreeMap<u64, PipedrivePerson>,
    pub organizations: BTreeMap<u64, PipedriveOrganization>,
    pub deals: BTreeMap<u64, PipedriveDeal>,
    pub activities: BTreeMap<u64, PipedriveActivity>,
    pub leads: Vec<PipedriveLead>,
    pub notes: BTreeMap<u64, PipedriveNote>,
    /// When search sees each (entity kind, id).
    pub indexed_at: HashMap<(&'static str, u64), Instant>,
}

impl Store {
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn searchable(&self, kind: &'static str, id: u64, now: Instant) -> bool {
        self.indexed_at.get(&(kind, id)).is_none_or(|t| *t <= now)
    }
}

#[derive(Debug)]
struct Budget {
    day: NaiveDate,
    used: u64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub config: PipedriveConfig,
    pub store: Mutex<Store>,
    budget: Mutex<Budget>,
    bursts: Mutex<HashMap<(String, bool), RollingWindow>>,
    faults: Faults,
    requests: RequestLog,
    pub webhooks: Mutex<Vec<PipedriveWebhook>>,
    pub webhook_log: Mutex<Vec<PipedriveWebhookSent>>,
}

/// The fake company's state, shared by the router and the test that inspects it.
#[derive(Debug, Clone)]
pub struct PipedriveState {
    pub(crate) inner: Arc<Inner>,
}

impl PipedriveState {
    pub fn new(config: PipedriveConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                budget: Mutex::new(Budget {
                    day: Utc::now().date_naive(),
                    used: 0,
                }),
                store: Mutex::new(Store::default()),
                bursts: Mutex::new(HashMap::new()),
                faults: Faults::default(),
                requests: RequestLog::default(),
                webhooks: Mutex::new(Vec::new()),
                webhook_log: Mutex::new(Vec::new()),
                config,
            }),
        }
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Injected failures for the next requests.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Every request answered, in order.
    pub fn requests(&self) -> &RequestLog {
        &self.inner.requests
    }

    /// The first accepted API token.
    pub fn api_token(&self) -> String {
        self.inner
            .config
            .api_tokens
            .first()
            .cloned()
            .unwrap_or_default()
    }

    /// Persons not deleted, by id.
    pub fn persons(&self) -> Vec<PipedrivePerson> {
        self.store().persons.values().cloned().collect()
    }

    /// The person with this email (case-insensitive).
    pub fn person_by_email(&self, email: &str) -> Option<PipedrivePerson> {
        self.store()
            .persons
            .values()
            .find(|p| p.emails.iter().any(|e| e.value.eq_ignore_ascii_case(email)))
            .cloned()
    }

    pub fn organizations(&self) -> Vec<PipedriveOrganization> {
        self.store().organizations.values().cloned().collect()
    }

    pub fn deals(&self) -> Vec<PipedriveDeal> {
        self.store().deals.values().cloned().collect()
    }

    pub fn activities(&self) -> Vec<PipedriveActivity> {
        self.store().activities.values().cloned().collect()
    }

    pub fn leads(&self) -> Vec<PipedriveLead> {
        self.store().leads.clone()
    }

    pub fn notes(&self) -> Vec<PipedriveNote> {
        self.store().notes.values().cloned().collect()
    }

    /// Creates a person directly (no validation, no budget). Returns its id.
    pub fn seed_person(&self, name: &str, email: Option<&str>) -> u64 {
        let mut store = self.store();
        let id = store.next_id();
        let now = Utc::now();
        let emails = email
            .map(|e| {
                vec![PipedriveContactPoint {
                    value: e.into(),
                    primary: true,
                    label: "work".into(),
                }]
            })
            .unwrap_or_default();
        store.persons.insert(
            id,
            PipedrivePerson {
                id,
                name: name.into(),
                owner_id: self.inner.config.user.id,
                org_id: None,
                emails,
                phones: Vec::new(),
                visible_to: 3,
                label_ids: Vec::new(),
                marketing_status: None,
                custom_fields: Map::new(),
                add_time: now,
                update_time: now,
            },
        );
        id
    }

    /// Creates an open lead for a person directly. Returns its id.
    pub fn seed_lead(&self, person_id: u64, title: &str) -> String {
        let mut store = self.store();
        let now = Utc::now();
        let id = uuid::Uuid::now_v7().to_string();
        store.leads.push(PipedriveLead {
            id: id.clone(),
            title: title.into(),
            owner_id: self.inner.config.user.id,
            person_id: Some(person_id),
            organization_id: None,
            value: None,
            expected_close_date: None,
            label_ids: Vec::new(),
            origin_id: None,
            channel: None,
            channel_id: None,
            visible_to: None,
            was_seen: false,
            add_time: now,
            update_time: now,
        });
        id
    }

    /// Creates an open deal in the first pipeline directly (as if made in
    /// the app), in `stage_id`. Returns its id.
    pub fn seed_deal(&self, title: &str, stage_id: u64) -> u64 {
        let pipeline_id = self
            .inner
            .config
            .pipelines
            .first()
            .map(|p| p.id)
            .unwrap_or(1);
        let mut store = self.store();
        let id = store.next_id();
        let now = Utc::now();
        store.deals.insert(
            id,
            PipedriveDeal {
                id,
                title: title.into(),
                owner_id: self.inner.config.user.id,
                person_id: None,
                org_id: None,
                pipeline_id,
                stage_id,
                value: 0.0,
                currency: "EUR".into(),
                status: "open".into(),
                probability: None,
                lost_reason: None,
                expected_close_date: None,
                visible_to: 3,
                label_ids: Vec::new(),
                custom_fields: Map::new(),
                add_time: now,
                update_time: now,
            },
        );
        id
    }

    /// Creates an organization directly. Returns its id.
    pub fn seed_organization(&self, name: &str) -> u64 {
        let mut store = self.store();
        let id = store.next_id();
        let now = Utc::now();
        store.organizations.insert(
            id,
            PipedriveOrganization {
                id,
                name: name.into(),
                owner_id: self.inner.config.user.id,
                address: None,
                visible_to: 3,
                label_ids: Vec::new(),
                custom_fields: Map::new(),
                add_time: now,
                update_time: now,
            },
        );
        id
    }

    /// Tokens spent today.
    pub fn tokens_used_today(&self) -> u64 {
        self.inner
            .budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .used
    }

    /// Sets the tokens spent today, e.g. to just below the budget.
    pub fn set_tokens_used_today(&self, used: u64) {
        self.inner
            .budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .used = used;
    }

    /// A human-readable list of what the fake accepts, for `leadrelay fake pipedrive`.
    pub fn credentials_banner(&self, base_url: &str) -> String {
        let c = &self.inner.config;
        let mut out = format!(
            "fake Pipedrive listening on {base_url} (company {})\n",
            c.company_domain
        );
        for t in &c.api_tokens {
            out.push_str(&format!(
                "  API token: {t}  (x-api-token header or ?api_token=)\n"
            ));
        }
        out.push_str(&format!(
            "  limits: {} requests and {} searches per {:?} per token, {} tokens per day\n",
            c.burst_limit, c.search_burst_limit, c.burst_window, c.daily_token_budget
        ));
        for p in &c.pipelines {
            let stages: Vec<String> = p
                .stages
                .iter()
                .map(|s| format!("{}={}", s.id, s.name))
                .collect();
            out.push_str(&format!(
                "  pipeline {} {}: {}\n",
                p.id,
                p.name,
                stages.join(", ")
            ));
        }
        out
    }

    fn token_of(&self, req: &Request) -> Option<String> {
        let header = req
            .headers()
            .get("x-api-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let query = req.uri().query().and_then(|q| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .ok()
                .and_then(|pairs| {
                    pairs
                        .into_iter()
                        .find(|(k, _)| k == "api_token")
                        .map(|(_, v)| v)
                })
        });
        let token = header.or(query)?;
        self.inner
            .config
            .api_tokens
            .contains(&token)
            .then_some(token)
    }

    /// The token cost of a request, from its method and path.
    fn cost(&self, method: &Method, path: &str) -> (u64, bool) {
        let c = if path.starts_with("/api/v2/") {
            &self.inner.config.v2_costs
        } else {
            &self.inner.config.v1_costs
        };
        let search = path.ends_with("/search") || path.contains("itemSearch");
        let last = path.rsplit('/').next().unwrap_or_default();
        let single = last.parse::<u64>().is_ok() || last.len() == 36 || last == "me";
        let cost = if search {
            c.search
        } else if *method == Method::GET {
            if single { c.get_one } else { c.list }
        } else if *method == Method::DELETE {
            c.delete
        } else {
            c.update
        };
        (cost, search)
    }

    /// Charges a request: `Err((daily, wait))` when over a limit.
    fn charge(
        &self,
        token: &str,
        cost: u64,
        search: bool,
    ) -> Result<(usize, usize, u64), (bool, Duration)> {
        let c = &self.inner.config;
        let mut budget = self.inner.budget.lock().unwrap_or_else(|p| p.into_inner());
        let today = Utc::now().date_naive();
        if budget.day != today {
            budget.day = today;
            budget.used = 0;
        }
        let limit = if search {
            c.search_burst_limit
        } else {
            c.burst_limit
        }
        .max(1);
        if budget.used + cost > c.daily_token_budget {
            return Err((true, Duration::ZERO));
        }
        let mut bursts = self.inner.bursts.lock().unwrap_or_else(|p| p.into_inner());
        let window = bursts
            .entry((token.to_string(), search))
            .or_insert_with(|| RollingWindow::new(limit, c.burst_window));
        let remaining = window.hit().map_err(|wait| (false, wait))?;
        budget.used += cost;
        Ok((limit, remaining, c.daily_token_budget - budget.used))
    }

    fn limit_headers(
        &self,
        response: &mut Response,
        limit: usize,
        remaining: usize,
        daily_left: u64,
    ) {
        let reset = self.inner.config.burst_window.as_secs().max(1);
        for (k, v) in [
            ("x-ratelimit-limit", limit.to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-reset", reset.to_string()),
            ("x-daily-requests-left", daily_left.to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                response.headers_mut().insert(k, v);
            }
        }
    }
}

/// Applies injected faults and records every request in the log.
async fn observe(State(state): State<PipedriveState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let response = state.inner.faults.around(next.run(req)).await;
    state
        .inner
        .requests
        .record(&method, &path, response.status().as_u16());
    response
}

/// Authenticates the API token, then charges the request against the burst
/// window and the daily budget.
async fn guard(State(state): State<PipedriveState>, req: Request, next: Next) -> Response {
    let Some(token) = state.token_of(&req) else {
        return errors::unauthorized().into_response();
    };
    let (cost, search) = state.cost(req.method(), req.uri().path());
    match state.charge(&token, cost, search) {
        Ok((limit, remaining, daily_left)) => {
            let mut response = next.run(req).await;
            state.limit_headers(&mut response, limit, remaining, daily_left);
            response
        }
        Err((daily, wait)) => {
            let c = &state.inner.config;
            let limit = if search {
                c.search_burst_limit
            } else {
                c.burst_limit
            };
            let daily_left = {
                let b = state.inner.budget.lock().unwrap_or_else(|p| p.into_inner());
                c.daily_token_budget.saturating_sub(b.used)
            };
            let mut response = errors::rate_limited(daily).into_response();
            state.limit_headers(&mut response, limit, 0, daily_left);
            let retry = if daily {
                let now = Utc::now();
                let midnight = (now.date_naive() + chrono::Days::new(1))
                    .and_hms_opt(0, 0, 0)
                    .map(|m| m.and_utc());
                midnight
                    .map(|m| (m - now).num_seconds().max(1) as u64)
                    .unwrap_or(3600)
            } else {
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            };
            if let Ok(v) = HeaderValue::from_str(&retry.max(1).to_string()) {
                response.headers_mut().insert("retry-after", v);
            }
            response
        }
    }
}

async fn not_found() -> Response {
    errors::error(StatusCode::NOT_FOUND, "Unknown method .").into_response()
}

/// The fake's routes, to serve on any listener.
pub fn router(state: PipedriveState) -> Router {
    Router::new()
        .route(
            "/api/v2/persons",
            post(v2::create_person).get(changes::list_persons),
        )
        .route("/api/v2/persons/search", get(v2::search_persons))
        .route(
            "/api/v2/persons/{id}",
            get(v2::get_person)
                .patch(v2::update_person)
                .delete(v2::delete_person),
        )
        .route(
            "/api/v2/organizations",
            post(v2::create_organization).get(v2::list_organizations),
        )
        .route(
            "/api/v2/organizations/search",
            get(v2::search_organizations),
        )
        .route(
            "/api/v2/organizations/{id}",
            get(v2::get_organization)
                .patch(v2::update_organization)
                .delete(v2::delete_organization),
        )
        .route("/api/v2/deals", post(v2::create_deal).get(v2::list_deals))
        .route("/api/v2/deals/search", get(v2::search_deals))
        .route(
            "/api/v2/deals/{id}",
            get(v2::get_deal)
                .patch(v2::update_deal)
                .delete(v2::delete_deal),
        )
        .route(
            "/api/v2/activities",
            post(v2::create_activity).get(v2::list_activities),
        )
        .route("/api/v2/activities/{id}", get(v2::get_activity))
        .route("/api/v2/pipelines", get(v2::list_pipelines))
        .route("/api/v2/stages", get(v2::list_stages))
        .route("/api/v1/leads", post(v1::create_lead).get(v1::list_leads))
        .route("/api/v1/leads/{id}", get(v1::get_lead))
        .route("/api/v1/notes", post(v1::create_note).get(v1::list_notes))
        .route("/api/v1/users/me", get(v1::users_me))
        .route(
            "/api/v1/webhooks",
            post(webhooks::create_webhook).get(webhooks::list_webhooks),
        )
        .route(
            "/api/v1/webhooks/{id}",
            axum::routing::delete(webhooks::delete_webhook),
        )
        .route("/api/v1/personFields", get(v1::person_fields))
        .route("/api/v1/dealFields", get(v1::deal_fields))
        .route("/api/v1/organizationFields", get(v1::organization_fields))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A running fake Pipedrive. Derefs to [`PipedriveState`] for the accessors.
pub struct FakePipedrive {
    server: FakeServer,
    state: PipedriveState,
}

impl FakePipedrive {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(config: PipedriveConfig) -> std::io::Result<Self> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    /// Starts on `listen`.
    pub async fn start_on(config: PipedriveConfig, listen: &str) -> std::io::Result<Self> {
        let state = PipedriveState::new(config);
        let server = FakeServer::start(router(state.clone()), listen).await?;
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:PORT` (the real one is `https://{company}.pipedrive.com`);
    /// paths start with `/api/v1` or `/api/v2`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn state(&self) -> &PipedriveState {
        &self.state
    }
}

impl std::ops::Deref for FakePipedrive {
    type Target = PipedriveState;
    fn deref(&self) -> &PipedriveState {
        &self.state
    }
}

/// Serves a fake Pipedrive on `listen` until the future is dropped, after
/// printing the token it accepts (for `leadrelay fake pipedrive --listen ADDR`).
pub async fn serve(listen: &str, config: PipedriveConfig) -> std::io::Result<()> {
    let state = PipedriveState::new(config);
    let listener = TcpListener::bind(listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("{}", state.credentials_banner(&base));
    axum::serve(listener, router(state)).await
}

/// `2024-01-02T03:04:05Z`, as API v2 prints times.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `2024-01-02 03:04:05`, as API v1 prints times.
pub(crate) fn v1_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}
