//! `salesforce`: Leads or Contacts (with Accounts), Opportunities, Tasks and
//! custom `__c` objects through the REST API (`api_version`, 60.0 or later),
//! logged in with OAuth 2.0 — the refresh-token flow or the JWT bearer flow
//! of a connected app — using the `instance_url` the token endpoint returns.
//!
//! Per delivery:
//!
//! 1. account (Contact mode, new leads with a company): the kept id, else a
//!    SOQL lookup by name, else created — under a per-name lock;
//! 2. person: the kept id; else, with `external_id_field`, an upsert by it;
//!    else a SOQL lookup by email (duplicate-safe find-or-create). A create
//!    that trips a duplicate rule (`DUPLICATES_DETECTED`) is linked to a
//!    record the rule matched only when that record has the same email
//!    (matching rules are fuzzy: name + company): the same object is updated;
//!    in Lead mode a matching Contact gets the tasks (`WhoId`) and no Lead is
//!    written. Any other match dead-letters, naming the rule and the records;
//! 3. the person write, the opportunity, tasks (the message, a follow-up, a
//!    reply, a meeting) and custom objects go out as ONE composite request
//!    (`allOrNone`), subrequests referring to each other with `@{ref.id}` —
//!    a single write goes out directly.
//!
//! Ids are kept per person (`lead`/`contact`, `opportunity`), per company
//! name (`account`) and per event (tasks, custom records) and reused.

mod api;
mod auth;
mod campaign;
mod convert;
mod influence;
pub mod sync;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use jsonwebtoken::EncodingKey;
use leadrelay_model::EventType;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use self::api::{DuplicateMatch, Failure, Rest, Sub, soql_quote};
use self::auth::{Auth, Flow};
use super::crm::{
    self, Activity, CommonSettings, DealStep, EventKind, IdCache, KeyedLocks, Learned, Plan,
    remote_id,
};
use super::http as shared;
use super::{
    AttemptReport, BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob,
    ErrorClass, JobResult, Outcome,
};
use crate::config::{HumanDuration, Problem};
use crate::mapping::{self, Mapping};
use crate::store::RemoteId;

/// The default field mapping (also shown in the README).
pub const DEFAULT_MAPPING: &str = include_str!("defaults.toml");
const OBJECTS: [&str; 5] = ["lead", "contact", "account", "opportunity", "task"];
const DEFAULT_LOGIN_URL: &str = "https://login.salesforce.com";

fn default_client_id_env() -> String {
    "SALESFORCE_CLIENT_ID".into()
}
fn default_client_secret_env() -> String {
    "SALESFORCE_CLIENT_SECRET".into()
}
fn default_refresh_token_env() -> String {
    "SALESFORCE_REFRESH_TOKEN".into()
}
fn default_jwt_key_env() -> String {
    "SALESFORCE_JWT_PRIVATE_KEY".into()
}
fn default_login_url() -> String {
    DEFAULT_LOGIN_URL.into()
}
fn default_version() -> String {
    "60.0".into()
}
fn default_meeting_status() -> String {
    "Working - Contacted".into()
}
fn default_key_field() -> String {
    "LeadRelay_Key__c".into()
}
fn thirty_days() -> HumanDuration {
    HumanDuration::secs(30 * 86_400)
}
fn new_lead_events() -> Vec<String> {
    vec!["lead.created".into(), "form.submitted".into()]
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
enum AuthFlow {
    #[default]
    RefreshToken,
    Jwt,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
enum PersonObject {
    #[default]
    Lead,
    Contact,
}

impl PersonObject {
    fn api_name(self) -> &'static str {
        match self {
            PersonObject::Lead => "Lead",
            PersonObject::Contact => "Contact",
        }
    }

    /// The mapping object and remote-id object name.
    fn key(self) -> &'static str {
        match self {
            PersonObject::Lead => "lead",
            PersonObject::Contact => "contact",
        }
    }
}

/// Salesforce's own settings (besides [`CommonSettings`]).
#[derive(Debug, Clone, Deserialize)]
struct Settings {
    /// `refresh_token` (default) or `jwt`.
    #[serde(default)]
    auth: AuthFlow,
    /// Where leadrelay logs in (`https://test.salesforce.com` for sandboxes).
    #[serde(default = "default_login_url")]
    login_url: String,
    /// The token endpoint (default `{login_url}/services/oauth2/token`).
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default = "default_client_id_env")]
    client_id_env: String,
    #[serde(default = "default_client_secret_env")]
    client_secret_env: String,
    #[serde(default = "default_refresh_token_env")]
    refresh_token_env: String,
    /// JWT: the env var holding the connected app certificate's private key (PEM).
    #[serde(default = "default_jwt_key_env")]
    jwt_private_key_env: String,
    /// JWT: the user leadrelay acts as.
    #[serde(default)]
    username: Option<String>,
    /// JWT: the assertion's audience (default: `login_url`).
    #[serde(default)]
    jwt_audience: Option<String>,
    /// REST API version, 60.0 or later.
    #[serde(default = "default_version")]
    api_version: String,
    /// `Lead` (default) or `Contact` (with Accounts and Opportunities).
    #[serde(default)]
    person_object: PersonObject,
    /// An external id field on the person object to upsert by.
    #[serde(default)]
    external_id_field: Option<String>,
    /// Lead `Status` of leads leadrelay sees first (org default when unset).
    #[serde(default)]
    lead_status: Option<String>,
    /// Lead `Status` set on `meeting.booked` (Lead mode; `""`: leave it).
    #[serde(default = "default_meeting_status")]
    meeting_lead_status: String,
    /// Opportunity `CloseDate`: this long after the lead arrived.
    #[serde(default = "thirty_days")]
    close_date_in: HumanDuration,
    #[serde(default)]
    custom_objects: Vec<CustomObjectSettings>,
    /// An External ID field (text, unique) on Opportunity holding the id of
    /// the delivery that opened it: opportunities are upserted by it, so one
    /// written just before a crash is updated on the retry, not created
    /// again. `""`: create them.
    #[serde(default = "default_key_field")]
    opportunity_key_field: String,
    /// The same on Task (an activity custom field marked External ID),
    /// holding `{delivery id}-{note|task|meeting}`.
    #[serde(default = "default_key_field")]
    task_key_field: String,
    /// Form submissions make the person a campaign member (see [`campaign`]).
    #[serde(default)]
    campaign_members: Option<campaign::CampaignSettings>,
    /// Qualified leads are converted (see [`convert`]).
    #[serde(default)]
    lead_conversion: Option<convert::ConversionSettings>,
}

