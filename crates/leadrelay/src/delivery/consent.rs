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
    event.consent_for(purpose).is_some_and(|c| c.granted)
}
