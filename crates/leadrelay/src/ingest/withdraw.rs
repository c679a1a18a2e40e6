//! Withdrawal of consent: an `unsubscribed` event, from whatever source
//! (a form, a vendor webhook, the admin API or CLI), carries one consent
//! record per withdrawn purpose (`granted = false`, recorded when it is
//! received). The golden contact keeps the latest answer per purpose, so the
//! withdrawal lands there through the ordinary merge, and the send-time
//! consent gate then skips every delivery still waiting for that person to a
//! destination that needs a withdrawn purpose.
//!
//! Which purposes: the ones the event names in its data's `purposes` (a list,
//! or one string separated by commas or spaces); when it names none, the
//! configured `privacy.unsubscribe_withdraws` (by default the marketing
//! purposes `marketing_email` and `sms`: an unsubscribe link is not a request
//! to be erased from the CRM).

use leadrelay_model::{ConsentPurpose, ConsentRecord, Event, EventType};
use serde_json::{Map, Value};

/// The data field an `unsubscribed` event names its purposes in.
pub const PURPOSES_FIELD: &str = "purposes";

/// The purposes named in `data.purposes`; empty when there is no such field
/// (or it is empty). `Err` explains the first invalid name.
pub fn named_purposes(data: &Map<String, Value>) -> Result<Vec<ConsentPurpose>, String> {
    let names: Vec<String> = match data.get(PURPOSES_FIELD) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect(),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.push(s.trim().to_string()),
                    other => return Err(format!("purposes must be strings, not {other}")),
                }
            }
            out
        }
        Some(other) => {
            return Err(format!(
                "purposes must be a list of purpose names, not {other}"
            ));
        }
    };
    let mut out: Vec<ConsentPurpose> = Vec::with_capacity(names.len());
    for n in names {
        let p = ConsentPurpose::parse(&n).map_err(|e| e.to_string())?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// The withdrawal records for `purposes` (or `defaults` when empty),
/// recorded at `event.received_at`.
pub fn records(
    event: &Event,
    purposes: &[ConsentPurpose],
    defaults: &[ConsentPurpose],
) -> Vec<ConsentRecord> {
    let chosen = if purposes.is_empty() {
        defaults
    } else {
        purposes
    };
    chosen
        .iter()
        .map(|p| ConsentRecord {
            purpose: p.clone(),
            granted: false,
            text_version: None,
            recorded_at: event.received_at,
        })
        .collect()
}

/// Adds the withdrawals an `unsubscribed` event stands for to its consent
/// records (after any it already has, so they win over a same-instant
/// grant); other events are left alone. `Err` (nothing changed) when the
/// event names an invalid purpose.
pub fn apply(event: &mut Event, defaults: &[ConsentPurpose]) -> Result<(), String> {
    if event.event_type != EventType::Unsubscribed {
        return Ok(());
    }
    let named = named_purposes(&event.data)?;
    let withdrawals = records(event, &named, defaults);
    event.consent.extend(withdrawals);
    Ok(())
}

/// Like [`apply`], but an invalid purpose name (a vendor's payload is not
/// ours to reject) withdraws the default purposes instead: when in doubt, a
/// withdrawal errs on the side of sending less.
pub fn apply_lenient(event: &mut Event, defaults: &[ConsentPurpose]) {
    if let Err(reason) = apply(event, defaults) {
        tracing::warn!(event_id = %event.id, %reason, "unsubscribed event names invalid purposes; withdrawing the default ones");
        let withdrawals = records(event, &[], defaults);
        event.consent.extend(withdrawals);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use leadrelay_model::{ContactData, EmailAddress, Origin, new_id};

    fn p(s: &str) -> ConsentPurpose {
        ConsentPurpose::parse(s).unwrap()
    }

    fn event(kind: EventType, data: Value) -> Event {
        let now = Utc::now();
        Event {
            id: new_id(),
            event_type: kind,
            origin: Origin::source("mailshake"),
            received_at: now,
            occurred_at: now - chrono::Duration::days(2),
            contact: ContactData {
                email: Some(EmailAddress::parse("jane@acme.io").unwrap()),
                ..Default::default()
            },
            contact_id: None,
            data: data.as_object().cloned().unwrap_or_default(),
            attribution: Default::default(),
            consent: vec![ConsentRecord {
                purpose: p("marketing_email"),
                granted: true,
                text_version: Some("v1".into()),
                recorded_at: now,
            }],
            ip_hash: None,
            raw: Default::default(),
            spam: false,
            idempotency_key: None,
            external_id: None,
            vendor_refs: vec![],
            changes: vec![],
            playbooks: vec![],
        }
    }

    #[test]
    fn unsubscribe_without_purposes_withdraws_the_defaults_after_any_grant() {
        let mut e = event(EventType::Unsubscribed, serde_json::json!({}));
        apply(&mut e, &[p("marketing_email"), p("sms")]).unwrap();
        let latest = e.consent_for(&p("marketing_email")).unwrap();
        assert!(!latest.granted, "the withdrawal is the latest answer");
        assert_eq!(latest.recorded_at, e.received_at, "recorded when received");
        assert!(!e.consent_for(&p("sms")).unwrap().granted);
        assert!(e.consent_for(&p("crm")).is_none());
    }

    #[test]
    fn named_purposes_from_a_list_or_a_string() {
        let mut e = event(
            EventType::Unsubscribed,
            serde_json::json!({"purposes": ["crm", "sms", "crm"]}),
        );
        apply(&mut e, &[p("marketing_email")]).unwrap();
        let withdrawn: Vec<&str> = e
            .consent
            .iter()
            .filter(|c| !c.granted)
            .map(|c| c.purpose.as_str())
            .collect();
        assert_eq!(withdrawn, ["crm", "sms"]);
        let data = serde_json::json!({"purposes": "analytics, sms"});
        assert_eq!(
            named_purposes(data.as_object().unwrap()).unwrap(),
            [p("analytics"), p("sms")]
        );
    }

    #[test]
    fn other_events_are_untouched_and_bad_names_are_errors() {
        let mut e = event(
            EventType::LeadCreated,
            serde_json::json!({"purposes": "crm"}),
        );
        apply(&mut e, &[p("sms")]).unwrap();
        assert_eq!(e.consent.len(), 1);

        let mut bad = event(
            EventType::Unsubscribed,
            serde_json::json!({"purposes": ["Not Valid"]}),
        );
        assert!(
            apply(&mut bad, &[p("sms")])
                .unwrap_err()
                .contains("Not Valid")
        );
        assert_eq!(bad.consent.len(), 1, "nothing changed on error");
        let num = serde_json::json!({"purposes": 5});
        assert!(named_purposes(num.as_object().unwrap()).is_err());

        apply_lenient(&mut bad, &[p("sms")]);
        assert!(!bad.consent_for(&p("sms")).unwrap().granted);
    }
}
