//! `mailshake`: adds people to a Mailshake campaign as recipients under the
//! shared enrollment model ([`super::enroll`]).
//!
//! Settings:
//! - `api_key_env` (default `MAILSHAKE_API_KEY`): HTTP Basic with the key as
//!   user name, as Mailshake documents.
//! - `campaign_id` (a number, required); `other_campaign_ids` (numbers,
//!   default none): campaigns a person counts as "already enrolled" in
//!   (Mailshake cannot list a person's campaigns, so each listed one is
//!   asked, one quota unit each) and that `exit_sequences` pauses too.
//! - `[destinations.NAME.mapping.recipient]`: `emailAddress` (required),
//!   `fullName`, and any other name as one of the recipient's `fields`.
//! - `[destinations.NAME.enrollment]`: `already_enrolled` (`skip` or
//!   `queue`; Mailshake cannot move a recipient), `add_limit`,
//!   `queue_recheck`, `exit_on` (add `"unsubscribed"` to put people who
//!   unsubscribe anywhere on Mailshake's unsubscribe list).
//! - `status_poll_interval` (default `"2s"`), `status_polls` (default 10):
//!   how long to wait for Mailshake's asynchronous import.
//! - `base_url` (default `https://api.mailshake.com/2017-04-01`),
//!   `allow_private_networks`.
//!
//! Enrolling is `recipients/add` (one address) and then `recipients/add-status`
//! until the import is finished: its problems say whether the address was
//! already in the campaign (done: a retry after a lost answer finds it
//! there, Mailshake never adds an address to a campaign twice), on the
//! unsubscribe list (`skipped`) or over the campaign's capacity (the
//! overflow queue). An import that does not finish in time is retried.
//! `exit_sequences` pauses the recipient (`recipients/pause`) in the
//! campaign and the other campaigns; a later enrollment of a person
//! leadrelay paused unpauses them (`recipients/unpause`). An exit for an
//! `unsubscribed` event also calls `recipients/unsubscribe`.
//!
//! Mailshake meters calls in quota units per hour (an add costs 11, a pause
//! 5); `limit_reached` throttles the destination until the time Mailshake
//! names. Errors are `{"code", "message"}`: `invalid_api_key` and
//! `not_authorized` reject the credentials, `missing_dependent_data`
//! (no such campaign) dead-letters, `exceeds_monthly_recipients` waits in
//! the overflow queue.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::crm;
use super::enroll::vendor::{self, Auth, PerPerson, VendorHttp};
use super::enroll::{self, Verdict};
use super::http::{self as shared, HttpResponse};
use super::{
    BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob, ErrorClass,
    JobResult, Outcome,
};
use crate::config::{HumanDuration, Problem, parse_settings};
use crate::mapping::Mapping;
use crate::store::RemoteId;

/// What leadrelay remembers of a recipient, per campaign:
/// `mailshake_recipient:{campaign id}` = `active` or `paused` (by leadrelay).
pub const STATE_OBJECT_PREFIX: &str = "mailshake_recipient:";
pub const DEFAULT_MAPPING: &str = include_str!("defaults.toml");
pub const DEFAULT_BASE_URL: &str = "https://api.mailshake.com/2017-04-01";
const TOOL: &str = "mailshake";

fn default_key_env() -> String {
    "MAILSHAKE_API_KEY".into()
}
fn default_poll_interval() -> HumanDuration {
    HumanDuration::secs(2)
}
fn default_polls() -> u32 {
    10
}

#[derive(Debug, Deserialize)]
struct Settings {
    #[serde(default = "default_key_env")]
    api_key_env: String,
    campaign_id: u64,
    #[serde(default)]
    other_campaign_ids: Vec<u64>,
    #[serde(default)]
    mapping: toml::Table,
    #[serde(default)]
    enrollment: enroll::Settings,
    #[serde(default = "default_poll_interval")]
    status_poll_interval: HumanDuration,
    #[serde(default = "default_polls")]
    status_polls: u32,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    allow_private_networks: bool,
}

pub fn kind() -> ConnectorKind {
    ConnectorKind {
        name: TOOL,
        summary: "Mailshake: add recipients to a campaign, pause them on exit",
        defaults: Defaults {
            // Mailshake meters quota units, not requests: `limit_reached`
            // throttles the destination until the time it names.
            rate_limit: None,
            concurrency: 1,
            batch_size: 1,
            max_batch_size: 1,
        },
        personal_data: true,
        build,
    }
}

