//! Salesforce end to end: OAuth (refresh token and JWT bearer), form POST →
//! leadrelay → the fake org's records, and Salesforce's error codes.

use std::collections::HashSet;
use std::time::Duration;

use leadrelay::store::DeliveryState;
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::salesforce::{
    FakeSalesforce, SalesforceConfig, SalesforceConnectedApp, SalesforceValidationRule,
};
use serde_json::{Value, json};

use crate::support::{
    CRM_FORM, MANY_CLIENTS_ON_ONE_THREAD, TestApp, eventually, full_lead, ingest_event, lead,
    post_until_stored,
};

const WAIT: Duration = Duration::from_secs(30);

fn config(base: &str, extra: &str) -> String {
    format!(
        r#"{CRM_FORM}
[destinations.salesforce]
connector = "salesforce"
login_url = "{base}"
allow_private_networks = true
client_id_env = "SF_CLIENT_ID"
client_secret_env = "SF_CLIENT_SECRET"
refresh_token_env = "SF_REFRESH_TOKEN"
purposes = ["crm"]
timeout = "2s"
{extra}

[[routes]]
name = "crm"
destinations = ["salesforce"]
"#
    )
}

async fn start_with(fake: &FakeSalesforce, extra: &str, refresh_token: &str) -> TestApp {
    TestApp::builder(&config(&fake.base_url(), extra))
        .env("SF_CLIENT_ID", SalesforceConnectedApp::DEFAULT_CLIENT_ID)
        .env(
            "SF_CLIENT_SECRET",
            SalesforceConnectedApp::DEFAULT_CLIENT_SECRET,
        )
        .env("SF_REFRESH_TOKEN", refresh_token)
        .env("SF_JWT_KEY", SalesforceConnectedApp::TEST_PRIVATE_KEY_PEM)
        .start()
        .await
}

pub(crate) async fn start(fake: &FakeSalesforce, extra: &str) -> TestApp {
    start_with(fake, extra, SalesforceConfig::DEFAULT_REFRESH_TOKEN).await
}

fn token_requests(fake: &FakeSalesforce) -> usize {
    fake.requests()
        .entries()
        .iter()
        .filter(|r| r.path == "/services/oauth2/token")
        .count()
}

#[tokio::test]
async fn form_post_creates_a_lead_with_tasks_and_a_custom_record_in_one_composite() {
    let fake = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let app = start(
        &fake,
        r#"follow_up_task = true
lead_status = "Open - Not Contacted"
[[destinations.salesforce.custom_objects]]
object = "Project__c"
[destinations.salesforce.custom_objects.mapping]
Name = "{{ contact.company }} onboarding"
Status__c = { value = "planned", picklist = ["Planned", "Active", "Done"] }
Lead__c = "ids.person"
"#,
    )
    .await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead(
            "jane@acme.io",
            "Jane",
            "Doe",
            "Acme Inc",
            "Interested in the enterprise plan.",
        ),
    )
    .await;
    let d = app.settled("salesforce", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Delivered, "{:?}", d[0]);
    let leads = fake.leads();
    assert_eq!(leads.len(), 1);
    let l = &leads[0];
    assert_eq!(l.text("FirstName"), Some("Jane"));
    assert_eq!(l.text("LastName"), Some("Doe"));
    assert_eq!(l.text("Company"), Some("Acme Inc"));
    assert_eq!(l.text("Email"), Some("jane@acme.io"));
    assert_eq!(l.text("Phone"), Some("+14155552671"));
    assert_eq!(l.text("LeadSource"), Some("Web"));
    assert_eq!(l.text("Status"), Some("Open - Not Contacted"));
    assert_eq!(
        l.text("Description"),
        Some("Interested in the enterprise plan.")
    );

    let tasks = fake.tasks();
    assert_eq!(tasks.len(), 2, "the message (logged) and a follow-up");
    let logged = tasks
        .iter()
        .find(|t| t.text("Status") == Some("Completed"))
        .expect("logged message");
    assert_eq!(logged.text("WhoId"), Some(l.id.as_str()));
    assert_eq!(
        logged.text("Description"),
        Some("Interested in the enterprise plan.")
    );
    assert_eq!(logged.text("Subject"), Some("Message from Jane Doe"));
    let follow = tasks
        .iter()
        .find(|t| t.text("Status") == Some("Not Started"))
        .expect("follow-up");
    assert_eq!(follow.text("Subject"), Some("Follow up with Jane Doe"));
    assert_eq!(follow.text("Type"), Some("Call"));
    assert!(follow.text("ActivityDate").is_some());

    let projects = fake.records("Project__c");
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].text("Name"), Some("Acme Inc onboarding"));
    assert_eq!(projects[0].text("Status__c"), Some("Planned"));
    assert_eq!(projects[0].text("Lead__c"), Some(l.id.as_str()));

    let composite = fake
        .requests()
        .entries()
        .iter()
        .filter(|r| r.path.ends_with("/composite"))
        .count();
    assert_eq!(
        composite, 1,
        "several records for one event: one composite request"
    );
    assert_eq!(token_requests(&fake), 1, "the session is reused");

    // The kept id is reused: no lookup, no second lead.
    app.post_json(
        "/v1/forms/contact",
        &full_lead("jane@acme.io", "Jane", "Doe-Smith", "Acme Inc", ""),
    )
    .await;
    app.settled("salesforce", 2, WAIT).await;
    assert_eq!(fake.leads().len(), 1);
    assert_eq!(fake.leads()[0].text("LastName"), Some("Doe-Smith"));
    let queries = fake
        .requests()
        .entries()
        .iter()
        .filter(|r| r.path.ends_with("/query"))
        .count();
    assert_eq!(
        queries, 1,
        "the first delivery looked the email up; the second used the kept id"
    );
    app.stop().await;
}

