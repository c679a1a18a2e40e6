//! `leadrelay simulate` through the real binary: routes with their
//! reasons, the consent decision and mapped payload per destination, a
//! mapping error naming its field, the API's validation errors, `--json`,
//! and that nothing is stored or sent — on both backends when it reads the
//! stored golden contact.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use leadrelay::store::{ContactFilter, DeliveryFilter};
use serde_json::{Value, json};

use crate::binary::bin;
use crate::support::{Receiver, TestApp, eventually};

const WAIT: Duration = Duration::from_secs(20);

/// A form, a webhook needing `crm`, one needing `marketing_email`, a
/// HubSpot destination whose mapping needs `data.role`, a file backup, and
/// a conditional route.
fn config(receiver_url: &str, backup: &Path) -> String {
    format!(
        r#"
[forms.contact]
[forms.contact.fields.email]
type = "email"
required = true
[forms.contact.fields.first_name]
type = "text"
[forms.contact.fields.company]
type = "text"
[forms.contact.fields.budget]
type = "number"
[forms.contact.consent.crm]
field = "consent"
version = "v1"
[forms.contact.consent.marketing_email]
field = "news"
version = "v1"

[delivery]
poll_interval = "100ms"

[destinations.hook]
connector = "webhook"
url = "{receiver_url}"
allow_private_networks = true
purposes = ["crm"]

[destinations.news]
connector = "webhook"
url = "{receiver_url}"
allow_private_networks = true
purposes = ["marketing_email"]

[destinations.crm]
connector = "hubspot"
token_env = "SIM_HUBSPOT_TOKEN"
base_url = "{receiver_url}"
purposes = ["crm"]
[destinations.crm.mapping.contact]
jobtitle = {{ from = "data.role", required = true }}

[destinations.backup]
connector = "file"
path = "{backup}"
legal_basis = "legitimate_interest"

[destinations.sheet]
connector = "csv"
path = "{backup}-csv"
legal_basis = "legitimate_interest"

[[routes]]
name = "all"
destinations = ["hook", "news", "backup", "sheet"]

[[routes]]
name = "big"
when = "data.budget > 1000"
destinations = ["crm"]
"#,
        backup = backup.display()
    )
}

