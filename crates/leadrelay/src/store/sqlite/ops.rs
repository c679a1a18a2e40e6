//! SQLite side of the actions on waiting deliveries and the destination
//! series. Mirrors `postgres/ops.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;
use uuid::Uuid;

use super::SqliteStore;
use super::rows::*;
use crate::store::common::{escape_like, from_ms, uuid_v7_floor};
use crate::store::*;

fn waiting_query(base: &str, f: &WaitingFilter) -> QueryBuilder {
    let mut q = QueryBuilder::new(&format!("{base} WHERE state IN {WAITING_STATES}"));
    if let Some(d) = &f.destination {
        q.and("destination = ?", d.clone());
    }
    if let Some(c) = f.cause.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        q.and(
            "lower(COALESCE(last_error, '')) LIKE ? ESCAPE '\\'",
            format!("%{}%", escape_like(&c.to_lowercase())),
        );
    }
    if let Some(t) = f.from {
        q.and("created_at >= ?", t.timestamp_millis());
    }
    if let Some(t) = f.until {
        q.and("created_at < ?", t.timestamp_millis());
    }
    if let Some((kind, name)) = &f.origin {
        q.and2(
            "event_id IN (SELECT id FROM events WHERE origin_kind = ? AND origin_name = ?)",
            kind.clone(),
            name.clone(),
        );
    }
    q
}

#[async_trait]
impl OpsStore for SqliteStore {
    async fn waiting_deliveries(
        &self,
        filter: &WaitingFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let filter = filter.clone();
        self.read(move |c| {
            let mut q = waiting_query(&format!("SELECT {DELIVERY_COLS} FROM deliveries"), &filter);
            if let Some(b) = before {
                q.and("id < ?", b.to_string());
            }
            q.push(&format!(
                " ORDER BY id DESC LIMIT {}",
                limit.clamp(1, 10_000)
            ));
            q.query(c, delivery_from_row)?.into_iter().collect()
        })
        .await
    }

    async fn count_waiting(&self, filter: &WaitingFilter) -> StoreResult<u64> {
        let filter = filter.clone();
        self.read(move |c| {
            let q = waiting_query("SELECT COUNT(*) FROM deliveries", &filter);
            let n: Vec<i64> = q.query(c, |r| r.get(0))?;
            Ok(n.first().copied().unwrap_or(0).max(0) as u64)
        })
        .await
    }

    async fn retry_now(&self, ids: Vec<Uuid>) -> StoreResult<usize> {
        let (n, destinations) = self
            .write(move |c| {
                let now = Utc::now().timestamp_millis();
                let mut stmt = c
                    .prepare_cached(&format!(
                        "UPDATE deliveries SET next_attempt_at = ?2, updated_at = ?2 \
                         WHERE id = ?1 AND state IN {WAITING_STATES} RETURNING destination"
                    ))
                    .map_err(map_err)?;
                let mut destinations = std::collections::BTreeSet::new();
                let mut n = 0;
                for id in &ids {
                    let mut rows = stmt
                        .query_map(params![id.to_string(), now], |r| r.get::<_, String>(0))
                        .map_err(map_err)?;
                    if let Some(d) = rows.next() {
                        destinations.insert(d.map_err(map_err)?);
                        n += 1;
                    }
                }
                Ok((n, destinations))
            })
            .await?;
        for d in destinations {
            self.hub.wake(&d);
        }
        Ok(n)
    }

    async fn cancel_waiting(&self, ids: Vec<Uuid>, reason: &str) -> StoreResult<usize> {
        let reason = reason.to_string();
        self.write(move |c| {
            let now = Utc::now().timestamp_millis();
            let mut stmt = c
                .prepare_cached(&format!(
                    "UPDATE deliveries SET state = 'discarded', reason = ?2, finished_at = ?3, \
                     updated_at = ?3, next_attempt_at = NULL, lease_id = NULL \
                     WHERE id = ?1 AND state IN {WAITING_STATES}"
                ))
                .map_err(map_err)?;
            let mut n = 0;
            for id in &ids {
                n += stmt
                    .execute(params![id.to_string(), reason, now])
                    .map_err(map_err)?;
            }
            Ok(n)
        })
        .await
    }

    async fn destination_series(
        &self,
        destination: &str,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<SeriesBucket>> {
        let bucket_ms = bucket_secs.max(1) * 1000;
        let destination = destination.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(SERIES_SQL).map_err(map_err)?;
            let rows = stmt
                .query_map(params![uuid_v7_floor(since), bucket_ms, destination], |r| {
                    Ok(SeriesBucket {
                        bucket_start: from_ms(r.get(0)?),
                        succeeded: r.get::<_, i64>(1)?.max(0) as u64,
                        client_errors: r.get::<_, i64>(2)?.max(0) as u64,
                        server_errors: r.get::<_, i64>(3)?.max(0) as u64,
                        other_errors: r.get::<_, i64>(4)?.max(0) as u64,
                        throttled: r.get::<_, i64>(5)?.max(0) as u64,
                        avg_ms: r.get::<_, Option<f64>>(6)?,
                        max_ms: r.get::<_, Option<i64>>(7)?.map(|v| v.max(0) as u64),
                    })
                })
                .map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)).collect()
        })
        .await
    }
}

/// Shared with PostgreSQL except for the placeholders (`?1` there is `$1`).
const SERIES_SQL: &str = "SELECT (started_at / ?2) * ?2 AS b, \
     SUM(CASE WHEN outcome = 'delivered' THEN 1 ELSE 0 END), \
     SUM(CASE WHEN outcome IN ('retry', 'dead') AND status BETWEEN 400 AND 499 THEN 1 ELSE 0 END), \
     SUM(CASE WHEN outcome IN ('retry', 'dead') AND status >= 500 THEN 1 ELSE 0 END), \
     SUM(CASE WHEN outcome IN ('retry', 'dead') AND (status IS NULL OR status < 400) THEN 1 ELSE 0 END), \
     SUM(CASE WHEN outcome = 'throttled' THEN 1 ELSE 0 END), \
     AVG(CASE WHEN outcome <> 'skipped' THEN duration_ms END), \
     MAX(CASE WHEN outcome <> 'skipped' THEN duration_ms END) \
     FROM attempts WHERE id >= ?1 AND destination = ?3 GROUP BY b ORDER BY b";
