//! Deeply nested JSON on every ingest path: anything answered 2xx can be
//! read back through the API and the CLI, is delivered, exported and
//! erased; anything nested deeper than the documented limit is refused 422
//! with its path. A row stored too deep before the limit existed must not
//! fail list pages, other people's reads, claims or erase.

use std::time::Duration;

use chrono::Utc;
use leadrelay::store::{DeliveryState, IngestItem, Role};
use leadrelay_model::{
    ConsentPurpose, ConsentRecord, ContactData, EmailAddress, Event, EventType, MAX_JSON_DEPTH,
    Origin, RawPayload, new_id,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::admin::{key, sign_in};
use crate::binary::run;
use crate::support::{Receiver, TestApp, eventually, lead, webhook_config};

const WAIT: Duration = Duration::from_secs(30);

/// `levels` nested objects and arrays around a string, in one of three shapes.
fn nested(levels: usize, shape: usize) -> Value {
    let mut v = json!("bottom");
    for i in 0..levels {
        v = match (shape + i) % 3 {
            0 => json!({ "k": v, "n": i }),
            1 => json!([i, v]),
            _ => json!({ "list": [v] }),
        };
    }
    v
}

/// Levels `nested(levels, shape)` adds: the `list` shape is two levels.
fn levels_of(v: &Value) -> usize {
    leadrelay_model::text_depth(v.to_string().as_bytes())
}

async fn call(
    app: &TestApp,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// The dashboard's leads page, signed in with `key`.
async fn leads_page(app: &TestApp, key: &str) -> (StatusCode, String) {
    let signed_in = sign_in(app, key).await;
    let session = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("lr_session="))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let page = app
        .client
        .get(app.url("/ui/leads"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    (page.status(), page.text().await.unwrap())
}

fn first_field(body: &Value) -> (String, String) {
    let f = &body["error"]["fields"][0];
    (
        f["field"].as_str().unwrap_or_default().to_string(),
        f["code"].as_str().unwrap_or_default().to_string(),
    )
}

fn config(receiver: &str) -> String {
    webhook_config(
        receiver,
        r#"
[sources.zapier]
kind = "generic"
token_env = "ZAPIER_HOOK_TOKEN"
event_type = "lead.created"
fields = { email = "/email" }
data = { plan = "/plan" }
"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatever_ingest_accepts_reads_back_delivers_exports_and_erases() {
    let receiver = Receiver::start().await;
    let app = TestApp::builder(&config(&receiver.url()))
        .env("ZAPIER_HOOK_TOKEN", "zap-token")
        .start()
        .await;
    let ingest = key(&app, "ingest", Role::Ingest).await;
    let admin = key(&app, "admin", Role::Admin).await;

    // Depths around the limit, around the parser's 128 and beyond it, in
    // three shapes, in a contact custom field and in `data`.
    let mut accepted: Vec<(Uuid, String)> = Vec::new();
    let mut refused = 0;
    for levels in [
        0, 1, 5, 10, 20, 22, 28, 29, 30, 31, 40, 64, 100, 122, 123, 124, 125, 126, 127, 300,
    ] {
        for shape in 0..3 {
            let value = nested(levels, shape);
            let email = format!("deep{levels}-{shape}@corp.example");
            let in_data = shape == 1;
            let body = if in_data {
                json!({"contact": {"email": email}, "data": {"plan": value},
                       "consent": {"crm": true}})
            } else {
                json!({"contact": {"email": email, "plan": value}, "consent": {"crm": true}})
            };
            // The body itself, `contact`/`data`, then the value.
            let depth = 2 + levels_of(&value);
            let (s, b) = call(
                &app,
                &ingest,
                reqwest::Method::POST,
                "/v1/events",
                Some(body),
            )
            .await;
            if depth <= MAX_JSON_DEPTH {
                assert_eq!(s, StatusCode::ACCEPTED, "{levels}/{shape}: {b}");
                accepted.push((b["id"].as_str().unwrap().parse().unwrap(), email));
            } else {
                assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{levels}/{shape}: {b}");
                let (field, code) = first_field(&b);
                assert_eq!(code, "too_deep", "{b}");
                let under = if in_data { "data.plan" } else { "contact.plan" };
                assert!(
                    field.starts_with(under) || field == "body",
                    "{levels}/{shape}: {field}"
                );
                if depth < 120 {
                    assert!(
                        field.starts_with(under),
                        "a path when the parser reads it: {field}"
                    );
                }
                refused += 1;
            }
        }
    }
    assert!(
        accepted.len() >= 12 && refused >= 30,
        "{} {refused}",
        accepted.len()
    );

    // Form JSON and a vendor webhook: the same limit, the same answer.
    let form = app
        .post_json(
            "/v1/forms/contact",
            &json!({"email": "form@corp.example", "first_name": nested(200, 0)}),
        )
        .await;
    assert_eq!(form.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_field(&form.json().await.unwrap()).1, "too_deep");
    let hook = |body: Value| {
        app.client
            .post(app.url("/v1/hooks/zapier"))
            .header("x-leadrelay-token", "zap-token")
            .json(&body)
            .send()
    };
    let r = hook(json!({"email": "hook@corp.example", "plan": nested(MAX_JSON_DEPTH, 0)}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (field, code) = first_field(&r.json().await.unwrap());
    assert!(field.starts_with("plan") && code == "too_deep", "{field}");
    let r = hook(json!({"email": "hook@corp.example", "plan": nested(20, 0)}))
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);

    // Everything accepted reads back, one by one and in lists.
    for (id, email) in &accepted {
        let (s, b) = call(
            &app,
            &admin,
            reqwest::Method::GET,
            &format!("/api/v1/events/{id}"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{id}: {b}");
        assert!(b.to_string().contains(email.as_str()), "{b}");
    }
    let (s, page) = call(
        &app,
        &admin,
        reqwest::Method::GET,
        "/api/v1/events?limit=200",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    for (id, _) in &accepted {
        assert!(page.to_string().contains(&id.to_string()), "{id} listed");
    }
    let (s, b) = call(
        &app,
        &admin,
        reqwest::Method::GET,
        "/api/v1/contacts?limit=200",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, html) = leads_page(&app, &admin).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let (code, out, err) = run(&[
        "events",
        "list",
        "--json",
        "--limit",
        "200",
        "--storage-url",
        &app.db.url,
    ]);
    assert_eq!(code, 0, "{err}");
    for (id, _) in &accepted {
        assert!(out.contains(&id.to_string()), "{id} in the CLI list");
    }

    // Every delivery ends: the API events (with consent) delivered, the
    // webhook's (no consent given) skipped.
    let all = app.settled("hook", accepted.len() + 1, WAIT).await;
    for d in &all {
        let expected = if d.contact_key.starts_with("email:deep") {
            DeliveryState::Delivered
        } else {
            DeliveryState::Skipped
        };
        assert_eq!(d.state, expected, "{d:?}");
    }

    // Every person can be exported and erased.
    for (_, email) in &accepted {
        for what in ["export", "erase"] {
            let (s, b) = call(
                &app,
                &admin,
                reqwest::Method::POST,
                &format!("/api/v1/privacy/{what}"),
                Some(json!({"email": email, "reason": "test"})),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{what} {email}: {b}");
        }
    }
}

/// An event whose contact custom field nests `levels` deep, stored
/// directly (as ingest did before it limited depth).
fn deep_event(email: &str, levels: usize) -> Event {
    let mut contact = ContactData {
        email: Some(EmailAddress::parse(email).unwrap()),
        ..Default::default()
    };
    contact.custom.insert("plan".into(), nested(levels, 0));
    let now = Utc::now();
    Event {
        id: new_id(),
        event_type: EventType::LeadCreated,
        origin: Origin::api("old"),
        received_at: now,
        occurred_at: now,
        contact,
        contact_id: None,
        data: Default::default(),
        attribution: Default::default(),
        consent: vec![ConsentRecord {
            purpose: ConsentPurpose::parse("crm").unwrap(),
            granted: true,
            text_version: None,
            recorded_at: now,
        }],
        ip_hash: None,
        raw: RawPayload {
            content_type: "application/json".into(),
            body: "{}".into(),
        },
        spam: false,
        idempotency_key: None,
        external_id: None,
        vendor_refs: vec![],
        changes: vec![],
        playbooks: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_stored_too_deep_does_not_poison_lists_reads_claims_or_erase() {
    let receiver = Receiver::start().await;
    let app = TestApp::builder(&config(&receiver.url()))
        .env("ZAPIER_HOOK_TOKEN", "zap-token")
        .start()
        .await;
    let admin = key(&app, "admin", Role::Admin).await;
    let person = "poison@corp.example";
    // 125 levels in a custom field: with the event's and the contact's own
    // wrapping, deeper than serde_json reads back.
    let ids = app
        .store
        .ingest(vec![IngestItem {
            event: deep_event(person, 125),
            destinations: vec!["hook".into()],
            idempotency: None,
        }])
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    // Other people, and the same person again through the form.
    for email in ["other@corp.example", person] {
        let r = app.post_json("/v1/forms/contact", &lead(email)).await;
        assert!(
            r.status().is_redirection() || r.status().is_success(),
            "{email}: {}",
            r.status()
        );
    }
    let all = app.settled("hook", 3, WAIT).await;
    assert!(
        all.iter().all(|d| d.state == DeliveryState::Delivered),
        "{all:?}"
    );
    assert_eq!(receiver.delivered().len(), 3);
    for path in ["/api/v1/events", "/api/v1/contacts"] {
        let (s, b) = call(&app, &admin, reqwest::Method::GET, path, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
        assert!(b.to_string().contains(person), "{path}: {b}");
    }
    let (s, html) = leads_page(&app, &admin).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains(person), "{html}");
    let (code, out, err) = run(&["events", "list", "--json", "--storage-url", &app.db.url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(person));
    for what in ["export", "erase"] {
        let (s, b) = call(
            &app,
            &admin,
            reqwest::Method::POST,
            &format!("/api/v1/privacy/{what}"),
            Some(json!({"email": person, "reason": "test"})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{what}: {b}");
    }
    eventually("the person is gone", WAIT, || async {
        (!app.db.contains(person)).then_some(())
    })
    .await;
}

/// Overwrites an event's stored document with JSON that is not an event:
/// a row damaged by hand, a bad restore or a bug.
async fn damage(db_url: &str, event: Uuid) {
    let doc = r#"{"damaged": true}"#;
    match crate::support::backend() {
        crate::support::Backend::Sqlite => {
            let path = db_url.strip_prefix("sqlite://").unwrap();
            let c = rusqlite::Connection::open(path).unwrap();
            c.busy_timeout(Duration::from_secs(10)).unwrap();
            let n = c
                .execute(
                    "UPDATE events SET doc = ?1 WHERE id = ?2",
                    rusqlite::params![doc, event.to_string()],
                )
                .unwrap();
            assert_eq!(n, 1);
        }
        crate::support::Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(conn);
            let n = client
                .execute("UPDATE events SET doc = $1 WHERE id = $2", &[&doc, &event])
                .await
                .unwrap();
            assert_eq!(n, 1);
            drop(client);
            let _ = driver.await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_row_is_left_out_of_lists_dead_lettered_and_erased() {
    let receiver = Receiver::start().await;
    let toml = config(&receiver.url());
    let app = TestApp::builder(&toml)
        .env("ZAPIER_HOOK_TOKEN", "zap-token")
        .start()
        .await;
    let url = app.db.url.clone();
    let stopped = app.stop().await;
    // Stored while the node is down; then one of them is damaged.
    let store = leadrelay::store::open(&url, &Default::default())
        .await
        .unwrap();
    let damaged = deep_event("damaged@corp.example", 1);
    let healthy = deep_event("healthy@corp.example", 1);
    let (damaged_id, healthy_id) = (damaged.id, healthy.id);
    let items = [damaged, healthy]
        .into_iter()
        .map(|event| IngestItem {
            event,
            destinations: vec!["hook".into()],
            idempotency: None,
        })
        .collect();
    store.ingest(items).await.unwrap();
    drop(store);
    damage(&url, damaged_id).await;

    let app = TestApp::builder(&toml)
        .env("ZAPIER_HOOK_TOKEN", "zap-token")
        .resume(stopped)
        .start()
        .await;
    let admin = key(&app, "admin", Role::Admin).await;
    // The damaged event's delivery ends dead with the reason; the other's
    // is not held up by it.
    for d in app.settled("hook", 2, WAIT).await {
        if d.event_id == damaged_id {
            assert_eq!(d.state, DeliveryState::Dead, "{d:?}");
            let reason = d.reason.unwrap_or_default();
            assert!(reason.contains("cannot be read"), "{reason}");
        } else {
            assert_eq!(d.state, DeliveryState::Delivered, "{d:?}");
        }
    }
    // Lists leave the damaged row out instead of failing.
    let (s, page) = call(&app, &admin, reqwest::Method::GET, "/api/v1/events", None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let text = page.to_string();
    assert!(text.contains(&healthy_id.to_string()) && !text.contains(&damaged_id.to_string()));
    let (s, html) = leads_page(&app, &admin).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let (code, out, err) = run(&["events", "list", "--json", "--storage-url", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&healthy_id.to_string()));
    // The person can still be exported (what its columns and raw payload
    // say) and erased.
    let (s, b) = call(
        &app,
        &admin,
        reqwest::Method::POST,
        "/api/v1/privacy/export",
        Some(json!({"email": "damaged@corp.example", "reason": "test"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.to_string().contains(&damaged_id.to_string()), "{b}");
    let (s, b) = call(
        &app,
        &admin,
        reqwest::Method::POST,
        "/api/v1/privacy/erase",
        Some(json!({"email": "damaged@corp.example", "reason": "test"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.to_string().contains(&damaged_id.to_string()), "{b}");
}
