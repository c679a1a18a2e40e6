//! SQLite side of the admin API and dashboard: contacts listing, API keys,
//! sessions, the review queue, privacy export/erase with its audit log, and
//! the overview's activity series.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use leadrelay_model::{Contact, new_id};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;
use uuid::Uuid;

use super::SqliteStore;
use super::rows::*;
use crate::store::common::{
    ERASED_REASON, bucket, check_idle, erase_audit, export_audit, person_keys, scrub,
    skip_unreadable, stand_in_event, sync_record_suffix,
};
use crate::store::*;

const KEY_COLS: &str = "id, name, role, prefix, created_at, last_used_at, revoked_at";
const REVIEW_COLS: &str = "id, kind, status, summary, contact_id, destination, details, created_at, resolved_at, resolved_by, resolution";
const AUDIT_COLS: &str = "id, action, actor, subject_hash, at, reason, details";

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<StoreResult<ApiKey>> {
    let id: String = r.get(0)?;
    let role: String = r.get(2)?;
    let key = ApiKey {
        id: Uuid::nil(),
        name: r.get(1)?,
        role: Role::Viewer,
        prefix: r.get(3)?,
        created_at: from_ms(r.get(4)?),
        last_used_at: r.get::<_, Option<i64>>(5)?.map(from_ms),
        revoked_at: r.get::<_, Option<i64>>(6)?.map(from_ms),
    };
    Ok((|| {
        Ok(ApiKey {
            id: parse_uuid(&id)?,
            role: Role::parse(&role)
                .ok_or_else(|| StoreError::Corrupt(format!("api key {id}: role {role:?}")))?,
            ..key
        })
    })())
}

fn review_from_row(r: &Row<'_>) -> rusqlite::Result<StoreResult<ReviewItem>> {
    let id: String = r.get(0)?;
    let status: String = r.get(2)?;
    let contact_id: Option<String> = r.get(4)?;
    let details: String = r.get(6)?;
    let item = ReviewItem {
        id: Uuid::nil(),
        kind: r.get(1)?,
        status: ReviewStatus::Open,
        summary: r.get(3)?,
        contact_id: None,
        destination: r.get(5)?,
        details: Value::Null,
        created_at: from_ms(r.get(7)?),
        resolved_at: r.get::<_, Option<i64>>(8)?.map(from_ms),
        resolved_by: r.get(9)?,
        resolution: r.get(10)?,
    };
    Ok((|| {
        Ok(ReviewItem {
            id: parse_uuid(&id)?,
            status: ReviewStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("review item {id}: {status:?}")))?,
            contact_id: opt_uuid(contact_id)?,
            details: serde_json::from_str(&details)
                .map_err(|e| StoreError::Corrupt(format!("review item {id}: {e}")))?,
            ..item
        })
    })())
}

fn audit_from_row(r: &Row<'_>) -> rusqlite::Result<StoreResult<AuditRecord>> {
    let id: String = r.get(0)?;
    let details: String = r.get(6)?;
    let rec = AuditRecord {
        id: Uuid::nil(),
        action: r.get(1)?,
        actor: r.get(2)?,
        subject_hash: r.get(3)?,
        at: from_ms(r.get(4)?),
        reason: r.get(5)?,
        details: Value::Null,
    };
    Ok((|| {
        Ok(AuditRecord {
            id: parse_uuid(&id)?,
            details: serde_json::from_str(&details)
                .map_err(|e| StoreError::Corrupt(format!("audit {id}: {e}")))?,
            ..rec
        })
    })())
}

fn collect<T>(rows: Vec<StoreResult<T>>) -> StoreResult<Vec<T>> {
    rows.into_iter().collect()
}

fn key_where(c: &Connection, cond: &str, value: &str) -> StoreResult<Option<ApiKey>> {
    c.prepare_cached(&format!("SELECT {KEY_COLS} FROM api_keys WHERE {cond}"))
        .map_err(map_err)?
        .query_row([value], key_from_row)
        .optional()
        .map_err(map_err)?
        .transpose()
}

