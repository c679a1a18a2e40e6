//! SQLite side of the report rollups. Mirrors `postgres/report.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::SqliteStore;
use super::rows::*;
use crate::store::*;

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// Ids as one JSON array, for `IN (SELECT value FROM json_each(?))`: one
/// statement for any number of ids.
fn json_ids(ids: impl Iterator<Item = String>) -> String {
    serde_json::Value::Array(ids.map(serde_json::Value::String).collect()).to_string()
}

fn touch_from(
    event_id: String,
    contact_id: String,
    at: i64,
    channel: String,
    source: String,
    campaign: String,
) -> StoreResult<TouchRow> {
    Ok(TouchRow {
        event_id: parse_uuid(&event_id)?,
        contact_id: parse_uuid(&contact_id)?,
        at: from_ms(at),
        channel,
        source,
        campaign,
    })
}

fn leads_where(
    c: &Connection,
    clause: &str,
    p: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<LeadRow>> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT contact_id, first_at, origin, channel, source, campaign FROM report_leads WHERE {clause}"
        ))
        .map_err(map_err)?;
    let rows = stmt
        .query_map(p, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .map_err(map_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, at, origin, channel, source, campaign) = row.map_err(map_err)?;
        out.push(LeadRow {
            contact_id: parse_uuid(&id)?,
            first_at: from_ms(at),
            origin,
            channel,
            source,
            campaign,
        });
    }
    Ok(out)
}

fn responses_where(
    c: &Connection,
    clause: &str,
    p: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<ResponseRow>> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT contact_id, mql_at, responded_at FROM report_responses WHERE {clause}"
        ))
        .map_err(map_err)?;
    let rows = stmt
        .query_map(p, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .map_err(map_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, mql, responded) = row.map_err(map_err)?;
        out.push(ResponseRow {
            contact_id: parse_uuid(&id)?,
            mql_at: from_ms(mql),
            responded_at: responded.map(from_ms),
        });
    }
    Ok(out)
}

fn deals_where(
    c: &Connection,
    clause: &str,
    p: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<DealRow>> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT deal_id, doc FROM report_deals WHERE {clause}"
        ))
        .map_err(map_err)?;
    let rows = stmt
        .query_map(p, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(map_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, doc) = row.map_err(map_err)?;
        out.push(serde_json::from_str(&doc).map_err(|e| corrupt(&format!("deal {id}"), e))?);
    }
    Ok(out)
}

