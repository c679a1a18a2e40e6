//! Consent and privacy end to end: withdrawals (an `unsubscribed` event, the
//! admin API, the CLI) stop deliveries still waiting for the person at their
//! next send attempt; nothing reaches the receiver.

use std::process::Command;
use std::time::Duration;

use leadrelay::auth::generate_key;
use leadrelay::store::{DeliveryState, Role};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Receiver, TestApp, eventually};

const WAIT: Duration = Duration::from_secs(20);

/// A `contact` form with `crm` and `marketing_email` consent boxes, an
/// `unsubscribe` form, and a newsletter webhook needing `marketing_email`
/// that receives leads only.
fn config(receiver: &Receiver, extra: &str) -> String {
    format!(
        r#"
[forms.contact]
[forms.contact.fields.email]
type = "email"
required = true
[forms.contact.fields.first_name]
type = "text"
[forms.contact.consent.crm]
field = "consent"
version = "v1"
[forms.contact.consent.marketing_email]
field = "newsletter"
version = "news-2026"

[forms.unsubscribe]
event_type = "unsubscribed"
[forms.unsubscribe.fields.email]
type = "email"
required = true
[forms.unsubscribe.fields.purposes]
type = "text"

[delivery]
poll_interval = "100ms"
[delivery.retry]
base = "50ms"
cap = "200ms"
# Retries every ~200 ms must not run out while a test holds a delivery
# failing (50 attempts took ~10 s: a loaded machine dead-lettered it).
max_attempts = 100000
[delivery.circuit]
probe_interval = "100ms"
max_probe_interval = "200ms"

[destinations.news]
connector = "webhook"
url = "{url}"
allow_private_networks = true
purposes = ["marketing_email"]
timeout = "2s"

[[routes]]
name = "leads"
events = ["lead.created"]
destinations = ["news"]
{extra}
"#,
        url = receiver.url()
    )
}

async fn admin_key(app: &TestApp) -> String {
    let (secret, record) = generate_key("dpo", Role::Admin);
    app.store.create_api_key(record).await.unwrap();
    secret
}

