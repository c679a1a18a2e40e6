//! The rollup pass: reads the events stored since its cursor, in id (=
//! receipt) order and in batches, and turns them into touchpoints, lead
//! milestones, deal states with their stage history and, when a deal is
//! won, its attribution credits under every model — one store transaction
//! per batch. Ingest never waits on it: it runs in the background every
//! `reports.rollup_interval` and before a report answers.
//!
//! Events younger than `reports.rollup_lag` are left for the next pass: ids
//! are assigned before commit, so a transaction that commits late could
//! otherwise hold an id below the cursor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, DurationRound, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::attribution::{self, Journey, Window};
use super::config::ReportsConfig;
use super::deal;
use super::kpi::{self, KpiConfig};
use super::writeback::{self, Writeback};
use crate::store::*;

/// What one catch-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub events: u64,
    pub batches: u64,
}

/// Serialises rollup batches in this process (the background loop and
/// report requests); across nodes the store's cursor check does.
static PASS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The attribution window of a configuration.
pub fn window(cfg: &ReportsConfig) -> Window {
    let d = |h: crate::config::HumanDuration| {
        Duration::from_std(h.get()).unwrap_or(Duration::days(36_500))
    };
    Window {
        lookback: d(cfg.lookback),
        half_life: d(cfg.half_life),
    }
}

/// Rolls up every event older than the lag. Returns how many were read.
pub async fn catch_up(
    store: &dyn Store,
    cfg: &ReportsConfig,
    now: DateTime<Utc>,
) -> StoreResult<PassReport> {
    pass(store, cfg, now, false).await
}

