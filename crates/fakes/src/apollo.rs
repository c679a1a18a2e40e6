//! Fake Apollo: the part of the Apollo.io REST API a sequence enrollment
//! uses.
//!
//! # Followed references
//! - docs.apollo.io, "Authentication": the API key in the `X-Api-Key`
//!   header, on `https://api.apollo.io/api/v1/...`; the sequence endpoints
//!   need a *master* key (403 otherwise). "View API usage" checks a key:
//!   `GET /api/v1/auth/health` answers `{"healthy": true, "is_logged_in": …}`.
//! - "Rate limits": fixed windows per minute, hour and day, by plan. Every
//!   answer carries `x-rate-limit-minute|hourly|daily`,
//!   `x-minute-usage`, `x-hourly-usage`, `x-daily-usage`,
//!   `x-minute-requests-left`, `x-hourly-requests-left`,
//!   `x-daily-requests-left`; over a limit the answer is 429.
//! - "Search for contacts": `POST /api/v1/contacts/search` with
//!   `q_keywords` (name, title, company or email), `page`, `per_page`;
//!   answers `contacts` and `pagination`. Each contact carries
//!   `contact_campaign_statuses` (`id`, `emailer_campaign_id`, `status`:
//!   `active`, `paused`, `finished`, `failed`, `removed`).
//! - "Create a contact": `POST /api/v1/contacts` with `first_name`,
//!   `last_name`, `email`, `organization_name`, `title`, `website_url`,
//!   `direct_phone`, `label_names`, `run_dedupe`. Apollo does **not**
//!   deduplicate unless `run_dedupe` is true: the same email twice makes
//!   two contacts. With it, the matched contact is answered (its submitted
//!   fields overwritten).
//! - "Search for sequences": `POST /api/v1/emailer_campaigns/search`
//!   (`q_name`, `page`, `per_page`) answers `emailer_campaigns`.
//! - "Add contacts to a sequence":
//!   `POST /api/v1/emailer_campaigns/{sequence_id}/add_contact_ids` with
//!   `emailer_campaign_id` (the same id), `contact_ids[]`,
//!   `send_email_from_email_account_id`, `sequence_active_in_other_campaigns`,
//!   `sequence_finished_in_other_campaigns`, `sequence_no_email`.
//! - "Update contact status in a sequence":
//!   `POST /api/v1/emailer_campaigns/remove_or_stop_contact_ids` with
//!   `emailer_campaign_ids[]`, `contact_ids[]`, `mode` (`remove`,
//!   `mark_as_finished` or `stop`).
//!
//! # What it enforces
//! The key (401 without or with an unknown one, 403 for a non-master key
//! on the sequence endpoints); the three fixed windows (429 with the rate
//! headers); no deduplication on create without `run_dedupe`; unknown
//! sequences (404); an `emailer_campaign_id` that is not the path's, an
//! unknown email account, unknown contact ids, a bad `mode` (422); a
//! contact active or paused in another sequence is skipped unless
//! `sequence_active_in_other_campaigns`; a contact without email, or whose
//! email is unsubscribed or bounced, is skipped.
//!
//! # What it simplifies
//! Error texts are ours (Apollo documents the statuses); the answer to
//! `add_contact_ids` lists skipped contacts as `skipped_contact_ids`
//! (`{id: reason}`) — the reasons' spellings are ours. Apollo has no
//! documented contact delete, and neither has the fake. Sequences never
//! advance by themselves (tests finish a membership with
//! [`ApolloState::finish`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::common::{Faults, FixedWindow, RequestLog, guard, json_response, too_many_requests};

