//! Outbound messages: the "Outbound Message" action of a workflow rule or
//! a record-triggered flow on an object ("created, and every time it's
//! edited"), as Salesforce sends them ("Understanding Notifications",
//! "Understanding the Outbound Messaging WSDL", "Outbound Message
//! Considerations"):
//! - every save of a record of the object queues a notification — a
//!   person's edit and a change made through the API alike;
//! - a background sender POSTs the queue as SOAP `notifications`
//!   (`OrganizationId`, `ActionId`, `SessionId` (nil unless "Send Session
//!   ID" is ticked), `EnterpriseUrl`, `PartnerUrl`, up to 100
//!   `Notification`s each with its `Id` and an `sObject` of the message's
//!   fields), `text/xml` with `SOAPAction: ""`; the fields are read when
//!   the message is sent (only the latest data is delivered; a record
//!   deleted meanwhile sends its `Id` alone);
//! - a message is delivered when the endpoint answers 200 with
//!   `<Ack>true</Ack>`; otherwise it is retried, the interval doubling up
//!   to a maximum (two hours in Salesforce), until it is older than the
//!   maximum age (24 hours), then dropped. [`OutboundRetry`] sets the
//!   schedule so a test can watch it in milliseconds.
//!
//! Simplified: the rule's criteria are "every save"; messages are not
//! retried out of order.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{SalesforceState, schema};

/// An outbound message defined on an object.
#[derive(Debug, Clone)]
pub struct OutboundMessageDef {
    /// The object whose saves send it (`Lead`, `Contact`, `Opportunity` …).
    pub object: String,
    /// The fields sent (the `Id` always is).
    pub fields: Vec<String>,
    /// The endpoint URL.
    pub endpoint_url: String,
    /// "Send Session ID": the message carries a live session id.
    pub send_session_id: bool,
}

/// When an unacknowledged message is sent again.
#[derive(Debug, Clone, Copy)]
pub struct OutboundRetry {
    /// The first retry's delay; each next one doubles it.
    pub first: Duration,
    /// The longest interval between retries (Salesforce: 2 hours).
    pub max_interval: Duration,
    /// A notification older than this is dropped (Salesforce: 24 hours).
    pub max_age: Duration,
    /// How long the sender waits for an answer (Salesforce: 60 seconds).
    pub timeout: Duration,
}

impl Default for OutboundRetry {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(15),
            max_interval: Duration::from_secs(2 * 3600),
            max_age: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(60),
        }
    }
}

/// One SOAP message sent and what became of it.
#[derive(Debug, Clone)]
pub struct OutboundSent {
    pub endpoint_url: String,
    pub body: String,
    /// The notification ids it carried.
    pub notifications: Vec<String>,
    /// The answer's status (None: no answer).
    pub status: Option<u16>,
    /// The answer acknowledged it (200 with `<Ack>true</Ack>`).
    pub acked: bool,
}

#[derive(Debug, Clone)]
struct Queued {
    action: usize,
    notification_id: String,
    record_id: String,
    queued_at: Instant,
    due: Instant,
    attempts: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Outbound {
    /// Definitions with their action ids.
    defs: Vec<(String, OutboundMessageDef)>,
    queue: Vec<Queued>,
    sent: Vec<OutboundSent>,
    retry: Option<OutboundRetry>,
    sender: bool,
    next_id: u64,
    /// The fake's own URL (the instance the message's URLs name).
    pub(crate) instance: String,
}

/// Salesforce sends at most 100 notifications in one message.
const MAX_NOTIFICATIONS: usize = 100;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl SalesforceState {
    pub(crate) fn outbound_lock(&self) -> std::sync::MutexGuard<'_, Outbound> {
        self.outbound()
    }

    fn outbound(&self) -> std::sync::MutexGuard<'_, Outbound> {
        self.inner
            .outbound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Defines an outbound message (its rule on every save of the object);
    /// returns its action id (`04k…`).
    pub fn add_outbound_message(&self, def: OutboundMessageDef) -> String {
        let mut o = self.outbound();
        o.next_id += 1;
        let id = schema::new_id("04k", o.next_id);
        o.defs.push((id.clone(), def));
        id
    }

    /// Points every outbound message at another endpoint (as an admin
    /// fixing the URL in Setup): queued messages go there from their next
    /// try.
    pub fn set_outbound_endpoint(&self, url: &str) {
        for (_, d) in &mut self.outbound().defs {
            d.endpoint_url = url.to_string();
        }
    }

    /// The retry schedule (default: Salesforce's).
    pub fn set_outbound_retry(&self, retry: OutboundRetry) {
        self.outbound().retry = Some(retry);
    }

    /// The SOAP messages sent so far, oldest first.
    pub fn outbound_sent(&self) -> Vec<OutboundSent> {
        self.outbound().sent.clone()
    }

    /// Notifications waiting for an acknowledgement.
    pub fn outbound_queued(&self) -> usize {
        self.outbound().queue.len()
    }