async fn api(app: &TestApp, key: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let req = match body {
        Some(b) => app.client.post(app.url(path)).json(&b),
        None => app.client.get(app.url(path)),
    };
    let r = req.bearer_auth(key).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn submit(app: &TestApp, form: &str, body: Value) -> Uuid {
    let r = app.post_json(&format!("/v1/forms/{form}"), &body).await;
    let status = r.status();
    let b: Value = r.json().await.unwrap();
    assert_eq!(status, 202, "{b}");
    b["id"].as_str().unwrap().parse().unwrap()
}

fn newsletter_lead(email: &str) -> Value {
    json!({"email": email, "first_name": "Test", "consent": "yes", "newsletter": "yes"})
}

fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leadrelay"))
        .args(args)
        .args(["--storage-url", url])
        .env_remove("LEADRELAY_CONFIG")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

async fn delivery_of(app: &TestApp, event: Uuid) -> leadrelay::store::Delivery {
    let mut ds = app.store.deliveries_for_event(event).await.unwrap();
    assert_eq!(ds.len(), 1);
    ds.pop().unwrap()
}

#[tokio::test]
async fn withdrawals_through_the_api_and_the_cli_skip_waiting_deliveries() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&config(&r, "")).await;
    let key = admin_key(&app).await;

    // The destination is paused: the leads wait in the outbox.
    let (s, _) = api(
        &app,
        &key,
        "/api/v1/destinations/news/pause",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200);
    let by_api = submit(&app, "contact", newsletter_lead("ann@example.com")).await;
    let by_cli = submit(&app, "contact", newsletter_lead("cli@example.com")).await;
    let kept = submit(&app, "contact", newsletter_lead("kept@example.com")).await;

    let (s, w) = api(
        &app,
        &key,
        "/api/v1/privacy/withdraw",
        Some(json!({"email": "Ann@Example.com", "purposes": ["marketing_email"], "reason": "asked by phone"})),
    )
    .await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["purposes"], json!(["marketing_email"]));
    let contact = app
        .store
        .find_contact_by_email("ann@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w["contact_id"], contact.id.to_string());
    assert!(!contact.consent["marketing_email"].granted);
    assert!(contact.consent["crm"].granted, "only the named purpose");
    let ev = app
        .store
        .get_event(w["event_id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.event_type.as_str(), "unsubscribed");
    assert_eq!(ev.origin.name, "privacy");

    let (ok, out, err) = cli(
        &app.db.url,
        &[
            "privacy",
            "withdraw",
            "cli@example.com",
            "--purpose",
            "marketing_email",
        ],
    );
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["purposes"], json!(["marketing_email"]));
    let (ok, _, err) = cli(
        &app.db.url,
        &[
            "privacy",
            "withdraw",
            "cli@example.com",
            "--purpose",
            "Bad Name",
        ],
    );
    assert!(!ok && err.contains("--purpose"), "{err}");

    let (s, _) = api(
        &app,
        &key,
        "/api/v1/destinations/news/resume",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200);
    eventually("the kept lead is delivered", WAIT, || async {
        (delivery_of(&app, kept).await.state == DeliveryState::Delivered).then_some(())
    })
    .await;
    for event in [by_api, by_cli] {
        let d = eventually("the withdrawn lead is skipped", WAIT, || async {
            let d = delivery_of(&app, event).await;
            (d.state == DeliveryState::Skipped).then_some(d)
        })
        .await;
        let reason = d.reason.unwrap_or_default();
        assert!(
            reason.starts_with("consent") && reason.contains("marketing_email"),
            "{reason}"
        );
    }
    let received: Vec<String> = r.delivered().iter().map(|h| h.json().to_string()).collect();
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(received[0].contains("kept@example.com"));

    // Audited without the address; bad input is a precise 422.
    let (_, audit) = api(&app, &key, "/api/v1/privacy/audit", None).await;
    let withdrawals: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "withdraw")
        .collect();
    assert_eq!(withdrawals.len(), 2);
    assert!(withdrawals.iter().any(|a| a["actor"] == "key:dpo"
        && a["reason"] == "asked by phone"
        && a["details"]["purposes"] == json!(["marketing_email"])));
    assert!(!audit.to_string().contains("ann@"));
    let (s, b) = api(
        &app,
        &key,
        "/api/v1/privacy/withdraw",
        Some(json!({"email": "ann@example.com", "purposes": ["ok", "Not Valid"]})),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(b["error"]["fields"][0]["field"], "purposes[1]");
    let (s, b) = api(
        &app,
        &key,
        "/api/v1/privacy/withdraw",
        Some(json!({"email": "nobody"})),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(b["error"]["fields"][0]["field"], "email");
    // An address no contact can have (not a valid email): audited only.
    let (s, b) = api(
        &app,
        &key,
        "/api/v1/privacy/withdraw",
        Some(json!({"email": "someone@localhost"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["event_id"].is_null() && b["contact_id"].is_null());
    assert_eq!(b["purposes"], json!(["marketing_email", "sms"]));

    // Documented in the OpenAPI document, purposes with their pattern.
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/v1/privacy/withdraw"]["post"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["PurposeName"]["pattern"],
        "^[a-z][a-z0-9_]{0,63}$"
    );
}

#[tokio::test]
async fn an_unsubscribed_event_withdraws_the_default_purposes_from_retried_deliveries() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&config(&r, "")).await;

    // The receiver fails: the lead is scheduled for a retry.
    r.fail_next(503, "down", 10_000);
    let lead = submit(&app, "contact", newsletter_lead("bo@example.com")).await;
    eventually("the lead is retried", WAIT, || async {
        let d = delivery_of(&app, lead).await;
        (d.attempts >= 1 && d.state.is_active()).then_some(())
    })
    .await;

    // The person unsubscribes (no purposes named: the defaults).
    let unsub = submit(&app, "unsubscribe", json!({"email": "bo@example.com"})).await;
    let ev = app.store.get_event(unsub).await.unwrap().unwrap();
    let withdrawn: Vec<&str> = ev
        .consent
        .iter()
        .filter(|c| !c.granted)
        .map(|c| c.purpose.as_str())
        .collect();
    assert_eq!(withdrawn, ["marketing_email", "sms"]);
    let contact = app
        .store
        .find_contact_by_email("bo@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(!contact.consent["marketing_email"].granted);
    assert!(contact.consent["crm"].granted);

    r.faults().clear();
    let d = eventually("the retried lead is skipped", WAIT, || async {
        let d = delivery_of(&app, lead).await;
        (d.state == DeliveryState::Skipped).then_some(d)
    })
    .await;
    assert!(d.reason.unwrap_or_default().starts_with("consent"));
    assert!(r.delivered().is_empty(), "nothing reached the receiver");

    // An unsubscribe naming an invalid purpose is a precise 422.
    let resp = app
        .post_json(
            "/v1/forms/unsubscribe",
            &json!({"email": "bo@example.com", "purposes": "Bad!"}),
        )
        .await;
    assert_eq!(resp.status(), 422);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["error"]["fields"][0]["field"], "purposes");

    // A named purpose withdraws only that one; a later grant wins again.
    submit(
        &app,
        "unsubscribe",
        json!({"email": "bo@example.com", "purposes": "crm"}),
    )
    .await;
    let c = app
        .store
        .find_contact_by_email("bo@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(!c.consent["crm"].granted);
    let again = submit(&app, "contact", newsletter_lead("bo@example.com")).await;
    eventually("a fresh grant is delivered", WAIT, || async {
        (delivery_of(&app, again).await.state == DeliveryState::Delivered).then_some(())
    })
    .await;
}

#[tokio::test]
async fn retention_erases_contacts_without_recent_events_like_an_erase() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&config(&r, "")).await;
    let key = admin_key(&app).await;
    let (s, _) = api(
        &app,
        &key,
        "/api/v1/destinations/news/pause",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200);
    let old = submit(&app, "contact", newsletter_lead("old@example.com")).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cutoff = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let recent = submit(&app, "contact", newsletter_lead("recent@example.com")).await;

    let privacy = leadrelay::privacy::Privacy::new(
        app.store.clone(),
        std::sync::Arc::new(leadrelay::config::Config::default()),
    );
    assert_eq!(privacy.purge_stale_contacts(cutoff).await.unwrap(), 1);
    assert!(
        app.store
            .find_contact_by_email("old@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let ev = app.store.get_event(old).await.unwrap().unwrap();
    assert!(ev.contact.email.is_none() && ev.raw.body.is_empty() && ev.data.is_empty());
    let d = delivery_of(&app, old).await;
    assert_eq!(
        d.state,
        DeliveryState::Skipped,
        "its unsent delivery stopped"
    );
    assert!(
        app.store
            .find_contact_by_email("recent@example.com")
            .await
            .unwrap()
            .is_some()
    );
    let kept = app.store.get_event(recent).await.unwrap().unwrap();
    assert!(kept.contact.email.is_some());
    assert_eq!(
        privacy.purge_stale_contacts(cutoff).await.unwrap(),
        0,
        "nothing left"
    );

    let (_, audit) = api(&app, &key, "/api/v1/privacy/audit", None).await;
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["action"], "erase");
    assert_eq!(items[0]["actor"], "system:retention");
    assert!(
        items[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("retention")
    );
    assert_eq!(items[0]["details"]["event_ids"], json!([old.to_string()]));
}

#[tokio::test]
async fn the_background_job_erases_idle_contacts() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&config(
        &r,
        r#"
[privacy.retention]
contacts = "1s"
interval = "200ms"
"#,
    ))
    .await;
    let lead = submit(&app, "contact", newsletter_lead("idle@example.com")).await;
    eventually("the idle contact is erased", WAIT, || async {
        app.store
            .find_contact_by_email("idle@example.com")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let ev = app.store.get_event(lead).await.unwrap().unwrap();
    assert!(ev.contact.email.is_none());
    let audit = app.store.privacy_audit(None, 10).await.unwrap();
    assert!(audit.iter().any(|a| a.actor == "system:retention"));
}

#[tokio::test]
async fn erase_leaves_no_trace_of_the_person_in_the_database_files() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&crate::support::webhook_config(&receiver.url(), "")).await;
    let key = admin_key(&app).await;
    // The person writes three times (the contact and its indexes are
    // rewritten each time, leaving older versions behind); a neighbour once.
    let person = "quinn.zephyr@erase.example";
    for name in ["Quinnzephyr", "Quinnzephyra", "Quinnzephyrb"] {
        submit(
            &app,
            "contact",
            json!({"email": person, "first_name": name, "consent": "yes"}),
        )
        .await;
    }
    let neighbour = "noor.vantablack@keep.example";
    submit(
        &app,
        "contact",
        json!({"email": neighbour, "first_name": "Noor", "consent": "yes"}),
    )
    .await;
    app.settled("hook", 4, WAIT).await;
    assert!(app.db.contains(person) && app.db.contains("Quinnzephyr"));

    let (s, report) = api(
        &app,
        &key,
        "/api/v1/privacy/erase",
        Some(json!({"email": person, "reason": "erasure request"})),
    )
    .await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["event_ids"].as_array().unwrap().len(), 3, "{report}");
    // Not only unreachable through queries: the bytes are gone from the
    // database file and its write-ahead log (SQLite), or from every table
    // (PostgreSQL, as pg_dump sees it).
    eventually("no trace of the person is left", WAIT, || async {
        (!app.db.contains(person) && !app.db.contains("Quinnzephyr")).then_some(())
    })
    .await;
    assert!(app.db.contains(neighbour), "other people are kept");
}