fn run(config: &Path, storage_url: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("simulate")
        .arg("--config")
        .arg(config)
        .args(["--storage-url", storage_url])
        .args(args)
        .env("SIM_HUBSPOT_TOKEN", "pat-test")
        .env_remove("LEADRELAY_CONFIG")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run leadrelay simulate")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn form_data_shows_routes_consent_payloads_and_mapping_errors() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let cfg = dir.path().join("leadrelay.toml");
    std::fs::write(&cfg, config(&receiver.url(), &backup)).unwrap();
    let db = dir.path().join("never.db");
    let url = format!("sqlite://{}", db.display());

    let data = json!({"email": " Jane@Acme.io ", "first_name": "Jane", "company": "Acme", "budget": "5000", "consent": "on"});
    let out = run(
        &cfg,
        &url,
        &["--form", "contact", "--data", &data.to_string()],
    );
    let text = stdout(&out);
    // A mapping error makes the exit status 2.
    assert_eq!(
        out.status.code(),
        Some(2),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("event: lead.created from form:contact"),
        "{text}"
    );
    assert!(text.contains("contact.email: jane@acme.io"), "{text}");
    assert!(text.contains("a new contact would be created"), "{text}");
    assert!(
        text.contains("match    all: type and origin match -> hook, news, backup, sheet"),
        "{text}"
    );
    assert!(
        text.contains("match    big: condition true: data.budget > 1000 -> crm"),
        "{text}"
    );
    assert!(
        text.contains(
            "  hook (webhook) via all\n    consent: allowed (granted: crm)\n    payload:"
        ),
        "{text}"
    );
    assert!(text.contains(r#""email": "jane@acme.io""#), "{text}");
    assert!(
        text.contains(
            "  news (webhook) via all\n    consent: skipped: consent missing for marketing_email"
        ),
        "{text}"
    );
    assert!(
        text.contains("  backup (file) via all\n    consent: allowed (legitimate interest)"),
        "{text}"
    );
    assert!(
        text.contains("  crm (hubspot) via big\n    consent: allowed (granted: crm)\n    mapping error: mapping contact.jobtitle: required but empty"),
        "{text}"
    );
    assert!(
        text.contains(
            "  sheet (csv) via all\n    consent: allowed (legitimate interest)\n    payload:"
        ),
        "{text}"
    );
    assert!(text.contains("scoring: not configured"), "{text}");
    assert!(text.contains("owner routing: not configured"), "{text}");

    // A small budget: the condition fails and says why.
    let data = json!({"email": "jane@acme.io", "budget": 10, "consent": "on"});
    let out = run(
        &cfg,
        &url,
        &["--form", "contact", "--data", &data.to_string()],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("no match big: condition false: data.budget > 1000"),
        "{text}"
    );
    assert!(!text.contains("crm (hubspot)"), "{text}");

    // Nothing was sent, stored or written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.hits().is_empty(), "{:?}", receiver.hits());
    assert!(!db.exists(), "the database file was created");
    assert!(!backup.exists(), "the backup was written");
    assert!(
        !dir.path().join("backup-csv").exists(),
        "the CSV backup was written"
    );
}

#[tokio::test]
async fn validation_errors_are_the_apis_and_json_parses() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("leadrelay.toml");
    std::fs::write(&cfg, config(&receiver.url(), &dir.path().join("b"))).unwrap();
    let url = format!("sqlite://{}/x.db", dir.path().display());

    let out = run(
        &cfg,
        &url,
        &[
            "--form",
            "contact",
            "--data",
            r#"{"email": "nope", "budget": "lots"}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("rejected: the API would answer HTTP 422"),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    assert_eq!(body["error"]["code"], "validation_failed");
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["budget", "email"]);

    // An event file, machine-readable.
    let file = dir.path().join("event.json");
    std::fs::write(
        &file,
        json!({
            "type": "lead.created",
            "form": "contact",
            "contact": {"email": "Sam@Corp.example", "first_name": "Sam"},
            "data": {"budget": 2000, "role": "CTO"},
            "consent": {"crm": true, "marketing_email": true}
        })
        .to_string(),
    )
    .unwrap();
    let out = run(&cfg, &url, &[file.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let sim: Value = serde_json::from_slice(&out.stdout).expect("--json output parses");
    assert_eq!(sim["event"]["contact"]["email"], "sam@corp.example");
    assert_eq!(sim["contact"]["existing"], false);
    assert_eq!(sim["routes"][1]["route"], "big");
    assert_eq!(sim["routes"][1]["matched"], true);
    let dests: Vec<&str> = sim["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(dests, ["hook", "news", "backup", "sheet", "crm"]);
    let sheet = &sim["destinations"][3]["payload"];
    let email_column = sheet["columns"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c == "Email")
        .unwrap();
    assert_eq!(sheet["row"][email_column], "sam@corp.example");
    assert_eq!(sim["destinations"][1]["consent"]["decision"], "allowed");
    assert_eq!(
        sim["destinations"][4]["payload"]["contact"]["jobtitle"],
        "CTO"
    );
    assert_eq!(
        sim["destinations"][4]["payload"]["contact"]["email"],
        "sam@corp.example"
    );
    assert_eq!(sim["score"], Value::Null);
    assert_eq!(sim["owner"], Value::Null);

    // A bad event file: its fields, as the API would report them.
    std::fs::write(
        &file,
        json!({"form": "nope", "contact": {"phone": "12"}, "consent": {"Bad Purpose": true}})
            .to_string(),
    )
    .unwrap();
    let out = run(&cfg, &url, &[file.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rejected"]["status"], 422);
    let fields: Vec<&str> = v["rejected"]["body"]["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["form", "contact.phone", "consent.Bad Purpose"]);
    assert!(receiver.hits().is_empty());
}

#[tokio::test]
async fn reads_the_stored_contact_and_writes_nothing() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&receiver.url(), &dir.path().join("backup"));
    let app = TestApp::builder(&toml)
        .env("SIM_HUBSPOT_TOKEN", "pat-test")
        .start()
        .await;
    let r = app
        .post_json(
            "/v1/forms/contact",
            &json!({"email": "dana@example.com", "first_name": "Dana", "company": "Example Ltd", "consent": "on"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    eventually("the first delivery is sent", WAIT, || async {
        (receiver.delivered().len() == 1).then_some(())
    })
    .await;
    let events_before = app
        .store
        .list_events(&Default::default(), None, 100)
        .await
        .unwrap()
        .len();
    let deliveries_before = app
        .store
        .list_deliveries(&DeliveryFilter::default(), None, 100)
        .await
        .unwrap()
        .len();
    let stored = app
        .store
        .find_contact_by_email("dana@example.com")
        .await
        .unwrap()
        .unwrap();

    let cfg = dir.path().join("leadrelay.toml");
    std::fs::write(&cfg, &toml).unwrap();
    // Consent withdrawn in this submission; no company given.
    let data = json!({"email": "DANA@example.com", "first_name": "Dana B."});
    let out = run(
        &cfg,
        &app.db.url,
        &["--form", "contact", "--data", &data.to_string()],
    );
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("updates stored contact {}", stored.id)),
        "{text}"
    );
    // The stored company stays; the new name would win (latest).
    assert!(
        text.contains("  company: Example Ltd  [form:contact]"),
        "{text}"
    );
    assert!(
        text.contains("  first_name: Dana B.  [form:contact]"),
        "{text}"
    );
    // The latest answer (this submission's unchecked box) decides.
    assert!(
        text.contains("  hook (webhook) via all\n    consent: skipped: consent missing for crm"),
        "{text}"
    );

    // Without an email: the secondary match finds Dana by company domain + name.
    let file = dir.path().join("event.json");
    std::fs::write(
        &file,
        json!({"contact": {"company": "EXAMPLE", "domain": "www.example.com", "title": "CFO"}})
            .to_string(),
    )
    .unwrap();
    let out = run(&cfg, &app.db.url, &[file.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("updates stored contact {}", stored.id)),
        "{text}"
    );
    assert!(text.contains("  title: CFO  [api:cli]"), "{text}");
    assert!(text.contains("  email: dana@example.com"), "{text}");

    // Nothing stored, nothing sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.hits().len(), 1);
    assert_eq!(
        app.store
            .list_events(&Default::default(), None, 100)
            .await
            .unwrap()
            .len(),
        events_before
    );
    assert_eq!(
        app.store
            .list_deliveries(&DeliveryFilter::default(), None, 100)
            .await
            .unwrap()
            .len(),
        deliveries_before
    );
    let contacts = app
        .store
        .list_contacts(&ContactFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(contacts, vec![stored]);
}

/// Scoring, and two owners taking turns; the handoff notifies a webhook.
fn pipeline_config(receiver_url: &str) -> String {
    format!(
        r#"
[forms.contact]
[forms.contact.fields.email]
type = "email"
required = true
[forms.contact.fields.title]
type = "text"
[forms.contact.consent.crm]
field = "consent"
version = "v1"

[delivery]
poll_interval = "100ms"

[scoring]
sql = 75
[[scoring.rules]]
name = "senior title"
field = "title"
contains = ["vp", "head of"]
points = 80

[[owners]]
name = "ana"
email = "ana@example.com"
[[owners]]
name = "ben"
email = "ben@example.com"

[handoff]
poll_interval = "100ms"

[destinations.sales]
connector = "webhook"
url = "{receiver_url}"
allow_private_networks = true
legal_basis = "legitimate_interest"

[[routes]]
name = "handoff"
events = ["lead.qualified"]
destinations = ["sales"]
"#
    )
}

#[tokio::test]
async fn score_and_owner_come_from_the_pipeline_and_the_stored_turns() {
    let receiver = Receiver::start().await;
    let toml = pipeline_config(&receiver.url());
    let app = TestApp::spawn(&toml).await;
    let r = app
        .post_json(
            "/v1/forms/contact",
            &json!({"email": "first@alpha.io", "title": "VP Sales", "consent": "on"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    // The real handoff takes the first turn.
    let first_owner = eventually("the first SQL gets an owner", WAIT, || async {
        let c = app
            .store
            .find_contact_by_email("first@alpha.io")
            .await
            .ok()??;
        c.lead.owner.map(|o| o.owner)
    })
    .await;
    let next_owner = if first_owner == "ana" { "ben" } else { "ana" };
    // The handoff assigns the owner first and stores `lead.qualified` after:
    // count the events once that one is in.
    let events_before = eventually("the handoff stores lead.qualified", WAIT, || async {
        let events = app
            .store
            .list_events(&Default::default(), None, 100)
            .await
            .ok()?;
        events
            .iter()
            .any(|e| e.event_type.as_str() == "lead.qualified")
            .then_some(events.len())
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("leadrelay.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let sim = |data: Value, extra: &[&str]| {
        let mut args = vec!["--form".to_string(), "contact".into(), "--data".into()];
        args.push(data.to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&cfg, &app.db.url, &refs);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{text}");
        text
    };

    // A new SQL: scored by the configured rule; the owner is the next turn.
    let text = sim(
        json!({"email": "new@beta.io", "title": "Head of Growth", "consent": "on"}),
        &[],
    );
    assert!(
        text.contains(
            "scoring: 80 (stage sql, was lead) — crosses into sql: the handoff would start"
        ),
        "{text}"
    );
    assert!(text.contains("  from: senior title +80"), "{text}");
    assert!(
        text.contains(&format!("owner routing: {next_owner} — round-robin")),
        "{text}"
    );
    // The stored person keeps their owner.
    let text = sim(
        json!({"email": "first@alpha.io", "title": "VP Sales", "consent": "on"}),
        &[],
    );
    assert!(
        text.contains(&format!("owner routing: {first_owner} — already assigned")),
        "{text}"
    );
    // A colleague of an assigned contact: the account owner wins.
    let text = sim(
        json!({"email": "colleague@alpha.io", "title": "VP Finance", "consent": "on"}),
        &[],
    );
    assert!(
        text.contains(&format!("owner routing: {first_owner} — account owner")),
        "{text}"
    );
    // Below the threshold: nobody yet.
    let text = sim(
        json!({"email": "low@gamma.io", "title": "Intern", "consent": "on"}),
        &[],
    );
    assert!(text.contains("scoring: 0 (stage lead, was lead)"), "{text}");
    assert!(
        text.contains("owner routing: nobody — not assigned: the contact is lead"),
        "{text}"
    );
    // Without the store, turns start at 0 and the output says so.
    let text = sim(
        json!({"email": "new@beta.io", "title": "VP", "consent": "on"}),
        &["--no-store"],
    );
    assert!(
        text.contains("  note: routing state not read (--no-store)"),
        "{text}"
    );
    // --json carries the same decision.
    let out = run(
        &cfg,
        &app.db.url,
        &[
            "--form",
            "contact",
            "--data",
            &json!({"email": "new@beta.io", "title": "VP", "consent": "on"}).to_string(),
            "--json",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["score"]["stage"], "sql");
    assert_eq!(v["owner"]["owner"], next_owner);

    // Nothing was stored or taken: no new event, the turn is still free.
    assert_eq!(
        app.store
            .list_events(&Default::default(), None, 100)
            .await
            .unwrap()
            .len(),
        events_before
    );
    let r = app
        .post_json(
            "/v1/forms/contact",
            &json!({"email": "second@delta.io", "title": "VP Ops", "consent": "on"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let second = eventually("the second SQL gets an owner", WAIT, || async {
        let c = app
            .store
            .find_contact_by_email("second@delta.io")
            .await
            .ok()??;
        c.lead.owner.map(|o| o.owner)
    })
    .await;
    assert_eq!(second, next_owner, "simulate must not take a turn");
}