/// The longest pause between two batches of a background pass.
const MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// [`catch_up`]; when `paced` (the background pass), it pauses after each
/// full batch for as long as the batch took (at most [`MAX_PAUSE`]), so a
/// backlog never takes more than about half a core and ingest's group
/// commits get the writer between rollup transactions. Rollups still read
/// several times faster than ingest can store. One batch runs at a time
/// in this process; a report's own catch-up takes its turn between the
/// background pass's batches.
async fn pass(
    store: &dyn Store,
    cfg: &ReportsConfig,
    now: DateTime<Utc>,
    paced: bool,
) -> StoreResult<PassReport> {
    let lag = Duration::from_std(cfg.rollup_lag.get()).unwrap_or_default();
    let until = uuid_v7_floor_id(now - lag);
    let mut report = PassReport::default();
    loop {
        let one = PASS.lock().await;
        // After the lock: the pause matches the batch's own work, not the
        // time spent waiting for a report's catch-up.
        let batch_started = Instant::now();
        let from = store
            .kv_get(ROLLUP_CURSOR_KEY)
            .await?
            .and_then(|s| Uuid::parse_str(&s).ok());
        let events = store
            .rollup_events(from, until, cfg.rollup_batch.max(1))
            .await?;
        let Some(last) = events.last().map(|e| e.id) else {
            return Ok(report);
        };
        let n = events.len();
        let (batch, writebacks) = build(store, cfg, from, last, events).await?;
        // Stored first, idempotently: a pass refused below (or a crash)
        // runs again and finds the same events stored.
        writeback::emit(store, cfg, writebacks, now).await?;
        match store.rollup_apply(batch).await {
            Ok(()) => {}
            // Another node rolled this range up first: start again from
            // where it left the cursor.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
        report.events += n as u64;
        report.batches += 1;
        if n < cfg.rollup_batch.max(1) {
            return Ok(report);
        }
        drop(one);
        if paced {
            tokio::time::sleep(batch_started.elapsed().min(MAX_PAUSE)).await;
        }
    }
}

/// Turns a batch of events into what the store writes, and the won deals
/// whose attribution goes back to the CRMs.
async fn build(
    store: &dyn Store,
    cfg: &ReportsConfig,
    from: Option<Uuid>,
    cursor: Uuid,
    mut events: Vec<RollupEvent>,
) -> StoreResult<(RollupBatch, Vec<Writeback>)> {
    let refs = link_activities(store, cfg, &mut events).await?;
    let updates: Vec<Option<deal::DealUpdate>> = events
        .iter()
        .map(|e| {
            (e.event_type == "deal.stage_changed" && !e.spam)
                .then(|| deal::update_of(e))
                .flatten()
        })
        .collect();
    let mut deal_ids: Vec<String> = updates
        .iter()
        .flatten()
        .map(|u| u.deal_id.clone())
        .collect();
    deal_ids.sort_unstable();
    deal_ids.dedup();
    // Lead rows are read only for people with a lead or deal event in the
    // batch, response clocks only for people with an MQL or activity event;
    // stored touches (below) only for people whose first touch or journey
    // the batch needs. Everyone else's events are rolled up without a read.
    let live = |e: &&RollupEvent| !e.spam && e.origin_kind != "system";
    let is_lead = |e: &RollupEvent| LEAD_EVENT_TYPES.contains(&e.event_type.as_str());
    let lead_people = sorted(
        events
            .iter()
            .zip(&updates)
            .filter(|(e, u)| live(e) && (is_lead(e) || u.is_some()))
            .filter_map(|(e, _)| e.contact_id),
    );
    let clocks = sorted(
        events
            .iter()
            .filter(|e| {
                cfg.kpis.mql_events.contains(&e.event_type)
                    || cfg.kpis.activity_events.contains(&e.event_type)
            })
            .filter_map(|e| e.contact_id),
    );
    let ctx = store.rollup_context(lead_people, deal_ids, clocks).await?;
    let stored_deal_contacts: HashMap<&str, Uuid> = ctx
        .deals
        .iter()
        .filter_map(|d| Some((d.deal_id.as_str(), d.contact_id?)))
        .collect();
    let has_lead: BTreeSet<Uuid> = ctx.leads.iter().map(|l| l.contact_id).collect();
    // Journeys: the person of every deal the batch moves (the stored deal's,
    // else the event's), and people whose first lead event is in the batch.
    let journeys = sorted(
        events
            .iter()
            .zip(&updates)
            .filter(|(e, _)| live(e))
            .filter_map(|(e, u)| match u {
                Some(u) => stored_deal_contacts
                    .get(u.deal_id.as_str())
                    .copied()
                    .or(e.contact_id),
                None => e.contact_id.filter(|c| is_lead(e) && !has_lead.contains(c)),
            }),
    );
    drop(stored_deal_contacts);
    let stored_touches = if journeys.is_empty() {
        Vec::new()
    } else {
        store.rollup_touches(journeys.clone()).await?
    };
    let journeys: BTreeSet<Uuid> = journeys.into_iter().collect();

    let mut touches: HashMap<Uuid, Vec<attribution::Touchpoint>> = HashMap::new();
    for t in stored_touches {
        touches
            .entry(t.contact_id)
            .or_default()
            .push(attribution::Touchpoint {
                at: t.at,
                channel: t.channel,
                source: t.source,
                campaign: t.campaign,
            });
    }
    let mut leads: HashMap<Uuid, LeadRow> =
        ctx.leads.into_iter().map(|l| (l.contact_id, l)).collect();
    let mut deals: HashMap<String, DealRow> = ctx
        .deals
        .into_iter()
        .map(|d| (d.deal_id.clone(), d))
        .collect();
    let mut batch = RollupBatch {
        from,
        cursor,
        ..Default::default()
    };
    let mut dirty: Vec<String> = Vec::new();
    let mut writebacks: Vec<Writeback> = Vec::new();
    let window = window(cfg);
    let mut kpis = KpiRollup::new(ctx.responses);

    for (e, update) in events.iter().zip(updates) {
        if e.spam {
            continue;
        }
        kpis.add(e, &cfg.kpis);
        if e.origin_kind == "system" {
            continue;
        }
        if let Some(cid) = e.contact_id {
            let a = &e.doc.attribution;
            if attribution::has_signal(a) || e.origin_kind == "form" {
                let t = attribution::touchpoint(a, e.occurred_at);
                batch.touches.push(TouchRow {
                    event_id: e.id,
                    contact_id: cid,
                    at: t.at,
                    channel: t.channel.clone(),
                    source: t.source.clone(),
                    campaign: t.campaign.clone(),
                });
                if journeys.contains(&cid) {
                    touches.entry(cid).or_default().push(t);
                }
            }
            if LEAD_EVENT_TYPES.contains(&e.event_type.as_str()) && !leads.contains_key(&cid) {
                let first = touches
                    .get(&cid)
                    .and_then(|ts| ts.iter().min_by_key(|t| t.at))
                    .cloned()
                    .unwrap_or_else(|| attribution::touchpoint(&Default::default(), e.occurred_at));
                let row = LeadRow {
                    contact_id: cid,
                    first_at: e.occurred_at,
                    origin: format!("{}:{}", e.origin_kind, e.origin_name),
                    channel: first.channel,
                    source: first.source,
                    campaign: first.campaign,
                };
                batch.leads.push(row.clone());
                leads.insert(cid, row);
            }
        }
        let Some(u) = update else { continue };
        let existing = deals.remove(&u.deal_id);
        let is_new = existing.is_none();
        let was_won = existing.as_ref().is_some_and(|d| d.status == "won");
        let (mut d, won_now) = deal::apply(existing, &u, e.contact_id, cfg);
        if (is_new || d.channel.is_none())
            && let Some(l) = d.contact_id.and_then(|cid| leads.get(&cid))
        {
            d.origin = Some(l.origin.clone());
            d.channel = Some(l.channel.clone());
            d.source = Some(l.source.clone());
            d.campaign = Some(l.campaign.clone());
        }
        if won_now {
            let credits = d
                .contact_id
                .map(|cid| {
                    let journey = Journey {
                        touches: touches.get(&cid).cloned().unwrap_or_default(),
                        lead_created_at: leads.get(&cid).map(|l| l.first_at),
                        opportunity_created_at: Some(d.created_at),
                    };
                    let at = d.closed_at.unwrap_or(u.at);
                    let credits: Vec<CreditRow> =
                        attribution::attribute(&journey, at, d.amount.unwrap_or(0.0), window)
                            .into_iter()
                            .map(|c| CreditRow {
                                deal_id: d.deal_id.clone(),
                                model: c.model.as_str().to_string(),
                                channel: c.channel,
                                source: c.source,
                                campaign: c.campaign,
                                credit: c.credit,
                                revenue: c.revenue,
                                closed_at: at,
                            })
                            .collect();
                    if !cfg.writeback.destinations.is_empty() && !credits.is_empty() {
                        writebacks.push(Writeback {
                            deal: d.clone(),
                            contact_id: cid,
                            touches: attribution::in_window(&journey, at, window),
                            credits: credits.clone(),
                        });
                    }
                    credits
                })
                .unwrap_or_default();
            set_credits(&mut batch.credits, &d.deal_id, credits);
        } else if was_won && d.status != "won" {
            // Reopened or lost after a win: the revenue is no longer there.
            set_credits(&mut batch.credits, &d.deal_id, Vec::new());
        }
        if !dirty.contains(&d.deal_id) {
            dirty.push(d.deal_id.clone());
        }
        deals.insert(d.deal_id.clone(), d);
    }
    batch.deals = dirty.iter().filter_map(|id| deals.remove(id)).collect();
    kpis.finish(&mut batch);
    batch.refs = refs;
    Ok((batch, writebacks))
}

/// `system:object:id` of the CRM people (person, contact, lead) an event
/// names.
fn person_refs(e: &RollupEvent) -> impl Iterator<Item = String> + '_ {
    e.doc
        .vendor_refs
        .iter()
        .filter(|r| matches!(r.object.as_str(), "person" | "contact" | "lead") && !r.id.is_empty())
        .map(|r| format!("{}:{}:{}", r.system, r.object, r.id))
}

