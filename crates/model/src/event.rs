//! Events: one immutable thing that happened, with where it came from.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{ConsentPurpose, ContactData};

/// The five UTM parameters kept with every event.
pub const UTM_FIELDS: [&str; 5] = [
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
];
/// Ad-platform click identifiers kept with every event.
pub const CLICK_ID_FIELDS: [&str; 5] = ["gclid", "fbclid", "msclkid", "ttclid", "li_fat_id"];

/// What happened. Known types have a variant; anything else a vendor or the
/// API sends is kept as `Custom` rather than rejected.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    LeadCreated,
    FormSubmitted,
    ReplyReceived,
    MeetingBooked,
    MeetingCanceled,
    DealStageChanged,
    ContactUpdated,
    SequenceCompleted,
    EmailSent,
    EmailOpened,
    EmailClicked,
    EmailBounced,
    Unsubscribed,
    ProposalViewed,
    ProposalAccepted,
    Custom(String),
}

const KNOWN_TYPES: [(&str, EventType); 15] = [
    ("lead.created", EventType::LeadCreated),
    ("form.submitted", EventType::FormSubmitted),
    ("reply.received", EventType::ReplyReceived),
    ("meeting.booked", EventType::MeetingBooked),
    ("meeting.canceled", EventType::MeetingCanceled),
    ("deal.stage_changed", EventType::DealStageChanged),
    ("contact.updated", EventType::ContactUpdated),
    ("sequence.completed", EventType::SequenceCompleted),
    ("email.sent", EventType::EmailSent),
    ("email.opened", EventType::EmailOpened),
    ("email.clicked", EventType::EmailClicked),
    ("email.bounced", EventType::EmailBounced),
    ("unsubscribed", EventType::Unsubscribed),
    ("proposal.viewed", EventType::ProposalViewed),
    ("proposal.accepted", EventType::ProposalAccepted),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event type {0:?}: use 1-64 characters of a-z, 0-9, '.', '_', ':' or '-'")]
pub struct EventTypeError(pub String);

impl EventType {
    /// Parses a type name; unknown but well-formed names become `Custom`.
    pub fn parse(s: &str) -> Result<Self, EventTypeError> {
        if let Some((_, t)) = KNOWN_TYPES.iter().find(|(name, _)| *name == s) {
            return Ok(t.clone());
        }
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".:_-".contains(c));
        if ok {
            Ok(EventType::Custom(s.to_string()))
        } else {
            Err(EventTypeError(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            EventType::Custom(s) => s,
            known => KNOWN_TYPES
                .iter()
                .find(|(_, t)| t == known)
                .map(|(n, _)| *n)
                .unwrap_or("custom"),
        }
    }

    /// Every built-in type name, for documentation and validation.
    pub fn known_names() -> impl Iterator<Item = &'static str> {
        KNOWN_TYPES.iter().map(|(n, _)| *n)
    }

    pub fn is_custom(&self) -> bool {
        matches!(self, EventType::Custom(_))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EventType::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The kind of place an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginKind {
    /// A website form posted to `/v1/forms/{form}`.
    Form,
    /// A vendor webhook posted to `/v1/hooks/{source}`.
    Source,
    /// The authenticated API, `/v1/events`.
    Api,
    /// leadrelay itself (alerts, timers, replays).
    System,
}

impl OriginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OriginKind::Form => "form",
            OriginKind::Source => "source",
            OriginKind::Api => "api",
            OriginKind::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "form" => Some(OriginKind::Form),
            "source" => Some(OriginKind::Source),
            "api" => Some(OriginKind::Api),
            "system" => Some(OriginKind::System),
            _ => None,
        }
    }
}

/// Where an event came from: the kind, and the configured name of the form or source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub kind: OriginKind,
    pub name: String,
}

impl Origin {
    pub fn form(name: &str) -> Self {
        Self {
            kind: OriginKind::Form,
            name: name.to_string(),
        }
    }
    pub fn source(name: &str) -> Self {
        Self {
            kind: OriginKind::Source,
            name: name.to_string(),
        }
    }
    pub fn api(name: &str) -> Self {
        Self {
            kind: OriginKind::Api,
            name: name.to_string(),
        }
    }
    pub fn system(name: &str) -> Self {
        Self {
            kind: OriginKind::System,
            name: name.to_string(),
        }
    }
}

