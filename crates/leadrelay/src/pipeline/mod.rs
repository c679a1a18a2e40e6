//! The sales pipeline: lead scoring, owner routing and the MQL → SQL
//! handoff with its SLA timer.
//!
//! - [`score`] (pure) turns rules over fields and events into a score and a
//!   stage. The stores run it through [`LeadHook`] inside the ingest
//!   transaction that merges the golden contact, so the score on a contact
//!   is always that of the events stored.
//! - When a contact crosses into SQL, the same transaction stores a
//!   `handoff` timer due at once — durable work, so no handoff is lost to a
//!   crash between ingest and assignment.
//! - [`handoff`] (a background job on every worker node) claims due timers
//!   under a lease: a `handoff` timer assigns an owner ([`owners`], pure
//!   decision + an atomic round-robin counter), stores a `lead.qualified`
//!   event that the normal routes deliver (CRM owner/stage/task, Slack,
//!   email …) and starts the `sla` timer; an `sla` timer that finds no
//!   acceptance or activity since the handoff stores `lead.sla_breached`
//!   (and optionally reassigns to the manager).

pub mod config;
pub mod handoff;
pub mod owners;
pub mod score;

use chrono::{DateTime, Utc};
use leadrelay_model::{Contact, Event, Stage, new_id};
use serde_json::json;

pub use config::{
    HandoffConfig, OwnerConfig, Requalify, RoutingConfig, RoutingRule, ScoreRule, ScoringConfig,
};

use crate::store::{LeadEffects, NewTimer};

/// The event an owner (or their CRM) sends to accept a lead.
pub const ACCEPTED: &str = "lead.accepted";

/// Timer kinds.
pub const HANDOFF_TIMER: &str = "handoff";
pub const SLA_TIMER: &str = "sla";

/// What the stores run for every contact an event is merged into.
#[derive(Debug, Clone)]
pub struct LeadHook {
    pub scoring: ScoringConfig,
    pub handoff: HandoffConfig,
}

impl LeadHook {
    /// The hook for a configuration: None when scoring is off (no rules).
    pub fn from_config(config: &crate::config::Config) -> Option<Self> {
        config.scoring.enabled().then(|| Self {
            scoring: config.scoring.clone(),
            handoff: config.handoff.clone(),
        })
    }

    /// Updates `contact` (already merged with `event`): activity and
    /// acceptance times, score and stage. Returns the timers to store with
    /// it (a handoff when it crossed into SQL).
    pub fn on_merge(
        &self,
        contact: &mut Contact,
        event: &Event,
        now: DateTime<Utc>,
    ) -> LeadEffects {
        let t = event.event_type.as_str();
        let at = event.occurred_at.min(now);
        let lead = &mut contact.lead;
        if self.handoff.activity_events.iter().any(|a| a == t) {
            lead.last_activity_at = lead.last_activity_at.max(Some(at));
        }
        if t == ACCEPTED {
            lead.accepted_at = lead.accepted_at.max(Some(at));
        }
        let change = score::apply(&self.scoring, contact, event, now);
        let mut effects = LeadEffects {
            close_assignment: change.after == Stage::Disqualified
                && change.before != Stage::Disqualified,
            ..Default::default()
        };
        if !change.crossed_sql {
            return effects;
        }
        contact.lead.qualified_at = Some(now);
        let mode = match (change.requalified, self.handoff.requalify) {
            (false, _) => "handoff",
            (true, Requalify::Reenroll) => "reenroll",
            (true, Requalify::Notify) => "notify",
            (true, Requalify::Skip) => return effects,
        };
        effects.timers.push(NewTimer {
            id: new_id(),
            kind: HANDOFF_TIMER.into(),
            contact_id: contact.id,
            due_at: now,
            data: json!({
                "mode": mode,
                "score": change.score,
                "event_id": event.id,
            }),
        });
        effects
    }
}

/// Problems of `[scoring]`, `[[owners]]`, `[routing]` and `[handoff]`, and
/// warnings for a pipeline that would run without telling anyone.
pub fn validate(c: &crate::config::Config) -> Vec<crate::config::Problem> {
    use crate::config::Problem;
    let mut p = config::validate(&c.scoring, &c.owners, &c.routing, &c.handoff);
    if !c.scoring.enabled() {
        if !c.owners.is_empty() || !c.routing.rules.is_empty() {
            p.push(Problem::warning(
                "scoring.rules",
                "no scoring rules: no contact becomes SQL, so [[owners]] and [routing] are never used",
            ));
        }
        return p;
    }
    for (t, why) in [
        (
            handoff::QUALIFIED,
            "owners are assigned but nobody is told (no CRM update, no alert)",
        ),
        (
            handoff::SLA_BREACHED,
            "SLA breaches show only in GET /api/v1/timers",
        ),
    ] {
        if !routed(&c.routes, t) {
            p.push(Problem::warning(
                "routes",
                format!("no route delivers {t}: {why}"),
            ));
        }
    }
    if c.owners.iter().all(|o| !o.active) && c.routing.fallback.is_none() {
        p.push(Problem::warning(
            "owners",
            "no active [[owners]] and no routing.fallback: SQL leads stay unassigned",
        ));
    }
    p
}

/// Whether some route takes events of type `t` from the pipeline (routes
/// limited to forms or sources never see them).
fn routed(routes: &[crate::config::RouteConfig], t: &str) -> bool {
    routes.iter().any(|r| {
        r.forms.is_empty()
            && r.sources.is_empty()
            && !r.destinations.is_empty()
            && r.events.iter().map(|e| e.trim()).any(|e| {
                e == "*"
                    || e == t
                    || e.strip_suffix(".*")
                        .is_some_and(|pre| t.strip_prefix(pre).is_some_and(|r| r.starts_with('.')))
            })
    })
}
