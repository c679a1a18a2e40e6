//! Storage of the report rollups: touchpoints, each person's lead
//! milestone, deals with their stage history, attribution credits per
//! closed deal, and imported campaign costs. A supertrait of
//! [`Store`](super::Store), implemented by both stores in their `report.rs`.
//!
//! The rollups are maintained by `reports::rollup`, a background pass that
//! reads events after a cursor in batches and writes one transaction per
//! batch — nothing is added to the ingest transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadrelay_model::{Attribution, VendorRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::StoreResult;

/// The parts of a stored event the rollups need (decoded without the rest
/// of the document).
#[derive(Debug, Clone)]
pub struct RollupEvent {
    pub id: Uuid,
    pub event_type: String,
    pub origin_kind: String,
    pub origin_name: String,
    pub occurred_at: DateTime<Utc>,
    pub contact_id: Option<Uuid>,
    pub spam: bool,
    pub doc: RollupDoc,
}

/// The fields of an event document the rollups read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RollupDoc {
    #[serde(default)]
    pub attribution: Attribution,
    #[serde(default)]
    pub data: Map<String, Value>,
    #[serde(default)]
    pub vendor_refs: Vec<VendorRef>,
    /// The person as the sender described them, undecoded (the data
    /// quality KPI checks the fields itself).
    #[serde(default)]
    pub contact: Map<String, Value>,
}

/// One stored touchpoint of a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TouchRow {
    pub event_id: Uuid,
    pub contact_id: Uuid,
    pub at: DateTime<Utc>,
    pub channel: String,
    pub source: String,
    pub campaign: String,
}

/// A person's first lead event and first touch (the dimensions their
/// deals are reported under).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadRow {
    pub contact_id: Uuid,
    pub first_at: DateTime<Utc>,
    /// `form:NAME`, `source:NAME` or `api:NAME` of the first lead event.
    pub origin: String,
    pub channel: String,
    pub source: String,
    pub campaign: String,
}

/// One stay of a deal in a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StagePeriod {
    pub stage: String,
    pub entered_at: DateTime<Utc>,
    /// None while the deal is still in the stage.
    pub left_at: Option<DateTime<Utc>>,
}

/// A deal as the rollups know it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealRow {
    /// `data.deal_id`, else `<system>:<id>` of the event's deal vendor ref.
    pub deal_id: String,
    pub contact_id: Option<Uuid>,
    pub stage: String,
    /// `open`, `won` or `lost`.
    pub status: String,
    pub amount: Option<f64>,
    pub currency: Option<String>,
    /// Win probability 0..=1 of the current stage (weighted forecast).
    pub probability: Option<f64>,
    pub owner: Option<String>,
    /// Expected close date as the CRM reported it.
    pub expected_close: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// The contact's first-touch dimensions at the time the deal was seen.
    pub origin: Option<String>,
    pub channel: Option<String>,
    pub source: Option<String>,
    pub campaign: Option<String>,
    /// Every stage the deal was in, oldest first.
    pub periods: Vec<StagePeriod>,
    /// The deal's records in the CRMs (`deal` / `opportunity` vendor
    /// references of its events), for writing attribution back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<VendorRef>,
}

/// One attribution credit of a closed (won) deal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditRow {
    pub deal_id: String,
    pub model: String,
    pub channel: String,
    pub source: String,
    pub campaign: String,
    pub credit: f64,
    pub revenue: f64,
    pub closed_at: DateTime<Utc>,
}

/// A campaign's cost in one month (imported from CSV).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CampaignCost {
    pub campaign: String,
    /// `YYYY-MM`.
    pub month: String,
    pub channel: Option<String>,
    pub cost: f64,
}

/// The lead response clock of one person: when they became an MQL (the
/// first of `reports.kpis.mql_events`) and their first sales activity
/// after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseRow {
    pub contact_id: Uuid,
    pub mql_at: DateTime<Utc>,
    pub responded_at: Option<DateTime<Utc>>,
}

/// One handoff (`lead.qualified`) the rollups saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoffRow {
    pub event_id: Uuid,
    pub contact_id: Uuid,
    pub at: DateTime<Utc>,
    /// An owner was assigned.
    pub owner: bool,
}

/// A handoff with the state of its deliveries (replaced ones left out).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HandoffOutcome {
    pub owner: bool,
    pub deliveries: u64,
    pub delivered: u64,
    /// Dead, discarded or skipped: the notification did not go out.
    pub failed: u64,
}

