//! What the CRM connectors (HubSpot, Pipedrive, Salesforce) share: what
//! each event type does ([`Plan`]), the text of the notes, tasks and
//! meetings they log ([`Activity`]), the settings every CRM has
//! ([`CommonSettings`]), the remote-id keys, and the bookkeeping that keeps
//! records from being created twice ([`Learned`], [`KeyedLocks`]).
//!
//! Deduplication, for every vendor, rests on three things: the store hands a
//! destination only the oldest unfinished delivery per contact (so one
//! person's deliveries never race each other); every id a CRM gives us is
//! kept (per destination, key and object) and reused; and records without a
//! natural key of ours (companies by domain or name) are resolved under a
//! per-key lock so two concurrent batches never create the same one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use leadrelay_model::{Event, EventType};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::DeliveryJob;
use crate::config::{HumanDuration, Problem, parse_settings};
use crate::mapping::{self, parse_datetime};
use crate::store::RemoteId;

/// What an event type asks a CRM to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `lead.created`, `form.submitted`.
    NewLead,
    /// `reply.received`.
    Reply,
    /// `meeting.booked`.
    Meeting,
    /// `meeting.canceled`.
    MeetingCanceled,
    /// `deal.stage_changed`.
    DealStage,
    /// An event type listed in `log_activities` (emails sent, opened,
    /// calls …): logged as an activity on the person.
    Logged,
    /// Anything else (`contact.updated`, custom types …): the person only.
    Update,
}

impl EventKind {
    /// What `job`'s event asks of a CRM configured with `s`.
    pub fn for_job(job: &DeliveryJob, s: &CommonSettings) -> Self {
        let t = &job.event.event_type;
        match Self::of(t) {
            EventKind::Update if s.log_activities.iter().any(|l| l == t.as_str()) => {
                EventKind::Logged
            }
            kind => kind,
        }
    }

    pub fn of(t: &EventType) -> Self {
        match t {
            EventType::LeadCreated | EventType::FormSubmitted => EventKind::NewLead,
            EventType::ReplyReceived => EventKind::Reply,
            EventType::MeetingBooked => EventKind::Meeting,
            EventType::MeetingCanceled => EventKind::MeetingCanceled,
            EventType::DealStageChanged => EventKind::DealStage,
            _ => EventKind::Update,
        }
    }
}

/// How an activity (reply, follow-up) is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogAs {
    #[default]
    Note,
    Task,
}

/// Text, a number or nothing, read as text (ids and stages are either).
fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        I(i64),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|r| match r {
        Raw::S(s) => s,
        Raw::I(i) => i.to_string(),
    }))
}

fn stage_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: BTreeMap<String, toml::Value> = BTreeMap::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => Ok((k, s)),
            toml::Value::Integer(i) => Ok((k, i.to_string())),
            _ => Err(serde::de::Error::custom(format!(
                "stage_map.{k}: a stage id (text or number)"
            ))),
        })
        .collect()
}

fn yes() -> bool {
    true
}

fn one_day() -> HumanDuration {
    HumanDuration::secs(86_400)
}

/// Settings every CRM connector has (documented in the README's CRM section).
#[derive(Debug, Clone, Deserialize)]
pub struct CommonSettings {
    /// The API's base URL (regional endpoints, proxies, `leadrelay fake`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Allow a base URL on a private network (the local fakes).
    #[serde(default)]
    pub allow_private_networks: bool,
    /// Write the company (HubSpot company, Pipedrive organization,
    /// Salesforce account) and link the person to it.
    #[serde(default = "yes")]
    pub companies: bool,
    /// Open a deal for new leads (one open deal per person, reused).
    #[serde(default)]
    pub deals: bool,
    /// Log the lead's message as a note.
    #[serde(default = "yes")]
    pub notes: bool,
    /// Create a follow-up task for new leads.
    #[serde(default)]
    pub follow_up_task: bool,
    /// When the follow-up task is due, after the lead arrived.
    #[serde(default = "one_day")]
    pub follow_up_due: HumanDuration,
    /// How `reply.received` is logged: `note` or `task`.
    #[serde(default)]
    pub reply_as: LogAs,
    /// The owner of the records leadrelay creates (vendor user id).
    #[serde(default, deserialize_with = "text_or_number")]
    pub owner_id: Option<String>,
    /// The stage of deals opened for new leads (vendor default otherwise).
    #[serde(default, deserialize_with = "text_or_number")]
    pub deal_stage: Option<String>,
    /// The stage a person's deal moves to on `meeting.booked`.
    #[serde(default, deserialize_with = "text_or_number")]
    pub meeting_deal_stage: Option<String>,
    /// `deal.stage_changed`: the event's stage (`data.stage`) → vendor stage id.
    #[serde(default, deserialize_with = "stage_map")]
    pub stage_map: BTreeMap<String, String>,
    /// `reply.received` also makes a follow-up task for the owner, beside
    /// the reply logged as `reply_as`.
    #[serde(default)]
    pub reply_task: bool,
    /// `deal.stage_changed`: the event's stage (as sent, or the vendor
    /// stage it maps to) → the subject of a task created for that stage.
    #[serde(default)]
    pub stage_tasks: BTreeMap<String, String>,
    /// Event types logged as activities on the person (as `reply_as`
    /// says: note or task), e.g. `["email.sent", "email.opened",
    /// "call.logged"]`. Written once per vendor activity id.
    #[serde(default)]
    pub log_activities: Vec<String>,
    /// Field mapping overrides, per vendor object.
    #[serde(default)]
    pub mapping: toml::Table,
    /// Attribution written back (`[reports.writeback]`): per object, the
    /// CRM field → the attribution value it gets.
    #[serde(default)]
    pub attribution: AttributionFields,
}