/// A sequence of the fake team.
#[derive(Debug, Clone)]
pub struct ApolloSequence {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct ApolloConfig {
    /// A master key: every endpoint.
    pub api_key: String,
    /// A key without master rights: no sequence endpoints (403).
    pub plain_key: String,
    pub sequences: Vec<ApolloSequence>,
    pub email_accounts: Vec<String>,
    /// Addresses Apollo will not sequence (unsubscribed or bounced).
    pub unsubscribed: Vec<String>,
    pub per_minute: u64,
    pub per_hour: u64,
    pub per_day: u64,
    /// The length of the "minute" window (tests shorten it).
    pub minute: Duration,
}

impl ApolloConfig {
    pub const DEFAULT_API_KEY: &'static str = "fake-apollo-master-key-0001";
    pub const PLAIN_API_KEY: &'static str = "fake-apollo-plain-key-0002";
    pub const DEFAULT_SEQUENCE: &'static str = "66e9e215ece19801b219997f";
    pub const OTHER_SEQUENCE: &'static str = "66e9e215ece19801b2199980";
    pub const DEFAULT_EMAIL_ACCOUNT: &'static str = "6095a710bd01d100a506d4ac";
    pub const UNSUBSCRIBED: &'static str = "gone@example.com";
}

impl Default for ApolloConfig {
    fn default() -> Self {
        Self {
            api_key: Self::DEFAULT_API_KEY.into(),
            plain_key: Self::PLAIN_API_KEY.into(),
            sequences: vec![
                ApolloSequence {
                    id: Self::DEFAULT_SEQUENCE.into(),
                    name: "SQL follow-up".into(),
                },
                ApolloSequence {
                    id: Self::OTHER_SEQUENCE.into(),
                    name: "Nurture".into(),
                },
            ],
            email_accounts: vec![Self::DEFAULT_EMAIL_ACCOUNT.into()],
            unsubscribed: vec![Self::UNSUBSCRIBED.into()],
            // The example plan of Apollo's rate-limit page.
            per_minute: 50,
            per_hour: 100,
            per_day: 300,
            minute: Duration::from_secs(60),
        }
    }
}

/// A contact's membership of one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct ApolloMembership {
    pub id: String,
    pub sequence: String,
    /// `active`, `paused`, `finished`, `removed`.
    pub status: String,
}

/// A saved contact.
#[derive(Debug, Clone, PartialEq)]
pub struct ApolloContact {
    pub id: String,
    pub email: String,
    pub fields: Map<String, Value>,
    pub memberships: Vec<ApolloMembership>,
}

#[derive(Debug)]
struct Inner {
    config: ApolloConfig,
    contacts: Mutex<Vec<ApolloContact>>,
    minute: FixedWindow,
    hour: FixedWindow,
    day: FixedWindow,
    faults: Faults,
    requests: RequestLog,
}

#[derive(Debug, Clone)]
pub struct ApolloState {
    inner: Arc<Inner>,
}

impl ApolloState {
    pub fn new(config: ApolloConfig) -> Self {
        let minute = FixedWindow::new(config.per_minute.max(1), config.minute);
        let hour = FixedWindow::new(config.per_hour.max(1), Duration::from_secs(3600));
        let day = FixedWindow::new(config.per_day.max(1), Duration::from_secs(86_400));
        Self {
            inner: Arc::new(Inner {
                config,
                contacts: Mutex::new(Vec::new()),
                minute,
                hour,
                day,
                faults: Faults::default(),
                requests: RequestLog::default(),
            }),
        }
    }

    fn contacts_mut(&self) -> MutexGuard<'_, Vec<ApolloContact>> {
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

    /// Every contact of the team.
    pub fn contacts(&self) -> Vec<ApolloContact> {
        self.contacts_mut().clone()
    }

    /// The emails active (or paused) in one sequence.
    pub fn sequence_emails(&self, sequence: &str) -> Vec<String> {
        self.contacts_mut()
            .iter()
            .filter(|c| {
                c.memberships
                    .iter()
                    .any(|m| m.sequence == sequence && live(m))
            })
            .map(|c| c.email.clone())
            .collect()
    }

    /// How many memberships (of any state) a sequence has had.
    pub fn memberships(&self, sequence: &str) -> usize {
        self.contacts_mut()
            .iter()
            .flat_map(|c| &c.memberships)
            .filter(|m| m.sequence == sequence)
            .count()
    }

    /// Saves a contact active in `sequence` (as if added in the app).
    pub fn seed(&self, sequence: &str, email: &str) {
        let mut contacts = self.contacts_mut();
        let id = contact_id(contacts.len());
        let m = membership(&id, sequence);
        contacts.push(ApolloContact {
            id,
            email: email.to_lowercase(),
            fields: Map::new(),
            memberships: vec![m],
        });
    }

