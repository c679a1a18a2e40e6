//! `woodpecker`: enrolls people in a Woodpecker campaign under the shared
//! enrollment model ([`super::enroll`]).
//!
//! Settings:
//! - `api_key_env` (default `WOODPECKER_API_KEY`): HTTP Basic with the key
//!   as user name, as Woodpecker documents.
//! - `campaign_id` (a number, required).
//! - `[destinations.NAME.mapping.prospect]`: the prospect's fields
//!   (defaults in `defaults.toml`; `email` required).
//! - `[destinations.NAME.enrollment]`: `already_enrolled` (`skip`, `queue`
//!   or `move`: Woodpecker can delete a prospect from one campaign),
//!   `add_limit`, `queue_recheck`, `exit_on`, `refresh` (default `"1h"`:
//!   the campaign's prospects are read back, finished and stopped ones end
//!   their memberships; see `delivery::refresh`).
//! - `base_url` (default `https://api.woodpecker.co`), `allow_private_networks`.
//!
//! Woodpecker processes one request at a time per API key (six more may
//! wait 15 s, the rest are dropped): every request of every destination
//! with the same key in this process waits for the one before it. The
//! default concurrency is 4 all the same: while one delivery holds the
//! key's turn at Woodpecker, the others record their outcomes and get
//! their next lead ready, so the one slot Woodpecker allows stays busy
//! (with concurrency 1 it idles through every outcome's commit).
//!
//! Find-or-create: the prospect is looked up first (`GET /rest/v1/prospects
//! ?email=…&campaigns_details=true`): already in this campaign is the
//! enrollment done (a retry after a lost answer or a `kill -9`); active in
//! another campaign goes to the `already_enrolled` policy; a blacklisted or
//! bounced prospect is never added. Then `POST /rest/v1/add_prospects_campaign`,
//! whose per-prospect `DUPLICATE` is success as well. `exit_sequences`
//! deletes the prospect from every campaign it is active in
//! (`DELETE /rest/v1/prospects?id=…&campaigns_id=…`); a privacy erase
//! deletes the prospect leadrelay made from the database.

use std::sync::Arc;

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
use crate::config::{Problem, parse_settings};
use crate::mapping::{self, Mapping};
use crate::store::RemoteId;

/// The object a prospect's id is kept under: `woodpecker_prospect:{campaign id}`.
pub const PROSPECT_OBJECT_PREFIX: &str = "woodpecker_prospect:";
pub const DEFAULT_MAPPING: &str = include_str!("defaults.toml");
const TOOL: &str = "woodpecker";

fn default_key_env() -> String {
    "WOODPECKER_API_KEY".into()
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
        summary: "Woodpecker: enroll prospects in a campaign, one request at a time, once",
        defaults: Defaults {
            // Woodpecker limits concurrency, not a rate.
            rate_limit: None,
            concurrency: 4,
            batch_size: 1,
            max_batch_size: 1,
        },
        personal_data: true,
        build,
    }
}

struct Woodpecker {
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
            default_base: "https://api.woodpecker.co",
            allow_private_networks: s.allow_private_networks,
            mapping: &s.mapping,
            default_mapping: DEFAULT_MAPPING,
            objects: &["prospect"],
            enrollment: &s.enrollment,
            can_move: true,
            auth: Auth::BasicKeyAsUser,
        },
    )?;
    Ok(Arc::new(Woodpecker {
        http: common.http.one_at_a_time(TOOL),
        campaign_id: s.campaign_id,
        mapping: common.mapping,
        policy: common.policy.in_sequence(&s.campaign_id.to_string()),
    }))
}

/// What Woodpecker knows of a person.
#[derive(Debug, PartialEq)]
struct Prospect {
    id: String,
    /// The global status: ACTIVE, BLACKLIST, BOUNCED …
    status: String,
    /// (campaign id, campaign prospect status)
    campaigns: Vec<(u64, String)>,
}

impl Prospect {
    fn active_campaigns(&self) -> impl Iterator<Item = u64> + '_ {
        self.campaigns
            .iter()
            .filter(|(_, s)| matches!(s.as_str(), "ACTIVE" | "PAUSED" | "TO-CHECK"))
            .map(|(c, _)| *c)
    }
}

