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
mod depth;
mod email;
mod event;
mod lead;
mod phone;
mod purpose;

pub use contact::{CONTACT_FIELDS, Contact, ContactData, FieldProvenance, split_full_name};
pub use depth::{MAX_JSON_DEPTH, text_depth, too_deep, too_deep_message};
pub use email::{EmailAddress, EmailError, mask_email};
pub use event::{
    Attribution, CLICK_ID_FIELDS, ConsentRecord, Event, EventType, FieldChange, Origin, OriginKind,
    RawPayload, UTM_FIELDS, VendorRef,
};
pub use lead::{LeadState, OwnerAssignment, ScoreHit, Stage, Suppression};
pub use phone::{PhoneE164, PhoneError};
pub use purpose::{ConsentPurpose, PurposeError};

/// A new time-ordered identifier (UUIDv7) for events, deliveries, attempts and contacts.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}
