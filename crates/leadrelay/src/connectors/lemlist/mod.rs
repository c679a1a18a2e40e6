//! `lemlist`: enrolls people in a lemlist campaign (a sequence) — for
//! example every contact that becomes sales-qualified (`lead.qualified`,
//! see the handoff), or every lead of a webinar form.
//!
//! Settings:
//! - `api_key_env` (default `LEMLIST_API_KEY`): HTTP Basic with an empty
//!   user and the key as password, as lemlist documents.
//! - `campaign_id` (`cam_…`, required).
//! - `deduplicate` (default true): a person who is already in another
//!   campaign of the team is "already enrolled" and handled by the
//!   destination's `already_enrolled` policy (`skip` or `queue`; lemlist's
//!   API cannot move a lead, so `move` is refused), so nobody gets two
//!   sequences at once.
//! - `[destinations.NAME.enrollment]`: the shared enrollment policy
//!   (`already_enrolled`, `add_limit`, `queue_recheck`; see
//!   [`crate::connectors::enroll`]).
//! - `[destinations.NAME.mapping.lead]`: the lead's variables through the
//!   shared mapping engine (defaults in `defaults.toml`; `email` required).
//! - `base_url` (default `https://api.lemlist.com`), `allow_private_networks`.
//!
//! Find-or-create: the person is looked up first ("Get Lead by Email",
//! `GET /api/leads/{email}?version=v2`): a lead in this campaign is the
//! enrollment already done (a retry after a lost answer or a `kill -9`);
//! a lead in another campaign is "already enrolled" (with `deduplicate`);
//! an unsubscribed lead is never added. Only then `POST` the lead; a 409
//! from a race between two nodes is read the same way. 404 is a permanent
//! "campaign not found"; a 400 naming an unsubscribed lead ends the
//! delivery `skipped`; 429 throttles the destination until `Retry-After`;
//! otherwise the shared HTTP classification. lemlist allows 20 requests
//! per 2 seconds per key: that is the default rate limit.
//!
//! A privacy erase removes each lead leadrelay enrolled from its campaign
//! ("Delete or Unsubscribe Lead" with `action=remove`); a lead or campaign
//! lemlist no longer has (404) counts as removed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::crm;
use super::enroll::vendor::{self, Auth, PerPerson, Sent, VendorHttp};
use super::enroll::{self, Verdict};
use super::http::{self as shared, HttpResponse, path_segment};
use super::{
    AttemptReport, BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob,
    ErrorClass, JobResult, Outcome,
};
use crate::config::{Problem, Rate, parse_settings};
use crate::mapping::{self, Mapping};
use crate::store::RemoteId;

const TOOL: &str = "lemlist";

/// The object a lead's id is kept under: `lemlist_lead:{campaign id}`.
pub const LEAD_OBJECT_PREFIX: &str = "lemlist_lead:";

/// The default field mapping (also shown in the README).
pub const DEFAULT_MAPPING: &str = include_str!("defaults.toml");
const OBJECTS: [&str; 1] = ["lead"];
const DEFAULT_BASE_URL: &str = "https://api.lemlist.com";

fn default_key_env() -> String {
    "LEMLIST_API_KEY".into()
}
fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct Settings {
    #[serde(default = "default_key_env")]
    api_key_env: String,
    campaign_id: String,
    #[serde(default = "yes")]
    deduplicate: bool,
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
        summary: "lemlist: enroll people in a campaign (sequence), once",
        defaults: Defaults {
            rate_limit: Some(Rate {
                count: 20,
                period: Duration::from_secs(2),
            }),
            concurrency: 2,
            batch_size: 1,
            max_batch_size: 1,
        },
        personal_data: true,
        build,
    }
}

