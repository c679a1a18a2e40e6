//! Request pacing: a destination's `rate_limit` counts HTTP requests, also
//! when one batch of deliveries takes several of them (a CRM upserts the
//! contact, then the company, then writes a note …).
//!
//! The dispatcher takes one rate-limit cell before it sends a batch and runs
//! the connector inside [`scope`] with that cell *prepaid*. Every request
//! made through [`crate::connectors::http::send`] calls [`before_request`]:
//! the first request of the batch uses the prepaid cell, every further one
//! waits for a cell of its own. A connector that sends one request per
//! batch (the webhook) therefore behaves exactly as before, and a CRM
//! connector never exceeds the vendor's window however many calls a
//! delivery needs.
//!
//! A throttling answer (a 429, Salesforce's `REQUEST_LIMIT_EXCEEDED`) puts
//! the destination on [`Hold`] at once, in process: every request of the
//! destination not yet sent — another batch that already holds its cell, a
//! later request of a batch under way — is then not sent, and its delivery
//! ends the attempt as throttled, to go out when the pause is over. The
//! dispatcher records the pause in the store when the batch ends (for
//! every node); the hold covers the time before that.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};

use crate::config::Rate;
use crate::store::Store;

/// An even-paced limiter (burst of one).
pub type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

/// A destination's rate limit: none, in process (one node), or shared by
/// every node through the store. Either way an even pace with a burst of
/// one, 1% under the limit (see [`Rate::paced_interval`]): `"100/10s"` lets
/// one request through every 101 ms, so a 10 s window gets 100 at most.
pub enum RateGate {
    Open,
    Local(Limiter),
    Shared {
        store: Arc<dyn Store>,
        destination: String,
        interval: Duration,
    },
}

impl RateGate {
    /// The gate for `destination`'s rate: shared when the store keeps rate
    /// state for every node (PostgreSQL), else in process.
    pub fn new(destination: &str, rate: Option<Rate>, store: &Arc<dyn Store>) -> Self {
        match rate {
            None => RateGate::Open,
            Some(r) if store.shared_rate_limits() => RateGate::Shared {
                store: store.clone(),
                destination: destination.to_string(),
                interval: r.paced_interval(),
            },
            Some(r) => Quota::with_period(r.paced_interval())
                .map(|q| RateGate::Local(RateLimiter::direct(q.allow_burst(NonZeroU32::MIN))))
                .unwrap_or(RateGate::Open),
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self, RateGate::Open)
    }

    /// Waits for a cell (cancel by dropping the future).
    pub async fn acquire(&self) {
        match self {
            RateGate::Open => {}
            RateGate::Local(l) => l.until_ready().await,
            RateGate::Shared {
                store,
                destination,
                interval,
            } => loop {
                let wait = match store.rate_acquire(destination, *interval).await {
                    Ok(None) => return,
                    Ok(Some(wait)) => wait.min(Duration::from_secs(1)),
                    Err(e) => {
                        tracing::warn!(destination = %destination, error = %e, "shared rate limit unavailable");
                        Duration::from_millis(200)
                    }
                };
                tokio::time::sleep(wait).await;
            },
        }
    }

    /// Takes a cell only if one is free now.
    pub async fn try_acquire(&self) -> bool {
        match self {
            RateGate::Open => true,
            RateGate::Local(l) => l.check().is_ok(),
            RateGate::Shared {
                store,
                destination,
                interval,
            } => matches!(store.rate_acquire(destination, *interval).await, Ok(None)),
        }
    }
}

/// A destination's in-process pause: until when its requests are not
/// sent, the throttling answer that started it, and whether the pause is
/// recorded in the store yet (from then on the store's pause rules: an
/// operator's resume ends the hold too).
#[derive(Debug, Default)]
pub struct Hold(Mutex<Option<(Instant, String, bool)>>);

/// Requests held: for how long still, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub left: Duration,
    pub reason: String,
}

impl Hold {
    /// Holds requests for `d` from now because of `reason` (a longer hold
    /// already set stays).
    pub fn extend(&self, d: Duration, reason: &str) {
        let until = Instant::now() + d;
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if h.as_ref().is_none_or(|(t, _, _)| *t < until) {
            *h = Some((until, reason.to_string(), false));
        }
    }

