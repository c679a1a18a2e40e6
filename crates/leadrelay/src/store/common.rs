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

/// Stored documents are read back with objects and arrays nested at most
/// this deep: ingest refuses anything deeper than
/// [`leadrelay_model::MAX_JSON_DEPTH`], so only rows written before that
/// limit existed can hold more.
pub const READ_DEPTH: usize = 64;

/// Reads a stored JSON document (`what` names it in errors and logs). A
/// document nested too deeply for the parser (stored before ingest limited
/// depth) is read with every value below [`READ_DEPTH`] levels replaced by
/// `null`, and a warning says so, rather than making the row unreadable for
/// ever; anything else that does not decode is [`StoreError::Corrupt`].
pub fn decode_doc<T: serde::de::DeserializeOwned>(
    doc: &str,
    what: &dyn std::fmt::Display,
) -> StoreResult<T> {
    match serde_json::from_str(doc) {
        Ok(v) => Ok(v),
        Err(e) => {
            if leadrelay_model::text_depth(doc.as_bytes()) > READ_DEPTH
                && let Ok(v) = serde_json::from_str(&prune_deep(doc, READ_DEPTH))
            {
                tracing::warn!(
                    record = %what,
                    "stored document nests deeper than {READ_DEPTH} levels: values below that depth are read as null"
                );
                return Ok(v);
            }
            Err(StoreError::Corrupt(format!("{what}: {e}")))
        }
    }
}

/// JSON text with every object or array that starts deeper than `max`
/// levels replaced by `null`. Works on the text, without parsing it, so it
/// reads documents too deep for the parser.
pub fn prune_deep(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    // The depth at which the value being dropped started.
    let mut dropping: Option<usize> = None;
    let mut copied_to = 0;
    for (i, b) in text.bytes().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max && dropping.is_none() {
                    out.push_str(&text[copied_to..i]);
                    out.push_str("null");
                    dropping = Some(depth);
                }
            }
            b'}' | b']' => {
                if dropping == Some(depth) {
                    dropping = None;
                    copied_to = i + 1;
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    if dropping.is_none() {
        out.push_str(&text[copied_to..]);
    }
    out
}

/// The rows of a list or page that can be read: one that cannot
/// ([`StoreError::Corrupt`]) is left out with a warning naming it, so one
/// damaged row never fails a whole page. Other errors fail the list.
pub fn skip_unreadable<T>(rows: impl IntoIterator<Item = StoreResult<T>>) -> StoreResult<Vec<T>> {
    let mut out = Vec::new();
    for row in rows {
        match row {
            Ok(v) => out.push(v),
            Err(StoreError::Corrupt(m)) => {
                tracing::warn!(error = %m, "an unreadable row was left out of a list");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A claimed delivery whose event (or contact) cannot be read can never be
/// sent: it is dead-lettered with the reason, not left in flight.
pub fn unreadable(d: &super::Delivery, e: &StoreError) -> super::Completion {
    tracing::warn!(delivery = %d.id, event = %d.event_id, error = %e, "dead-lettered: its event cannot be read");
    super::Completion {
        delivery_id: d.id,
        lease_id: d.lease_id.unwrap_or_default(),
        attempt: None,
        transition: super::Transition::Dead {
            status: None,
            reason: format!("the stored event cannot be read: {e}"),
        },
        follow_up: None,
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

/// What erase writes in place of an event whose stored document cannot be
/// read: what its columns say (id, type, origin, times), nothing personal.
/// The erase still goes through, rather than failing on one damaged row.
pub fn stand_in_event(
    id: Uuid,
    event_type: &str,
    origin: (&str, &str),
    received_ms: i64,
    occurred_ms: i64,
) -> Event {
    use leadrelay_model::{EventType, Origin, OriginKind};
    let mut ev = Event::internal(
        EventType::parse(event_type).unwrap_or(EventType::Custom("unreadable".into())),
        Origin {
            kind: OriginKind::parse(origin.0).unwrap_or(OriginKind::System),
            name: origin.1.to_string(),
        },
        ContactData::default(),
        Map::new(),
        from_ms(received_ms),
    );
    ev.id = id;
    ev.occurred_at = from_ms(occurred_ms);
    ev
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

/// The end of the key under which a contact sync keeps the state of the
/// person with this (normalised) email: `sync:NAME:record:EMAIL`. An erase
/// deletes those, and the links naming the email, on both backends.
pub fn sync_record_suffix(email: &str) -> String {
    format!(":record:{}", email.trim().to_lowercase())
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

/// An attempt's exchange as stored (JSON text).
pub fn encode_exchange(x: Option<&super::Exchange>) -> Option<String> {
    x.and_then(|x| serde_json::to_string(x).ok())
}

/// An attempt's stored exchange; unreadable JSON is a corrupt row.
pub fn decode_exchange(id: &str, text: Option<&str>) -> StoreResult<Option<super::Exchange>> {
    text.map(|t| {
        serde_json::from_str(t)
            .map_err(|e| StoreError::Corrupt(format!("attempt {id} exchange: {e}")))
    })
    .transpose()
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
    fn documents_too_deep_for_the_parser_read_with_the_deep_part_as_null() {
        assert_eq!(
            prune_deep(r#"{"a":[1,{"b":"x]}"}],"c":{"d":{}}}"#, 2),
            r#"{"a":[1,null],"c":{"d":null}}"#
        );
        assert_eq!(prune_deep(r#"{"a":"{[\"{"}"#, 1), r#"{"a":"{[\"{"}"#);
        // An event as stored before ingest limited depth: 130 levels.
        let deep = format!(r#"{{"k":{}1{}}}"#, "[".repeat(130), "]".repeat(130));
        assert!(serde_json::from_str::<Value>(&deep).is_err());
        let v: Value = decode_doc(&deep, &"event x").unwrap();
        assert_eq!(
            leadrelay_model::text_depth(v.to_string().as_bytes()),
            READ_DEPTH
        );
        // Other damage is still reported.
        let err = decode_doc::<Value>("{\"k\": ", &"event y").unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt(ref m) if m.starts_with("event y: ")),
            "{err}"
        );
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