struct Lemlist {
    http: VendorHttp,
    campaign_id: String,
    deduplicate: bool,
    mapping: Mapping,
    policy: enroll::Policy,
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let s: Settings = parse_settings(ctx.settings)?;
    let campaign = s.campaign_id.trim();
    let bad_campaign = (campaign.is_empty()
        || !campaign
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then(|| {
        Problem::error(
            "campaign_id",
            "a lemlist campaign id such as cam_A1b2C3d4E5f6G7h8i (letters, digits, _ and -)",
        )
    });
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
            // lemlist's API cannot move a lead between campaigns.
            can_move: false,
            auth: Auth::BasicKeyAsPassword,
        },
    );
    let common = match (common, bad_campaign) {
        (Ok(c), None) => c,
        (Ok(_), Some(p)) => return Err(vec![p]),
        (Err(mut ps), bad) => {
            ps.extend(bad);
            return Err(ps);
        }
    };
    Ok(Arc::new(Lemlist {
        http: common.http,
        campaign_id: campaign.to_string(),
        deduplicate: s.deduplicate,
        mapping: common.mapping,
        policy: common.policy.in_sequence(campaign),
    }))
}

/// lemlist's verdict on an enrollment request.
fn classify(resp: &HttpResponse) -> Verdict {
    let text = resp.body.to_ascii_lowercase();
    match resp.status {
        200 | 201 => Verdict::Enrolled {
            remote_ids: Vec::new(),
        },
        // A race with another node, or `deduplicate` refusing a person who
        // is in another campaign.
        409 if text.contains("another") => Verdict::ActiveElsewhere {
            sequence: "another lemlist campaign".into(),
        },
        409 => Verdict::AlreadyMember {
            remote_ids: Vec::new(),
        },
        400 if text.contains("unsubscribed") => Verdict::VendorSuppressed {
            message: crate::redact::excerpt(&resp.body, 200),
        },
        404 => Verdict::Failed(Outcome::permanent(
            ErrorClass::Http4xx,
            format!(
                "lemlist: campaign not found ({})",
                crate::redact::excerpt(&resp.body, 200)
            ),
        )),
        _ => Verdict::Failed(shared::classify(resp)),
    }
}

/// What "Get Lead by Email" says about the person and this campaign:
/// `None` when lemlist does not know them (or the answer has no leads).
fn found(body: &str, campaign: &str, deduplicate: bool) -> Option<(Verdict, Option<String>)> {
    let v: Value = serde_json::from_str(body).ok()?;
    let leads: Vec<&Value> = match &v {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![&v],
        _ => return None,
    };
    let campaign_of = |l: &Value| mapping::as_text(&l["campaignId"]).unwrap_or_default();
    let status_of = |l: &Value| {
        mapping::as_text(&l["status"])
            .or_else(|| mapping::as_text(&l["state"]))
            .unwrap_or_default()
    };
    if leads.iter().any(|l| status_of(l) == "unsubscribed") {
        return Some((
            Verdict::VendorSuppressed {
                message: "the lead is unsubscribed in lemlist".into(),
            },
            None,
        ));
    }
    if let Some(l) = leads.iter().find(|l| campaign_of(l) == campaign) {
        let id = mapping::as_text(&l["_id"]).filter(|id| !id.is_empty());
        return Some((
            Verdict::AlreadyMember {
                remote_ids: Vec::new(),
            },
            id,
        ));
    }
    if deduplicate
        && let Some(l) = leads
            .iter()
            .find(|l| !matches!(status_of(l).as_str(), "done" | "notInterested"))
    {
        return Some((
            Verdict::ActiveElsewhere {
                sequence: format!("lemlist campaign {}", campaign_of(l)),
            },
            None,
        ));
    }
    None
}

/// The (campaign, lead id) pairs of a "Get Lead by Email" answer whose
/// sequence is not over (ids checked to go into a path as they are).
fn active_leads(body: &str) -> Vec<(String, String)> {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    let leads = match v {
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        _ => Vec::new(),
    };
    leads
        .iter()
        .filter(|l| {
            !matches!(
                l["status"].as_str().unwrap_or_default(),
                "done" | "unsubscribed"
            )
        })
        .filter_map(|l| {
            let c = mapping::as_text(&l["campaignId"])?;
            let id = mapping::as_text(&l["_id"])?;
            (is_lemlist_id(&c) && is_lemlist_id(&id)).then_some((c, id))
        })
        .collect()
}