    /// The dispatcher recorded the pause in the store.
    pub fn recorded(&self) {
        if let Some(h) = self.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            h.2 = true;
        }
    }

    /// The store says the destination is not paused: a hold already
    /// recorded there is over (resumed); one not recorded yet stays.
    pub fn release_if_recorded(&self) {
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if h.as_ref().is_some_and(|(_, _, recorded)| *recorded) {
            *h = None;
        }
    }

    /// How long requests are still held, and why, if they are.
    pub fn remaining(&self) -> Option<Held> {
        let h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (until, reason, _) = h.as_ref()?;
        let left = until.checked_duration_since(Instant::now())?;
        (!left.is_zero()).then(|| Held {
            left,
            reason: reason.clone(),
        })
    }
}

tokio::task_local! {
    static PACER: Pacer;
}

/// One batch's view of its destination's rate gate and hold.
#[derive(Clone)]
pub struct Pacer {
    gate: Arc<RateGate>,
    hold: Arc<Hold>,
    prepaid: Arc<AtomicBool>,
    meter: Arc<Meter>,
}

/// A vendor's daily API quota as its last answer reported it (HubSpot's
/// `X-HubSpot-RateLimit-Daily` / `-Daily-Remaining`, Salesforce's
/// `Sforce-Limit-Info: api-usage=USED/LIMIT`, Pipedrive's
/// `x-daily-requests-left`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DailyQuota {
    /// The day's quota, when the vendor says it.
    pub limit: Option<u64>,
    /// What is left of it.
    pub remaining: Option<u64>,
}

impl DailyQuota {
    /// The quota reported by a vendor answer's headers, if any.
    pub fn from_headers(h: &reqwest::header::HeaderMap) -> Option<Self> {
        let num = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(info) = h.get("sforce-limit-info").and_then(|v| v.to_str().ok()) {
            // `api-usage=25/15000` (other limits may follow, comma-separated).
            let usage = info
                .split(',')
                .find_map(|p| p.trim().strip_prefix("api-usage="))?;
            let (used, limit) = usage.split_once('/')?;
            let (used, limit) = (
                used.trim().parse::<u64>().ok()?,
                limit.trim().parse::<u64>().ok()?,
            );
            return Some(Self {
                limit: Some(limit),
                remaining: Some(limit.saturating_sub(used)),
            });
        }
        let hubspot = (
            num("x-hubspot-ratelimit-daily"),
            num("x-hubspot-ratelimit-daily-remaining"),
        );
        if hubspot.0.is_some() || hubspot.1.is_some() {
            return Some(Self {
                limit: hubspot.0,
                remaining: hubspot.1,
            });
        }
        num("x-daily-requests-left").map(|left| Self {
            limit: None,
            remaining: Some(left),
        })
    }
}

/// What a pacer's requests have used: how many were sent, and the
/// vendor's latest report of its daily quota; and the ceiling on that use
/// a backfill sets.
#[derive(Debug, Default)]
struct Meter {
    sent: AtomicU64,
    /// Requests the ceiling kept from being sent.
    refused: AtomicU64,
    quota: Mutex<Option<DailyQuota>>,
    ceiling: Mutex<Option<Ceiling>>,
}

/// A ceiling on a pacer's spending of its vendor's daily quota: a
/// backfill's share of the day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceiling {
    /// The share of the day's quota (0 < share ≤ 1).
    pub share: f64,
    /// What the day had spent before this pacer's count (`sent`) reached
    /// `sent_at`.
    pub spent_before: u64,
    pub sent_at: u64,
    /// The day's quota when the vendor reports only what is left
    /// (Pipedrive): what was left when the day's spending began. Learnt
    /// from the first report when unknown.
    pub base: Option<u64>,
}

impl Ceiling {
    /// The day's spending now and its budget, from the pacer's count and
    /// the vendor's latest report (None: no report yet, nothing known).
    pub fn spending(&mut self, sent: u64, quota: Option<DailyQuota>) -> Option<(u64, u64)> {
        let q = quota?;
        let own = self.spent_before + sent.saturating_sub(self.sent_at);
        let budget = |total: u64| (self.share * total as f64).floor() as u64;
        match (q.limit, q.remaining) {
            // The vendor counts requests and says its quota: ours are exact.
            (Some(limit), _) => Some((own, budget(limit))),
            // Only what is left is known (a token budget): the drop since
            // the day's spending began.
            (None, Some(left)) => {
                let base = *self.base.get_or_insert(left + own);
                Some((base.saturating_sub(left).max(own), budget(base)))
            }
            (None, None) => None,
        }
    }
}

