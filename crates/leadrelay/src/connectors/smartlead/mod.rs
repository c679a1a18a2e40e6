//! `smartlead`: enrolls people in a Smartlead campaign, up to 100 per
//! request, under the shared enrollment model ([`super::enroll`]).
//!
//! Settings:
//! - `api_key_env` (default `SMARTLEAD_API_KEY`): sent as the `api_key`
//!   query parameter, as Smartlead documents (never shown in the attempt
//!   log: the logged URL leaves it out).
//! - `campaign_id` (a number, required).
//! - `[destinations.NAME.mapping.lead]`: the lead's fields (defaults in
//!   `defaults.toml`; `email` required); names that are not Smartlead lead
//!   fields go into `custom_fields`.
//! - `[destinations.NAME.enrollment]`: `already_enrolled` (`skip`, `queue`
//!   or `move`: Smartlead can delete a lead from a campaign), `add_limit`,
//!   `queue_recheck`, `refresh` (default `"1h"`: the campaign's leads are
//!   read back, `COMPLETED` and `STOPPED` ones end their memberships; see
//!   `delivery::refresh`).
//! - `base_url` (default `https://server.smartlead.ai`), `allow_private_networks`.
//!
//! One request adds a batch ("Add leads to a campaign", settings
//! `ignore_duplicate_leads_in_other_campaign = false`, so Smartlead itself
//! refuses a person who is in another campaign, and never ignores its
//! unsubscribe, block or bounce lists). The answer only counts: when every
//! lead is accounted for as uploaded or already in the campaign (a retry
//! after a lost answer or a `kill -9` finds them there: Smartlead never
//! adds a lead to a campaign twice), the batch is done. Otherwise each
//! remaining lead is looked up ("Fetch lead by email") to learn which one
//! is in another campaign (→ the `already_enrolled` policy; `move` deletes
//! it there and adds it again) or was stopped by the campaign's lead limit
//! (→ the overflow queue). Addresses listed back as unsubscribed end
//! `skipped`, invalid ones dead-lettered with Smartlead's reason.
//!
//! Default rate limit: 60 requests per minute (Smartlead's Standard tier;
//! raise it to `"120/1m"` on Pro); 429 answers throttle the destination
//! until `Retry-After`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::crm;
use super::enroll::vendor::{self, Auth, Sent, VendorHttp};
use super::enroll::{self, AlreadyEnrolled, Verdict, Work};
use super::http::{self as shared, HttpResponse, path_segment};
use super::{
    AttemptReport, BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob,
    ErrorClass, JobResult, Outcome,
};
use crate::config::{Problem, Rate, parse_settings};
use crate::mapping::{self, Mapping};
use crate::store::RemoteId;

/// The object a lead's id is kept under: `smartlead_lead:{campaign id}`.
pub const LEAD_OBJECT_PREFIX: &str = "smartlead_lead:";
pub const DEFAULT_MAPPING: &str = include_str!("defaults.toml");
const TOOL: &str = "smartlead";
const OBJECTS: [&str; 1] = ["lead"];
const DEFAULT_BASE_URL: &str = "https://server.smartlead.ai";
/// Smartlead's own lead fields; any other mapped name is a custom field.
const LEAD_FIELDS: [&str; 9] = [
    "email",
    "first_name",
    "last_name",
    "company_name",
    "phone_number",
    "website",
    "location",
    "linkedin_profile",
    "company_url",
];

fn default_key_env() -> String {
    "SMARTLEAD_API_KEY".into()
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
        summary: "Smartlead: enroll people in a campaign, 100 per request, once",
        defaults: Defaults {
            rate_limit: Some(Rate {
                count: 60,
                period: Duration::from_secs(60),
            }),
            concurrency: 1,
            batch_size: 100,
            max_batch_size: 100,
        },
        personal_data: true,
        build,
    }
}

struct Smartlead {
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
            default_base: DEFAULT_BASE_URL,
            allow_private_networks: s.allow_private_networks,
            mapping: &s.mapping,
            default_mapping: DEFAULT_MAPPING,
            objects: &OBJECTS,
            enrollment: &s.enrollment,
            // Smartlead can delete a lead from a campaign.
            can_move: true,
            auth: |key| Auth::Query("api_key", key),
        },
    )?;
    Ok(Arc::new(Smartlead {
        http: common.http,
        campaign_id: s.campaign_id,
        mapping: common.mapping,
        policy: common.policy.in_sequence(&s.campaign_id.to_string()),
    }))
}