#[async_trait]
impl ReportStore for SqliteStore {
    async fn rollup_events(
        &self,
        after: Option<Uuid>,
        until: Uuid,
        limit: usize,
    ) -> StoreResult<Vec<RollupEvent>> {
        self.read(move |c| {
            let after = after.map(|a| a.to_string()).unwrap_or_default();
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, type, origin_kind, origin_name, occurred_at, contact_id, spam, doc \
                     FROM events WHERE id > ?1 AND id < ?2 ORDER BY id LIMIT ?3",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![after, until.to_string(), limit as i64], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, bool>(6)?,
                        r.get::<_, String>(7)?,
                    ))
                })
                .map_err(map_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, event_type, origin_kind, origin_name, occurred, contact, spam, doc) =
                    row.map_err(map_err)?;
                // An unreadable document still moves the cursor: it has no
                // attribution or deal fields to roll up.
                let doc = decode_doc(&doc, &format_args!("event {id}")).unwrap_or_default();
                out.push(RollupEvent {
                    id: parse_uuid(&id)?,
                    event_type,
                    origin_kind,
                    origin_name,
                    occurred_at: from_ms(occurred),
                    contact_id: opt_uuid(contact)?,
                    spam,
                    doc,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn rollup_context(
        &self,
        leads: Vec<Uuid>,
        deals: Vec<String>,
        clocks: Vec<Uuid>,
    ) -> StoreResult<RollupContext> {
        self.read(move |c| {
            // One query per kind: the ids go in as one JSON array.
            let leads = json_ids(leads.iter().map(|u| u.to_string()));
            let clocks = json_ids(clocks.iter().map(|u| u.to_string()));
            let deals = json_ids(deals.into_iter());
            Ok(RollupContext {
                leads: leads_where(
                    c,
                    "contact_id IN (SELECT value FROM json_each(?1))",
                    &[&leads],
                )?,
                responses: responses_where(
                    c,
                    "contact_id IN (SELECT value FROM json_each(?1))",
                    &[&clocks],
                )?,
                deals: deals_where(c, "deal_id IN (SELECT value FROM json_each(?1))", &[&deals])?,
            })
        })
        .await
    }

    async fn rollup_touches(&self, contacts: Vec<Uuid>) -> StoreResult<Vec<TouchRow>> {
        self.read(move |c| {
            let ids = json_ids(contacts.iter().map(|u| u.to_string()));
            let mut stmt = c
                .prepare_cached(
                    "SELECT event_id, contact_id, at, channel, source, campaign \
                     FROM report_touches WHERE contact_id IN (SELECT value FROM json_each(?1))",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![ids], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .map_err(map_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (e, cid, at, ch, src, camp) = row.map_err(map_err)?;
                out.push(touch_from(e, cid, at, ch, src, camp)?);
            }
            Ok(out)
        })
        .await
    }

    async fn rollup_apply(&self, batch: RollupBatch) -> StoreResult<()> {
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
                    .execute(params![ROLLUP_CURSOR_KEY, cursor, now]),
                Some(from) => c
                    .prepare_cached(
                        "UPDATE kv SET value = ?2, updated_at = ?3 WHERE key = ?1 AND value = ?4",
                    )
                    .map_err(map_err)?
                    .execute(params![ROLLUP_CURSOR_KEY, cursor, now, from.to_string()]),
            }
            .map_err(map_err)?;
            if moved != 1 {
                return Err(StoreError::Conflict(
                    "another rollup pass moved the cursor".into(),
                ));
            }
            let mut touch = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO report_touches \
                     (event_id, contact_id, at, channel, source, campaign) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(map_err)?;
            for t in &batch.touches {
                touch
                    .execute(params![
                        t.event_id.to_string(),
                        t.contact_id.to_string(),
                        t.at.timestamp_millis(),
                        t.channel,
                        t.source,
                        t.campaign
                    ])
                    .map_err(map_err)?;
            }
            let mut lead = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO report_leads \
                     (contact_id, first_at, origin, channel, source, campaign) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(map_err)?;
            for l in &batch.leads {
                lead.execute(params![
                    l.contact_id.to_string(),
                    l.first_at.timestamp_millis(),
                    l.origin,
                    l.channel,
                    l.source,
                    l.campaign
                ])
                .map_err(map_err)?;
            }
            let mut deal = c
                .prepare_cached(
                    "INSERT INTO report_deals (deal_id, created_at, closed_at, doc) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT(deal_id) DO UPDATE SET created_at = excluded.created_at, \
                     closed_at = excluded.closed_at, doc = excluded.doc",
                )
                .map_err(map_err)?;
            for d in &batch.deals {
                let doc = serde_json::to_string(d).map_err(|e| corrupt("deal", e))?;
                deal.execute(params![
                    d.deal_id,
                    d.created_at.timestamp_millis(),
                    d.closed_at.map(|t| t.timestamp_millis()),
                    doc
                ])
                .map_err(map_err)?;
            }
            let mut clear = c
                .prepare_cached("DELETE FROM report_credits WHERE deal_id = ?1")
                .map_err(map_err)?;
            let mut credit = c
                .prepare_cached(
                    "INSERT INTO report_credits \
                     (deal_id, model, channel, source, campaign, credit, revenue, closed_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(map_err)?;
            for (deal_id, credits) in &batch.credits {
                clear.execute(params![deal_id]).map_err(map_err)?;
                for k in credits {
                    credit
                        .execute(params![
                            k.deal_id,
                            k.model,
                            k.channel,
                            k.source,
                            k.campaign,
                            k.credit,
                            k.revenue,
                            k.closed_at.timestamp_millis()
                        ])
                        .map_err(map_err)?;
                }
            }
            let mut response = c
                .prepare_cached(
                    "INSERT INTO report_responses (contact_id, mql_at, responded_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(contact_id) DO UPDATE SET mql_at = excluded.mql_at, \
                     responded_at = excluded.responded_at",
                )
                .map_err(map_err)?;
            for r in &batch.responses {
                response
                    .execute(params![
                        r.contact_id.to_string(),
                        r.mql_at.timestamp_millis(),
                        r.responded_at.map(|t| t.timestamp_millis())
                    ])
                    .map_err(map_err)?;
            }
            let mut handoff = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO report_handoffs (event_id, contact_id, at, owner) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(map_err)?;
            for h in &batch.handoffs {
                handoff
                    .execute(params![
                        h.event_id.to_string(),
                        h.contact_id.to_string(),
                        h.at.timestamp_millis(),
                        h.owner
                    ])
                    .map_err(map_err)?;
            }
            let mut count = c
                .prepare_cached(
                    "INSERT INTO report_kpi_counts (kpi, hour, num, den) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT(kpi, hour) DO UPDATE SET num = num + excluded.num, den = den + excluded.den",
                )
                .map_err(map_err)?;
            for k in &batch.counts {
                count
                    .execute(params![
                        k.kpi,
                        k.hour.timestamp_millis(),
                        k.num as i64,
                        k.den as i64
                    ])
                    .map_err(map_err)?;
            }
            let mut link = c
                .prepare_cached(
                    "INSERT INTO report_refs (ref, contact_id) VALUES (?1, ?2) \
                     ON CONFLICT(ref) DO UPDATE SET contact_id = excluded.contact_id",
                )
                .map_err(map_err)?;
            for (r, cid) in &batch.refs {
                link.execute(params![r, cid.to_string()]).map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn report_deals(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<DealRow>> {
        self.read(move |c| {
            deals_where(
                c,
                "created_at < ?1 AND (closed_at IS NULL OR closed_at >= ?2)",
                &[&until.timestamp_millis(), &since.timestamp_millis()],
            )
        })
        .await
    }

    async fn report_leads(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<LeadRow>> {
        self.read(move |c| {
            leads_where(
                c,
                "first_at >= ?1 AND first_at < ?2",
                &[&since.timestamp_millis(), &until.timestamp_millis()],
            )
        })
        .await
    }

    async fn report_credits(
        &self,
        model: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<CreditRow>> {
        let model = model.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT deal_id, model, channel, source, campaign, credit, revenue, closed_at \
                     FROM report_credits WHERE model = ?1 AND closed_at >= ?2 AND closed_at < ?3",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(
                    params![model, since.timestamp_millis(), until.timestamp_millis()],
                    |r| {
                        Ok(CreditRow {
                            deal_id: r.get(0)?,
                            model: r.get(1)?,
                            channel: r.get(2)?,
                            source: r.get(3)?,
                            campaign: r.get(4)?,
                            credit: r.get(5)?,
                            revenue: r.get(6)?,
                            closed_at: from_ms(r.get(7)?),
                        })
                    },
                )
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn set_campaign_costs(&self, costs: Vec<CampaignCost>) -> StoreResult<usize> {
        let costs = std::sync::Arc::new(costs);
        self.write(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "INSERT INTO report_campaign_costs (campaign, month, channel, cost) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT(campaign, month) DO UPDATE SET channel = excluded.channel, cost = excluded.cost",
                )
                .map_err(map_err)?;
            for k in costs.iter() {
                stmt.execute(params![k.campaign, k.month, k.channel, k.cost])
                    .map_err(map_err)?;
            }
            Ok(costs.len())
        })
        .await
    }

    async fn campaign_costs(&self) -> StoreResult<Vec<CampaignCost>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT campaign, month, channel, cost FROM report_campaign_costs ORDER BY campaign, month",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(CampaignCost {
                        campaign: r.get(0)?,
                        month: r.get(1)?,
                        channel: r.get(2)?,
                        cost: r.get(3)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn report_responses(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<ResponseRow>> {
        self.read(move |c| {
            responses_where(
                c,
                "mql_at >= ?1 AND mql_at < ?2",
                &[&since.timestamp_millis(), &until.timestamp_millis()],
            )
        })
        .await
    }

    async fn report_handoffs(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<HandoffOutcome>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT h.owner, COUNT(d.id), \
                     COALESCE(SUM(CASE WHEN d.state = 'delivered' THEN 1 ELSE 0 END), 0), \
                     COALESCE(SUM(CASE WHEN d.state IN ('dead', 'discarded', 'skipped') THEN 1 ELSE 0 END), 0) \
                     FROM report_handoffs h \
                     LEFT JOIN deliveries d ON d.event_id = h.event_id AND d.replayed_by IS NULL \
                     WHERE h.at >= ?1 AND h.at < ?2 GROUP BY h.event_id, h.owner",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(
                    params![since.timestamp_millis(), until.timestamp_millis()],
                    |r| {
                        Ok(HandoffOutcome {
                            owner: r.get(0)?,
                            deliveries: r.get::<_, i64>(1)? as u64,
                            delivered: r.get::<_, i64>(2)? as u64,
                            failed: r.get::<_, i64>(3)? as u64,
                        })
                    },
                )
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn report_kpi_counts(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<(String, u64, u64)>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT kpi, SUM(num), SUM(den) FROM report_kpi_counts \
                     WHERE hour >= ?1 AND hour < ?2 GROUP BY kpi ORDER BY kpi",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(
                    params![since.timestamp_millis(), until.timestamp_millis()],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)? as u64,
                            r.get::<_, i64>(2)? as u64,
                        ))
                    },
                )
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn report_ref_contacts(&self, refs: Vec<String>) -> StoreResult<Vec<(String, Uuid)>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT ref, contact_id FROM report_refs \
                     WHERE ref IN (SELECT value FROM json_each(?1))",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![json_ids(refs.into_iter())], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(map_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (r, id) = row.map_err(map_err)?;
                out.push((r, parse_uuid(&id)?));
            }
            Ok(out)
        })
        .await
    }

    async fn record_heartbeat(&self, minute: DateTime<Utc>) -> StoreResult<()> {
        self.write(move |c| {
            c.prepare_cached("INSERT OR IGNORE INTO report_heartbeats (minute) VALUES (?1)")
                .map_err(map_err)?
                .execute(params![minute.timestamp_millis()])
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn heartbeats(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<(u64, Option<DateTime<Utc>>)> {
        self.read(move |c| {
            let n: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM report_heartbeats WHERE minute >= ?1 AND minute < ?2",
                )
                .map_err(map_err)?
                .query_row(
                    params![since.timestamp_millis(), until.timestamp_millis()],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            let first: Option<i64> = c
                .prepare_cached("SELECT MIN(minute) FROM report_heartbeats")
                .map_err(map_err)?
                .query_row([], |r| r.get(0))
                .map_err(map_err)?;
            Ok((n as u64, first.map(from_ms)))
        })
        .await
    }
}
