//! SQLite side of the sales pipeline: timers, owner assignments, counters.
//! Mirrors `postgres/lead.rs`. Every write goes through the single writer,
//! so read-modify-write sequences here are atomic.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use leadrelay_model::{Contact, OwnerAssignment};
use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use super::SqliteStore;
use super::rows::*;
use crate::store::*;

const TIMER_COLS: &str =
    "id, kind, contact_id, due_at, state, lease_id, attempts, created_at, fired_at, outcome, data";

fn timer_from_row(r: &Row<'_>) -> rusqlite::Result<StoreResult<Timer>> {
    let id: String = r.get(0)?;
    let contact: String = r.get(2)?;
    let lease: Option<String> = r.get(5)?;
    let data: String = r.get(10)?;
    let base = Timer {
        id: Uuid::nil(),
        kind: r.get(1)?,
        contact_id: Uuid::nil(),
        due_at: from_ms(r.get(3)?),
        state: r.get(4)?,
        created_at: from_ms(r.get(7)?),
        fired_at: r.get::<_, Option<i64>>(8)?.map(from_ms),
        outcome: r.get(9)?,
        attempts: r.get(6)?,
        data: serde_json::Value::Null,
        lease_id: None,
    };
    Ok((|| {
        Ok(Timer {
            id: parse_uuid(&id)?,
            contact_id: parse_uuid(&contact)?,
            lease_id: lease.as_deref().map(parse_uuid).transpose()?,
            data: serde_json::from_str(&data)
                .map_err(|e| StoreError::Corrupt(format!("timer {id}: {e}")))?,
            ..base
        })
    })())
}

pub(super) fn insert_timers(c: &Connection, timers: &[NewTimer], now_ms: i64) -> StoreResult<()> {
    let mut stmt = c
        .prepare_cached(
            "INSERT INTO timers (id, kind, contact_id, due_at, state, created_at, data) \
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6)",
        )
        .map_err(map_err)?;
    for t in timers {
        stmt.execute(params![
            t.id.to_string(),
            t.kind,
            t.contact_id.to_string(),
            t.due_at.timestamp_millis(),
            now_ms,
            t.data.to_string()
        ])
        .map_err(map_err)?;
    }
    Ok(())
}

/// Writes what the lead hook asked for, in the ingest transaction.
pub(super) fn write_effects(
    c: &Connection,
    contact_id: Uuid,
    effects: &LeadEffects,
    now_ms: i64,
) -> StoreResult<()> {
    insert_timers(c, &effects.timers, now_ms)?;
    if effects.close_assignment {
        c.prepare_cached("UPDATE lead_owners SET open = 0 WHERE contact_id = ?1")
            .map_err(map_err)?
            .execute([contact_id.to_string()])
            .map_err(map_err)?;
    }
    Ok(())
}

/// Erasure: drops the person's timers and owner assignment (their company
/// domain) with the contact.
pub(super) fn forget(c: &Connection, contact_id: Uuid) -> StoreResult<()> {
    for sql in [
        "DELETE FROM timers WHERE contact_id = ?1",
        "DELETE FROM lead_owners WHERE contact_id = ?1",
    ] {
        c.prepare_cached(sql)
            .map_err(map_err)?
            .execute([contact_id.to_string()])
            .map_err(map_err)?;
    }
    Ok(())
}

#[async_trait]
impl LeadStore for SqliteStore {
    async fn kv_increment(&self, key: &str) -> StoreResult<u64> {
        let key = key.to_string();
        self.write(move |c| {
            let v: String = c
                .prepare_cached(
                    "INSERT INTO kv (key, value, updated_at) VALUES (?1, '1', ?2) \
                     ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(kv.value AS INTEGER) + 1 AS TEXT), \
                     updated_at = excluded.updated_at RETURNING value",
                )
                .map_err(map_err)?
                .query_row(params![key, Utc::now().timestamp_millis()], |r| r.get(0))
                .map_err(map_err)?;
            v.parse()
                .map_err(|_| StoreError::Corrupt(format!("counter {key}: {v:?}")))
        })
        .await
    }

