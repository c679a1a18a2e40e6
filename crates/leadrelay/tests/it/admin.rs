//! The admin API and the dashboard over real HTTP: API-key auth and roles,
//! masking for viewers, cursor pagination, every resource, replay, discard,
//! pause and resume, privacy export and erase with their audit log, the
//! review queue, the dashboard's session cookie and CSRF guard, metrics, and
//! `leadrelay keys` through the binary.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use leadrelay::auth::generate_key;
use leadrelay::store::{DeliveryState, ReviewItem, ReviewStatus, Role};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Receiver, TestApp, eventually, lead, webhook_config};

const WAIT: Duration = Duration::from_secs(20);

pub(crate) async fn key(app: &TestApp, name: &str, role: Role) -> String {
    let (secret, record) = generate_key(name, role);
    app.store.create_api_key(record).await.unwrap();
    secret
}

pub(crate) async fn get(app: &TestApp, key: &str, path: &str) -> (StatusCode, Value) {
    let r = app
        .client
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(app: &TestApp, key: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = app.client.post(app.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn submit(app: &TestApp, body: Value) -> Uuid {
    let r = app.post_json("/v1/forms/contact", &body).await;
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

pub(crate) fn config(receiver: &Receiver) -> String {
    webhook_config(
        &receiver.url(),
        r#"
[forms.contact.fields.phone]
type = "phone"
default_region = "US"
"#,
    )
}

/// An app with one lead whose delivery is dead (the receiver said 400).
async fn app_with_dead_letter() -> (Receiver, TestApp, Uuid, Uuid) {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&config(&r)).await;
    r.fail_next(400, "rejected", 1);
    let event = submit(&app, lead("dana@example.com")).await;
    let dead = eventually("the delivery is dead", WAIT, || async {
        let d = app.store.deliveries_for_event(event).await.unwrap().pop()?;
        (d.state == DeliveryState::Dead).then_some(d.id)
    })
    .await;
    (r, app, event, dead)
}

#[tokio::test]
async fn api_keys_authenticate_and_roles_authorize() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&config(&r)).await;
    let admin = key(&app, "ops", Role::Admin).await;
    let viewer = key(&app, "marketing", Role::Viewer).await;

    let resp = app
        .client
        .get(app.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "no key");
    assert!(resp.headers().contains_key("www-authenticate"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let (s, _) = get(&app, "lr_not-a-real-key", "/api/v1/events").await;
    assert_eq!(s, 401, "wrong key");
    let (s, _) = get(&app, "Basic abc", "/api/v1/events").await;
    assert_eq!(s, 401);

    let (s, me) = get(&app, &viewer, "/api/v1/me").await;
    assert_eq!(s, 200);
    assert_eq!(me, json!({"name": "marketing", "role": "viewer"}));
    let (s, _) = get(&app, &viewer, "/api/v1/events").await;
    assert_eq!(s, 200, "viewers read");

    // Viewers never act.
    for (path, body) in [
        ("/api/v1/destinations/hook/pause", None),
        ("/api/v1/destinations/hook/resume", None),
        (
            "/api/v1/dead-letters/replay",
            Some(json!({"destination": "*"})),
        ),
        (
            "/api/v1/privacy/export",
            Some(json!({"email": "a@example.com"})),
        ),
        (
            "/api/v1/privacy/erase",
            Some(json!({"email": "a@example.com"})),
        ),
    ] {
        let (s, b) = post(&app, &viewer, path, body).await;
        assert_eq!(s, 403, "{path}");
        assert_eq!(b["error"]["code"], "forbidden");
    }
    let (s, _) = get(&app, &viewer, "/api/v1/privacy/audit").await;
    assert_eq!(s, 403);
    let (s, _) = post(&app, &admin, "/api/v1/destinations/hook/pause", None).await;
    assert_eq!(s, 200, "admins act");

    // A revoked key stops working at once.
    let revoked = app.store.revoke_api_key("marketing").await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let (s, b) = get(&app, &viewer, "/api/v1/events").await;
    assert_eq!(s, 401);
    assert!(b["error"]["message"].as_str().unwrap().contains("revoked"));

    // Keys are stored only as hashes; last use is recorded.
    let keys = app.store.api_keys().await.unwrap();
    let ops = keys.iter().find(|k| k.name == "ops").unwrap();
    assert!(ops.last_used_at.is_some());
    assert!(admin.starts_with(&ops.prefix));
    assert!(app.db.contains(&ops.prefix), "the key's record is stored");
    assert!(!app.db.contains(&admin[3..]), "the secret is not stored");
}

#[tokio::test]
async fn viewers_see_emails_and_phones_masked() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&config(&r)).await;
    let admin = key(&app, "ops", Role::Admin).await;
    let viewer = key(&app, "viewer", Role::Viewer).await;
    let mut body = lead("jane.doe@example.com");
    body["phone"] = json!("+1 415 555 2671");
    let id = submit(&app, body).await;

    let (_, list) = get(&app, &viewer, "/api/v1/events").await;
    assert_eq!(list["items"][0]["email"], "j***@example.com");
    let (_, detail) = get(&app, &viewer, &format!("/api/v1/events/{id}")).await;
    let text = detail.to_string();
    assert!(!text.contains("jane.doe"), "{text}");
    assert!(
        !text.contains("555 2671") && !text.contains("4155552671"),
        "{text}"
    );
    assert_eq!(detail["event"]["contact"]["email"], "j***@example.com");
    assert!(
        detail["event"]["raw"]["body"]
            .as_str()
            .unwrap()
            .contains("j***@example.com")
    );
    let (_, contacts) = get(&app, &viewer, "/api/v1/contacts").await;
    assert!(!contacts.to_string().contains("jane.doe"));

    let (_, detail) = get(&app, &admin, &format!("/api/v1/events/{id}")).await;
    assert_eq!(detail["event"]["contact"]["email"], "jane.doe@example.com");
    assert_eq!(detail["event"]["contact"]["phone"], "+14155552671");
    assert!(
        detail["event"]["raw"]["body"]
            .as_str()
            .unwrap()
            .contains("jane.doe@example.com")
    );
}

#[tokio::test]
async fn lists_page_with_cursors_and_filters() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&config(&r)).await;
    let admin = key(&app, "ops", Role::Admin).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(submit(&app, lead(&format!("p{i}@example.com"))).await);
    }
    ids.reverse(); // newest first
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/events?limit=2&cursor={c}"),
            None => "/api/v1/events?limit=2".to_string(),
        };
        let (s, page) = get(&app, &admin, &path).await;
        assert_eq!(s, 200);
        for e in page["items"].as_array().unwrap() {
            seen.push(e["id"].as_str().unwrap().parse::<Uuid>().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every event once, newest first");

    let (_, page) = get(&app, &admin, "/api/v1/events?q=p3%40example").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (_, page) = get(
        &app,
        &admin,
        "/api/v1/events?form=contact&type=lead.created",
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    let (_, page) = get(&app, &admin, "/api/v1/events?source=hubspot").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    let since = (Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, page) = get(&app, &admin, &format!("/api/v1/events?since={since}")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);

    // Bad input answers 400 with the JSON error body.
    for bad in [
        "/api/v1/events?limit=0",
        "/api/v1/events?limit=500",
        "/api/v1/events?cursor=nope",
        "/api/v1/events?type=Bad%20Type",
        "/api/v1/events?since=yesterday",
        "/api/v1/events/not-a-uuid",
    ] {
        let (s, b) = get(&app, &admin, bad).await;
        assert_eq!(s, 400, "{bad}");
        assert!(b["error"]["code"].is_string(), "{bad}: {b}");
    }
    let (s, b) = get(&app, &admin, &format!("/api/v1/events/{}", Uuid::nil())).await;
    assert_eq!(s, 404);
    assert_eq!(b["error"]["code"], "not_found");
}

#[tokio::test]
async fn events_contacts_deliveries_and_destinations() {
    let (_r, app, event, dead) = app_with_dead_letter().await;
    let admin = key(&app, "ops", Role::Admin).await;

    let (s, detail) = get(&app, &admin, &format!("/api/v1/events/{event}")).await;
    assert_eq!(s, 200);
    assert_eq!(detail["event"]["type"], "lead.created");
    assert!(
        detail["event"]["raw"]["body"]
            .as_str()
            .unwrap()
            .contains("dana@example.com")
    );
    assert_eq!(detail["deliveries"][0]["delivery"]["state"], "dead");
    assert_eq!(detail["deliveries"][0]["attempts"][0]["status"], 400);
    let contact_id = detail["event"]["contact_id"].as_str().unwrap().to_string();

    let (s, contact) = get(&app, &admin, &format!("/api/v1/contacts/{contact_id}")).await;
    assert_eq!(s, 200);
    assert_eq!(contact["fields"]["email"], "dana@example.com");
    assert_eq!(
        contact["provenance"]["first_name"]["source"],
        "form:contact"
    );
    assert_eq!(
        contact["provenance"]["first_name"]["event_id"],
        event.to_string()
    );
    let (_, contacts) = get(&app, &admin, "/api/v1/contacts?q=dana").await;
    assert_eq!(contacts["items"].as_array().unwrap().len(), 1);

    let (_, deliveries) = get(&app, &admin, "/api/v1/deliveries?state=dead").await;
    assert_eq!(deliveries["items"][0]["id"], dead.to_string());
    let (s, d) = get(&app, &admin, &format!("/api/v1/deliveries/{dead}")).await;
    assert_eq!(s, 200);
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1);
    let (_, dl) = get(&app, &admin, "/api/v1/dead-letters?destination=hook").await;
    assert_eq!(dl["items"].as_array().unwrap().len(), 1);
    assert!(
        dl["items"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 400")
    );

    let (s, dests) = get(&app, &admin, "/api/v1/destinations").await;
    assert_eq!(s, 200);
    let hook = dests
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "hook")
        .unwrap();
    assert_eq!(hook["dead_letters"], 1);
    assert_eq!(hook["connector"], "webhook");
    assert_eq!(hook["success_rate"], 0.0);
    assert_eq!(hook["circuit"], "closed");
    let (s, _) = get(&app, &admin, "/api/v1/destinations/nope").await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn replay_discard_pause_and_resume() {
    let (r, app, _event, dead) = app_with_dead_letter().await;
    let admin = key(&app, "ops", Role::Admin).await;

    // Pause: nothing is sent while paused.
    let (s, h) = post(
        &app,
        &admin,
        "/api/v1/destinations/hook/pause",
        Some(json!({"reason": "CRM maintenance"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h["paused"], true);
    assert!(
        h["pause_reason"]
            .as_str()
            .unwrap()
            .contains("CRM maintenance")
    );

    let (s, res) = post(
        &app,
        &admin,
        &format!("/api/v1/dead-letters/{dead}/replay"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(res["replayed"][0]["dead_letter_id"], dead.to_string());
    let new: Uuid = res["replayed"][0]["delivery_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (s, b) = post(
        &app,
        &admin,
        &format!("/api/v1/dead-letters/{dead}/replay"),
        None,
    )
    .await;
    assert_eq!(s, 409, "a dead letter is replayed once: {b}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.delivered().len(), 0, "paused: nothing sent");
    let (_, dl) = get(&app, &admin, "/api/v1/dead-letters").await;
    assert_eq!(
        dl["items"].as_array().unwrap().len(),
        0,
        "a replayed dead letter leaves the queue"
    );

    let (s, h) = post(&app, &admin, "/api/v1/destinations/hook/resume", None).await;
    assert_eq!(s, 200);
    assert_eq!(h["paused"], false);
    eventually("the replay is delivered", WAIT, || async {
        let d = app.store.get_delivery(new).await.unwrap()?;
        (d.state == DeliveryState::Delivered).then_some(())
    })
    .await;
    assert_eq!(r.delivered().len(), 1);

    // Discard: a second dead letter, kept but never retried.
    r.fail_next(400, "rejected", 1);
    let e2 = submit(&app, lead("lee@example.com")).await;
    let d2 = eventually("dead", WAIT, || async {
        let d = app.store.deliveries_for_event(e2).await.unwrap().pop()?;
        (d.state == DeliveryState::Dead).then_some(d.id)
    })
    .await;
    let (s, res) = post(
        &app,
        &admin,
        &format!("/api/v1/dead-letters/{d2}/discard"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(res["discarded"], 1);
    let (s, _) = post(
        &app,
        &admin,
        &format!("/api/v1/dead-letters/{d2}/discard"),
        None,
    )
    .await;
    assert_eq!(s, 409);
    let (s, _) = post(
        &app,
        &admin,
        &format!("/api/v1/dead-letters/{}/discard", Uuid::nil()),
        None,
    )
    .await;
    assert_eq!(s, 404);

    // Bulk replay by destination (the discarded one is no longer dead).
    let (s, res) = post(
        &app,
        &admin,
        "/api/v1/dead-letters/replay",
        Some(json!({"destination": "hook"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(res["requested"], 0);
    // A name no destination has is a typo, not "nothing to replay".
    let (s, b) = post(
        &app,
        &admin,
        "/api/v1/dead-letters/replay",
        Some(json!({"destination": "nope"})),
    )
    .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(b["error"]["code"], "not_found", "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("nope"),
        "{b}"
    );
    let (s, b) = post(
        &app,
        &admin,
        "/api/v1/dead-letters/replay",
        Some(json!({"destination": "hook", "ids": []})),
    )
    .await;
    assert_eq!(s, 422, "ids and destination together: {b}");
}

#[tokio::test]
async fn privacy_export_and_erase_are_audited() {
    let (_r, app, event, dead) = app_with_dead_letter().await;
    let admin = key(&app, "dpo", Role::Admin).await;
    let other = submit(&app, lead("keep@example.com")).await;

    let (s, x) = post(
        &app,
        &admin,
        "/api/v1/privacy/export",
        Some(json!({"email": "DANA@example.com", "reason": "subject access request"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(x["contact"]["fields"]["email"], "dana@example.com");
    assert!(x["contact"]["provenance"]["first_name"].is_object());
    assert_eq!(x["events"].as_array().unwrap().len(), 1);
    assert_eq!(x["events"][0]["id"], event.to_string());
    assert_eq!(x["deliveries"][0]["id"], dead.to_string());
    assert_eq!(x["attempts"].as_array().unwrap().len(), 1);

    let (s, report) = post(
        &app,
        &admin,
        "/api/v1/privacy/erase",
        Some(json!({"email": "dana@example.com", "reason": "erasure request"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(report["event_ids"], json!([event.to_string()]));
    assert_eq!(
        report["deliveries_stopped"], 1,
        "the dead letter is stopped"
    );

    // Nothing personal remains of the erased person.
    let ev = app.store.get_event(event).await.unwrap().unwrap();
    assert!(ev.contact.email.is_none() && ev.contact.first_name.is_none());
    assert!(ev.raw.body.is_empty() && ev.data.is_empty() && ev.ip_hash.is_none());
    assert!(
        app.store
            .find_contact_by_email("dana@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let d = app.store.get_delivery(dead).await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::Skipped);
    assert!(!d.contact_key.contains("dana"));
    let (_, x) = post(
        &app,
        &admin,
        "/api/v1/privacy/export",
        Some(json!({"email": "dana@example.com"})),
    )
    .await;
    assert!(x["contact"].is_null() && x["events"].as_array().unwrap().is_empty());
    // Someone else is untouched.
    let kept = app.store.get_event(other).await.unwrap().unwrap();
    assert_eq!(kept.contact.email.unwrap().as_str(), "keep@example.com");

    // The audit log says who, when and what, never the address.
    let (s, audit) = get(&app, &admin, "/api/v1/privacy/audit").await;
    assert_eq!(s, 200);
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[1]["action"], "erase");
    assert_eq!(items[1]["actor"], "key:dpo");
    assert_eq!(items[1]["reason"], "erasure request");
    assert_eq!(items[1]["details"]["event_ids"], json!([event.to_string()]));
    assert_eq!(items[2]["action"], "export");
    assert_eq!(items[1]["subject_hash"], items[2]["subject_hash"]);
    assert!(!audit.to_string().contains("dana"));

    let (s, b) = post(
        &app,
        &admin,
        "/api/v1/privacy/erase",
        Some(json!({"email": "no-at-sign"})),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(b["error"]["fields"][0]["field"], "email");
    let resp = app
        .client
        .post(app.url("/api/v1/privacy/erase"))
        .bearer_auth(&admin)
        .body("email=x@y.z")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
}

#[tokio::test]
async fn review_queue_lists_and_closes_items() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&config(&r)).await;
    let admin = key(&app, "ops", Role::Admin).await;
    let viewer = key(&app, "viewer", Role::Viewer).await;
    let id = leadrelay_model::new_id();
    app.store
        .add_review_item(ReviewItem {
            id,
            kind: "sync_conflict".into(),
            status: ReviewStatus::Open,
            summary: "phone differs between HubSpot and leadrelay".into(),
            contact_id: None,
            destination: Some("hubspot".into()),
            details: json!({"field": "phone", "ours": "+14155552671", "theirs": "+14155550000"}),
            created_at: Utc::now(),
            resolved_at: None,
            resolved_by: None,
            resolution: None,
        })
        .await
        .unwrap();
    let (_, list) = get(&app, &viewer, "/api/v1/review?status=open").await;
    assert_eq!(list["items"][0]["id"], id.to_string());
    assert!(
        !list.to_string().contains("4155552671"),
        "masked for viewers"
    );
    let (s, _) = post(
        &app,
        &viewer,
        &format!("/api/v1/review/{id}/resolve"),
        Some(json!({"status": "resolved"})),
    )
    .await;
    assert_eq!(s, 403);
    let (s, item) = post(
        &app,
        &admin,
        &format!("/api/v1/review/{id}/resolve"),
        Some(json!({"status": "resolved", "resolution": "kept ours"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(item["status"], "resolved");
    assert_eq!(item["resolved_by"], "key:ops");
    let (s, _) = post(
        &app,
        &admin,
        &format!("/api/v1/review/{id}/resolve"),
        Some(json!({"status": "dismissed"})),
    )
    .await;
    assert_eq!(s, 409, "closed once");
    let (_, open) = get(&app, &admin, "/api/v1/review?status=open").await;
    assert!(open["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn openapi_document_describes_every_route() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&config(&r)).await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/events",
        "/api/v1/events/{id}",
        "/api/v1/contacts/{id}",
        "/api/v1/deliveries/{id}",
        "/api/v1/dead-letters",
        "/api/v1/dead-letters/replay",
        "/api/v1/dead-letters/{id}/replay",
        "/api/v1/destinations/{name}/pause",
        "/api/v1/review",
        "/api/v1/privacy/erase",
        "/v1/events",
    ] {
        assert!(paths.contains_key(p), "{p} is documented");
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    // Every reference resolves: a client generator would stop at a dangling one.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} does not resolve"
        );
    }
}

/// The `lr_session=…` pair a sign-in answer sets.
pub(crate) fn session_cookie(resp: &reqwest::Response) -> String {
    session_set_cookie(resp)
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// The whole `Set-Cookie` value of the session cookie.
fn session_set_cookie(resp: &reqwest::Response) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("lr_session="))
        .expect("a session cookie")
}

/// The CSRF token embedded in a page's forms.
pub(crate) fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .expect("a form with a CSRF token")
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

/// Signs in through the dashboard's form.
pub(crate) async fn sign_in(app: &TestApp, key: &str) -> reqwest::Response {
    let page = app.client.get(app.url("/ui/login")).send().await.unwrap();
    let cookie = page
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = page.text().await.unwrap();
    let csrf = csrf_of(&html);
    app.client
        .post(app.url("/ui/login"))
        .header("cookie", cookie)
        .form(&[("key", key), ("csrf", &csrf), ("next", "/ui/leads")])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn dashboard_sessions_and_csrf() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&config(&r)).await;
    let admin = key(&app, "ops", Role::Admin).await;
    let viewer = key(&app, "viewer", Role::Viewer).await;
    submit(&app, lead("sam.stone@example.com")).await;

    let resp = app.client.get(app.url("/ui/")).send().await.unwrap();
    assert_eq!(resp.status(), 303, "pages need a session");
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/ui/login")
    );

    // Sign-in without the sign-in page's token is refused.
    let resp = app
        .client
        .post(app.url("/ui/login"))
        .form(&[("key", admin.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    let resp = sign_in(&app, &admin).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ui/leads");
    let set = session_set_cookie(&resp);
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Path=/ui"), "{set}");
    assert!(!set.contains("Secure"), "plain http: no Secure flag: {set}");
    let session = set.split(';').next().unwrap().to_string();
    let token = session.trim_start_matches("lr_session=");
    assert!(!app.db.contains(token), "only the session's hash is stored");

    let page = app
        .client
        .get(app.url("/ui/leads"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("sam.stone@example.com"));
    let csrf = csrf_of(&html);

    // A POST without the token, or with a wrong one, is refused.
    for form in [
        vec![("hours", "1")],
        vec![("hours", "1"), ("csrf", "forged")],
    ] {
        let resp = app
            .client
            .post(app.url("/ui/destinations/hook/pause"))
            .header("cookie", &session)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
    }
    assert!(
        !app.store
            .destination_state("hook")
            .await
            .unwrap()
            .paused_at(Utc::now())
    );
    let resp = app
        .client
        .post(app.url("/ui/destinations/hook/pause"))
        .header("cookie", &session)
        .form(&[("hours", "1"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert!(
        app.store
            .destination_state("hook")
            .await
            .unwrap()
            .paused_at(Utc::now())
    );

    // Viewers see masked data and cannot act.
    let resp = sign_in(&app, &viewer).await;
    let vsession = session_cookie(&resp);
    let html = app
        .client
        .get(app.url("/ui/leads"))
        .header("cookie", &vsession)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("s***@example.com") && !html.contains("sam.stone"));
    let vcsrf = csrf_of(&html);
    let resp = app
        .client
        .post(app.url("/ui/destinations/hook/resume"))
        .header("cookie", &vsession)
        .form(&[("csrf", vcsrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // Revoking the key ends its sessions; signing out ends one.
    app.store.revoke_api_key("viewer").await.unwrap();
    let resp = app
        .client
        .get(app.url("/ui/leads"))
        .header("cookie", &vsession)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let resp = app
        .client
        .post(app.url("/ui/logout"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let resp = app
        .client
        .get(app.url("/ui/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
}

#[tokio::test]
async fn session_cookie_is_secure_behind_https() {
    let r = Receiver::start().await;
    let toml = config(&r).replace(
        "[forms.contact]",
        "[server]\npublic_url = \"https://leads.example.com\"\n\n[forms.contact]",
    );
    let app = TestApp::spawn(&toml).await;
    let admin = key(&app, "ops", Role::Admin).await;
    let resp = sign_in(&app, &admin).await;
    let set = session_set_cookie(&resp);
    assert!(set.contains("; Secure"), "{set}");
}

#[tokio::test]
async fn dashboard_pages_render_and_bulk_replay_reports_progress() {
    let (r, app, event, _dead) = app_with_dead_letter().await;
    let admin = key(&app, "ops", Role::Admin).await;
    let resp = sign_in(&app, &admin).await;
    let session = session_cookie(&resp);
    let page = |path: String| {
        let client = app.client.clone();
        let url = app.url(&path);
        let session = session.clone();
        async move {
            let r = client
                .get(url)
                .header("cookie", session)
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (s, html) = page("/ui/".into()).await;
    assert_eq!(s, 200);
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 2);
    assert!(html.contains("form:contact"));
    let (s, html) = page(format!("/ui/leads/{event}")).await;
    assert_eq!(s, 200);
    assert!(html.contains("To hook") && html.contains("HTTP 400"));
    let (s, _) = page("/ui/leads/not-an-id".into()).await;
    assert_eq!(s, 404);
    let (s, html) = page("/ui/dead-letters".into()).await;
    assert_eq!(s, 200);
    assert!(html.contains("1 open dead letter."), "{html}");
    let csrf = csrf_of(&html);
    let (s, _) = page("/ui/destinations".into()).await;
    assert_eq!(s, 200);

    let bulk = |confirm: &'static str| {
        app.client
            .post(app.url("/ui/dead-letters/bulk"))
            .header("cookie", &session)
            .form(&[
                ("csrf", csrf.as_str()),
                ("destination", ""),
                ("action", "replay"),
                ("confirm", confirm),
            ])
            .send()
    };
    let resp = bulk("").await.unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the count is shown before anything changes"
    );
    assert!(resp.text().await.unwrap().contains("Replay 1 dead letter?"));
    let resp = bulk("yes").await.unwrap();
    assert_eq!(resp.status(), 303);
    let job = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(job.starts_with("/ui/jobs/"));
    eventually("the bulk replay finishes", WAIT, || {
        let job = job.clone();
        let page = &page;
        async move {
            let (_, html) = page(job).await;
            html.contains("finished").then_some(())
        }
    })
    .await;
    eventually("the replay is delivered", WAIT, || async {
        (r.delivered().len() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn metrics_cover_destinations_and_circuits() {
    let (_r, app, _event, _dead) = app_with_dead_letter().await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "leadrelay_ingest_total{origin=\"form:contact\",outcome=\"accepted\"} 1",
        "leadrelay_ingest_seconds_bucket",
        "leadrelay_deliveries_total{destination=\"hook\",outcome=\"dead\"}",
        "leadrelay_attempt_seconds_bucket",
        "leadrelay_backlog{destination=\"hook\"} 0",
        "leadrelay_dead_letters{destination=\"hook\"} 1",
        "leadrelay_circuit_state{destination=\"hook\",state=\"closed\"} 1",
        "leadrelay_destination_paused{destination=\"hook\"} 0",
    ] {
        assert!(text.contains(name), "{name} in\n{text}");
    }
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_leadrelay"))
}

#[test]
fn keys_cli_creates_lists_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/k.db", dir.path().display());
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .args(["--storage-url", &url])
            .env_remove("LEADRELAY_CONFIG")
            .env_remove("DATABASE_URL")
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, secret, err) = run(&["keys", "create", "--name", "ci", "--role", "admin"]);
    assert!(ok, "{err}");
    let secret = secret.trim().to_string();
    assert!(secret.starts_with("lr_") && secret.len() == 46, "{secret}");
    assert!(err.contains("not shown again"));
    let (ok, _, err) = run(&["keys", "create", "--name", "ci", "--role", "viewer"]);
    assert!(!ok && err.contains("already named"), "{err}");
    let (ok, _, err) = run(&["keys", "create", "--name", "x", "--role", "owner"]);
    assert!(!ok && err.contains("owner"), "{err}");
    let (ok, list, _) = run(&["keys", "list", "--json"]);
    assert!(ok);
    let keys: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(keys[0]["name"], "ci");
    assert_eq!(keys[0]["role"], "admin");
    assert!(!list.contains(&secret[3..]), "list never shows the secret");
    let (ok, out, _) = run(&["keys", "revoke", "ci"]);
    assert!(ok && out.contains("revoked"), "{out}");
    let (ok, _, err) = run(&["keys", "revoke", "ci"]);
    assert!(!ok, "{err}");
    let (ok, list, _) = run(&["keys", "list"]);
    assert!(ok && list.contains("ci"));
}
