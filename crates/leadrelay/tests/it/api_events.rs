//! `POST /v1/events` over real HTTP: events from a backend with an API key
//! are stored with the origin `api:<key>`, routed and delivered like any
//! other; keys and roles; every bad input refused with its field and nothing
//! stored; batches stored whole; idempotency; consent checked at send time.

use std::time::Duration;

use leadrelay::store::{DeliveryState, Role};
use leadrelay_model::OriginKind;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::admin::{key, sign_in};
use crate::support::{Receiver, TestApp, eventually, webhook_config};

const WAIT: Duration = Duration::from_secs(20);

async fn send(app: &TestApp, key: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let mut req = app.client.post(app.url("/v1/events")).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn fields(body: &Value) -> Vec<(String, String)> {
    body["error"]["fields"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_string(),
                f["code"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn event_count(app: &TestApp) -> usize {
    app.store
        .list_events(&Default::default(), None, 500)
        .await
        .unwrap()
        .len()
}

/// A receiver, an app delivering every event to it, and an ingest key.
async fn start(key_name: &str) -> (Receiver, TestApp, String) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&webhook_config(&receiver.url(), "")).await;
    let k = key(&app, key_name, Role::Ingest).await;
    (receiver, app, k)
}

#[tokio::test]
async fn an_event_is_stored_with_its_key_as_origin_and_delivered() {
    let (receiver, app, k) = start("backend").await;
    let (status, body) = send(
        &app,
        Some(&k),
        &json!({
            "type": "lead.created",
            "occurred_at": "2026-11-20T09:00:00Z",
            "contact": {"email": " Sam@Corp.Example ", "first_name": "Sam", "phone": "+1 415 555 2671", "plan": "pro"},
            "data": {"budget": 2000},
            "attribution": {"utm_source": "newsletter", "gclid": "abc", "landing_page": "https://corp.example/pricing"},
            "consent": {"crm": true, "marketing_email": false}
        }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "accepted");
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();

    let event = app.store.get_event(id).await.unwrap().expect("stored");
    assert_eq!(event.origin.kind, OriginKind::Api);
    assert_eq!(event.origin.name, "backend");
    assert_eq!(event.event_type.as_str(), "lead.created");
    assert_eq!(event.occurred_at.to_rfc3339(), "2026-11-20T09:00:00+00:00");
    assert_eq!(
        event.contact.email.as_ref().unwrap().as_str(),
        "sam@corp.example"
    );
    assert_eq!(
        event.contact.phone.as_ref().unwrap().as_str(),
        "+14155552671"
    );
    assert_eq!(event.contact.custom["plan"], "pro");
    assert_eq!(event.data["budget"], 2000);
    assert_eq!(event.attribution.utm_source.as_deref(), Some("newsletter"));
    assert_eq!(event.attribution.gclid.as_deref(), Some("abc"));
    assert_eq!(
        event.attribution.landing_page.as_deref(),
        Some("https://corp.example/pricing")
    );
    let granted: Vec<(String, bool)> = event
        .consent
        .iter()
        .map(|c| (c.purpose.as_str().to_string(), c.granted))
        .collect();
    assert_eq!(
        granted,
        [
            ("crm".to_string(), true),
            ("marketing_email".to_string(), false)
        ]
    );
    assert!(
        event.raw.body.contains("Sam@Corp.Example"),
        "raw payload kept"
    );

    // Routed and delivered like a form's lead.
    let hit = eventually("the webhook gets the event", WAIT, || async {
        receiver.delivered().into_iter().next()
    })
    .await;
    let sent = hit.json();
    assert_eq!(sent["data"]["event_id"], id.to_string(), "{sent}");
    assert_eq!(
        sent["data"]["origin"],
        json!({"kind": "api", "name": "backend"}),
        "{sent}"
    );
    assert_eq!(
        sent["data"]["contact"]["email"], "sam@corp.example",
        "{sent}"
    );
    // The golden contact is the same person a form would update.
    let contact = app
        .store
        .find_contact_by_email("sam@corp.example")
        .await
        .unwrap()
        .expect("a golden contact");
    assert_eq!(event_count(&app).await, 1);
    assert_eq!(contact.data.first_name.as_deref(), Some("Sam"));
}

#[tokio::test]
async fn keys_and_roles() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&webhook_config(&receiver.url(), "")).await;
    let one = json!({"contact": {"email": "a@corp.example"}, "consent": {"crm": true}});

    // No key, a malformed header, an unknown key: 401 with the challenge.
    let r = app
        .client
        .post(app.url("/v1/events"))
        .json(&one)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"leadrelay\""
    );
    let r = app
        .client
        .post(app.url("/v1/events"))
        .header("authorization", "Basic abc")
        .json(&one)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = send(&app, Some("lr_not-a-key"), &one).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");

    // A viewer key only reads.
    let viewer = key(&app, "analyst", Role::Viewer).await;
    let (status, body) = send(&app, Some(&viewer), &one).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(event_count(&app).await, 0);

    // An admin key may send; its name is the origin.
    let admin = key(&app, "ops", Role::Admin).await;
    let (status, body) = send(&app, Some(&admin), &one).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        app.store.get_event(id).await.unwrap().unwrap().origin.name,
        "ops"
    );

    // The admin API lists events by the key that sent them.
    let r = app
        .client
        .get(app.url("/api/v1/events?api=ops"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let page: Value = r.json().await.unwrap();
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.to_string()]);
    // So does the CLI.
    let (code, out, err) = crate::binary::run(&[
        "events",
        "list",
        "--api",
        "ops",
        "--json",
        "--storage-url",
        &app.db.url,
    ]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(listed[0]["id"], id.to_string());

    // An ingest key sends but reads nothing: not the API, not the dashboard.
    let ingest = key(&app, "website backend", Role::Ingest).await;
    let (status, _) = send(&app, Some(&ingest), &one).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let r = app
        .client
        .get(app.url("/api/v1/events"))
        .bearer_auth(&ingest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ingest key"),
        "{body}"
    );
    let r = sign_in(&app, &ingest).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("ingest key"));

    // A revoked key is refused.
    app.store.revoke_api_key("website backend").await.unwrap();
    let (status, body) = send(&app, Some(&ingest), &one).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
    assert_eq!(event_count(&app).await, 2);
}

