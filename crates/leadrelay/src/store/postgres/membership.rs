//! PostgreSQL side of sequence memberships. Mirrors `sqlite/membership.rs`.

use async_trait::async_trait;

use super::{PostgresStore, exec, map_err, query};
use crate::store::common::from_ms;
use crate::store::*;

#[async_trait]
impl MembershipStore for PostgresStore {
    async fn record_memberships(&self, items: Vec<Membership>) -> StoreResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        let c = self.conn().await?;
        for m in &items {
            exec(
                &c,
                "INSERT INTO sequence_memberships \
                 (contact_key, destination, tool, sequence, state, since, updated_at, last_change) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (contact_key, destination) DO UPDATE SET \
                   tool = EXCLUDED.tool, sequence = EXCLUDED.sequence, \
                   since = CASE WHEN sequence_memberships.state = EXCLUDED.state \
                           THEN sequence_memberships.since ELSE EXCLUDED.since END, \
                   state = EXCLUDED.state, updated_at = EXCLUDED.updated_at, \
                   last_change = EXCLUDED.last_change",
                &[
                    &m.contact_key,
                    &m.destination,
                    &m.tool,
                    &m.sequence,
                    &m.state,
                    &m.since.timestamp_millis(),
                    &m.updated_at.timestamp_millis(),
                    &m.last_change,
                ],
            )
            .await
            .map_err(map_err)?;
        }
        Ok(())
    }

    async fn memberships(&self, contact_key: &str) -> StoreResult<Vec<Membership>> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT contact_key, destination, tool, sequence, state, since, updated_at, last_change \
             FROM sequence_memberships WHERE contact_key = $1 ORDER BY destination",
            &[&contact_key],
        )
        .await
        .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| Membership {
                contact_key: r.get(0),
                destination: r.get(1),
                tool: r.get(2),
                sequence: r.get(3),
                state: r.get(4),
                since: from_ms(r.get(5)),
                updated_at: from_ms(r.get(6)),
                last_change: r.get(7),
            })
            .collect())
    }
}
