//! Fake Salesloft: the OAuth token endpoint and the part of the Salesloft
//! API v2 a cadence enrollment uses, on one server.
//!
//! # Followed references
//! - developers.salesloft.com, "OAuth authentication": `POST
//!   https://accounts.salesloft.com/oauth/token` with
//!   `grant_type=refresh_token`, `client_id`, `client_secret`,
//!   `refresh_token` answers `access_token`, `token_type: "bearer"`,
//!   `expires_in`, `refresh_token` (a new one: the old refresh token stops
//!   working), `scope`, `created_at`. Errors are OAuth's (`invalid_grant`,
//!   `invalid_client`). API calls send `Authorization: Bearer …`; an
//!   expired or unknown token is a 401 whose `WWW-Authenticate` says
//!   `error="invalid_token"`.
//! - "Rate limits": a cost budget of 600 per minute per team; each endpoint
//!   costs 1 by default; answers carry `x-ratelimit-limit-minute`,
//!   `x-ratelimit-remaining-minute` and `x-ratelimit-endpoint-cost`; over
//!   the budget the answer is 429.
//! - "People": `GET /v2/people?email_addresses[]=…` (`data`, `metadata`),
//!   `POST /v2/people` (`email_address`, `first_name`, `last_name`,
//!   `title`, `phone`, `person_company_name`, `person_company_website`,
//!   `city`, `custom_fields`, …) — an email address already taken is a 422
//!   (`{"errors": {"email_address": ["has already been taken"]}}`),
//!   `DELETE /v2/people/{id}` (204).
//! - "Cadence memberships": `POST /v2/cadence_memberships?person_id=&cadence_id=`
//!   (query parameters, optional `user_id`), `GET /v2/cadence_memberships`
//!   (`person_id`, `cadence_id`, `currently_on_cadence`), `DELETE
//!   /v2/cadence_memberships/{id}` (204: the person leaves the cadence).
//!   Memberships carry `currently_on_cadence` and `current_state`
//!   (`staged`, `active`, `paused`, `removed`, `finished`).
//! - `GET /v2/me` (the authenticated user) and `GET /v2/cadences/{id}`.
//!
//! # What it enforces
//! Client credentials and the refresh token (one use: rotated on every
//! refresh), access-token expiry (`access_ttl`; [`SalesloftState::expire_tokens`]
//! ends them at once), revoked grants ([`SalesloftState::revoke`]); the cost
//! budget (429); one person per email address (422); a person on a cadence
//! once (422 "already on this cadence"); people marked `do_not_contact`
//! cannot be added (422); unknown cadences and people (404).
//!
//! # What it simplifies
//! Error texts other than the duplicate email are ours; deep-paging costs
//! are not charged (the connector never pages deep); the 429 carries
//! `Retry-After` (the seconds until the minute's budget resets). Cadences
//! never advance by themselves ([`SalesloftState::finish`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Map, Value, json};

use crate::common::{
    Faults, FixedWindow, RequestLog, guard, json_response, too_many_requests, wait_secs,
};

#[derive(Debug, Clone)]
pub struct SalesloftConfig {
    pub client_id: String,
    pub client_secret: String,
    /// The refresh token the app was authorized with.
    pub refresh_token: String,
    /// How long an access token lives (Salesloft: 2 hours).
    pub access_ttl: Duration,
    /// (id, name)
    pub cadences: Vec<(u64, String)>,
    /// Addresses whose people are marked do-not-contact.
    pub do_not_contact: Vec<String>,
    pub cost_per_minute: u64,
    /// The length of the rate "minute" (tests shorten it).
    pub minute: Duration,
}

impl SalesloftConfig {
    pub const DEFAULT_CLIENT_ID: &'static str = "fake-salesloft-client-id";
    pub const DEFAULT_CLIENT_SECRET: &'static str = "fake-salesloft-client-secret";
    pub const DEFAULT_REFRESH_TOKEN: &'static str = "fake-salesloft-refresh-0001";
    pub const DEFAULT_CADENCE: u64 = 4201;
    pub const OTHER_CADENCE: u64 = 4202;
    pub const DO_NOT_CONTACT: &'static str = "gone@example.com";
}

