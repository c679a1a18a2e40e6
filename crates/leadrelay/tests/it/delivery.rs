//! The delivery engine through a real receiver: every answer class, dead
//! letters and replay, Standard Webhooks signatures checked by an
//! independent implementation, per-contact order, no head-of-line blocking,
//! alerts, and the private-network guard.

use std::time::Duration;

use leadrelay::store::DeliveryState;
use leadrelay_fakes::common::Fault;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Receiver, TestApp, eventually, lead, webhook_config};

const WAIT: Duration = Duration::from_secs(20);

async fn submit(app: &TestApp, email: &str) -> Uuid {
    let resp = app.post_json("/v1/forms/contact", &lead(email)).await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits until the event's only delivery reaches a final state.
async fn settled(app: &TestApp, event: Uuid) -> leadrelay::store::Delivery {
    eventually("the delivery settles", WAIT, || async {
        let d = app.store.deliveries_for_event(event).await.unwrap().pop()?;
        (!d.state.is_active()).then_some(d)
    })
    .await
}

#[tokio::test]
async fn delivered_with_standard_webhooks_signatures_verified_independently() {
    let r = Receiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let old = "whsec_b2xkLXNlY3JldC1rZXktdXNlZC1iZWZvcmU=";
    let cfg = webhook_config(&r.url(), "")
        .replace("purposes = [\"crm\"]\n", "purposes = [\"crm\"]\nsecret_env = \"HOOK_SECRET\"\nprevious_secret_envs = [\"HOOK_SECRET_OLD\"]\nheaders = { \"X-Team\" = \"growth\" }\nsecret_headers = { \"Authorization\" = \"HOOK_AUTH\" }\n");
    let app = TestApp::builder(&cfg)
        .env("HOOK_SECRET", secret)
        .env("HOOK_SECRET_OLD", old)
        .env("HOOK_AUTH", "Bearer s3cret")
        .start()
        .await;
    let id = submit(&app, "signed@x.io").await;
    let d = settled(&app, id).await;
    assert_eq!(d.state, DeliveryState::Delivered);
    let hit = &r.delivered()[0];
    assert_eq!(
        hit.header("webhook-id").unwrap(),
        d.id.to_string(),
        "webhook-id is the delivery id"
    );
    assert_eq!(hit.header("x-team").as_deref(), Some("growth"));
    assert_eq!(
        hit.header("authorization").as_deref(),
        Some("Bearer s3cret")
    );
    // Both the new and the old secret verify (key rotation).
    for s in [secret, old] {
        let wh = standardwebhooks::Webhook::new(s).unwrap();
        wh.verify(&hit.body, &hit.headers)
            .unwrap_or_else(|e| panic!("signature with {s} rejected: {e:?}"));
    }
    let tampered = [hit.body.as_ref(), b" "].concat();
    assert!(
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&tampered, &hit.headers)
            .is_err()
    );
    let body = hit.json();
    assert_eq!(body["type"], "lead.created");
    assert_eq!(body["id"], d.id.to_string());
    assert_eq!(body["data"]["contact"]["email"], "signed@x.io");

    // The attempt log keeps the request without secrets and the answer.
    let attempts = app.store.attempts(d.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    let a = &attempts[0];
    assert_eq!(a.outcome, "delivered");
    assert_eq!(a.method.as_deref(), Some("POST"));
    assert_eq!(a.status, Some(200));
    assert_eq!(a.request_bytes, Some(hit.body.len() as u64));
    assert_eq!(a.request_sha256.as_ref().map(String::len), Some(64));
    let log = serde_json::to_string(&attempts).unwrap();
    assert!(!log.contains("s3cret"), "no secret in the attempt log");
}

#[tokio::test]
async fn client_errors_are_dead_lettered_with_the_reason_and_replayable() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&webhook_config(&r.url(), "")).await;
    r.fail_next(
        400,
        r#"{"error":"field company is required for jane@x.io"}"#,
        1,
    );
    let id = submit(&app, "jane@x.io").await;
    let d = settled(&app, id).await;
    assert_eq!(d.state, DeliveryState::Dead);
    assert_eq!(d.last_status, Some(400));
    let reason = d.reason.clone().unwrap();
    assert!(
        reason.contains("HTTP 400") && reason.contains("company is required"),
        "{reason}"
    );
    assert!(
        !reason.contains("jane@x.io"),
        "vendor text is redacted: {reason}"
    );
    assert_eq!(r.hits().len(), 1, "4xx is not retried");

    // Replay makes a new delivery and keeps the history of the old one.
    let pairs = app.store.replay(vec![d.id], None).await.unwrap();
    assert_eq!(pairs.len(), 1);
    let new_id = pairs[0].1;
    let new = eventually("the replay is delivered", WAIT, || async {
        let n = app.store.get_delivery(new_id).await.unwrap()?;
        (n.state == DeliveryState::Delivered).then_some(n)
    })
    .await;
    assert_eq!(new.replay_of, Some(d.id));
    let old = app.store.get_delivery(d.id).await.unwrap().unwrap();
    assert_eq!(old.state, DeliveryState::Dead);
    assert_eq!(old.replayed_by, Some(new_id));
    assert_eq!(
        app.store.attempts(d.id).await.unwrap().len(),
        1,
        "old attempts are kept"
    );
    // Replaying the same dead letter twice does nothing the second time.
    assert!(app.store.replay(vec![d.id], None).await.unwrap().is_empty());
}