    /// A record of `object` was saved: each outbound message on the
    /// object queues a notification.
    pub(crate) fn record_saved(&self, object: &str, id: &str) {
        let start = {
            let mut o = self.outbound();
            let actions: Vec<usize> = o
                .defs
                .iter()
                .enumerate()
                .filter(|(_, (_, d))| d.object.eq_ignore_ascii_case(object))
                .map(|(i, _)| i)
                .collect();
            if actions.is_empty() {
                return;
            }
            let now = Instant::now();
            for action in actions {
                o.next_id += 1;
                let notification_id = schema::new_id("04l", o.next_id);
                o.queue.push(Queued {
                    action,
                    notification_id,
                    record_id: id.to_string(),
                    queued_at: now,
                    due: now,
                    attempts: 0,
                });
            }
            !std::mem::replace(&mut o.sender, true)
        };
        self.inner.outbound_wake.notify_one();
        if start {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(self.clone().send_loop());
                }
                Err(_) => self.outbound().sender = false,
            }
        }
    }

    /// Sends what is due, then sleeps until the next due time or a new
    /// notification. Ends with the last clone of the state.
    async fn send_loop(self) {
        let client = reqwest::Client::new();
        loop {
            if std::sync::Arc::strong_count(&self.inner) <= 1 {
                return;
            }
            let retry = self.outbound().retry.unwrap_or_default();
            let batch = self.due_batch(retry);
            match batch {
                Some((action, items)) => self.send(&client, retry, action, items).await,
                None => {
                    let next = self.outbound().queue.iter().map(|q| q.due).min();
                    let wait = next
                        .map(|d| d.saturating_duration_since(Instant::now()))
                        .unwrap_or(Duration::from_millis(200))
                        .min(Duration::from_millis(200));
                    let _ = tokio::time::timeout(wait, self.inner.outbound_wake.notified()).await;
                }
            }
        }
    }

    /// The due notifications of one message (≤ 100), taken off the queue;
    /// those past the maximum age are dropped.
    fn due_batch(&self, retry: OutboundRetry) -> Option<(usize, Vec<Queued>)> {
        let mut o = self.outbound();
        let now = Instant::now();
        o.queue
            .retain(|q| now.saturating_duration_since(q.queued_at) < retry.max_age);
        let action = o.queue.iter().find(|q| q.due <= now)?.action;
        let mut items = Vec::new();
        let mut rest = Vec::new();
        for q in std::mem::take(&mut o.queue) {
            if q.action == action && q.due <= now && items.len() < MAX_NOTIFICATIONS {
                items.push(q);
            } else {
                rest.push(q);
            }
        }
        o.queue = rest;
        Some((action, items))
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        retry: OutboundRetry,
        action: usize,
        mut items: Vec<Queued>,
    ) {
        let Some((action_id, def)) = self.outbound().defs.get(action).cloned() else {
            return;
        };
        let body = self.envelope(&action_id, &def, &items);
        let answer = client
            .post(&def.endpoint_url)
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", "\"\"")
            .timeout(retry.timeout)
            .body(body.clone())
            .send()
            .await;
        let (status, acked) = match answer {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                let acked = status == 200
                    && text
                        .split("<Ack>")
                        .nth(1)
                        .is_some_and(|rest| rest.trim_start().starts_with("true"));
                (Some(status), acked)
            }
            Err(_) => (None, false),
        };
        let mut o = self.outbound();
        o.sent.push(OutboundSent {
            endpoint_url: def.endpoint_url.clone(),
            body,
            notifications: items.iter().map(|q| q.notification_id.clone()).collect(),
            status,
            acked,
        });
        if acked {
            return;
        }
        let now = Instant::now();
        for q in &mut items {
            let factor = 2u32.saturating_pow(q.attempts.min(20));
            q.due = now + retry.first.saturating_mul(factor).min(retry.max_interval);
            q.attempts += 1;
        }
        o.queue.extend(items);
    }

    /// The SOAP envelope of one message, with the records' current data.
    fn envelope(&self, action_id: &str, def: &OutboundMessageDef, items: &[Queued]) -> String {
        let config = &self.inner.config;
        let org15: String = config.org_id.chars().take(15).collect();
        let instance = self.outbound().instance.clone();
        let instance = if instance.is_empty() {
            "https://fake.my.salesforce.com".to_string()
        } else {
            instance
        };
        let session = if def.send_session_id {
            format!(
                "<SessionId>{}</SessionId>",
                escape(&self.issue_access_token())
            )
        } else {
            "<SessionId xsi:nil=\"true\"/>".to_string()
        };
        let store = self.store();
        let mut notifications = String::new();
        for q in items {
            let record = store.records.get(&q.record_id);
            let mut fields = format!("<sf:Id>{}</sf:Id>", q.record_id);
            for name in def.fields.iter().filter(|f| !f.eq_ignore_ascii_case("Id")) {
                let Some(r) = record else { break };
                let (k, v) = r
                    .fields
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map_or((name.as_str(), &Value::Null), |(k, v)| (k.as_str(), v));
                match v {
                    Value::Null => fields.push_str(&format!("<sf:{k} xsi:nil=\"true\"/>")),
                    Value::String(s) => fields.push_str(&format!("<sf:{k}>{}</sf:{k}>", escape(s))),
                    other => {
                        fields.push_str(&format!("<sf:{k}>{}</sf:{k}>", escape(&other.to_string())))
                    }
                }
            }
            notifications.push_str(&format!(
                "<Notification><Id>{}</Id><sObject xsi:type=\"sf:{}\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">{fields}</sObject></Notification>",
                q.notification_id, def.object
            ));
        }
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
<soapenv:Body><notifications xmlns=\"http://soap.sforce.com/2005/09/outbound\">\
<OrganizationId>{}</OrganizationId><ActionId>{action_id}</ActionId>{session}\
<EnterpriseUrl>{instance}/services/Soap/c/{v}.0/{org15}</EnterpriseUrl>\
<PartnerUrl>{instance}/services/Soap/u/{v}.0/{org15}</PartnerUrl>\
{notifications}</notifications></soapenv:Body></soapenv:Envelope>",
            config.org_id,
            v = config.max_api_version,
        )
    }
}
