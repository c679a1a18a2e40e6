//! The `slack` connector against the fake Slack: Block Kit messages with
//! the dashboard link through chat.postMessage and an incoming webhook,
//! `ratelimited` honoured, `channel_not_found` dead-lettered and copied to
//! the failed sheet.

use leadrelay::store::DeliveryState;
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::google::FakeGoogle;
use leadrelay_fakes::slack::{FakeSlack, MessageSource, SlackConfig};
use serde_json::{Value, json};

use crate::notify_support::{
    GOOGLE_KEY_ENV, PUBLIC_URL, assert_copied_to_failed_sheet, config, failed_sheet, google_config,
    issue_alert_config, post, settled,
};
use crate::support::TestApp;

fn web_api(slack: &FakeSlack, name: &str, channel: &str) -> String {
    format!(
        r##"
[destinations.{name}]
connector = "slack"
token_env = "SLACK_BOT_TOKEN"
channel = "{channel}"
base_url = "{api}"
allow_private_networks = true
purposes = ["crm"]
"##,
        api = slack.api_url()
    )
}

fn lead() -> Value {
    json!({"email": "jane@example.com", "first_name": "Jane", "last_name": "Doe",
        "company": "Acme <Labs> & Co", "message": "We need 20 seats", "consent": "yes",
        "utm_campaign": "spring"})
}

#[tokio::test]
async fn block_kit_messages_with_a_dashboard_link_by_web_api_and_webhook() {
    let slack = FakeSlack::start(SlackConfig::default()).await.unwrap();
    let rest = format!(
        r#"{}
[destinations.slack_hook]
connector = "slack"
webhook_url_env = "SLACK_WEBHOOK_URL"
allow_private_networks = true
purposes = ["crm"]
[destinations.slack_hook.forms.contact]
text = "Form lead: {{{{ contact.email }}}}"

[[routes]]
name = "all"
destinations = ["slack_api", "slack_hook"]
"#,
        web_api(&slack, "slack_api", "#leads")
    );
    let app = TestApp::builder(&config(&[], &rest))
        .env("SLACK_BOT_TOKEN", SlackConfig::DEFAULT_BOT_TOKEN)
        .env("SLACK_WEBHOOK_URL", &slack.webhook_url())
        .start()
        .await;
    let id = post(&app, "contact", &lead()).await;
    for d in ["slack_api", "slack_hook"] {
        let done = settled(&app, id, d).await;
        assert_eq!(
            done.state,
            DeliveryState::Delivered,
            "{d}: {:?}",
            done.reason
        );
    }
    let messages = slack.messages("leads");
    assert_eq!(messages.len(), 2);
    let api = messages
        .iter()
        .find(|m| matches!(m.source, MessageSource::WebApi { .. }))
        .unwrap();
    assert_eq!(
        api.text.as_deref(),
        Some("New lead.created: Jane Doe (Acme &lt;Labs&gt; &amp; Co)"),
        "mrkdwn control characters are escaped"
    );
    let blocks = api.blocks.as_ref().unwrap().as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], "New lead.created: Jane Doe");
    let fields: Vec<&str> = blocks[1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"*Email*\njane@example.com"), "{fields:?}");
    assert!(
        fields.contains(&"*Company*\nAcme &lt;Labs&gt; &amp; Co"),
        "{fields:?}"
    );
    assert!(
        blocks[2]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("*Message*\nWe need 20 seats")
    );
    assert!(
        blocks[3]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("UTM campaign: spring")
    );
    let button = &blocks.last().unwrap()["elements"][0];
    assert_eq!(button["type"], "button");
    assert_eq!(button["url"], format!("{PUBLIC_URL}/ui/leads/{id}"));

    let hook = messages
        .iter()
        .find(|m| matches!(m.source, MessageSource::Webhook { .. }))
        .unwrap();
    assert_eq!(
        hook.text.as_deref(),
        Some("Form lead: jane@example.com"),
        "the per-form text template"
    );
    assert!(hook.blocks.is_some());
    // The bot token never reaches the attempt log.
    for d in app.store.deliveries_for_event(id).await.unwrap() {
        let log = serde_json::to_string(&app.store.attempts(d.id).await.unwrap()).unwrap();
        assert!(!log.contains(SlackConfig::DEFAULT_BOT_TOKEN));
        assert!(!log.contains(SlackConfig::DEFAULT_WEBHOOK_SECRET));
    }
}

