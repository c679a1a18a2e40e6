//! Building canonical events from vendor payloads: the contact (email first,
//! invalid values kept as data rather than dropped), the vendor's ids, the
//! custom-event convention and stable digests for vendors without event ids.

use chrono::{DateTime, NaiveDateTime, Utc};
use leadrelay_model::{ContactData, EmailAddress, EventType, FieldChange, PhoneE164, VendorRef};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{CUSTOM_EVENT_TYPE, InboundEvent};

/// An event being assembled from one vendor payload.
#[derive(Debug, Clone)]
pub(crate) struct EventDraft {
    system: &'static str,
    event: InboundEvent,
}

impl EventDraft {
    /// An event of a known type. `system` names the vendor in `VendorRef`s
    /// (`hubspot`, `salesforce` …); `vendor_event` is the vendor's own name.
    pub(crate) fn new(system: &'static str, vendor_event: &str, event_type: EventType) -> Self {
        let mut data = Map::new();
        data.insert("vendor".into(), Value::String(system.into()));
        data.insert("vendor_event".into(), Value::String(vendor_event.into()));
        Self {
            system,
            event: InboundEvent {
                event_type,
                external_id: None,
                occurred_at: None,
                contact: ContactData::default(),
                data,
                vendor_refs: Vec::new(),
                changes: Vec::new(),
            },
        }
    }

    /// A vendor event with no canonical meaning: type `custom`.
    pub(crate) fn custom(system: &'static str, vendor_event: &str) -> Self {
        Self::new(system, vendor_event, custom_type())
    }

    /// A known type when `mapped` is `Some`, else `custom`.
    pub(crate) fn mapped(
        system: &'static str,
        vendor_event: &str,
        mapped: Option<EventType>,
    ) -> Self {
        Self::new(system, vendor_event, mapped.unwrap_or_else(custom_type))
    }

    pub(crate) fn event_type(&self) -> &EventType {
        &self.event.event_type
    }

    pub(crate) fn external_id(&mut self, id: impl Into<String>) {
        let id = id.into();
        if !id.trim().is_empty() {
            self.event.external_id = Some(id);
        }
    }

    /// `external_id` from the fields that identify the event (for vendors
    /// that send no event id): retries of the same delivery produce the same id.
    pub(crate) fn digest_id(&mut self, parts: &[&str]) {
        let mut all = vec![self.system];
        all.extend_from_slice(parts);
        self.event.external_id = Some(digest(&all));
    }

    pub(crate) fn occurred_at(&mut self, at: Option<DateTime<Utc>>) {
        if at.is_some() {
            self.event.occurred_at = at;
        }
    }

    /// Sets the email if it parses; otherwise keeps the raw value in
    /// `data.invalid_email`. The first valid email wins.
    pub(crate) fn email(&mut self, raw: &str) {
        let raw = raw.trim();
        if raw.is_empty() || self.event.contact.email.is_some() {
            return;
        }
        match EmailAddress::parse(raw) {
            Ok(email) => {
                self.event.contact.email = Some(email);
                self.event.data.remove("invalid_email");
            }
            Err(_) => {
                self.event
                    .data
                    .entry("invalid_email")
                    .or_insert_with(|| Value::String(raw.to_string()));
            }
        }
    }

    /// Sets the phone if it is a valid number (E.164 or in `region`);
    /// otherwise keeps the raw value in `data.invalid_phone`.
    pub(crate) fn phone(&mut self, raw: &str, region: Option<&str>) {
        let raw = raw.trim();
        if raw.is_empty() || self.event.contact.phone.is_some() {
            return;
        }
        match PhoneE164::parse(raw, region) {
            Ok(phone) => {
                self.event.contact.phone = Some(phone);
                self.event.data.remove("invalid_phone");
            }
            Err(_) => {
                self.event
                    .data
                    .entry("invalid_phone")
                    .or_insert_with(|| Value::String(raw.to_string()));
            }
        }
    }

    /// Sets a standard contact text field (`first_name`, `company`,
    /// `full_name` …) unless already set; `email` and `phone` go through the
    /// typed setters. Unknown names go to `contact.custom`.
    pub(crate) fn contact_field(&mut self, field: &str, raw: &str) {
        let value = raw.trim();
        if value.is_empty() {
            return;
        }
        match field {
            "email" => self.email(value),
            "phone" => self.phone(value, None),
            "full_name" => {
                if self.event.contact.first_name.is_none() && self.event.contact.last_name.is_none()
                {
                    self.event.contact.set_text("full_name", value.to_string());
                }
            }
            _ => {
                if self.contact_text(field).is_none()
                    && !self.event.contact.set_text(field, value.to_string())
                {
                    self.event
                        .contact
                        .custom
                        .entry(field.to_string())
                        .or_insert_with(|| Value::String(value.into()));
                }
            }
        }
    }

    fn contact_text(&self, field: &str) -> Option<&String> {
        let c = &self.event.contact;
        match field {
            "first_name" => c.first_name.as_ref(),
            "last_name" => c.last_name.as_ref(),
            "company" => c.company.as_ref(),
            "domain" => c.domain.as_ref(),
            "title" => c.title.as_ref(),
            "website" => c.website.as_ref(),
            "country" => c.country.as_ref(),
            "region" => c.region.as_ref(),
            "city" => c.city.as_ref(),
            _ => None,
        }
    }

    /// Sets `contact.custom[key]` (person-level fields with no standard slot).
    pub(crate) fn contact_custom(&mut self, key: &str, value: Value) {
        if !value.is_null() {
            self.event.contact.custom.insert(key.to_string(), value);
        }
    }

