//! Vendor webhooks over real HTTP (`POST /v1/hooks/{source}`), one source of
//! every kind, with the vendors' documented bodies and headers. Signatures are
//! computed here with each vendor's documented algorithm written out, never
//! with the library's own verification code.
//!
//! Each kind: a valid delivery becomes the right canonical events, stored and
//! routed. Each scheme: a bad signature, a stale timestamp, a wrong or missing
//! token are 401 and store nothing; malformed bodies are 400; oversized 413;
//! retries store once; pings answer 200 and store nothing.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use leadrelay::store::EventFilter;
use leadrelay_model::{Event, OriginKind};
use serde_json::{Value, json};
use sha1::Sha1;
use sha2::Sha256;

use crate::support::{TestApp, eventually};

const PUBLIC: &str = "https://leads.example.com";

/// The secrets every source reads from its env vars.
const SECRETS: [(&str, &str); 21] = [
    (
        "HUBSPOT_CLIENT_SECRET",
        "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
    ),
    ("CALENDLY_SIGNING_KEY", "calendly-signing-key-0123456789"),
    ("TYPEFORM_SECRET", "typeform-webhook-secret"),
    ("SALESLOFT_CALLBACK_TOKEN", "salesloft-callback-token"),
    ("PIPEDRIVE_HOOK_PASSWORD", "correct horse"),
    ("SF_OM_TOKEN", "sf-token-1"),
    ("SMARTLEAD_TOKEN", "sl-token"),
    (
        "SMARTLEAD_SECRET_KEY",
        "e0207d40-84ef-4ad6-89eb-7dbff8c0138d",
    ),
    ("SMARTLEAD_SIGNING_SECRET", "sl-signing-secret"),
    ("LEMLIST_TOKEN", "lem-token"),
    ("LEMLIST_SECRET", "hook-secret"),
    ("MAILSHAKE_PUSH_TOKEN", "ms-secret"),
    ("REPLY_TOKEN", "rp-token"),
    ("WOODPECKER_TOKEN", "wp-token"),
    ("APOLLO_TOKEN", "ap-token"),
    ("MIXMAX_TOKEN", "mm-token"),
    ("GROOVE_TOKEN", "gr-token"),
    ("QWILR_TOKEN", "qw-token"),
    ("ZAPIER_HOOK_TOKEN", "zap-token"),
    ("MAKE_SIGNING_KEY", "make-signing-key"),
    ("UNUSED", "x"),
];

fn secret(name: &str) -> &'static str {
    SECRETS
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no secret {name}"))
}

/// One source of every kind, all routed to a file backup.
fn config(backup: &Path) -> String {
    format!(
        r#"
[server]
public_url = "{PUBLIC}"

[delivery]
poll_interval = "100ms"

[destinations.backup]
connector = "file"
path = "{backup}"
legal_basis = "legitimate_interest"

[[routes]]
name = "vendor events"
sources = ["hubspot", "calendly", "typeform", "salesloft", "pipedrive", "salesforce", "smartlead",
           "lemlist", "mailshake", "replyio", "woodpecker", "apollo", "mixmax", "groove", "qwilr",
           "zapier", "make"]
destinations = ["backup"]

[sources.hubspot]
kind = "hubspot"
client_secret_env = "HUBSPOT_CLIENT_SECRET"

[sources.calendly]
kind = "calendly"
signing_key_env = "CALENDLY_SIGNING_KEY"
tolerance = "3m"

[sources.typeform]
kind = "typeform"
secret_env = "TYPEFORM_SECRET"
fields = {{ org = "company" }}

[sources.salesloft]
kind = "salesloft"
callback_token_env = "SALESLOFT_CALLBACK_TOKEN"

[sources.pipedrive]
kind = "pipedrive"
http_auth_user = "pipedrive"
http_auth_password_env = "PIPEDRIVE_HOOK_PASSWORD"

[sources.salesforce]
kind = "salesforce_outbound_message"
organization_id = "00D000000000062"
token_env = "SF_OM_TOKEN"
max_body_bytes = "128KiB"

[sources.smartlead]
kind = "smartlead"
token_env = "SMARTLEAD_TOKEN"
secret_key_env = "SMARTLEAD_SECRET_KEY"
signing_secret_env = "SMARTLEAD_SIGNING_SECRET"

[sources.lemlist]
kind = "lemlist"
token_env = "LEMLIST_TOKEN"
secret_env = "LEMLIST_SECRET"

[sources.mailshake]
kind = "mailshake"
token_env = "MAILSHAKE_PUSH_TOKEN"

[sources.replyio]
kind = "replyio"
token_env = "REPLY_TOKEN"

[sources.woodpecker]
kind = "woodpecker"
token_env = "WOODPECKER_TOKEN"

[sources.apollo]
kind = "apollo"
token_env = "APOLLO_TOKEN"

[sources.mixmax]
kind = "mixmax"
token_env = "MIXMAX_TOKEN"

[sources.groove]
kind = "groove"
token_env = "GROOVE_TOKEN"

[sources.qwilr]
kind = "qwilr"
token_env = "QWILR_TOKEN"

[sources.zapier]
kind = "generic"
token_env = "ZAPIER_HOOK_TOKEN"
event_type_pointer = "/event"
event_type_map = {{ new_lead = "lead.created", demo_booked = "meeting.booked" }}
external_id_pointer = "/id"
occurred_at_pointer = "/created_at"
events_pointer = "/rows"
fields = {{ email = "/contact/email", first_name = "/contact/first", phone = "/contact/phone" }}
data = {{ plan = "/plan" }}
default_region = "US"

[sources.make]
kind = "generic"
signature_header = "X-Make-Signature"
signature_secret_env = "MAKE_SIGNING_KEY"
signature_encoding = "base64"
signature_prefix = "sha256="
event_type = "lead.created"
fields = {{ email = "/email", company = "/company" }}
"#,
        backup = backup.display()
    )
}

/// A fixture of the sources crate (the vendors' documented examples).
fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../sources/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// --- The vendors' signing algorithms, as their docs describe them. ---

fn hmac_sha256(key: &str, message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// HubSpot v3: base64(HMAC-SHA256(client secret, method + URI + body + timestamp)).
fn hubspot_headers(uri: &str, body: &str, timestamp_ms: i64) -> Vec<(String, String)> {
    let ts = timestamp_ms.to_string();
    let source = format!("POST{uri}{body}{ts}");
    let sig = STANDARD.encode(hmac_sha256(
        secret("HUBSPOT_CLIENT_SECRET"),
        source.as_bytes(),
    ));
    vec![
        ("x-hubspot-signature-v3".into(), sig),
        ("x-hubspot-request-timestamp".into(), ts),
        ("x-hubspot-signature-version".into(), "v3".into()),
    ]
}

/// Calendly: `t=<unix seconds>,v1=<hex HMAC-SHA256(signing key, "<t>.<body>")>`.
fn calendly_signature(body: &str, t: i64) -> String {
    let v1 = hex::encode(hmac_sha256(
        secret("CALENDLY_SIGNING_KEY"),
        format!("{t}.{body}").as_bytes(),
    ));
    format!("t={t},v1={v1}")
}

/// Typeform: `sha256=<base64 HMAC-SHA256(secret, body)>`.
fn typeform_signature(body: &str) -> String {
    format!(
        "sha256={}",
        STANDARD.encode(hmac_sha256(secret("TYPEFORM_SECRET"), body.as_bytes()))
    )
}

/// Salesloft: hex HMAC-SHA1 of the body keyed with the callback token.
fn salesloft_signature(body: &str) -> String {
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(secret("SALESLOFT_CALLBACK_TOKEN").as_bytes())
            .unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Smartlead: `sha256=<hex HMAC-SHA256(signing secret, body)>`.
fn smartlead_signature(body: &str) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(
            secret("SMARTLEAD_SIGNING_SECRET"),
            body.as_bytes()
        ))
    )
}

/// HTTP Basic, as Pipedrive sends the credentials set on the webhook.
fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

// --- The app under test. ---

struct Hooks {
    app: TestApp,
}

