//! `replyio`: enrolls people in a Reply.io campaign (sequence) under the
//! shared enrollment model ([`super::enroll`]).
//!
//! Settings:
//! - `api_key_env` (default `REPLYIO_API_KEY`): sent as `X-Api-Key`.
//! - `campaign_id` (a number, required).
//! - `[destinations.NAME.mapping.contact]`: the contact's fields (defaults
//!   in `defaults.toml`; `email` and `firstName` required); names that are
//!   not Reply contact fields go into `customFields`.
//! - `[destinations.NAME.enrollment]`: `already_enrolled` (`skip`, `queue`
//!   or `move`: Reply moves a contact with `forcePush`), `add_limit`,
//!   `queue_recheck`, `exit_on`.
//! - `base_url` (default `https://api.reply.io`), `allow_private_networks`.
//!
//! Find-or-create: the contact is looked up first (`GET /v1/people?email=`
//! and its sequences): already in this campaign is the enrollment done (a
//! retry after a lost answer or a `kill -9`); active in another campaign
//! goes to the `already_enrolled` policy. Then `POST
//! /v1/actions/addandpushtocampaign` (which creates the contact or finds it
//! by email; a repeat makes no second membership). A 400 naming an
//! opted-out contact ends the delivery `skipped`; one naming another active
//! campaign (a race) goes to the policy. `exit_sequences` is `POST
//! /v1/actions/removepersonfromallcampaigns`; a privacy erase deletes the
//! contact leadrelay made (`DELETE /v1/people/{id}`).
//!
//! Default rate limit: 16 enrollments a minute. Reply allows 100 requests a
//! minute and 3,000 an hour per user, and an enrollment takes up to three
//! requests: 16 a minute stays under both windows.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::crm;
use super::enroll::vendor::{self, Auth, PerPerson, VendorHttp};
use super::enroll::{self, AlreadyEnrolled, Verdict};
use super::http::{self as shared, HttpResponse};
use super::{
    BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob, ErrorClass,
    JobResult, Outcome,
};
use crate::config::{Problem, Rate, parse_settings};
use crate::mapping::{self, Mapping};
use crate::store::RemoteId;

/// The object a contact's id is kept under: `replyio_contact:{campaign id}`.
pub const CONTACT_OBJECT_PREFIX: &str = "replyio_contact:";
pub const DEFAULT_MAPPING: &str = include_str!("defaults.toml");
const TOOL: &str = "replyio";
/// Reply's own contact fields; any other mapped name is a custom field.
const CONTACT_FIELDS: [&str; 11] = [
    "email",
    "firstName",
    "lastName",
    "company",
    "title",
    "phone",
    "city",
    "state",
    "country",
    "timeZone",
    "linkedInProfile",
];

fn default_key_env() -> String {
    "REPLYIO_API_KEY".into()
}

#[derive(Debug, Deserialize)]
struct Settings {
    #[serde(default = "default_key_env")]
    api_key_env: String,
    campaign_id: u64,
    #[serde(default)]
    mapping: toml::Table,
    #[serde(default)]
    enrollment: enroll::Settings,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    allow_private_networks: bool,
}

pub fn kind() -> ConnectorKind {
    ConnectorKind {
        name: TOOL,
        summary: "Reply.io: enroll contacts in a campaign (sequence), once",
        defaults: Defaults {
            rate_limit: Some(Rate {
                count: 16,
                period: Duration::from_secs(60),
            }),
            concurrency: 2,
            batch_size: 1,
            max_batch_size: 1,
        },
        personal_data: true,
        build,
    }
}

struct Reply {
    http: VendorHttp,
    campaign_id: u64,
    mapping: Mapping,
    policy: enroll::Policy,
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let s: Settings = parse_settings(ctx.settings)?;
    let common = vendor::build_common(
        ctx,
        vendor::CommonSettings {
            tool: TOOL,
            api_key_env: &s.api_key_env,
            base_url: s.base_url.as_deref(),
            default_base: "https://api.reply.io",
            allow_private_networks: s.allow_private_networks,
            mapping: &s.mapping,
            default_mapping: DEFAULT_MAPPING,
            objects: &["contact"],
            enrollment: &s.enrollment,
            can_move: true,
            auth: |key| Auth::Header("X-Api-Key", key),
        },
    )?;
    Ok(Arc::new(Reply {
        http: common.http,
        campaign_id: s.campaign_id,
        mapping: common.mapping,
        policy: common.policy.in_sequence(&s.campaign_id.to_string()),
    }))
}

/// Reply's statuses: 404 permanent ("campaign not found"), otherwise the
/// shared rules (429 throttles until `Retry-After`).
fn classify(resp: &HttpResponse) -> Outcome {
    match resp.status {
        404 => Outcome::permanent(
            ErrorClass::Http4xx,
            format!(
                "Reply.io: not found ({})",
                crate::redact::excerpt(&resp.body, 200)
            ),
        ),
        _ => shared::classify(resp),
    }
}