    /// Marks a contact's membership of `sequence` finished (as if the
    /// sequence ran out).
    pub fn finish(&self, sequence: &str, email: &str) {
        for c in self.contacts_mut().iter_mut().filter(|c| c.email == email) {
            for m in c.memberships.iter_mut().filter(|m| m.sequence == sequence) {
                m.status = "finished".into();
            }
        }
    }

    pub fn credentials_banner(&self, base_url: &str) -> String {
        let c = &self.inner.config;
        let mut out = format!("fake Apollo listening on {base_url}/api/v1\n");
        out.push_str(&format!("  APOLLO_API_KEY={} (master key)\n", c.api_key));
        for s in &c.sequences {
            out.push_str(&format!("  sequence {} ({})\n", s.id, s.name));
        }
        for a in &c.email_accounts {
            out.push_str(&format!("  email account {a}\n"));
        }
        out
    }
}

fn live(m: &ApolloMembership) -> bool {
    matches!(m.status.as_str(), "active" | "paused")
}

fn contact_id(n: usize) -> String {
    format!("66e34b81{:016x}", n + 1)
}

fn membership(contact: &str, sequence: &str) -> ApolloMembership {
    ApolloMembership {
        id: format!("{}{}", &sequence[..8.min(sequence.len())], &contact[8..]),
        sequence: sequence.to_string(),
        status: "active".into(),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({"error": message}))
}

fn ok_json(v: Value) -> Response {
    json_response(StatusCode::OK, &v)
}

fn rate_headers(inner: &Inner) -> Vec<(&'static str, String)> {
    let left = |w: &FixedWindow| w.limit().saturating_sub(w.used()).to_string();
    vec![
        ("x-rate-limit-minute", inner.minute.limit().to_string()),
        ("x-rate-limit-hourly", inner.hour.limit().to_string()),
        ("x-rate-limit-daily", inner.day.limit().to_string()),
        ("x-minute-usage", inner.minute.used().to_string()),
        ("x-hourly-usage", inner.hour.used().to_string()),
        ("x-daily-usage", inner.day.used().to_string()),
        ("x-minute-requests-left", left(&inner.minute)),
        ("x-hourly-requests-left", left(&inner.hour)),
        ("x-daily-requests-left", left(&inner.day)),
    ]
}

/// The three windows: every one must have room before one request counts.
fn take(inner: &Inner, path: &str) -> Result<(), Response> {
    let windows = [
        (&inner.minute, "minute"),
        (&inner.hour, "hour"),
        (&inner.day, "day"),
    ];
    for (w, name) in windows {
        if w.fits(1).is_err() {
            let message = format!(
                "The maximum number of api calls allowed for {} is {} times per {name}. \
                 Please upgrade your plan.",
                path.trim_start_matches('/'),
                w.limit()
            );
            return Err(too_many_requests(
                &json!({"message": message}),
                None,
                &rate_headers(inner),
            ));
        }
    }
    for (w, _) in windows {
        let _ = w.take(1);
    }
    Ok(())
}

async fn observe(State(state): State<ApolloState>, req: Request, next: Next) -> Response {
    let inner = &state.inner;
    guard(&inner.faults, &inner.requests, req, next, |req| {
        let key = req
            .headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let path = req.uri().path().to_string();
        let c = &inner.config;
        match key {
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                "Invalid access credentials.",
            )),
            Some(k) if k == c.plain_key && path.starts_with("/api/v1/emailer_campaigns") => {
                Err(error(
                    StatusCode::FORBIDDEN,
                    "This endpoint requires a master API key.",
                ))
            }
            Some(k) if k != c.api_key && k != c.plain_key => Err(error(
                StatusCode::UNAUTHORIZED,
                "Invalid access credentials.",
            )),
            Some(_) => {
                take(inner, &path)?;
                Ok(rate_headers(inner))
            }
        }
    })
    .await
}

fn body_object(body: &str) -> Result<Map<String, Value>, Response> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the body must be a JSON object",
        )),
    }
}

