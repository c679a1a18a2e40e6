//! HubSpot end to end: form POST → leadrelay → the fake HubSpot's state.

use std::collections::HashSet;
use std::time::Duration;

use leadrelay::store::DeliveryState;
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig};
use serde_json::json;

use crate::support::{
    CRM_FORM, MANY_CLIENTS_ON_ONE_THREAD, TestApp, eventually, full_lead, ingest_event,
    ingest_event_with_refs, lead, post_until_stored,
};

const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn config(base: &str, extra: &str) -> String {
    format!(
        r#"{CRM_FORM}
[destinations.hubspot]
connector = "hubspot"
base_url = "{base}"
allow_private_networks = true
token_env = "HUBSPOT_ACCESS_TOKEN"
purposes = ["crm"]
timeout = "2s"
{extra}

[[routes]]
name = "crm"
destinations = ["hubspot"]
"#
    )
}

async fn start(fake: &FakeHubSpot, extra: &str) -> TestApp {
    start_on(fake, extra, "v3").await
}

/// The dated API version the HubSpot tests also run on.
pub(crate) const DATED: &str = "2026-03";

/// Starts leadrelay with the HubSpot destination on `api_version`.
async fn start_on(fake: &FakeHubSpot, extra: &str, api_version: &str) -> TestApp {
    let extra = format!("api_version = \"{api_version}\"\n{extra}");
    TestApp::builder(&config(&fake.base_url(), &extra))
        .env("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)
        .start()
        .await
}

/// Every request the fake saw used `api_version`'s path scheme (and none
/// the other's), so a test passing on both really exercised both.
pub(crate) fn assert_paths_of(fake: &FakeHubSpot, api_version: &str) {
    let paths: Vec<String> = fake
        .requests()
        .entries()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(!paths.is_empty());
    let numbered = |p: &String| p.contains("/v3/") || p.contains("/v4/");
    let stray: Vec<&String> = if api_version == "v3" {
        paths.iter().filter(|p| !numbered(p)).collect()
    } else {
        paths
            .iter()
            .filter(|p| numbered(p) || !p.contains(&format!("/{api_version}/")))
            .collect()
    };
    assert!(stray.is_empty(), "{api_version}: {stray:?}");
}

/// Runs `$name(api_version)` as two tests, `$name::v3` and `$name::dated`.
/// Only the tests that reach distinct paths run on both (the others are the
/// same calls, and would double the suite's time for nothing).
macro_rules! on_both_api_versions {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn v3() {
                super::$name("v3").await
            }
            #[tokio::test]
            async fn dated() {
                super::$name(super::DATED).await
            }
        }
    )*};
}

on_both_api_versions!(
    form_post_creates_contact_company_deal_note_and_task,
    reply_meeting_and_deal_stage_events,
    unknown_property_is_a_dead_letter_naming_it_and_spares_the_batch,
    custom_objects_are_upserted_by_their_unique_property_and_linked,
);