#[tokio::test]
async fn erase_rewrites_the_file_and_csv_backups_without_the_person() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let toml = format!(
        r#"
[forms.contact]
[forms.contact.fields.email]
type = "email"
required = true
[forms.contact.fields.first_name]
type = "text"

[delivery]
poll_interval = "100ms"

[destinations.backup]
connector = "file"
path = "{b}"
legal_basis = "legitimate_interest"

[destinations.sheet]
connector = "csv"
path = "{b}"
prefix = "sheet"
legal_basis = "legitimate_interest"

[[routes]]
name = "all"
destinations = ["backup", "sheet"]
"#,
        b = backups.display()
    );
    let app = TestApp::builder(&toml).dir(dir).start().await;
    let key = admin_key(&app).await;
    for who in ["jane@example.com", "bob@example.com"] {
        submit(
            &app,
            "contact",
            json!({"email": who, "first_name": "Jo, \"the\"\nfirst"}),
        )
        .await;
    }
    app.settled("backup", 2, WAIT).await;
    app.settled("sheet", 2, WAIT).await;
    // An older, rotated file holds the person too.
    let old = backups.join("leads-2020-01-01.1.jsonl");
    std::fs::write(
        &old,
        "{\"data\":{\"contact\":{\"email\":\"Jane@Example.com\"}}}\n{\"data\":{\"contact\":{\"email\":\"bob@example.com\"}}}\n",
    )
    .unwrap();
    let read_all = || {
        let mut all = String::new();
        for e in std::fs::read_dir(&backups).unwrap() {
            let p = e.unwrap().path();
            if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                all.push_str(&std::fs::read_to_string(p).unwrap());
            }
        }
        all
    };
    assert!(read_all().to_lowercase().contains("jane@example.com"));

    let (s, report) = api(
        &app,
        &key,
        "/api/v1/privacy/erase",
        Some(json!({"email": "jane@example.com", "reason": "erasure request"})),
    )
    .await;
    assert_eq!(s, 200, "{report}");
    let files = report["backups"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{report}");
    assert!(
        files
            .iter()
            .all(|f| f["lines_removed"] == 1 && f["error"].is_null())
    );
    assert!(files.iter().any(|f| f["destination"] == "sheet"));
    let after = read_all();
    assert!(
        !after.to_lowercase().contains("jane@example.com"),
        "{after}"
    );
    // JSONL has the address twice (contact and fields), the old file and the CSV once.
    assert_eq!(after.matches("bob@example.com").count(), 4, "{after}");
    let csv_file = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "csv"))
        .unwrap();
    let csv_text = std::fs::read_to_string(&csv_file).unwrap();
    assert!(csv_text.starts_with("Received,"), "the header stays");
    assert_eq!(csv_text.matches("bob@example.com").count(), 1);

    // The backups keep working in the rewritten files.
    submit(&app, "contact", json!({"email": "carl@example.com"})).await;
    app.settled("backup", 3, WAIT).await;
    app.settled("sheet", 3, WAIT).await;
    let after = read_all();
    assert!(after.contains("carl@example.com") && after.contains("bob@example.com"));

    let (_, audit) = api(&app, &key, "/api/v1/privacy/audit", None).await;
    let rec = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "erase_backups")
        .cloned()
        .unwrap();
    assert_eq!(rec["details"]["files"].as_array().unwrap().len(), 3);
    assert_eq!(rec["details"]["erase_audit_id"], report["audit_id"]);
    assert!(!audit.to_string().contains("jane"));
}