#[tokio::test]
async fn replay_with_an_edited_payload() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&webhook_config(&r.url(), "")).await;
    r.fail_next(422, "first_name invalid", 1);
    let id = submit(&app, "edit@x.io").await;
    let d = settled(&app, id).await;
    let mut set = serde_json::Map::new();
    set.insert("first_name".into(), json!("Edited"));
    set.insert("data.plan".into(), json!("pro"));
    app.store.replay(vec![d.id], Some(set)).await.unwrap();
    eventually("delivered", WAIT, || async {
        (!r.delivered().is_empty()).then_some(())
    })
    .await;
    let body = r.delivered()[0].json();
    assert_eq!(body["data"]["contact"]["first_name"], "Edited");
    assert_eq!(body["data"]["fields"]["plan"], "pro");
    // The stored event is immutable: the edit lives on the delivery only.
    let e = app.store.get_event(id).await.unwrap().unwrap();
    assert_eq!(e.contact.first_name.as_deref(), Some("Test"));
}

#[tokio::test]
async fn server_errors_timeouts_and_resets_are_retried_until_delivered() {
    let r = Receiver::start().await;
    let cfg = webhook_config(&r.url(), "").replace("timeout = \"2s\"", "timeout = \"500ms\"");
    let app = TestApp::spawn(&cfg).await;
    r.fail_next(500, "boom", 1);
    r.fail_next(503, "maintenance", 1);
    r.faults().push(Fault::Delay(Duration::from_secs(3)), 1);
    r.faults().push(Fault::Reset, 1);
    r.fail_next(502, "", 1);
    let id = submit(&app, "retry@x.io").await;
    let d = settled(&app, id).await;
    assert_eq!(d.state, DeliveryState::Delivered);
    let attempts = app.store.attempts(d.id).await.unwrap();
    let classes: Vec<String> = attempts
        .iter()
        .map(|a| a.error_class.clone().unwrap_or_else(|| "ok".into()))
        .collect();
    assert_eq!(
        classes,
        vec![
            "http_5xx", "http_5xx", "timeout", "connect", "http_5xx", "ok"
        ],
        "{attempts:#?}"
    );
    assert!(
        attempts[..5]
            .iter()
            .all(|a| a.outcome == "retry" && a.next_attempt_at.is_some())
    );
    assert_eq!(d.failures, 5);
}

#[tokio::test]
async fn retry_after_is_honoured_and_429_pauses_the_destination() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&webhook_config(&r.url(), "")).await;
    r.fail_next_with(429, &[("retry-after", "2")], 1);
    let id = submit(&app, "slow@x.io").await;
    let paused = eventually("the destination is paused", WAIT, || async {
        let s = app.store.destination_state("hook").await.unwrap();
        s.paused_until
            .map(|u| (u, s.pause_reason.unwrap_or_default()))
    })
    .await;
    assert!(paused.1.contains("throttled"), "{}", paused.1);
    let d = settled(&app, id).await;
    assert_eq!(d.state, DeliveryState::Delivered);
    let attempts = app.store.attempts(d.id).await.unwrap();
    assert_eq!(attempts[0].outcome, "throttled");
    assert_eq!(d.failures, 0, "throttling is not a failure");
    // The retry waited for Retry-After (compared with the attempt log's own clock).
    let gap = attempts[1].started_at - attempts[0].started_at;
    assert!(
        gap >= chrono::Duration::milliseconds(1900),
        "retried after {gap} despite Retry-After: 2"
    );

    // The HTTP-date form of Retry-After is understood too.
    let when = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
    r.fail_next_with(503, &[("retry-after", &when)], 1);
    let id = submit(&app, "slow2@x.io").await;
    let d = settled(&app, id).await;
    let attempts = app.store.attempts(d.id).await.unwrap();
    let gap = attempts[1].started_at - attempts[0].started_at;
    assert!(
        gap >= chrono::Duration::milliseconds(900),
        "HTTP-date Retry-After ignored: {gap}"
    );
}