/// An answer from leadrelay.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Hooks {
    async fn start() -> Hooks {
        let dir = tempfile::tempdir().unwrap();
        let toml = config(&dir.path().join("backup"));
        let mut builder = TestApp::builder(&toml).dir(dir);
        for (k, v) in SECRETS {
            builder = builder.env(k, v);
        }
        Hooks {
            app: builder.start().await,
        }
    }

    /// POSTs `body` to `path` (with its query) with `headers`; JSON unless
    /// a content type is given.
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Answer {
        let owned: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.post_owned(path, &owned, body.into()).await
    }

    async fn post_owned(&self, path: &str, headers: &[(String, String)], body: Vec<u8>) -> Answer {
        let mut req = self.app.client.post(self.app.url(path));
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.body(body).send().await.expect("request");
        Answer {
            status: resp.status().as_u16(),
            content_type: resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            retry_after: resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            body: resp.text().await.unwrap_or_default(),
        }
    }

    /// Events from one source, oldest first.
    async fn events(&self, source: &str) -> Vec<Event> {
        let filter = EventFilter {
            origin_kind: Some(OriginKind::Source),
            origin_name: Some(source.into()),
            ..Default::default()
        };
        let mut events = self
            .app
            .store
            .list_events(&filter, None, 10_000)
            .await
            .expect("list events");
        events.reverse();
        events
    }

    async fn total_events(&self) -> usize {
        self.app
            .store
            .list_events(&EventFilter::default(), None, 10_000)
            .await
            .expect("list events")
            .len()
    }

    /// The event was routed: it has a delivery to the backup.
    async fn assert_routed(&self, event: &Event) {
        let deliveries = self
            .app
            .store
            .deliveries_for_event(event.id)
            .await
            .expect("deliveries");
        assert!(
            deliveries.iter().any(|d| d.destination == "backup"),
            "event {} ({}) was not routed: {deliveries:?}",
            event.id,
            event.event_type
        );
    }

    async fn metrics(&self) -> String {
        self.app
            .client
            .get(self.app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn email(e: &Event) -> Option<&str> {
    e.contact.email.as_ref().map(|m| m.as_str())
}

fn has_ref(e: &Event, system: &str, object: &str, id: &str) -> bool {
    e.vendor_refs
        .iter()
        .any(|r| r.system == system && r.object == object && r.id == id)
}

fn data_str<'e>(e: &'e Event, key: &str) -> &'e str {
    e.data
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no data.{key} in {:?}", e.data))
}

/// A refusal: the status, the JSON error code, and nothing stored.
async fn assert_refused(h: &Hooks, answer: &Answer, status: u16, code: &str, before: usize) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.error_code(), code, "{answer:?}");
    assert!(answer.json()["error"]["message"].is_string());
    assert_eq!(
        h.total_events().await,
        before,
        "a refused request stored something"
    );
}

// --- HubSpot ---

const HUBSPOT_PATH: &str = "/v1/hooks/hubspot";

/// The example body from HubSpot's request-validation docs.
const HUBSPOT_DOC_BODY: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;

async fn post_hubspot(h: &Hooks, body: &str, timestamp_ms: i64) -> Answer {
    let headers = hubspot_headers(&format!("{PUBLIC}{HUBSPOT_PATH}"), body, timestamp_ms);
    h.post_owned(HUBSPOT_PATH, &headers, body.as_bytes().to_vec())
        .await
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[tokio::test]
async fn hubspot_contact_and_deal_webhooks_become_canonical_events() {
    let h = Hooks::start().await;
    let a = post_hubspot(&h, HUBSPOT_DOC_BODY, now_ms()).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["status"], "accepted");

    let changes = r#"[{"eventId":1713946541,"subscriptionId":2281234,"portalId":62515,"appId":54321,"occurredAt":1718000000000,"subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":5101,"propertyName":"email","propertyValue":"Jane.Doe@Acme.io","changeSource":"CRM_UI","sourceId":"userId:45678"},
        {"eventId":77,"subscriptionId":2281236,"portalId":62515,"appId":54321,"occurredAt":1718000000000,"subscriptionType":"deal.propertyChange","attemptNumber":0,"objectId":9001,"propertyName":"dealstage","propertyValue":"contractsent","changeSource":"CRM_UI"}]"#;
    let a = post_hubspot(&h, changes, now_ms()).await;
    assert_eq!(a.status, 200, "{a:?}");

    let events = h.events("hubspot").await;
    assert_eq!(events.len(), 3);
    let created = &events[0];
    assert_eq!(created.event_type.as_str(), "lead.created");
    assert_eq!(created.external_id.as_deref(), Some("62515:1"));
    assert!(has_ref(created, "hubspot", "contact", "123"));
    assert_eq!(created.occurred_at.timestamp_millis(), 1_564_113_600_000);
    assert_eq!(data_str(created, "vendor_event"), "contact.creation");
    // Only this element of the batch is kept as its raw payload.
    let raw: Value = serde_json::from_str(&created.raw.body).unwrap();
    assert_eq!(raw["eventId"], 1);
    assert_eq!(created.raw.content_type, "application/json");
    assert!(created.ip_hash.is_some());

    let updated = events
        .iter()
        .find(|e| e.event_type.as_str() == "contact.updated")
        .unwrap();
    assert_eq!(email(updated), Some("jane.doe@acme.io"));
    assert_eq!(updated.contact.domain.as_deref(), Some("acme.io"));
    assert_eq!(updated.external_id.as_deref(), Some("62515:1713946541"));
    assert_eq!(updated.changes.len(), 1);
    assert_eq!(updated.changes[0].field, "email");
    assert_eq!(updated.changes[0].value, "Jane.Doe@Acme.io");
    assert_eq!(
        updated.changes[0].previous, None,
        "HubSpot sends no previous values"
    );

    let stage = events
        .iter()
        .find(|e| e.event_type.as_str() == "deal.stage_changed")
        .unwrap();
    assert!(has_ref(stage, "hubspot", "deal", "9001"));
    assert_eq!(data_str(stage, "stage"), "contractsent");
    assert_eq!(stage.changes[0].field, "dealstage");
    for e in &events {
        h.assert_routed(e).await;
    }
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"leadrelay_ingest_total{origin="source:hubspot",outcome="accepted"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn hubspot_refuses_bad_signatures_stale_timestamps_and_malformed_json() {
    let h = Hooks::start().await;
    let url = format!("{PUBLIC}{HUBSPOT_PATH}");

    // Signed with another secret.
    let ts = now_ms().to_string();
    let forged = STANDARD.encode(hmac_sha256(
        "not-the-secret",
        format!("POST{url}{HUBSPOT_DOC_BODY}{ts}").as_bytes(),
    ));
    let a = h
        .post(
            HUBSPOT_PATH,
            &[
                ("x-hubspot-signature-v3", &forged),
                ("x-hubspot-request-timestamp", &ts),
            ],
            HUBSPOT_DOC_BODY,
        )
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 0).await;

    // Signed for one body, another sent.
    let mut headers = hubspot_headers(&url, HUBSPOT_DOC_BODY, now_ms());
    headers.push(("content-type".into(), "application/json".into()));
    let tampered = HUBSPOT_DOC_BODY.replace("123", "124");
    let a = h
        .post_owned(HUBSPOT_PATH, &headers, tampered.into_bytes())
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 0).await;

    // Signed for another URL (HubSpot signs the exact URI it calls).
    let elsewhere = hubspot_headers(
        "https://elsewhere.example.com/v1/hooks/hubspot",
        HUBSPOT_DOC_BODY,
        now_ms(),
    );
    let a = h
        .post_owned(HUBSPOT_PATH, &elsewhere, HUBSPOT_DOC_BODY.into())
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 0).await;

    // No signature at all.
    let a = h.post(HUBSPOT_PATH, &[], HUBSPOT_DOC_BODY).await;
    assert_refused(&h, &a, 401, "unauthorized", 0).await;

    // Correctly signed, ten minutes ago: outside the five-minute window.
    let a = post_hubspot(&h, HUBSPOT_DOC_BODY, now_ms() - 600_000).await;
    assert_refused(&h, &a, 401, "stale_timestamp", 0).await;

    // Authentic but not JSON.
    let a = post_hubspot(&h, "[{\"eventId\": ", now_ms()).await;
    assert_refused(&h, &a, 400, "malformed_payload", 0).await;
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON")
    );

    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"leadrelay_hook_auth_failures_total{source="hubspot"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"leadrelay_ingest_total{origin="source:hubspot",outcome="stale_timestamp"} 1"#
        ),
        "{metrics}"
    );
}

fn hubspot_batch(first_id: u64, n: u64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"eventId": first_id + i, "subscriptionId": 1, "portalId": 62515, "appId": 54321,
                   "occurredAt": 1_718_000_000_000i64, "subscriptionType": "contact.propertyChange",
                   "attemptNumber": 0, "objectId": 500 + i, "propertyName": "email",
                   "propertyValue": format!("person{i}@batch.example")})
        })
        .collect()
}

#[tokio::test]
async fn a_hubspot_batch_of_100_is_stored_whole_once_or_not_at_all() {
    let h = Hooks::start().await;
    let batch = hubspot_batch(1000, 100);
    let body = serde_json::to_string(&batch).unwrap();
    let a = post_hubspot(&h, &body, now_ms()).await;
    assert_eq!(a.status, 200, "{a:?}");
    let events = h.events("hubspot").await;
    assert_eq!(events.len(), 100);
    let mut ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e.external_id.as_deref())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    assert!(
        events
            .iter()
            .all(|e| e.received_at == events[0].received_at)
    );
    assert!(
        events
            .iter()
            .any(|e| email(e) == Some("person99@batch.example"))
    );
    for e in &events {
        h.assert_routed(e).await;
    }

    // HubSpot retries the whole batch (attemptNumber 1): nothing new.
    let retry: Vec<Value> = batch
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e["attemptNumber"] = json!(1);
            e
        })
        .collect();
    let a = post_hubspot(&h, &serde_json::to_string(&retry).unwrap(), now_ms()).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(h.events("hubspot").await.len(), 100);

    // A new batch with one unparseable element is refused as a whole.
    let mut bad = hubspot_batch(5000, 100);
    bad[57] = json!("not an event");
    let a = post_hubspot(&h, &serde_json::to_string(&bad).unwrap(), now_ms()).await;
    assert_refused(&h, &a, 400, "malformed_payload", 100).await;
    assert!(a.body.contains("event 57"), "{}", a.body);

    // An empty batch is HubSpot's URL test: 200, nothing stored.
    let a = post_hubspot(&h, "[]", now_ms()).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(h.total_events().await, 100);
}

