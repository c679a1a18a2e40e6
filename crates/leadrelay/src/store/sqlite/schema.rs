//! SQLite schema migrations, applied in order at start-up and by
//! `leadrelay migrate`. Times are milliseconds since the Unix epoch; ids are
//! UUIDv7 text, which sort by creation time — time windows (listing,
//! statistics, retention) are id ranges, so they need no time indexes.
//! Every index costs writes on the ingest path: keep only those a query needs.

/// Each entry is one migration; its index + 1 is its version.
pub const MIGRATIONS: &[&str] = &[
    // 1: events, contacts, the outbox (deliveries), attempts, destination state.
    r#"
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    origin_kind TEXT NOT NULL,
    origin_name TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    occurred_at INTEGER NOT NULL,
    contact_id TEXT,
    email TEXT,
    spam INTEGER NOT NULL DEFAULT 0,
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
    event_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_created ON idempotency_keys(created_at);

CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    email TEXT UNIQUE,
    phone TEXT,
    domain TEXT,
    doc TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX contacts_domain ON contacts(domain);

CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    contact_key TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    next_attempt_at INTEGER,
    lease_id TEXT,
    last_status INTEGER,
    last_error TEXT,
    reason TEXT,
    finished_at INTEGER,
    replay_of TEXT,
    replayed_by TEXT,
    overrides TEXT
);
-- Due work: active deliveries by destination and time. An in-flight row's
-- next_attempt_at is its lease expiry, so an expired lease is simply due.
CREATE INDEX deliveries_due ON deliveries(destination, next_attempt_at)
    WHERE state IN ('pending', 'scheduled', 'in_flight');
-- Per-contact ordering: the oldest active delivery per contact goes first.
CREATE INDEX deliveries_contact ON deliveries(destination, contact_key, id)
    WHERE state IN ('pending', 'scheduled', 'in_flight');
CREATE INDEX deliveries_event ON deliveries(event_id);
-- The dead-letter queue, per destination.
CREATE INDEX deliveries_dead ON deliveries(destination, id) WHERE state = 'dead';

CREATE TABLE attempts (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    number INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    method TEXT,
    url TEXT,
    request_bytes INTEGER,
    request_sha256 TEXT,
    status INTEGER,
    response_excerpt TEXT,
    error_class TEXT,
    outcome TEXT NOT NULL,
    message TEXT,
    next_attempt_at INTEGER
);
CREATE INDEX attempts_delivery ON attempts(delivery_id, number);

CREATE TABLE destination_state (
    name TEXT PRIMARY KEY,
    paused_until INTEGER,
    pause_reason TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    circuit TEXT NOT NULL DEFAULT 'closed',
    updated_at INTEGER NOT NULL
);

CREATE TABLE remote_ids (
    destination TEXT NOT NULL,
    object TEXT NOT NULL,
    key TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (destination, key, object)
);

CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- GCRA state per rate-limited destination (used when budgets are shared).
CREATE TABLE rate_limits (
    destination TEXT PRIMARY KEY,
    tat INTEGER NOT NULL
);
"#,
    // 2: the admin API and dashboard: API keys and sessions (hashes only),
    // the review queue, the privacy audit log.
    r#"
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
);
-- A name names one active key; revoked keys keep theirs for the record.
CREATE UNIQUE INDEX api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL;

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE review_items (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    summary TEXT NOT NULL,
    contact_id TEXT,
    destination TEXT,
    details TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER,
    resolved_by TEXT,
    resolution TEXT
);
CREATE INDEX review_items_status ON review_items(status, id);

CREATE TABLE privacy_audit (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject_hash TEXT NOT NULL,
    at INTEGER NOT NULL,
    reason TEXT,
    details TEXT NOT NULL
);
CREATE INDEX privacy_audit_subject ON privacy_audit(subject_hash);
"#,
    // 3: the sales pipeline: durable timers (handoff, SLA) claimed under a
    // lease like deliveries, and owner assignments (capacity, account owners).
    r#"
CREATE TABLE timers (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    lease_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    fired_at INTEGER,
    outcome TEXT,
    data TEXT NOT NULL
);
-- Due work. A claimed timer's due_at is its lease expiry.
CREATE INDEX timers_due ON timers(due_at) WHERE state = 'pending';
CREATE INDEX timers_contact ON timers(contact_id, id);

CREATE TABLE lead_owners (
    contact_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    domain TEXT,
    open INTEGER NOT NULL,
    assigned_at INTEGER NOT NULL
);
CREATE INDEX lead_owners_open ON lead_owners(owner) WHERE open = 1;
CREATE INDEX lead_owners_domain ON lead_owners(domain, assigned_at);
"#,
    // 4: idempotency keys are per client (`api:<key name>`, no longer one
    // `api` scope for every key) and remember a fingerprint of the request
    // they named, so a reused key with another body is refused, not replayed.
    r#"