fn insert_audit(c: &Connection, rec: &AuditRecord) -> StoreResult<()> {
    c.prepare_cached(&format!(
        "INSERT INTO privacy_audit ({AUDIT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))
    .map_err(map_err)?
    .execute(params![
        rec.id.to_string(),
        rec.action,
        rec.actor,
        rec.subject_hash,
        rec.at.timestamp_millis(),
        rec.reason,
        rec.details.to_string(),
    ])
    .map_err(map_err)?;
    Ok(())
}

/// Ids of the events about a person: merged into their contact, or
/// carrying their email (spam is never merged into a contact).
fn person_event_ids(
    c: &Connection,
    email: &str,
    contact_id: Option<Uuid>,
) -> StoreResult<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    let mut by_email = c
        .prepare_cached("SELECT id FROM events WHERE email = ?1")
        .map_err(map_err)?;
    for r in by_email
        .query_map([email], |r| r.get::<_, String>(0))
        .map_err(map_err)?
    {
        ids.insert(r.map_err(map_err)?);
    }
    ids.extend(person_event_ids_by_contact(c, contact_id)?);
    Ok(ids)
}

fn remote_records(c: &Connection, keys: &[String]) -> StoreResult<Vec<RemoteRecord>> {
    let mut stmt = c
        .prepare_cached(
            "SELECT destination, object, key, remote_id FROM remote_ids WHERE key = ?1 ORDER BY destination, object",
        )
        .map_err(map_err)?;
    let mut out = Vec::new();
    for k in keys {
        let rows = stmt
            .query_map([k], |r| {
                Ok(RemoteRecord {
                    destination: r.get(0)?,
                    remote: RemoteId {
                        object: r.get(1)?,
                        key: r.get(2)?,
                        id: r.get(3)?,
                    },
                })
            })
            .map_err(map_err)?;
        for r in rows {
            out.push(r.map_err(map_err)?);
        }
    }
    Ok(out)
}

fn erase_tx(
    c: &Connection,
    req: &PrivacyRequest,
    found_ids: &BTreeSet<String>,
    now: DateTime<Utc>,
) -> StoreResult<EraseReport> {
    let now_ms = now.timestamp_millis();
    let contact = contact_by(c, "email", &req.email)?;
    check_idle(req, contact.as_ref())?;
    // Events merged into the contact since the read phase are caught here.
    let mut ids = found_ids.clone();
    ids.extend(person_event_ids_by_contact(
        c,
        contact.as_ref().map(|c| c.id),
    )?);
    let mut event_ids = Vec::with_capacity(ids.len());
    let mut deliveries_stopped = 0u64;
    let mut overrides_cleared = 0u64;
    for id in &ids {
        let found = c
            .prepare_cached(&format!("SELECT {EVENT_COLS} FROM events WHERE id = ?1"))
            .map_err(map_err)?
            .query_row([id], event_from_row)
            .optional()
            .map_err(map_err)?;
        let Some(ev) = found else { continue };
        let ev = match ev {
            Ok(ev) => ev,
            Err(StoreError::Corrupt(m)) => {
                tracing::warn!(event = %id, error = %m, "erasing an unreadable event: replaced by what its columns say");
                stand_in_from_columns(c, id)?
            }
            Err(e) => return Err(e),
        };
        let mut ev = scrub(ev);
        let doc = event_doc(&mut ev)?;
        c.prepare_cached(
            "UPDATE events SET doc = ?2, email = NULL, contact_id = NULL, idempotency_key = NULL, \
             raw_body = NULL, raw_content_type = NULL WHERE id = ?1",
        )
        .map_err(map_err)?
        .execute(params![id, doc])
        .map_err(map_err)?;
        overrides_cleared += c
            .prepare_cached(
                "UPDATE deliveries SET overrides = NULL, updated_at = ?2 WHERE event_id = ?1 AND overrides IS NOT NULL",
            )
            .map_err(map_err)?
            .execute(params![id, now_ms])
            .map_err(map_err)? as u64;
        // The requests as sent carried the person's data.
        c.prepare_cached(
            "UPDATE attempts SET exchange = NULL WHERE exchange IS NOT NULL \
             AND delivery_id IN (SELECT id FROM deliveries WHERE event_id = ?1)",
        )
        .map_err(map_err)?
        .execute(params![id])
        .map_err(map_err)?;
        deliveries_stopped += c
            .prepare_cached(
                "UPDATE deliveries SET state = 'skipped', reason = ?2, lease_id = NULL, next_attempt_at = NULL, \
                 finished_at = ?3, updated_at = ?3 \
                 WHERE event_id = ?1 AND state IN ('pending', 'scheduled', 'in_flight', 'dead')",
            )
            .map_err(map_err)?
            .execute(params![id, ERASED_REASON, now_ms])
            .map_err(map_err)? as u64;
        // The ordering key named the person.
        c.prepare_cached(
            "UPDATE deliveries SET contact_key = 'event:' || event_id WHERE event_id = ?1 AND contact_key NOT LIKE 'event:%'",
        )
        .map_err(map_err)?
        .execute([id])
        .map_err(map_err)?;
        event_ids.push(parse_uuid(id)?);
    }
    let keys = person_keys(&req.email, contact.as_ref());
    let remote = remote_records(c, &keys)?;
    let mut del = c
        .prepare_cached("DELETE FROM remote_ids WHERE key = ?1")
        .map_err(map_err)?;
    let mut del_memberships = c
        .prepare_cached("DELETE FROM sequence_memberships WHERE contact_key = ?1")
        .map_err(map_err)?;
    for k in &keys {
        del.execute([k]).map_err(map_err)?;
        del_memberships.execute([k]).map_err(map_err)?;
    }
    if let Some(ct) = &contact {
        c.prepare_cached("DELETE FROM contacts WHERE id = ?1")
            .map_err(map_err)?
            .execute([ct.id.to_string()])
            .map_err(map_err)?;
        super::lead::forget(c, ct.id)?;
    }
    // What the contact syncs know of the person (seen values, links).
    c.prepare_cached(
        "DELETE FROM kv WHERE key LIKE 'sync:%' AND (substr(key, length(key) - length(?1) + 1) = ?1 \
         OR (key LIKE 'sync:%:link:%' AND value = ?2))",
    )
    .map_err(map_err)?
    .execute(params![sync_record_suffix(&req.email), req.email])
    .map_err(map_err)?;
    let report = EraseReport {
        audit_id: new_id(),
        contact_id: contact.as_ref().map(|c| c.id),
        event_ids,
        deliveries_stopped,
        overrides_cleared,
        remote_records: remote,
        backups: Vec::new(),
        remote_erasures: Vec::new(),
    };
    insert_audit(c, &erase_audit(req, &report, now))?;
    Ok(report)
}

fn person_event_ids_by_contact(
    c: &Connection,
    contact_id: Option<Uuid>,
) -> StoreResult<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    if let Some(cid) = contact_id {
        let mut stmt = c
            .prepare_cached("SELECT id FROM events WHERE contact_id = ?1")
            .map_err(map_err)?;
        for r in stmt
            .query_map([cid.to_string()], |r| r.get::<_, String>(0))
            .map_err(map_err)?
        {
            ids.insert(r.map_err(map_err)?);
        }
    }
    Ok(ids)
}