/// Smartlead's answer to "Add leads to a campaign".
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AddAnswer {
    upload_count: u64,
    already_added_to_campaign: u64,
    duplicate_count: u64,
    invalid_emails: Vec<Value>,
    unsubscribed_leads: Vec<Value>,
    is_lead_limit_exhausted: bool,
    lead_import_stopped_count: u64,
}

/// The emails of a list Smartlead answers (plain strings or `{"email": …}`).
fn emails(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|v| v.as_str().or_else(|| v["email"].as_str()))
        .map(|e| e.trim().to_lowercase())
        .collect()
}

/// A lead's fields as Smartlead takes them: its own fields at the top,
/// everything else in `custom_fields` (text, numbers, booleans).
fn shape(fields: Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut lead = Map::new();
    let mut custom = Map::new();
    for (k, v) in fields {
        if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            return Err(format!(
                "mapping lead.{k}: Smartlead fields must be text, a number or a boolean"
            ));
        }
        if LEAD_FIELDS.contains(&k.as_str()) {
            lead.insert(k, v);
        } else {
            custom.insert(k, v);
        }
    }
    if !custom.is_empty() {
        lead.insert("custom_fields".into(), Value::Object(custom));
    }
    Ok(lead)
}

/// What "Fetch lead by email" says about one person.
#[derive(Debug, PartialEq)]
enum Found {
    Unknown,
    /// The lead id and the campaigns it is active in (not finished).
    Lead {
        id: String,
        campaigns: Vec<u64>,
    },
}

