//! Mailshake's thin pushes (only a `resource_url`): stored at once,
//! resolved in the background with the API key into the full activity,
//! and only then routed; a resource on another host is never fetched and
//! the push is routed as it is, with the reason.

use std::time::Duration;

use leadrelay::store::{DeliveryState, EventFilter};
use leadrelay_fakes::mailshake::{FakeMailshake, MailshakeConfig};
use serde_json::{Value, json};

use crate::notify_support::{config, post, settled};
use crate::support::{TestApp, eventually};

async fn app(mailshake: &FakeMailshake) -> TestApp {
    let rest = format!(
        r#"
[sources.ms]
kind = "mailshake"
token_env = "MAILSHAKE_PUSH_TOKEN"
api_key_env = "MAILSHAKE_API_KEY"
api_base_url = "{base}/2017-04-01"
allow_private_networks = true

[destinations.seq]
connector = "mailshake"
campaign_id = {campaign}
base_url = "{base}/2017-04-01"
allow_private_networks = true
purposes = ["crm"]
status_poll_interval = "20ms"

[[routes]]
name = "enroll"
forms = ["contact"]
destinations = ["seq"]

[[routes]]
name = "exit_sequences"
events = ["reply.received"]
destinations = ["seq"]
"#,
        base = mailshake.base_url(),
        campaign = MailshakeConfig::DEFAULT_CAMPAIGN,
    );
    TestApp::builder(&config(&[], &rest))
        .env("MAILSHAKE_API_KEY", MailshakeConfig::DEFAULT_API_KEY)
        .env("MAILSHAKE_PUSH_TOKEN", "ms-secret")
        .start()
        .await
}

async fn push(app: &TestApp, body: &Value) {
    let resp = app
        .post_json("/v1/hooks/ms?token=ms-secret&event=Replied", body)
        .await;
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
}

async fn ms_events(app: &TestApp) -> Vec<leadrelay_model::Event> {
    let filter = EventFilter {
        origin_name: Some("ms".into()),
        ..Default::default()
    };
    app.store.list_events(&filter, None, 100).await.unwrap()
}

#[tokio::test]
async fn a_thin_push_is_routed_with_the_full_activity() {
    let mailshake = FakeMailshake::start(MailshakeConfig::default())
        .await
        .unwrap();
    let app = app(&mailshake).await;
    let id = post(
        &app,
        "contact",
        &json!({"email": "ana@example.com", "consent": "yes"}),
    )
    .await;
    assert_eq!(
        settled(&app, id, "seq").await.state,
        DeliveryState::Delivered
    );
    assert_eq!(
        mailshake.active_in(MailshakeConfig::DEFAULT_CAMPAIGN),
        ["ana@example.com"]
    );

    // Ana replies: Mailshake pushes only a link to the reply.
    let body = mailshake.push_reply(
        MailshakeConfig::DEFAULT_CAMPAIGN,
        "ana@example.com",
        "Let's talk",
    );
    push(&app, &body).await;
    // Pushed twice (a Mailshake retry): stored and resolved once.
    push(&app, &body).await;

    let resolved = eventually(
        "the thin push is resolved into the reply",
        Duration::from_secs(20),
        || async {
            ms_events(&app)
                .await
                .into_iter()
                .find(|e| e.data.contains_key("resolved_from"))
        },
    )
    .await;
    assert_eq!(resolved.event_type.as_str(), "reply.received");
    assert_eq!(
        resolved.contact.email.as_ref().map(|e| e.as_str()),
        Some("ana@example.com")
    );
    assert_eq!(resolved.data["plainTextBody"], "Let's talk");
    assert!(!resolved.data.contains_key("unresolved_reason"));
    // The thin event itself was never routed; the resolved one was.
    let thin_id: uuid::Uuid = resolved.data["resolved_from"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        app.store
            .deliveries_for_event(thin_id)
            .await
            .unwrap()
            .is_empty()
    );
    let d = settled(&app, resolved.id, "seq").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    // The reply took Ana out of the campaign (exit_sequences → pause).
    assert!(
        mailshake
            .active_in(MailshakeConfig::DEFAULT_CAMPAIGN)
            .is_empty()
    );
    let fetched = mailshake
        .requests()
        .entries()
        .iter()
        .filter(|r| r.path.contains("/activity/"))
        .count();
    assert_eq!(fetched, 1, "the resource was fetched once");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let resolved_count = ms_events(&app)
        .await
        .iter()
        .filter(|e| e.data.contains_key("resolved_from"))
        .count();
    assert_eq!(resolved_count, 1);
}

#[tokio::test]
async fn a_resource_url_on_a_foreign_host_is_never_fetched() {
    let mailshake = FakeMailshake::start(MailshakeConfig::default())
        .await
        .unwrap();
    // Another server that would answer with an activity if asked.
    let foreign = FakeMailshake::start(MailshakeConfig::default())
        .await
        .unwrap();
    let app = app(&mailshake).await;
    let body = foreign.push_reply(MailshakeConfig::DEFAULT_CAMPAIGN, "eve@example.com", "hi");
    push(&app, &body).await;
    let routed = eventually(
        "the push is routed as it is",
        Duration::from_secs(20),
        || async {
            ms_events(&app)
                .await
                .into_iter()
                .find(|e| e.data.contains_key("unresolved_reason"))
        },
    )
    .await;
    let reason = routed.data["unresolved_reason"].as_str().unwrap();
    assert!(
        reason.contains("not on the configured Mailshake API"),
        "{reason}"
    );
    assert!(
        foreign.requests().entries().is_empty(),
        "the foreign host was called"
    );
    assert!(mailshake.requests().entries().is_empty());
}