ALTER TABLE idempotency_keys ADD COLUMN fingerprint TEXT;
UPDATE idempotency_keys SET scope = 'api:' || (
    SELECT e.origin_name FROM events e WHERE e.id = idempotency_keys.event_id AND e.origin_kind = 'api')
WHERE scope = 'api' AND EXISTS (
    SELECT 1 FROM events e WHERE e.id = idempotency_keys.event_id AND e.origin_kind = 'api');
"#,
    // 5: fixable dead letters.
    r#"
-- fixable dead letters: the cause of each dead letter a person can
-- fix in the destination, retried automatically (bounded) once it may be gone.
CREATE TABLE fixable_dead_letters (
    delivery_id TEXT PRIMARY KEY,
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
    event_id TEXT PRIMARY KEY,
    contact_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    channel TEXT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL
);
CREATE INDEX report_touches_contact ON report_touches(contact_id, at);
CREATE TABLE report_leads (
    contact_id TEXT PRIMARY KEY,
    first_at INTEGER NOT NULL,
    origin TEXT NOT NULL,
    channel TEXT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL
);
CREATE INDEX report_leads_first ON report_leads(first_at);
CREATE TABLE report_deals (
    deal_id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    closed_at INTEGER,
    doc TEXT NOT NULL
);
CREATE INDEX report_deals_created ON report_deals(created_at);
CREATE TABLE report_credits (
    deal_id TEXT NOT NULL,
    model TEXT NOT NULL,
    channel TEXT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL,
    credit REAL NOT NULL,
    revenue REAL NOT NULL,
    closed_at INTEGER NOT NULL,
    PRIMARY KEY (deal_id, model, channel, source, campaign)
);
CREATE INDEX report_credits_closed ON report_credits(model, closed_at);
CREATE TABLE report_campaign_costs (
    campaign TEXT NOT NULL,
    month TEXT NOT NULL,
    channel TEXT,
    cost REAL NOT NULL,
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
    contact_id TEXT PRIMARY KEY,
    mql_at BIGINT NOT NULL,
    responded_at BIGINT
);
CREATE INDEX report_responses_mql ON report_responses(mql_at);
CREATE TABLE report_handoffs (
    event_id TEXT PRIMARY KEY,
    contact_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    owner INTEGER NOT NULL
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
    contact_id TEXT NOT NULL
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
    since INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
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
    contact_id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE feedback_counts (
    day INTEGER NOT NULL,
    origin TEXT NOT NULL,
    channel TEXT NOT NULL,
    source TEXT NOT NULL,
    campaign TEXT NOT NULL,
    owner TEXT NOT NULL,
    score_bucket INTEGER NOT NULL,
    leads INTEGER NOT NULL,
    rated INTEGER NOT NULL,
    rating_sum INTEGER NOT NULL,
    good INTEGER NOT NULL,
    poor INTEGER NOT NULL,
    opportunities INTEGER NOT NULL,
    won INTEGER NOT NULL,
    PRIMARY KEY (day, origin, channel, source, campaign, owner, score_bucket)
);
"#, // 11: the golden record as a sync system reads the contacts changed
    // since a time, oldest first (`(updated_at, id)` pages); the retention
    // job's idle contacts use it too.
    r#"
CREATE INDEX contacts_updated ON contacts(updated_at, id);
"#,
];

/// The schema version a fully migrated database has.
pub fn current_version() -> u32 {
    MIGRATIONS.len() as u32
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;
    use rusqlite::Connection;

    #[test]
    fn api_idempotency_keys_move_to_their_api_key_scope() {
        let c = Connection::open_in_memory().unwrap();
        for m in &MIGRATIONS[..3] {
            c.execute_batch(m).unwrap();
        }
        c.execute_batch(
            "INSERT INTO events (id, type, origin_kind, origin_name, received_at, occurred_at, doc) \
             VALUES ('e1', 'lead.created', 'api', 'backend', 0, 0, '{}'), \
                    ('e2', 'lead.created', 'form', 'contact', 0, 0, '{}');
             INSERT INTO idempotency_keys (scope, key, event_id, created_at) \
             VALUES ('api', 'k1', 'e1', 0), ('form:contact', 'k1', 'e2', 0), ('api', 'gone', 'e9', 0);",
        )
        .unwrap();
        c.execute_batch(MIGRATIONS[3]).unwrap();
        let mut rows: Vec<(String, String, Option<String>)> = c
            .prepare("SELECT scope, key, fingerprint FROM idempotency_keys ORDER BY scope, key")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            vec![
                ("api".into(), "gone".into(), None),
                ("api:backend".into(), "k1".into(), None),
                ("form:contact".into(), "k1".into(), None),
            ]
        );
    }
}
