//! The handoff job: fires due timers on every worker node.
//!
//! - `handoff` (stored by ingest when a contact crosses into SQL, due at
//!   once): routes the contact to an owner, records the assignment, stores a
//!   `lead.qualified` event — which the normal `[[routes]]` deliver: CRM
//!   (owner ids, lifecycle stage, follow-up task via the mapping), Slack or
//!   email alert to the owner — and starts the `sla` timer, all before the
//!   timer is marked done. A re-qualified contact under `requalify =
//!   "notify"` only gets `lead.requalified` for its current owner.
//! - `sla`: unless the contact was accepted (`lead.accepted`) or had an
//!   activity (`handoff.activity_events`) since the handoff, stores
//!   `lead.sla_breached` (routed to the manager's notification
//!   destinations) and, with `reassign_on_breach`, reassigns the lead to
//!   the owner's manager.
//!
//! Timers are claimed under a lease, so a crash mid-way lets the timer fall
//! due again; the events it stores carry an idempotency key per timer, so a
//! second run never stores them twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use leadrelay_model::{Contact, Event, EventType, Origin, OwnerAssignment, Stage, new_id};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::OwnerConfig;
use super::{HANDOFF_TIMER, SLA_TIMER, owners};
use crate::config::Config;
use crate::ingest::Ingestor;
use crate::store::{
    IdempotencyKey, IngestItem, NewTimer, Store, StoreResult, TIMER_CANCELED, TIMER_DONE, Timer,
};

pub const QUALIFIED: &str = "lead.qualified";
pub const REQUALIFIED: &str = "lead.requalified";
pub const SLA_BREACHED: &str = "lead.sla_breached";

const LEASE: Duration = Duration::from_secs(60);
const BATCH: usize = 20;

/// Runs timers until `stop` is cancelled.
pub struct HandoffJob {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    ingestor: Arc<Ingestor>,
}

