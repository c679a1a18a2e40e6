//! PostgreSQL side of the report rollups. Mirrors `sqlite/report.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{PostgresStore, exec, map_err, query};
use crate::store::common::{decode_doc, from_ms};
use crate::store::*;

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn lead_from(r: &Row) -> StoreResult<LeadRow> {
    Ok(LeadRow {
        contact_id: r.try_get(0).map_err(db)?,
        first_at: from_ms(r.try_get(1).map_err(db)?),
        origin: r.try_get(2).map_err(db)?,
        channel: r.try_get(3).map_err(db)?,
        source: r.try_get(4).map_err(db)?,
        campaign: r.try_get(5).map_err(db)?,
    })
}

fn deal_from(r: &Row) -> StoreResult<DealRow> {
    let id: String = r.try_get(0).map_err(db)?;
    let doc: String = r.try_get(1).map_err(db)?;
    serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(format!("deal {id}: {e}")))
}

/// The advisory lock held while a rollup batch is applied ("rollup" folded).
const ROLLUP_LOCK: i64 = 0x726f_6c6c_7570;

const LEAD_COLS: &str = "contact_id, first_at, origin, channel, source, campaign";

#[async_trait]
impl ReportStore for PostgresStore {
    async fn rollup_events(
        &self,
        after: Option<Uuid>,
        until: Uuid,
        limit: usize,
    ) -> StoreResult<Vec<RollupEvent>> {
        let c = self.conn().await?;
        let after = after.unwrap_or(Uuid::nil());
        let rows = query(
            &c,
            "SELECT id, type, origin_kind, origin_name, occurred_at, contact_id, spam, doc \
             FROM events WHERE id > $1 AND id < $2 ORDER BY id LIMIT $3",
            &[&after, &until, &(limit as i64)],
        )
        .await
        .map_err(map_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: Uuid = r.try_get(0).map_err(db)?;
            let doc: String = r.try_get(7).map_err(db)?;
            out.push(RollupEvent {
                id,
                event_type: r.try_get(1).map_err(db)?,
                origin_kind: r.try_get(2).map_err(db)?,
                origin_name: r.try_get(3).map_err(db)?,
                occurred_at: from_ms(r.try_get(4).map_err(db)?),
                contact_id: r.try_get(5).map_err(db)?,
                spam: r.try_get(6).map_err(db)?,
                // An unreadable document still moves the cursor.
                doc: decode_doc(&doc, &format_args!("event {id}")).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    async fn rollup_context(
        &self,
        contacts: Vec<Uuid>,
        deals: Vec<String>,
    ) -> StoreResult<RollupContext> {
        let c = self.conn().await?;
        let mut ctx = RollupContext::default();
        for r in query(
            &c,
            "SELECT event_id, contact_id, at, channel, source, campaign \
             FROM report_touches WHERE contact_id = ANY($1)",
            &[&contacts],
        )
        .await
        .map_err(map_err)?
        {
            ctx.touches.push(TouchRow {
                event_id: r.try_get(0).map_err(db)?,
                contact_id: r.try_get(1).map_err(db)?,
                at: from_ms(r.try_get(2).map_err(db)?),
                channel: r.try_get(3).map_err(db)?,
                source: r.try_get(4).map_err(db)?,
                campaign: r.try_get(5).map_err(db)?,
            });
        }
        for r in query(
            &c,
            &format!("SELECT {LEAD_COLS} FROM report_leads WHERE contact_id = ANY($1)"),
            &[&contacts],
        )
        .await
        .map_err(map_err)?
        {
            ctx.leads.push(lead_from(&r)?);
        }
        for r in query(
            &c,
            "SELECT deal_id, doc FROM report_deals WHERE deal_id = ANY($1)",
            &[&deals],
        )
        .await
        .map_err(map_err)?
        {
            ctx.deals.push(deal_from(&r)?);
        }
        Ok(ctx)
    }

    async fn rollup_apply(&self, batch: RollupBatch) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(map_err)?;
        // One pass at a time across nodes; the cursor must still be where
        // this pass started.
        exec(&tx, "SELECT pg_advisory_xact_lock($1)", &[&ROLLUP_LOCK])
            .await
            .map_err(map_err)?;
        let current: Option<String> = query(
            &tx,
            "SELECT value FROM kv WHERE key = $1",
            &[&ROLLUP_CURSOR_KEY],
        )
        .await
        .map_err(map_err)?
        .first()
        .map(|r| r.get(0));
        if current != batch.from.map(|f| f.to_string()) {
            return Err(StoreError::Conflict(
                "another rollup pass moved the cursor".into(),
            ));
        }
        for t in &batch.touches {
            exec(
                &tx,
                "INSERT INTO report_touches (event_id, contact_id, at, channel, source, campaign) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &t.event_id,
                    &t.contact_id,
                    &t.at.timestamp_millis(),
                    &t.channel,
                    &t.source,
                    &t.campaign,
                ],
            )
            .await
            .map_err(map_err)?;
        }
        for l in &batch.leads {
            exec(
                &tx,
                &format!(
                    "INSERT INTO report_leads ({LEAD_COLS}) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT DO NOTHING"
                ),
                &[
                    &l.contact_id,
                    &l.first_at.timestamp_millis(),
                    &l.origin,
                    &l.channel,
                    &l.source,
                    &l.campaign,
                ],
            )
            .await
            .map_err(map_err)?;
        }
        for d in &batch.deals {
            let doc = serde_json::to_string(d)
                .map_err(|e| StoreError::Corrupt(format!("deal {}: {e}", d.deal_id)))?;
            exec(
                &tx,
                "INSERT INTO report_deals (deal_id, created_at, closed_at, doc) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (deal_id) DO UPDATE SET created_at = EXCLUDED.created_at, \
                 closed_at = EXCLUDED.closed_at, doc = EXCLUDED.doc",
                &[
                    &d.deal_id,
                    &d.created_at.timestamp_millis(),
                    &d.closed_at.map(|t| t.timestamp_millis()),
                    &doc,
                ],
            )
            .await
            .map_err(map_err)?;
        }
        for (deal_id, credits) in &batch.credits {
            exec(
                &tx,
                "DELETE FROM report_credits WHERE deal_id = $1",
                &[deal_id],
            )
            .await
            .map_err(map_err)?;
            for k in credits {
                exec(
                    &tx,
                    "INSERT INTO report_credits \
                     (deal_id, model, channel, source, campaign, credit, revenue, closed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &k.deal_id,
                        &k.model,
                        &k.channel,
                        &k.source,
                        &k.campaign,
                        &k.credit,
                        &k.revenue,
                        &k.closed_at.timestamp_millis(),
                    ],
                )
                .await
                .map_err(map_err)?;
            }
        }
        {
            let cursor = batch.cursor;
            exec(
                &tx,
                "INSERT INTO kv (key, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
                &[
                    &ROLLUP_CURSOR_KEY,
                    &cursor.to_string(),
                    &Utc::now().timestamp_millis(),
                ],
            )
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn report_deals(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<DealRow>> {
        let c = self.conn().await?;
        query(
            &c,
            "SELECT deal_id, doc FROM report_deals \
             WHERE created_at < $1 AND (closed_at IS NULL OR closed_at >= $2)",
            &[&until.timestamp_millis(), &since.timestamp_millis()],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(deal_from)
        .collect()
    }

    async fn report_leads(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<LeadRow>> {
        let c = self.conn().await?;
        query(
            &c,
            &format!("SELECT {LEAD_COLS} FROM report_leads WHERE first_at >= $1 AND first_at < $2"),
            &[&since.timestamp_millis(), &until.timestamp_millis()],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(lead_from)
        .collect()
    }

    async fn report_credits(
        &self,
        model: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<CreditRow>> {
        let c = self.conn().await?;
        query(
            &c,
            "SELECT deal_id, model, channel, source, campaign, credit, revenue, closed_at \
             FROM report_credits WHERE model = $1 AND closed_at >= $2 AND closed_at < $3",
            &[&model, &since.timestamp_millis(), &until.timestamp_millis()],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| {
            Ok(CreditRow {
                deal_id: r.try_get(0).map_err(db)?,
                model: r.try_get(1).map_err(db)?,
                channel: r.try_get(2).map_err(db)?,
                source: r.try_get(3).map_err(db)?,
                campaign: r.try_get(4).map_err(db)?,
                credit: r.try_get(5).map_err(db)?,
                revenue: r.try_get(6).map_err(db)?,
                closed_at: from_ms(r.try_get(7).map_err(db)?),
            })
        })
        .collect()
    }

    async fn set_campaign_costs(&self, costs: Vec<CampaignCost>) -> StoreResult<usize> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(map_err)?;
        for k in &costs {
            exec(
                &tx,
                "INSERT INTO report_campaign_costs (campaign, month, channel, cost) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (campaign, month) DO UPDATE SET channel = EXCLUDED.channel, cost = EXCLUDED.cost",
                &[&k.campaign, &k.month, &k.channel, &k.cost],
            )
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(costs.len())
    }

    async fn campaign_costs(&self) -> StoreResult<Vec<CampaignCost>> {
        let c = self.conn().await?;
        query(
            &c,
            "SELECT campaign, month, channel, cost FROM report_campaign_costs ORDER BY campaign, month",
            &[],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| {
            Ok(CampaignCost {
                campaign: r.try_get(0).map_err(db)?,
                month: r.try_get(1).map_err(db)?,
                channel: r.try_get(2).map_err(db)?,
                cost: r.try_get(3).map_err(db)?,
            })
        })
        .collect()
    }
}
