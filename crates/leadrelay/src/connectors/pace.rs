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

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use governor::{Quota, RateLimiter};

use crate::config::Rate;

/// An even-paced limiter (burst of one).
pub type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

/// Builds the limiter for a rate: `"100/10s"` lets one request through
/// every 100 ms, so every window gets exactly its count.
pub fn limiter(rate: Rate) -> Option<Limiter> {
    Quota::with_period(rate.interval()).map(|q| RateLimiter::direct(q.allow_burst(NonZeroU32::MIN)))
}

tokio::task_local! {
    static PACER: Pacer;
}

/// One batch's view of its destination's limiter.
#[derive(Clone)]
pub struct Pacer {
    limiter: Arc<Limiter>,
    prepaid: Arc<AtomicBool>,
}

impl Pacer {
    /// A pacer whose first request was already paid for by the dispatcher.
    pub fn prepaid(limiter: Arc<Limiter>) -> Self {
        Self {
            limiter,
            prepaid: Arc::new(AtomicBool::new(true)),
        }
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
pub async fn before_request() {
    let Ok(p) = PACER.try_with(Pacer::clone) else {
        return;
    };
    if p.prepaid.swap(false, Ordering::AcqRel) {
        return;
    }
    p.limiter.until_ready().await;
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
        let l = Arc::new(limiter(rate).unwrap());
        // The dispatcher's cell: the limiter is now empty for an hour.
        assert!(l.check().is_ok());
        scope(Some(Pacer::prepaid(l.clone())), async {
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
}
