//! Connectors: one folder per destination kind.
//!
//! A connector knows how to turn one delivery (or a batch) into the
//! destination's request(s), send them, and *classify* what came back:
//! delivered (with remote ids to keep), retry, throttled, or permanent.
//! *When* to retry is not its business: the shared scheduler in
//! [`crate::delivery`] decides that from the classification.

pub mod apollo;
pub mod columns;
pub mod crm;
pub mod csv;
pub mod email;
pub mod enroll;
pub mod file;
pub mod http;
pub mod hubspot;
pub mod lemlist;
pub mod mailshake;
pub mod marketing_cloud;
pub mod notify;
pub mod pace;
pub mod payload;
pub mod pipedrive;
pub mod replyio;
pub mod salesforce;
pub mod salesloft;
pub mod sheets;
pub mod slack;
pub mod smartlead;
pub mod sms;
pub mod webhook;
pub mod woodpecker;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadrelay_model::{Contact, Event};
use serde::Serialize;

use crate::config::{Problem, Rate};
use crate::store::{Delivery, RemoteId};

/// One delivery ready to send: the event with any replay overrides applied.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    pub delivery: Delivery,
    pub event: Event,
    /// The golden record, when the event identifies a person.
    pub contact: Option<Contact>,
    /// Ids this destination gave our records before (by object and key).
    pub remote_ids: Vec<RemoteId>,
    /// The person's assigned owner (golden record), as configured in
    /// `[[owners]]`: the owner of CRM tasks and the `owner` of
    /// notification templates.
    pub owner: Option<Arc<crate::pipeline::OwnerConfig>>,
}

/// The `[[owners]]` entry of `contact`'s assigned owner, if any.
pub fn owner_of(
    owners: &[Arc<crate::pipeline::OwnerConfig>],
    contact: Option<&leadrelay_model::Contact>,
) -> Option<Arc<crate::pipeline::OwnerConfig>> {
    let name = &contact?.lead.owner.as_ref()?.owner;
    owners.iter().find(|o| &o.name == name).cloned()
}

/// What kind of failure an attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Timeout,
    Connect,
    Http4xx,
    Http5xx,
    Throttled,
    Auth,
    /// The vendor answered 2xx but reported a failure in the body.
    Vendor,
    /// Our data could not be mapped onto the destination's shape.
    Mapping,
    /// Local I/O (file destinations).
    Io,
    /// The destination URL is not allowed (private network).
    Blocked,
    Consent,
    /// leadrelay itself failed on this delivery (a connector panicked).
    Internal,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect",
            ErrorClass::Http4xx => "http_4xx",
            ErrorClass::Http5xx => "http_5xx",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Auth => "auth",
            ErrorClass::Vendor => "vendor",
            ErrorClass::Mapping => "mapping",
            ErrorClass::Io => "io",
            ErrorClass::Blocked => "blocked",
            ErrorClass::Consent => "consent",
            ErrorClass::Internal => "internal",
        }
    }
}

