//! A person's right to see and to be forgotten: export everything held
//! about an email address, or erase it, each written to the audit log
//! (who, when, what) — never with the address itself, only a keyed hash of
//! it, so the log can answer "was this person erased?" without holding them.
//!
//! An erase reaches what leadrelay controls: the store, and the local
//! backups (`file` JSON Lines and `csv` files, rewritten without the
//! person's lines); and it asks the CRMs holding the person to delete them,
//! through the outbox (an erase request per CRM destination, retried,
//! logged and dead-lettered like any delivery).

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use leadrelay_model::{
    ConsentPurpose, ContactData, EmailAddress, Event, EventType, Origin, new_id,
};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::config::Config;
use crate::connectors::crm;
use crate::connectors::file::erase::{Format, Subject, erase_series};
use crate::ingest::withdraw;
use crate::store::{
    AuditRecord, BackupErasure, EraseReport, IngestItem, PrivacyExport, PrivacyRequest,
    RemoteErasure, RemoteRecordRef, Store, StoreError,
};

const SUBJECT_KEY_KV: &str = "privacy.subject_hash_key";

/// Export and erase, with their audit records.
pub struct Privacy {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    key: OnceCell<Vec<u8>>,
}

/// The actor of erasures by the retention job.
pub const RETENTION_ACTOR: &str = "system:retention";

/// The origin of withdrawals recorded through the admin API or the CLI.
pub const WITHDRAW_ORIGIN: &str = "privacy";

/// What a withdrawal recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WithdrawReport {
    pub audit_id: Uuid,
    /// The `unsubscribed` event that carries the withdrawal (None: the
    /// address is not a valid email, so no contact can have it).
    pub event_id: Option<Uuid>,
    /// The golden contact now holding it.
    pub contact_id: Option<Uuid>,
    /// The purposes withdrawn.
    pub purposes: Vec<ConsentPurpose>,
}

