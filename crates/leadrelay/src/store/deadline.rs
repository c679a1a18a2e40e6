//! A deadline on every store call, whatever the backend. A database that
//! stops answering (a partition, a frozen primary, a failover whose old
//! connections die silently) or a stuck SQLite writer fails the call as
//! `Unavailable` after `storage.timeout` (`storage.long_timeout` for the
//! calls that scan a lot), so ingest answers 503 with `Retry-After` and
//! workers retry, instead of waiting on sockets the kernel gives up on only
//! after many minutes. A call past its deadline also tells the backend to
//! stop trusting its pooled connections. Outages and recoveries are logged
//! once (and every 30 s while they last), not once per call.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadrelay_model::{Contact, Event, OwnerAssignment};
use uuid::Uuid;

use super::*;

/// How often an outage that lasts is logged again.
const REPEAT_WARNING: Duration = Duration::from_secs(30);

/// Which deadline a call gets.
#[derive(Clone, Copy)]
enum Limit {
    Quick,
    Long,
}

/// Any store, with a deadline on each call.
pub struct Deadline {
    inner: Arc<dyn Store>,
    quick: Duration,
    long: Duration,
    health: Health,
}

impl Deadline {
    pub fn wrap(inner: Arc<dyn Store>, quick: Duration, long: Duration) -> Arc<dyn Store> {
        Arc::new(Deadline {
            inner,
            quick,
            long: long.max(quick),
            health: Health::default(),
        })
    }

    async fn call<T>(
        &self,
        what: &'static str,
        limit: Limit,
        call: impl Future<Output = StoreResult<T>> + Send,
    ) -> StoreResult<T> {
        let limit = match limit {
            Limit::Quick => self.quick,
            Limit::Long => self.long,
        };
        let mut call = Box::pin(call);
        let result = tokio::time::timeout(limit, &mut call).await;
        // Dropped before the backend is told, so a connection the call held
        // is back in its pool and is distrusted with the others.
        drop(call);
        match result {
            Ok(Ok(v)) => {
                self.health.succeeded();
                Ok(v)
            }
            Ok(Err(e)) => {
                if matches!(e, StoreError::Unavailable(_)) {
                    self.health.failed(&e);
                }
                Err(e)
            }
            Err(_) => {
                self.inner.distrust_connections();
                let e = StoreError::Unavailable(format!(
                    "{} did not answer {what} within {}",
                    self.inner.backend(),
                    humantime::format_duration(limit)
                ));
                self.health.failed(&e);
                Err(e)
            }
        }
    }
}

/// Whether the store is failing, for the log.
#[derive(Default)]
struct Health {
    down: AtomicBool,
    state: Mutex<Outage>,
}

#[derive(Default)]
struct Outage {
    since: Option<Instant>,
    warned_at: Option<Instant>,
    failures: u64,
}

impl Health {
    fn failed(&self, e: &StoreError) {
        let mut o = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        o.failures += 1;
        match o.since {
            None => {
                o.since = Some(now);
                o.warned_at = Some(now);
                self.down.store(true, Ordering::Relaxed);
                tracing::warn!(error = %e, "storage unavailable");
            }
            Some(since) if o.warned_at.is_none_or(|w| now - w >= REPEAT_WARNING) => {
                o.warned_at = Some(now);
                tracing::warn!(
                    error = %e,
                    failures = o.failures,
                    for_secs = (now - since).as_secs(),
                    "storage still unavailable"
                );
            }
            Some(_) => {}
        }
    }

    fn succeeded(&self) {
        if !self.down.load(Ordering::Relaxed) {
            return;
        }
        let mut o = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = o.since.take() {
            self.down.store(false, Ordering::Relaxed);
            tracing::info!(
                failures = o.failures,
                after_secs = since.elapsed().as_secs(),
                "storage available again"
            );
            o.failures = 0;
            o.warned_at = None;
        }
    }
}