// --- Calendly ---

#[tokio::test]
async fn calendly_bookings_and_cancellations() {
    let h = Hooks::start().await;
    let created = fixture("calendly_invitee_created.json");
    let t = Utc::now().timestamp();
    let a = h
        .post(
            "/v1/hooks/calendly",
            &[(
                "calendly-webhook-signature",
                &calendly_signature(&created, t),
            )],
            created.as_str(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let canceled = fixture("calendly_invitee_canceled.json");
    let a = h
        .post(
            "/v1/hooks/calendly",
            &[(
                "calendly-webhook-signature",
                &calendly_signature(&canceled, t),
            )],
            canceled.as_str(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");

    let events = h.events("calendly").await;
    assert_eq!(events.len(), 2);
    let booked = &events[0];
    assert_eq!(booked.event_type.as_str(), "meeting.booked");
    assert_eq!(email(booked), Some("test@example.com"));
    assert_eq!(booked.contact.first_name.as_deref(), Some("John"));
    assert_eq!(
        booked.contact.phone.as_ref().map(|p| p.as_str()),
        Some("+14155550123")
    );
    assert!(has_ref(
        booked,
        "calendly",
        "invitee",
        "https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2/invitees/AAAAAAAAAAAAAAAA"
    ));
    assert_eq!(data_str(booked, "meeting_name"), "15 Minute Meeting");
    // Calendly's UTM tracking becomes the event's attribution.
    assert_eq!(booked.attribution.utm_source.as_deref(), Some("linkedin"));
    assert_eq!(booked.attribution.utm_campaign.as_deref(), Some("spring"));
    assert!(
        booked
            .external_id
            .as_deref()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(events[1].event_type.as_str(), "meeting.canceled");
    assert_eq!(data_str(&events[1], "cancel_reason"), "Double booked");
    for e in &events {
        h.assert_routed(e).await;
    }

    // Calendly retries with a new timestamp: stored once.
    let a = h
        .post(
            "/v1/hooks/calendly",
            &[(
                "calendly-webhook-signature",
                &calendly_signature(&created, t + 30),
            )],
            created.as_str(),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(h.events("calendly").await.len(), 2);

    // Outside the configured three-minute window, correctly signed.
    let a = h
        .post(
            "/v1/hooks/calendly",
            &[(
                "calendly-webhook-signature",
                &calendly_signature(&created, t - 240),
            )],
            created.as_str(),
        )
        .await;
    assert_refused(&h, &a, 401, "stale_timestamp", 2).await;

    // A signature that is not Calendly's.
    let forged = format!("t={t},v1={}", "ab".repeat(32));
    let a = h
        .post(
            "/v1/hooks/calendly",
            &[("calendly-webhook-signature", &forged)],
            created.as_str(),
        )
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 2).await;

    // Authentic, but cut short.
    let broken = &created[..created.len() / 2];
    let a = h
        .post(
            "/v1/hooks/calendly",
            &[("calendly-webhook-signature", &calendly_signature(broken, t))],
            broken,
        )
        .await;
    assert_refused(&h, &a, 400, "malformed_payload", 2).await;

    // An empty body, signed: a ping.
    let a = h
        .post(
            "/v1/hooks/calendly",
            &[("calendly-webhook-signature", &calendly_signature("", t))],
            "",
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(h.total_events().await, 2);
}

// --- Typeform ---

#[tokio::test]
async fn typeform_responses_are_form_submissions() {
    let h = Hooks::start().await;
    let body = fixture("typeform_form_response.json");
    let a = h
        .post(
            "/v1/hooks/typeform",
            &[("typeform-signature", &typeform_signature(&body))],
            body.as_str(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let events = h.events("typeform").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.event_type.as_str(), "form.submitted");
    assert_eq!(e.external_id.as_deref(), Some("01HZXQ8R3V8K9W2N4M6P7T5Y1A"));
    assert_eq!(email(e), Some("laura@example.com"));
    assert_eq!(e.contact.company.as_deref(), Some("Acme"));
    assert!(has_ref(e, "typeform", "form", "lT4Z3j"));
    assert_eq!(e.data["answers"]["team_size"], "11-50");
    // Hidden fields carry the UTM parameters.
    assert_eq!(e.attribution.utm_source.as_deref(), Some("newsletter"));
    h.assert_routed(e).await;

    // Typeform retries: the same event_id, stored once.
    let a = h
        .post(
            "/v1/hooks/typeform",
            &[("typeform-signature", &typeform_signature(&body))],
            body.as_str(),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(h.events("typeform").await.len(), 1);

    // Hex instead of Typeform's base64: not its signature.
    let hex_sig = format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret("TYPEFORM_SECRET"), body.as_bytes()))
    );
    let a = h
        .post(
            "/v1/hooks/typeform",
            &[("typeform-signature", &hex_sig)],
            body.as_str(),
        )
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 1).await;

    // A content type Typeform never sends.
    let a = h
        .post(
            "/v1/hooks/typeform",
            &[
                ("typeform-signature", &typeform_signature("<a/>")),
                ("content-type", "text/xml"),
            ],
            "<a/>",
        )
        .await;
    assert_refused(&h, &a, 415, "unsupported_media_type", 1).await;
}

// --- Salesloft ---

#[tokio::test]
async fn salesloft_people_and_email_updates() {
    let h = Hooks::start().await;
    let person = fixture("salesloft_person.json");
    let a = h
        .post(
            "/v1/hooks/salesloft",
            &[
                ("x-salesloft-event", "person_created"),
                ("x-salesloft-signature", &salesloft_signature(&person)),
            ],
            person.as_str(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let email_body = fixture("salesloft_email.json");
    for _ in 0..2 {
        // The second is Salesloft retrying the same delivery.
        let a = h
            .post(
                "/v1/hooks/salesloft",
                &[
                    ("x-salesloft-event", "email_updated"),
                    ("x-salesloft-signature", &salesloft_signature(&email_body)),
                ],
                email_body.as_str(),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    let events = h.events("salesloft").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].event_type.as_str(), "lead.created");
    assert_eq!(email(&events[0]), Some("steve.rogers@avengers.com"));
    assert_eq!(events[0].contact.company.as_deref(), Some("Avengers"));
    assert!(has_ref(&events[0], "salesloft", "person", "1"));
    assert_eq!(events[1].event_type.as_str(), "reply.received");
    assert!(has_ref(&events[1], "salesloft", "email", "2"));
    // Digests of what identifies each event: the retry above matched it.
    assert!(events.iter().all(|e| {
        e.external_id
            .as_deref()
            .is_some_and(|x| x.starts_with("sha256:"))
    }));
    for e in &events {
        h.assert_routed(e).await;
    }

    // Signed with another key (HMAC-SHA256 instead of Salesloft's SHA-1 also fails).
    let sha256 = hex::encode(hmac_sha256(
        secret("SALESLOFT_CALLBACK_TOKEN"),
        person.as_bytes(),
    ));
    let a = h
        .post(
            "/v1/hooks/salesloft",
            &[
                ("x-salesloft-event", "person_created"),
                ("x-salesloft-signature", &sha256),
            ],
            person.as_str(),
        )
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 2).await;
}

// --- Pipedrive ---

#[tokio::test]
async fn pipedrive_changes_keep_fields_and_previous_values() {
    let h = Hooks::start().await;
    let auth = basic("pipedrive", secret("PIPEDRIVE_HOOK_PASSWORD"));
    for name in [
        "pipedrive_v2_person_change.json",
        "pipedrive_v2_deal_stage.json",
    ] {
        let a = h
            .post(
                "/v1/hooks/pipedrive",
                &[("authorization", &auth)],
                fixture(name),
            )
            .await;
        assert_eq!(a.status, 200, "{name}: {a:?}");
    }
    let events = h.events("pipedrive").await;
    assert_eq!(events.len(), 2);
    let person = &events[0];
    assert_eq!(person.event_type.as_str(), "contact.updated");
    assert_eq!(
        person.external_id.as_deref(),
        Some("7c1f5e2a-9b3d-4e8f-a6c2-1d4b8e9f0a37")
    );
    assert_eq!(email(person), Some("anna.schmidt@kunde.de"));
    assert!(has_ref(person, "pipedrive", "person", "12"));
    let title = person
        .changes
        .iter()
        .find(|c| c.field == "job_title")
        .expect("job_title change");
    assert_eq!(title.value, "Head of Sales");
    assert_eq!(title.previous, Some(json!("Sales Manager")));

    let deal = &events[1];
    assert_eq!(deal.event_type.as_str(), "deal.stage_changed");
    assert!(has_ref(deal, "pipedrive", "deal", "1"));
    let stage = deal
        .changes
        .iter()
        .find(|c| c.field == "stage_id")
        .expect("stage_id change");
    assert_eq!(
        (&stage.value, &stage.previous),
        (&json!(3), &Some(json!(2)))
    );
    for e in &events {
        h.assert_routed(e).await;
    }

    let wrong = basic("pipedrive", "battery staple");
    let a = h
        .post(
            "/v1/hooks/pipedrive",
            &[("authorization", &wrong)],
            fixture("pipedrive_v2_person_change.json"),
        )
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 2).await;
    let a = h
        .post(
            "/v1/hooks/pipedrive",
            &[],
            fixture("pipedrive_v2_person_change.json"),
        )
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 2).await;
    let a = h
        .post(
            "/v1/hooks/pipedrive",
            &[("authorization", &auth)],
            "{\"meta\": ",
        )
        .await;
    assert_refused(&h, &a, 400, "malformed_payload", 2).await;
}

// --- Salesforce outbound messages ---

const SF_PATH: &str = "/v1/hooks/salesforce?token=sf-token-1";

async fn post_soap(h: &Hooks, path: &str, body: &str) -> Answer {
    h.post(
        path,
        &[
            ("content-type", "text/xml; charset=utf-8"),
            ("soapaction", "\"\""),
        ],
        body,
    )
    .await
}

#[tokio::test]
async fn salesforce_outbound_messages_are_acknowledged_with_soap() {
    let h = Hooks::start().await;
    let body = fixture("salesforce_outbound_contact.xml");
    let a = post_soap(&h, SF_PATH, &body).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.content_type.starts_with("text/xml"), "{a:?}");
    assert!(
        a.body.contains("<Ack>true</Ack>") && a.body.contains("notificationsResponse"),
        "{}",
        a.body
    );
    let events = h.events("salesforce").await;
    assert_eq!(events.len(), 2);
    let contact = &events[0];
    assert_eq!(contact.event_type.as_str(), "contact.updated");
    assert_eq!(contact.external_id.as_deref(), Some("04l000000000001AAA"));
    assert_eq!(email(contact), Some("rose.gonzalez@edge.com"));
    assert!(has_ref(
        contact,
        "salesforce",
        "contact",
        "003000000000001AAA"
    ));
    assert!(
        contact
            .changes
            .iter()
            .any(|c| c.field == "Title" && c.value == "SVP, Procurement" && c.previous.is_none())
    );
    assert!(contact.raw.content_type.starts_with("text/xml"));
    assert!(contact.raw.body.contains("<soapenv:Envelope"));
    let opportunity = &events[1];
    assert_eq!(opportunity.event_type.as_str(), "deal.stage_changed");
    assert_eq!(data_str(opportunity, "stage"), "Negotiation/Review");
    assert!(opportunity.changes.iter().any(|c| c.field == "StageName"));
    for e in &events {
        h.assert_routed(e).await;
    }

    // Salesforce resends until it gets its Ack: stored once, acknowledged again.
    let a = post_soap(&h, SF_PATH, &body).await;
    assert!(
        a.status == 200 && a.body.contains("<Ack>true</Ack>"),
        "{a:?}"
    );
    assert_eq!(h.events("salesforce").await.len(), 2);

    let a = post_soap(&h, "/v1/hooks/salesforce?token=nope", &body).await;
    assert_refused(&h, &a, 401, "unauthorized", 2).await;
    let a = post_soap(&h, "/v1/hooks/salesforce", &body).await;
    assert_refused(&h, &a, 401, "unauthorized", 2).await;
    let other_org = body.replace("00D000000000062EAA", "00D000000000063EAA");
    let a = post_soap(&h, SF_PATH, &other_org).await;
    assert_refused(&h, &a, 401, "unauthorized", 2).await;
    let a = post_soap(&h, SF_PATH, "<soapenv:Envelope><soapenv:Body>").await;
    assert_refused(&h, &a, 400, "malformed_payload", 2).await;
    // External entities are never expanded.
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><Envelope><Body><notifications><OrganizationId>&e;</OrganizationId></notifications></Body></Envelope>"#;
    let a = post_soap(&h, SF_PATH, xxe).await;
    assert_refused(&h, &a, 400, "malformed_payload", 2).await;

    // A message without notifications is answered with the Ack and stores nothing.
    let empty = r#"<Envelope><Body><notifications><OrganizationId>00D000000000062EAA</OrganizationId></notifications></Body></Envelope>"#;
    let a = post_soap(&h, SF_PATH, empty).await;
    assert!(
        a.status == 200 && a.body.contains("<Ack>true</Ack>"),
        "{a:?}"
    );
    assert_eq!(h.total_events().await, 2);

    // Beyond the source's 128 KiB limit.
    let huge = body.replace(
        "<sf:LeadSource>",
        &format!(
            "<sf:Description>{}</sf:Description><sf:LeadSource>",
            "x".repeat(140 * 1024)
        ),
    );
    let a = post_soap(&h, SF_PATH, &huge).await;
    assert_refused(&h, &a, 413, "body_too_large", 2).await;
}

// --- Smartlead ---

fn smartlead_reply() -> String {
    json!({
        "webhook_id": 94, "webhook_name": "leadrelay", "sl_email_lead_id": "2077",
        "sl_email_lead_map_id": "4455", "sl_lead_email": "David.Carroll@Client.com",
        "webhook_url": "https://leads.example.com/v1/hooks/smartlead?token=sl-token",
        "stats_id": "9b0f5d6e-stats", "stats_thread_id": "t-1",
        "event_type": "EMAIL_REPLY", "time_replied": "2023-09-25T17:29:11.618881+00:00",
        "event_timestamp": "2023-09-25T17:29:11.618881+00:00", "from_email": "sdr@ourco.com",
        "to_email": "david.carroll@client.com", "to_name": "David Carroll", "subject": "Re: OR",
        "campaign_id": 111, "campaign_name": "OR Tracker", "campaign_status": "ACTIVE", "sequence_number": 1,
        "sent_message": {"message_id": "<sent-1@ourco.com>", "html": "<p>Hi</p>", "text": "Hi", "time": "2023-09-25T10:00:00Z"},
        "reply_message": {"message_id": "<reply-1@client.com>", "html": "<p>Yes</p>", "text": "Yes, let's talk", "time": "2023-09-25T17:29:11Z"},
        "client_id": 111, "app_url": "https://app.smartlead.ai/app/master-inbox?x=1",
        "secret_key": "e0207d40-84ef-4ad6-89eb-7dbff8c0138d", "description": "",
        "metadata": {"webhook_created_at": "2023-09-01T00:00:00Z"}
    })
    .to_string()
}

#[tokio::test]
async fn smartlead_replies_with_signature_body_secret_and_token() {
    let h = Hooks::start().await;
    let path = "/v1/hooks/smartlead?token=sl-token";
    let body = smartlead_reply();
    let a = h
        .post(
            path,
            &[
                ("x-smartlead-signature", &smartlead_signature(&body)),
                ("x-request-id", "req-7d1c"),
            ],
            body.as_str(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let events = h.events("smartlead").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(email(e), Some("david.carroll@client.com"));
    assert!(has_ref(e, "smartlead", "lead", "2077") && has_ref(e, "smartlead", "campaign", "111"));
    assert_eq!(data_str(e, "reply_text"), "Yes, let's talk");
    // Smartlead's X-Request-Id is the event's id.
    assert_eq!(e.external_id.as_deref(), Some("req-7d1c"));
    assert!(!e.data.contains_key("secret_key"));
    h.assert_routed(e).await;

    let a = h
        .post(
            path,
            &[("x-smartlead-signature", "sha256=00ff")],
            body.as_str(),
        )
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 1).await;
    let wrong_secret = body.replace("e0207d40-84ef-4ad6-89eb-7dbff8c0138d", "guess");
    let a = h
        .post(
            path,
            &[("x-smartlead-signature", &smartlead_signature(&wrong_secret))],
            wrong_secret.as_str(),
        )
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 1).await;
    let a = h
        .post(
            "/v1/hooks/smartlead?token=sl-tokem",
            &[("x-smartlead-signature", &smartlead_signature(&body))],
            body.as_str(),
        )
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 1).await;
}

// --- Token-authenticated vendors ---

#[tokio::test]
async fn lemlist_activities_and_custom_events() {
    let h = Hooks::start().await;
    let replied = json!({
        "_id": "act_7yWvQzN3kPq2", "type": "emailsReplied", "isFirst": true,
        "createdAt": "2024-06-10T06:13:20.000Z", "teamId": "tea_1", "campaignId": "cam_A1",
        "campaignName": "Founders Q2", "sequenceId": "seq_1", "sequenceStep": 1, "leadId": "lea_9",
        "leadEmail": "Marie@Startup.fr", "leadFirstName": "Marie", "leadLastName": "Curie",
        "leadCompanyName": "Startup SAS", "sendUserEmail": "sdr@ourco.com",
        "text": "Oui, avec plaisir", "secret": "hook-secret"
    })
    .to_string();
    let path = "/v1/hooks/lemlist?token=lem-token";
    for _ in 0..2 {
        let a = h.post(path, &[], replied.as_str()).await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    // An activity with no canonical meaning is kept as `custom`, not refused.
    let interested = replied
        .replace("emailsReplied", "emailsInterested")
        .replace("act_7yWvQzN3kPq2", "act_8");
    let a = h.post(path, &[], interested).await;
    assert_eq!(a.status, 200, "{a:?}");

    let events = h.events("lemlist").await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event_type.as_str(), "reply.received");
    assert_eq!(events[0].external_id.as_deref(), Some("act_7yWvQzN3kPq2"));
    assert_eq!(email(&events[0]), Some("marie@startup.fr"));
    assert!(has_ref(&events[0], "lemlist", "campaign", "cam_A1"));
    assert_eq!(events[1].event_type.as_str(), "custom");
    assert_eq!(data_str(&events[1], "vendor_event"), "emailsInterested");
    for e in &events {
        h.assert_routed(e).await;
    }

    let a = h
        .post(path, &[], replied.replace("hook-secret", "other"))
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 2).await;
    let a = h.post("/v1/hooks/lemlist", &[], replied.as_str()).await;
    assert_refused(&h, &a, 401, "unauthorized", 2).await;
}