    async fn claim_timers(&self, limit: usize, lease: Duration) -> StoreResult<Vec<Timer>> {
        // Every node polls every second: look on a read connection first,
        // so an idle poll never takes a turn of the single writer.
        let now = Utc::now().timestamp_millis();
        let due: bool = self
            .read(move |c| {
                c.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM timers WHERE state = 'pending' AND due_at <= ?1)",
                )
                .map_err(map_err)?
                .query_row([now], |r| r.get(0))
                .map_err(map_err)
            })
            .await?;
        if !due {
            return Ok(Vec::new());
        }
        let lease_ms = lease.as_millis() as i64;
        self.write(move |c| {
            let now = Utc::now().timestamp_millis();
            let lease_id = Uuid::now_v7().to_string();
            let mut stmt = c
                .prepare_cached(&format!(
                    "UPDATE timers SET lease_id = ?1, due_at = ?2, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM timers WHERE state = 'pending' AND due_at <= ?3 ORDER BY due_at LIMIT ?4) \
                     RETURNING {TIMER_COLS}"
                ))
                .map_err(map_err)?;
            let rows = stmt
                .query_map(
                    params![lease_id, now + lease_ms, now, limit as i64],
                    timer_from_row,
                )
                .map_err(map_err)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r.map_err(map_err)??);
            }
            Ok(out)
        })
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
        let (state, outcome) = (state.to_string(), outcome.to_string());
        self.write(move |c| {
            let now = Utc::now().timestamp_millis();
            let n = c
                .prepare_cached(
                    "UPDATE timers SET state = ?3, outcome = ?4, fired_at = ?5, lease_id = NULL \
                     WHERE id = ?1 AND lease_id = ?2 AND state = 'pending'",
                )
                .map_err(map_err)?
                .execute(params![
                    id.to_string(),
                    lease_id.to_string(),
                    state,
                    outcome,
                    now
                ])
                .map_err(map_err)?;
            if n == 1 {
                insert_timers(c, &next, now)?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn list_timers(
        &self,
        filter: &TimerFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Timer>> {
        let filter = filter.clone();
        self.read(move |c| {
            let mut sql = format!("SELECT {TIMER_COLS} FROM timers WHERE 1=1");
            let mut args: Vec<String> = Vec::new();
            let mut and = |cond: &str, v: String| {
                args.push(v);
                sql.push_str(&format!(" AND {cond} ?{}", args.len()));
            };
            if let Some(cid) = filter.contact_id {
                and("contact_id =", cid.to_string());
            }
            if let Some(s) = &filter.state {
                and("state =", s.clone());
            }
            if let Some(k) = &filter.kind {
                and("kind =", k.clone());
            }
            if let Some(b) = before {
                and("id <", b.to_string());
            }
            sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", limit.clamp(1, 1000)));
            let mut stmt = c.prepare(&sql).map_err(map_err)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), timer_from_row)
                .map_err(map_err)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r.map_err(map_err)??);
            }
            Ok(out)
        })
        .await
    }

    async fn assign_owner(
        &self,
        contact_id: Uuid,
        assignment: OwnerAssignment,
    ) -> StoreResult<Option<Contact>> {
        self.write(move |c| {
            let Some(mut contact) = contact_by(c, "id", &contact_id.to_string())? else {
                return Ok(None);
            };
            contact.lead.owner = Some(assignment.clone());
            upsert_contact(c, &contact)?;
            c.prepare_cached(
                "INSERT INTO lead_owners (contact_id, owner, domain, open, assigned_at) VALUES (?1, ?2, ?3, 1, ?4) \
                 ON CONFLICT(contact_id) DO UPDATE SET owner = excluded.owner, domain = excluded.domain, \
                 open = 1, assigned_at = excluded.assigned_at",
            )
            .map_err(map_err)?
            .execute(params![
                contact_id.to_string(),
                assignment.owner,
                contact.data.domain.as_deref().map(|d| d.trim().to_lowercase()),
                assignment.assigned_at.timestamp_millis()
            ])
            .map_err(map_err)?;
            Ok(Some(contact))
        })
        .await
    }

    async fn open_leads(&self) -> StoreResult<Vec<(String, u64)>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT lo.owner, COUNT(*) FROM lead_owners lo JOIN contacts c ON c.id = lo.contact_id \
                     WHERE lo.open = 1 GROUP BY lo.owner ORDER BY lo.owner",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn account_owner(&self, domain: &str, except: Uuid) -> StoreResult<Option<String>> {
        let domain = domain.trim().to_lowercase();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT lo.owner FROM lead_owners lo JOIN contacts c ON c.id = lo.contact_id \
                 WHERE lo.domain = ?1 AND lo.contact_id <> ?2 ORDER BY lo.assigned_at DESC LIMIT 1",
            )
            .map_err(map_err)?
            .query_row(params![domain, except.to_string()], |r| r.get(0))
            .optional()
            .map_err(map_err)
        })
        .await
    }
}
