//! PostgreSQL side of the sales pipeline: timers (claimed with `FOR UPDATE
//! SKIP LOCKED`, so every node can run the timer job), owner assignments
//! and atomic counters. Mirrors `sqlite/lead.rs`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use deadpool_postgres::GenericClient;
use leadrelay_model::{Contact, OwnerAssignment};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{PostgresStore, contact_from_doc, exec, map_err, query, query_opt};
use crate::store::common::from_ms;
use crate::store::*;

const TIMER_COLS: &str =
    "id, kind, contact_id, due_at, state, lease_id, attempts, created_at, fired_at, outcome, data";

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn timer_from_row(r: &Row) -> StoreResult<Timer> {
    let id: Uuid = r.try_get(0).map_err(db)?;
    let data: String = r.try_get(10).map_err(db)?;
    Ok(Timer {
        id,
        kind: r.try_get(1).map_err(db)?,
        contact_id: r.try_get(2).map_err(db)?,
        due_at: from_ms(r.try_get(3).map_err(db)?),
        state: r.try_get(4).map_err(db)?,
        lease_id: r.try_get(5).map_err(db)?,
        attempts: r.try_get::<_, i32>(6).map_err(db)? as u32,
        created_at: from_ms(r.try_get(7).map_err(db)?),
        fired_at: r.try_get::<_, Option<i64>>(8).map_err(db)?.map(from_ms),
        outcome: r.try_get(9).map_err(db)?,
        data: serde_json::from_str(&data)
            .map_err(|e| StoreError::Corrupt(format!("timer {id}: {e}")))?,
    })
}

async fn insert_timers<C: GenericClient + Sync>(
    c: &C,
    timers: &[&NewTimer],
    now_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    if timers.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = timers.iter().map(|t| t.id).collect();
    let kinds: Vec<&str> = timers.iter().map(|t| t.kind.as_str()).collect();
    let contacts: Vec<Uuid> = timers.iter().map(|t| t.contact_id).collect();
    let due: Vec<i64> = timers.iter().map(|t| t.due_at.timestamp_millis()).collect();
    let data: Vec<String> = timers.iter().map(|t| t.data.to_string()).collect();
    exec(
        c,
        "INSERT INTO timers (id, kind, contact_id, due_at, state, created_at, data) \
         SELECT u.id, u.kind, u.contact_id, u.due_at, 'pending', $6, u.data \
         FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::bigint[], $5::text[]) AS u(id, kind, contact_id, due_at, data)",
        &[&ids, &kinds, &contacts, &due, &data, &now_ms],
    )
    .await?;
    Ok(())
}

/// Writes what the lead hook asked for, in the ingest transaction.
pub(super) async fn write_effects<C: GenericClient + Sync>(
    c: &C,
    effects: &[(Uuid, LeadEffects)],
    now_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    let timers: Vec<&NewTimer> = effects.iter().flat_map(|(_, e)| e.timers.iter()).collect();
    insert_timers(c, &timers, now_ms).await?;
    let closed: Vec<Uuid> = effects
        .iter()
        .filter(|(_, e)| e.close_assignment)
        .map(|(id, _)| *id)
        .collect();
    if !closed.is_empty() {
        exec(
            c,
            "UPDATE lead_owners SET open = FALSE WHERE contact_id = ANY($1)",
            &[&closed],
        )
        .await?;
    }
    Ok(())
}

