//! `hubspot`: contacts, companies, deals, notes, tasks and custom objects
//! in HubSpot's CRM, through a private app token (`Authorization: Bearer`,
//! from `HUBSPOT_ACCESS_TOKEN` by default).
//!
//! A batch of due deliveries (up to `batch_size`, at most 100) is written
//! with as few requests as HubSpot allows:
//!
//! 1. contacts: one `batch/upsert` by `email` for the whole batch;
//! 2. companies: domains not known yet are looked up with one search and the
//!    missing ones created with one `batch/create` (under a lock, so two
//!    batches never create the same company); contacts are linked with one
//!    v4 `batch/associate/default`;
//! 3. deals: `batch/create` with inline associations, `batch/update` for
//!    stage moves;
//! 4. notes, tasks and meetings: `batch/create` with inline associations
//!    (`meeting.booked` is a meeting engagement with its start and end
//!    times; `meeting.canceled` sets that meeting's outcome to `CANCELED`);
//! 5. custom objects: `batch/upsert` by their unique property, or
//!    `batch/create`, then associated to the contact.
//!
//! Every id HubSpot hands back is kept (contact and deal by the person's
//! key, company by `domain:…`, notes and tasks by `event:…`) and reused, also
//! when a later step of the same delivery fails, so a retry never writes a
//! record twice. A 400 that names properties fails only the inputs that
//! carry them (the dead letter names the property) and the rest are sent
//! again; an unexplained 400 is narrowed down by halving the batch.

mod api;
pub mod read;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use leadrelay_model::EventType;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use self::api::{Api, ApiVersion, Failure, Family, PropertyError, describe};
use super::crm::{
    self, Activity, AttributionFields, CommonSettings, DealStep, EventKind, IdCache, Learned, Plan,
    remote_id,
};
use super::http as shared;
use super::{
    AttemptReport, BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob,
    ErrorClass, JobResult, Outcome,
};
use crate::config::{Problem, Rate};
use crate::mapping::{self, Mapping};
use crate::store::RemoteId;

/// The default field mapping (also shown in the README).
pub const DEFAULT_MAPPING: &str = include_str!("defaults.toml");
const OBJECTS: [&str; 6] = ["contact", "company", "deal", "note", "task", "meeting"];
const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
/// The newest dated API version leadrelay was built and tested against.
pub const CURRENT_DATED_VERSION: &str = "2026-03";

// HubSpot-defined association type ids (v4).
const NOTE_TO_CONTACT: u32 = 202;
const NOTE_TO_COMPANY: u32 = 190;
const NOTE_TO_DEAL: u32 = 214;
const TASK_TO_CONTACT: u32 = 204;
const TASK_TO_COMPANY: u32 = 192;
const TASK_TO_DEAL: u32 = 216;
const MEETING_TO_CONTACT: u32 = 200;
const MEETING_TO_COMPANY: u32 = 188;
const MEETING_TO_DEAL: u32 = 212;
const DEAL_TO_CONTACT: u32 = 3;
const DEAL_TO_COMPANY: u32 = 341;

fn default_token_env() -> String {
    "HUBSPOT_ACCESS_TOKEN".into()
}
fn default_pipeline() -> String {
    "default".into()
}
fn default_lifecycle() -> String {
    "lead".into()
}
fn default_meeting_lifecycle() -> String {
    "salesqualifiedlead".into()
}
fn default_lead_status() -> String {
    "NEW".into()
}
fn yes() -> bool {
    true
}
fn default_company_key_property() -> String {
    "leadrelay_company_key".into()
}
fn default_deal_key_property() -> String {
    "leadrelay_deal_key".into()
}
fn default_api_version() -> String {
    "v3".into()
}
fn new_lead_events() -> Vec<String> {
    vec!["lead.created".into(), "form.submitted".into()]
}

/// HubSpot's own settings (besides [`CommonSettings`]).
#[derive(Debug, Clone, Deserialize)]
struct Settings {
    /// The env var holding the private app token.
    #[serde(default = "default_token_env")]
    token_env: String,
    /// HubSpot's API version: `"v3"` (the numbered, now legacy, APIs) or a
    /// dated one such as `"2026-03"`; every path is built from it.
    #[serde(default = "default_api_version")]
    api_version: String,
    /// The pipeline of the deals leadrelay opens.
    #[serde(default = "default_pipeline")]
    deal_pipeline: String,
    /// Lifecycle stage of contacts leadrelay sees first through a new lead
    /// (`""`: leave it).
    #[serde(default = "default_lifecycle")]
    lifecycle_stage: String,
    /// Lifecycle stage set on `meeting.booked` (`""`: leave it).
    #[serde(default = "default_meeting_lifecycle")]
    meeting_lifecycle_stage: String,
    /// Lead status of contacts leadrelay sees first through a new lead.
    #[serde(default = "default_lead_status")]
    lead_status: String,
    /// Lead status set on `reply.received` (e.g. `CONNECTED`; `""`: leave it).
    #[serde(default)]
    reply_lead_status: String,
    /// Lead status set on `meeting.booked`.
    #[serde(default)]
    meeting_lead_status: String,
    /// Custom object records written per event.
    #[serde(default)]
    custom_objects: Vec<CustomObjectSettings>,
    /// A unique-value company property (`hasUniqueValue`) holding the
    /// company's domain: new companies are upserted by it, so a company
    /// created just before a crash is found again at once (HubSpot's search
    /// index lags by seconds). `""`: search by domain, then create.
    #[serde(default = "default_company_key_property")]
    company_key_property: String,
    /// A unique-value deal property (`hasUniqueValue`) holding the id of the
    /// delivery that opened the deal: deals are upserted by it, so a deal
    /// opened just before a crash is found again at once. `""`: create.
    #[serde(default = "default_deal_key_property")]
    deal_key_property: String,
    /// `meeting.booked` is written as a HubSpot meeting engagement (start
    /// and end times, outcome `SCHEDULED`) and `meeting.canceled` cancels
    /// it; `false`: both are logged as notes.
    #[serde(default = "yes")]
    meetings: bool,
    /// Lists read from HubSpot into leadrelay as events (see [`read`]).
    #[serde(default)]
    read: Option<read::ReadSettings>,
}

/// `[[destinations.NAME.custom_objects]]`
#[derive(Debug, Clone, Deserialize)]
struct CustomObjectSettings {
    /// The object type: `2-12345`, `p_projects` or `p{portalId}_projects`.
    object: String,
    /// Event types that write a record.
    #[serde(default = "new_lead_events")]
    events: Vec<String>,
    /// A unique property to upsert by (else every event creates a record).
    #[serde(default)]
    id_property: Option<String>,
    /// Associate the record with the contact (default association type).
    #[serde(default = "yes")]
    associate: bool,
    /// Its field mapping (no defaults).
    #[serde(default)]
    mapping: toml::Table,
}

pub fn kind() -> ConnectorKind {
    ConnectorKind {
        name: "hubspot",
        summary: "HubSpot CRM: contacts (batch upsert by email), companies, deals, notes, tasks, custom objects",
        defaults: Defaults {
            rate_limit: Some(Rate {
                count: 100,
                period: Duration::from_secs(10),
            }),
            concurrency: 2,
            batch_size: 100,
            max_batch_size: 100,
        },
        personal_data: true,
        build,
    }
}

