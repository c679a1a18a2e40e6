//! Form ingest over real HTTP against a real SQLite file: every bad-input
//! class, the three body encodings, idempotency, honeypot, consent,
//! attribution, CORS, and the raw IP never being stored.

use std::time::Duration;

use leadrelay::store::{DeliveryState, EventFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Receiver, TestApp, eventually, lead, webhook_config};

async fn app() -> (TestApp, Receiver) {
    let r = Receiver::start().await;
    (TestApp::spawn(&webhook_config(&r.url(), "")).await, r)
}

async fn event_count(app: &TestApp) -> usize {
    app.store
        .list_events(&EventFilter::default(), None, 1000)
        .await
        .unwrap()
        .len()
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("json error body");
    (status, body)
}

#[tokio::test]
async fn json_submission_is_stored_with_enrichment_and_outbox_row() {
    let (app, _r) = app().await;
    let resp = app
        .client
        .post(app.url("/v1/forms/contact?utm_medium=cpc&gclid=abc123"))
        .header("referer", "https://www.example.com/pricing?utm_campaign=spring")
        .header("user-agent", "TestBrowser/1.0")
        .json(&json!({"email": " Jane@Example.COM ", "first_name": "Jane", "consent": "on", "utm_source": "google"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(id.get_version_num(), 7, "ids are UUIDv7");

    let e = app.store.get_event(id).await.unwrap().expect("stored");
    assert_eq!(e.event_type.as_str(), "lead.created");
    assert_eq!(
        e.contact.email.as_ref().unwrap().as_str(),
        "jane@example.com"
    );
    assert_eq!(e.contact.first_name.as_deref(), Some("Jane"));
    assert_eq!(
        e.attribution.utm_source.as_deref(),
        Some("google"),
        "from the body"
    );
    assert_eq!(
        e.attribution.utm_medium.as_deref(),
        Some("cpc"),
        "from the POST URL"
    );
    assert_eq!(
        e.attribution.utm_campaign.as_deref(),
        Some("spring"),
        "from the landing page"
    );
    assert_eq!(e.attribution.gclid.as_deref(), Some("abc123"));
    assert_eq!(e.attribution.user_agent.as_deref(), Some("TestBrowser/1.0"));
    assert_eq!(
        e.attribution.landing_page.as_deref(),
        Some("https://www.example.com/pricing?utm_campaign=spring")
    );
    assert!(
        e.raw.body.contains("Jane@Example.COM"),
        "raw payload kept as received"
    );
    assert_eq!(e.consent.len(), 1);
    assert!(e.consent[0].granted);
    assert_eq!(e.consent[0].text_version.as_deref(), Some("v1"));
    assert!(e.ip_hash.as_ref().is_some_and(|h| h.len() == 64));
    assert!(e.contact_id.is_some(), "merged into a golden contact");

    let deliveries = app.store.deliveries_for_event(id).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].destination, "hook");
}

#[tokio::test]
async fn urlencoded_browser_post_gets_303_to_thanks_page() {
    let (app, _r) = app().await;
    let resp = app
        .client
        .post(app.url("/v1/forms/contact"))
        .header("accept", "text/html,application/xhtml+xml")
        .form(&[("email", "bob@acme.io"), ("first_name", "Bob")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(loc, "/v1/forms/contact/thanks");
    let page = app.client.get(app.url(&loc)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Thank you"));
    assert_eq!(event_count(&app).await, 1);

    // Validation errors answer browsers with an HTML page listing each field.
    let resp = app
        .client
        .post(app.url("/v1/forms/contact"))
        .header("accept", "text/html")
        .form(&[("email", "not-an-email")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let html = resp.text().await.unwrap();
    assert!(html.contains("<strong>email</strong>"), "{html}");
}

#[tokio::test]
async fn configured_redirect_url_is_used() {
    let r = Receiver::start().await;
    let cfg = webhook_config(&r.url(), "").replace(
        "[forms.contact]\n",
        "[forms.contact]\nredirect_url = \"https://example.com/thanks\"\n",
    );
    let app = TestApp::spawn(&cfg).await;
    let resp = app
        .client
        .post(app.url("/v1/forms/contact"))
        .header("accept", "text/html")
        .form(&[("email", "a@b.io")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "https://example.com/thanks");
}

#[tokio::test]
async fn multipart_text_parts_are_accepted_and_files_rejected() {
    let (app, _r) = app().await;
    let form = reqwest::multipart::Form::new()
        .text("email", "multi@part.io")
        .text("first_name", "Multi");
    let resp = app
        .client
        .post(app.url("/v1/forms/contact"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id: Uuid = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let e = app.store.get_event(id).await.unwrap().unwrap();
    assert_eq!(e.contact.first_name.as_deref(), Some("Multi"));

    let part = reqwest::multipart::Part::bytes(b"%PDF-1.4".to_vec()).file_name("cv.pdf");
    let form = reqwest::multipart::Form::new()
        .text("email", "file@part.io")
        .part("cv", part);
    let (status, body) = error_of(
        app.client
            .post(app.url("/v1/forms/contact"))
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["fields"][0]["field"], "cv");
    assert_eq!(body["error"]["fields"][0]["code"], "file_not_accepted");
    assert_eq!(
        event_count(&app).await,
        1,
        "the rejected submission stored nothing"
    );
}

#[tokio::test]
async fn validation_reports_every_failing_field_at_once() {
    let r = Receiver::start().await;
    let extra = r#"
[forms.quote]
[forms.quote.fields.email]
type = "email"
required = true
[forms.quote.fields.phone]
type = "phone"
default_region = "US"
[forms.quote.fields.plan]
type = "picklist"
options = ["basic", "pro"]
[forms.quote.fields.seats]
type = "number"
min = 1
max = 500
[forms.quote.fields.website]
type = "url"
[forms.quote.fields.notes]
type = "text"
max_length = 10
[forms.quote.fields.newsletter]
type = "boolean"
"#;
    let app = TestApp::spawn(&webhook_config(&r.url(), extra)).await;
    let (status, body) = error_of(
        app.post_json(
            "/v1/forms/quote",
            &json!({"phone": "12", "plan": "gold", "seats": 0, "website": "javascript:alert(1)", "notes": "far too long text", "newsletter": "perhaps"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "validation_failed");
    let fields: Vec<(String, String)> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_string(),
                f["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("email", "required"),
        ("phone", "invalid_phone"),
        ("plan", "invalid_option"),
        ("seats", "out_of_range"),
        ("website", "invalid_url"),
        ("notes", "too_long"),
        ("newsletter", "invalid_boolean"),
    ] {
        assert!(
            fields.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} not in {fields:?}"
        );
    }
    assert_eq!(event_count(&app).await, 0);
}

#[tokio::test]
async fn malformed_bodies_are_400_and_store_nothing() {
    let (app, _r) = app().await;
    let cases: Vec<(&str, &[u8])> = vec![
        ("application/json", b"{\"email\": "),
        ("application/json", b"[1,2,3]"),
        ("application/json", b""),
        ("application/json", b"\"just a string\""),
        ("application/x-www-form-urlencoded", &[0xff, 0xfe, 0x3d]),
        ("multipart/form-data; boundary=X", b"not multipart at all"),
        ("multipart/form-data", b"--X\r\n"),
    ];
    for (ct, body) in cases {
        let resp = app
            .client
            .post(app.url("/v1/forms/contact"))
            .header("content-type", ct)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let (status, err) = error_of(resp).await;
        assert_eq!(status, 400, "{ct} {body:?}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // A nested object where a value belongs is a field error, not a crash.
    let (status, err) = error_of(
        app.post_json("/v1/forms/contact", &json!({"email": {"nested": true}}))
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["fields"][0]["code"], "invalid_type");
    assert_eq!(event_count(&app).await, 0);
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415() {
    let (app, _r) = app().await;
    for ct in [Some("text/plain"), Some("application/xml"), None] {
        let mut req = app
            .client
            .post(app.url("/v1/forms/contact"))
            .body("email=a@b.io");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let (status, err) = error_of(req.send().await.unwrap()).await;
        assert_eq!(status, 415, "{ct:?}");
        assert_eq!(err["error"]["code"], "unsupported_media_type");
    }
    assert_eq!(event_count(&app).await, 0);
}

#[tokio::test]
async fn oversized_bodies_are_413_with_or_without_content_length() {
    let (app, _r) = app().await;
    let big = json!({"email": "a@b.io", "first_name": "x".repeat(70 * 1024)});
    let (status, err) = error_of(app.post_json("/v1/forms/contact", &big).await).await;
    assert_eq!(status, 413);
    assert_eq!(err["error"]["code"], "body_too_large");

    // Chunked, no Content-Length: the limit still holds while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..80).map(|_| Ok(vec![b' '; 1024])).collect();
    let stream = futures::stream::iter(chunks);
    let resp = app
        .client
        .post(app.url("/v1/forms/contact"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(event_count(&app).await, 0);
}

#[tokio::test]
async fn unknown_form_is_404() {
    let (app, _r) = app().await;
    let (status, err) = error_of(app.post_json("/v1/forms/nope", &lead("a@b.io")).await).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "unknown_form");
    let (status, _) = error_of(
        app.client
            .get(app.url("/v2/whatever"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn per_ip_throttling_answers_429_with_retry_after() {
    let r = Receiver::start().await;
    let cfg = format!(
        "[server]\nper_ip_limit = \"3/1m\"\n{}",
        webhook_config(&r.url(), "")
    );
    let app = TestApp::builder(&cfg).keep_throttle().start().await;
    for i in 0..3 {
        assert_eq!(
            app.post_json("/v1/forms/contact", &lead(&format!("t{i}@x.io")))
                .await
                .status(),
            202
        );
    }
    let resp = app.post_json("/v1/forms/contact", &lead("t9@x.io")).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let (_, err) = error_of(resp).await;
    assert_eq!(err["error"]["code"], "rate_limited");
    assert_eq!(event_count(&app).await, 3);
}

#[tokio::test]
async fn honeypot_answers_success_but_is_stored_as_spam_and_never_delivered() {
    let r = Receiver::start().await;
    let cfg = webhook_config(&r.url(), "").replace(
        "[forms.contact]\n",
        "[forms.contact]\nhoneypot = \"website_url\"\n",
    );
    let app = TestApp::spawn(&cfg).await;
    // Bots fill every field; some also send garbage elsewhere.
    let resp = app
        .post_json(
            "/v1/forms/contact",
            &json!({"email": "not valid", "website_url": "http://spam.example"}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let id: Uuid = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let e = app.store.get_event(id).await.unwrap().unwrap();
    assert!(e.spam);
    assert!(app.store.deliveries_for_event(id).await.unwrap().is_empty());
    // A real lead still goes out; the spam never reaches the receiver.
    app.post_json("/v1/forms/contact", &lead("real@lead.io"))
        .await;
    eventually(
        "the real lead is delivered",
        Duration::from_secs(10),
        || async { (r.delivered().len() == 1).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.hits().len(), 1);
}

#[tokio::test]
async fn idempotency_key_returns_the_original_event() {
    let (app, _r) = app().await;
    let send = |key: &'static str| {
        app.client
            .post(app.url("/v1/forms/contact"))
            .header("idempotency-key", key)
            .json(&lead("idem@x.io"))
            .send()
    };
    let first = send("order-123").await.unwrap();
    assert_eq!(first.status(), 202);
    let id1 = first.json::<Value>().await.unwrap()["id"].clone();
    let second = send("order-123").await.unwrap();
    assert_eq!(second.status(), 202);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(second.json::<Value>().await.unwrap()["id"], id1);
    let third = send("order-456").await.unwrap();
    assert_ne!(third.json::<Value>().await.unwrap()["id"], id1);
    assert_eq!(event_count(&app).await, 2);
    assert_eq!(
        app.deliveries("hook").await.len(),
        2,
        "nothing stored twice, outbox included"
    );

    let bad = app
        .client
        .post(app.url("/v1/forms/contact"))
        .header("idempotency-key", "has spaces in it")
        .json(&lead("a@b.io"))
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(bad).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "invalid_idempotency_key");
}

#[tokio::test]
async fn a_reused_form_idempotency_key_with_another_body_is_refused() {
    let (app, _r) = app().await;
    let send = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/v1/forms/contact"))
            .header("idempotency-key", "order-9")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let form = "application/x-www-form-urlencoded";
    let first = send("email=one%40x.io&first_name=Ann", form).await.unwrap();
    assert_eq!(first.status(), 202);
    let id1 = first.json::<Value>().await.unwrap()["id"].clone();
    // The same fields in another order: the same request, replayed.
    let again = send("first_name=Ann&email=one%40x.io", form).await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["id"], id1);
    // Another lead under the same key: 422, and not stored.
    let other = send("email=two%40x.io&first_name=Bo", form).await.unwrap();
    let (status, err) = error_of(other).await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["code"], "idempotency_key_reused");
    assert_eq!(err["error"]["fields"][0]["field"], "Idempotency-Key");
    assert_eq!(event_count(&app).await, 1);
}

#[tokio::test]
async fn idempotency_key_from_a_form_field() {
    let r = Receiver::start().await;
    let cfg = webhook_config(&r.url(), "").replace(
        "[forms.contact]\n",
        "[forms.contact]\nidempotency_field = \"submission_id\"\n",
    );
    let app = TestApp::spawn(&cfg).await;
    let body = json!({"email": "f@x.io", "submission_id": "abc-1"});
    let a = app
        .post_json("/v1/forms/contact", &body)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let b = app
        .post_json("/v1/forms/contact", &body)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(a["id"], b["id"]);
    assert_eq!(event_count(&app).await, 1);
}

#[tokio::test]
async fn consent_is_recorded_per_purpose_and_enforced_at_send_time() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&webhook_config(&r.url(), "")).await;
    let resp = app
        .post_json("/v1/forms/contact", &json!({"email": "noconsent@x.io"}))
        .await;
    let id: Uuid = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let e = app.store.get_event(id).await.unwrap().unwrap();
    assert_eq!(e.consent.len(), 1);
    assert_eq!(e.consent[0].purpose.as_str(), "crm");
    assert!(!e.consent[0].granted);
    let d = eventually(
        "the delivery is decided",
        Duration::from_secs(10),
        || async {
            let d = app.store.deliveries_for_event(id).await.unwrap().pop()?;
            (d.state == DeliveryState::Skipped).then_some(d)
        },
    )
    .await;
    assert!(
        d.reason.unwrap().contains("consent"),
        "skipped: consent, not dead-lettered"
    );
    assert!(r.hits().is_empty(), "nothing personal left without consent");

    // A required consent checkbox is a validation error when unticked.
    let cfg = webhook_config(&r.url(), "").replace(
        "field = \"consent\"\n",
        "field = \"consent\"\nrequired = true\n",
    );
    let app2 = TestApp::spawn(&cfg).await;
    let (status, err) = error_of(
        app2.post_json("/v1/forms/contact", &json!({"email": "x@y.io"}))
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["fields"][0]["code"], "consent_required");
}

#[tokio::test]
async fn cors_preflight_and_origin_checks() {
    let r = Receiver::start().await;
    let cfg = webhook_config(&r.url(), "").replace(
        "[forms.contact]\n",
        "[forms.contact]\nallowed_origins = [\"https://www.example.com\"]\n",
    );
    let app = TestApp::spawn(&cfg).await;
    let pre = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/forms/contact"))
        .header("origin", "https://www.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://www.example.com"
    );
    assert!(
        pre.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );

    let bad = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/forms/contact"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);

    let ok = app
        .client
        .post(app.url("/v1/forms/contact"))
        .header("origin", "https://www.example.com")
        .json(&lead("c@x.io"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://www.example.com"
    );
    let denied = app
        .client
        .post(app.url("/v1/forms/contact"))
        .header("origin", "https://evil.example")
        .json(&lead("d@x.io"))
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(denied).await;
    assert_eq!(status, 403);
    assert_eq!(err["error"]["code"], "origin_not_allowed");
    assert_eq!(event_count(&app).await, 1);
}

#[tokio::test]
async fn the_client_ip_is_stored_only_as_a_keyed_hash() {
    let r = Receiver::start().await;
    let cfg = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n{}",
        webhook_config(&r.url(), "")
    );
    let app = TestApp::builder(&cfg)
        .env("LEADRELAY_IP_HASH_KEY", "test-key-0123456789")
        .start()
        .await;
    let test_ip = "203.0.113.77";
    let resp = app
        .client
        .post(app.url("/v1/forms/contact"))
        .header("x-forwarded-for", test_ip)
        .json(&lead("ip@x.io"))
        .send()
        .await
        .unwrap();
    let id: Uuid = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let e = app.store.get_event(id).await.unwrap().unwrap();
    let hash = e.ip_hash.clone().unwrap();
    // The hash is HMAC-SHA256 of the client IP under the configured key.
    assert_eq!(
        hash,
        leadrelay::ingest::enrich::IpHasher::new(b"test-key-0123456789")
            .hash(test_ip.parse().unwrap())
    );
    eventually("delivered", Duration::from_secs(10), || async {
        (!r.delivered().is_empty()).then_some(())
    })
    .await;
    assert!(!app.db.contains(test_ip), "the raw IP is in the database");
    let sent = String::from_utf8_lossy(&r.delivered()[0].body).to_string();
    assert!(
        !sent.contains(test_ip),
        "the raw IP was sent to a destination"
    );
}

#[tokio::test]
async fn ip_hash_key_is_generated_once_and_kept() {
    let (app, _r) = app().await;
    let a = app
        .post_json("/v1/forms/contact", &lead("k1@x.io"))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let store = app.store.clone();
    let key1 = store
        .kv_get("privacy.ip_hash_key")
        .await
        .unwrap()
        .expect("generated");
    let stopped = app.stop().await;
    let r = Receiver::start().await;
    let app = TestApp::builder(&webhook_config(&r.url(), ""))
        .resume(stopped)
        .start()
        .await;
    let b = app
        .post_json("/v1/forms/contact", &lead("k2@x.io"))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let key2 = app
        .store
        .kv_get("privacy.ip_hash_key")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(key1, key2);
    let ea = app
        .store
        .get_event(a["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let eb = app
        .store
        .get_event(b["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ea.ip_hash, eb.ip_hash,
        "same client, same hash across restarts"
    );
}

#[tokio::test]
async fn repeat_submissions_update_one_golden_contact() {
    let (app, _r) = app().await;
    app.post_json(
        "/v1/forms/contact",
        &json!({"email": "gold@x.io", "first_name": "Jo"}),
    )
    .await;
    app.post_json(
        "/v1/forms/contact",
        &json!({"email": "GOLD@x.io", "first_name": "Joanna"}),
    )
    .await;
    let c = app
        .store
        .find_contact_by_email("gold@x.io")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.data.first_name.as_deref(), Some("Joanna"));
    assert_eq!(c.provenance["first_name"].source, "form:contact");
    let events = app
        .store
        .list_events(&EventFilter::default(), None, 10)
        .await
        .unwrap();
    assert!(events.iter().all(|e| e.contact_id == Some(c.id)));
}

#[tokio::test]
async fn health_and_readiness() {
    let (app, _r) = app().await;
    let h = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let want = match crate::support::backend() {
        crate::support::Backend::Sqlite => "sqlite",
        crate::support::Backend::Postgres => "postgres",
    };
    assert_eq!(r.json::<Value>().await.unwrap()["storage"], want);
}

#[tokio::test]
async fn storage_failure_answers_503_never_2xx() {
    let (app, _r) = app().await;
    // Stop the store's writer: nothing can be committed any more.
    app.store.close().await;
    let resp = app.post_json("/v1/forms/contact", &lead("lost@x.io")).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let (_, err) = error_of(resp).await;
    assert_eq!(err["error"]["code"], "storage_unavailable");
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
}
