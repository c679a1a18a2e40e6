//! The fake Slack over real HTTP.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::common::Fault;

const TOKEN: &str = SlackConfig::DEFAULT_BOT_TOKEN;

/// A plain-HTTP client (reqwest is built without a default TLS provider).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn start(config: SlackConfig) -> FakeSlack {
    FakeSlack::start(config).await.expect("fake slack starts")
}

async fn post_message(
    slack: &FakeSlack,
    token: Option<&str>,
    body: Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = client()
        .post(format!("{}/chat.postMessage", slack.api_url()))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.expect("json body"), headers)
}

async fn webhook(url: &str, body: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let resp = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.expect("text"), headers)
}

#[tokio::test]
async fn slack_webhook_posts_to_its_channel() {
    let slack = start(SlackConfig::default()).await;
    let blocks = json!([
        {"type": "header", "text": {"type": "plain_text", "text": "New lead"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Ada Lovelace* <ada@example.com>"}}
    ]);
    let (status, body, headers) = webhook(
        &slack.webhook_url(),
        &json!({"text": "New lead: Ada", "blocks": blocks}).to_string(),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/")
    );
    let messages = slack.messages("#leads");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].text.as_deref(), Some("New lead: Ada"));
    assert_eq!(messages[0].blocks.as_ref(), Some(&blocks));
    assert!(matches!(messages[0].source, MessageSource::Webhook { .. }));

    // The legacy form encoding: payload=<json>.
    let resp = client()
        .post(slack.webhook_url())
        .form(&[("payload", json!({"text": "form-encoded"}).to_string())])
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(slack.messages(SlackConfig::LEADS_CHANNEL_ID).len(), 2);
}

