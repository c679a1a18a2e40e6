//! One destination's dispatcher: claim due deliveries (one free
//! concurrency slot and one rate-limit cell per batch; a few rounds ahead
//! when nothing limits the rate), send each batch in its own task, record
//! the outcome.
//!
//! A panic while a delivery is prepared or sent (a connector bug on some
//! input) is caught and recorded as a failed attempt of class `internal`
//! with the panic message; after [`PANIC_ATTEMPTS`] such attempts the
//! delivery is dead-lettered. A batch that panics is sent again one delivery
//! at a time, so only the delivery that panics is charged with it.

use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use leadrelay_model::new_id;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::circuit::{CircuitBreaker, CircuitState, Permit};
use super::{AlertMonitor, Destination, consent, policy};
use crate::connectors::pace::{self, Hold, Pacer, RateGate};
use crate::connectors::{
    AttemptReport, DeliveryJob, ErrorClass, JobResult, Outcome, enroll, payload,
};
use crate::store::{Attempt, ClaimedDelivery, Completion, Store, Transition};

pub struct Context {
    /// The destination's rate gate and throttling hold, when shared with
    /// another task (the sequence refresh); else the dispatcher makes its own.
    pub pace: Option<(Arc<RateGate>, Arc<Hold>)>,
    pub store: Arc<dyn Store>,
    pub shutdown: CancellationToken,
    pub poll: Duration,
    pub grace: Duration,
    pub alerts: Arc<AlertMonitor>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Records the causes of fixable dead letters (None: switched off).
    pub fixable: Option<crate::config::FixableConfig>,
    /// `[[owners]]`, to give each job its person's assigned owner.
    pub owners: Arc<Vec<Arc<crate::pipeline::OwnerConfig>>>,
}

/// Deliveries being sent right now, so shutdown can release their leases.
type InFlight = Arc<Mutex<HashMap<Uuid, Uuid>>>;