async fn form_post_creates_contact_company_deal_note_and_task(api_version: &str) {
    let fake = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    let app = start_on(
        &fake,
        "deals = true\nfollow_up_task = true\nowner_id = \"77\"",
        api_version,
    )
    .await;
    let r = app
        .post_json(
            "/v1/forms/contact",
            &full_lead(
                "jane@acme.io",
                "Jane",
                "Doe",
                "Acme Inc",
                "Please call me about pricing.",
            ),
        )
        .await;
    assert_eq!(r.status(), 202);
    let d = app.settled("hubspot", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Delivered, "{:?}", d[0]);

    let c = fake.contact_by_email("jane@acme.io").expect("contact");
    assert_eq!(c.get("firstname"), Some("Jane"));
    assert_eq!(c.get("lastname"), Some("Doe"));
    assert_eq!(c.get("company"), Some("Acme Inc"));
    assert_eq!(c.get("phone"), Some("+14155552671"));
    assert_eq!(c.get("lifecyclestage"), Some("lead"));
    assert_eq!(c.get("hs_lead_status"), Some("NEW"));
    assert_eq!(c.get("hubspot_owner_id"), Some("77"));

    let companies = fake.companies();
    assert_eq!(companies.len(), 1);
    assert_eq!(companies[0].get("domain"), Some("acme.io"));
    assert_eq!(companies[0].get("name"), Some("Acme Inc"));
    assert_eq!(
        fake.associated_ids("contacts", &c.id, "companies"),
        vec![companies[0].id.clone()]
    );

    let deals = fake.deals();
    assert_eq!(deals.len(), 1);
    assert_eq!(deals[0].get("pipeline"), Some("default"));
    assert_eq!(deals[0].get("dealstage"), Some("appointmentscheduled"));
    assert_eq!(deals[0].get("dealname"), Some("Acme Inc (contact form)"));
    assert_eq!(
        fake.associated_ids("deals", &deals[0].id, "contacts"),
        vec![c.id.clone()]
    );

    let notes = fake.notes();
    assert_eq!(notes.len(), 1);
    // The message, then the event's line that finds the note after a crash.
    let body = notes[0].get("hs_note_body").unwrap_or_default();
    assert!(
        body.starts_with("Please call me about pricing.<p>leadrelay-event:"),
        "{body}"
    );
    assert!(notes[0].get("hs_timestamp").is_some());
    assert_eq!(
        fake.associated_ids("notes", &notes[0].id, "contacts"),
        vec![c.id.clone()]
    );

    let tasks = fake.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        tasks[0].get("hs_task_subject"),
        Some("Follow up with Jane Doe")
    );
    assert_eq!(tasks[0].get("hs_task_status"), Some("NOT_STARTED"));
    assert_eq!(tasks[0].get("hubspot_owner_id"), Some("77"));
    assert!(tasks[0].get("hs_timestamp").is_some(), "due date");
    assert_eq!(
        fake.associated_ids("tasks", &tasks[0].id, "contacts"),
        vec![c.id.clone()]
    );

    // The ids are kept and reused: a second lead updates, links nothing twice.
    let searches_before = fake
        .requests()
        .entries()
        .iter()
        .filter(|r| r.path.ends_with("/search"))
        .count();
    app.post_json(
        "/v1/forms/contact",
        &full_lead("jane@acme.io", "Janet", "Doe", "Acme Inc", ""),
    )
    .await;
    app.settled("hubspot", 2, WAIT).await;
    assert_eq!(fake.contacts().len(), 1);
    assert_eq!(
        fake.contact_by_email("jane@acme.io")
            .unwrap()
            .get("firstname"),
        Some("Janet")
    );
    assert_eq!(fake.companies().len(), 1);
    assert_eq!(fake.deals().len(), 1, "one open deal per person, reused");
    let searches_after = fake
        .requests()
        .entries()
        .iter()
        .filter(|r| r.path.ends_with("/search"))
        .count();
    assert_eq!(
        searches_before, searches_after,
        "the stored company id was reused"
    );
    assert_paths_of(&fake, api_version);
    app.stop().await;
}

