//! PostgreSQL side of the admin API and dashboard: contacts listing, API
//! keys, sessions, the review queue, privacy export/erase with its audit
//! log, and the overview's activity series. Mirrors `sqlite/admin.rs`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use leadrelay_model::{Contact, new_id};
use tokio_postgres::Row;
use uuid::Uuid;

use super::rows::*;
use super::{PgError, PgFilter, PostgresStore, contact_from_doc, exec, map_err, query, query_opt};
use crate::store::common::{
    ERASED_REASON, bucket, check_idle, erase_audit, escape_like, event_doc, export_audit, from_ms,
    person_keys, scrub, skip_unreadable, stand_in_event, sync_record_suffix, uuid_v7_floor_id,
};
use crate::store::*;

const KEY_COLS: &str = "id, name, role, prefix, created_at, last_used_at, revoked_at";
const REVIEW_COLS: &str = "id, kind, status, summary, contact_id, destination, details, created_at, resolved_at, resolved_by, resolution";
const AUDIT_COLS: &str = "id, action, actor, subject_hash, at, reason, details";

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn key_from_row(r: &Row) -> StoreResult<ApiKey> {
    let id: Uuid = r.try_get(0).map_err(db)?;
    let role: String = r.try_get(2).map_err(db)?;
    Ok(ApiKey {
        id,
        name: r.try_get(1).map_err(db)?,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("api key {id}: role {role:?}")))?,
        prefix: r.try_get(3).map_err(db)?,
        created_at: from_ms(r.try_get(4).map_err(db)?),
        last_used_at: r.try_get::<_, Option<i64>>(5).map_err(db)?.map(from_ms),
        revoked_at: r.try_get::<_, Option<i64>>(6).map_err(db)?.map(from_ms),
    })
}

fn review_from_row(r: &Row) -> StoreResult<ReviewItem> {
    let id: Uuid = r.try_get(0).map_err(db)?;
    let status: String = r.try_get(2).map_err(db)?;
    let details: String = r.try_get(6).map_err(db)?;
    Ok(ReviewItem {
        id,
        kind: r.try_get(1).map_err(db)?,
        status: ReviewStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("review item {id}: {status:?}")))?,
        summary: r.try_get(3).map_err(db)?,
        contact_id: r.try_get(4).map_err(db)?,
        destination: r.try_get(5).map_err(db)?,
        details: serde_json::from_str(&details)
            .map_err(|e| StoreError::Corrupt(format!("review item {id}: {e}")))?,
        created_at: from_ms(r.try_get(7).map_err(db)?),
        resolved_at: r.try_get::<_, Option<i64>>(8).map_err(db)?.map(from_ms),
        resolved_by: r.try_get(9).map_err(db)?,
        resolution: r.try_get(10).map_err(db)?,
    })
}

fn audit_from_row(r: &Row) -> StoreResult<AuditRecord> {
    let id: Uuid = r.try_get(0).map_err(db)?;
    let details: String = r.try_get(6).map_err(db)?;
    Ok(AuditRecord {
        id,
        action: r.try_get(1).map_err(db)?,
        actor: r.try_get(2).map_err(db)?,
        subject_hash: r.try_get(3).map_err(db)?,
        at: from_ms(r.try_get(4).map_err(db)?),
        reason: r.try_get(5).map_err(db)?,
        details: serde_json::from_str(&details)
            .map_err(|e| StoreError::Corrupt(format!("audit {id}: {e}")))?,
    })
}

async fn key_by_id<C: GenericClient + Sync>(c: &C, id: Uuid) -> StoreResult<Option<ApiKey>> {
    query_opt(
        c,
        &format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1"),
        &[&id],
    )
    .await
    .map_err(map_err)?
    .map(|r| key_from_row(&r))
    .transpose()
}

async fn active_key_named<C: GenericClient + Sync>(
    c: &C,
    name: &str,
) -> StoreResult<Option<ApiKey>> {
    query_opt(
        c,
        &format!("SELECT {KEY_COLS} FROM api_keys WHERE name = $1 AND revoked_at IS NULL"),
        &[&name],
    )
    .await
    .map_err(map_err)?
    .map(|r| key_from_row(&r))
    .transpose()
}