/// `[destinations.NAME.attribution]`: per CRM object, which field gets
/// which value of an `attribution.updated` event
/// (`contact = { lr_first_channel = "first_touch_channel" }`; the values
/// are [`crate::reports::writeback::FIELDS`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct AttributionFields(pub BTreeMap<String, BTreeMap<String, String>>);

impl AttributionFields {
    /// Unknown objects (not in `objects`) and values, by path.
    pub fn problems(&self, objects: &[&str]) -> Vec<Problem> {
        let mut out = Vec::new();
        for (object, fields) in &self.0 {
            if !objects.contains(&object.as_str()) {
                out.push(Problem::error(
                    format!("attribution.{object}"),
                    format!("not one of {}", objects.join(", ")),
                ));
                continue;
            }
            for (field, value) in fields {
                if field.trim().is_empty() {
                    out.push(Problem::error(
                        format!("attribution.{object}"),
                        "a field name is empty",
                    ));
                }
                if !crate::reports::writeback::FIELDS.contains(&value.as_str()) {
                    out.push(Problem::error(
                        format!("attribution.{object}.{field}"),
                        format!(
                            "{value:?} is not one of {}",
                            crate::reports::writeback::FIELDS.join(", ")
                        ),
                    ));
                }
            }
        }
        out
    }

    /// The fields of `object` with their values, for an
    /// `attribution.updated` event (empty for any other event, and for
    /// values the event lacks).
    pub fn values(&self, object: &str, event: &Event) -> Map<String, Value> {
        if event.event_type.as_str() != crate::reports::writeback::EVENT_TYPE {
            return Map::new();
        }
        self.0
            .get(object)
            .into_iter()
            .flatten()
            .filter_map(|(field, from)| {
                let v = event.data.get(from).filter(|v| !mapping::is_empty(v))?;
                Some((field.clone(), v.clone()))
            })
            .collect()
    }

    /// Whether `event` is an attribution writeback.
    pub fn applies(event: &Event) -> bool {
        event.event_type.as_str() == crate::reports::writeback::EVENT_TYPE
    }
}

/// The keys of [`CommonSettings`].
const COMMON_KEYS: [&str; 17] = [
    "attribution",
    "reply_task",
    "stage_tasks",
    "log_activities",
    "base_url",
    "allow_private_networks",
    "companies",
    "deals",
    "notes",
    "follow_up_task",
    "follow_up_due",
    "reply_as",
    "owner_id",
    "deal_stage",
    "meeting_deal_stage",
    "stage_map",
    "mapping",
];

/// Splits a connector's settings into the common ones and its own, and
/// parses both (every unknown key and type error reported by path).
pub fn parse_split<T: for<'de> Deserialize<'de>>(
    settings: &toml::Table,
) -> Result<(CommonSettings, T), Vec<Problem>> {
    let mut common = toml::Table::new();
    let mut own = toml::Table::new();
    for (k, v) in settings {
        if COMMON_KEYS.contains(&k.as_str()) {
            common.insert(k.clone(), v.clone());
        } else {
            own.insert(k.clone(), v.clone());
        }
    }
    let c = parse_settings::<CommonSettings>(&common);
    let o = parse_settings::<T>(&own);
    match (c, o) {
        (Ok(c), Ok(o)) => Ok((c, o)),
        (c, o) => {
            let mut problems = c.err().unwrap_or_default();
            problems.extend(o.err().unwrap_or_default());
            Err(problems)
        }
    }
}

