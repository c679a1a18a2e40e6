//! SQLite side of the golden record as a sync system. Mirrors
//! `postgres/golden.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadrelay_model::Contact;
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::SqliteStore;
use super::rows::*;
use crate::store::common::decode_doc;
use crate::store::*;

#[async_trait]
impl GoldenStore for SqliteStore {
    async fn contacts_changed(
        &self,
        since: Option<DateTime<Utc>>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: usize,
    ) -> StoreResult<Vec<Contact>> {
        let (ms, id) = page_floor(since, after);
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT doc FROM contacts WHERE (updated_at, id) > (?1, ?2) \
                     ORDER BY updated_at, id LIMIT ?3",
                )
                .map_err(map_err)?;
            let docs = stmt
                .query_map(params![ms, id.to_string(), limit as i64], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(map_err)?
                .collect::<Result<Vec<String>, _>>()
                .map_err(map_err)?;
            docs.iter().map(|d| decode_doc(d, &"contact")).collect()
        })
        .await
    }

    async fn erased(&self, subject_hash: &str) -> StoreResult<bool> {
        let hash = subject_hash.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT 1 FROM privacy_audit WHERE subject_hash = ?1 AND action = 'erase' LIMIT 1",
            )
            .map_err(map_err)?
            .query_row([hash], |_| Ok(()))
            .optional()
            .map_err(map_err)?
            .is_some())
        })
        .await
    }
}
