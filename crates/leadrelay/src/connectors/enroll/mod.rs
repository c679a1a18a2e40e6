//! The enrollment model every sequence tool shares (lemlist, Smartlead, …):
//! what a destination that puts people into a sequence must guarantee,
//! whatever the vendor.
//!
//! - **Suppression list, at send time.** A person who unsubscribed from
//!   email or whose email bounced — from any source, recorded on the golden
//!   record by the contact merge — is never enrolled: the delivery ends
//!   `skipped` without a request ([`suppressed`]).
//! - **Add limit with an overflow queue.** `add_limit = "100/1d"` caps the
//!   people added per window (windows are aligned to the period: a `1d`
//!   window starts at 00:00 UTC). The count is kept in the store, so every
//!   node shares it. What does not fit waits — `scheduled`, its last error
//!   starting with [`OVERFLOW`] — until the next window; the same happens
//!   when the vendor reports the sequence full. The overflow queue is never
//!   dead-lettered for its age.
//! - **Already enrolled elsewhere**, per destination
//!   (`already_enrolled`): `skip` ends the delivery `skipped`; `queue`
//!   waits in the overflow queue and asks the vendor again every
//!   `queue_recheck` until the other sequence has ended; `move` takes the
//!   person out of the other sequence first (tools that can; the
//!   configuration check refuses it for the others).
//! - **Find-or-create.** Connectors ask the vendor for the person before
//!   creating them, or use the vendor's own duplicate rule, so a retry
//!   after a lost answer or a `kill -9` finds the record instead of making
//!   a second one; an answer "already in this sequence" is success.
//!
//! Re-qualification is the handoff's (`[handoff] requalify`): enrollment
//! routes take `lead.qualified`, which the handoff emits again only when the
//! policy says so.
//!
//! Connectors classify the vendor's answer into a [`Verdict`]; [`Policy::outcome`]
//! turns it into the scheduler's [`Outcome`].
//!
//! **A sequence that ends.** A `sequence.completed` event routed to a
//! sequence destination (the tools' webhooks: Apollo, Salesloft, Reply.io,
//! lemlist) sends nothing to the vendor: when it comes from the same tool
//! ([`Ended`]), the person's membership in this destination's sequence
//! becomes `completed` if that is the sequence that ended, and the
//! person's enrollments waiting in the overflow queue because they were
//! active in another sequence are made due now ([`gate`]), so `queue`
//! enrolls them as soon as the other sequence is over instead of at the
//! next `queue_recheck`. (An enrollment waiting in the overflow queue does
//! not hold back the person's later deliveries to the destination — the
//! claim skips it — so a `sequence.completed` or an exit is not stuck
//! behind it; an exit cancels the person's waiting enrollments.)
//!
//! **Memberships.** The dispatcher hands every decided enrollment job to
//! [`memberships`], which turns it into the person's membership in the
//! destination's sequence (`active`, `queued`, `exited`, `skipped`) for the
//! store — the same for every tool, so a new connector only says which
//! sequence it fills ([`Policy::in_sequence`]).

pub mod person;

pub mod vendor;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use super::{DeliveryJob, ErrorClass, Outcome};
use crate::config::{HumanDuration, Problem, Rate};
use crate::store::{RemoteId, Store};

/// How the last error of a delivery in the overflow queue starts.
pub const OVERFLOW: &str = "overflow: ";

/// The event type that always takes a person out of every sequence of a
/// tool (the `exit_sequences` action, e.g. posted through the API).
pub const EXIT_EVENT: &str = "sequence.exit";

/// The event type of a person finishing or leaving a sequence.
pub const ENDED_EVENT: &str = "sequence.completed";

/// What a `sequence.completed` event says ended: the tool that sent it (the
/// source's `vendor`; none for events posted through the API) and the
/// sequence (campaign, cadence) id when the event names one.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub tool: Option<String>,
    pub sequence: Option<String>,
}

