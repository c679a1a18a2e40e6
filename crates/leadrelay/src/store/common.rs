//! Helpers both stores share: event documents, UUIDv7 time bounds, LIKE
//! escaping, percentiles and replay overrides.

use chrono::{DateTime, TimeZone, Utc};
use leadrelay_model::Event;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{StoreError, StoreResult};

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
