//! Pipedrive end to end: form POST → leadrelay → the fake Pipedrive's state.

use std::collections::HashSet;
use std::time::Duration;

use leadrelay::store::DeliveryState;
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::pipedrive::{FakePipedrive, PipedriveConfig};
use serde_json::json;

use crate::support::{
    CRM_FORM, MANY_CLIENTS_ON_ONE_THREAD, TestApp, full_lead, ingest_event, lead, post_until_stored,
};

const WAIT: Duration = Duration::from_secs(30);

fn config(base: &str, extra: &str) -> String {
    format!(
        r#"{CRM_FORM}
[destinations.pipedrive]
connector = "pipedrive"
base_url = "{base}"
allow_private_networks = true
token_env = "PIPEDRIVE_API_TOKEN"
purposes = ["crm"]
timeout = "2s"
{extra}

[[routes]]
name = "crm"
destinations = ["pipedrive"]
"#
    )
}

async fn start(fake: &FakePipedrive, extra: &str) -> TestApp {
    TestApp::builder(&config(&fake.base_url(), extra))
        .env("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN)
        .start()
        .await
}

fn roomy() -> PipedriveConfig {
    PipedriveConfig {
        burst_limit: 10_000,
        search_burst_limit: 10_000,
        daily_token_budget: 10_000_000,
        ..Default::default()
    }
}

#[tokio::test]
async fn form_post_creates_person_organization_lead_note_and_task() {
    let fake = FakePipedrive::start(PipedriveConfig::default())
        .await
        .unwrap();
    let app = start(&fake, "follow_up_task = true\nowner_id = 10001").await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead(
            "jane@acme.io",
            "Jane",
            "Doe",
            "Acme Inc",
            "Call me <soon> & often",
        ),
    )
    .await;
    let d = app.settled("pipedrive", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Delivered, "{:?}", d[0]);

    let p = fake.person_by_email("jane@acme.io").expect("person");
    assert_eq!(p.name, "Jane Doe");
    assert_eq!(p.primary_email(), Some("jane@acme.io"));
    assert_eq!(p.phones[0].value, "+14155552671");
    let orgs = fake.organizations();
    assert_eq!(orgs.len(), 1);
    assert_eq!(orgs[0].name, "Acme Inc");
    assert_eq!(p.org_id, Some(orgs[0].id));

    let leads = fake.leads();
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0].title, "Acme Inc (contact form)");
    assert_eq!(leads[0].person_id, Some(p.id));
    assert_eq!(leads[0].organization_id, Some(orgs[0].id));

    let notes = fake.notes();
    assert_eq!(notes.len(), 1);
    // The message, then the event's line that finds the note after a crash.
    assert!(
        notes[0]
            .content
            .starts_with("Call me &lt;soon&gt; &amp; often<p>leadrelay-event:"),
        "{}",
        notes[0].content
    );
    assert_eq!(notes[0].person_id, Some(p.id));
    assert_eq!(notes[0].lead_id.as_deref(), Some(leads[0].id.as_str()));

    let acts = fake.activities();
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].activity_type, "task");
    assert_eq!(acts[0].subject, "Follow up with Jane Doe");
    assert_eq!(acts[0].person_id, Some(p.id));
    assert!(acts[0].due_date.is_some());

    // A second lead for the same person: no new person, org or lead.
    app.post_json(
        "/v1/forms/contact",
        &full_lead("JANE@acme.io", "Jane", "Doe", "Acme Inc", ""),
    )
    .await;
    app.settled("pipedrive", 2, WAIT).await;
    assert_eq!(fake.persons().len(), 1);
    assert_eq!(fake.organizations().len(), 1);
    assert_eq!(fake.leads().len(), 1);
    assert_eq!(
        fake.person_by_email("jane@acme.io").unwrap().phones.len(),
        1,
        "phone not duplicated"
    );
    app.stop().await;
}