impl Ended {
    fn of(event: &leadrelay_model::Event) -> Ended {
        use serde_json::Value;
        let tool = event
            .data
            .get("vendor")
            .and_then(Value::as_str)
            .map(str::to_string);
        let from_refs = event
            .vendor_refs
            .iter()
            .find(|r| matches!(r.object.as_str(), "sequence" | "cadence" | "campaign"))
            .map(|r| r.id.clone());
        let from_data = || {
            ["sequence_id", "campaign_id", "cadence_id", "campaignId"]
                .iter()
                .find_map(|k| match event.data.get(*k) {
                    Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                })
        };
        Ended {
            tool,
            sequence: from_refs.or_else(from_data),
        }
    }

    /// Whether it was sent by (or, with no tool named, may concern) `tool`.
    pub fn concerns(&self, tool: &str) -> bool {
        self.tool.as_deref().is_none_or(|t| t == tool)
    }
}

fn default_exit_on() -> Vec<String> {
    vec!["meeting.booked".into(), "reply.received".into()]
}

/// What to do with a person who is active in another sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlreadyEnrolled {
    /// Leave them where they are; the delivery ends `skipped`.
    #[default]
    Skip,
    /// Wait until the other sequence has ended, then enroll.
    Queue,
    /// Take them out of the other sequence and enroll them in this one.
    Move,
}

impl AlreadyEnrolled {
    pub fn as_str(self) -> &'static str {
        match self {
            AlreadyEnrolled::Skip => "skip",
            AlreadyEnrolled::Queue => "queue",
            AlreadyEnrolled::Move => "move",
        }
    }
}

fn default_recheck() -> HumanDuration {
    HumanDuration::secs(3600)
}

/// `[destinations.NAME.enrollment]`: the same keys for every sequence tool.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// `skip` (default), `queue` or `move`.
    #[serde(default)]
    pub already_enrolled: AlreadyEnrolled,
    /// People added per window, e.g. `"100/1d"` (none: only the vendor's
    /// own limits apply).
    #[serde(default)]
    pub add_limit: Option<Rate>,
    /// How often a queued person (`already_enrolled = "queue"`, or a full
    /// sequence without `add_limit`) is tried again. Default 1 hour.
    #[serde(default = "default_recheck")]
    pub queue_recheck: HumanDuration,
    /// Event types that make this destination take the person out of every
    /// active sequence of the tool instead of enrolling them (the
    /// `exit_sequences` action), besides `sequence.exit`. Default
    /// `["meeting.booked", "reply.received"]`.
    #[serde(default = "default_exit_on")]
    pub exit_on: Vec<String>,
    /// How often the destination's sequence is read back from tools that
    /// send no "sequence finished" webhook ([`REFRESHED`]), to mark people
    /// who finished or were stopped there: a duration or `"off"`. Absent:
    /// [`DEFAULT_REFRESH`] for those tools, off for the others.
    #[serde(default, deserialize_with = "refresh_setting")]
    pub refresh: Option<Option<HumanDuration>>,
}

fn refresh_setting<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<HumanDuration>>, D::Error> {
    crate::config::units::duration_or_off(d).map(Some)
}

/// The tools whose sequences leadrelay reads back every `refresh` (they
/// send no webhook when a person finishes or is stopped).
pub const REFRESHED: [&str; 2] = ["smartlead", "woodpecker"];

/// `refresh` when the setting is absent, for the tools in [`REFRESHED`].
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

impl Default for Settings {
    fn default() -> Self {
        Self {
            already_enrolled: AlreadyEnrolled::default(),
            add_limit: None,
            queue_recheck: default_recheck(),
            exit_on: default_exit_on(),
            refresh: None,
        }
    }
}

/// A destination's enrollment policy, checked against what its tool can do.
#[derive(Debug, Clone)]
pub struct Policy {
    pub tool: &'static str,
    /// The tool's sequence or campaign id the destination enrolls into
    /// (empty: the destination's name stands for it in memberships).
    pub sequence: String,
    pub already_enrolled: AlreadyEnrolled,
    pub add_limit: Option<Rate>,
    pub queue_recheck: Duration,
    pub exit_on: Vec<String>,
    /// How often the destination's sequence is read back from the tool
    /// (`None`: never; see [`Settings::refresh`]).
    pub refresh: Option<Duration>,
}