impl Pacer {
    /// A pacer whose first request was already paid for by the dispatcher.
    pub fn prepaid(gate: &Arc<RateGate>, hold: &Arc<Hold>) -> Self {
        Self {
            gate: gate.clone(),
            hold: hold.clone(),
            prepaid: Arc::new(AtomicBool::new(true)),
            meter: Arc::default(),
        }
    }

    /// A pacer whose every request waits for a cell (the sync's polls and
    /// writes, outside the dispatcher).
    pub fn new(gate: &Arc<RateGate>, hold: &Arc<Hold>) -> Self {
        Self {
            gate: gate.clone(),
            hold: hold.clone(),
            prepaid: Arc::new(AtomicBool::new(false)),
            meter: Arc::default(),
        }
    }

    /// Requests sent under this pacer (and its clones) so far.
    pub fn sent(&self) -> u64 {
        self.meter.sent.load(Ordering::Acquire)
    }

    /// Requests its ceiling kept from being sent so far.
    pub fn refused(&self) -> u64 {
        self.meter.refused.load(Ordering::Acquire)
    }

    /// The vendor's latest report of its daily quota, if any answer had one.
    pub fn daily_quota(&self) -> Option<DailyQuota> {
        *self.meter.quota.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets (or lifts) the ceiling on this pacer's share of the daily
    /// quota: once the share is spent, no further request is sent (as
    /// under a hold) until the next UTC day.
    pub fn set_ceiling(&self, c: Option<Ceiling>) {
        *self.meter.ceiling.lock().unwrap_or_else(|p| p.into_inner()) = c;
    }

    /// The ceiling's day spending and budget now (None: no ceiling, or no
    /// quota report yet).
    pub fn spending(&self) -> Option<(u64, u64)> {
        // Every request of every destination asks: without a ceiling (all
        // but a backfill's) nothing else is read.
        let mut c = self.meter.ceiling.lock().unwrap_or_else(|p| p.into_inner());
        let ceiling = c.as_mut()?;
        ceiling.spending(self.sent(), self.daily_quota())
    }

    /// The ceiling's base (see [`Ceiling::base`]), once known.
    pub fn ceiling_base(&self) -> Option<u64> {
        self.meter
            .ceiling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .and_then(|c| c.base)
    }

    /// The destination's hold.
    pub fn hold(&self) -> &Hold {
        &self.hold
    }
}

/// Runs `f` with `pacer` governing its requests (or unpaced with `None`).
pub async fn scope<F: Future>(pacer: Option<Pacer>, f: F) -> F::Output {
    match pacer {
        Some(p) => PACER.scope(p, f).await,
        None => f.await,
    }
}

/// Waits for the destination's rate limit before a request (a no-op
/// outside a paced scope and for the batch's prepaid first request).
/// `Err`: the destination is on hold after a throttling answer — the
/// request must not be sent.
pub async fn before_request() -> Result<(), Held> {
    let Ok(p) = PACER.try_with(Pacer::clone) else {
        return Ok(());
    };
    if let Some(left) = p.hold.remaining() {
        return Err(left);
    }
    if let Some((spent, budget)) = p.spending()
        && spent >= budget
    {
        p.meter.refused.fetch_add(1, Ordering::AcqRel);
        let now = chrono::Utc::now();
        let midnight = (now.date_naive() + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or(now);
        return Err(Held {
            left: (midnight - now).to_std().unwrap_or_default(),
            reason: format!(
                "the day's share of the daily API quota is spent ({spent} of {budget})"
            ),
        });
    }
    if !p.prepaid.swap(false, Ordering::AcqRel) && !p.gate.is_open() {
        p.gate.acquire().await;
    }
    // A throttling answer may have come while this request waited.
    match p.hold.remaining() {
        Some(left) => Err(left),
        None => {
            p.meter.sent.fetch_add(1, Ordering::AcqRel);
            Ok(())
        }
    }
}

/// Notes a vendor answer's report of its daily quota (a no-op outside a
/// paced scope or when the answer has none).
pub fn observe(headers: &reqwest::header::HeaderMap) {
    let Some(q) = DailyQuota::from_headers(headers) else {
        return;
    };
    let _ = PACER.try_with(|p| {
        *p.meter.quota.lock().unwrap_or_else(|e| e.into_inner()) = Some(q);
    });
}

/// The destination was throttled (`reason`): hold its requests for `d` (a
/// no-op outside a paced scope).
pub fn hold(d: Duration, reason: &str) {
    let _ = PACER.try_with(|p| p.hold.extend(d, reason));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn first_request_is_prepaid_and_the_rest_wait_for_cells() {
        let rate = Rate {
            count: 1,
            period: Duration::from_secs(3600),
        };
        let gate = Arc::new(
            Quota::with_period(rate.interval())
                .map(|q| RateGate::Local(RateLimiter::direct(q.allow_burst(NonZeroU32::MIN))))
                .unwrap(),
        );
        // The dispatcher's cell: the limiter is now empty for an hour.
        assert!(gate.try_acquire().await);
        let held = Arc::new(Hold::default());
        scope(Some(Pacer::prepaid(&gate, &held)), async {
            assert!(before_request().now_or_never().is_some(), "prepaid");
            assert!(
                before_request().now_or_never().is_none(),
                "the second request waits for a cell"
            );
        })
        .await;
        // Outside a scope nothing waits.
        assert!(before_request().now_or_never().is_some());
    }

    #[tokio::test]
    async fn a_hold_stops_requests_that_already_hold_their_cell() {
        let gate = Arc::new(RateGate::Open);
        let held = Arc::new(Hold::default());
        let a = Pacer::prepaid(&gate, &held);
        let b = Pacer::prepaid(&gate, &held);
        // Batch A is throttled; batch B, prepaid, must not send.
        scope(Some(a), async { hold(Duration::from_secs(60), "HTTP 429") }).await;
        let h = scope(Some(b), before_request())
            .now_or_never()
            .expect("no wait")
            .expect_err("held");
        assert!(h.left > Duration::from_secs(50), "{h:?}");
        assert_eq!(h.reason, "HTTP 429");
        // A shorter hold does not shorten it.
        held.extend(Duration::from_millis(1), "later");
        let h = held.remaining().unwrap();
        assert!(h.left > Duration::from_secs(50) && h.reason == "HTTP 429");
        // Not recorded in the store yet: a store without a pause keeps it.
        held.release_if_recorded();
        assert!(held.remaining().is_some());
        // Recorded, then resumed by an operator: over.
        held.recorded();
        held.release_if_recorded();
        assert!(held.remaining().is_none());
    }

    #[test]
    fn daily_quotas_are_read_from_each_vendors_headers() {
        use reqwest::header::{HeaderMap, HeaderValue};
        let of = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            DailyQuota::from_headers(&h)
        };
        let q = |limit, remaining| Some(DailyQuota { limit, remaining });
        assert_eq!(
            of(&[("sforce-limit-info", "api-usage=25/15000")]),
            q(Some(15000), Some(14975))
        );
        assert_eq!(
            of(&[(
                "sforce-limit-info",
                "per-app-api-usage=3/100, api-usage=18/50"
            )]),
            q(Some(50), Some(32))
        );
        assert_eq!(
            of(&[
                ("x-hubspot-ratelimit-daily", "500000"),
                ("x-hubspot-ratelimit-daily-remaining", "499990")
            ]),
            q(Some(500_000), Some(499_990))
        );
        assert_eq!(
            of(&[("x-daily-requests-left", "7990")]),
            q(None, Some(7990))
        );
        // Garbage or none: nothing known.
        assert_eq!(of(&[("sforce-limit-info", "api-usage=lots")]), None);
        assert_eq!(of(&[("x-daily-requests-left", "-3")]), None);
        assert_eq!(of(&[("content-type", "application/json")]), None);
    }

    #[tokio::test]
    async fn a_pacer_counts_its_requests_and_keeps_the_latest_quota() {
        use reqwest::header::{HeaderMap, HeaderValue};
        let gate = Arc::new(RateGate::Open);
        let p = Pacer::new(&gate, &Arc::new(Hold::default()));
        let mut h = HeaderMap::new();
        h.insert(
            "sforce-limit-info",
            HeaderValue::from_static("api-usage=7/100"),
        );
        scope(Some(p.clone()), async {
            before_request().await.unwrap();
            before_request().await.unwrap();
            observe(&h);
        })
        .await;
        // Outside the scope: neither counted nor noted.
        before_request().await.unwrap();
        observe(&HeaderMap::new());
        assert_eq!(p.sent(), 2);
        assert_eq!(
            p.daily_quota(),
            Some(DailyQuota {
                limit: Some(100),
                remaining: Some(93)
            })
        );
    }
}
