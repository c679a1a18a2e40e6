//! HubSpot read into leadrelay (`[destinations.NAME.read]`): what happens
//! in HubSpot to a contact becomes events about the contact, stored and
//! routed like any vendor event (origin `source:NAME`), so the golden
//! contact, routing, consent and deliveries do the rest:
//!
//! - the memberships of the configured contact lists become `list.joined`
//!   and `list.left` events (a Salesforce destination's
//!   `campaign_members.lists` turns them into Campaign Members);
//! - the submissions of the configured forms become `form.submitted`
//!   events (see [`forms`]);
//! - the participations in the configured marketing events become
//!   `marketing_event.registered` / `.attended` / `.cancelled` /
//!   `.no_show` events (see [`events`]).
//!
//! Each round reads every list whole (`GET …/lists/{id}`, then its
//! memberships 250 a page) under a `rate_share` of the destination's rate
//! limit, and compares the members with the ones it recorded last time
//! (key-value table, `hubspot_read:NAME:list:ID`): a new member is a join,
//! a missing one a leave. Leaves are only taken from a list HubSpot reports
//! `COMPLETE` before and after its pages were read to the last one, so a
//! list being re-evaluated, a deleted list or a failed read never empties
//! anyone's lists.
//!
//! Nothing is recorded twice: every event carries an external id built from
//! what HubSpot says (`list:ID:RECORD:joined:TIMESTAMP`, and for a leave the
//! join it ends), and the store answers a second copy from the same origin
//! as a duplicate. The recorded members move on only after the events are
//! stored, 100 at a time, so a crash or a failed request (429, 5xx) part
//! way leaves the next round to find the same changes again and store
//! only what is missing.

mod events;
mod forms;

pub use events::{MARKETING_EVENT_PREFIX, event_type_of as marketing_event_type};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use leadrelay_model::{ContactData, EmailAddress, EventType, VendorRef};
use leadrelay_sources::InboundEvent;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::api::{Api, Family};
use super::{DEFAULT_BASE_URL, Settings};
use crate::config::{Config, HumanDuration, Problem};
use crate::connectors::BuildContext;
use crate::connectors::crm::outcome_text;
use crate::connectors::crm::{self, CommonSettings};
use crate::connectors::pace::{self, Pacer};
use crate::ingest::{HookRequest, Ingestor};
use crate::store::Store;

/// The event type of a contact added to a list.
pub const LIST_JOINED: &str = "list.joined";
/// The event type of a contact taken out of a list.
pub const LIST_LEFT: &str = "list.left";
/// The contact field that holds the names of the read lists a contact is in.
pub const LISTS_FIELD: &str = "hubspot_lists";

/// HubSpot's largest memberships page.
const MEMBERSHIPS_PAGE: usize = 250;
/// Contacts per batch read, and events per stored batch.
const BATCH: usize = 100;

fn default_interval() -> HumanDuration {
    HumanDuration::secs(300)
}

fn default_share() -> f64 {
    0.2
}

fn default_form_history() -> HumanDuration {
    HumanDuration::secs(30 * 86_400)
}

fn default_form_lookback() -> HumanDuration {
    HumanDuration::secs(86_400)
}

/// `[destinations.NAME.read]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadSettings {
    /// HubSpot contact list ids (the "ILS list id" in the list's URL and
    /// the Lists API) whose memberships become `list.joined` / `list.left`
    /// events.
    #[serde(default)]
    pub lists: Vec<String>,
    /// HubSpot form GUIDs whose submissions become `form.submitted` events.
    #[serde(default)]
    pub forms: Vec<String>,
    /// How far back the first round reads a form's submissions.
    #[serde(default = "default_form_history")]
    pub form_history: HumanDuration,
    /// How far behind the newest submission seen each round reads again,
    /// for submissions HubSpot stores late or backdated.
    #[serde(default = "default_form_lookback")]
    pub form_lookback: HumanDuration,
    /// HubSpot marketing event ids (`marketingEventId`) whose
    /// participations become `marketing_event.*` events.
    #[serde(default)]
    pub marketing_events: Vec<String>,
    /// How often the lists, forms and events are read.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// The share of the destination's `rate_limit` the reads may use
    /// (0 < share ≤ 1; deliveries and syncs keep the rest).
    #[serde(default = "default_share")]
    pub rate_share: f64,
}