#[tokio::test]
async fn unauthorized_is_credentials_rejected_and_gone_disables_the_destination() {
    let r = Receiver::start().await;
    let alerts = Receiver::start().await;
    let extra = format!(
        r#"
[destinations.ops]
connector = "webhook"
url = "{}"
allow_private_networks = true
legal_basis = "legitimate_interest"

[alerts]
notify = ["ops"]
"#,
        alerts.url()
    );
    let app = TestApp::spawn(&webhook_config(&r.url(), &extra)).await;
    r.fail_next(401, "bad token", 1);
    let d = settled(&app, submit(&app, "auth@x.io").await).await;
    assert_eq!(d.state, DeliveryState::Dead);
    assert!(d.reason.unwrap().starts_with("credentials rejected"));

    r.fail_next(410, "this hook was deleted", 1);
    let d = settled(&app, submit(&app, "gone@x.io").await).await;
    assert_eq!(d.state, DeliveryState::Dead);
    let state = app.store.destination_state("hook").await.unwrap();
    assert!(state.disabled, "410 disables the destination");
    let alert = eventually("an alert is sent", WAIT, || async {
        alerts.delivered().into_iter().next()
    })
    .await;
    let body = alert.json();
    assert_eq!(body["type"], "leadrelay.alert");
    assert_eq!(body["data"]["fields"]["destination"], "hook");
    assert_eq!(body["data"]["fields"]["alert"], "disabled");

    // While disabled, new deliveries wait (nothing is lost); re-enabling resumes them.
    let id = submit(&app, "waiting@x.io").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        app.store.deliveries_for_event(id).await.unwrap()[0]
            .state
            .is_active()
    );
    app.store
        .set_destination_disabled("hook", false, None)
        .await
        .unwrap();
    assert_eq!(settled(&app, id).await.state, DeliveryState::Delivered);
}

#[tokio::test]
async fn gives_up_after_max_attempts_into_the_dead_letter_queue() {
    let r = Receiver::start().await;
    let cfg = webhook_config(&r.url(), "")
        .replace("cap = \"200ms\"", "cap = \"200ms\"\nmax_attempts = 3");
    let app = TestApp::spawn(&cfg).await;
    r.fail_next(500, "down", 10);
    let d = settled(&app, submit(&app, "dead@x.io").await).await;
    assert_eq!(d.state, DeliveryState::Dead);
    assert!(
        d.reason
            .as_deref()
            .unwrap()
            .contains("gave up after 3 failed attempts"),
        "{:?}",
        d.reason
    );
    assert_eq!(r.hits().len(), 3);
}