/// A base URL setting: http(s), a host, no trailing slash.
pub fn base_url(raw: Option<&str>, default: &str) -> Result<String, Problem> {
    let s = raw.unwrap_or(default).trim().trim_end_matches('/');
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(s.to_string()),
        _ => Err(Problem::error(
            "base_url",
            format!("{s:?} is not an http:// or https:// URL"),
        )),
    }
}

/// Deal work for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DealStep {
    None,
    /// Make sure the person has a deal (create it at `stage` when missing).
    Ensure {
        stage: Option<String>,
    },
    /// Move the person's deal to `stage`; when there is none, create it
    /// (`create`) or leave it (`!create`).
    Move {
        stage: String,
        create: bool,
    },
}

/// What one delivery does in a CRM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub kind: EventKind,
    pub company: bool,
    pub deal: DealStep,
    /// Write [`Activity`] as a note.
    pub note: bool,
    /// Write [`Activity`] as a task.
    pub task: bool,
    /// Log [`Activity`] as a meeting (vendors without meetings log a note).
    pub meeting: bool,
}

impl Plan {
    /// The steps for `job` under `s`. Errors are permanent (e.g. a stage
    /// change without a stage).
    pub fn of(job: &DeliveryJob, s: &CommonSettings) -> Result<Plan, String> {
        let kind = EventKind::for_job(job, s);
        let mut plan = Plan {
            kind,
            company: false,
            deal: DealStep::None,
            note: false,
            task: false,
            meeting: false,
        };
        match kind {
            EventKind::NewLead => {
                plan.company = s.companies;
                if s.deals {
                    plan.deal = DealStep::Ensure {
                        stage: s.deal_stage.clone(),
                    };
                }
                plan.note = s.notes && message(&job.event).is_some();
                plan.task = s.follow_up_task;
            }
            EventKind::Reply => {
                match s.reply_as {
                    LogAs::Note => plan.note = true,
                    LogAs::Task => plan.task = true,
                }
                plan.task |= s.reply_task;
            }
            EventKind::Logged => match s.reply_as {
                LogAs::Note => plan.note = true,
                LogAs::Task => plan.task = true,
            },
            EventKind::Meeting => {
                plan.meeting = true;
                if let Some(stage) = &s.meeting_deal_stage {
                    plan.deal = DealStep::Move {
                        stage: stage.clone(),
                        create: s.deals,
                    };
                }
            }
            EventKind::MeetingCanceled => plan.note = true,
            EventKind::DealStage => {
                let raw = event_stage(&job.event)
                    .ok_or("deal.stage_changed without a stage (data.stage)")?;
                let stage = s
                    .stage_map
                    .get(&raw)
                    .or_else(|| {
                        s.stage_map
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(&raw))
                            .map(|(_, v)| v)
                    })
                    .cloned()
                    .unwrap_or_else(|| raw.clone());
                plan.task = stage_task(s, &raw, &stage).is_some();
                plan.deal = DealStep::Move {
                    stage,
                    create: true,
                };
            }
            // The MQL → SQL handoff asks for the owner's follow-up task.
            EventKind::Update => plan.task = handoff_task_due(&job.event).is_some(),
        }
        Ok(plan)
    }
}

/// The subject of the task `stage_tasks` asks for when a deal reaches
/// `raw` (the stage as the event names it) or `mapped` (the vendor's).
fn stage_task<'a>(s: &'a CommonSettings, raw: &str, mapped: &str) -> Option<&'a String> {
    s.stage_tasks
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(raw) || k.eq_ignore_ascii_case(mapped))
        .map(|(_, v)| v)
}

/// The follow-up task's due time a `lead.qualified` event (the pipeline's
/// handoff) carries in `data.task_due_at`.
pub fn handoff_task_due(event: &Event) -> Option<DateTime<Utc>> {
    if event.event_type.as_str() != crate::pipeline::handoff::QUALIFIED {
        return None;
    }
    event.data.get("task_due_at").and_then(parse_datetime)
}