impl Policy {
    /// `can_move`: whether the tool's API can take a person out of another
    /// sequence (otherwise `move` is a configuration error).
    pub fn new(tool: &'static str, s: &Settings, can_move: bool) -> Result<Self, Problem> {
        if s.already_enrolled == AlreadyEnrolled::Move && !can_move {
            return Err(Problem::error(
                "enrollment.already_enrolled",
                format!(
                    "{tool} cannot move a person between sequences through its API: use \"skip\" or \"queue\""
                ),
            ));
        }
        if s.queue_recheck.get() < Duration::from_secs(1) {
            return Err(Problem::error(
                "enrollment.queue_recheck",
                "must be at least 1s",
            ));
        }
        let refresh = match s.refresh {
            None if REFRESHED.contains(&tool) => Some(DEFAULT_REFRESH),
            None | Some(None) => None,
            Some(Some(_)) if !REFRESHED.contains(&tool) => {
                return Err(Problem::error(
                    "enrollment.refresh",
                    format!(
                        "{tool} reports finished sequences itself (sequence.completed webhooks): \
                         refresh is only for {}; remove it or write \"off\"",
                        REFRESHED.join(", ")
                    ),
                ));
            }
            Some(Some(d)) if d.get() < Duration::from_secs(1) => {
                return Err(Problem::error(
                    "enrollment.refresh",
                    "must be at least 1s (or \"off\")",
                ));
            }
            Some(Some(d)) => Some(d.get()),
        };
        Ok(Self {
            refresh,
            tool,
            sequence: String::new(),
            already_enrolled: s.already_enrolled,
            add_limit: s.add_limit,
            queue_recheck: s.queue_recheck.get(),
            exit_on: s.exit_on.clone(),
        })
    }

    /// The sequence (campaign) id this destination enrolls into.
    pub fn in_sequence(mut self, sequence: &str) -> Self {
        self.sequence = sequence.to_string();
        self
    }

    /// Whether the job asks to take the person out of every sequence.
    pub fn is_exit(&self, job: &DeliveryJob) -> bool {
        let t = job.event.event_type.as_str();
        t == EXIT_EVENT || self.exit_on.iter().any(|e| e == t)
    }

    /// Whether the job reports a sequence that ended (and is not an exit
    /// or a privacy erase): what ended, for [`gate`] and [`memberships`].
    pub fn ended(&self, job: &DeliveryJob) -> Option<Ended> {
        (job.event.event_type.as_str() == ENDED_EVENT
            && !self.is_exit(job)
            && super::crm::erase_targets(job).is_none())
        .then(|| Ended::of(&job.event))
    }

    /// Whether the job asks for an enrollment (not an exit, a sequence that
    /// ended or a privacy erase).
    pub fn is_enrollment(&self, job: &DeliveryJob) -> bool {
        !self.is_exit(job)
            && job.event.event_type.as_str() != ENDED_EVENT
            && super::crm::erase_targets(job).is_none()
    }

    /// When the overflow queue is tried again: the next add-limit window,
    /// or `queue_recheck` from now.
    pub fn next_window(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self.add_limit {
            Some(rate) => window(rate, now).1,
            None => now + chrono::Duration::from_std(self.queue_recheck).unwrap_or_default(),
        }
    }

    /// The scheduler's outcome for a vendor's verdict.
    pub fn outcome(&self, verdict: Verdict, now: DateTime<Utc>) -> Outcome {
        let tool = self.tool;
        match verdict {
            Verdict::Enrolled { remote_ids } | Verdict::AlreadyMember { remote_ids } => {
                Outcome::Delivered { remote_ids }
            }
            Verdict::ActiveElsewhere { sequence } => match self.already_enrolled {
                AlreadyEnrolled::Skip => Outcome::Skipped {
                    reason: format!(
                        "{tool}: already active in another sequence ({sequence}); policy skip"
                    ),
                },
                AlreadyEnrolled::Queue => Outcome::Deferred {
                    until: now + chrono::Duration::from_std(self.queue_recheck).unwrap_or_default(),
                    reason: format!(
                        "{tool}: active in another sequence ({sequence}); {QUEUED_BEHIND}"
                    ),
                },
                // The connector moves before it answers this; getting here
                // means the move did not happen.
                AlreadyEnrolled::Move => Outcome::retry(
                    ErrorClass::Vendor,
                    format!("{tool}: still active in another sequence ({sequence}) after the move"),
                ),
            },
            Verdict::Full { message } => Outcome::Deferred {
                until: self.next_window(now),
                reason: format!("{tool}: the sequence is full ({message})"),
            },
            Verdict::VendorSuppressed { message } => Outcome::Skipped {
                reason: format!("{tool} will not enroll this person: {message}"),
            },
            Verdict::Failed(outcome) => outcome,
        }
    }
}

