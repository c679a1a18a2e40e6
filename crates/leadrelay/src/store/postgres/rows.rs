//! Row mapping for PostgreSQL, and the column arrays that multi-row
//! `UNNEST` writes bind.

use deadpool_postgres::Transaction;
use leadrelay_model::{Contact, Event, RawPayload};
use tokio_postgres::Row as PgRow;
use uuid::Uuid;

use super::{exec, query};
pub use crate::store::common::{decode_doc, from_ms};
use crate::store::{
    Attempt, Completion, Delivery, DeliveryState, DestinationState, StoreError, StoreResult,
    Transition,
};

pub const EVENT_COLS: &str = "id, doc, raw_content_type, raw_body, contact_id";
pub const DELIVERY_COLS: &str = "id, event_id, destination, contact_key, state, attempts, failures, created_at, updated_at, \
     next_attempt_at, lease_id, last_status, last_error, reason, finished_at, replay_of, replayed_by, overrides";
pub const ATTEMPT_COLS: &str = "id, delivery_id, destination, number, started_at, duration_ms, method, url, request_bytes, \
     request_sha256, status, response_excerpt, error_class, outcome, message, next_attempt_at, exchange";
pub const DEST_COLS: &str = "name, paused_until, pause_reason, disabled, disabled_reason, circuit";

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub fn event_from_row(r: &PgRow) -> StoreResult<Event> {
    let id: Uuid = r.try_get(0).map_err(db)?;
    let doc: String = r.try_get(1).map_err(db)?;
    let mut ev: Event = decode_doc(&doc, &format_args!("event {id}"))?;
    ev.raw = RawPayload {
        content_type: r
            .try_get::<_, Option<String>>(2)
            .map_err(db)?
            .unwrap_or_default(),
        body: r
            .try_get::<_, Option<String>>(3)
            .map_err(db)?
            .unwrap_or_default(),
    };
    ev.contact_id = r.try_get(4).map_err(db)?;
    Ok(ev)
}

pub fn delivery_from_row(r: &PgRow) -> StoreResult<Delivery> {
    let id: Uuid = r.try_get(0).map_err(db)?;
    let state: String = r.try_get(4).map_err(db)?;
    let overrides: Option<String> = r.try_get(17).map_err(db)?;
    Ok(Delivery {
        id,
        event_id: r.try_get(1).map_err(db)?,
        destination: r.try_get(2).map_err(db)?,
        contact_key: r.try_get(3).map_err(db)?,
        state: DeliveryState::parse(&state).ok_or_else(|| {
            StoreError::Corrupt(format!("delivery {id}: unknown state {state:?}"))
        })?,
        attempts: r.try_get::<_, i32>(5).map_err(db)?.max(0) as u32,
        failures: r.try_get::<_, i32>(6).map_err(db)?.max(0) as u32,
        created_at: from_ms(r.try_get(7).map_err(db)?),
        updated_at: from_ms(r.try_get(8).map_err(db)?),
        next_attempt_at: r.try_get::<_, Option<i64>>(9).map_err(db)?.map(from_ms),
        lease_id: r.try_get(10).map_err(db)?,
        last_status: r
            .try_get::<_, Option<i32>>(11)
            .map_err(db)?
            .map(|s| s as u16),
        last_error: r.try_get(12).map_err(db)?,
        reason: r.try_get(13).map_err(db)?,
        finished_at: r.try_get::<_, Option<i64>>(14).map_err(db)?.map(from_ms),
        replay_of: r.try_get(15).map_err(db)?,
        replayed_by: r.try_get(16).map_err(db)?,
        overrides: overrides
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("delivery {id} overrides: {e}")))?,
    })
}

