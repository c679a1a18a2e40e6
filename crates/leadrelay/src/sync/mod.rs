//! Record sync between two CRMs (`[syncs.NAME]`): contacts, companies,
//! deals and custom objects. Changes are taken in by polling each system
//! with a durable cursor, each record is decided by [`engine::decide`]
//! (echo recognition through the write ledger, field ownership, conflict
//! strategies), and the writes go to the systems under a share of their
//! destination's rate limit.
//!
//! Everything the sync knows lives in the store's key-value table, under
//! `sync:NAME:`: per record (`record:KEY`) its ids in both systems, seen
//! and agreed values and write ledger; per system and vendor id the
//! durable link to the record (`link:a|b:ID`); per system its poll cursor
//! (`cursor:a|b`) and the latest health figures (`health:`). A record's
//! KEY is its match value when first seen (a contact's email, a company's
//! normalised domain …) or `#a:ID` / `#b:ID` without one; once both ids
//! are linked the key no longer matters, so an edited domain or email
//! does not split a record. Records are saved by compare-and-set, so a
//! person's decision made during a round is never lost. A crash loses
//! nothing: a round's records are saved (with the writes they are about
//! to make in the ledger) before the writes, and the cursors only after
//! them, so a restarted round sees the same changes again and finds them
//! settled.

pub mod engine;
pub mod golden;
mod worker;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use worker::{
    BackfillEnd, Choice, DecideError, Health, SyncRunner, Wakers, decide_conflict, health,
    normalise_key, plain_close_refused, share_pacer, start_all,
};

use crate::connectors::Outcome;
use engine::Val;

/// What a CRM's sync system needs from its destination's settings: an
/// HTTP client, the base URL and the token (from `token_env`).
pub fn client_parts(
    ctx: &crate::connectors::BuildContext<'_>,
    common: &crate::connectors::crm::CommonSettings,
    token_env: &str,
    default_base: &str,
) -> Result<(reqwest::Client, String, String), Vec<crate::config::Problem>> {
    let token = ctx.secret("token_env", token_env).map_err(|p| vec![p])?;
    let base = crate::connectors::crm::base_url(common.base_url.as_deref(), default_base)
        .map_err(|p| vec![p])?;
    let client = crate::connectors::http::client(ctx.timeout, common.allow_private_networks)
        .map_err(|m| vec![crate::config::Problem::error("", m)])?;
    Ok((client, base, token))
}

/// The review-item kind of a sync conflict.
pub const SYNC_CONFLICT: &str = "sync_conflict";

/// A record as a system shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteRecord {
    pub id: String,
    /// The match key's value: a contact's lower-cased email, else the
    /// `match` field's value as the system holds it.
    pub key: Option<String>,
    /// The vendor's modification time of the record's data (what `latest`
    /// compares).
    pub modified_at: DateTime<Utc>,
    /// Where the poll cursor moves to when it differs from `modified_at`
    /// (Salesforce's `SystemModstamp`, which system changes move too).
    pub cursor_at: Option<DateTime<Utc>>,
    /// Vendor field → value.
    pub fields: BTreeMap<String, Val>,
}

/// One page of changed records, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<RemoteRecord>,
    /// Where the next page starts (None: no more).
    pub next: Option<String>,
}

/// One write into a system.
#[derive(Debug, Clone)]
pub struct WriteOp {
    /// The record's key in the sync's state.
    pub record: String,
    /// The match key's value (a contact's email): a record without an id
    /// is looked up by it (contacts: upserted by email) and, when none is
    /// found, created with it.
    pub key: Option<String>,
    /// The record's id when known (else found by key or created).
    pub id: Option<String>,
    /// Vendor field → value (None: clear it).
    pub fields: BTreeMap<String, Val>,
}

/// A system's failure, with the shared classification.
#[derive(Debug, Clone)]
pub struct SyncError(pub Outcome);

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::connectors::crm::outcome_text(&self.0))
    }
}

/// What a CRM connector offers a sync: changed records since a time, and
/// field writes.
#[async_trait]
pub trait SyncSystem: Send + Sync {
    /// Records modified at or after `since` (all when None), oldest first;
    /// `page` is a previous page's `next`.
    async fn changes(
        &self,
        since: Option<DateTime<Utc>>,
        page: Option<&str>,
        fields: &[String],
    ) -> Result<Page, SyncError>;

    /// Whether [`SyncSystem::changes`] shows every completed write (no
    /// search-index lag).
    fn consistent(&self) -> bool {
        false
    }

    /// Applies writes; one result per op, in order: the record's id.
    async fn write(&self, ops: &[WriteOp]) -> Vec<Result<String, SyncError>>;

    /// Whether some of `fields` change without moving the record's
    /// modification time (HubSpot associations), so
    /// [`SyncSystem::changes`] cannot show their changes and the sync
    /// reads its linked records with [`SyncSystem::read`] now and then.
    fn swept(&self, fields: &[String]) -> bool {
        let _ = fields;
        false
    }

    /// Of these writes into the *other* system, those that must not go:
    /// their record's data may not leave this system (the golden record:
    /// a person without the consent the other destination needs, or no
    /// longer held). One answer per op, in order.
    async fn withheld(&self, ops: &[WriteOp]) -> Result<Vec<bool>, SyncError> {
        Ok(vec![false; ops.len()])
    }

    /// The current state of these records (those that still exist).
    async fn read(
        &self,
        ids: &[String],
        fields: &[String],
    ) -> Result<Vec<RemoteRecord>, SyncError> {
        let _ = (ids, fields);
        Ok(Vec::new())
    }
}
