//! Helpers both stores share: event documents, UUIDv7 time bounds, LIKE
//! escaping, percentiles, replay overrides and the reused-idempotency-key check.

use chrono::{DateTime, TimeZone, Utc};
use leadrelay_model::{Contact, ContactData, Event, new_id};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use std::collections::HashMap;

use super::{
    AuditRecord, EraseReport, IdempotencyKey, IngestItem, PrivacyExport, PrivacyRequest,
    StoreError, StoreResult,
};

/// The stored JSON of an event: everything but the raw payload and the
/// contact id, which have columns of their own (retention drops the raw
/// body; the contact id is decided inside the transaction). Computed before
/// the write transaction, off the writer.
pub fn event_doc(event: &mut Event) -> StoreResult<String> {
    let raw = std::mem::take(&mut event.raw);
    let contact_id = event.contact_id.take();
    let doc = serde_json::to_string(&*event);
    event.raw = raw;
    event.contact_id = contact_id;
    doc.map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Finds idempotency keys reused for a different request, before anything
/// of an ingest call is written. Each key is compared with the first request
/// known to use it: a live stored key, an earlier item of the same call, or
/// an item of an earlier call checked by this same `KeyCheck` (calls that
/// share one transaction).
#[derive(Default)]
pub struct KeyCheck {
    /// (scope, key) → the fingerprint of the first request known to use it.
    seen: HashMap<(String, String), Option<String>>,
}

impl KeyCheck {
    /// The indexes of `items` whose key another request of the same scope
    /// already uses. `stored` gives the fingerprint of a live stored key
    /// (`Some(None)`: stored without one; `None`: no live key). A call
    /// refused here leaves no trace for the calls checked after it.
    pub fn reused<'a>(
        &mut self,
        items: impl IntoIterator<Item = &'a IngestItem>,
        mut stored: impl FnMut(&IdempotencyKey) -> StoreResult<Option<Option<String>>>,
    ) -> StoreResult<Vec<usize>> {
        let mut this_call: HashMap<(String, String), Option<String>> = HashMap::new();
        let mut reused = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let Some(k) = &item.idempotency else { continue };
            let id = (k.scope.clone(), k.key.clone());
            let first = match this_call.get(&id).or_else(|| self.seen.get(&id)) {
                Some(fp) => Some(fp.clone()),
                None => {
                    let fp = stored(k)?;
                    if let Some(fp) = &fp {
                        self.seen.insert(id.clone(), fp.clone());
                    }
                    fp
                }
            };
            match first {
                Some(fp) if k.reused_against(fp.as_deref()) => reused.push(i),
                Some(_) => {}
                None => {
                    this_call.insert(id, k.fingerprint.clone());
                }
            }
        }
        if reused.is_empty() {
            self.seen.extend(this_call);
        }
        Ok(reused)
    }
}

pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The smallest UUIDv7 created at or after `t`: ids are time-ordered, so
/// "since t" is `id >= uuid_v7_floor_id(t)`.
pub fn uuid_v7_floor_id(t: DateTime<Utc>) -> Uuid {
    let ms = t.timestamp_millis().clamp(0, (1 << 48) - 1) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    Uuid::from_bytes(bytes)
}

/// [`uuid_v7_floor_id`] as text (UUID text order is byte order).
pub fn uuid_v7_floor(t: DateTime<Utc>) -> String {
    uuid_v7_floor_id(t).to_string()
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
pub fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied()
}

/// The overrides a replay carries: a replay of a replay keeps the earlier
/// overrides unless the new ones replace them.
pub fn merge_overrides(old: Option<&str>, new: Option<&Map<String, Value>>) -> Option<String> {
    let mut merged: Map<String, Value> = old
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or_default();
    if let Some(n) = new {
        merged.extend(n.clone());
    }
    (!merged.is_empty()).then(|| Value::Object(merged).to_string())
}

/// Why erased deliveries end: they can never be sent.
pub const ERASED_REASON: &str = "personal data erased";

