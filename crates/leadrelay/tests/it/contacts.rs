//! The golden record over real HTTP, on both backends: per-field
//! source-of-truth rules across a form and a CRM webhook, shown with their
//! provenance in the admin API; repeat submissions (other case, other
//! source, concurrent) never create a second person.

use std::time::Duration;

use leadrelay::auth::generate_key;
use leadrelay::store::{ContactFilter, Role};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, eventually};

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "crm-hook-token";

/// A form, a generic "CRM" webhook source, a file backup in `dir`, and
/// contact rules.
fn config(dir: &std::path::Path, rules: &str) -> String {
    format!(
        r#"
[forms.contact]
[forms.contact.fields.email]
type = "email"
[forms.contact.fields.first_name]
type = "text"
[forms.contact.fields.last_name]
type = "text"
[forms.contact.fields.company]
type = "text"
[forms.contact.fields.website]
type = "url"
[forms.contact.fields.phone]
type = "phone"
default_region = "US"

[sources.crm]
kind = "generic"
token_env = "CRM_HOOK_TOKEN"
event_type = "contact.updated"
fields = {{ email = "/email", first_name = "/first_name", last_name = "/last_name", phone = "/phone", company = "/company", domain = "/domain" }}
default_region = "US"

[destinations.backup]
connector = "file"
path = "{backup}"
legal_basis = "legitimate_interest"

[[routes]]
name = "all"
destinations = ["backup"]
{rules}
"#,
        backup = dir.join("backup").display()
    )
}

async fn start(rules: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    TestApp::builder(&config(dir.path(), rules))
        .dir(dir)
        .env("CRM_HOOK_TOKEN", TOKEN)
        .start()
        .await
}