impl HandoffJob {
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>, ingestor: Arc<Ingestor>) -> Self {
        Self {
            store,
            config,
            ingestor,
        }
    }

    /// Starts the polling loop (nothing when scoring is off).
    pub fn start(self, stop: CancellationToken) -> Option<JoinHandle<()>> {
        if !self.config.scoring.enabled() {
            return None;
        }
        let every = self.config.handoff.poll_interval.get();
        Some(tokio::spawn(async move {
            loop {
                match self.run_due(Utc::now()).await {
                    // A full batch: there may be more.
                    Ok(n) if n >= BATCH => continue,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "handoff timers: storage error; retrying"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }))
    }

    /// Claims and fires the due timers once; returns how many were claimed.
    pub async fn run_due(&self, now: DateTime<Utc>) -> StoreResult<usize> {
        let timers = self.store.claim_timers(BATCH, LEASE).await?;
        let n = timers.len();
        for t in timers {
            let id = t.id;
            if let Err(e) = self.fire(t, now).await {
                // The lease expires and the timer falls due again.
                tracing::warn!(timer = %id, error = %e, "timer failed; it will be retried");
            }
        }
        Ok(n)
    }

    async fn fire(&self, t: Timer, now: DateTime<Utc>) -> StoreResult<()> {
        let lease = t.lease_id.unwrap_or_default();
        let Some(contact) = self.store.get_contact(t.contact_id).await? else {
            self.store
                .finish_timer(t.id, lease, TIMER_CANCELED, "contact erased", vec![])
                .await?;
            return Ok(());
        };
        let (state, outcome, next) = match t.kind.as_str() {
            HANDOFF_TIMER => self.handoff(&t, contact, now).await?,
            SLA_TIMER => self.sla(&t, contact, now).await?,
            other => (
                TIMER_CANCELED,
                format!("unknown timer kind {other:?}"),
                vec![],
            ),
        };
        let kept = self
            .store
            .finish_timer(t.id, lease, state, &outcome, next)
            .await?;
        if kept {
            tracing::info!(timer = %t.id, kind = %t.kind, contact = %t.contact_id, outcome = %outcome, "timer fired");
        }
        Ok(())
    }

    async fn handoff(
        &self,
        t: &Timer,
        contact: Contact,
        now: DateTime<Utc>,
    ) -> StoreResult<(&'static str, String, Vec<NewTimer>)> {
        if contact.lead.stage != Stage::Sql {
            return Ok((
                TIMER_CANCELED,
                format!("no longer SQL (stage {})", contact.lead.stage.as_str()),
                vec![],
            ));
        }
        let cfg = &self.config;
        let mode = t
            .data
            .get("mode")
            .and_then(Value::as_str)
            .unwrap_or("handoff");
        // Notify the current owner; a contact that never got one is handed
        // off in full instead (there is nobody to notify).
        if let (Some(owner), "notify") = (&contact.lead.owner, mode) {
            let owner = owner.owner.clone();
            let mut data = self.owner_data(Some(&owner));
            data.insert("requalified".into(), json!(contact.lead.requalified));
            data.insert("score".into(), score_json(contact.lead.score));
            self.emit(REQUALIFIED, &contact, data, t.id, now).await?;
            return Ok((TIMER_DONE, format!("requalified: notified {owner}"), vec![]));
        }
        // A retried handoff (its first run stopped after assigning) keeps
        // the owner it chose instead of taking another turn.
        let assigned = contact.lead.owner.as_ref().filter(|o| {
            contact
                .lead
                .qualified_at
                .is_some_and(|q| o.assigned_at >= q)
        });
        let decision = match assigned {
            Some(o) => owners::Decision {
                owner: Some(o.owner.clone()),
                queue: self.owner(&o.owner).is_none(),
                reason: o.reason.clone(),
            },
            None => {
                owners::assign(
                    self.store.as_ref(),
                    &cfg.owners,
                    &cfg.routing,
                    &contact,
                    now,
                )
                .await?
            }
        };
        if let (Some(o), None) = (&decision.owner, assigned) {
            self.store
                .assign_owner(
                    contact.id,
                    OwnerAssignment {
                        owner: o.clone(),
                        reason: decision.reason.clone(),
                        assigned_at: now,
                    },
                )
                .await?;
        }
        let sla_due = now + chrono::Duration::from_std(cfg.handoff.sla.get()).unwrap_or_default();
        let task_due =
            now + chrono::Duration::from_std(cfg.handoff.task_due.get()).unwrap_or_default();
        let mut data = self.owner_data(decision.owner.as_deref());
        data.insert("queue".into(), json!(decision.queue));
        data.insert("reason".into(), json!(decision.reason));
        data.insert("score".into(), score_json(contact.lead.score));
        data.insert("stage".into(), json!("sql"));
        data.insert("lifecycle_stage".into(), json!(cfg.handoff.lifecycle_stage));
        data.insert("task_due_at".into(), json!(task_due));
        data.insert("sla_due_at".into(), json!(sla_due));
        data.insert("requalified".into(), json!(mode != "handoff"));
        self.emit(QUALIFIED, &contact, data, t.id, now).await?;
        let who = match &decision.owner {
            Some(o) => o.clone(),
            None => "nobody".into(),
        };
        let sla = NewTimer {
            id: new_id(),
            kind: SLA_TIMER.into(),
            contact_id: contact.id,
            due_at: sla_due,
            data: json!({ "owner": decision.owner, "since": now, "handoff": t.id }),
        };
        Ok((
            TIMER_DONE,
            format!("assigned to {who}: {}", decision.reason),
            vec![sla],
        ))
    }

    async fn sla(
        &self,
        t: &Timer,
        contact: Contact,
        now: DateTime<Utc>,
    ) -> StoreResult<(&'static str, String, Vec<NewTimer>)> {
        let lead = &contact.lead;
        if lead.stage == Stage::Disqualified {
            return Ok((TIMER_CANCELED, "disqualified".into(), vec![]));
        }
        let since: DateTime<Utc> = t
            .data
            .get("since")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or(t.created_at);
        if let Some(a) = lead.accepted_at.filter(|a| *a >= since) {
            return Ok((
                TIMER_DONE,
                format!("met: accepted at {}", a.to_rfc3339()),
                vec![],
            ));
        }
        if let Some(a) = lead.last_activity_at.filter(|a| *a >= since) {
            return Ok((
                TIMER_DONE,
                format!("met: activity at {}", a.to_rfc3339()),
                vec![],
            ));
        }
        let owner = t
            .data
            .get("owner")
            .and_then(Value::as_str)
            .map(String::from);
        let manager = owner
            .as_deref()
            .and_then(|o| self.owner(o))
            .and_then(|o| o.manager.clone());
        let mut data = self.owner_data(owner.as_deref());
        data.insert(
            "manager".into(),
            manager
                .as_deref()
                .and_then(|m| self.owner(m))
                .map(owner_json)
                .unwrap_or(Value::Null),
        );
        data.insert("since".into(), json!(since));
        data.insert("sla_due_at".into(), json!(t.due_at.min(now)));
        let reassign = self.config.handoff.reassign_on_breach && manager.is_some();
        data.insert("reassigned".into(), json!(reassign));
        self.emit(SLA_BREACHED, &contact, data, t.id, now).await?;
        let mut outcome = match &manager {
            Some(m) => format!("breached: escalated to {m}"),
            None => "breached: no manager configured".to_string(),
        };
        if let (true, Some(m)) = (reassign, &manager) {
            self.store
                .assign_owner(
                    contact.id,
                    OwnerAssignment {
                        owner: m.clone(),
                        reason: format!(
                            "SLA breached by {}: reassigned to the manager",
                            owner.as_deref().unwrap_or("nobody")
                        ),
                        assigned_at: now,
                    },
                )
                .await?;
            outcome.push_str(" and reassigned");
        }
        Ok((TIMER_DONE, outcome, vec![]))
    }

    fn owner(&self, name: &str) -> Option<&OwnerConfig> {
        self.config.owners.iter().find(|o| o.name == name)
    }

    /// `owner`: the owner's name, contact and CRM ids (null when none).
    fn owner_data(&self, name: Option<&str>) -> Map<String, Value> {
        let mut m = Map::new();
        let v = match name {
            Some(n) => self
                .owner(n)
                .map(owner_json)
                .unwrap_or_else(|| json!({ "name": n })),
            None => Value::Null,
        };
        m.insert("owner".into(), v);
        m
    }

    /// Stores a pipeline event about `contact`, routed like any other, with
    /// an idempotency key per timer (a retried timer never stores it twice).
    async fn emit(
        &self,
        event_type: &str,
        contact: &Contact,
        data: Map<String, Value>,
        timer: uuid::Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut event = Event::internal(
            EventType::parse(event_type)
                .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?,
            Origin::system("pipeline"),
            contact.data.clone(),
            data,
            now,
        );
        let destinations = self.ingestor.routes().route_and_record(&mut event);
        self.store
            .ingest_one(IngestItem {
                event,
                destinations,
                idempotency: Some(IdempotencyKey {
                    scope: "pipeline".into(),
                    key: format!("{event_type}:{timer}"),
                    // A retried timer may see newer data: still the same event.
                    fingerprint: None,
                }),
            })
            .await?;
        Ok(())
    }
}

/// A score as templates show it best: `80`, or `80.5`.
fn score_json(score: f64) -> Value {
    if score.fract() == 0.0 && score.abs() < 1e15 {
        json!(score as i64)
    } else {
        json!(score)
    }
}

fn owner_json(o: &OwnerConfig) -> Value {
    json!({
        "name": o.name,
        "email": o.email,
        "slack_id": o.slack_id,
        "hubspot_owner_id": o.hubspot_owner_id,
        "pipedrive_user_id": o.pipedrive_user_id,
        "salesforce_user_id": o.salesforce_user_id,
    })
}