/// Text that goes into one header (an email subject or display name, an
/// HTTP header value) from data a person or vendor typed: control
/// characters (CR and LF above all, which would start a new header) and
/// Unicode line separators become spaces, runs of them one space. Every
/// connector that puts such data in a header passes it through here.
pub fn header_text(s: &str) -> String {
    s.split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A connector's verdict on one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered {
        remote_ids: Vec<RemoteId>,
    },
    /// Transient: try again after backoff (at least `retry_after`).
    Retry {
        class: ErrorClass,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The destination asked us to slow down: pause the whole destination.
    Throttled {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Will never succeed as is: dead-letter.
    Permanent {
        class: ErrorClass,
        message: String,
    },
    /// 401 that a credential refresh did not cure.
    CredentialsRejected {
        message: String,
    },
    /// 410: the endpoint is gone; dead-letter and disable the destination.
    Gone {
        message: String,
    },
    /// Not now, and not a failure: the delivery waits in the destination's
    /// overflow queue until `until` (a sequence's add limit or capacity is
    /// reached, or the person is in another sequence under the `queue`
    /// policy). Never dead-lettered for its age.
    Deferred {
        until: DateTime<Utc>,
        reason: String,
    },
    /// Nothing to do for this delivery, decided after talking to the vendor
    /// (the person is already in another sequence under the `skip` policy,
    /// or the vendor lists them as unsubscribed).
    Skipped {
        reason: String,
    },
}

impl Outcome {
    pub fn retry(class: ErrorClass, message: impl Into<String>) -> Self {
        Outcome::Retry {
            class,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(class: ErrorClass, message: impl Into<String>) -> Self {
        Outcome::Permanent {
            class,
            message: message.into(),
        }
    }

    pub fn delivered() -> Self {
        Outcome::Delivered {
            remote_ids: Vec::new(),
        }
    }

    /// A failure the circuit breaker should count (the destination looks down).
    pub fn is_transient_failure(&self) -> bool {
        matches!(self, Outcome::Retry { .. })
    }
}

/// What was sent and what came back, for the attempt log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttemptReport {
    pub started_at: Option<DateTime<Utc>>,
    pub duration: Duration,
    pub method: Option<String>,
    /// Without secrets (no tokens, no secret URL paths).
    pub url: Option<String>,
    pub request_bytes: Option<u64>,
    pub request_sha256: Option<String>,
    pub status: Option<u16>,
    /// Truncated and redacted.
    pub response_excerpt: Option<String>,
    /// The request as sent (secrets replaced) and the response headers.
    pub exchange: Option<crate::store::Exchange>,
}

/// The result for one job of a batch.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub outcome: Outcome,
    pub report: AttemptReport,
}

/// The answer of `leadrelay check` for one destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub message: String,
}

impl CheckReport {
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
        }
    }
}

/// A destination kind's sending logic.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Sends `jobs` (at most the destination's batch size) and returns one
    /// result per job, in order.
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult>;

    /// Why this delivery is not for this destination at all (e.g. a lead
    /// confirmation for a form that does not enable it, an SMS to a person
    /// without a phone number): the delivery ends `skipped` with the reason,
    /// without an attempt on the network. `None` (the default): send it.
    fn skip_reason(&self, _job: &DeliveryJob) -> Option<String> {
        None
    }

    /// What this destination would send for `job`, computed without any
    /// network call (for `leadrelay simulate`): the mapped payload, or the
    /// mapping error naming the field. `None`: the connector has no payload
    /// to show before it talks to the vendor.
    fn preview(&self, _job: &DeliveryJob) -> Option<Result<serde_json::Value, String>> {
        None
    }

    /// Verifies credentials and reachability without sending any lead data.
    async fn check(&self) -> CheckReport {
        CheckReport::ok("nothing to verify for this connector")
    }

    /// The keys whose stored remote ids a job needs (fetched into
    /// [`DeliveryJob::remote_ids`] before `deliver`): by default the
    /// contact key; CRMs add e.g. `domain:acme.io` for companies and
    /// `event:ID` for records written once per event.
    fn lookup_keys(&self, job: &DeliveryJob) -> Vec<String> {
        vec![job.delivery.contact_key.clone()]
    }

    /// Remote ids learned since the last call, including those of
    /// deliveries that then failed (a person created before the note for
    /// them failed). The dispatcher stores them at once, so a retry reuses
    /// the record instead of creating it twice.
    fn learned_remote_ids(&self) -> Vec<RemoteId> {
        Vec::new()
    }

    /// Whether the cause of fixable dead letters is gone in the destination
    /// (the property exists now, the value is an allowed option now), read
    /// without sending lead data. `None`: cannot tell — they wait for the
    /// schedule or a configuration change.
    async fn cause_fixed(&self, _cause: &crate::store::FixableCause) -> Option<bool> {
        None
    }

    /// The enrollment policy of a sequence tool (None for everything else):
    /// the dispatcher then applies the shared enrollment gate (suppression
    /// list, add limit with its overflow queue) before `deliver`.
    fn enrollment(&self) -> Option<&enroll::Policy> {
        None
    }

    /// The people in the destination's sequence, read page by page from
    /// the tool (the refresh of tools that send no "sequence finished"
    /// webhook, see `delivery::refresh`). `None`: the connector cannot
    /// list them; `Err`: the tool's answer, for the warning.
    async fn sequence_people(&self) -> Option<Result<Vec<enroll::Listed>, String>> {
        None
    }

    /// The store, handed over once by the engine (and `leadrelay check`)
    /// to connectors that keep state of their own in it (Salesloft's
    /// rotated OAuth refresh token). Default: not needed.
    fn attach_store(&self, _store: Arc<dyn crate::store::Store>) {}
}