fn parse_prospect(body: &Value) -> Option<Prospect> {
    let p = match body {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let id = mapping::as_text(&p["id"]).filter(|i| vendor::is_numeric_id(i))?;
    let campaigns = p["campaigns_details"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| {
                    Some((
                        c["campaign_id"].as_u64()?,
                        c["campaign_prospect_status"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Prospect {
        id,
        status: p["status"].as_str().unwrap_or("ACTIVE").to_string(),
        campaigns,
    })
}

/// Prospects per page of the refresh's list.
const LIST_PAGE: usize = 500;

/// A campaign prospect status, as the refresh reads it: the sequence went
/// through (`FINISHED`) or ended with a reply (`REPLIED`); the prospect was
/// stopped or dropped (`STOPPED`, `BOUNCED`, `BLACKLIST`, `INVALID`);
/// anything else (`ACTIVE`, `PAUSED`, `TO-CHECK`, `AUTOREPLIED`, an unknown
/// word) is still in the sequence.
fn standing(status: &str) -> enroll::Standing {
    match status {
        "FINISHED" | "REPLIED" => enroll::Standing::Finished,
        "STOPPED" | "BOUNCED" | "BLACKLIST" | "INVALID" => enroll::Standing::Stopped,
        _ => enroll::Standing::Active,
    }
}

/// Woodpecker's error code (`status.code`) of an answer.
fn error_code(resp: &HttpResponse) -> String {
    vendor::json(resp)["status"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Woodpecker's statuses: its `E_…` codes first, then the shared rules.
fn classify(resp: &HttpResponse) -> Outcome {
    let msg = || crate::redact::excerpt(&resp.body, 200);
    match (resp.status, error_code(resp).as_str()) {
        (200..=299, _) => Outcome::delivered(),
        (_, "E_TOO_MANY_REQUESTS") => Outcome::Throttled {
            message: format!("Woodpecker: too many simultaneous requests ({})", msg()),
            retry_after: shared::parse_retry_after(&resp.headers),
        },
        (_, "E_SESSION") => Outcome::CredentialsRejected {
            message: format!("Woodpecker rejected the API key ({})", msg()),
        },
        (_, "E_RECORD_NOT_FOUND") => Outcome::permanent(
            ErrorClass::Http4xx,
            format!("Woodpecker: campaign not found ({})", msg()),
        ),
        _ => shared::classify(resp),
    }
}

/// The verdict for one prospect of an `add_prospects_campaign` answer.
fn add_verdict(item: &Value) -> Verdict {
    let msg = item["msg"].as_str().unwrap_or_default();
    match (
        item["status"].as_str().unwrap_or_default(),
        item["code"].as_str().unwrap_or_default(),
    ) {
        ("OK", _) => Verdict::Enrolled {
            remote_ids: Vec::new(),
        },
        ("DUPLICATE", _) => Verdict::AlreadyMember {
            remote_ids: Vec::new(),
        },
        (_, "E_INV_STATUS") => Verdict::VendorSuppressed {
            message: format!("Woodpecker: {msg}"),
        },
        (_, "E_EMAIL" | "E_EMAIL_NOT_EXISTS") => Verdict::Failed(Outcome::permanent(
            ErrorClass::Vendor,
            format!("Woodpecker refused the address: {msg}"),
        )),
        (status, code) => Verdict::Failed(Outcome::retry(
            ErrorClass::Vendor,
            format!("Woodpecker answered {status} {code} for the prospect: {msg}"),
        )),
    }
}

impl Woodpecker {
    fn fields(&self, job: &DeliveryJob) -> Result<Map<String, Value>, String> {
        vendor::scalar_fields(&self.mapping, "prospect", job)
    }

    fn membership(&self, job: &DeliveryJob, id: Option<String>) -> Vec<RemoteId> {
        id.map(|id| RemoteId {
            object: format!("{PROSPECT_OBJECT_PREFIX}{}", self.campaign_id),
            key: job.delivery.contact_key.clone(),
            id,
        })
        .into_iter()
        .collect()
    }

    async fn find(&self, email: &str) -> Result<Option<Prospect>, Box<JobResult>> {
        let query = [("email", email), ("campaigns_details", "true")];
        let sent = self
            .http
            .call(reqwest::Method::GET, "/rest/v1/prospects", &query, None)
            .await;
        let r = vendor::answered(sent, classify, &[])?;
        Ok(parse_prospect(&vendor::json(&r)))
    }

    /// The refresh: every prospect of the campaign ("Get a list of
    /// prospects" with `campaigns_id`, `campaigns_details=true`, `page` from
    /// 1 and `per_page` [`LIST_PAGE`]; an empty page is `204`), each with
    /// its status in this campaign. Through the same one-at-a-time client
    /// as the deliveries.
    async fn list_people(&self) -> Result<Vec<enroll::Listed>, String> {
        let campaign = self.campaign_id.to_string();
        let per_page = LIST_PAGE.to_string();
        let mut out = Vec::new();
        for page in 1.. {
            let page_no = format!("{page}");
            let query = [
                ("campaigns_id", campaign.as_str()),
                ("campaigns_details", "true"),
                ("page", page_no.as_str()),
                ("per_page", per_page.as_str()),
            ];
            let resp = match self
                .http
                .call(reqwest::Method::GET, "/rest/v1/prospects", &query, None)
                .await
                .0
            {
                Err(o) => return Err(crm::outcome_text(&o)),
                Ok(r) => r,
            };
            if resp.status == 204 {
                break;
            }
            match classify(&resp) {
                Outcome::Delivered { .. } => {}
                o => {
                    return Err(format!(
                        "Woodpecker answered HTTP {} ({})",
                        resp.status,
                        crm::outcome_text(&o)
                    ));
                }
            }
            let Value::Array(items) = vendor::json(&resp) else {
                return Err("Woodpecker's prospect list is not a JSON array".into());
            };
            for p in &items {
                let Some(email) = p["email"].as_str().filter(|e| !e.is_empty()) else {
                    continue;
                };
                let status = parse_prospect(p)
                    .and_then(|pr| {
                        pr.campaigns
                            .into_iter()
                            .find(|(c, _)| *c == self.campaign_id)
                            .map(|(_, s)| s)
                    })
                    .unwrap_or_default();
                out.push(enroll::Listed {
                    email: email.trim().to_lowercase(),
                    standing: standing(&status),
                    status,
                });
            }
            if items.len() < LIST_PAGE {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes the prospect from `campaign` (gone already is fine).
    async fn leave(&self, prospect: &str, campaign: u64) -> Result<(), Box<JobResult>> {
        let c = campaign.to_string();
        let query = [("id", prospect), ("campaigns_id", c.as_str())];
        let sent = self
            .http
            .call(reqwest::Method::DELETE, "/rest/v1/prospects", &query, None)
            .await;
        vendor::answered(sent, classify, &[404]).map(|_| ())
    }
}

#[async_trait]
impl PerPerson for Woodpecker {
    fn policy(&self) -> &enroll::Policy {
        &self.policy
    }

    fn preview(&self, job: &DeliveryJob) -> Result<Value, String> {
        self.fields(job).map(|prospect| {
            json!({
                "url": format!("{}/rest/v1/add_prospects_campaign", self.http.base),
                "campaign_id": self.campaign_id,
                "prospect": prospect,
            })
        })
    }

    async fn sequence_people(&self) -> Option<Result<Vec<enroll::Listed>, String>> {
        Some(self.list_people().await)
    }

    async fn check(&self) -> CheckReport {
        let id = self.campaign_id.to_string();
        let query = [("id", id.as_str())];
        let sent = self
            .http
            .call(reqwest::Method::GET, "/rest/v1/campaign_list", &query, None);
        match sent.await.0 {
            Ok(r) if r.status == 200 => CheckReport::ok(format!(
                "Woodpecker accepted the API key; campaign {} exists",
                self.campaign_id
            )),
            Ok(r) if r.status == 204 => CheckReport::failed(format!(
                "Woodpecker has no campaign {} for this key",
                self.campaign_id
            )),
            Ok(r) => CheckReport::failed(crm::outcome_text(&classify(&r))),
            Err(o) => CheckReport::failed(crm::outcome_text(&o)),
        }
    }

    async fn erase(&self, targets: Result<Vec<crm::EraseTarget>, String>) -> JobResult {
        crm::erase_each(TOOL, targets, |t| async move {
            if !vendor::is_numeric_id(&t.id) {
                let m = format!("{:?} is not a Woodpecker prospect id", t.id);
                return (crm::Deleted::Malformed(m), Default::default());
            }
            let query = [("id", t.id.as_str())];
            let sent = self
                .http
                .call(reqwest::Method::DELETE, "/rest/v1/prospects", &query, None)
                .await;
            vendor::deleted(sent, classify)
        })
        .await
    }

    async fn exit(&self, _job: &DeliveryJob, email: &str) -> JobResult {
        let prospect = match self.find(email).await {
            Err(r) => return *r,
            Ok(None) => return vendor::failed(enroll::exited(TOOL, &[])),
            Ok(Some(p)) => p,
        };
        let mut left = Vec::new();
        for c in prospect.active_campaigns().collect::<Vec<_>>() {
            if let Err(r) = self.leave(&prospect.id, c).await {
                return *r;
            }
            left.push(c.to_string());
        }
        vendor::failed(enroll::exited(TOOL, &left))
    }

    async fn enroll(&self, job: &DeliveryJob) -> JobResult {
        let now = chrono::Utc::now();
        let fields = match self.fields(job) {
            Ok(f) => f,
            Err(m) => return vendor::failed(Outcome::permanent(ErrorClass::Mapping, m)),
        };
        let email = fields["email"].as_str().unwrap_or_default().to_string();
        let decided = |verdict| vendor::failed(self.policy.outcome(verdict, now));
        if let Some(p) = match self.find(&email).await {
            Err(r) => return *r,
            Ok(p) => p,
        } {
            if p.status != "ACTIVE" {
                return decided(Verdict::VendorSuppressed {
                    message: format!("the prospect's Woodpecker status is {}", p.status),
                });
            }
            if p.campaigns.iter().any(|(c, _)| *c == self.campaign_id) {
                return decided(Verdict::AlreadyMember {
                    remote_ids: self.membership(job, Some(p.id.clone())),
                });
            }
            let elsewhere: Vec<u64> = p.active_campaigns().collect();
            if !elsewhere.is_empty() {
                if self.policy.already_enrolled != AlreadyEnrolled::Move {
                    let sequence = format!(
                        "Woodpecker campaign {}",
                        elsewhere
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    return decided(Verdict::ActiveElsewhere { sequence });
                }
                for c in elsewhere {
                    if let Err(r) = self.leave(&p.id, c).await {
                        return *r;
                    }
                }
            }
        }
        let body = json!({
            "campaign": {"campaign_id": self.campaign_id},
            "prospects": [Value::Object(fields)],
        });
        let (result, report) = self
            .http
            .call(
                reqwest::Method::POST,
                "/rest/v1/add_prospects_campaign",
                &[],
                Some(&body),
            )
            .await;
        let verdict = match result {
            Err(o) => Verdict::Failed(o),
            Ok(r) => match classify(&r) {
                Outcome::Delivered { .. } => {
                    let answer = vendor::json(&r);
                    let item = &answer["prospects"][0];
                    match add_verdict(item) {
                        Verdict::Enrolled { .. } => Verdict::Enrolled {
                            remote_ids: self.membership(job, mapping::as_text(&item["id"])),
                        },
                        Verdict::AlreadyMember { .. } => Verdict::AlreadyMember {
                            remote_ids: self.membership(job, mapping::as_text(&item["id"])),
                        },
                        other => other,
                    }
                }
                outcome => Verdict::Failed(outcome),
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
    fn campaign_statuses_read_as_standings() {
        use enroll::Standing;
        for (status, want) in [
            ("ACTIVE", Standing::Active),
            ("PAUSED", Standing::Active),
            ("TO-CHECK", Standing::Active),
            ("FINISHED", Standing::Finished),
            ("REPLIED", Standing::Finished),
            ("STOPPED", Standing::Stopped),
            ("BOUNCED", Standing::Stopped),
            ("SOMETHING-NEW", Standing::Active),
        ] {
            assert_eq!(standing(status), want, "{status}");
        }
    }

    #[test]
    fn woodpecker_codes_are_classified() {
        let e =
            |code: &str| format!(r#"{{"status":{{"status":"ERROR","code":"{code}","msg":"x"}}}}"#);
        assert!(matches!(
            classify(&resp(429, &e("E_TOO_MANY_REQUESTS"))),
            Outcome::Throttled { .. }
        ));
        // Whatever the status, the code decides.
        assert!(matches!(
            classify(&resp(400, &e("E_TOO_MANY_REQUESTS"))),
            Outcome::Throttled { .. }
        ));
        assert!(matches!(
            classify(&resp(400, &e("E_SESSION"))),
            Outcome::CredentialsRejected { .. }
        ));
        assert!(matches!(
            classify(&resp(400, &e("E_RECORD_NOT_FOUND"))),
            Outcome::Permanent { .. }
        ));
        assert!(matches!(classify(&resp(503, "")), Outcome::Retry { .. }));
    }

    #[test]
    fn per_prospect_answers_become_verdicts() {
        let v = |s: &str| add_verdict(&serde_json::from_str::<Value>(s).unwrap());
        assert!(matches!(
            v(r#"{"status":"OK","id":1}"#),
            Verdict::Enrolled { .. }
        ));
        assert!(matches!(
            v(r#"{"status":"DUPLICATE","id":1}"#),
            Verdict::AlreadyMember { .. }
        ));
        assert!(matches!(
            v(r#"{"status":"ERROR","code":"E_INV_STATUS","msg":"BLACKLIST"}"#),
            Verdict::VendorSuppressed { .. }
        ));
        assert!(matches!(
            v(r#"{"status":"ERROR","code":"E_EMAIL"}"#),
            Verdict::Failed(Outcome::Permanent { .. })
        ));
    }

    #[test]
    fn a_found_prospect_lists_its_campaigns() {
        let body = serde_json::json!([{"id": 7, "status": "ACTIVE", "campaigns_details": [
            {"campaign_id": 1, "campaign_prospect_status": "ACTIVE"},
            {"campaign_id": 2, "campaign_prospect_status": "REPLIED"}]}]);
        let p = parse_prospect(&body).unwrap();
        assert_eq!(p.id, "7");
        assert_eq!(p.active_campaigns().collect::<Vec<_>>(), [1]);
        assert!(parse_prospect(&serde_json::json!([])).is_none());
        // An id that could not go into a query as it is.
        assert!(parse_prospect(&serde_json::json!([{"id": "7&x=1"}])).is_none());
    }
}