#[tokio::test]
async fn mailshake_pushes_name_their_event_in_the_url() {
    let h = Hooks::start().await;
    let push =
        r#"{"resource_url": "https://api.mailshake.com/2017-04-01/push/resolve?id=c0f8e6b2"}"#;
    let path = "/v1/hooks/mailshake?token=ms-secret&event=Replied";
    for _ in 0..2 {
        let a = h.post(path, &[], push).await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    let events = h.events("mailshake").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(
        data_str(e, "resource_url"),
        "https://api.mailshake.com/2017-04-01/push/resolve?id=c0f8e6b2"
    );
    assert!(e.external_id.as_deref().unwrap().starts_with("sha256:"));
    assert!(
        e.contact.is_empty(),
        "pushes carry no contact until resolved"
    );
    h.assert_routed(e).await;

    // The token as a header works too; a wrong one does not.
    let opened = push.replace("c0f8e6b2", "d1e9f7c3");
    let a = h
        .post(
            "/v1/hooks/mailshake?event=Opened",
            &[("x-leadrelay-token", "ms-secret")],
            opened.as_str(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        h.events("mailshake").await[1].event_type.as_str(),
        "email.opened"
    );
    let a = h
        .post(
            "/v1/hooks/mailshake?event=Opened",
            &[("x-leadrelay-token", "ms-secreT")],
            opened.as_str(),
        )
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 2).await;
}

#[tokio::test]
async fn replyio_events_carry_contact_and_sequence() {
    let h = Hooks::start().await;
    let body = json!({
        "event": {"date": "2024-06-10T06:13:20.123Z", "id": "550e8400-e29b-41d4-a716-446655440000",
                  "type": "email_replied", "user_id": 1001, "team_id": 77, "subscription_id": 12},
        "contact_fields": {"id": 12345, "email": "John.Doe@Example.com", "first_name": "John", "last_name": "Doe",
                           "title": "CEO", "company": "Example Corp", "phone": "+1 212 555 0199"},
        "sequence_fields": {"id": 67890, "name": "Outbound Q2", "step_number": 2},
        "reply_reason": "EmailDetected", "email_subject": "Re: quick idea"
    })
    .to_string();
    let a = h
        .post("/v1/hooks/replyio?token=rp-token", &[], body.as_str())
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let events = h.events("replyio").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(
        e.external_id.as_deref(),
        Some("550e8400-e29b-41d4-a716-446655440000")
    );
    assert_eq!(email(e), Some("john.doe@example.com"));
    assert_eq!(e.contact.domain.as_deref(), Some("example.com"));
    assert!(has_ref(e, "replyio", "sequence", "67890"));
    h.assert_routed(e).await;

    let a = h
        .post("/v1/hooks/replyio?token=rp", &[], body.as_str())
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 1).await;
    let a = h
        .post("/v1/hooks/replyio?token=rp-token", &[], "{\"event\": {")
        .await;
    assert_refused(&h, &a, 400, "malformed_payload", 1).await;
}

