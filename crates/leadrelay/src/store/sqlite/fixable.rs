//! SQLite side of fixable dead letters. Mirrors `postgres/fixable.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;

use super::SqliteStore;
use super::rows::*;
use crate::store::common::from_ms;
use crate::store::*;

/// A waiting row: its delivery is still dead and not replayed.
const LIVE: &str = "JOIN deliveries d ON d.id = f.delivery_id \
                    WHERE d.state = 'dead' AND d.replayed_by IS NULL";

#[async_trait]
impl FixableStore for SqliteStore {
    async fn record_fixable(&self, items: Vec<NewFixable>) -> StoreResult<usize> {
        self.write(move |c| {
            let now = Utc::now().timestamp_millis();
            let mut stmt = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO fixable_dead_letters \
                     (delivery_id, destination, cause_key, kind, object, field, value, message, retries, created_at, next_retry_at) \
                     SELECT d.id, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                       COALESCE((SELECT p.retries + 1 FROM fixable_dead_letters p WHERE p.delivery_id = d.replay_of), 0), \
                       ?9, ?10 \
                     FROM deliveries d WHERE d.id = ?1 AND d.state = 'dead' AND d.replayed_by IS NULL",
                )
                .map_err(map_err)?;
            let mut n = 0;
            for f in &items {
                n += stmt
                    .execute(params![
                        f.delivery_id.to_string(),
                        f.destination,
                        f.cause_key(),
                        f.kind,
                        f.object,
                        f.field,
                        f.value,
                        f.message,
                        now,
                        f.next_retry_at.timestamp_millis(),
                    ])
                    .map_err(map_err)?;
            }
            Ok(n)
        })
        .await
    }

    async fn due_fixable(
        &self,
        now: DateTime<Utc>,
        max_retries: u32,
        limit: usize,
    ) -> StoreResult<Vec<DueFixable>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT f.delivery_id, f.destination, f.cause_key, f.retries \
                     FROM fixable_dead_letters f {LIVE} \
                     AND f.next_retry_at <= ?1 AND f.retries < ?2 \
                     ORDER BY f.next_retry_at, f.delivery_id LIMIT ?3"
                ))
                .map_err(map_err)?;
            let rows = stmt
                .query_map(
                    params![now.timestamp_millis(), max_retries, limit as i64],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, u32>(3)?,
                        ))
                    },
                )
                .map_err(map_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, destination, cause_key, retries) = row.map_err(map_err)?;
                out.push(DueFixable {
                    delivery_id: parse_uuid(&id)?,
                    destination,
                    cause_key,
                    retries,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn reschedule_fixable(
        &self,
        destination: &str,
        cause_key: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let (destination, cause_key) = (destination.to_string(), cause_key.map(str::to_string));
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE fixable_dead_letters SET next_retry_at = ?3 \
                     WHERE destination = ?1 AND (?2 IS NULL OR cause_key = ?2) AND next_retry_at > ?3 \
                     AND delivery_id IN (SELECT id FROM deliveries WHERE state = 'dead' AND replayed_by IS NULL)",
                )
                .map_err(map_err)?
                .execute(params![destination, cause_key, at.timestamp_millis()])
                .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn fixable_causes(&self, max_retries: u32) -> StoreResult<Vec<FixableCause>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT f.destination, f.cause_key, MAX(f.kind), MAX(f.object), MAX(f.field), MAX(f.value), \
                       (SELECT g.message FROM fixable_dead_letters g WHERE g.destination = f.destination \
                          AND g.cause_key = f.cause_key ORDER BY g.created_at DESC LIMIT 1), \
                       SUM(CASE WHEN f.retries < ?1 THEN 1 ELSE 0 END), \
                       SUM(CASE WHEN f.retries >= ?1 THEN 1 ELSE 0 END), \
                       MIN(CASE WHEN f.retries < ?1 THEN f.next_retry_at END) \
                     FROM fixable_dead_letters f {LIVE} \
                     GROUP BY f.destination, f.cause_key ORDER BY f.destination, f.cause_key"
                ))
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![max_retries], |r| {
                    Ok(FixableCause {
                        destination: r.get(0)?,
                        cause_key: r.get(1)?,
                        kind: r.get(2)?,
                        object: r.get(3)?,
                        field: r.get(4)?,
                        value: r.get(5)?,
                        message: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                        waiting: r.get::<_, i64>(7)? as u64,
                        exhausted: r.get::<_, i64>(8)? as u64,
                        next_retry_at: r.get::<_, Option<i64>>(9)?.map(from_ms),
                    })
                })
                .map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)).collect()
        })
        .await
    }
}
