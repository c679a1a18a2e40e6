//! `apollo`: enrolls people in an Apollo.io sequence under the shared
//! enrollment model ([`super::enroll`], flow in [`super::enroll::person`]).
//!
//! Settings:
//! - `api_key_env` (default `APOLLO_API_KEY`): a *master* API key, sent in
//!   the `X-Api-Key` header (the sequence endpoints answer 403 to other
//!   keys).
//! - `sequence_id` (Apollo id: 24 hex digits, required).
//! - `email_account_id` (24 hex digits, required): the mailbox the
//!   sequence sends from (`send_email_from_email_account_id`).
//! - `exit_mode` (`mark_as_finished` default, `remove` or `stop`): how
//!   `exit_sequences` takes the person out of their sequences.
//! - `[destinations.NAME.mapping.contact]`: the contact's fields (defaults
//!   in `defaults.toml`; `email` required; Apollo contact fields only).
//! - `[destinations.NAME.enrollment]`: `already_enrolled` (`skip`, `queue`
//!   or `move`), `add_limit`, `queue_recheck`, `exit_on`.
//! - `base_url` (default `https://api.apollo.io`), `allow_private_networks`.
//!
//! Find-or-create: "Search for contacts" by email (`q_keywords`, exact
//! email match kept) before "Create a contact" — which Apollo does not
//! deduplicate by itself, so the create also sets `run_dedupe`: a retry
//! after a lost answer finds the contact, and a create racing an earlier
//! lost one answers the same contact. The contact's
//! `contact_campaign_statuses` tell whether they are already in this
//! sequence (done) or active/paused in another (the `already_enrolled`
//! policy; `move` stops them there with `remove_or_stop_contact_ids`).
//! "Add contacts to a sequence" is sent with
//! `sequence_active_in_other_campaigns = false`, so Apollo itself refuses
//! a person who became active elsewhere meanwhile; a skipped contact is
//! read from `skipped_contact_ids` (unsubscribed → `skipped`).
//!
//! Rate limits: Apollo counts requests in fixed windows per minute, hour
//! and day, by plan; the default rate limit is the 50 per minute of
//! Apollo's own example (set yours). A 429 throttles the destination: for
//! `Retry-After` when given, else until the window its headers show
//! exhausted can have reset (minute: 60 s, hour: 5 min probes, day: 1 h
//! probes).
//!
//! Privacy erase: Apollo's API has no contact delete. The erase takes the
//! contact out of the sequence and then dead-letters with the contact id
//! to delete in Apollo by hand.

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

/// The object a contact's id is kept under: `apollo_contact:{sequence id}`.
pub const CONTACT_OBJECT_PREFIX: &str = "apollo_contact:";
pub const DEFAULT_MAPPING: &str = include_str!("defaults.toml");
const OBJECTS: [&str; 1] = ["contact"];
const DEFAULT_BASE_URL: &str = "https://api.apollo.io";
/// Apollo's contact fields ("Create a contact").
const CONTACT_FIELDS: [&str; 9] = [
    "email",
    "first_name",
    "last_name",
    "organization_name",
    "title",
    "website_url",
    "direct_phone",
    "present_raw_address",
    "label_names",
];

fn default_key_env() -> String {
    "APOLLO_API_KEY".into()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ExitMode {
    #[default]
    MarkAsFinished,
    Remove,
    Stop,
}

impl ExitMode {
    fn as_str(self) -> &'static str {
        match self {
            ExitMode::MarkAsFinished => "mark_as_finished",
            ExitMode::Remove => "remove",
            ExitMode::Stop => "stop",
        }
    }
}