async fn reply_meeting_and_deal_stage_events(api_version: &str) {
    let fake = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    let app = start_on(
        &fake,
        r#"deals = true
meeting_deal_stage = "qualifiedtobuy"
reply_lead_status = "CONNECTED"
[destinations.hubspot.stage_map]
won = "closedwon"
"#,
        api_version,
    )
    .await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("max@beta.io", "Max", "Power", "Beta", ""),
    )
    .await;
    app.settled("hubspot", 1, WAIT).await;
    let contact = fake.contact_by_email("max@beta.io").unwrap();
    assert_eq!(
        fake.deals()[0].get("dealstage"),
        Some("appointmentscheduled")
    );

    ingest_event(
        &app.store,
        "reply.received",
        "max@beta.io",
        json!({"reply_text": "Sounds good, let's talk."}),
        &["hubspot"],
    )
    .await;
    app.settled("hubspot", 2, WAIT).await;
    let notes = fake.notes();
    assert_eq!(notes.len(), 1);
    let body = notes[0].get("hs_note_body").unwrap_or_default();
    assert!(
        body.starts_with("Sounds good, let&#39;s talk.<p>leadrelay-event:"),
        "{body}"
    );
    assert_eq!(
        fake.associated_ids("notes", &notes[0].id, "contacts"),
        vec![contact.id.clone()]
    );
    assert_eq!(
        fake.contact_by_email("max@beta.io")
            .unwrap()
            .get("hs_lead_status"),
        Some("CONNECTED")
    );

    ingest_event(
        &app.store,
        "meeting.booked",
        "max@beta.io",
        json!({"meeting_name": "Demo", "start_time": "2030-01-02T15:00:00Z"}),
        &["hubspot"],
    )
    .await;
    app.settled("hubspot", 3, WAIT).await;
    let c = fake.contact_by_email("max@beta.io").unwrap();
    assert_eq!(c.get("lifecyclestage"), Some("salesqualifiedlead"));
    assert_eq!(fake.deals().len(), 1);
    assert_eq!(fake.deals()[0].get("dealstage"), Some("qualifiedtobuy"));
    assert_eq!(fake.notes().len(), 1, "a meeting is not a note");
    let meetings = fake.meetings();
    assert_eq!(meetings.len(), 1);
    assert_eq!(
        meetings[0].get("hs_meeting_title"),
        Some("Demo booked with Max Power")
    );
    assert!(
        meetings[0]
            .get("hs_meeting_start_time")
            .is_some_and(|t| t.starts_with("2030-01-02T15:00:00")),
        "{meetings:?}"
    );
    assert_eq!(
        fake.associated_ids("meetings", &meetings[0].id, "contacts"),
        vec![contact.id.clone()]
    );

    ingest_event(
        &app.store,
        "deal.stage_changed",
        "max@beta.io",
        json!({"stage": "won"}),
        &["hubspot"],
    )
    .await;
    app.settled("hubspot", 4, WAIT).await;
    assert_eq!(fake.deals().len(), 1);
    assert_eq!(fake.deals()[0].get("dealstage"), Some("closedwon"));
    let all = app.deliveries("hubspot").await;
    assert!(
        all.iter().all(|d| d.state == DeliveryState::Delivered),
        "{all:?}"
    );
    assert_paths_of(&fake, api_version);
    app.stop().await;
}

async fn unknown_property_is_a_dead_letter_naming_it_and_spares_the_batch(api_version: &str) {
    let fake = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    let app = start_on(
        &fake,
        r#"[destinations.hubspot.mapping.contact]
favourite_colour = "data.colour"
"#,
        api_version,
    )
    .await;
    // Hold deliveries until all three are due, so they share one batch.
    app.hold("hubspot").await;
    let mut with_colour = lead("red@x.io");
    with_colour["colour"] = json!("red");
    app.post_json("/v1/forms/contact", &with_colour).await;
    app.post_json("/v1/forms/contact", &lead("plain1@x.io"))
        .await;
    app.post_json("/v1/forms/contact", &lead("plain2@x.io"))
        .await;
    app.release("hubspot", 3).await;
    let d = app.settled("hubspot", 3, WAIT).await;
    let dead: Vec<_> = d
        .iter()
        .filter(|d| d.state == DeliveryState::Dead)
        .collect();
    assert_eq!(dead.len(), 1, "{d:?}");
    let reason = dead[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("HubSpot rejected property \"favourite_colour\"")
            && reason.contains("does not exist"),
        "{reason}"
    );
    assert!(fake.contact_by_email("plain1@x.io").is_some());
    assert!(fake.contact_by_email("plain2@x.io").is_some());
    assert!(fake.contact_by_email("red@x.io").is_none());
    let upserts: Vec<u16> = fake
        .requests()
        .entries()
        .iter()
        .filter(|r| r.path.ends_with("/contacts/batch/upsert"))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        upserts,
        vec![400, 200],
        "one batch; the other two inputs sent again"
    );
    assert_paths_of(&fake, api_version);
    app.stop().await;
}