pub async fn run(dest: Arc<Destination>, ctx: Context) {
    let ctx = Arc::new(ctx);
    let notify = ctx.store.wake_hub().notifier(&dest.name);
    let slots = Arc::new(Semaphore::new(dest.concurrency));
    // One cell is taken per batch here; further requests of the same batch
    // wait inside the connector (see `connectors::pace`).
    // A throttling answer holds every request of the destination at once,
    // also those of batches already under way (see `connectors::pace`).
    let (gate, hold) = ctx.pace.clone().unwrap_or_else(|| {
        (
            Arc::new(RateGate::new(&dest.name, dest.rate, &ctx.store)),
            Arc::new(Hold::default()),
        )
    });
    let circuit = Arc::new(Mutex::new(CircuitBreaker::new(dest.circuit.clone())));
    let tracker = TaskTracker::new();
    let in_flight: InFlight = Arc::default();

    loop {
        if ctx.shutdown.is_cancelled() {
            break;
        }
        let state = match ctx.store.destination_state(&dest.name).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(destination = %dest.name, error = %e, "cannot read destination state");
                sleep_or_stop(&ctx, ctx.poll).await;
                continue;
            }
        };
        let now = Utc::now();
        if state.paused_until.is_none_or(|u| u <= now) {
            // A recorded pause that is over (or resumed) ends the hold.
            hold.release_if_recorded();
        }
        if state.disabled {
            wait_for_work(&ctx, &notify, Duration::from_secs(5)).await;
            continue;
        }
        if let Some(until) = state.paused_until.filter(|u| *u > now) {
            // Re-read the pause every poll interval, so a resume (from any
            // node) takes effect within one interval.
            let wait = (until - now)
                .to_std()
                .unwrap_or_default()
                .min(ctx.poll.max(Duration::from_millis(100)));
            sleep_or_stop(&ctx, wait).await;
            continue;
        }

        let permit = lock(&circuit).permit(Instant::now());
        let max_batches = match permit {
            Permit::Send => dest.concurrency,
            Permit::Probe => 1,
            Permit::Wait(at) => {
                sleep_or_stop(
                    &ctx,
                    at.saturating_duration_since(Instant::now())
                        .min(ctx.poll.max(Duration::from_millis(200))),
                )
                .await;
                continue;
            }
        };
        let probe = permit == Permit::Probe;

        // One free slot per batch: wait for the first, take what else is free.
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = ctx.shutdown.cancelled() => break,
        };
        let mut batch_slots = vec![first];
        while batch_slots.len() < max_batches {
            match slots.clone().try_acquire_owned() {
                Ok(p) => batch_slots.push(p),
                Err(_) => break,
            }
        }
        // One rate-limit cell per request: wait for one, take more only if free.
        if !gate.is_open() {
            let waited = Instant::now();
            tokio::select! {
                _ = gate.acquire() => {}
                _ = ctx.shutdown.cancelled() => break,
            }
            ctx.metrics.rate_limit_wait(&dest.name, waited.elapsed());
            let mut granted = 1;
            while granted < batch_slots.len() && gate.try_acquire().await {
                granted += 1;
            }
            batch_slots.truncate(granted);
        }

        // Claim ahead: a claim is a write that waits for a group commit
        // (behind ingest under load), so with no rate limit and the circuit
        // closed, claim a few rounds of batches at once and hand them to
        // the concurrency slots as they free up.
        let ahead = permit == Permit::Send && gate.is_open();
        let want = if ahead {
            dest.concurrency * dest.batch_size * CLAIM_AHEAD
        } else {
            batch_slots.len() * dest.batch_size
        };
        let claimed = match ctx.store.claim(&dest.name, want, dest.lease).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(destination = %dest.name, error = %e, "claim failed");
                if probe {
                    lock(&circuit).on_neutral(Instant::now());
                }
                drop(batch_slots);
                sleep_or_stop(&ctx, ctx.poll).await;
                continue;
            }
        };
        if claimed.is_empty() {
            if probe {
                lock(&circuit).on_neutral(Instant::now());
            }
            drop(batch_slots);
            let wait = match ctx.store.next_due(&dest.name).await {
                Ok(Some(t)) => (t - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::from_millis(20))
                    .min(ctx.poll),
                _ => ctx.poll,
            };
            wait_for_work(&ctx, &notify, wait.max(Duration::from_millis(5))).await;
            continue;
        }

        let claimed_at = Instant::now();
        let mut claimed = claimed.into_iter();
        let mut batch_slots = batch_slots.into_iter();
        loop {
            let batch: Vec<ClaimedDelivery> = claimed.by_ref().take(dest.batch_size).collect();
            if batch.is_empty() {
                break;
            }
            let slot = match batch_slots.next() {
                Some(slot) => Some(slot),
                // Claimed ahead: wait for a slot, unless the circuit opened
                // (then the rest go back to the queue at once). Nor is one
                // sent once half its lease has passed waiting.
                None if lock(&circuit).is_closed() => {
                    let left = (dest.lease / 2).saturating_sub(claimed_at.elapsed());
                    tokio::select! {
                        p = tokio::time::timeout(left, slots.clone().acquire_owned()) => {
                            p.ok().and_then(|p| p.ok()).filter(|_| lock(&circuit).is_closed())
                        }
                        _ = ctx.shutdown.cancelled() => None,
                    }
                }
                None => None,
            };
            let Some(slot) = slot else {
                let rest = batch.into_iter().chain(claimed.by_ref()).collect();
                release_claimed(&dest, &ctx, rest).await;
                break;
            };
            {
                let mut f = lock(&in_flight);
                for c in &batch {
                    if let Some(lease) = c.delivery.lease_id {
                        f.insert(c.delivery.id, lease);
                    }
                }
            }
            let ticket = Ticket {
                _slot: slot,
                pacer: Pacer::prepaid(&gate, &hold),
            };
            tracker.spawn(send_batch_guarded(
                dest.clone(),
                ctx.clone(),
                batch,
                ticket,
                circuit.clone(),
                in_flight.clone(),
                probe,
            ));
        }
    }

    // Shutdown: let in-flight sends finish within the grace period; release
    // the leases of any that do not, so another worker takes them at once.
    tracker.close();
    if tokio::time::timeout(ctx.grace, tracker.wait())
        .await
        .is_err()
    {
        let leftover: Vec<(Uuid, Uuid)> = lock(&in_flight).drain().collect();
        tracing::warn!(destination = %dest.name, count = leftover.len(), "shutdown grace over; releasing leases");
        let completions = leftover
            .into_iter()
            .map(|(delivery_id, lease_id)| Completion {
                delivery_id,
                lease_id,
                attempt: None,
                transition: Transition::Released,
                follow_up: None,
            })
            .collect();
        if let Err(e) = ctx.store.complete(completions).await {
            tracing::warn!(destination = %dest.name, error = %e, "releasing leases failed; they will expire");
        }
    }
}

/// Keeps the cause of each dead letter refused for a fixable reason. A
/// failure here leaves it an ordinary dead letter: it waits for a person.
async fn record_fixable(dest: &Destination, ctx: &Context, completions: &[Completion]) {
    let Some(config) = &ctx.fixable else { return };
    let rows = super::fixable::from_completions(dest, completions, config);
    if rows.is_empty() {
        return;
    }
    if let Err(e) = ctx.store.record_fixable(rows).await {
        tracing::warn!(destination = %dest.name, error = %e, "recording fixable dead-letter causes failed");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn sleep_or_stop(ctx: &Context, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = ctx.shutdown.cancelled() => {}
    }
}

async fn wait_for_work(ctx: &Context, notify: &tokio::sync::Notify, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = notify.notified() => {}
        _ = ctx.shutdown.cancelled() => {}
    }
}

