//! Row mapping and small SQL helpers for the SQLite store.

use leadrelay_model::{Contact, Event, RawPayload};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

pub use crate::store::common::{decode_doc, escape_like, event_doc, from_ms, uuid_v7_floor};
use crate::store::{Attempt, Delivery, DeliveryState, DestinationState, StoreError, StoreResult};

pub const EVENT_COLS: &str = "id, doc, raw_content_type, raw_body, contact_id";
pub const DELIVERY_COLS: &str = "id, event_id, destination, contact_key, state, attempts, failures, created_at, updated_at, \
     next_attempt_at, lease_id, last_status, last_error, reason, finished_at, replay_of, replayed_by, overrides";
pub const ATTEMPT_COLS: &str = "id, delivery_id, destination, number, started_at, duration_ms, method, url, request_bytes, \
     request_sha256, status, response_excerpt, error_class, outcome, message, next_attempt_at, exchange";
pub const DEST_COLS: &str = "name, paused_until, pause_reason, disabled, disabled_reason, circuit";

/// Maps SQLite errors: constraint violations are conflicts; everything
/// else means the store cannot take the write right now.
pub fn map_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(e.to_string())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

pub fn parse_uuid(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("bad id {s:?}: {e}")))
}

pub fn opt_uuid(s: Option<String>) -> StoreResult<Option<Uuid>> {
    s.as_deref().map(parse_uuid).transpose()
}

pub fn event_from_row(r: &Row<'_>) -> rusqlite::Result<StoreResult<Event>> {
    let id: String = r.get(0)?;
    let doc: String = r.get(1)?;
    let content_type: Option<String> = r.get(2)?;
    let body: Option<String> = r.get(3)?;
    let contact_id: Option<String> = r.get(4)?;
    let build = || -> StoreResult<Event> {
        let mut ev: Event = decode_doc(&doc, &format_args!("event {id}"))?;
        ev.raw = RawPayload {
            content_type: content_type.unwrap_or_default(),
            body: body.unwrap_or_default(),
        };
        ev.contact_id = opt_uuid(contact_id)?;
        Ok(ev)
    };
    Ok(build())
}

pub fn insert_event(
    c: &Connection,
    event: &Event,
    doc: &str,
    contact_id: Option<Uuid>,
) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO events (id, type, origin_kind, origin_name, received_at, occurred_at, contact_id, email, spam, \
         idempotency_key, external_id, doc, raw_content_type, raw_body) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )
    .map_err(map_err)?
    .execute(params![
        event.id.to_string(),
        event.event_type.as_str(),
        event.origin.kind.as_str(),
        event.origin.name,
        event.received_at.timestamp_millis(),
        event.occurred_at.timestamp_millis(),
        contact_id.map(|c| c.to_string()),
        event.contact.email.as_ref().map(|e| e.as_str()),
        event.spam as i64,
        event.idempotency_key,
        event.external_id,
        doc,
        event.raw.content_type,
        event.raw.body,
    ])
    .map_err(map_err)?;
    Ok(())
}

pub fn contact_by(c: &Connection, column: &str, value: &str) -> StoreResult<Option<Contact>> {
    let sql = match column {
        "id" => "SELECT doc FROM contacts WHERE id = ?1",
        _ => "SELECT doc FROM contacts WHERE email = ?1",
    };
    let doc: Option<String> = c
        .prepare_cached(sql)
        .map_err(map_err)?
        .query_row([value], |r| r.get(0))
        .optional()
        .map_err(map_err)?;
    doc.map(|d| decode_doc(&d, &"contact")).transpose()
}

/// Every contact whose (normalised) company domain is `domain`.
pub fn contacts_by_domain(c: &Connection, domain: &str) -> StoreResult<Vec<Contact>> {
    let mut stmt = c
        .prepare_cached("SELECT doc FROM contacts WHERE domain = ?1 ORDER BY id")
        .map_err(map_err)?;
    let docs = stmt
        .query_map([domain], |r| r.get::<_, String>(0))
        .map_err(map_err)?
        .collect::<Result<Vec<String>, _>>()
        .map_err(map_err)?;
    docs.iter().map(|d| decode_doc(d, &"contact")).collect()
}

