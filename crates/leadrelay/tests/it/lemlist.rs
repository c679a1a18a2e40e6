//! The `lemlist` connector against the fake lemlist: people enrolled in a
//! campaign once (a repeat submission or a person already in another
//! campaign is not enrolled again), only with consent, throttling honoured,
//! a refused address dead-lettered with lemlist's answer.

use leadrelay::store::DeliveryState;
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::lemlist::{FakeLemlist, LemlistConfig};
use serde_json::json;

use crate::notify_support::{config, post, settled};
use crate::support::TestApp;

async fn app(lemlist: &FakeLemlist) -> TestApp {
    let rest = format!(
        r#"
[destinations.sequence]
connector = "lemlist"
campaign_id = "{campaign}"
base_url = "{base}"
allow_private_networks = true
purposes = ["crm"]
[destinations.sequence.mapping.lead]
source = "{{{{ event.form }}}} form"

[[routes]]
name = "enroll"
destinations = ["sequence"]
"#,
        campaign = LemlistConfig::DEFAULT_CAMPAIGN,
        base = lemlist.base_url()
    );
    TestApp::builder(&config(&[], &rest))
        .env("LEMLIST_API_KEY", LemlistConfig::DEFAULT_API_KEY)
        .start()
        .await
}

#[tokio::test]
async fn people_are_enrolled_once_and_only_with_consent() {
    let lemlist = FakeLemlist::start(LemlistConfig::default()).await.unwrap();
    lemlist.seed_lead(LemlistConfig::OTHER_CAMPAIGN, "busy@example.com");
    let app = app(&lemlist).await;

    let ana = json!({"email": "Ana@Example.com", "first_name": "Ana", "last_name": "Lima",
        "company": "Acme", "consent": "yes"});
    let first = post(&app, "contact", &ana).await;
    let d = settled(&app, first, "sequence").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    // The same person again: lemlist answers 409, the delivery is done and
    // nobody is enrolled twice.
    let again = post(&app, "contact", &ana).await;
    let d = settled(&app, again, "sequence").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    let attempts = app.store.attempts(d.id).await.unwrap();
    assert_eq!(attempts.last().and_then(|a| a.status), Some(409));

    // Already in another campaign: deduplicate keeps them out of this one.
    let busy = post(
        &app,
        "contact",
        &json!({"email": "busy@example.com", "consent": "yes"}),
    )
    .await;
    let d = settled(&app, busy, "sequence").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);

    // No consent for the destination's purpose: skipped, nothing sent.
    let nope = post(&app, "contact", &json!({"email": "nope@example.com"})).await;
    let d = settled(&app, nope, "sequence").await;
    assert_eq!(d.state, DeliveryState::Skipped);
    assert!(
        d.reason.as_deref().unwrap_or("").contains("consent"),
        "{:?}",
        d.reason
    );

    let leads = lemlist.campaign_leads(LemlistConfig::DEFAULT_CAMPAIGN);
    assert_eq!(leads.len(), 1, "{leads:?}");
    let lead = &leads[0];
    assert_eq!(lead.email, "ana@example.com");
    assert_eq!(lead.fields["firstName"], "Ana");
    assert_eq!(lead.fields["lastName"], "Lima");
    assert_eq!(lead.fields["companyName"], "Acme");
    assert_eq!(lead.fields["source"], "contact form");
    assert_eq!(
        lemlist.campaign_leads(LemlistConfig::OTHER_CAMPAIGN).len(),
        1
    );
    assert!(
        !lemlist
            .requests()
            .entries()
            .iter()
            .any(|r| r.path.contains("nope")),
    );
}

#[tokio::test]
async fn throttling_is_honoured_and_a_refused_address_is_dead_lettered() {
    let lemlist = FakeLemlist::start(LemlistConfig::default()).await.unwrap();
    let app = app(&lemlist).await;
    lemlist.faults().push(
        Fault::Status {
            status: 429,
            body: r#"{"error":"Too many requests"}"#.into(),
            headers: vec![("retry-after".into(), "1".into())],
        },
        1,
    );
    let bo = post(
        &app,
        "contact",
        &json!({"email": "bo@example.com", "consent": "yes"}),
    )
    .await;
    let d = settled(&app, bo, "sequence").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    let statuses: Vec<Option<u16>> = app
        .store
        .attempts(d.id)
        .await
        .unwrap()
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(statuses, [Some(429), Some(200)]);

    let gone = post(
        &app,
        "contact",
        &json!({"email": LemlistConfig::UNSUBSCRIBED, "consent": "yes"}),
    )
    .await;
    let d = settled(&app, gone, "sequence").await;
    assert_eq!(d.state, DeliveryState::Dead);
    assert!(
        d.reason.as_deref().unwrap_or("").contains("unsubscribed"),
        "{:?}",
        d.reason
    );
    assert_eq!(
        lemlist
            .campaign_leads(LemlistConfig::DEFAULT_CAMPAIGN)
            .len(),
        1
    );
}

#[tokio::test]
async fn a_privacy_erase_removes_the_person_from_the_campaign() {
    let lemlist = FakeLemlist::start(LemlistConfig::default()).await.unwrap();
    let app = app(&lemlist).await;
    for who in ["erin@example.com", "keep@example.com"] {
        let id = post(&app, "contact", &json!({"email": who, "consent": "yes"})).await;
        let d = settled(&app, id, "sequence").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    }
    assert_eq!(
        lemlist
            .campaign_leads(LemlistConfig::DEFAULT_CAMPAIGN)
            .len(),
        2
    );
    let lead_id = lemlist
        .campaign_leads(LemlistConfig::DEFAULT_CAMPAIGN)
        .into_iter()
        .find(|l| l.email == "erin@example.com")
        .unwrap()
        .id;

    let (secret, record) = leadrelay::auth::generate_key("dpo", leadrelay::store::Role::Admin);
    app.store.create_api_key(record).await.unwrap();
    let report: serde_json::Value = app
        .client
        .post(app.url("/api/v1/privacy/erase"))
        .bearer_auth(&secret)
        .json(&json!({"email": "erin@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let erasures = report["remote_erasures"].as_array().unwrap();
    assert_eq!(erasures.len(), 1, "{report}");
    assert_eq!(erasures[0]["destination"], "sequence");
    assert_eq!(
        erasures[0]["records"],
        json!([{"object": format!("lemlist_lead:{}", LemlistConfig::DEFAULT_CAMPAIGN), "id": lead_id}])
    );
    let delivery: uuid::Uuid = erasures[0]["delivery_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    crate::support::eventually(
        "the erase request is delivered",
        std::time::Duration::from_secs(20),
        || async {
            let d = app.store.get_delivery(delivery).await.ok()??;
            (d.state == DeliveryState::Delivered).then_some(())
        },
    )
    .await;
    let left: Vec<String> = lemlist
        .campaign_leads(LemlistConfig::DEFAULT_CAMPAIGN)
        .into_iter()
        .map(|l| l.email)
        .collect();
    assert_eq!(left, ["keep@example.com"]);
    // The fake deletes only with action=remove (without it, it answers 400).
    let delete = lemlist
        .requests()
        .entries()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .expect("a DELETE request");
    assert_eq!(
        delete.path,
        format!(
            "/api/campaigns/{}/leads/{lead_id}",
            LemlistConfig::DEFAULT_CAMPAIGN
        )
    );
    assert_eq!(delete.status, 200);
}
