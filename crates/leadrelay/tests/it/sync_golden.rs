//! The golden record as one side of a contact sync (`a = "leadrelay"`), on
//! both backends: a form lead's golden contact reaches a fake HubSpot by
//! the sync; a HubSpot edit comes back into the golden record with the
//! sync as its provenance, without echo writes, and the next lead's
//! delivery sees it; consent is never written from the CRM; an erased
//! person is neither recreated nor written to the CRM; `check` refuses
//! what the golden record cannot be.

use std::sync::Arc;
use std::time::Duration;

use leadrelay::config;
use leadrelay::privacy::Privacy;
use leadrelay::sync::SyncRunner;
use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig, HubSpotProperty};
use serde_json::json;

use crate::support::{CRM_FORM, TestApp, eventually, full_lead};
use crate::sync::{app_and_runner, health, hubspot_toml, roomy_hubspot, settle_rounds};

/// HubSpot's property the golden record's `crm` consent is written to.
const CONSENT_PROPERTY: &str = "leadrelay_crm_consent";

const FIELDS: &str = r#"
[syncs.crm.fields.first_name]
a = "first_name"
b = "firstname"

[syncs.crm.fields.phone]
a = "phone"
b = "phone"

[syncs.crm.fields.title]
a = "title"
b = "jobtitle"

[syncs.crm.fields.crm_consent]
a = "consent.crm"
b = "leadrelay_crm_consent"
owner = "a"
map = { "true" = "granted", "false" = "withdrawn" }
"#;

struct World {
    hs: FakeHubSpot,
    /// Another HubSpot portal the form's leads are delivered to.
    sales: FakeHubSpot,
    app: TestApp,
    runner: Arc<SyncRunner>,
    config: config::Config,
}

/// The test's configuration, with `extra` TOML.
fn toml(hs: &str, sales: &str, extra: &str) -> String {
    format!(
        r#"{CRM_FORM}
{hubspot}
[destinations.sales]
connector = "hubspot"
base_url = "{sales}"
allow_private_networks = true
token_env = "HUBSPOT_ACCESS_TOKEN"
rate_limit = "off"
purposes = ["crm"]

[[routes]]
name = "all"
destinations = ["sales"]

[syncs.crm]
object = "contact"
a = "leadrelay"
b = "hubspot"
poll_interval = "1h"
clock_skew = "1s"
{FIELDS}
{extra}
"#,
        hubspot = hubspot_toml(hs)
    )
}

async fn world() -> World {
    world_with("").await
}