fn contact_json(c: &ApolloContact) -> Value {
    let mut v = c.fields.clone();
    v.insert("id".into(), json!(c.id));
    v.insert("email".into(), json!(c.email));
    v.insert(
        "contact_campaign_statuses".into(),
        Value::Array(
            c.memberships
                .iter()
                .map(|m| {
                    json!({"id": m.id, "emailer_campaign_id": m.sequence, "status": m.status,
                        "send_email_from_email_account_id": null})
                })
                .collect(),
        ),
    );
    Value::Object(v)
}

fn page_of(body: &Map<String, Value>) -> (usize, usize) {
    let n = |k: &str, d: u64| body.get(k).and_then(Value::as_u64).unwrap_or(d) as usize;
    (n("page", 1).max(1), n("per_page", 25).clamp(1, 100))
}

async fn auth_health() -> Response {
    ok_json(json!({"healthy": true, "is_logged_in": true}))
}

async fn search_contacts(State(state): State<ApolloState>, body: String) -> Response {
    let body = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let q = body
        .get("q_keywords")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    let (page, per_page) = page_of(&body);
    let contacts = state.contacts_mut();
    let hits: Vec<Value> = contacts
        .iter()
        .filter(|c| {
            q.is_empty()
                || c.email == q
                || c.fields.values().any(|v| {
                    v.as_str()
                        .is_some_and(|s| s.to_lowercase().contains(&q) && !q.contains('@'))
                })
        })
        .map(contact_json)
        .collect();
    let total = hits.len();
    let shown: Vec<Value> = hits
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    ok_json(json!({
        "contacts": shown,
        "breadcrumbs": [],
        "pagination": {"page": page, "per_page": per_page, "total_entries": total,
            "total_pages": total.div_ceil(per_page)},
    }))
}

const CONTACT_FIELDS: [&str; 10] = [
    "first_name",
    "last_name",
    "email",
    "organization_name",
    "title",
    "account_id",
    "website_url",
    "direct_phone",
    "label_names",
    "present_raw_address",
];

async fn create_contact(State(state): State<ApolloState>, body: String) -> Response {
    let mut body = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let dedupe = body
        .remove("run_dedupe")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if let Some(k) = body.keys().find(|k| !CONTACT_FIELDS.contains(&k.as_str())) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("unknown parameter: {k}"),
        );
    }
    let email = body
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    if !email.is_empty() && !crate::common::plausible_email(&email) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "email is invalid");
    }
    let mut contacts = state.contacts_mut();
    if dedupe
        && !email.is_empty()
        && let Some(c) = contacts.iter_mut().find(|c| c.email == email)
    {
        for (k, v) in body {
            c.fields.insert(k, v);
        }
        return ok_json(json!({"contact": contact_json(c)}));
    }
    let id = contact_id(contacts.len());
    body.remove("email");
    let c = ApolloContact {
        id,
        email,
        fields: body,
        memberships: Vec::new(),
    };
    let answer = json!({"contact": contact_json(&c)});
    contacts.push(c);
    ok_json(answer)
}