/// A form, HubSpot and Pipedrive (the fakes), every lead to both.
fn crm_config(hubspot: &str, pipedrive: &str) -> String {
    format!(
        r#"{form}
[delivery.circuit]
probe_interval = "100ms"
max_probe_interval = "200ms"

[destinations.hubspot]
connector = "hubspot"
base_url = "{hubspot}"
allow_private_networks = true
token_env = "HUBSPOT_ACCESS_TOKEN"
purposes = ["crm"]
timeout = "2s"
# The GDPR delete on the dated API (the other HubSpot tests cover v3).
api_version = "2026-03"

[destinations.pipedrive]
connector = "pipedrive"
base_url = "{pipedrive}"
allow_private_networks = true
token_env = "PIPEDRIVE_API_TOKEN"
purposes = ["crm"]
timeout = "2s"

[[routes]]
name = "crm"
events = ["lead.created"]
destinations = ["hubspot", "pipedrive"]
"#,
        form = crate::support::CRM_FORM
    )
}

#[tokio::test]
async fn erase_queues_erase_requests_that_delete_the_person_in_hubspot_and_pipedrive() {
    use leadrelay_fakes::common::Fault;
    use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig};
    use leadrelay_fakes::pipedrive::{FakePipedrive, PipedriveConfig};

    let hs = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    let pd = FakePipedrive::start(PipedriveConfig::default())
        .await
        .unwrap();
    let app = TestApp::builder(&crm_config(&hs.base_url(), &pd.base_url()))
        .env("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)
        .env("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN)
        .start()
        .await;
    let key = admin_key(&app).await;
    for who in ["jane@acme.io", "keep@acme.io"] {
        submit(
            &app,
            "contact",
            crate::support::full_lead(who, "Jo", "Doe", "Acme", "Hello"),
        )
        .await;
    }
    for d in app.settled("hubspot", 2, WAIT).await {
        assert_eq!(d.state, DeliveryState::Delivered, "{d:?}");
    }
    for d in app.settled("pipedrive", 2, WAIT).await {
        assert_eq!(d.state, DeliveryState::Delivered, "{d:?}");
    }
    let hs_id = hs.contact_by_email("jane@acme.io").expect("in HubSpot").id;
    let pd_id = pd.person_by_email("jane@acme.io").expect("in Pipedrive").id;

    // HubSpot stumbles once: the erase request is retried like any delivery.
    hs.faults().push(
        Fault::Status {
            status: 503,
            body: r#"{"status":"error","message":"unavailable"}"#.into(),
            headers: vec![],
        },
        1,
    );
    let (s, report) = api(
        &app,
        &key,
        "/api/v1/privacy/erase",
        Some(json!({"email": "jane@acme.io", "reason": "erasure request"})),
    )
    .await;
    assert_eq!(s, 200, "{report}");
    let queued = report["remote_erasures"].as_array().unwrap();
    assert_eq!(queued.len(), 2, "{report}");
    let hubspot = queued
        .iter()
        .find(|q| q["destination"] == "hubspot")
        .unwrap();
    assert_eq!(
        hubspot["records"],
        json!([{"object": "contact", "id": hs_id.to_string()}])
    );
    let pipedrive = queued
        .iter()
        .find(|q| q["destination"] == "pipedrive")
        .unwrap();
    assert_eq!(
        pipedrive["records"],
        json!([{"object": "person", "id": pd_id.to_string()}])
    );

    for q in queued {
        let id: Uuid = q["delivery_id"].as_str().unwrap().parse().unwrap();
        let d = eventually("the erase request is delivered", WAIT, || async {
            let d = app.store.get_delivery(id).await.unwrap()?;
            (d.state == DeliveryState::Delivered).then_some(d)
        })
        .await;
        let attempts = app.store.attempts(d.id).await.unwrap();
        assert!(!attempts.is_empty(), "in the attempt log");
        if q["destination"] == "hubspot" {
            assert_eq!(attempts.len(), 2, "503, then the GDPR delete");
            assert!(
                attempts[1]
                    .url
                    .as_deref()
                    .unwrap_or_default()
                    .ends_with("/crm/objects/2026-03/contacts/gdpr-delete")
            );
        }
        // The request carries no personal data.
        let ev = app.store.get_event(d.event_id).await.unwrap().unwrap();
        assert!(ev.contact.is_empty());
        assert!(!serde_json::to_string(&ev).unwrap().contains("jane"));
    }
    assert!(hs.contact_by_email("jane@acme.io").is_none());
    assert_eq!(hs.gdpr_deleted_emails(), ["jane@acme.io"]);
    assert!(pd.person_by_email("jane@acme.io").is_none());
    assert!(hs.contact_by_email("keep@acme.io").is_some());
    assert!(pd.person_by_email("keep@acme.io").is_some());

    let (_, audit) = api(&app, &key, "/api/v1/privacy/audit", None).await;
    let remote: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "erase_remote")
        .collect();
    assert_eq!(remote.len(), 2);
    assert!(remote.iter().all(|a| a["actor"] == "key:dpo"
        && a["details"]["erase_audit_id"] == report["audit_id"]
        && a["reason"] == "erasure request"));
    assert!(!audit.to_string().contains("jane"));

    // A second erase finds nothing left to ask the CRMs.
    let (_, again) = api(
        &app,
        &key,
        "/api/v1/privacy/erase",
        Some(json!({"email": "jane@acme.io"})),
    )
    .await;
    assert_eq!(again["remote_erasures"], json!([]));
}