/// The lead's assigned owner's id in this CRM (`key`: `hubspot_owner_id`,
/// `pipedrive_user_id`, `salesforce_user_id`): on pipeline events the owner
/// of `lead.qualified` or the manager of a `lead.sla_breached` that
/// reassigned the lead; on any other event the owner the golden record is
/// assigned to (`[[owners]]`). It takes the place of the destination's
/// `owner_id`.
pub fn assigned_owner(job: &DeliveryJob, key: &str) -> Option<String> {
    event_owner(&job.event, key).or_else(|| {
        let o = job.owner.as_ref()?;
        let id = match key {
            "hubspot_owner_id" => o.hubspot_owner_id.as_ref(),
            "pipedrive_user_id" => o.pipedrive_user_id.as_ref(),
            "salesforce_user_id" => o.salesforce_user_id.as_ref(),
            _ => None,
        }?;
        Some(id.trim().to_string()).filter(|s| !s.is_empty())
    })
}

fn event_owner(event: &Event, key: &str) -> Option<String> {
    let who = match event.event_type.as_str() {
        crate::pipeline::handoff::QUALIFIED => "owner",
        crate::pipeline::handoff::SLA_BREACHED
            if event.data.get("reassigned") == Some(&Value::Bool(true)) =>
        {
            "manager"
        }
        _ => return None,
    };
    event
        .data
        .get(who)?
        .get(key)
        .and_then(mapping::as_text)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The lifecycle stage a `lead.qualified` event asks for.
pub fn handoff_lifecycle(event: &Event) -> Option<String> {
    if event.event_type.as_str() != crate::pipeline::handoff::QUALIFIED {
        return None;
    }
    data_text(event, &["lifecycle_stage"])
}

fn data_text(event: &Event, keys: &[&str]) -> Option<String> {
    keys.iter()
        .filter_map(|k| event.data.get(*k))
        .filter_map(mapping::as_text)
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
}

/// The message a lead left (`data.message`, or `comments`, `notes`).
pub fn message(event: &Event) -> Option<String> {
    data_text(event, &["message", "comments", "comment", "notes"])
}

/// The stage a `deal.stage_changed` names.
pub fn event_stage(event: &Event) -> Option<String> {
    data_text(
        event,
        &[
            "stage",
            "deal_stage",
            "dealstage",
            "stage_id",
            "to_stage",
            "new_stage",
        ],
    )
}

/// A note, task or meeting being written for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub subject: String,
    pub body: String,
    /// When a task is due.
    pub due_at: DateTime<Utc>,
    /// A meeting's start and end.
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
}