/// The verdict on an `addandpushtocampaign` answer.
fn push_verdict(resp: &HttpResponse) -> Verdict {
    let text = resp.body.to_ascii_lowercase();
    match resp.status {
        200..=299 => Verdict::Enrolled {
            remote_ids: Vec::new(),
        },
        400 if text.contains("opted out") || text.contains("unsubscribed") => {
            Verdict::VendorSuppressed {
                message: format!("Reply.io: {}", crate::redact::excerpt(&resp.body, 200)),
            }
        }
        400 if text.contains("another") => Verdict::ActiveElsewhere {
            sequence: "another Reply.io campaign".into(),
        },
        _ => Verdict::Failed(classify(resp)),
    }
}

/// A contact's fields as Reply takes them: its own fields at the top, the
/// rest as `customFields` (`[{key, value}]`, values as text).
fn shape(fields: Map<String, Value>) -> Map<String, Value> {
    let mut contact = Map::new();
    let mut custom = Vec::new();
    for (k, v) in fields {
        if CONTACT_FIELDS.contains(&k.as_str()) {
            contact.insert(k, v);
        } else {
            let value = mapping::as_text(&v).unwrap_or_default();
            custom.push(json!({"key": k, "value": value}));
        }
    }
    if !custom.is_empty() {
        contact.insert("customFields".into(), Value::Array(custom));
    }
    contact
}