/// `[[destinations.NAME.custom_objects]]`
#[derive(Debug, Clone, Deserialize)]
struct CustomObjectSettings {
    /// The API name, e.g. `Project__c`.
    object: String,
    #[serde(default = "new_lead_events")]
    events: Vec<String>,
    /// An external id field to upsert by (else a record per event).
    #[serde(default)]
    external_id_field: Option<String>,
    #[serde(default)]
    mapping: toml::Table,
}

pub fn kind() -> ConnectorKind {
    ConnectorKind {
        name: "salesforce",
        summary: "Salesforce: Leads or Contacts + Accounts, Opportunities, Tasks, custom objects; OAuth refresh token or JWT bearer",
        defaults: Defaults {
            rate_limit: None,
            concurrency: 4,
            batch_size: 1,
            max_batch_size: 10,
        },
        personal_data: true,
        build,
    }
}

struct Salesforce {
    rest: Rest,
    common: CommonSettings,
    s: Settings,
    mapping: Mapping,
    learned: Learned,
    cache: IdCache,
    account_locks: KeyedLocks,
    /// The org lacks `opportunity_key_field` / `task_key_field` (learned
    /// from a refused upsert): those records are created, as before.
    opportunity_key_missing: AtomicBool,
    task_key_missing: AtomicBool,
    /// `attribution.campaign_influence`: Campaign Influence records of this
    /// model for attribution writebacks (see [`influence`]).
    influence: Option<influence::InfluenceSettings>,
    /// `attribution.campaign_members.status`: credited campaigns' members.
    attribution_members: Option<String>,
}

fn custom_name(object: &str) -> String {
    format!("custom:{object}")
}

fn is_api_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The REST client of a destination's settings (login, token URL, API
/// version, OAuth flow), or the problems found on the way.
fn rest(
    ctx: &BuildContext<'_>,
    common: &CommonSettings,
    s: &Settings,
    problems: &mut Vec<Problem>,
) -> Option<Rest> {
    let login_url = crm::base_url(Some(&s.login_url), DEFAULT_LOGIN_URL)
        .map_err(|mut p| {
            p.path = "login_url".into();
            problems.push(p)
        })
        .ok();
    let token_url = match &s.token_url {
        Some(t) => crm::base_url(Some(t), DEFAULT_LOGIN_URL)
            .map_err(|mut p| {
                p.path = "token_url".into();
                problems.push(p)
            })
            .ok(),
        None => login_url
            .as_ref()
            .map(|l| format!("{l}/services/oauth2/token")),
    };
    let instance_override = match &common.base_url {
        Some(b) => crm::base_url(Some(b), DEFAULT_LOGIN_URL)
            .map_err(|p| problems.push(p))
            .ok(),
        None => None,
    };
    let version = match s.api_version.trim().trim_start_matches('v').split_once('.') {
        Some((major, minor))
            if major.parse::<u32>().is_ok_and(|m| m >= 60) && minor.parse::<u32>().is_ok() =>
        {
            Some(format!("v{}", s.api_version.trim().trim_start_matches('v')))
        }
        _ => {
            problems.push(Problem::error(
                "api_version",
                format!(
                    "{:?}: use a REST API version of 60.0 or later, e.g. \"60.0\"",
                    s.api_version
                ),
            ));
            None
        }
    };
    let client_id = ctx
        .secret("client_id_env", &s.client_id_env)
        .map_err(|p| problems.push(p))
        .ok();
    let flow = match s.auth {
        AuthFlow::RefreshToken => {
            let secret = ctx.secret("client_secret_env", &s.client_secret_env).ok();
            let refresh = ctx
                .secret("refresh_token_env", &s.refresh_token_env)
                .map_err(|p| problems.push(p))
                .ok();
            match (client_id.clone(), refresh) {
                (Some(client_id), Some(refresh_token)) => Some(Flow::RefreshToken {
                    client_id,
                    client_secret: secret,
                    refresh_token,
                }),
                _ => None,
            }
        }
        AuthFlow::Jwt => {
            if s.username.as_deref().is_none_or(|u| u.trim().is_empty()) {
                problems.push(Problem::error(
                    "username",
                    "the JWT bearer flow needs the Salesforce username",
                ));
            }
            let key = ctx
                .secret("jwt_private_key_env", &s.jwt_private_key_env)
                .map_err(|p| problems.push(p))
                .ok()
                .and_then(|pem| {
                    match EncodingKey::from_rsa_pem(pem.replace("\\n", "\n").as_bytes()) {
                        Ok(k) => Some(k),
                        Err(e) => {
                            problems.push(Problem::error(
                                "jwt_private_key_env",
                                format!(
                                    "{} is not an RSA private key in PEM: {e}",
                                    s.jwt_private_key_env
                                ),
                            ));
                            None
                        }
                    }
                });
            match (client_id.clone(), key, &s.username, &login_url) {
                (Some(client_id), Some(key), Some(username), Some(login)) => Some(Flow::Jwt {
                    client_id,
                    username: username.trim().to_string(),
                    audience: s.jwt_audience.clone().unwrap_or_else(|| login.clone()),
                    key,
                }),
                _ => None,
            }
        }
    };
    let client = shared::client(ctx.timeout, common.allow_private_networks)
        .map_err(|m| problems.push(Problem::error("", m)))
        .ok();
    let (flow, token_url, version, client) = (flow?, token_url?, version?, client?);
    let auth = Auth::new(
        client.clone(),
        token_url,
        flow,
        common.allow_private_networks,
        instance_override,
    );
    Some(Rest::new(
        client,
        auth,
        version,
        common.allow_private_networks,
    ))
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let (mut common, s): (CommonSettings, Settings) = crm::parse_split(ctx.settings)?;
    let mut problems = Vec::new();
    let influence =
        influence::InfluenceSettings::parse(common.attribution.0.remove(influence::SECTION))
            .map_err(|ps| problems.extend(ps))
            .ok()
            .flatten();
    let attribution_members =
        influence::parse_members(common.attribution.0.remove(influence::MEMBERS))
            .map_err(|ps| problems.extend(ps))
            .ok()
            .flatten();
    problems.extend(
        common
            .attribution
            .problems(&[s.person_object.key(), "opportunity"]),
    );
    let rest = rest(ctx, &common, &s, &mut problems);
    for (setting, f) in [
        ("opportunity_key_field", &s.opportunity_key_field),
        ("task_key_field", &s.task_key_field),
    ] {
        if !f.is_empty() && !is_api_name(f) {
            problems.push(Problem::error(
                setting,
                format!("{f:?} is not a field API name (\"\" switches it off)"),
            ));
        }
    }
    if let Some(f) = &s.external_id_field
        && !is_api_name(f)
    {
        problems.push(Problem::error(
            "external_id_field",
            format!("{f:?} is not a field API name"),
        ));
    }
    if s.person_object == PersonObject::Lead
        && (common.deals || common.meeting_deal_stage.is_some() || !common.stage_map.is_empty())
    {
        problems.push(Problem::error(
            "person_object",
            "opportunities (deals, meeting_deal_stage, stage_map) need person_object = \"Contact\": leads have no accounts to hang them on",
        ));
    }
    if let Some(c) = &s.lead_conversion {
        if s.person_object != PersonObject::Lead {
            problems.push(Problem::error(
                "lead_conversion",
                "lead conversion needs person_object = \"Lead\" (Contacts are converted already)",
            ));
        }
        for (j, e) in c.events.iter().enumerate() {
            if let Err(err) = EventType::parse(e) {
                problems.push(Problem::error(
                    format!("lead_conversion.events[{j}]"),
                    err.to_string(),
                ));
            }
        }
        if c.events.is_empty() {
            problems.push(Problem::error(
                "lead_conversion.events",
                "name at least one event type that converts the lead",
            ));
        }
        if c.converted_status.trim().is_empty() {
            problems.push(Problem::error(
                "lead_conversion.converted_status",
                "a lead status whose IsConverted is true, e.g. \"Closed - Converted\"",
            ));
        }
    }
    let mut extra = Vec::new();
    for (i, c) in s.custom_objects.iter().enumerate() {
        let path = format!("custom_objects[{i}]");
        if !c.object.ends_with("__c") || !is_api_name(&c.object) {
            problems.push(Problem::error(
                format!("{path}.object"),
                "a custom object API name ending in __c",
            ));
        }
        for (j, e) in c.events.iter().enumerate() {
            if let Err(err) = EventType::parse(e) {
                problems.push(Problem::error(
                    format!("{path}.events[{j}]"),
                    err.to_string(),
                ));
            }
        }
        if let Some(f) = &c.external_id_field
            && !c.mapping.contains_key(f)
        {
            problems.push(Problem::error(
                format!("{path}.external_id_field"),
                format!("{f:?} must be mapped in {path}.mapping (it is the record's key)"),
            ));
        }
        extra.push((
            custom_name(&c.object),
            c.mapping.clone(),
            format!("{path}.mapping"),
        ));
    }
    let mapping = Mapping::compile_with(DEFAULT_MAPPING, Some(&common.mapping), &OBJECTS, &extra)
        .map_err(|ps| problems.extend(ps))
        .ok();
    let (Some(rest), Some(mapping), true) = (rest, mapping, problems.is_empty()) else {
        return Err(problems);
    };
    Ok(Arc::new(Salesforce {
        rest,
        common,
        s,
        mapping,
        learned: Learned::default(),
        cache: IdCache::default(),
        account_locks: KeyedLocks::default(),
        opportunity_key_missing: AtomicBool::new(false),
        task_key_missing: AtomicBool::new(false),
        influence,
        attribution_members,
    }))
}