pub fn upsert_contact(c: &Connection, contact: &Contact) -> StoreResult<()> {
    let doc = serde_json::to_string(contact).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    c.prepare_cached(
        "INSERT INTO contacts (id, email, phone, domain, doc, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT(id) DO UPDATE SET email = excluded.email, phone = excluded.phone, domain = excluded.domain, \
         doc = excluded.doc, updated_at = excluded.updated_at",
    )
    .map_err(map_err)?
    .execute(params![
        contact.id.to_string(),
        contact.data.email.as_ref().map(|e| e.as_str()),
        contact.data.phone.as_ref().map(|p| p.as_str()),
        contact.data.domain,
        doc,
        contact.created_at.timestamp_millis(),
        contact.updated_at.timestamp_millis(),
    ])
    .map_err(map_err)?;
    Ok(())
}

pub fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<StoreResult<Delivery>> {
    let id: String = r.get(0)?;
    let event_id: String = r.get(1)?;
    let state: String = r.get(4)?;
    let overrides: Option<String> = r.get(17)?;
    let build = || -> StoreResult<Delivery> {
        Ok(Delivery {
            id: parse_uuid(&id)?,
            event_id: parse_uuid(&event_id)?,
            destination: r.get(2).map_err(map_err)?,
            contact_key: r.get(3).map_err(map_err)?,
            state: DeliveryState::parse(&state).ok_or_else(|| {
                StoreError::Corrupt(format!("delivery {id}: unknown state {state:?}"))
            })?,
            attempts: r.get::<_, i64>(5).map_err(map_err)? as u32,
            failures: r.get::<_, i64>(6).map_err(map_err)? as u32,
            created_at: from_ms(r.get(7).map_err(map_err)?),
            updated_at: from_ms(r.get(8).map_err(map_err)?),
            next_attempt_at: r.get::<_, Option<i64>>(9).map_err(map_err)?.map(from_ms),
            lease_id: opt_uuid(r.get(10).map_err(map_err)?)?,
            last_status: r
                .get::<_, Option<i64>>(11)
                .map_err(map_err)?
                .map(|s| s as u16),
            last_error: r.get(12).map_err(map_err)?,
            reason: r.get(13).map_err(map_err)?,
            finished_at: r.get::<_, Option<i64>>(14).map_err(map_err)?.map(from_ms),
            replay_of: opt_uuid(r.get(15).map_err(map_err)?)?,
            replayed_by: opt_uuid(r.get(16).map_err(map_err)?)?,
            overrides: overrides
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("delivery {id} overrides: {e}")))?,
        })
    };
    Ok(build())
}

pub fn attempt_from_row(r: &Row<'_>) -> rusqlite::Result<StoreResult<Attempt>> {
    let id: String = r.get(0)?;
    let delivery_id: String = r.get(1)?;
    let attempt = Attempt {
        id: Uuid::nil(),
        delivery_id: Uuid::nil(),
        destination: r.get(2)?,
        number: r.get::<_, i64>(3)? as u32,
        started_at: from_ms(r.get(4)?),
        duration_ms: r.get::<_, i64>(5)?.max(0) as u64,
        method: r.get(6)?,
        url: r.get(7)?,
        request_bytes: r.get::<_, Option<i64>>(8)?.map(|v| v.max(0) as u64),
        request_sha256: r.get(9)?,
        status: r.get::<_, Option<i64>>(10)?.map(|s| s as u16),
        response_excerpt: r.get(11)?,
        error_class: r.get(12)?,
        outcome: r.get(13)?,
        message: r.get(14)?,
        next_attempt_at: r.get::<_, Option<i64>>(15)?.map(from_ms),
        exchange: None,
    };
    let exchange: Option<String> = r.get(16)?;
    Ok((|| {
        Ok(Attempt {
            id: parse_uuid(&id)?,
            delivery_id: parse_uuid(&delivery_id)?,
            exchange: crate::store::common::decode_exchange(&id, exchange.as_deref())?,
            ..attempt
        })
    })())
}

/// Rows per multi-row statement, largest first: a batch of n rows runs as
/// few statements as these sizes allow, and only these few statement texts
/// are ever prepared (and cached).
pub const ROW_CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// Splits `n` rows into [`ROW_CHUNKS`]-sized runs: `(start, len)` pairs.
pub fn row_chunks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = n - start;
        let len = *ROW_CHUNKS.iter().find(|c| **c <= left)?;
        start += len;
        Some((start - len, len))
    })
}