impl Activity {
    /// The activity text for `job` (what notes, tasks and meetings say).
    pub fn of(job: &DeliveryJob, s: &CommonSettings) -> Activity {
        let e = &job.event;
        let person = who(job);
        let due_at = handoff_task_due(e).unwrap_or_else(|| {
            e.occurred_at.max(e.received_at)
                + chrono::Duration::from_std(s.follow_up_due.get()).unwrap_or_default()
        });
        let mut a = Activity {
            subject: String::new(),
            body: String::new(),
            due_at,
            start_at: None,
            end_at: None,
        };
        let from = match (&e.origin.kind, e.origin.name.as_str()) {
            (_, "") => String::new(),
            (k, n) => format!(" ({} {n})", k.as_str()),
        };
        match EventKind::for_job(job, s) {
            EventKind::NewLead => {
                a.subject = format!("Follow up with {person}");
                a.body = message(e).unwrap_or_default();
            }
            EventKind::Reply => {
                a.subject = format!("Reply from {person}");
                a.body = data_text(
                    e,
                    &["reply_text", "reply", "text", "body", "message", "snippet"],
                )
                .unwrap_or_else(|| format!("{person} replied{from}."));
            }
            EventKind::Meeting | EventKind::MeetingCanceled => {
                let canceled = EventKind::of(&e.event_type) == EventKind::MeetingCanceled;
                let name = data_text(e, &["meeting_name", "title", "name", "event_name"])
                    .unwrap_or_else(|| "Meeting".into());
                a.start_at = [
                    "start_time",
                    "start",
                    "starts_at",
                    "start_at",
                    "scheduled_at",
                ]
                .iter()
                .filter_map(|k| e.data.get(*k))
                .find_map(parse_datetime);
                a.end_at = ["end_time", "end", "ends_at", "end_at"]
                    .iter()
                    .filter_map(|k| e.data.get(*k))
                    .find_map(parse_datetime);
                let verb = if canceled { "canceled" } else { "booked" };
                a.subject = format!("{name} {verb} with {person}");
                let mut lines = vec![format!("{name} {verb}{from}.")];
                if let Some(t) = a.start_at {
                    lines.push(format!("Starts: {}", t.format("%Y-%m-%d %H:%M UTC")));
                }
                for (label, keys) in [
                    ("Location", &["location", "join_url", "meeting_url"][..]),
                    ("Reason", &["cancel_reason", "reason"][..]),
                ] {
                    if let Some(v) = data_text(e, keys) {
                        lines.push(format!("{label}: {v}"));
                    }
                }
                a.body = lines.join("\n");
            }
            EventKind::Update if handoff_task_due(e).is_some() => {
                a.subject = format!("Follow up with {person} (sales-qualified lead)");
                let mut lines = Vec::new();
                if let Some(score) = e.data.get("score").and_then(Value::as_f64) {
                    lines.push(format!("Lead score: {score}"));
                }
                if let Some(r) = data_text(e, &["reason"]) {
                    lines.push(format!("Assigned: {r}"));
                }
                a.body = lines.join("\n");
            }
            EventKind::Logged => {
                let what = match e.event_type.as_str() {
                    "email.sent" => format!("Email sent to {person}"),
                    "email.opened" => format!("Email opened by {person}"),
                    "email.clicked" => format!("Email link clicked by {person}"),
                    "email.bounced" => format!("Email to {person} bounced"),
                    t if t.starts_with("call.") => format!("Call with {person}"),
                    t if t.starts_with("meeting.") => format!("Meeting with {person}"),
                    t => format!("{t}: {person}"),
                };
                a.subject = what;
                let mut lines = vec![format!("{}{from}.", a.subject)];
                for (label, keys) in [
                    ("Subject", &["subject", "email_subject", "title"][..]),
                    (
                        "Campaign",
                        &["campaign_name", "campaignName", "sequence_name"][..],
                    ),
                    ("Step", &["sequence_number", "sequenceStep", "step"][..]),
                    ("Link", &["link", "url", "clicked_url"][..]),
                    ("Notes", &["note", "notes", "body", "text"][..]),
                ] {
                    if let Some(v) = data_text(e, keys) {
                        lines.push(format!("{label}: {v}"));
                    }
                }
                a.body = lines.join("\n");
            }
            EventKind::DealStage => {
                let raw = event_stage(e).unwrap_or_default();
                let mapped = s
                    .stage_map
                    .get(&raw)
                    .cloned()
                    .unwrap_or_else(|| raw.clone());
                let whose = if person == "the contact" {
                    "The deal".to_string()
                } else {
                    format!("{person}'s deal")
                };
                match stage_task(s, &raw, &mapped) {
                    Some(subject) => {
                        a.subject = subject.clone();
                        a.body = format!("{whose} moved to {raw}{from}.");
                    }
                    None => a.subject = format!("{} for {person}", e.event_type.as_str()),
                }
            }
            EventKind::Update => {
                a.subject = format!("{} for {person}", e.event_type.as_str());
            }
        }
        a
    }

    /// Puts the activity into a mapping context under `activity`.
    pub fn into_context(&self, ctx: &mut Value) {
        let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        mapping::set(ctx, "activity", "subject", self.subject.clone());
        mapping::set(ctx, "activity", "body", self.body.clone());
        mapping::set(ctx, "activity", "due_at", rfc(self.due_at));
        mapping::set(
            ctx,
            "activity",
            "due_date",
            self.due_at.format("%Y-%m-%d").to_string(),
        );
        if let Some(t) = self.start_at {
            mapping::set(ctx, "activity", "start_at", rfc(t));
        }
        if let Some(t) = self.end_at {
            mapping::set(ctx, "activity", "end_at", rfc(t));
        }
    }
}

/// How a person is named in activity subjects.
fn who(job: &DeliveryJob) -> String {
    let data = job
        .contact
        .as_ref()
        .map(|c| &c.data)
        .unwrap_or(&job.event.contact);
    data.full_name()
        .or_else(|| job.event.contact.full_name())
        .or_else(|| data.email.as_ref().map(|e| e.as_str().to_string()))
        .unwrap_or_else(|| "the contact".into())
}

/// The key of records written once per event (notes, tasks, meetings):
/// `activity:SYSTEM:ID` when the event carries the vendor's own activity
/// id (a `VendorRef` of object `activity`, set by the engagement-tool
/// sources), so a vendor retry stored as a second event, a replay, or the
/// same activity from another source never makes a second CRM activity;
/// else `event:ID`.
pub fn event_key(job: &DeliveryJob) -> String {
    match vendor_activity(&job.event) {
        Some((system, id)) => format!("activity:{}:{}", safe_id(system), safe_id(id)),
        None => format!("event:{}", job.event.id),
    }
}