#[tokio::test]
async fn mapping_errors_and_invalid_options_dead_letter_with_the_reason() {
    let fake = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    let app = start(
        &fake,
        r#"[destinations.hubspot.mapping.contact]
lead_tier = { from = "data.tier", map = { a = "gold", b = "platinum" } }
"#,
    )
    .await;
    let mut unmapped = lead("t1@x.io");
    unmapped["tier"] = json!("c");
    let mut bad_option = lead("t2@x.io");
    bad_option["tier"] = json!("b");
    app.post_json("/v1/forms/contact", &unmapped).await;
    app.post_json("/v1/forms/contact", &bad_option).await;
    let d = app.settled("hubspot", 2, WAIT).await;
    assert!(d.iter().all(|d| d.state == DeliveryState::Dead), "{d:?}");
    let reasons: Vec<String> = d
        .iter()
        .map(|d| d.reason.clone().unwrap_or_default())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("mapping contact.lead_tier: value \"c\" is not in the value map")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("\"lead_tier\"") && r.contains("INVALID_OPTION")),
        "{reasons:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn daily_limit_pauses_the_destination_instead_of_burning_retries() {
    let fake = FakeHubSpot::start(HubSpotConfig {
        daily_limit: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    fake.set_daily_usage(3);
    let app = start(&fake, "").await;
    app.post_json("/v1/forms/contact", &lead("day@x.io")).await;
    let paused = eventually("the destination is paused", WAIT, || async {
        let s = app.store.destination_state("hubspot").await.ok()?;
        s.paused_until.filter(|_| {
            s.pause_reason
                .as_deref()
                .is_some_and(|r| r.contains("DAILY"))
        })
    })
    .await;
    assert!(
        paused > chrono::Utc::now() + chrono::Duration::minutes(1),
        "paused until the daily reset: {paused}"
    );
    let d = app.deliveries("hubspot").await;
    assert_eq!(d[0].failures, 0, "throttling is not a failure: {:?}", d[0]);
    assert!(d[0].state.is_active());
    app.stop().await;
}

#[tokio::test]
async fn a_thousand_concurrent_leads_for_200_emails_make_200_contacts_through_5xx_and_429_storms() {
    let fake = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    // Storms: server errors, then HubSpot's own 429 bodies.
    fake.faults().push(
        Fault::Status {
            status: 502,
            body: "bad gateway".into(),
            headers: vec![],
        },
        4,
    );
    fake.faults().push(
        Fault::Status {
            status: 429,
            body: json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"}).to_string(),
            headers: vec![],
        },
        4,
    );
    fake.faults().push(
        Fault::Status {
            status: 503,
            body: "unavailable".into(),
            headers: vec![],
        },
        3,
    );
    let app = start(
        &fake,
        &[
            "[destinations.hubspot.circuit]\nprobe_interval = \"100ms\"\nmax_probe_interval = \"500ms\"",
            MANY_CLIENTS_ON_ONE_THREAD,
        ]
        .concat(),
    )
    .await;
    let mut posts = Vec::new();
    for i in 0..1000 {
        let client = app.client.clone();
        let url = app.url("/v1/forms/contact");
        let email = format!("p{}@corp{}.io", i % 200, (i % 200) % 7);
        posts.push(tokio::spawn(async move {
            post_until_stored(
                &client,
                &url,
                &full_lead(&email, "Pat", &format!("N{i}"), "Corp", ""),
            )
            .await
        }));
    }
    for p in posts {
        assert_eq!(p.await.unwrap().unwrap(), 202);
    }
    let d = app.settled("hubspot", 1000, Duration::from_secs(120)).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{:?}",
        d.iter().find(|d| d.state != DeliveryState::Delivered)
    );
    let contacts = fake.contacts();
    assert_eq!(contacts.len(), 200);
    let emails: HashSet<String> = contacts
        .iter()
        .filter_map(|c| c.get("email").map(String::from))
        .collect();
    assert_eq!(emails.len(), 200);
    assert_eq!(fake.companies().len(), 7, "one company per domain");
    app.stop().await;
}

