//! `leadrelay simulate`: what leadrelay would do with one event — the
//! routes it matches, the consent decision and the mapped payload per
//! destination, the score and the owner — computed with the same code the
//! server runs, without storing or sending anything.
//!
//! The event comes from a form submission (validated exactly like
//! `POST /v1/forms/{form}`, so its errors are the API's 422) or from an
//! event file. The golden contact it would merge into is read by the caller
//! (read-only, see [`crate::store::peek_contact`]) and merged here in memory.
//! Connectors build their payload through [`Connector::preview`], which
//! never touches the network.
//!
//! [`Connector::preview`]: crate::connectors::Connector::preview

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use leadrelay_model::{Contact, Event, new_id};
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::{Config, LegalBasis};
use crate::connectors::DeliveryJob;
use crate::contacts::{self, MergeRules};
use crate::delivery::{self, Destination, consent};
use crate::error::ApiError;
use crate::ingest::{self, FormSubmission, enrich::RequestContext};
use crate::pipeline::owners::{self, RoutingView};
use crate::pipeline::{LeadHook, score};
use crate::routing::{RouteDecision, RouteTable};
use crate::store::{Delivery, DeliveryState};

/// Why there is nothing to simulate.
#[derive(Debug)]
pub enum SimError {
    /// The input would be refused by the API: the status and error body it
    /// would answer.
    Rejected(ApiError),
    /// The configuration cannot be used (routes or destinations).
    Config(String),
}

/// The consent gate's decision for one destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum ConsentDecision {
    /// Every purpose the destination needs is granted.
    Allowed { purposes: Vec<String> },
    /// The destination declares legitimate interest.
    LegitimateInterest,
    /// The event carries no personal data.
    NoPersonalData,
    /// The delivery would be skipped: the purposes not granted (empty when
    /// the destination declares neither purposes nor a legal basis).
    Skipped {
        missing: Vec<String>,
        reason: String,
    },
}

/// What one routed destination would receive.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationSim {
    pub name: String,
    pub connector: &'static str,
    /// The matched routes that send here.
    pub routes: Vec<String>,
    pub consent: ConsentDecision,
    /// Why the connector would skip it without sending (no phone for SMS …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The payload as mapped (None when skipped or not previewable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// The mapping error, naming the field (the delivery would dead-letter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping_error: Option<String>,
    /// The connector cannot show its payload before talking to the vendor.
    pub preview_available: bool,
}

/// The golden contact the event would merge into.
#[derive(Debug, Clone, Serialize)]
pub struct ContactSim {
    /// A stored contact was found (by email or the secondary match).
    pub existing: bool,
    /// Why no stored contact was used: not consulted, unreadable, or an
    /// ambiguous secondary match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The record after the merge (None: the event identifies nobody).
    pub merged: Option<Contact>,
}

/// Everything `simulate` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    /// The event as normalised and enriched.
    pub event: Event,
    pub contact: ContactSim,
    /// Every route's decision with its reason.
    pub routes: Vec<RouteDecision>,
    /// Each destination the event would go to, in route order.
    pub destinations: Vec<DestinationSim>,
    /// The lead score (`[scoring]`); None: scoring is not configured. Filled
    /// by one call to the scoring engine.
    pub score: Option<Value>,
    /// The owner routing decision with its reason (`[[owners]]`,
    /// `[routing]`); None: owner routing is not configured. Filled by one
    /// call to the owner router.
    pub owner: Option<Value>,
}

impl Simulation {
    /// Whether any destination would dead-letter on a mapping error.
    pub fn has_mapping_errors(&self) -> bool {
        self.destinations.iter().any(|d| d.mapping_error.is_some())
    }
}

