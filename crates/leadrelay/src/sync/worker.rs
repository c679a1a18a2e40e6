//! One sync's rounds: poll both systems from their cursors, decide each
//! changed record, save it (compare-and-set, so a person's decision made
//! meanwhile is never overwritten), write, then move the cursors on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::engine::{self, Observed, RecordState, Val};
use super::{Page, RemoteRecord, SYNC_CONFLICT, SyncError, SyncSystem, WriteOp};
use crate::config::sync::{GOLDEN, Side, SyncConfig, SyncObject};
use crate::config::{Config, Problem, Rate};
use crate::connectors::BuildContext;
use crate::connectors::pace::{self, Ceiling, DailyQuota, Hold, Pacer, RateGate};
use crate::store::{ReviewItem, ReviewStatus, Store, StoreError};

/// How far back each poll reaches before its cursor: vendor search indexes
/// lag writes, and second-precision timestamps tie.
const OVERLAP: Duration = Duration::from_secs(30);
/// Pages read per system and round (the rest next round).
const MAX_PAGES: usize = 50;

/// A sync's figures, kept in the store after every round.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub sync: String,
    pub a: String,
    pub b: String,
    /// Records the sync has decided at least once.
    pub records: u64,
    /// Changed records seen in the last round.
    pub last_round_records: u64,
    pub last_round_at: Option<DateTime<Utc>>,
    /// Poll cursors (modification time reached), per system.
    pub cursor_a: Option<DateTime<Utc>>,
    pub cursor_b: Option<DateTime<Utc>>,
    /// Totals since the sync was first run.
    pub changes: u64,
    /// Record writes into each system (one request each in Pipedrive, up
    /// to 100 a request in HubSpot).
    pub writes_a: u64,
    pub writes_b: u64,
    /// Field values those writes carried.
    pub values_written: u64,
    pub echoes_dropped: u64,
    pub restores: u64,
    pub conflicts_settled: u64,
    pub conflicts_for_review: u64,
    /// Writes waiting to be retried (failed in the last round).
    pub pending: u64,
    /// Sync conflicts of this sync open in the review queue (counted when
    /// the figures are read).
    #[serde(default)]
    pub conflicts_waiting: u64,
    /// Records neither waiting for a retried write nor held by an open
    /// conflict: `records` less those (counted when the figures are read).
    #[serde(default)]
    pub in_sync: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Records of the last round left out because another record of the
    /// same system already holds their match value (duplicates in one
    /// CRM are not guessed between; link or merge them there).
    #[serde(default)]
    pub duplicates: u64,
    /// Writes into a CRM held back in the last round because the golden
    /// record may not share the person with it (no consent for the
    /// destination's purposes, or erased); written once it may.
    #[serde(default)]
    pub withheld: u64,
}

/// How a backfill ended.
#[derive(Debug, Clone, PartialEq)]
pub enum BackfillEnd {
    /// Every page of both systems was read (or an error stopped it: the
    /// health's `last_error` says which).
    Done,
    /// The day's share of `system`'s daily API quota is spent: run the
    /// backfill again after `until` to go on.
    QuotaSpent {
        system: String,
        spent: u64,
        budget: u64,
        until: DateTime<Utc>,
    },
}

/// A backfill's spending of one system's daily quota, per UTC day.
#[derive(Debug, Default, Serialize, Deserialize)]
struct QuotaDay {
    day: String,
    /// Requests (Pipedrive: tokens) the backfill spent that day.
    spent: u64,
    /// The day's quota: as the vendor reports it, or (only what is left
    /// known) what was left when the backfill's day began.
    quota: Option<u64>,
    /// `quota` is the vendor's own figure.
    #[serde(default)]
    reported: bool,
}

fn key(sync: &str, kind: &str, rest: &str) -> String {
    format!("sync:{sync}:{kind}:{rest}")
}

/// Which record of the sync a polled record is.
enum Resolved {
    Record(String),
    /// A contact without an email and without a link.
    Unmatched,
    /// Another record of the same system holds the match value.
    Duplicate,
}

/// A match value as compared across systems: trimmed, lower-case,
/// without a URL scheme, `www.` or trailing `/` (a domain in one CRM
/// matches a website in the other).
pub fn normalise_key(v: &str) -> Option<String> {
    let mut s = v.trim().to_lowercase();
    for scheme in ["https://", "http://"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            s = rest.to_string();
        }
    }
    if let Some(rest) = s.strip_prefix("www.") {
        s = rest.to_string();
    }
    while s.ends_with('/') {
        s.pop();
    }
    (!s.is_empty()).then_some(s)
}

/// The record a sync conflict holds (`email` in items of older versions).
fn record_of(item: &ReviewItem) -> Option<&str> {
    item.details["record"]
        .as_str()
        .or_else(|| item.details["email"].as_str())
}

/// A running sync.
pub struct SyncRunner {
    name: String,
    cfg: SyncConfig,
    dest: [String; 2],
    systems: [Arc<dyn SyncSystem>; 2],
    pacers: [Pacer; 2],
    store: Arc<dyn Store>,
}

/// The two elements of a two-element vector.
fn two<T>(v: Vec<T>) -> [T; 2] {
    let mut it = v.into_iter();
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => [a, b],
        _ => unreachable!("a sync has two systems"),
    }
}