async fn custom_objects_are_upserted_by_their_unique_property_and_linked(api_version: &str) {
    let fake = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    let app = start_on(
        &fake,
        r#"notes = false
[[destinations.hubspot.custom_objects]]
object = "p_projects"
id_property = "project_code"
[destinations.hubspot.custom_objects.mapping]
project_name = "{{ contact.company }} onboarding"
project_code = { from = "contact.email", transform = "lower" }
project_status = { value = "Planned", picklist = ["planned", "active", "done"] }
"#,
        api_version,
    )
    .await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("ann@gamma.io", "Ann", "Lee", "Gamma", ""),
    )
    .await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("ann@gamma.io", "Ann", "Lee", "Gamma Two", ""),
    )
    .await;
    let d = app.settled("hubspot", 2, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    let projects = fake.records("p_projects");
    assert_eq!(projects.len(), 1, "upserted by project_code");
    let p = &projects[0];
    assert_eq!(p.get("project_code"), Some("ann@gamma.io"));
    assert_eq!(
        p.get("project_status"),
        Some("planned"),
        "picklist spelling"
    );
    assert_eq!(p.get("project_name"), Some("Gamma Two onboarding"));
    let contact = fake.contact_by_email("ann@gamma.io").unwrap();
    assert_eq!(
        fake.associated_ids("p_projects", &p.id, "contacts"),
        vec![contact.id]
    );
    assert_paths_of(&fake, api_version);
    app.stop().await;
}

/// A 429 holds every request of the destination at once: with two batches
/// under way (`concurrency = 2`), the one that already holds its rate cell
/// does not send after the other's 429 (HubSpot's daily quota is not spent
/// on a second 429).
#[tokio::test]
async fn a_429_stops_the_requests_already_waiting_to_go() {
    let fake = FakeHubSpot::start(HubSpotConfig {
        daily_limit: 1_000,
        ..Default::default()
    })
    .await
    .unwrap();
    fake.set_daily_usage(1_000);
    let app = start(
        &fake,
        "companies = false\nnotes = false\nconcurrency = 2\nbatch_size = 1\nrate_limit = \"4/1s\"",
    )
    .await;
    for i in 0..6 {
        app.post_json("/v1/forms/contact", &lead(&format!("held{i}@x.io")))
            .await;
    }
    eventually("the destination is paused", WAIT, || async {
        let s = app.store.destination_state("hubspot").await.ok()?;
        s.paused_until.filter(|_| {
            s.pause_reason
                .as_deref()
                .is_some_and(|r| r.contains("DAILY"))
        })
    })
    .await;
    // Every delivery that was claimed has finished its attempt.
    eventually("no delivery in flight", WAIT, || async {
        let d = app.deliveries("hubspot").await;
        (d.len() == 6 && d.iter().all(|d| d.state != DeliveryState::InFlight)).then_some(())
    })
    .await;
    let throttled: Vec<_> = fake
        .requests()
        .entries()
        .into_iter()
        .filter(|r| r.status == 429)
        .collect();
    assert_eq!(throttled.len(), 1, "{throttled:?}");
    let d = app.deliveries("hubspot").await;
    assert!(d.iter().all(|d| d.failures == 0), "{d:?}");
    app.stop().await;
}

