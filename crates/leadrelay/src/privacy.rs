//! A person's right to see and to be forgotten: export everything held
//! about an email address, or erase it, each written to the audit log
//! (who, when, what) — never with the address itself, only a keyed hash of
//! it, so the log can answer "was this person erased?" without holding them.
//!
//! Erasure in the destinations (asking a CRM to delete its copy) is the
//! next step and not done here: [`Privacy::erase`] returns, and logs, the
//! records each destination keeps for the person (`remote_records`); a CRM
//! erasure queue takes them from that report.

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::OnceCell;

use crate::store::{EraseReport, PrivacyExport, PrivacyRequest, Store, StoreError};

const SUBJECT_KEY_KV: &str = "privacy.subject_hash_key";

/// Export and erase, with their audit records.
pub struct Privacy {
    store: Arc<dyn Store>,
    key: OnceCell<Vec<u8>>,
}

impl Privacy {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            key: OnceCell::new(),
        }
    }

    /// The lookup key for an address: lower-cased, one `@` with text on
    /// both sides, at most 254 characters. Not a full address check: a
    /// privacy request looks up what is stored, valid or not.
    pub fn normalise(email: &str) -> Result<String, String> {
        let n = email.chars().count();
        let parts: Vec<&str> = email.split('@').collect();
        if n == 0 || n > 254 {
            return Err("the email must be 1 to 254 characters".into());
        }
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            return Err("the email must have one @ with text on both sides".into());
        }
        Ok(email.to_lowercase())
    }

    /// Keyed hash (HMAC-SHA256) of a normalised email, under a key generated
    /// once per installation and kept in the store.
    pub async fn subject_hash(&self, email: &str) -> Result<String, StoreError> {
        let key = self
            .key
            .get_or_try_init(|| async {
                let mut fresh = [0u8; 32];
                rand::fill(&mut fresh);
                self.store
                    .kv_get_or_insert(SUBJECT_KEY_KV, &hex::encode(fresh))
                    .await
                    .map(String::into_bytes)
            })
            .await?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .map_err(|e| StoreError::Corrupt(format!("subject hash key: {e}")))?;
        mac.update(email.as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    async fn request(
        &self,
        email: &str,
        actor: &str,
        reason: Option<String>,
    ) -> Result<PrivacyRequest, StoreError> {
        Ok(PrivacyRequest {
            email: email.to_string(),
            actor: actor.to_string(),
            subject_hash: self.subject_hash(email).await?,
            reason,
        })
    }

    /// Everything held about `email` (normalised), audited.
    pub async fn export(
        &self,
        email: &str,
        actor: &str,
        reason: Option<String>,
    ) -> Result<PrivacyExport, StoreError> {
        let req = self.request(email, actor, reason).await?;
        let export = self.store.privacy_export(&req).await?;
        tracing::info!(audit_id = %export.audit_id, actor, events = export.events.len(), "privacy export");
        Ok(export)
    }

    /// Erases `email` (normalised), audited.
    pub async fn erase(
        &self,
        email: &str,
        actor: &str,
        reason: Option<String>,
    ) -> Result<EraseReport, StoreError> {
        let req = self.request(email, actor, reason).await?;
        let report = self.store.privacy_erase(&req).await?;
        tracing::info!(
            audit_id = %report.audit_id,
            actor,
            events = report.event_ids.len(),
            deliveries_stopped = report.deliveries_stopped,
            remote_records = report.remote_records.len(),
            "privacy erase: local data removed; remote records listed in the report are for the destinations' own erasure"
        );
        Ok(report)
    }
}