/// The remote-id keys a person can be known by.
pub fn person_keys(email: &str, contact: Option<&Contact>) -> Vec<String> {
    let mut keys = vec![format!("email:{email}")];
    if let Some(p) = contact.and_then(|c| c.data.phone.as_ref()) {
        keys.push(format!("phone:{}", p.as_str()));
    }
    keys
}

/// An event with everything personal removed: what happened, when, from
/// where, and campaign attribution stay; who, what they wrote, their
/// consent answers, browser and hashed IP go.
pub fn scrub(mut ev: Event) -> Event {
    ev.contact = ContactData::default();
    ev.contact_id = None;
    ev.data = Default::default();
    ev.consent.clear();
    ev.ip_hash = None;
    ev.attribution.user_agent = None;
    ev.attribution.referrer = None;
    ev.attribution.landing_page = None;
    ev.idempotency_key = None;
    ev.vendor_refs.clear();
    ev.changes.clear();
    ev.raw = Default::default();
    ev
}

/// Bucket start (ms) of `ms` for buckets of `bucket_ms`.
pub fn bucket(ms: i64, bucket_ms: i64) -> i64 {
    ms.div_euclid(bucket_ms) * bucket_ms
}

/// A retention erase (`idle_before`) of a contact that had an event since
/// the cut-off is refused (Conflict), so a person who just came back is not
/// erased by a purge that listed them a moment earlier.
pub fn check_idle(req: &PrivacyRequest, contact: Option<&Contact>) -> StoreResult<()> {
    match (req.idle_before, contact) {
        (Some(cutoff), Some(c)) if c.updated_at >= cutoff => Err(StoreError::Conflict(
            "the contact had an event since the retention cut-off".into(),
        )),
        _ => Ok(()),
    }
}

/// The audit record of an erase: ids and counts, never personal data.
pub fn erase_audit(req: &PrivacyRequest, report: &EraseReport, at: DateTime<Utc>) -> AuditRecord {
    AuditRecord {
        id: report.audit_id,
        action: "erase".into(),
        actor: req.actor.clone(),
        subject_hash: req.subject_hash.clone(),
        at,
        reason: req.reason.clone(),
        details: json!({
            "contact_id": report.contact_id,
            "event_ids": report.event_ids,
            "deliveries_stopped": report.deliveries_stopped,
            "overrides_cleared": report.overrides_cleared,
            "remote_records": report.remote_records.len(),
        }),
    }
}

/// The audit record of an export: counts, never personal data.
pub fn export_audit(req: &PrivacyRequest, export: &PrivacyExport) -> AuditRecord {
    AuditRecord {
        id: new_id(),
        action: "export".into(),
        actor: req.actor.clone(),
        subject_hash: req.subject_hash.clone(),
        at: Utc::now(),
        reason: req.reason.clone(),
        details: json!({
            "contact_id": export.contact.as_ref().map(|c| c.id),
            "events": export.events.len(),
            "deliveries": export.deliveries.len(),
            "attempts": export.attempts.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_ids_order_like_time() {
        let t = Utc::now();
        let id = leadrelay_model::new_id();
        assert!(uuid_v7_floor_id(t - chrono::Duration::milliseconds(5)) <= id);
        assert!(uuid_v7_floor_id(t + chrono::Duration::seconds(5)) > id);
        assert_eq!(uuid_v7_floor_id(t).get_version_num(), 7);
        assert!(uuid_v7_floor(t - chrono::Duration::seconds(1)) < id.to_string());
    }

    #[test]
    fn overrides_merge() {
        let mut n = Map::new();
        n.insert("a".into(), Value::from(2));
        assert_eq!(
            merge_overrides(Some(r#"{"a":1,"b":1}"#), Some(&n)).unwrap(),
            r#"{"a":2,"b":1}"#
        );
        assert_eq!(merge_overrides(None, None), None);
    }
}