async fn form(app: &TestApp, body: Value) -> Uuid {
    let r = app.post_json("/v1/forms/contact", &body).await;
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn hook(app: &TestApp, body: Value) {
    let r = app
        .client
        .post(app.url("/v1/hooks/crm"))
        .header("x-leadrelay-token", TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

async fn admin_get(app: &TestApp, path: &str) -> Value {
    let (secret, record) = generate_key(&format!("k{}", Uuid::now_v7().simple()), Role::Admin);
    app.store.create_api_key(record).await.unwrap();
    let r = app
        .client
        .get(app.url(path))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn all_contacts(app: &TestApp) -> Vec<leadrelay_model::Contact> {
    app.store
        .list_contacts(&ContactFilter::default(), None, 1000)
        .await
        .unwrap()
}

#[tokio::test]
async fn configured_source_of_truth_wins_with_provenance() {
    let app = start(
        r#"
[contacts.fields.phone]
sources = ["crm", "form:*"]
[contacts.fields.company]
strategy = "never_overwrite"
"#,
    )
    .await;
    let first = form(
        &app,
        json!({"email": "Jane@Acme.io", "first_name": "Jane", "company": "Acme", "phone": "(415) 555-2671"}),
    )
    .await;
    hook(
        &app,
        json!({"email": "jane@acme.io", "first_name": "Janet", "phone": "+1 415 555 2672", "company": "Acme Corporation"}),
    )
    .await;
    // A later form post: newer, but the CRM is the phone's source of truth.
    form(
        &app,
        json!({"email": " JANE@acme.io ", "phone": "(415) 555-2673"}),
    )
    .await;

    let contacts = all_contacts(&app).await;
    assert_eq!(contacts.len(), 1, "one person: {contacts:?}");
    let id = contacts[0].id;
    let view = admin_get(&app, &format!("/api/v1/contacts/{id}")).await;
    assert_eq!(view["fields"]["email"], "jane@acme.io");
    assert_eq!(view["fields"]["phone"], "+14155552672");
    assert_eq!(view["provenance"]["phone"]["source"], "source:crm");
    assert_eq!(view["fields"]["company"], "Acme");
    assert_eq!(view["provenance"]["company"]["source"], "form:contact");
    assert_eq!(view["provenance"]["company"]["event_id"], first.to_string());
    // No rule: the latest value.
    assert_eq!(view["fields"]["first_name"], "Janet");
    assert_eq!(view["provenance"]["first_name"]["source"], "source:crm");
}

#[tokio::test]
async fn repeat_submissions_from_other_sources_and_cases_are_one_person() {
    let app = start("").await;
    form(
        &app,
        json!({"email": "sam@corp.example", "first_name": "Sam"}),
    )
    .await;
    form(
        &app,
        json!({"email": "SAM@Corp.Example", "last_name": "Lee"}),
    )
    .await;
    hook(
        &app,
        json!({"email": "  Sam@corp.example\t", "company": "Corp"}),
    )
    .await;
    let contacts = all_contacts(&app).await;
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    let c = &contacts[0].data;
    assert_eq!(c.first_name.as_deref(), Some("Sam"));
    assert_eq!(c.last_name.as_deref(), Some("Lee"));
    assert_eq!(c.company.as_deref(), Some("Corp"));
    // Every event points at the one contact.
    let events = app
        .store
        .list_events(&Default::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.contact_id == Some(contacts[0].id)));
}

#[tokio::test]
async fn concurrent_submissions_for_one_email_make_one_contact() {
    let app = start("").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = app.client.clone();
        let url = app.url("/v1/forms/contact");
        // Differing case and whitespace, all the same person.
        let email = if i % 2 == 0 {
            "Rush@Example.org".to_string()
        } else {
            format!(" rush@example.ORG{}", " ".repeat(i % 3))
        };
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({"email": email, "first_name": format!("R{i}")}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 202);
    }
    eventually("every event is stored", WAIT, || async {
        let events = app
            .store
            .list_events(&Default::default(), None, 100)
            .await
            .unwrap();
        (events.len() == 50).then_some(())
    })
    .await;
    let contacts = all_contacts(&app).await;
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    assert_eq!(
        contacts[0].data.email.as_ref().map(|e| e.as_str()),
        Some("rush@example.org")
    );
    let events = app
        .store
        .list_events(&Default::default(), None, 100)
        .await
        .unwrap();
    assert!(events.iter().all(|e| e.contact_id == Some(contacts[0].id)));
}

#[tokio::test]
async fn events_without_email_match_by_company_domain_and_name() {
    let app = start("").await;
    hook(
        &app,
        json!({"email": "jane@acme.io", "first_name": "Jane", "company": "Acme, Inc.", "domain": "acme.io"}),
    )
    .await;
    // No email: the CRM knows the company (other spelling) and a new phone.
    hook(
        &app,
        json!({"company": "ACME", "domain": "WWW.Acme.io", "phone": "(415) 555-2671"}),
    )
    .await;
    let contacts = all_contacts(&app).await;
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    let jane = contacts[0].clone();
    assert_eq!(
        jane.data.phone.as_ref().map(|p| p.as_str()),
        Some("+14155552671")
    );
    assert_eq!(jane.provenance["phone"].source, "source:crm");
    let events = app
        .store
        .list_events(&Default::default(), None, 10)
        .await
        .unwrap();
    assert!(events.iter().all(|e| e.contact_id == Some(jane.id)));

    // A second person at Acme: the same company-only event is ambiguous.
    form(
        &app,
        json!({"email": "bo@acme.io", "first_name": "Bo", "company": "Acme"}),
    )
    .await;
    hook(
        &app,
        json!({"company": "Acme", "domain": "acme.io", "last_name": "Smith"}),
    )
    .await;
    let contacts = all_contacts(&app).await;
    assert_eq!(contacts.len(), 2);
    let newest = app
        .store
        .list_events(&Default::default(), None, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(newest.contact_id, None, "ambiguous: not merged");
    assert!(
        contacts.iter().all(|c| c.data.last_name.is_none()),
        "nobody got the ambiguous event's name"
    );
    let reviews = app.store.list_review_items(None, None, 10).await.unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].kind, "ambiguous_contact_match");
    assert_eq!(reviews[0].details["event_id"], newest.id.to_string());
    let mut candidates: Vec<String> = reviews[0].details["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    candidates.sort();
    let mut ids: Vec<String> = contacts.iter().map(|c| c.id.to_string()).collect();
    ids.sort();
    assert_eq!(candidates, ids);

    // A first name tells them apart.
    hook(&app, json!({"company": "Acme", "domain": "acme.io", "first_name": "bo", "phone": "+1 415 555 2672"})).await;
    let bo = app
        .store
        .find_contact_by_email("bo@acme.io")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        bo.data.phone.as_ref().map(|p| p.as_str()),
        Some("+14155552672")
    );
    assert_eq!(all_contacts(&app).await.len(), 2);
}

#[test]
fn check_reports_contact_rule_problems_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leadrelay.toml");
    std::fs::write(
        &path,
        "[forms.contact]\n[forms.contact.fields.email]\ntype = \"email\"\n\n[contacts.fields.phone]\nsources = [\"form:*\", \"crm:x\"]\n\n[contacts.fields.compnay]\nstrategy = \"latest\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::binary::bin())
        .args(["check", "--offline", "--config"])
        .arg(&path)
        .env_remove("LEADRELAY_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":6:")
            && err.contains(
                "error: contacts.fields.phone.sources[1]: \"crm:x\": unknown source kind \"crm\""
            ),
        "{err}"
    );
    assert!(
        err.contains(":8:18: error: contacts.fields.compnay: unknown contact field \"compnay\""),
        "{err}"
    );
}