#[tokio::test]
async fn jwt_bearer_flow_contacts_accounts_opportunities_meetings_and_stage_changes() {
    let fake = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let app = start(
        &fake,
        &format!(
            r#"auth = "jwt"
username = "{}"
jwt_private_key_env = "SF_JWT_KEY"
person_object = "Contact"
deals = true
meeting_deal_stage = "Needs Analysis"
[destinations.salesforce.stage_map]
won = "Closed Won"
"#,
            SalesforceConfig::DEFAULT_USERNAME
        ),
    )
    .await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("max@beta.io", "Max", "Power", "Beta LLC", ""),
    )
    .await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("eve@beta.io", "Eve", "Power", "Beta LLC", ""),
    )
    .await;
    let d = app.settled("salesforce", 2, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    let accounts = fake.accounts();
    assert_eq!(accounts.len(), 1, "one account per company name");
    assert_eq!(accounts[0].text("Name"), Some("Beta LLC"));
    let contacts = fake.contacts();
    assert_eq!(contacts.len(), 2);
    assert!(
        contacts
            .iter()
            .all(|c| c.text("AccountId") == Some(accounts[0].id.as_str()))
    );
    let opps = fake.opportunities();
    assert_eq!(opps.len(), 2, "one opportunity per person");
    assert!(
        opps.iter()
            .all(|o| o.text("StageName") == Some("Prospecting"))
    );
    assert!(
        opps.iter()
            .all(|o| o.text("AccountId") == Some(accounts[0].id.as_str()))
    );
    assert!(opps.iter().all(|o| o.text("CloseDate").is_some()));

    ingest_event(
        &app.store,
        "meeting.booked",
        "max@beta.io",
        json!({"meeting_name": "Demo", "start_time": "2030-01-02T15:00:00Z"}),
        &["salesforce"],
    )
    .await;
    app.settled("salesforce", 3, WAIT).await;
    let max = fake
        .contacts()
        .into_iter()
        .find(|c| c.text("Email") == Some("max@beta.io"))
        .unwrap();
    let meeting = fake
        .tasks()
        .into_iter()
        .find(|t| t.text("Type") == Some("Meeting"))
        .expect("meeting task");
    assert_eq!(meeting.text("WhoId"), Some(max.id.as_str()));
    assert_eq!(meeting.text("ActivityDate"), Some("2030-01-02"));
    assert!(
        meeting
            .text("Subject")
            .is_some_and(|s| s.contains("Demo booked"))
    );
    let max_opp = meeting
        .text("WhatId")
        .expect("linked to the opportunity")
        .to_string();
    assert_eq!(
        fake.record(&max_opp).unwrap().text("StageName"),
        Some("Needs Analysis")
    );

    ingest_event(
        &app.store,
        "deal.stage_changed",
        "max@beta.io",
        json!({"stage": "won"}),
        &["salesforce"],
    )
    .await;
    app.settled("salesforce", 4, WAIT).await;
    assert_eq!(
        fake.record(&max_opp).unwrap().text("StageName"),
        Some("Closed Won")
    );
    assert_eq!(fake.opportunities().len(), 2);
    assert!(
        fake.requests()
            .entries()
            .iter()
            .any(|r| r.path == "/services/oauth2/token")
    );
    app.stop().await;
}