fn scaled(rate: Option<Rate>, share: f64) -> Option<Rate> {
    rate.map(|r| Rate {
        count: ((f64::from(r.count) * share).floor() as u32).max(1),
        period: r.period,
    })
}

/// A pacer for background work (a sync, a HubSpot read) on `share` of
/// destination `name`'s rate limit (its own, or its connector's default).
pub fn share_pacer(
    name: &str,
    d: &crate::config::DestinationConfig,
    share: f64,
    store: &Arc<dyn Store>,
) -> Pacer {
    let rate = match d.rate_limit {
        Some(r) => r.rate(),
        None => crate::connectors::kind(&d.connector).and_then(|k| k.defaults.rate_limit),
    };
    let gate = Arc::new(RateGate::new(name, scaled(rate, share), store));
    Pacer::new(&gate, &Arc::new(Hold::default()))
}

impl SyncRunner {
    /// Builds `[syncs.NAME]` against the configured destinations.
    pub fn build(
        name: &str,
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
        store: Arc<dyn Store>,
    ) -> Result<Self, Vec<Problem>> {
        let cfg = config
            .syncs
            .get(name)
            .ok_or_else(|| vec![Problem::error("syncs", format!("no sync named {name:?}"))])?
            .clone();
        let mut systems = Vec::new();
        let mut pacers = Vec::new();
        for (side, dest) in [(Side::A, &cfg.a), (Side::B, &cfg.b)] {
            if dest == GOLDEN {
                let peer = if side == Side::A { &cfg.b } else { &cfg.a };
                systems.push(super::golden::system(name, peer, config, store.clone()));
                let gate = Arc::new(RateGate::new(dest, None, &store));
                pacers.push(Pacer::new(&gate, &Arc::new(Hold::default())));
                continue;
            }
            let spec = cfg.spec(side);
            let d = config.destinations.get(dest).ok_or_else(|| {
                vec![Problem::error(
                    format!("syncs.{name}"),
                    format!("no destination {dest:?}"),
                )]
            })?;
            let ctx = BuildContext {
                destination: dest,
                settings: &d.settings,
                env,
                timeout: d.timeout.unwrap_or(config.delivery.timeout).get(),
                public_url: "",
            };
            let with_path = |ps: Vec<Problem>| {
                ps.into_iter()
                    .map(|mut p| {
                        p.path = format!("destinations.{dest}.{}", p.path);
                        p
                    })
                    .collect::<Vec<_>>()
            };
            let system =
                match d.connector.as_str() {
                    "hubspot" => {
                        crate::connectors::hubspot::sync::system(&ctx, &spec).map_err(with_path)?
                    }
                    "pipedrive" => crate::connectors::pipedrive::sync::system(&ctx, &spec)
                        .map_err(with_path)?,
                    "salesforce" => crate::connectors::salesforce::sync::system(&ctx, &spec)
                        .map_err(with_path)?,
                    other => {
                        return Err(vec![Problem::error(
                            format!("syncs.{name}"),
                            format!("the {other} connector cannot be synced"),
                        )]);
                    }
                };
            systems.push(system);
            pacers.push(share_pacer(dest, d, cfg.rate_share, &store));
        }
        Ok(Self {
            name: name.to_string(),
            dest: [cfg.a.clone(), cfg.b.clone()],
            cfg,
            systems: two(systems),
            pacers: two(pacers),
            store,
        })
    }

    fn vendor_fields(&self, side: Side) -> Vec<String> {
        self.cfg
            .fields
            .values()
            .map(|f| match side {
                Side::A => f.a.clone(),
                Side::B => f.b.clone(),
            })
            .collect()
    }

    async fn health(&self) -> Health {
        let mut h = match self.store.kv_get(&key(&self.name, "health", "")).await {
            Ok(Some(v)) => serde_json::from_str(&v).unwrap_or_default(),
            _ => Health::default(),
        };
        h.sync = self.name.clone();
        h.a = self.dest[0].clone();
        h.b = self.dest[1].clone();
        h
    }