fn attempt_record(
    dest: &str,
    job_delivery: &crate::store::Delivery,
    report: &AttemptReport,
    outcome: &Outcome,
    transition: &Transition,
) -> Attempt {
    let (error_class, message) = match outcome {
        Outcome::Delivered { .. } => (None, None),
        Outcome::Retry { class, message, .. } | Outcome::Permanent { class, message } => {
            (Some(class.as_str()), Some(message.clone()))
        }
        Outcome::Throttled { message, .. } => {
            (Some(ErrorClass::Throttled.as_str()), Some(message.clone()))
        }
        Outcome::CredentialsRejected { message } | Outcome::Gone { message } => {
            (Some(ErrorClass::Auth.as_str()), Some(message.clone()))
        }
        Outcome::Deferred { reason, .. } | Outcome::Skipped { reason } => {
            (None, Some(reason.clone()))
        }
    };
    let next_attempt_at = match transition {
        Transition::Scheduled { at, .. } => Some(*at),
        _ => None,
    };
    Attempt {
        id: new_id(),
        delivery_id: job_delivery.id,
        destination: dest.to_string(),
        number: job_delivery.attempts + 1,
        started_at: report.started_at.unwrap_or_else(Utc::now),
        duration_ms: report.duration.as_millis() as u64,
        method: report.method.clone(),
        url: report.url.clone(),
        request_bytes: report.request_bytes,
        request_sha256: report.request_sha256.clone(),
        status: report.status,
        response_excerpt: report.response_excerpt.clone(),
        error_class: error_class.map(String::from),
        outcome: policy::attempt_outcome(transition).to_string(),
        message: message.map(|m| crate::redact::excerpt(&m, 1000)),
        next_attempt_at,
        exchange: report.exchange.clone(),
    }
}

/// A delivery decided without sending (consent, not applicable, bad
/// override): logged as an attempt.
fn local_completion(
    dest: &str,
    c: &ClaimedDelivery,
    class: Option<ErrorClass>,
    transition: Transition,
) -> Completion {
    let message = match &transition {
        Transition::Skipped { reason } | Transition::Dead { reason, .. } => reason.clone(),
        _ => String::new(),
    };
    let attempt = Attempt {
        id: new_id(),
        delivery_id: c.delivery.id,
        destination: dest.to_string(),
        number: c.delivery.attempts + 1,
        started_at: Utc::now(),
        duration_ms: 0,
        method: None,
        url: None,
        request_bytes: None,
        request_sha256: None,
        status: None,
        response_excerpt: None,
        error_class: class.map(|c| c.as_str().into()),
        outcome: policy::attempt_outcome(&transition).to_string(),
        message: Some(message),
        next_attempt_at: None,
        exchange: None,
    };
    Completion {
        delivery_id: c.delivery.id,
        lease_id: c.delivery.lease_id.unwrap_or_default(),
        attempt: Some(attempt),
        transition,
        follow_up: None,
    }
}

/// The event type of dead-letter copies.
pub const DEAD_LETTER_EVENT_TYPE: &str = "delivery.dead_lettered";

/// A copy of a dead letter for the destination's `dead_letter_copies`: an
/// event `delivery.dead_lettered` about the same person, carrying the
/// original event, the destination and the reason. None when there is
/// nowhere to copy to, or when the dead letter is itself a copy.
pub fn dead_letter_copy(
    dest: &Destination,
    delivery: &crate::store::Delivery,
    original: &leadrelay_model::Event,
    transition: &Transition,
) -> Option<crate::store::IngestItem> {
    let Transition::Dead { status, reason } = transition else {
        return None;
    };
    if dest.dead_letter_copies.is_empty() || original.event_type.as_str() == DEAD_LETTER_EVENT_TYPE
    {
        return None;
    }
    let now = Utc::now();
    let mut data = serde_json::Map::new();
    data.insert(
        "dead_letter".into(),
        serde_json::json!({
            "destination": dest.name,
            "connector": dest.connector_kind,
            "delivery_id": delivery.id.to_string(),
            "reason": reason,
            "status": status,
            "attempts": delivery.attempts + 1,
            "first_queued_at": delivery.created_at.to_rfc3339(),
            "dead_at": now.to_rfc3339(),
        }),
    );
    data.insert(
        "original".into(),
        serde_json::json!({
            "event_id": original.id.to_string(),
            "type": original.event_type.as_str(),
            "origin": format!("{}:{}", original.origin.kind.as_str(), original.origin.name),
            "received_at": original.received_at.to_rfc3339(),
            "fields": original.data,
        }),
    );
    let event = leadrelay_model::Event {
        contact_id: original.contact_id,
        attribution: original.attribution.clone(),
        consent: original.consent.clone(),
        // One copy per dead delivery, even if the completion were replayed.
        external_id: Some(delivery.id.to_string()),
        vendor_refs: original.vendor_refs.clone(),
        ..leadrelay_model::Event::internal(
            leadrelay_model::EventType::Custom(DEAD_LETTER_EVENT_TYPE.into()),
            leadrelay_model::Origin::system("dead_letters"),
            original.contact.clone(),
            data,
            now,
        )
    };
    Some(crate::store::IngestItem {
        event,
        destinations: dest.dead_letter_copies.clone(),
        idempotency: None,
    })
}

