//! PostgreSQL schema migrations, applied at start-up (under an advisory lock,
//! so several nodes starting at once apply each migration once) and by
//! `leadrelay migrate`. The tables mirror the SQLite schema: times are
//! milliseconds since the Unix epoch, ids are UUIDv7 (time-ordered), so
//! time windows are id ranges.

pub const MIGRATIONS: &[&str] = &[
    // 1: events, contacts, the outbox (deliveries), attempts, destination
    // state, remote ids, kv, shared rate-limit state.
    r#"
CREATE TABLE events (
    id UUID PRIMARY KEY,
    type TEXT NOT NULL,
    origin_kind TEXT NOT NULL,
    origin_name TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    occurred_at BIGINT NOT NULL,
    contact_id UUID,
    email TEXT,
    spam BOOLEAN NOT NULL DEFAULT FALSE,
    idempotency_key TEXT,
    external_id TEXT,
    doc TEXT NOT NULL,
    raw_content_type TEXT,
    raw_body TEXT
);
CREATE INDEX events_contact ON events(contact_id);
CREATE INDEX events_type ON events(type, id);
CREATE UNIQUE INDEX events_external ON events(origin_kind, origin_name, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    event_id UUID NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_created ON idempotency_keys(created_at);

CREATE TABLE contacts (
    id UUID PRIMARY KEY,
    email TEXT UNIQUE,
    phone TEXT,
    domain TEXT,
    doc TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX contacts_domain ON contacts(domain);

CREATE TABLE deliveries (
    id UUID PRIMARY KEY,
    event_id UUID NOT NULL,
    destination TEXT NOT NULL,
    contact_key TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    next_attempt_at BIGINT,
    lease_id UUID,
    last_status INTEGER,
    last_error TEXT,
    reason TEXT,
    finished_at BIGINT,
    replay_of UUID,
    replayed_by UUID,
    overrides TEXT
);
CREATE INDEX deliveries_due ON deliveries(destination, next_attempt_at)
    WHERE state IN ('pending', 'scheduled', 'in_flight');
CREATE INDEX deliveries_contact ON deliveries(destination, contact_key, id)
    WHERE state IN ('pending', 'scheduled', 'in_flight');
CREATE INDEX deliveries_event ON deliveries(event_id);
CREATE INDEX deliveries_dead ON deliveries(destination, id) WHERE state = 'dead';
-- The outbox churns: keep its statistics and dead tuples in check.
ALTER TABLE deliveries SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_scale_factor = 0.05);

CREATE TABLE attempts (
    id UUID PRIMARY KEY,
    delivery_id UUID NOT NULL,
    destination TEXT NOT NULL,
    number INTEGER NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    method TEXT,
    url TEXT,
    request_bytes BIGINT,
    request_sha256 TEXT,
    status INTEGER,
    response_excerpt TEXT,
    error_class TEXT,
    outcome TEXT NOT NULL,
    message TEXT,
    next_attempt_at BIGINT
);
CREATE INDEX attempts_delivery ON attempts(delivery_id, number);

CREATE TABLE destination_state (
    name TEXT PRIMARY KEY,
    paused_until BIGINT,
    pause_reason TEXT,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    disabled_reason TEXT,
    circuit TEXT NOT NULL DEFAULT 'closed',
    updated_at BIGINT NOT NULL
);

CREATE TABLE remote_ids (
    destination TEXT NOT NULL,
    key TEXT NOT NULL,
    object TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (destination, key, object)
);

CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- GCRA state per rate-limited destination: the theoretical arrival time of
-- the next request, shared by every node.
CREATE TABLE rate_limits (
    destination TEXT PRIMARY KEY,
    tat BIGINT NOT NULL
);
"#,
    // 2: the admin API and dashboard: API keys and sessions (hashes only),
    // the review queue, the privacy audit log.
    r#"
CREATE TABLE api_keys (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
-- A name names one active key; revoked keys keep theirs for the record.
CREATE UNIQUE INDEX api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL;

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    key_id UUID NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE review_items (
    id UUID PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    summary TEXT NOT NULL,
    contact_id UUID,
    destination TEXT,
    details TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    resolved_at BIGINT,
    resolved_by TEXT,
    resolution TEXT
);
CREATE INDEX review_items_status ON review_items(status, id);

CREATE TABLE privacy_audit (
    id UUID PRIMARY KEY,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject_hash TEXT NOT NULL,
    at BIGINT NOT NULL,
    reason TEXT,
    details TEXT NOT NULL
);
CREATE INDEX privacy_audit_subject ON privacy_audit(subject_hash);
"#,
    // 3: the sales pipeline: durable timers (handoff, SLA) claimed under a
    // lease like deliveries, and owner assignments (capacity, account owners).
    r#"
CREATE TABLE timers (
    id UUID PRIMARY KEY,
    kind TEXT NOT NULL,
    contact_id UUID NOT NULL,
    due_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    lease_id UUID,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    fired_at BIGINT,
    outcome TEXT,
    data TEXT NOT NULL
);
-- Due work. A claimed timer's due_at is its lease expiry.
CREATE INDEX timers_due ON timers(due_at) WHERE state = 'pending';
CREATE INDEX timers_contact ON timers(contact_id, id);

CREATE TABLE lead_owners (
    contact_id UUID PRIMARY KEY,
    owner TEXT NOT NULL,
    domain TEXT,
    open BOOLEAN NOT NULL,
    assigned_at BIGINT NOT NULL
);
CREATE INDEX lead_owners_open ON lead_owners(owner) WHERE open;
CREATE INDEX lead_owners_domain ON lead_owners(domain, assigned_at);
"#,
    // 4: idempotency keys are per client (`api:<key name>`, no longer one
    // `api` scope for every key) and remember a fingerprint of the request
    // they named, so a reused key with another body is refused, not replayed.
    r#"
ALTER TABLE idempotency_keys ADD COLUMN fingerprint TEXT;
UPDATE idempotency_keys k SET scope = 'api:' || e.origin_name
FROM events e WHERE k.scope = 'api' AND e.id = k.event_id AND e.origin_kind = 'api';
"#,
    // 5: fixable dead letters.
    r#"
-- fixable dead letters: the cause of each dead letter a person can
-- fix in the destination, retried automatically (bounded) once it may be gone.
CREATE TABLE fixable_dead_letters (
    delivery_id UUID PRIMARY KEY,
    destination TEXT NOT NULL,
    cause_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    object TEXT,
    field TEXT NOT NULL,
    value TEXT,
    message TEXT NOT NULL,
    retries INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    next_retry_at BIGINT NOT NULL
);
CREATE INDEX fixable_due ON fixable_dead_letters(next_retry_at);
CREATE INDEX fixable_cause ON fixable_dead_letters(destination, cause_key);
"#,
    // 6: report rollups (touchpoints, lead milestones, deals with their
    // stage history, attribution credits, campaign costs), maintained by a
    // batched background pass, never by the ingest transaction.
    r#"
-- report rollups
CREATE TABLE report_touches (
    event_id UUID PRIMARY KEY,
    contact_id UUID NOT NULL,
    at BIGINT NOT NULL,
    channel TEXT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL
);
CREATE INDEX report_touches_contact ON report_touches(contact_id, at);
CREATE TABLE report_leads (
    contact_id UUID PRIMARY KEY,
    first_at BIGINT NOT NULL,
    origin TEXT NOT NULL,
    channel TEXT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL
);
CREATE INDEX report_leads_first ON report_leads(first_at);
CREATE TABLE report_deals (
    deal_id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    closed_at BIGINT,
    doc TEXT NOT NULL
);
CREATE INDEX report_deals_created ON report_deals(created_at);
CREATE TABLE report_credits (
    deal_id TEXT NOT NULL,
    model TEXT NOT NULL,
    channel TEXT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL,
    credit DOUBLE PRECISION NOT NULL,
    revenue DOUBLE PRECISION NOT NULL,
    closed_at BIGINT NOT NULL,
    PRIMARY KEY (deal_id, model, channel, source, campaign)
);
CREATE INDEX report_credits_closed ON report_credits(model, closed_at);
CREATE TABLE report_campaign_costs (
    campaign TEXT NOT NULL,
    month TEXT NOT NULL,
    channel TEXT,
    cost DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (campaign, month)
);
"#,
    // 7: attempt request capture. The request as sent (headers and body,
    // secrets replaced by their env var names, body capped) and the response
    // headers, as one JSON document per attempt.
    r#"
-- attempt request capture
ALTER TABLE attempts ADD COLUMN exchange TEXT;
"#,
    // 8: KPI rollups: each person's lead response clock (MQL to first
    // sales activity), handoffs (joined with their deliveries for handoff
    // completion), hourly counters of ratio KPIs (data quality) and one
    // heartbeat row per minute ingest was up; and which person a CRM's
    // person/contact/lead id belongs to (learnt from events naming both), so
    // a CRM activity that names only the CRM's id still stops the clock.
    r#"
-- report KPI rollups
CREATE TABLE report_responses (
    contact_id UUID PRIMARY KEY,
    mql_at BIGINT NOT NULL,
    responded_at BIGINT
);
CREATE INDEX report_responses_mql ON report_responses(mql_at);
CREATE TABLE report_handoffs (
    event_id UUID PRIMARY KEY,
    contact_id UUID NOT NULL,
    at BIGINT NOT NULL,
    owner BOOLEAN NOT NULL
);
CREATE INDEX report_handoffs_at ON report_handoffs(at);
CREATE TABLE report_kpi_counts (
    kpi TEXT NOT NULL,
    hour BIGINT NOT NULL,
    num BIGINT NOT NULL,
    den BIGINT NOT NULL,
    PRIMARY KEY (kpi, hour)
);
CREATE TABLE report_heartbeats (
    minute BIGINT PRIMARY KEY
);
CREATE TABLE report_refs (
    ref TEXT PRIMARY KEY,
    contact_id UUID NOT NULL
);
"#,
    // 9: sequence memberships, kept by the shared enrollment model.
    r#"
-- sequence memberships
CREATE TABLE sequence_memberships (
    contact_key TEXT NOT NULL,
    destination TEXT NOT NULL,
    tool TEXT NOT NULL,
    sequence TEXT NOT NULL,
    state TEXT NOT NULL,
    since BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_change TEXT NOT NULL,
    PRIMARY KEY (contact_key, destination)
);
"#,
    // 10: sales feedback rollups: each person's feedback row (dimensions,
    // score, latest rating, deal outcomes) and daily counters by those
    // dimensions and score bucket, kept by the feedback pass.
    r#"
-- sales feedback
CREATE TABLE feedback_people (
    contact_id UUID PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE feedback_counts (
    day BIGINT NOT NULL,
    origin TEXT NOT NULL,
    channel TEXT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL,
    owner TEXT NOT NULL,
    score_bucket BIGINT NOT NULL,
    leads BIGINT NOT NULL,
    rated BIGINT NOT NULL,
    rating_sum BIGINT NOT NULL,
    good BIGINT NOT NULL,
    poor BIGINT NOT NULL,
    opportunities BIGINT NOT NULL,
    won BIGINT NOT NULL,
    PRIMARY KEY (day, origin, channel, source, campaign, owner, score_bucket)
);
"#, // 11: the golden record as a sync system reads the contacts changed
    // since a time, oldest first (`(updated_at, id)` pages); the retention
    // job's idle contacts use it too.
    r#"
CREATE INDEX contacts_updated ON contacts(updated_at, id);
"#,
];

pub fn current_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// The advisory lock key held while migrating ("leadrelay" in ASCII, folded).
pub const MIGRATION_LOCK: i64 = 0x6c65_6164_7265_6c61;