struct Mailshake {
    http: VendorHttp,
    campaign_id: u64,
    other_campaigns: Vec<u64>,
    mapping: Mapping,
    policy: enroll::Policy,
    poll_interval: Duration,
    polls: u32,
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let s: Settings = parse_settings(ctx.settings)?;
    let mut problems = Vec::new();
    if s.status_polls == 0 || s.status_polls > 100 {
        problems.push(Problem::error("status_polls", "must be between 1 and 100"));
    }
    if s.other_campaign_ids.contains(&s.campaign_id) {
        problems.push(Problem::error(
            "other_campaign_ids",
            "must not contain campaign_id itself",
        ));
    }
    let common = vendor::build_common(
        ctx,
        vendor::CommonSettings {
            tool: TOOL,
            api_key_env: &s.api_key_env,
            base_url: s.base_url.as_deref(),
            default_base: DEFAULT_BASE_URL,
            allow_private_networks: s.allow_private_networks,
            mapping: &s.mapping,
            default_mapping: DEFAULT_MAPPING,
            objects: &["recipient"],
            enrollment: &s.enrollment,
            can_move: false,
            auth: Auth::BasicKeyAsUser,
        },
    );
    let common = match common {
        Ok(c) if problems.is_empty() => c,
        Ok(_) => return Err(problems),
        Err(ps) => {
            problems.extend(ps);
            return Err(problems);
        }
    };
    Ok(Arc::new(Mailshake {
        http: common.http,
        campaign_id: s.campaign_id,
        other_campaigns: s.other_campaign_ids,
        mapping: common.mapping,
        policy: common.policy.in_sequence(&s.campaign_id.to_string()),
        poll_interval: s.status_poll_interval.get(),
        polls: s.status_polls,
    }))
}

/// How long until the time a `limit_reached` error names (`retryAfter`, or
/// the header), at most a day.
fn retry_after(resp: &HttpResponse, body: &Value) -> Option<Duration> {
    body["retryAfter"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            (t.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(86_400))
        })
        .or_else(|| shared::parse_retry_after(&resp.headers))
}