/// lemlist variables are text, numbers or booleans: anything else the
/// mapping produced is a mapping error naming the variable.
fn check_variables(body: &serde_json::Map<String, Value>) -> Result<(), String> {
    match body
        .iter()
        .find(|(_, v)| !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
    {
        Some((k, _)) => Err(format!(
            "mapping lead.{k}: lemlist variables must be text, a number or a boolean"
        )),
        None => Ok(()),
    }
}

/// lemlist ids (`cam_…`, `lea_…`): letters, digits, `_` and `-` only, so
/// they go into a path as they are.
fn is_lemlist_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Lemlist {
    fn leads_path(&self) -> String {
        format!("/api/campaigns/{}/leads/", self.campaign_id)
    }

    fn leads_query(&self) -> &'static [(&'static str, &'static str)] {
        if self.deduplicate {
            &[("deduplicate", "true")]
        } else {
            &[]
        }
    }

    /// The lead's variables as lemlist will receive them.
    fn body(&self, job: &DeliveryJob) -> Result<serde_json::Map<String, Value>, String> {
        let body = self
            .mapping
            .apply("lead", &mapping::context(job))
            .map_err(|e| e.to_string())?;
        check_variables(&body)?;
        Ok(body)
    }

    /// The lead id a verdict carries, kept as the membership.
    fn membership(&self, job: &DeliveryJob, id: Option<String>) -> Vec<RemoteId> {
        id.filter(|id| !id.is_empty())
            .map(|id| RemoteId {
                object: format!("{LEAD_OBJECT_PREFIX}{}", self.campaign_id),
                key: job.delivery.contact_key.clone(),
                id,
            })
            .into_iter()
            .collect()
    }

    /// "Get Lead by Email": the answer's body, `None` when lemlist does
    /// not know the person.
    async fn lookup(&self, email: &str) -> Result<Option<String>, Box<JobResult>> {
        let path = format!("/api/leads/{}", path_segment(email));
        let sent = self
            .http
            .call(Method::GET, &path, &[("version", "v2")], None)
            .await;
        let (result, report) = sent;
        match enroll::answered(result, shared::classify) {
            Ok(found) => Ok(found.map(|r| r.body)),
            Err(outcome) => Err(Box::new(JobResult { outcome, report })),
        }
    }

    /// Find: what lemlist already has for the person and this campaign.
    async fn find(
        &self,
        job: &DeliveryJob,
        email: &str,
    ) -> Result<Option<Verdict>, Box<JobResult>> {
        let Some(body) = self.lookup(email).await? else {
            return Ok(None);
        };
        Ok(
            found(&body, &self.campaign_id, self.deduplicate).map(|(verdict, id)| match verdict {
                Verdict::AlreadyMember { .. } => Verdict::AlreadyMember {
                    remote_ids: self.membership(job, id),
                },
                other => other,
            }),
        )
    }

    /// Takes one lead out of its campaign (`action=remove`).
    async fn remove(&self, campaign: &str, lead: &str) -> Sent {
        let path = format!("/api/campaigns/{campaign}/leads/{lead}");
        self.http
            .call(Method::DELETE, &path, &[("action", "remove")], None)
            .await
    }
}

#[async_trait]
impl PerPerson for Lemlist {
    fn policy(&self) -> &enroll::Policy {
        &self.policy
    }

    fn preview(&self, job: &DeliveryJob) -> Result<Value, String> {
        let query = match self.deduplicate {
            true => "?deduplicate=true",
            false => "",
        };
        self.body(job).map(|lead| {
            serde_json::json!({
                "url": format!("{}{}{query}", self.http.base, self.leads_path()),
                "lead": lead,
            })
        })
    }

    async fn check(&self) -> CheckReport {
        let result = async {
            vendor::check_get(&self.http, TOOL, "/api/team", "team").await?;
            let campaign = format!("/api/campaigns/{}", self.campaign_id);
            let what = format!("campaign {}", self.campaign_id);
            vendor::check_get(&self.http, TOOL, &campaign, &what).await
        }
        .await;
        match result {
            Ok(()) => CheckReport::ok(format!(
                "lemlist accepted the API key; campaign {} exists",
                self.campaign_id
            )),
            Err(m) => CheckReport::failed(m),
        }
    }

