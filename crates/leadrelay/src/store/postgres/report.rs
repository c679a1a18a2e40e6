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

const RESPONSE_COLS: &str = "contact_id, mql_at, responded_at";

fn response_from(r: &Row) -> StoreResult<ResponseRow> {
    Ok(ResponseRow {
        contact_id: r.try_get(0).map_err(db)?,
        mql_at: from_ms(r.try_get(1).map_err(db)?),
        responded_at: r.try_get::<_, Option<i64>>(2).map_err(db)?.map(from_ms),
    })
}

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
        leads: Vec<Uuid>,
        deals: Vec<String>,
        clocks: Vec<Uuid>,
    ) -> StoreResult<RollupContext> {
        let c = self.conn().await?;
        let mut ctx = RollupContext::default();
        for r in query(
            &c,
            &format!("SELECT {LEAD_COLS} FROM report_leads WHERE contact_id = ANY($1)"),
            &[&leads],
        )
        .await
        .map_err(map_err)?
        {
            ctx.leads.push(lead_from(&r)?);
        }
        for r in query(
            &c,
            &format!("SELECT {RESPONSE_COLS} FROM report_responses WHERE contact_id = ANY($1)"),
            &[&clocks],
        )
        .await
        .map_err(map_err)?
        {
            ctx.responses.push(response_from(&r)?);
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

    async fn rollup_touches(&self, contacts: Vec<Uuid>) -> StoreResult<Vec<TouchRow>> {
        let c = self.conn().await?;
        let mut out = Vec::new();
        for r in query(
            &c,
            "SELECT event_id, contact_id, at, channel, source, campaign \
             FROM report_touches WHERE contact_id = ANY($1)",
            &[&contacts],
        )
        .await
        .map_err(map_err)?
        {
            out.push(TouchRow {
                event_id: r.try_get(0).map_err(db)?,
                contact_id: r.try_get(1).map_err(db)?,
                at: from_ms(r.try_get(2).map_err(db)?),
                channel: r.try_get(3).map_err(db)?,
                source: r.try_get(4).map_err(db)?,
                campaign: r.try_get(5).map_err(db)?,
            });
        }
        Ok(out)
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
        // Touches, leads and deals go in as arrays: one statement each per
        // batch instead of a round trip per row.
        if !batch.touches.is_empty() {
            let t = &batch.touches;
            let event_ids: Vec<Uuid> = t.iter().map(|t| t.event_id).collect();
            let contacts: Vec<Uuid> = t.iter().map(|t| t.contact_id).collect();
            let ats: Vec<i64> = t.iter().map(|t| t.at.timestamp_millis()).collect();
            let channels: Vec<&str> = t.iter().map(|t| t.channel.as_str()).collect();
            let sources: Vec<&str> = t.iter().map(|t| t.source.as_str()).collect();
            let campaigns: Vec<&str> = t.iter().map(|t| t.campaign.as_str()).collect();
            exec(
                &tx,
                "INSERT INTO report_touches (event_id, contact_id, at, channel, source, campaign) \
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[]) \
                 ON CONFLICT DO NOTHING",
                &[&event_ids, &contacts, &ats, &channels, &sources, &campaigns],
            )
            .await
            .map_err(map_err)?;
        }
        if !batch.leads.is_empty() {
            let l = &batch.leads;
            let contacts: Vec<Uuid> = l.iter().map(|l| l.contact_id).collect();
            let firsts: Vec<i64> = l.iter().map(|l| l.first_at.timestamp_millis()).collect();
            let origins: Vec<&str> = l.iter().map(|l| l.origin.as_str()).collect();
            let channels: Vec<&str> = l.iter().map(|l| l.channel.as_str()).collect();
            let sources: Vec<&str> = l.iter().map(|l| l.source.as_str()).collect();
            let campaigns: Vec<&str> = l.iter().map(|l| l.campaign.as_str()).collect();
            exec(
                &tx,
                &format!(
                    "INSERT INTO report_leads ({LEAD_COLS}) \
                     SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) \
                     ON CONFLICT DO NOTHING"
                ),
                &[&contacts, &firsts, &origins, &channels, &sources, &campaigns],
            )
            .await
            .map_err(map_err)?;
        }
        if !batch.deals.is_empty() {
            let d = &batch.deals;
            let ids: Vec<&str> = d.iter().map(|d| d.deal_id.as_str()).collect();
            let created: Vec<i64> = d.iter().map(|d| d.created_at.timestamp_millis()).collect();
            let closed: Vec<Option<i64>> = d
                .iter()
                .map(|d| d.closed_at.map(|t| t.timestamp_millis()))
                .collect();
            let docs = d
                .iter()
                .map(|d| {
                    serde_json::to_string(d)
                        .map_err(|e| StoreError::Corrupt(format!("deal {}: {e}", d.deal_id)))
                })
                .collect::<StoreResult<Vec<String>>>()?;
            exec(
                &tx,
                "INSERT INTO report_deals (deal_id, created_at, closed_at, doc) \
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[]) \
                 ON CONFLICT (deal_id) DO UPDATE SET created_at = EXCLUDED.created_at, \
                 closed_at = EXCLUDED.closed_at, doc = EXCLUDED.doc",
                &[&ids, &created, &closed, &docs],
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
        for r in &batch.responses {
            exec(
                &tx,
                &format!(
                    "INSERT INTO report_responses ({RESPONSE_COLS}) VALUES ($1, $2, $3) \
                     ON CONFLICT (contact_id) DO UPDATE SET mql_at = EXCLUDED.mql_at, \
                     responded_at = EXCLUDED.responded_at"
                ),
                &[
                    &r.contact_id,
                    &r.mql_at.timestamp_millis(),
                    &r.responded_at.map(|t| t.timestamp_millis()),
                ],
            )
            .await
            .map_err(map_err)?;
        }
        for h in &batch.handoffs {
            exec(
                &tx,
                "INSERT INTO report_handoffs (event_id, contact_id, at, owner) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[
                    &h.event_id,
                    &h.contact_id,
                    &h.at.timestamp_millis(),
                    &h.owner,
                ],
            )
            .await
            .map_err(map_err)?;
        }
        for k in &batch.counts {
            exec(
                &tx,
                "INSERT INTO report_kpi_counts (kpi, hour, num, den) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (kpi, hour) DO UPDATE SET num = report_kpi_counts.num + EXCLUDED.num, \
                 den = report_kpi_counts.den + EXCLUDED.den",
                &[
                    &k.kpi,
                    &k.hour.timestamp_millis(),
                    &(k.num as i64),
                    &(k.den as i64),
                ],
            )
            .await
            .map_err(map_err)?;
        }
        for (r, cid) in &batch.refs {
            exec(
                &tx,
                "INSERT INTO report_refs (ref, contact_id) VALUES ($1, $2) \
                 ON CONFLICT (ref) DO UPDATE SET contact_id = EXCLUDED.contact_id",
                &[r, cid],
            )
            .await
            .map_err(map_err)?;
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

    async fn report_responses(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<ResponseRow>> {
        let c = self.conn().await?;
        query(
            &c,
            &format!(
                "SELECT {RESPONSE_COLS} FROM report_responses WHERE mql_at >= $1 AND mql_at < $2"
            ),
            &[&since.timestamp_millis(), &until.timestamp_millis()],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(response_from)
        .collect()
    }

    async fn report_handoffs(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<HandoffOutcome>> {
        let c = self.conn().await?;
        query(
            &c,
            "SELECT h.owner, COUNT(d.id), \
             COUNT(d.id) FILTER (WHERE d.state = 'delivered'), \
             COUNT(d.id) FILTER (WHERE d.state IN ('dead', 'discarded', 'skipped')) \
             FROM report_handoffs h \
             LEFT JOIN deliveries d ON d.event_id = h.event_id AND d.replayed_by IS NULL \
             WHERE h.at >= $1 AND h.at < $2 GROUP BY h.event_id, h.owner",
            &[&since.timestamp_millis(), &until.timestamp_millis()],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| {
            Ok(HandoffOutcome {
                owner: r.try_get(0).map_err(db)?,
                deliveries: r.try_get::<_, i64>(1).map_err(db)? as u64,
                delivered: r.try_get::<_, i64>(2).map_err(db)? as u64,
                failed: r.try_get::<_, i64>(3).map_err(db)? as u64,
            })
        })
        .collect()
    }

    async fn report_kpi_counts(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<(String, u64, u64)>> {
        let c = self.conn().await?;
        query(
            &c,
            "SELECT kpi, SUM(num)::BIGINT, SUM(den)::BIGINT FROM report_kpi_counts \
             WHERE hour >= $1 AND hour < $2 GROUP BY kpi ORDER BY kpi",
            &[&since.timestamp_millis(), &until.timestamp_millis()],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| {
            Ok((
                r.try_get(0).map_err(db)?,
                r.try_get::<_, i64>(1).map_err(db)? as u64,
                r.try_get::<_, i64>(2).map_err(db)? as u64,
            ))
        })
        .collect()
    }

    async fn report_ref_contacts(&self, refs: Vec<String>) -> StoreResult<Vec<(String, Uuid)>> {
        let c = self.conn().await?;
        query(
            &c,
            "SELECT ref, contact_id FROM report_refs WHERE ref = ANY($1)",
            &[&refs],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?)))
        .collect()
    }

    async fn record_heartbeat(&self, minute: DateTime<Utc>) -> StoreResult<()> {
        let c = self.conn().await?;
        exec(
            &c,
            "INSERT INTO report_heartbeats (minute) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&minute.timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn heartbeats(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<(u64, Option<DateTime<Utc>>)> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT (SELECT COUNT(*) FROM report_heartbeats WHERE minute >= $1 AND minute < $2), \
             (SELECT MIN(minute) FROM report_heartbeats)",
            &[&since.timestamp_millis(), &until.timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        let r = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("heartbeat count: no row".into()))?;
        let n: i64 = r.try_get(0).map_err(db)?;
        let first: Option<i64> = r.try_get(1).map_err(db)?;
        Ok((n as u64, first.map(from_ms)))
    }
}