#[tokio::test]
async fn expired_sessions_are_refreshed_and_the_call_retried_once() {
    let fake = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let app = start(&fake, "notes = false").await;
    app.post_json("/v1/forms/contact", &lead("one@x.io")).await;
    app.settled("salesforce", 1, WAIT).await;
    assert_eq!(token_requests(&fake), 1);
    fake.expire_all_sessions();
    app.post_json("/v1/forms/contact", &lead("two@x.io")).await;
    let d = app.settled("salesforce", 2, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    assert_eq!(
        token_requests(&fake),
        2,
        "one refresh after INVALID_SESSION_ID"
    );
    let two = app.delivery_for("salesforce", "two@x.io").await;
    let attempts = app.store.attempts(two.id).await.unwrap();
    assert_eq!(
        attempts.len(),
        1,
        "refreshed inside the attempt, not retried later"
    );
    assert_eq!(fake.leads().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_rejected_refresh_token_dead_letters_as_credentials_rejected() {
    let fake = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let app = start_with(&fake, "", "5Aep861-not-a-real-token").await;
    app.post_json("/v1/forms/contact", &lead("nope@x.io")).await;
    let d = app.settled("salesforce", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Dead);
    let reason = d[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("credentials rejected") && reason.contains("invalid_grant"),
        "{reason}"
    );
    let attempts = app.store.attempts(d[0].id).await.unwrap();
    for a in &attempts {
        let text = format!("{:?}", a);
        assert!(
            !text.contains("5Aep861-not-a-real-token"),
            "no token in the attempt log"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn external_id_upserts_and_duplicate_rules_link_to_the_existing_record() {
    let fake = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let existing = fake.seed(
        "Lead",
        json!({"LastName": "Old", "Company": "Acme", "Email": "dup@acme.io"}),
    );
    let app = start(
        &fake,
        r#"external_id_field = "External_Id__c"
notes = false
[destinations.salesforce.mapping.lead]
External_Id__c = { from = "contact.email", transform = "lower" }
"#,
    )
    .await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("dup@acme.io", "New", "Name", "Acme", ""),
    )
    .await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("fresh@acme.io", "Fresh", "Lead", "Acme", ""),
    )
    .await;
    let d = app.settled("salesforce", 2, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    let leads = fake.leads();
    assert_eq!(leads.len(), 2, "the duplicate was linked, not created");
    let linked = fake.record(&existing).unwrap();
    assert_eq!(linked.text("FirstName"), Some("New"));
    let fresh = leads
        .iter()
        .find(|l| l.text("Email") == Some("fresh@acme.io"))
        .unwrap();
    assert_eq!(fresh.text("External_Id__c"), Some("fresh@acme.io"));
    assert!(
        fake.requests()
            .entries()
            .iter()
            .any(|r| r.path.contains("/sobjects/Lead/External_Id__c/")),
        "upserted by the external id"
    );
    app.stop().await;
}

#[tokio::test]
async fn validation_rules_required_fields_lock_rows_and_request_limits() {
    let fake = FakeSalesforce::start(SalesforceConfig {
        validation_rules: vec![SalesforceValidationRule::new(
            "Lead",
            "No_Test_Companies",
            "Test companies are not allowed",
            Some("Company"),
            |m| m.get("Company") == Some(&Value::String("Test".into())),
        )],
        ..Default::default()
    })
    .await
    .unwrap();
    let app = start(&fake, "notes = false").await;
    fake.fail_next_writes_with_lock(2);
    app.post_json(
        "/v1/forms/contact",
        &full_lead("locked@x.io", "L", "Ock", "Locks", ""),
    )
    .await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("test@x.io", "T", "Est", "Test", ""),
    )
    .await;
    app.settled("salesforce", 2, WAIT).await;
    let locked = app.delivery_for("salesforce", "locked@x.io").await;
    assert_eq!(
        locked.state,
        DeliveryState::Delivered,
        "UNABLE_TO_LOCK_ROW is retried: {locked:?}"
    );
    assert!(locked.failures >= 1);
    let invalid = app.delivery_for("salesforce", "test@x.io").await;
    assert_eq!(invalid.state, DeliveryState::Dead);
    assert_eq!(
        invalid.reason.as_deref(),
        Some(
            "Salesforce FIELD_CUSTOM_VALIDATION_EXCEPTION: Test companies are not allowed (fields Company)"
        )
    );
    app.stop().await;

    // A required field the mapping leaves out.
    let fake = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let app = start(
        &fake,
        "notes = false\n[destinations.salesforce.mapping.lead]\nCompany = false",
    )
    .await;
    app.post_json("/v1/forms/contact", &lead("req@x.io")).await;
    let d = app.settled("salesforce", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Dead);
    assert_eq!(
        d[0].reason.as_deref(),
        Some(
            "Salesforce REQUIRED_FIELD_MISSING: Required fields are missing: [Company] (fields Company)"
        )
    );

    // The org's API limit: the destination pauses, nothing fails.
    fake.exhaust_api_limit();
    app.post_json("/v1/forms/contact", &lead("limit@x.io"))
        .await;
    eventually("paused by REQUEST_LIMIT_EXCEEDED", WAIT, || async {
        let s = app.store.destination_state("salesforce").await.ok()?;
        s.pause_reason
            .filter(|r| r.contains("REQUEST_LIMIT_EXCEEDED"))
    })
    .await;
    let d = app.deliveries("salesforce").await;
    let pending = d
        .iter()
        .find(|x| x.state.is_active())
        .expect("still pending");
    assert_eq!(pending.failures, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_thousand_concurrent_leads_for_200_emails_make_200_leads_through_5xx_storms() {
    let fake = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    fake.faults().push(
        Fault::Status {
            status: 503,
            body: json!([{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}])
                .to_string(),
            headers: vec![],
        },
        15,
    );
    fake.faults().push(Fault::Reset, 5);
    fake.fail_next_writes_with_lock(10);
    let app = start(
        &fake,
        &[
            "concurrency = 8\nnotes = false\n[destinations.salesforce.circuit]\nprobe_interval = \"100ms\"\nmax_probe_interval = \"500ms\"",
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
    let d = app
        .settled("salesforce", 1000, Duration::from_secs(180))
        .await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{:?}",
        d.iter().find(|d| d.state != DeliveryState::Delivered)
    );
    let leads = fake.leads();
    let emails: HashSet<String> = leads
        .iter()
        .filter_map(|l| l.text("Email").map(String::from))
        .collect();
    assert_eq!(leads.len(), 200, "no duplicate leads");
    assert_eq!(emails.len(), 200);
    app.stop().await;
}

/// The standard Lead duplicate rule also matches Contacts, fuzzily (name +
/// company). Lead mode: a lead whose email is already a Contact's gets its
/// tasks on that Contact (no Lead, no PATCH of a Contact id as a Lead); a
/// lead that only shares a name and company with a Contact is another
/// person: never linked to that Contact, saved through the rule's alert.
#[tokio::test]
async fn a_duplicate_rule_match_on_a_contact_is_honoured_by_entity_type_and_email() {
    let fake = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let account = fake.seed("Account", json!({"Name": "Acme"}));
    let same = fake.seed(
        "Contact",
        json!({"FirstName": "Jane", "LastName": "Doe", "Email": "jane@acme.io", "AccountId": account}),
    );
    let globex = fake.seed("Account", json!({"Name": "Globex"}));
    let namesake = fake.seed(
        "Contact",
        json!({"FirstName": "John", "LastName": "Smith", "Email": "john@globex.io", "AccountId": globex}),
    );
    let app = start(&fake, "").await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("jane@acme.io", "Jane", "Doe", "Acme", "Call me back."),
    )
    .await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead(
            "john.smith@gmail.com",
            "John",
            "Smith",
            "Globex",
            "Pricing?",
        ),
    )
    .await;
    let d = app.settled("salesforce", 2, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );

    let leads = fake.leads();
    assert_eq!(leads.len(), 1, "only the namesake became a Lead: {leads:?}");
    let john = &leads[0];
    assert_eq!(john.text("Email"), Some("john.smith@gmail.com"));
    let tasks = fake.tasks();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let on = |who: &str| {
        tasks
            .iter()
            .find(|t| t.text("WhoId") == Some(who))
            .unwrap_or_else(|| panic!("a task on {who}: {tasks:?}"))
    };
    assert_eq!(on(&same).text("Description"), Some("Call me back."));
    assert_eq!(on(&john.id).text("Description"), Some("Pricing?"));
    assert!(
        tasks
            .iter()
            .all(|t| t.text("WhoId") != Some(namesake.as_str()))
    );
    assert!(
        !fake
            .requests()
            .entries()
            .iter()
            .any(|r| r.path.contains(&format!("/sobjects/Lead/{}", &same[..15]))),
        "never a Contact id as a Lead"
    );

    // The next event about Jane goes straight to her Contact.
    app.post_json(
        "/v1/forms/contact",
        &full_lead("jane@acme.io", "Jane", "Doe", "Acme", "Second message."),
    )
    .await;
    app.settled("salesforce", 3, WAIT).await;
    assert_eq!(fake.leads().len(), 1);
    let tasks = fake.tasks();
    assert_eq!(
        tasks
            .iter()
            .filter(|t| t.text("WhoId") == Some(same.as_str()))
            .count(),
        2
    );
    app.stop().await;
}

/// A duplicate rule that blocks, matching someone with another email: the
/// delivery dead-letters naming the rule and the matched record, and the
/// attempt shows the failed subrequest's 400, not the composite's 200.
#[tokio::test]
async fn a_blocking_duplicate_rule_on_another_person_dead_letters_naming_the_match() {
    let fake = FakeSalesforce::start(SalesforceConfig {
        duplicate_rules_block: true,
        ..SalesforceConfig::default()
    })
    .await
    .unwrap();
    let globex = fake.seed("Account", json!({"Name": "Globex"}));
    let namesake = fake.seed(
        "Contact",
        json!({"FirstName": "John", "LastName": "Smith", "Email": "john@globex.io", "AccountId": globex}),
    );
    let app = start(&fake, "").await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead(
            "john.smith@gmail.com",
            "John",
            "Smith",
            "Globex",
            "Pricing?",
        ),
    )
    .await;
    let d = app.settled("salesforce", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Dead, "{d:?}");
    let reason = d[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("Standard_Lead_Duplicate_Rule")
            && reason.contains(&format!("Contact {namesake}"))
            && reason.contains("Standard_Contact_Match_Rule_v1_1"),
        "{reason}"
    );
    let attempts = app.store.attempts(d[0].id).await.unwrap();
    let last = attempts.last().unwrap();
    assert_eq!(last.status, Some(400), "{last:?}");
    assert!(
        last.url
            .as_deref()
            .unwrap_or_default()
            .ends_with("/composite"),
        "{last:?}"
    );
    assert!(fake.leads().is_empty());
    assert!(fake.tasks().is_empty());
    app.stop().await;
}

/// Opportunities and tasks are upserted by `LeadRelay_Key__c` (the delivery
/// id), so a retry after a crash updates them instead of writing them again;
/// an org without the field gets them created, as before.
#[tokio::test]
async fn opportunities_and_tasks_are_upserted_by_the_key_field_or_created_without_it() {
    let extra = "person_object = \"Contact\"\ndeals = true\nfollow_up_task = true";
    let keyed = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let mut bare_config = SalesforceConfig::default();
    bare_config
        .custom_fields
        .retain(|(_, f)| f.name != "LeadRelay_Key__c");
    let bare = FakeSalesforce::start(bare_config).await.unwrap();
    for fake in [&keyed, &bare] {
        let app = start(fake, extra).await;
        app.post_json(
            "/v1/forms/contact",
            &full_lead("max@beta.io", "Max", "Power", "Beta LLC", "Call me."),
        )
        .await;
        let d = app.settled("salesforce", 1, WAIT).await;
        assert_eq!(d[0].state, DeliveryState::Delivered, "{:?}", d[0]);
        let opps = fake.opportunities();
        let tasks = fake.tasks();
        assert_eq!(opps.len(), 1);
        assert_eq!(tasks.len(), 2, "the message and the follow-up");
        if std::ptr::eq(fake, &keyed) {
            let id = d[0].id.to_string();
            assert_eq!(opps[0].text("LeadRelay_Key__c"), Some(id.as_str()));
            let mut keys: Vec<_> = tasks
                .iter()
                .filter_map(|t| t.text("LeadRelay_Key__c").map(str::to_string))
                .collect();
            keys.sort();
            assert_eq!(keys, vec![format!("{id}-note"), format!("{id}-task")]);
        } else {
            assert!(opps[0].text("LeadRelay_Key__c").is_none());
        }
        app.stop().await;
    }
}

/// A form submission makes the lead a member of the campaign its UTM
/// campaign names (or its form's); the member is found before it is
/// written, so neither a second lead of the person nor a process that lost
/// the kept ids (a retry after a crash) adds a second membership.
#[tokio::test]
async fn a_form_submission_joins_its_campaign_once_across_a_retry() {
    let fake = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let webinar = fake.seed(
        "Campaign",
        json!({"Name": "Spring Webinar", "IsActive": true, "Type": "Webinar"}),
    );
    // An inactive campaign of the same name is never joined.
    fake.seed(
        "Campaign",
        json!({"Name": "Old Webinar", "IsActive": false}),
    );
    let members = |fake: &FakeSalesforce| fake.records("CampaignMember");
    let with_utm = |email: &str, campaign: &str| {
        let mut l = lead(email);
        l["last_name"] = json!("Doe");
        l["company"] = json!("Acme");
        l["utm_campaign"] = json!(campaign);
        l
    };
    let settings = |status: &str| {
        format!(
            "[destinations.salesforce.campaign_members]\nstatus = \"{status}\"\nutm_campaign = true\n"
        )
    };
    let first = start(&fake, &settings("Sent")).await;
    first
        .post_json(
            "/v1/forms/contact",
            &with_utm("ann@acme.io", "Spring Webinar"),
        )
        .await;
    first
        .post_json("/v1/forms/contact", &with_utm("old@acme.io", "Old Webinar"))
        .await;
    let d = first.settled("salesforce", 2, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    let lead_id = fake
        .leads()
        .into_iter()
        .find(|l| l.text("Email") == Some("ann@acme.io"))
        .unwrap()
        .id;
    let m = members(&fake);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].text("CampaignId"), Some(webinar.as_str()));
    assert_eq!(m[0].text("LeadId"), Some(lead_id.as_str()));
    assert_eq!(m[0].text("Status"), Some("Sent"));
    // The same person again: the kept member is updated.
    first
        .post_json(
            "/v1/forms/contact",
            &with_utm("ann@acme.io", "Spring Webinar"),
        )
        .await;
    first.settled("salesforce", 3, WAIT).await;
    assert_eq!(members(&fake).len(), 1);
    first.stop().await;

    // The ids the first process kept are lost: the member is found by a
    // query and updated, not created again.
    let second = start(&fake, &settings("Responded")).await;
    second
        .post_json(
            "/v1/forms/contact",
            &with_utm("ann@acme.io", "Spring Webinar"),
        )
        .await;
    let d = second.settled("salesforce", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Delivered, "{d:?}");
    let m = members(&fake);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].text("Status"), Some("Responded"));
    let posts = fake
        .requests()
        .entries()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/sobjects/CampaignMember"))
        .count();
    assert_eq!(posts, 1, "created once");
    second.stop().await;
}
