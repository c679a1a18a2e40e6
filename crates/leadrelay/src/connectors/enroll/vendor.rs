//! Plumbing the sequence-tool connectors share, so each of them keeps only
//! what is its vendor's: how it authenticates, which paths it calls and
//! how it reads the answers.
//!
//! - [`build_common`]: the settings every sequence tool has (API key from
//!   an env var, base URL, field mapping, enrollment policy, private
//!   networks), checked together so `leadrelay check` names every problem.
//! - [`VendorHttp`]: one request with the tool's authentication and a JSON
//!   body, failures already classified; optionally one request at a time
//!   per API key in this process ([`VendorHttp::one_at_a_time`]).
//! - [`PerPerson`] and [`deliver_each`]: the delivery loop of a tool that
//!   takes one person per request (erase, exit or enroll per job).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::Policy;
use crate::config::Problem;
use crate::connectors::http::{self as shared, HttpResponse};
use crate::connectors::{AttemptReport, BuildContext, DeliveryJob, ErrorClass, JobResult, Outcome};
use crate::mapping::{self, Mapping};

/// How a tool authenticates its API key.
#[derive(Debug, Clone)]
pub enum Auth {
    /// HTTP Basic with the key as user name and an empty password.
    BasicKeyAsUser(String),
    /// HTTP Basic with an empty user name and the key as password.
    BasicKeyAsPassword(String),
    /// The key as a query parameter (`?api_key=…`), left out of the URL
    /// the attempt log shows.
    Query(&'static str, String),
    /// The key in a header (`X-Api-Key: …`).
    Header(&'static str, String),
}

/// One answer, or the classified reason there is none.
pub type Sent = (Result<HttpResponse, Outcome>, AttemptReport);

/// Requests to one tool's API.
#[derive(Clone)]
pub struct VendorHttp {
    pub client: reqwest::Client,
    /// Without a trailing slash.
    pub base: String,
    pub auth: Auth,
    pub allow_private: bool,
    /// Held for the whole of each request when the tool allows only one
    /// request at a time per key.
    serial: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// The process-wide lock of one (tool, API key): every destination and
/// worker that uses the same key waits for the same lock.
fn serial_lock(tool: &str, key: &str) -> Arc<tokio::sync::Mutex<()>> {
    use sha2::{Digest, Sha256};
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let id = format!("{tool}:{}", hex::encode(Sha256::digest(key.as_bytes())));
    LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(id)
        .or_default()
        .clone()
}

impl VendorHttp {
    /// Makes every request of this client (and of every other client of
    /// the same tool and key in this process) wait for the one before it.
    pub fn one_at_a_time(mut self, tool: &str) -> Self {
        let key = match &self.auth {
            Auth::BasicKeyAsUser(k)
            | Auth::BasicKeyAsPassword(k)
            | Auth::Query(_, k)
            | Auth::Header(_, k) => k.clone(),
        };
        self.serial = Some(serial_lock(tool, &key));
        self
    }

    /// `METHOD base+path?query` with the key and, when given, a JSON body.
    /// The attempt log shows the URL (the key is never in it).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Sent {
        let mut url = format!("{}{path}", self.base);
        if !query.is_empty() {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", shared::path_segment(v)))
                .collect();
            url = format!("{url}?{}", q.join("&"));
        }
        let mut req = match &self.auth {
            Auth::Query(name, key) => {
                let sep = if query.is_empty() { '?' } else { '&' };
                let with_key = format!("{url}{sep}{name}={}", shared::path_segment(key));
                self.client.request(method, with_key)
            }
            _ => self.client.request(method, &url),
        };
        req = match &self.auth {
            Auth::BasicKeyAsUser(key) => req.basic_auth(key, Some("")),
            Auth::BasicKeyAsPassword(key) => req.basic_auth("", Some(key)),
            Auth::Header(name, key) => req.header(*name, key),
            Auth::Query(..) => req,
        };
        if let Some(b) = body {
            req = req.json(b);
        }
        let _turn = match &self.serial {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        super::send(&self.client, req.build(), &url, self.allow_private).await
    }
}

/// What every sequence tool's settings have in common.
pub struct CommonSettings<'a> {
    pub tool: &'static str,
    pub api_key_env: &'a str,
    pub base_url: Option<&'a str>,
    pub default_base: &'a str,
    pub allow_private_networks: bool,
    pub mapping: &'a toml::Table,
    pub default_mapping: &'a str,
    pub objects: &'a [&'a str],
    pub enrollment: &'a super::Settings,
    /// Whether the tool can take a person out of another sequence.
    pub can_move: bool,
    pub auth: fn(String) -> Auth,
}

/// The built parts every sequence tool has.
pub struct Common {
    pub http: VendorHttp,
    pub mapping: Mapping,
    pub policy: Policy,
}

/// Checks the common settings together: every problem is reported at once.
pub fn build_common(ctx: &BuildContext<'_>, s: CommonSettings<'_>) -> Result<Common, Vec<Problem>> {
    let mut problems = Vec::new();
    let key = ctx
        .secret("api_key_env", s.api_key_env)
        .map_err(|p| problems.push(p))
        .ok();
    let base = crate::connectors::crm::base_url(s.base_url, s.default_base)
        .map_err(|p| problems.push(p))
        .ok();
    let mapping = Mapping::compile(s.default_mapping, Some(s.mapping), s.objects)
        .map_err(|ps| problems.extend(ps))
        .ok();
    let client = shared::client(ctx.timeout, s.allow_private_networks)
        .map_err(|m| problems.push(Problem::error("", m)))
        .ok();
    let policy = Policy::new(s.tool, s.enrollment, s.can_move)
        .map_err(|p| problems.push(p))
        .ok();
    match (key, base, mapping, client, policy, problems.is_empty()) {
        (Some(key), Some(base), Some(mapping), Some(client), Some(policy), true) => Ok(Common {
            http: VendorHttp {
                client,
                base,
                auth: (s.auth)(key),
                allow_private: s.allow_private_networks,
                serial: None,
            },
            mapping,
            policy,
        }),
        _ => Err(problems),
    }
}

/// The mapped fields of `object` for `job`, each text, a number or a
/// boolean (what sequence tools take as variables); anything else is a
/// mapping error naming the field.
pub fn scalar_fields(
    mapping: &Mapping,
    object: &str,
    job: &DeliveryJob,
) -> Result<Map<String, Value>, String> {
    let fields = mapping
        .apply(object, &mapping::context(job))
        .map_err(|e| e.to_string())?;
    if let Some((k, _)) = fields
        .iter()
        .find(|(_, v)| !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
    {
        return Err(format!(
            "mapping {object}.{k}: must be text, a number or a boolean"
        ));
    }
    Ok(fields)
}

/// A response body as JSON (`null` when it is not JSON).
pub fn json(resp: &HttpResponse) -> Value {
    serde_json::from_str(&resp.body).unwrap_or(Value::Null)
}

/// A failed job without an attempt on the network.
pub fn failed(outcome: Outcome) -> JobResult {
    JobResult {
        outcome,
        report: AttemptReport::default(),
    }
}

/// A call's answer when `classify` calls it a success or its status is
/// one of `fine` (e.g. 404 for "gone already"); otherwise the classified
/// failure with the attempt.
pub fn answered(
    sent: Sent,
    classify: fn(&HttpResponse) -> Outcome,
    fine: &[u16],
) -> Result<HttpResponse, Box<JobResult>> {
    let (result, report) = sent;
    match result {
        Err(outcome) => Err(Box::new(JobResult { outcome, report })),
        Ok(r) if fine.contains(&r.status) => Ok(r),
        Ok(r) => match classify(&r) {
            Outcome::Delivered { .. } => Ok(r),
            outcome => Err(Box::new(JobResult { outcome, report })),
        },
    }
}

/// What a privacy erase's delete call came to.
pub fn deleted(
    sent: Sent,
    classify: fn(&HttpResponse) -> Outcome,
) -> (crate::connectors::crm::Deleted, AttemptReport) {
    use crate::connectors::crm::Deleted;
    let (result, report) = sent;
    let deleted = match result {
        Err(outcome) => Deleted::Refused {
            status: None,
            outcome,
        },
        Ok(r) => match classify(&r) {
            Outcome::Delivered { .. } => Deleted::Done,
            outcome => Deleted::Refused {
                status: Some(r.status),
                outcome,
            },
        },
    };
    (deleted, report)
}

/// Only digits: an id that goes into a path or query as it is.
pub fn is_numeric_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
}

/// A tool that enrolls one person per request: every such tool is a
/// [`Connector`](crate::connectors::Connector) through the impl below.
#[async_trait]
pub trait PerPerson: Send + Sync {
    fn policy(&self) -> &Policy;
    /// What the enrollment request would carry (`leadrelay simulate`).
    fn preview(&self, job: &DeliveryJob) -> Result<Value, String>;
    /// `leadrelay check`: the key and the campaign, without lead data.
    async fn check(&self) -> crate::connectors::CheckReport;
    /// A privacy erase of the records leadrelay made.
    async fn erase(
        &self,
        targets: Result<Vec<crate::connectors::crm::EraseTarget>, String>,
    ) -> JobResult;
    /// `exit_sequences` for the person with `email`: idempotent.
    async fn exit(&self, job: &DeliveryJob, email: &str) -> JobResult;
    /// Find-or-create and enroll.
    async fn enroll(&self, job: &DeliveryJob) -> JobResult;
    /// The people in the sequence, for the refresh (tools that send no
    /// "sequence finished" webhook). Default: cannot list.
    async fn sequence_people(&self) -> Option<Result<Vec<super::Listed>, String>> {
        None
    }
}

#[async_trait]
impl<T: PerPerson> crate::connectors::Connector for T {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        deliver_each(self, jobs).await
    }