/// A vendor id as it can stand in a key and in the HTML body of a note:
/// itself when it is short and made of `A-Z a-z 0-9 . _ : @ -` only, else
/// `sha256:` and the first 32 hex digits of its SHA-256 (stable, so every
/// event naming the same activity gets the same key).
fn safe_id(id: &str) -> String {
    let plain = id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b));
    if plain {
        return id.to_string();
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(id.as_bytes()));
    format!("sha256:{}", &digest[..32])
}

/// The key a booked meeting is kept under besides its event's, so the
/// booking's later cancellation (another event) finds the meeting it wrote:
/// `meeting:SYSTEM:ID` from the event's vendor reference of the booking
/// (`meeting` — Salesloft, `invitee` — Calendly, one per person and booking
/// —, `booking`, else `scheduled_event`).
pub fn meeting_key(event: &Event) -> Option<String> {
    ["meeting", "invitee", "booking", "scheduled_event"]
        .iter()
        .find_map(|object| {
            event
                .vendor_refs
                .iter()
                .find(|r| r.object == *object && !r.id.trim().is_empty())
        })
        .map(|r| format!("meeting:{}:{}", safe_id(&r.system), safe_id(&r.id)))
}

/// The vendor's activity id an event carries (system, id).
pub fn vendor_activity(event: &Event) -> Option<(&str, &str)> {
    event
        .vendor_refs
        .iter()
        .find(|r| r.object == ACTIVITY_OBJECT && !r.id.trim().is_empty())
        .map(|r| (r.system.as_str(), r.id.as_str()))
}

/// The `VendorRef` object under which sources record a vendor activity id.
pub const ACTIVITY_OBJECT: &str = "activity";

/// The id this destination gave `object` under `key` before, if any.
pub fn stored<'a>(job: &'a DeliveryJob, key: &str, object: &str) -> Option<&'a str> {
    job.remote_ids
        .iter()
        .find(|r| r.key == key && r.object == object)
        .map(|r| r.id.as_str())
}

/// The person's own key (`email:…`) and a stored id under it.
pub fn stored_for_person<'a>(job: &'a DeliveryJob, object: &str) -> Option<&'a str> {
    stored(job, &job.delivery.contact_key, object)
}

/// A vendor id the event itself carries (`vendor_refs`), e.g. the HubSpot
/// deal of a `deal.stage_changed` that came from HubSpot.
/// The deal a `deal.stage_changed` event that names no person is about:
/// `system`'s own deal id (its deal webhook names the deal by id only).
/// Such an event gets its stage task on the deal itself.
pub fn deal_only<'a>(job: &'a DeliveryJob, system: &str) -> Option<&'a str> {
    let person = job.event.contact.email.is_some()
        || job.contact.as_ref().is_some_and(|c| c.data.email.is_some());
    (EventKind::of(&job.event.event_type) == EventKind::DealStage && !person)
        .then(|| vendor_ref(job, system, "deal"))
        .flatten()
}

/// Why a person-less deal event ([`deal_only`]) has nothing to write: its
/// stage has no `stage_tasks` entry.
pub fn deal_only_skip(job: &DeliveryJob, s: &CommonSettings, deal: &str) -> Option<String> {
    let raw = event_stage(&job.event).unwrap_or_default();
    let mapped = s
        .stage_map
        .get(&raw)
        .cloned()
        .unwrap_or_else(|| raw.clone());
    stage_task(s, &raw, &mapped).is_none().then(|| {
        format!("deal {deal} moved to {raw:?}: no stage task for that stage, and the event names no person")
    })
}

pub fn vendor_ref<'a>(job: &'a DeliveryJob, system: &str, object: &str) -> Option<&'a str> {
    job.event
        .vendor_refs
        .iter()
        .find(|r| r.system == system && r.object == object)
        .map(|r| r.id.as_str())
}

pub fn remote_id(object: &str, key: &str, id: impl Into<String>) -> RemoteId {
    RemoteId {
        object: object.to_string(),
        key: key.to_string(),
        id: id.into(),
    }
}

/// Remote ids a connector learned, drained by the dispatcher after each batch.
#[derive(Debug, Default)]
pub struct Learned(Mutex<Vec<RemoteId>>);

impl Learned {
    pub fn push(&self, id: RemoteId) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(id);
    }

    pub fn drain(&self) -> Vec<RemoteId> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Async locks by key, so concurrent batches resolve one company (domain,
/// name) one at a time instead of both creating it.
#[derive(Debug, Default)]
pub struct KeyedLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            // Forget locks nobody holds, so the map stays small.
            if map.len() > 1024 {
                map.retain(|_, l| Arc::strong_count(l) > 1);
            }
            map.entry(key.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }
}