async fn search_sequences(State(state): State<ApolloState>, body: String) -> Response {
    let body = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let q = body
        .get("q_name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_lowercase();
    let (page, per_page) = page_of(&body);
    let all: Vec<Value> = state
        .inner
        .config
        .sequences
        .iter()
        .filter(|s| s.name.to_lowercase().contains(&q))
        .map(|s| json!({"id": s.id, "name": s.name, "active": true}))
        .collect();
    let total = all.len();
    let shown: Vec<Value> = all
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    ok_json(json!({
        "emailer_campaigns": shown,
        "pagination": {"page": page, "per_page": per_page, "total_entries": total,
            "total_pages": total.div_ceil(per_page)},
    }))
}

fn string_list(body: &Map<String, Value>, key: &str) -> Option<Vec<String>> {
    let v = body.get(key).or_else(|| body.get(&format!("{key}[]")))?;
    v.as_array()?
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect()
}

async fn add_contact_ids(
    State(state): State<ApolloState>,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let c = &state.inner.config;
    let Some(sequence) = c.sequences.iter().find(|s| s.id == id).cloned() else {
        return error(StatusCode::NOT_FOUND, "Sequence not found");
    };
    let body = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.get("emailer_campaign_id").and_then(Value::as_str) != Some(id.as_str()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "emailer_campaign_id must be the sequence id of the path",
        );
    }
    let account = body
        .get("send_email_from_email_account_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !c.email_accounts.iter().any(|a| a == account) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "send_email_from_email_account_id is not an email account of this team",
        );
    }
    let Some(ids) = string_list(&body, "contact_ids").filter(|l| !l.is_empty()) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "contact_ids[] or label_names[] must be provided",
        );
    };
    let flag = |k: &str| body.get(k).and_then(Value::as_bool).unwrap_or(false);
    let active_elsewhere_ok = flag("sequence_active_in_other_campaigns");
    let mut contacts = state.contacts_mut();
    if let Some(unknown) = ids.iter().find(|i| !contacts.iter().any(|c| &c.id == *i)) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("contact {unknown} does not exist"),
        );
    }
    let mut skipped = Map::new();
    let mut added = Vec::new();
    for cid in &ids {
        let Some(contact) = contacts.iter_mut().find(|c| &c.id == cid) else {
            continue;
        };
        if contact.email.is_empty() {
            skipped.insert(cid.clone(), json!("contacts_without_email"));
            continue;
        }
        if c.unsubscribed
            .iter()
            .any(|u| u.eq_ignore_ascii_case(&contact.email))
        {
            skipped.insert(cid.clone(), json!("contacts_unsubscribed"));
            continue;
        }
        if contact
            .memberships
            .iter()
            .any(|m| m.sequence == sequence.id && live(m))
        {
            added.push(contact_json(contact));
            continue;
        }
        if !active_elsewhere_ok && contact.memberships.iter().any(live) {
            skipped.insert(cid.clone(), json!("contacts_active_in_other_campaigns"));
            continue;
        }
        contact.memberships.retain(|m| m.sequence != sequence.id);
        let m = membership(&contact.id, &sequence.id);
        contact.memberships.push(m);
        added.push(contact_json(contact));
    }
    ok_json(json!({
        "contacts": added,
        "emailer_campaign": {"id": sequence.id, "name": sequence.name, "active": true},
        "skipped_contact_ids": skipped,
    }))
}

async fn remove_or_stop(State(state): State<ApolloState>, body: String) -> Response {
    let body = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mode = body.get("mode").and_then(Value::as_str).unwrap_or_default();
    let status = match mode {
        "remove" => "removed",
        "mark_as_finished" => "finished",
        "stop" => "paused",
        _ => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "mode must be one of remove, mark_as_finished, stop",
            );
        }
    };
    let (Some(sequences), Some(ids)) = (
        string_list(&body, "emailer_campaign_ids").filter(|l| !l.is_empty()),
        string_list(&body, "contact_ids").filter(|l| !l.is_empty()),
    ) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "emailer_campaign_ids[] and contact_ids[] are required",
        );
    };
    let known = &state.inner.config.sequences;
    if let Some(s) = sequences
        .iter()
        .find(|s| !known.iter().any(|k| &k.id == *s))
    {
        return error(StatusCode::NOT_FOUND, &format!("Sequence {s} not found"));
    }
    let mut contacts = state.contacts_mut();
    let mut changed = Vec::new();
    for c in contacts.iter_mut().filter(|c| ids.contains(&c.id)) {
        for m in c
            .memberships
            .iter_mut()
            .filter(|m| sequences.contains(&m.sequence))
        {
            m.status = status.into();
        }
        changed.push(contact_json(c));
    }
    ok_json(json!({"contacts": changed}))
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not found")
}