/// Reply.io's current event names ("Webhook events" page): each maps, and
/// an `email_unsubscribed` withdraws consent like `contact_opted_out`.
#[tokio::test]
async fn replyio_current_event_names_are_canonical_and_unsubscribes_withdraw_consent() {
    let h = Hooks::start().await;
    let names = [
        ("email_unsubscribed", "unsubscribed"),
        ("meeting_booked", "meeting.booked"),
        ("meeting_cancelled", "meeting.canceled"),
        ("link_clicked", "email.clicked"),
        ("sequence_completed", "sequence.completed"),
    ];
    for (i, (name, _)) in names.iter().enumerate() {
        let body = json!({
            "event": {"date": "2026-04-21T09:30:00.000Z", "id": format!("4c1b9e74-5ac3-4b0f-9a60-2a37a9b4a2d{i}"),
                      "type": name, "user_id": 1234, "team_id": 100, "subscription_id": 42},
            "contact_fields": {"id": 12345, "email": "prospect@example.com", "first_name": "Test", "last_name": "Prospect"},
            "sequence_fields": {"id": 67890, "name": "Outbound Q2", "step_number": 2}
        })
        .to_string();
        let a = h
            .post("/v1/hooks/replyio?token=rp-token", &[], body.as_str())
            .await;
        assert_eq!(a.status, 200, "{name}: {a:?}");
    }
    let events = h.events("replyio").await;
    assert_eq!(events.len(), names.len());
    for (e, (name, expected)) in events.iter().zip(names) {
        assert_eq!(e.event_type.as_str(), expected, "{name}");
        assert_eq!(email(e), Some("prospect@example.com"), "{name}");
    }
    let unsubscribe = &events[0];
    assert!(
        !unsubscribe.consent.is_empty() && unsubscribe.consent.iter().all(|c| !c.granted),
        "{:?}",
        unsubscribe.consent
    );
}

#[tokio::test]
async fn woodpecker_arrays_become_one_event_per_prospect() {
    let h = Hooks::start().await;
    let batch = json!([
        {"prospect": {"id": 301, "email": "Ola@Firma.pl", "first_name": "Ola", "last_name": "Nowak",
                      "company": "Firma", "title": "CTO", "campaign_id": 9, "campaign_name": "PL outbound",
                      "status": "REPLIED"},
         "timestamp": "2024-06-10T06:13:20+0200"},
        {"prospect": {"id": 302, "email": "not-an-email", "first_name": "Jan", "campaign_id": 9},
         "timestamp": "2024-06-10T06:14:00+0200"}
    ])
    .to_string();
    let path = "/v1/hooks/woodpecker?token=wp-token&event=prospect_replied";
    let a = h.post(path, &[], batch.as_str()).await;
    assert_eq!(a.status, 200, "{a:?}");
    let events = h.events("woodpecker").await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event_type.as_str(), "reply.received");
    assert_eq!(email(&events[0]), Some("ola@firma.pl"));
    assert!(has_ref(&events[0], "woodpecker", "prospect", "301"));
    assert!(events[0].external_id.is_some());
    assert_ne!(events[0].external_id, events[1].external_id);
    // Each event keeps its own element of the array.
    let raw: Value = serde_json::from_str(&events[1].raw.body).unwrap();
    assert_eq!(raw["prospect"]["id"], 302);
    // The vendor is authoritative about what happened: a bad address keeps the event.
    assert_eq!(email(&events[1]), None);
    assert_eq!(data_str(&events[1], "invalid_email"), "not-an-email");
    for e in &events {
        h.assert_routed(e).await;
    }
    let a = h.post(path, &[], batch.as_str()).await;
    assert_eq!(a.status, 200);
    assert_eq!(h.events("woodpecker").await.len(), 2);
    // An empty array: a ping.
    let a = h.post(path, &[], "[]").await;
    assert_eq!(a.status, 200);
    assert_eq!(h.total_events().await, 2);
}

