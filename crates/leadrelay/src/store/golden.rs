//! The golden record as one side of a contact sync (`a = "leadrelay"` in
//! `[syncs.NAME]`): the contacts changed since a time, oldest first and
//! paged by `(updated_at, id)` on an index, and whether a person was
//! erased (so a sync never recreates them). Writes go through
//! [`Store::ingest`](super::Store::ingest) like every event. A supertrait of
//! [`Store`](super::Store), implemented by both stores in their `golden.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadrelay_model::Contact;
use uuid::Uuid;

use super::StoreResult;

#[async_trait]
pub trait GoldenStore: Send + Sync {
    /// Contacts updated at or after `since` (all when None) and after
    /// `after` (the previous page's last contact: its `updated_at` and id),
    /// ordered by `(updated_at, id)`, at most `limit`.
    async fn contacts_changed(
        &self,
        since: Option<DateTime<Utc>>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: usize,
    ) -> StoreResult<Vec<Contact>>;

    /// Whether the privacy audit log holds an erase of the person with
    /// this subject hash.
    async fn erased(&self, subject_hash: &str) -> StoreResult<bool>;
}

/// The lower bound of a page, as `(updated_at ms, id)`, exclusive.
pub(crate) fn page_floor(
    since: Option<DateTime<Utc>>,
    after: Option<(DateTime<Utc>, Uuid)>,
) -> (i64, Uuid) {
    let floor = (
        since.map_or(i64::MIN, |t| t.timestamp_millis().saturating_sub(1)),
        Uuid::max(),
    );
    match after {
        Some((t, id)) if (t.timestamp_millis(), id) > floor => (t.timestamp_millis(), id),
        _ => floor,
    }
}
