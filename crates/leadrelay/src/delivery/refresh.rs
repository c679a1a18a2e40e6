//! The sequence refresh: tools that send no "sequence finished" webhook
//! (Smartlead, Woodpecker: [`enroll::REFRESHED`]) are read back every
//! `[destinations.NAME.enrollment] refresh` (default 1 hour), on worker
//! nodes. Each round lists the people of the destination's sequence from
//! the tool, page by page, through the connector's own HTTP client (for
//! Woodpecker: the same one-request-at-a-time turn as the deliveries), at
//! the destination's `rate_limit` on its own, and under the destination's
//! throttling hold (a 429 to a round or a delivery pauses both). The
//! round's requests come on top of the deliveries' (one per page: 100
//! Smartlead leads, 500 Woodpecker prospects). A person the tool lists as finished whom leadrelay has `active`
//! in this destination becomes `completed`, one stopped or removed there
//! `exited`; either way the person's enrollments queued behind it — in
//! every destination of the same tool, since that is where "active in
//! another campaign" holds them — are released
//! ([`enroll::release_queued`]), exactly as a routed `sequence.completed`
//! webhook would. People leadrelay does not know, or knows in another
//! state, are left alone. A vendor error ends the round with a warning; the
//! next round tries again. A round is taken by one node per period (a
//! compare-and-set in the store), so several workers do not read the same
//! sequence together.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Destination;
use crate::connectors::enroll::{self, Standing};
use crate::connectors::pace::{self, Pacer};
use crate::store::{MEMBERSHIP_ACTIVE, MEMBERSHIP_COMPLETED, MEMBERSHIP_EXITED, Store};

/// What one round came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Round {
    /// People the tool listed.
    pub read: usize,
    /// Memberships changed to `completed` or `exited`.
    pub changed: usize,
    /// Queued enrollments released.
    pub released: usize,
}

/// Runs a round every `every` until shutdown (the first after `every`).
/// `tool_destinations`: every destination of the same tool, whose queued
/// enrollments a finished person releases.
pub async fn run(
    store: Arc<dyn Store>,
    dest: Arc<Destination>,
    tool_destinations: Vec<String>,
    every: Duration,
    pacer: Pacer,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        if !take_turn(&store, &dest.name, every).await {
            continue;
        }
        let tool = dest.connector_kind;
        // A round that hangs (a stalled wait for the rate gate or the
        // vendor) is given up, so the next one still runs.
        let limit = every.max(dest.timeout * 2);
        let result = tokio::time::timeout(limit, round(&store, &dest, &tool_destinations, &pacer))
            .await
            .unwrap_or_else(|_| Err(format!("the round took longer than {limit:?}")));
        match result {
            Ok(Some(r)) => tracing::info!(
                destination = %dest.name,
                tool,
                read = r.read,
                changed = r.changed,
                released = r.released,
                "sequence refresh"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                destination = %dest.name,
                tool,
                error = %e,
                "sequence refresh: round ended early; the next round tries again"
            ),
        }
    }
}

/// Whether this node takes this period's round: the store keeps when the
/// last round began, and only one node moves it forward per period.
async fn take_turn(store: &Arc<dyn Store>, destination: &str, every: Duration) -> bool {
    let key = format!("enroll:refresh:{destination}");
    let now = Utc::now().timestamp_millis();
    // Half a period of slack: a node whose timer runs a little early still
    // takes its turn.
    let due = (every.as_millis() / 2) as i64;
    let current = match store.kv_get(&key).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(destination, error = %e, "sequence refresh: cannot read the last round");
            return false;
        }
    };
    let last: Option<i64> = current.as_deref().and_then(|v| v.parse().ok());
    if last.is_some_and(|l| now - l < due) {
        return false;
    }
    store
        .kv_compare_and_set(&key, current.as_deref(), &now.to_string())
        .await
        .unwrap_or(false)
}

/// One round: `Ok(None)` when the destination is disabled, paused, or its
/// connector cannot list its sequence; `Err` with the vendor's or the
/// store's error (nothing after it is changed).
pub async fn round(
    store: &Arc<dyn Store>,
    dest: &Destination,
    tool_destinations: &[String],
    pacer: &Pacer,
) -> Result<Option<Round>, String> {
    let state = store
        .destination_state(&dest.name)
        .await
        .map_err(|e| format!("cannot read the destination's state: {e}"))?;
    let now = Utc::now();
    if state.disabled || state.paused_until.is_some_and(|u| u > now) {
        return Ok(None);
    }
    let Some(policy) = dest.connector.enrollment() else {
        return Ok(None);
    };
    let listed = match pace::scope(Some(pacer.clone()), dest.connector.sequence_people()).await {
        None => return Ok(None),
        Some(Err(e)) => return Err(e),
        Some(Ok(l)) => l,
    };
    let mut r = Round {
        read: listed.len(),
        ..Default::default()
    };
    for person in listed.iter().filter(|p| p.standing != Standing::Active) {
        let key = format!("email:{}", person.email.trim().to_lowercase());
        let memberships = store
            .memberships(&key)
            .await
            .map_err(|e| format!("cannot read memberships: {e}"))?;
        let Some(m) = memberships
            .into_iter()
            .find(|m| m.destination == dest.name && m.state == MEMBERSHIP_ACTIVE)
        else {
            continue;
        };
        let (state, change) = match person.standing {
            Standing::Finished => (
                MEMBERSHIP_COMPLETED,
                format!(
                    "refresh: {} lists the sequence finished ({})",
                    policy.tool, person.status
                ),
            ),
            _ => (
                MEMBERSHIP_EXITED,
                format!(
                    "refresh: {} lists the person stopped ({})",
                    policy.tool, person.status
                ),
            ),
        };
        let now = Utc::now();
        store
            .record_memberships(vec![crate::store::Membership {
                state: state.to_string(),
                since: now,
                updated_at: now,
                last_change: change,
                ..m
            }])
            .await
            .map_err(|e| format!("cannot record a membership: {e}"))?;
        r.changed += 1;
        for name in tool_destinations {
            r.released += enroll::release_queued(store, name, &key)
                .await
                .map_err(|e| format!("cannot release queued enrollments: {e}"))?;
        }
    }
    Ok(Some(r))
}