pub fn attempt_from_row(r: &PgRow) -> StoreResult<Attempt> {
    Ok(Attempt {
        id: r.try_get(0).map_err(db)?,
        delivery_id: r.try_get(1).map_err(db)?,
        destination: r.try_get(2).map_err(db)?,
        number: r.try_get::<_, i32>(3).map_err(db)?.max(0) as u32,
        started_at: from_ms(r.try_get(4).map_err(db)?),
        duration_ms: r.try_get::<_, i64>(5).map_err(db)?.max(0) as u64,
        method: r.try_get(6).map_err(db)?,
        url: r.try_get(7).map_err(db)?,
        request_bytes: r
            .try_get::<_, Option<i64>>(8)
            .map_err(db)?
            .map(|v| v.max(0) as u64),
        request_sha256: r.try_get(9).map_err(db)?,
        status: r
            .try_get::<_, Option<i32>>(10)
            .map_err(db)?
            .map(|s| s as u16),
        response_excerpt: r.try_get(11).map_err(db)?,
        error_class: r.try_get(12).map_err(db)?,
        outcome: r.try_get(13).map_err(db)?,
        message: r.try_get(14).map_err(db)?,
        next_attempt_at: r.try_get::<_, Option<i64>>(15).map_err(db)?.map(from_ms),
        exchange: crate::store::common::decode_exchange(
            &r.try_get::<_, Uuid>(0).map_err(db)?.to_string(),
            r.try_get::<_, Option<String>>(16).map_err(db)?.as_deref(),
        )?,
    })
}

pub fn dest_state_from_row(r: &PgRow) -> StoreResult<DestinationState> {
    Ok(DestinationState {
        name: r.try_get(0).map_err(db)?,
        paused_until: r.try_get::<_, Option<i64>>(1).map_err(db)?.map(from_ms),
        pause_reason: r.try_get(2).map_err(db)?,
        disabled: r.try_get(3).map_err(db)?,
        disabled_reason: r.try_get(4).map_err(db)?,
        circuit: r.try_get(5).map_err(db)?,
    })
}

/// Contacts as column arrays.
pub struct ContactColumns {
    pub id: Vec<Uuid>,
    pub email: Vec<Option<String>>,
    pub phone: Vec<Option<String>>,
    pub domain: Vec<Option<String>>,
    pub doc: Vec<String>,
    pub created_at: Vec<i64>,
    pub updated_at: Vec<i64>,
}

impl ContactColumns {
    pub fn new(contacts: &[&Contact]) -> StoreResult<Self> {
        let mut c = ContactColumns {
            id: vec![],
            email: vec![],
            phone: vec![],
            domain: vec![],
            doc: vec![],
            created_at: vec![],
            updated_at: vec![],
        };
        for x in contacts {
            c.id.push(x.id);
            c.email
                .push(x.data.email.as_ref().map(|e| e.as_str().to_string()));
            c.phone
                .push(x.data.phone.as_ref().map(|p| p.as_str().to_string()));
            c.domain.push(x.data.domain.clone());
            c.doc
                .push(serde_json::to_string(x).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            c.created_at.push(x.created_at.timestamp_millis());
            c.updated_at.push(x.updated_at.timestamp_millis());
        }
        Ok(c)
    }
}

/// Events as column arrays.
#[derive(Default)]
pub struct EventColumns {
    pub id: Vec<Uuid>,
    kind: Vec<String>,
    origin_kind: Vec<String>,
    origin_name: Vec<String>,
    received_at: Vec<i64>,
    occurred_at: Vec<i64>,
    contact_id: Vec<Option<Uuid>>,
    email: Vec<Option<String>>,
    spam: Vec<bool>,
    idempotency_key: Vec<Option<String>>,
    external_id: Vec<Option<String>>,
    doc: Vec<String>,
    raw_content_type: Vec<String>,
    raw_body: Vec<String>,
}

impl EventColumns {
    pub fn push(&mut self, e: &Event, doc: &str, contact_id: Option<Uuid>) {
        self.id.push(e.id);
        self.kind.push(e.event_type.as_str().to_string());
        self.origin_kind.push(e.origin.kind.as_str().to_string());
        self.origin_name.push(e.origin.name.clone());
        self.received_at.push(e.received_at.timestamp_millis());
        self.occurred_at.push(e.occurred_at.timestamp_millis());
        self.contact_id.push(contact_id);
        self.email
            .push(e.contact.email.as_ref().map(|m| m.as_str().to_string()));
        self.spam.push(e.spam);
        self.idempotency_key.push(e.idempotency_key.clone());
        self.external_id.push(e.external_id.clone());
        self.doc.push(doc.to_string());
        self.raw_content_type.push(e.raw.content_type.clone());
        self.raw_body.push(e.raw.body.clone());
    }

