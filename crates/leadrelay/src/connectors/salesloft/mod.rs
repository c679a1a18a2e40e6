//! `salesloft`: puts people on a Salesloft cadence under the shared
//! enrollment model ([`super::enroll`], flow in [`super::enroll::person`]).
//!
//! Settings:
//! - `client_id_env`, `client_secret_env`, `refresh_token_env` (defaults
//!   `SALESLOFT_CLIENT_ID`, `SALESLOFT_CLIENT_SECRET`,
//!   `SALESLOFT_REFRESH_TOKEN`): the OAuth app and the grant (see
//!   [`auth`]: the rotated refresh token is kept in the store).
//! - `cadence_id` (a number, required); `user_id` (optional number: the
//!   user who owns the memberships; default the authorizing user).
//! - `[destinations.NAME.mapping.person]`: the person's attributes
//!   (defaults in `defaults.toml`; `email_address` required); other names
//!   go into `custom_fields`.
//! - `[destinations.NAME.enrollment]`: `already_enrolled` (`skip`, `queue`
//!   or `move`), `add_limit`, `queue_recheck`, `exit_on`.
//! - `base_url` (default `https://api.salesloft.com`), `token_url` (default
//!   `https://accounts.salesloft.com/oauth/token`), `allow_private_networks`.
//!
//! Find-or-create: `GET /v2/people?email_addresses[]=` first; a create
//! answered 422 "has already been taken" (a retry after a lost answer, a
//! race) is read as found and looked up again. The person's cadence
//! memberships (`currently_on_cadence=true`) tell whether they are on this
//! cadence already (done) or on another (the `already_enrolled` policy;
//! `move` deletes the other membership). A 422 "already on this cadence"
//! is success; "do not contact" ends `skipped`.
//!
//! Rate limit: Salesloft charges a cost budget of 600 per minute per team
//! (cost 1 per request here): the default rate limit is `"600/1m"`
//! requests; lower it when other integrations share the team's budget. A
//! 429 throttles the destination for `Retry-After` (60 s without one).
//!
//! Privacy erase deletes the person (`DELETE /v2/people/{id}`; 404 is
//! gone already).

pub mod auth;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::crm;
use super::enroll::person::{self, Membership, Person, PersonTool};
use super::enroll::{self, Verdict};
use super::http::{self as shared, HttpResponse};
use super::{
    AttemptReport, BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob,
    ErrorClass, JobResult, Outcome,
};
use crate::config::{Problem, Rate, parse_settings};
use crate::mapping::{self, Mapping};
use crate::store::Store;

/// The object a person's id is kept under: `salesloft_person:{cadence id}`.
pub const PERSON_OBJECT_PREFIX: &str = "salesloft_person:";
pub const DEFAULT_MAPPING: &str = include_str!("defaults.toml");
const OBJECTS: [&str; 1] = ["person"];
const DEFAULT_BASE_URL: &str = "https://api.salesloft.com";
const DEFAULT_TOKEN_URL: &str = "https://accounts.salesloft.com/oauth/token";
/// Salesloft's own person attributes; other mapped names are custom fields.
const PERSON_FIELDS: [&str; 11] = [
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
];

fn client_id_env() -> String {
    "SALESLOFT_CLIENT_ID".into()
}
fn client_secret_env() -> String {
    "SALESLOFT_CLIENT_SECRET".into()
}
fn refresh_token_env() -> String {
    "SALESLOFT_REFRESH_TOKEN".into()
}

#[derive(Debug, Deserialize)]
struct Settings {
    #[serde(default = "client_id_env")]
    client_id_env: String,
    #[serde(default = "client_secret_env")]
    client_secret_env: String,
    #[serde(default = "refresh_token_env")]
    refresh_token_env: String,
    cadence_id: u64,
    #[serde(default)]
    user_id: Option<u64>,
    #[serde(default)]
    mapping: toml::Table,
    #[serde(default)]
    enrollment: enroll::Settings,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default)]
    allow_private_networks: bool,
}

pub fn kind() -> ConnectorKind {
    ConnectorKind {
        name: "salesloft",
        summary: "Salesloft: find or create the person, put them on a cadence, once",
        defaults: Defaults {
            rate_limit: Some(Rate {
                count: 600,
                period: Duration::from_secs(60),
            }),
            concurrency: 4,
            batch_size: 1,
            max_batch_size: 1,
        },
        personal_data: true,
        build,
    }
}