/// Per-connector defaults, from the vendors' documented limits.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub rate_limit: Option<Rate>,
    pub concurrency: usize,
    pub batch_size: usize,
    pub max_batch_size: usize,
}

/// What a connector needs to build itself.
pub struct BuildContext<'a> {
    pub destination: &'a str,
    pub settings: &'a toml::Table,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub timeout: Duration,
    /// The server's public URL, for links back to the dashboard.
    pub public_url: &'a str,
}

impl BuildContext<'_> {
    /// Reads a secret from the env var named by `setting` (e.g. `token_env`);
    /// a problem names the setting when it is unset or empty.
    pub fn secret(&self, setting: &str, var: &str) -> Result<String, Problem> {
        match (self.env)(var) {
            Some(v) if !v.trim().is_empty() => {
                http::remember_secret(var, &v);
                Ok(v)
            }
            _ => Err(Problem::unset_env(setting, var)),
        }
    }
}

type BuildFn = fn(&BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>>;

/// A destination kind: its name, what it does, its defaults, and its builder.
pub struct ConnectorKind {
    pub name: &'static str,
    pub summary: &'static str,
    pub defaults: Defaults,
    /// Whether it sends personal data (then a destination must declare
    /// consent purposes or a legal basis).
    pub personal_data: bool,
    pub build: BuildFn,
}

/// Every connector this build has.
pub fn kinds() -> &'static [ConnectorKind] {
    static KINDS: std::sync::OnceLock<Vec<ConnectorKind>> = std::sync::OnceLock::new();
    KINDS.get_or_init(|| {
        vec![
            file::kind(),
            webhook::kind(),
            email::kind(),
            slack::kind(),
            sms::kind(),
            sheets::kind(),
            csv::kind(),
            hubspot::kind(),
            pipedrive::kind(),
            salesforce::kind(),
            lemlist::kind(),
            marketing_cloud::kind(),
            smartlead::kind(),
            apollo::kind(),
            salesloft::kind(),
            woodpecker::kind(),
            replyio::kind(),
            mailshake::kind(),
        ]
    })
}

pub fn kind(name: &str) -> Option<&'static ConnectorKind> {
    kinds().iter().find(|k| k.name == name)
}

/// Env var names referenced by a settings table (`*_env` keys), for
/// `enabled = "auto"`.
pub fn referenced_env_vars(settings: &toml::Table) -> Vec<String> {
    fn walk(t: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in t {
            match v {
                toml::Value::String(s) if k.ends_with("_env") => out.push(s.clone()),
                toml::Value::Array(a) if k.ends_with("_envs") => {
                    out.extend(a.iter().filter_map(|x| x.as_str().map(String::from)))
                }
                toml::Value::Table(inner) if k != "secret_headers" => walk(inner, out),
                toml::Value::Table(inner) => {
                    out.extend(inner.values().filter_map(|x| x.as_str().map(String::from)))
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(settings, &mut out);
    // A webhook preset names its URL's env var by itself.
    if let Some(var) = webhook::implied_env_var(settings) {
        out.push(var.to_string());
    }
    out
}
