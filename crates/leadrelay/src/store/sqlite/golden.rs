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

/// A page of changed contacts, on the `contacts_updated` index.
pub(super) const CHANGED: &str = "SELECT doc FROM contacts WHERE (updated_at, id) > (?1, ?2) \
     ORDER BY updated_at, id LIMIT ?3";

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
            let mut stmt = c.prepare_cached(CHANGED).map_err(map_err)?;
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

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::super::schema::MIGRATIONS;

    #[test]
    fn changed_contacts_are_read_from_the_index() {
        let c = Connection::open_in_memory().unwrap();
        for m in MIGRATIONS {
            c.execute_batch(m).unwrap();
        }
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {}", super::CHANGED))
            .unwrap()
            .query_map(rusqlite::params![0i64, "x", 10i64], |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX contacts_updated"))
                && !plan.iter().any(|p| p.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }
}