/// The (id, status) of each campaign a contact is in.
fn parse_sequences(body: &Value) -> Vec<(u64, String)> {
    body.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    Some((
                        s["id"].as_u64()?,
                        s["status"].as_str().unwrap_or_default().to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn is_active(status: &str) -> bool {
    matches!(status, "Active" | "Paused" | "active" | "paused")
}

impl Reply {
    fn contact(&self, job: &DeliveryJob) -> Result<Map<String, Value>, String> {
        vendor::scalar_fields(&self.mapping, "contact", job).map(shape)
    }

    fn membership(&self, job: &DeliveryJob, id: Option<String>) -> Vec<RemoteId> {
        id.filter(|i| vendor::is_numeric_id(i))
            .map(|id| RemoteId {
                object: format!("{CONTACT_OBJECT_PREFIX}{}", self.campaign_id),
                key: job.delivery.contact_key.clone(),
                id,
            })
            .into_iter()
            .collect()
    }

    /// The contact's id and campaigns; `None` when Reply does not know them.
    async fn find(
        &self,
        email: &str,
    ) -> Result<Option<(String, Vec<(u64, String)>)>, Box<JobResult>> {
        let sent = self
            .http
            .call(
                reqwest::Method::GET,
                "/v1/people",
                &[("email", email)],
                None,
            )
            .await;
        let r = vendor::answered(sent, classify, &[404])?;
        if r.status == 404 {
            return Ok(None);
        }
        let Some(id) =
            mapping::as_text(&vendor::json(&r)["id"]).filter(|i| vendor::is_numeric_id(i))
        else {
            return Ok(None);
        };
        let path = format!("/v1/people/{id}/sequences");
        let sent = self.http.call(reqwest::Method::GET, &path, &[], None).await;
        let r = vendor::answered(sent, classify, &[])?;
        Ok(Some((id, parse_sequences(&vendor::json(&r)))))
    }
}

#[async_trait]
impl PerPerson for Reply {
    fn policy(&self) -> &enroll::Policy {
        &self.policy
    }

    fn preview(&self, job: &DeliveryJob) -> Result<Value, String> {
        self.contact(job).map(|contact| {
            json!({
                "url": format!("{}/v1/actions/addandpushtocampaign", self.http.base),
                "campaign_id": self.campaign_id,
                "contact": contact,
            })
        })
    }

    async fn check(&self) -> CheckReport {
        let path = format!("/v1/campaigns/{}", self.campaign_id);
        match vendor::check_get(&self.http, "Reply.io", &path, "such campaign").await {
            Ok(()) => CheckReport::ok(format!(
                "Reply.io accepted the API key; campaign {} exists",
                self.campaign_id
            )),
            Err(m) => CheckReport::failed(m),
        }
    }

    async fn erase(&self, targets: Result<Vec<crm::EraseTarget>, String>) -> JobResult {
        crm::erase_each(TOOL, targets, |t| async move {
            if !vendor::is_numeric_id(&t.id) {
                let m = format!("{:?} is not a Reply.io contact id", t.id);
                return (crm::Deleted::Malformed(m), Default::default());
            }
            let path = format!("/v1/people/{}", t.id);
            let sent = self
                .http
                .call(reqwest::Method::DELETE, &path, &[], None)
                .await;
            vendor::deleted(sent, shared::classify)
        })
        .await
    }

    async fn exit(&self, _job: &DeliveryJob, email: &str) -> JobResult {
        let active: Vec<String> = match self.find(email).await {
            Err(r) => return *r,
            Ok(None) => Vec::new(),
            Ok(Some((_, campaigns))) => campaigns
                .into_iter()
                .filter(|(_, s)| is_active(s))
                .map(|(c, _)| c.to_string())
                .collect(),
        };
        if active.is_empty() {
            return vendor::failed(enroll::exited(TOOL, &[]));
        }
        let body = json!({"email": email});
        let sent = self
            .http
            .call(
                reqwest::Method::POST,
                "/v1/actions/removepersonfromallcampaigns",
                &[],
                Some(&body),
            )
            .await;
        match vendor::answered(sent, classify, &[404]) {
            Err(r) => *r,
            Ok(_) => vendor::failed(enroll::exited(TOOL, &active)),
        }
    }

    async fn enroll(&self, job: &DeliveryJob) -> JobResult {
        let now = chrono::Utc::now();
        let mut contact = match self.contact(job) {
            Ok(c) => c,
            Err(m) => return vendor::failed(Outcome::permanent(ErrorClass::Mapping, m)),
        };
        let email = contact["email"].as_str().unwrap_or_default().to_string();
        let decided = |verdict| vendor::failed(self.policy.outcome(verdict, now));
        let mut known_id = None;
        if let Some((id, campaigns)) = match self.find(&email).await {
            Err(r) => return *r,
            Ok(found) => found,
        } {
            if campaigns.iter().any(|(c, _)| *c == self.campaign_id) {
                return decided(Verdict::AlreadyMember {
                    remote_ids: self.membership(job, Some(id)),
                });
            }
            let elsewhere: Vec<String> = campaigns
                .iter()
                .filter(|(_, s)| is_active(s))
                .map(|(c, _)| c.to_string())
                .collect();
            if !elsewhere.is_empty() && self.policy.already_enrolled != AlreadyEnrolled::Move {
                return decided(Verdict::ActiveElsewhere {
                    sequence: format!("Reply.io campaign {}", elsewhere.join(", ")),
                });
            }
            known_id = Some(id);
        }
        contact.insert("campaignId".into(), json!(self.campaign_id));
        if self.policy.already_enrolled == AlreadyEnrolled::Move {
            contact.insert("forcePush".into(), Value::Bool(true));
        }
        let body = Value::Object(contact);
        let (result, report) = self
            .http
            .call(
                reqwest::Method::POST,
                "/v1/actions/addandpushtocampaign",
                &[],
                Some(&body),
            )
            .await;
        let verdict = match result {
            Err(o) => Verdict::Failed(o),
            Ok(r) => match push_verdict(&r) {
                Verdict::Enrolled { .. } => Verdict::Enrolled {
                    remote_ids: self
                        .membership(job, mapping::as_text(&vendor::json(&r)["id"]).or(known_id)),
                },
                other => other,
            },
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
    fn push_answers_become_verdicts() {
        assert!(matches!(
            push_verdict(&resp(200, r#"{"id":1}"#)),
            Verdict::Enrolled { .. }
        ));
        assert!(matches!(
            push_verdict(&resp(400, r#"{"error":"Contact has opted out"}"#)),
            Verdict::VendorSuppressed { .. }
        ));
        assert!(matches!(
            push_verdict(&resp(
                400,
                r#"{"error":"Contact is already in another active campaign"}"#
            )),
            Verdict::ActiveElsewhere { .. }
        ));
        assert!(matches!(
            push_verdict(&resp(404, r#"{"error":"Campaign not found"}"#)),
            Verdict::Failed(Outcome::Permanent { .. })
        ));
        assert!(matches!(
            push_verdict(&resp(429, "")),
            Verdict::Failed(Outcome::Throttled { .. })
        ));
        assert!(matches!(
            push_verdict(&resp(401, "")),
            Verdict::Failed(Outcome::CredentialsRejected { .. })
        ));
    }

    #[test]
    fn custom_fields_are_a_key_value_list() {
        let m = json!({"email": "a@b.co", "firstName": "Ana", "plan": "pro", "seats": 3});
        let c = shape(m.as_object().unwrap().clone());
        assert_eq!(c["firstName"], "Ana");
        assert_eq!(
            c["customFields"],
            json!([{"key": "plan", "value": "pro"}, {"key": "seats", "value": "3"}])
        );
    }

    #[test]
    fn sequences_list_their_status() {
        let s = parse_sequences(
            &json!([{"id": 1, "status": "Active"}, {"id": 2, "status": "Finished"}]),
        );
        assert_eq!(s, [(1, "Active".to_string()), (2, "Finished".to_string())]);
        assert!(is_active(&s[0].1) && !is_active(&s[1].1));
    }
}