async fn review_by_id<C: GenericClient + Sync>(c: &C, id: Uuid) -> StoreResult<Option<ReviewItem>> {
    query_opt(
        c,
        &format!("SELECT {REVIEW_COLS} FROM review_items WHERE id = $1"),
        &[&id],
    )
    .await
    .map_err(map_err)?
    .map(|r| review_from_row(&r))
    .transpose()
}

/// An event whose document cannot be read (`why`), as its columns (and
/// its raw payload) give it.
async fn stand_in_from_columns<C: GenericClient + Sync>(
    c: &C,
    id: Uuid,
    why: String,
) -> StoreResult<leadrelay_model::Event> {
    let r = query_opt(
        c,
        "SELECT type, origin_kind, origin_name, received_at, occurred_at, raw_content_type, raw_body \
         FROM events WHERE id = $1",
        &[&id],
    )
    .await
    .map_err(map_err)?
    .ok_or(StoreError::Corrupt(why))?;
    let mut ev = stand_in_event(id, r.get(0), (r.get(1), r.get(2)), r.get(3), r.get(4));
    ev.raw.content_type = r.get::<_, Option<String>>(5).unwrap_or_default();
    ev.raw.body = r.get::<_, Option<String>>(6).unwrap_or_default();
    Ok(ev)
}

async fn contact_by_email<C: GenericClient + Sync>(
    c: &C,
    email: &str,
) -> StoreResult<Option<Contact>> {
    query_opt(c, "SELECT doc FROM contacts WHERE email = $1", &[&email])
        .await
        .map_err(map_err)?
        .map(|r| contact_from_doc(r.get(0)))
        .transpose()
}