/// `INSERT INTO attempts` of `rows` rows, one statement text per chunk size.
fn insert_attempts_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        ROW_CHUNKS
            .iter()
            .map(|n| {
                let one = format!("({})", vec!["?"; ATTEMPT_FIELDS].join(", "));
                format!(
                    "INSERT INTO attempts ({ATTEMPT_COLS}) VALUES {}",
                    vec![one; *n].join(", ")
                )
            })
            .collect()
    });
    let i = ROW_CHUNKS.iter().position(|n| *n == rows).unwrap_or(0);
    &all[i]
}

/// Columns of [`ATTEMPT_COLS`].
const ATTEMPT_FIELDS: usize = 17;

/// Inserts attempts with multi-row statements (see [`row_chunks`]).
pub fn insert_attempts(c: &Connection, attempts: &[&Attempt]) -> StoreResult<()> {
    for (start, len) in row_chunks(attempts.len()) {
        let mut stmt = c
            .prepare_cached(insert_attempts_sql(len))
            .map_err(map_err)?;
        for (row, a) in attempts[start..start + len].iter().enumerate() {
            let at = row * ATTEMPT_FIELDS;
            let mut bind = |i: usize, v: &dyn rusqlite::ToSql| {
                stmt.raw_bind_parameter(at + i, v).map_err(map_err)
            };
            bind(1, &a.id.to_string())?;
            bind(2, &a.delivery_id.to_string())?;
            bind(3, &a.destination)?;
            bind(4, &(a.number as i64))?;
            bind(5, &a.started_at.timestamp_millis())?;
            bind(6, &(a.duration_ms as i64))?;
            bind(7, &a.method)?;
            bind(8, &a.url)?;
            bind(9, &a.request_bytes.map(|v| v as i64))?;
            bind(10, &a.request_sha256)?;
            bind(11, &a.status.map(i64::from))?;
            bind(12, &a.response_excerpt)?;
            bind(13, &a.error_class)?;
            bind(14, &a.outcome)?;
            bind(15, &a.message)?;
            bind(16, &a.next_attempt_at.map(|t| t.timestamp_millis()))?;
            bind(
                17,
                &crate::store::common::encode_exchange(a.exchange.as_ref()),
            )?;
        }
        stmt.raw_execute().map_err(map_err)?;
    }
    Ok(())
}

pub fn dest_state_from_row(r: &Row<'_>) -> rusqlite::Result<DestinationState> {
    Ok(DestinationState {
        name: r.get(0)?,
        paused_until: r.get::<_, Option<i64>>(1)?.map(from_ms),
        pause_reason: r.get(2)?,
        disabled: r.get::<_, i64>(3)? != 0,
        disabled_reason: r.get(4)?,
        circuit: r.get(5)?,
    })
}

/// Builds a SELECT with optional conditions and positional parameters.
pub struct QueryBuilder {
    sql: String,
    params: Vec<SqlValue>,
}

impl QueryBuilder {
    pub fn new(base: &str) -> Self {
        Self {
            sql: base.to_string(),
            params: Vec::new(),
        }
    }

    /// Appends ` AND {cond}` where `cond` has one `?`.
    pub fn and(&mut self, cond: &str, value: impl Into<SqlValue>) {
        self.sql.push_str(" AND ");
        self.sql.push_str(cond);
        self.params.push(value.into());
    }

    /// Appends ` AND {cond}` where `cond` has two `?`.
    pub fn and2(&mut self, cond: &str, a: impl Into<SqlValue>, b: impl Into<SqlValue>) {
        self.sql.push_str(" AND ");
        self.sql.push_str(cond);
        self.params.push(a.into());
        self.params.push(b.into());
    }

    /// Matches `search` (case-insensitive) in the `email` column or anywhere
    /// in the `doc` JSON; nothing when it is empty.
    pub fn and_text_search(&mut self, search: Option<&str>) {
        if let Some(term) = search.map(str::trim).filter(|t| !t.is_empty()) {
            let like = format!("%{}%", escape_like(&term.to_lowercase()));
            self.and2(
                "(email LIKE ? ESCAPE '\\' OR lower(doc) LIKE ? ESCAPE '\\')",
                like.clone(),
                like,
            );
        }
    }

    pub fn push(&mut self, sql: &str) {
        self.sql.push_str(sql);
    }

    pub fn query<T>(
        self,
        c: &Connection,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Vec<T>> {
        let mut stmt = c.prepare_cached(&self.sql).map_err(map_err)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(self.params), map)
            .map_err(map_err)?;
        rows.map(|r| r.map_err(map_err)).collect()
    }
}