#[tokio::test]
async fn erase_deletes_the_lead_in_salesforce() {
    use leadrelay_fakes::salesforce::{FakeSalesforce, SalesforceConfig, SalesforceConnectedApp};

    let fake = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let toml = format!(
        r#"{form}
[destinations.salesforce]
connector = "salesforce"
login_url = "{base}"
allow_private_networks = true
client_id_env = "SF_CLIENT_ID"
client_secret_env = "SF_CLIENT_SECRET"
refresh_token_env = "SF_REFRESH_TOKEN"
purposes = ["crm"]
timeout = "2s"

[[routes]]
name = "crm"
events = ["lead.created"]
destinations = ["salesforce"]
"#,
        form = crate::support::CRM_FORM,
        base = fake.base_url()
    );
    let app = TestApp::builder(&toml)
        .env("SF_CLIENT_ID", SalesforceConnectedApp::DEFAULT_CLIENT_ID)
        .env(
            "SF_CLIENT_SECRET",
            SalesforceConnectedApp::DEFAULT_CLIENT_SECRET,
        )
        .env("SF_REFRESH_TOKEN", SalesforceConfig::DEFAULT_REFRESH_TOKEN)
        .start()
        .await;
    let key = admin_key(&app).await;
    for who in ["jane@acme.io", "keep@acme.io"] {
        submit(
            &app,
            "contact",
            crate::support::full_lead(who, "Jo", who, "Acme", "Hello"),
        )
        .await;
    }
    for d in app.settled("salesforce", 2, WAIT).await {
        assert_eq!(d.state, DeliveryState::Delivered, "{d:?}");
    }
    let lead_id = fake
        .leads()
        .into_iter()
        .find(|l| l.text("Email") == Some("jane@acme.io"))
        .expect("the lead")
        .id;

    let (s, report) = api(
        &app,
        &key,
        "/api/v1/privacy/erase",
        Some(json!({"email": "jane@acme.io"})),
    )
    .await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(
        report["remote_erasures"][0]["records"],
        json!([{"object": "lead", "id": lead_id}])
    );
    let id: Uuid = report["remote_erasures"][0]["delivery_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    eventually("the erase request is delivered", WAIT, || async {
        let d = app.store.get_delivery(id).await.unwrap()?;
        (d.state == DeliveryState::Delivered).then_some(())
    })
    .await;
    let left: Vec<Option<String>> = fake
        .leads()
        .iter()
        .map(|l| l.text("Email").map(str::to_string))
        .collect();
    assert_eq!(left, [Some("keep@acme.io".to_string())]);
    assert!(fake.requests().entries().iter().any(|r| r.method == "DELETE"
        && r.path.ends_with(&format!("/sobjects/Lead/{lead_id}"))));
}