async fn insert_audit<C: GenericClient + Sync>(c: &C, rec: &AuditRecord) -> StoreResult<()> {
    exec(
        c,
        &format!("INSERT INTO privacy_audit ({AUDIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
        &[
            &rec.id,
            &rec.action,
            &rec.actor,
            &rec.subject_hash,
            &rec.at.timestamp_millis(),
            &rec.reason,
            &rec.details.to_string(),
        ],
    )
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Ids of the events about a person: merged into their contact, or carrying
/// their email (spam is never merged into a contact).
async fn person_event_ids<C: GenericClient + Sync>(
    c: &C,
    email: &str,
    contact_id: Option<Uuid>,
) -> StoreResult<BTreeSet<Uuid>> {
    let rows = query(
        c,
        "SELECT id FROM events WHERE email = $1 OR ($2::uuid IS NOT NULL AND contact_id = $2)",
        &[&email, &contact_id],
    )
    .await
    .map_err(map_err)?;
    Ok(rows.iter().map(|r| r.get::<_, Uuid>(0)).collect())
}

async fn remote_records<C: GenericClient + Sync>(
    c: &C,
    keys: &[String],
) -> StoreResult<Vec<RemoteRecord>> {
    let keys = keys.to_vec();
    let rows = query(
        c,
        "SELECT destination, object, key, remote_id FROM remote_ids WHERE key = ANY($1) \
         ORDER BY array_position($1, key), destination, object",
        &[&keys],
    )
    .await
    .map_err(map_err)?;
    Ok(rows
        .iter()
        .map(|r| RemoteRecord {
            destination: r.get(0),
            remote: RemoteId {
                object: r.get(1),
                key: r.get(2),
                id: r.get(3),
            },
        })
        .collect())
}

impl PostgresStore {
    pub(super) async fn list_contacts_impl(
        &self,
        filter: &ContactFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Contact>> {
        let mut b = PgFilter::new("SELECT doc FROM contacts WHERE TRUE".into());
        if let Some(term) = filter
            .search
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            b.push_text_search(&format!("%{}%", escape_like(&term.to_lowercase())));
        }
        if let Some(bf) = before {
            b.push("id < ", Box::new(bf));
        }
        b.sql
            .push_str(&format!(" ORDER BY id DESC LIMIT {}", limit.clamp(1, 1000)));
        let c = self.conn().await?;
        let rows = b.fetch(&c).await?;
        skip_unreadable(rows.iter().map(|r| contact_from_doc(r.get(0))))
    }

    pub(super) async fn create_api_key_impl(&self, key: NewApiKey) -> StoreResult<ApiKey> {
        let c = self.conn().await?;
        let inserted = exec(
            &c,
            "INSERT INTO api_keys (id, name, role, prefix, hash, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING",
            &[
                &key.id,
                &key.name,
                &key.role.as_str(),
                &key.prefix,
                &key.hash,
                &key.created_at.timestamp_millis(),
            ],
        )
        .await
        .map_err(map_err)?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "an active API key is already named {:?}",
                key.name
            )));
        }
        key_by_id(&c, key.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("the new key was not stored".into()))
    }

    pub(super) async fn api_keys_impl(&self) -> StoreResult<Vec<ApiKey>> {
        let c = self.conn().await?;
        query(
            &c,
            &format!("SELECT {KEY_COLS} FROM api_keys ORDER BY created_at, id"),
            &[],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(key_from_row)
        .collect()
    }

    pub(super) async fn api_key_by_hash_impl(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        let c = self.conn().await?;
        query_opt(
            &c,
            &format!("SELECT {KEY_COLS} FROM api_keys WHERE hash = $1"),
            &[&hash],
        )
        .await
        .map_err(map_err)?
        .map(|r| key_from_row(&r))
        .transpose()
    }

    pub(super) async fn revoke_api_key_impl(&self, name_or_id: &str) -> StoreResult<ApiKey> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(map_err)?;
        let by_id = match Uuid::parse_str(name_or_id) {
            Ok(id) => key_by_id(&tx, id).await?,
            Err(_) => None,
        };
        let key = match by_id {
            Some(k) => k,
            None => active_key_named(&tx, name_or_id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no API key named {name_or_id:?}")))?,
        };
        let now = Utc::now().timestamp_millis();
        let revoked = exec(
            &tx,
            "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&key.id, &now],
        )
        .await
        .map_err(map_err)?;
        if revoked == 0 {
            return Err(StoreError::Conflict(format!(
                "API key {:?} is already revoked",
                key.name
            )));
        }
        exec(&tx, "DELETE FROM sessions WHERE key_id = $1", &[&key.id])
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(ApiKey {
            revoked_at: Some(from_ms(now)),
            ..key
        })
    }

    pub(super) async fn touch_api_key_impl(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        let c = self.conn().await?;
        exec(
            &c,
            "UPDATE api_keys SET last_used_at = $2 WHERE id = $1",
            &[&id, &at.timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    pub(super) async fn create_session_impl(&self, s: NewSession) -> StoreResult<()> {
        let c = self.conn().await?;
        exec(
            &c,
            "DELETE FROM sessions WHERE expires_at < $1",
            &[&s.created_at.timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        exec(
            &c,
            "INSERT INTO sessions (token_hash, key_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            &[
                &s.token_hash,
                &s.key_id,
                &s.csrf_token,
                &s.created_at.timestamp_millis(),
                &s.expires_at.timestamp_millis(),
            ],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    pub(super) async fn session_impl(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Session>> {
        let c = self.conn().await?;
        let row = query_opt(
            &c,
            "SELECT key_id, csrf_token, created_at, expires_at FROM sessions WHERE token_hash = $1 AND expires_at > $2",
            &[&token_hash, &now.timestamp_millis()],
        )
        .await
        .map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        let key = key_by_id(&c, row.get(0)).await?.filter(ApiKey::is_active);
        Ok(key.map(|key| Session {
            key,
            csrf_token: row.get(1),
            created_at: from_ms(row.get(2)),
            expires_at: from_ms(row.get(3)),
        }))
    }

    pub(super) async fn delete_session_impl(&self, token_hash: &str) -> StoreResult<()> {
        let c = self.conn().await?;
        exec(
            &c,
            "DELETE FROM sessions WHERE token_hash = $1",
            &[&token_hash],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    pub(super) async fn add_review_item_impl(&self, item: ReviewItem) -> StoreResult<()> {
        let c = self.conn().await?;
        insert_review_item(&c, &item).await.map_err(map_err)
    }

    pub(super) async fn list_review_items_impl(
        &self,
        status: Option<ReviewStatus>,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<ReviewItem>> {
        let mut b = PgFilter::new(format!("SELECT {REVIEW_COLS} FROM review_items WHERE TRUE"));
        if let Some(s) = status {
            b.push("status = ", Box::new(s.as_str().to_string()));
        }
        if let Some(bf) = before {
            b.push("id < ", Box::new(bf));
        }
        b.sql
            .push_str(&format!(" ORDER BY id DESC LIMIT {}", limit.clamp(1, 1000)));
        let c = self.conn().await?;
        b.fetch(&c).await?.iter().map(review_from_row).collect()
    }

    pub(super) async fn get_review_item_impl(&self, id: Uuid) -> StoreResult<Option<ReviewItem>> {
        let c = self.conn().await?;
        review_by_id(&c, id).await
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
        let c = self.conn().await?;
        let row = query_opt(
            &c,
            &format!(
                "UPDATE review_items SET status = $2, resolution = $3, resolved_by = $4, resolved_at = $5 \
                 WHERE id = $1 AND status = 'open' RETURNING {REVIEW_COLS}"
            ),
            &[
                &id,
                &status.as_str(),
                &resolution,
                &actor,
                &Utc::now().timestamp_millis(),
            ],
        )
        .await
        .map_err(map_err)?;
        if let Some(r) = row {
            return review_from_row(&r);
        }
        match review_by_id(&c, id).await? {
            None => Err(StoreError::NotFound(format!("no review item {id}"))),
            Some(item) => Err(StoreError::Conflict(format!(
                "review item {id} is already {}",
                item.status.as_str()
            ))),
        }
    }

    pub(super) async fn privacy_export_impl(
        &self,
        req: &PrivacyRequest,
    ) -> StoreResult<PrivacyExport> {
        let mut conn = self.conn().await?;
        // One snapshot: the export is consistent even while ingest runs.
        let tx = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .map_err(map_err)?;
        let contact = contact_by_email(&tx, &req.email).await?;
        let ids: Vec<Uuid> = person_event_ids(&tx, &req.email, contact.as_ref().map(|c| c.id))
            .await?
            .into_iter()
            .collect();
        let rows = query(
            &tx,
            &format!("SELECT {EVENT_COLS} FROM events WHERE id = ANY($1) ORDER BY id"),
            &[&ids],
        )
        .await
        .map_err(map_err)?;
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            events.push(match event_from_row(r) {
                Ok(ev) => ev,
                // What can be read of it: its columns and raw payload.
                Err(StoreError::Corrupt(m)) => {
                    let id: Uuid = r.get(0);
                    tracing::warn!(event = %id, error = %m, "exporting an unreadable event: what its columns say");
                    stand_in_from_columns(&tx, id, m).await?
                }
                Err(e) => return Err(e),
            });
        }
        let deliveries = query(
            &tx,
            &format!("SELECT {DELIVERY_COLS} FROM deliveries WHERE event_id = ANY($1) ORDER BY event_id, id"),
            &[&ids],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(delivery_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        let delivery_ids: Vec<Uuid> = deliveries.iter().map(|d| d.id).collect();
        let attempts = query(
            &tx,
            &format!(
                "SELECT {ATTEMPT_COLS} FROM attempts WHERE delivery_id = ANY($1) \
                 ORDER BY array_position($1, delivery_id), number, started_at"
            ),
            &[&delivery_ids],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(attempt_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        let remote_records =
            remote_records(&tx, &person_keys(&req.email, contact.as_ref())).await?;
        let mut export = PrivacyExport {
            audit_id: Uuid::nil(),
            contact,
            events,
            deliveries,
            attempts,
            remote_records,
        };
        let rec = export_audit(req, &export);
        export.audit_id = rec.id;
        insert_audit(&tx, &rec).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(export)
    }

    pub(super) async fn privacy_erase_impl(
        &self,
        req: &PrivacyRequest,
    ) -> StoreResult<EraseReport> {
        let now = Utc::now();
        let now_ms = now.timestamp_millis();
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(map_err)?;
        // Lock the contact row: an ingest merging into it waits for the
        // erase, and then creates a fresh contact.
        let contact = query_opt(
            &tx,
            "SELECT doc FROM contacts WHERE email = $1 FOR UPDATE",
            &[&req.email],
        )
        .await
        .map_err(map_err)?
        .map(|r| contact_from_doc(r.get(0)))
        .transpose()?;
        check_idle(req, contact.as_ref())?;
        let ids: Vec<Uuid> = person_event_ids(&tx, &req.email, contact.as_ref().map(|c| c.id))
            .await?
            .into_iter()
            .collect();
        let events = query(
            &tx,
            &format!("SELECT {EVENT_COLS} FROM events WHERE id = ANY($1) ORDER BY id FOR UPDATE"),
            &[&ids],
        )
        .await
        .map_err(map_err)?;
        let mut event_ids = Vec::with_capacity(events.len());
        let mut docs = Vec::with_capacity(events.len());
        for r in &events {
            let ev = match event_from_row(r) {
                Ok(ev) => ev,
                Err(StoreError::Corrupt(m)) => {
                    let id: Uuid = r.get(0);
                    tracing::warn!(event = %id, error = %m, "erasing an unreadable event: replaced by what its columns say");
                    stand_in_from_columns(&tx, id, m).await?
                }
                Err(e) => return Err(e),
            };
            let mut ev = scrub(ev);
            docs.push(event_doc(&mut ev)?);
            event_ids.push(ev.id);
        }
        exec(
            &tx,
            "UPDATE events e SET doc = u.doc, email = NULL, contact_id = NULL, idempotency_key = NULL, \
             raw_body = NULL, raw_content_type = NULL \
             FROM UNNEST($1::uuid[], $2::text[]) AS u(id, doc) WHERE e.id = u.id",
            &[&event_ids, &docs],
        )
        .await
        .map_err(map_err)?;
        let overrides_cleared = exec(
            &tx,
            "UPDATE deliveries SET overrides = NULL, updated_at = $2 WHERE event_id = ANY($1) AND overrides IS NOT NULL",
            &[&event_ids, &now_ms],
        )
        .await
        .map_err(map_err)?;
        // The requests as sent carried the person's data.
        exec(
            &tx,
            "UPDATE attempts SET exchange = NULL WHERE exchange IS NOT NULL \
             AND delivery_id IN (SELECT id FROM deliveries WHERE event_id = ANY($1))",
            &[&event_ids],
        )
        .await
        .map_err(map_err)?;
        let deliveries_stopped = exec(
            &tx,
            "UPDATE deliveries SET state = 'skipped', reason = $2, lease_id = NULL, next_attempt_at = NULL, \
             finished_at = $3, updated_at = $3 \
             WHERE event_id = ANY($1) AND state IN ('pending', 'scheduled', 'in_flight', 'dead')",
            &[&event_ids, &ERASED_REASON, &now_ms],
        )
        .await
        .map_err(map_err)?;
        // The ordering key named the person.
        exec(
            &tx,
            "UPDATE deliveries SET contact_key = 'event:' || event_id::text \
             WHERE event_id = ANY($1) AND contact_key NOT LIKE 'event:%'",
            &[&event_ids],
        )
        .await
        .map_err(map_err)?;
        let keys = person_keys(&req.email, contact.as_ref());
        let remote = remote_records(&tx, &keys).await?;
        exec(&tx, "DELETE FROM remote_ids WHERE key = ANY($1)", &[&keys])
            .await
            .map_err(map_err)?;
        exec(
            &tx,
            "DELETE FROM sequence_memberships WHERE contact_key = ANY($1)",
            &[&keys],
        )
        .await
        .map_err(map_err)?;
        if let Some(ct) = &contact {
            exec(&tx, "DELETE FROM contacts WHERE id = $1", &[&ct.id])
                .await
                .map_err(map_err)?;
            super::lead::forget(&tx, ct.id).await.map_err(map_err)?;
        }
        // What the contact syncs know of the person (seen values, links).
        exec(
            &tx,
            "DELETE FROM kv WHERE key LIKE 'sync:%' AND (substr(key, length(key) - length($1::text) + 1) = $1::text \
             OR (key LIKE 'sync:%:link:%' AND value = $2::text))",
            &[&sync_record_suffix(&req.email), &req.email],
        )
        .await
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
        insert_audit(&tx, &erase_audit(req, &report, now)).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(report)
    }

    pub(super) async fn stale_contacts_impl(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let before_ms = before.timestamp_millis();
        let limit = limit.clamp(1, 10_000) as i64;
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT email FROM contacts WHERE updated_at < $1 AND email IS NOT NULL \
             ORDER BY updated_at LIMIT $2",
            &[&before_ms, &limit],
        )
        .await
        .map_err(map_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(super) async fn add_privacy_audit_impl(&self, record: &AuditRecord) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(map_err)?;
        insert_audit(&tx, record).await?;
        tx.commit().await.map_err(map_err)
    }

    pub(super) async fn privacy_audit_impl(
        &self,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<AuditRecord>> {
        let mut b = PgFilter::new(format!("SELECT {AUDIT_COLS} FROM privacy_audit WHERE TRUE"));
        if let Some(bf) = before {
            b.push("id < ", Box::new(bf));
        }
        b.sql
            .push_str(&format!(" ORDER BY id DESC LIMIT {}", limit.clamp(1, 1000)));
        let c = self.conn().await?;
        b.fetch(&c).await?.iter().map(audit_from_row).collect()
    }

    pub(super) async fn lead_counts_impl(
        &self,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<LeadCount>> {
        let bucket_ms = bucket_secs.max(1) * 1000;
        let types: Vec<String> = LEAD_EVENT_TYPES.iter().map(|t| t.to_string()).collect();
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT (received_at / $3) * $3 AS b, origin_kind || ':' || origin_name, COUNT(*) FROM events \
             WHERE type = ANY($1) AND id >= $2 AND NOT spam GROUP BY 1, 2",
            &[&types, &uuid_v7_floor_id(since), &bucket_ms],
        )
        .await
        .map_err(map_err)?;
        let mut counts: BTreeMap<(i64, String), u64> = BTreeMap::new();
        for r in &rows {
            // Re-bucket with floor division: times before 1970 stay correct.
            let at: i64 = r.get(0);
            *counts.entry((bucket(at, bucket_ms), r.get(1))).or_default() +=
                r.get::<_, i64>(2).max(0) as u64;
        }
        Ok(counts
            .into_iter()
            .map(|((b, origin), count)| LeadCount {
                bucket_start: from_ms(b),
                origin,
                count,
            })
            .collect())
    }

    pub(super) async fn attempt_buckets_impl(
        &self,
        since: DateTime<Utc>,
        bucket_secs: i64,
    ) -> StoreResult<Vec<AttemptBucket>> {
        let bucket_ms = bucket_secs.max(1) * 1000;
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT (started_at / $2) * $2 AS b, \
             COUNT(*) FILTER (WHERE outcome = 'delivered'), \
             COUNT(*) FILTER (WHERE outcome IN ('retry', 'dead')) \
             FROM attempts WHERE id >= $1 GROUP BY b ORDER BY b",
            &[&uuid_v7_floor_id(since), &bucket_ms],
        )
        .await
        .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| AttemptBucket {
                bucket_start: from_ms(r.get(0)),
                succeeded: r.get::<_, i64>(1).max(0) as u64,
                failed: r.get::<_, i64>(2).max(0) as u64,
            })
            .collect())
    }
}

/// Inserts a review item (also inside the ingest transaction).
pub(super) async fn insert_review_item<C: GenericClient + Sync>(
    c: &C,
    item: &ReviewItem,
) -> Result<(), PgError> {
    exec(
        c,
        &format!(
            "INSERT INTO review_items ({REVIEW_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ),
        &[
            &item.id,
            &item.kind,
            &item.status.as_str(),
            &item.summary,
            &item.contact_id,
            &item.destination,
            &item.details.to_string(),
            &item.created_at.timestamp_millis(),
            &item.resolved_at.map(|t| t.timestamp_millis()),
            &item.resolved_by,
            &item.resolution,
        ],
    )
    .await?;
    Ok(())
}
