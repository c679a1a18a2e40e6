//! leadrelay's own golden record as one side of a contact sync
//! (`a = "leadrelay"`): the contacts changed since a time come from the
//! store (oldest first, paged on the `(updated_at, id)` index), and a write
//! is a `contact.updated` event ingested without deliveries, so it merges
//! into the golden contact exactly as a form or webhook does (normalised
//! email and phone, `[contacts.fields]` rules, an empty value never erases)
//! and each field it sets names it as its source:
//! `system:sync-NAME-DESTINATION`.
//!
//! What leaves the golden record is gated like a delivery: a person without
//! the consent the CRM destination needs (`purposes`, unless it declares
//! `legal_basis = "legitimate_interest"`) is not shown to the sync, and no
//! write of theirs reaches the CRM; neither does anything of a person who
//! is no longer held (erased). Consent itself (`consent.PURPOSE`) is read,
//! never written: `check` makes the golden side its only owner. A person
//! erased is never recreated by a write from the CRM.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadrelay_model::{
    ConsentPurpose, Contact, ContactData, EmailAddress, Event, EventType, Origin, PhoneE164,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::engine::Val;
use super::{Page, RemoteRecord, SyncError, SyncSystem, WriteOp};
use crate::config::sync::CONSENT_PREFIX;
use crate::config::{Config, LegalBasis};
use crate::connectors::{ErrorClass, Outcome};
use crate::contacts::MergeRules;
use crate::privacy::Privacy;
use crate::store::{IngestItem, Store, StoreError};

/// Contacts per page of changes.
const PAGE: usize = 200;

/// The golden record as a sync system.
pub struct GoldenSystem {
    sync: String,
    /// The CRM destination on the other side.
    peer: String,
    store: Arc<dyn Store>,
    privacy: Privacy,
    /// `[contacts.fields]`: a write whose value a rule would refuse is
    /// reported, not stored (see [`GoldenSystem::refused`]).
    rules: MergeRules,
    /// What the peer destination needs before a person's data goes to it.
    legal_basis: Option<LegalBasis>,
    purposes: Vec<ConsentPurpose>,
}

/// The golden side of sync `sync`, whose other side is destination `peer`.
pub fn system(
    sync: &str,
    peer: &str,
    config: &Config,
    store: Arc<dyn Store>,
) -> Arc<dyn SyncSystem> {
    let d = config.destinations.get(peer);
    Arc::new(GoldenSystem {
        sync: sync.to_string(),
        peer: peer.to_string(),
        privacy: Privacy::new(store.clone(), Arc::new(config.clone())),
        rules: MergeRules::compile(&config.contacts).unwrap_or_default(),
        store,
        legal_basis: d.and_then(|d| d.legal_basis),
        purposes: d.map(|d| d.purposes.clone()).unwrap_or_default(),
    })
}

/// The origin of the events a sync's writes are recorded as (so the
/// provenance of each field they set): `system:sync-NAME-DESTINATION`.
pub fn origin(sync: &str, peer: &str) -> Origin {
    Origin::system(&format!("sync-{sync}-{peer}"))
}

/// A golden-contact field's value, by its name (`phone`, `first_name`,
/// `consent.PURPOSE` as `true`/`false`, a custom field).
pub fn read_field(c: &Contact, field: &str) -> Val {
    if let Some(purpose) = field.strip_prefix(CONSENT_PREFIX) {
        return c.consent.get(purpose).map(|r| r.granted.to_string());
    }
    let d = &c.data;
    let v = match field {
        "phone" => d.phone.as_ref().map(|p| p.as_str().to_string()),
        "first_name" => d.first_name.clone(),
        "last_name" => d.last_name.clone(),
        "company" => d.company.clone(),
        "domain" => d.domain.clone(),
        "title" => d.title.clone(),
        "website" => d.website.clone(),
        "country" => d.country.clone(),
        "region" => d.region.clone(),
        "city" => d.city.clone(),
        custom => match d.custom.get(custom) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        },
    };
    v.filter(|s| !s.trim().is_empty())
}

fn permanent(message: impl Into<String>) -> SyncError {
    SyncError(Outcome::permanent(ErrorClass::Mapping, message))
}

fn unavailable(e: StoreError) -> SyncError {
    SyncError(Outcome::retry(ErrorClass::Internal, e.to_string()))
}

impl GoldenSystem {
    /// Whether the person's data may go to the peer destination (its
    /// consent gate, as deliveries apply it).
    fn shareable(&self, c: &Contact) -> bool {
        let probe = Event::internal(
            EventType::ContactUpdated,
            origin(&self.sync, &self.peer),
            ContactData::default(),
            Default::default(),
            c.updated_at,
        );
        crate::delivery::consent::check(self.legal_basis, &self.purposes, &probe, Some(c)).is_ok()
    }

    /// The golden contact a write into it is about: by id, else by email.
    async fn find(&self, op: &WriteOp) -> Result<Option<Contact>, StoreError> {
        if let Some(id) = op.id.as_deref().and_then(|i| Uuid::parse_str(i).ok())
            && let Some(c) = self.store.get_contact(id).await?
        {
            return Ok(Some(c));
        }
        self.by_email(op).await
    }

    /// The golden contact with the op's match value (an email).
    async fn by_email(&self, op: &WriteOp) -> Result<Option<Contact>, StoreError> {
        match op.key.as_deref().map(|k| k.trim().to_lowercase()) {
            Some(email) if !email.is_empty() => self.store.find_contact_by_email(&email).await,
            _ => Ok(None),
        }
    }