/// Erasure: drops the person's timers and owner assignment (their company
/// domain) with the contact.
pub(super) async fn forget<C: GenericClient + Sync>(
    c: &C,
    contact_id: Uuid,
) -> Result<(), tokio_postgres::Error> {
    exec(
        c,
        "DELETE FROM timers WHERE contact_id = $1",
        &[&contact_id],
    )
    .await?;
    exec(
        c,
        "DELETE FROM lead_owners WHERE contact_id = $1",
        &[&contact_id],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl LeadStore for PostgresStore {
    async fn kv_increment(&self, key: &str) -> StoreResult<u64> {
        let c = self.conn().await?;
        let now = Utc::now().timestamp_millis();
        let row = query_opt(
            &c,
            "INSERT INTO kv (key, value, updated_at) VALUES ($1, '1', $2) \
             ON CONFLICT (key) DO UPDATE SET value = ((kv.value)::bigint + 1)::text, updated_at = EXCLUDED.updated_at \
             RETURNING value",
            &[&key, &now],
        )
        .await
        .map_err(map_err)?
        .ok_or_else(|| StoreError::Corrupt(format!("counter {key}: no value returned")))?;
        let v: String = row.try_get(0).map_err(db)?;
        v.parse()
            .map_err(|_| StoreError::Corrupt(format!("counter {key}: {v:?}")))
    }

    async fn claim_timers(&self, limit: usize, lease: Duration) -> StoreResult<Vec<Timer>> {
        let c = self.conn().await?;
        let now = Utc::now().timestamp_millis();
        let until = now + lease.as_millis() as i64;
        let lease_id = Uuid::now_v7();
        let rows = query(
            &c,
            &format!(
                "UPDATE timers SET lease_id = $1, due_at = $2, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM timers WHERE state = 'pending' AND due_at <= $3 \
                 ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING {TIMER_COLS}"
            ),
            &[&lease_id, &until, &now, &(limit as i64)],
        )
        .await
        .map_err(map_err)?;
        rows.iter().map(timer_from_row).collect()
    }

    async fn finish_timer(
        &self,
        id: Uuid,
        lease_id: Uuid,
        state: &str,
        outcome: &str,
        next: Vec<NewTimer>,
    ) -> StoreResult<bool> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let now = Utc::now().timestamp_millis();
        let n = exec(
            &tx,
            "UPDATE timers SET state = $3, outcome = $4, fired_at = $5, lease_id = NULL \
             WHERE id = $1 AND lease_id = $2 AND state = 'pending'",
            &[&id, &lease_id, &state, &outcome, &now],
        )
        .await
        .map_err(map_err)?;
        if n == 1 {
            let next: Vec<&NewTimer> = next.iter().collect();
            insert_timers(&tx, &next, now).await.map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(n == 1)
    }

    async fn list_timers(
        &self,
        filter: &TimerFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Timer>> {
        let c = self.conn().await?;
        let limit = limit.clamp(1, 1000) as i64;
        let rows = query(
            &c,
            &format!(
                "SELECT {TIMER_COLS} FROM timers WHERE ($1::uuid IS NULL OR contact_id = $1) \
                 AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR kind = $3) \
                 AND ($4::uuid IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
            ),
            &[
                &filter.contact_id,
                &filter.state,
                &filter.kind,
                &before,
                &limit,
            ],
        )
        .await
        .map_err(map_err)?;
        rows.iter().map(timer_from_row).collect()
    }

    async fn assign_owner(
        &self,
        contact_id: Uuid,
        assignment: OwnerAssignment,
    ) -> StoreResult<Option<Contact>> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let Some(row) = query_opt(
            &tx,
            "SELECT doc FROM contacts WHERE id = $1 FOR UPDATE",
            &[&contact_id],
        )
        .await
        .map_err(map_err)?
        else {
            return Ok(None);
        };
        let doc: String = row.try_get(0).map_err(db)?;
        let mut contact = contact_from_doc(&doc)?;
        contact.lead.owner = Some(assignment.clone());
        let doc =
            serde_json::to_string(&contact).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        exec(
            &tx,
            "UPDATE contacts SET doc = $2 WHERE id = $1",
            &[&contact_id, &doc],
        )
        .await
        .map_err(map_err)?;
        let domain = contact
            .data
            .domain
            .as_deref()
            .map(|d| d.trim().to_lowercase());
        exec(
            &tx,
            "INSERT INTO lead_owners (contact_id, owner, domain, open, assigned_at) VALUES ($1, $2, $3, TRUE, $4) \
             ON CONFLICT (contact_id) DO UPDATE SET owner = EXCLUDED.owner, domain = EXCLUDED.domain, \
             open = TRUE, assigned_at = EXCLUDED.assigned_at",
            &[
                &contact_id,
                &assignment.owner,
                &domain,
                &assignment.assigned_at.timestamp_millis(),
            ],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(contact))
    }

    async fn open_leads(&self) -> StoreResult<Vec<(String, u64)>> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT lo.owner, COUNT(*) FROM lead_owners lo JOIN contacts c ON c.id = lo.contact_id \
             WHERE lo.open GROUP BY lo.owner ORDER BY lo.owner",
            &[],
        )
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<_, String>(0).map_err(db)?,
                    r.try_get::<_, i64>(1).map_err(db)? as u64,
                ))
            })
            .collect()
    }

    async fn account_owner(&self, domain: &str, except: Uuid) -> StoreResult<Option<String>> {
        let c = self.conn().await?;
        let domain = domain.trim().to_lowercase();
        let row = query_opt(
            &c,
            "SELECT lo.owner FROM lead_owners lo JOIN contacts c ON c.id = lo.contact_id \
             WHERE lo.domain = $1 AND lo.contact_id <> $2 ORDER BY lo.assigned_at DESC LIMIT 1",
            &[&domain, &except],
        )
        .await
        .map_err(map_err)?;
        row.map(|r| r.try_get(0).map_err(db)).transpose()
    }
}