async fn world_with(extra: &str) -> World {
    let hs = roomy_hubspot().await;
    assert!(hs.add_property(HubSpotProperty::text("contacts", CONSENT_PROPERTY)));
    let sales = roomy_hubspot().await;
    let text = toml(&hs.base_url(), &sales.base_url(), extra);
    let env = [("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)];
    let (app, runner) = app_and_runner(&text, &env).await;
    let lookup = |k: &str| (k == env[0].0).then(|| env[0].1.to_string());
    let config = config::load_str(&text, "test.toml", &lookup)
        .unwrap()
        .config;
    World {
        hs,
        sales,
        app,
        runner,
        config,
    }
}

async fn post_lead(w: &World, body: serde_json::Value) {
    let r = w.app.post_json("/v1/forms/contact", &body).await;
    assert!(r.status().is_success(), "{}", r.status());
}

/// HubSpot's value of `property` for `email`'s contact.
fn hs_value(w: &World, email: &str, property: &str) -> Option<String> {
    let c = w.hs.contact_by_email(email)?;
    c.get(property)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

async fn golden(w: &World, email: &str) -> Option<leadrelay_model::Contact> {
    w.app.store.find_contact_by_email(email).await.unwrap()
}

/// Jane's lead, taken by the sync into HubSpot and settled there.
async fn jane_in_hubspot(w: &World) -> String {
    let email = "jane@example.com";
    post_lead(
        w,
        full_lead(email, "Jane", "Doe", "Acme", "Hello, tell me more"),
    )
    .await;
    w.runner.round().await;
    let hs = w.hs.contact_by_email(email).expect("created in HubSpot");
    assert_eq!(hs_value(w, email, "firstname").as_deref(), Some("Jane"));
    // The form's phone, normalised by the golden record.
    assert_eq!(hs_value(w, email, "phone").as_deref(), Some("+14155552671"));
    assert_eq!(
        hs_value(w, email, CONSENT_PROPERTY).as_deref(),
        Some("granted")
    );
    settle_rounds(&w.runner, &w.app, 5).await;
    hs.id.clone()
}

#[tokio::test]
async fn a_form_lead_reaches_hubspot_and_a_hubspot_edit_comes_back_with_provenance() {
    let w = world().await;
    let hs_id = jane_in_hubspot(&w).await;
    // A lead without consent for the CRM's purposes stays out of it.
    post_lead(
        &w,
        json!({"email": "nope@example.com", "first_name": "Nope"}),
    )
    .await;
    w.runner.round().await;
    assert!(w.hs.contact_by_email("nope@example.com").is_none());

    let before = health(&w.app).await;
    assert!(w.hs.edit(
        "contacts",
        &hs_id,
        &[("jobtitle", "CTO"), ("firstname", "Janet")]
    ));
    settle_rounds(&w.runner, &w.app, 5).await;
    let after = health(&w.app).await;
    let c = golden(&w, "jane@example.com").await.unwrap();
    assert_eq!(c.data.title.as_deref(), Some("CTO"));
    assert_eq!(c.data.first_name.as_deref(), Some("Janet"));
    // The contact page's sources say the sync from HubSpot set them; the
    // form's values keep theirs.
    for field in ["title", "first_name"] {
        assert_eq!(c.provenance[field].source, "system:sync-crm-hubspot");
    }
    assert_eq!(c.provenance["last_name"].source, "form:contact");
    let event = w
        .app
        .store
        .get_event(c.provenance["title"].event_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.data["sync"], "crm");
    assert_eq!(event.data["system"], "hubspot");
    // The golden record's write came back as an echo: nothing went back to
    // HubSpot.
    assert_eq!(after.writes_b, before.writes_b, "{after:?}");
    assert_eq!(after.writes_a, before.writes_a + 1, "{after:?}");
    assert!(after.echoes_dropped > before.echoes_dropped, "{after:?}");
    assert_eq!(after.errors, 0, "{after:?}");

    // Jane's next lead (no title on the form) is delivered to the other
    // portal with the title HubSpot gave her golden record.
    post_lead(
        &w,
        json!({"email": "jane@example.com", "consent": "yes", "message": "Again"}),
    )
    .await;
    eventually(
        "the title in the other portal",
        Duration::from_secs(20),
        || async {
            let c = w.sales.contact_by_email("jane@example.com")?;
            (c.get("jobtitle") == Some("CTO") && c.get("firstname") == Some("Janet")).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn consent_is_never_written_from_the_crm() {
    let w = world().await;
    let hs_id = jane_in_hubspot(&w).await;
    let before = health(&w.app).await;
    assert!(w.hs.edit("contacts", &hs_id, &[(CONSENT_PROPERTY, "withdrawn")]));
    settle_rounds(&w.runner, &w.app, 5).await;
    let c = golden(&w, "jane@example.com").await.unwrap();
    assert!(c.consent["crm"].granted, "{:?}", c.consent);
    // leadrelay owns it: the CRM's edit is undone.
    assert_eq!(
        hs_value(&w, "jane@example.com", CONSENT_PROPERTY).as_deref(),
        Some("granted")
    );
    let after = health(&w.app).await;
    assert_eq!(after.restores, before.restores + 1, "{after:?}");
    assert_eq!(after.writes_a, before.writes_a, "{after:?}");
}

#[tokio::test]
async fn an_erased_person_is_not_recreated_nor_written_to_the_crm() {
    let w = world().await;
    let hs_id = jane_in_hubspot(&w).await;
    Privacy::new(w.app.store.clone(), Arc::new(w.config.clone()))
        .erase("jane@example.com", "test", None)
        .await
        .unwrap();
    assert!(golden(&w, "jane@example.com").await.is_none());
    // The sync forgot what it knew of her (values seen, links).
    assert_eq!(
        w.app
            .store
            .kv_get("sync:crm:record:jane@example.com")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        w.app
            .store
            .kv_get(&format!("sync:crm:link:b:{hs_id}"))
            .await
            .unwrap(),
        None
    );
    let before = health(&w.app).await;
    let hs_requests = w.hs.requests().entries().len();
    // HubSpot still holds her: an edit there, and one of the consent
    // property leadrelay owns (which it would otherwise restore).
    assert!(w.hs.edit(
        "contacts",
        &hs_id,
        &[("jobtitle", "CTO"), (CONSENT_PROPERTY, "withdrawn")]
    ));
    for _ in 0..3 {
        w.runner.round().await;
    }
    assert!(golden(&w, "jane@example.com").await.is_none());
    let after = health(&w.app).await;
    assert_eq!(after.writes_a, before.writes_a, "{after:?}");
    assert_eq!(after.writes_b, before.writes_b, "{after:?}");
    assert!(
        after
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("erased") && !e.contains("jane")),
        "{after:?}"
    );
    // Only reads reached HubSpot.
    let log = w.hs.requests().entries();
    let written = |path: &str| {
        ["/batch/update", "/batch/create", "/batch/upsert"]
            .iter()
            .any(|w| path.contains(w))
    };
    assert!(
        log[hs_requests..]
            .iter()
            .all(|r| r.method != "PATCH" && !written(&r.path)),
        "{:?}",
        &log[hs_requests..]
    );
    assert_eq!(
        w.hs.contact_by_email("jane@example.com")
            .and_then(|c| c.get(CONSENT_PROPERTY).map(str::to_string))
            .as_deref(),
        Some("withdrawn")
    );
    // A person erased who comes back by themselves is a new contact the
    // sync then keeps as any other.
    post_lead(
        &w,
        full_lead("jane@example.com", "Jane", "Doe", "Acme", "I'm back"),
    )
    .await;
    settle_rounds(&w.runner, &w.app, 5).await;
    assert_eq!(
        hs_value(&w, "jane@example.com", CONSENT_PROPERTY).as_deref(),
        Some("granted")
    );
}

#[tokio::test]
async fn a_person_who_withdrew_the_crm_consent_is_no_longer_written_to_the_crm() {
    let w = world().await;
    let hs_id = jane_in_hubspot(&w).await;
    // Her next lead leaves the consent box unticked: `crm` is withdrawn.
    post_lead(
        &w,
        json!({"email": "jane@example.com", "first_name": "Janie"}),
    )
    .await;
    let c = golden(&w, "jane@example.com").await.unwrap();
    assert!(!c.consent["crm"].granted);
    let before = health(&w.app).await;
    // HubSpot's edits: a title, and the consent property leadrelay owns
    // (which it would otherwise restore).
    assert!(w.hs.edit(
        "contacts",
        &hs_id,
        &[("jobtitle", "CTO"), (CONSENT_PROPERTY, "unknown")]
    ));
    settle_rounds(&w.runner, &w.app, 5).await;
    let after = health(&w.app).await;
    // Nothing of her went to HubSpot: not her new first name, not the
    // restore.
    assert_eq!(after.writes_b, before.writes_b, "{after:?}");
    assert!(after.withheld > 0, "{after:?}");
    assert_eq!(
        hs_value(&w, "jane@example.com", "firstname").as_deref(),
        Some("Jane")
    );
    assert_eq!(
        hs_value(&w, "jane@example.com", CONSENT_PROPERTY).as_deref(),
        Some("unknown")
    );
    // What HubSpot says still comes in.
    let c = golden(&w, "jane@example.com").await.unwrap();
    assert_eq!(c.data.title.as_deref(), Some("CTO"));
    assert_eq!(after.errors, 0, "{after:?}");
}

/// `n` people stored in one batch (one transaction: one update time),
/// with the `crm` consent.
async fn many_people(store: &Arc<dyn leadrelay::store::Store>, n: usize) -> Vec<String> {
    use leadrelay_model::{
        ConsentPurpose, ConsentRecord, ContactData, EmailAddress, Event, EventType, Origin,
    };
    let now = chrono::Utc::now();
    let emails: Vec<String> = (0..n).map(|i| format!("p{i:04}@example.com")).collect();
    let items = emails
        .iter()
        .map(|e| {
            let mut event = Event::internal(
                EventType::LeadCreated,
                Origin::form("contact"),
                ContactData {
                    email: Some(EmailAddress::parse(e).unwrap()),
                    first_name: Some(format!("First {e}")),
                    ..Default::default()
                },
                Default::default(),
                now,
            );
            event.consent.push(ConsentRecord {
                purpose: ConsentPurpose::parse("crm").unwrap(),
                granted: true,
                text_version: Some("v1".into()),
                recorded_at: now,
            });
            leadrelay::store::IngestItem {
                event,
                destinations: Vec::new(),
                idempotency: None,
            }
        })
        .collect();
    store.ingest(items).await.unwrap();
    emails
}

#[tokio::test]
async fn changed_contacts_page_through_ties_in_order() {
    let w = world().await;
    let emails = many_people(&w.app.store, 450).await;
    // Every contact once, in (updated_at, id) order, though all 450 share
    // one update time.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = w
            .app
            .store
            .contacts_changed(None, after, 200)
            .await
            .unwrap();
        assert!(page.len() <= 200);
        let Some(last) = page.last() else { break };
        after = Some((last.updated_at, last.id));
        seen.extend(page.iter().map(|c| (c.updated_at, c.id)));
    }
    assert_eq!(seen.len(), emails.len());
    assert!(seen.windows(2).all(|p| p[0] < p[1]), "not in order");
    // `since` leaves out what changed before it.
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert!(
        w.app
            .store
            .contacts_changed(Some(later), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // One round takes them all to HubSpot (three pages of changes).
    let h = w.runner.round().await;
    assert_eq!(h.errors, 0, "{h:?}");
    for e in &emails {
        assert_eq!(
            hs_value(&w, e, "firstname").as_deref(),
            Some(format!("First {e}").as_str())
        );
    }
}

#[tokio::test]
async fn a_value_the_contact_rules_keep_out_is_reported_not_written_again_and_again() {
    let rule = "[contacts.fields.title]\nstrategy = \"never_overwrite\"\n";
    let w = world_with(rule).await;
    // `check` warns: the rule may keep the golden value against HubSpot's.
    let text = toml(&w.hs.base_url(), &w.sales.base_url(), rule);
    let env = |_: &str| Some(HubSpotConfig::DEFAULT_TOKEN.to_string());
    let loaded = config::load_str(&text, "t.toml", &env).unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|p| p.path == "syncs.crm.fields.title.owner"),
        "{:?}",
        loaded.warnings
    );
    let hs_id = jane_in_hubspot(&w).await;
    // The first title fills the empty field; the second is kept out.
    assert!(w.hs.edit("contacts", &hs_id, &[("jobtitle", "CTO")]));
    settle_rounds(&w.runner, &w.app, 5).await;
    assert!(w.hs.edit("contacts", &hs_id, &[("jobtitle", "CEO")]));
    let before = health(&w.app).await;
    for _ in 0..3 {
        w.runner.round().await;
    }
    let after = health(&w.app).await;
    let c = golden(&w, "jane@example.com").await.unwrap();
    assert_eq!(c.data.title.as_deref(), Some("CTO"));
    assert!(
        after
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("title") && e.contains("[contacts.fields]")),
        "{after:?}"
    );
    // Nothing stored, nothing written back and forth.
    assert_eq!(after.writes_a, before.writes_a, "{after:?}");
    assert_eq!(after.writes_b, before.writes_b, "{after:?}");
    assert_eq!(c.provenance["title"].source, "system:sync-crm-hubspot");
}

#[tokio::test]
async fn golden_syncs_are_checked() {
    let env = |_: &str| Some("x".to_string());
    let refused = |text: &str| match config::load_str(text, "t.toml", &env) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    };
    let sync = |fields: &str| {
        format!(
            r#"
[destinations.hs]
connector = "hubspot"
token_env = "T"
purposes = ["crm"]
[syncs.crm]
object = "contact"
a = "leadrelay"
b = "hs"
{fields}
"#
        )
    };
    // Consent flows only from leadrelay to the CRM.
    let err = refused(&sync(
        "[syncs.crm.fields.c]\na = \"consent.marketing_email\"\nb = \"lr_consent\"\n",
    ));
    assert!(
        err.contains("syncs.crm.fields.c.owner")
            && err.contains("consent")
            && err.contains("never written from the CRM"),
        "{err}"
    );
    // The golden side's field names.
    let err = refused(&sync(
        "[syncs.crm.fields.e]\na = \"email\"\nb = \"x_e\"\n[syncs.crm.fields.n]\na = \"Job Title\"\nb = \"jobtitle\"\n[syncs.crm.fields.p]\na = \"consent.Marketing\"\nb = \"x_p\"\nowner = \"a\"\n",
    ));
    for needle in [
        "syncs.crm.fields.e.a",
        "syncs.crm.fields.n.a",
        "not a golden contact field",
        "syncs.crm.fields.p.a",
        "not a consent purpose",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    // The name is reserved for the golden record once a sync uses it.
    let err = refused(&format!(
        "{}\n[destinations.leadrelay]\nconnector = \"hubspot\"\ntoken_env = \"T\"\n",
        sync("[syncs.crm.fields.t]\na = \"title\"\nb = \"jobtitle\"\n")
    ));
    assert!(
        err.contains("destinations.leadrelay") && err.contains("reserved"),
        "{err}"
    );
    // Contacts only, no origin marker.
    let err = refused(
        r#"
[destinations.hs]
connector = "hubspot"
token_env = "T"
purposes = ["crm"]
[syncs.co]
object = "company"
a = "leadrelay"
b = "hs"
match = { a = "domain", b = "domain" }
[syncs.co.fields.n]
a = "company"
b = "name"
[syncs.crm]
object = "contact"
a = "leadrelay"
b = "hs"
origin_a = "x"
[syncs.crm.fields.t]
a = "title"
b = "jobtitle"
"#,
    );
    for needle in ["syncs.co.a", "holds contacts", "syncs.crm.origin_a"] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    // And a valid one loads.
    config::load_str(
        &sync(
            "[syncs.crm.fields.c]\na = \"consent.marketing_email\"\nb = \"lr_consent\"\nowner = \"a\"\n[syncs.crm.fields.i]\na = \"industry\"\nb = \"industry\"\n",
        ),
        "t.toml",
        &env,
    )
    .unwrap();
}
