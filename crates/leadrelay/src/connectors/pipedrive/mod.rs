//! `pipedrive`: persons, organizations, leads, deals, notes and activities
//! in Pipedrive, with the API token from `PIPEDRIVE_API_TOKEN` sent in the
//! `x-api-token` header (never in the URL, so it never reaches a log).
//!
//! API v2 writes persons, organizations, deals and activities; v1 writes
//! leads and notes, which v2 does not have. Per delivery:
//!
//! 1. organization (new leads with a company): the kept id, else an exact
//!    name search, else created — under a per-name lock, so concurrent
//!    deliveries never create it twice;
//! 2. person: the kept id (PATCH), else an exact-match email search (PATCH
//!    the hit; a hit counts only if one of its emails equals ours — terms
//!    over 30 characters, which Pipedrive cannot match exactly, are searched
//!    loosely and compared here), else created. Deliveries about one person never run
//!    concurrently (the store hands out only the oldest per contact), and
//!    the id is kept as soon as Pipedrive returns it — also when a later
//!    step fails — so neither concurrency nor retries make duplicates;
//! 3. lead (v1) for new leads, one per person, unless the person has a deal:
//!    the kept id, else (for a person who existed before this attempt) the
//!    person's open lead from `GET /v1/leads?person_id=`, else created — so
//!    an attempt killed between creating the lead and keeping its id does
//!    not make a second one;
//! 4. deal: the kept id, else (for a person who existed before this
//!    attempt) the person's open deal from `GET /api/v2/deals?person_id=`,
//!    else opened; or moved to another stage;
//! 5. note (v1), task or meeting (v2 activities), once per event.
//!
//! An attribution writeback (`attribution.updated`) sets the custom fields
//! of `[destinations.NAME.attribution.person]` on the person (with the
//! person's write) and those of `attribution.deal` on the deal the event
//! names (its `pipedrive` / `deal` vendor reference; no other deal).