/// Why a withdrawal was refused.
#[derive(Debug, thiserror::Error)]
pub enum WithdrawError {
    /// The caller's input, with the field it concerns.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Privacy {
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>) -> Self {
        Self {
            store,
            config,
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
            idle_before: None,
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

    /// Withdraws consent for `purposes` (none: the configured
    /// `privacy.unsubscribe_withdraws`) for the person with `email`: stores
    /// an `unsubscribed` event (origin `system:privacy`, routed nowhere)
    /// whose withdrawal records the golden contact takes as its latest
    /// answers, so the send-time gate skips their waiting deliveries.
    /// Audited.
    pub async fn withdraw(
        &self,
        email: &str,
        purposes: &[ConsentPurpose],
        actor: &str,
        reason: Option<String>,
    ) -> Result<WithdrawReport, WithdrawError> {
        let email = Self::normalise(email.trim()).map_err(|message| WithdrawError::Invalid {
            field: "email",
            message,
        })?;
        let defaults = &self.config.privacy.unsubscribe_withdraws;
        if purposes.is_empty() && defaults.is_empty() {
            return Err(WithdrawError::Invalid {
                field: "purposes",
                message: "name the purposes to withdraw: privacy.unsubscribe_withdraws is empty"
                    .into(),
            });
        }
        let withdrawn: Vec<ConsentPurpose> = if purposes.is_empty() {
            defaults.clone()
        } else {
            purposes.to_vec()
        };
        let now = Utc::now();
        // An address that is not a valid email can belong to no contact
        // (every contact's is one): the request is audited, nothing stored.
        let (event_id, contact_id) = match EmailAddress::parse(&email) {
            Ok(address) => self.record_withdrawal(address, &withdrawn, now).await?,
            Err(_) => (None, None),
        };
        let audit = AuditRecord {
            id: new_id(),
            action: "withdraw".into(),
            actor: actor.to_string(),
            subject_hash: self.subject_hash(&email).await?,
            at: now,
            reason,
            details: serde_json::json!({
                "event_id": event_id,
                "contact_id": contact_id,
                "purposes": withdrawn,
            }),
        };
        self.store.add_privacy_audit(&audit).await?;
        tracing::info!(audit_id = %audit.id, actor, purposes = ?withdrawn, "consent withdrawn");
        Ok(WithdrawReport {
            audit_id: audit.id,
            event_id,
            contact_id,
            purposes: withdrawn,
        })
    }

    /// Stores the `unsubscribed` event carrying withdrawals of `purposes`;
    /// its id and the contact now holding them.
    async fn record_withdrawal(
        &self,
        address: EmailAddress,
        purposes: &[ConsentPurpose],
        now: chrono::DateTime<Utc>,
    ) -> Result<(Option<Uuid>, Option<Uuid>), StoreError> {
        let mut data = serde_json::Map::new();
        data.insert(withdraw::PURPOSES_FIELD.into(), serde_json::json!(purposes));
        let mut event = Event::internal(
            EventType::Unsubscribed,
            Origin::system(WITHDRAW_ORIGIN),
            ContactData {
                email: Some(address.clone()),
                ..Default::default()
            },
            data,
            now,
        );
        event.consent = withdraw::records(&event, purposes, &[]);
        let event_id = self
            .store
            .ingest_one(IngestItem {
                event,
                destinations: Vec::new(),
                idempotency: None,
            })
            .await?;
        let contact_id = self
            .store
            .find_contact_by_email(address.as_str())
            .await?
            .map(|c| c.id);
        Ok((Some(event_id), contact_id))
    }

    /// Erases every contact with no event since `before` (retention of
    /// contacts): each exactly like [`Privacy::erase`] of the store, each
    /// audited as an erase by `system:retention`. A contact that has an event
    /// again by the time it is erased is kept. Returns how many were erased.
    pub async fn purge_stale_contacts(
        &self,
        before: chrono::DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        const PAGE: usize = 200;
        let mut erased = 0u64;
        // Contacts skipped (active again, or failed) this run, so a page of
        // them never stops the ones behind it.
        let mut skipped = std::collections::BTreeSet::new();
        loop {
            let page = self
                .store
                .stale_contacts(before, PAGE + skipped.len())
                .await?;
            let fresh: Vec<String> = page
                .iter()
                .filter(|e| !skipped.contains(*e))
                .cloned()
                .collect();
            if fresh.is_empty() {
                return Ok(erased);
            }
            for email in fresh {
                let mut req = self
                    .request(
                        &email,
                        RETENTION_ACTOR,
                        Some(format!(
                            "retention: no event since {}",
                            before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        )),
                    )
                    .await?;
                req.idle_before = Some(before);
                match self.store.privacy_erase(&req).await {
                    Ok(report) => {
                        erased += 1;
                        tracing::info!(audit_id = %report.audit_id, events = report.event_ids.len(), "retention: contact erased");
                    }
                    Err(StoreError::Conflict(_)) => {
                        skipped.insert(email);
                    }
                    Err(e) => return Err(e),
                }
            }
            if page.len() < PAGE + skipped.len() {
                return Ok(erased);
            }
        }
    }

    /// Erases `email` (normalised): the store (in one transaction with its
    /// audit record), then the local backups (`file` and `csv` series,
    /// rotated files included), audited as `erase_backups`.
    pub async fn erase(
        &self,
        email: &str,
        actor: &str,
        reason: Option<String>,
    ) -> Result<EraseReport, StoreError> {
        let req = self.request(email, actor, reason.clone()).await?;
        let reason_for_remote = reason.clone();
        let mut report = self.store.privacy_erase(&req).await?;
        let subject = Subject {
            email: email.to_lowercase(),
            event_ids: report.event_ids.iter().map(Uuid::to_string).collect(),
        };
        let series = self.backup_series();
        if !series.is_empty() {
            report.backups = tokio::task::spawn_blocking(move || erase_backups(&series, &subject))
                .await
                .map_err(|e| StoreError::Unavailable(format!("backup erasure task: {e}")))?;
            let audit = AuditRecord {
                id: new_id(),
                action: "erase_backups".into(),
                actor: actor.to_string(),
                subject_hash: req.subject_hash.clone(),
                at: Utc::now(),
                reason,
                details: serde_json::json!({
                    "erase_audit_id": report.audit_id,
                    "files": report.backups.iter().filter(|b| b.error.is_none()).map(|b| serde_json::json!({
                        "destination": b.destination,
                        "file": b.file,
                        "lines_removed": b.lines_removed,
                    })).collect::<Vec<_>>(),
                    "errors": report.backups.iter().filter_map(|b| b.error.as_ref().map(|e| serde_json::json!({
                        "destination": b.destination,
                        "error": e,
                    }))).collect::<Vec<_>>(),
                }),
            };
            self.store.add_privacy_audit(&audit).await?;
        }
        report.remote_erasures = self
            .queue_remote_erasures(&report, &req, reason_for_remote)
            .await?;
        tracing::info!(
            audit_id = %report.audit_id,
            actor,
            events = report.event_ids.len(),
            remote_erasures = report.remote_erasures.len(),
            deliveries_stopped = report.deliveries_stopped,
            remote_records = report.remote_records.len(),
            backup_files = report.backups.len(),
            "privacy erase"
        );
        Ok(report)
    }

    /// Queues an erase request to every CRM destination that held records
    /// of the person (`report.remote_records`): one `privacy.erase` event
    /// per destination, routed to it alone, carrying only the CRM's record
    /// ids. Each is audited as `erase_remote`.
    async fn queue_remote_erasures(
        &self,
        report: &EraseReport,
        req: &PrivacyRequest,
        reason: Option<String>,
    ) -> Result<Vec<RemoteErasure>, StoreError> {
        let mut by_destination: std::collections::BTreeMap<&str, Vec<RemoteRecordRef>> =
            Default::default();
        for r in &report.remote_records {
            let Some(d) = self.config.destinations.get(&r.destination) else {
                continue;
            };
            if !crm::erasable(&d.connector, &r.remote.object) {
                continue;
            }
            let refs = by_destination.entry(r.destination.as_str()).or_default();
            let rec = RemoteRecordRef {
                object: r.remote.object.clone(),
                id: r.remote.id.clone(),
            };
            if !refs.contains(&rec) {
                refs.push(rec);
            }
        }
        let mut out = Vec::new();
        for (destination, records) in by_destination {
            let now = Utc::now();
            let mut data = serde_json::Map::new();
            data.insert("records".into(), serde_json::json!(records));
            data.insert("erase_audit_id".into(), serde_json::json!(report.audit_id));
            let event = Event::internal(
                EventType::Custom(crm::ERASE_EVENT_TYPE.into()),
                Origin::system(WITHDRAW_ORIGIN),
                ContactData::default(),
                data,
                now,
            );
            let event_id = self
                .store
                .ingest_one(IngestItem {
                    event,
                    destinations: vec![destination.to_string()],
                    idempotency: None,
                })
                .await?;
            let delivery_id = self
                .store
                .deliveries_for_event(event_id)
                .await?
                .first()
                .map(|d| d.id);
            let audit = AuditRecord {
                id: new_id(),
                action: "erase_remote".into(),
                actor: req.actor.clone(),
                subject_hash: req.subject_hash.clone(),
                at: now,
                reason: reason.clone(),
                details: serde_json::json!({
                    "erase_audit_id": report.audit_id,
                    "destination": destination,
                    "event_id": event_id,
                    "delivery_id": delivery_id,
                    "records": records,
                }),
            };
            self.store.add_privacy_audit(&audit).await?;
            out.push(RemoteErasure {
                destination: destination.to_string(),
                event_id,
                delivery_id,
                records,
            });
        }
        Ok(out)
    }

    /// The backup series of the configured `file` and `csv` destinations
    /// (enabled or not: their files are ours either way).
    fn backup_series(&self) -> Vec<BackupSeries> {
        self.config
            .destinations
            .iter()
            .filter_map(|(name, d)| {
                let format = match d.connector.as_str() {
                    "file" => Format::Jsonl,
                    "csv" => Format::Csv,
                    _ => return None,
                };
                let dir = d.settings.get("path")?.as_str()?;
                let prefix = d
                    .settings
                    .get("prefix")
                    .and_then(|p| p.as_str())
                    .unwrap_or("leads");
                Some(BackupSeries {
                    destination: name.clone(),
                    dir: PathBuf::from(dir),
                    prefix: prefix.to_string(),
                    format,
                })
            })
            .collect()
    }
}

/// One local backup series: `{dir}/{prefix}-*.{jsonl|csv}`.
struct BackupSeries {
    destination: String,
    dir: PathBuf,
    prefix: String,
    format: Format,
}

/// Rewrites every series without the subject's lines. A series that fails
/// is reported with its error; the others go ahead.
fn erase_backups(series: &[BackupSeries], subject: &Subject) -> Vec<BackupErasure> {
    let mut out = Vec::new();
    for s in series {
        match erase_series(&s.dir, &s.prefix, s.format, subject) {
            Ok(files) => out.extend(files.into_iter().map(|f| BackupErasure {
                destination: s.destination.clone(),
                file: f.path.display().to_string(),
                lines_removed: f.lines_removed,
                error: None,
            })),
            Err(e) => {
                tracing::error!(destination = %s.destination, error = %e, "erasing from a backup failed");
                out.push(BackupErasure {
                    destination: s.destination.clone(),
                    file: s.dir.display().to_string(),
                    lines_removed: 0,
                    error: Some(e.to_string()),
                });
            }
        }
    }
    out
}
