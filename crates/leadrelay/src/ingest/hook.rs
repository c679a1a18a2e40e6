//! Vendor webhooks at ingest: the events a source parsed out of one
//! authenticated request become stored events with their routing.
//!
//! The source (in `leadrelay-sources`) has already verified and mapped the
//! request; what is added here is what every event gets whatever its origin:
//! an id, the origin `source:NAME`, the company domain, attribution the vendor
//! reported, the keyed hash of the client IP, the raw payload, and the routes'
//! destinations. All events of one request are stored in ONE transaction, so
//! a vendor's batch is stored whole or not at all, and a vendor event id seen
//! before from the same source is answered as a duplicate, never stored twice.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use leadrelay_model::{Event, Origin, RawPayload, new_id};
use leadrelay_sources::InboundEvent;
use serde_json::Value;

use super::enrich::vendor_attribution;
use super::{Ingestor, withdraw};
use crate::store::{IngestItem, IngestOutcome, StoreError};

/// One authenticated vendor request, as the HTTP layer hands it over.
#[derive(Debug, Clone, Copy)]
pub struct HookRequest<'a> {
    /// The configured source name (`[sources.NAME]`).
    pub source: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    pub client_ip: Option<IpAddr>,
    pub received_at: DateTime<Utc>,
}

impl Ingestor {
    /// Builds the events of a vendor request and their routing without
    /// storing them (also used by `simulate` and the tests).
    pub fn hook_items(&self, req: &HookRequest<'_>, events: Vec<InboundEvent>) -> Vec<IngestItem> {
        let raws = raw_bodies(req.body, events.len());
        let ip_hash = req.client_ip.map(|ip| self.ip_hasher.hash(ip));
        let content_type = req.content_type.unwrap_or_default().to_string();
        events
            .into_iter()
            .zip(raws)
            .map(|(inbound, raw_body)| {
                let mut contact = inbound.contact;
                contact.derive_domain();
                let mut event = Event {
                    id: new_id(),
                    event_type: inbound.event_type,
                    origin: Origin::source(req.source),
                    received_at: req.received_at,
                    occurred_at: inbound.occurred_at.unwrap_or(req.received_at),
                    contact,
                    contact_id: None,
                    attribution: vendor_attribution(&inbound.data),
                    data: inbound.data,
                    consent: Vec::new(),
                    ip_hash: ip_hash.clone(),
                    raw: RawPayload {
                        content_type: content_type.clone(),
                        body: raw_body,
                    },
                    spam: false,
                    idempotency_key: None,
                    external_id: inbound.external_id,
                    vendor_refs: inbound.vendor_refs,
                    changes: inbound.changes,
                    playbooks: vec![],
                };
                withdraw::apply_lenient(&mut event, &self.config.privacy.unsubscribe_withdraws);
                // A thin push waits for its activity (see `crate::thin_push`).
                let destinations =
                    match crate::thin_push::thin_url(&self.config, req.source, &event) {
                        Some(_) => Vec::new(),
                        None => self.routes.route_and_record(&mut event),
                    };
                IngestItem {
                    event,
                    destinations,
                    idempotency: None,
                }
            })
            .collect()
    }

    /// Stores every event of a vendor request in one transaction. Resolves
    /// only after the commit; per event, the new id or the id of the event
    /// the same vendor event id was stored under before.
    pub async fn submit_hook(
        &self,
        req: &HookRequest<'_>,
        events: Vec<InboundEvent>,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let items = self.hook_items(req, events);
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let thin: Vec<Option<String>> = items
            .iter()
            .map(|i| crate::thin_push::thin_url(&self.config, req.source, &i.event))
            .collect();
        let outcomes = self.store.ingest(items).await?;
        // Queued before the push is answered: a failure here is a 503 and
        // Mailshake pushes again (stored once, queued once).
        for (outcome, url) in outcomes.iter().zip(thin) {
            let (Some(url), IngestOutcome::Stored(id) | IngestOutcome::Duplicate(id)) =
                (url, outcome)
            else {
                continue;
            };
            crate::thin_push::enqueue(&self.store, *id, req.source, &url).await?;
        }
        Ok(outcomes)
    }
}

/// The raw payload kept with each of `n` events. A JSON array with one
/// element per event (HubSpot, Woodpecker) gives each event its own element
/// (a one-element batch too),
/// so a batch of 100 does not store its body 100 times; anything else keeps
/// the whole body with every event.
fn raw_bodies(body: &[u8], n: usize) -> Vec<String> {
    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if is_array
        && let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body)
        && items.len() == n
    {
        return items.iter().map(Value::to_string).collect();
    }
    vec![String::from_utf8_lossy(body).into_owned(); n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_one_element_per_event() {
        let body = br#"[{"eventId":1},{"eventId":2}]"#;
        assert_eq!(
            raw_bodies(body, 2),
            vec![
                r#"{"eventId":1}"#.to_string(),
                r#"{"eventId":2}"#.to_string()
            ]
        );
        // A count that does not match keeps the whole body with each event.
        assert_eq!(raw_bodies(body, 3).len(), 3);
        assert_eq!(raw_bodies(body, 3)[2], String::from_utf8_lossy(body));
        assert_eq!(raw_bodies(b"<xml/>", 1), vec!["<xml/>".to_string()]);
        assert_eq!(
            raw_bodies(b" [{\"a\":1}]", 1),
            vec![r#"{"a":1}"#.to_string()]
        );
        assert!(raw_bodies(b"", 0).is_empty());
    }
}