mod api;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use self::api::{Api, Failure};
use super::crm::{
    self, Activity, CommonSettings, DealStep, EventKind, IdCache, KeyedLocks, Learned, Plan,
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
const OBJECTS: [&str; 7] = [
    "person",
    "organization",
    "lead",
    "deal",
    "note",
    "task",
    "meeting",
];
const DEFAULT_BASE_URL: &str = "https://api.pipedrive.com";
/// Fields Pipedrive wants as integers.
const ID_FIELDS: [&str; 8] = [
    "owner_id",
    "org_id",
    "person_id",
    "pipeline_id",
    "stage_id",
    "visible_to",
    "deal_id",
    "organization_id",
];

fn default_token_env() -> String {
    "PIPEDRIVE_API_TOKEN".into()
}
fn yes() -> bool {
    true
}

/// Pipedrive's own settings (besides [`CommonSettings`]).
#[derive(Debug, Clone, Deserialize)]
struct Settings {
    /// The env var holding the API token.
    #[serde(default = "default_token_env")]
    token_env: String,
    /// Create a Pipedrive lead (Leads Inbox) for new leads, once per person.
    #[serde(default = "yes")]
    leads: bool,
    /// The pipeline of new deals (Pipedrive's first pipeline when unset).
    #[serde(default)]
    pipeline_id: Option<u64>,
}

pub fn kind() -> ConnectorKind {
    ConnectorKind {
        name: "pipedrive",
        summary: "Pipedrive: persons (exact email match, no duplicates), organizations, leads, deals, notes, activities",
        defaults: Defaults {
            rate_limit: Some(Rate {
                count: 20,
                period: Duration::from_secs(2),
            }),
            concurrency: 4,
            batch_size: 1,
            max_batch_size: 10,
        },
        personal_data: true,
        build,
    }
}

struct Pipedrive {
    api: Api,
    common: CommonSettings,
    s: Settings,
    mapping: Mapping,
    learned: Learned,
    cache: IdCache,
    org_locks: KeyedLocks,
    written: Written,
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let (common, s): (CommonSettings, Settings) = crm::parse_split(ctx.settings)?;
    let mut problems = common.attribution.problems(&["person", "deal"]);
    for (object, fields) in &common.attribution.0 {
        for field in fields.keys() {
            if custom_key(field).is_none() {
                problems.push(Problem::error(
                    format!("attribution.{object}.{field}"),
                    "not a Pipedrive custom field key: the field's 40-character API key (Settings > Data fields), optionally as \"custom_fields.<key>\"",
                ));
            }
        }
    }
    let token = ctx
        .secret("token_env", &s.token_env)
        .map_err(|p| problems.push(p))
        .ok();
    let base = crm::base_url(common.base_url.as_deref(), DEFAULT_BASE_URL)
        .map_err(|p| problems.push(p))
        .ok();
    let mapping = Mapping::compile(DEFAULT_MAPPING, Some(&common.mapping), &OBJECTS)
        .map_err(|ps| problems.extend(ps))
        .ok();
    let stages = common
        .deal_stage
        .iter()
        .map(|v| ("deal_stage".to_string(), v))
        .chain(
            common
                .meeting_deal_stage
                .iter()
                .map(|v| ("meeting_deal_stage".to_string(), v)),
        )
        .chain(
            common
                .stage_map
                .iter()
                .map(|(k, v)| (format!("stage_map.{k}"), v)),
        );
    for (path, v) in stages {
        if v.parse::<u64>().is_err() {
            problems.push(Problem::error(
                path,
                format!("{v:?} is not a Pipedrive stage id (a number)"),
            ));
        }
    }
    if let Some(o) = &common.owner_id
        && o.parse::<u64>().is_err()
    {
        problems.push(Problem::error("owner_id", "a Pipedrive user id (a number)"));
    }
    let client = shared::client(ctx.timeout, common.allow_private_networks)
        .map_err(|m| problems.push(Problem::error("", m)))
        .ok();
    let (Some(token), Some(base), Some(mapping), Some(client), true) =
        (token, base, mapping, client, problems.is_empty())
    else {
        return Err(problems);
    };
    Ok(Arc::new(Pipedrive {
        api: Api::new(client, base, token, common.allow_private_networks),
        common,
        s,
        mapping,
        learned: Learned::default(),
        cache: IdCache::default(),
        org_locks: KeyedLocks::default(),
        written: Written::default(),
    }))
}

/// The person fields leadrelay last wrote or read, per person id, within
/// the process: a repeat lead whose fields did not change writes nothing.
#[derive(Debug, Default)]
struct Written(std::sync::Mutex<std::collections::HashMap<String, Map<String, Value>>>);

impl Written {
    fn get(&self, id: &str) -> Option<Map<String, Value>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn merge(&self, id: &str, fields: &Map<String, Value>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 50_000 {
            m.clear();
        }
        m.entry(id.to_string())
            .or_default()
            .extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

/// A field's current value in a person as Pipedrive shows it (GET answer,
/// search hit, or what leadrelay wrote): top level, a related object's id
/// (`org_id` ← `organization.id`, `owner_id` ← `owner.id`), or a custom field.
fn current_value<'a>(current: &'a Value, field: &str) -> Option<&'a Value> {
    let related = match field {
        "org_id" => Some("organization"),
        "owner_id" => Some("owner"),
        _ => None,
    };
    current
        .get(field)
        .filter(|v| !v.is_null())
        .or_else(|| related.and_then(|r| current.get(r)).map(|o| &o["id"]))
        .or_else(|| current.get("custom_fields").and_then(|c| c.get(field)))
        .filter(|v| !v.is_null())
}

/// Whether `have` (as Pipedrive shows it) already is `want`.
fn same_value(have: &Value, want: &Value) -> bool {
    if have == want {
        return true;
    }
    // `{"value": 5, "name": …}` (v1 related objects) or `{"id": 5}`.
    if let Some(inner) = have.get("value").or_else(|| have.get("id"))
        && same_value(inner, want)
    {
        return true;
    }
    matches!((mapping::as_text(have), mapping::as_text(want)), (Some(a), Some(b)) if a.trim() == b.trim())
}

/// The fields of `body` that `current` does not already hold.
fn changed_fields(current: &Value, body: &Map<String, Value>) -> Map<String, Value> {
    body.iter()
        .filter(|(k, v)| !current_value(current, k).is_some_and(|have| same_value(have, v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A custom field's key as `attribution` names it (`<key>` or
/// `custom_fields.<key>`): Pipedrive's keys are 40-character hex hashes.
fn custom_key(field: &str) -> Option<&str> {
    let key = field.strip_prefix("custom_fields.").unwrap_or(field);
    (key.len() == 40 && key.bytes().all(|b| b.is_ascii_hexdigit())).then_some(key)
}

/// One step's failure, with the report of the request that failed.
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

fn mapping_stop(e: mapping::MappingError) -> Stop {
    Outcome::permanent(ErrorClass::Mapping, e.to_string()).into()
}

/// Digit strings in id fields become numbers (v2 rejects `"7"` for an integer).
fn ids_as_numbers(body: &mut Map<String, Value>) {
    for k in ID_FIELDS {
        if let Some(Value::String(s)) = body.get(k)
            && let Ok(n) = s.trim().parse::<u64>()
        {
            body.insert(k.to_string(), json!(n));
        }
    }
}

/// How far back [`Pipedrive::recently_added`] looks: far beyond the
/// seconds Pipedrive's search index lags.
const RECENT: chrono::Duration = chrono::Duration::minutes(10);

fn id_of(v: &Value) -> Option<String> {
    mapping::as_text(&v["id"]).filter(|s| !s.is_empty())
}

/// Pipedrive's exact matching only works for terms of up to 30 characters;
/// longer ones are searched loosely and matched exactly here.
fn exact_param(term: &str) -> &'static str {
    if term.chars().count() <= 30 {
        "true"
    } else {
        "false"
    }
}

/// The id of the first search hit whose values (`values_of`) equal `term`,
/// ignoring case: a loose search's partial matches never count.
fn exact_hit(
    found: &Value,
    term: &str,
    values_of: impl Fn(&Value) -> Vec<String>,
) -> Option<String> {
    found["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|i| {
            let item = &i["item"];
            values_of(item)
                .iter()
                .any(|v| v.trim().eq_ignore_ascii_case(term.trim()))
                .then(|| id_of(item))
                .flatten()
        })
}

fn org_key(name: &str) -> String {
    format!("org:{}", name.trim().to_lowercase())
}

/// One delivery's progress.
struct Run<'a> {
    job: &'a DeliveryJob,
    ctx: Value,
    report: AttemptReport,
    ids: Vec<RemoteId>,
    person: Option<u64>,
    /// The person was created by this attempt (so has no leads yet).
    person_created: bool,
    org: Option<u64>,
    deal: Option<u64>,
    lead: Option<String>,
    /// A `deal.stage_changed` from Pipedrive that names no person: only
    /// the stage's activity, on the deal.
    deal_only: bool,
}

impl Pipedrive {
    async fn call(
        &self,
        run: &mut Run<'_>,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, (Failure, AttemptReport)> {
        let (res, report) = self.api.call(method, path, query, body).await;
        run.report = report.clone();
        res.map_err(|f| (f, report))
    }

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

    async fn deliver_one(&self, job: &DeliveryJob) -> JobResult {
        let mut run = Run {
            job,
            ctx: mapping::context(job),
            report: AttemptReport::default(),
            ids: Vec::new(),
            person: None,
            person_created: false,
            org: None,
            deal: None,
            lead: None,
            deal_only: false,
        };
        match self.steps(&mut run).await {
            Ok(()) => JobResult {
                outcome: Outcome::Delivered {
                    remote_ids: run.ids,
                },
                report: run.report,
            },
            Err(stop) => JobResult {
                outcome: stop.outcome,
                report: stop.report.unwrap_or(run.report),
            },
        }
    }

    async fn steps(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        let job = run.job;
        let plan = Plan::of(job, &self.common)
            .map_err(|m| Stop::from(Outcome::permanent(ErrorClass::Mapping, m)))?;
        Activity::of(job, &self.common).into_context(&mut run.ctx);
        if let Some(o) =
            crm::assigned_owner(job, "pipedrive_user_id").or_else(|| self.common.owner_id.clone())
        {
            mapping::set(&mut run.ctx, "crm", "owner_id", o);
        }
        if let Some(p) = self.s.pipeline_id {
            mapping::set(&mut run.ctx, "crm", "pipeline_id", p);
        }
        if let Some(deal) = crm::deal_only(job, "pipedrive") {
            // Pipedrive moved the deal itself: only the stage's activity,
            // with the deal's id.
            if let Some(reason) = crm::deal_only_skip(job, &self.common, deal) {
                return Err(Stop::from(Outcome::Skipped { reason }));
            }
            let id = deal.parse().map_err(|_| {
                let m = format!("Pipedrive deal id {deal:?} is not a number");
                Stop::from(Outcome::permanent(ErrorClass::Mapping, m))
            })?;
            run.deal = Some(id);
            run.deal_only = true;
            return self.activity(run, "task").await;
        }
        if plan.company {
            self.organization(run).await?;
        }
        self.person(run).await?;
        self.attribution_deal(run).await?;
        self.deal(run, &plan).await?;
        if plan.kind == EventKind::NewLead && self.s.leads && run.deal.is_none() {
            self.lead(run).await?;
        }
        if plan.note {
            self.note(run).await?;
        }
        if plan.task {
            self.activity(run, "task").await?;
        }
        if plan.meeting {
            self.activity(run, "meeting").await?;
        }
        Ok(())
    }

    fn fail(f: Failure, report: AttemptReport) -> Stop {
        Stop {
            outcome: f.outcome,
            report: Some(report),
        }
    }

    /// A record of `kind` (`persons`, `organizations`) that `matches`, among
    /// the newest ones, read from the plain list: one added seconds ago is not
    /// searchable yet (Pipedrive's search index lags), so a search miss is
    /// checked here before creating. It finds a record created by an attempt
    /// that died before keeping its id when the retry comes within
    /// [`RECENT`] and fewer than 100 other records were added meanwhile;
    /// after that, search has long caught up.
    async fn recently_added(
        &self,
        run: &mut Run<'_>,
        kind: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<String>, Stop> {
        let since =
            (chrono::Utc::now() - RECENT).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let listed = self
            .call(
                run,
                Method::GET,
                &format!("/api/v2/{kind}"),
                &[
                    ("updated_since", since.as_str()),
                    ("sort_by", "add_time"),
                    ("sort_direction", "desc"),
                    ("limit", "100"),
                ],
                None,
            )
            .await
            .map_err(|(f, r)| Self::fail(f, r))?;
        // The oldest match, as the searches pick.
        Ok(listed
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| matches(v))
            .last()
            .and_then(id_of))
    }

    async fn organization(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        let mut body = self
            .mapping
            .apply("organization", &run.ctx)
            .map_err(mapping_stop)?;
        let Some(name) = body
            .get("name")
            .and_then(mapping::as_text)
            .filter(|n| !n.trim().is_empty())
        else {
            return Ok(());
        };
        let key = org_key(&name);
        let id = match self.known(run.job, &key, "organization") {
            Some(id) => id,
            None => {
                let _guard = self.org_locks.lock(&key).await;
                match self.cache.get(&key, "organization") {
                    Some(id) => id,
                    None => {
                        let found = self
                            .call(
                                run,
                                Method::GET,
                                "/api/v2/organizations/search",
                                &[
                                    ("term", name.trim()),
                                    ("fields", "name"),
                                    ("exact_match", exact_param(name.trim())),
                                    ("limit", "20"),
                                ],
                                None,
                            )
                            .await
                            .map_err(|(f, r)| Self::fail(f, r))?;
                        let hit = match exact_hit(&found, name.trim(), |item| {
                            item["name"]
                                .as_str()
                                .map(str::to_string)
                                .into_iter()
                                .collect()
                        }) {
                            Some(id) => Some(id),
                            None => {
                                self.recently_added(run, "organizations", |o| {
                                    o["name"]
                                        .as_str()
                                        .is_some_and(|n| n.trim().eq_ignore_ascii_case(name.trim()))
                                })
                                .await?
                            }
                        };
                        match hit {
                            Some(id) => id,
                            None => {
                                ids_as_numbers(&mut body);
                                let created = self
                                    .call(
                                        run,
                                        Method::POST,
                                        "/api/v2/organizations",
                                        &[],
                                        Some(&Value::Object(body)),
                                    )
                                    .await
                                    .map_err(|(f, r)| Self::fail(f, r))?;
                                id_of(&created).ok_or_else(|| {
                                    Stop::from(Outcome::retry(
                                        ErrorClass::Vendor,
                                        "Pipedrive returned no organization id",
                                    ))
                                })?
                            }
                        }
                    }
                }
            }
        };
        if crm::stored(run.job, &key, "organization") != Some(id.as_str()) {
            self.learn(run, "organization", &key, &id);
        }
        run.org = id.parse().ok();
        mapping::set(&mut run.ctx, "ids", "organization", id);
        Ok(())
    }

    async fn person(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        let mut body = self
            .mapping
            .apply("person", &run.ctx)
            .map_err(mapping_stop)?;
        let mut update = self
            .mapping
            .apply_update("person", &run.ctx)
            .map_err(mapping_stop)?;
        let email = body.remove("email").and_then(|v| mapping::as_text(&v));
        let phone = body.remove("phone").and_then(|v| mapping::as_text(&v));
        update.remove("email");
        update.remove("phone");
        // Without a known name the mapping falls back to the email: fine for
        // a new person, but never rename an existing one to their address.
        let named =
            mapping::lookup(&run.ctx, "contact.full_name").is_some_and(|v| !mapping::is_empty(v));
        if !named {
            update.remove("name");
        }
        if let Some(org) = run.org {
            body.insert("org_id".into(), json!(org));
            update.insert("org_id".into(), json!(org));
        }
        if let Some(custom) = self.attribution("person", run.job) {
            body.insert("custom_fields".into(), custom.clone());
            update.insert("custom_fields".into(), custom);
        }
        ids_as_numbers(&mut body);
        ids_as_numbers(&mut update);
        let key = run.job.delivery.contact_key.clone();
        let mut existing = self
            .known(run.job, &key, "person")
            .or_else(|| crm::vendor_ref(run.job, "pipedrive", "person").map(str::to_string));
        if let Some(id) = existing.clone() {
            match self
                .update_person(run, &id, &update, phone.as_deref(), None)
                .await
            {
                Ok(()) => {}
                // Deleted in Pipedrive since: find or create it again.
                Err((f, _)) if f.status == Some(404) => {
                    self.cache.forget(&key, "person");
                    existing = None;
                }
                Err((f, r)) => return Err(Self::fail(f, r)),
            }
        }
        if existing.is_none() {
            let Some(email) = email.clone() else {
                return Err(Outcome::permanent(
                    ErrorClass::Mapping,
                    "Pipedrive persons are matched by email and this event has none",
                )
                .into());
            };
            let found = self
                .call(
                    run,
                    Method::GET,
                    "/api/v2/persons/search",
                    &[
                        ("term", email.as_str()),
                        ("fields", "email"),
                        ("exact_match", exact_param(&email)),
                        ("limit", "20"),
                    ],
                    None,
                )
                .await
                .map_err(|(f, r)| Self::fail(f, r))?;
            let hit = match exact_hit(&found, &email, |item| {
                item["emails"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(std::iter::once(&item["primary_email"]))
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            }) {
                Some(id) => Some(id),
                None => {
                    self.recently_added(run, "persons", |p| {
                        p["emails"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|e| e["value"].as_str())
                            .any(|e| e.trim().eq_ignore_ascii_case(email.trim()))
                    })
                    .await?
                }
            };
            match hit {
                Some(id) => {
                    let seen = found
                        .get("items")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|i| i.get("item").unwrap_or(i))
                        .find(|i| i.get("id").and_then(mapping::as_text).as_deref() == Some(&id))
                        .cloned();
                    self.update_person(run, &id, &update, phone.as_deref(), seen)
                        .await
                        .map_err(|(f, r)| Self::fail(f, r))?;
                    existing = Some(id);
                }
                None => {
                    body.insert(
                        "emails".into(),
                        json!([{"value": email, "primary": true, "label": "work"}]),
                    );
                    if let Some(p) = &phone {
                        body.insert(
                            "phones".into(),
                            json!([{"value": p, "primary": true, "label": "work"}]),
                        );
                    }
                    let created = self
                        .call(
                            run,
                            Method::POST,
                            "/api/v2/persons",
                            &[],
                            Some(&Value::Object(body)),
                        )
                        .await
                        .map_err(|(f, r)| Self::fail(f, r))?;
                    run.person_created = true;
                    let id = id_of(&created).ok_or_else(|| {
                        Stop::from(Outcome::retry(
                            ErrorClass::Vendor,
                            "Pipedrive returned no person id",
                        ))
                    })?;
                    if let Value::Object(c) = &created {
                        self.written.merge(&id, c);
                    }
                    existing = Some(id);
                }
            }
        }
        let id = existing.unwrap_or_default();
        if crm::stored(run.job, &key, "person") != Some(id.as_str()) {
            self.learn(run, "person", &key, &id);
        }
        run.person = id.parse().ok();
        mapping::set(&mut run.ctx, "ids", "person", id);
        Ok(())
    }

    /// PATCHes the fields of a person that change: compared with the
    /// person as last read (`seen`: the search hit; the GET a new phone
    /// needs) or written, so a repeat lead with nothing new writes nothing.
    /// Pipedrive replaces whole `phones` lists, so a new phone is added to
    /// the person's current ones rather than replacing them.
    async fn update_person(
        &self,
        run: &mut Run<'_>,
        id: &str,
        body: &Map<String, Value>,
        phone: Option<&str>,
        seen: Option<Value>,
    ) -> Result<(), (Failure, AttemptReport)> {
        let path = format!("/api/v2/persons/{id}");
        let mut body = body.clone();
        if let Some(Value::Object(s)) = &seen {
            self.written.merge(id, s);
        }
        let mut current = Value::Object(self.written.get(id).unwrap_or_default());
        if let Some(p) = phone {
            current = self.call(run, Method::GET, &path, &[], None).await?;
            if let Value::Object(c) = &current {
                self.written.merge(id, c);
            }
            let mut phones: Vec<Value> = current["phones"].as_array().cloned().unwrap_or_default();
            let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
            let have = phones
                .iter()
                .any(|x| x["value"].as_str().is_some_and(|v| digits(v) == digits(p)));
            if !have {
                let primary = phones.is_empty();
                phones.push(json!({"value": p, "primary": primary, "label": "work"}));
                body.insert("phones".into(), Value::Array(phones));
            }
        }
        let body = changed_fields(&current, &body);
        if body.is_empty() {
            return Ok(());
        }
        let updated = self
            .call(
                run,
                Method::PATCH,
                &path,
                &[],
                Some(&Value::Object(body.clone())),
            )
            .await?;
        match updated {
            Value::Object(u) => self.written.merge(id, &u),
            _ => self.written.merge(id, &body),
        }
        Ok(())
    }

    /// The `custom_fields` object of an attribution writeback for `object`
    /// (None for other events, or nothing to write).
    fn attribution(&self, object: &str, job: &DeliveryJob) -> Option<Value> {
        let values = self.common.attribution.values(object, &job.event);
        let custom: Map<String, Value> = values
            .into_iter()
            .filter_map(|(field, v)| Some((custom_key(&field)?.to_string(), v)))
            .collect();
        (!custom.is_empty()).then_some(Value::Object(custom))
    }

    /// The keys of the company's `object` fields (`GET /v1/{object}Fields`,
    /// every page).
    async fn field_keys(&self, object: &str) -> Result<Vec<String>, String> {
        let path = format!("/api/v1/{object}Fields");
        let mut keys = Vec::new();
        let mut start = 0u64;
        // Bounded: 20 pages of 500 fields.
        for _ in 0..20 {
            let start_text = start.to_string();
            let (res, _) = self
                .api
                .call_enveloped(
                    Method::GET,
                    &path,
                    &[("start", start_text.as_str()), ("limit", "500")],
                    None,
                )
                .await;
            let v = res.map_err(|f| crm::outcome_text(&f.outcome))?;
            keys.extend(
                v["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["key"].as_str().map(str::to_string)),
            );
            let pagination = &v["additional_data"]["pagination"];
            match pagination["next_start"].as_u64() {
                Some(next) if pagination["more_items_in_collection"] == true && next > start => {
                    start = next
                }
                _ => break,
            }
        }
        Ok(keys)
    }

    /// An attribution writeback's deal fields, on the deal the event names
    /// (a deal Pipedrive does not know, e.g. another CRM's, is left out).
    async fn attribution_deal(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        let Some(custom) = self.attribution("deal", run.job) else {
            return Ok(());
        };
        let Some(deal) = crm::vendor_ref(run.job, "pipedrive", "deal") else {
            return Ok(());
        };
        let id: u64 = deal.trim().parse().map_err(|_| {
            Stop::from(Outcome::permanent(
                ErrorClass::Mapping,
                format!("Pipedrive deal id {deal:?} is not a number"),
            ))
        })?;
        self.call(
            run,
            Method::PATCH,
            &format!("/api/v2/deals/{id}"),
            &[],
            Some(&json!({ "custom_fields": custom })),
        )
        .await
        .map_err(|(f, r)| Self::fail(f, r))?;
        Ok(())
    }

    async fn deal(&self, run: &mut Run<'_>, plan: &Plan) -> Result<(), Stop> {
        let key = run.job.delivery.contact_key.clone();
        let existing = self
            .known(run.job, &key, "deal")
            .or_else(|| crm::vendor_ref(run.job, "pipedrive", "deal").map(str::to_string));
        run.deal = existing.as_deref().and_then(|d| d.parse().ok());
        let (stage, create, update) = match &plan.deal {
            DealStep::None => return Ok(()),
            DealStep::Ensure { stage } => (stage.clone(), existing.is_none(), false),
            DealStep::Move { stage, create } => (
                Some(stage.clone()),
                existing.is_none() && *create,
                existing.is_some(),
            ),
        };
        if let Some(st) = &stage {
            let n: u64 = st.parse().map_err(|_| {
                Stop::from(Outcome::permanent(
                    ErrorClass::Mapping,
                    format!("stage {st:?} is not a Pipedrive stage id; map it in stage_map"),
                ))
            })?;
            mapping::set(&mut run.ctx, "crm", "stage_id", n);
        }
        if let Some(id) = &existing {
            mapping::set(&mut run.ctx, "ids", "deal", id.clone());
        }
        if update {
            let id = existing.clone().unwrap_or_default();
            let mut body: Map<String, Value> = self
                .mapping
                .apply("deal", &run.ctx)
                .map_err(mapping_stop)?
                .into_iter()
                .filter(|(k, _)| k == "stage_id" || k == "pipeline_id")
                .collect();
            ids_as_numbers(&mut body);
            self.call(
                run,
                Method::PATCH,
                &format!("/api/v2/deals/{id}"),
                &[],
                Some(&Value::Object(body)),
            )
            .await
            .map_err(|(f, r)| Self::fail(f, r))?;
            return Ok(());
        }
        if !create {
            return Ok(());
        }
        if let Some(id) = self
            .already_made(run, "/api/v2/deals", ("status", "open"))
            .await?
        {
            self.learn(run, "deal", &key, &id);
            run.deal = id.parse().ok();
            mapping::set(&mut run.ctx, "ids", "deal", id);
            return Ok(());
        }
        let mut body = self.mapping.apply("deal", &run.ctx).map_err(mapping_stop)?;
        if let Some(p) = run.person {
            body.insert("person_id".into(), json!(p));
        }
        if let Some(o) = run.org {
            body.insert("org_id".into(), json!(o));
        }
        ids_as_numbers(&mut body);
        let created = self
            .call(
                run,
                Method::POST,
                "/api/v2/deals",
                &[],
                Some(&Value::Object(body)),
            )
            .await
            .map_err(|(f, r)| Self::fail(f, r))?;
        let id = id_of(&created).ok_or_else(|| {
            Stop::from(Outcome::retry(
                ErrorClass::Vendor,
                "Pipedrive returned no deal id",
            ))
        })?;
        self.learn(run, "deal", &key, &id);
        run.deal = id.parse().ok();
        mapping::set(&mut run.ctx, "ids", "deal", id);
        Ok(())
    }

    /// A person who existed before this attempt may have their open deal
    /// or lead already: made by an attempt that died before keeping its id.
    /// The first on the person's list at `path` (filtered by `open`); lists
    /// read the records themselves (search would lag).
    async fn already_made(
        &self,
        run: &mut Run<'_>,
        path: &str,
        open: (&str, &str),
    ) -> Result<Option<String>, Stop> {
        let Some(p) = run.person.filter(|_| !run.person_created) else {
            return Ok(None);
        };
        let person = p.to_string();
        let listed = self
            .call(
                run,
                Method::GET,
                path,
                &[("person_id", person.as_str()), open, ("limit", "1")],
                None,
            )
            .await
            .map_err(|(f, r)| Self::fail(f, r))?;
        Ok(listed.as_array().and_then(|a| a.first()).and_then(id_of))
    }

    /// A note or activity of this event that a person who existed before
    /// this attempt may have already: made by an attempt that died before
    /// keeping its id. Found among the person's newest 100 at `path` (v1
    /// notes, v2 activities: lists, which read the records, not the lagging
    /// search) by the event's marker in `field`.
    async fn already_logged(
        &self,
        run: &mut Run<'_>,
        path: &str,
        field: &str,
        marker: &str,
    ) -> Result<Option<String>, Stop> {
        // The person's (or, for a person-less deal event, the deal's).
        let (by, id) = match (run.person.filter(|_| !run.person_created), run.deal) {
            (Some(p), _) => ("person_id", p),
            (None, Some(d)) if run.deal_only => ("deal_id", d),
            _ => return Ok(None),
        };
        let id = id.to_string();
        let newest: &[(&str, &str)] = if path.starts_with("/api/v1/") {
            &[("sort", "add_time DESC")]
        } else {
            &[("sort_by", "add_time"), ("sort_direction", "desc")]
        };
        let mut query = vec![(by, id.as_str()), ("limit", "100")];
        query.extend_from_slice(newest);
        let listed = self
            .call(run, Method::GET, path, &query, None)
            .await
            .map_err(|(f, r)| Self::fail(f, r))?;
        Ok(listed
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| {
                v.get(field)
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.contains(marker))
            })
            .and_then(id_of))
    }

    async fn lead(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        let key = run.job.delivery.contact_key.clone();
        if let Some(id) = self.known(run.job, &key, "lead") {
            run.lead = Some(id.clone());
            mapping::set(&mut run.ctx, "ids", "lead", id);
            return Ok(());
        }
        if let Some(id) = self
            .already_made(run, "/api/v1/leads", ("archived_status", "not_archived"))
            .await?
        {
            self.learn(run, "lead", &key, &id);
            run.lead = Some(id.clone());
            mapping::set(&mut run.ctx, "ids", "lead", id);
            return Ok(());
        }
        let mut body = self.mapping.apply("lead", &run.ctx).map_err(mapping_stop)?;
        if let Some(p) = run.person {
            body.insert("person_id".into(), json!(p));
        }
        if let Some(o) = run.org {
            body.insert("organization_id".into(), json!(o));
        }
        if let Some(v) = body.remove("value").filter(|v| !mapping::is_empty(v)) {
            body.insert("value".into(), json!({"amount": v, "currency": "USD"}));
        }
        ids_as_numbers(&mut body);
        let created = self
            .call(
                run,
                Method::POST,
                "/api/v1/leads",
                &[],
                Some(&Value::Object(body)),
            )
            .await
            .map_err(|(f, r)| Self::fail(f, r))?;
        let id = id_of(&created).ok_or_else(|| {
            Stop::from(Outcome::retry(
                ErrorClass::Vendor,
                "Pipedrive returned no lead id",
            ))
        })?;
        self.learn(run, "lead", &key, &id);
        run.lead = Some(id.clone());
        mapping::set(&mut run.ctx, "ids", "lead", id);
        Ok(())
    }

    async fn note(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        let key = crm::event_key(run.job);
        if self.known(run.job, &key, "note").is_some() {
            return Ok(());
        }
        let marker = crm::event_marker(run.job);
        if let Some(id) = self
            .already_logged(run, "/api/v1/notes", "content", &marker)
            .await?
        {
            self.learn(run, "note", &key, &id);
            return Ok(());
        }
        let mut body = self.mapping.apply("note", &run.ctx).map_err(mapping_stop)?;
        crm::append_marker(&mut body, "content", &marker);
        if let Some(p) = run.person {
            body.insert("person_id".into(), json!(p));
        }
        if let Some(d) = run.deal {
            body.insert("deal_id".into(), json!(d));
        } else if let Some(l) = &run.lead {
            body.insert("lead_id".into(), json!(l));
        }
        if let Some(o) = run.org {
            body.insert("org_id".into(), json!(o));
        }
        ids_as_numbers(&mut body);
        let created = self
            .call(
                run,
                Method::POST,
                "/api/v1/notes",
                &[],
                Some(&Value::Object(body)),
            )
            .await
            .map_err(|(f, r)| Self::fail(f, r))?;
        let id = id_of(&created).ok_or_else(|| {
            Stop::from(Outcome::retry(
                ErrorClass::Vendor,
                "Pipedrive returned no note id",
            ))
        })?;
        self.learn(run, "note", &key, &id);
        Ok(())
    }

    /// A task or meeting (v2 activity), once per event.
    async fn activity(&self, run: &mut Run<'_>, object: &str) -> Result<(), Stop> {
        let key = crm::event_key(run.job);
        if self.known(run.job, &key, object).is_some() {
            return Ok(());
        }
        let marker = crm::event_marker(run.job);
        if let Some(id) = self
            .already_logged(run, "/api/v2/activities", "note", &marker)
            .await?
        {
            self.learn(run, object, &key, &id);
            return Ok(());
        }
        let mut body = self.mapping.apply(object, &run.ctx).map_err(mapping_stop)?;
        crm::append_marker(&mut body, "note", &marker);
        if let Some(p) = run.person {
            body.insert(
                "participants".into(),
                json!([{"person_id": p, "primary": true}]),
            );
        }
        if let Some(d) = run.deal {
            body.insert("deal_id".into(), json!(d));
        } else if let Some(l) = &run.lead {
            body.insert("lead_id".into(), json!(l));
        }
        if let Some(o) = run.org {
            body.insert("org_id".into(), json!(o));
        }
        if object == "meeting"
            && !body.contains_key("duration")
            && let (Some(s), Some(e)) = (
                mapping::lookup(&run.ctx, "activity.start_at").and_then(mapping::parse_datetime),
                mapping::lookup(&run.ctx, "activity.end_at").and_then(mapping::parse_datetime),
            )
            && e > s
        {
            let mins = (e - s).num_minutes().min(23 * 60 + 59);
            body.insert(
                "duration".into(),
                json!(format!("{:02}:{:02}", mins / 60, mins % 60)),
            );
        }
        ids_as_numbers(&mut body);
        let created = self
            .call(
                run,
                Method::POST,
                "/api/v2/activities",
                &[],
                Some(&Value::Object(body)),
            )
            .await
            .map_err(|(f, r)| Self::fail(f, r))?;
        let id = id_of(&created).ok_or_else(|| {
            Stop::from(Outcome::retry(
                ErrorClass::Vendor,
                "Pipedrive returned no activity id",
            ))
        })?;
        self.learn(run, object, &key, &id);
        Ok(())
    }
}

impl Pipedrive {
    /// A privacy erase: each person deleted (`DELETE /api/v2/persons/{id}`;
    /// Pipedrive keeps deleted persons for 30 days, then removes them for
    /// good). A person Pipedrive no longer has (404) counts as erased.
    async fn erase(&self, targets: Result<Vec<crm::EraseTarget>, String>) -> JobResult {
        crm::erase_each("pipedrive", targets, |t| async move {
            if t.id.is_empty() || !t.id.bytes().all(|b| b.is_ascii_digit()) {
                let m = format!("{:?} is not a Pipedrive person id", t.id);
                return (crm::Deleted::Malformed(m), Default::default());
            }
            let path = format!("/api/v2/persons/{}", t.id);
            let (result, r) = self.api.call(Method::DELETE, &path, &[], None).await;
            (
                crm::Deleted::of(result.map_err(|f| (f.status, f.outcome))),
                r,
            )
        })
        .await
    }
}

#[async_trait]
impl Connector for Pipedrive {
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
        if self.common.companies && EventKind::of(&job.event.event_type) == EventKind::NewLead {
            let ctx = mapping::context(job);
            if let Ok(body) = self.mapping.apply("organization", &ctx)
                && let Some(name) = body.get("name").and_then(mapping::as_text)
                && !name.trim().is_empty()
            {
                keys.push(org_key(&name));
            }
        }
        keys
    }

    fn learned_remote_ids(&self) -> Vec<RemoteId> {
        self.learned.drain()
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<Value, String>> {
        let objects: &[&str] = if self.common.companies {
            &["person", "organization"]
        } else {
            &["person"]
        };
        Some(crm::preview(&self.mapping, job, &self.common, objects))
    }

    async fn check(&self) -> CheckReport {
        let me = match self
            .api
            .call(Method::GET, "/api/v1/users/me", &[], None)
            .await
        {
            (Ok(v), _) => v,
            (Err(f), _) => return CheckReport::failed(crm::outcome_text(&f.outcome)),
        };
        let company = me["company_name"].as_str().unwrap_or("?");
        let domain = me["company_domain"].as_str().unwrap_or("?");
        let user = me["name"].as_str().unwrap_or("?");
        let mut message = format!(
            "company {company} ({domain}.pipedrive.com) at {}: token accepted for user {user}",
            self.api.base()
        );
        let stages: Vec<&String> = self
            .common
            .deal_stage
            .iter()
            .chain(self.common.meeting_deal_stage.iter())
            .chain(self.common.stage_map.values())
            .collect();
        if self.common.deals || !stages.is_empty() {
            match self
                .api
                .call(Method::GET, "/api/v2/stages", &[], None)
                .await
            {
                (Ok(v), _) => {
                    let known: Vec<String> = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| mapping::as_text(&s["id"]))
                        .collect();
                    let missing: Vec<&str> = stages
                        .iter()
                        .filter(|s| !known.contains(s))
                        .map(|s| s.as_str())
                        .collect();
                    if !missing.is_empty() {
                        return CheckReport::failed(format!(
                            "{message}; unknown stage ids: {} (known: {})",
                            missing.join(", "),
                            known.join(", ")
                        ));
                    }
                    message.push_str(&format!("; stage ids {}", known.join(", ")));
                }
                (Err(f), _) => {
                    return CheckReport::failed(format!(
                        "{message}; reading stages failed: {}",
                        crm::outcome_text(&f.outcome)
                    ));
                }
            }
        }
        // The attribution's custom fields exist in the company.
        let mut missing = Vec::new();
        for (object, fields) in &self.common.attribution.0 {
            let keys = match self.field_keys(object).await {
                Ok(k) => k,
                Err(e) => {
                    return CheckReport::failed(format!(
                        "{message}; reading the {object} fields failed: {e}"
                    ));
                }
            };
            for field in fields.keys() {
                let key = custom_key(field).unwrap_or(field);
                if !keys.iter().any(|k| k == key) {
                    missing.push(format!("attribution.{object}.{field}"));
                }
            }
        }
        if !missing.is_empty() {
            return CheckReport::failed(format!(
                "{message}; no such custom field in the company: {}",
                missing.join(", ")
            ));
        }
        CheckReport::ok(message)
    }
}