    /// Inserts all rows; returns how many were new (a vendor event id
    /// another node stored first is skipped).
    pub async fn insert(&self, tx: &Transaction<'_>) -> Result<u64, tokio_postgres::Error> {
        exec(
            tx,
            "INSERT INTO events (id, type, origin_kind, origin_name, received_at, occurred_at, contact_id, email, spam, \
               idempotency_key, external_id, doc, raw_content_type, raw_body) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::uuid[], \
               $8::text[], $9::bool[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[]) \
             ON CONFLICT DO NOTHING",
            &[
                &self.id,
                &self.kind,
                &self.origin_kind,
                &self.origin_name,
                &self.received_at,
                &self.occurred_at,
                &self.contact_id,
                &self.email,
                &self.spam,
                &self.idempotency_key,
                &self.external_id,
                &self.doc,
                &self.raw_content_type,
                &self.raw_body,
            ],
        )
        .await
    }
}

/// New deliveries as column arrays.
#[derive(Default)]
pub struct DeliveryColumns {
    pub id: Vec<Uuid>,
    event_id: Vec<Uuid>,
    destination: Vec<String>,
    contact_key: Vec<String>,
    now: Vec<i64>,
}

impl DeliveryColumns {
    pub fn push(
        &mut self,
        id: Uuid,
        event_id: Uuid,
        destination: &str,
        contact_key: &str,
        now: i64,
    ) {
        self.id.push(id);
        self.event_id.push(event_id);
        self.destination.push(destination.to_string());
        self.contact_key.push(contact_key.to_string());
        self.now.push(now);
    }

    pub async fn insert(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        exec(
            tx,
            "INSERT INTO deliveries (id, event_id, destination, contact_key, state, created_at, updated_at, next_attempt_at) \
             SELECT u.id, u.event_id, u.destination, u.contact_key, 'pending', u.now, u.now, u.now \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[]) AS u(id, event_id, destination, contact_key, now)",
            &[&self.id, &self.event_id, &self.destination, &self.contact_key, &self.now],
        )
        .await?;
        Ok(())
    }
}

/// Attempts as column arrays.
#[derive(Default)]
pub struct AttemptColumns {
    pub id: Vec<Uuid>,
    delivery_id: Vec<Uuid>,
    destination: Vec<String>,
    number: Vec<i32>,
    started_at: Vec<i64>,
    duration_ms: Vec<i64>,
    method: Vec<Option<String>>,
    url: Vec<Option<String>>,
    request_bytes: Vec<Option<i64>>,
    request_sha256: Vec<Option<String>>,
    status: Vec<Option<i32>>,
    response_excerpt: Vec<Option<String>>,
    error_class: Vec<Option<String>>,
    outcome: Vec<String>,
    message: Vec<Option<String>>,
    next_attempt_at: Vec<Option<i64>>,
    exchange: Vec<Option<String>>,
}

impl AttemptColumns {
    pub fn push(&mut self, a: &Attempt) {
        self.id.push(a.id);
        self.delivery_id.push(a.delivery_id);
        self.destination.push(a.destination.clone());
        self.number.push(a.number as i32);
        self.started_at.push(a.started_at.timestamp_millis());
        self.duration_ms.push(a.duration_ms as i64);
        self.method.push(a.method.clone());
        self.url.push(a.url.clone());
        self.request_bytes.push(a.request_bytes.map(|v| v as i64));
        self.request_sha256.push(a.request_sha256.clone());
        self.status.push(a.status.map(i32::from));
        self.response_excerpt.push(a.response_excerpt.clone());
        self.error_class.push(a.error_class.clone());
        self.outcome.push(a.outcome.clone());
        self.message.push(a.message.clone());
        self.next_attempt_at
            .push(a.next_attempt_at.map(|t| t.timestamp_millis()));
        self.exchange
            .push(crate::store::common::encode_exchange(a.exchange.as_ref()));
    }

