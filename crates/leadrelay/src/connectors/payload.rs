//! The JSON shapes leadrelay sends to webhooks and writes to backups, and
//! the replay overrides (`dlq replay --set field=value`) applied before.

use leadrelay_model::{EmailAddress, Event, PhoneE164};
use serde_json::{Map, Value, json};

use super::DeliveryJob;

/// The standard envelope (Standard Webhooks style): `type`, `timestamp`,
/// `data`, plus the delivery id receivers use to drop duplicates.
pub fn envelope(job: &DeliveryJob) -> Value {
    let e = &job.event;
    json!({
        "id": job.delivery.id.to_string(),
        "type": e.event_type.as_str(),
        "timestamp": e.occurred_at.to_rfc3339(),
        "data": {
            "event_id": e.id.to_string(),
            "origin": e.origin,
            "received_at": e.received_at.to_rfc3339(),
            "contact": e.contact,
            "contact_id": e.contact_id.map(|c| c.to_string()),
            "fields": e.data,
            "attribution": e.attribution,
            "consent": e.consent,
            "vendor_refs": e.vendor_refs,
            "changes": e.changes,
        }
    })
}

/// A flat object (every value at the top level), which Zapier's and Make's
/// field pickers handle best.
pub fn flat(job: &DeliveryJob) -> Value {
    let e = &job.event;
    let mut m = Map::new();
    m.insert("delivery_id".into(), json!(job.delivery.id.to_string()));
    m.insert("event_id".into(), json!(e.id.to_string()));
    m.insert("event_type".into(), json!(e.event_type.as_str()));
    m.insert(
        "origin".into(),
        json!(format!("{}:{}", e.origin.kind.as_str(), e.origin.name)),
    );
    m.insert("received_at".into(), json!(e.received_at.to_rfc3339()));
    m.insert("occurred_at".into(), json!(e.occurred_at.to_rfc3339()));
    for (k, v) in e.data.iter() {
        m.insert(k.clone(), v.clone());
    }
    for (k, v) in e.contact.to_flat_map() {
        m.insert(k, v);
    }
    if let Some(full) = e.contact.full_name() {
        m.insert("full_name".into(), json!(full));
    }
    if let Ok(Value::Object(attr)) = serde_json::to_value(&e.attribution) {
        m.extend(attr);
    }
    for c in &e.consent {
        m.insert(format!("consent_{}", c.purpose), json!(c.granted));
    }
    Value::Object(m)
}

/// Applies replay overrides to an event. Keys: `contact.NAME` or a standard
/// contact field name (`email`, `first_name` …) set the contact;
/// `data.NAME` or any other name sets a data field.
pub fn apply_overrides(event: &mut Event, overrides: &Map<String, Value>) -> Result<(), String> {
    for (key, value) in overrides {
        let (target, name) = match key.split_once('.') {
            Some(("contact", n)) => ("contact", n),
            Some(("data", n)) => ("data", n),
            _ if leadrelay_model::CONTACT_FIELDS.contains(&key.as_str()) => {
                ("contact", key.as_str())
            }
            _ => ("data", key.as_str()),
        };
        if target == "data" {
            event.data.insert(name.to_string(), value.clone());
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        match name {
            "email" => {
                event.contact.email = if text.is_empty() {
                    None
                } else {
                    Some(EmailAddress::parse(&text).map_err(|e| format!("override email: {e}"))?)
                }
            }
            "phone" => {
                event.contact.phone = if text.is_empty() {
                    None
                } else {
                    Some(
                        PhoneE164::parse(&text, None)
                            .map_err(|e| format!("override phone: {e}"))?,
                    )
                }
            }
            other => {
                if !event.contact.set_text(other, text.clone()) {
                    event
                        .contact
                        .custom
                        .insert(other.to_string(), value.clone());
                }
            }
        }
    }
    Ok(())
}
