//! Edits made as a person in HubSpot would make them (no API call, no rate
//! limit): they bump `lastmodifieddate` and reach the search index after
//! the configured delay, like API writes. Polling for changes is the CRM
//! search API (`lastmodifieddate` filters take epoch milliseconds or ISO
//! 8601). Association changes move no modification date (as in HubSpot):
//! a client reads them separately (v4 batch read).
//!
//! Change webhooks (Webhooks API): once an app subscribes
//! ([`HubSpotState::subscribe_webhooks`]), each person-made edit is POSTed
//! to the target URL as a JSON array of `propertyChange` events
//! (`eventId`, `subscriptionId`, `portalId`, `appId`, `occurredAt`,
//! `subscriptionType` — `contact.propertyChange`, `company.…`, `deal.…`,
//! or `object.propertyChange` with `objectTypeId` for other objects —,
//! `attemptNumber`, `objectId`, `propertyName`, `propertyValue`,
//! `changeSource`), signed with signature v3:
//! `X-HubSpot-Signature-v3` = base64(HMAC-SHA256(client secret, `POST` +
//! target URL + body + timestamp)), `X-HubSpot-Request-Timestamp` in
//! milliseconds. Simplified: one request per edit (HubSpot batches up to
//! 100 events), no retries, and no webhooks for API writes.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use crate::common::hmac_sha256_base64;

use super::HubSpotState;
use super::objects;

/// An app's webhook subscription.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// Where the POSTs go.
    pub url: String,
    /// The target URL as configured in the app, which HubSpot signs (the
    /// same as `url` unless a proxy sits between).
    pub signed_url: String,
    /// The app's client secret, the signing key.
    pub client_secret: String,
}

/// One webhook request sent, and the status it got (None: no answer).
#[derive(Debug, Clone)]
pub struct WebhookSent {
    pub body: String,
    pub status: Option<u16>,
}

static EVENT_IDS: AtomicU64 = AtomicU64::new(1);

impl HubSpotState {
    /// Sets properties of a record (an empty value clears); false if there
    /// is no such record.
    pub fn edit(&self, object_type: &str, id: &str, changes: &[(&str, &str)]) -> bool {
        let canonical = self
            .schema()
            .resolve(object_type)
            .unwrap_or_else(|| object_type.to_string());
        let changes: std::collections::BTreeMap<String, String> = changes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let indexed_at = std::time::Instant::now() + self.inner.config.search_index_delay;
        let mut store = self.store();
        let found = objects::update_record(&mut store, &canonical, id, changes.clone(), indexed_at)
            .is_some();
        drop(store);
        if found {
            self.send_change_webhook(&canonical, id, &changes);
        }
        found
    }

    /// Subscribes an app to change webhooks of every object type.
    pub fn subscribe_webhooks(&self, target: WebhookTarget) {
        *self.lock_webhook() = Some(target);
    }

    /// The change webhooks sent so far.
    pub fn webhooks_sent(&self) -> Vec<WebhookSent> {
        self.inner
            .webhook_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock_webhook(&self) -> std::sync::MutexGuard<'_, Option<WebhookTarget>> {
        self.inner.webhook.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send_change_webhook(
        &self,
        object_type: &str,
        id: &str,
        changes: &std::collections::BTreeMap<String, String>,
    ) {
        let Some(target) = self.lock_webhook().clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let now = chrono::Utc::now().timestamp_millis();
        let (subscription, type_id) = match object_type {
            "contacts" => ("contact.propertyChange", None),
            "companies" => ("company.propertyChange", None),
            "deals" => ("deal.propertyChange", None),
            other => (
                "object.propertyChange",
                self.schema()
                    .custom_types
                    .iter()
                    .find(|c| c.name == other)
                    .map(|c| c.object_type_id.clone()),
            ),
        };
        let events: Vec<serde_json::Value> = changes
            .iter()
            .map(|(name, value)| {
                let mut e = json!({
                    "eventId": EVENT_IDS.fetch_add(1, Ordering::Relaxed),
                    "subscriptionId": 1,
                    "portalId": self.inner.config.portal_id,
                    "appId": 1,
                    "occurredAt": now,
                    "subscriptionType": subscription,
                    "attemptNumber": 0,
                    "objectId": id.parse::<u64>().unwrap_or_default(),
                    "propertyName": name,
                    "propertyValue": value,
                    "changeSource": "CRM_UI",
                });
                if let Some(t) = &type_id {
                    e["objectTypeId"] = json!(t);
                }
                e
            })
            .collect();
        let body = serde_json::Value::Array(events).to_string();
        let timestamp = now.to_string();
        let signature = hmac_sha256_base64(
            &target.client_secret,
            &format!("POST{}{body}{timestamp}", target.signed_url),
        );
        let state = self.clone();
        runtime.spawn(async move {
            let status = reqwest::Client::new()
                .post(&target.url)
                .header("content-type", "application/json")
                .header("x-hubspot-signature-v3", signature)
                .header("x-hubspot-request-timestamp", timestamp)
                .header("x-hubspot-signature-version", "v3")
                .body(body.clone())
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            state
                .inner
                .webhook_log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(WebhookSent { body, status });
        });
    }

    /// Associates two records (the default association both ways) as a
    /// person would in HubSpot; no modification date moves. False when
    /// either record or the association type does not exist.
    pub fn associate_records(&self, from: (&str, &str), to: (&str, &str)) -> bool {
        let schema = self.schema();
        let (Some(f), Some(t)) = (schema.resolve(from.0), schema.resolve(to.0)) else {
            return false;
        };
        let Some(forward) = schema.default_assoc(&f, &t) else {
            return false;
        };
        let mut store = self.store();
        if store.get(&f, from.1).is_none() || store.get(&t, to.1).is_none() {
            return false;
        }
        objects::store_association(
            self,
            &mut store,
            (&f, from.1),
            (&t, to.1),
            forward.type_id,
            forward.category,
        );
        true
    }

    /// Removes every association between two records, as a person would.
    pub fn dissociate_records(&self, from: (&str, &str), to: (&str, &str)) {
        let schema = self.schema();
        let (Some(f), Some(t)) = (schema.resolve(from.0), schema.resolve(to.0)) else {
            return;
        };
        self.store().dissociate((&f, from.1), (&t, to.1));
    }
}