    async fn cursor(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .store
            .kv_get(&key(&self.name, "cursor", name))
            .await?
            .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    /// Every record changed in `side` since the cursor (less the
    /// overlap), up to [`MAX_PAGES`] pages: the records, the modification
    /// time reached, and whether more pages are left.
    async fn poll(
        &self,
        side: Side,
        cursor_name: &str,
    ) -> Result<(Vec<RemoteRecord>, Option<DateTime<Utc>>, bool), SyncError> {
        let i = side as usize;
        let cursor = self.cursor(cursor_name).await.map_err(|e| {
            SyncError(crate::connectors::Outcome::retry(
                crate::connectors::ErrorClass::Internal,
                e.to_string(),
            ))
        })?;
        let since = cursor.map(|c| c - chrono::Duration::from_std(OVERLAP).unwrap_or_default());
        let fields = self.vendor_fields(side);
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        let mut reached = cursor;
        let mut more = false;
        for n in 0..MAX_PAGES {
            let Page { records, next } = pace::scope(
                Some(self.pacers[i].clone()),
                self.systems[i].changes(since, page.as_deref(), &fields),
            )
            .await?;
            for r in &records {
                let at = r.cursor_at.unwrap_or(r.modified_at);
                reached = Some(reached.map_or(at, |c| c.max(at)));
            }
            out.extend(records);
            match next {
                Some(p) => {
                    more = n + 1 == MAX_PAGES;
                    page = Some(p);
                }
                None => break,
            }
        }
        Ok((out, reached, more))
    }

    /// One round from the sync's cursors; returns the health figures.
    pub async fn round(&self) -> Health {
        self.round_from(["a", "b"]).await.0
    }

    /// Pulls every existing record of both systems (its own cursors, from
    /// the beginning), round after round until no pages are left, calling
    /// `progress` with the records decided in each round. Resumable: the
    /// backfill cursors are saved after every round.
    ///
    /// Each system's requests are counted against `quota_share` of the
    /// daily API quota its vendor reports, per UTC day and in the store
    /// (so a restarted backfill knows what the day has spent). Once a
    /// system's share is spent its pacer sends nothing more (the round's
    /// remaining requests fail as under a hold and are tried again) and
    /// the backfill ends with [`BackfillEnd::QuotaSpent`]; run again the
    /// next day, it goes on from its cursors.
    pub async fn backfill(&self, progress: impl FnMut(u64)) -> (Health, BackfillEnd) {
        self.backfill_sharing(self.cfg.backfill_quota_share, progress)
            .await
    }

    /// [`SyncRunner::backfill`] under another share of the daily quotas
    /// than the sync's `backfill_quota_share`.
    pub async fn backfill_sharing(
        &self,
        quota_share: f64,
        mut progress: impl FnMut(u64),
    ) -> (Health, BackfillEnd) {
        let today = Utc::now().date_naive().to_string();
        let mut days = [QuotaDay::default(), QuotaDay::default()];
        for side in [Side::A, Side::B] {
            let i = side as usize;
            days[i] = match self.store.kv_get(&self.quota_key(side)).await {
                Ok(Some(v)) => serde_json::from_str(&v).unwrap_or_default(),
                _ => QuotaDay::default(),
            };
            if days[i].day != today {
                days[i] = QuotaDay {
                    day: today.clone(),
                    ..QuotaDay::default()
                };
            }
            self.pacers[i].set_ceiling(Some(Ceiling {
                share: quota_share,
                spent_before: days[i].spent,
                sent_at: self.pacers[i].sent(),
                base: days[i].quota.filter(|_| !days[i].reported),
            }));
        }
        let result = loop {
            // What the store knows already may end it without a request.
            if let Some(end) = self.share_spent(quota_share, &days) {
                break (self.health().await, end);
            }
            let refused = [0, 1].map(|i| self.pacers[i].refused());
            let (h, more) = self.round_from(["backfill_a", "backfill_b"]).await;
            for side in [Side::A, Side::B] {
                let i = side as usize;
                let p = &self.pacers[i];
                if let Some((spent, _)) = p.spending() {
                    days[i].spent = spent;
                }
                match p.daily_quota() {
                    Some(DailyQuota { limit: Some(l), .. }) => {
                        days[i].quota = Some(l);
                        days[i].reported = true;
                    }
                    _ => days[i].quota = days[i].quota.or(p.ceiling_base()),
                }
                if let Ok(v) = serde_json::to_string(&days[i]) {
                    let _ = self.store.kv_set(&self.quota_key(side), &v).await;
                }
            }
            progress(h.last_round_records);
            let cut = (0..2).any(|i| self.pacers[i].refused() > refused[i]);
            if cut && let Some(end) = self.share_spent(quota_share, &days) {
                break (h, end);
            }
            if !more || h.last_error.is_some() && h.last_round_records == 0 {
                break (h, BackfillEnd::Done);
            }
        };
        for p in &self.pacers {
            p.set_ceiling(None);
        }
        result
    }

    fn quota_key(&self, side: Side) -> String {
        key(&self.name, "backfill_quota", side.as_str())
    }

    /// The first system whose day's share is spent, by the days' figures.
    fn share_spent(&self, share: f64, days: &[QuotaDay; 2]) -> Option<BackfillEnd> {
        let now = Utc::now();
        let until = (now.date_naive() + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or(now);
        (0..2).find_map(|i| {
            let budget = (share * days[i].quota? as f64).floor() as u64;
            (days[i].spent >= budget).then(|| BackfillEnd::QuotaSpent {
                system: self.dest[i].clone(),
                spent: days[i].spent,
                budget,
                until,
            })
        })
    }

    async fn round_from(&self, cursors: [&str; 2]) -> (Health, bool) {
        let mut more_left = false;
        let mut h = self.health().await;
        h.last_error = None;
        let now = Utc::now();
        let mut seen: [BTreeMap<String, Observed>; 2] = [BTreeMap::new(), BTreeMap::new()];
        // Per record: the match value each system showed (what a record
        // created in the other system gets).
        let mut keys: BTreeMap<String, [Option<String>; 2]> = BTreeMap::new();
        let mut reached = [None, None];
        h.duplicates = 0;
        h.pending = 0;
        h.withheld = 0;
        for side in [Side::A, Side::B] {
            let i = side as usize;
            let polled = match self.poll(side, cursors[i]).await {
                Ok((mut records, r, more)) => match self.sweep(side, &records, now).await {
                    Ok(swept) => {
                        records.extend(swept);
                        Ok((records, r, more))
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match polled {
                Ok((records, r, more)) => {
                    reached[i] = r;
                    more_left |= more;
                    for rec in records {
                        let record = match self.resolve(side, &rec).await {
                            Ok(Resolved::Record(k)) => k,
                            Ok(Resolved::Unmatched) => continue,
                            Ok(Resolved::Duplicate) => {
                                h.duplicates += 1;
                                continue;
                            }
                            Err(e) => {
                                h.errors += 1;
                                h.last_error = Some(format!("reading the sync state: {e}"));
                                continue;
                            }
                        };
                        let raw_key = rec.key.clone();
                        let obs = match self.observed(side, rec).await {
                            Ok(obs) => obs,
                            Err(e) => {
                                h.errors += 1;
                                h.last_error = Some(format!("reading the sync state: {e}"));
                                continue;
                            }
                        };
                        let slot = seen[i].entry(record.clone()).or_insert_with(|| obs.clone());
                        if slot.id != obs.id {
                            // Two records of one system with one match
                            // value in one round: the first keeps it.
                            h.duplicates += 1;
                            continue;
                        }
                        if obs.modified_at >= slot.modified_at {
                            *slot = obs;
                        }
                        keys.entry(record).or_default()[i] = raw_key;
                    }
                }
                Err(e) => {
                    h.errors += 1;
                    h.last_error = Some(format!("polling {}: {e}", self.dest[i]));
                    tracing::warn!(sync = %self.name, system = %self.dest[i], error = %e, "sync poll failed");
                }
            }
        }
        let records: BTreeSet<String> = seen.iter().flat_map(|m| m.keys().cloned()).collect();
        h.last_round_records = records.len() as u64;
        let mut ops: [Vec<WriteOp>; 2] = [Vec::new(), Vec::new()];
        for record in &records {
            let observed = [seen[0].get(record), seen[1].get(record)];
            let shown = keys.get(record).cloned().unwrap_or_default();
            match self
                .decide_record(record, observed, shown, now, &mut h)
                .await
            {
                Ok(writes) => {
                    for (i, op) in writes.into_iter().enumerate() {
                        if let Some(op) = op {
                            ops[i].push(op);
                        }
                    }
                }
                Err(e) => {
                    h.errors += 1;
                    h.last_error = Some(format!("saving the sync state: {e}"));
                }
            }
        }
        for side in [Side::A, Side::B] {
            let i = side as usize;
            if ops[i].is_empty() {
                continue;
            }
            self.withhold(side, &mut ops[i], &mut h).await;
            if ops[i].is_empty() {
                continue;
            }
            let results =
                pace::scope(Some(self.pacers[i].clone()), self.systems[i].write(&ops[i])).await;
            for (op, r) in ops[i].iter().zip(results) {
                match r {
                    Ok(id) => {
                        let marker = self
                            .cfg
                            .origin(side)
                            .is_some_and(|o| op.fields.contains_key(o));
                        h.values_written += (op.fields.len() - usize::from(marker)) as u64;
                        if i == 0 {
                            h.writes_a += 1;
                        } else {
                            h.writes_b += 1;
                        }
                        if op.id.is_none() {
                            let _ = self
                                .update(&op.record, |st| st.ids[i] = Some(id.clone()))
                                .await;
                            let _ = self.link(side, &id, &op.record).await;
                        }
                    }
                    Err(e) => {
                        h.errors += 1;
                        h.pending += 1;
                        h.last_error = Some(format!("writing to {}: {e}", self.dest[i]));
                        tracing::warn!(sync = %self.name, system = %self.dest[i], error = %e, "sync write failed");
                        // Forget the write so the next round tries again.
                        let fields: Vec<String> = self.sync_fields(side, &op.fields);
                        let _ = self
                            .update(&op.record, |st| {
                                for f in &fields {
                                    if let Some(fs) = st.fields.get_mut(f) {
                                        fs.ledger[i].pop();
                                    }
                                }
                            })
                            .await;
                    }
                }
            }
        }
        for side in [Side::A, Side::B] {
            let i = side as usize;
            if let Some(t) = reached[i] {
                if cursors[i] != side.as_str() {
                    // A backfill cursor: not the sync's own.
                } else if i == 0 {
                    h.cursor_a = Some(t);
                } else {
                    h.cursor_b = Some(t);
                }
                let _ = self
                    .store
                    .kv_set(&key(&self.name, "cursor", cursors[i]), &t.to_rfc3339())
                    .await;
            }
        }
        h.last_round_at = Some(now);
        if let Ok(v) = serde_json::to_string(&h) {
            let _ = self.store.kv_set(&key(&self.name, "health", ""), &v).await;
        }
        (h, more_left)
    }

    /// Takes out of `ops` (writes into `side`) those the other system
    /// withholds, forgetting them in the ledger so they are written once
    /// they may be (like a failed write, but not an error).
    async fn withhold(&self, side: Side, ops: &mut Vec<WriteOp>, h: &mut Health) {
        let i = side as usize;
        let held = match self.systems[1 - i].withheld(ops).await {
            Ok(held) => held,
            Err(e) => {
                // Nothing is written that may have to be withheld.
                h.errors += 1;
                h.last_error = Some(format!("reading {}: {e}", self.dest[1 - i]));
                vec![true; ops.len()]
            }
        };
        let mut kept = Vec::with_capacity(ops.len());
        for (op, held) in ops.drain(..).zip(held) {
            if !held {
                kept.push(op);
                continue;
            }
            h.withheld += 1;
            let fields: Vec<String> = self.sync_fields(side, &op.fields);
            let _ = self
                .update(&op.record, |st| {
                    for f in &fields {
                        if let Some(fs) = st.fields.get_mut(f) {
                            fs.ledger[i].pop();
                        }
                    }
                })
                .await;
        }
        *ops = kept;
    }

    /// Which record a system's record is: its durable link, else its
    /// match value (a contact's email, another object's normalised key),
    /// else a record of its own (`#a:ID`); contacts without an email are
    /// left out (nothing to match or upsert them by).
    async fn resolve(&self, side: Side, rec: &RemoteRecord) -> Result<Resolved, StoreError> {
        let i = side as usize;
        let link = key(&self.name, "link", &format!("{}:{}", side.as_str(), rec.id));
        if let Some(record) = self.store.kv_get(&link).await? {
            return Ok(Resolved::Record(record));
        }
        let matched = match self.cfg.object {
            SyncObject::Contact => rec
                .key
                .as_deref()
                .map(|e| e.trim().to_lowercase())
                .filter(|e| !e.is_empty()),
            _ => rec.key.as_deref().and_then(normalise_key),
        };
        let Some(record) = matched else {
            return Ok(if self.cfg.object == SyncObject::Contact {
                Resolved::Unmatched
            } else {
                Resolved::Record(format!("#{}:{}", side.as_str(), rec.id))
            });
        };
        let held = self
            .store
            .kv_get(&key(&self.name, "record", &record))
            .await?
            .and_then(|v| serde_json::from_str::<RecordState>(&v).ok())
            .and_then(|st| st.ids[i].clone());
        match held {
            // Another record of this system holds the match value and
            // is still linked to it.
            Some(other) if other != rec.id => {
                let other_link = key(&self.name, "link", &format!("{}:{other}", side.as_str()));
                if self.store.kv_get(&other_link).await?.as_deref() == Some(record.as_str()) {
                    return Ok(Resolved::Duplicate);
                }
                Ok(Resolved::Record(record))
            }
            _ => Ok(Resolved::Record(record)),
        }
    }

    /// Remembers for good that `side`'s record `id` is `record`.
    async fn link(&self, side: Side, id: &str, record: &str) -> Result<(), StoreError> {
        self.store
            .kv_set(
                &key(&self.name, "link", &format!("{}:{id}", side.as_str())),
                record,
            )
            .await?;
        if !self.systems[side as usize].swept(&self.vendor_fields(side)) {
            return Ok(());
        }
        // The sweep's list of ids (only kept where a sweep reads them).
        let k = key(&self.name, "index", side.as_str());
        loop {
            let old = self.store.kv_get(&k).await?;
            let mut ids: BTreeSet<String> = old
                .as_deref()
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default();
            if !ids.insert(id.to_string()) {
                return Ok(());
            }
            let new =
                serde_json::to_string(&ids).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if self
                .store
                .kv_compare_and_set(&k, old.as_deref(), &new)
                .await?
            {
                return Ok(());
            }
        }
    }

    /// Sync field names of vendor fields of `side`.
    fn sync_fields(&self, side: Side, vendor: &BTreeMap<String, Val>) -> Vec<String> {
        self.cfg
            .fields
            .iter()
            .filter(|(_, f)| {
                vendor.contains_key(match side {
                    Side::A => &f.a,
                    Side::B => &f.b,
                })
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A polled record in the sync's terms: values by sync field, an
    /// association's vendor id as the key of the linked sync's record
    /// (`?a:ID` / `?b:ID` while that record is not linked yet).
    async fn observed(&self, side: Side, rec: RemoteRecord) -> Result<Observed, StoreError> {
        let mut values = BTreeMap::new();
        for (name, f) in &self.cfg.fields {
            let vendor = match side {
                Side::A => &f.a,
                Side::B => &f.b,
            };
            let mut v = rec.fields.get(vendor).cloned().unwrap_or(None);
            if let Some(other) = &f.link {
                // The system shows every associated id (`;`-separated,
                // the oldest first where it knows): one record keeps the
                // first, a set all of them.
                let ids = v.as_deref().unwrap_or_default().split(';');
                let ids: Vec<&str> = ids.map(str::trim).filter(|i| !i.is_empty()).collect();
                let ids = if f.many() {
                    &ids[..]
                } else {
                    &ids[..ids.len().min(1)]
                };
                let mut records = Vec::with_capacity(ids.len());
                for id in ids {
                    let link = key(other, "link", &format!("{}:{id}", side.as_str()));
                    records.push(match self.store.kv_get(&link).await? {
                        Some(record) => record,
                        None => format!("?{}:{id}", side.as_str()),
                    });
                }
                v = engine::set_value(records.iter().map(String::as_str));
            }
            values.insert(name.clone(), v);
        }
        Ok(Observed {
            id: rec.id,
            modified_at: rec.modified_at,
            values,
            consistent: self.systems[side as usize].consistent(),
        })
    }

    /// An association's value for `side`: the id `side` holds for the
    /// linked sync's record `record` (None: not linked there yet).
    async fn linked_id(
        &self,
        other: &str,
        side: Side,
        record: &str,
    ) -> Result<Option<String>, StoreError> {
        for s in [Side::A, Side::B] {
            if let Some(id) = record.strip_prefix(&format!("?{}:", s.as_str())) {
                return Ok((s == side).then(|| id.to_string()));
            }
        }
        Ok(self
            .store
            .kv_get(&key(other, "record", record))
            .await?
            .and_then(|v| serde_json::from_str::<RecordState>(&v).ok())
            .and_then(|st| st.ids[side as usize].clone()))
    }

    /// The records of `side` read again because some synced fields move no
    /// modification time (HubSpot associations): every linked record not
    /// in this round's poll, once per `sweep_interval`.
    async fn sweep(
        &self,
        side: Side,
        polled: &[RemoteRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<RemoteRecord>, SyncError> {
        let i = side as usize;
        let fields = self.vendor_fields(side);
        if !self.systems[i].swept(&fields) {
            return Ok(Vec::new());
        }
        let internal = |e: StoreError| {
            SyncError(crate::connectors::Outcome::retry(
                crate::connectors::ErrorClass::Internal,
                e.to_string(),
            ))
        };
        let last = key(&self.name, "sweep", side.as_str());
        let due = match self.store.kv_get(&last).await.map_err(internal)? {
            Some(t) => DateTime::parse_from_rfc3339(&t).map_or(true, |t| {
                now - t.with_timezone(&Utc)
                    >= chrono::Duration::from_std(self.cfg.sweep_interval.get()).unwrap_or_default()
            }),
            None => true,
        };
        if !due {
            return Ok(Vec::new());
        }
        let polled: BTreeSet<&str> = polled.iter().map(|r| r.id.as_str()).collect();
        let ids: Vec<String> = self
            .index(side)
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|id| !polled.contains(id.as_str()))
            .collect();
        let records = pace::scope(
            Some(self.pacers[i].clone()),
            self.systems[i].read(&ids, &fields),
        )
        .await?;
        self.store
            .kv_set(&last, &now.to_rfc3339())
            .await
            .map_err(internal)?;
        Ok(records)
    }

    /// The ids of `side` the sync has linked.
    async fn index(&self, side: Side) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .kv_get(&key(&self.name, "index", side.as_str()))
            .await?
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default())
    }

    /// Read-modify-write of one record's state (compare-and-set, retried).
    async fn update(
        &self,
        record: &str,
        f: impl Fn(&mut RecordState),
    ) -> Result<RecordState, StoreError> {
        update_record(&self.store, &self.name, record, f).await
    }

    async fn decide_record(
        &self,
        record: &str,
        observed: [Option<&Observed>; 2],
        shown: [Option<String>; 2],
        now: DateTime<Utc>,
        h: &mut Health,
    ) -> Result<[Option<WriteOp>; 2], StoreError> {
        let k = key(&self.name, "record", record);
        loop {
            let old = self.store.kv_get(&k).await?;
            let mut st: RecordState = old
                .as_deref()
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default();
            let linked = st.ids.clone();
            let d = engine::decide(&self.cfg, &mut st, observed, now);
            let mut items = Vec::new();
            for c in &d.conflicts {
                let id = leadrelay_model::new_id();
                if let Some(fs) = st.fields.get_mut(&c.field) {
                    fs.review = Some(id);
                }
                items.push(self.conflict_item(id, record, c, now));
            }
            let new = serde_json::to_string(&st).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if !self
                .store
                .kv_compare_and_set(&k, old.as_deref(), &new)
                .await?
            {
                continue;
            }
            for item in items {
                self.store.add_review_item(item).await?;
            }
            for side in [Side::A, Side::B] {
                let i = side as usize;
                if let Some(id) = &st.ids[i]
                    && linked[i].as_ref() != Some(id)
                {
                    self.link(side, id, record).await?;
                }
            }
            if old.is_none() {
                h.records += 1;
            }
            h.changes += d.changes as u64;
            h.echoes_dropped += d.echoes as u64;
            h.restores += d.restores as u64;
            h.conflicts_settled += d.settled as u64;
            h.conflicts_for_review += d.conflicts.len() as u64;
            if let Some(last) = d.refused.last() {
                h.errors += d.refused.len() as u64;
                h.pending += d.refused.len() as u64;
                // Named by its vendor ids, not its key (an email).
                let ids: Vec<String> = [Side::A, Side::B]
                    .into_iter()
                    .filter_map(|s| {
                        st.ids[s as usize]
                            .as_ref()
                            .map(|id| format!("{} {id}", self.dest[s as usize]))
                    })
                    .collect();
                h.last_error = Some(format!("record {}: {last}", ids.join(", ")));
            }
            let mut out = [None, None];
            let mut unlinked: Vec<(usize, String)> = Vec::new();
            for side in [Side::A, Side::B] {
                let i = side as usize;
                if d.writes[i].is_empty() {
                    continue;
                }
                let mut fields: BTreeMap<String, Val> = BTreeMap::new();
                for (name, v) in &d.writes[i] {
                    let Some(f) = self.cfg.fields.get(name) else {
                        continue;
                    };
                    let vendor = match side {
                        Side::A => f.a.clone(),
                        Side::B => f.b.clone(),
                    };
                    let v = match (&f.link, v) {
                        (Some(other), Some(records)) => {
                            let members: Vec<&str> = if f.many() {
                                engine::set_members(v).into_iter().collect()
                            } else {
                                vec![records.as_str()]
                            };
                            let mut ids = Vec::with_capacity(members.len());
                            for m in members {
                                match self.linked_id(other, side, m).await? {
                                    Some(id) => ids.push(id),
                                    None => break,
                                }
                            }
                            if ids.len() < engine::set_members(v).len().max(1) {
                                // An associated record is not in this
                                // system yet: the value is written once
                                // every one is (a part would read back
                                // as a removal).
                                unlinked.push((i, name.clone()));
                                continue;
                            }
                            Some(ids.join(";"))
                        }
                        _ => v.clone(),
                    };
                    fields.insert(vendor, v);
                }
                if fields.is_empty() {
                    continue;
                }
                if let Some(origin) = self.cfg.origin(side) {
                    fields.insert(
                        origin.to_string(),
                        Some(format!(
                            "leadrelay sync {} at {}",
                            self.name,
                            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        )),
                    );
                }
                // The match value a lookup or create uses: what the other
                // system shows, else what this one showed, else (a
                // contact) the email the record was first matched by.
                let match_value = shown[1 - i]
                    .clone()
                    .or_else(|| shown[i].clone())
                    .or_else(|| {
                        (self.cfg.object == SyncObject::Contact && !record.starts_with('#'))
                            .then(|| record.to_string())
                    });
                out[i] = Some(WriteOp {
                    record: record.to_string(),
                    key: match_value,
                    id: st.ids[i].clone(),
                    fields,
                });
            }
            if !unlinked.is_empty() {
                h.pending += unlinked.len() as u64;
                self.update(record, |st| {
                    for (i, name) in &unlinked {
                        let new_record = st.ids[*i].is_none();
                        if let Some(fs) = st.fields.get_mut(name) {
                            fs.ledger[*i].pop();
                            // A record this round creates there holds no
                            // association: seeing it empty next round is
                            // the sync's own doing, not a change made
                            // there (which could win over the association
                            // once it is linked).
                            if new_record && fs.seen[*i].is_none() {
                                fs.ledger[*i].push(engine::Written {
                                    hash: engine::value_hash(&None),
                                    at: now,
                                });
                            }
                        }
                    }
                })
                .await?;
            }
            return Ok(out);
        }
    }

    fn conflict_item(
        &self,
        id: Uuid,
        record: &str,
        c: &engine::Conflict,
        now: DateTime<Utc>,
    ) -> ReviewItem {
        ReviewItem {
            id,
            kind: SYNC_CONFLICT.to_string(),
            status: ReviewStatus::Open,
            summary: format!(
                "sync {}: {} changed in both {} and {}; nothing written until decided",
                self.name, c.field, self.dest[0], self.dest[1]
            ),
            contact_id: None,
            destination: None,
            details: json!({
                "sync": self.name,
                "object": self.cfg.object.as_str(),
                "record": record,
                "email": (self.cfg.object == SyncObject::Contact).then_some(record),
                "field": c.field,
                "a": {"system": self.dest[0], "value": c.values[0], "modified_at": c.times[0]},
                "b": {"system": self.dest[1], "value": c.values[1], "modified_at": c.times[1]},
            }),
            created_at: now,
            resolved_at: None,
            resolved_by: None,
            resolution: None,
        }
    }

    /// Rounds every `poll_interval`, and at once when `wake` is notified
    /// (a change webhook), until `shutdown`.
    pub async fn run(self, wake: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
        loop {
            self.round().await;
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll_interval.get()) => {}
                _ = wake.notified() => {
                    tracing::debug!(sync = %self.name, "change webhook: round now");
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

async fn update_record(
    store: &Arc<dyn Store>,
    sync: &str,
    record: &str,
    f: impl Fn(&mut RecordState),
) -> Result<RecordState, StoreError> {
    let k = key(sync, "record", record);
    loop {
        let old = store.kv_get(&k).await?;
        let mut st: RecordState = old
            .as_deref()
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        f(&mut st);
        let new = serde_json::to_string(&st).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if store.kv_compare_and_set(&k, old.as_deref(), &new).await? {
            return Ok(st);
        }
    }
}

/// Wakes syncs when their change webhooks arrive: per source name, the
/// syncs that listen to it (`change_sources`).
#[derive(Debug, Clone, Default)]
pub struct Wakers {
    by_source: Arc<BTreeMap<String, Vec<Arc<tokio::sync::Notify>>>>,
    by_sync: Arc<BTreeMap<String, Arc<tokio::sync::Notify>>>,
}

impl Wakers {
    pub fn new(config: &Config) -> Self {
        let mut by_source: BTreeMap<String, Vec<Arc<tokio::sync::Notify>>> = BTreeMap::new();
        let mut by_sync = BTreeMap::new();
        for (name, s) in &config.syncs {
            let n = Arc::new(tokio::sync::Notify::new());
            for source in &s.change_sources {
                by_source.entry(source.clone()).or_default().push(n.clone());
            }
            by_sync.insert(name.clone(), n);
        }
        Self {
            by_source: Arc::new(by_source),
            by_sync: Arc::new(by_sync),
        }
    }

    /// A change webhook of `source` was accepted: its syncs run a round
    /// now (or right after the one running). Returns how many were woken.
    pub fn wake(&self, source: &str) -> usize {
        let list = self.by_source.get(source).map(Vec::as_slice).unwrap_or(&[]);
        for n in list {
            n.notify_one();
        }
        list.len()
    }
}

/// Starts every configured sync; each stops with `shutdown` and runs a
/// round early when `wakers` wakes it.
pub fn start_all(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    store: &Arc<dyn Store>,
    wakers: &Wakers,
    shutdown: &CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, Vec<Problem>> {
    let mut out = Vec::new();
    for name in config.syncs.keys() {
        let runner = SyncRunner::build(name, config, env, store.clone())?;
        let wake = wakers.by_sync.get(name).cloned().unwrap_or_default();
        out.push(tokio::spawn(runner.run(wake, shutdown.clone())));
    }
    Ok(out)
}

/// Open sync conflicts per sync: (items, distinct records).
async fn conflicts_waiting(
    store: &Arc<dyn Store>,
) -> Result<BTreeMap<String, (u64, BTreeSet<String>)>, StoreError> {
    const PAGE: usize = 500;
    let mut out: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
    let mut before = None;
    loop {
        let items = store
            .list_review_items(Some(ReviewStatus::Open), before, PAGE)
            .await?;
        for item in items.iter().filter(|i| i.kind == SYNC_CONFLICT) {
            let (Some(sync), Some(record)) = (item.details["sync"].as_str(), record_of(item))
            else {
                continue;
            };
            let entry = out.entry(sync.to_string()).or_default();
            entry.0 += 1;
            entry.1.insert(record.to_string());
        }
        match items.last() {
            Some(last) if items.len() == PAGE => before = Some(last.id),
            _ => return Ok(out),
        }
    }
}

/// The stored health of each configured sync, with the conflicts waiting
/// in the review queue.
pub async fn health(config: &Config, store: &Arc<dyn Store>) -> Result<Vec<Health>, StoreError> {
    let waiting = conflicts_waiting(store).await?;
    let mut out = Vec::new();
    for (name, s) in &config.syncs {
        let mut h: Health = match store.kv_get(&key(name, "health", "")).await? {
            Some(v) => serde_json::from_str(&v).unwrap_or_default(),
            None => Health::default(),
        };
        h.sync = name.clone();
        h.a = s.a.clone();
        h.b = s.b.clone();
        let (items, records) = waiting.get(name).cloned().unwrap_or_default();
        h.conflicts_waiting = items;
        h.in_sync = h.records.saturating_sub(h.pending + records.len() as u64);
        out.push(h);
    }
    Ok(out)
}

/// A person's answer to a sync conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Keep this side's value.
    Take(Side),
    /// This value (in system `a`'s vocabulary).
    Value(Option<String>),
}

/// Why a decision was refused.
#[derive(Debug)]
pub enum DecideError {
    NotFound(String),
    /// Not a sync conflict, or no longer open.
    Conflict(String),
    Store(StoreError),
}

impl From<StoreError> for DecideError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => DecideError::NotFound(m),
            StoreError::Conflict(m) => DecideError::Conflict(m),
            other => DecideError::Store(other),
        }
    }
}

/// Settles a sync conflict: the chosen value becomes the field's agreed
/// value (the sync writes it to both systems in its next round) and the
/// review item is resolved.
pub async fn decide_conflict(
    store: &Arc<dyn Store>,
    id: Uuid,
    choice: Choice,
    actor: &str,
) -> Result<ReviewItem, DecideError> {
    let item = store
        .get_review_item(id)
        .await?
        .ok_or_else(|| DecideError::NotFound(format!("no review item {id}")))?;
    if item.kind != SYNC_CONFLICT {
        return Err(DecideError::Conflict(format!(
            "review item {id} is a {}, not a sync conflict",
            item.kind
        )));
    }
    if item.status != ReviewStatus::Open {
        return Err(DecideError::Conflict(format!(
            "review item {id} is already {}",
            item.status.as_str()
        )));
    }
    let d = &item.details;
    let (Some(sync), Some(record), Some(field)) =
        (d["sync"].as_str(), record_of(&item), d["field"].as_str())
    else {
        return Err(DecideError::Conflict(format!(
            "review item {id} does not name its sync, record and field"
        )));
    };
    let (value, how) = match &choice {
        Choice::Take(side) => {
            let v = d[side.as_str()]["value"].as_str().map(str::to_string);
            let system = d[side.as_str()]["system"].as_str().unwrap_or(side.as_str());
            (v, format!("kept {system}'s value"))
        }
        Choice::Value(v) => (v.clone(), "set an edited value".to_string()),
    };
    update_record(store, sync, record, |st| {
        if st.fields.get(field).and_then(|f| f.review) == Some(id) {
            engine::apply_decision(st, field, value.clone());
        }
    })
    .await?;
    let resolved = store
        .resolve_review_item(id, ReviewStatus::Resolved, Some(how), actor)
        .await?;
    Ok(resolved)
}

/// Why a sync conflict cannot be closed as plainly resolved or dismissed:
/// the field stays held until a decision ([`decide_conflict`]) says which
/// value both systems get (a dismissal would leave the two systems apart).
pub fn plain_close_refused(item: &ReviewItem) -> Option<String> {
    let d = &item.details;
    let holds_a_field = item.kind == SYNC_CONFLICT
        && item.status == ReviewStatus::Open
        && record_of(item).is_some()
        && ["sync", "field"].iter().all(|k| d[*k].as_str().is_some());
    holds_a_field.then(|| {
        format!(
            "review item {} is a sync conflict: decide it (keep a side's value or set one) with POST /api/v1/review/{}/decide",
            item.id, item.id
        )
    })
}
