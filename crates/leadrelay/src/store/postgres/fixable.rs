//! PostgreSQL side of fixable dead letters. Mirrors `sqlite/fixable.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{PostgresStore, exec, map_err, query};
use crate::store::common::from_ms;
use crate::store::*;

/// A waiting row: its delivery is still dead and not replayed.
const LIVE: &str = "JOIN deliveries d ON d.id = f.delivery_id \
                    WHERE d.state = 'dead' AND d.replayed_by IS NULL";

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn cause_from_row(r: &Row) -> StoreResult<FixableCause> {
    Ok(FixableCause {
        destination: r.try_get(0).map_err(db)?,
        cause_key: r.try_get(1).map_err(db)?,
        kind: r.try_get(2).map_err(db)?,
        object: r.try_get(3).map_err(db)?,
        field: r.try_get(4).map_err(db)?,
        value: r.try_get(5).map_err(db)?,
        message: r
            .try_get::<_, Option<String>>(6)
            .map_err(db)?
            .unwrap_or_default(),
        waiting: r.try_get::<_, i64>(7).map_err(db)? as u64,
        exhausted: r.try_get::<_, i64>(8).map_err(db)? as u64,
        next_retry_at: r.try_get::<_, Option<i64>>(9).map_err(db)?.map(from_ms),
    })
}

#[async_trait]
impl FixableStore for PostgresStore {
    async fn record_fixable(&self, items: Vec<NewFixable>) -> StoreResult<usize> {
        let c = self.conn().await?;
        let now = Utc::now().timestamp_millis();
        let mut n = 0;
        for f in &items {
            n += exec(
                &c,
                "INSERT INTO fixable_dead_letters \
                 (delivery_id, destination, cause_key, kind, object, field, value, message, retries, created_at, next_retry_at) \
                 SELECT d.id, $2, $3, $4, $5, $6, $7, $8, \
                   COALESCE((SELECT p.retries + 1 FROM fixable_dead_letters p WHERE p.delivery_id = d.replay_of), 0), \
                   $9, $10 \
                 FROM deliveries d WHERE d.id = $1 AND d.state = 'dead' AND d.replayed_by IS NULL \
                 ON CONFLICT (delivery_id) DO NOTHING",
                &[
                    &f.delivery_id,
                    &f.destination,
                    &f.cause_key(),
                    &f.kind,
                    &f.object,
                    &f.field,
                    &f.value,
                    &f.message,
                    &now,
                    &f.next_retry_at.timestamp_millis(),
                ],
            )
            .await
            .map_err(map_err)?;
        }
        Ok(n as usize)
    }

    async fn due_fixable(
        &self,
        now: DateTime<Utc>,
        max_retries: u32,
        limit: usize,
    ) -> StoreResult<Vec<DueFixable>> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            &format!(
                "SELECT f.delivery_id, f.destination, f.cause_key, f.retries \
                 FROM fixable_dead_letters f {LIVE} \
                 AND f.next_retry_at <= $1 AND f.retries < $2 \
                 ORDER BY f.next_retry_at, f.delivery_id LIMIT $3"
            ),
            &[
                &now.timestamp_millis(),
                &(max_retries.min(i32::MAX as u32) as i32),
                &(limit.min(i64::MAX as usize) as i64),
            ],
        )
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(DueFixable {
                    delivery_id: r.try_get(0).map_err(db)?,
                    destination: r.try_get(1).map_err(db)?,
                    cause_key: r.try_get(2).map_err(db)?,
                    retries: r.try_get::<_, i32>(3).map_err(db)?.max(0) as u32,
                })
            })
            .collect()
    }

    async fn reschedule_fixable(
        &self,
        destination: &str,
        cause_key: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let c = self.conn().await?;
        exec(
            &c,
            "UPDATE fixable_dead_letters SET next_retry_at = $3 \
             WHERE destination = $1 AND ($2::TEXT IS NULL OR cause_key = $2) AND next_retry_at > $3 \
             AND delivery_id IN (SELECT id FROM deliveries WHERE state = 'dead' AND replayed_by IS NULL)",
            &[&destination, &cause_key, &at.timestamp_millis()],
        )
        .await
        .map_err(map_err)
    }

    async fn fixable_causes(&self, max_retries: u32) -> StoreResult<Vec<FixableCause>> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            &format!(
                "SELECT f.destination, f.cause_key, MAX(f.kind), MAX(f.object), MAX(f.field), MAX(f.value), \
                   (SELECT g.message FROM fixable_dead_letters g WHERE g.destination = f.destination \
                      AND g.cause_key = f.cause_key ORDER BY g.created_at DESC LIMIT 1), \
                   SUM(CASE WHEN f.retries < $1 THEN 1 ELSE 0 END)::BIGINT, \
                   SUM(CASE WHEN f.retries >= $1 THEN 1 ELSE 0 END)::BIGINT, \
                   MIN(CASE WHEN f.retries < $1 THEN f.next_retry_at END) \
                 FROM fixable_dead_letters f {LIVE} \
                 GROUP BY f.destination, f.cause_key ORDER BY f.destination, f.cause_key"
            ),
            &[&(max_retries.min(i32::MAX as u32) as i32)],
        )
        .await
        .map_err(map_err)?;
        rows.iter().map(cause_from_row).collect()
    }
}
