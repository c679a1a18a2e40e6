//! The golden record: one contact per person, merged from every event about
//! them, with the provenance of each field.
//!
//! Email (normalised) identifies the person. A later event's non-empty
//! value replaces an earlier one (latest wins); consent keeps the latest
//! answer per purpose. The merge is pure so both stores share it.

use chrono::{DateTime, Utc};
use leadrelay_model::{Contact, ContactData, Event, FieldProvenance};
use serde_json::Value;

/// Merges `event`'s contact data into `existing` (or starts a new record).
/// Returns None when the event identifies nobody (no email).
pub fn merge(existing: Option<Contact>, event: &Event, now: DateTime<Utc>) -> Option<Contact> {
    let email = event.contact.email.clone()?;
    let mut contact = existing.unwrap_or_else(|| Contact {
        id: leadrelay_model::new_id(),
        data: ContactData {
            email: Some(email.clone()),
            ..Default::default()
        },
        provenance: Default::default(),
        consent: Default::default(),
        created_at: now,
        updated_at: now,
    });
    let provenance = FieldProvenance {
        source: format!("{}:{}", event.origin.kind.as_str(), event.origin.name),
        event_id: event.id,
        at: event.occurred_at,
    };

    let at = provenance.at;
    let mut take = |field: &str| {
        // An older event (vendor backfill, delayed webhook) never overwrites
        // a value set by a newer one.
        let newer = contact.provenance.get(field).is_none_or(|p| p.at <= at);
        if newer {
            contact
                .provenance
                .insert(field.to_string(), provenance.clone());
        }
        newer
    };
    let incoming = &event.contact;
    let data = &mut contact.data;
    if let Some(p) = &incoming.phone
        && take("phone")
    {
        data.phone = Some(p.clone());
    }
    let text_fields: [(&str, &Option<String>, &mut Option<String>); 9] = [
        ("first_name", &incoming.first_name, &mut data.first_name),
        ("last_name", &incoming.last_name, &mut data.last_name),
        ("company", &incoming.company, &mut data.company),
        ("domain", &incoming.domain, &mut data.domain),
        ("title", &incoming.title, &mut data.title),
        ("website", &incoming.website, &mut data.website),
        ("country", &incoming.country, &mut data.country),
        ("region", &incoming.region, &mut data.region),
        ("city", &incoming.city, &mut data.city),
    ];
    for (field, value, slot) in text_fields {
        if let Some(v) = value.as_ref().filter(|v| !v.trim().is_empty())
            && take(field)
        {
            *slot = Some(v.clone());
        }
    }
    for (field, value) in &incoming.custom {
        if !is_empty(value) && take(field) {
            data.custom.insert(field.clone(), value.clone());
        }
    }
    for record in &event.consent {
        let newer = contact
            .consent
            .get(record.purpose.as_str())
            .is_none_or(|c| c.recorded_at <= record.recorded_at);
        if newer {
            contact
                .consent
                .insert(record.purpose.as_str().to_string(), record.clone());
        }
    }
    contact.updated_at = now;
    Some(contact)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadrelay_model::{ConsentPurpose, ConsentRecord, EmailAddress, EventType, Origin};

    fn event(first: &str, company: Option<&str>, at: DateTime<Utc>) -> Event {
        let mut contact = ContactData {
            email: Some(EmailAddress::parse("jane@acme.io").unwrap()),
            first_name: Some(first.into()),
            company: company.map(String::from),
            ..Default::default()
        };
        contact
            .custom
            .insert("industry".into(), Value::String("SaaS".into()));
        Event {
            id: leadrelay_model::new_id(),
            event_type: EventType::LeadCreated,
            origin: Origin::form("contact"),
            received_at: at,
            occurred_at: at,
            contact,
            contact_id: None,
            data: Default::default(),
            attribution: Default::default(),
            consent: vec![ConsentRecord {
                purpose: ConsentPurpose::parse("crm").unwrap(),
                granted: first != "Withdrawn",
                text_version: Some("v1".into()),
                recorded_at: at,
            }],
            ip_hash: None,
            raw: Default::default(),
            spam: false,
            idempotency_key: None,
            external_id: None,
            vendor_refs: vec![],
            changes: vec![],
        }
    }

    #[test]
    fn latest_non_empty_value_wins_and_keeps_provenance() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(5);
        let c = merge(None, &event("Jane", Some("Acme"), t0), t0).unwrap();
        let c2 = merge(Some(c.clone()), &event("Janet", None, t1), t1).unwrap();
        assert_eq!(c2.id, c.id);
        assert_eq!(c2.data.first_name.as_deref(), Some("Janet"));
        assert_eq!(
            c2.data.company.as_deref(),
            Some("Acme"),
            "an empty value never erases"
        );
        assert_eq!(c2.data.custom["industry"], "SaaS");
        assert_eq!(c2.provenance["first_name"].at, t1);
        assert_eq!(c2.provenance["company"].at, t0);
    }

    #[test]
    fn older_events_do_not_overwrite() {
        let t0 = Utc::now();
        let older = t0 - chrono::Duration::hours(1);
        let c = merge(None, &event("Jane", None, t0), t0).unwrap();
        let c2 = merge(Some(c), &event("Old", None, older), t0).unwrap();
        assert_eq!(c2.data.first_name.as_deref(), Some("Jane"));
    }

    #[test]
    fn consent_keeps_latest_answer() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let c = merge(None, &event("Jane", None, t0), t0).unwrap();
        assert!(c.consent["crm"].granted);
        let c2 = merge(Some(c), &event("Withdrawn", None, t1), t1).unwrap();
        assert!(!c2.consent["crm"].granted);
    }

    #[test]
    fn no_email_no_contact() {
        let mut e = event("Jane", None, Utc::now());
        e.contact.email = None;
        assert!(merge(None, &e, Utc::now()).is_none());
    }
}