impl Default for SalesloftConfig {
    fn default() -> Self {
        Self {
            client_id: Self::DEFAULT_CLIENT_ID.into(),
            client_secret: Self::DEFAULT_CLIENT_SECRET.into(),
            refresh_token: Self::DEFAULT_REFRESH_TOKEN.into(),
            access_ttl: Duration::from_secs(7200),
            cadences: vec![
                (Self::DEFAULT_CADENCE, "SQL follow-up".into()),
                (Self::OTHER_CADENCE, "Nurture".into()),
            ],
            do_not_contact: vec![Self::DO_NOT_CONTACT.into()],
            cost_per_minute: 600,
            minute: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SalesloftPerson {
    pub id: u64,
    pub email: String,
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SalesloftMembership {
    pub id: u64,
    pub person_id: u64,
    pub cadence_id: u64,
    /// `staged`, `active`, `paused`, `removed`, `finished`.
    pub state: String,
}

impl SalesloftMembership {
    pub fn on_cadence(&self) -> bool {
        matches!(self.state.as_str(), "staged" | "active" | "paused")
    }
}

#[derive(Debug, Default)]
struct Data {
    people: Vec<SalesloftPerson>,
    memberships: Vec<SalesloftMembership>,
    /// access token → expiry
    access: HashMap<String, Instant>,
    /// The one refresh token that works now (None: revoked).
    refresh: Option<String>,
    refreshes: usize,
    next_id: u64,
}

#[derive(Debug)]
struct Inner {
    config: SalesloftConfig,
    data: Mutex<Data>,
    budget: FixedWindow,
    faults: Faults,
    requests: RequestLog,
}

#[derive(Debug, Clone)]
pub struct SalesloftState {
    inner: Arc<Inner>,
}

impl SalesloftState {
    pub fn new(config: SalesloftConfig) -> Self {
        let budget = FixedWindow::new(config.cost_per_minute.max(1), config.minute);
        let data = Data {
            refresh: Some(config.refresh_token.clone()),
            next_id: 9_000_001,
            ..Default::default()
        };
        Self {
            inner: Arc::new(Inner {
                config,
                data: Mutex::new(data),
                budget,
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

    pub fn people(&self) -> Vec<SalesloftPerson> {
        self.data().people.clone()
    }

    pub fn memberships(&self) -> Vec<SalesloftMembership> {
        self.data().memberships.clone()
    }

    /// The emails on a cadence now.
    pub fn cadence_emails(&self, cadence: u64) -> Vec<String> {
        let d = self.data();
        d.memberships
            .iter()
            .filter(|m| m.cadence_id == cadence && m.on_cadence())
            .filter_map(|m| d.people.iter().find(|p| p.id == m.person_id))
            .map(|p| p.email.clone())
            .collect()
    }

    /// How many token refreshes succeeded.
    pub fn refreshes(&self) -> usize {
        self.data().refreshes
    }

    /// The refresh token that works now.
    pub fn current_refresh_token(&self) -> Option<String> {
        self.data().refresh.clone()
    }

    /// Every access token expires now (as after two hours).
    pub fn expire_tokens(&self) {
        self.data().access.clear();
    }

    /// The user revokes the app's access: no refresh token works any more.
    pub fn revoke(&self) {
        let mut d = self.data();
        d.access.clear();
        d.refresh = None;
    }

    /// A person on `cadence` (as if added in the app).
    pub fn seed(&self, cadence: u64, email: &str) {
        let mut d = self.data();
        let id = d.next_id;
        d.next_id += 2;
        d.people.push(SalesloftPerson {
            id,
            email: email.to_lowercase(),
            fields: Map::new(),
        });
        d.memberships.push(SalesloftMembership {
            id: id + 1,
            person_id: id,
            cadence_id: cadence,
            state: "active".into(),
        });
    }

    /// The person's membership of `cadence` ends (the cadence ran out).
    pub fn finish(&self, cadence: u64, email: &str) {
        let mut d = self.data();
        let ids: Vec<u64> = d
            .people
            .iter()
            .filter(|p| p.email == email)
            .map(|p| p.id)
            .collect();
        for m in d
            .memberships
            .iter_mut()
            .filter(|m| m.cadence_id == cadence && ids.contains(&m.person_id))
        {
            m.state = "finished".into();
        }
    }

    pub fn credentials_banner(&self, base_url: &str) -> String {
        let c = &self.inner.config;
        let mut out = format!(
            "fake Salesloft listening on {base_url} (API /v2, token endpoint /oauth/token)\n"
        );
        out.push_str(&format!("  SALESLOFT_CLIENT_ID={}\n", c.client_id));
        out.push_str(&format!("  SALESLOFT_CLIENT_SECRET={}\n", c.client_secret));
        out.push_str(&format!("  SALESLOFT_REFRESH_TOKEN={}\n", c.refresh_token));
        for (id, name) in &c.cadences {
            out.push_str(&format!("  cadence {id} ({name})\n"));
        }
        out
    }
}

fn token() -> String {
    (0..32)
        .map(|_| char::from(b"abcdef0123456789"[rand::random_range(0..16)]))
        .collect()
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({"error": message}))
}

fn errors(field: &str, message: &str) -> Response {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({"errors": {field: [message]}}),
    )
}

fn data(status: StatusCode, v: Value) -> Response {
    json_response(status, &json!({"data": v}))
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({"error": code, "error_description": description}),
    )
}

fn invalid_token(description: &str) -> Response {
    let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", description);
    let h = format!(
        "Bearer realm=\"Doorkeeper\", error=\"invalid_token\", error_description=\"{description}\""
    );
    crate::common::set_headers(&mut r, &[("www-authenticate", h)]);
    r
}

async fn observe(State(state): State<SalesloftState>, req: Request, next: Next) -> Response {
    let inner = &state.inner;
    guard(&inner.faults, &inner.requests, req, next, |req| {
        if req.uri().path() == "/oauth/token" {
            return Ok(Vec::new());
        }
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(bearer) = bearer else {
            return Err(invalid_token("No access token was given"));
        };
        match state.data().access.get(bearer) {
            Some(exp) if *exp > Instant::now() => {}
            Some(_) => return Err(invalid_token("The access token expired")),
            None => return Err(invalid_token("The access token is invalid")),
        }
        let limit = ("x-ratelimit-limit-minute", inner.budget.limit().to_string());
        let cost = ("x-ratelimit-endpoint-cost", "1".to_string());
        match inner.budget.take(1) {
            Ok(used) => {
                let left = inner.budget.limit().saturating_sub(used);
                Ok(vec![
                    limit,
                    cost,
                    ("x-ratelimit-remaining-minute", left.to_string()),
                ])
            }
            Err(wait) => Err(too_many_requests(
                &json!({"error": "Rate limit exceeded: 600 cost per minute"}),
                Some(wait_secs(wait)),
                &[limit, cost, ("x-ratelimit-remaining-minute", "0".into())],
            )),
        }
    })
    .await
}

async fn oauth_token(State(state): State<SalesloftState>, body: String) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let c = &state.inner.config;
    if get("grant_type") != "refresh_token" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        );
    }
    if get("client_id") != c.client_id || get("client_secret") != c.client_secret {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.",
        );
    }
    let mut d = state.data();
    if d.refresh.as_deref() != Some(get("refresh_token")) || get("refresh_token").is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.",
        );
    }
    let access = token();
    let refresh = token();
    d.access
        .insert(access.clone(), Instant::now() + c.access_ttl);
    d.refresh = Some(refresh.clone());
    d.refreshes += 1;
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": access,
            "token_type": "bearer",
            "expires_in": c.access_ttl.as_secs(),
            "refresh_token": refresh,
            "scope": "",
            "created_at": chrono::Utc::now().timestamp(),
        }),
    )
}

