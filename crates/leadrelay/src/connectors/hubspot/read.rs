//! HubSpot read into leadrelay (`[destinations.NAME.read]`): the
//! memberships of the configured contact lists become `list.joined` and
//! `list.left` events about the contact, stored and routed like any
//! vendor event (origin `source:NAME`), so the golden contact, routing,
//! consent and deliveries do the rest — a Salesforce destination's
//! `campaign_members.lists` turns them into Campaign Members.
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

/// `[destinations.NAME.read]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadSettings {
    /// HubSpot contact list ids (the "ILS list id" in the list's URL and
    /// the Lists API) whose memberships become `list.joined` / `list.left`
    /// events.
    #[serde(default)]
    pub lists: Vec<String>,
    /// How often the lists are read.
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
        if self.lists.is_empty() {
            p.push(Problem::error(
                "read.lists",
                "name at least one HubSpot list id to read",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, l) in self.lists.iter().enumerate() {
            if l.is_empty() || !l.chars().all(|c| c.is_ascii_digit()) {
                p.push(Problem::error(
                    format!("read.lists[{i}]"),
                    format!("{l:?} is not a HubSpot list id (the digits in the list's URL)"),
                ));
            } else if !seen.insert(l) {
                p.push(Problem::error(
                    format!("read.lists[{i}]"),
                    format!("list {l} is named twice"),
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadHealth {
    pub last_round_at: Option<DateTime<Utc>>,
    /// Events stored in the latest round (duplicates not counted).
    pub last_round_events: u64,
    /// Members seen without an email (not recorded until they have one).
    pub without_email: u64,
    /// Per list id, why it could not be read in the latest round.
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

/// A list as one round read it.
struct ReadList {
    id: String,
    name: String,
    /// Whether the members are the whole list (leaves may be taken).
    complete: bool,
    /// Record id → `membershipTimestamp`.
    members: BTreeMap<String, String>,
}

/// The lists reader of one HubSpot destination.
pub struct ListReader {
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
) -> Result<Option<ListReader>, Vec<Problem>> {
    let (common, s): (CommonSettings, Settings) = crm::parse_split(ctx.settings)?;
    let Some(read) = s.read.clone() else {
        return Ok(None);
    };
    let version = super::api_version(&s).map_err(|p| vec![p])?;
    let (client, base, token) =
        crate::sync::client_parts(ctx, &common, &s.token_env, DEFAULT_BASE_URL)?;
    Ok(Some(ListReader {
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

impl ListReader {
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
        let mut after: Option<String> = None;
        loop {
            let mut path = self.api.path(
                Family::Lists,
                &format!("/{seg}/memberships?limit={MEMBERSHIPS_PAGE}"),
            );
            if let Some(a) = &after {
                path.push_str(&format!("&after={}", urlencoding(a)));
            }
            let page = self.get(&path).await?;
            let Some(results) = page["results"].as_array() else {
                return Err(format!("list {id}: a memberships page without results"));
            };
            for r in results {
                let record = match &r["recordId"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => continue,
                };
                let at = r["membershipTimestamp"].as_str().unwrap_or_default();
                members.insert(record, at.to_string());
            }
            match page["paging"]["next"]["after"].as_str() {
                Some(a) if !a.is_empty() && after.as_deref() != Some(a) => {
                    after = Some(a.to_string())
                }
                _ => break,
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

    async fn load(&self, id: &str) -> Result<ListState, ReadError> {
        let raw = self
            .store
            .kv_get(&key(&self.dest, &format!("list:{id}")))
            .await
            .map_err(|e| e.to_string())?;
        Ok(raw
            .and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or_default())
    }

    async fn save(&self, id: &str, st: &ListState) -> Result<(), ReadError> {
        let v = serde_json::to_string(st).map_err(|e| e.to_string())?;
        self.store
            .kv_set(&key(&self.dest, &format!("list:{id}")), &v)
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
            match self.load(id).await {
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
            self.save(&l.id, &st).await?;
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
            self.save(&l.id, &st).await?;
        }
        if renamed && joined.is_empty() && left.is_empty() {
            self.save(&l.id, &st).await?;
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