#[tokio::test]
async fn deals_meetings_replies_and_stage_changes() {
    let fake = FakePipedrive::start(PipedriveConfig::default())
        .await
        .unwrap();
    let app = start(
        &fake,
        r#"deals = true
deal_stage = 1
meeting_deal_stage = 3
[destinations.pipedrive.stage_map]
won = 5
"#,
    )
    .await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("max@beta.io", "Max", "Power", "Beta", "hi"),
    )
    .await;
    app.settled("pipedrive", 1, WAIT).await;
    let p = fake.person_by_email("max@beta.io").unwrap();
    let deals = fake.deals();
    assert_eq!(deals.len(), 1);
    assert_eq!((deals[0].pipeline_id, deals[0].stage_id), (1, 1));
    assert_eq!(deals[0].person_id, Some(p.id));
    assert!(fake.leads().is_empty(), "a deal instead of a lead");
    assert_eq!(fake.notes()[0].deal_id, Some(deals[0].id));

    ingest_event(
        &app.store,
        "reply.received",
        "max@beta.io",
        json!({"reply_text": "Yes please"}),
        &["pipedrive"],
    )
    .await;
    ingest_event(
        &app.store,
        "meeting.booked",
        "max@beta.io",
        json!({"meeting_name": "Demo", "start_time": "2030-01-02T15:00:00Z", "end_time": "2030-01-02T15:30:00Z"}),
        &["pipedrive"],
    )
    .await;
    ingest_event(
        &app.store,
        "deal.stage_changed",
        "max@beta.io",
        json!({"stage": "won"}),
        &["pipedrive"],
    )
    .await;
    let d = app.settled("pipedrive", 4, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    assert!(fake.notes().iter().any(
        |n| n.content.starts_with("Yes please<p>leadrelay-event:") && n.person_id == Some(p.id)
    ));
    let meeting = fake
        .activities()
        .into_iter()
        .find(|a| a.activity_type == "meeting")
        .expect("meeting");
    assert_eq!(meeting.due_date.as_deref(), Some("2030-01-02"));
    assert_eq!(meeting.due_time.as_deref(), Some("15:00"));
    assert_eq!(meeting.duration.as_deref(), Some("00:30"));
    assert_eq!(meeting.deal_id, Some(deals[0].id));
    assert_eq!(fake.deals().len(), 1);
    assert_eq!(
        fake.deals()[0].stage_id,
        5,
        "meeting moved it to 3, then won to 5"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_existing_persons_open_lead_is_reused_not_duplicated() {
    let fake = FakePipedrive::start(roomy()).await.unwrap();
    // As if an earlier attempt created person and lead, then died before
    // leadrelay kept their ids.
    let person = fake.seed_person("Lee Known", Some("lee@known.io"));
    let lead_id = fake.seed_lead(person, "Lee from the website");
    let app = start(&fake, "").await;
    app.post_json("/v1/forms/contact", &lead("lee@known.io"))
        .await;
    app.post_json("/v1/forms/contact", &lead("new@fresh.io"))
        .await;
    let d = app.settled("pipedrive", 2, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    let leads = fake.leads();
    assert_eq!(leads.len(), 2, "one lead per person: {leads:?}");
    assert_eq!(
        leads.iter().filter(|l| l.person_id == Some(person)).count(),
        1
    );
    assert!(leads.iter().any(|l| l.id == lead_id));
    // Only the person who existed before was asked about: a person created
    // by the attempt has no leads yet.
    let lists = fake
        .requests()
        .entries()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v1/leads")
        .count();
    assert_eq!(lists, 1);
    app.stop().await;
}

#[tokio::test]
async fn vendor_rejections_dead_letter_with_pipedrive_message() {
    let fake = FakePipedrive::start(PipedriveConfig::default())
        .await
        .unwrap();
    let app = start(
        &fake,
        r#"[destinations.pipedrive.mapping.person]
job_title = { value = "CEO" }
"#,
    )
    .await;
    app.post_json("/v1/forms/contact", &lead("x@y.io")).await;
    let d = app.settled("pipedrive", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Dead);
    let reason = d[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("Pipedrive HTTP 400")
            && reason.contains("Parameter 'job_title' is not allowed"),
        "{reason}"
    );
    app.stop().await;
}

#[tokio::test]
async fn slows_down_before_the_burst_limit_instead_of_hitting_429() {
    let fake = FakePipedrive::start(PipedriveConfig {
        burst_limit: 5,
        search_burst_limit: 5,
        burst_window: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let app = start(
        &fake,
        "rate_limit = \"off\"\nconcurrency = 1\ncompanies = false",
    )
    .await;
    for i in 0..5 {
        app.post_json("/v1/forms/contact", &lead(&format!("slow{i}@x.io")))
            .await;
    }
    let d = app.settled("pipedrive", 5, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    let throttled = fake
        .requests()
        .entries()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert_eq!(
        throttled, 0,
        "read x-ratelimit-remaining and waited for the reset"
    );
    assert_eq!(fake.persons().len(), 5);
    app.stop().await;
}

#[tokio::test]
async fn a_thousand_concurrent_leads_for_200_emails_make_200_persons_through_5xx_and_429_storms() {
    let fake = FakePipedrive::start(roomy()).await.unwrap();
    fake.faults().push(
        Fault::Status {
            status: 500,
            body: json!({"success": false, "error": "Internal server error"}).to_string(),
            headers: vec![],
        },
        10,
    );
    fake.faults().push(
        Fault::Status {
            status: 429,
            body:
                json!({"success": false, "error": "Rate limit has been exceeded", "errorCode": 429})
                    .to_string(),
            headers: vec![("retry-after".into(), "1".into())],
        },
        10,
    );
    fake.faults().push(Fault::Reset, 5);
    let app = start(
        &fake,
        &[
            "rate_limit = \"off\"\nconcurrency = 8\n[destinations.pipedrive.circuit]\nprobe_interval = \"100ms\"\nmax_probe_interval = \"500ms\"",
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
        let company = format!("Corp {}", (i % 200) % 7);
        posts.push(tokio::spawn(async move {
            post_until_stored(
                &client,
                &url,
                &full_lead(&email, "Pat", &format!("N{i}"), &company, ""),
            )
            .await
        }));
    }
    for p in posts {
        assert_eq!(p.await.unwrap().unwrap(), 202);
    }
    let d = app
        .settled("pipedrive", 1000, Duration::from_secs(180))
        .await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{:?}",
        d.iter().find(|d| d.state != DeliveryState::Delivered)
    );
    let persons = fake.persons();
    let emails: HashSet<String> = persons
        .iter()
        .filter_map(|p| p.primary_email().map(String::from))
        .collect();
    assert_eq!(persons.len(), 200, "no duplicate persons");
    assert_eq!(emails.len(), 200);
    assert_eq!(
        fake.organizations().len(),
        7,
        "one organization per company"
    );
    assert_eq!(fake.leads().len(), 200, "one lead per person");
    app.stop().await;
}

#[tokio::test]
async fn long_emails_are_matched_exactly_not_by_substring() {
    let fake = FakePipedrive::start(PipedriveConfig::default())
        .await
        .unwrap();
    let long = "longer.prefix.jane.doe@example-company.io";
    let shorter = "prefix.jane.doe@example-company.io";
    let seeded = fake.seed_person("Someone", Some(long));
    let app = start(&fake, "companies = false\nleads = false").await;
    app.post_json("/v1/forms/contact", &full_lead(long, "Jane", "Doe", "", ""))
        .await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead(shorter, "Jan", "Doe", "", ""),
    )
    .await;
    let d = app.settled("pipedrive", 2, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    let persons = fake.persons();
    assert_eq!(persons.len(), 2, "{persons:?}");
    let first = persons.iter().find(|p| p.id == seeded).unwrap();
    assert_eq!(
        first.name, "Jane Doe",
        "the existing person was found and updated"
    );
    assert!(
        persons.iter().any(|p| p.primary_email() == Some(shorter)),
        "a substring match is not the same person"
    );
    app.stop().await;
}

/// A repeat lead whose person fields did not change writes nothing to the
/// person (no PATCH); a changed field is written, alone. Covers a person
/// found by search (compared with the search hit), a kept one with a phone
/// (compared with the GET that phones need) and without (compared with what
/// was written).
#[tokio::test]
async fn an_unchanged_person_is_not_patched_on_a_repeat_lead() {
    let fake = FakePipedrive::start(roomy()).await.unwrap();
    let existing = fake.seed_person("Old Timer", Some("old@acme.io"));
    let app = start(&fake, "notes = false\ncompanies = false\nleads = false").await;
    let patches = |fake: &FakePipedrive| {
        fake.requests()
            .entries()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.path.starts_with("/api/v2/persons/"))
            .count()
    };
    let mut sent = 0;
    let mut post = |body: serde_json::Value| {
        sent += 1;
        let app = &app;
        let n = sent;
        async move {
            app.post_json("/v1/forms/contact", &body).await;
            app.settled("pipedrive", n, WAIT).await
        }
    };
    // Found by search, same name: nothing to write.
    let mut old = json!({"email": "old@acme.io", "first_name": "Old", "last_name": "Timer", "consent": "yes"});
    post(old.clone()).await;
    assert_eq!(patches(&fake), 0);
    // A new person, then the same lead twice more (with a phone).
    for _ in 0..3 {
        post(full_lead("jane@acme.io", "Jane", "Doe", "Acme", "")).await;
    }
    // Without a phone, kept id, same name.
    for _ in 0..2 {
        post(old.clone()).await;
    }
    assert_eq!(patches(&fake), 0, "{:?}", fake.requests().entries());
    // A change is written, once.
    old["first_name"] = json!("Older");
    post(old.clone()).await;
    post(old).await;
    assert_eq!(patches(&fake), 1);
    let p = fake
        .persons()
        .into_iter()
        .find(|p| p.id == existing)
        .unwrap();
    assert_eq!(p.name, "Older Timer");
    let d = app.deliveries("pipedrive").await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    app.stop().await;
}