    /// A privacy erase: every lead of the person leaves its campaign
    /// (`DELETE /api/campaigns/{campaignId}/leads/{leadId}?action=remove`);
    /// 404 (gone already, or its campaign is) counts as removed.
    async fn erase(&self, targets: Result<Vec<crm::EraseTarget>, String>) -> JobResult {
        crm::erase_each(TOOL, targets, |t| async move {
            let campaign = t
                .object
                .strip_prefix(LEAD_OBJECT_PREFIX)
                .unwrap_or_default();
            if !is_lemlist_id(campaign) || !is_lemlist_id(&t.id) {
                let m = format!("{:?} in {campaign:?} is not a lemlist lead id", t.id);
                return (crm::Deleted::Malformed(m), Default::default());
            }
            vendor::deleted(self.remove(campaign, &t.id).await, shared::classify)
        })
        .await
    }

    /// `exit_sequences`: every lead of the person that is still running
    /// leaves its campaign (`action=remove`); nothing to do is success.
    async fn exit(&self, _job: &DeliveryJob, email: &str) -> JobResult {
        let body = match self.lookup(email).await {
            Err(failed) => return *failed,
            Ok(body) => body.unwrap_or_default(),
        };
        let mut left = Vec::new();
        let mut report = AttemptReport::default();
        for (campaign, id) in active_leads(&body) {
            let (result, r) = self.remove(&campaign, &id).await;
            report = r;
            match enroll::answered(result, shared::classify) {
                Ok(Some(_)) => left.push(campaign),
                Ok(None) => {}
                Err(outcome) => return JobResult { outcome, report },
            }
        }
        JobResult {
            outcome: enroll::exited(TOOL, &left),
            report,
        }
    }