impl ReadSettings {
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.lists.is_empty() && self.forms.is_empty() && self.marketing_events.is_empty() {
            p.push(Problem::error(
                "read",
                "name at least one HubSpot list, form or marketing event to read (lists, forms, marketing_events)",
            ));
        }
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.chars().all(|c| c.is_ascii_digit());
        let guid = |s: &str| {
            s.len() == 36
                && s.chars().enumerate().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => c == '-',
                    _ => c.is_ascii_hexdigit(),
                })
        };
        type Ids<'a> = (&'a str, &'a Vec<String>, &'a dyn Fn(&str) -> bool, &'a str);
        let ids: [Ids<'_>; 3] = [
            (
                "lists",
                &self.lists,
                &digits,
                "a HubSpot list id (the digits in the list's URL)",
            ),
            (
                "forms",
                &self.forms,
                &guid,
                "a HubSpot form GUID (like 0a1b2c3d-0000-4000-8000-00000000abcd, in the form's URL)",
            ),
            (
                "marketing_events",
                &self.marketing_events,
                &digits,
                "a HubSpot marketing event id (digits)",
            ),
        ];
        for (key, list, valid, what) in ids {
            let mut seen = BTreeSet::new();
            for (i, l) in list.iter().enumerate() {
                if !valid(l) {
                    p.push(Problem::error(
                        format!("read.{key}[{i}]"),
                        format!("{l:?} is not {what}"),
                    ));
                } else if !seen.insert(l.to_ascii_lowercase()) {
                    p.push(Problem::error(
                        format!("read.{key}[{i}]"),
                        format!("{l} is named twice"),
                    ));
                }
            }
        }
        for (key, d) in [
            ("form_history", &self.form_history),
            ("form_lookback", &self.form_lookback),
        ] {
            if d.get().is_zero() {
                p.push(Problem::error(
                    format!("read.{key}"),
                    "must be longer than 0s",
                ));
            }
        }
        if !(self.rate_share > 0.0 && self.rate_share <= 1.0) {
            p.push(Problem::error(
                "read.rate_share",
                format!("{} is not a share: use 0 < rate_share ≤ 1", self.rate_share),
            ));
        }
        if self.interval.get().is_zero() {
            p.push(Problem::error("read.interval", "must be longer than 0s"));
        }
        p
    }
}

/// What the reader recorded about one list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ListState {
    /// The list's name when last read.
    #[serde(default)]
    name: String,
    /// Record id → the member as recorded.
    #[serde(default)]
    members: BTreeMap<String, Member>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Member {
    /// HubSpot's `membershipTimestamp` of the join.
    at: String,
    email: String,
}

/// The latest round's figures (`hubspot_read:NAME:health`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadHealth {
    pub last_round_at: Option<DateTime<Utc>>,
    /// Events stored in the latest round (duplicates not counted).
    pub last_round_events: u64,
    /// Members seen without an email (not recorded until they have one).
    pub without_email: u64,
    /// Form submissions seen without a usable email (not recorded).
    #[serde(default)]
    pub submissions_without_email: u64,
    /// Per list id (`form:GUID`, `marketing_event:ID`), why it could not
    /// be read in the latest round.
    pub errors: BTreeMap<String, String>,
}

fn key(dest: &str, rest: &str) -> String {
    format!("hubspot_read:{dest}:{rest}")
}

/// The health figures of `dest`'s reader (None before its first round).
pub async fn health(store: &Arc<dyn Store>, dest: &str) -> Option<ReadHealth> {
    let raw = store.kv_get(&key(dest, "health")).await.ok()??;
    serde_json::from_str(&raw).ok()
}

/// What one HubSpot destination reads, and its latest round.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReadStatus {
    /// The destination (its events come from `source:NAME`).
    pub destination: String,
    pub lists: usize,
    pub forms: usize,
    pub marketing_events: usize,
    /// None before the first round.
    pub health: Option<ReadHealth>,
}

/// Every HubSpot destination's reads (those with a `read` block), in
/// name order.
pub async fn statuses(config: &Config, store: &Arc<dyn Store>) -> Vec<ReadStatus> {
    let mut out = Vec::new();
    for (name, d) in &config.destinations {
        if d.connector != "hubspot" {
            continue;
        }
        let Some(read) = d
            .settings
            .get("read")
            .and_then(|r| ReadSettings::deserialize(r.clone()).ok())
        else {
            continue;
        };
        out.push(ReadStatus {
            destination: name.clone(),
            lists: read.lists.len(),
            forms: read.forms.len(),
            marketing_events: read.marketing_events.len(),
            health: health(store, name).await,
        });
    }
    out
}