#[tokio::test]
async fn ratelimited_waits_for_retry_after_and_channel_not_found_is_dead_lettered() {
    let slack = FakeSlack::start(SlackConfig::default()).await.unwrap();
    let google = FakeGoogle::start(google_config()).await.unwrap();
    let rest = format!(
        "{}{}{}\n[[routes]]\nname = \"a\"\nforms = [\"contact\"]\ndestinations = [\"slack_api\"]\n[[routes]]\nname = \"b\"\nforms = [\"demo\"]\ndestinations = [\"slack_gone\"]\n",
        web_api(&slack, "slack_api", "#leads"),
        web_api(&slack, "slack_gone", "#no-such-channel"),
        failed_sheet(&google)
    );
    let app = TestApp::builder(&config(&["failed_sheet"], &rest))
        .env("SLACK_BOT_TOKEN", SlackConfig::DEFAULT_BOT_TOKEN)
        .env(GOOGLE_KEY_ENV, &google.service_account_json())
        .start()
        .await;

    slack.faults().push(
        Fault::Status {
            status: 429,
            body: r#"{"ok":false,"error":"ratelimited"}"#.into(),
            headers: vec![("Retry-After".into(), "1".into())],
        },
        1,
    );
    let id = post(&app, "contact", &lead()).await;
    let d = settled(&app, id, "slack_api").await;
    assert_eq!(d.state, DeliveryState::Delivered);
    let attempts = app.store.attempts(d.id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome, "throttled");
    assert_eq!(attempts[0].status, Some(429));
    assert_eq!(slack.messages("leads").len(), 1);

    let id = post(
        &app,
        "demo",
        &json!({"email": "lost@example.com", "consent": "yes"}),
    )
    .await;
    let dead = settled(&app, id, "slack_gone").await;
    assert_eq!(dead.state, DeliveryState::Dead);
    assert_eq!(dead.reason.as_deref(), Some("Slack: channel_not_found"));
    assert_eq!(
        app.store.attempts(dead.id).await.unwrap().len(),
        1,
        "not retried"
    );
    assert_copied_to_failed_sheet(&google, &dead, "lost@example.com").await;
}

#[tokio::test]
async fn issue_alert_and_resolved_notice_link_to_the_issue_page() {
    let slack = FakeSlack::start(SlackConfig::default()).await.unwrap();
    let receiver = crate::support::Receiver::start().await;
    receiver.fail_next(422, r#"{"error":"lifecycle stage is not valid"}"#, 1);
    let toml = config(
        &[],
        &issue_alert_config(
            &receiver,
            "ops_slack",
            &web_api(&slack, "ops_slack", "#leads"),
        ),
    );
    let app = TestApp::builder(&toml)
        .env("SLACK_BOT_TOKEN", SlackConfig::DEFAULT_BOT_TOKEN)
        .start()
        .await;
    let id = post(&app, "contact", &lead()).await;
    let dead = settled(&app, id, "hook").await;
    assert_eq!(dead.state, DeliveryState::Dead);
    let alert = crate::support::eventually(
        "the issue alert in Slack",
        crate::notify_support::WAIT,
        || async {
            slack
                .messages("leads")
                .into_iter()
                .find(|m| m.text.as_deref().is_some_and(|t| t.contains("new issue")))
        },
    )
    .await;
    let text = alert.text.as_deref().unwrap();
    assert!(
        text.starts_with(":rotating_light: Alert: hook: new issue — HTTP 422"),
        "{text}"
    );
    assert!(
        !text.contains("jane@example.com"),
        "no personal data: {text}"
    );
    let blocks = alert.blocks.as_ref().unwrap().as_array().unwrap();
    let button = &blocks.last().unwrap()["elements"][0];
    assert_eq!(button["text"]["text"], "Open the issue");
    let url = button["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{PUBLIC_URL}/ui/issues/")),
        "{url}"
    );

    app.store.discard(vec![dead.id]).await.unwrap();
    let resolved = crate::support::eventually(
        "the resolved notice",
        crate::notify_support::WAIT,
        || async {
            slack.messages("leads").into_iter().find(|m| {
                m.text
                    .as_deref()
                    .is_some_and(|t| t.contains("issue resolved"))
            })
        },
    )
    .await;
    assert!(
        resolved
            .text
            .as_deref()
            .unwrap()
            .starts_with(":white_check_mark: Resolved")
    );
    let blocks = resolved.blocks.as_ref().unwrap().as_array().unwrap();
    assert_eq!(blocks.last().unwrap()["elements"][0]["url"], url);
    let issue_messages = slack
        .messages("leads")
        .iter()
        .filter(|m| m.text.as_deref().is_some_and(|t| t.contains("issue")))
        .count();
    assert_eq!(issue_messages, 2, "one alert, one notice");
}