#[tokio::test]
async fn bad_input_is_refused_with_its_field_and_nothing_is_stored() {
    let (receiver, app, k) = start("backend").await;
    let raw = |body: &'static str, content_type: &'static str| {
        let req = app
            .client
            .post(app.url("/v1/events"))
            .bearer_auth(&k)
            .header("content-type", content_type)
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };

    // Not JSON: 415; malformed or empty: 400; JSON but not events: 422.
    let (status, body) = raw("email=a@b.example", "application/x-www-form-urlencoded").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    let (status, body) = raw("{\"contact\": ", "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "malformed_body");
    let (status, _) = raw("  ", "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = raw("\"lead\"", "application/json; charset=utf-8").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        fields(&body),
        [("body".to_string(), "invalid_type".to_string())]
    );
    // An empty array stores nothing and says so.
    let (status, body) = raw("[]", "application/json").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body, json!({"events": []}));

    // Every failing field of every event at once, with its path.
    let (status, body) = send(
        &app,
        Some(&k),
        &json!([
            {"contact": {"email": "fine@corp.example"}},
            {"contact": {"email": "not an email", "phone": "12", "company": {"name": "x"}, "website": false}},
            {"type": "Not A Type", "form": "contact", "consent": {"Bad Purpose": true}},
            {"attribution": {"utm_sauce": "x", "gclid": 5}, "idempotency_key": ""},
            {"colour": "blue"},
            {"occurred_at": "yesterday"},
            {"type": "unsubscribed", "contact": {"email": "u@corp.example"}, "data": {"purposes": ["Not Valid"]}},
            42,
            {"type": "privacy.erase", "data": {"records": [{"object": "contact", "id": "1"}]}}
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    let got = fields(&body);
    let expected = [
        ("[1].contact.company", "invalid_type"),
        ("[1].contact.email", "invalid_email"),
        ("[1].contact.phone", "invalid_phone"),
        ("[1].contact.website", "invalid_type"),
        ("[2].type", "invalid_event_type"),
        ("[2].form", "not_allowed"),
        ("[2].consent.Bad Purpose", "invalid_purpose"),
        ("[3].attribution.gclid", "invalid_type"),
        ("[3].attribution.utm_sauce", "unknown_field"),
        ("[3].idempotency_key", "invalid_idempotency_key"),
        ("[4].colour", "unknown_field"),
        ("[5].occurred_at", "invalid_value"),
        ("[6].data.purposes", "invalid_purpose"),
        ("[7]", "invalid_type"),
        ("[8].type", "reserved_event_type"),
    ];
    assert_eq!(
        got,
        expected
            .iter()
            .map(|(f, c)| (f.to_string(), c.to_string()))
            .collect::<Vec<_>>(),
        "{body}"
    );
    // Messages say what was expected.
    let msg = body["error"]["fields"][10]["message"].as_str().unwrap();
    assert!(
        msg.contains("unknown field `colour`, expected one of"),
        "{msg}"
    );
    let msg = body["error"]["fields"][11]["message"].as_str().unwrap();
    assert!(msg.contains("RFC 3339"), "{msg}");

    // Too many events; too large a body (1 MiB by default).
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"contact": {"email": format!("p{i}@corp.example")}}))
        .collect();
    let (status, body) = send(&app, Some(&k), &Value::Array(many)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&body)[0].1, "too_many_events");
    let huge = json!({"contact": {"email": "big@corp.example"}, "data": {"notes": "x".repeat(1100 * 1024)}});
    let (status, body) = send(&app, Some(&k), &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "body_too_large");

    // A valid event beside invalid ones was not stored either.
    assert_eq!(event_count(&app).await, 0);
    assert!(receiver.hits().is_empty());
    assert!(
        app.store
            .find_contact_by_email("fine@corp.example")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn batches_are_stored_whole_and_idempotency_keys_store_once() {
    let (receiver, app, k) = start("backfill").await;
    let batch = json!([
        {"contact": {"email": "one@corp.example"}, "consent": {"crm": true}, "idempotency_key": "row-1"},
        {"type": "meeting.booked", "contact": {"email": "two@corp.example"}, "consent": {"crm": true}, "idempotency_key": "row-2"},
        {"contact": {"email": "three@corp.example"}, "consent": {"crm": true}, "idempotency_key": "row-3"}
    ]);
    let (status, body) = send(&app, Some(&k), &batch).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let first = body["events"].as_array().unwrap().clone();
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|e| e["status"] == "accepted"));
    for (e, email) in
        first
            .iter()
            .zip(["one@corp.example", "two@corp.example", "three@corp.example"])
    {
        let id: Uuid = e["id"].as_str().unwrap().parse().unwrap();
        let stored = app.store.get_event(id).await.unwrap().unwrap();
        assert_eq!(stored.contact.email.unwrap().as_str(), email, "in order");
    }

    // The same batch again (a retry after a lost answer): nothing new, the
    // first ids back; a fourth row with a fresh key is stored.
    let mut again = batch.as_array().unwrap().clone();
    again.push(json!({"contact": {"email": "four@corp.example"}, "consent": {"crm": true}, "idempotency_key": "row-4"}));
    let (status, body) = send(&app, Some(&k), &Value::Array(again)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let second = body["events"].as_array().unwrap();
    for i in 0..3 {
        assert_eq!(second[i]["status"], "duplicate");
        assert_eq!(second[i]["id"], first[i]["id"]);
    }
    assert_eq!(second[3]["status"], "accepted");
    assert_eq!(event_count(&app).await, 4);

    // One event with the Idempotency-Key header: the same id, replayed.
    let one = json!({"contact": {"email": "five@corp.example"}, "consent": {"crm": true}});
    let post = || {
        app.client
            .post(app.url("/v1/events"))
            .bearer_auth(&k)
            .header("idempotency-key", "signup-5")
            .json(&one)
            .send()
    };
    let r1 = post().await.unwrap();
    assert_eq!(r1.status(), StatusCode::ACCEPTED);
    assert!(r1.headers().get("idempotent-replayed").is_none());
    let id1 = r1.json::<Value>().await.unwrap()["id"].clone();
    let r2 = post().await.unwrap();
    assert_eq!(r2.status(), StatusCode::ACCEPTED);
    assert_eq!(r2.headers()["idempotent-replayed"], "true");
    assert_eq!(r2.json::<Value>().await.unwrap()["id"], id1);
    assert_eq!(event_count(&app).await, 5);

    // The header with an array is refused.
    let r = app
        .client
        .post(app.url("/v1/events"))
        .bearer_auth(&k)
        .header("idempotency-key", "batch-1")
        .json(&json!([one]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_idempotency_key"
    );
    // One key on two different events of a batch: refused, nothing stored.
    let (status, body) = send(
        &app,
        Some(&k),
        &json!([
            {"contact": {"email": "six@corp.example"}, "consent": {"crm": true}, "idempotency_key": "same"},
            {"contact": {"email": "seven@corp.example"}, "idempotency_key": "same"}
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(
        fields(&body),
        [(
            "[1].idempotency_key".to_string(),
            "idempotency_key_reused".to_string()
        )]
    );
    assert_eq!(event_count(&app).await, 5);
    let (status, body) = send(
        &app,
        Some(&k),
        &json!([
            {"contact": {"email": "six@corp.example"}, "consent": {"crm": true}, "idempotency_key": "same"},
            {"consent": {"crm": true}, "idempotency_key": "same", "contact": {"email": "six@corp.example"}},
            {"contact": null, "data": null, "attribution": null, "consent": null, "idempotency_key": null}
        ]),
    )
    .await;
    // The same event twice in a batch: the second is the first's duplicate;
    // nulls are absent fields.
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let third = body["events"].as_array().unwrap();
    assert_eq!(third[0]["status"], "accepted");
    assert_eq!(third[1]["status"], "duplicate");
    assert_eq!(third[1]["id"], third[0]["id"]);
    assert_eq!(third[2]["status"], "accepted");
    assert_eq!(event_count(&app).await, 7);

    // Every stored event with consent was delivered once; the one without
    // a person has no personal data to hold back.
    eventually("seven deliveries", WAIT, || async {
        (receiver.delivered().len() == 7).then_some(())
    })
    .await;
}

/// Posts `body` (raw JSON text) with an `Idempotency-Key` header.
async fn send_keyed(app: &TestApp, key: &str, idem: &str, body: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/events"))
        .bearer_auth(key)
        .header("idempotency-key", idem)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn idempotency_keys_are_per_api_key_and_a_reused_key_is_refused() {
    let (_receiver, app, one) = start("client-one").await;
    let two = key(&app, "client-two", Role::Ingest).await;
    let a = r#"{"contact": {"email": "a@corp.example", "first_name": "Ann"}, "consent": {"crm": true}}"#;
    let b = r#"{"contact": {"email": "b@corp.example"}, "consent": {"crm": true}}"#;

    // Two clients, one key, different leads: both stored.
    let r1 = send_keyed(&app, &one, "shared-key-1", a).await;
    assert_eq!(r1.status(), StatusCode::ACCEPTED);
    let id1 = r1.json::<Value>().await.unwrap()["id"].clone();
    let r2 = send_keyed(&app, &two, "shared-key-1", b).await;
    assert_eq!(r2.status(), StatusCode::ACCEPTED);
    assert!(r2.headers().get("idempotent-replayed").is_none());
    let id2: Uuid = r2.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(Value::String(id2.to_string()), id1);
    let stored = app.store.get_event(id2).await.unwrap().expect("stored");
    assert_eq!(stored.contact.email.unwrap().as_str(), "b@corp.example");
    assert_eq!(event_count(&app).await, 2);

    // The same request again, re-encoded (other key order, spacing): replayed.
    let a_again =
        r#"{"consent":{"crm":true},"contact":{"first_name":"Ann","email":"a@corp.example"}}"#;
    let r = send_keyed(&app, &one, "shared-key-1", a_again).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(r.json::<Value>().await.unwrap()["id"], id1);

    // The same client, the same key, another lead: 422, nothing stored.
    let c = r#"{"contact": {"email": "c@corp.example"}, "consent": {"crm": true}}"#;
    let r = send_keyed(&app, &one, "shared-key-1", c).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.json::<Value>().await.unwrap();
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(
        fields(&body),
        [(
            "Idempotency-Key".to_string(),
            "idempotency_key_reused".to_string()
        )]
    );
    assert_eq!(event_count(&app).await, 2);

    // In a batch, the body's keys are per client too: client two's key
    // `shared-key-1` names its own event; another body under it is refused,
    // and the fresh event beside it is not stored either.
    let (status, body) = send(
        &app,
        Some(&two),
        &json!([
            {"contact": {"email": "d@corp.example"}, "consent": {"crm": true}, "idempotency_key": "fresh-1"},
            {"contact": {"email": "e@corp.example"}, "consent": {"crm": true}, "idempotency_key": "shared-key-1"}
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        fields(&body),
        [(
            "[1].idempotency_key".to_string(),
            "idempotency_key_reused".to_string()
        )]
    );
    assert_eq!(event_count(&app).await, 2);
}

#[tokio::test]
async fn consent_is_checked_at_send_time_for_api_events() {
    let (receiver, app, k) = start("backend").await;
    // No answer for `crm`, which the webhook destination needs: skipped.
    let (status, body) = send(
        &app,
        Some(&k),
        &json!({"contact": {"email": "quiet@corp.example"}, "consent": {"marketing_email": true}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let state = eventually("the delivery is decided", WAIT, || async {
        let d = app.store.deliveries_for_event(id).await.unwrap().pop()?;
        matches!(d.state, DeliveryState::Skipped | DeliveryState::Delivered).then_some(d.state)
    })
    .await;
    assert_eq!(state, DeliveryState::Skipped);
    assert!(receiver.hits().is_empty());
}