/// Hourly counters of a ratio KPI (`num` of `den`), added up per hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiCount {
    pub kpi: String,
    /// The start of the hour.
    pub hour: DateTime<Utc>,
    pub num: u64,
    pub den: u64,
}

/// What one rollup pass writes, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct RollupBatch {
    /// The cursor the pass started from: the batch is refused (Conflict)
    /// when another pass (another node) moved it meanwhile.
    pub from: Option<Uuid>,
    /// The last event the pass read (the next pass starts after it).
    pub cursor: Uuid,
    pub touches: Vec<TouchRow>,
    /// Inserted only when the contact has none yet.
    pub leads: Vec<LeadRow>,
    /// Upserted whole.
    pub deals: Vec<DealRow>,
    /// Per deal id: its credits, replacing any earlier ones.
    pub credits: Vec<(String, Vec<CreditRow>)>,
    /// Upserted whole.
    pub responses: Vec<ResponseRow>,
    /// Inserted once per event.
    pub handoffs: Vec<HandoffRow>,
    /// Added to the stored counters of the same KPI and hour.
    pub counts: Vec<KpiCount>,
    /// `system:object:id` of a CRM person → the contact (upserted).
    pub refs: Vec<(String, Uuid)>,
}

/// What the rollup pass must know before it applies a batch (touches are
/// read separately, and only for the people whose journey the batch needs:
/// [`ReportStore::rollup_touches`]).
#[derive(Debug, Clone, Default)]
pub struct RollupContext {
    pub leads: Vec<LeadRow>,
    pub deals: Vec<DealRow>,
    pub responses: Vec<ResponseRow>,
}

/// The kv key holding the rollup cursor (the last event id rolled up).
pub const ROLLUP_CURSOR_KEY: &str = "reports.rollup_cursor";

#[async_trait]
pub trait ReportStore {
    /// Events with `after < id < until`, oldest first (ids are UUIDv7, so
    /// this is receipt order).
    async fn rollup_events(
        &self,
        after: Option<Uuid>,
        until: Uuid,
        limit: usize,
    ) -> StoreResult<Vec<RollupEvent>>;

    /// The lead rows of `leads`, the stored state of these deals and the
    /// response clocks of `clocks` — one query each, whatever the number.
    async fn rollup_context(
        &self,
        leads: Vec<Uuid>,
        deals: Vec<String>,
        clocks: Vec<Uuid>,
    ) -> StoreResult<RollupContext>;

    /// The stored touchpoints of these contacts (one query).
    async fn rollup_touches(&self, contacts: Vec<Uuid>) -> StoreResult<Vec<TouchRow>>;

    /// Writes a batch and moves the cursor from `batch.from` to
    /// `batch.cursor`, in one transaction; Conflict (nothing written) when
    /// the cursor is no longer `batch.from`.
    async fn rollup_apply(&self, batch: RollupBatch) -> StoreResult<()>;

    /// Deals open at some time in `[since, until)`: created before `until`
    /// and not closed before `since`.
    async fn report_deals(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<DealRow>>;

    /// Lead rows whose first lead event is in `[since, until)`.
    async fn report_leads(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<LeadRow>>;

    /// Credits of one model for deals closed in `[since, until)`.
    async fn report_credits(
        &self,
        model: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<CreditRow>>;

    /// Replaces the costs of the (campaign, month) pairs given.
    async fn set_campaign_costs(&self, costs: Vec<CampaignCost>) -> StoreResult<usize>;

    /// Every imported cost.
    async fn campaign_costs(&self) -> StoreResult<Vec<CampaignCost>>;

    /// Response clocks started (`mql_at`) in `[since, until)`.
    async fn report_responses(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<ResponseRow>>;

    /// Handoffs in `[since, until)` with their deliveries' states.
    async fn report_handoffs(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<HandoffOutcome>>;

    /// The hourly counters of hours starting in `[since, until)`, summed
    /// per KPI: `(kpi, num, den)`.
    async fn report_kpi_counts(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<(String, u64, u64)>>;

    /// The contacts of these `system:object:id` CRM references, where known.
    async fn report_ref_contacts(&self, refs: Vec<String>) -> StoreResult<Vec<(String, Uuid)>>;

    /// Records that ingest is up in the minute starting at `minute`
    /// (idempotent; any node's record counts).
    async fn record_heartbeat(&self, minute: DateTime<Utc>) -> StoreResult<()>;

    /// Minutes with a heartbeat in `[since, until)`, and the earliest
    /// heartbeat ever recorded.
    async fn heartbeats(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<(u64, Option<DateTime<Utc>>)>;
}