fn account_key(name: &str) -> String {
    format!("account:{}", name.trim().to_lowercase())
}

/// A failed step: the outcome and the report of the request that failed.
struct Stop {
    outcome: Outcome,
    report: Option<AttemptReport>,
}

impl From<Outcome> for Stop {
    fn from(outcome: Outcome) -> Self {
        Stop {
            outcome,
            report: None,
        }
    }
}

fn stop(f: Failure, report: AttemptReport) -> Stop {
    Stop {
        outcome: f.outcome,
        report: Some(report),
    }
}

fn mapping_stop(e: mapping::MappingError) -> Stop {
    Outcome::permanent(ErrorClass::Mapping, e.to_string()).into()
}

/// Whether `id` has a Salesforce record id's shape (15 or 18 alphanumerics).
fn is_record_id(id: &str) -> bool {
    matches!(id.len(), 15 | 18) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The same record: 15-character ids are the 18-character ones' prefix.
fn ids_equal(a: &str, b: &str) -> bool {
    a.len() >= 15 && b.len() >= 15 && a[..15] == b[..15]
}

/// How the person is written in the composite.
enum PersonWrite {
    /// PATCH a known record.
    Update(String),
    /// Upsert by external id (field, value).
    Upsert(String, String),
    /// POST a new record.
    Create,
    /// Lead mode, the person is already a Contact (a duplicate rule found
    /// it by the same email): no Lead is written, the tasks go on the
    /// Contact (`WhoId` takes Contact ids).
    OnContact(String),
}

/// One delivery's progress.
struct Run<'a> {
    job: &'a DeliveryJob,
    plan: Plan,
    ctx: Value,
    report: AttemptReport,
    ids: Vec<RemoteId>,
    /// Save the person through a duplicate rule's alert (the rule matched
    /// other people only).
    allow_save: bool,
}

impl Salesforce {
    fn learn(&self, run: &mut Run<'_>, object: &str, key: &str, id: &str) {
        let r = remote_id(object, key, id);
        self.learned.push(r.clone());
        self.cache.put(key, object, id);
        run.ids.push(r);
    }

    fn known(&self, job: &DeliveryJob, key: &str, object: &str) -> Option<String> {
        crm::stored(job, key, object)
            .map(str::to_string)
            .or_else(|| self.cache.get(key, object))
    }