/// Marketing attribution captured at ingest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_term: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gclid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbclid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msclkid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttclid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub li_fat_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landing_page: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl Attribution {
    /// Sets a UTM or click-id field by its parameter name; false if the name is not one.
    pub fn set_param(&mut self, name: &str, value: String) -> bool {
        let slot = match name {
            "utm_source" => &mut self.utm_source,
            "utm_medium" => &mut self.utm_medium,
            "utm_campaign" => &mut self.utm_campaign,
            "utm_term" => &mut self.utm_term,
            "utm_content" => &mut self.utm_content,
            "gclid" => &mut self.gclid,
            "fbclid" => &mut self.fbclid,
            "msclkid" => &mut self.msclkid,
            "ttclid" => &mut self.ttclid,
            "li_fat_id" => &mut self.li_fat_id,
            _ => return false,
        };
        *slot = Some(value);
        true
    }

    /// The value of a UTM or click-id parameter by name.
    pub fn param(&self, name: &str) -> Option<&str> {
        match name {
            "utm_source" => self.utm_source.as_deref(),
            "utm_medium" => self.utm_medium.as_deref(),
            "utm_campaign" => self.utm_campaign.as_deref(),
            "utm_term" => self.utm_term.as_deref(),
            "utm_content" => self.utm_content.as_deref(),
            "gclid" => self.gclid.as_deref(),
            "fbclid" => self.fbclid.as_deref(),
            "msclkid" => self.msclkid.as_deref(),
            "ttclid" => self.ttclid.as_deref(),
            "li_fat_id" => self.li_fat_id.as_deref(),
            _ => None,
        }
    }
}

/// One person's answer for one purpose, as recorded at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub purpose: ConsentPurpose,
    pub granted: bool,
    /// The version of the consent text the person saw, from the form config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_version: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

/// The request body exactly as received, kept for audit and re-processing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawPayload {
    pub content_type: String,
    pub body: String,
}

/// An identifier of the same thing in another system (a HubSpot contact id,
/// a Calendly invitee URI, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VendorRef {
    /// The system, e.g. `hubspot`, `salesloft`.
    pub system: String,
    /// The object kind in that system, e.g. `contact`, `deal`, `person`.
    pub object: String,
    pub id: String,
}

/// One changed field reported by a CRM's change webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Value>,
}

/// A stored event. Immutable once written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// UUIDv7, assigned at ingest.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub origin: Origin,
    pub received_at: DateTime<Utc>,
    /// When it happened according to the sender (equals `received_at` for forms).
    pub occurred_at: DateTime<Utc>,
    /// The person the event is about, as the sender described them.
    pub contact: ContactData,
    /// The golden contact record this event was merged into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<Uuid>,
    /// Validated, normalised fields (form answers, vendor event details).
    #[serde(default)]
    pub data: Map<String, Value>,
    #[serde(default)]
    pub attribution: Attribution,
    #[serde(default)]
    pub consent: Vec<ConsentRecord>,
    /// HMAC-SHA256 of the client IP under the installation's key; never the IP itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_hash: Option<String>,
    #[serde(default)]
    pub raw: RawPayload,
    /// Caught by the honeypot: stored, never delivered.
    #[serde(default)]
    pub spam: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The sender's own id for this event (vendor event id), used to drop retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vendor_refs: Vec<VendorRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// The playbooks (`playbook` of the routes that matched, see
    /// `playbooks/`) that acted on this event, recorded at ingest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub playbooks: Vec<String>,
}

impl Event {
    /// An event leadrelay raises itself (alerts, dead-letter copies, the
    /// pipeline, privacy requests): a new id, received and occurred `now`,
    /// no raw payload, attribution or consent of its own.
    pub fn internal(
        event_type: EventType,
        origin: Origin,
        contact: ContactData,
        data: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Event {
        Event {
            id: crate::new_id(),
            event_type,
            origin,
            received_at: now,
            occurred_at: now,
            contact,
            contact_id: None,
            data,
            attribution: Attribution::default(),
            consent: Vec::new(),
            ip_hash: None,
            raw: RawPayload::default(),
            spam: false,
            idempotency_key: None,
            external_id: None,
            vendor_refs: Vec::new(),
            changes: Vec::new(),
            playbooks: Vec::new(),
        }
    }

    /// Whether the event's own consent records grant `purpose`.
    pub fn consent_for(&self, purpose: &ConsentPurpose) -> Option<&ConsentRecord> {
        self.consent.iter().rev().find(|c| &c.purpose == purpose)
    }

    /// The key that orders deliveries about the same person: the normalised
    /// email, else the phone, else the event itself (no ordering constraint).
    pub fn contact_key(&self) -> String {
        if let Some(e) = &self.contact.email {
            return format!("email:{}", e.as_str());
        }
        if let Some(p) = &self.contact.phone {
            return format!("phone:{}", p.as_str());
        }
        format!("event:{}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_custom_types_round_trip() {
        for name in EventType::known_names() {
            let t = EventType::parse(name).unwrap();
            assert!(!t.is_custom(), "{name}");
            assert_eq!(t.as_str(), name);
        }
        let c = EventType::parse("groove.sale").unwrap();
        assert_eq!(c, EventType::Custom("groove.sale".into()));
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"groove.sale\"");
        assert!(EventType::parse("Bad Type").is_err());
        assert!(EventType::parse("").is_err());
    }

    #[test]
    fn attribution_params() {
        let mut a = Attribution::default();
        assert!(a.set_param("utm_source", "google".into()));
        assert!(a.set_param("gclid", "abc".into()));
        assert!(!a.set_param("nope", "x".into()));
        assert_eq!(a.param("utm_source"), Some("google"));
        for f in UTM_FIELDS.iter().chain(CLICK_ID_FIELDS.iter()) {
            assert!(a.set_param(f, "v".into()), "{f}");
            assert_eq!(a.param(f), Some("v"));
        }
    }
}