/// Where the tool says a person stands in the destination's sequence, as
/// a refresh reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Still in the sequence (started, in progress, paused, …).
    Active,
    /// Went through the whole sequence.
    Finished,
    /// Stopped or removed in the tool (by a user, a reply rule, a bounce).
    Stopped,
}

/// One person of the destination's sequence, as the tool lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub email: String,
    pub standing: Standing,
    /// The tool's own status word, for the membership's last change.
    pub status: String,
}

/// A sequence tool's answer to one enrollment, in the shared vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Added now.
    Enrolled { remote_ids: Vec<RemoteId> },
    /// Already in this very sequence (a retry, a repeat lead): done.
    AlreadyMember { remote_ids: Vec<RemoteId> },
    /// Active in another sequence (name or id when the vendor says which).
    ActiveElsewhere { sequence: String },
    /// The sequence's capacity (or the vendor's daily add limit) is reached.
    Full { message: String },
    /// The vendor lists the person as unsubscribed or bounced.
    VendorSuppressed { message: String },
    /// Anything else: the shared HTTP classification.
    Failed(Outcome),
}

/// The add-limit window `now` falls in: `[start, end)`, aligned to the
/// period since the Unix epoch (a day starts at 00:00 UTC).
pub fn window(rate: Rate, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let period = rate.period.as_millis().max(1) as i64;
    let start = now.timestamp_millis().div_euclid(period) * period;
    let at = |ms: i64| Utc.timestamp_millis_opt(ms).single().unwrap_or(now);
    (at(start), at(start + period))
}

/// Why a job must not be enrolled at all: the person is on the
/// suppression list.
pub fn suppressed(job: &DeliveryJob) -> Option<String> {
    let s = job.contact.as_ref()?.lead.suppressed.as_ref()?;
    Some(format!(
        "suppressed: the person {} ({}, {})",
        s.reason,
        s.origin,
        s.at.format("%Y-%m-%d %H:%M UTC")
    ))
}

/// One request of a sequence tool's connector, its failure already
/// classified (a request that cannot be built is a permanent mapping error).
pub async fn send(
    client: &reqwest::Client,
    req: reqwest::Result<reqwest::Request>,
    display_url: &str,
    allow_private: bool,
) -> (
    Result<super::http::HttpResponse, Outcome>,
    super::AttemptReport,
) {
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            let m = format!("cannot build the request: {e}");
            return (
                Err(Outcome::permanent(ErrorClass::Mapping, m)),
                Default::default(),
            );
        }
    };
    let (result, report) = super::http::send(client, req, display_url, allow_private).await;
    (result.map_err(|e| e.outcome()), report)
}

/// A lookup's or a removal's answer: the response when `classify` calls
/// it delivered, `None` for a 404 (nobody there, or gone already), the
/// classified failure otherwise.
pub fn answered(
    result: Result<super::http::HttpResponse, Outcome>,
    classify: impl Fn(&super::http::HttpResponse) -> Outcome,
) -> Result<Option<super::http::HttpResponse>, Outcome> {
    let resp = result?;
    if resp.status == 404 {
        return Ok(None);
    }
    match classify(&resp) {
        Outcome::Delivered { .. } => Ok(Some(resp)),
        other => Err(other),
    }
}

/// What a sequence tool's connector does with one job.
pub enum Work {
    /// A privacy erase of the records it made.
    Erase(Result<Vec<super::crm::EraseTarget>, String>),
    /// `exit_sequences`.
    Exit,
    Enroll,
}