/// An event whose document cannot be read, as its columns (and its raw
/// payload) give it.
fn stand_in_from_columns(c: &Connection, id: &str) -> StoreResult<Event> {
    c.prepare_cached(
        "SELECT type, origin_kind, origin_name, received_at, occurred_at, raw_content_type, raw_body \
         FROM events WHERE id = ?1",
    )
    .map_err(map_err)?
    .query_row([id], |r| {
        let mut ev = stand_in_event(
            parse_uuid(id).unwrap_or_default(),
            &r.get::<_, String>(0)?,
            (&r.get::<_, String>(1)?, &r.get::<_, String>(2)?),
            r.get(3)?,
            r.get(4)?,
        );
        ev.raw.content_type = r.get::<_, Option<String>>(5)?.unwrap_or_default();
        ev.raw.body = r.get::<_, Option<String>>(6)?.unwrap_or_default();
        Ok(ev)
    })
    .map_err(map_err)
}

fn export_read(c: &Connection, email: &str) -> StoreResult<PrivacyExport> {
    let contact = contact_by(c, "email", email)?;
    let ids = person_event_ids(c, email, contact.as_ref().map(|c| c.id))?;
    let mut events = Vec::new();
    let mut deliveries = Vec::new();
    let mut attempts = Vec::new();
    let mut ev_stmt = c
        .prepare_cached(&format!("SELECT {EVENT_COLS} FROM events WHERE id = ?1"))
        .map_err(map_err)?;
    let mut del_stmt = c
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLS} FROM deliveries WHERE event_id = ?1 ORDER BY id"
        ))
        .map_err(map_err)?;
    let mut att_stmt = c
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLS} FROM attempts WHERE delivery_id = ?1 ORDER BY number, started_at"
        ))
        .map_err(map_err)?;
    for id in &ids {
        if let Some(ev) = ev_stmt
            .query_row([id], event_from_row)
            .optional()
            .map_err(map_err)?
        {
            events.push(match ev {
                Ok(ev) => ev,
                // What can be read of it: its columns and raw payload.
                Err(StoreError::Corrupt(m)) => {
                    tracing::warn!(event = %id, error = %m, "exporting an unreadable event: what its columns say");
                    stand_in_from_columns(c, id)?
                }
                Err(e) => return Err(e),
            });
        }
        let ds: Vec<StoreResult<Delivery>> = del_stmt
            .query_map([id], delivery_from_row)
            .map_err(map_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(map_err)?;
        for d in collect(ds)? {
            let atts: Vec<StoreResult<Attempt>> = att_stmt
                .query_map([d.id.to_string()], attempt_from_row)
                .map_err(map_err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(map_err)?;
            attempts.extend(collect(atts)?);
            deliveries.push(d);
        }
    }
    let remote_records = remote_records(c, &person_keys(email, contact.as_ref()))?;
    Ok(PrivacyExport {
        audit_id: Uuid::nil(),
        contact,
        events,
        deliveries,
        attempts,
        remote_records,
    })
}

impl SqliteStore {
    pub(super) async fn list_contacts_impl(
        &self,
        filter: &ContactFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Contact>> {
        let filter = filter.clone();
        self.read(move |c| {
            let mut q = QueryBuilder::new("SELECT doc FROM contacts WHERE 1=1");
            q.and_text_search(filter.search.as_deref());
            if let Some(b) = before {
                q.and("id < ?", b.to_string());
            }
            q.push(&format!(" ORDER BY id DESC LIMIT {}", limit.clamp(1, 1000)));
            skip_unreadable(
                q.query(c, |r| r.get::<_, String>(0))?
                    .into_iter()
                    .map(|doc| decode_doc(&doc, &"contact")),
            )
        })
        .await
    }

    pub(super) async fn create_api_key_impl(&self, key: NewApiKey) -> StoreResult<ApiKey> {
        self.write(move |c| {
            let taken = key_where(c, "name = ?1 AND revoked_at IS NULL", &key.name)?;
            if taken.is_some() {
                return Err(StoreError::Conflict(format!(
                    "an active API key is already named {:?}",
                    key.name
                )));
            }
            c.prepare_cached(
                "INSERT INTO api_keys (id, name, role, prefix, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(map_err)?
            .execute(params![
                key.id.to_string(),
                key.name,
                key.role.as_str(),
                key.prefix,
                key.hash,
                key.created_at.timestamp_millis()
            ])
            .map_err(map_err)?;
            key_where(c, "id = ?1", &key.id.to_string())?
                .ok_or_else(|| StoreError::Corrupt("the new key was not stored".into()))
        })
        .await
    }

    pub(super) async fn api_keys_impl(&self) -> StoreResult<Vec<ApiKey>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {KEY_COLS} FROM api_keys ORDER BY created_at, id"
                ))
                .map_err(map_err)?;
            let rows: Vec<StoreResult<ApiKey>> = stmt
                .query_map([], key_from_row)
                .map_err(map_err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(map_err)?;
            collect(rows)
        })
        .await
    }

    pub(super) async fn api_key_by_hash_impl(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        let hash = hash.to_string();
        self.read(move |c| key_where(c, "hash = ?1", &hash)).await
    }

    pub(super) async fn revoke_api_key_impl(&self, name_or_id: &str) -> StoreResult<ApiKey> {
        let target = name_or_id.to_string();
        self.write(move |c| {
            let key = match key_where(c, "id = ?1", &target)? {
                Some(k) => Some(k),
                None => key_where(c, "name = ?1 AND revoked_at IS NULL", &target)?,
            };
            let Some(key) = key else {
                return Err(StoreError::NotFound(format!("no API key named {target:?}")));
            };
            if key.revoked_at.is_some() {
                return Err(StoreError::Conflict(format!(
                    "API key {:?} is already revoked",
                    key.name
                )));
            }
            let now = Utc::now().timestamp_millis();
            c.prepare_cached("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1")
                .map_err(map_err)?
                .execute(params![key.id.to_string(), now])
                .map_err(map_err)?;
            c.prepare_cached("DELETE FROM sessions WHERE key_id = ?1")
                .map_err(map_err)?
                .execute([key.id.to_string()])
                .map_err(map_err)?;
            Ok(ApiKey {
                revoked_at: Some(from_ms(now)),
                ..key
            })
        })
        .await
    }

    pub(super) async fn touch_api_key_impl(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        self.write(move |c| {
            c.prepare_cached("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1")
                .map_err(map_err)?
                .execute(params![id.to_string(), at.timestamp_millis()])
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn create_session_impl(&self, s: NewSession) -> StoreResult<()> {
        self.write(move |c| {
            c.prepare_cached("DELETE FROM sessions WHERE expires_at < ?1")
                .map_err(map_err)?
                .execute([s.created_at.timestamp_millis()])
                .map_err(map_err)?;
            c.prepare_cached(
                "INSERT INTO sessions (token_hash, key_id, csrf_token, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(map_err)?
            .execute(params![
                s.token_hash,
                s.key_id.to_string(),
                s.csrf_token,
                s.created_at.timestamp_millis(),
                s.expires_at.timestamp_millis()
            ])
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn session_impl(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Session>> {
        let token_hash = token_hash.to_string();
        self.read(move |c| {
            let row: Option<(String, String, i64, i64)> = c
                .prepare_cached(
                    "SELECT key_id, csrf_token, created_at, expires_at FROM sessions WHERE token_hash = ?1 AND expires_at > ?2",
                )
                .map_err(map_err)?
                .query_row(params![token_hash, now.timestamp_millis()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
                .map_err(map_err)?;
            let Some((key_id, csrf_token, created, expires)) = row else {
                return Ok(None);
            };
            let key = key_where(c, "id = ?1 AND revoked_at IS NULL", &key_id)?;
            Ok(key.map(|key| Session {
                key,
                csrf_token,
                created_at: from_ms(created),
                expires_at: from_ms(expires),
            }))
        })
        .await
    }

    pub(super) async fn delete_session_impl(&self, token_hash: &str) -> StoreResult<()> {
        let token_hash = token_hash.to_string();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")
                .map_err(map_err)?
                .execute([&token_hash])
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn add_review_item_impl(&self, item: ReviewItem) -> StoreResult<()> {
        self.write(move |c| insert_review_item(c, &item)).await
    }

    pub(super) async fn list_review_items_impl(
        &self,
        status: Option<ReviewStatus>,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<ReviewItem>> {
        self.read(move |c| {
            let mut q =
                QueryBuilder::new(&format!("SELECT {REVIEW_COLS} FROM review_items WHERE 1=1"));
            if let Some(s) = status {
                q.and("status = ?", s.as_str().to_string());
            }
            if let Some(b) = before {
                q.and("id < ?", b.to_string());
            }
            q.push(&format!(" ORDER BY id DESC LIMIT {}", limit.clamp(1, 1000)));
            collect(q.query(c, review_from_row)?)
        })
        .await
    }

    pub(super) async fn get_review_item_impl(&self, id: Uuid) -> StoreResult<Option<ReviewItem>> {
        self.read(move |c| review_by_id(c, id)).await
    }

    pub(super) async fn resolve_review_item_impl(
        &self,
        id: Uuid,
        status: ReviewStatus,
        resolution: Option<String>,
        actor: &str,
    ) -> StoreResult<ReviewItem> {
        if status == ReviewStatus::Open {
            return Err(StoreError::Conflict(
                "a review item is closed as resolved or dismissed".into(),
            ));
        }
        let actor = actor.to_string();
        self.write(move |c| {
            let Some(item) = review_by_id(c, id)? else {
                return Err(StoreError::NotFound(format!("no review item {id}")));
            };
            if item.status != ReviewStatus::Open {
                return Err(StoreError::Conflict(format!(
                    "review item {id} is already {}",
                    item.status.as_str()
                )));
            }
            c.prepare_cached(
                "UPDATE review_items SET status = ?2, resolution = ?3, resolved_by = ?4, resolved_at = ?5 WHERE id = ?1",
            )
            .map_err(map_err)?
            .execute(params![
                id.to_string(),
                status.as_str(),
                resolution,
                actor,
                Utc::now().timestamp_millis()
            ])
            .map_err(map_err)?;
            review_by_id(c, id)?.ok_or_else(|| StoreError::NotFound(format!("no review item {id}")))
        })
        .await
    }

    pub(super) async fn privacy_export_impl(
        &self,
        req: &PrivacyRequest,
    ) -> StoreResult<PrivacyExport> {
        let email = req.email.clone();
        let mut export = self.read(move |c| export_read(c, &email)).await?;
        let rec = export_audit(req, &export);
        export.audit_id = rec.id;
        self.write(move |c| insert_audit(c, &rec)).await?;
        Ok(export)
    }

    pub(super) async fn privacy_erase_impl(
        &self,
        req: &PrivacyRequest,
    ) -> StoreResult<EraseReport> {
        // Finding events by email scans the table: do it on a read
        // connection, so the writer (and ingest) never waits on the scan.
        let email = req.email.clone();
        let found = self
            .read(move |c| {
                let contact = contact_by(c, "email", &email)?;
                person_event_ids(c, &email, contact.map(|c| c.id))
            })
            .await?;
        let req = req.clone();
        let report = self
            .write(move |c| {
                // Zero every byte the erase frees, also where that costs I/O
                // (overflow pages of large payloads), then go back to FAST.
                c.pragma_update(None, "secure_delete", "ON")
                    .map_err(map_err)?;
                let report = erase_tx(c, &req, &found, Utc::now());
                let _ = c.pragma_update(None, "secure_delete", "FAST");
                report
            })
            .await?;
        // The log still holds the pages as they were before the erase.
        self.truncate_wal
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(report)
    }

    pub(super) async fn stale_contacts_impl(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let before_ms = before.timestamp_millis();
        let limit = limit.clamp(1, 10_000) as i64;
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT email FROM contacts WHERE updated_at < ?1 AND email IS NOT NULL \
                     ORDER BY updated_at LIMIT ?2",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![before_ms, limit], |r| r.get::<_, String>(0))
                .map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)).collect()
        })
        .await
    }

    pub(super) async fn add_privacy_audit_impl(&self, record: &AuditRecord) -> StoreResult<()> {
        let record = record.clone();
        self.write(move |c| insert_audit(c, &record)).await
    }

    pub(super) async fn privacy_audit_impl(
        &self,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<AuditRecord>> {
        self.read(move |c| {
            let mut q =
                QueryBuilder::new(&format!("SELECT {AUDIT_COLS} FROM privacy_audit WHERE 1=1"));
            if let Some(b) = before {
                q.and("id < ?", b.to_string());
            }
            q.push(&format!(" ORDER BY id DESC LIMIT {}", limit.clamp(1, 1000)));
            collect(q.query(c, audit_from_row)?)
        })
        .await
    }

    pub(super) async fn lead_counts_impl(
        &self,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<LeadCount>> {
        let bucket_ms = bucket_secs.max(1) * 1000;
        self.read(move |c| {
            let since_id = uuid_v7_floor(since);
            let mut stmt = c
                .prepare_cached(
                    "SELECT received_at, origin_kind, origin_name FROM events \
                     WHERE type = ?1 AND id >= ?2 AND spam = 0",
                )
                .map_err(map_err)?;
            let mut counts: std::collections::BTreeMap<(i64, String), u64> = Default::default();
            for t in LEAD_EVENT_TYPES {
                let rows = stmt
                    .query_map(params![t, since_id], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    })
                    .map_err(map_err)?;
                for row in rows {
                    let (at, kind, name) = row.map_err(map_err)?;
                    *counts
                        .entry((bucket(at, bucket_ms), format!("{kind}:{name}")))
                        .or_default() += 1;
                }
            }
            Ok(counts
                .into_iter()
                .map(|((b, origin), count)| LeadCount {
                    bucket_start: from_ms(b),
                    origin,
                    count,
                })
                .collect())
        })
        .await
    }

    pub(super) async fn attempt_buckets_impl(
        &self,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<AttemptBucket>> {
        let bucket_ms = bucket_secs.max(1) * 1000;
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT (started_at / ?2) * ?2 AS b, \
                     SUM(CASE WHEN outcome = 'delivered' THEN 1 ELSE 0 END), \
                     SUM(CASE WHEN outcome IN ('retry', 'dead') THEN 1 ELSE 0 END) \
                     FROM attempts WHERE id >= ?1 GROUP BY b ORDER BY b",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![uuid_v7_floor(since), bucket_ms], |r| {
                    Ok(AttemptBucket {
                        bucket_start: from_ms(r.get(0)?),
                        succeeded: r.get::<_, i64>(1)?.max(0) as u64,
                        failed: r.get::<_, i64>(2)?.max(0) as u64,
                    })
                })
                .map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)).collect()
        })
        .await
    }
}

fn review_by_id(c: &Connection, id: Uuid) -> StoreResult<Option<ReviewItem>> {
    c.prepare_cached(&format!(
        "SELECT {REVIEW_COLS} FROM review_items WHERE id = ?1"
    ))
    .map_err(map_err)?
    .query_row([id.to_string()], review_from_row)
    .optional()
    .map_err(map_err)?
    .transpose()
}

/// Inserts a review item (also inside the ingest transaction).
pub(super) fn insert_review_item(c: &Connection, item: &ReviewItem) -> StoreResult<()> {
    c.prepare_cached(&format!(
        "INSERT INTO review_items ({REVIEW_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))
    .map_err(map_err)?
    .execute(params![
        item.id.to_string(),
        item.kind,
        item.status.as_str(),
        item.summary,
        item.contact_id.map(|u| u.to_string()),
        item.destination,
        item.details.to_string(),
        item.created_at.timestamp_millis(),
        item.resolved_at.map(|t| t.timestamp_millis()),
        item.resolved_by,
        item.resolution,
    ])
    .map_err(map_err)?;
    Ok(())
}