/// One entry of Woodpecker's documented `prospect_replied` payload, for
/// prospect `n` (developers.woodpecker.co/docs/webhooks/prospect-replied).
fn woodpecker_reply(n: usize) -> Value {
    let mut entry: Value = serde_json::from_str(
        r##"{"method": "prospect_replied",
        "prospect": {"id": 1234567890, "email": "erlich@bachmanity.com", "first_name": "Erlich", "last_name": "Bachman",
          "company": "Bachmanity", "website": "https://bachmanity.com", "linkedin_url": "https://linkedin.com/erlich-bachman",
          "tags": "#VISIONARY", "title": "CEO", "phone": "+1 987-654-321", "address": "700 Welch Road",
          "city": "Palo Alto", "country": "United States",
          "snippet1": "You are running a successful startup incubator Bachmanity",
          "snippet2": "", "snippet3": "", "snippet4": "", "snippet5": "", "snippet6": "", "snippet7": "", "snippet8": "",
          "snippet9": "", "snippet10": "", "snippet11": "", "snippet12": "", "snippet13": "", "snippet14": "", "snippet15": "",
          "snippet_labels": {"my snippet label": "You are running a successful startup incubator Bachmanity"},
          "industry": "IT", "state": "California", "last_contacted": "2025-03-20T14:32:34+0100", "status": "REPLIED",
          "in_campaign": 2, "emails_sent": 3, "imported": "saasinamerica.csv", "interested": "INTERESTED",
          "campaign_id": 123456, "campaign_name": "SaaS in America", "campaign_email": "jared.dunn@piedpiper.com",
          "campaign_emails": ["jared.dunn@piedpiper.com", "richard.hendricks@piedpiper.com", "jian@bachmanity.com"],
          "campaign_email_sent": 2, "step": 2, "step_type": "EMAIL", "followup_after": "2025-03-22T00:00:00+0100"},
        "email": {"id": 191867492, "mail_id": 123321, "subject": "Reply message subject", "sender": "Erlich from Bachmanity",
          "email": "erlich@bachmanity.com", "date": "2025-03-21T20:47:40+0100", "message": "reply content"},
        "timestamp": "2025-03-21T20:47:47+0100", "firm_id": 456789}"##,
    )
    .unwrap();
    let address = format!("erlich{n}@bachmanity.com");
    entry["prospect"]["id"] = json!(1_234_567_890 + n as u64);
    entry["prospect"]["email"] = json!(address);
    entry["email"]["id"] = json!(191_867_492 + n as u64);
    entry["email"]["email"] = json!(address);
    entry
}

/// Woodpecker batches up to 100 events per request: a full documented batch
/// (well over the server's 64 KiB default) is stored whole under the
/// Woodpecker default limit; a body beyond that limit is 413 and stores nothing.
#[tokio::test]
async fn a_full_woodpecker_batch_of_100_replies_is_stored_whole() {
    let h = Hooks::start().await;
    let batch = Value::Array((0..100).map(woodpecker_reply).collect()).to_string();
    assert!(batch.len() > 64 * 1024, "{} bytes", batch.len());
    // The subscription URL without &event=: each entry names its event.
    let path = "/v1/hooks/woodpecker?token=wp-token";
    let a = h.post(path, &[], batch.as_str()).await;
    assert_eq!(a.status, 200, "{a:?}");
    let events = h.events("woodpecker").await;
    assert_eq!(events.len(), 100);
    let mut addresses: Vec<&str> = events.iter().filter_map(email).collect();
    addresses.sort_unstable();
    addresses.dedup();
    assert_eq!(addresses.len(), 100);
    for e in &events {
        assert_eq!(e.event_type.as_str(), "reply.received");
        assert_eq!(data_str(e, "reply_text"), "reply content");
    }
    h.assert_routed(&events[99]).await;

    // Beyond Woodpecker's 2 MiB default: refused whole.
    let mut big = woodpecker_reply(100);
    big["email"]["message"] = json!("x".repeat(2 * 1024 * 1024));
    let big = Value::Array(vec![big]).to_string();
    let a = h.post(path, &[], big.as_str()).await;
    assert_refused(&h, &a, 413, "body_too_large", 100).await;
}

#[tokio::test]
async fn apollo_contact_updates_keep_previous_values() {
    let h = Hooks::start().await;
    let body = json!({
        "id": "wh_evt_1", "event": "contact.updated", "timestamp": "2024-06-10T06:13:20Z",
        "data": {"contact": {"id": "66a1f0c2", "first_name": "Tim", "last_name": "Zheng", "title": "Founder",
                             "email": "tim@apollo-demo.io",
                             "organization": {"id": "5e66b6381e05b4008c8331b8", "name": "Apollo", "primary_domain": "apollo.io"}},
                 "changes": {"title": {"from": "CEO", "to": "Founder"}}}
    })
    .to_string();
    let a = h
        .post("/v1/hooks/apollo?token=ap-token", &[], body.as_str())
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let events = h.events("apollo").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.event_type.as_str(), "contact.updated");
    assert_eq!(e.external_id.as_deref(), Some("wh_evt_1"));
    assert_eq!(email(e), Some("tim@apollo-demo.io"));
    assert!(has_ref(e, "apollo", "contact", "66a1f0c2"));
    assert_eq!(e.changes[0].field, "title");
    assert_eq!(e.changes[0].previous, Some(json!("CEO")));
    h.assert_routed(e).await;
    let a = h.post("/v1/hooks/apollo", &[], body.as_str()).await;
    assert_refused(&h, &a, 401, "unauthorized", 1).await;
}

/// Mixmax's documented "Received" body (Mixmax Webhook event structure):
/// Test User2 is the Mixmax user, Test User3 the prospect who replied.
fn mixmax_received() -> Value {
    json!({
        "userId": "T3STUS3R1D",
        "to": [{"email": "engtestuser2@mixmax.com", "name": "Test User2"}],
        "cc": [], "bcc": [],
        "from": {"email": "engtestuser3@mixmax.com", "name": "Test User3"},
        "subject": "Re: Please join me ",
        "sent": 1481745135403i64,
        "id": "16ac8cc837d1b304",
        "threadId": "16008541212e8a32",
        "rfc822Id": "<CAHfzPxo09WCKrtyPRM9g+60z9d+0cHffwyT0vf867Pp=ehrfQ@mail.gmail.com>",
        "receivedBy": {"email": "engtestuser2@mixmax.com", "name": "Test User2"},
        "plaintextBody": "this is the body of a received email\r\n",
        "eventName": "message:received"
    })
}

#[tokio::test]
async fn mixmax_rule_webhooks() {
    let h = Hooks::start().await;
    // The URL a rule's webhook action posts to, without &event=: the body names it.
    let path = "/v1/hooks/mixmax?token=mm-token";
    let body = mixmax_received().to_string();
    for _ in 0..2 {
        let a = h.post(path, &[], body.as_str()).await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    let events = h.events("mixmax").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(data_str(e, "vendor_event"), "message:received");
    // The prospect who replied, never the salesperson it was sent to.
    assert_eq!(email(e), Some("engtestuser3@mixmax.com"));
    assert_eq!(e.contact.last_name.as_deref(), Some("User3"));
    assert!(has_ref(e, "mixmax", "user", "T3STUS3R1D"));
    assert!(e.external_id.is_some());
    h.assert_routed(e).await;

    // The documented "Opened" body: the recipient.
    let opened = json!({
        "message": {"to": [{"name": "Test User3", "email": "engtestuser3@mixmax.com"}], "cc": [], "bcc": [],
                    "subject": "Please join me "},
        "userId": "T3STUS3R1D", "messageId": "VyfSqbL195O0z8VK6L",
        "recipientEmail": "engtestuser3@mixmax.com", "recipientName": "Test User3",
        "timestamp": 1481746916300i64, "ipAddress": "::ffff:127.0.0.1", "eventName": "opened"
    })
    .to_string();
    let a = h.post(path, &[], opened.as_str()).await;
    assert_eq!(a.status, 200, "{a:?}");
    let events = h.events("mixmax").await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event_type.as_str(), "email.opened");
    assert_eq!(email(&events[1]), Some("engtestuser3@mixmax.com"));

    let a = h
        .post("/v1/hooks/mixmax?token=nope", &[], body.as_str())
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 2).await;
}

#[tokio::test]
async fn groove_sales_are_custom_events_from_form_posts() {
    let h = Hooks::start().await;
    let form = "event=sale&transaction_id=GS-99812&product_id=771&product_name=Pro+plan&amount=97.00&currency=USD&buyer_email=Kim%40Shop.io&buyer_first_name=Kim&buyer_last_name=Lee";
    let a = h
        .post(
            "/v1/hooks/groove?token=gr-token",
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let events = h.events("groove").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.event_type.as_str(), "custom");
    assert_eq!(data_str(e, "vendor_event"), "sale");
    assert_eq!(email(e), Some("kim@shop.io"));
    assert!(has_ref(e, "groove", "transaction", "GS-99812"));
    assert!(e.external_id.is_some());
    assert_eq!(e.raw.content_type, "application/x-www-form-urlencoded");
    h.assert_routed(e).await;
    let a = h
        .post(
            "/v1/hooks/groove",
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 1).await;
}

#[tokio::test]
async fn qwilr_accepted_pages_are_proposals() {
    let h = Hooks::start().await;
    let body = json!({"event": "pageAccepted", "timestamp": "2024-06-10T06:13:20Z",
           "page": {"id": "65f1c0d2e3", "name": "Acme — Annual plan", "url": "https://acme.qwilr.com/Annual-plan-abc"},
           "acceptor": {"name": "Dana Scully", "email": "Dana@Acme.com", "company": "Acme"}})
    .to_string();
    let a = h
        .post("/v1/hooks/qwilr?token=qw-token", &[], body.as_str())
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let events = h.events("qwilr").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.event_type.as_str(), "proposal.accepted");
    assert_eq!(email(e), Some("dana@acme.com"));
    assert!(has_ref(e, "qwilr", "page", "65f1c0d2e3"));
    assert!(e.external_id.is_some());
    h.assert_routed(e).await;
    let a = h.post("/v1/hooks/qwilr?token=qw", &[], body.as_str()).await;
    assert_refused(&h, &a, 401, "unauthorized", 1).await;
}