impl Policy {
    pub fn work(&self, job: &DeliveryJob) -> Work {
        match super::crm::erase_targets(job) {
            Some(targets) => Work::Erase(targets),
            None if self.is_exit(job) => Work::Exit,
            None => Work::Enroll,
        }
    }
}

/// The connectors' `skip_reason`: nobody to enroll or exit without an
/// email address (erasures always go).
pub fn skip_reason(job: &DeliveryJob) -> Option<String> {
    if super::crm::erase_targets(job).is_some() {
        return None;
    }
    job_email(job)
        .is_none()
        .then(|| "no email address to enroll".to_string())
}

/// The person's email address (golden record first).
pub fn job_email(job: &DeliveryJob) -> Option<String> {
    job.contact
        .as_ref()
        .and_then(|c| c.data.email.as_ref())
        .or(job.event.contact.email.as_ref())
        .map(|e| e.as_str().to_string())
}

/// The outcome of an exit from `left` sequences (idempotent: none is fine).
pub fn exited(tool: &str, left: &[String]) -> Outcome {
    if left.is_empty() {
        tracing::info!(tool, "exit_sequences: the person is in no active sequence");
    } else {
        tracing::info!(tool, sequences = ?left, "exit_sequences: removed from active sequences");
    }
    Outcome::delivered()
}

fn counter_key(destination: &str, start: DateTime<Utc>) -> String {
    format!("enroll:adds:{destination}:{}", start.timestamp_millis())
}

