//! PostgreSQL side of the actions on waiting deliveries and the
//! destination series. Mirrors `sqlite/ops.rs`.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::rows::*;
use super::{PgFilter, PostgresStore, WAKE_CHANNEL, exec, map_err, query};
use crate::store::common::{escape_like, from_ms, uuid_v7_floor_id};
use crate::store::*;

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn waiting_query(base: &str, f: &WaitingFilter) -> PgFilter {
    let mut q = PgFilter::new(format!("{base} WHERE state IN {WAITING_STATES}"));
    if let Some(d) = &f.destination {
        q.push("destination = ", Box::new(d.clone()));
    }
    if let Some(c) = f.cause.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        q.n += 1;
        q.sql.push_str(&format!(
            " AND lower(COALESCE(last_error, '')) LIKE ${} ESCAPE '\\'",
            q.n
        ));
        q.params
            .push(Box::new(format!("%{}%", escape_like(&c.to_lowercase()))));
    }
    if let Some(t) = f.from {
        q.push("created_at >= ", Box::new(t.timestamp_millis()));
    }
    if let Some(t) = f.until {
        q.push("created_at < ", Box::new(t.timestamp_millis()));
    }
    if let Some((kind, name)) = &f.origin {
        q.n += 2;
        q.sql.push_str(&format!(
            " AND event_id IN (SELECT id FROM events WHERE origin_kind = ${} AND origin_name = ${})",
            q.n - 1,
            q.n
        ));
        q.params.push(Box::new(kind.clone()));
        q.params.push(Box::new(name.clone()));
    }
    q
}

#[async_trait]
impl OpsStore for PostgresStore {
    async fn waiting_deliveries(
        &self,
        filter: &WaitingFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let mut q = waiting_query(&format!("SELECT {DELIVERY_COLS} FROM deliveries"), filter);
        if let Some(b) = before {
            q.push("id < ", Box::new(b));
        }
        q.sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {}",
            limit.clamp(1, 10_000)
        ));
        let c = self.conn().await?;
        let rows = q.fetch(&c).await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn count_waiting(&self, filter: &WaitingFilter) -> StoreResult<u64> {
        let q = waiting_query("SELECT COUNT(*) FROM deliveries", filter);
        let c = self.conn().await?;
        let rows = q.fetch(&c).await?;
        Ok(rows
            .first()
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()
            .map_err(db)?
            .unwrap_or(0)
            .max(0) as u64)
    }

    async fn retry_now(&self, ids: Vec<Uuid>) -> StoreResult<usize> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let now = Utc::now().timestamp_millis();
        let rows = query(
            &tx,
            &format!(
                "UPDATE deliveries SET next_attempt_at = $2, updated_at = $2 \
                 WHERE id = ANY($1) AND state IN {WAITING_STATES} RETURNING destination"
            ),
            &[&ids, &now],
        )
        .await
        .map_err(map_err)?;
        let woken: BTreeSet<String> = rows
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<_, _>>()
            .map_err(db)?;
        if !woken.is_empty() {
            let payload = woken.iter().cloned().collect::<Vec<_>>().join(",");
            exec(&tx, "SELECT pg_notify($1, $2)", &[&WAKE_CHANNEL, &payload])
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        for d in &woken {
            self.hub.wake(d);
        }
        Ok(rows.len())
    }

    async fn cancel_waiting(&self, ids: Vec<Uuid>, reason: &str) -> StoreResult<usize> {
        let c = self.conn().await?;
        let now = Utc::now().timestamp_millis();
        let n = exec(
            &c,
            &format!(
                "UPDATE deliveries SET state = 'discarded', reason = $2, finished_at = $3, \
                 updated_at = $3, next_attempt_at = NULL, lease_id = NULL \
                 WHERE id = ANY($1) AND state IN {WAITING_STATES}"
            ),
            &[&ids, &reason, &now],
        )
        .await
        .map_err(map_err)?;
        Ok(n as usize)
    }

    async fn destination_series(
        &self,
        destination: &str,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<SeriesBucket>> {
        let bucket_ms = bucket_secs.max(1) * 1000;
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT (started_at / $2) * $2 AS b, \
             COUNT(*) FILTER (WHERE outcome = 'delivered'), \
             COUNT(*) FILTER (WHERE outcome IN ('retry', 'dead') AND status BETWEEN 400 AND 499), \
             COUNT(*) FILTER (WHERE outcome IN ('retry', 'dead') AND status >= 500), \
             COUNT(*) FILTER (WHERE outcome IN ('retry', 'dead') AND (status IS NULL OR status < 400)), \
             COUNT(*) FILTER (WHERE outcome = 'throttled'), \
             (AVG(duration_ms) FILTER (WHERE outcome <> 'skipped'))::float8, \
             MAX(duration_ms) FILTER (WHERE outcome <> 'skipped') \
             FROM attempts WHERE id >= $1 AND destination = $3 GROUP BY b ORDER BY b",
            &[&uuid_v7_floor_id(since), &bucket_ms, &destination],
        )
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let n = |i: usize| -> StoreResult<u64> {
                    Ok(r.try_get::<_, i64>(i).map_err(db)?.max(0) as u64)
                };
                Ok(SeriesBucket {
                    bucket_start: from_ms(r.try_get(0).map_err(db)?),
                    succeeded: n(1)?,
                    client_errors: n(2)?,
                    server_errors: n(3)?,
                    other_errors: n(4)?,
                    throttled: n(5)?,
                    avg_ms: r.try_get(6).map_err(db)?,
                    max_ms: r
                        .try_get::<_, Option<i64>>(7)
                        .map_err(db)?
                        .map(|v| v.max(0) as u64),
                })
            })
            .collect()
    }
}
