//! SQLite side of sequence memberships. Mirrors `postgres/membership.rs`.

use async_trait::async_trait;
use rusqlite::params;

use super::SqliteStore;
use super::rows::*;
use crate::store::common::from_ms;
use crate::store::*;

#[async_trait]
impl MembershipStore for SqliteStore {
    async fn record_memberships(&self, items: Vec<Membership>) -> StoreResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.write(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "INSERT INTO sequence_memberships \
                     (contact_key, destination, tool, sequence, state, since, updated_at, last_change) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (contact_key, destination) DO UPDATE SET \
                       tool = excluded.tool, sequence = excluded.sequence, \
                       since = CASE WHEN sequence_memberships.state = excluded.state \
                               THEN sequence_memberships.since ELSE excluded.since END, \
                       state = excluded.state, updated_at = excluded.updated_at, \
                       last_change = excluded.last_change",
                )
                .map_err(map_err)?;
            for m in &items {
                stmt.execute(params![
                    m.contact_key,
                    m.destination,
                    m.tool,
                    m.sequence,
                    m.state,
                    m.since.timestamp_millis(),
                    m.updated_at.timestamp_millis(),
                    m.last_change,
                ])
                .map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn memberships(&self, contact_key: &str) -> StoreResult<Vec<Membership>> {
        let key = contact_key.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT contact_key, destination, tool, sequence, state, since, updated_at, last_change \
                     FROM sequence_memberships WHERE contact_key = ?1 ORDER BY destination",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map([key], |r| {
                    Ok(Membership {
                        contact_key: r.get(0)?,
                        destination: r.get(1)?,
                        tool: r.get(2)?,
                        sequence: r.get(3)?,
                        state: r.get(4)?,
                        since: from_ms(r.get(5)?),
                        updated_at: from_ms(r.get(6)?),
                        last_change: r.get(7)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }
}