fn parse_found(body: &str) -> Found {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return Found::Unknown;
    };
    let Some(id) = mapping::as_text(&v["id"]).filter(|id| !id.is_empty()) else {
        return Found::Unknown;
    };
    let campaigns = v["lead_campaign_data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| {
                    !matches!(
                        c["status"].as_str().unwrap_or_default(),
                        "COMPLETED" | "STOPPED"
                    )
                })
                .filter_map(|c| c["campaign_id"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    Found::Lead { id, campaigns }
}

impl Smartlead {
    /// `path` under `/api/v1`, the key added by [`VendorHttp`] (and left
    /// out of the URL the attempt log shows).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Sent {
        let path = format!("/api/v1{path}");
        self.http.call(method, &path, query, body).await
    }

    fn body(&self, job: &DeliveryJob) -> Result<Map<String, Value>, String> {
        let fields = self
            .mapping
            .apply("lead", &mapping::context(job))
            .map_err(|e| e.to_string())?;
        shape(fields)
    }

    fn membership(&self, job: &DeliveryJob, id: &str) -> Vec<RemoteId> {
        vec![RemoteId {
            object: format!("{LEAD_OBJECT_PREFIX}{}", self.campaign_id),
            key: job.delivery.contact_key.clone(),
            id: id.to_string(),
        }]
    }

    /// One "Add leads" request for `leads` (email, body).
    async fn add(
        &self,
        leads: &[(String, Map<String, Value>)],
    ) -> (Result<AddAnswer, Outcome>, AttemptReport) {
        let body = json!({
            "lead_list": leads.iter().map(|(_, b)| Value::Object(b.clone())).collect::<Vec<_>>(),
            "settings": {
                "ignore_global_block_list": false,
                "ignore_unsubscribe_list": false,
                "ignore_community_bounce_list": false,
                "ignore_duplicate_leads_in_other_campaign": false,
            },
        });
        let path = format!("/campaigns/{}/leads", self.campaign_id);
        let (result, report) = self
            .send(reqwest::Method::POST, &path, &[], Some(&body))
            .await;
        let answer = match result {
            Err(o) => Err(o),
            Ok(resp) => match classify(&resp) {
                Outcome::Delivered { .. } => {
                    serde_json::from_str::<AddAnswer>(&resp.body).map_err(|e| {
                        Outcome::retry(
                            ErrorClass::Vendor,
                            format!("Smartlead answered 2xx with an unreadable body: {e}"),
                        )
                    })
                }
                other => Err(other),
            },
        };
        (answer, report)
    }

    async fn find(&self, email: &str) -> Result<Found, Outcome> {
        let sent = self
            .send(reqwest::Method::GET, "/leads/", &[("email", email)], None)
            .await;
        Ok(enroll::answered(sent.0, classify)?
            .map(|resp| parse_found(&resp.body))
            .unwrap_or(Found::Unknown))
    }

    async fn remove(&self, campaign: u64, lead: &str) -> Result<(), Outcome> {
        let path = format!("/campaigns/{campaign}/leads/{}", path_segment(lead));
        let sent = self.send(reqwest::Method::DELETE, &path, &[], None).await;
        enroll::answered(sent.0, classify).map(|_| ())
    }

    /// The verdict for one lead that the batch answer did not account for.
    async fn resolve(
        &self,
        job: &DeliveryJob,
        email: &str,
        stopped: bool,
    ) -> Result<Verdict, Outcome> {
        Ok(match self.find(email).await? {
            Found::Lead { id, campaigns } if campaigns.contains(&self.campaign_id) => {
                Verdict::AlreadyMember {
                    remote_ids: self.membership(job, &id),
                }
            }
            Found::Lead { campaigns, .. } if !campaigns.is_empty() => Verdict::ActiveElsewhere {
                sequence: format!(
                    "Smartlead campaign {}",
                    campaigns
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            _ if stopped => Verdict::Full {
                message: "the campaign's lead limit is exhausted".into(),
            },
            _ => Verdict::Failed(Outcome::retry(
                ErrorClass::Vendor,
                "Smartlead neither added the lead nor reports it anywhere",
            )),
        })
    }

    /// The refresh: every lead of the campaign, 100 per page ("Fetch leads
    /// by campaign": `GET /campaigns/{id}/leads?offset=&limit=`, each item
    /// with the campaign `status` and the `lead`'s `email`).
    async fn list_people(&self) -> Result<Vec<enroll::Listed>, String> {
        use enroll::{Listed, Standing};
        let path = format!("/campaigns/{}/leads", self.campaign_id);
        let mut out = Vec::new();
        let mut offset: u64 = 0;
        loop {
            let off = offset.to_string();
            let query = [("offset", off.as_str()), ("limit", "100")];
            let resp = match self.send(reqwest::Method::GET, &path, &query, None).await.0 {
                Err(o) => return Err(crm::outcome_text(&o)),
                Ok(r) => r,
            };
            match classify(&resp) {
                Outcome::Delivered { .. } => {}
                o => {
                    return Err(format!(
                        "Smartlead answered HTTP {} ({})",
                        resp.status,
                        crm::outcome_text(&o)
                    ));
                }
            }
            let v: Value = serde_json::from_str(&resp.body)
                .map_err(|e| format!("Smartlead's lead list is not JSON: {e}"))?;
            let Some(page) = v["data"].as_array() else {
                return Err("Smartlead's lead list has no \"data\" array".into());
            };
            for item in page {
                let Some(email) = item["lead"]["email"].as_str().filter(|e| !e.is_empty()) else {
                    continue;
                };
                let status = item["status"].as_str().unwrap_or_default().to_string();
                let standing = match status.as_str() {
                    "COMPLETED" => Standing::Finished,
                    "STOPPED" => Standing::Stopped,
                    _ => Standing::Active,
                };
                out.push(Listed {
                    email: email.trim().to_lowercase(),
                    standing,
                    status,
                });
            }
            offset += page.len() as u64;
            let total = mapping::as_text(&v["total_leads"]).and_then(|t| t.parse::<u64>().ok());
            if page.len() < 100 || total.is_some_and(|t| offset >= t) {
                return Ok(out);
            }
        }
    }

    /// `move`: takes the person out of their other campaigns.
    async fn move_out(&self, email: &str) -> Result<(), Outcome> {
        if let Found::Lead { id, campaigns } = self.find(email).await? {
            for c in campaigns.into_iter().filter(|c| *c != self.campaign_id) {
                self.remove(c, &id).await?;
            }
        }
        Ok(())
    }

    async fn enroll(&self, jobs: &[&DeliveryJob]) -> Vec<(Outcome, AttemptReport)> {
        let now = chrono::Utc::now();
        let mut out: Vec<Option<(Outcome, AttemptReport)>> = vec![None; jobs.len()];
        let mut leads: Vec<(usize, String, Map<String, Value>)> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            match self.body(job) {
                Ok(b) => {
                    let email = b["email"].as_str().unwrap_or_default().to_lowercase();
                    leads.push((i, email, b));
                }
                Err(m) => {
                    out[i] = Some((
                        Outcome::permanent(ErrorClass::Mapping, m),
                        Default::default(),
                    ))
                }
            }
        }
        // Round 1 adds everyone; round 2 adds again those moved out of
        // another campaign (`move`).
        for round in 0..2 {
            if leads.is_empty() {
                break;
            }
            let batch: Vec<(String, Map<String, Value>)> = leads
                .iter()
                .map(|(_, e, b)| (e.clone(), b.clone()))
                .collect();
            let (answer, report) = self.add(&batch).await;
            let answer = match answer {
                Ok(a) => a,
                Err(outcome) => {
                    for (i, _, _) in leads.drain(..) {
                        out[i] = Some((outcome.clone(), report.clone()));
                    }
                    break;
                }
            };
            let invalid = emails(&answer.invalid_emails);
            let unsubscribed = emails(&answer.unsubscribed_leads);
            let mut rest = Vec::new();
            for (i, email, body) in leads.drain(..) {
                let verdict = if invalid.contains(&email) {
                    Verdict::Failed(Outcome::permanent(
                        ErrorClass::Vendor,
                        "Smartlead: invalid email address",
                    ))
                } else if unsubscribed.contains(&email) {
                    Verdict::VendorSuppressed {
                        message: "on Smartlead's unsubscribe list".into(),
                    }
                } else {
                    rest.push((i, email, body));
                    continue;
                };
                out[i] = Some((self.policy.outcome(verdict, now), report.clone()));
            }
            let accounted = answer.upload_count + answer.already_added_to_campaign;
            if answer.duplicate_count == 0
                && answer.lead_import_stopped_count == 0
                && accounted >= rest.len() as u64
            {
                for (i, _, _) in rest {
                    let v = Verdict::Enrolled {
                        remote_ids: Vec::new(),
                    };
                    out[i] = Some((self.policy.outcome(v, now), report.clone()));
                }
                break;
            }
            for (i, email, body) in rest {
                let verdict = match self
                    .resolve(jobs[i], &email, answer.is_lead_limit_exhausted)
                    .await
                {
                    Ok(v) => v,
                    Err(o) => Verdict::Failed(o),
                };
                if round == 0
                    && self.policy.already_enrolled == AlreadyEnrolled::Move
                    && matches!(verdict, Verdict::ActiveElsewhere { .. })
                {
                    match self.move_out(&email).await {
                        Ok(()) => leads.push((i, email, body)),
                        Err(o) => out[i] = Some((o, report.clone())),
                    }
                    continue;
                }
                out[i] = Some((self.policy.outcome(verdict, now), report.clone()));
            }
        }
        out.into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    (
                        Outcome::retry(ErrorClass::Vendor, "no answer for this lead"),
                        Default::default(),
                    )
                })
            })
            .collect()
    }

    /// `exit_sequences`: the person leaves every campaign they are active
    /// in; nothing to do is success.
    async fn exit(&self, job: &DeliveryJob) -> Outcome {
        let Some(email) = enroll::job_email(job) else {
            return Outcome::permanent(ErrorClass::Mapping, "no email address to exit");
        };
        let (id, campaigns) = match self.find(&email).await {
            Err(o) => return o,
            Ok(Found::Unknown) => return enroll::exited("smartlead", &[]),
            Ok(Found::Lead { id, campaigns }) => (id, campaigns),
        };
        let mut left = Vec::new();
        for c in campaigns {
            if let Err(o) = self.remove(c, &id).await {
                return o;
            }
            left.push(c.to_string());
        }
        enroll::exited("smartlead", &left)
    }

    async fn erase(&self, targets: Result<Vec<crm::EraseTarget>, String>) -> JobResult {
        crm::erase_each("smartlead", targets, |t| async move {
            let campaign = t
                .object
                .strip_prefix(LEAD_OBJECT_PREFIX)
                .and_then(|c| c.parse::<u64>().ok());
            let (Some(campaign), true) = (campaign, t.id.bytes().all(|b| b.is_ascii_digit()))
            else {
                let m = format!("{:?} in {:?} is not a Smartlead lead id", t.id, t.object);
                return (crm::Deleted::Malformed(m), Default::default());
            };
            let path = format!("/campaigns/{campaign}/leads/{}", t.id);
            let (result, report) = self.send(reqwest::Method::DELETE, &path, &[], None).await;
            let deleted = match result {
                Err(outcome) => crm::Deleted::Refused {
                    status: None,
                    outcome,
                },
                Ok(resp) => match classify(&resp) {
                    Outcome::Delivered { .. } => crm::Deleted::Done,
                    outcome => crm::Deleted::Refused {
                        status: Some(resp.status),
                        outcome,
                    },
                },
            };
            (deleted, report)
        })
        .await
    }
}