#[tokio::test]
async fn generic_sources_map_your_own_json() {
    let h = Hooks::start().await;
    // Zapier, token in a header, a batch of rows.
    let rows = json!({"rows": [
        {"id": "zap_1", "event": "new_lead", "created_at": "2024-06-10T06:13:20Z",
         "contact": {"email": "Sam@Corp.com", "first": "Sam", "phone": "(415) 555-0123"}, "plan": "pro"},
        {"id": "zap_2", "event": "trial_extended", "contact": {"email": "ann@corp.com"}}
    ]})
    .to_string();
    let a = h
        .post(
            "/v1/hooks/zapier",
            &[("x-leadrelay-token", "zap-token")],
            rows.as_str(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let events = h.events("zapier").await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event_type.as_str(), "lead.created");
    assert_eq!(events[0].external_id.as_deref(), Some("zap_1"));
    assert_eq!(email(&events[0]), Some("sam@corp.com"));
    assert_eq!(
        events[0].contact.phone.as_ref().map(|p| p.as_str()),
        Some("+14155550123")
    );
    assert_eq!(data_str(&events[0], "plan"), "pro");
    // An event name the mapping does not know is stored as `custom`.
    assert_eq!(events[1].event_type.as_str(), "custom");
    assert_eq!(data_str(&events[1], "vendor_event"), "trial_extended");
    for e in &events {
        h.assert_routed(e).await;
    }
    let a = h.post("/v1/hooks/zapier", &[], rows.as_str()).await;
    assert_refused(&h, &a, 401, "unauthorized", 2).await;

    // Make, signed: sha256=<base64 HMAC-SHA256(key, body)> in X-Make-Signature.
    let body = r#"{"email": "Pat@Make.example", "company": "Make Co"}"#;
    let sig = format!(
        "sha256={}",
        STANDARD.encode(hmac_sha256(secret("MAKE_SIGNING_KEY"), body.as_bytes()))
    );
    let a = h
        .post("/v1/hooks/make", &[("x-make-signature", &sig)], body)
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let events = h.events("make").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type.as_str(), "lead.created");
    assert_eq!(email(&events[0]), Some("pat@make.example"));
    assert!(
        events[0]
            .external_id
            .as_deref()
            .unwrap()
            .starts_with("sha256:")
    );
    h.assert_routed(&events[0]).await;
    let a = h
        .post(
            "/v1/hooks/make",
            &[("x-make-signature", "sha256=AAAA")],
            body,
        )
        .await;
    assert_refused(&h, &a, 401, "unauthorized", 3).await;
}

// --- The endpoint itself ---

#[tokio::test]
async fn unknown_sources_oversized_bodies_and_other_methods() {
    let h = Hooks::start().await;
    let a = h.post("/v1/hooks/nope", &[], "{}").await;
    assert_refused(&h, &a, 404, "unknown_source", 0).await;

    // Larger than Reply.io's default limit (1 MiB: one event with its email
    // text): refused before authentication.
    let limit = leadrelay_sources::default_max_body_bytes("replyio").unwrap();
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(limit));
    let a = h
        .post("/v1/hooks/replyio?token=rp-token", &[], big.as_str())
        .await;
    assert_refused(&h, &a, 413, "body_too_large", 0).await;
    // Also when the sender does not declare a length (chunked).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..limit / 1024 + 8)
        .map(|_| Ok(vec![b' '; 1024]))
        .collect();
    let resp = h
        .app
        .client
        .post(h.app.url("/v1/hooks/replyio?token=rp-token"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(h.total_events().await, 0);

    let resp = h
        .app
        .client
        .get(h.app.url("/v1/hooks/replyio"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);

    // A token source's blank body is a ping (what vendors send to test a URL).
    let a = h.post("/v1/hooks/replyio?token=rp-token", &[], "").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(h.total_events().await, 0);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"leadrelay_ingest_total{origin="source:replyio",outcome="ping"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_event_store_it_once() {
    let h = Hooks::start().await;
    let body = fixture("typeform_form_response.json");
    let headers = vec![("typeform-signature".to_string(), typeform_signature(&body))];
    let posts =
        (0..8).map(|_| h.post_owned("/v1/hooks/typeform", &headers, body.clone().into_bytes()));
    for a in futures::future::join_all(posts).await {
        assert_eq!(a.status, 200, "{a:?}");
    }
    assert_eq!(h.events("typeform").await.len(), 1);
    let metrics = h.metrics().await;
    assert!(
        metrics
            .contains(r#"leadrelay_ingest_total{origin="source:typeform",outcome="duplicate"} 7"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_storage_failure_answers_503_so_the_vendor_retries() {
    let h = Hooks::start().await;
    // Stop the store's writer: nothing can be committed any more.
    h.app.store.close().await;
    let a = post_hubspot(&h, HUBSPOT_DOC_BODY, now_ms()).await;
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.error_code(), "storage_unavailable");
    assert!(a.retry_after.is_some());
    // Salesforce gets no Ack, so it keeps the message and resends it.
    let a = post_soap(&h, SF_PATH, &fixture("salesforce_outbound_contact.xml")).await;
    assert_eq!(a.status, 503, "{a:?}");
    assert!(!a.body.contains("<Ack>"));
}

#[tokio::test]
async fn vendor_events_are_delivered_like_any_other() {
    let h = Hooks::start().await;
    let a = post_hubspot(&h, HUBSPOT_DOC_BODY, now_ms()).await;
    assert_eq!(a.status, 200);
    let event = h.events("hubspot").await.remove(0);
    let store = h.app.store.clone();
    eventually("the backup delivery", Duration::from_secs(10), || {
        let store = store.clone();
        async move {
            let ds = store.deliveries_for_event(event.id).await.ok()?;
            ds.iter()
                .any(|d| d.state == leadrelay::store::DeliveryState::Delivered)
                .then_some(())
        }
    })
    .await;
}

/// A source whose secret is not in the environment stops start-up with the
/// key at fault, and its line (checked here on the loader).
#[test]
fn a_missing_secret_is_a_configuration_error_with_its_line() {
    let text = "[sources.cal]\nkind = \"calendly\"\nsigning_key_env = \"CAL_KEY_NOT_SET\"\n\n[sources.old]\nkind = \"yesware\"\n";
    let err = leadrelay::config::load_str(text, "t.toml", &|_| None).unwrap_err();
    let rendered: Vec<String> = err.problems.iter().map(|p| p.render("t.toml")).collect();
    assert!(
        rendered.iter().any(|r| r.starts_with("t.toml:3:1: error: sources.cal.signing_key_env: environment variable CAL_KEY_NOT_SET is not set")),
        "{rendered:?}"
    );
    assert!(
        rendered.iter().any(|r| r
            .starts_with("t.toml:6:1: error: sources.old.kind: unknown source kind \"yesware\"")),
        "{rendered:?}"
    );

    // HubSpot signs the URL it calls: without server.public_url, check warns.
    let text = "[sources.hs]\nkind = \"hubspot\"\nclient_secret_env = \"HS\"\n";
    let loaded =
        leadrelay::config::load_str(text, "t.toml", &|k| (k == "HS").then(|| "s".to_string()))
            .unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.path == "sources.hs" && w.message.contains("server.public_url")),
        "{:?}",
        loaded.warnings
    );
}

// --- `leadrelay sources …` through the real binary ---

/// Runs the binary with exactly these env vars added.
fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadrelay"))
        .args(args)
        .env_remove("LEADRELAY_CONFIG")
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .output()
        .expect("run leadrelay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

async fn run_cli_async(args: Vec<String>, env: Vec<(String, String)>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_cli(&args, &env)
    })
    .await
    .expect("cli task")
}