struct HubSpot {
    api: Api,
    common: CommonSettings,
    s: Settings,
    mapping: Mapping,
    learned: Learned,
    companies: IdCache,
    company_lock: tokio::sync::Mutex<()>,
    /// The portal lacks `company_key_property` (learned from a refused
    /// upsert): companies are created without it, as before.
    company_key_missing: std::sync::atomic::AtomicBool,
    /// The same for `deal_key_property`.
    deal_key_missing: AtomicBool,
    details_fetched: AtomicBool,
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let (common, s): (CommonSettings, Settings) = crm::parse_split(ctx.settings)?;
    let mut problems = Vec::new();
    let token = ctx
        .secret("token_env", &s.token_env)
        .map_err(|p| problems.push(p))
        .ok();
    let base = crm::base_url(common.base_url.as_deref(), DEFAULT_BASE_URL)
        .map_err(|p| problems.push(p))
        .ok();
    let version = api_version(&s).map_err(|p| problems.push(p)).ok();
    problems.extend(common.attribution.problems(&["contact", "deal"]));
    if let Some(r) = &s.read {
        problems.extend(r.problems());
    }
    let mut extra = Vec::new();
    for (i, c) in s.custom_objects.iter().enumerate() {
        let path = format!("custom_objects[{i}]");
        if c.object.trim().is_empty() || OBJECTS.contains(&c.object.as_str()) {
            problems.push(Problem::error(
                format!("{path}.object"),
                "a custom object type (2-12345, p_name or p{portalId}_name)",
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
        if let Some(idp) = &c.id_property
            && !c.mapping.contains_key(idp)
        {
            problems.push(Problem::error(
                format!("{path}.id_property"),
                format!("{idp:?} must be mapped in {path}.mapping (it is the record's key)"),
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
    if common.deals
        && s.deal_pipeline != "default"
        && common.deal_stage.as_deref().is_none_or(str::is_empty)
    {
        problems.push(Problem::error(
            "deal_stage",
            "set the stage of new deals for this pipeline (stage ids: see `leadrelay check`)",
        ));
    }
    let client = shared::client(ctx.timeout, common.allow_private_networks)
        .map_err(|m| problems.push(Problem::error("", m)))
        .ok();
    let (Some(token), Some(base), Some(version), Some(mapping), Some(client), true) =
        (token, base, version, mapping, client, problems.is_empty())
    else {
        return Err(problems);
    };
    Ok(Arc::new(HubSpot {
        api: Api::new(client, base, token, version, common.allow_private_networks),
        common,
        s,
        mapping,
        learned: Learned::default(),
        companies: IdCache::default(),
        company_lock: tokio::sync::Mutex::new(()),
        company_key_missing: std::sync::atomic::AtomicBool::new(false),
        deal_key_missing: AtomicBool::new(false),
        details_fetched: AtomicBool::new(false),
    }))
}

/// The configured `api_version`.
fn api_version(s: &Settings) -> Result<ApiVersion, Problem> {
    ApiVersion::parse(&s.api_version).map_err(|m| Problem::error("api_version", m))
}

/// The name a custom object's mapping is kept under.
fn custom_name(object: &str) -> String {
    format!("custom:{object}")
}

/// Whether a refused company upsert says the portal has no unique
/// property `p` (missing, or not `hasUniqueValue`).
fn names_missing_key(o: &Outcome, p: &str) -> bool {
    let Outcome::Permanent { message, .. } = o else {
        return false;
    };
    message.contains(p)
        && (message.contains("PROPERTY_DOESNT_EXIST")
            || message.contains("does not exist")
            || message.contains("not a unique identifier property"))
}

fn domain_key(domain: &str) -> String {
    format!("domain:{domain}")
}

fn assoc(to: &str, type_id: u32) -> Value {
    json!({"to": {"id": to}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]})
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// One delivery's progress through the batch.
struct Item<'a> {
    job: &'a DeliveryJob,
    plan: Plan,
    ctx: Value,
    email: Option<String>,
    contact_props: Map<String, Value>,
    contact_id: Option<String>,
    /// The contact was created by this attempt (so has no notes or tasks).
    contact_new: bool,
    company_id: Option<String>,
    domain: Option<String>,
    company_props: Map<String, Value>,
    deal_id: Option<String>,
    /// A `deal.stage_changed` from HubSpot that names no person: only the
    /// stage task, on the deal.
    deal_only: bool,
    /// Attribution written back to the deal (`attribution.deal`).
    attribution_deal: Map<String, Value>,
    failed: Option<Outcome>,
    report: AttemptReport,
    ids: Vec<RemoteId>,
}

impl Item<'_> {
    fn ok(&self) -> bool {
        self.failed.is_none()
    }

    fn fail(&mut self, o: Outcome) {
        if self.failed.is_none() {
            self.failed = Some(o);
        }
    }

    fn key(&self) -> &str {
        &self.job.delivery.contact_key
    }

    fn id_ctx(&mut self, name: &str, id: &str) {
        mapping::set(&mut self.ctx, "ids", name, id.to_string());
    }
}

/// One input of a batch request: the item, the input, and its properties
/// (to tell which inputs a property error is about).
#[derive(Clone)]
struct Input {
    item: usize,
    body: Value,
}

/// What a batch request (possibly split) came back with.
#[derive(Default)]
struct BatchOutcome {
    /// Successful requests: their items and response bodies.
    ok: Vec<(Vec<usize>, Value)>,
    failed: Vec<(usize, Outcome)>,
    reports: Vec<(usize, AttemptReport)>,
}

fn value_in(message: &str, v: &Value) -> bool {
    match mapping::as_text(v) {
        Some(t) if !t.trim().is_empty() => {
            message.to_lowercase().contains(&t.trim().to_lowercase())
        }
        _ => false,
    }
}

impl HubSpot {
    /// POSTs `inputs` to a batch endpoint. A 400 naming properties fails the
    /// inputs that carry them and resends the rest; any other 400 halves the
    /// batch until the bad input is found.
    async fn batch(&self, path: &str, inputs: Vec<Input>) -> BatchOutcome {
        let mut out = BatchOutcome::default();
        let mut queue: Vec<Vec<Input>> = vec![inputs];
        while let Some(chunk) = queue.pop() {
            if chunk.is_empty() {
                continue;
            }
            let body = json!({"inputs": chunk.iter().map(|i| i.body.clone()).collect::<Vec<_>>()});
            let (res, report) = self.api.call(Method::POST, path, Some(&body)).await;
            for i in &chunk {
                out.reports.push((i.item, report.clone()));
            }
            match res {
                Ok(v) => out.ok.push((chunk.iter().map(|i| i.item).collect(), v)),
                Err(f)
                    if f.status == Some(400) && matches!(f.outcome, Outcome::Permanent { .. }) =>
                {
                    let (bad, rest) = attribute(chunk, &f);
                    if !bad.is_empty() {
                        out.failed.extend(bad);
                        queue.push(rest);
                    } else if rest.len() > 1 {
                        let mut rest = rest;
                        let half = rest.split_off(rest.len() / 2);
                        queue.push(rest);
                        queue.push(half);
                    } else {
                        for i in rest {
                            out.failed.push((i.item, f.outcome.clone()));
                        }
                    }
                }
                Err(f) => {
                    for i in chunk {
                        out.failed.push((i.item, f.outcome.clone()));
                    }
                }
            }
        }
        out
    }

    fn apply_reports(items: &mut [Item<'_>], out: &BatchOutcome) {
        for (i, r) in &out.reports {
            items[*i].report = r.clone();
        }
        for (i, o) in &out.failed {
            items[*i].fail(o.clone());
        }
    }

    fn learn(&self, item: &mut Item<'_>, object: &str, key: &str, id: &str) {
        let r = remote_id(object, key, id);
        self.learned.push(r.clone());
        item.ids.push(r);
    }

    /// Keeps the id of a note, task or meeting written for the item's event
    /// (a meeting also under its booking's key, so its cancellation finds it).
    fn learn_activity(&self, item: &mut Item<'_>, object: &str, id: &str) {
        let key = crm::event_key(item.job);
        self.learn(item, object, &key, id);
        if object == "meeting"
            && let Some(k) = crm::meeting_key(&item.job.event)
        {
            self.learn(item, object, &k, id);
        }
    }

    fn prepare<'a>(&self, job: &'a DeliveryJob) -> Item<'a> {
        let mut item = Item {
            job,
            plan: Plan {
                kind: EventKind::Update,
                company: false,
                deal: DealStep::None,
                note: false,
                task: false,
                meeting: false,
            },
            ctx: mapping::context(job),
            email: job
                .event
                .contact
                .email
                .as_ref()
                .map(|e| e.as_str().to_string())
                .or_else(|| {
                    job.contact
                        .as_ref()
                        .and_then(|c| c.data.email.as_ref())
                        .map(|e| e.as_str().to_string())
                }),
            contact_props: Map::new(),
            contact_id: crm::stored_for_person(job, "contact").map(str::to_string),
            contact_new: false,
            company_id: None,
            domain: None,
            company_props: Map::new(),
            // An attribution writeback is about the deal it names only (the
            // person's other deals are left alone).
            deal_id: if AttributionFields::applies(&job.event) {
                crm::vendor_ref(job, "hubspot", "deal").map(str::to_string)
            } else {
                crm::stored_for_person(job, "deal")
                    .or_else(|| crm::vendor_ref(job, "hubspot", "deal"))
                    .map(str::to_string)
            },
            deal_only: crm::deal_only(job, "hubspot").is_some(),
            attribution_deal: self.common.attribution.values("deal", &job.event),
            failed: None,
            report: AttemptReport::default(),
            ids: Vec::new(),
        };
        match Plan::of(job, &self.common) {
            Ok(p) => item.plan = p,
            Err(m) => {
                item.fail(Outcome::permanent(ErrorClass::Mapping, m));
                return item;
            }
        }
        Activity::of(job, &self.common).into_context(&mut item.ctx);
        if item.deal_only {
            // HubSpot moved the deal itself: no contact, company or deal
            // write, only the stage's task on the deal.
            item.plan.deal = DealStep::None;
            item.plan.company = false;
            if let Some(id) = item.deal_id.clone() {
                item.id_ctx("deal", &id);
            }
            return item;
        }
        let known = item.contact_id.is_some();
        let (lifecycle, status) = match item.plan.kind {
            EventKind::NewLead if !known => {
                (self.s.lifecycle_stage.as_str(), self.s.lead_status.as_str())
            }
            EventKind::Meeting => (
                self.s.meeting_lifecycle_stage.as_str(),
                self.s.meeting_lead_status.as_str(),
            ),
            EventKind::Reply => ("", self.s.reply_lead_status.as_str()),
            _ => ("", ""),
        };
        let crm_values = [
            (
                "lifecycle_stage",
                crm::handoff_lifecycle(&job.event).or_else(|| non_empty(lifecycle)),
            ),
            ("lead_status", non_empty(status)),
            (
                "owner_id",
                crm::assigned_owner(job, "hubspot_owner_id")
                    .or_else(|| self.common.owner_id.clone()),
            ),
            ("pipeline", Some(self.s.deal_pipeline.clone())),
        ];
        for (k, v) in crm_values {
            if let Some(v) = v {
                mapping::set(&mut item.ctx, "crm", k, v);
            }
        }
        if let Some(id) = item.contact_id.clone() {
            item.id_ctx("contact", &id);
        }
        if let Some(id) = item.deal_id.clone() {
            item.id_ctx("deal", &id);
        }
        let mapped = if known {
            self.mapping.apply_update("contact", &item.ctx)
        } else {
            self.mapping.apply("contact", &item.ctx)
        };
        match mapped {
            Ok(mut props) => {
                if let Some(e) = &item.email {
                    props.entry("email").or_insert_with(|| json!(e));
                }
                props.extend(self.common.attribution.values("contact", &job.event));
                item.contact_props = props;
            }
            Err(e) => {
                item.fail(Outcome::permanent(ErrorClass::Mapping, e.to_string()));
                return item;
            }
        }
        if item.plan.company {
            match self.mapping.apply("company", &item.ctx) {
                Ok(props) => {
                    item.domain = props
                        .get("domain")
                        .and_then(mapping::as_text)
                        .map(|d| d.trim().to_lowercase())
                        .filter(|d| !d.is_empty());
                    item.company_props = props;
                }
                Err(e) => item.fail(Outcome::permanent(ErrorClass::Mapping, e.to_string())),
            }
        }
        item
    }

    async fn contacts(&self, items: &mut [Item<'_>]) {
        let mut inputs = Vec::new();
        let mut by_id = Vec::new();
        for (i, it) in items.iter_mut().enumerate() {
            if !it.ok() || it.deal_only {
                continue;
            }
            match &it.email {
                Some(email) => inputs.push(Input {
                    item: i,
                    body: json!({"idProperty": "email", "id": email, "properties": it.contact_props}),
                }),
                // No email, but the contact is known: update it by id.
                None if it.contact_id.is_some() => {
                    let mut props = it.contact_props.clone();
                    props.remove("email");
                    if !props.is_empty() {
                        by_id.push(Input {
                            item: i,
                            body: json!({"id": it.contact_id, "properties": props, "objectWriteTraceId": it.job.delivery.id.to_string()}),
                        });
                    }
                }
                None => it.fail(Outcome::permanent(
                    ErrorClass::Mapping,
                    "HubSpot contacts are keyed by email and this event has none",
                )),
            }
        }
        if !by_id.is_empty() {
            let out = self
                .batch(
                    &self.api.path(Family::Objects, "/contacts/batch/update"),
                    by_id,
                )
                .await;
            Self::apply_reports(items, &out);
            for (members, body) in &out.ok {
                let errors = batch_errors(body);
                for &i in members {
                    let id = items[i].contact_id.clone().unwrap_or_default();
                    if let Some(o) = error_for(&errors, &id) {
                        items[i].fail(o);
                    }
                }
            }
        }
        if inputs.is_empty() {
            return;
        }
        let out = self
            .batch(
                &self.api.path(Family::Objects, "/contacts/batch/upsert"),
                inputs,
            )
            .await;
        Self::apply_reports(items, &out);
        for (members, body) in &out.ok {
            let by_email: HashMap<String, (String, bool)> = body["results"]
                .as_array()
                .map(|rs| {
                    rs.iter()
                        .filter_map(|r| {
                            Some((
                                r["properties"]["email"].as_str()?.to_lowercase(),
                                (mapping::as_text(&r["id"])?, r["new"] == json!(true)),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let errors = batch_errors(body);
            for &i in members {
                let email = items[i].email.clone().unwrap_or_default().to_lowercase();
                if let Some(o) = error_for(&errors, &email) {
                    items[i].fail(o);
                    continue;
                }
                match by_email.get(&email) {
                    Some((id, new)) => {
                        let key = items[i].key().to_string();
                        items[i].contact_new = *new;
                        items[i].contact_id = Some(id.clone());
                        items[i].id_ctx("contact", id);
                        self.learn(&mut items[i], "contact", &key, id);
                    }
                    None => items[i].fail(Outcome::retry(
                        ErrorClass::Vendor,
                        "HubSpot's batch upsert answer has no result for this contact",
                    )),
                }
            }
        }
    }

    /// Finds or creates the company of every domain in `items`.
    async fn companies(&self, items: &mut [Item<'_>]) {
        let mut wanted: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, it) in items.iter_mut().enumerate() {
            if !it.ok() || !it.plan.company || it.contact_id.is_none() {
                continue;
            }
            let Some(d) = it.domain.clone() else { continue };
            let known = crm::stored(it.job, &domain_key(&d), "company")
                .map(str::to_string)
                .or_else(|| self.companies.get(&domain_key(&d), "company"));
            match known {
                Some(id) => {
                    it.company_id = Some(id.clone());
                    it.id_ctx("company", &id);
                }
                None => wanted.entry(d).or_default().push(i),
            }
        }
        if !wanted.is_empty() {
            // One batch at a time resolves companies: no two create the same one.
            let _guard = self.company_lock.lock().await;
            self.resolve_companies(items, wanted).await;
        }
        self.associate_companies(items).await;
    }

    async fn resolve_companies(
        &self,
        items: &mut [Item<'_>],
        mut wanted: BTreeMap<String, Vec<usize>>,
    ) {
        // Another batch may have resolved some while we waited for the lock.
        wanted.retain(
            |d, members| match self.companies.get(&domain_key(d), "company") {
                Some(id) => {
                    for &i in members.iter() {
                        items[i].company_id = Some(id.clone());
                        items[i].id_ctx("company", &id);
                    }
                    false
                }
                None => true,
            },
        );
        let domains: Vec<String> = wanted.keys().cloned().collect();
        let mut found: HashMap<String, String> = HashMap::new();
        for chunk in domains.chunks(50) {
            let body = json!({
                "filterGroups": [{"filters": [{"propertyName": "domain", "operator": "IN", "values": chunk}]}],
                "properties": ["domain", "name"],
                "limit": 200,
            });
            let (res, report) = self
                .api
                .call(
                    Method::POST,
                    &self.api.path(Family::Objects, "/companies/search"),
                    Some(&body),
                )
                .await;
            match res {
                Ok(v) => {
                    for r in v["results"].as_array().into_iter().flatten() {
                        if let (Some(d), Some(id)) = (
                            r["properties"]["domain"].as_str(),
                            mapping::as_text(&r["id"]),
                        ) {
                            found.entry(d.trim().to_lowercase()).or_insert(id);
                        }
                    }
                }
                Err(f) => {
                    for d in chunk {
                        for &i in wanted.get(d).into_iter().flatten() {
                            items[i].report = report.clone();
                            items[i].fail(f.outcome.clone());
                        }
                    }
                }
            }
        }
        let key_property =
            self.key_property(&self.s.company_key_property, &self.company_key_missing);
        let mut inputs = Vec::new();
        for (d, members) in &wanted {
            if found.contains_key(d) {
                continue;
            }
            let Some(&first) = members.iter().find(|&&i| items[i].ok()) else {
                continue;
            };
            let props = &items[first].company_props;
            inputs.push(Input {
                item: first,
                body: match key_property {
                    // Upserted by the key: a company this destination
                    // created before (not yet searchable) is found, not
                    // created again.
                    Some(p) => json!({"idProperty": p, "id": d, "properties": props}),
                    None => json!({"properties": props, "objectWriteTraceId": d}),
                },
            });
        }
        if !inputs.is_empty() {
            let out = self
                .upsert_or_create("companies", key_property, &self.company_key_missing, inputs)
                .await;
            for (i, r) in &out.reports {
                let d = items[*i].domain.clone().unwrap_or_default();
                for &m in wanted.get(&d).into_iter().flatten() {
                    items[m].report = r.clone();
                }
            }
            for (i, o) in &out.failed {
                let d = items[*i].domain.clone().unwrap_or_default();
                for &m in wanted.get(&d).into_iter().flatten() {
                    items[m].fail(o.clone());
                }
            }
            for (_, body) in &out.ok {
                for r in body["results"].as_array().into_iter().flatten() {
                    let d = r["objectWriteTraceId"]
                        .as_str()
                        .or_else(|| key_property.and_then(|p| r["properties"][p].as_str()));
                    if let (Some(d), Some(id)) = (d, mapping::as_text(&r["id"])) {
                        found.insert(d.trim().to_lowercase(), id);
                    }
                }
            }
        }
        for (d, members) in &wanted {
            let Some(id) = found.get(d) else {
                for &i in members {
                    items[i].fail(Outcome::retry(
                        ErrorClass::Vendor,
                        format!("HubSpot returned no company for domain {d}"),
                    ));
                }
                continue;
            };
            self.companies.put(&domain_key(d), "company", id);
            for &i in members {
                items[i].company_id = Some(id.clone());
                items[i].id_ctx("company", id);
                self.learn(&mut items[i], "company", &domain_key(d), id);
            }
        }
    }

    /// Links contacts to their company where that link is not known yet.
    async fn associate_companies(&self, items: &mut [Item<'_>]) {
        let mut inputs = Vec::new();
        let mut pairs = BTreeSet::new();
        for (i, it) in items.iter().enumerate() {
            let (Some(c), Some(co)) = (&it.contact_id, &it.company_id) else {
                continue;
            };
            if !it.ok() || crm::stored_for_person(it.job, "company") == Some(co.as_str()) {
                continue;
            }
            if pairs.insert((c.clone(), co.clone())) {
                inputs.push(Input {
                    item: i,
                    body: json!({"from": {"id": c}, "to": {"id": co}}),
                });
            }
        }
        if inputs.is_empty() {
            return;
        }
        let out = self
            .batch(
                &self.api.path(
                    Family::Associations,
                    "/contacts/companies/batch/associate/default",
                ),
                inputs,
            )
            .await;
        Self::apply_reports(items, &out);
        let mut missing: BTreeSet<(String, String)> = BTreeSet::new();
        for (_, body) in &out.ok {
            for e in body["errors"].as_array().into_iter().flatten() {
                let from = e["context"]["fromId"][0]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let to = e["context"]["toId"][0]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                missing.insert((from, to));
            }
        }
        for it in items.iter_mut() {
            let (Some(c), Some(co)) = (it.contact_id.clone(), it.company_id.clone()) else {
                continue;
            };
            if !it.ok() {
                continue;
            }
            if missing.contains(&(c.clone(), co.clone())) {
                // The company was deleted in HubSpot: look it up again next time.
                if let Some(d) = &it.domain {
                    self.companies.forget(&domain_key(d), "company");
                }
                it.fail(Outcome::retry(
                    ErrorClass::Vendor,
                    format!("HubSpot could not link contact {c} to company {co} (not found)"),
                ));
                continue;
            }
            if crm::stored_for_person(it.job, "company") != Some(co.as_str()) {
                let key = it.key().to_string();
                self.learn(it, "company", &key, &co);
            }
        }
    }

    /// The unique-value property to upsert by, unless switched off or
    /// known to be missing from the portal.
    fn key_property<'p>(&self, p: &'p str, missing: &AtomicBool) -> Option<&'p str> {
        Some(p.trim())
            .filter(|p| !p.is_empty())
            .filter(|_| !missing.load(Ordering::Relaxed))
    }

    /// Writes `inputs` (`{"idProperty", "id", "properties"}` with
    /// `key_property`, else `{"properties", "objectWriteTraceId"}`) to
    /// `objects`: `batch/upsert` by the key, so a record written just before a
    /// crash is found again, not created twice. When the portal has no such
    /// unique property, `missing` is set (with a warning) and the inputs are
    /// created, their key as `objectWriteTraceId`.
    async fn upsert_or_create(
        &self,
        objects: &str,
        key_property: Option<&str>,
        missing: &AtomicBool,
        inputs: Vec<Input>,
    ) -> BatchOutcome {
        let mut out = match key_property {
            Some(_) => {
                self.batch(
                    &self
                        .api
                        .path(Family::Objects, &format!("/{objects}/batch/upsert")),
                    inputs.clone(),
                )
                .await
            }
            None => BatchOutcome::default(),
        };
        if let Some(p) = key_property
            && out.failed.iter().any(|(_, o)| names_missing_key(o, p))
        {
            tracing::warn!(
                property = p,
                "HubSpot has no unique {objects} property {p}; creating {objects} without it (a crash can then duplicate one); create it, see `leadrelay check`"
            );
            missing.store(true, Ordering::Relaxed);
        }
        if key_property.is_none() || missing.load(Ordering::Relaxed) {
            let inputs = inputs
                .into_iter()
                .map(|mut i| {
                    let d = i.body["id"].clone();
                    if let Some(o) = i.body.as_object_mut()
                        && o.remove("idProperty").is_some()
                    {
                        o.remove("id");
                        o.insert("objectWriteTraceId".into(), d);
                    }
                    i
                })
                .collect();
            out = self
                .batch(
                    &self
                        .api
                        .path(Family::Objects, &format!("/{objects}/batch/create")),
                    inputs,
                )
                .await;
        }
        out
    }

    async fn deals(&self, items: &mut [Item<'_>]) {
        let key_property = self.key_property(&self.s.deal_key_property, &self.deal_key_missing);
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        for (i, it) in items.iter_mut().enumerate() {
            if !it.ok() || it.contact_id.is_none() {
                continue;
            }
            if !it.attribution_deal.is_empty() {
                // A deal HubSpot does not know (another CRM's) is left out.
                if let Some(id) = &it.deal_id {
                    updates.push(Input {
                        item: i,
                        body: json!({
                            "id": id,
                            "properties": it.attribution_deal,
                            "objectWriteTraceId": it.job.delivery.id.to_string(),
                        }),
                    });
                }
                continue;
            }
            let (stage, create, update) = match &it.plan.deal {
                DealStep::None => continue,
                DealStep::Ensure { stage } => (stage.clone(), it.deal_id.is_none(), false),
                DealStep::Move { stage, create } => (
                    Some(stage.clone()),
                    it.deal_id.is_none() && *create,
                    it.deal_id.is_some(),
                ),
            };
            let stage = stage
                .or_else(|| self.common.deal_stage.clone())
                .unwrap_or_else(|| "appointmentscheduled".into());
            mapping::set(&mut it.ctx, "crm", "deal_stage", stage);
            if !create && !update {
                continue;
            }
            let props = match self.mapping.apply("deal", &it.ctx) {
                Ok(p) => p,
                Err(e) => {
                    it.fail(Outcome::permanent(ErrorClass::Mapping, e.to_string()));
                    continue;
                }
            };
            let trace = it.job.delivery.id.to_string();
            if create {
                let body = match key_property {
                    Some(p) => json!({"idProperty": p, "id": trace, "properties": props}),
                    None => {
                        let mut links = vec![assoc(
                            it.contact_id.as_deref().unwrap_or_default(),
                            DEAL_TO_CONTACT,
                        )];
                        if let Some(co) = &it.company_id {
                            links.push(assoc(co, DEAL_TO_COMPANY));
                        }
                        json!({"properties": props, "associations": links, "objectWriteTraceId": trace})
                    }
                };
                creates.push(Input { item: i, body });
            } else {
                let moved: Map<String, Value> = props
                    .into_iter()
                    .filter(|(k, _)| k == "dealstage" || k == "pipeline")
                    .collect();
                updates.push(Input {
                    item: i,
                    body: json!({"id": it.deal_id, "properties": moved, "objectWriteTraceId": trace}),
                });
            }
        }
        if !creates.is_empty() {
            let out = self
                .upsert_or_create("deals", key_property, &self.deal_key_missing, creates)
                .await;
            self.take_created(items, &out, "deal", key_property);
            // Upsert inputs carry no associations (nor do the creates they
            // fall back to when the portal lacks the property).
            if key_property.is_some() {
                self.associate_deals(items, &out).await;
            }
        }
        if !updates.is_empty() {
            let out = self
                .batch(
                    &self.api.path(Family::Objects, "/deals/batch/update"),
                    updates,
                )
                .await;
            Self::apply_reports(items, &out);
            for (members, body) in &out.ok {
                let missing: BTreeSet<String> = body["errors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|e| e["context"]["ids"].as_array().cloned().unwrap_or_default())
                    .filter_map(|v| mapping::as_text(&v))
                    .collect();
                for &i in members {
                    if let Some(d) = items[i].deal_id.clone()
                        && missing.contains(&d)
                    {
                        items[i].fail(Outcome::permanent(
                            ErrorClass::Vendor,
                            format!("HubSpot deal {d} (kept for this contact) no longer exists"),
                        ));
                    }
                }
            }
        }
    }

    /// Reads `batch/create` results by trace id (the delivery id) into the items.
    /// `by`: the inputs were upserted by this property, whose value is the
    /// delivery id (upsert answers carry no trace id).
    fn take_created(
        &self,
        items: &mut [Item<'_>],
        out: &BatchOutcome,
        object: &str,
        by: Option<&str>,
    ) {
        Self::apply_reports(items, out);
        for (members, body) in &out.ok {
            let by_trace: HashMap<String, String> = body["results"]
                .as_array()
                .map(|rs| {
                    rs.iter()
                        .filter_map(|r| {
                            let trace = r["objectWriteTraceId"]
                                .as_str()
                                .or_else(|| by.and_then(|p| r["properties"][p].as_str()))?;
                            Some((trace.to_string(), mapping::as_text(&r["id"])?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let errors = batch_errors(body);
            for &i in members {
                let trace = items[i].job.delivery.id.to_string();
                if let Some(o) = error_for(&errors, &trace) {
                    items[i].fail(o);
                    continue;
                }
                let Some(id) = by_trace.get(&trace).cloned() else {
                    items[i].fail(Outcome::retry(
                        ErrorClass::Vendor,
                        format!("HubSpot's batch create answer has no {object} for this delivery"),
                    ));
                    continue;
                };
                if object == "deal" {
                    let key = items[i].key().to_string();
                    items[i].deal_id = Some(id.clone());
                    items[i].id_ctx("deal", &id);
                    self.learn(&mut items[i], object, &key, &id);
                } else {
                    self.learn_activity(&mut items[i], object, &id);
                }
            }
        }
    }

    /// Links upserted deals (this batch's, by its answer) to their contact
    /// and company (v4 default associations; linking twice is harmless).
    async fn associate_deals(&self, items: &mut [Item<'_>], out: &BatchOutcome) {
        let members: BTreeSet<usize> = out.ok.iter().flat_map(|(m, _)| m.clone()).collect();
        for (to, pick) in [
            (
                "contacts",
                (|it: &Item<'_>| it.contact_id.clone()) as fn(&Item<'_>) -> Option<String>,
            ),
            ("companies", |it: &Item<'_>| it.company_id.clone()),
        ] {
            let inputs: Vec<Input> = members
                .iter()
                .filter(|&&i| items[i].ok())
                .filter_map(|&i| {
                    let deal = items[i].deal_id.clone()?;
                    let other = pick(&items[i])?;
                    Some(Input {
                        item: i,
                        body: json!({"from": {"id": deal}, "to": {"id": other}}),
                    })
                })
                .collect();
            if inputs.is_empty() {
                continue;
            }
            let out = self
                .batch(
                    &self.api.path(
                        Family::Associations,
                        &format!("/deals/{to}/batch/associate/default"),
                    ),
                    inputs,
                )
                .await;
            Self::apply_reports(items, &out);
        }
    }

    /// `meeting.canceled` for a booking whose meeting this destination wrote:
    /// the meeting's outcome becomes `CANCELED` (one `batch/update`) instead
    /// of a note being logged. A meeting deleted in HubSpot meanwhile gets
    /// the note.
    async fn cancel_meetings(&self, items: &mut [Item<'_>]) {
        if !self.s.meetings {
            return;
        }
        let mut inputs = Vec::new();
        let mut ids: HashMap<usize, String> = HashMap::new();
        for (i, it) in items.iter().enumerate() {
            if !it.ok() || it.plan.kind != EventKind::MeetingCanceled {
                continue;
            }
            let Some(key) = crm::meeting_key(&it.job.event) else {
                continue;
            };
            let Some(id) = crm::stored(it.job, &key, "meeting") else {
                continue;
            };
            ids.insert(i, id.to_string());
            inputs.push(Input {
                item: i,
                body: json!({"id": id, "properties": {"hs_meeting_outcome": "CANCELED"}, "objectWriteTraceId": it.job.delivery.id.to_string()}),
            });
        }
        if inputs.is_empty() {
            return;
        }
        let out = self
            .batch(
                &self.api.path(Family::Objects, "/meetings/batch/update"),
                inputs,
            )
            .await;
        Self::apply_reports(items, &out);
        for (members, body) in &out.ok {
            let errors = batch_errors(body);
            for &i in members {
                let id = ids.get(&i).cloned().unwrap_or_default();
                match error_for(&errors, &id) {
                    // Gone: the cancellation is logged as a note instead.
                    Some(_) => {}
                    None => items[i].plan.note = false,
                }
            }
        }
    }

    /// Whether this destination wrote the meeting of `job`'s booking for
    /// another event already (a vendor retry, a replay).
    fn booked_before(&self, job: &DeliveryJob) -> bool {
        crm::meeting_key(&job.event).is_some_and(|k| crm::stored(job, &k, "meeting").is_some())
    }

    /// Whether `it` writes a record of `object` (`note`, `task`, `meeting`).
    fn wants(&self, it: &Item<'_>, object: &str) -> bool {
        match object {
            "note" => it.plan.note || (it.plan.meeting && !self.s.meetings),
            "meeting" => it.plan.meeting && self.s.meetings,
            _ => it.plan.task,
        }
    }

    async fn activities(&self, items: &mut [Item<'_>]) {
        self.cancel_meetings(items).await;
        for (object, path, field) in [
            ("note", "/notes/batch/create", "hs_note_body"),
            ("task", "/tasks/batch/create", "hs_task_body"),
            ("meeting", "/meetings/batch/create", "hs_meeting_body"),
        ] {
            let found = self.already_logged(items, object, field).await;
            let mut inputs = Vec::new();
            for (i, it) in items.iter_mut().enumerate() {
                if !self.wants(it, object)
                    || !it.ok()
                    || found.contains(&i)
                    || crm::stored(it.job, &crm::event_key(it.job), object).is_some()
                    || (object == "meeting" && self.booked_before(it.job))
                {
                    continue;
                }
                if it.contact_id.is_none() && !(it.deal_only && it.deal_id.is_some()) {
                    continue;
                }
                let mut props = match self.mapping.apply(object, &it.ctx) {
                    Ok(p) => p,
                    Err(e) => {
                        it.fail(Outcome::permanent(ErrorClass::Mapping, e.to_string()));
                        continue;
                    }
                };
                crm::append_marker(&mut props, field, &crm::event_marker(it.job));
                let (c, co, d) = match object {
                    "note" => (NOTE_TO_CONTACT, NOTE_TO_COMPANY, NOTE_TO_DEAL),
                    "meeting" => (MEETING_TO_CONTACT, MEETING_TO_COMPANY, MEETING_TO_DEAL),
                    _ => (TASK_TO_CONTACT, TASK_TO_COMPANY, TASK_TO_DEAL),
                };
                let mut links: Vec<Value> = it.contact_id.iter().map(|id| assoc(id, c)).collect();
                if let Some(id) = &it.company_id {
                    links.push(assoc(id, co));
                }
                if let Some(id) = &it.deal_id {
                    links.push(assoc(id, d));
                }
                inputs.push(Input {
                    item: i,
                    body: json!({"properties": props, "associations": links, "objectWriteTraceId": it.job.delivery.id.to_string()}),
                });
            }
            if !inputs.is_empty() {
                let out = self
                    .batch(&self.api.path(Family::Objects, path), inputs)
                    .await;
                self.take_created(items, &out, object, None);
            }
        }
    }

    /// The items that want a note or task (`object`) but have no kept id
    /// for it, about a contact that existed before this attempt: an attempt
    /// that died before keeping the id may have made it already. Their
    /// contacts' notes or tasks are listed with one v4 associations
    /// `batch/read` and read with the objects' `batch/read` (both read the
    /// records; search lags), and one
    /// whose body (`field`) carries the event's marker is kept as this
    /// event's, so it is not created again. Looks at the newest 100 per
    /// contact. Returns the items whose record was found.
    async fn already_logged(
        &self,
        items: &mut [Item<'_>],
        object: &str,
        field: &str,
    ) -> BTreeSet<usize> {
        let plural = format!("{object}s");
        // (item, the record its notes or tasks hang on: `contacts` or, for a
        // person-less deal event, `deals`, and its id)
        let mut asked: Vec<(usize, &'static str, String)> = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let wanted = self.wants(it, object);
            let anchor = match (&it.contact_id, &it.deal_id) {
                (Some(c), _) if !it.contact_new => ("contacts", c.clone()),
                (None, Some(d)) if it.deal_only => ("deals", d.clone()),
                _ => continue,
            };
            if wanted
                && it.ok()
                && crm::stored(it.job, &crm::event_key(it.job), object).is_none()
                && !(object == "meeting" && self.booked_before(it.job))
            {
                asked.push((i, anchor.0, anchor.1));
            }
        }
        if asked.is_empty() {
            return BTreeSet::new();
        }
        // One v4 batch read of the records' associations per record type
        // (up to 1000 each).
        let mut linked: HashMap<(&str, String), Vec<(u64, String)>> = HashMap::new();
        for from in ["contacts", "deals"] {
            let of_type: Vec<&(usize, &str, String)> =
                asked.iter().filter(|(_, f, _)| *f == from).collect();
            for chunk in of_type.chunks(1000) {
                let body = json!({
                    "inputs": chunk.iter().map(|(_, _, c)| json!({"id": c})).collect::<Vec<_>>(),
                });
                let path = self.api.path(
                    Family::Associations,
                    &format!("/{from}/{plural}/batch/read"),
                );
                let (res, report) = self.api.call(Method::POST, &path, Some(&body)).await;
                match res {
                    Ok(v) => {
                        for r in v["results"].as_array().into_iter().flatten() {
                            let Some(id) = mapping::as_text(&r["from"]["id"]) else {
                                continue;
                            };
                            linked.entry((from, id)).or_default().extend(
                                r["to"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|t| mapping::as_text(&t["toObjectId"]))
                                    .map(|id| (id.parse().unwrap_or(0), id)),
                            );
                        }
                    }
                    Err(f) => {
                        for (i, _, _) in chunk {
                            items[*i].report = report.clone();
                            items[*i].fail(f.outcome.clone());
                        }
                        return BTreeSet::new();
                    }
                }
            }
        }
        let mut candidates: Vec<(usize, Vec<String>)> = Vec::new();
        for (i, from, id) in asked {
            let Some(mut ids) = linked.get(&(from, id)).cloned() else {
                continue;
            };
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids.truncate(100);
            candidates.push((i, ids.into_iter().map(|(_, id)| id).collect()));
        }
        let mut ids: Vec<String> = candidates.iter().flat_map(|(_, ids)| ids.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut bodies: HashMap<String, String> = HashMap::new();
        for chunk in ids.chunks(100) {
            let body = json!({
                "properties": [field],
                "inputs": chunk.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            });
            let path = self
                .api
                .path(Family::Objects, &format!("/{plural}/batch/read"));
            let (res, report) = self.api.call(Method::POST, &path, Some(&body)).await;
            match res {
                Ok(v) => bodies.extend(v["results"].as_array().into_iter().flatten().filter_map(
                    |r| {
                        Some((
                            mapping::as_text(&r["id"])?,
                            r["properties"][field].as_str()?.to_string(),
                        ))
                    },
                )),
                Err(f) => {
                    for (i, _) in &candidates {
                        items[*i].report = report.clone();
                        items[*i].fail(f.outcome.clone());
                    }
                    return BTreeSet::new();
                }
            }
        }
        let mut found = BTreeSet::new();
        for (i, ids) in candidates {
            let marker = crm::event_marker(items[i].job);
            let hit = ids
                .into_iter()
                .find(|id| bodies.get(id).is_some_and(|b| b.contains(&marker)));
            if let Some(id) = hit {
                self.learn_activity(&mut items[i], object, &id);
                found.insert(i);
            }
        }
        found
    }

    async fn custom_objects(&self, items: &mut [Item<'_>]) {
        for c in &self.s.custom_objects {
            let name = custom_name(&c.object);
            let object_path = self.api.path(Family::Objects, &format!("/{}", c.object));
            let mut inputs = Vec::new();
            for (i, it) in items.iter_mut().enumerate() {
                if !it.ok()
                    || it.contact_id.is_none()
                    || !c
                        .events
                        .iter()
                        .any(|e| e == it.job.event.event_type.as_str())
                {
                    continue;
                }
                if c.id_property.is_none()
                    && crm::stored(it.job, &crm::event_key(it.job), &name).is_some()
                {
                    continue;
                }
                let props = match self.mapping.apply(&name, &it.ctx) {
                    Ok(p) => p,
                    Err(e) => {
                        it.fail(Outcome::permanent(ErrorClass::Mapping, e.to_string()));
                        continue;
                    }
                };
                let trace = it.job.delivery.id.to_string();
                let body = match &c.id_property {
                    Some(idp) => match props.get(idp).and_then(mapping::as_text) {
                        Some(id) => {
                            json!({"idProperty": idp, "id": id, "properties": props, "objectWriteTraceId": trace})
                        }
                        None => {
                            it.fail(Outcome::permanent(
                                ErrorClass::Mapping,
                                format!("mapping {name}.{idp}: required (it is the record's key) but empty"),
                            ));
                            continue;
                        }
                    },
                    None => json!({"properties": props, "objectWriteTraceId": trace}),
                };
                inputs.push(Input { item: i, body });
            }
            if inputs.is_empty() {
                continue;
            }
            let keys: HashMap<usize, Option<String>> = inputs
                .iter()
                .map(|inp| (inp.item, inp.body["id"].as_str().map(str::to_string)))
                .collect();
            let (path, by) = match &c.id_property {
                Some(idp) => (format!("{object_path}/batch/upsert"), Some(idp.clone())),
                None => (format!("{object_path}/batch/create"), None),
            };
            let out = self.batch(&path, inputs).await;
            Self::apply_reports(items, &out);
            let mut created: Vec<(usize, String)> = Vec::new();
            for (members, body) in &out.ok {
                let results: Vec<&Value> =
                    body["results"].as_array().into_iter().flatten().collect();
                for &i in members {
                    let hit = results.iter().find(|r| match &by {
                        Some(idp) => {
                            let want = keys.get(&i).cloned().flatten().unwrap_or_default();
                            r["properties"][idp.as_str()]
                                .as_str()
                                .is_some_and(|v| v.eq_ignore_ascii_case(&want))
                        }
                        None => {
                            r["objectWriteTraceId"].as_str()
                                == Some(&items[i].job.delivery.id.to_string())
                        }
                    });
                    match hit.and_then(|r| mapping::as_text(&r["id"])) {
                        Some(id) => created.push((i, id)),
                        None => items[i].fail(Outcome::retry(
                            ErrorClass::Vendor,
                            format!(
                                "HubSpot's answer has no {} record for this delivery",
                                c.object
                            ),
                        )),
                    }
                }
            }
            for (i, id) in &created {
                let key = crm::event_key(items[*i].job);
                self.learn(&mut items[*i], &name, &key, id);
            }
            if c.associate && !created.is_empty() {
                let inputs: Vec<Input> = created
                    .iter()
                    .filter_map(|(i, id)| {
                        let contact = items[*i].contact_id.clone()?;
                        Some(Input {
                            item: *i,
                            body: json!({"from": {"id": id}, "to": {"id": contact}}),
                        })
                    })
                    .collect();
                let path = self.api.path(
                    Family::Associations,
                    &format!("/{}/contacts/batch/associate/default", c.object),
                );
                let out = self.batch(&path, inputs).await;
                Self::apply_reports(items, &out);
            }
        }
    }

    /// Learns the portal's time zone once (daily limits reset at its midnight).
    async fn fetch_details_once(&self) {
        if self.details_fetched.swap(true, Ordering::AcqRel) {
            return;
        }
        if let (Ok(v), _) = self
            .api
            .call(
                Method::GET,
                &self.api.path(Family::AccountInfo, "/details"),
                None,
            )
            .await
        {
            self.api.set_utc_offset(&v);
        }
    }
}

/// A 2xx/207 batch answer's per-input `errors`: (the ids their `context`
/// names, the failure). HubSpot's multi-status answers name inputs by id.
fn batch_errors(body: &Value) -> Vec<(BTreeSet<String>, Outcome)> {
    body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let ids: BTreeSet<String> = e["context"]
                .as_object()
                .into_iter()
                .flat_map(|c| c.values())
                .flat_map(|v| match v {
                    Value::Array(a) => a.iter().filter_map(mapping::as_text).collect::<Vec<_>>(),
                    other => mapping::as_text(other).into_iter().collect(),
                })
                .map(|s| s.to_lowercase())
                .collect();
            let category = e["category"].as_str().unwrap_or("error");
            let message = crate::redact::redact_text(e["message"].as_str().unwrap_or_default());
            let outcome = if category == "RATE_LIMITS" {
                Outcome::retry(ErrorClass::Vendor, format!("HubSpot {category}: {message}"))
            } else {
                Outcome::permanent(ErrorClass::Vendor, format!("HubSpot {category}: {message}"))
            };
            (ids, outcome)
        })
        .collect()
}

/// The failure a batch answer reports for the input known by `id`, if any.
fn error_for(errors: &[(BTreeSet<String>, Outcome)], id: &str) -> Option<Outcome> {
    let id = id.to_lowercase();
    errors
        .iter()
        .find(|(ids, _)| ids.contains(&id))
        .map(|(_, o)| o.clone())
}

/// Splits a rejected chunk into the inputs a property error is about
/// (failed, with the errors that concern them) and the rest.
fn attribute(chunk: Vec<Input>, f: &Failure) -> (Vec<(usize, Outcome)>, Vec<Input>) {
    let mut bad = Vec::new();
    let mut rest = Vec::new();
    for input in chunk {
        let props = input.body.get("properties").and_then(Value::as_object);
        let hits: Vec<PropertyError> = f
            .properties
            .iter()
            .filter(|e| {
                props
                    .and_then(|p| p.get(&e.name))
                    .is_some_and(|v| e.is_about_property() || value_in(&e.message, v))
            })
            .cloned()
            .collect();
        if hits.is_empty() {
            rest.push(input);
        } else {
            bad.push((
                input.item,
                Outcome::permanent(ErrorClass::Http4xx, describe(&hits)),
            ));
        }
    }
    (bad, rest)
}

#[async_trait]
impl Connector for HubSpot {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        crm::split_erasures(
            jobs,
            |_, targets| self.erase(targets),
            |rest| async move { self.deliver_batch(&rest).await },
        )
        .await
    }

    fn lookup_keys(&self, job: &DeliveryJob) -> Vec<String> {
        self.keys_for(job)
    }

    fn learned_remote_ids(&self) -> Vec<RemoteId> {
        self.learned.drain()
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<Value, String>> {
        let objects: &[&str] = if self.common.companies {
            &["contact", "company"]
        } else {
            &["contact"]
        };
        Some(crm::preview(&self.mapping, job, &self.common, objects))
    }

    async fn check(&self) -> CheckReport {
        self.check_portal().await
    }

    async fn cause_fixed(&self, cause: &crate::store::FixableCause) -> Option<bool> {
        self.cause_fixed_in_portal(cause).await
    }
}

impl HubSpot {
    /// A privacy erase: each contact deleted with HubSpot's GDPR delete
    /// (`POST /crm/v3/objects/contacts/gdpr-delete`, by record id), which
    /// also blocks the address from being recreated. A contact HubSpot no
    /// longer has (404) counts as erased.
    async fn erase(&self, targets: Result<Vec<crm::EraseTarget>, String>) -> JobResult {
        crm::erase_each("hubspot", targets, |t| async move {
            let body = json!({ "objectId": t.id });
            let (result, r) = self
                .api
                .call(
                    Method::POST,
                    &self.api.path(Family::Objects, "/contacts/gdpr-delete"),
                    Some(&body),
                )
                .await;
            (
                crm::Deleted::of(result.map_err(|f| (f.status, f.outcome))),
                r,
            )
        })
        .await
    }

    async fn deliver_batch(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        self.fetch_details_once().await;
        let mut items: Vec<Item<'_>> = jobs.iter().map(|j| self.prepare(j)).collect();
        let mut skipped: HashMap<usize, String> = HashMap::new();
        for (i, it) in items.iter_mut().enumerate() {
            if let Some(deal) = crm::deal_only(it.job, "hubspot")
                && let Some(reason) = crm::deal_only_skip(it.job, &self.common, deal)
            {
                skipped.insert(i, reason);
                it.plan.task = false;
            }
        }
        self.contacts(&mut items).await;
        self.companies(&mut items).await;
        self.deals(&mut items).await;
        self.activities(&mut items).await;
        self.custom_objects(&mut items).await;
        items
            .into_iter()
            .enumerate()
            .map(|(i, it)| JobResult {
                outcome: match (it.failed, skipped.remove(&i)) {
                    (Some(o), _) => o,
                    (None, Some(reason)) => Outcome::Skipped { reason },
                    (None, None) => Outcome::Delivered { remote_ids: it.ids },
                },
                report: it.report,
            })
            .collect()
    }

    fn keys_for(&self, job: &DeliveryJob) -> Vec<String> {
        let mut keys = vec![job.delivery.contact_key.clone(), crm::event_key(job)];
        if let Some(k) = crm::meeting_key(&job.event) {
            keys.push(k);
        }
        if self.common.companies && EventKind::of(&job.event.event_type) == EventKind::NewLead {
            let ctx = mapping::context(job);
            if let Ok(props) = self.mapping.apply("company", &ctx)
                && let Some(d) = props.get("domain").and_then(mapping::as_text)
            {
                keys.push(domain_key(&d.trim().to_lowercase()));
            }
        }
        keys
    }
}

impl HubSpot {
    /// The object types this destination writes, with the name their
    /// mapping is kept under.
    fn mapped_objects(&self) -> Vec<(&str, String)> {
        let mut objects: Vec<(&str, String)> = vec![("contacts", "contact".into())];
        if self.common.companies {
            objects.push(("companies", "company".into()));
        }
        let deals_used = self.common.deals
            || self.common.meeting_deal_stage.is_some()
            || !self.common.stage_map.is_empty();
        if deals_used {
            objects.push(("deals", "deal".into()));
        }
        objects.push(("notes", "note".into()));
        if self.s.meetings {
            objects.push(("meetings", "meeting".into()));
        }
        if self.common.follow_up_task || self.common.reply_as == crm::LogAs::Task {
            objects.push(("tasks", "task".into()));
        }
        for c in &self.s.custom_objects {
            objects.push((c.object.as_str(), custom_name(&c.object)));
        }
        objects
    }

    /// Whether a fixable cause is gone: the property now exists on an
    /// object whose mapping writes it (and, for a refused option, now
    /// offers the value; for a read-only property, is writable).
    async fn cause_fixed_in_portal(&self, cause: &crate::store::FixableCause) -> Option<bool> {
        if !matches!(
            cause.kind.as_str(),
            "missing_property" | "invalid_option" | "read_only"
        ) {
            return None;
        }
        let mut asked = false;
        for (object_type, name) in self.mapped_objects() {
            let Some(m) = self.mapping.object(&name) else {
                continue;
            };
            if !m
                .field_names()
                .any(|f| f.split('.').next() == Some(cause.field.as_str()))
            {
                continue;
            }
            asked = true;
            let path = self.api.path(
                Family::Properties,
                &format!("/{object_type}/{}", crm::path_segment(&cause.field)),
            );
            let prop = match self.api.call(Method::GET, &path, None).await {
                (Ok(v), _) => v,
                (Err(f), _) if f.status == Some(404) => continue,
                (Err(_), _) => return None,
            };
            let fixed = match cause.kind.as_str() {
                "missing_property" => true,
                "invalid_option" => cause.value.as_deref().is_some_and(|v| {
                    prop["options"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|o| o["value"].as_str() == Some(v))
                }),
                _ => prop["modificationMetadata"]["readOnlyValue"] == false,
            };
            if fixed {
                return Some(true);
            }
        }
        asked.then_some(false)
    }

    async fn check_portal(&self) -> CheckReport {
        let details = match self
            .api
            .call(
                Method::GET,
                &self.api.path(Family::AccountInfo, "/details"),
                None,
            )
            .await
        {
            (Ok(v), _) => v,
            (Err(f), _) => return CheckReport::failed(crm::outcome_text(&f.outcome)),
        };
        self.api.set_utc_offset(&details);
        let portal = mapping::as_text(&details["portalId"]).unwrap_or_else(|| "?".into());
        let tz = details["timeZone"].as_str().unwrap_or("?");
        let objects = self.mapped_objects();
        let mut unknown = Vec::new();
        let mut checked = 0;
        let mut key_warnings: Vec<String> = Vec::new();
        for (object_type, name) in &objects {
            let Some(m) = self.mapping.object(name) else {
                continue;
            };
            let path = self
                .api
                .path(Family::Properties, &format!("/{object_type}"));
            let props = match self.api.call(Method::GET, &path, None).await {
                (Ok(v), _) => v,
                (Err(f), _) => {
                    return CheckReport::failed(format!(
                        "portal {portal}: reading the {object_type} properties failed: {}",
                        crm::outcome_text(&f.outcome)
                    ));
                }
            };
            let names: BTreeSet<&str> = props["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            let (setting, key, what) = match *object_type {
                "companies" => (
                    "company_key_property",
                    self.s.company_key_property.trim(),
                    "a company",
                ),
                "deals" => (
                    "deal_key_property",
                    self.s.deal_key_property.trim(),
                    "a deal",
                ),
                _ => ("", "", ""),
            };
            if !key.is_empty() {
                let unique = props["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"].as_str() == Some(key) && p["hasUniqueValue"] == true);
                if !unique {
                    key_warnings.push(format!(
                        "WARNING: {object_type} have no unique-value property {key:?}, so a crash between creating {what} and keeping its id can create it twice; create it (single-line text, \"Require unique values\") or set {setting} = \"\""
                    ));
                }
            }
            for field in m.field_names() {
                let top = field.split('.').next().unwrap_or(field);
                checked += 1;
                if !names.contains(top) {
                    unknown.push(format!("{object_type}.{top}"));
                }
            }
        }
        let mut notes = Vec::new();
        if objects.iter().any(|(o, _)| *o == "deals") {
            match self
                .api
                .call(
                    Method::GET,
                    &self.api.path(Family::Pipelines, "/deals"),
                    None,
                )
                .await
            {
                (Ok(v), _) => {
                    let pipeline = v["results"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|p| p["id"].as_str() == Some(self.s.deal_pipeline.as_str()));
                    match pipeline {
                        None => unknown.push(format!("deal pipeline {:?}", self.s.deal_pipeline)),
                        Some(p) => {
                            let stages: BTreeSet<&str> = p["stages"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|s| s["id"].as_str())
                                .collect();
                            let configured = self
                                .common
                                .deal_stage
                                .iter()
                                .chain(self.common.meeting_deal_stage.iter())
                                .chain(self.common.stage_map.values());
                            for st in configured {
                                if !stages.contains(st.as_str()) {
                                    unknown.push(format!("deal stage {st:?}"));
                                }
                            }
                            notes.push(format!(
                                "pipeline {} has stages {}",
                                self.s.deal_pipeline,
                                stages.into_iter().collect::<Vec<_>>().join(", ")
                            ));
                        }
                    }
                }
                (Err(f), _) => notes.push(format!(
                    "reading pipelines failed: {}",
                    crm::outcome_text(&f.outcome)
                )),
            }
        }
        let mut message = format!(
            "portal {portal} ({tz}) at {}, API version {}: token accepted; {checked} mapped properties checked",
            self.api.base(),
            self.api.version().as_str()
        );
        if *self.api.version() == ApiVersion::V3 {
            key_warnings.push(format!(
                "WARNING: api_version \"v3\" uses the numbered APIs HubSpot now files under legacy (to be retired); set api_version = \"{CURRENT_DATED_VERSION}\" (the dated API)"
            ));
        }
        for n in notes.into_iter().chain(key_warnings) {
            message.push_str("; ");
            message.push_str(&n);
        }
        if unknown.is_empty() {
            CheckReport::ok(message)
        } else {
            CheckReport::failed(format!(
                "{message}; not in the portal: {}",
                unknown.join(", ")
            ))
        }
    }
}