#[tokio::test]
async fn deliveries_about_one_contact_stay_in_order() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&webhook_config(&r.url(), "")).await;
    r.fail_next(500, "", 2);
    let mut ids = Vec::new();
    for name in ["first", "second", "third"] {
        let resp = app
            .post_json(
                "/v1/forms/contact",
                &json!({"email": "order@x.io", "first_name": name, "consent": "on"}),
            )
            .await;
        ids.push(
            resp.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    eventually("all three delivered", WAIT, || async {
        (r.delivered().len() == 3).then_some(())
    })
    .await;
    let order: Vec<String> = r
        .delivered()
        .iter()
        .map(|h| h.json()["data"]["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        order, ids,
        "no update before create: one contact's deliveries keep their order across retries"
    );
}

#[tokio::test]
async fn a_hanging_destination_does_not_delay_another() {
    let slow = Receiver::start().await;
    let fast = Receiver::start().await;
    let extra = format!(
        r#"
[destinations.fast]
connector = "webhook"
url = "{}"
allow_private_networks = true
purposes = ["crm"]

[[routes]]
name = "fast"
destinations = ["fast"]
"#,
        fast.url()
    );
    let cfg = webhook_config(&slow.url(), &extra).replace("timeout = \"2s\"", "timeout = \"30s\"");
    let app = TestApp::spawn(&cfg).await;
    slow.faults()
        .push(Fault::Delay(Duration::from_secs(60)), 100);
    for i in 0..20 {
        submit(&app, &format!("p{i}@x.io")).await;
    }
    eventually("the fast destination gets everything", WAIT, || async {
        (fast.delivered().len() == 20).then_some(())
    })
    .await;
    // Meanwhile not one request to the slow destination has finished.
    assert!(slow.hits().is_empty());
    let slow_done = app
        .deliveries("hook")
        .await
        .iter()
        .filter(|d| !d.state.is_active())
        .count();
    assert_eq!(slow_done, 0);
}

#[tokio::test]
async fn private_network_urls_are_blocked_unless_allowed() {
    let r = Receiver::start().await;
    let cfg = webhook_config(&r.url(), "").replace("allow_private_networks = true\n", "");
    let app = TestApp::spawn(&cfg).await;
    let d = settled(&app, submit(&app, "ssrf@x.io").await).await;
    assert_eq!(d.state, DeliveryState::Dead);
    assert!(
        d.reason.as_deref().unwrap().contains("private network"),
        "{:?}",
        d.reason
    );
    assert!(r.hits().is_empty());

    // A host name is checked on its resolved address, not its spelling.
    let by_name = r.url().replace("127.0.0.1", "localhost");
    let cfg = webhook_config(&by_name, "").replace("allow_private_networks = true\n", "");
    let app = TestApp::spawn(&cfg).await;
    let d = settled(&app, submit(&app, "ssrf2@x.io").await).await;
    assert_eq!(d.state, DeliveryState::Dead);
    assert!(r.hits().is_empty());
}

#[tokio::test]
async fn failure_rate_alert_fires_once_and_recovers() {
    let r = Receiver::start().await;
    let alerts = Receiver::start().await;
    let extra = format!(
        r#"
[destinations.ops]
connector = "webhook"
url = "{}"
allow_private_networks = true
legal_basis = "legitimate_interest"

[alerts]
notify = ["ops"]
min_attempts = 5
failure_rate = 0.5
dead_letters = 1000
check_interval = "200ms"
window = "1h"
"#,
        alerts.url()
    );
    let app = TestApp::spawn(&webhook_config(&r.url(), &extra)).await;
    r.fail_next(400, "rejected", 8);
    for i in 0..8 {
        submit(&app, &format!("a{i}@x.io")).await;
    }
    let first = eventually("an alert fires", WAIT, || async {
        alerts.delivered().into_iter().next()
    })
    .await;
    assert_eq!(first.json()["data"]["fields"]["status"], "firing");
    assert_eq!(first.json()["data"]["fields"]["alert"], "failure_rate");
    // Healthy traffic brings the rate back under the threshold: one recovery notice.
    for i in 0..20 {
        submit(&app, &format!("b{i}@x.io")).await;
    }
    let resolved = eventually("a recovery notice", WAIT, || async {
        alerts
            .delivered()
            .into_iter()
            .find(|h| h.json()["data"]["fields"]["status"] == "resolved")
    })
    .await;
    assert_eq!(resolved.json()["data"]["fields"]["destination"], "hook");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let firing = alerts
        .delivered()
        .iter()
        .filter(|h| h.json()["data"]["fields"]["status"] == "firing")
        .count();
    assert_eq!(firing, 1, "one alert per incident");
}

#[tokio::test]
async fn file_backup_appends_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backup");
    let cfg = format!(
        r#"
[forms.contact]
[forms.contact.fields.email]
type = "email"
required = true
[delivery]
poll_interval = "100ms"
[destinations.backup]
connector = "file"
path = "{}"
legal_basis = "legitimate_interest"
[[routes]]
name = "all"
destinations = ["backup"]
"#,
        path.display()
    );
    let app = TestApp::spawn(&cfg).await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(submit(&app, &format!("f{i}@x.io")).await);
    }
    let lines = eventually("all lines written", WAIT, || async {
        let files: Vec<_> = std::fs::read_dir(&path)
            .ok()?
            .filter_map(|e| e.ok())
            .collect();
        let text: String = files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f.path()).ok())
            .collect();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (lines.len() == 25).then_some(lines)
    })
    .await;
    let mut seen: Vec<String> = lines
        .iter()
        .map(|l| l["data"]["event_id"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    let mut want: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    want.sort();
    assert_eq!(seen, want);
    // Besides `.leads.jsonl.lock` (the series lock), one file.
    let name = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .find(|n| !n.starts_with('.'))
        .unwrap();
    assert!(
        name.starts_with("leads-") && name.ends_with(".jsonl"),
        "{name}"
    );
}

#[tokio::test]
async fn rate_limited_destination_keeps_its_pace() {
    let r = Receiver::start().await;
    let cfg = webhook_config(&r.url(), "").replace(
        "timeout = \"2s\"",
        "timeout = \"2s\"\nrate_limit = \"10/1s\"\nconcurrency = 4",
    );
    let app = TestApp::spawn(&cfg).await;
    for i in 0..25 {
        submit(&app, &format!("rl{i}@x.io")).await;
    }
    eventually("all delivered", WAIT, || async {
        (r.delivered().len() == 25).then_some(())
    })
    .await;
    // Compare with the attempt log's clock: 25 requests at 10/s span ≥ 2.4 s.
    let mut starts = Vec::new();
    for d in app.deliveries("hook").await {
        starts.extend(
            app.store
                .attempts(d.id)
                .await
                .unwrap()
                .iter()
                .map(|a| a.started_at),
        );
    }
    starts.sort();
    let span = *starts.last().unwrap() - starts[0];
    assert!(
        span >= chrono::Duration::milliseconds(2300),
        "25 requests at 10/s took only {span}"
    );
}

#[tokio::test]
async fn consent_withdrawn_before_sending_stops_the_delivery() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&webhook_config(&r.url(), "")).await;
    // Pause the destination so the first lead waits in the outbox.
    app.hold("hook").await;
    let first = submit(&app, "withdraw@x.io").await;
    // The same person submits again, unticking consent: the latest answer wins.
    app.post_json("/v1/forms/contact", &json!({"email": "withdraw@x.io"}))
        .await;
    app.release("hook", 1).await;
    let d = settled(&app, first).await;
    assert_eq!(d.state, DeliveryState::Skipped);
    assert!(r.hits().is_empty());
}

