//! The consent gate, checked at send time (not only at ingest): a
//! destination receives personal data only for purposes the person granted,
//! or under an explicitly declared legitimate interest.

use leadrelay_model::{ConsentPurpose, Contact, Event};

use crate::config::LegalBasis;

/// Whether `event` may go to a destination needing `purposes`: `Err` names
/// the missing purposes.
pub fn check(
    legal_basis: Option<LegalBasis>,
    purposes: &[ConsentPurpose],
    event: &Event,
    contact: Option<&Contact>,
) -> Result<(), String> {
    if legal_basis == Some(LegalBasis::LegitimateInterest) {
        return Ok(());
    }
    // Nothing personal in it (e.g. an alert): nothing to consent to.
    if event.contact.is_empty() && contact.is_none() {
        return Ok(());
    }
    if purposes.is_empty() {
        return Err("the destination declares no consent purposes and no legal basis".into());
    }
    let missing: Vec<&str> = purposes
        .iter()
        .filter(|p| !granted(p, event, contact))
        .map(|p| p.as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("consent not granted for: {}", missing.join(", ")))
    }
}

/// The person's latest answer wins: the golden record holds it (a later
/// withdrawal included); without one, the event's own records.
fn granted(purpose: &ConsentPurpose, event: &Event, contact: Option<&Contact>) -> bool {
    if let Some(rec) = contact.and_then(|c| c.consent.get(purpose.as_str())) {
        return rec.granted;
    }
    // The event's own answers, latest recorded first (of answers recorded
    // at the same moment, the last one: a withdrawal appended at ingest).
    event
        .consent
        .iter()
        .enumerate()
        .filter(|(_, c)| &c.purpose == purpose)
        .max_by_key(|(i, c)| (c.recorded_at, *i))
        .is_some_and(|(_, c)| c.granted)
}

/// The consent property: whatever events arrive about a person (grants,
/// refusals, unsubscribes, late and out-of-order ones, with or without an
/// email), merged into the golden record exactly as the stores do, the gate
/// the dispatcher calls lets an event through to a destination only if every
/// purpose the destination needs is granted by the person's latest answer —
/// or the destination declares legitimate interest, or nothing personal is
/// sent.
#[cfg(test)]
mod property {
    use super::*;
    use chrono::{DateTime, Duration, Utc};
    use leadrelay_model::{
        ConsentRecord, ContactData, EmailAddress, EventType, Origin, PhoneE164, new_id,
    };
    use proptest::prelude::*;

    const POOL: [&str; 5] = ["crm", "marketing_email", "sms", "analytics", "ads"];

    fn purpose(i: usize) -> ConsentPurpose {
        ConsentPurpose::parse(POOL[i % POOL.len()]).unwrap()
    }