    /// The contact data a write carries (empty values left out: the golden
    /// record never erases a value with a blank).
    fn data(&self, email: EmailAddress, op: &WriteOp) -> Result<ContactData, SyncError> {
        let mut data = ContactData {
            email: Some(email),
            ..Default::default()
        };
        for (field, v) in &op.fields {
            if field.starts_with(CONSENT_PREFIX) {
                return Err(permanent(format!(
                    "{field}: consent is leadrelay's and is never written from {}",
                    self.peer
                )));
            }
            let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
                continue;
            };
            if field == "phone" {
                let p = PhoneE164::parse(v, None).map_err(|e| {
                    permanent(format!(
                        "phone: {v:?} from {} is not a phone number in international form: {e}",
                        self.peer
                    ))
                })?;
                data.phone = Some(p);
            } else if !data.set_text(field, v.to_string()) {
                data.custom
                    .insert(field.clone(), Value::String(v.to_string()));
            }
        }
        Ok(data)
    }

    /// The fields of `event` the merge rules would not take into `found`.
    /// Such a write is not stored at all: stored, it would show the golden
    /// contact changed with its old value, and the sync would write the
    /// CRM's value again every round.
    fn refused(&self, found: Option<Contact>, event: &Event, now: DateTime<Utc>) -> Vec<String> {
        let Some(merged) = crate::contacts::merge_with(&self.rules, found, event, now) else {
            return Vec::new();
        };
        let mut names: Vec<String> = event.contact.to_flat_map().keys().cloned().collect();
        names.retain(|n| n != "email");
        names
            .into_iter()
            .filter(|n| {
                merged
                    .provenance
                    .get(n)
                    .is_none_or(|p| p.event_id != event.id)
            })
            .collect()
    }

    async fn write_one(&self, op: &WriteOp, now: DateTime<Utc>) -> Result<String, SyncError> {
        let found = self.find(op).await.map_err(unavailable)?;
        let email =
            match (&found, op.key.as_deref()) {
                (Some(c), _) => c.data.email.clone(),
                (None, Some(k)) => Some(EmailAddress::parse(k.trim()).map_err(|e| {
                    permanent(format!("email from {} is not valid: {e}", self.peer))
                })?),
                (None, None) => None,
            };
        let Some(email) = email else {
            return Err(permanent(format!(
                "the record in {} has no email to find or create the golden contact by",
                self.peer
            )));
        };
        if found.is_none() {
            let hash = self
                .privacy
                .subject_hash(email.as_str())
                .await
                .map_err(unavailable)?;
            if self.store.erased(&hash).await.map_err(unavailable)? {
                return Err(permanent(format!(
                    "the person of this {} record was erased from leadrelay (privacy): a sync does not recreate them",
                    self.peer
                )));
            }
        }
        let data = self.data(email.clone(), op)?;
        let fields: Vec<&String> = op.fields.keys().collect();
        let event = Event::internal(
            EventType::ContactUpdated,
            origin(&self.sync, &self.peer),
            data,
            json!({"sync": self.sync, "system": self.peer, "fields": fields})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            now,
        );
        let refused = self.refused(found, &event, now);
        if !refused.is_empty() {
            return Err(permanent(format!(
                "the golden record's [contacts.fields] rules keep its value of {} against the sync's from {}: own the field on the leadrelay side",
                refused.join(", "),
                self.peer
            )));
        }
        self.store
            .ingest_one(IngestItem {
                event,
                destinations: Vec::new(),
                idempotency: None,
            })
            .await
            .map_err(unavailable)?;
        let contact = self
            .store
            .find_contact_by_email(email.as_str())
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                SyncError(Outcome::retry(
                    ErrorClass::Internal,
                    "the golden contact written is not found",
                ))
            })?;
        Ok(contact.id.to_string())
    }
}

#[async_trait]
impl SyncSystem for GoldenSystem {
    async fn changes(
        &self,
        since: Option<DateTime<Utc>>,
        page: Option<&str>,
        fields: &[String],
    ) -> Result<Page, SyncError> {
        let after = match page {
            None => None,
            Some(p) => {
                let parsed = p.split_once('/').and_then(|(ms, id)| {
                    Some((
                        DateTime::from_timestamp_millis(ms.parse().ok()?)?,
                        Uuid::parse_str(id).ok()?,
                    ))
                });
                Some(parsed.ok_or_else(|| permanent(format!("bad page token {p:?}")))?)
            }
        };
        let contacts = self
            .store
            .contacts_changed(since, after, PAGE)
            .await
            .map_err(unavailable)?;
        let next = (contacts.len() == PAGE)
            .then(|| contacts.last())
            .flatten()
            .map(|c| format!("{}/{}", c.updated_at.timestamp_millis(), c.id));
        let records = contacts
            .iter()
            .filter(|c| self.shareable(c))
            .filter_map(|c| {
                Some(RemoteRecord {
                    id: c.id.to_string(),
                    key: Some(c.data.email.as_ref()?.as_str().to_string()),
                    modified_at: c.updated_at,
                    cursor_at: None,
                    fields: fields
                        .iter()
                        .map(|f| (f.clone(), read_field(c, f)))
                        .collect::<BTreeMap<_, _>>(),
                })
            })
            .collect();
        Ok(Page { records, next })
    }

    fn consistent(&self) -> bool {
        true
    }

    async fn write(&self, ops: &[WriteOp]) -> Vec<Result<String, SyncError>> {
        let now = Utc::now();
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(self.write_one(op, now).await);
        }
        out
    }

    async fn withheld(&self, ops: &[WriteOp]) -> Result<Vec<bool>, SyncError> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            // The op is a write into the peer: its id is the peer's.
            let held = self.by_email(op).await.map_err(unavailable)?;
            out.push(!held.is_some_and(|c| self.shareable(&c)));
        }
        Ok(out)
    }
}