/// Learns which contact each CRM person reference belongs to (from events
/// that carry both), and gives a sales activity that names only the CRM's
/// id (a Pipedrive activity, a Salesforce Task) the contact it is about.
/// Returns the references learnt in this batch.
async fn link_activities(
    store: &dyn Store,
    cfg: &ReportsConfig,
    events: &mut [RollupEvent],
) -> StoreResult<Vec<(String, Uuid)>> {
    let is_activity = |e: &RollupEvent| cfg.kpis.activity_events.contains(&e.event_type);
    let wanted: Vec<String> = events
        .iter()
        .filter(|e| e.contact_id.is_none() && is_activity(e))
        .flat_map(person_refs)
        .collect();
    let mut known: HashMap<String, Uuid> = if wanted.is_empty() {
        HashMap::new()
    } else {
        store
            .report_ref_contacts(wanted)
            .await?
            .into_iter()
            .collect()
    };
    let mut learnt: BTreeMap<String, Uuid> = BTreeMap::new();
    for e in events.iter_mut() {
        if e.spam {
            continue;
        }
        match e.contact_id {
            Some(cid) => {
                for r in person_refs(e).collect::<Vec<_>>() {
                    known.insert(r.clone(), cid);
                    learnt.insert(r, cid);
                }
            }
            None if is_activity(e) => {
                let found = person_refs(e).find_map(|r| known.get(&r).copied());
                e.contact_id = found;
            }
            None => {}
        }
    }
    Ok(learnt.into_iter().collect())
}