struct Salesloft {
    client: reqwest::Client,
    base: String,
    auth: auth::OAuth,
    cadence_id: u64,
    cadence: String,
    user_id: Option<u64>,
    mapping: Mapping,
    policy: enroll::Policy,
    allow_private: bool,
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let s: Settings = parse_settings(ctx.settings)?;
    let mut problems = Vec::new();
    let mut secret =
        |setting: &str, var: &str| ctx.secret(setting, var).map_err(|p| problems.push(p)).ok();
    let client_id = secret("client_id_env", &s.client_id_env);
    let client_secret = secret("client_secret_env", &s.client_secret_env);
    let refresh = secret("refresh_token_env", &s.refresh_token_env);
    if s.cadence_id == 0 {
        problems.push(Problem::error(
            "cadence_id",
            "a Salesloft cadence id (a positive number)",
        ));
    }
    if s.user_id == Some(0) {
        problems.push(Problem::error(
            "user_id",
            "a Salesloft user id (a positive number)",
        ));
    }
    let base = crm::base_url(s.base_url.as_deref(), DEFAULT_BASE_URL)
        .map_err(|p| problems.push(p))
        .ok();
    let token_url = match s.token_url.as_deref() {
        None => Some(DEFAULT_TOKEN_URL.to_string()),
        Some(raw) => crm::base_url(Some(raw), DEFAULT_TOKEN_URL)
            .map_err(|mut p| {
                p.path = "token_url".into();
                problems.push(p)
            })
            .ok(),
    };
    let mapping = Mapping::compile(DEFAULT_MAPPING, Some(&s.mapping), &OBJECTS)
        .map_err(|ps| problems.extend(ps))
        .ok();
    let client = shared::client(ctx.timeout, s.allow_private_networks)
        .map_err(|m| problems.push(Problem::error("", m)))
        .ok();
    let policy = enroll::Policy::new("salesloft", &s.enrollment, true)
        .map(|p| p.in_sequence(&s.cadence_id.to_string()))
        .map_err(|p| problems.push(p))
        .ok();
    let (
        Some(client_id),
        Some(client_secret),
        Some(refresh),
        Some(base),
        Some(token_url),
        Some(mapping),
        Some(client),
        Some(policy),
        true,
    ) = (
        client_id,
        client_secret,
        refresh,
        base,
        token_url,
        mapping,
        client,
        policy,
        problems.is_empty(),
    )
    else {
        return Err(problems);
    };
    let auth = auth::OAuth::new(
        client.clone(),
        token_url,
        client_id,
        client_secret,
        refresh,
        ctx.destination,
        s.allow_private_networks,
    );
    Ok(Arc::new(Salesloft {
        client,
        base,
        auth,
        cadence_id: s.cadence_id,
        cadence: s.cadence_id.to_string(),
        user_id: s.user_id,
        mapping,
        policy,
        allow_private: s.allow_private_networks,
    }))
}

/// Whether a 401 says the access token is no good (expired, revoked):
/// worth one renewal.
fn invalid_token(resp: &HttpResponse) -> bool {
    let header = resp
        .headers
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    resp.status == 401 && (header.contains("invalid_token") || resp.body.contains("invalid_token"))
}

/// Salesloft's statuses: 429 for `Retry-After` (else a minute: the budget
/// is per minute), 404 permanent, 422 permanent with Salesloft's errors,
/// otherwise the shared classification.
fn classify(resp: &HttpResponse) -> Outcome {
    let excerpt = || crate::redact::excerpt(&resp.body, 300);
    match resp.status {
        429 => Outcome::Throttled {
            message: format!("Salesloft: HTTP 429: {}", excerpt()),
            retry_after: shared::parse_retry_after(&resp.headers).or(Some(Duration::from_secs(60))),
        },
        404 => Outcome::permanent(
            ErrorClass::Http4xx,
            format!("Salesloft: not found ({})", excerpt()),
        ),
        422 => Outcome::permanent(
            ErrorClass::Http4xx,
            format!("Salesloft refused the request: {}", excerpt()),
        ),
        _ => shared::classify(resp),
    }
}

