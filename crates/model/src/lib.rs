//! The canonical leadrelay model: events, contacts, consent and attribution.
//!
//! Everything that enters leadrelay — a form post, a vendor webhook, an API
//! call — becomes an [`Event`] about (usually) one person, described by
//! [`ContactData`]. The value types here (`EmailAddress`, `PhoneE164`,
//! `ConsentPurpose`, `EventType`) validate in their constructors, so code that
//! holds one never has to re-check it ("parse, don't validate").
//!
//! This crate has no I/O: the ingest layer, the stores, the inbound sources and
//! the connectors all share it.

mod contact;
mod email;
mod event;
mod phone;
mod purpose;

pub use contact::{split_full_name, Contact, ContactData, FieldProvenance, CONTACT_FIELDS};
pub use email::{mask_email, EmailAddress, EmailError};
pub use event::{
    Attribution, ConsentRecord, Event, EventType, FieldChange, Origin, OriginKind, RawPayload,
    VendorRef, CLICK_ID_FIELDS, UTM_FIELDS,
};
pub use phone::{PhoneE164, PhoneError};
pub use purpose::{ConsentPurpose, PurposeError};

/// A new time-ordered identifier (UUIDv7) for events, deliveries, attempts and contacts.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}