/// The input: a form submission or an event file's JSON.
pub enum Input<'a> {
    Form { form: &'a str, data: Bytes },
    Event(&'a [u8]),
}

/// Compiles the routes of `config` (only enabled destinations receive).
pub fn routes(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RouteTable, SimError> {
    RouteTable::compile(&config.routes, delivery::enabled_destinations(config, env)).map_err(|ps| {
        SimError::Config(
            ps.into_iter()
                .map(|(p, m)| format!("{p}: {m}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })
}

/// Builds the event the input would become, refusing it as the API would.
pub async fn build_event(
    config: &Config,
    routes: &RouteTable,
    input: Input<'_>,
    now: DateTime<Utc>,
) -> Result<Event, SimError> {
    match input {
        Input::Form { form, data } => {
            let sub = FormSubmission {
                form,
                content_type: Some("application/json"),
                body: data,
                idempotency_header: None,
                client_ip: None,
                context: RequestContext {
                    query: None,
                    referer_header: None,
                    user_agent: None,
                },
            };
            let item = ingest::build_form_item(config, routes, None, sub)
                .await
                .map_err(SimError::Rejected)?;
            Ok(item.event)
        }
        Input::Event(bytes) => {
            ingest::api::parse_one(config, bytes, ingest::api::OriginRule::Declared, now)
                .map_err(SimError::Rejected)
        }
    }
}

/// What the simulation computes once the event and any stored contact are
/// known. Pure apart from building connectors (no network, no store).
pub fn simulate(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    routes: &RouteTable,
    mut event: Event,
    stored: StoredContact,
    now: DateTime<Utc>,
) -> Result<Simulation, SimError> {
    let rules = MergeRules::compile(&config.contacts).map_err(|ps| {
        SimError::Config(
            ps.into_iter()
                .map(|(p, m)| format!("{p}: {m}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let (existing, note) = match stored {
        StoredContact::Found(c) => (Some(*c), None),
        StoredContact::NotFound => (None, None),
        StoredContact::NotRead(why) => (None, Some(format!("not read: {why}"))),
        StoredContact::Ambiguous(ids) => (
            None,
            Some(format!(
                "ambiguous: {} stored contacts match by company domain and name ({}); nothing would be merged and the ambiguity recorded for review",
                ids.len(),
                ids.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ),
    };
    let contact = ContactSim {
        existing: existing.is_some(),
        note,
        merged: if event.spam {
            None
        } else {
            contacts::merge_with(&rules, existing, &event, now)
        },
    };
    let decisions = if event.spam {
        Vec::new()
    } else {
        routes.decide(&event)
    };
    if !event.spam {
        event.playbooks = routes.route(&event).playbooks;
    }
    let built = delivery::build_destinations(config, env).map_err(|ps| {
        SimError::Config(
            ps.iter()
                .map(|p| p.render("config"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let owners: Vec<Arc<crate::pipeline::OwnerConfig>> =
        config.owners.iter().cloned().map(Arc::new).collect();
    let mut order: Vec<(String, Vec<String>)> = Vec::new();
    for d in decisions.iter().filter(|d| d.matched) {
        for dest in &d.destinations {
            match order.iter_mut().find(|(n, _)| n == dest) {
                Some((_, via)) => via.push(d.route.clone()),
                None => order.push((dest.clone(), vec![d.route.clone()])),
            }
        }
    }
    let destinations = order
        .into_iter()
        .filter_map(|(name, via)| {
            let dest = built.iter().find(|d| d.name == name)?;
            let owner = crate::connectors::owner_of(&owners, contact.merged.as_ref());
            Some(destination(
                dest,
                via,
                &event,
                contact.merged.as_ref(),
                owner,
                now,
            ))
        })
        .collect();
    Ok(Simulation {
        event,
        contact,
        routes: decisions,
        destinations,
        score: None,
        owner: None,
    })
}

/// Fills the score and the owner sections: the contact as ingest would
/// leave it (scored by the same hook, in memory only) and, when it is or
/// becomes sales-qualified, the owner routing would choose. `view` is the
/// routing state read from the store (round-robin turns, open leads,
/// account owners); without it turns start at 0 and nobody is at capacity.
pub fn fill_pipeline(
    config: &Config,
    sim: &mut Simulation,
    view: Result<RoutingView, String>,
    now: DateTime<Utc>,
) {
    let Some(hook) = LeadHook::from_config(config) else {
        return;
    };
    let Some(mut c) = sim.contact.merged.clone() else {
        sim.score = Some(json!({
            "note": "the event identifies nobody (no email, no unique company match): nothing is scored"
        }));
        return;
    };
    let before = c.lead.stage;
    let effects = hook.on_merge(&mut c, &sim.event, now);
    let result = score::current(&config.scoring, &c, now);
    let handoff = effects
        .timers
        .iter()
        .any(|t| t.kind == crate::pipeline::HANDOFF_TIMER);
    sim.score = Some(json!({
        "score": result.score,
        "stage": c.lead.stage,
        "stage_before": before,
        "contributions": result.contributions,
        "handoff": handoff,
    }));
    if config.owners.is_empty() {
        return;
    }
    sim.owner = Some(match &c.lead.owner {
        Some(a) if !handoff => json!({
            "owner": a.owner,
            "reason": format!("already assigned: {}", a.reason),
        }),
        _ if !handoff => json!({
            "owner": null,
            "reason": format!(
                "not assigned: the contact is {}; an owner is chosen when it becomes sql",
                c.lead.stage.as_str()
            ),
        }),
        _ => {
            let (view, note) = match view {
                Ok(v) => (v, None),
                Err(why) => (
                    RoutingView::default(),
                    Some(format!(
                        "routing state not read ({why}): turns start at 0, no open leads, no account owners"
                    )),
                ),
            };
            let d = owners::decide(&config.owners, &config.routing, &c, &view, now);
            json!({"owner": d.owner, "queue": d.queue, "reason": d.reason, "note": note})
        }
    });
}

/// What the store said about the person.
pub enum StoredContact {
    Found(Box<Contact>),
    NotFound,
    /// The store was not consulted or could not be read (why).
    NotRead(String),
    /// An event without an email matches several stored contacts by
    /// company domain and name (their ids).
    Ambiguous(Vec<uuid::Uuid>),
}

fn destination(
    dest: &Destination,
    routes: Vec<String>,
    event: &Event,
    contact: Option<&Contact>,
    owner: Option<Arc<crate::pipeline::OwnerConfig>>,
    now: DateTime<Utc>,
) -> DestinationSim {
    let consent = consent_decision(dest, event, contact);
    let mut sim = DestinationSim {
        name: dest.name.clone(),
        connector: dest.connector_kind,
        routes,
        consent,
        skipped: None,
        payload: None,
        mapping_error: None,
        preview_available: true,
    };
    if matches!(sim.consent, ConsentDecision::Skipped { .. }) {
        return sim;
    }
    let job = DeliveryJob {
        delivery: Delivery {
            id: new_id(),
            event_id: event.id,
            destination: dest.name.clone(),
            contact_key: match contact.and_then(|c| c.data.email.as_ref()) {
                Some(e) => format!("email:{}", e.as_str()),
                None => event.contact_key(),
            },
            state: DeliveryState::Pending,
            attempts: 0,
            failures: 0,
            created_at: now,
            updated_at: now,
            next_attempt_at: Some(now),
            lease_id: None,
            last_status: None,
            last_error: None,
            reason: None,
            finished_at: None,
            replay_of: None,
            replayed_by: None,
            overrides: None,
        },
        event: event.clone(),
        contact: contact.cloned(),
        remote_ids: Vec::new(),
        owner,
    };
    if let Some(reason) = dest.connector.skip_reason(&job) {
        sim.skipped = Some(reason);
        return sim;
    }
    match dest.connector.preview(&job) {
        Some(Ok(payload)) => sim.payload = Some(payload),
        Some(Err(e)) => sim.mapping_error = Some(e),
        None => sim.preview_available = false,
    }
    sim
}

/// The consent gate's answer, with the missing purposes by name.
fn consent_decision(
    dest: &Destination,
    event: &Event,
    contact: Option<&Contact>,
) -> ConsentDecision {
    if dest.legal_basis == Some(LegalBasis::LegitimateInterest) {
        return ConsentDecision::LegitimateInterest;
    }
    match consent::check(dest.legal_basis, &dest.purposes, event, contact) {
        Ok(()) if event.contact.is_empty() && contact.is_none() => ConsentDecision::NoPersonalData,
        Ok(()) => ConsentDecision::Allowed {
            purposes: dest
                .purposes
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
        },
        Err(reason) => ConsentDecision::Skipped {
            // The gate itself, one purpose at a time, names what is missing.
            missing: dest
                .purposes
                .iter()
                .filter(|p| {
                    consent::check(dest.legal_basis, std::slice::from_ref(*p), event, contact)
                        .is_err()
                })
                .map(|p| p.as_str().to_string())
                .collect(),
            reason,
        },
    }
}