/// What a batch holds while it is sent: its concurrency slot and, under a
/// rate limit, the pacing of its requests (the first one already paid for).
/// The slot is held until the outcome is recorded, so at most
/// `concurrency` batches per node are sent but not yet recorded (what a
/// crash can send twice).
struct Ticket {
    _slot: OwnedSemaphorePermit,
    pacer: Pacer,
}

/// Rounds of batches claimed at once when nothing limits the rate (see
/// [`run`]); claimed deliveries wait in memory for a slot, and are released
/// instead of sent once half their lease has passed.
const CLAIM_AHEAD: usize = 8;

/// Gives claimed deliveries that will not be sent now back to the queue.
async fn release_claimed(dest: &Destination, ctx: &Context, rest: Vec<ClaimedDelivery>) {
    let completions: Vec<Completion> = rest
        .into_iter()
        .filter_map(|c| {
            Some(Completion {
                delivery_id: c.delivery.id,
                lease_id: c.delivery.lease_id?,
                attempt: None,
                transition: Transition::Released,
                follow_up: None,
            })
        })
        .collect();
    if completions.is_empty() {
        return;
    }
    if let Err(e) = ctx.store.complete(completions).await {
        tracing::warn!(destination = %dest.name, error = %e, "releasing claimed deliveries failed; their leases will expire");
    }
}

/// Failed attempts after which a delivery whose sending panics is
/// dead-lettered (a panic is a bug, usually on this very input: retrying it
/// for days would hold up the person's later deliveries behind it).
pub const PANIC_ATTEMPTS: u32 = 3;

/// The text of a caught panic.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// What becomes of a delivery whose attempt panicked with `message`:
/// retried like any failure, dead-lettered at the [`PANIC_ATTEMPTS`]th.
fn panic_transition(
    dest: &Destination,
    delivery: &crate::store::Delivery,
    message: &str,
    now: DateTime<Utc>,
) -> Transition {
    let failures = delivery.failures + 1;
    if failures >= PANIC_ATTEMPTS {
        return Transition::Dead {
            status: None,
            reason: format!("gave up after {failures} failed attempts; last error: {message}"),
        };
    }
    policy::transition(
        &dest.retry,
        delivery,
        &Outcome::retry(ErrorClass::Internal, message),
        None,
        now,
    )
}

/// Runs the connector over `jobs`, turning a panic into a failed result: a
/// batch of several is sent again one job at a time, so the others still go
/// out and only the job that panics fails.
async fn deliver_catching(dest: &Destination, jobs: &[DeliveryJob]) -> Vec<JobResult> {
    let panicked = |p: Box<dyn std::any::Any + Send>| JobResult {
        outcome: Outcome::retry(
            ErrorClass::Internal,
            format!("the connector panicked: {}", panic_text(&*p)),
        ),
        report: Default::default(),
    };
    match AssertUnwindSafe(dest.connector.deliver(jobs))
        .catch_unwind()
        .await
    {
        Ok(results) => results,
        Err(p) if jobs.len() == 1 => vec![panicked(p)],
        Err(_) => {
            let mut out = Vec::with_capacity(jobs.len());
            for job in jobs {
                let one = AssertUnwindSafe(dest.connector.deliver(std::slice::from_ref(job)))
                    .catch_unwind()
                    .await;
                out.push(match one {
                    Ok(mut r) if r.len() == 1 => r.remove(0),
                    Ok(_) => JobResult {
                        outcome: Outcome::retry(ErrorClass::Vendor, "connector returned no result"),
                        report: Default::default(),
                    },
                    Err(p) => panicked(p),
                });
            }
            out
        }
    }
}