/// A small id cache (key, object → id) that survives within the process:
/// what search indexes have not caught up with yet.
#[derive(Debug, Default)]
pub struct IdCache(Mutex<HashMap<(String, String), String>>);

impl IdCache {
    pub fn get(&self, key: &str, object: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(key.to_string(), object.to_string()))
            .cloned()
    }

    pub fn put(&self, key: &str, object: &str, id: &str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 50_000 {
            m.clear();
        }
        m.insert((key.to_string(), object.to_string()), id.to_string());
    }

    pub fn forget(&self, key: &str, object: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(key.to_string(), object.to_string()));
    }
}

/// An outcome's message (for `check` reports).
pub fn outcome_text(o: &super::Outcome) -> String {
    use super::Outcome;
    match o {
        Outcome::Delivered { .. } => "ok".into(),
        Outcome::Retry { message, .. }
        | Outcome::Permanent { message, .. }
        | Outcome::Throttled { message, .. }
        | Outcome::CredentialsRejected { message }
        | Outcome::Gone { message }
        | Outcome::Deferred {
            reason: message, ..
        }
        | Outcome::Skipped { reason: message } => message.clone(),
    }
}

#[cfg(test)]
mod tests;

/// A CRM's preview for `simulate`: `objects` (the person and company
/// records) mapped as for a new record, with the activity text in the
/// context; the first mapping error names its field.
pub fn preview(
    mapping: &mapping::Mapping,
    job: &DeliveryJob,
    s: &CommonSettings,
    objects: &[&str],
) -> Result<Value, String> {
    let mut ctx = mapping::context(job);
    Activity::of(job, s).into_context(&mut ctx);
    let mut out = serde_json::Map::new();
    for object in objects {
        let fields = mapping.apply(object, &ctx).map_err(|e| e.to_string())?;
        if !fields.is_empty() {
            out.insert(object.to_string(), Value::Object(fields));
        }
    }
    Ok(Value::Object(out))
}

/// The event type of an erase request queued to a CRM by a privacy erase
/// (see [`crate::privacy`]): its data's `records` name the records the CRM
/// holds for the person (`[{"object": "contact", "id": "123"}]`); it carries
/// no personal data, so the consent gate lets it through.
pub const ERASE_EVENT_TYPE: &str = "privacy.erase";

/// One record a CRM is asked to delete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct EraseTarget {
    /// The object the connector stored the id under (`contact`, `person`, `Lead` …).
    pub object: String,
    pub id: String,
}

/// When `job` is an erase request, the records it asks to delete (`Err`:
/// the request is malformed). Only leadrelay's own privacy erase makes one
/// (origin `system:privacy`): an event of that type from anywhere else
/// (a form, a webhook, the API) never deletes anything.
pub fn erase_targets(job: &DeliveryJob) -> Option<Result<Vec<EraseTarget>, String>> {
    let origin = &job.event.origin;
    let from_privacy = origin.kind == leadrelay_model::OriginKind::System
        && origin.name == crate::privacy::WITHDRAW_ORIGIN;
    if job.event.event_type.as_str() != ERASE_EVENT_TYPE || !from_privacy {
        return None;
    }
    let records = job
        .event
        .data
        .get("records")
        .cloned()
        .unwrap_or(Value::Null);
    Some(
        serde_json::from_value::<Vec<EraseTarget>>(records)
            .map_err(|e| format!("erase request without valid records: {e}")),
    )
}

