//! Request headers every endpoint agrees on: a request with two
//! `Content-Type` headers is refused with 400 before any handler reads the
//! body (which one describes the body would otherwise depend on who asks).

use leadrelay::store::Role;
use serde_json::{Value, json};

use crate::admin::key;
use crate::support::{Receiver, TestApp, lead, webhook_config};

#[tokio::test]
async fn two_content_type_headers_are_refused_everywhere() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&webhook_config(&r.url(), "")).await;
    let admin = key(&app, "ops", Role::Admin).await;
    let ingest = key(&app, "backend", Role::Ingest).await;
    let form = serde_json::to_vec(&lead("two.types@example.com")).unwrap();
    let event = serde_json::to_vec(&json!({
        "type": "lead.created",
        "contact": {"email": "two.types@example.com"}
    }))
    .unwrap();
    let replay = serde_json::to_vec(&json!({"destination": "hook"})).unwrap();
    let cases: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("/v1/forms/contact", None, form.clone()),
        ("/v1/events", Some(&ingest), event),
        ("/api/v1/dead-letters/replay", Some(&admin), replay),
        ("/v1/hooks/anything", None, form.clone()),
        ("/ui/login", None, b"key=x&csrf=y".to_vec()),
    ];
    for (path, auth, body) in cases {
        for (first, second) in [
            ("application/json", "text/plain"),
            ("text/plain", "application/json"),
            ("application/json", "application/x-www-form-urlencoded"),
        ] {
            let mut req = app
                .client
                .post(app.url(path))
                .header("content-type", first)
                .header("content-type", second)
                .body(body.clone());
            if let Some(k) = auth {
                req = req.bearer_auth(k);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let b: Value = resp.json().await.unwrap_or(Value::Null);
            assert_eq!(status, 400, "{path} with {first} + {second}: {b}");
            assert_eq!(b["error"]["code"], "ambiguous_content_type", "{path}: {b}");
        }
    }
    assert!(
        !app.db.contains("two.types@example.com"),
        "nothing was stored"
    );
    // One header is fine.
    let resp = app
        .post_json("/v1/forms/contact", &lead("one.type@example.com"))
        .await;
    assert_eq!(resp.status(), 202);
}