    pub async fn insert(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        exec(
            tx,
            "INSERT INTO attempts (id, delivery_id, destination, number, started_at, duration_ms, method, url, request_bytes, \
               request_sha256, status, response_excerpt, error_class, outcome, message, next_attempt_at, exchange) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::bigint[], $6::bigint[], $7::text[], $8::text[], \
               $9::bigint[], $10::text[], $11::int[], $12::text[], $13::text[], $14::text[], $15::text[], $16::bigint[], $17::text[]) \
             ON CONFLICT DO NOTHING",
            &[
                &self.id,
                &self.delivery_id,
                &self.destination,
                &self.number,
                &self.started_at,
                &self.duration_ms,
                &self.method,
                &self.url,
                &self.request_bytes,
                &self.request_sha256,
                &self.status,
                &self.response_excerpt,
                &self.error_class,
                &self.outcome,
                &self.message,
                &self.next_attempt_at,
                &self.exchange,
            ],
        )
        .await?;
        Ok(())
    }
}

/// State changes of completed deliveries, applied in one UPDATE. A row whose
/// lease is no longer current is left alone (its attempt is still logged).
#[derive(Default)]
pub struct UpdateColumns {
    id: Vec<Uuid>,
    lease: Vec<Uuid>,
    state: Vec<String>,
    tried: Vec<i32>,
    failed: Vec<i32>,
    status: Vec<Option<i32>>,
    set_status: Vec<bool>,
    error: Vec<Option<String>>,
    set_error: Vec<bool>,
    reason: Vec<Option<String>>,
    next_at: Vec<Option<i64>>,
    finished: Vec<bool>,
}

impl UpdateColumns {
    pub fn push(&mut self, c: &Completion) {
        let tried = c.attempt.is_some() as i32;
        let (state, failed, status, set_status, error, set_error, reason, next_at, finished) =
            match &c.transition {
                Transition::Delivered { .. } => {
                    let status = c.attempt.as_ref().and_then(|a| a.status).map(i32::from);
                    ("delivered", 0, status, true, None, true, None, None, true)
                }
                Transition::Scheduled {
                    at,
                    failed,
                    status,
                    error,
                } => (
                    "scheduled",
                    *failed as i32,
                    status.map(i32::from),
                    true,
                    Some(error.clone()),
                    true,
                    None,
                    Some(at.timestamp_millis()),
                    false,
                ),
                Transition::Dead { status, reason } => (
                    "dead",
                    tried,
                    status.map(i32::from),
                    true,
                    Some(reason.clone()),
                    true,
                    Some(reason.clone()),
                    None,
                    true,
                ),
                Transition::Skipped { reason } => (
                    "skipped",
                    0,
                    None,
                    false,
                    None,
                    false,
                    Some(reason.clone()),
                    None,
                    true,
                ),
                Transition::Released => {
                    ("released", 0, None, false, None, false, None, None, false)
                }
            };
        self.id.push(c.delivery_id);
        self.lease.push(c.lease_id);
        self.state.push(state.to_string());
        self.tried.push(tried);
        self.failed.push(failed);
        self.status.push(status);
        self.set_status.push(set_status);
        self.error.push(error);
        self.set_error.push(set_error);
        self.reason.push(reason);
        self.next_at.push(next_at);
        self.finished.push(finished);
    }

    /// Applies the changes; returns the ids whose lease was still current.
    pub async fn apply(
        &self,
        tx: &Transaction<'_>,
        now: i64,
    ) -> Result<Vec<Uuid>, tokio_postgres::Error> {
        if self.id.is_empty() {
            return Ok(Vec::new());
        }
        let rows = query(
            tx,
            "UPDATE deliveries d SET \
               state = CASE WHEN u.state = 'released' THEN (CASE WHEN d.attempts = 0 THEN 'pending' ELSE 'scheduled' END) ELSE u.state END, \
               attempts = d.attempts + u.tried, \
               failures = d.failures + u.failed, \
               last_status = CASE WHEN u.set_status THEN u.status ELSE d.last_status END, \
               last_error = CASE WHEN u.set_error THEN u.error ELSE d.last_error END, \
               reason = COALESCE(u.reason, d.reason), \
               lease_id = NULL, \
               next_attempt_at = CASE WHEN u.state = 'released' THEN $1 ELSE u.next_at END, \
               finished_at = CASE WHEN u.finished THEN $1 ELSE d.finished_at END, \
               updated_at = $1 \
             FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::int[], $6::int[], $7::int[], $8::bool[], $9::text[], $10::bool[], \
               $11::text[], $12::bigint[], $13::bool[]) \
               AS u(id, lease, state, tried, failed, status, set_status, error, set_error, reason, next_at, finished) \
             WHERE d.id = u.id AND d.state = 'in_flight' AND d.lease_id = u.lease \
             RETURNING d.id",
            &[
                &now,
                &self.id,
                &self.lease,
                &self.state,
                &self.tried,
                &self.failed,
                &self.status,
                &self.set_status,
                &self.error,
                &self.set_error,
                &self.reason,
                &self.next_at,
                &self.finished,
            ],
        )
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
