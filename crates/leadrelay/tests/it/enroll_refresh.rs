//! The sequence refresh of tools that send no "sequence finished" webhook
//! (Smartlead): a person who finishes the campaign in Smartlead becomes
//! `completed` after a refresh round, and their enrollment queued behind
//! it (`already_enrolled = "queue"`, rechecked only hourly) goes out at
//! once; a person stopped there becomes `exited`. A Smartlead 500 during a
//! round changes nothing until a later round succeeds. Woodpecker the
//! same, its rounds waiting their turn with the deliveries (one request
//! at a time).

use leadrelay::store::{DeliveryState, MEMBERSHIP_ACTIVE, MEMBERSHIP_COMPLETED, Role};
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::smartlead::{FakeSmartlead, SmartleadConfig};
use leadrelay_fakes::woodpecker::{FakeWoodpecker, WoodpeckerConfig};
use reqwest::StatusCode;
use serde_json::json;

use crate::admin::get;
use crate::notify_support::{WAIT, config, post, settled};
use crate::support::{TestApp, eventually};

async fn app(smartlead: &FakeSmartlead) -> TestApp {
    tool_app(
        "smartlead",
        &smartlead.base_url(),
        (
            SmartleadConfig::DEFAULT_CAMPAIGN,
            SmartleadConfig::OTHER_CAMPAIGN,
        ),
        ("SMARTLEAD_API_KEY", SmartleadConfig::DEFAULT_API_KEY),
    )
    .await
}

/// `outbound` (refreshed every second) and `nurture` (queues people who
/// are in another campaign; not refreshed) in two campaigns of `tool`.
async fn tool_app(
    tool: &str,
    base: &str,
    (first, second): (u64, u64),
    (key_env, key): (&str, &str),
) -> TestApp {
    let rest = format!(
        r#"
[destinations.outbound]
connector = "{tool}"
campaign_id = {first}
base_url = "{base}"
allow_private_networks = true
purposes = ["crm"]
rate_limit = "8/1s"
timeout = "2s"
[destinations.outbound.enrollment]
refresh = "1s"

[destinations.nurture]
connector = "{tool}"
campaign_id = {second}
base_url = "{base}"
allow_private_networks = true
purposes = ["crm"]
rate_limit = "8/1s"
[destinations.nurture.enrollment]
already_enrolled = "queue"
queue_recheck = "1h"
refresh = "off"

[[routes]]
name = "enroll"
forms = ["contact"]
destinations = ["outbound"]

[[routes]]
name = "nurture"
forms = ["demo"]
destinations = ["nurture"]
"#,
    );
    TestApp::builder(&config(&[], &rest))
        .env(key_env, key)
        .start()
        .await
}

fn fast_fake() -> SmartleadConfig {
    SmartleadConfig {
        per_minute: 600,
        ..Default::default()
    }
}

/// The person's memberships through the admin API: (destination, state,
/// last change).
async fn memberships(app: &TestApp, key: &str, email: &str) -> Vec<(String, String, String)> {
    let id = app
        .store
        .find_contact_by_email(email)
        .await
        .unwrap()
        .unwrap()
        .id;
    let (s, m) = get(app, key, &format!("/api/v1/contacts/{id}/memberships")).await;
    assert_eq!(s, StatusCode::OK, "{m}");
    m["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let t = |k: &str| i[k].as_str().unwrap_or_default().to_string();
            (t("destination"), t("state"), t("last_change"))
        })
        .collect()
}

async fn state_in(app: &TestApp, key: &str, email: &str, destination: &str) -> Option<String> {
    memberships(app, key, email)
        .await
        .into_iter()
        .find(|m| m.0 == destination)
        .map(|m| m.1)
}