/// How many people were added (or reserved) in the current window.
pub async fn added_in_window(
    store: &Arc<dyn Store>,
    destination: &str,
    rate: Rate,
    now: DateTime<Utc>,
) -> crate::store::StoreResult<u32> {
    let (start, _) = window(rate, now);
    Ok(store
        .kv_get(&counter_key(destination, start))
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Reserves up to `wanted` adds in the current window (shared by every node
/// through the store); returns how many were granted.
async fn reserve(
    store: &Arc<dyn Store>,
    destination: &str,
    rate: Rate,
    wanted: u32,
    now: DateTime<Utc>,
) -> crate::store::StoreResult<u32> {
    let (start, _) = window(rate, now);
    let key = counter_key(destination, start);
    loop {
        let current = store.kv_get(&key).await?;
        let used: u32 = current.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        let grant = wanted.min(rate.count.saturating_sub(used));
        if grant == 0 {
            return Ok(0);
        }
        let next = (used + grant).to_string();
        if store
            .kv_compare_and_set(&key, current.as_deref(), &next)
            .await?
        {
            return Ok(grant);
        }
    }
}

/// The memberships a destination's decided jobs come to: an enrollment
/// delivered is `active`, one waiting in the overflow queue `queued`, one
/// skipped (suppressed, active elsewhere) `skipped`; an exit delivered is
/// `exited`. Failures, retries and erasures change nothing.
pub fn memberships<'a>(
    policy: &Policy,
    destination: &str,
    decided: impl IntoIterator<Item = (&'a DeliveryJob, &'a Outcome)>,
    now: DateTime<Utc>,
) -> Vec<crate::store::Membership> {
    use crate::store::{
        MEMBERSHIP_ACTIVE, MEMBERSHIP_COMPLETED, MEMBERSHIP_EXITED, MEMBERSHIP_QUEUED,
        MEMBERSHIP_SKIPPED,
    };
    let mut out = Vec::new();
    for (job, outcome) in decided {
        if super::crm::erase_targets(job).is_some()
            || !job.delivery.contact_key.starts_with("email:")
        {
            continue;
        }
        let exit = policy.is_exit(job);
        let ended = policy.ended(job);
        let (state, change) = match (outcome, ended) {
            // Only the sequence this destination fills changes here.
            (Outcome::Delivered { .. }, Some(e))
                if e.concerns(policy.tool)
                    && e.sequence.as_deref() == Some(policy.sequence.as_str()) =>
            {
                (
                    MEMBERSHIP_COMPLETED,
                    format!(
                        "sequence.completed: {} ended the sequence",
                        e.tool.as_deref().unwrap_or(policy.tool)
                    ),
                )
            }
            (_, Some(_)) => continue,
            (outcome, None) => match outcome {
                Outcome::Delivered { .. } if exit => (
                    MEMBERSHIP_EXITED,
                    format!("exit_sequences: {}", job.event.event_type.as_str()),
                ),
                Outcome::Delivered { .. } => (MEMBERSHIP_ACTIVE, "enrolled".to_string()),
                Outcome::Deferred { reason, .. } if !exit => (MEMBERSHIP_QUEUED, reason.clone()),
                Outcome::Skipped { reason } if !exit => (MEMBERSHIP_SKIPPED, reason.clone()),
                _ => continue,
            },
        };
        let sequence = if policy.sequence.is_empty() {
            destination.to_string()
        } else {
            policy.sequence.clone()
        };
        out.push(crate::store::Membership {
            contact_key: job.delivery.contact_key.clone(),
            destination: destination.to_string(),
            tool: policy.tool.to_string(),
            sequence,
            state: state.to_string(),
            since: now,
            updated_at: now,
            last_change: change,
        });
    }
    out
}

/// How many scheduled deliveries of one destination [`release_queued`]
/// reads at most.
const RELEASE_SCAN: usize = 10_000;

/// A `sequence.completed` job, decided without a request: from another
/// tool it is skipped; from this one the person's enrollments queued
/// behind another sequence are made due now (the membership follows in
/// [`memberships`]).
async fn sequence_ended(
    store: &Arc<dyn Store>,
    destination: &str,
    policy: &Policy,
    job: &DeliveryJob,
    ended: &Ended,
) -> Outcome {
    let tool = policy.tool;
    if !ended.concerns(tool) {
        return Outcome::Skipped {
            reason: format!(
                "sequence.completed from {}: not a {tool} sequence",
                ended.tool.as_deref().unwrap_or("?")
            ),
        };
    }
    match release_queued(store, destination, &job.delivery.contact_key).await {
        Ok(n) => {
            tracing::info!(
                destination,
                tool,
                sequence = ended.sequence.as_deref().unwrap_or("?"),
                released = n,
                "a sequence ended; queued enrollments of the person are due now"
            );
            Outcome::delivered()
        }
        Err(e) => Outcome::retry(
            ErrorClass::Io,
            format!("cannot release the person's queued enrollments: {e}"),
        ),
    }
}

/// The ids of `contact_key`'s enrollments in `destination` that wait in
/// the overflow queue and whose reason passes `why`.
async fn queued_of(
    store: &Arc<dyn Store>,
    destination: &str,
    contact_key: &str,
    why: impl Fn(&str) -> bool,
) -> crate::store::StoreResult<Vec<uuid::Uuid>> {
    use crate::store::{DeliveryFilter, DeliveryState};
    let filter = DeliveryFilter {
        destination: Some(destination.to_string()),
        state: Some(DeliveryState::Scheduled),
        ..Default::default()
    };
    let mut ids = Vec::new();
    let (mut cursor, mut read) = (None, 0);
    while read < RELEASE_SCAN {
        let page = store.list_deliveries(&filter, cursor, 1000).await?;
        read += page.len();
        let full = page.len() == 1000;
        cursor = page.last().map(|d| d.id);
        ids.extend(
            page.into_iter()
                .filter(|d| {
                    d.contact_key == contact_key
                        && d.last_error
                            .as_deref()
                            .and_then(|e| e.strip_prefix(OVERFLOW))
                            .is_some_and(&why)
                })
                .map(|d| d.id),
        );
        if !full {
            break;
        }
    }
    Ok(ids)
}

/// Makes `contact_key`'s enrollments in `destination` that wait in the
/// overflow queue because the person is active in another sequence due
/// now; returns how many.
pub async fn release_queued(
    store: &Arc<dyn Store>,
    destination: &str,
    contact_key: &str,
) -> crate::store::StoreResult<usize> {
    let ids = queued_of(store, destination, contact_key, |e| {
        e.contains(QUEUED_BEHIND)
    })
    .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    store.retry_now(ids).await
}

/// An exit cancels the person's enrollments still waiting in the overflow
/// queue of `destination` (whatever they wait for): a person taken out of
/// every sequence is not enrolled afterwards by an older lead. Returns how
/// many.
pub async fn cancel_queued(
    store: &Arc<dyn Store>,
    destination: &str,
    contact_key: &str,
    reason: &str,
) -> crate::store::StoreResult<usize> {
    let ids = queued_of(store, destination, contact_key, |_| true).await?;
    if ids.is_empty() {
        return Ok(0);
    }
    store.cancel_waiting(ids, reason).await
}

/// What the reason of an enrollment queued behind another sequence says.
const QUEUED_BEHIND: &str = "queued until it ends";

/// The enrollment gate the dispatcher runs before sending: suppressed
/// people are skipped, and only as many enrollments as the add limit
/// allows go out; the rest wait for the next window. Exits and erasures
/// pass untouched. Returns the jobs to send and the decided ones.
pub async fn gate(
    store: &Arc<dyn Store>,
    destination: &str,
    policy: &Policy,
    jobs: Vec<DeliveryJob>,
    now: DateTime<Utc>,
) -> (Vec<DeliveryJob>, Vec<(DeliveryJob, Outcome)>) {
    let mut go = Vec::with_capacity(jobs.len());
    let mut held = Vec::new();
    let mut enrollments = Vec::new();
    for job in jobs {
        if let Some(ended) = policy.ended(&job) {
            let outcome = sequence_ended(store, destination, policy, &job, &ended).await;
            held.push((job, outcome));
        } else if policy.is_exit(&job) && super::crm::erase_targets(&job).is_none() {
            let reason = format!("exit_sequences: {}", job.event.event_type.as_str());
            match cancel_queued(store, destination, &job.delivery.contact_key, &reason).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    destination,
                    cancelled = n,
                    "exit_sequences: queued enrollments of the person cancelled"
                ),
                Err(e) => {
                    tracing::warn!(destination, error = %e, "exit_sequences: cannot cancel the person's queued enrollments")
                }
            }
            go.push(job);
        } else if !policy.is_enrollment(&job) {
            go.push(job);
        } else if let Some(reason) = suppressed(&job) {
            held.push((job, Outcome::Skipped { reason }));
        } else {
            enrollments.push(job);
        }
    }
    let Some(rate) = policy.add_limit else {
        go.extend(enrollments);
        return (go, held);
    };
    let wanted = enrollments.len() as u32;
    match reserve(store, destination, rate, wanted, now).await {
        Ok(granted) => {
            let until = window(rate, now).1;
            for (i, job) in enrollments.into_iter().enumerate() {
                if (i as u32) < granted {
                    go.push(job);
                } else {
                    let reason =
                        format!("{}: add limit {rate} reached for this window", policy.tool);
                    held.push((job, Outcome::Deferred { until, reason }));
                }
            }
        }
        Err(e) => {
            for job in enrollments {
                let m = format!("cannot count the add limit: {e}");
                held.push((job, Outcome::retry(ErrorClass::Io, m)));
            }
        }
    }
    (go, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Rate {
        Rate::parse(s).unwrap()
    }

    #[test]
    fn windows_align_to_the_period() {
        let now = Utc.with_ymd_and_hms(2026, 3, 4, 17, 5, 9).unwrap();
        let (start, end) = window(rate("100/1d"), now);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 3, 4, 0, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 3, 5, 0, 0, 0).unwrap());
        let (start, end) = window(rate("5/10s"), now);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 3, 4, 17, 5, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 3, 4, 17, 5, 10).unwrap());
    }

    fn policy(a: AlreadyEnrolled, limit: Option<&str>) -> Policy {
        Policy {
            tool: "tool",
            sequence: "seq-1".into(),
            already_enrolled: a,
            add_limit: limit.map(rate),
            queue_recheck: Duration::from_secs(60),
            exit_on: default_exit_on(),
            refresh: None,
        }
    }

    #[test]
    fn verdicts_follow_the_policy() {
        let now = Utc.with_ymd_and_hms(2026, 3, 4, 17, 5, 9).unwrap();
        let elsewhere = || Verdict::ActiveElsewhere {
            sequence: "Nurture".into(),
        };
        assert!(matches!(
            policy(AlreadyEnrolled::Skip, None).outcome(elsewhere(), now),
            Outcome::Skipped { .. }
        ));
        match policy(AlreadyEnrolled::Queue, None).outcome(elsewhere(), now) {
            Outcome::Deferred { until, reason } => {
                assert_eq!(until, now + chrono::Duration::seconds(60));
                assert!(reason.contains("Nurture"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // A full sequence waits for the next add-limit window.
        match policy(AlreadyEnrolled::Skip, Some("10/1d")).outcome(
            Verdict::Full {
                message: "full".into(),
            },
            now,
        ) {
            Outcome::Deferred { until, .. } => {
                assert_eq!(until, Utc.with_ymd_and_hms(2026, 3, 5, 0, 0, 0).unwrap())
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            policy(AlreadyEnrolled::Skip, None).outcome(
                Verdict::AlreadyMember {
                    remote_ids: Vec::new()
                },
                now
            ),
            Outcome::Delivered { .. }
        ));
    }

    #[test]
    fn a_finished_sequence_completes_only_its_own_membership() {
        let now = Utc.with_ymd_and_hms(2026, 3, 4, 17, 5, 9).unwrap();
        let ended = |tool: &str, sequence: &str| {
            let mut job = crate::connectors::notify::sample_lead_job();
            job.event.event_type = leadrelay_model::EventType::SequenceCompleted;
            job.event.data.insert("vendor".into(), tool.into());
            job.event.vendor_refs.push(leadrelay_model::VendorRef {
                system: tool.into(),
                object: "campaign".into(),
                id: sequence.into(),
            });
            job.delivery.contact_key = "email:jane@acme.io".into();
            job
        };
        let p = policy(AlreadyEnrolled::Queue, None);
        let job = ended("tool", "seq-1");
        assert_eq!(
            p.ended(&job),
            Some(Ended {
                tool: Some("tool".into()),
                sequence: Some("seq-1".into())
            })
        );
        assert!(!p.is_enrollment(&job), "never enrolled");
        let done = Outcome::delivered();
        let ms = memberships(&p, "dest", [(&job, &done)], now);
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].state, crate::store::MEMBERSHIP_COMPLETED);
        // Another sequence of the tool, or another tool: no change here.
        for other in [ended("tool", "seq-2"), ended("other", "seq-1")] {
            assert!(memberships(&p, "dest", [(&other, &done)], now).is_empty());
        }
        assert!(
            p.ended(&ended("other", "seq-1"))
                .is_some_and(|e| !e.concerns("tool"))
        );
    }

    #[test]
    fn refresh_defaults_to_hourly_for_tools_without_a_finished_webhook() {
        let settings = |t: &str| -> Settings { toml::from_str(t).unwrap() };
        let hourly = Some(DEFAULT_REFRESH);
        assert_eq!(
            Policy::new("smartlead", &settings(""), true)
                .unwrap()
                .refresh,
            hourly
        );
        assert_eq!(
            Policy::new("lemlist", &settings(""), false)
                .unwrap()
                .refresh,
            None
        );
        let off = settings("refresh = \"off\"");
        assert_eq!(Policy::new("smartlead", &off, true).unwrap().refresh, None);
        assert_eq!(Policy::new("lemlist", &off, false).unwrap().refresh, None);
        let every = settings("refresh = \"15m\"");
        assert_eq!(
            Policy::new("smartlead", &every, true).unwrap().refresh,
            Some(Duration::from_secs(900))
        );
        // A tool that sends webhooks has nothing to refresh.
        let p = Policy::new("lemlist", &every, false).unwrap_err();
        assert_eq!(p.path, "enrollment.refresh");
        let p = Policy::new("smartlead", &settings("refresh = \"200ms\""), true).unwrap_err();
        assert_eq!(p.path, "enrollment.refresh");
        assert!(toml::from_str::<Settings>("refresh = \"soon\"").is_err());
    }

    #[test]
    fn move_is_refused_for_tools_that_cannot() {
        let s = Settings {
            already_enrolled: AlreadyEnrolled::Move,
            ..Default::default()
        };
        let p = Policy::new("lemlist", &s, false).unwrap_err();
        assert_eq!(p.path, "enrollment.already_enrolled");
        assert!(Policy::new("smartlead", &s, true).is_ok());
    }
}