/// The KPI side of a batch: response clocks, handoffs, and the hourly
/// data-quality counters.
struct KpiRollup {
    responses: HashMap<Uuid, ResponseRow>,
    dirty: BTreeSet<Uuid>,
    handoffs: Vec<HandoffRow>,
    counts: BTreeMap<(&'static str, DateTime<Utc>), (u64, u64)>,
}

impl KpiRollup {
    fn new(stored: Vec<ResponseRow>) -> Self {
        Self {
            responses: stored.into_iter().map(|r| (r.contact_id, r)).collect(),
            dirty: BTreeSet::new(),
            handoffs: Vec::new(),
            counts: BTreeMap::new(),
        }
    }

    fn add(&mut self, e: &RollupEvent, cfg: &KpiConfig) {
        let t = e.event_type.as_str();
        if let Some(cid) = e.contact_id {
            if cfg.mql_events.iter().any(|m| m == t) && !self.responses.contains_key(&cid) {
                self.responses.insert(
                    cid,
                    ResponseRow {
                        contact_id: cid,
                        mql_at: e.occurred_at,
                        responded_at: None,
                    },
                );
                self.touch(cid);
            } else if cfg.activity_events.iter().any(|a| a == t)
                && let Some(r) = self.responses.get_mut(&cid)
                && r.responded_at.is_none()
                && e.occurred_at >= r.mql_at
            {
                r.responded_at = Some(e.occurred_at);
                self.touch(cid);
            }
            if t == crate::pipeline::handoff::QUALIFIED {
                self.handoffs.push(HandoffRow {
                    event_id: e.id,
                    contact_id: cid,
                    at: e.occurred_at,
                    owner: e.doc.data.get("owner").is_some_and(|o| !o.is_null()),
                });
            }
        }
        if e.origin_kind != "system" && LEAD_EVENT_TYPES.contains(&t) {
            let (complete, valid) = kpi::quality(&e.doc.contact, &cfg.required_fields);
            // Counted by receipt hour (the id's time), so a backfill of old
            // leads is judged when it arrives.
            let received =
                e.id.get_timestamp()
                    .and_then(|ts| {
                        let (secs, _) = ts.to_unix();
                        DateTime::from_timestamp(secs as i64, 0)
                    })
                    .unwrap_or(e.occurred_at);
            let hour = received
                .duration_trunc(Duration::hours(1))
                .unwrap_or(received);
            for (name, ok) in [
                (kpi::DATA_QUALITY, complete && valid),
                (kpi::DATA_QUALITY_COMPLETE, complete),
                (kpi::DATA_QUALITY_VALID, valid),
            ] {
                let c = self.counts.entry((name, hour)).or_default();
                c.0 += u64::from(ok);
                c.1 += 1;
            }
        }
    }

    fn touch(&mut self, cid: Uuid) {
        self.dirty.insert(cid);
    }

    fn finish(mut self, batch: &mut RollupBatch) {
        batch.responses = self
            .dirty
            .iter()
            .filter_map(|c| self.responses.remove(c))
            .collect();
        batch.handoffs = self.handoffs;
        batch.counts = self
            .counts
            .into_iter()
            .map(|((kpi, hour), (num, den))| KpiCount {
                kpi: kpi.to_string(),
                hour,
                num,
                den,
            })
            .collect();
    }
}

/// Distinct ids, sorted.
fn sorted(ids: impl Iterator<Item = Uuid>) -> Vec<Uuid> {
    let mut v: Vec<Uuid> = ids.collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn set_credits(all: &mut Vec<(String, Vec<CreditRow>)>, deal_id: &str, credits: Vec<CreditRow>) {
    match all.iter_mut().find(|(id, _)| id == deal_id) {
        Some(slot) => slot.1 = credits,
        None => all.push((deal_id.to_string(), credits)),
    }
}

/// Runs [`catch_up`] every `reports.rollup_interval` until shutdown.
pub async fn run(store: Arc<dyn Store>, cfg: ReportsConfig, shutdown: CancellationToken) {
    let every = cfg
        .rollup_interval
        .get()
        .max(std::time::Duration::from_millis(50));
    loop {
        let started = Instant::now();
        match pass(store.as_ref(), &cfg, Utc::now(), true).await {
            Ok(r) if r.events > 0 => tracing::debug!(
                events = r.events,
                batches = r.batches,
                ms = started.elapsed().as_millis() as u64,
                "report rollups caught up"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "report rollup pass failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