    #[derive(Debug, Clone)]
    struct Spec {
        email: bool,
        phone: bool,
        first_name: Option<String>,
        /// Some: an `unsubscribed` event naming these purposes (empty: the defaults).
        unsubscribe: Option<Vec<usize>>,
        /// (purpose, granted, seconds after t0 it was recorded)
        consent: Vec<(usize, bool, i64)>,
        received: i64,
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            any::<bool>(),
            any::<bool>(),
            proptest::option::of("[A-Za-z]{1,8}"),
            proptest::option::of(proptest::collection::vec(0..POOL.len(), 0..3)),
            proptest::collection::vec((0..POOL.len(), any::<bool>(), 0i64..50), 0..4),
            0i64..50,
        )
            .prop_map(
                |(email, phone, first_name, unsubscribe, consent, received)| Spec {
                    email,
                    phone,
                    first_name,
                    unsubscribe,
                    consent,
                    received,
                },
            )
    }

    fn event(s: &Spec, t0: DateTime<Utc>, defaults: &[ConsentPurpose]) -> Event {
        let at = |secs: i64| t0 + Duration::seconds(secs);
        let mut data = serde_json::Map::new();
        if let Some(named) = s.unsubscribe.as_ref().filter(|n| !n.is_empty()) {
            let names: Vec<&str> = named.iter().map(|i| POOL[*i]).collect();
            data.insert("purposes".into(), serde_json::json!(names));
        }
        let mut e = Event {
            id: new_id(),
            event_type: if s.unsubscribe.is_some() {
                EventType::Unsubscribed
            } else {
                EventType::LeadCreated
            },
            origin: Origin::form("contact"),
            received_at: at(s.received),
            occurred_at: at(s.received),
            contact: ContactData {
                email: s
                    .email
                    .then(|| EmailAddress::parse("pat@example.com").unwrap()),
                phone: s
                    .phone
                    .then(|| PhoneE164::parse("+14155552671", None).unwrap()),
                first_name: s.first_name.clone(),
                ..Default::default()
            },
            contact_id: None,
            data,
            attribution: Default::default(),
            consent: s
                .consent
                .iter()
                .map(|(p, granted, secs)| ConsentRecord {
                    purpose: purpose(*p),
                    granted: *granted,
                    text_version: Some("v1".into()),
                    recorded_at: at(*secs),
                })
                .collect(),
            ip_hash: None,
            raw: Default::default(),
            spam: false,
            idempotency_key: None,
            external_id: None,
            vendor_refs: vec![],
            changes: vec![],
            playbooks: vec![],
        };
        crate::ingest::withdraw::apply(&mut e, defaults).unwrap();
        e
    }

    /// The latest answer for `p` among `events` (in arrival order): the one
    /// recorded last; of answers recorded at the same moment, the one that
    /// arrived last.
    fn latest(events: &[&Event], p: &ConsentPurpose) -> Option<bool> {
        let mut best: Option<((DateTime<Utc>, usize), bool)> = None;
        let mut seq = 0usize;
        for e in events {
            for r in &e.consent {
                seq += 1;
                if &r.purpose == p && best.is_none_or(|(k, _)| (r.recorded_at, seq) >= k) {
                    best = Some(((r.recorded_at, seq), r.granted));
                }
            }
        }
        best.map(|(_, g)| g)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_delivers_to_a_destination_lacking_its_purposes(
            specs in proptest::collection::vec(spec(), 1..8),
            pick in any::<proptest::sample::Index>(),
            needs in proptest::collection::btree_set(0..POOL.len(), 0..4),
            legitimate_interest in any::<bool>(),
            default_withdraws in proptest::collection::btree_set(0..POOL.len(), 0..3),
        ) {
            let t0 = Utc::now();
            let defaults: Vec<ConsentPurpose> = default_withdraws.iter().map(|i| purpose(*i)).collect();
            let events: Vec<Event> = specs.iter().map(|s| event(s, t0, &defaults)).collect();
            // The store merges an event into the person's record when its
            // email is theirs (these events carry no company or domain, so
            // the secondary match never applies).
            let mut golden = None;
            for e in events.iter().filter(|e| e.contact.email.is_some()) {
                if let Some(c) = crate::contacts::merge(golden.clone(), e, t0) {
                    golden = Some(c);
                }
            }
            let sent = &events[pick.index(events.len())];
            // The dispatcher hands over the golden record of the event's person.
            let contact = sent.contact.email.as_ref().and(golden.as_ref());
            let purposes: Vec<ConsentPurpose> = needs.iter().map(|i| purpose(*i)).collect();
            let basis = legitimate_interest.then_some(LegalBasis::LegitimateInterest);

            let allowed = check(basis, &purposes, sent, contact).is_ok();

            let relevant: Vec<&Event> = if contact.is_some() {
                events.iter().filter(|e| e.contact.email.is_some()).collect()
            } else {
                vec![sent]
            };
            let personal = !sent.contact.is_empty() || contact.is_some();
            let expected = legitimate_interest
                || !personal
                || (!purposes.is_empty()
                    && purposes.iter().all(|p| latest(&relevant, p) == Some(true)));
            prop_assert_eq!(allowed, expected, "purposes {:?} basis {:?}", purposes, basis);
            if allowed && personal && !legitimate_interest {
                // Never a purpose the person's latest answer withdrew.
                for p in &purposes {
                    prop_assert_eq!(latest(&relevant, p), Some(true));
                }
            }
        }
    }
}