/// Smartlead's statuses: the shared classification, with 404 permanent
/// ("campaign not found").
fn classify(resp: &HttpResponse) -> Outcome {
    match resp.status {
        404 => Outcome::permanent(
            ErrorClass::Http4xx,
            format!(
                "Smartlead: not found ({})",
                crate::redact::excerpt(&resp.body, 200)
            ),
        ),
        _ => shared::classify(resp),
    }
}

#[async_trait]
impl Connector for Smartlead {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        let mut results: HashMap<usize, JobResult> = HashMap::new();
        let mut enrollments = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            match self.policy.work(job) {
                Work::Erase(targets) => {
                    results.insert(i, self.erase(targets).await);
                }
                Work::Exit => {
                    let outcome = self.exit(job).await;
                    let report = Default::default();
                    results.insert(i, JobResult { outcome, report });
                }
                Work::Enroll => enrollments.push(i),
            }
        }
        let refs: Vec<&DeliveryJob> = enrollments.iter().map(|i| &jobs[*i]).collect();
        for (i, (outcome, report)) in enrollments.iter().zip(self.enroll(&refs).await) {
            results.insert(*i, JobResult { outcome, report });
        }
        (0..jobs.len())
            .map(|i| {
                results.remove(&i).unwrap_or(JobResult {
                    outcome: Outcome::retry(ErrorClass::Vendor, "no result"),
                    report: Default::default(),
                })
            })
            .collect()
    }

    fn skip_reason(&self, job: &DeliveryJob) -> Option<String> {
        enroll::skip_reason(job)
    }

    fn enrollment(&self) -> Option<&enroll::Policy> {
        Some(&self.policy)
    }

    async fn sequence_people(&self) -> Option<Result<Vec<enroll::Listed>, String>> {
        Some(self.list_people().await)
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<Value, String>> {
        Some(self.body(job).map(|lead| {
            json!({
                "url": format!("{}/api/v1/campaigns/{}/leads", self.http.base, self.campaign_id),
                "lead": lead,
            })
        }))
    }

    async fn check(&self) -> CheckReport {
        let path = format!("/campaigns/{}", self.campaign_id);
        match self.send(reqwest::Method::GET, &path, &[], None).await.0 {
            Ok(r) if r.status == 200 => CheckReport::ok(format!(
                "Smartlead accepted the API key; campaign {} exists",
                self.campaign_id
            )),
            Ok(r) if r.status == 401 => CheckReport::failed("Smartlead rejected the API key"),
            Ok(r) if r.status == 404 => CheckReport::failed(format!(
                "Smartlead has no campaign {} for this key",
                self.campaign_id
            )),
            Ok(r) => CheckReport::failed(format!(
                "Smartlead answered HTTP {}: {}",
                r.status,
                crate::redact::excerpt(&r.body, 200)
            )),
            Err(o) => CheckReport::failed(crm::outcome_text(&o)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_fields_are_nested_and_must_be_scalars() {
        let m = json!({"email": "a@b.co", "first_name": "Ana", "plan": "pro", "seats": 3});
        let lead = shape(m.as_object().unwrap().clone()).unwrap();
        assert_eq!(lead["first_name"], "Ana");
        assert_eq!(lead["custom_fields"], json!({"plan": "pro", "seats": 3}));
        let bad = json!({"email": "a@b.co", "tags": ["x"]});
        let err = shape(bad.as_object().unwrap().clone()).unwrap_err();
        assert!(err.contains("lead.tags"), "{err}");
    }

    #[test]
    fn a_found_lead_lists_its_active_campaigns() {
        let body = r#"{"id": 42, "lead_campaign_data": [
            {"campaign_id": 7, "status": "STARTED"}, {"campaign_id": 8, "status": "COMPLETED"}]}"#;
        assert_eq!(
            parse_found(body),
            Found::Lead {
                id: "42".into(),
                campaigns: vec![7]
            }
        );
        assert_eq!(parse_found("{}"), Found::Unknown);
    }

    #[test]
    fn the_logged_url_never_holds_the_key() {
        let settings: toml::Table = toml::from_str("campaign_id = 7").unwrap();
        let env = |_: &str| Some("sekrit-key".to_string());
        let c = build(&BuildContext {
            destination: "seq",
            settings: &settings,
            env: &env,
            timeout: Duration::from_secs(2),
            public_url: "http://leads.test",
        })
        .unwrap();
        let job = crate::connectors::notify::sample_lead_job();
        let p = c.preview(&job).unwrap().unwrap();
        assert_eq!(
            p["url"],
            "https://server.smartlead.ai/api/v1/campaigns/7/leads"
        );
        assert!(!p.to_string().contains("sekrit"));
    }
}