/// A list as one round read it.
struct ReadList {
    id: String,
    name: String,
    /// Whether the members are the whole list (leaves may be taken).
    complete: bool,
    /// Record id → `membershipTimestamp`.
    members: BTreeMap<String, String>,
}

/// The reader of one HubSpot destination.
pub struct Reader {
    dest: String,
    api: Api,
    settings: ReadSettings,
    pacer: Pacer,
    store: Arc<dyn Store>,
    ingestor: Arc<Ingestor>,
}

/// The reader of `dest`, if its settings have a `read` block.
pub fn reader(
    ctx: &BuildContext<'_>,
    pacer: impl FnOnce(f64) -> Pacer,
    store: Arc<dyn Store>,
    ingestor: Arc<Ingestor>,
) -> Result<Option<Reader>, Vec<Problem>> {
    let (common, s): (CommonSettings, Settings) = crm::parse_split(ctx.settings)?;
    let Some(read) = s.read.clone() else {
        return Ok(None);
    };
    let version = super::api_version(&s).map_err(|p| vec![p])?;
    let (client, base, token) =
        crate::sync::client_parts(ctx, &common, &s.token_env, DEFAULT_BASE_URL)?;
    Ok(Some(Reader {
        dest: ctx.destination.to_string(),
        api: Api::new(client, base, token, version, common.allow_private_networks),
        pacer: pacer(read.rate_share),
        settings: read,
        store,
        ingestor,
    }))
}

/// A failed read: its text, for the health figures and the log.
type ReadError = String;

