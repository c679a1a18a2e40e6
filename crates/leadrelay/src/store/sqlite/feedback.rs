//! SQLite side of the sales feedback rollups. Mirrors `postgres/feedback.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;
use uuid::Uuid;

use super::SqliteStore;
use super::rows::*;
use crate::store::common::from_ms;
use crate::store::*;

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

#[async_trait]
impl FeedbackStore for SqliteStore {
    async fn feedback_people(&self, ids: Vec<Uuid>) -> StoreResult<Vec<FeedbackPerson>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT doc FROM feedback_people WHERE contact_id = ?1")
                .map_err(map_err)?;
            let mut out = Vec::new();
            for id in &ids {
                let doc: Option<String> = stmt
                    .query_row(params![id.to_string()], |r| r.get(0))
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })
                    .map_err(map_err)?;
                if let Some(doc) = doc {
                    out.push(
                        serde_json::from_str(&doc)
                            .map_err(|e| corrupt(&format!("feedback of {id}"), e))?,
                    );
                }
            }
            Ok(out)
        })
        .await
    }

    async fn feedback_apply(&self, batch: FeedbackBatch) -> StoreResult<()> {
        let batch = std::sync::Arc::new(batch);
        self.write(move |c| {
            let now = Utc::now().timestamp_millis();
            let cursor = batch.cursor.to_string();
            let moved = match batch.from {
                None => c
                    .prepare_cached(
                        "INSERT OR IGNORE INTO kv (key, value, updated_at) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(map_err)?
                    .execute(params![FEEDBACK_CURSOR_KEY, cursor, now]),
                Some(from) => c
                    .prepare_cached(
                        "UPDATE kv SET value = ?2, updated_at = ?3 WHERE key = ?1 AND value = ?4",
                    )
                    .map_err(map_err)?
                    .execute(params![FEEDBACK_CURSOR_KEY, cursor, now, from.to_string()]),
            }
            .map_err(map_err)?;
            if moved != 1 {
                return Err(StoreError::Conflict(
                    "another feedback pass moved the cursor".into(),
                ));
            }
            let mut person = c
                .prepare_cached(
                    "INSERT INTO feedback_people (contact_id, doc) VALUES (?1, ?2) \
                     ON CONFLICT(contact_id) DO UPDATE SET doc = excluded.doc",
                )
                .map_err(map_err)?;
            for (_, p) in &batch.people {
                let doc = serde_json::to_string(p).map_err(|e| corrupt("feedback", e))?;
                person
                    .execute(params![p.contact_id.to_string(), doc])
                    .map_err(map_err)?;
            }
            let mut add = c
                .prepare_cached(
                    "INSERT INTO feedback_counts (day, origin, channel, source, campaign, owner, \
                     score_bucket, leads, rated, rating_sum, good, poor, opportunities, won) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
                     ON CONFLICT(day, origin, channel, source, campaign, owner, score_bucket) \
                     DO UPDATE SET leads = leads + excluded.leads, rated = rated + excluded.rated, \
                     rating_sum = rating_sum + excluded.rating_sum, good = good + excluded.good, \
                     poor = poor + excluded.poor, opportunities = opportunities + excluded.opportunities, \
                     won = won + excluded.won",
                )
                .map_err(map_err)?;
            for d in batch.deltas() {
                let (k, n) = (&d.key, &d.counts);
                add.execute(params![
                    k.day.timestamp_millis(),
                    k.origin,
                    k.channel,
                    k.source,
                    k.campaign,
                    k.owner,
                    k.score_bucket,
                    n.leads,
                    n.rated,
                    n.rating_sum,
                    n.good,
                    n.poor,
                    n.opportunities,
                    n.won
                ])
                .map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn feedback_cells(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<FeedbackCell>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT day, origin, channel, source, campaign, owner, score_bucket, leads, \
                     rated, rating_sum, good, poor, opportunities, won FROM feedback_counts \
                     WHERE day >= ?1 AND day < ?2 AND leads <> 0",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(
                    params![since.timestamp_millis(), until.timestamp_millis()],
                    |r| {
                        Ok(FeedbackCell {
                            key: FeedbackKey {
                                day: from_ms(r.get(0)?),
                                origin: r.get(1)?,
                                channel: r.get(2)?,
                                source: r.get(3)?,
                                campaign: r.get(4)?,
                                owner: r.get(5)?,
                                score_bucket: r.get(6)?,
                            },
                            counts: FeedbackCounts {
                                leads: r.get(7)?,
                                rated: r.get(8)?,
                                rating_sum: r.get(9)?,
                                good: r.get(10)?,
                                poor: r.get(11)?,
                                opportunities: r.get(12)?,
                                won: r.get(13)?,
                            },
                        })
                    },
                )
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }
}
