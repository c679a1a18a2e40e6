//! PostgreSQL side of the golden record as a sync system. Mirrors
//! `sqlite/golden.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadrelay_model::Contact;
use uuid::Uuid;

use super::{PostgresStore, contact_from_doc, map_err, query};
use crate::store::*;

#[async_trait]
impl GoldenStore for PostgresStore {
    async fn contacts_changed(
        &self,
        since: Option<DateTime<Utc>>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: usize,
    ) -> StoreResult<Vec<Contact>> {
        let (ms, id) = page_floor(since, after);
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT doc FROM contacts WHERE (updated_at, id) > ($1, $2) \
             ORDER BY updated_at, id LIMIT $3",
            &[&ms, &id, &(limit as i64)],
        )
        .await
        .map_err(map_err)?;
        rows.iter().map(|r| contact_from_doc(r.get(0))).collect()
    }

    async fn erased(&self, subject_hash: &str) -> StoreResult<bool> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT 1 FROM privacy_audit WHERE subject_hash = $1 AND action = 'erase' LIMIT 1",
            &[&subject_hash],
        )
        .await
        .map_err(map_err)?;
        Ok(!rows.is_empty())
    }
}