pub fn router(state: ApolloState) -> Router {
    Router::new()
        .route("/api/v1/auth/health", get(auth_health))
        .route("/api/v1/contacts", post(create_contact))
        .route("/api/v1/contacts/search", post(search_contacts))
        .route("/api/v1/emailer_campaigns/search", post(search_sequences))
        .route(
            "/api/v1/emailer_campaigns/remove_or_stop_contact_ids",
            post(remove_or_stop),
        )
        .route(
            "/api/v1/emailer_campaigns/{id}/add_contact_ids",
            post(add_contact_ids),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

crate::fake_handle!(FakeApollo, ApolloState, ApolloConfig, router);

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    async fn call(base: &str, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = client()
            .post(format!("{base}/api/v1{path}"))
            .header("x-api-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn creates_without_dedupe_unless_asked_and_sequences_by_policy() {
        let fake = FakeApollo::start(ApolloConfig::default()).await.unwrap();
        let base = fake.base_url();
        let key = ApolloConfig::DEFAULT_API_KEY;
        let (s, _) = call(&base, "nope", "/contacts", json!({"email": "a@x.io"})).await;
        assert_eq!(s, 401);
        for _ in 0..2 {
            let (s, _) = call(&base, key, "/contacts", json!({"email": "a@x.io"})).await;
            assert_eq!(s, 200);
        }
        assert_eq!(fake.contacts().len(), 2, "Apollo does not deduplicate");
        let (_, r) = call(
            &base,
            key,
            "/contacts",
            json!({"email": "A@x.io", "run_dedupe": true, "title": "CTO"}),
        )
        .await;
        assert_eq!(r["contact"]["title"], "CTO");
        assert_eq!(fake.contacts().len(), 2);
        let (_, r) = call(
            &base,
            key,
            "/contacts/search",
            json!({"q_keywords": "a@x.io"}),
        )
        .await;
        assert_eq!(r["pagination"]["total_entries"], 2);

        fake.seed(ApolloConfig::OTHER_SEQUENCE, "busy@example.com");
        let busy = fake.contacts()[2].id.clone();
        let first = fake.contacts()[0].id.clone();
        let path = format!(
            "/emailer_campaigns/{}/add_contact_ids",
            ApolloConfig::DEFAULT_SEQUENCE
        );
        let add = |ids: Vec<String>, account: &str| {
            json!({"emailer_campaign_id": ApolloConfig::DEFAULT_SEQUENCE, "contact_ids": ids,
                "send_email_from_email_account_id": account})
        };
        let (s, _) = call(
            &base,
            ApolloConfig::PLAIN_API_KEY,
            &path,
            add(vec![first.clone()], ApolloConfig::DEFAULT_EMAIL_ACCOUNT),
        )
        .await;
        assert_eq!(s, 403);
        let (s, _) = call(&base, key, &path, add(vec![first.clone()], "nope")).await;
        assert_eq!(s, 422);
        let (s, r) = call(
            &base,
            key,
            &path,
            add(
                vec![first.clone(), busy.clone()],
                ApolloConfig::DEFAULT_EMAIL_ACCOUNT,
            ),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(
            r["skipped_contact_ids"][&busy],
            "contacts_active_in_other_campaigns"
        );
        assert_eq!(
            fake.sequence_emails(ApolloConfig::DEFAULT_SEQUENCE),
            ["a@x.io"]
        );
        let (s, _) = call(
            &base,
            key,
            "/emailer_campaigns/remove_or_stop_contact_ids",
            json!({"emailer_campaign_ids": [ApolloConfig::DEFAULT_SEQUENCE], "contact_ids": [first], "mode": "remove"}),
        )
        .await;
        assert_eq!(s, 200);
        assert!(
            fake.sequence_emails(ApolloConfig::DEFAULT_SEQUENCE)
                .is_empty()
        );
    }

    #[tokio::test]
    async fn the_minute_window_answers_429_with_the_rate_headers() {
        let fake = FakeApollo::start(ApolloConfig {
            per_minute: 2,
            ..Default::default()
        })
        .await
        .unwrap();
        let mut last = None;
        for _ in 0..3 {
            last = Some(
                client()
                    .get(format!("{}/api/v1/auth/health", fake.base_url()))
                    .header("x-api-key", ApolloConfig::DEFAULT_API_KEY)
                    .send()
                    .await
                    .unwrap(),
            );
        }
        let r = last.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["x-minute-requests-left"], "0");
        assert_eq!(r.headers()["x-rate-limit-minute"], "2");
        let body: Value = r.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains("per minute"));
    }
}
