//! PostgreSQL side of the sales feedback rollups. Mirrors `sqlite/feedback.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{PostgresStore, exec, map_err, query};
use crate::store::common::from_ms;
use crate::store::*;

/// The advisory lock held while a feedback batch is applied ("feedbk").
const FEEDBACK_LOCK: i64 = 0x6665_6564_626b;

#[async_trait]
impl FeedbackStore for PostgresStore {
    async fn feedback_people(&self, ids: Vec<Uuid>) -> StoreResult<Vec<FeedbackPerson>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT contact_id, doc FROM feedback_people WHERE contact_id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let id: Uuid = r.get(0);
                let doc: String = r.get(1);
                serde_json::from_str(&doc)
                    .map_err(|e| StoreError::Corrupt(format!("feedback of {id}: {e}")))
            })
            .collect()
    }

    async fn feedback_apply(&self, batch: FeedbackBatch) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(map_err)?;
        exec(&tx, "SELECT pg_advisory_xact_lock($1)", &[&FEEDBACK_LOCK])
            .await
            .map_err(map_err)?;
        let current: Option<String> = query(
            &tx,
            "SELECT value FROM kv WHERE key = $1",
            &[&FEEDBACK_CURSOR_KEY],
        )
        .await
        .map_err(map_err)?
        .first()
        .map(|r| r.get(0));
        if current != batch.from.map(|f| f.to_string()) {
            return Err(StoreError::Conflict(
                "another feedback pass moved the cursor".into(),
            ));
        }
        let now = Utc::now().timestamp_millis();
        exec(
            &tx,
            "INSERT INTO kv (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
            &[&FEEDBACK_CURSOR_KEY, &batch.cursor.to_string(), &now],
        )
        .await
        .map_err(map_err)?;
        for (_, p) in &batch.people {
            let doc = serde_json::to_string(p)
                .map_err(|e| StoreError::Corrupt(format!("feedback: {e}")))?;
            exec(
                &tx,
                "INSERT INTO feedback_people (contact_id, doc) VALUES ($1, $2) \
                 ON CONFLICT (contact_id) DO UPDATE SET doc = EXCLUDED.doc",
                &[&p.contact_id, &doc],
            )
            .await
            .map_err(map_err)?;
        }
        for d in batch.deltas() {
            let (k, n) = (&d.key, &d.counts);
            exec(
                &tx,
                "INSERT INTO feedback_counts (day, origin, channel, source, campaign, owner, \
                 score_bucket, leads, rated, rating_sum, good, poor, opportunities, won) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 ON CONFLICT (day, origin, channel, source, campaign, owner, score_bucket) \
                 DO UPDATE SET leads = feedback_counts.leads + EXCLUDED.leads, \
                 rated = feedback_counts.rated + EXCLUDED.rated, \
                 rating_sum = feedback_counts.rating_sum + EXCLUDED.rating_sum, \
                 good = feedback_counts.good + EXCLUDED.good, \
                 poor = feedback_counts.poor + EXCLUDED.poor, \
                 opportunities = feedback_counts.opportunities + EXCLUDED.opportunities, \
                 won = feedback_counts.won + EXCLUDED.won",
                &[
                    &k.day.timestamp_millis(),
                    &k.origin,
                    &k.channel,
                    &k.source,
                    &k.campaign,
                    &k.owner,
                    &k.score_bucket,
                    &n.leads,
                    &n.rated,
                    &n.rating_sum,
                    &n.good,
                    &n.poor,
                    &n.opportunities,
                    &n.won,
                ],
            )
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn feedback_cells(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<FeedbackCell>> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT day, origin, channel, source, campaign, owner, score_bucket, leads, rated, \
             rating_sum, good, poor, opportunities, won FROM feedback_counts \
             WHERE day >= $1 AND day < $2 AND leads <> 0",
            &[&since.timestamp_millis(), &until.timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| FeedbackCell {
                key: FeedbackKey {
                    day: from_ms(r.get(0)),
                    origin: r.get(1),
                    channel: r.get(2),
                    source: r.get(3),
                    campaign: r.get(4),
                    owner: r.get(5),
                    score_bucket: r.get(6),
                },
                counts: FeedbackCounts {
                    leads: r.get(7),
                    rated: r.get(8),
                    rating_sum: r.get(9),
                    good: r.get(10),
                    poor: r.get(11),
                    opportunities: r.get(12),
                    won: r.get(13),
                },
            })
            .collect())
    }
}