/// A company created just before a crash, whose id was never saved, is not
/// created again: HubSpot's search index lags by seconds, so the restarted
/// process (here: a second one without the first one's ids) cannot find it
/// by domain, but the upsert by the unique `leadrelay_company_key` does.
#[tokio::test]
async fn a_company_whose_id_was_lost_is_upserted_not_created_again() {
    let fake = FakeHubSpot::start(HubSpotConfig {
        search_index_delay: Duration::from_secs(30),
        ..Default::default()
    })
    .await
    .unwrap();
    let first = start(&fake, "notes = false").await;
    first
        .post_json(
            "/v1/forms/contact",
            &full_lead("jane@acme.io", "Jane", "Doe", "Acme Inc", ""),
        )
        .await;
    let d = first.settled("hubspot", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Delivered, "{d:?}");
    first.stop().await;
    // The ids the first process kept are gone (a kill -9 before saving them).
    let second = start(&fake, "notes = false").await;
    second
        .post_json(
            "/v1/forms/contact",
            &full_lead("john@acme.io", "John", "Roe", "Acme Inc", ""),
        )
        .await;
    let d = second.settled("hubspot", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Delivered, "{d:?}");
    let companies = fake.companies();
    assert_eq!(companies.len(), 1, "{companies:?}");
    assert_eq!(companies[0].get("leadrelay_company_key"), Some("acme.io"));
    let john = fake.contact_by_email("john@acme.io").unwrap();
    assert_eq!(
        fake.associated_ids("contacts", &john.id, "companies"),
        vec![companies[0].id.clone()]
    );
    second.stop().await;
}

/// A portal without the unique company and deal properties still gets its
/// companies (searched by domain, then created) and deals (created, linked
/// to contact and company), as before.
#[tokio::test]
async fn without_the_key_properties_companies_and_deals_are_created_as_before() {
    let mut config = HubSpotConfig::default();
    config
        .custom_properties
        .retain(|p| p.name != "leadrelay_company_key" && p.name != "leadrelay_deal_key");
    let fake = FakeHubSpot::start(config).await.unwrap();
    let app = start(&fake, "notes = false\ndeals = true").await;
    for (email, name) in [("a@acme.io", "Ann"), ("b@globex.io", "Bob")] {
        app.post_json(
            "/v1/forms/contact",
            &full_lead(email, name, "Doe", "Some Co", ""),
        )
        .await;
    }
    let d = app.settled("hubspot", 2, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    assert_eq!(fake.companies().len(), 2);
    let deals = fake.deals();
    assert_eq!(deals.len(), 2);
    for deal in &deals {
        assert_eq!(deal.get("leadrelay_deal_key"), None);
        assert_eq!(fake.associated_ids("deals", &deal.id, "contacts").len(), 1);
        assert_eq!(fake.associated_ids("deals", &deal.id, "companies").len(), 1);
    }
    app.stop().await;
}

/// A deal opened just before a crash, whose id was never saved, is found
/// again by the retry: upserted by `leadrelay_deal_key` (the delivery id),
/// then linked to its contact and company.
#[tokio::test]
async fn deals_are_upserted_by_the_delivery_id_and_linked() {
    let fake = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    let app = start(&fake, "notes = false\ndeals = true").await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("jane@acme.io", "Jane", "Doe", "Acme Inc", ""),
    )
    .await;
    let d = app.settled("hubspot", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Delivered, "{d:?}");
    let deals = fake.deals();
    assert_eq!(deals.len(), 1);
    assert_eq!(
        deals[0].get("leadrelay_deal_key"),
        Some(d[0].id.to_string().as_str())
    );
    let jane = fake.contact_by_email("jane@acme.io").unwrap();
    assert_eq!(
        fake.associated_ids("deals", &deals[0].id, "contacts"),
        vec![jane.id.clone()]
    );
    assert_eq!(
        fake.associated_ids("deals", &deals[0].id, "companies"),
        vec![fake.companies()[0].id.clone()]
    );
    app.stop().await;
}