/// Mailshake's answers: its error `code` first, then the shared rules.
pub fn classify(resp: &HttpResponse) -> Outcome {
    let body = vendor::json(resp);
    let code = body["code"].as_str().unwrap_or_default();
    let message = || {
        let m = body["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| crate::redact::excerpt(&resp.body, 200));
        format!("Mailshake {code}: {}", crate::redact::excerpt(&m, 200))
    };
    match (resp.status, code) {
        (200..=299, _) => Outcome::delivered(),
        (_, "limit_reached") => Outcome::Throttled {
            message: message(),
            retry_after: retry_after(resp, &body),
        },
        (_, "invalid_api_key" | "not_authorized" | "user_not_admin" | "user_is_disabled") => {
            Outcome::CredentialsRejected { message: message() }
        }
        (_, "missing_dependent_data" | "missing_subscription" | "team_blocked") => {
            Outcome::permanent(ErrorClass::Vendor, message())
        }
        _ => shared::classify(resp),
    }
}

/// The verdict of a finished import for `email`.
fn import_verdict(problems: &Value, email: &str) -> Verdict {
    let listed = |k: &str| {
        problems[k].as_array().is_some_and(|a| {
            a.iter()
                .any(|e| e.as_str().is_some_and(|e| e.eq_ignore_ascii_case(email)))
        })
    };
    if listed("unsubscribedEmails") {
        Verdict::VendorSuppressed {
            message: "on Mailshake's unsubscribe list".into(),
        }
    } else if listed("alreadyInCampaignEmails") {
        Verdict::AlreadyMember {
            remote_ids: Vec::new(),
        }
    } else if listed("passedAccountLimitEmails") {
        Verdict::Full {
            message: "the campaign holds no more recipients".into(),
        }
    } else {
        Verdict::Enrolled {
            remote_ids: Vec::new(),
        }
    }
}

impl Mailshake {
    /// The `addresses` item for the job.
    fn recipient(&self, job: &DeliveryJob) -> Result<Map<String, Value>, String> {
        let mut fields = vendor::scalar_fields(&self.mapping, "recipient", job)?;
        let mut out = Map::new();
        for own in ["emailAddress", "fullName"] {
            if let Some(v) = fields.remove(own) {
                out.insert(own.into(), v);
            }
        }
        if !fields.is_empty() {
            out.insert("fields".into(), Value::Object(fields));
        }
        Ok(out)
    }

    fn state(&self, job: &DeliveryJob, state: &str) -> Vec<RemoteId> {
        vec![RemoteId {
            object: format!("{STATE_OBJECT_PREFIX}{}", self.campaign_id),
            key: job.delivery.contact_key.clone(),
            id: state.into(),
        }]
    }

    /// Whether leadrelay paused this person in the campaign.
    fn paused_by_us(&self, job: &DeliveryJob) -> bool {
        let object = format!("{STATE_OBJECT_PREFIX}{}", self.campaign_id);
        job.remote_ids
            .iter()
            .any(|r| r.object == object && r.id == "paused")
    }

    async fn post(&self, path: &str, body: Value) -> vendor::Sent {
        self.http
            .call(reqwest::Method::POST, path, &[], Some(&body))
            .await
    }

    /// `recipients/get`, `pause` or `unpause` for one campaign: whether the
    /// recipient is there (`not_found` is no).
    async fn recipient_call(
        &self,
        path: &str,
        campaign: u64,
        email: &str,
    ) -> Result<bool, Box<JobResult>> {
        let sent = self
            .post(path, json!({"campaignID": campaign, "emailAddress": email}))
            .await;
        let r = vendor::answered(sent, classify, &[404])?;
        Ok(r.status != 404)
    }

    /// Polls the import until it is finished: its `problems`.
    async fn wait_for_import(&self, status_id: &Value) -> Result<Value, Box<JobResult>> {
        for _ in 0..self.polls {
            tokio::time::sleep(self.poll_interval).await;
            let sent = self
                .post("/recipients/add-status", json!({"statusID": status_id}))
                .await;
            let answer = vendor::json(&vendor::answered(sent, classify, &[])?);
            if answer["isFinished"].as_bool() == Some(true) {
                return Ok(answer["problems"].clone());
            }
        }
        Err(Box::new(vendor::failed(Outcome::retry(
            ErrorClass::Vendor,
            format!(
                "Mailshake had not finished the import after {} checks; adding again (an address already in the campaign is not added twice)",
                self.polls
            ),
        ))))
    }
}

#[async_trait]
impl PerPerson for Mailshake {
    fn policy(&self) -> &enroll::Policy {
        &self.policy
    }

    fn preview(&self, job: &DeliveryJob) -> Result<Value, String> {
        self.recipient(job).map(|recipient| {
            json!({
                "url": format!("{}/recipients/add", self.http.base),
                "campaignID": self.campaign_id,
                "recipient": recipient,
            })
        })
    }

    async fn check(&self) -> CheckReport {
        let sent = self
            .post("/campaigns/get", json!({"campaignID": self.campaign_id}))
            .await;
        match sent.0 {
            Ok(r) if r.status == 200 => CheckReport::ok(format!(
                "Mailshake accepted the API key; campaign {} exists",
                self.campaign_id
            )),
            Ok(r) if r.status == 404 => CheckReport::failed(format!(
                "Mailshake has no campaign {} for this key",
                self.campaign_id
            )),
            Ok(r) => CheckReport::failed(crm::outcome_text(&classify(&r))),
            Err(o) => CheckReport::failed(crm::outcome_text(&o)),
        }
    }

    /// Mailshake's API cannot delete a recipient, and leadrelay keeps no
    /// Mailshake record id: nothing of a person is erasable there.
    async fn erase(&self, targets: Result<Vec<crm::EraseTarget>, String>) -> JobResult {
        crm::erase_each(TOOL, targets, |_| async {
            (crm::Deleted::Done, Default::default())
        })
        .await
    }

    async fn exit(&self, job: &DeliveryJob, email: &str) -> JobResult {
        let mut left = Vec::new();
        let mut in_campaign = false;
        let campaigns =
            std::iter::once(self.campaign_id).chain(self.other_campaigns.iter().copied());
        for c in campaigns.collect::<Vec<_>>() {
            match self.recipient_call("/recipients/pause", c, email).await {
                Err(r) => return *r,
                Ok(true) => {
                    in_campaign |= c == self.campaign_id;
                    left.push(c.to_string());
                }
                Ok(false) => {}
            }
        }
        if job.event.event_type.as_str() == "unsubscribed" {
            let sent = self
                .post("/recipients/unsubscribe", json!({"emailAddresses": email}))
                .await;
            if let Err(r) = vendor::answered(sent, classify, &[]) {
                return *r;
            }
            tracing::info!(
                tool = TOOL,
                "exit_sequences: added to Mailshake's unsubscribe list"
            );
        }
        let outcome = match enroll::exited(TOOL, &left) {
            Outcome::Delivered { .. } if in_campaign => Outcome::Delivered {
                remote_ids: self.state(job, "paused"),
            },
            other => other,
        };
        vendor::failed(outcome)
    }

    async fn enroll(&self, job: &DeliveryJob) -> JobResult {
        let now = chrono::Utc::now();
        let recipient = match self.recipient(job) {
            Ok(r) => r,
            Err(m) => return vendor::failed(Outcome::permanent(ErrorClass::Mapping, m)),
        };
        let email = recipient["emailAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let decided = |verdict| vendor::failed(self.policy.outcome(verdict, now));
        for c in &self.other_campaigns {
            match self.recipient_call("/recipients/get", *c, &email).await {
                Err(r) => return *r,
                Ok(true) => {
                    return decided(Verdict::ActiveElsewhere {
                        sequence: format!("Mailshake campaign {c}"),
                    });
                }
                Ok(false) => {}
            }
        }
        let body = json!({
            "campaignID": self.campaign_id,
            "addAsNewList": false,
            "addresses": [Value::Object(recipient)],
        });
        let (result, report) = self
            .http
            .call(reqwest::Method::POST, "/recipients/add", &[], Some(&body))
            .await;
        let added = match result {
            Err(outcome) => return JobResult { outcome, report },
            Ok(r) if vendor::json(&r)["code"] == "exceeds_monthly_recipients" => {
                return JobResult {
                    outcome: self.policy.outcome(
                        Verdict::Full {
                            message: "the monthly recipient allowance is used up".into(),
                        },
                        now,
                    ),
                    report,
                };
            }
            Ok(r) => match classify(&r) {
                Outcome::Delivered { .. } => vendor::json(&r),
                outcome => return JobResult { outcome, report },
            },
        };
        let invalid = added["invalidEmails"].as_array().is_some_and(|a| {
            a.iter()
                .any(|e| e.as_str().is_some_and(|e| e.eq_ignore_ascii_case(&email)))
        });
        if invalid {
            return JobResult {
                outcome: Outcome::permanent(ErrorClass::Vendor, "Mailshake: invalid email address"),
                report,
            };
        }
        let problems = match self.wait_for_import(&added["checkStatusID"]).await {
            Ok(p) => p,
            Err(r) => return *r,
        };
        let verdict = match import_verdict(&problems, &email) {
            Verdict::AlreadyMember { .. } if self.paused_by_us(job) => {
                match self
                    .recipient_call("/recipients/unpause", self.campaign_id, &email)
                    .await
                {
                    Err(r) => return *r,
                    Ok(_) => Verdict::AlreadyMember {
                        remote_ids: self.state(job, "active"),
                    },
                }
            }
            Verdict::AlreadyMember { .. } => Verdict::AlreadyMember {
                remote_ids: self.state(job, "active"),
            },
            Verdict::Enrolled { .. } => Verdict::Enrolled {
                remote_ids: self.state(job, "active"),
            },
            other => other,
        };
        JobResult {
            outcome: self.policy.outcome(verdict, now),
            report,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse::canned(status, &[], body)
    }

    #[test]
    fn error_codes_are_classified() {
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc3339();
        let limit =
            format!(r#"{{"code":"limit_reached","message":"quota","retryAfter":"{later}"}}"#);
        match classify(&resp(429, &limit)) {
            Outcome::Throttled {
                retry_after: Some(d),
                ..
            } => {
                assert!(
                    d > Duration::from_secs(100) && d <= Duration::from_secs(120),
                    "{d:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&resp(401, r#"{"code":"invalid_api_key","message":"x"}"#)),
            Outcome::CredentialsRejected { .. }
        ));
        assert!(matches!(
            classify(&resp(
                404,
                r#"{"code":"missing_dependent_data","message":"x"}"#
            )),
            Outcome::Permanent { .. }
        ));
        assert!(matches!(classify(&resp(500, "")), Outcome::Retry { .. }));
    }

    #[test]
    fn import_problems_become_verdicts() {
        let p = json!({"unsubscribedEmails": ["u@x.io"], "alreadyInCampaignEmails": ["a@x.io"],
            "passedAccountLimitEmails": ["f@x.io"]});
        assert!(matches!(
            import_verdict(&p, "U@x.io"),
            Verdict::VendorSuppressed { .. }
        ));
        assert!(matches!(
            import_verdict(&p, "a@x.io"),
            Verdict::AlreadyMember { .. }
        ));
        assert!(matches!(import_verdict(&p, "f@x.io"), Verdict::Full { .. }));
        assert!(matches!(
            import_verdict(&p, "n@x.io"),
            Verdict::Enrolled { .. }
        ));
        assert!(matches!(
            import_verdict(&Value::Null, "n@x.io"),
            Verdict::Enrolled { .. }
        ));
    }
}