/// [`send_batch`], with a panic anywhere in it (outside the connector's
/// `deliver`, which [`deliver_catching`] guards) recorded as a failed
/// attempt, so no delivery is left in flight to panic again at every lease.
/// A batch of several that panics is sent again one delivery at a time, so
/// only the delivery that panics is charged with it.
async fn send_batch_guarded(
    dest: Arc<Destination>,
    ctx: Arc<Context>,
    batch: Vec<ClaimedDelivery>,
    ticket: Ticket,
    circuit: Arc<Mutex<CircuitBreaker>>,
    in_flight: InFlight,
    probe: bool,
) {
    let run = send_batch(
        dest.clone(),
        ctx.clone(),
        &batch,
        &ticket,
        circuit.clone(),
        in_flight.clone(),
        probe,
    );
    let Err(p) = AssertUnwindSafe(run).catch_unwind().await else {
        return;
    };
    if batch.len() == 1 {
        let deliveries = vec![batch[0].delivery.clone()];
        let text = panic_text(&*p);
        drop(p);
        return record_panic(&dest, &ctx, &deliveries, &in_flight, text).await;
    }
    drop(p);
    for one in &batch {
        let run = send_batch(
            dest.clone(),
            ctx.clone(),
            std::slice::from_ref(one),
            &ticket,
            circuit.clone(),
            in_flight.clone(),
            probe,
        );
        let panicked = AssertUnwindSafe(run)
            .catch_unwind()
            .await
            .err()
            .map(|p| panic_text(&*p));
        if let Some(text) = panicked {
            let deliveries = vec![one.delivery.clone()];
            record_panic(&dest, &ctx, &deliveries, &in_flight, text).await;
        }
    }
}

/// Records a panic as a failed attempt of each of `deliveries`.
async fn record_panic(
    dest: &Destination,
    ctx: &Context,
    deliveries: &[crate::store::Delivery],
    in_flight: &InFlight,
    text: String,
) {
    let message = format!("panicked while sending: {text}");
    tracing::error!(destination = %dest.name, count = deliveries.len(), error = %message, "sending a delivery panicked");
    let now = Utc::now();
    let completions: Vec<Completion> = deliveries
        .iter()
        .map(|d| {
            let transition = panic_transition(dest, d, &message, now);
            let report = AttemptReport::default();
            let outcome = Outcome::retry(ErrorClass::Internal, message.clone());
            let attempt = attempt_record(&dest.name, d, &report, &outcome, &transition);
            Completion {
                delivery_id: d.id,
                lease_id: d.lease_id.unwrap_or_default(),
                attempt: Some(attempt),
                transition,
                follow_up: None,
            }
        })
        .collect();
    if let Err(e) = ctx.store.complete(completions).await {
        tracing::warn!(destination = %dest.name, error = %e, "recording the panic failed; the leases will expire");
    }
    let mut f = lock(in_flight);
    for d in deliveries {
        f.remove(&d.id);
    }
}

/// Keeps the sequence memberships the enrollment model derived (a failure
/// is logged: the deliveries' own outcomes are recorded regardless).
async fn record_memberships(
    ctx: &Context,
    destination: &str,
    items: Vec<crate::store::Membership>,
) {
    if items.is_empty() {
        return;
    }
    if let Err(e) = ctx.store.record_memberships(items).await {
        tracing::warn!(destination, error = %e, "keeping sequence memberships failed");
    }
}