#[tokio::test]
async fn a_finished_campaign_completes_the_membership_and_releases_the_queue() {
    let smartlead = FakeSmartlead::start(fast_fake()).await.unwrap();
    let app = app(&smartlead).await;
    let admin = crate::admin::key(&app, "ops", Role::Admin).await;
    let dana = "dana@example.com";

    let first = post(&app, "contact", &json!({"email": dana, "consent": "yes"})).await;
    let d = settled(&app, first, "outbound").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    assert_eq!(
        state_in(&app, &admin, dana, "outbound").await.as_deref(),
        Some(MEMBERSHIP_ACTIVE)
    );

    // Nurture refuses her while she is in the first campaign: queued for
    // an hour.
    let second = post(&app, "demo", &json!({"email": dana, "consent": "yes"})).await;
    eventually("Dana waits in the overflow queue", WAIT, || async {
        let d = app
            .store
            .deliveries_for_event(second)
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.destination == "nurture")?;
        (d.state == DeliveryState::Scheduled).then_some(d)
    })
    .await;

    // Rounds read the campaign while she is still in it: nothing changes.
    let reads = || {
        smartlead
            .requests()
            .entries()
            .into_iter()
            .filter(|r| {
                r.method == "GET"
                    && r.path
                        == format!(
                            "/api/v1/campaigns/{}/leads",
                            SmartleadConfig::DEFAULT_CAMPAIGN
                        )
            })
            .count()
    };
    eventually("a refresh round reads the campaign", WAIT, || async {
        (reads() > 0).then_some(())
    })
    .await;
    assert_eq!(
        state_in(&app, &admin, dana, "outbound").await.as_deref(),
        Some(MEMBERSHIP_ACTIVE)
    );

    // She finishes the campaign in Smartlead (no webhook): the next round
    // completes her membership and releases the queued enrollment.
    assert!(smartlead.set_status(SmartleadConfig::DEFAULT_CAMPAIGN, dana, "COMPLETED"));
    let change = eventually("the membership completes", WAIT, || async {
        memberships(&app, &admin, dana)
            .await
            .into_iter()
            .find(|m| m.0 == "outbound" && m.1 == MEMBERSHIP_COMPLETED)
            .map(|m| m.2)
    })
    .await;
    assert!(
        change.contains("smartlead lists the sequence finished"),
        "{change}"
    );
    let d = settled(&app, second, "nurture").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    assert!(
        smartlead
            .campaign_emails(SmartleadConfig::OTHER_CAMPAIGN)
            .contains(&dana.to_string())
    );
    assert_eq!(
        state_in(&app, &admin, dana, "nurture").await.as_deref(),
        Some(MEMBERSHIP_ACTIVE),
        "the nurture destination does not refresh (refresh = \"off\")"
    );

    // Someone stopped in Smartlead's app leaves the sequence: `exited`.
    let eli = "eli@example.com";
    let lead = post(&app, "contact", &json!({"email": eli, "consent": "yes"})).await;
    settled(&app, lead, "outbound").await;
    assert!(smartlead.set_status(SmartleadConfig::DEFAULT_CAMPAIGN, eli, "STOPPED"));
    eventually("the stopped person exits", WAIT, || async {
        (state_in(&app, &admin, eli, "outbound").await.as_deref() == Some("exited")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_vendor_error_leaves_memberships_unchanged_until_a_round_succeeds() {
    let smartlead = FakeSmartlead::start(fast_fake()).await.unwrap();
    let app = app(&smartlead).await;
    let admin = crate::admin::key(&app, "ops", Role::Admin).await;
    let ana = "ana@example.com";
    let lead = post(&app, "contact", &json!({"email": ana, "consent": "yes"})).await;
    let d = settled(&app, lead, "outbound").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);

    // Every request fails for now; she finishes meanwhile.
    let list_path = format!(
        "/api/v1/campaigns/{}/leads",
        SmartleadConfig::DEFAULT_CAMPAIGN
    );
    let before = smartlead.requests().count();
    smartlead.faults().push(
        Fault::Status {
            status: 500,
            body: json!({"error": "Internal server error"}).to_string(),
            headers: Vec::new(),
        },
        1000,
    );
    assert!(smartlead.set_status(SmartleadConfig::DEFAULT_CAMPAIGN, ana, "COMPLETED"));
    let failed_reads = || {
        smartlead.requests().entries()[before..]
            .iter()
            .filter(|r| r.method == "GET" && r.path == list_path && r.status == 500)
            .count()
    };
    eventually("three rounds fail", WAIT, || async {
        (failed_reads() >= 3).then_some(())
    })
    .await;
    // Every round so far failed, and none changed her membership.
    assert!(
        smartlead.requests().entries()[before..]
            .iter()
            .all(|r| r.status == 500),
        "only failed requests since the faults"
    );
    assert_eq!(
        state_in(&app, &admin, ana, "outbound").await.as_deref(),
        Some(MEMBERSHIP_ACTIVE)
    );
    // Smartlead answers again: the next round completes her.
    smartlead.faults().clear();
    eventually("a later round completes the membership", WAIT, || async {
        (state_in(&app, &admin, ana, "outbound").await.as_deref() == Some(MEMBERSHIP_COMPLETED))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn woodpecker_finished_prospects_complete_and_release_the_queue() {
    let woodpecker = FakeWoodpecker::start(WoodpeckerConfig::default())
        .await
        .unwrap();
    let app = tool_app(
        "woodpecker",
        &woodpecker.base_url(),
        (
            WoodpeckerConfig::DEFAULT_CAMPAIGN,
            WoodpeckerConfig::OTHER_CAMPAIGN,
        ),
        ("WOODPECKER_API_KEY", WoodpeckerConfig::DEFAULT_API_KEY),
    )
    .await;
    let admin = crate::admin::key(&app, "ops", Role::Admin).await;
    let (fay, gil) = ("fay@example.com", "gil@example.com");
    for email in [fay, gil] {
        let lead = post(&app, "contact", &json!({"email": email, "consent": "yes"})).await;
        let d = settled(&app, lead, "outbound").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    }
    let second = post(&app, "demo", &json!({"email": fay, "consent": "yes"})).await;
    eventually("Fay waits in the overflow queue", WAIT, || async {
        let d = app
            .store
            .deliveries_for_event(second)
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.destination == "nurture")?;
        (d.state == DeliveryState::Scheduled).then_some(d)
    })
    .await;

    woodpecker.set_campaign_status(WoodpeckerConfig::DEFAULT_CAMPAIGN, fay, "FINISHED");
    woodpecker.set_campaign_status(WoodpeckerConfig::DEFAULT_CAMPAIGN, gil, "STOPPED");
    eventually("Fay completes", WAIT, || async {
        (state_in(&app, &admin, fay, "outbound").await.as_deref() == Some(MEMBERSHIP_COMPLETED))
            .then_some(())
    })
    .await;
    let d = settled(&app, second, "nurture").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    assert!(
        woodpecker
            .active_in(WoodpeckerConfig::OTHER_CAMPAIGN)
            .contains(&fay.to_string())
    );
    eventually("Gil exits", WAIT, || async {
        (state_in(&app, &admin, gil, "outbound").await.as_deref() == Some("exited")).then_some(())
    })
    .await;
    assert_eq!(woodpecker.overlapping(), 0, "one request at a time");
}
