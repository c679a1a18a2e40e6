//! The real binary against the fake sequence tools: `kill -9` in the middle
//! of enrolling 500 leads for 100 people into Woodpecker (one request at a
//! time, one person per request) and Smartlead (100 people per request).
//! After the restart every person is exactly one vendor record, in the
//! campaign once, with exactly one membership per destination.

use std::time::Duration;

use leadrelay::store::{DeliveryFilter, DeliveryState, MEMBERSHIP_ACTIVE};
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::smartlead::{FakeSmartlead, SmartleadConfig};
use leadrelay_fakes::woodpecker::{FakeWoodpecker, WoodpeckerConfig};

use crate::binary::{Server, http_client, open_store, write_config};
use crate::support::{CRM_FORM, TestDb, eventually, full_lead};

const PEOPLE: usize = 100;
const LEADS: usize = 500;

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("WOODPECKER_API_KEY", WoodpeckerConfig::DEFAULT_API_KEY),
        ("SMARTLEAD_API_KEY", SmartleadConfig::DEFAULT_API_KEY),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_enrollment_leaves_one_vendor_record_and_one_membership_per_person() {
    let wp = FakeWoodpecker::start(WoodpeckerConfig::default())
        .await
        .unwrap();
    let sl = FakeSmartlead::start(SmartleadConfig {
        per_minute: 100_000,
        per_second: 100_000,
        ..Default::default()
    })
    .await
    .unwrap();
    // Answers come late (the vendor has already acted): the kill swallows
    // some of them, so the restarted process must find what it made.
    wp.faults()
        .push(Fault::DelayAnswer(Duration::from_millis(40)), 100_000);
    sl.faults()
        .push(Fault::DelayAnswer(Duration::from_millis(300)), 100_000);

    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(dir.path()).await;
    let body = format!(
        r#"{form}
[destinations.woodpecker]
connector = "woodpecker"
campaign_id = {wp_campaign}
base_url = "{wp_url}"
allow_private_networks = true
purposes = ["crm"]
timeout = "5s"

[destinations.smartlead]
connector = "smartlead"
campaign_id = {sl_campaign}
base_url = "{sl_url}"
allow_private_networks = true
purposes = ["crm"]
timeout = "5s"
rate_limit = "off"
batch_size = 20

[[routes]]
name = "enroll"
forms = ["contact"]
destinations = ["woodpecker", "smartlead"]
"#,
        form = CRM_FORM.replace("[delivery]\n", "[delivery]\nlease = \"3s\"\n"),
        wp_campaign = WoodpeckerConfig::DEFAULT_CAMPAIGN,
        wp_url = wp.base_url(),
        sl_campaign = SmartleadConfig::DEFAULT_CAMPAIGN,
        sl_url = sl.base_url(),
    );
    let config = write_config(dir.path(), &db, &body);
    let creds = env();
    let mut server = Server::start_with_env(&config, dir.path(), &creds).await;

    // Five leads per person, posted by eight clients while enrollments go
    // out; each with an idempotency key, so a post whose answer the kill
    // swallowed is posted again after the restart without a second event.
    let client = http_client();
    let post = move |base: String, i: usize| {
        let client = client.clone();
        async move {
            let email = format!("p{}@example.com", i % PEOPLE);
            client
                .post(format!("{base}/v1/forms/contact"))
                .header("idempotency-key", format!("lead-{i}"))
                .json(&full_lead(&email, "Pat", &format!("N{i}"), "Acme", "hi"))
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        }
    };
    let mut posts = Vec::new();
    for c in 0..8 {
        let (post, base) = (post.clone(), server.base.clone());
        posts.push(tokio::spawn(async move {
            let mut unanswered = Vec::new();
            for i in (c..LEADS).step_by(8) {
                match post(base.clone(), i).await {
                    Some(status) => assert_eq!(status, 202),
                    None => unanswered.push(i),
                }
            }
            unanswered
        }));
    }
    // Killed as soon as both tools have people, with more on the way.
    eventually(
        "enrollments under way in both tools",
        Duration::from_secs(60),
        || async {
            (wp.active_in(WoodpeckerConfig::DEFAULT_CAMPAIGN).len() >= 5
                && !sl
                    .campaign_emails(SmartleadConfig::DEFAULT_CAMPAIGN)
                    .is_empty())
            .then_some(())
        },
    )
    .await;
    server.kill9();
    let mut unanswered = Vec::new();
    for p in posts {
        unanswered.extend(p.await.unwrap());
    }

    let store = open_store(&db).await;
    let before = store
        .list_deliveries(&DeliveryFilter::default(), None, 10_000)
        .await
        .unwrap();
    let done_before = |dest: &str| {
        before
            .iter()
            .filter(|d| d.destination == dest && d.state == DeliveryState::Delivered)
            .count()
    };
    for dest in ["woodpecker", "smartlead"] {
        let all = before.iter().filter(|d| d.destination == dest).count();
        assert!(
            done_before(dest) < all,
            "{dest}: everything was enrolled before the kill; the test proves nothing"
        );
    }
    store.close().await;

    let mut again = Server::start_with_env(&config, dir.path(), &creds).await;
    for i in unanswered {
        let status = post(again.base.clone(), i).await;
        assert!(matches!(status, Some(200 | 202)), "{i}: {status:?}");
    }
    let store = open_store(&db).await;
    let finals = eventually(
        "every enrollment finishes",
        Duration::from_secs(180),
        || async {
            let all = store
                .list_deliveries(&DeliveryFilter::default(), None, 10_000)
                .await
                .ok()?;
            (all.len() == 2 * LEADS && all.iter().all(|d| !d.state.is_active())).then_some(all)
        },
    )
    .await;
    again.terminate();
    let not_delivered: Vec<_> = finals
        .iter()
        .filter(|d| d.state != DeliveryState::Delivered)
        .collect();
    assert!(not_delivered.is_empty(), "{:?}", not_delivered.first());

    // Woodpecker: one prospect per person, in the campaign once.
    let prospects = wp.prospects();
    assert_eq!(prospects.len(), PEOPLE, "Woodpecker prospects");
    for p in &prospects {
        let times = p
            .campaigns
            .iter()
            .filter(|(c, _)| *c == WoodpeckerConfig::DEFAULT_CAMPAIGN)
            .count();
        assert_eq!(times, 1, "{}: {:?}", p.email, p.campaigns);
    }
    assert_eq!(
        wp.active_in(WoodpeckerConfig::DEFAULT_CAMPAIGN).len(),
        PEOPLE
    );
    assert_eq!(wp.overlapping(), 0, "Woodpecker saw concurrent requests");
    // Smartlead: one lead per person, in the campaign once.
    let leads = sl.leads();
    assert_eq!(leads.len(), PEOPLE, "Smartlead leads");
    for l in &leads {
        let times = l
            .campaigns
            .iter()
            .filter(|(c, _)| *c == SmartleadConfig::DEFAULT_CAMPAIGN)
            .count();
        assert_eq!(times, 1, "{}: {:?}", l.email, l.campaigns);
    }
    // One membership per person and destination, active.
    for i in 0..PEOPLE {
        let key = format!("email:p{i}@example.com");
        let ms = store.memberships(&key).await.unwrap();
        for dest in ["woodpecker", "smartlead"] {
            let mine: Vec<_> = ms.iter().filter(|m| m.destination == dest).collect();
            assert_eq!(mine.len(), 1, "{key} in {dest}: {ms:?}");
            assert_eq!(mine[0].state, MEMBERSHIP_ACTIVE, "{key} in {dest}");
        }
    }
    let log = again.log_text() + &server.log_text();
    for (_, secret) in env() {
        assert!(!log.contains(secret), "a credential appears in the logs");
    }
    store.close().await;
}
