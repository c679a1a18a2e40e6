//! The `smartlead` connector against the fake Smartlead, under the shared
//! enrollment model: 500 leads for 100 people make exactly 100 campaign
//! leads (100 per request); a person in another campaign is skipped or
//! moved by policy; an unsubscribed address is never added; a full campaign
//! keeps the overflow waiting until there is room again.

use leadrelay::store::{DeliveryFilter, DeliveryState};
use leadrelay_fakes::smartlead::{FakeSmartlead, SmartleadCampaign, SmartleadConfig};
use serde_json::json;

use crate::notify_support::{config, post, settled};
use crate::support::TestApp;

async fn app(smartlead: &FakeSmartlead, enrollment: &str) -> TestApp {
    let rest = format!(
        r#"
[destinations.outbound]
connector = "smartlead"
campaign_id = {campaign}
base_url = "{base}"
allow_private_networks = true
purposes = ["crm"]
rate_limit = "8/1s"
[destinations.outbound.mapping.lead]
source = "{{{{ event.form }}}} form"
[destinations.outbound.enrollment]
{enrollment}

[[routes]]
name = "enroll"
forms = ["contact"]
destinations = ["outbound"]
"#,
        campaign = SmartleadConfig::DEFAULT_CAMPAIGN,
        base = smartlead.base_url()
    );
    TestApp::builder(&config(&[], &rest))
        .env("SMARTLEAD_API_KEY", SmartleadConfig::DEFAULT_API_KEY)
        .start()
        .await
}

fn fast_fake() -> SmartleadConfig {
    SmartleadConfig {
        per_minute: 600,
        ..Default::default()
    }
}

#[tokio::test]
async fn five_hundred_leads_for_a_hundred_people_make_a_hundred_leads() {
    let smartlead = FakeSmartlead::start(fast_fake()).await.unwrap();
    smartlead.seed_lead(SmartleadConfig::OTHER_CAMPAIGN, "busy@example.com");
    let app = app(&smartlead, "").await;

    let mut events = Vec::new();
    for round in 0..5 {
        let posts = (0..100).map(|i| {
            let body = json!({"email": format!("p{i}@example.com"), "first_name": format!("P{i}"),
                "company": "Acme", "consent": "yes", "message": format!("round {round}")});
            let app = &app;
            async move { post(app, "contact", &body).await }
        });
        events.extend(futures::future::join_all(posts).await);
    }
    for id in &events {
        let d = settled(&app, *id, "outbound").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    }
    let mut emails = smartlead.campaign_emails(SmartleadConfig::DEFAULT_CAMPAIGN);
    assert_eq!(emails.len(), 100, "exactly one Smartlead lead per person");
    emails.sort();
    emails.dedup();
    assert_eq!(emails.len(), 100);
    assert_eq!(smartlead.leads().len(), 101, "plus the seeded one");
    let lead = smartlead
        .leads()
        .into_iter()
        .find(|l| l.email == "p7@example.com")
        .unwrap();
    assert_eq!(lead.fields["first_name"], "P7");
    assert_eq!(lead.fields["company_name"], "Acme");
    assert_eq!(lead.fields["custom_fields"]["source"], "contact form");
    // Batches: far fewer requests than leads.
    let posts = smartlead
        .requests()
        .entries()
        .iter()
        .filter(|r| r.method == "POST" && r.status == 200)
        .count();
    assert!(posts <= 60, "{posts} add requests for 500 leads");

    // In another campaign (policy skip) and unsubscribed: never added.
    for who in ["busy@example.com", SmartleadConfig::UNSUBSCRIBED] {
        let id = post(&app, "contact", &json!({"email": who, "consent": "yes"})).await;
        let d = settled(&app, id, "outbound").await;
        assert_eq!(d.state, DeliveryState::Skipped, "{who}: {:?}", d.reason);
    }
    assert_eq!(
        smartlead
            .campaign_emails(SmartleadConfig::DEFAULT_CAMPAIGN)
            .len(),
        100
    );
}

#[tokio::test]
async fn move_takes_the_person_out_of_the_other_campaign() {
    let smartlead = FakeSmartlead::start(fast_fake()).await.unwrap();
    smartlead.seed_lead(SmartleadConfig::OTHER_CAMPAIGN, "busy@example.com");
    let app = app(&smartlead, "already_enrolled = \"move\"").await;
    let id = post(
        &app,
        "contact",
        &json!({"email": "busy@example.com", "consent": "yes"}),
    )
    .await;
    let d = settled(&app, id, "outbound").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    assert_eq!(
        smartlead.campaign_emails(SmartleadConfig::DEFAULT_CAMPAIGN),
        ["busy@example.com"]
    );
    assert!(
        smartlead
            .campaign_emails(SmartleadConfig::OTHER_CAMPAIGN)
            .is_empty()
    );
}

/// A full campaign: the overflow waits (visible, never dead-lettered) and
/// goes in once the campaign has room again.
#[tokio::test]
async fn a_full_campaign_keeps_the_overflow_queued_until_there_is_room() {
    let smartlead = FakeSmartlead::start(SmartleadConfig {
        campaigns: vec![SmartleadCampaign {
            id: SmartleadConfig::DEFAULT_CAMPAIGN,
            name: "small".into(),
            max_leads: Some(3),
        }],
        ..fast_fake()
    })
    .await
    .unwrap();
    let app = app(&smartlead, "queue_recheck = \"1s\"").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = json!({"email": format!("q{i}@example.com"), "consent": "yes"});
        ids.push(post(&app, "contact", &body).await);
    }
    let queued = crate::support::eventually(
        "two deliveries wait in the overflow queue",
        std::time::Duration::from_secs(20),
        || async {
            let filter = DeliveryFilter {
                destination: Some("outbound".into()),
                state: Some(DeliveryState::Scheduled),
                ..Default::default()
            };
            let waiting: Vec<_> = app
                .store
                .list_deliveries(&filter, None, 10)
                .await
                .ok()?
                .into_iter()
                .filter(|d| {
                    d.last_error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("overflow: ") && e.contains("full"))
                })
                .collect();
            (waiting.len() == 2).then_some(waiting)
        },
    )
    .await;
    assert_eq!(
        smartlead
            .campaign_emails(SmartleadConfig::DEFAULT_CAMPAIGN)
            .len(),
        3
    );
    // Two people finish their sequence: room for the two waiting.
    for done in smartlead
        .campaign_emails(SmartleadConfig::DEFAULT_CAMPAIGN)
        .into_iter()
        .take(2)
    {
        smartlead.remove_from_campaign(SmartleadConfig::DEFAULT_CAMPAIGN, &done);
    }
    for d in queued {
        let d = settled(&app, d.event_id, "outbound").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    }
    for id in ids {
        let d = settled(&app, id, "outbound").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    }
}