#[test]
fn sources_kinds_describes_every_kind() {
    let (code, out, err) = run_cli(&["sources", "kinds"], &[]);
    assert_eq!(code, 0, "{err}");
    for kind in leadrelay_sources::kinds() {
        assert!(
            out.contains(&format!("{kind} — ")),
            "{kind} missing:\n{out}"
        );
    }
    assert!(out.contains("X-HubSpot-Signature-v3"), "{out}");
    assert!(out.contains("yesware — no webhooks"), "{out}");
    assert!(
        out.contains("docs: Mixmax API: /rules (webhooks): https://developer.mixmax.com"),
        "{out}"
    );
    assert!(out.contains("salesforce_outbound_message"), "{out}");

    let (code, out, _) = run_cli(&["sources", "kinds", "--json"], &[]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    let kinds = v["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 16);
    let calendly = kinds.iter().find(|k| k["kind"] == "calendly").unwrap();
    assert_eq!(calendly["connect"], true);
    assert!(calendly["setup"].as_str().unwrap().contains("signing"));
    let woodpecker = kinds.iter().find(|k| k["kind"] == "woodpecker").unwrap();
    assert_eq!(woodpecker["max_body_bytes"], 2 * 1024 * 1024);
    assert!(
        woodpecker["docs"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://developers.woodpecker.co/"),
        "{woodpecker}"
    );
    assert_eq!(v["without_webhooks"][0]["vendor"], "yesware");
}

#[test]
fn sources_secret_prints_a_fresh_token_and_where_it_goes() {
    let (code, first, err) = run_cli(&["sources", "secret"], &[]);
    assert_eq!(code, 0, "{err}");
    let token = first.trim();
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(
        err.contains("token_env") && err.contains("environment"),
        "{err}"
    );
    let (_, second, _) = run_cli(&["sources", "secret"], &[]);
    assert_ne!(first, second);
}

const CLI_SOURCES: &str = r#"
[server]
public_url = "https://leads.example.com/"

[sources.hubspot]
kind = "hubspot"
client_secret_env = "HUBSPOT_CLIENT_SECRET"

[sources.mailshake]
kind = "mailshake"
token_env = "MAILSHAKE_PUSH_TOKEN"

[sources.salesforce]
kind = "salesforce_outbound_message"
organization_id = "00D000000000062"
token_env = "SF_OM_TOKEN"
"#;

#[test]
fn sources_list_gives_the_url_to_paste_into_each_vendor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leadrelay.toml");
    std::fs::write(&path, CLI_SOURCES).unwrap();
    let cfg = path.to_str().unwrap();
    let env = [
        ("HUBSPOT_CLIENT_SECRET", "hs-secret"),
        ("MAILSHAKE_PUSH_TOKEN", "ms-secret"),
        ("SF_OM_TOKEN", "sf-token-1"),
    ];
    let (code, out, err) = run_cli(&["sources", "list", "--config", cfg], &env);
    assert_eq!(code, 0, "{err}");
    for want in [
        "https://leads.example.com/v1/hooks/hubspot",
        "https://leads.example.com/v1/hooks/mailshake?token=${MAILSHAKE_PUSH_TOKEN}",
        "https://leads.example.com/v1/hooks/salesforce?token=${SF_OM_TOKEN}",
        "developer",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(
        !out.contains("ms-secret") && !out.contains("sf-token-1"),
        "{out}"
    );

    let (code, out, err) = run_cli(
        &[
            "sources",
            "list",
            "--json",
            "--offline",
            "--show-secrets",
            "--public-url",
            "https://hooks.other.example",
            "--config",
            cfg,
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    let mailshake = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "mailshake")
        .unwrap();
    assert_eq!(
        mailshake["url"],
        "https://hooks.other.example/v1/hooks/mailshake?token=ms-secret"
    );
    assert_eq!(mailshake["kind"], "mailshake");
    assert!(mailshake["remote"].is_null());

    // Without the secrets, the configuration does not load: every missing one is named.
    let (code, _, err) = run_cli(&["sources", "list", "--config", cfg], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("sources.hubspot.client_secret_env")
            && err.contains("HUBSPOT_CLIENT_SECRET is not set")
            && err.contains("sources.mailshake.token_env"),
        "{err}"
    );
    let (code, _, err) = run_cli(
        &[
            "sources",
            "list",
            "--public-url",
            "ftp://x",
            "--config",
            cfg,
        ],
        &env,
    );
    assert_eq!(code, 1);
    assert!(err.contains("not an http(s) URL"), "{err}");
}

/// A local lemlist `/api/hooks` that enforces lemlist's auth (HTTP Basic
/// with an empty user and the API key as password) and required fields.
mod fake_lemlist {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use leadrelay_fakes::common::FakeServer;
    use serde_json::{Value, json};

    pub const API_KEY: &str = "lemlist-api-key";

    #[derive(Clone, Default)]
    pub struct Hooks(pub Arc<Mutex<Vec<Value>>>);

    fn authorized(headers: &HeaderMap) -> bool {
        let expected = format!("Basic {}", STANDARD.encode(format!(":{API_KEY}")));
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == expected)
    }

    fn unauthorized() -> Response {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "Invalid API key"})),
        )
            .into_response()
    }

    async fn create(State(hooks): State<Hooks>, headers: HeaderMap, body: String) -> Response {
        if !authorized(&headers) {
            return unauthorized();
        }
        let Ok(mut hook) = serde_json::from_str::<Value>(&body) else {
            return (StatusCode::BAD_REQUEST, "invalid JSON").into_response();
        };
        if !hook["targetUrl"].is_string() {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"message": "targetUrl is required"})),
            )
                .into_response();
        }
        let mut all = hooks.0.lock().unwrap();
        hook["_id"] = json!(format!("hoo_{}", all.len() + 1));
        hook["createdAt"] = json!("2024-06-10T06:13:20.000Z");
        all.push(hook.clone());
        axum::Json(hook).into_response()
    }

    async fn list(State(hooks): State<Hooks>, headers: HeaderMap) -> Response {
        if !authorized(&headers) {
            return unauthorized();
        }
        let all = hooks.0.lock().unwrap().clone();
        // lemlist lists hooks without their secrets.
        let listed: Vec<Value> = all
            .into_iter()
            .map(|mut h| {
                if let Some(o) = h.as_object_mut() {
                    o.remove("secret");
                }
                h
            })
            .collect();
        axum::Json(Value::Array(listed)).into_response()
    }

    pub async fn start() -> (FakeServer, Hooks) {
        let hooks = Hooks::default();
        let router = Router::new()
            .route("/api/hooks", get(list).post(create))
            .with_state(hooks.clone());
        let server = FakeServer::start(router, "127.0.0.1:0")
            .await
            .expect("fake lemlist");
        (server, hooks)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_connect_registers_our_webhook_through_the_vendor_api() {
    let (server, hooks) = fake_lemlist::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leadrelay.toml");
    std::fs::write(
        &path,
        format!(
            r#"{CLI_SOURCES}
[sources.lemlist]
kind = "lemlist"
token_env = "LEMLIST_TOKEN"
secret_env = "LEMLIST_SECRET"
api_key_env = "LEMLIST_API_KEY"
api_base_url = "{}/api"
"#,
            server.base_url()
        ),
    )
    .unwrap();
    let cfg = path.to_str().unwrap().to_string();
    let env = |api_key: &str| -> Vec<(String, String)> {
        [
            ("HUBSPOT_CLIENT_SECRET", "hs-secret"),
            ("MAILSHAKE_PUSH_TOKEN", "ms-secret"),
            ("SF_OM_TOKEN", "sf-token-1"),
            ("LEMLIST_TOKEN", "lem-token"),
            ("LEMLIST_SECRET", "hook-secret"),
            ("LEMLIST_API_KEY", api_key),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let args = |extra: &[&str]| -> Vec<String> {
        ["sources"]
            .iter()
            .chain(extra)
            .chain(["--config", cfg.as_str()].iter())
            .map(|s| s.to_string())
            .collect()
    };

    let (code, out, err) = run_cli_async(
        args(&[
            "connect",
            "lemlist",
            "--public-url",
            "https://leads.example.com",
        ]),
        env(fake_lemlist::API_KEY),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("registered 1 webhook(s) for lemlist (lemlist)")
            && out.contains("hoo_1")
            && out.contains("token=***"),
        "{out}"
    );
    assert!(!out.contains("lem-token"), "the token was printed: {out}");
    let registered = hooks.0.lock().unwrap().clone();
    assert_eq!(registered.len(), 1);
    assert_eq!(
        registered[0]["targetUrl"],
        "https://leads.example.com/v1/hooks/lemlist?token=lem-token"
    );
    assert_eq!(registered[0]["secret"], "hook-secret");

    // `list` shows it, as lemlist reports it.
    let (code, out, err) =
        run_cli_async(args(&["list", "--json"]), env(fake_lemlist::API_KEY)).await;
    assert_eq!(code, 0, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    let lemlist = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "lemlist")
        .unwrap();
    assert_eq!(lemlist["remote"][0]["id"], "hoo_1");
    assert_eq!(
        lemlist["remote"][0]["url"],
        "https://leads.example.com/v1/hooks/lemlist?token=***"
    );
    let (code, out, _) = run_cli_async(args(&["list"]), env(fake_lemlist::API_KEY)).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("lemlist (lemlist): 1 webhook(s) registered at the vendor"),
        "{out}"
    );

    // The vendor's refusal is reported, and nothing is registered.
    let (code, _, err) = run_cli_async(
        args(&[
            "connect",
            "lemlist",
            "--public-url",
            "https://leads.example.com",
        ]),
        env("wrong-key"),
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 401"), "{err}");
    assert_eq!(hooks.0.lock().unwrap().len(), 1);

    // Kinds without a subscription API say where their webhooks are made.
    let (code, _, err) = run_cli_async(
        args(&[
            "connect",
            "hubspot",
            "--public-url",
            "https://leads.example.com",
        ]),
        env(fake_lemlist::API_KEY),
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("developer portal"), "{err}");
    let (code, _, err) = run_cli_async(
        args(&[
            "connect",
            "nope",
            "--public-url",
            "https://leads.example.com",
        ]),
        env(fake_lemlist::API_KEY),
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("no source named \"nope\""), "{err}");
}