    /// Keeps an event detail; nulls and empty strings are skipped.
    pub(crate) fn data(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        let empty = value.is_null() || value.as_str().is_some_and(|s| s.trim().is_empty());
        if !empty {
            self.event.data.insert(key.to_string(), value);
        }
    }

    /// Copies `source[key]` into `data[key]` when present.
    pub(crate) fn data_from(&mut self, source: &Value, key: &str) {
        if let Some(v) = source.get(key) {
            self.data(key, v.clone());
        }
    }

    /// Copies the text at each JSON pointer of `source` into `data[key]`
    /// (the first pointer that holds text wins for a key).
    pub(crate) fn data_at(&mut self, source: &Value, pointers: &[(&str, &str)]) {
        for (pointer, key) in pointers {
            if !self.event.data.contains_key(*key)
                && let Some(v) = crate::json::text(source, pointer)
            {
                self.data(key, v);
            }
        }
    }

    /// Records the vendor's id for an object involved in the event.
    /// The vendor's own id of the activity this event reports (an email
    /// sent, opened, a reply, a call): what the CRM connectors key the
    /// activity they log on, so the same activity is never logged twice.
    pub(crate) fn activity_id(&mut self, id: &str) {
        self.vendor_ref("activity", id);
    }

    pub(crate) fn vendor_ref(&mut self, object: &str, id: &str) {
        let id = id.trim();
        if id.is_empty() {
            return;
        }
        let r = VendorRef {
            system: self.system.to_string(),
            object: object.to_string(),
            id: id.to_string(),
        };
        if !self.event.vendor_refs.contains(&r) {
            self.event.vendor_refs.push(r);
        }
    }

    pub(crate) fn change(&mut self, field: &str, value: Value, previous: Option<Value>) {
        self.event.changes.push(FieldChange {
            field: field.to_string(),
            value,
            previous,
        });
    }

    pub(crate) fn finish(self) -> InboundEvent {
        self.event
    }
}

fn custom_type() -> EventType {
    EventType::Custom(CUSTOM_EVENT_TYPE.to_string())
}

/// `sha256:<hex>` over the parts, separated so `["ab","c"]` ≠ `["a","bc"]`.
pub(crate) fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0x1f]);
        }
        h.update(part.as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// A vendor timestamp: RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]` (UTC), or Unix
/// seconds / milliseconds as a number or numeric string.
pub(crate) fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::Number(n) => n.as_i64().and_then(from_unix),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.with_timezone(&Utc));
            }
            for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f %z"] {
                if let Ok(t) = DateTime::parse_from_str(s, fmt) {
                    return Some(t.with_timezone(&Utc));
                }
            }
            for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
                if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
                    return Some(t.and_utc());
                }
            }
            s.parse::<i64>().ok().and_then(from_unix)
        }
        _ => None,
    }
}

fn from_unix(n: i64) -> Option<DateTime<Utc>> {
    if n.abs() >= 100_000_000_000 {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn invalid_email_is_kept_as_data() {
        let mut d = EventDraft::new("x", "reply", EventType::ReplyReceived);
        d.email("not-an-email");
        d.email("Jane@Example.com");
        let e = d.finish();
        assert_eq!(e.contact.email.unwrap().as_str(), "jane@example.com");
        assert!(!e.data.contains_key("invalid_email"));

        let mut d = EventDraft::new("x", "reply", EventType::ReplyReceived);
        d.email("jane@localhost");
        let e = d.finish();
        assert!(e.contact.email.is_none());
        assert_eq!(e.data["invalid_email"], "jane@localhost");
    }

    #[test]
    fn custom_convention() {
        let e = EventDraft::custom("groove", "sale").finish();
        assert_eq!(e.event_type.as_str(), "custom");
        assert_eq!(e.data["vendor"], "groove");
        assert_eq!(e.data["vendor_event"], "sale");
    }

    #[test]
    fn contact_fields_first_value_wins() {
        let mut d = EventDraft::new("x", "e", EventType::LeadCreated);
        d.contact_field("full_name", "Jane van Doe");
        d.contact_field("first_name", "Janet");
        d.contact_field("company", "Acme");
        d.contact_field("industry", "SaaS");
        d.phone("+1 415 555 0123", None);
        let e = d.finish();
        assert_eq!(e.contact.first_name.as_deref(), Some("Jane"));
        assert_eq!(e.contact.last_name.as_deref(), Some("van Doe"));
        assert_eq!(e.contact.company.as_deref(), Some("Acme"));
        assert_eq!(e.contact.custom["industry"], "SaaS");
        assert_eq!(e.contact.phone.unwrap().as_str(), "+14155550123");
    }

    #[test]
    fn digests_are_stable_and_separated() {
        assert_eq!(digest(&["a", "b"]), digest(&["a", "b"]));
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert!(digest(&["a"]).starts_with("sha256:"));
    }

    #[test]
    fn time_formats() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(parse_time(&json!("2023-11-14T22:13:20Z")), Some(t));
        assert_eq!(parse_time(&json!("2023-11-14T22:13:20.000000Z")), Some(t));
        assert_eq!(parse_time(&json!("2023-11-14 22:13:20")), Some(t));
        assert_eq!(parse_time(&json!("2023-11-15T00:13:20+0200")), Some(t));
        assert_eq!(parse_time(&json!(1_700_000_000)), Some(t));
        assert_eq!(parse_time(&json!(1_700_000_000_000i64)), Some(t));
        assert_eq!(parse_time(&json!("1700000000")), Some(t));
        assert_eq!(parse_time(&json!("soon")), None);
        assert_eq!(parse_time(&json!(null)), None);
    }
}