#[tokio::test]
async fn slack_webhook_rejects_like_slack() {
    let slack = start(SlackConfig::default()).await;
    let url = slack.webhook_url();
    let base = slack.base_url();
    let unknown = format!("{base}/services/T0NOPE/B0NOPE/secret");
    assert_eq!(webhook(&unknown, r#"{"text":"x"}"#).await.0, 404);
    assert_eq!(webhook(&unknown, r#"{"text":"x"}"#).await.1, "no_service");
    let wrong_secret = format!(
        "{base}/services/{}/{}/wrong",
        SlackConfig::DEFAULT_TEAM_ID,
        SlackConfig::DEFAULT_WEBHOOK_BOT_ID
    );
    let (s, b, _) = webhook(&wrong_secret, r#"{"text":"x"}"#).await;
    assert_eq!((s, b.as_str()), (403, "invalid_token"));
    let (s, b, _) = webhook(&url, "{not json").await;
    assert_eq!((s, b.as_str()), (400, "invalid_payload"));
    let (s, b, _) = webhook(&url, "[1,2]").await;
    assert_eq!((s, b.as_str()), (400, "invalid_payload"));
    let (s, b, _) = webhook(&url, r#"{"username":"bot"}"#).await;
    assert_eq!((s, b.as_str()), (400, "no_text"));
    let (s, b, _) = webhook(&url, r#"{"text":"x","blocks":[{"type":"nope"}]}"#).await;
    assert_eq!((s, b.as_str()), (400, "invalid_blocks"));
    let attachments: Vec<Value> = (0..101).map(|i| json!({"text": i.to_string()})).collect();
    let (s, b, _) = webhook(
        &url,
        &json!({"text": "x", "attachments": attachments}).to_string(),
    )
    .await;
    assert_eq!((s, b.as_str()), (400, "too_many_attachments"));

    assert!(slack.set_archived("leads", true));
    let (s, b, _) = webhook(&url, r#"{"text":"x"}"#).await;
    assert_eq!((s, b.as_str()), (410, "channel_is_archived"));
    assert!(slack.delete_channel("leads"));
    let (s, b, _) = webhook(&url, r#"{"text":"x"}"#).await;
    assert_eq!((s, b.as_str()), (404, "channel_not_found"));
    assert!(slack.all_messages().is_empty());
}

#[tokio::test]
async fn slack_webhook_rate_limit_answers_429_with_retry_after() {
    let config = SlackConfig {
        webhook_limit: 2,
        webhook_window: Duration::from_millis(1000),
        ..Default::default()
    };
    let slack = start(config).await;
    let url = slack.webhook_url();
    assert_eq!(webhook(&url, r#"{"text":"1"}"#).await.0, 200);
    assert_eq!(webhook(&url, r#"{"text":"2"}"#).await.0, 200);
    let (s, b, headers) = webhook(&url, r#"{"text":"3"}"#).await;
    assert_eq!((s, b.as_str()), (429, "rate_limited"));
    assert_eq!(headers["retry-after"], "1");
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(webhook(&url, r#"{"text":"4"}"#).await.0, 200);
    assert_eq!(slack.messages("leads").len(), 3);
}

#[tokio::test]
async fn slack_post_message_json_and_form() {
    let slack = start(SlackConfig::default()).await;
    let (status, body, _) = post_message(
        &slack,
        Some(TOKEN),
        json!({"channel": "#leads", "text": "New lead: Ada"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["channel"], SlackConfig::LEADS_CHANNEL_ID);
    let ts = body["ts"].as_str().expect("ts").to_string();
    assert_eq!(body["message"]["ts"], ts.as_str());
    assert_eq!(body["message"]["text"], "New lead: Ada");
    assert_eq!(body["message"]["bot_id"], SlackConfig::DEFAULT_BOT_ID);
    assert!(body.get("warning").is_none());

    // Form body with the token as an argument and blocks as a JSON string.
    let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*Ada*"}}]);
    let resp = client()
        .post(format!("{}/chat.postMessage", slack.api_url()))
        .form(&[
            ("token", TOKEN.to_string()),
            ("channel", SlackConfig::LEADS_CHANNEL_ID.to_string()),
            ("blocks", blocks.to_string()),
        ])
        .send()
        .await
        .expect("request");
    let form_body: Value = resp.json().await.expect("json");
    assert_eq!(form_body["ok"], true, "{form_body}");
    assert!(form_body["ts"].as_str().expect("ts") > ts.as_str());

    let messages = slack.messages("leads");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].blocks.as_ref(), Some(&blocks));
    assert_eq!(
        messages[1].source,
        MessageSource::WebApi {
            user_id: SlackConfig::DEFAULT_BOT_USER_ID.into()
        }
    );

    // JSON without a charset still works, with Slack's warning.
    let resp = client()
        .post(format!("{}/chat.postMessage", slack.api_url()))
        .bearer_auth(TOKEN)
        .json(&json!({"channel": "leads", "text": "x"}))
        .send()
        .await
        .expect("request");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["ok"], true);
    assert_eq!(body["warning"], "missing_charset");
    assert_eq!(body["response_metadata"]["warnings"][0], "missing_charset");
}

#[tokio::test]
async fn slack_post_message_auth_errors() {
    let slack = start(SlackConfig::default()).await;
    let msg = json!({"channel": "leads", "text": "x"});
    assert_eq!(
        post_message(&slack, None, msg.clone()).await.1["error"],
        "not_authed"
    );
    assert_eq!(
        post_message(&slack, Some("xoxb-wrong"), msg.clone())
            .await
            .1["error"],
        "invalid_auth"
    );
    // A token inside a JSON body is not read.
    let with_token = json!({"channel": "leads", "text": "x", "token": TOKEN});
    let (status, body, _) = post_message(&slack, None, with_token).await;
    assert_eq!(
        (status, body["ok"].clone(), body["error"].clone()),
        (200, json!(false), json!("not_authed"))
    );
    assert!(slack.set_token_status(TOKEN, TokenStatus::Revoked));
    assert_eq!(
        post_message(&slack, Some(TOKEN), msg.clone()).await.1["error"],
        "token_revoked"
    );

    let mut config = SlackConfig::default();
    config.tokens[0].scopes = vec!["channels:read".into()];
    let slack = start(config).await;
    let (_, body, _) = post_message(&slack, Some(TOKEN), msg).await;
    assert_eq!(body["error"], "missing_scope");
    assert_eq!(body["needed"], "chat:write");
    assert_eq!(body["provided"], "channels:read");
    assert!(slack.all_messages().is_empty());
}

#[tokio::test]
async fn slack_post_message_channel_rules() {
    let slack = start(SlackConfig::default()).await;
    let err = |b: Value| b["error"].as_str().unwrap_or("").to_string();
    let post = |channel: &str| json!({"channel": channel, "text": "x"});
    assert_eq!(
        err(post_message(&slack, Some(TOKEN), post("nope")).await.1),
        "channel_not_found"
    );
    assert_eq!(
        err(post_message(&slack, Some(TOKEN), json!({"text": "x"}))
            .await
            .1),
        "channel_not_found"
    );
    assert_eq!(
        err(post_message(&slack, Some(TOKEN), post("sales")).await.1),
        "not_in_channel"
    );
    assert_eq!(
        err(post_message(&slack, Some(TOKEN), post("private-deals"))
            .await
            .1),
        "channel_not_found"
    );
    assert_eq!(
        err(post_message(&slack, Some(TOKEN), post("old-leads")).await.1),
        "is_archived"
    );
    assert!(slack.set_bot_member("sales", true));
    assert_eq!(
        post_message(&slack, Some(TOKEN), post("sales")).await.1["ok"],
        true
    );

    let mut config = SlackConfig::default();
    config.tokens[0].scopes.push(SCOPE_CHAT_WRITE_PUBLIC.into());
    let public = start(config).await;
    assert_eq!(
        post_message(&public, Some(TOKEN), post("sales")).await.1["ok"],
        true
    );
    assert_eq!(
        err(post_message(&public, Some(TOKEN), post("private-deals"))
            .await
            .1),
        "channel_not_found"
    );
}

#[tokio::test]
async fn slack_post_message_content_rules() {
    let slack = start(SlackConfig::default()).await;
    let (_, body, _) = post_message(&slack, Some(TOKEN), json!({"channel": "leads"})).await;
    assert_eq!(body["error"], "no_text");
    let (_, body, _) = post_message(
        &slack,
        Some(TOKEN),
        json!({"channel": "leads", "text": "x".repeat(40_001)}),
    )
    .await;
    assert_eq!(body["error"], "msg_too_long");
    let long = "y".repeat(3001);
    let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": long}}]);
    let (_, body, _) = post_message(
        &slack,
        Some(TOKEN),
        json!({"channel": "leads", "blocks": blocks}),
    )
    .await;
    assert_eq!(body["error"], "invalid_blocks");
    assert_eq!(
        body["errors"][0],
        "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"
    );
    assert_eq!(
        body["response_metadata"]["messages"][0],
        "[ERROR] must be less than 3001 characters [json-pointer:/blocks/0/text/text]"
    );
    let (_, body, _) = post_message(
        &slack,
        Some(TOKEN),
        json!({"channel": "leads", "blocks": {"type": "divider"}}),
    )
    .await;
    assert_eq!(body["error"], "invalid_blocks_format");
    let many: Vec<Value> = (0..51).map(|_| json!({"type": "divider"})).collect();
    let (_, body, _) = post_message(
        &slack,
        Some(TOKEN),
        json!({"channel": "leads", "blocks": many}),
    )
    .await;
    assert_eq!(body["error"], "invalid_blocks");

    let client = client();
    let url = format!("{}/chat.postMessage", slack.api_url());
    let body: Value = client
        .post(&url)
        .bearer_auth(TOKEN)
        .form(&[("channel", "leads"), ("blocks", "[not json")])
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(body["error"], "invalid_blocks_format");
    let body: Value = client
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json; charset=utf-8")
        .body("{oops")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(body["error"], "invalid_json");
    let body: Value = client
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/xml")
        .body("<x/>")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(body["error"], "invalid_post_type");
    assert!(slack.all_messages().is_empty());
}

#[tokio::test]
async fn slack_post_message_rate_limit_per_channel() {
    let config = SlackConfig {
        post_limit: 2,
        post_window: Duration::from_millis(1000),
        ..Default::default()
    };
    let slack = start(config).await;
    let msg = json!({"channel": "leads", "text": "x"});
    assert_eq!(
        post_message(&slack, Some(TOKEN), msg.clone()).await.1["ok"],
        true
    );
    assert_eq!(
        post_message(&slack, Some(TOKEN), msg.clone()).await.1["ok"],
        true
    );
    let (status, body, headers) = post_message(&slack, Some(TOKEN), msg.clone()).await;
    assert_eq!(status, 429);
    assert_eq!(body, json!({"ok": false, "error": "ratelimited"}));
    assert_eq!(headers["retry-after"], "1");
    // Another channel has its own budget.
    assert_eq!(
        post_message(
            &slack,
            Some(TOKEN),
            json!({"channel": "general", "text": "x"})
        )
        .await
        .1["ok"],
        true
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(post_message(&slack, Some(TOKEN), msg).await.1["ok"], true);
    assert_eq!(slack.messages("leads").len(), 3);
}

#[tokio::test]
async fn slack_auth_test_checks_credentials() {
    let slack = start(SlackConfig::default()).await;
    let client = client();
    let ok: Value = client
        .post(format!("{}/auth.test", slack.api_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(ok["ok"], true);
    assert_eq!(ok["team_id"], SlackConfig::DEFAULT_TEAM_ID);
    assert_eq!(ok["user_id"], SlackConfig::DEFAULT_BOT_USER_ID);
    assert_eq!(ok["bot_id"], SlackConfig::DEFAULT_BOT_ID);
    let bad: Value = client
        .post(format!("{}/auth.test", slack.api_url()))
        .bearer_auth("xoxb-nope")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(bad, json!({"ok": false, "error": "invalid_auth"}));
    let unknown = client
        .post(format!("{}/chat.nope", slack.api_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(unknown.status().as_u16(), 404);
}

#[tokio::test]
async fn slack_faults_and_request_log() {
    let slack = start(SlackConfig::default()).await;
    slack.faults().push(
        Fault::Status {
            status: 503,
            body: "service_unavailable".into(),
            headers: vec![("retry-after".into(), "7".into())],
        },
        1,
    );
    let (status, body, headers) = webhook(&slack.webhook_url(), r#"{"text":"x"}"#).await;
    assert_eq!((status, body.as_str()), (503, "service_unavailable"));
    assert_eq!(headers["retry-after"], "7");
    assert!(slack.all_messages().is_empty());
    assert_eq!(
        webhook(&slack.webhook_url(), r#"{"text":"x"}"#).await.0,
        200
    );
    let log = slack.requests().entries();
    assert_eq!(log.len(), 2);
    assert_eq!((log[0].status, log[1].status), (503, 200));
    assert!(log[0].path.starts_with("/services/"));
    assert!(slack.credentials_banner(&slack.base_url()).contains(TOKEN));
}