    /// A privacy erase: each lead or contact deleted
    /// (`DELETE /services/data/vXX.X/sobjects/{Lead|Contact}/{id}`; it goes
    /// to the recycle bin, which Salesforce empties after 15 days). A record
    /// Salesforce no longer has (404) counts as erased.
    async fn erase(&self, targets: Result<Vec<crm::EraseTarget>, String>) -> JobResult {
        crm::erase_each("salesforce", targets, |t| async move {
            let object = if t.object == "lead" {
                "Lead"
            } else {
                "Contact"
            };
            // Salesforce ids are 15 or 18 alphanumeric characters.
            if !matches!(t.id.len(), 15 | 18) || !t.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                let m = format!("{:?} is not a Salesforce record id", t.id);
                return (crm::Deleted::Malformed(m), Default::default());
            }
            let path = format!("/sobjects/{object}/{}", t.id);
            let (result, r) = self.rest.call(Method::DELETE, &path, &[], None).await;
            (
                crm::Deleted::of(result.map_err(|f| (f.status, f.outcome))),
                r,
            )
        })
        .await
    }

    async fn deliver_one(&self, job: &DeliveryJob) -> JobResult {
        let plan = match Plan::of(job, &self.common) {
            Ok(p) => p,
            Err(m) => {
                return JobResult {
                    outcome: Outcome::permanent(ErrorClass::Mapping, m),
                    report: AttemptReport::default(),
                };
            }
        };
        let mut run = Run {
            job,
            plan,
            ctx: mapping::context(job),
            report: AttemptReport::default(),
            ids: Vec::new(),
            allow_save: false,
        };
        match self.steps(&mut run).await {
            Ok(()) => JobResult {
                outcome: Outcome::Delivered {
                    remote_ids: run.ids,
                },
                report: run.report,
            },
            Err(s) => JobResult {
                outcome: s.outcome,
                report: s.report.unwrap_or(run.report),
            },
        }
    }

    async fn steps(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        let job = run.job;
        // Leaving a HubSpot list only ever changes a campaign membership.
        if campaign::is_list_left(&job.event.event_type) {
            return self.leave_campaign(run).await;
        }
        if self.s.person_object == PersonObject::Lead && run.plan.deal != DealStep::None {
            return Err(Outcome::permanent(
                ErrorClass::Mapping,
                "deal.stage_changed needs person_object = \"Contact\" (opportunities hang on accounts)",
            )
            .into());
        }
        Activity::of(job, &self.common).into_context(&mut run.ctx);
        let arrived = job.event.occurred_at.max(job.event.received_at);
        let close =
            arrived + chrono::Duration::from_std(self.s.close_date_in.get()).unwrap_or_default();
        mapping::set(
            &mut run.ctx,
            "crm",
            "close_date",
            close.format("%Y-%m-%d").to_string(),
        );
        if let Some(o) =
            crm::assigned_owner(job, "salesforce_user_id").or_else(|| self.common.owner_id.clone())
        {
            mapping::set(&mut run.ctx, "crm", "owner_id", o);
        }
        let object = self.s.person_object;
        let key = job.delivery.contact_key.clone();
        let person = self
            .known(job, &key, object.key())
            .or_else(|| crm::vendor_ref(job, "salesforce", object.key()).map(str::to_string));
        let status = match run.plan.kind {
            EventKind::NewLead if person.is_none() => self.s.lead_status.clone(),
            EventKind::Meeting => Some(self.s.meeting_lead_status.clone()),
            _ => None,
        };
        if let Some(st) = status.filter(|s| !s.trim().is_empty())
            && object == PersonObject::Lead
        {
            mapping::set(&mut run.ctx, "crm", "lead_status", st);
        }
        if object == PersonObject::Contact && run.plan.company {
            self.account(run).await?;
        }
        // Lead mode: the person is a Contact already (a duplicate rule found
        // one with the same email, or leadrelay converted the Lead).
        let on_contact = (object == PersonObject::Lead)
            .then(|| self.known(job, &key, "contact"))
            .flatten();
        let mut write = match on_contact {
            Some(id) => PersonWrite::OnContact(id),
            None => self.person_write(run, person).await?,
        };
        let mut attempt = 0;
        while attempt < 2 {
            let (f, report) = match self.write(run, &write).await {
                Ok(()) => {
                    self.campaign_member(run).await?;
                    self.attribution_campaigns(run).await?;
                    return self.convert_lead(run).await;
                }
                Err(e) => e,
            };
            // The org lacks a key field: write again, creating those records.
            if self.learn_missing_key(&f) {
                continue;
            }
            attempt += 1;
            let on_person = f.reference_id.as_deref().is_none_or(|r| r == "person");
            if attempt == 1 && on_person {
                // A duplicate rule matched existing records: link to one
                // only if it is the same person (see `resolve_duplicate`).
                if let Some((rule, alert, found)) = f.duplicates() {
                    write = self
                        .resolve_duplicate(run, rule, alert, found, &report)
                        .await?;
                    continue;
                }
                // The Lead was converted in Salesforce: write to its Contact.
                if let PersonWrite::Update(lead) = &write
                    && object == PersonObject::Lead
                    && f.errors.iter().any(|e| e.code == convert::CONVERTED)
                {
                    let lead = lead.clone();
                    write = PersonWrite::OnContact(self.converted_contact(run, &lead).await?);
                    continue;
                }
                // The kept record was deleted (or merged) in Salesforce: look again.
                if f.status == Some(404) && matches!(write, PersonWrite::Update(_)) {
                    self.cache.forget(&key, object.key());
                    write = self.person_write(run, None).await?;
                    continue;
                }
            }
            return Err(stop(f, report));
        }
        Ok(())
    }

    /// A duplicate rule blocked the person's write and matched `found`:
    /// the record to write instead, if one of them has the lead's email —
    /// one of the person's own object (updated), else, in Lead mode, a
    /// Contact (the tasks go on it). Standard matching rules are fuzzy (a
    /// name and company can match someone else), so a match without the same
    /// email is never linked: the delivery dead-letters naming the rule and
    /// the records.
    async fn resolve_duplicate(
        &self,
        run: &mut Run<'_>,
        rule: &str,
        alert: bool,
        found: &[DuplicateMatch],
        blocked: &AttemptReport,
    ) -> Result<PersonWrite, Stop> {
        let object = self.s.person_object;
        let named: Vec<String> = found
            .iter()
            .take(5)
            .map(|m| format!("{} {} (matching rule {})", m.entity_type, m.id, m.rule))
            .collect();
        // The dead letter shows the blocked write's request and status.
        let refuse = |why: &str| Stop {
            outcome: Outcome::permanent(
                ErrorClass::Vendor,
                format!(
                    "Salesforce duplicate rule {rule} blocked the {} and matched {}; {why}, so leadrelay did not link it — merge or review the records in Salesforce, or let the rule allow saves, then replay",
                    object.api_name(),
                    named.join(", ")
                ),
            ),
            report: Some(blocked.clone()),
        };
        let Some(email) = mapping::lookup(&run.ctx, "contact.email")
            .and_then(mapping::as_text)
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
        else {
            return Err(refuse("the lead has no email to confirm the match"));
        };
        // Only Leads and Contacts can be the person; confirm each by its Email.
        let mut same: Vec<&DuplicateMatch> = Vec::new();
        for entity in ["Lead", "Contact"] {
            let ids: Vec<&DuplicateMatch> = found
                .iter()
                .filter(|m| m.entity_type == entity && is_record_id(&m.id))
                .take(50)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let list: Vec<String> = ids.iter().map(|m| soql_quote(&m.id)).collect();
            let soql = format!(
                "SELECT Id, Email FROM {entity} WHERE Id IN ({})",
                list.join(", ")
            );
            let (res, report) = self.rest.query(&soql).await;
            run.report = report.clone();
            let rows = res.map_err(|f| stop(f, report))?;
            for row in rows {
                let same_email = row["Email"]
                    .as_str()
                    .is_some_and(|e| e.trim().eq_ignore_ascii_case(&email));
                let id = row["Id"].as_str().unwrap_or_default();
                if same_email && let Some(m) = ids.iter().find(|m| ids_equal(&m.id, id)) {
                    same.push(m);
                }
            }
        }
        if let Some(m) = same.iter().find(|m| m.entity_type == object.api_name()) {
            return Ok(PersonWrite::Update(m.id.clone()));
        }
        if object == PersonObject::Lead
            && let Some(m) = same.iter().find(|m| m.entity_type == "Contact")
        {
            return Ok(PersonWrite::OnContact(m.id.clone()));
        }
        if alert {
            // A different person the rule only alerts about: save it anyway.
            run.allow_save = true;
            return self.person_write(run, None).await;
        }
        Err(refuse("none of them has the lead's email"))
    }

    /// How the person will be written: update a known record, upsert by the
    /// external id, or find by email and update or create.
    async fn person_write(
        &self,
        run: &mut Run<'_>,
        known: Option<String>,
    ) -> Result<PersonWrite, Stop> {
        let object = self.s.person_object;
        if let Some(id) = known {
            return Ok(PersonWrite::Update(id));
        }
        if let Some(field) = &self.s.external_id_field {
            let fields = self
                .mapping
                .apply(object.key(), &run.ctx)
                .map_err(mapping_stop)?;
            let value = fields
                .get(field)
                .and_then(mapping::as_text)
                .or_else(|| mapping::lookup(&run.ctx, "contact.email").and_then(mapping::as_text))
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    Stop::from(Outcome::permanent(
                        ErrorClass::Mapping,
                        format!("mapping {}.{field}: the external id is empty", object.key()),
                    ))
                })?;
            return Ok(PersonWrite::Upsert(field.clone(), value));
        }
        Ok(match self.find_person(run).await? {
            Some(id) => PersonWrite::Update(id),
            None => PersonWrite::Create,
        })
    }

    async fn account(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        let fields = self
            .mapping
            .apply("account", &run.ctx)
            .map_err(mapping_stop)?;
        let Some(name) = fields
            .get("Name")
            .and_then(mapping::as_text)
            .filter(|n| !n.trim().is_empty())
        else {
            return Ok(());
        };
        let key = account_key(&name);
        let id = match self.known(run.job, &key, "account") {
            Some(id) => id,
            None => {
                let _guard = self.account_locks.lock(&key).await;
                match self.cache.get(&key, "account") {
                    Some(id) => id,
                    None => {
                        let soql = format!(
                            "SELECT Id FROM Account WHERE Name = {} ORDER BY CreatedDate ASC LIMIT 1",
                            soql_quote(name.trim())
                        );
                        let (res, report) = self.rest.query(&soql).await;
                        run.report = report.clone();
                        let rows = res.map_err(|f| stop(f, report))?;
                        match rows.first().and_then(|r| r["Id"].as_str()) {
                            Some(id) => id.to_string(),
                            None => {
                                let path = "/sobjects/Account".to_string();
                                let (res, report) = self
                                    .rest
                                    .call(Method::POST, &path, &[], Some(&Value::Object(fields)))
                                    .await;
                                run.report = report.clone();
                                let v = res.map_err(|f| stop(f, report))?;
                                v["id"].as_str().map(str::to_string).ok_or_else(|| {
                                    Stop::from(Outcome::retry(
                                        ErrorClass::Vendor,
                                        "Salesforce returned no account id",
                                    ))
                                })?
                            }
                        }
                    }
                }
            }
        };
        if crm::stored(run.job, &key, "account") != Some(id.as_str()) {
            self.learn(run, "account", &key, &id);
        }
        mapping::set(&mut run.ctx, "ids", "account", id);
        Ok(())
    }

    /// How a record with a key field is written: upserted by `field` (its
    /// value `value`, never taken from the mapping) unless switched off or
    /// missing from the org, else created.
    fn keyed_write(
        &self,
        object: &str,
        field: &str,
        missing: &AtomicBool,
        value: String,
        body: &mut Map<String, Value>,
    ) -> (&'static str, String) {
        let field = field.trim();
        if field.is_empty() || missing.load(Ordering::Relaxed) {
            return ("POST", format!("/sobjects/{object}"));
        }
        body.retain(|k, _| !k.eq_ignore_ascii_case(field));
        (
            "PATCH",
            format!("/sobjects/{object}/{field}/{}", crm::path_segment(&value)),
        )
    }

    /// Whether `f` says the org has no key field the write upserted by; if
    /// so, that object's records are created from now on (with a warning).
    fn learn_missing_key(&self, f: &Failure) -> bool {
        let mut learned = false;
        for (object, field, missing) in [
            (
                "Opportunity",
                &self.s.opportunity_key_field,
                &self.opportunity_key_missing,
            ),
            ("Task", &self.s.task_key_field, &self.task_key_missing),
        ] {
            let field = field.trim();
            let named = f.errors.iter().any(|e| {
                e.message.contains("external ID field")
                    && e.message.to_lowercase().ends_with(&field.to_lowercase())
            });
            let on_object = f.reference_id.as_deref().is_none_or(|r| match object {
                "Opportunity" => r == "opportunity",
                _ => matches!(r, "note" | "task" | "meeting"),
            });
            if !field.is_empty() && named && on_object && !missing.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    field,
                    "Salesforce has no External ID field {object}.{field}; creating {object} records without it (a crash can then duplicate one); create it, see `leadrelay check`"
                );
                learned = true;
            }
        }
        learned
    }

    /// Duplicate-safe lookup: the oldest person with this email.
    async fn find_person(&self, run: &mut Run<'_>) -> Result<Option<String>, Stop> {
        let Some(email) = mapping::lookup(&run.ctx, "contact.email").and_then(mapping::as_text)
        else {
            return Ok(None);
        };
        let soql = format!(
            "SELECT Id FROM {} WHERE Email = {} ORDER BY CreatedDate ASC LIMIT 1",
            self.s.person_object.api_name(),
            soql_quote(email.trim())
        );
        let (res, report) = self.rest.query(&soql).await;
        run.report = report.clone();
        let rows = res.map_err(|f| stop(f, report))?;
        Ok(rows
            .first()
            .and_then(|r| r["Id"].as_str())
            .map(str::to_string))
    }

    /// Builds every write for the event and sends them (composite when several).
    async fn write(
        &self,
        run: &mut Run<'_>,
        person: &PersonWrite,
    ) -> Result<(), (Failure, AttemptReport)> {
        let object = self.s.person_object;
        let api = object.api_name();
        let mapping_fail = |e: mapping::MappingError| {
            (
                Failure {
                    outcome: Outcome::permanent(ErrorClass::Mapping, e.to_string()),
                    status: None,
                    errors: Vec::new(),
                    reference_id: None,
                },
                AttemptReport::default(),
            )
        };
        let mut ctx = run.ctx.clone();
        let person_ref = match person {
            PersonWrite::Update(id) | PersonWrite::OnContact(id) => id.clone(),
            _ => "@{person.id}".to_string(),
        };
        let mut subs = Vec::new();
        if !matches!(person, PersonWrite::OnContact(_)) {
            let mut fields = match person {
                PersonWrite::Update(_) => self.mapping.apply_update(object.key(), &ctx),
                _ => self.mapping.apply(object.key(), &ctx),
            }
            .map_err(mapping_fail)?;
            fields.extend(self.common.attribution.values(object.key(), &run.job.event));
            let (method, path) = match person {
                PersonWrite::Update(id) => ("PATCH", format!("/sobjects/{api}/{id}")),
                PersonWrite::Upsert(field, value) => {
                    fields.retain(|k, _| !k.eq_ignore_ascii_case(field));
                    (
                        "PATCH",
                        format!("/sobjects/{api}/{field}/{}", crm::path_segment(value)),
                    )
                }
                _ => ("POST", format!("/sobjects/{api}")),
            };
            subs.push(Sub {
                method,
                path,
                reference_id: "person".into(),
                body: Some(Value::Object(fields)),
                allow_save: run.allow_save,
            });
        }
        mapping::set(&mut ctx, "ids", "person", person_ref.clone());
        let key = run.job.delivery.contact_key.clone();
        let event_key = crm::event_key(run.job);

        // Opportunity (Contact mode).
        let opp_known = self.known(run.job, &key, "opportunity");
        let mut opp_ref = opp_known.clone();
        let (stage, create, update) = match &run.plan.deal {
            DealStep::None => (None, false, false),
            DealStep::Ensure { stage } => (stage.clone(), opp_known.is_none(), false),
            DealStep::Move { stage, create } => (
                Some(stage.clone()),
                opp_known.is_none() && *create,
                opp_known.is_some(),
            ),
        };
        if create || update {
            let stage = stage
                .or_else(|| self.common.deal_stage.clone())
                .unwrap_or_else(|| "Prospecting".into());
            mapping::set(&mut ctx, "crm", "deal_stage", stage);
            let mut opp = self
                .mapping
                .apply("opportunity", &ctx)
                .map_err(mapping_fail)?;
            if create {
                let (method, path) = self.keyed_write(
                    "Opportunity",
                    &self.s.opportunity_key_field,
                    &self.opportunity_key_missing,
                    run.job.delivery.id.to_string(),
                    &mut opp,
                );
                subs.push(Sub {
                    method,
                    path,
                    reference_id: "opportunity".into(),
                    body: Some(Value::Object(opp)),
                    allow_save: false,
                });
                opp_ref = Some("@{opportunity.id}".into());
            } else if let Some(id) = &opp_known {
                let moved: Map<String, Value> =
                    opp.into_iter().filter(|(k, _)| k == "StageName").collect();
                subs.push(Sub {
                    method: "PATCH",
                    path: format!("/sobjects/Opportunity/{id}"),
                    reference_id: "opportunity".into(),
                    body: Some(Value::Object(moved)),
                    allow_save: false,
                });
            }
        }
        if let Some(o) = &opp_ref {
            mapping::set(&mut ctx, "ids", "opportunity", o.clone());
        }

        // Attribution written back to the Opportunity the event names (one
        // Salesforce does not know, e.g. another CRM's deal, is left out).
        let attribution = self
            .common
            .attribution
            .values("opportunity", &run.job.event);
        if !attribution.is_empty()
            && let Some(id) = influence::opportunity_of(run.job)
        {
            if !is_record_id(id) {
                return Err(mapping_fail(mapping::MappingError {
                    object: "opportunity".into(),
                    field: "Id".into(),
                    message: format!("{id:?} is not a Salesforce Opportunity id"),
                }));
            }
            subs.push(Sub {
                method: "PATCH",
                path: format!("/sobjects/Opportunity/{id}"),
                reference_id: "attribution".into(),
                body: Some(Value::Object(attribution)),
                allow_save: false,
            });
        }

        // Tasks: the message or reply (logged, completed), a follow-up, a meeting.
        let who = crate::connectors::crm::Activity::of(run.job, &self.common);
        let mut tasks: Vec<(&str, Value)> = Vec::new();
        let today = run.job.event.occurred_at.format("%Y-%m-%d").to_string();
        if run.plan.note && self.known(run.job, &event_key, "note").is_none() {
            let subject = match run.plan.kind {
                EventKind::NewLead => who.subject.replacen("Follow up with", "Message from", 1),
                _ => who.subject.clone(),
            };
            let mut c = ctx.clone();
            mapping::set(&mut c, "activity", "subject", subject);
            mapping::set(&mut c, "crm", "task_status", "Completed");
            mapping::set(&mut c, "crm", "task_date", today.clone());
            mapping::set(
                &mut c,
                "crm",
                "task_type",
                if matches!(run.plan.kind, EventKind::Reply | EventKind::Logged) {
                    "Email"
                } else {
                    "Other"
                },
            );
            tasks.push(("note", c));
        }
        if run.plan.task && self.known(run.job, &event_key, "task").is_none() {
            let mut c = ctx.clone();
            mapping::set(&mut c, "crm", "task_status", "Not Started");
            let due = mapping::lookup(&c, "activity.due_date")
                .cloned()
                .unwrap_or(Value::Null);
            mapping::set(&mut c, "crm", "task_date", due);
            mapping::set(
                &mut c,
                "crm",
                "task_type",
                if run.plan.kind == EventKind::Reply {
                    "Email"
                } else {
                    "Call"
                },
            );
            tasks.push(("task", c));
        }
        if run.plan.meeting && self.known(run.job, &event_key, "meeting").is_none() {
            let mut c = ctx.clone();
            mapping::set(&mut c, "crm", "task_status", "Not Started");
            let date = mapping::lookup(&c, "activity.start_at")
                .cloned()
                .unwrap_or(json!(today));
            mapping::set(&mut c, "crm", "task_date", date);
            mapping::set(&mut c, "crm", "task_type", "Meeting");
            tasks.push(("meeting", c));
        }
        for (name, c) in &tasks {
            let mut body = self.mapping.apply("task", c).map_err(mapping_fail)?;
            let (method, path) = self.keyed_write(
                "Task",
                &self.s.task_key_field,
                &self.task_key_missing,
                format!("{}-{name}", run.job.delivery.id),
                &mut body,
            );
            subs.push(Sub {
                method,
                path,
                reference_id: (*name).into(),
                body: Some(Value::Object(body)),
                allow_save: false,
            });
        }

        // Custom objects.
        for (i, c) in self.s.custom_objects.iter().enumerate() {
            if !c
                .events
                .iter()
                .any(|e| e == run.job.event.event_type.as_str())
            {
                continue;
            }
            let name = custom_name(&c.object);
            if c.external_id_field.is_none() && self.known(run.job, &event_key, &name).is_some() {
                continue;
            }
            let mut body = self.mapping.apply(&name, &ctx).map_err(mapping_fail)?;
            let (method, path) = match &c.external_id_field {
                Some(field) => {
                    let value = body
                        .remove(field)
                        .and_then(|v| mapping::as_text(&v))
                        .filter(|v| !v.trim().is_empty())
                        .ok_or_else(|| {
                            mapping_fail(mapping::MappingError {
                                object: name.clone(),
                                field: field.clone(),
                                message: "the external id is empty".into(),
                            })
                        })?;
                    (
                        "PATCH",
                        format!(
                            "/sobjects/{}/{field}/{}",
                            c.object,
                            crm::path_segment(&value)
                        ),
                    )
                }
                None => ("POST", format!("/sobjects/{}", c.object)),
            };
            subs.push(Sub {
                method,
                path,
                reference_id: format!("custom{i}"),
                body: Some(Value::Object(body)),
                allow_save: false,
            });
        }

        // Send: directly when there is one write, else one composite.
        let results: Vec<(String, Value)> = if subs.is_empty() {
            Vec::new()
        } else if subs.len() == 1 {
            let sub = &subs[0];
            let method = sub.method.parse::<Method>().unwrap_or(Method::PATCH);
            let (res, report) = self
                .rest
                .call_with(method, &sub.path, &[], sub.body.as_ref(), sub.allow_save)
                .await;
            run.report = report.clone();
            let v = res.map_err(|mut f| {
                f.reference_id = Some(sub.reference_id.clone());
                (f, report)
            })?;
            vec![(sub.reference_id.clone(), v)]
        } else {
            let (res, report) = self.rest.composite(&subs).await;
            run.report = report.clone();
            res.map_err(|f| (f, report))?
        };

        // Keep every id.
        let body_id = |r: &str| {
            results
                .iter()
                .find(|(reference, _)| reference == r)
                .and_then(|(_, b)| b["id"].as_str().map(str::to_string))
        };
        let (person_id, person_object) = match person {
            PersonWrite::Update(id) => (Some(id.clone()), object.key()),
            PersonWrite::OnContact(id) => (Some(id.clone()), PersonObject::Contact.key()),
            _ => (body_id("person"), object.key()),
        };
        match person_id {
            Some(id) => {
                if crm::stored(run.job, &key, person_object) != Some(id.as_str()) {
                    self.learn(run, person_object, &key, &id);
                }
                mapping::set(&mut run.ctx, "ids", "person", id);
            }
            None => {
                return Err((
                    Failure {
                        outcome: Outcome::retry(
                            ErrorClass::Vendor,
                            "Salesforce returned no id for the person",
                        ),
                        status: None,
                        errors: Vec::new(),
                        reference_id: None,
                    },
                    run.report.clone(),
                ));
            }
        }
        if create && let Some(id) = body_id("opportunity") {
            self.learn(run, "opportunity", &key, &id);
        }
        for (name, _) in &tasks {
            if let Some(id) = body_id(name) {
                self.learn(run, name, &event_key, &id);
            }
        }
        for (i, c) in self.s.custom_objects.iter().enumerate() {
            if let Some(id) = body_id(&format!("custom{i}")) {
                self.learn(run, &custom_name(&c.object), &event_key, &id);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Connector for Salesforce {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(match crm::erase_targets(job) {
                Some(targets) => self.erase(targets).await,
                None => self.deliver_one(job).await,
            });
        }
        out
    }

    fn lookup_keys(&self, job: &DeliveryJob) -> Vec<String> {
        let mut keys = vec![job.delivery.contact_key.clone(), crm::event_key(job)];
        if self.s.person_object == PersonObject::Contact
            && self.common.companies
            && EventKind::of(&job.event.event_type) == EventKind::NewLead
        {
            let ctx = mapping::context(job);
            if let Ok(f) = self.mapping.apply("account", &ctx)
                && let Some(name) = f.get("Name").and_then(mapping::as_text)
                && !name.trim().is_empty()
            {
                keys.push(account_key(&name));
            }
        }
        keys
    }

    fn learned_remote_ids(&self) -> Vec<RemoteId> {
        self.learned.drain()
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<Value, String>> {
        let person = self.s.person_object.key();
        let objects: Vec<&str> =
            if self.s.person_object == PersonObject::Contact && self.common.companies {
                vec![person, "account"]
            } else {
                vec![person]
            };
        Some(crm::preview(&self.mapping, job, &self.common, &objects))
    }

    async fn check(&self) -> CheckReport {
        let session = match self.rest.auth.session().await {
            Ok(s) => s,
            Err(o) => return CheckReport::failed(crm::outcome_text(&o)),
        };
        let mut objects: Vec<(String, String)> = vec![(
            self.s.person_object.api_name().to_string(),
            self.s.person_object.key().to_string(),
        )];
        if self.s.person_object == PersonObject::Contact {
            if self.common.companies {
                objects.push(("Account".into(), "account".into()));
            }
            if self.common.deals
                || self.common.meeting_deal_stage.is_some()
                || !self.common.stage_map.is_empty()
            {
                objects.push(("Opportunity".into(), "opportunity".into()));
            }
        }
        // Attribution written back to opportunities (Lead mode too: the
        // writeback names opportunities Salesforce made).
        if self.common.attribution.0.contains_key("opportunity")
            && !objects.iter().any(|(api, _)| api == "Opportunity")
        {
            objects.push(("Opportunity".into(), "opportunity".into()));
        }
        objects.push(("Task".into(), "task".into()));
        for c in &self.s.custom_objects {
            objects.push((c.object.clone(), custom_name(&c.object)));
        }
        let mut unknown = Vec::new();
        let mut warnings: Vec<String> = Vec::new();
        let mut checked = 0;
        for (api, name) in &objects {
            let Some(m) = self.mapping.object(name) else {
                continue;
            };
            let path = format!("/sobjects/{api}/describe");
            let fields = match self.rest.call(Method::GET, &path, &[], None).await {
                (Ok(v), _) => v,
                (Err(f), _) => {
                    return CheckReport::failed(format!(
                        "logged in ({}); describing {api} failed: {}",
                        self.rest.auth.flow_name(),
                        crm::outcome_text(&f.outcome)
                    ));
                }
            };
            let names: BTreeSet<String> = fields["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["name"].as_str().map(str::to_lowercase))
                .collect();
            let mut wanted: Vec<String> = m.field_names().map(str::to_string).collect();
            wanted.extend(
                self.common
                    .attribution
                    .0
                    .get(name.as_str())
                    .into_iter()
                    .flat_map(|f| f.keys().cloned()),
            );
            if name == self.s.person_object.key()
                && let Some(ext) = &self.s.external_id_field
            {
                wanted.push(ext.clone());
            }
            for field in wanted {
                checked += 1;
                if !names.contains(&field.to_lowercase()) {
                    unknown.push(format!("{api}.{field}"));
                }
            }
            let (setting, key) = match api.as_str() {
                "Opportunity" => ("opportunity_key_field", self.s.opportunity_key_field.trim()),
                "Task" => ("task_key_field", self.s.task_key_field.trim()),
                _ => ("", ""),
            };
            let keyed = fields["fields"].as_array().into_iter().flatten().any(|f| {
                f["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(key))
                    && f["externalId"] == true
            });
            if !key.is_empty() && !keyed {
                warnings.push(format!(
                    "WARNING: {api} has no External ID field {key:?}, so a crash between creating a record and keeping its id can create it twice; create it (text, External ID, unique) or set {setting} = \"\""
                ));
            }
        }
        if let Some(inf) = &self.influence {
            // The org has Customizable Campaign Influence and the model.
            let soql = format!(
                "SELECT Id, MasterLabel, IsDefaultModel FROM CampaignInfluenceModel WHERE Id = {}",
                soql_quote(&inf.model_id)
            );
            match self.rest.query(&soql).await {
                (Ok(rows), _) if rows.is_empty() => unknown.push(format!(
                    "CampaignInfluenceModel {} (attribution.campaign_influence.model_id)",
                    inf.model_id
                )),
                (Ok(rows), _) => {
                    if rows[0]["IsDefaultModel"] == true {
                        warnings.push(format!(
                            "WARNING: CampaignInfluenceModel {} is the org's default model; if it is Primary Campaign Source, Salesforce deletes the records the API adds to it when it recalculates: use a custom model",
                            inf.model_id
                        ));
                    }
                }
                (Err(f), _) => {
                    return CheckReport::failed(format!(
                        "logged in ({}); reading CampaignInfluenceModel {} failed (is Customizable Campaign Influence enabled?): {}",
                        self.rest.auth.flow_name(),
                        inf.model_id,
                        crm::outcome_text(&f.outcome)
                    ));
                }
            }
        }
        let mut message = format!(
            "logged in with the {} flow; instance {}, API {}; {checked} mapped fields checked",
            self.rest.auth.flow_name(),
            session.instance_url,
            self.rest.version()
        );
        for w in warnings {
            message.push_str("; ");
            message.push_str(&w);
        }
        if unknown.is_empty() {
            CheckReport::ok(message)
        } else {
            CheckReport::failed(format!("{message}; not in the org: {}", unknown.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments() {
        assert_eq!(crm::path_segment("jane+x@acme.io"), "jane%2Bx%40acme.io");
        assert_eq!(crm::path_segment("a b/c"), "a%20b%2Fc");
    }
}