fn person_json(p: &SalesloftPerson) -> Value {
    let mut v = p.fields.clone();
    v.insert("id".into(), json!(p.id));
    v.insert("email_address".into(), json!(p.email));
    Value::Object(v)
}

fn membership_json(m: &SalesloftMembership) -> Value {
    json!({
        "id": m.id,
        "added_at": "2026-01-01T00:00:00.000000Z",
        "person_deleted": false,
        "currently_on_cadence": m.on_cadence(),
        "current_state": m.state,
        "cadence": {"id": m.cadence_id, "_href": format!("https://api.salesloft.com/v2/cadences/{}", m.cadence_id)},
        "person": {"id": m.person_id, "_href": format!("https://api.salesloft.com/v2/people/{}", m.person_id)},
    })
}

fn list(items: Vec<Value>) -> Response {
    let n = items.len();
    json_response(
        StatusCode::OK,
        &json!({"metadata": {"paging": {"per_page": 25, "current_page": 1, "next_page": null,
            "prev_page": null, "total_pages": 1, "total_count": n}}, "data": items}),
    )
}

async fn me() -> Response {
    data(
        StatusCode::OK,
        json!({"id": 1, "name": "leadrelay fake user", "email": "owner@example.com",
            "team": {"id": 1}}),
    )
}