/// An event for `hook` stored and claimed (lease of ten minutes) through a
/// store of its own opened as `node`, which is then dropped: what a process
/// killed with `kill -9` mid-send leaves behind.
async fn claimed_by_a_killed_run(url: &str, node: &str, email: &str) -> Uuid {
    let options = leadrelay::store::OpenOptions {
        node_id: Some(node.into()),
        ..Default::default()
    };
    let store = leadrelay::store::open(url, &options).await.unwrap();
    let contact = leadrelay_model::ContactData {
        email: Some(leadrelay_model::EmailAddress::parse(email).unwrap()),
        ..Default::default()
    };
    let mut event = leadrelay_model::Event::internal(
        leadrelay_model::EventType::LeadCreated,
        leadrelay_model::Origin::api("test"),
        contact,
        Default::default(),
        chrono::Utc::now(),
    );
    event.consent = vec![leadrelay_model::ConsentRecord {
        purpose: leadrelay_model::ConsentPurpose::parse("crm").unwrap(),
        granted: true,
        text_version: None,
        recorded_at: chrono::Utc::now(),
    }];
    let id = event.id;
    store
        .ingest(vec![leadrelay::store::IngestItem {
            event,
            destinations: vec!["hook".into()],
            idempotency: None,
        }])
        .await
        .unwrap();
    let claimed = store
        .claim("hook", 10, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_gives_back_the_leases_of_its_killed_run_at_once() {
    let r = Receiver::start().await;
    let config = webhook_config(&r.url(), "[storage]\nnode_id = \"node-a\"\n");
    let app = TestApp::spawn(&config).await;
    let url = app.db.url.clone();
    let stopped = app.stop().await;
    let mine = claimed_by_a_killed_run(&url, "node-a", "mine@x.io").await;
    let other = claimed_by_a_killed_run(&url, "node-b", "other@x.io").await;

    let app = TestApp::builder(&config).resume(stopped).start().await;
    // Delivered long before its ten-minute lease would have expired.
    let d = settled(&app, mine).await;
    assert_eq!(d.state, DeliveryState::Delivered);
    let other = app
        .store
        .deliveries_for_event(other)
        .await
        .unwrap()
        .pop()
        .unwrap();
    match crate::support::backend() {
        // One node: no other process can hold a lease; all are given back.
        crate::support::Backend::Sqlite => {
            let d = settled(&app, other.event_id).await;
            assert_eq!(d.state, DeliveryState::Delivered);
        }
        // Another node's lease is its own: it may still be sending.
        crate::support::Backend::Postgres => {
            assert_eq!(other.state, DeliveryState::InFlight, "{other:?}");
        }
    }
}