    async fn enroll(&self, job: &DeliveryJob) -> JobResult {
        let now = chrono::Utc::now();
        let body = match self.body(job) {
            Ok(b) => b,
            Err(m) => return vendor::failed(Outcome::permanent(ErrorClass::Mapping, m)),
        };
        let email = body
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match self.find(job, &email).await {
            Err(failed) => return *failed,
            Ok(Some(verdict)) => return vendor::failed(self.policy.outcome(verdict, now)),
            Ok(None) => {}
        }
        let body = Value::Object(body);
        let (result, report) = self
            .http
            .call(
                Method::POST,
                &self.leads_path(),
                self.leads_query(),
                Some(&body),
            )
            .await;
        let verdict = match result {
            Err(outcome) => Verdict::Failed(outcome),
            Ok(resp) => match classify(&resp) {
                Verdict::Enrolled { .. } => Verdict::Enrolled {
                    remote_ids: self.membership(
                        job,
                        serde_json::from_str::<Value>(&resp.body)
                            .ok()
                            .and_then(|v| mapping::as_text(&v["_id"])),
                    ),
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
    use reqwest::header::HeaderMap;
    use serde_json::json;

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: HeaderMap::new(),
            body: body.into(),
        }
    }

    #[test]
    fn answers_are_read_as_enrollment_verdicts() {
        assert!(matches!(
            classify(&resp(409, r#"{"error":"Lead already in the campaign"}"#)),
            Verdict::AlreadyMember { .. }
        ));
        assert!(matches!(
            classify(&resp(
                409,
                r#"{"error":"Lead already in another campaign"}"#
            )),
            Verdict::ActiveElsewhere { .. }
        ));
        assert!(matches!(
            classify(&resp(400, r#"{"error":"Lead is unsubscribed"}"#)),
            Verdict::VendorSuppressed { .. }
        ));
        assert!(matches!(
            classify(&resp(404, "Campaign not found")),
            Verdict::Failed(Outcome::Permanent {
                class: ErrorClass::Http4xx,
                ..
            })
        ));
        for (status, ok) in [
            (429, "throttled"),
            (401, "auth"),
            (502, "retry"),
            (400, "permanent"),
        ] {
            let got = match classify(&resp(status, "Invalid email")) {
                Verdict::Failed(Outcome::Throttled { .. }) => "throttled",
                Verdict::Failed(Outcome::CredentialsRejected { .. }) => "auth",
                Verdict::Failed(Outcome::Retry { .. }) => "retry",
                Verdict::Failed(Outcome::Permanent { .. }) => "permanent",
                other => panic!("{status}: {other:?}"),
            };
            assert_eq!(got, ok, "{status}");
        }
    }

    #[test]
    fn a_found_lead_is_a_member_elsewhere_or_unsubscribed() {
        let body = r#"[{"_id":"lea_1","campaignId":"cam_B","status":"running"}]"#;
        assert!(matches!(
            found(body, "cam_B", true),
            Some((Verdict::AlreadyMember { .. }, Some(_)))
        ));
        assert!(matches!(
            found(body, "cam_A", true),
            Some((Verdict::ActiveElsewhere { .. }, None))
        ));
        assert!(found(body, "cam_A", false).is_none());
        let done = r#"[{"_id":"lea_1","campaignId":"cam_B","status":"done"}]"#;
        assert!(found(done, "cam_A", true).is_none());
        assert!(active_leads(done).is_empty());
        assert_eq!(
            active_leads(body),
            [("cam_B".to_string(), "lea_1".to_string())]
        );
        let unsub = r#"[{"_id":"lea_1","campaignId":"cam_B","status":"unsubscribed"}]"#;
        assert!(matches!(
            found(unsub, "cam_A", true),
            Some((Verdict::VendorSuppressed { .. }, None))
        ));
    }

    #[test]
    fn variables_must_be_scalars() {
        let ok = json!({"email": "a@b.co", "seats": 3, "vip": true});
        assert!(check_variables(ok.as_object().unwrap()).is_ok());
        let bad = json!({"email": "a@b.co", "tags": ["x"]});
        let err = check_variables(bad.as_object().unwrap()).unwrap_err();
        assert!(err.contains("lead.tags"), "{err}");
    }

    #[test]
    fn settings_problems_name_their_keys() {
        let settings: toml::Table = toml::from_str(
            "campaign_id = \"cam x\"\nbase_url = \"ftp://x\"\n[mapping.lead]\nemail = { from = \"contact.nope\" }",
        )
        .unwrap();
        let ctx = BuildContext {
            destination: "seq",
            settings: &settings,
            env: &|_| None,
            timeout: Duration::from_secs(5),
            public_url: "http://localhost",
        };
        let problems = match build(&ctx) {
            Err(p) => p,
            Ok(_) => panic!("settings with problems were accepted"),
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in ["api_key_env", "campaign_id", "base_url"] {
            assert!(paths.contains(&expected), "{expected} missing in {paths:?}");
        }
    }

    #[test]
    fn preview_shows_the_mapped_lead_without_sending() {
        let table: toml::Table = toml::from_str(
            "campaign_id = \"cam_A1b2\"\n[mapping.lead]\nplan = { value = \"pro\" }\n",
        )
        .unwrap();
        let env = |k: &str| Some(format!("{k}-value"));
        let c = build(&BuildContext {
            destination: "sequence",
            settings: &table,
            env: &env,
            timeout: Duration::from_secs(2),
            public_url: "http://leads.test",
        })
        .unwrap();
        let job = crate::connectors::notify::sample_lead_job();
        let p = c.preview(&job).unwrap().unwrap();
        assert!(
            p["url"]
                .as_str()
                .unwrap()
                .ends_with("/api/campaigns/cam_A1b2/leads/?deduplicate=true"),
            "{p}"
        );
        assert_eq!(p["lead"]["plan"], "pro");
        assert_eq!(
            p["lead"]["email"].as_str(),
            job.event.contact.email.as_ref().map(|e| e.as_str())
        );
        assert_eq!(p["lead"]["firstName"], "Jane");
    }
}