async fn cadence(State(state): State<SalesloftState>, Path(id): Path<String>) -> Response {
    let found = id
        .parse::<u64>()
        .ok()
        .and_then(|id| state.inner.config.cadences.iter().find(|(c, _)| *c == id));
    match found {
        Some((id, name)) => data(StatusCode::OK, json!({"id": id, "name": name})),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn list_people(State(state): State<SalesloftState>, req: Request) -> Response {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(req.uri().query().unwrap_or_default()).unwrap_or_default();
    let emails: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "email_addresses[]" || k == "email_addresses")
        .map(|(_, v)| v.trim().to_lowercase())
        .collect();
    let d = state.data();
    let items = d
        .people
        .iter()
        .filter(|p| emails.is_empty() || emails.contains(&p.email))
        .take(100)
        .map(person_json)
        .collect();
    list(items)
}

const PERSON_FIELDS: [&str; 12] = [
    "email_address",
    "first_name",
    "last_name",
    "title",
    "phone",
    "person_company_name",
    "person_company_website",
    "city",
    "state",
    "country",
    "linkedin_url",
    "custom_fields",
];

async fn create_person(State(state): State<SalesloftState>, body: String) -> Response {
    let Ok(Value::Object(mut body)) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    if let Some(k) = body.keys().find(|k| !PERSON_FIELDS.contains(&k.as_str())) {
        return errors(k, "is not a person attribute");
    }
    let email = body
        .remove("email_address")
        .and_then(|v| v.as_str().map(|s| s.trim().to_lowercase()))
        .unwrap_or_default();
    if email.is_empty() {
        return errors("email_address", "can't be blank");
    }
    if !crate::common::plausible_email(&email) {
        return errors("email_address", "is invalid");
    }
    let mut d = state.data();
    if d.people.iter().any(|p| p.email == email) {
        return errors("email_address", "has already been taken");
    }
    let id = d.next_id;
    d.next_id += 2;
    let dnc = state
        .inner
        .config
        .do_not_contact
        .iter()
        .any(|e| e.eq_ignore_ascii_case(&email));
    body.insert("do_not_contact".into(), json!(dnc));
    let p = SalesloftPerson {
        id,
        email,
        fields: body,
    };
    let v = person_json(&p);
    d.people.push(p);
    data(StatusCode::OK, v)
}

async fn delete_person(State(state): State<SalesloftState>, Path(id): Path<String>) -> Response {
    let mut d = state.data();
    let Some(id) = id
        .parse::<u64>()
        .ok()
        .filter(|id| d.people.iter().any(|p| p.id == *id))
    else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    d.people.retain(|p| p.id != id);
    d.memberships.retain(|m| m.person_id != id);
    StatusCode::NO_CONTENT.into_response()
}

async fn add_membership(
    State(state): State<SalesloftState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let num = |k: &str| q.get(k).and_then(|v| v.parse::<u64>().ok());
    let (Some(person), Some(cadence)) = (num("person_id"), num("cadence_id")) else {
        return errors(
            "base",
            "person_id and cadence_id are required query parameters",
        );
    };
    if !state
        .inner
        .config
        .cadences
        .iter()
        .any(|(c, _)| *c == cadence)
    {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let mut d = state.data();
    let Some(p) = d.people.iter().find(|p| p.id == person) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if p.fields.get("do_not_contact") == Some(&json!(true)) {
        return errors("person", "is marked as do not contact");
    }
    if d.memberships
        .iter()
        .any(|m| m.person_id == person && m.cadence_id == cadence && m.on_cadence())
    {
        return errors("person", "is already on this cadence");
    }
    let id = d.next_id;
    d.next_id += 2;
    let m = SalesloftMembership {
        id,
        person_id: person,
        cadence_id: cadence,
        state: "staged".into(),
    };
    let v = membership_json(&m);
    d.memberships.push(m);
    data(StatusCode::OK, v)
}

async fn list_memberships(
    State(state): State<SalesloftState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let num = |k: &str| q.get(k).and_then(|v| v.parse::<u64>().ok());
    let on = q.get("currently_on_cadence").map(|v| v == "true");
    let d = state.data();
    let items = d
        .memberships
        .iter()
        .filter(|m| num("person_id").is_none_or(|p| p == m.person_id))
        .filter(|m| num("cadence_id").is_none_or(|c| c == m.cadence_id))
        .filter(|m| on.is_none_or(|on| on == m.on_cadence()))
        .take(100)
        .map(membership_json)
        .collect();
    list(items)
}

async fn delete_membership(
    State(state): State<SalesloftState>,
    Path(id): Path<String>,
) -> Response {
    let mut d = state.data();
    let m = id
        .parse::<u64>()
        .ok()
        .and_then(|id| d.memberships.iter_mut().find(|m| m.id == id));
    match m {
        Some(m) => {
            m.state = "removed".into();
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found")
}

pub fn router(state: SalesloftState) -> Router {
    Router::new()
        .route("/oauth/token", post(oauth_token))
        .route("/v2/me", get(me))
        .route("/v2/cadences/{id}", get(cadence))
        .route("/v2/people", get(list_people).post(create_person))
        .route("/v2/people/{id}", delete(delete_person))
        .route(
            "/v2/cadence_memberships",
            get(list_memberships).post(add_membership),
        )
        .route("/v2/cadence_memberships/{id}", delete(delete_membership))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

crate::fake_handle!(FakeSalesloft, SalesloftState, SalesloftConfig, router);

impl FakeSalesloft {
    /// The token endpoint (the real one is
    /// `https://accounts.salesloft.com/oauth/token`; the API's base is
    /// [`Self::base_url`], the real one `https://api.salesloft.com`).
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.base_url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    async fn refresh(base: &str, token: &str) -> (u16, Value) {
        let r = client()
            .post(format!("{base}/oauth/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", SalesloftConfig::DEFAULT_CLIENT_ID),
                ("client_secret", SalesloftConfig::DEFAULT_CLIENT_SECRET),
                ("refresh_token", token),
            ])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    #[tokio::test]
    async fn refresh_tokens_rotate_and_people_are_unique() {
        let fake = FakeSalesloft::start(SalesloftConfig::default())
            .await
            .unwrap();
        let base = fake.base_url();
        let (s, t) = refresh(&base, SalesloftConfig::DEFAULT_REFRESH_TOKEN).await;
        assert_eq!(s, 200);
        // The old refresh token is used up.
        let (s, e) = refresh(&base, SalesloftConfig::DEFAULT_REFRESH_TOKEN).await;
        assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
        let access = t["access_token"].as_str().unwrap();
        let post = |body: Value| {
            client()
                .post(format!("{base}/v2/people"))
                .bearer_auth(access)
                .json(&body)
                .send()
        };
        assert_eq!(
            post(json!({"email_address": "a@x.io"}))
                .await
                .unwrap()
                .status(),
            200
        );
        let dup = post(json!({"email_address": "A@x.io"})).await.unwrap();
        assert_eq!(dup.status(), 422);
        let body: Value = dup.json().await.unwrap();
        assert_eq!(body["errors"]["email_address"][0], "has already been taken");
        fake.expire_tokens();
        let r = post(json!({"email_address": "b@x.io"})).await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }

    #[tokio::test]
    async fn the_cost_budget_answers_429() {
        let fake = FakeSalesloft::start(SalesloftConfig {
            cost_per_minute: 2,
            ..Default::default()
        })
        .await
        .unwrap();
        let (_, t) = refresh(&fake.base_url(), SalesloftConfig::DEFAULT_REFRESH_TOKEN).await;
        let mut statuses = Vec::new();
        let mut last = None;
        for _ in 0..3 {
            let r = client()
                .get(format!("{}/v2/me", fake.base_url()))
                .bearer_auth(t["access_token"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
            last = Some(r);
        }
        assert_eq!(statuses, [200, 200, 429]);
        let r = last.unwrap();
        assert_eq!(r.headers()["x-ratelimit-remaining-minute"], "0");
        assert!(r.headers().contains_key("retry-after"));
    }
}