    fn skip_reason(&self, job: &DeliveryJob) -> Option<String> {
        super::skip_reason(job)
    }

    fn enrollment(&self) -> Option<&Policy> {
        Some(self.policy())
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<Value, String>> {
        Some(PerPerson::preview(self, job))
    }

    async fn check(&self) -> crate::connectors::CheckReport {
        PerPerson::check(self).await
    }

    async fn sequence_people(&self) -> Option<Result<Vec<super::Listed>, String>> {
        PerPerson::sequence_people(self).await
    }
}

/// One result per job, in order: erase, exit or enroll.
pub async fn deliver_each<T: PerPerson + ?Sized>(tool: &T, jobs: &[DeliveryJob]) -> Vec<JobResult> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        out.push(match crate::connectors::crm::erase_targets(job) {
            Some(targets) => tool.erase(targets).await,
            None if tool.policy().is_exit(job) => match super::job_email(job) {
                Some(email) => tool.exit(job, &email).await,
                None => failed(Outcome::permanent(
                    ErrorClass::Mapping,
                    "no email address to exit",
                )),
            },
            None => tool.enroll(job).await,
        });
    }
    out
}

/// The answer of `leadrelay check` from a `GET` that must answer 200.
pub async fn check_get(
    http: &VendorHttp,
    tool: &str,
    path: &str,
    what: &str,
) -> Result<(), String> {
    match http.call(reqwest::Method::GET, path, &[], None).await.0 {
        Ok(r) if r.status == 200 => Ok(()),
        Ok(r) if r.status == 401 || r.status == 403 => {
            Err(format!("{tool} rejected the API key (HTTP {})", r.status))
        }
        Ok(r) if r.status == 404 => Err(format!("{tool} has no {what} for this key")),
        Ok(r) => Err(format!(
            "{tool} answered HTTP {}: {}",
            r.status,
            crate::redact::excerpt(&r.body, 200)
        )),
        Err(o) => Err(crate::connectors::crm::outcome_text(&o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_lock_per_tool_and_key() {
        let a = serial_lock("woodpecker", "k1");
        let b = serial_lock("woodpecker", "k1");
        let c = serial_lock("woodpecker", "k2");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        let _held = a.lock().await;
        assert!(b.try_lock().is_err(), "the same key waits");
        assert!(c.try_lock().is_ok(), "another key does not");
    }
}