#[derive(Debug, Deserialize)]
struct Settings {
    #[serde(default = "default_key_env")]
    api_key_env: String,
    sequence_id: String,
    email_account_id: String,
    #[serde(default)]
    exit_mode: ExitMode,
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
        name: "apollo",
        summary: "Apollo.io: find or create the contact, add them to a sequence, once",
        defaults: Defaults {
            rate_limit: Some(Rate {
                count: 50,
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

struct Apollo {
    client: reqwest::Client,
    base: String,
    api_key: String,
    sequence_id: String,
    email_account_id: String,
    exit_mode: ExitMode,
    mapping: Mapping,
    policy: enroll::Policy,
    allow_private: bool,
}

/// Apollo ids (sequences, contacts, email accounts) are 24 hex digits.
pub fn is_apollo_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let s: Settings = parse_settings(ctx.settings)?;
    let mut problems = Vec::new();
    let api_key = ctx
        .secret("api_key_env", &s.api_key_env)
        .map_err(|p| problems.push(p))
        .ok();
    for (key, value) in [
        ("sequence_id", &s.sequence_id),
        ("email_account_id", &s.email_account_id),
    ] {
        if !is_apollo_id(value.trim()) {
            problems.push(Problem::error(
                key,
                "an Apollo id: 24 hexadecimal digits, e.g. 66e9e215ece19801b219997f",
            ));
        }
    }
    let base = crm::base_url(s.base_url.as_deref(), DEFAULT_BASE_URL)
        .map_err(|p| problems.push(p))
        .ok();
    let mapping = Mapping::compile(DEFAULT_MAPPING, Some(&s.mapping), &OBJECTS)
        .map_err(|ps| problems.extend(ps))
        .ok();
    let client = shared::client(ctx.timeout, s.allow_private_networks)
        .map_err(|m| problems.push(Problem::error("", m)))
        .ok();
    let policy = enroll::Policy::new("apollo", &s.enrollment, true)
        .map(|p| p.in_sequence(&s.sequence_id.trim().to_ascii_lowercase()))
        .map_err(|p| problems.push(p))
        .ok();
    let (Some(api_key), Some(base), Some(mapping), Some(client), Some(policy), true) =
        (api_key, base, mapping, client, policy, problems.is_empty())
    else {
        return Err(problems);
    };
    Ok(Arc::new(Apollo {
        client,
        base,
        api_key,
        sequence_id: s.sequence_id.trim().to_ascii_lowercase(),
        email_account_id: s.email_account_id.trim().to_ascii_lowercase(),
        exit_mode: s.exit_mode,
        mapping,
        policy,
        allow_private: s.allow_private_networks,
    }))
}

/// The wait a 429 asks for: `Retry-After`, else the exhausted window's.
fn throttle_wait(resp: &HttpResponse) -> Option<Duration> {
    if let Some(d) = shared::parse_retry_after(&resp.headers) {
        return Some(d);
    }
    let exhausted = |name: &str| {
        resp.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0")
    };
    if exhausted("x-daily-requests-left") {
        Some(Duration::from_secs(3600))
    } else if exhausted("x-hourly-requests-left") {
        Some(Duration::from_secs(300))
    } else if exhausted("x-minute-requests-left") {
        Some(Duration::from_secs(60))
    } else {
        None
    }
}

/// Apollo's statuses: 429 with its window's wait, 403 (not a master key)
/// and 404 permanent, otherwise the shared classification.
fn classify(resp: &HttpResponse) -> Outcome {
    let excerpt = || crate::redact::excerpt(&resp.body, 200);
    match resp.status {
        429 => Outcome::Throttled {
            message: format!("Apollo: HTTP 429: {}", excerpt()),
            retry_after: throttle_wait(resp),
        },
        403 => Outcome::permanent(
            ErrorClass::Auth,
            format!(
                "Apollo refused the key for this endpoint (sequences need a master API key): {}",
                excerpt()
            ),
        ),
        404 => Outcome::permanent(
            ErrorClass::Http4xx,
            format!("Apollo: not found ({})", excerpt()),
        ),
        _ => shared::classify(resp),
    }
}

/// A contact of an Apollo answer.
fn person_of(v: &Value) -> Option<(String, Person)> {
    let id = v["id"].as_str().filter(|id| is_apollo_id(id))?.to_string();
    let email = v["email"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    let memberships = v["contact_campaign_statuses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    Some(Membership {
                        id: mapping::as_text(&s["id"]).unwrap_or_default(),
                        sequence: s["emailer_campaign_id"].as_str()?.to_string(),
                        live: matches!(s["status"].as_str(), Some("active" | "paused")),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some((email, Person { id, memberships }))
}

/// The contacts of a search answer with exactly this email.
fn people_with(body: &str, email: &str) -> Vec<Person> {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    v["contacts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(person_of)
                .filter(|(e, _)| e == email)
                .map(|(_, p)| p)
                .collect()
        })
        .unwrap_or_default()
}

/// What Apollo's answer to "add contacts to a sequence" says about one contact.
fn add_verdict(body: &str, contact: &str, sequence: &str) -> Verdict {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if let Some(reason) = v["skipped_contact_ids"][contact].as_str() {
        return match reason {
            r if r.contains("other_campaign") => Verdict::ActiveElsewhere {
                sequence: "another Apollo sequence".into(),
            },
            r if r.contains("unsubscribed") || r.contains("bounced") => Verdict::VendorSuppressed {
                message: format!("Apollo skipped the contact ({r})"),
            },
            r => Verdict::Failed(Outcome::permanent(
                ErrorClass::Vendor,
                format!("Apollo skipped the contact: {r}"),
            )),
        };
    }
    let added = v["contacts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(person_of)
        .any(|(_, p)| p.id == contact && p.live_in(sequence));
    if added {
        Verdict::Enrolled {
            remote_ids: Vec::new(),
        }
    } else {
        Verdict::Failed(Outcome::retry(
            ErrorClass::Vendor,
            "Apollo neither added the contact nor said why it skipped it",
        ))
    }
}

impl Apollo {
    async fn post(
        &self,
        path: &str,
        body: &Value,
        report: &mut AttemptReport,
    ) -> Result<HttpResponse, Outcome> {
        let url = format!("{}/api/v1{path}", self.base);
        let req = self
            .client
            .post(&url)
            .header("x-api-key", &self.api_key)
            .header("cache-control", "no-cache")
            .json(body)
            .build();
        let (result, r) = enroll::send(&self.client, req, &url, self.allow_private).await;
        *report = r;
        let resp = result?;
        match classify(&resp) {
            Outcome::Delivered { .. } => Ok(resp),
            other => Err(other),
        }
    }

    async fn stop(
        &self,
        sequences: Vec<String>,
        contacts: Vec<String>,
        mode: ExitMode,
        report: &mut AttemptReport,
    ) -> Result<(), Outcome> {
        let body = json!({
            "emailer_campaign_ids": sequences,
            "contact_ids": contacts,
            "mode": mode.as_str(),
        });
        self.post(
            "/emailer_campaigns/remove_or_stop_contact_ids",
            &body,
            report,
        )
        .await
        .map(|_| ())
    }

    async fn erase(&self, targets: Result<Vec<crm::EraseTarget>, String>) -> JobResult {
        crm::erase_each("apollo", targets, |t| async move {
            let sequence = t
                .object
                .strip_prefix(CONTACT_OBJECT_PREFIX)
                .unwrap_or_default()
                .to_string();
            if !is_apollo_id(&sequence) || !is_apollo_id(&t.id) {
                let m = format!("{:?} in {:?} is not an Apollo contact id", t.id, t.object);
                return (crm::Deleted::Malformed(m), Default::default());
            }
            let mut report = AttemptReport::default();
            let outcome = match self
                .stop(
                    vec![sequence.clone()],
                    vec![t.id.clone()],
                    ExitMode::Remove,
                    &mut report,
                )
                .await
            {
                Err(o) => o,
                Ok(()) => Outcome::permanent(
                    ErrorClass::Vendor,
                    format!(
                        "Apollo's API cannot delete contacts: contact {} was removed from sequence \
                         {sequence}; delete the contact in Apollo to finish the erasure",
                        t.id
                    ),
                ),
            };
            (
                crm::Deleted::Refused {
                    status: None,
                    outcome,
                },
                report,
            )
        })
        .await
    }
}

#[async_trait]
impl PersonTool for Apollo {
    fn tool(&self) -> &'static str {
        "apollo"
    }

    fn sequence(&self) -> &str {
        &self.sequence_id
    }

    fn object(&self) -> String {
        format!("{CONTACT_OBJECT_PREFIX}{}", self.sequence_id)
    }

    fn fields(&self, job: &DeliveryJob) -> Result<Map<String, Value>, String> {
        let fields = self
            .mapping
            .apply("contact", &mapping::context(job))
            .map_err(|e| e.to_string())?;
        if let Some(k) = fields
            .keys()
            .find(|k| !CONTACT_FIELDS.contains(&k.as_str()))
        {
            return Err(format!(
                "mapping contact.{k}: not an Apollo contact field (allowed: {})",
                CONTACT_FIELDS.join(", ")
            ));
        }
        Ok(fields)
    }

    async fn find(&self, email: &str, report: &mut AttemptReport) -> Result<Vec<Person>, Outcome> {
        let body = json!({"q_keywords": email, "page": 1, "per_page": 100});
        let resp = self.post("/contacts/search", &body, report).await?;
        Ok(people_with(&resp.body, email))
    }

    async fn create(
        &self,
        email: &str,
        mut fields: Map<String, Value>,
        report: &mut AttemptReport,
    ) -> Result<Person, Outcome> {
        fields.insert("email".into(), json!(email));
        fields.insert("run_dedupe".into(), json!(true));
        let resp = self
            .post("/contacts", &Value::Object(fields), report)
            .await?;
        let v: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
        person_of(&v["contact"]).map(|(_, p)| p).ok_or_else(|| {
            Outcome::retry(
                ErrorClass::Vendor,
                "Apollo answered the create without a contact id",
            )
        })
    }

    async fn add(&self, person: &Person, report: &mut AttemptReport) -> Result<Verdict, Outcome> {
        let body = json!({
            "emailer_campaign_id": self.sequence_id,
            "contact_ids": [person.id],
            "send_email_from_email_account_id": self.email_account_id,
            "sequence_active_in_other_campaigns": false,
            "sequence_finished_in_other_campaigns": true,
        });
        let path = format!("/emailer_campaigns/{}/add_contact_ids", self.sequence_id);
        let resp = self.post(&path, &body, report).await?;
        Ok(add_verdict(&resp.body, &person.id, &self.sequence_id))
    }

    async fn remove(
        &self,
        person: &Person,
        memberships: &[Membership],
        report: &mut AttemptReport,
    ) -> Result<(), Outcome> {
        let sequences = memberships.iter().map(|m| m.sequence.clone()).collect();
        self.stop(sequences, vec![person.id.clone()], self.exit_mode, report)
            .await
    }
}

#[async_trait]
impl Connector for Apollo {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        person::deliver(self, &self.policy, jobs, |t| self.erase(t)).await
    }

    fn skip_reason(&self, job: &DeliveryJob) -> Option<String> {
        enroll::skip_reason(job)
    }

    fn enrollment(&self) -> Option<&enroll::Policy> {
        Some(&self.policy)
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<Value, String>> {
        Some(self.fields(job).map(|contact| {
            json!({
                "url": format!("{}/api/v1/emailer_campaigns/{}/add_contact_ids", self.base, self.sequence_id),
                "contact": contact,
            })
        }))
    }

    async fn check(&self) -> CheckReport {
        let mut report = AttemptReport::default();
        let url = format!("{}/api/v1/auth/health", self.base);
        let req = self
            .client
            .get(&url)
            .header("x-api-key", &self.api_key)
            .build();
        match enroll::send(&self.client, req, &url, self.allow_private)
            .await
            .0
        {
            Ok(r) if r.status == 200 => {
                let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                if v["is_logged_in"] == json!(false) {
                    return CheckReport::failed("Apollo does not accept the API key");
                }
            }
            Ok(r) => return CheckReport::failed(crm::outcome_text(&classify(&r))),
            Err(o) => return CheckReport::failed(crm::outcome_text(&o)),
        }
        // The sequence exists (and the key is a master key: 403 otherwise).
        for page in 1..=10 {
            let body = json!({"page": page, "per_page": 100});
            match self
                .post("/emailer_campaigns/search", &body, &mut report)
                .await
            {
                Err(o) => return CheckReport::failed(crm::outcome_text(&o)),
                Ok(resp) => {
                    let v: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
                    let list = v["emailer_campaigns"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if list
                        .iter()
                        .any(|s| s["id"].as_str() == Some(&self.sequence_id))
                    {
                        return CheckReport::ok(format!(
                            "Apollo accepted the master API key; sequence {} exists",
                            self.sequence_id
                        ));
                    }
                    if list.len() < 100 {
                        break;
                    }
                }
            }
        }
        CheckReport::failed(format!(
            "Apollo has no sequence {} for this key",
            self.sequence_id
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&'static str, &str)], body: &str) -> HttpResponse {
        HttpResponse::canned(status, headers, body)
    }

    #[test]
    fn a_429_waits_for_the_exhausted_window() {
        let minute = resp(
            429,
            &[
                ("x-minute-requests-left", "0"),
                ("x-hourly-requests-left", "40"),
            ],
            "{}",
        );
        assert!(
            matches!(classify(&minute), Outcome::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(60))
        );
        let day = resp(429, &[("x-daily-requests-left", "0")], "{}");
        assert!(
            matches!(classify(&day), Outcome::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(3600))
        );
        let told = resp(
            429,
            &[("retry-after", "7"), ("x-daily-requests-left", "0")],
            "{}",
        );
        assert!(
            matches!(classify(&told), Outcome::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(7))
        );
        assert!(matches!(
            classify(&resp(403, &[], "{}")),
            Outcome::Permanent {
                class: ErrorClass::Auth,
                ..
            }
        ));
    }

    #[test]
    fn search_answers_keep_exact_email_matches_and_their_sequences() {
        let body = r#"{"contacts": [
            {"id": "66e34b810000000000000001", "email": "Ana@x.io", "contact_campaign_statuses": [
                {"id": "s1", "emailer_campaign_id": "66e9e215ece19801b219997f", "status": "active"},
                {"id": "s2", "emailer_campaign_id": "66e9e215ece19801b2199980", "status": "finished"}]},
            {"id": "66e34b810000000000000002", "email": "ana@x.io.evil", "contact_campaign_statuses": []},
            {"id": "not-an-id", "email": "ana@x.io"}]}"#;
        let people = people_with(body, "ana@x.io");
        assert_eq!(people.len(), 1);
        assert_eq!(people[0].memberships.len(), 2);
        assert!(people[0].memberships[0].live && !people[0].memberships[1].live);
    }

    #[test]
    fn skipped_contacts_are_read_by_reason() {
        let c = "66e34b810000000000000001";
        let seq = "66e9e215ece19801b219997f";
        let skipped =
            |r: &str| format!(r#"{{"contacts": [], "skipped_contact_ids": {{"{c}": "{r}"}}}}"#);
        assert!(matches!(
            add_verdict(&skipped("contacts_active_in_other_campaigns"), c, seq),
            Verdict::ActiveElsewhere { .. }
        ));
        assert!(matches!(
            add_verdict(&skipped("contacts_unsubscribed"), c, seq),
            Verdict::VendorSuppressed { .. }
        ));
        assert!(matches!(
            add_verdict(&skipped("contacts_without_email"), c, seq),
            Verdict::Failed(Outcome::Permanent { .. })
        ));
        let added = format!(
            r#"{{"contacts": [{{"id": "{c}", "contact_campaign_statuses": [{{"emailer_campaign_id": "{seq}", "status": "active"}}]}}]}}"#
        );
        assert!(matches!(
            add_verdict(&added, c, seq),
            Verdict::Enrolled { .. }
        ));
        assert!(matches!(
            add_verdict("{}", c, seq),
            Verdict::Failed(Outcome::Retry { .. })
        ));
    }

    #[test]
    fn settings_problems_name_their_keys() {
        let settings: toml::Table = toml::from_str(
            "sequence_id = \"nope\"\nemail_account_id = \"6095a710bd01d100a506d4ac\"\n[mapping.contact]\nplan = { value = \"pro\" }\n[enrollment]\nalready_enrolled = \"move\"",
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
        assert!(paths.contains(&"api_key_env"), "{paths:?}");
        assert!(paths.contains(&"sequence_id"), "{paths:?}");
        assert!(
            !paths.contains(&"enrollment.already_enrolled"),
            "Apollo can move: {paths:?}"
        );
    }
}