#[async_trait]
impl FixableStore for Deadline {
    async fn record_fixable(&self, items: Vec<NewFixable>) -> StoreResult<usize> {
        self.call(
            "record_fixable",
            Limit::Quick,
            self.inner.record_fixable(items),
        )
        .await
    }
    async fn due_fixable(
        &self,
        now: DateTime<Utc>,
        max_retries: u32,
        limit: usize,
    ) -> StoreResult<Vec<DueFixable>> {
        self.call(
            "due_fixable",
            Limit::Quick,
            self.inner.due_fixable(now, max_retries, limit),
        )
        .await
    }
    async fn reschedule_fixable(
        &self,
        destination: &str,
        cause_key: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        self.call(
            "reschedule_fixable",
            Limit::Quick,
            self.inner.reschedule_fixable(destination, cause_key, at),
        )
        .await
    }
    async fn fixable_causes(&self, max_retries: u32) -> StoreResult<Vec<FixableCause>> {
        self.call(
            "fixable_causes",
            Limit::Quick,
            self.inner.fixable_causes(max_retries),
        )
        .await
    }
}

#[async_trait]
impl OpsStore for Deadline {
    async fn waiting_deliveries(
        &self,
        filter: &WaitingFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        self.call(
            "waiting_deliveries",
            Limit::Quick,
            self.inner.waiting_deliveries(filter, before, limit),
        )
        .await
    }
    async fn count_waiting(&self, filter: &WaitingFilter) -> StoreResult<u64> {
        self.call(
            "count_waiting",
            Limit::Quick,
            self.inner.count_waiting(filter),
        )
        .await
    }
    async fn retry_now(&self, ids: Vec<Uuid>) -> StoreResult<usize> {
        self.call("retry_now", Limit::Quick, self.inner.retry_now(ids))
            .await
    }
    async fn cancel_waiting(&self, ids: Vec<Uuid>, reason: &str) -> StoreResult<usize> {
        self.call(
            "cancel_waiting",
            Limit::Quick,
            self.inner.cancel_waiting(ids, reason),
        )
        .await
    }
    async fn destination_series(
        &self,
        destination: &str,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<SeriesBucket>> {
        self.call(
            "destination_series",
            Limit::Quick,
            self.inner
                .destination_series(destination, since, bucket_secs),
        )
        .await
    }
}

#[async_trait]
impl MembershipStore for Deadline {
    async fn record_memberships(&self, items: Vec<Membership>) -> StoreResult<()> {
        self.call(
            "record_memberships",
            Limit::Quick,
            self.inner.record_memberships(items),
        )
        .await
    }
    async fn memberships(&self, contact_key: &str) -> StoreResult<Vec<Membership>> {
        self.call(
            "memberships",
            Limit::Quick,
            self.inner.memberships(contact_key),
        )
        .await
    }
}

#[async_trait]
impl FeedbackStore for Deadline {
    async fn feedback_people(&self, ids: Vec<Uuid>) -> StoreResult<Vec<FeedbackPerson>> {
        let f = self.inner.feedback_people(ids);
        self.call("feedback_people", Limit::Long, f).await
    }
    async fn feedback_apply(&self, batch: FeedbackBatch) -> StoreResult<()> {
        let f = self.inner.feedback_apply(batch);
        self.call("feedback_apply", Limit::Long, f).await
    }
    async fn feedback_cells(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<FeedbackCell>> {
        let f = self.inner.feedback_cells(since, until);
        self.call("feedback_cells", Limit::Long, f).await
    }
}

#[async_trait]
impl ReportStore for Deadline {
    async fn rollup_events(
        &self,
        after: Option<Uuid>,
        until: Uuid,
        limit: usize,
    ) -> StoreResult<Vec<RollupEvent>> {
        let f = self.inner.rollup_events(after, until, limit);
        self.call("rollup_events", Limit::Long, f).await
    }
    async fn rollup_context(
        &self,
        leads: Vec<Uuid>,
        deals: Vec<String>,
        clocks: Vec<Uuid>,
    ) -> StoreResult<RollupContext> {
        let f = self.inner.rollup_context(leads, deals, clocks);
        self.call("rollup_context", Limit::Long, f).await
    }
    async fn rollup_touches(&self, contacts: Vec<Uuid>) -> StoreResult<Vec<TouchRow>> {
        let f = self.inner.rollup_touches(contacts);
        self.call("rollup_touches", Limit::Long, f).await
    }
    async fn rollup_apply(&self, batch: RollupBatch) -> StoreResult<()> {
        let f = self.inner.rollup_apply(batch);
        self.call("rollup_apply", Limit::Long, f).await
    }
    async fn report_deals(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<DealRow>> {
        let f = self.inner.report_deals(since, until);
        self.call("report_deals", Limit::Long, f).await
    }
    async fn report_leads(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<LeadRow>> {
        let f = self.inner.report_leads(since, until);
        self.call("report_leads", Limit::Long, f).await
    }
    async fn report_credits(
        &self,
        model: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<CreditRow>> {
        let f = self.inner.report_credits(model, since, until);
        self.call("report_credits", Limit::Long, f).await
    }
    async fn set_campaign_costs(&self, costs: Vec<CampaignCost>) -> StoreResult<usize> {
        let f = self.inner.set_campaign_costs(costs);
        self.call("set_campaign_costs", Limit::Quick, f).await
    }
    async fn campaign_costs(&self) -> StoreResult<Vec<CampaignCost>> {
        let f = self.inner.campaign_costs();
        self.call("campaign_costs", Limit::Quick, f).await
    }
    async fn report_responses(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<ResponseRow>> {
        let f = self.inner.report_responses(since, until);
        self.call("report_responses", Limit::Long, f).await
    }
    async fn report_handoffs(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<HandoffOutcome>> {
        let f = self.inner.report_handoffs(since, until);
        self.call("report_handoffs", Limit::Long, f).await
    }
    async fn report_kpi_counts(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<(String, u64, u64)>> {
        let f = self.inner.report_kpi_counts(since, until);
        self.call("report_kpi_counts", Limit::Quick, f).await
    }
    async fn report_ref_contacts(&self, refs: Vec<String>) -> StoreResult<Vec<(String, Uuid)>> {
        let f = self.inner.report_ref_contacts(refs);
        self.call("report_ref_contacts", Limit::Quick, f).await
    }
    async fn record_heartbeat(&self, minute: DateTime<Utc>) -> StoreResult<()> {
        let f = self.inner.record_heartbeat(minute);
        self.call("record_heartbeat", Limit::Quick, f).await
    }
    async fn heartbeats(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<(u64, Option<DateTime<Utc>>)> {
        let f = self.inner.heartbeats(since, until);
        self.call("heartbeats", Limit::Quick, f).await
    }
}

#[async_trait]
impl LeadStore for Deadline {
    async fn kv_increment(&self, key: &str) -> StoreResult<u64> {
        self.call("kv_increment", Limit::Quick, self.inner.kv_increment(key))
            .await
    }
    async fn claim_timers(&self, limit: usize, lease: Duration) -> StoreResult<Vec<Timer>> {
        self.call(
            "claim_timers",
            Limit::Quick,
            self.inner.claim_timers(limit, lease),
        )
        .await
    }
    async fn finish_timer(
        &self,
        id: Uuid,
        lease_id: Uuid,
        state: &str,
        outcome: &str,
        next: Vec<NewTimer>,
    ) -> StoreResult<bool> {
        self.call(
            "finish_timer",
            Limit::Quick,
            self.inner.finish_timer(id, lease_id, state, outcome, next),
        )
        .await
    }
    async fn list_timers(
        &self,
        filter: &TimerFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Timer>> {
        self.call(
            "list_timers",
            Limit::Quick,
            self.inner.list_timers(filter, before, limit),
        )
        .await
    }
    async fn assign_owner(
        &self,
        contact_id: Uuid,
        assignment: OwnerAssignment,
    ) -> StoreResult<Option<Contact>> {
        self.call(
            "assign_owner",
            Limit::Quick,
            self.inner.assign_owner(contact_id, assignment),
        )
        .await
    }
    async fn open_leads(&self) -> StoreResult<Vec<(String, u64)>> {
        self.call("open_leads", Limit::Quick, self.inner.open_leads())
            .await
    }
    async fn account_owner(&self, domain: &str, except: Uuid) -> StoreResult<Option<String>> {
        self.call(
            "account_owner",
            Limit::Quick,
            self.inner.account_owner(domain, except),
        )
        .await
    }
}

#[async_trait]
impl Store for Deadline {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn wake_hub(&self) -> Arc<WakeHub> {
        self.inner.wake_hub()
    }

    fn shared_rate_limits(&self) -> bool {
        self.inner.shared_rate_limits()
    }

    fn distrust_connections(&self) {
        self.inner.distrust_connections()
    }

    async fn ready(&self) -> StoreResult<()> {
        self.call("ready", Limit::Quick, self.inner.ready()).await
    }
    async fn schema_version(&self) -> StoreResult<u32> {
        self.call("schema_version", Limit::Quick, self.inner.schema_version())
            .await
    }
    async fn ingest(&self, items: Vec<IngestItem>) -> StoreResult<Vec<IngestOutcome>> {
        self.call("ingest", Limit::Quick, self.inner.ingest(items))
            .await
    }
    async fn get_event(&self, id: Uuid) -> StoreResult<Option<Event>> {
        self.call("get_event", Limit::Quick, self.inner.get_event(id))
            .await
    }
    async fn list_events(
        &self,
        filter: &EventFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        self.call(
            "list_events",
            Limit::Long,
            self.inner.list_events(filter, before, limit),
        )
        .await
    }
    async fn get_contact(&self, id: Uuid) -> StoreResult<Option<Contact>> {
        self.call("get_contact", Limit::Quick, self.inner.get_contact(id))
            .await
    }
    async fn find_contact_by_email(&self, email: &str) -> StoreResult<Option<Contact>> {
        self.call(
            "find_contact_by_email",
            Limit::Quick,
            self.inner.find_contact_by_email(email),
        )
        .await
    }
    async fn release_own_leases(&self) -> StoreResult<u64> {
        self.call(
            "release_own_leases",
            Limit::Long,
            self.inner.release_own_leases(),
        )
        .await
    }
    async fn claim(
        &self,
        destination: &str,
        limit: usize,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        self.call(
            "claim",
            Limit::Quick,
            self.inner.claim(destination, limit, lease),
        )
        .await
    }
    async fn next_due(&self, destination: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.call("next_due", Limit::Quick, self.inner.next_due(destination))
            .await
    }
    async fn complete(&self, completions: Vec<Completion>) -> StoreResult<()> {
        self.call("complete", Limit::Quick, self.inner.complete(completions))
            .await
    }
    async fn get_delivery(&self, id: Uuid) -> StoreResult<Option<Delivery>> {
        self.call("get_delivery", Limit::Quick, self.inner.get_delivery(id))
            .await
    }
    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        self.call(
            "list_deliveries",
            Limit::Quick,
            self.inner.list_deliveries(filter, before, limit),
        )
        .await
    }
    async fn deliveries_for_event(&self, event_id: Uuid) -> StoreResult<Vec<Delivery>> {
        self.call(
            "deliveries_for_event",
            Limit::Quick,
            self.inner.deliveries_for_event(event_id),
        )
        .await
    }
    async fn attempts(&self, delivery_id: Uuid) -> StoreResult<Vec<Attempt>> {
        self.call("attempts", Limit::Quick, self.inner.attempts(delivery_id))
            .await
    }
    async fn replay(
        &self,
        ids: Vec<Uuid>,
        overrides: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> StoreResult<Vec<(Uuid, Uuid)>> {
        self.call("replay", Limit::Long, self.inner.replay(ids, overrides))
            .await
    }
    async fn discard(&self, ids: Vec<Uuid>) -> StoreResult<usize> {
        self.call("discard", Limit::Quick, self.inner.discard(ids))
            .await
    }
    async fn destination_states(&self) -> StoreResult<Vec<DestinationState>> {
        self.call(
            "destination_states",
            Limit::Quick,
            self.inner.destination_states(),
        )
        .await
    }
    async fn destination_state(&self, name: &str) -> StoreResult<DestinationState> {
        self.call(
            "destination_state",
            Limit::Quick,
            self.inner.destination_state(name),
        )
        .await
    }
    async fn pause_destination(
        &self,
        name: &str,
        until: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<()> {
        self.call(
            "pause_destination",
            Limit::Quick,
            self.inner.pause_destination(name, until, reason),
        )
        .await
    }
    async fn resume_destination(&self, name: &str) -> StoreResult<()> {
        self.call(
            "resume_destination",
            Limit::Quick,
            self.inner.resume_destination(name),
        )
        .await
    }
    async fn set_destination_disabled(
        &self,
        name: &str,
        disabled: bool,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        self.call(
            "set_destination_disabled",
            Limit::Quick,
            self.inner.set_destination_disabled(name, disabled, reason),
        )
        .await
    }
    async fn set_circuit_state(&self, name: &str, state: &str) -> StoreResult<()> {
        self.call(
            "set_circuit_state",
            Limit::Quick,
            self.inner.set_circuit_state(name, state),
        )
        .await
    }
    async fn remote_ids(&self, destination: &str, keys: &[String]) -> StoreResult<Vec<RemoteId>> {
        self.call(
            "remote_ids",
            Limit::Quick,
            self.inner.remote_ids(destination, keys),
        )
        .await
    }
    async fn save_remote_ids(&self, destination: &str, ids: &[RemoteId]) -> StoreResult<()> {
        self.call(
            "save_remote_ids",
            Limit::Quick,
            self.inner.save_remote_ids(destination, ids),
        )
        .await
    }
    async fn kv_get(&self, key: &str) -> StoreResult<Option<String>> {
        self.call("kv_get", Limit::Quick, self.inner.kv_get(key))
            .await
    }
    async fn kv_set(&self, key: &str, value: &str) -> StoreResult<()> {
        self.call("kv_set", Limit::Quick, self.inner.kv_set(key, value))
            .await
    }
    async fn kv_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        self.call(
            "kv_get_or_insert",
            Limit::Quick,
            self.inner.kv_get_or_insert(key, value),
        )
        .await
    }
    async fn kv_compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> StoreResult<bool> {
        self.call(
            "kv_compare_and_set",
            Limit::Quick,
            self.inner.kv_compare_and_set(key, expected, value),
        )
        .await
    }
    async fn rate_acquire(
        &self,
        destination: &str,
        interval: Duration,
    ) -> StoreResult<Option<Duration>> {
        self.call(
            "rate_acquire",
            Limit::Quick,
            self.inner.rate_acquire(destination, interval),
        )
        .await
    }
    async fn destination_stats(&self, since: DateTime<Utc>) -> StoreResult<Vec<DestinationStats>> {
        self.call(
            "destination_stats",
            Limit::Long,
            self.inner.destination_stats(since),
        )
        .await
    }
    async fn purge(&self, policy: &PurgePolicy) -> StoreResult<PurgeReport> {
        self.call("purge", Limit::Long, self.inner.purge(policy))
            .await
    }
    async fn list_contacts(
        &self,
        filter: &ContactFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Contact>> {
        self.call(
            "list_contacts",
            Limit::Long,
            self.inner.list_contacts(filter, before, limit),
        )
        .await
    }
    async fn create_api_key(&self, key: NewApiKey) -> StoreResult<ApiKey> {
        self.call(
            "create_api_key",
            Limit::Quick,
            self.inner.create_api_key(key),
        )
        .await
    }
    async fn api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.call("api_keys", Limit::Quick, self.inner.api_keys())
            .await
    }
    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        self.call(
            "api_key_by_hash",
            Limit::Quick,
            self.inner.api_key_by_hash(hash),
        )
        .await
    }
    async fn revoke_api_key(&self, name_or_id: &str) -> StoreResult<ApiKey> {
        self.call(
            "revoke_api_key",
            Limit::Quick,
            self.inner.revoke_api_key(name_or_id),
        )
        .await
    }
    async fn touch_api_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        self.call(
            "touch_api_key",
            Limit::Quick,
            self.inner.touch_api_key(id, at),
        )
        .await
    }
    async fn create_session(&self, session: NewSession) -> StoreResult<()> {
        self.call(
            "create_session",
            Limit::Quick,
            self.inner.create_session(session),
        )
        .await
    }
    async fn session(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<Session>> {
        self.call("session", Limit::Quick, self.inner.session(token_hash, now))
            .await
    }
    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        self.call(
            "delete_session",
            Limit::Quick,
            self.inner.delete_session(token_hash),
        )
        .await
    }
    async fn add_review_item(&self, item: ReviewItem) -> StoreResult<()> {
        self.call(
            "add_review_item",
            Limit::Quick,
            self.inner.add_review_item(item),
        )
        .await
    }
    async fn list_review_items(
        &self,
        status: Option<ReviewStatus>,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<ReviewItem>> {
        self.call(
            "list_review_items",
            Limit::Quick,
            self.inner.list_review_items(status, before, limit),
        )
        .await
    }
    async fn get_review_item(&self, id: Uuid) -> StoreResult<Option<ReviewItem>> {
        self.call(
            "get_review_item",
            Limit::Quick,
            self.inner.get_review_item(id),
        )
        .await
    }
    async fn resolve_review_item(
        &self,
        id: Uuid,
        status: ReviewStatus,
        resolution: Option<String>,
        actor: &str,
    ) -> StoreResult<ReviewItem> {
        self.call(
            "resolve_review_item",
            Limit::Quick,
            self.inner
                .resolve_review_item(id, status, resolution, actor),
        )
        .await
    }
    async fn privacy_export(&self, request: &PrivacyRequest) -> StoreResult<PrivacyExport> {
        self.call(
            "privacy_export",
            Limit::Long,
            self.inner.privacy_export(request),
        )
        .await
    }
    async fn privacy_erase(&self, request: &PrivacyRequest) -> StoreResult<EraseReport> {
        self.call(
            "privacy_erase",
            Limit::Long,
            self.inner.privacy_erase(request),
        )
        .await
    }
    async fn add_privacy_audit(&self, record: &AuditRecord) -> StoreResult<()> {
        self.call(
            "add_privacy_audit",
            Limit::Quick,
            self.inner.add_privacy_audit(record),
        )
        .await
    }
    async fn stale_contacts(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.call(
            "stale_contacts",
            Limit::Long,
            self.inner.stale_contacts(before, limit),
        )
        .await
    }
    async fn privacy_audit(
        &self,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<AuditRecord>> {
        self.call(
            "privacy_audit",
            Limit::Quick,
            self.inner.privacy_audit(before, limit),
        )
        .await
    }
    async fn lead_counts(
        &self,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<LeadCount>> {
        self.call(
            "lead_counts",
            Limit::Long,
            self.inner.lead_counts(since, bucket_secs),
        )
        .await
    }
    async fn attempt_buckets(
        &self,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<AttemptBucket>> {
        self.call(
            "attempt_buckets",
            Limit::Long,
            self.inner.attempt_buckets(since, bucket_secs),
        )
        .await
    }

    async fn close(&self) {
        if tokio::time::timeout(self.long, self.inner.close())
            .await
            .is_err()
        {
            tracing::warn!("the store did not close within storage.long_timeout");
        }
    }
}

#[async_trait]
impl GoldenStore for Deadline {
    async fn contacts_changed(
        &self,
        since: Option<DateTime<Utc>>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: usize,
    ) -> StoreResult<Vec<Contact>> {
        self.call(
            "contacts_changed",
            Limit::Quick,
            self.inner.contacts_changed(since, after, limit),
        )
        .await
    }
    async fn erased(&self, subject_hash: &str) -> StoreResult<bool> {
        self.call("erased", Limit::Quick, self.inner.erased(subject_hash))
            .await
    }
}