/// `meeting.booked` from a scheduling tool is a HubSpot meeting engagement
/// (title, start and end, outcome, linked to the contact), written once per
/// booking: an attempt whose answer was lost is found again by its marker
/// on the retry, a second event for the same booking (a vendor retry)
/// writes nothing new, and the booking's cancellation sets the meeting's
/// outcome to `CANCELED` instead of logging a note.
#[tokio::test]
async fn meetings_are_engagements_written_once_and_canceled_by_their_booking() {
    let fake = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    let app = start(&fake, "").await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("mia@delta.io", "Mia", "Wong", "Delta", ""),
    )
    .await;
    app.settled("hubspot", 1, WAIT).await;
    let contact = fake.contact_by_email("mia@delta.io").unwrap();

    let invitee = "https://api.calendly.com/scheduled_events/EV1/invitees/INV1";
    let booking = json!({
        "meeting_name": "Intro call",
        "start_time": "2031-03-04T09:30:00Z",
        "end_time": "2031-03-04T10:00:00Z",
    });
    // The meeting is written, but its answer arrives after the 2 s timeout:
    // the upsert and the association read pass, the create is answered late.
    fake.faults().push(Fault::Delay(Duration::ZERO), 2);
    fake.faults()
        .push(Fault::DelayAnswer(Duration::from_secs(3)), 1);
    ingest_event_with_refs(
        &app.store,
        "meeting.booked",
        "mia@delta.io",
        booking.clone(),
        &["hubspot"],
        vec![("calendly", "invitee", invitee)],
    )
    .await;
    let d = app.settled("hubspot", 2, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    assert!(
        d.iter().any(|d| d.failures == 1),
        "the late answer made a retry: {d:?}"
    );
    let meetings = fake.meetings();
    assert_eq!(
        meetings.len(),
        1,
        "the retry found the meeting: {meetings:?}"
    );
    let m = &meetings[0];
    assert_eq!(
        m.get("hs_meeting_title"),
        Some("Intro call booked with Mia Wong")
    );
    assert!(
        m.get("hs_meeting_start_time")
            .is_some_and(|t| t.starts_with("2031-03-04T09:30:00"))
    );
    assert!(
        m.get("hs_meeting_end_time")
            .is_some_and(|t| t.starts_with("2031-03-04T10:00:00"))
    );
    assert_eq!(m.get("hs_timestamp"), m.get("hs_meeting_start_time"));
    assert_eq!(m.get("hs_meeting_outcome"), Some("SCHEDULED"));
    assert!(
        m.get("hs_meeting_body")
            .is_some_and(|b| b.contains("leadrelay-event:")),
        "{m:?}"
    );
    assert_eq!(
        fake.associated_ids("meetings", &m.id, "contacts"),
        vec![contact.id.clone()]
    );
    assert!(fake.notes().is_empty(), "{:?}", fake.notes());

    // The same booking again (another event: a vendor retry, a replay).
    ingest_event_with_refs(
        &app.store,
        "meeting.booked",
        "mia@delta.io",
        booking,
        &["hubspot"],
        vec![("calendly", "invitee", invitee)],
    )
    .await;
    app.settled("hubspot", 3, WAIT).await;

    ingest_event_with_refs(
        &app.store,
        "meeting.canceled",
        "mia@delta.io",
        json!({"meeting_name": "Intro call", "cancel_reason": "conflict"}),
        &["hubspot"],
        vec![("calendly", "invitee", invitee)],
    )
    .await;
    let d = app.settled("hubspot", 4, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    let meetings = fake.meetings();
    assert_eq!(meetings.len(), 1, "one meeting per booking: {meetings:?}");
    assert_eq!(meetings[0].get("hs_meeting_outcome"), Some("CANCELED"));
    assert!(
        fake.notes().is_empty(),
        "the cancellation is on the meeting, not a note: {:?}",
        fake.notes()
    );
    app.stop().await;
}