/// The texts of a 422's `errors` object, `field message` each.
fn errors_text(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let Some(errors) = v["errors"].as_object() else {
        return body.to_string();
    };
    errors
        .iter()
        .flat_map(|(field, msgs)| {
            let msgs: Vec<String> = match msgs {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|m| m.as_str().map(String::from))
                    .collect(),
                Value::String(s) => vec![s.clone()],
                _ => Vec::new(),
            };
            msgs.into_iter().map(move |m| format!("{field} {m}"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The verdict on "create a cadence membership".
fn add_verdict(resp: &HttpResponse) -> Verdict {
    match resp.status {
        200 | 201 => Verdict::Enrolled {
            remote_ids: Vec::new(),
        },
        422 => {
            let text = errors_text(&resp.body);
            let lower = text.to_lowercase();
            if lower.contains("already on") {
                Verdict::AlreadyMember {
                    remote_ids: Vec::new(),
                }
            } else if lower.contains("do not contact") || lower.contains("opted out") {
                Verdict::VendorSuppressed {
                    message: format!("Salesloft: {text}"),
                }
            } else {
                Verdict::Failed(Outcome::permanent(
                    ErrorClass::Http4xx,
                    format!("Salesloft refused the cadence membership: {text}"),
                ))
            }
        }
        _ => Verdict::Failed(classify(resp)),
    }
}

fn numeric_id(v: &Value) -> Option<String> {
    v.as_u64().map(|n| n.to_string())
}

/// A person's fields as Salesloft takes them: its attributes at the top,
/// everything else in `custom_fields` (text, numbers, booleans).
fn shape(fields: Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut person = Map::new();
    let mut custom = Map::new();
    for (k, v) in fields {
        if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            return Err(format!(
                "mapping person.{k}: Salesloft attributes must be text, a number or a boolean"
            ));
        }
        if PERSON_FIELDS.contains(&k.as_str()) {
            person.insert(k, v);
        } else {
            custom.insert(k, v);
        }
    }
    if !custom.is_empty() {
        person.insert("custom_fields".into(), Value::Object(custom));
    }
    Ok(person)
}

impl Salesloft {
    /// One API request with the current access token; a 401
    /// `invalid_token` renews the token once and sends again.
    async fn call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&Value>,
        report: &mut AttemptReport,
    ) -> Result<HttpResponse, Outcome> {
        let url = format!("{}{path_and_query}", self.base);
        let mut token = self.auth.token().await?;
        for attempt in 0..2 {
            let mut req = self
                .client
                .request(method.clone(), &url)
                .bearer_auth(&token);
            if let Some(b) = body {
                req = req.json(b);
            }
            let (result, r) =
                enroll::send(&self.client, req.build(), &url, self.allow_private).await;
            *report = r;
            let resp = result?;
            if attempt == 0 && invalid_token(&resp) {
                token = self.auth.renew(&token).await?;
                continue;
            }
            if resp.status == 401 {
                return Err(Outcome::CredentialsRejected {
                    message: format!(
                        "Salesloft refused a fresh access token: {}",
                        crate::redact::excerpt(&resp.body, 200)
                    ),
                });
            }
            return Ok(resp);
        }
        Err(Outcome::retry(ErrorClass::Auth, "Salesloft: no answer"))
    }

    /// A request whose only good answer is 2xx (404 `None`).
    async fn ok(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&Value>,
        report: &mut AttemptReport,
    ) -> Result<Option<HttpResponse>, Outcome> {
        let result = self.call(method, path_and_query, body, report).await;
        enroll::answered(result, classify)
    }

    async fn memberships(
        &self,
        person: &str,
        report: &mut AttemptReport,
    ) -> Result<Vec<Membership>, Outcome> {
        let q = format!(
            "/v2/cadence_memberships?person_id={person}&currently_on_cadence=true&per_page=100"
        );
        let Some(resp) = self.ok(reqwest::Method::GET, &q, None, report).await? else {
            return Ok(Vec::new());
        };
        let v: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
        Ok(v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                Some(Membership {
                    id: numeric_id(&m["id"])?,
                    sequence: numeric_id(&m["cadence"]["id"])?,
                    live: m["currently_on_cadence"].as_bool().unwrap_or(false),
                })
            })
            .collect())
    }

    async fn erase(&self, targets: Result<Vec<crm::EraseTarget>, String>) -> JobResult {
        crm::erase_each("salesloft", targets, |t| async move {
            if t.id.is_empty() || !t.id.bytes().all(|b| b.is_ascii_digit()) {
                let m = format!("{:?} in {:?} is not a Salesloft person id", t.id, t.object);
                return (crm::Deleted::Malformed(m), Default::default());
            }
            let mut report = AttemptReport::default();
            let path = format!("/v2/people/{}", t.id);
            let deleted = match self
                .ok(reqwest::Method::DELETE, &path, None, &mut report)
                .await
            {
                Ok(_) => crm::Deleted::Done,
                Err(outcome) => crm::Deleted::Refused {
                    status: report.status,
                    outcome,
                },
            };
            (deleted, report)
        })
        .await
    }
}

