//! HubSpot marketing event participations read into leadrelay: a contact's
//! state in a configured marketing event (registered, attended, cancelled,
//! no-show) becomes a `marketing_event.<state>` event about the contact.
//!
//! Each round reads the event's participations whole
//! (`GET /marketing/v3/marketing-events/participations/{id}/breakdown`, 100
//! a page, paged by `after`; each names the contact with its email, the
//! state and when it happened) and compares each contact's state with the
//! one recorded last time (`hubspot_read:NAME:marketing_event:ID`): a new
//! or changed state is an event. The external id
//! `marketing_event:ID:CONTACT:STATE:OCCURRED` makes a repeat after a crash
//! a duplicate; the recorded states move on after each stored page.

use std::collections::BTreeMap;

use chrono::DateTime;
use leadrelay_model::{ContactData, EmailAddress, EventType, VendorRef};
use leadrelay_sources::InboundEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ReadError, ReadHealth, Reader};
use crate::connectors::crm;
use crate::connectors::hubspot::api::Family;

/// Participations asked for a page.
const PAGE: usize = 100;

/// The event type prefix of participations.
pub const MARKETING_EVENT_PREFIX: &str = "marketing_event.";

/// What the reader recorded about one marketing event.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct EventState {
    #[serde(default)]
    name: String,
    /// Contact id → `STATE@occurredAt` as last stored.
    #[serde(default)]
    states: BTreeMap<String, String>,
}

/// The event type of an `attendanceState` (None: a state that says nothing
/// happened, such as `EMPTY`, or not a state at all).
pub fn event_type_of(state: &str) -> Option<EventType> {
    let s = state.trim().to_ascii_lowercase();
    if s.is_empty()
        || s == "empty"
        || s.len() > 32
        || !s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    {
        return None;
    }
    EventType::parse(&format!("{MARKETING_EVENT_PREFIX}{s}")).ok()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Reader {
    /// Reads one marketing event's participations and stores what changed.
    pub(super) async fn read_marketing_event(
        &self,
        id: &str,
        health: &mut ReadHealth,
    ) -> Result<(), ReadError> {
        let rest = format!("marketing_event:{id}");
        let mut st: EventState = self.load(&rest).await?;
        let seg = crm::path_segment(id);
        let path = self.api.path(
            Family::MarketingEvents,
            &format!("/participations/{seg}/breakdown?limit={PAGE}"),
        );
        let mut after: Option<String> = None;
        loop {
            let (results, next) = self
                .page(&path, after.as_deref(), "participations")
                .await
                .map_err(|e| format!("marketing event {id}: {e}"))?;
            let mut events = Vec::new();
            let mut raws = Vec::new();
            let mut changed = Vec::new();
            for r in &results {
                let contact = &r["associations"]["contact"];
                let Some(contact_id) = text(&contact["contactId"]) else {
                    continue;
                };
                let state = r["properties"]["attendanceState"]
                    .as_str()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_uppercase();
                let Some(event_type) = event_type_of(&state) else {
                    continue;
                };
                let occurred = r["properties"]["occurredAt"].as_i64();
                let mark = format!("{state}@{}", occurred.unwrap_or_default());
                if st.states.get(&contact_id) == Some(&mark) {
                    continue;
                }
                let event = &r["associations"]["marketingEvent"];
                if let Some(n) = text(&event["name"]) {
                    st.name = n;
                }
                let Some(email) =
                    text(&contact["email"]).and_then(|e| EmailAddress::parse(&e).ok())
                else {
                    health.without_email += 1;
                    continue;
                };
                let person = ContactData {
                    email: Some(email),
                    first_name: text(&contact["firstname"]),
                    last_name: text(&contact["lastname"]),
                    ..Default::default()
                };
                let mut data = Map::new();
                data.insert("marketing_event_id".into(), json!(id));
                data.insert("marketing_event_name".into(), json!(st.name));
                for (key, from) in [
                    ("external_event_id", "externalEventId"),
                    ("external_account_id", "externalAccountId"),
                ] {
                    if let Some(v) = text(&event[from]) {
                        data.insert(key.into(), json!(v));
                    }
                }
                data.insert("state".into(), json!(state));
                let props = &r["properties"];
                for (key, from) in [
                    ("attendance_duration_seconds", "attendanceDurationSeconds"),
                    ("attendance_percentage", "attendancePercentage"),
                ] {
                    if !props[from].is_null() {
                        data.insert(key.into(), props[from].clone());
                    }
                }
                let occurred_at = occurred.and_then(DateTime::from_timestamp_millis);
                events.push(InboundEvent {
                    event_type,
                    external_id: Some(format!(
                        "marketing_event:{id}:{contact_id}:{state}:{}",
                        occurred.unwrap_or_default()
                    )),
                    occurred_at,
                    contact: person,
                    data,
                    vendor_refs: vec![
                        VendorRef {
                            system: "hubspot".into(),
                            object: "contact".into(),
                            id: contact_id.clone(),
                        },
                        VendorRef {
                            system: "hubspot".into(),
                            object: "marketing_event".into(),
                            id: id.to_string(),
                        },
                    ],
                    changes: Vec::new(),
                });
                raws.push(r.clone());
                changed.push((contact_id, mark));
            }
            health.last_round_events += self.store_events(events, &raws).await?;
            st.states.extend(changed);
            self.save(&rest, &st).await?;
            match next {
                Some(a) => after = Some(a),
                None => break,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attendance_states_name_event_types() {
        let t = |s: &str| event_type_of(s).map(|t| t.as_str().to_string());
        assert_eq!(
            t("REGISTERED").as_deref(),
            Some("marketing_event.registered")
        );
        assert_eq!(t("ATTENDED").as_deref(), Some("marketing_event.attended"));
        assert_eq!(t("NO_SHOW").as_deref(), Some("marketing_event.no_show"));
        assert_eq!(t("cancelled").as_deref(), Some("marketing_event.cancelled"));
        assert_eq!(t("EMPTY"), None);
        assert_eq!(t(""), None);
        assert_eq!(t("DROP TABLE"), None);
        assert_eq!(t(&"A".repeat(40)), None);
    }
}
