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
    app_with(lemlist, "").await
}

/// `enrollment`: the body of `[destinations.sequence.enrollment]`.
async fn app_with(lemlist: &FakeLemlist, enrollment: &str) -> TestApp {
    let rest = format!(
        r#"
[forms.unsubscribe]
event_type = "unsubscribed"
[forms.unsubscribe.fields.email]
type = "email"
required = true
[forms.bounce]
event_type = "email.bounced"
[forms.bounce.fields.email]
type = "email"
required = true

[destinations.sequence]
connector = "lemlist"
campaign_id = "{campaign}"
base_url = "{base}"
allow_private_networks = true
purposes = ["crm"]
[destinations.sequence.mapping.lead]
source = "{{{{ event.form }}}} form"
[destinations.sequence.enrollment]
{enrollment}

[[routes]]
name = "enroll"
forms = ["contact"]
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
    // The same person again: found in the campaign, the delivery is done
    // without a second POST and nobody is enrolled twice.
    let again = post(&app, "contact", &ana).await;
    let d = settled(&app, again, "sequence").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    let posts = lemlist
        .requests()
        .entries()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1);

    // Already in another campaign: the default policy (skip) keeps them
    // out of this one.
    let busy = post(
        &app,
        "contact",
        &json!({"email": "busy@example.com", "consent": "yes"}),
    )
    .await;
    let d = settled(&app, busy, "sequence").await;
    assert_eq!(d.state, DeliveryState::Skipped, "{:?}", d.reason);
    assert!(
        d.reason
            .as_deref()
            .unwrap_or("")
            .contains("another sequence"),
        "{:?}",
        d.reason
    );

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

/// The suppression list: a person who unsubscribed (or whose email
/// bounced), from any source, is never enrolled — checked at send time,
/// without a request to lemlist.
#[tokio::test]
async fn an_unsubscribed_or_bounced_person_is_never_enrolled() {
    let lemlist = FakeLemlist::start(LemlistConfig::default()).await.unwrap();
    let app = app(&lemlist).await;
    for (form, who) in [
        ("unsubscribe", "sue@example.com"),
        ("bounce", "bob@example.com"),
    ] {
        let resp = app
            .post_json(&format!("/v1/forms/{form}"), &json!({"email": who}))
            .await;
        assert_eq!(resp.status(), 202);
    }
    for (who, why) in [
        ("sue@example.com", "unsubscribed"),
        ("bob@example.com", "bounced"),
    ] {
        let id = post(&app, "contact", &json!({"email": who, "consent": "yes"})).await;
        let d = settled(&app, id, "sequence").await;
        assert_eq!(d.state, DeliveryState::Skipped, "{who}");
        let reason = d.reason.unwrap_or_default();
        assert!(reason.starts_with("suppressed: the person"), "{reason}");
        assert!(reason.contains(why), "{reason}");
    }
    let ok = post(
        &app,
        "contact",
        &json!({"email": "ok@example.com", "consent": "yes"}),
    )
    .await;
    assert_eq!(
        settled(&app, ok, "sequence").await.state,
        DeliveryState::Delivered
    );
    let leads: Vec<String> = lemlist.leads().into_iter().map(|l| l.email).collect();
    assert_eq!(leads, ["ok@example.com"]);
    assert!(
        lemlist
            .requests()
            .entries()
            .iter()
            .all(|r| !r.path.contains("sue") && !r.path.contains("bob")),
        "a suppressed person reached lemlist"
    );
}

/// The add limit: what does not fit in a window waits in the overflow
/// queue (visible, never dead-lettered) and goes out in the next windows.
#[tokio::test]
async fn overflow_over_the_add_limit_drains_in_the_next_window() {
    let lemlist = FakeLemlist::start(LemlistConfig::default()).await.unwrap();
    let app = app_with(&lemlist, "add_limit = \"3/2s\"").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let who = format!("p{i}@example.com");
        ids.push(post(&app, "contact", &json!({"email": who, "consent": "yes"})).await);
    }
    let mut overflowed = 0;
    for id in ids {
        let d = settled(&app, id, "sequence").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
        let attempts = app.store.attempts(d.id).await.unwrap();
        if let Some(a) = attempts.iter().find(|a| a.outcome == "overflow") {
            overflowed += 1;
            assert!(
                a.message
                    .as_deref()
                    .unwrap_or("")
                    .contains("add limit 3/2s"),
                "{a:?}"
            );
            assert!(a.status.is_none(), "nothing was sent for an overflow");
            // It waits exactly for the start of a later window.
            let next = a.next_attempt_at.expect("an overflow is scheduled");
            assert_eq!(next.timestamp_millis() % 2000, 0, "{next}");
            assert!(next > a.started_at);
        }
    }
    // At most 3 fit the window they arrived in (posting may span two).
    assert!(overflowed >= 1, "nothing waited for the next window");
    assert_eq!(
        lemlist
            .campaign_leads(LemlistConfig::DEFAULT_CAMPAIGN)
            .len(),
        7
    );
}

/// `already_enrolled = "queue"`: a person active in another campaign waits
/// in the overflow queue and is enrolled once that campaign has let them go.
#[tokio::test]
async fn a_queued_person_is_enrolled_when_the_other_sequence_ends() {
    let lemlist = FakeLemlist::start(LemlistConfig::default()).await.unwrap();
    lemlist.seed_lead(LemlistConfig::OTHER_CAMPAIGN, "busy@example.com");
    let app = app_with(
        &lemlist,
        "already_enrolled = \"queue\"\nqueue_recheck = \"1s\"",
    )
    .await;
    let id = post(
        &app,
        "contact",
        &json!({"email": "busy@example.com", "consent": "yes"}),
    )
    .await;
    let d = crate::support::eventually(
        "the delivery waits in the overflow queue",
        std::time::Duration::from_secs(20),
        || async {
            let d = app
                .store
                .deliveries_for_event(id)
                .await
                .ok()?
                .into_iter()
                .find(|d| d.destination == "sequence")?;
            d.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("overflow: ") && e.contains("another sequence"))
                .then_some(d)
        },
    )
    .await;
    assert_eq!(d.state, DeliveryState::Scheduled);
    assert!(
        lemlist
            .campaign_leads(LemlistConfig::DEFAULT_CAMPAIGN)
            .is_empty()
    );
    lemlist.remove_lead(LemlistConfig::OTHER_CAMPAIGN, "busy@example.com");
    let d = settled(&app, id, "sequence").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    assert_eq!(
        lemlist
            .campaign_leads(LemlistConfig::DEFAULT_CAMPAIGN)
            .len(),
        1
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
    // The 429 met the lookup; the next attempt's add answered 200.
    assert_eq!(statuses, [Some(429), Some(200)]);

    let gone = post(
        &app,
        "contact",
        &json!({"email": LemlistConfig::UNSUBSCRIBED, "consent": "yes"}),
    )
    .await;
    let d = settled(&app, gone, "sequence").await;
    // lemlist refuses the unsubscribed address: nobody to enroll, not a
    // failure that needs a person.
    assert_eq!(d.state, DeliveryState::Skipped);
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