#[async_trait]
impl PersonTool for Salesloft {
    fn tool(&self) -> &'static str {
        "salesloft"
    }

    fn sequence(&self) -> &str {
        &self.cadence
    }

    fn object(&self) -> String {
        format!("{PERSON_OBJECT_PREFIX}{}", self.cadence_id)
    }

    fn fields(&self, job: &DeliveryJob) -> Result<Map<String, Value>, String> {
        let fields = self
            .mapping
            .apply("person", &mapping::context(job))
            .map_err(|e| e.to_string())?;
        shape(fields)
    }

    async fn find(&self, email: &str, report: &mut AttemptReport) -> Result<Vec<Person>, Outcome> {
        let q = format!(
            "/v2/people?email_addresses[]={}&per_page=100",
            shared::path_segment(email)
        );
        let Some(resp) = self.ok(reqwest::Method::GET, &q, None, report).await? else {
            return Ok(Vec::new());
        };
        let v: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
        let ids: Vec<String> = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["email_address"]
                    .as_str()
                    .is_some_and(|e| e.trim().eq_ignore_ascii_case(email))
            })
            .filter_map(|p| numeric_id(&p["id"]))
            .collect();
        let mut people = Vec::with_capacity(ids.len());
        for id in ids {
            let memberships = self.memberships(&id, report).await?;
            people.push(Person { id, memberships });
        }
        Ok(people)
    }

    async fn create(
        &self,
        email: &str,
        mut fields: Map<String, Value>,
        report: &mut AttemptReport,
    ) -> Result<Person, Outcome> {
        fields.insert("email_address".into(), json!(email));
        let resp = self
            .call(
                reqwest::Method::POST,
                "/v2/people",
                Some(&Value::Object(fields)),
                report,
            )
            .await?;
        if resp.status == 422 && errors_text(&resp.body).contains("already been taken") {
            // Made by a lost answer or a race: find it.
            let mut found = self.find(email, report).await?;
            return found.pop().ok_or_else(|| {
                Outcome::retry(
                    ErrorClass::Vendor,
                    "Salesloft says the email address is taken but lists nobody with it",
                )
            });
        }
        match classify(&resp) {
            Outcome::Delivered { .. } => {}
            other => return Err(other),
        }
        let v: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
        let id = numeric_id(&v["data"]["id"]).ok_or_else(|| {
            Outcome::retry(
                ErrorClass::Vendor,
                "Salesloft answered the create without a person id",
            )
        })?;
        Ok(Person {
            id,
            memberships: Vec::new(),
        })
    }

    async fn add(&self, person: &Person, report: &mut AttemptReport) -> Result<Verdict, Outcome> {
        let mut q = format!(
            "/v2/cadence_memberships?person_id={}&cadence_id={}",
            person.id, self.cadence_id
        );
        if let Some(u) = self.user_id {
            q.push_str(&format!("&user_id={u}"));
        }
        let resp = self.call(reqwest::Method::POST, &q, None, report).await?;
        Ok(add_verdict(&resp))
    }

    async fn remove(
        &self,
        _person: &Person,
        memberships: &[Membership],
        report: &mut AttemptReport,
    ) -> Result<(), Outcome> {
        for m in memberships {
            if !m.id.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let path = format!("/v2/cadence_memberships/{}", m.id);
            self.ok(reqwest::Method::DELETE, &path, None, report)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Connector for Salesloft {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        person::deliver(self, &self.policy, jobs, |t| self.erase(t)).await
    }

    fn skip_reason(&self, job: &DeliveryJob) -> Option<String> {
        enroll::skip_reason(job)
    }

    fn enrollment(&self) -> Option<&enroll::Policy> {
        Some(&self.policy)
    }

    fn attach_store(&self, store: Arc<dyn Store>) {
        self.auth.attach_store(store);
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<Value, String>> {
        Some(self.fields(job).map(|person| {
            json!({
                "url": format!("{}/v2/cadence_memberships?cadence_id={}", self.base, self.cadence_id),
                "person": person,
            })
        }))
    }

    async fn check(&self) -> CheckReport {
        if !self.auth.has_store() {
            return CheckReport::failed(
                "not checked: a token refresh rotates Salesloft's refresh token, and only a \
                 command with the database keeps the new one (create the database with \
                 `leadrelay migrate` first)",
            );
        }
        let mut report = AttemptReport::default();
        if let Err(o) = self
            .ok(reqwest::Method::GET, "/v2/me", None, &mut report)
            .await
        {
            return CheckReport::failed(crm::outcome_text(&o));
        }
        let path = format!("/v2/cadences/{}", self.cadence_id);
        match self
            .ok(reqwest::Method::GET, &path, None, &mut report)
            .await
        {
            Ok(Some(_)) => CheckReport::ok(format!(
                "Salesloft accepted the OAuth grant; cadence {} exists",
                self.cadence_id
            )),
            Ok(None) => CheckReport::failed(format!(
                "Salesloft has no cadence {} for this team",
                self.cadence_id
            )),
            Err(o) => CheckReport::failed(crm::outcome_text(&o)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&'static str, &str)], body: &str) -> HttpResponse {
        HttpResponse::canned(status, headers, body)
    }

    #[test]
    fn membership_answers_are_read_as_verdicts() {
        let e = |m: &str| format!(r#"{{"errors": {{"person": ["{m}"]}}}}"#);
        assert!(matches!(
            add_verdict(&resp(200, &[], "{}")),
            Verdict::Enrolled { .. }
        ));
        assert!(matches!(
            add_verdict(&resp(422, &[], &e("is already on this cadence"))),
            Verdict::AlreadyMember { .. }
        ));
        assert!(matches!(
            add_verdict(&resp(422, &[], &e("is marked as do not contact"))),
            Verdict::VendorSuppressed { .. }
        ));
        match add_verdict(&resp(422, &[], &e("cadence is archived"))) {
            Verdict::Failed(Outcome::Permanent { message, .. }) => {
                assert!(message.contains("person cadence is archived"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            add_verdict(&resp(429, &[], "{}")),
            Verdict::Failed(Outcome::Throttled { retry_after: Some(d), .. }) if d == Duration::from_secs(60)
        ));
        let expired = resp(
            401,
            &[("www-authenticate", "Bearer error=\"invalid_token\"")],
            "",
        );
        assert!(invalid_token(&expired));
        assert!(!invalid_token(&resp(401, &[], "{\"error\": \"nope\"}")));
    }

    #[test]
    fn custom_fields_are_nested() {
        let m = json!({"email_address": "a@b.co", "first_name": "Ana", "plan": "pro"});
        let p = shape(m.as_object().unwrap().clone()).unwrap();
        assert_eq!(p["custom_fields"], json!({"plan": "pro"}));
        assert!(shape(json!({"tags": ["x"]}).as_object().unwrap().clone()).is_err());
    }

    #[test]
    fn settings_problems_name_their_keys() {
        let settings: toml::Table =
            toml::from_str("cadence_id = 0\ntoken_url = \"ftp://x\"").unwrap();
        let env = |k: &str| (k == "SALESLOFT_CLIENT_ID").then(|| "id".to_string());
        let ctx = BuildContext {
            destination: "seq",
            settings: &settings,
            env: &env,
            timeout: Duration::from_secs(5),
            public_url: "http://localhost",
        };
        let problems = match build(&ctx) {
            Err(p) => p,
            Ok(_) => panic!("settings with problems were accepted"),
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "client_secret_env",
            "refresh_token_env",
            "cadence_id",
            "token_url",
        ] {
            assert!(paths.contains(&expected), "{expected} missing in {paths:?}");
        }
        assert!(!paths.contains(&"client_id_env"), "{paths:?}");
    }
}