impl Reader {
    async fn get(&self, path: &str) -> Result<Value, ReadError> {
        self.call(Method::GET, path, None).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ReadError> {
        let (res, _report) =
            pace::scope(Some(self.pacer.clone()), self.api.call(method, path, body)).await;
        res.map_err(|f| outcome_text(&f.outcome))
    }

    /// One page of a HubSpot collection: `path` (which has its query
    /// already) at the page token `after`. Its `results`, and the next
    /// page's token: None on the last page, or when HubSpot hands back the
    /// token it was asked with (which would read the same page forever).
    async fn page(
        &self,
        path: &str,
        after: Option<&str>,
        what: &str,
    ) -> Result<(Vec<Value>, Option<String>), ReadError> {
        let path = match after {
            Some(a) => format!("{path}&after={}", urlencoding(a)),
            None => path.to_string(),
        };
        let mut page = self.get(&path).await?;
        let next = page["paging"]["next"]["after"]
            .as_str()
            .filter(|a| !a.is_empty() && Some(*a) != after)
            .map(str::to_string);
        match page.get_mut("results").map(Value::take) {
            Some(Value::Array(results)) => Ok((results, next)),
            _ => Err(format!("a {what} page without results")),
        }
    }

    /// The list's name and every member, page after page.
    async fn read_list(&self, id: &str) -> Result<ReadList, ReadError> {
        let seg = crm::path_segment(id);
        let v = self
            .get(&self.api.path(Family::Lists, &format!("/{seg}")))
            .await?;
        let list = &v["list"];
        let object = list["objectTypeId"].as_str().unwrap_or_default();
        if object != "0-1" {
            return Err(format!(
                "list {id} holds objectTypeId {object:?}: only contact lists (0-1) are read"
            ));
        }
        let name = list["name"].as_str().unwrap_or_default().to_string();
        let complete = list["processingStatus"].as_str() == Some("COMPLETE");
        let mut members = BTreeMap::new();
        let path = self.api.path(
            Family::Lists,
            &format!("/{seg}/memberships?limit={MEMBERSHIPS_PAGE}"),
        );
        let mut after: Option<String> = None;
        loop {
            let (results, next) = self
                .page(&path, after.as_deref(), "memberships")
                .await
                .map_err(|e| format!("list {id}: {e}"))?;
            for r in &results {
                let record = match &r["recordId"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => continue,
                };
                let at = r["membershipTimestamp"].as_str().unwrap_or_default();
                members.insert(record, at.to_string());
            }
            match next {
                Some(a) => after = Some(a),
                None => break,
            }
        }
        Ok(ReadList {
            id: id.to_string(),
            name,
            complete,
            members,
        })
    }

    /// Whether HubSpot still reports the list `COMPLETE`.
    async fn still_complete(&self, id: &str) -> Result<bool, ReadError> {
        let path = self
            .api
            .path(Family::Lists, &format!("/{}", crm::path_segment(id)));
        let v = self.get(&path).await?;
        Ok(v["list"]["processingStatus"].as_str() == Some("COMPLETE"))
    }

    /// Emails (and names) of these contacts; contacts that no longer exist
    /// are left out.
    async fn contacts(&self, ids: &[String]) -> Result<BTreeMap<String, ContactData>, ReadError> {
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(BATCH) {
            let inputs: Vec<Value> = chunk.iter().map(|id| json!({"id": id})).collect();
            let body = json!({"properties": ["email", "firstname", "lastname"], "inputs": inputs});
            let path = self.api.path(Family::Objects, "/contacts/batch/read");
            let v = self.call(Method::POST, &path, Some(&body)).await?;
            for r in v["results"].as_array().into_iter().flatten() {
                let Some(id) = r["id"].as_str() else { continue };
                let p = &r["properties"];
                let text = |k: &str| {
                    p[k].as_str()
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                };
                let Some(email) = text("email").and_then(|e| EmailAddress::parse(&e).ok()) else {
                    continue;
                };
                out.insert(
                    id.to_string(),
                    ContactData {
                        email: Some(email),
                        first_name: text("firstname"),
                        last_name: text("lastname"),
                        ..Default::default()
                    },
                );
            }
        }
        Ok(out)
    }

    /// What the reader recorded under `hubspot_read:NAME:{rest}` (the
    /// default when nothing is, or what is cannot be read).
    async fn load<T: serde::de::DeserializeOwned + Default>(
        &self,
        rest: &str,
    ) -> Result<T, ReadError> {
        let raw = self
            .store
            .kv_get(&key(&self.dest, rest))
            .await
            .map_err(|e| e.to_string())?;
        Ok(raw
            .and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or_default())
    }

    async fn save<T: Serialize>(&self, rest: &str, st: &T) -> Result<(), ReadError> {
        let v = serde_json::to_string(st).map_err(|e| e.to_string())?;
        self.store
            .kv_set(&key(&self.dest, rest), &v)
            .await
            .map_err(|e| e.to_string())
    }

    /// One round: every list read, its changes stored as events.
    pub async fn round(&self) -> ReadHealth {
        let mut health = ReadHealth {
            last_round_at: Some(Utc::now()),
            ..Default::default()
        };
        // Phase 1: every list as HubSpot shows it now, and as recorded.
        let mut read = Vec::new();
        let mut states = BTreeMap::new();
        for id in &self.settings.lists {
            match self.load::<ListState>(&format!("list:{id}")).await {
                Ok(st) => {
                    states.insert(id.clone(), st);
                }
                Err(e) => {
                    health.errors.insert(id.clone(), e);
                    continue;
                }
            }
            match self.read_list(id).await {
                Ok(l) => read.push(l),
                Err(e) => {
                    tracing::warn!(destination = %self.dest, list = %id, error = %e, "HubSpot list not read");
                    health.errors.insert(id.clone(), e);
                }
            }
        }
        // Every contact's lists after this round: the lists read now, and
        // as recorded for the others.
        let mut lists_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (id, st) in &states {
            if read.iter().any(|l| &l.id == id) {
                continue;
            }
            for record in st.members.keys() {
                lists_of
                    .entry(record.clone())
                    .or_default()
                    .insert(st.name.clone());
            }
        }
        for l in &read {
            for record in l.members.keys() {
                lists_of
                    .entry(record.clone())
                    .or_default()
                    .insert(l.name.clone());
            }
        }
        // Phase 2: the changes of each list read.
        for l in &read {
            let st = states.remove(&l.id).unwrap_or_default();
            if let Err(e) = self.apply(l, st, &lists_of, &mut health).await {
                tracing::warn!(destination = %self.dest, list = %l.id, error = %e, "HubSpot list changes not stored");
                health.errors.insert(l.id.clone(), e);
            }
        }
        for id in &self.settings.forms {
            if let Err(e) = self.read_form(id, &mut health).await {
                tracing::warn!(destination = %self.dest, form = %id, error = %e, "HubSpot form submissions not read");
                health.errors.insert(format!("form:{id}"), e);
            }
        }
        for id in &self.settings.marketing_events {
            if let Err(e) = self.read_marketing_event(id, &mut health).await {
                tracing::warn!(destination = %self.dest, marketing_event = %id, error = %e, "HubSpot marketing event not read");
                health.errors.insert(format!("marketing_event:{id}"), e);
            }
        }
        if let Ok(v) = serde_json::to_string(&health) {
            let _ = self.store.kv_set(&key(&self.dest, "health"), &v).await;
        }
        health
    }

    /// Stores the joins and leaves of list `l` as events, 100 at a time,
    /// each batch followed by the recorded members.
    async fn apply(
        &self,
        l: &ReadList,
        mut st: ListState,
        lists_of: &BTreeMap<String, BTreeSet<String>>,
        health: &mut ReadHealth,
    ) -> Result<(), ReadError> {
        let joined: Vec<String> = l
            .members
            .iter()
            .filter(|(record, at)| st.members.get(*record).is_none_or(|m| &m.at != *at))
            .map(|(record, _)| record.clone())
            .collect();
        let mut left: Vec<String> = if l.complete {
            st.members
                .keys()
                .filter(|r| !l.members.contains_key(*r))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        // The list may have started processing while its pages were read.
        if !left.is_empty() && !self.still_complete(&l.id).await? {
            left.clear();
        }
        let renamed = st.name != l.name;
        st.name = l.name.clone();
        let current_lists = |record: &str| -> Value {
            let names: Vec<&String> = lists_of.get(record).into_iter().flatten().collect();
            json!(names)
        };
        for chunk in joined.chunks(BATCH) {
            let people = self.contacts(chunk).await?;
            let mut events = Vec::new();
            let mut raws = Vec::new();
            for record in chunk {
                let at = l.members.get(record).cloned().unwrap_or_default();
                let Some(contact) = people.get(record) else {
                    health.without_email += 1;
                    continue;
                };
                let Some(email) = contact.email.as_ref().map(|e| e.as_str().to_string()) else {
                    continue;
                };
                let mut contact = contact.clone();
                contact
                    .custom
                    .insert(LISTS_FIELD.into(), current_lists(record));
                let mut data = Map::new();
                data.insert("list_id".into(), json!(l.id));
                data.insert("list_name".into(), json!(l.name));
                data.insert("joined_at".into(), json!(at));
                raws.push(json!({"listId": l.id, "recordId": record, "membershipTimestamp": at}));
                events.push(InboundEvent {
                    event_type: EventType::Custom(LIST_JOINED.into()),
                    external_id: Some(format!("list:{}:{record}:joined:{at}", l.id)),
                    occurred_at: parse_time(&at),
                    contact,
                    data,
                    vendor_refs: vec![contact_ref(record)],
                    changes: Vec::new(),
                });
                st.members.insert(
                    record.clone(),
                    Member {
                        at: at.clone(),
                        email,
                    },
                );
            }
            health.last_round_events += self.store_events(events, &raws).await?;
            self.save(&format!("list:{}", l.id), &st).await?;
        }
        for chunk in left.chunks(BATCH) {
            let mut events = Vec::new();
            let mut raws = Vec::new();
            let now = Utc::now();
            for record in chunk {
                let Some(m) = st.members.remove(record) else {
                    continue;
                };
                let Ok(email) = EmailAddress::parse(&m.email) else {
                    continue;
                };
                let mut contact = ContactData {
                    email: Some(email),
                    ..Default::default()
                };
                contact
                    .custom
                    .insert(LISTS_FIELD.into(), current_lists(record));
                let mut data = Map::new();
                data.insert("list_id".into(), json!(l.id));
                data.insert("list_name".into(), json!(l.name));
                data.insert("joined_at".into(), json!(m.at));
                raws.push(json!({"listId": l.id, "recordId": record, "removed": true}));
                events.push(InboundEvent {
                    event_type: EventType::Custom(LIST_LEFT.into()),
                    external_id: Some(format!("list:{}:{record}:left:{}", l.id, m.at)),
                    occurred_at: Some(now),
                    contact,
                    data,
                    vendor_refs: vec![contact_ref(record)],
                    changes: Vec::new(),
                });
            }
            health.last_round_events += self.store_events(events, &raws).await?;
            self.save(&format!("list:{}", l.id), &st).await?;
        }
        if renamed && joined.is_empty() && left.is_empty() {
            self.save(&format!("list:{}", l.id), &st).await?;
        }
        Ok(())
    }

    /// Stores events in one transaction; how many were new.
    async fn store_events(
        &self,
        events: Vec<InboundEvent>,
        raws: &[Value],
    ) -> Result<u64, ReadError> {
        if events.is_empty() {
            return Ok(0);
        }
        let body = Value::Array(raws.to_vec()).to_string();
        let req = HookRequest {
            source: &self.dest,
            content_type: Some("application/json"),
            body: body.as_bytes(),
            client_ip: None,
            received_at: Utc::now(),
        };
        let outcomes = self
            .ingestor
            .submit_hook(&req, events)
            .await
            .map_err(|e| e.to_string())?;
        Ok(outcomes
            .iter()
            .filter(|o| matches!(o, crate::store::IngestOutcome::Stored(_)))
            .count() as u64)
    }

    /// Rounds every `interval` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            self.round().await;
            tokio::select! {
                _ = tokio::time::sleep(self.settings.interval.get()) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

fn contact_ref(record: &str) -> VendorRef {
    VendorRef {
        system: "hubspot".into(),
        object: "contact".into(),
        id: record.to_string(),
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A query value, percent-encoded.
fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Starts the lists reader of every HubSpot destination with a `read`
/// block; each stops with `shutdown`.
pub fn start_all(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    enabled: &BTreeSet<String>,
    store: &Arc<dyn Store>,
    ingestor: &Arc<Ingestor>,
    shutdown: &CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, Vec<Problem>> {
    let mut out = Vec::new();
    for (name, d) in &config.destinations {
        if d.connector != "hubspot" || !d.settings.contains_key("read") {
            continue;
        }
        if !enabled.contains(name) {
            continue;
        }
        let ctx = BuildContext {
            destination: name,
            settings: &d.settings,
            env,
            timeout: d.timeout.unwrap_or(config.delivery.timeout).get(),
            public_url: "",
        };
        let pacer = |share: f64| crate::sync::share_pacer(name, d, share, store);
        let with_path = |ps: Vec<Problem>| {
            ps.into_iter()
                .map(|mut p| {
                    p.path = format!("destinations.{name}.{}", p.path);
                    p
                })
                .collect::<Vec<_>>()
        };
        if let Some(r) = reader(&ctx, pacer, store.clone(), ingestor.clone()).map_err(with_path)? {
            out.push(tokio::spawn(r.run(shutdown.clone())));
        }
    }
    Ok(out)
}

/// Whether `name` is a HubSpot destination that reads lists (its events'
/// origin is `source:NAME`, so routes may name it in `sources`).
pub fn reads(config: &Config, name: &str) -> bool {
    config
        .destinations
        .get(name)
        .is_some_and(|d| d.connector == "hubspot" && d.settings.contains_key("read"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml_text: &str) -> Vec<(String, String)> {
        let s: ReadSettings = toml::from_str(toml_text).expect("settings");
        s.problems()
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    #[test]
    fn the_check_names_each_bad_id_by_its_path() {
        assert!(problems(r#"forms = ["0a1b2c3d-0000-4000-8000-00000000abcd"]"#).is_empty());
        assert!(problems(r#"marketing_events = ["123"]"#).is_empty());
        let p = problems("");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "read");
        let p = problems(
            r#"
lists = ["12", "x1", "12"]
forms = ["0A1B2C3D-0000-4000-8000-00000000ABCD", "0a1b2c3d-0000-4000-8000-00000000abcd", "not-a-guid", "0a1b2c3d_0000_4000_8000_00000000abcd"]
marketing_events = ["", "99999999999999999999999"]
form_lookback = "0s"
"#,
        );
        let paths: Vec<&str> = p.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "read.lists[1]",
                "read.lists[2]",
                "read.forms[1]",
                "read.forms[2]",
                "read.forms[3]",
                "read.marketing_events[0]",
                "read.marketing_events[1]",
                "read.form_lookback",
            ],
            "{p:?}"
        );
        assert!(p[3].1.contains("GUID"), "{p:?}");
        assert!(p[1].1.contains("twice"), "{p:?}");
    }
}