async fn send_batch(
    dest: Arc<Destination>,
    ctx: Arc<Context>,
    batch: &[ClaimedDelivery],
    ticket: &Ticket,
    circuit: Arc<Mutex<CircuitBreaker>>,
    in_flight: InFlight,
    probe: bool,
) {
    let ids: Vec<Uuid> = batch.iter().map(|c| c.delivery.id).collect();
    let mut completions = Vec::with_capacity(batch.len());
    let mut jobs: Vec<DeliveryJob> = Vec::with_capacity(batch.len());
    for c in batch {
        let mut event = c.event.clone();
        if let Some(o) = &c.delivery.overrides
            && let Err(m) = payload::apply_overrides(&mut event, o)
        {
            let t = Transition::Dead {
                status: None,
                reason: m,
            };
            let copy = dead_letter_copy(&dest, &c.delivery, &c.event, &t);
            let mut done = local_completion(&dest.name, c, Some(ErrorClass::Mapping), t);
            done.follow_up = copy;
            completions.push(done);
            continue;
        }
        if let Err(reason) =
            consent::check(dest.legal_basis, &dest.purposes, &event, c.contact.as_ref())
        {
            let t = Transition::Skipped {
                reason: format!("consent: {reason}"),
            };
            completions.push(local_completion(
                &dest.name,
                c,
                Some(ErrorClass::Consent),
                t,
            ));
            continue;
        }
        let job = DeliveryJob {
            delivery: c.delivery.clone(),
            event,
            contact: c.contact.clone(),
            remote_ids: Vec::new(),
            owner: crate::connectors::owner_of(&ctx.owners, c.contact.as_ref()),
        };
        if let Some(reason) = dest.connector.skip_reason(&job) {
            let t = Transition::Skipped { reason };
            completions.push(local_completion(&dest.name, c, None, t));
            continue;
        }
        jobs.push(job);
    }

    // Sequence tools: the suppression list and the add limit (overflow
    // waits for the next window), before any request.
    if let Some(rules) = dest.connector.enrollment() {
        let now = Utc::now();
        let (go, held) = enroll::gate(&ctx.store, &dest.name, rules, jobs, now).await;
        jobs = go;
        let decided = enroll::memberships(rules, &dest.name, held.iter().map(|(j, o)| (j, o)), now);
        record_memberships(&ctx, &dest.name, decided).await;
        for (job, outcome) in held {
            let transition = policy::transition(&dest.retry, &job.delivery, &outcome, None, now);
            // Decided at `now` (the window was chosen from it), not when
            // the record is written after the gate's store reads.
            let report = AttemptReport {
                started_at: Some(now),
                ..AttemptReport::default()
            };
            let attempt = attempt_record(&dest.name, &job.delivery, &report, &outcome, &transition);
            log_outcome(&dest.name, &job, &attempt);
            completions.push(Completion {
                delivery_id: job.delivery.id,
                lease_id: job.delivery.lease_id.unwrap_or_default(),
                attempt: Some(attempt),
                transition,
                follow_up: None,
            });
        }
    }

    if !jobs.is_empty() {
        let job_keys: Vec<Vec<String>> =
            jobs.iter().map(|j| dest.connector.lookup_keys(j)).collect();
        let keys: Vec<String> = job_keys
            .iter()
            .flatten()
            .cloned()
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        // Nothing to look up (file, csv, webhook): no store read.
        if !keys.is_empty()
            && let Ok(ids) = ctx.store.remote_ids(&dest.name, &keys).await
        {
            for (job, wanted) in jobs.iter_mut().zip(&job_keys) {
                job.remote_ids = ids
                    .iter()
                    .filter(|r| wanted.contains(&r.key))
                    .cloned()
                    .collect();
            }
        }
        // Connectors time out each request; this bounds a whole batch.
        let deadline = dest.timeout * 6 + Duration::from_secs(5);
        let sent = tokio::time::timeout(
            deadline,
            pace::scope(Some(ticket.pacer.clone()), deliver_catching(&dest, &jobs)),
        )
        .await;
        // Ids learned on the way (also by deliveries that then failed) are
        // kept before the outcome is recorded, so a retry finds them.
        let learned = dest.connector.learned_remote_ids();
        if !learned.is_empty()
            && let Err(e) = ctx.store.save_remote_ids(&dest.name, &learned).await
        {
            tracing::warn!(destination = %dest.name, error = %e, "keeping learned remote ids failed");
        }
        let results: Vec<JobResult> = match sent {
            Ok(r) if r.len() == jobs.len() => r,
            Ok(r) => {
                tracing::error!(destination = %dest.name, expected = jobs.len(), got = r.len(), "connector returned the wrong number of results");
                jobs.iter()
                    .map(|_| JobResult {
                        outcome: Outcome::retry(ErrorClass::Vendor, "connector returned no result"),
                        report: Default::default(),
                    })
                    .collect()
            }
            Err(_) => jobs
                .iter()
                .map(|_| JobResult {
                    outcome: Outcome::retry(ErrorClass::Timeout, "the batch timed out"),
                    report: Default::default(),
                })
                .collect(),
        };

        let now = Utc::now();
        if let Some(rules) = dest.connector.enrollment() {
            let decided = enroll::memberships(
                rules,
                &dest.name,
                jobs.iter().zip(results.iter().map(|r| &r.outcome)),
                now,
            );
            record_memberships(&ctx, &dest.name, decided).await;
        }
        let (mut any_ok, mut any_transient) = (false, false);
        let mut throttle: Option<(Duration, String)> = None;
        let mut gone: Option<String> = None;
        for (job, result) in jobs.iter().zip(results) {
            let transition = match &result.outcome {
                Outcome::Retry {
                    class: ErrorClass::Internal,
                    message,
                    ..
                } => panic_transition(&dest, &job.delivery, message, now),
                outcome => policy::transition(
                    &dest.retry,
                    &job.delivery,
                    outcome,
                    result.report.status,
                    now,
                ),
            };
            match &result.outcome {
                Outcome::Delivered { .. } => any_ok = true,
                // A panic is our bug, not the destination failing.
                Outcome::Retry {
                    class: ErrorClass::Internal,
                    ..
                } => {}
                Outcome::Retry { .. } => any_transient = true,
                Outcome::Throttled {
                    retry_after,
                    message,
                } => {
                    let wait = retry_after.unwrap_or(policy::DEFAULT_THROTTLE_WAIT);
                    if throttle.as_ref().is_none_or(|(w, _)| wait > *w) {
                        throttle = Some((wait, message.clone()));
                    }
                }
                Outcome::Gone { message } => gone = Some(message.clone()),
                _ => {}
            }
            let attempt = attempt_record(
                &dest.name,
                &job.delivery,
                &result.report,
                &result.outcome,
                &transition,
            );
            log_outcome(&dest.name, job, &attempt);
            ctx.metrics
                .attempt(&dest.name, &attempt.outcome, result.report.duration);
            let follow_up = dead_letter_copy(&dest, &job.delivery, &job.event, &transition);
            completions.push(Completion {
                delivery_id: job.delivery.id,
                lease_id: job.delivery.lease_id.unwrap_or_default(),
                attempt: Some(attempt),
                transition,
                follow_up,
            });
        }

        let change = {
            let mut cb = lock(&circuit);
            let before = cb.state();
            if any_ok {
                cb.on_success();
            } else if any_transient {
                cb.on_failure(Instant::now());
            } else if probe {
                cb.on_neutral(Instant::now());
            }
            let after = cb.state();
            (std::mem::discriminant(&before) != std::mem::discriminant(&after)).then_some(after)
        };
        if let Some(state) = change
            && matches!(state, CircuitState::Open { .. } | CircuitState::Closed)
        {
            tracing::warn!(destination = %dest.name, circuit = state.label(), "circuit breaker changed state");
            let _ = ctx.store.set_circuit_state(&dest.name, state.label()).await;
        }
        if let Some((wait, message)) = throttle {
            let until = now + chrono::Duration::from_std(wait).unwrap_or_default();
            tracing::warn!(destination = %dest.name, seconds = wait.as_secs(), "destination throttled us; pausing it");
            match ctx
                .store
                .pause_destination(&dest.name, until, &format!("throttled: {message}"))
                .await
            {
                // From now on the store's pause rules (and a resume ends it).
                Ok(()) => ticket.pacer.hold().recorded(),
                Err(e) => {
                    tracing::warn!(destination = %dest.name, error = %e, "recording the pause failed")
                }
            }
        }
        if let Some(message) = gone {
            tracing::error!(destination = %dest.name, "destination answered 410 Gone; disabling it");
            let reason = format!("410 Gone: {message}");
            if let Err(e) = ctx
                .store
                .set_destination_disabled(&dest.name, true, Some(&reason))
                .await
            {
                tracing::warn!(destination = %dest.name, error = %e, "disabling the destination failed");
            }
            ctx.alerts.destination_disabled(&dest.name, &reason).await;
        }
    }

    // Recording the outcome must not be lost to a passing storage error: if
    // it keeps failing, the lease expires and the delivery is tried again
    // (at-least-once, same delivery id).
    let mut wait = Duration::from_millis(100);
    for attempt in 0..6 {
        match ctx.store.complete(completions.clone()).await {
            Ok(()) => {
                record_fixable(&dest, &ctx, &completions).await;
                break;
            }
            Err(e) => {
                tracing::warn!(destination = %dest.name, error = %e, attempt, "recording delivery outcomes failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    let mut f = lock(&in_flight);
    for id in ids {
        f.remove(&id);
    }
}

fn log_outcome(dest: &str, job: &DeliveryJob, a: &Attempt) {
    match a.outcome.as_str() {
        "delivered" => {
            tracing::debug!(destination = dest, delivery_id = %job.delivery.id, status = ?a.status, ms = a.duration_ms, "delivered")
        }
        "dead" => {
            tracing::warn!(destination = dest, delivery_id = %job.delivery.id, status = ?a.status, class = ?a.error_class, "dead-lettered")
        }
        "skipped" | "overflow" => {
            tracing::info!(destination = dest, delivery_id = %job.delivery.id, outcome = %a.outcome, message = ?a.message, "not sent")
        }
        other => {
            tracing::info!(destination = dest, delivery_id = %job.delivery.id, status = ?a.status, class = ?a.error_class, outcome = other, "attempt failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AlertsConfig, CircuitConfig, HumanDuration, LegalBasis, RetryConfig};
    use crate::store::{DeliveryFilter, DeliveryState, IngestItem, OpenOptions};
    use leadrelay_model::{ContactData, EmailAddress, Event, EventType, Origin};

    /// Panics in `deliver` on `boom@…`, in `skip_reason` (outside
    /// `deliver`) on `skipboom@…`; delivers everyone else.
    struct Panicky;

    #[async_trait::async_trait]
    impl crate::connectors::Connector for Panicky {
        async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
            for j in jobs {
                let email = j.event.contact.email.as_ref().map(|e| e.as_str());
                if email == Some("boom@x.example") {
                    panic!("header value contains a line break");
                }
            }
            jobs.iter()
                .map(|_| JobResult {
                    outcome: Outcome::delivered(),
                    report: Default::default(),
                })
                .collect()
        }

        fn skip_reason(&self, job: &DeliveryJob) -> Option<String> {
            let email = job.event.contact.email.as_ref().map(|e| e.as_str());
            assert_ne!(email, Some("skipboom@x.example"), "skip_reason blew up");
            None
        }
    }

    fn event(email: &str) -> Event {
        let contact = ContactData {
            email: Some(EmailAddress::parse(email).unwrap()),
            ..Default::default()
        };
        Event::internal(
            EventType::LeadCreated,
            Origin::api("test"),
            contact,
            Default::default(),
            Utc::now(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_is_an_attempt_and_after_a_few_a_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/d.db", dir.path().display());
        let store = crate::store::open(&url, &OpenOptions::default())
            .await
            .unwrap();
        let retry = RetryConfig {
            base: HumanDuration(Duration::from_millis(10)),
            cap: HumanDuration(Duration::from_millis(20)),
            ..Default::default()
        };
        let dest = Arc::new(Destination {
            name: "p".into(),
            connector_kind: "test",
            connector: Arc::new(Panicky),
            retry,
            circuit: CircuitConfig::default(),
            concurrency: 1,
            batch_size: 10,
            rate: None,
            timeout: Duration::from_secs(2),
            lease: Duration::from_secs(600),
            purposes: vec![],
            legal_basis: Some(LegalBasis::LegitimateInterest),
            dead_letter_copies: vec![],
        });
        let emails = ["fine@x.example", "boom@x.example", "skipboom@x.example"];
        // One transaction: the three are claimed in one batch.
        let items = emails
            .iter()
            .map(|e| IngestItem {
                event: event(e),
                destinations: vec!["p".into()],
                idempotency: None,
            })
            .collect();
        store.ingest(items).await.unwrap();
        let shutdown = CancellationToken::new();
        let ctx = Context {
            pace: None,
            store: store.clone(),
            shutdown: shutdown.clone(),
            poll: Duration::from_millis(20),
            grace: Duration::from_secs(1),
            alerts: Arc::new(AlertMonitor::new(
                store.clone(),
                AlertsConfig::default(),
                vec!["p".into()],
                ["p".to_string()].into(),
            )),
            metrics: crate::metrics::Metrics::new(),
            fixable: None,
            owners: Default::default(),
        };
        let task = tokio::spawn(run(dest, ctx));
        let started = Instant::now();
        let all = loop {
            let all = store
                .list_deliveries(&DeliveryFilter::default(), None, 10)
                .await
                .unwrap();
            if all.len() == 3 && all.iter().all(|d| !d.state.is_active()) {
                break all;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "deliveries never ended: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        shutdown.cancel();
        task.await.unwrap();
        for d in &all {
            let event = store.get_event(d.event_id).await.unwrap().unwrap();
            let email = event.contact.email.unwrap().as_str().to_string();
            let attempts = store.attempts(d.id).await.unwrap();
            if email == "fine@x.example" {
                // Sent again alone after its batch panicked: delivered.
                assert_eq!(d.state, DeliveryState::Delivered, "{d:?}");
                continue;
            }
            assert_eq!(d.state, DeliveryState::Dead, "{email}: {d:?}");
            assert_eq!(
                attempts.len(),
                PANIC_ATTEMPTS as usize,
                "{email}: {attempts:?}"
            );
            let expected = if email == "boom@x.example" {
                "the connector panicked: header value contains a line break"
            } else {
                "skip_reason blew up"
            };
            for a in &attempts {
                assert_eq!(a.error_class.as_deref(), Some("internal"), "{a:?}");
                assert!(
                    a.message.as_deref().unwrap_or("").contains(expected),
                    "{a:?}"
                );
            }
            let reason = d.reason.as_deref().unwrap_or("");
            assert!(
                reason.contains("gave up after 3") && reason.contains(expected),
                "{reason}"
            );
        }
    }
}