/// Runs `one` for every job that is an erase request and `rest` for the
/// others (in one batch), and puts the results back in the jobs' order.
pub async fn split_erasures<'a, F, Fut, G, GFut>(
    jobs: &'a [DeliveryJob],
    one: F,
    rest: G,
) -> Vec<super::JobResult>
where
    F: Fn(&'a DeliveryJob, Result<Vec<EraseTarget>, String>) -> Fut,
    Fut: std::future::Future<Output = super::JobResult>,
    G: FnOnce(Vec<DeliveryJob>) -> GFut,
    GFut: std::future::Future<Output = Vec<super::JobResult>>,
{
    let mut slots: Vec<Option<super::JobResult>> = Vec::with_capacity(jobs.len());
    let mut others = Vec::new();
    for job in jobs {
        match erase_targets(job) {
            Some(targets) => slots.push(Some(one(job, targets).await)),
            None => {
                slots.push(None);
                others.push(job.clone());
            }
        }
    }
    if others.is_empty() {
        return slots.into_iter().flatten().collect();
    }
    let mut done = rest(others).await.into_iter();
    slots
        .into_iter()
        .map(|s| {
            s.or_else(|| done.next())
                .unwrap_or_else(|| super::JobResult {
                    outcome: super::Outcome::retry(
                        super::ErrorClass::Vendor,
                        "connector returned no result",
                    ),
                    report: Default::default(),
                })
        })
        .collect()
}

/// Whether a privacy erase asks `connector` to delete its records of
/// `object` (as stored in the remote ids): the person records — HubSpot
/// contacts (GDPR delete), Pipedrive persons, Salesforce leads and contacts.
/// Companies, deals and activities are the business's own records.
pub fn erasable(connector: &str, object: &str) -> bool {
    matches!(
        (connector, object),
        ("hubspot", "contact") | ("pipedrive", "person") | ("salesforce", "lead" | "contact")
    ) || (connector == "lemlist" && object.starts_with(super::lemlist::LEAD_OBJECT_PREFIX))
        || (connector == "smartlead" && object.starts_with(super::smartlead::LEAD_OBJECT_PREFIX))
        || (connector == "apollo" && object.starts_with(super::apollo::CONTACT_OBJECT_PREFIX))
        || (connector == "salesloft" && object.starts_with(super::salesloft::PERSON_OBJECT_PREFIX))
        || (connector == "woodpecker"
            && object.starts_with(super::woodpecker::PROSPECT_OBJECT_PREFIX))
        || (connector == "replyio" && object.starts_with(super::replyio::CONTACT_OBJECT_PREFIX))
}

/// What deleting one record came to.
pub enum Deleted {
    /// Deleted.
    Done,
    /// The vendor refused: its status (404: the record is gone already,
    /// which counts as erased) and the outcome for the whole request.
    Refused {
        status: Option<u16>,
        outcome: super::Outcome,
    },
    /// The record id cannot be one of this vendor's: dead-lettered.
    Malformed(String),
}

impl Deleted {
    /// From a connector's call result (its failure's status and outcome).
    pub fn of<T>(result: Result<T, (Option<u16>, super::Outcome)>) -> Self {
        match result {
            Ok(_) => Deleted::Done,
            Err((status, outcome)) => Deleted::Refused { status, outcome },
        }
    }
}

/// Runs an erase request: `delete` for each of its records this connector
/// erases (see [`erasable`]), in order. The request is done when every
/// record is deleted or already gone (404); the first other refusal is its
/// outcome, a malformed request or record id dead-letters it.
pub async fn erase_each<F, Fut>(
    connector: &str,
    targets: Result<Vec<EraseTarget>, String>,
    mut delete: F,
) -> super::JobResult
where
    F: FnMut(EraseTarget) -> Fut,
    Fut: std::future::Future<Output = (Deleted, super::AttemptReport)>,
{
    let targets = match targets {
        Ok(t) => t,
        Err(m) => return bad_erase(m),
    };
    let mut report = super::AttemptReport::default();
    for t in targets
        .into_iter()
        .filter(|t| erasable(connector, &t.object))
    {
        let (deleted, r) = delete(t).await;
        report = r;
        match deleted {
            Deleted::Done
            | Deleted::Refused {
                status: Some(404), ..
            } => {}
            Deleted::Refused { outcome, .. } => return super::JobResult { outcome, report },
            Deleted::Malformed(m) => return bad_erase(m),
        }
    }
    super::JobResult {
        outcome: super::Outcome::delivered(),
        report,
    }
}

/// A malformed erase request: dead-lettered, never retried.
pub fn bad_erase(message: String) -> super::JobResult {
    super::JobResult {
        outcome: super::Outcome::permanent(super::ErrorClass::Mapping, message),
        report: Default::default(),
    }
}

pub use super::http::path_segment;
/// The text leadrelay writes into a note's or task's body to recognise, on a
/// retry, the record an attempt killed before keeping its id already made:
/// `leadrelay-event:<event id>` (the event, not the delivery, so a replay of
/// a dead delivery finds it too), or `leadrelay-activity:<system>:<id>` for
/// an event with a vendor activity id (see [`event_key`]).
pub fn event_marker(job: &DeliveryJob) -> String {
    format!("leadrelay-{}", event_key(job))
}

/// Appends `marker` to the HTML body in `field` as its own paragraph (the
/// whole body when the mapping set none).
pub fn append_marker(body: &mut Map<String, Value>, field: &str, marker: &str) {
    let line = format!("<p>{marker}</p>");
    let text = match body.get(field).and_then(mapping::as_text) {
        Some(t) if !t.trim().is_empty() => format!("{t}{line}"),
        _ => line,
    };
    body.insert(field.to_string(), Value::String(text));
}