#[tokio::test]
async fn the_cli_exports_and_erases_a_person_down_to_the_crm() {
    use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig};
    use leadrelay_fakes::pipedrive::{FakePipedrive, PipedriveConfig};

    let hs = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    let pd = FakePipedrive::start(PipedriveConfig::default())
        .await
        .unwrap();
    let toml = crm_config(&hs.base_url(), &pd.base_url());
    let app = TestApp::builder(&toml)
        .env("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)
        .env("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN)
        .start()
        .await;
    submit(
        &app,
        "contact",
        crate::support::full_lead("jane@acme.io", "Jane", "Doe", "Acme", "Hello"),
    )
    .await;
    app.settled("hubspot", 1, WAIT).await;
    app.settled("pipedrive", 1, WAIT).await;
    assert!(hs.contact_by_email("jane@acme.io").is_some());

    let config_path = app.dir.path().join("leadrelay.toml");
    std::fs::write(&config_path, &toml).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_leadrelay"))
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .args(["--storage-url", &app.db.url])
            .env("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)
            .env("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN)
            .env("USER", "dpo")
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = run(&["privacy", "export", "jane@acme.io"]);
    assert!(ok, "{err}");
    let x: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(x["contact"]["data"]["email"], "jane@acme.io");
    assert_eq!(x["events"].as_array().unwrap().len(), 1);
    assert!(x["remote_records"].as_array().unwrap().len() >= 2, "{x}");

    let (ok, _, err) = run(&["privacy", "erase", "jane@acme.io"]);
    assert!(!ok && err.contains("--yes"), "{err}");
    let (ok, out, err) = run(&[
        "privacy",
        "erase",
        "jane@acme.io",
        "--yes",
        "--reason",
        "ticket 42",
    ]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let queued: Vec<&str> = report["remote_erasures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["destination"].as_str().unwrap())
        .collect();
    assert_eq!(queued, ["hubspot", "pipedrive"]);

    // The running server sends the queued requests.
    eventually("the CRMs no longer have the person", WAIT, || async {
        (hs.contact_by_email("jane@acme.io").is_none()
            && pd.person_by_email("jane@acme.io").is_none())
        .then_some(())
    })
    .await;
    let audit = app.store.privacy_audit(None, 20).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        actions,
        ["erase_remote", "erase_remote", "erase", "export"],
        "newest first"
    );
    assert!(audit.iter().all(|a| a.actor == "cli:dpo"));
    assert!(audit[2].reason.as_deref() == Some("ticket 42"));
}

#[tokio::test]
async fn a_vendor_unsubscribe_webhook_stops_waiting_deliveries() {
    let r = Receiver::start().await;
    let app = TestApp::builder(&config(
        &r,
        r#"
[sources.woodpecker]
kind = "woodpecker"
token_env = "WOODPECKER_TOKEN"
"#,
    ))
    .env("WOODPECKER_TOKEN", "wp-token")
    .start()
    .await;
    let key = admin_key(&app).await;
    let (s, _) = api(
        &app,
        &key,
        "/api/v1/destinations/news/pause",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200);
    let lead = submit(&app, "contact", newsletter_lead("ola@firma.pl")).await;

    // Woodpecker reports the prospect blacklisted (an unsubscribe).
    let body = json!([{"prospect": {"id": 301, "email": "Ola@Firma.pl", "campaign_id": 9},
                       "timestamp": "2024-06-10T06:13:20+0200"}]);
    let resp = app
        .client
        .post(app.url("/v1/hooks/woodpecker?token=wp-token&event=prospect_blacklisted"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let c = app
        .store
        .find_contact_by_email("ola@firma.pl")
        .await
        .unwrap()
        .unwrap();
    let answer = &c.consent["marketing_email"];
    assert!(!answer.granted);
    assert!(
        answer.recorded_at > chrono::Utc::now() - chrono::Duration::minutes(1),
        "recorded when received, not at the vendor's (older) timestamp"
    );

    let (s, _) = api(
        &app,
        &key,
        "/api/v1/destinations/news/resume",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200);
    let d = eventually("the lead is skipped", WAIT, || async {
        let d = delivery_of(&app, lead).await;
        (d.state == DeliveryState::Skipped).then_some(d)
    })
    .await;
    assert!(d.reason.unwrap_or_default().starts_with("consent"));
    assert!(r.delivered().is_empty());
}

/// One step of a random consent history.
#[derive(Debug, Clone)]
enum Act {
    /// A lead through the form, with its two consent boxes.
    Submit { who: usize, crm: bool, news: bool },
    /// `POST /api/v1/privacy/withdraw` (purposes from `CHOICES`; none: the defaults).
    Withdraw { who: usize, purposes: Vec<usize> },
    /// The `unsubscribe` form (same).
    Unsubscribe { who: usize, purposes: Vec<usize> },
}

const PEOPLE: [&str; 3] = ["p0@example.com", "p1@example.com", "p2@example.com"];
const CHOICES: [&str; 3] = ["crm", "marketing_email", "sms"];

fn act() -> impl proptest::strategy::Strategy<Value = Act> {
    use proptest::prelude::*;
    let purposes = proptest::collection::vec(0..CHOICES.len(), 0..3);
    prop_oneof![
        3 => (0..PEOPLE.len(), any::<bool>(), any::<bool>())
            .prop_map(|(who, crm, news)| Act::Submit { who, crm, news }),
        1 => (0..PEOPLE.len(), purposes.clone())
            .prop_map(|(who, purposes)| Act::Withdraw { who, purposes }),
        1 => (0..PEOPLE.len(), purposes)
            .prop_map(|(who, purposes)| Act::Unsubscribe { who, purposes }),
    ]
}

/// The end-to-end variant of the consent property: random histories of
/// leads, withdrawals and unsubscribes for three people while the
/// destinations are paused; once resumed, each receiver gets exactly the
/// leads of the people whose latest answer grants its purpose.
#[tokio::test]
async fn random_consent_histories_end_to_end() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::default();
    let histories = proptest::collection::vec(act(), 1..10);
    for _ in 0..4 {
        let acts = histories.new_tree(&mut runner).unwrap().current();
        run_history(&acts).await;
    }
}

async fn run_history(acts: &[Act]) {
    let news = Receiver::start().await;
    let crm = Receiver::start().await;
    let extra = format!(
        r#"
[destinations.crmhook]
connector = "webhook"
url = "{}"
allow_private_networks = true
purposes = ["crm"]
timeout = "2s"

[[routes]]
name = "crm"
events = ["lead.created"]
destinations = ["crmhook"]
"#,
        crm.url()
    );
    let app = TestApp::spawn(&config(&news, &extra)).await;
    let key = admin_key(&app).await;
    for d in ["news", "crmhook"] {
        let (s, _) = api(
            &app,
            &key,
            &format!("/api/v1/destinations/{d}/pause"),
            Some(json!({})),
        )
        .await;
        assert_eq!(s, 200);
    }
    // The latest answer per person and purpose, and the leads per person.
    let mut latest: std::collections::HashMap<(usize, &str), bool> = Default::default();
    let mut leads = [0usize; PEOPLE.len()];
    let names = |purposes: &[usize]| -> Vec<&'static str> {
        let mut n: Vec<&str> = purposes.iter().map(|i| CHOICES[*i]).collect();
        n.dedup();
        if n.is_empty() {
            vec!["marketing_email", "sms"]
        } else {
            n
        }
    };
    for a in acts {
        match a {
            Act::Submit { who, crm, news } => {
                let mut body = json!({"email": PEOPLE[*who]});
                if *crm {
                    body["consent"] = json!("yes");
                }
                if *news {
                    body["newsletter"] = json!("yes");
                }
                submit(&app, "contact", body).await;
                latest.insert((*who, "crm"), *crm);
                latest.insert((*who, "marketing_email"), *news);
                leads[*who] += 1;
            }
            Act::Withdraw { who, purposes } => {
                let named: Vec<&str> = purposes.iter().map(|i| CHOICES[*i]).collect();
                let (s, b) = api(
                    &app,
                    &key,
                    "/api/v1/privacy/withdraw",
                    Some(json!({"email": PEOPLE[*who], "purposes": named})),
                )
                .await;
                assert_eq!(s, 200, "{b}");
                for p in names(purposes) {
                    latest.insert((*who, p), false);
                }
            }
            Act::Unsubscribe { who, purposes } => {
                let named: Vec<&str> = purposes.iter().map(|i| CHOICES[*i]).collect();
                submit(
                    &app,
                    "unsubscribe",
                    json!({"email": PEOPLE[*who], "purposes": named.join(",")}),
                )
                .await;
                for p in names(purposes) {
                    latest.insert((*who, p), false);
                }
            }
        }
    }
    let total: usize = leads.iter().sum();
    for d in ["news", "crmhook"] {
        let (s, _) = api(
            &app,
            &key,
            &format!("/api/v1/destinations/{d}/resume"),
            Some(json!({})),
        )
        .await;
        assert_eq!(s, 200);
        app.settled(d, total, WAIT).await;
    }
    for (receiver, purpose) in [(&news, "marketing_email"), (&crm, "crm")] {
        for (who, email) in PEOPLE.iter().enumerate() {
            let got = receiver
                .delivered()
                .iter()
                .filter(|h| h.json()["data"]["contact"]["email"] == *email)
                .count();
            let granted = latest.get(&(who, purpose)).copied().unwrap_or(false);
            let want = if granted { leads[who] } else { 0 };
            assert_eq!(
                got, want,
                "{email} on the {purpose} destination after {acts:#?}"
            );
        }
    }
}
