//! The sales pipeline end to end: scoring at ingest, the MQL → SQL handoff
//! (owner routing, `lead.qualified` through the normal routes, the SLA
//! timer), SLA timers firing after a restart, acceptance, re-qualification
//! rules, and round-robin fairness under concurrent leads — on SQLite and,
//! with `LEADRELAY_TEST_BACKEND=postgres`, on PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use leadrelay::auth::generate_key;
use leadrelay::pipeline::owners;
use leadrelay::store::{Role, Store, Timer, TimerFilter};
use leadrelay_model::{Contact, Stage};
use serde_json::{Value, json};

use crate::support::{Receiver, TestApp, eventually, ingest_event, lead, webhook_config};

const WAIT: Duration = Duration::from_secs(20);

/// Form leads score 30 (MQL at 30), a booked meeting 50 more (SQL at 75).
fn config(receiver: &Receiver, sla: &str, handoff_extra: &str) -> String {
    webhook_config(
        &receiver.url(),
        &format!(
            r#"
[scoring]
mql = 30
sql = 75
[[scoring.rules]]
name = "form lead"
event = "lead.created"
points = 30
[[scoring.rules]]
name = "meeting"
event = "meeting.booked"
points = 50
[[scoring.rules]]
name = "reply"
event = "reply.received"
points = 10

[[owners]]
name = "ana"
email = "ana@example.com"
slack_id = "U0ANA"
hubspot_owner_id = "111"
manager = "maria"
[[owners]]
name = "ben"
manager = "maria"
[[owners]]
name = "maria"
email = "maria@example.com"
active = false

[handoff]
poll_interval = "100ms"
sla = "{sla}"
{handoff_extra}
"#
        ),
    )
}

async fn contact(app: &TestApp, email: &str) -> Contact {
    app.store
        .find_contact_by_email(email)
        .await
        .unwrap()
        .expect("contact")
}

async fn timers(app: &TestApp, c: &Contact) -> Vec<Timer> {
    let f = TimerFilter {
        contact_id: Some(c.id),
        ..Default::default()
    };
    app.store.list_timers(&f, None, 100).await.unwrap()
}

/// Delivered webhook bodies of this event type.
fn delivered(receiver: &Receiver, event_type: &str) -> Vec<Value> {
    receiver
        .delivered()
        .iter()
        .map(|h| h.json())
        .filter(|j| j["type"] == event_type)
        .collect()
}

async fn submit(app: &TestApp, email: &str) {
    let r = app.post_json("/v1/forms/contact", &lead(email)).await;
    assert_eq!(r.status(), 202);
}

async fn qualify(app: &TestApp, email: &str) {
    submit(app, email).await;
    ingest_event(&app.store, "meeting.booked", email, json!({}), &[]).await;
}

/// Waits until the contact's timer of `kind` has fired; returns it.
async fn fired(app: &TestApp, email: &str, kind: &str) -> Timer {
    eventually(
        &format!("the {kind} timer of {email} fires"),
        WAIT,
        || async {
            let c = contact(app, email).await;
            timers(app, &c)
                .await
                .into_iter()
                .find(|t| t.kind == kind && t.state != "pending")
        },
    )
    .await
}

#[tokio::test]
async fn scoring_at_ingest_sets_score_and_stage_on_the_contact() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&config(&receiver, "4h", "")).await;
    submit(&app, "jane@acme.io").await;
    let c = contact(&app, "jane@acme.io").await;
    assert_eq!(c.lead.score, 30.0);
    assert_eq!(c.lead.stage, Stage::Mql);
    assert!(timers(&app, &c).await.is_empty(), "no handoff below SQL");

    ingest_event(&app.store, "reply.received", "jane@acme.io", json!({}), &[]).await;
    let c = contact(&app, "jane@acme.io").await;
    assert_eq!(c.lead.score, 40.0);
    assert_eq!(c.lead.stage, Stage::Mql);
    assert_eq!(c.lead.hits.len(), 2);

    // The admin API shows it on the contact.
    let (secret, record) = generate_key("ops", Role::Viewer);
    app.store.create_api_key(record).await.unwrap();
    let view: Value = app
        .client
        .get(app.url(&format!("/api/v1/contacts/{}", c.id)))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["lead"]["score"], 40.0);
    assert_eq!(view["lead"]["stage"], "mql");
    app.stop().await;
}

#[tokio::test]
async fn crossing_sql_assigns_an_owner_notifies_and_starts_the_sla() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&config(&receiver, "4h", "")).await;
    qualify(&app, "jane@acme.io").await;
    let c = contact(&app, "jane@acme.io").await;
    assert_eq!(c.lead.stage, Stage::Sql);
    assert_eq!(c.lead.score, 80.0);

    let handoff = fired(&app, "jane@acme.io", "handoff").await;
    assert_eq!(handoff.state, "done");
    assert!(
        handoff
            .outcome
            .as_deref()
            .unwrap()
            .starts_with("assigned to ana: round-robin"),
        "{:?}",
        handoff.outcome
    );
    let c = contact(&app, "jane@acme.io").await;
    let owner = c.lead.owner.clone().expect("owner");
    assert_eq!(owner.owner, "ana");

    // `lead.qualified` went out through the normal routes, with the owner's
    // CRM ids, the lifecycle stage, the task due time and the SLA.
    let q = eventually("lead.qualified delivered", WAIT, || async {
        delivered(&receiver, "lead.qualified").into_iter().next()
    })
    .await;
    let f = &q["data"]["fields"];
    assert_eq!(f["owner"]["name"], "ana");
    assert_eq!(f["owner"]["hubspot_owner_id"], "111");
    assert_eq!(f["owner"]["slack_id"], "U0ANA");
    assert_eq!(f["lifecycle_stage"], "salesqualifiedlead");
    assert_eq!(f["score"], 80);
    assert!(f["task_due_at"].is_string() && f["sla_due_at"].is_string());
    assert_eq!(q["data"]["contact"]["email"], "jane@acme.io");

    // The SLA timer is pending and visible in the admin API.
    let sla = timers(&app, &c)
        .await
        .into_iter()
        .find(|t| t.kind == "sla")
        .expect("sla timer");
    assert_eq!(sla.state, "pending");
    let due = (sla.due_at - Utc::now()).num_minutes();
    assert!((235..=240).contains(&due), "due in ~4h, got {due} min");
    let (secret, record) = generate_key("ops", Role::Viewer);
    app.store.create_api_key(record).await.unwrap();
    let page: Value = app
        .client
        .get(app.url(&format!("/api/v1/timers?contact_id={}&state=pending", c.id)))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["kind"], "sla");
    let view: Value = app
        .client
        .get(app.url(&format!("/api/v1/contacts/{}", c.id)))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["lead"]["owner"], "ana");
    assert_eq!(view["lead"]["stage"], "sql");
    let kinds: Vec<&str> = view["timers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["sla", "handoff"], "newest first");
    let bad = app
        .client
        .get(app.url("/api/v1/timers?state=sleeping"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("state"),
        "{body}"
    );
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for p in [
        "/api/v1/timers",
        "/api/v1/contacts/{id}/accept",
        "/api/v1/contacts/{id}/disqualify",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} is documented");
    }
    for s in ["Timer", "TimerPage", "LeadView"] {
        assert!(
            doc["components"]["schemas"][s].is_object(),
            "{s} is documented"
        );
    }

    // The CLI lists the same timers, by email, state and kind.
    let (code, out, err) = crate::binary::run(&[
        "timers",
        "list",
        "--email",
        "Jane@Acme.io",
        "--json",
        "--storage-url",
        &app.db.url,
    ]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["kind"].as_str().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("sla", "pending"), ("handoff", "done")]);
    let (code, out, err) = crate::binary::run(&[
        "timers",
        "list",
        "--state",
        "pending",
        "--kind",
        "sla",
        "--storage-url",
        &app.db.url,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&sla.id.to_string()) && out.contains("1 timer(s)"),
        "{out}"
    );
    let (code, _, err) = crate::binary::run(&[
        "timers",
        "list",
        "--email",
        "nobody@acme.io",
        "--storage-url",
        &app.db.url,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no contact with the email"), "{err}");

    // More events after SQL start no second handoff; the next lead goes to ben.
    ingest_event(&app.store, "reply.received", "jane@acme.io", json!({}), &[]).await;
    qualify(&app, "joe@other.io").await;
    fired(&app, "joe@other.io", "handoff").await;
    assert_eq!(
        contact(&app, "joe@other.io")
            .await
            .lead
            .owner
            .unwrap()
            .owner,
        "ben"
    );
    let handoffs = timers(&app, &contact(&app, "jane@acme.io").await)
        .await
        .into_iter()
        .filter(|t| t.kind == "handoff")
        .count();
    assert_eq!(handoffs, 1);
    app.stop().await;
}

#[tokio::test]
async fn account_owner_wins_for_a_second_contact_of_the_same_company() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&config(&receiver, "4h", "")).await;
    qualify(&app, "jane@acme.io").await;
    fired(&app, "jane@acme.io", "handoff").await;
    qualify(&app, "jim@acme.io").await;
    fired(&app, "jim@acme.io", "handoff").await;
    let jim = contact(&app, "jim@acme.io").await.lead.owner.unwrap();
    assert_eq!(jim.owner, "ana", "acme.io is ana's account");
    assert!(jim.reason.starts_with("account owner"), "{}", jim.reason);
    app.stop().await;
}

#[tokio::test]
async fn sla_timer_fires_after_a_restart_and_escalates_to_the_manager() {
    let receiver = Receiver::start().await;
    let toml = config(&receiver, "3s", "reassign_on_breach = true");
    let app = TestApp::spawn(&toml).await;
    qualify(&app, "jane@acme.io").await;
    fired(&app, "jane@acme.io", "handoff").await;
    let stopped = app.stop().await;
    assert!(delivered(&receiver, "lead.sla_breached").is_empty());

    // Down past the SLA: the timer is in the database, not in memory.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let app = TestApp::builder(&toml).resume(stopped).start().await;
    let sla = fired(&app, "jane@acme.io", "sla").await;
    assert_eq!(sla.state, "done");
    assert_eq!(
        sla.outcome.as_deref(),
        Some("breached: escalated to maria and reassigned")
    );
    let b = eventually("lead.sla_breached delivered", WAIT, || async {
        delivered(&receiver, "lead.sla_breached").into_iter().next()
    })
    .await;
    assert_eq!(b["data"]["fields"]["owner"]["name"], "ana");
    assert_eq!(b["data"]["fields"]["manager"]["name"], "maria");
    assert_eq!(b["data"]["fields"]["manager"]["email"], "maria@example.com");
    assert_eq!(b["data"]["fields"]["reassigned"], true);
    let c = contact(&app, "jane@acme.io").await;
    assert_eq!(c.lead.owner.unwrap().owner, "maria");
    // Fired once: a second poll finds nothing due.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(delivered(&receiver, "lead.sla_breached").len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn accepted_or_worked_leads_do_not_escalate() {
    let receiver = Receiver::start().await;
    // Long enough for the acceptance below to land first on a loaded machine.
    let app = TestApp::spawn(&config(&receiver, "8s", "")).await;
    qualify(&app, "jane@acme.io").await;
    qualify(&app, "joe@other.io").await;
    fired(&app, "jane@acme.io", "handoff").await;
    fired(&app, "joe@other.io", "handoff").await;
    ingest_event(&app.store, "lead.accepted", "jane@acme.io", json!({}), &[]).await;
    ingest_event(
        &app.store,
        "activity.logged",
        "joe@other.io",
        json!({}),
        &[],
    )
    .await;
    let jane = fired(&app, "jane@acme.io", "sla").await;
    assert!(
        jane.outcome
            .as_deref()
            .unwrap()
            .starts_with("met: accepted at"),
        "{:?}",
        jane.outcome
    );
    let joe = fired(&app, "joe@other.io", "sla").await;
    assert!(
        joe.outcome
            .as_deref()
            .unwrap()
            .starts_with("met: activity at"),
        "{:?}",
        joe.outcome
    );
    assert!(
        contact(&app, "jane@acme.io")
            .await
            .lead
            .accepted_at
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(delivered(&receiver, "lead.sla_breached").is_empty());
    app.stop().await;
}

/// Qualifies, disqualifies and qualifies `email` again; returns the app's
/// handoff timers for it, oldest first.
async fn requalify(app: &TestApp, email: &str) -> Vec<Timer> {
    qualify(app, email).await;
    fired(app, email, "handoff").await;
    ingest_event(&app.store, "lead.disqualified", email, json!({}), &[]).await;
    let c = contact(app, email).await;
    assert_eq!(c.lead.stage, Stage::Disqualified);
    assert_eq!(c.lead.hits.len(), 0);
    // Old points are gone: 10 + 50 stays below 75, the next 50 crosses it.
    ingest_event(&app.store, "reply.received", email, json!({}), &[]).await;
    ingest_event(&app.store, "meeting.booked", email, json!({}), &[]).await;
    assert_eq!(contact(app, email).await.lead.stage, Stage::Disqualified);
    ingest_event(&app.store, "meeting.booked", email, json!({}), &[]).await;
    let c = contact(app, email).await;
    assert_eq!(c.lead.stage, Stage::Sql);
    assert_eq!(c.lead.requalified, 1);
    let mut t: Vec<Timer> = eventually("handoff timers fired", WAIT, || async {
        let t: Vec<Timer> = timers(app, &c)
            .await
            .into_iter()
            .filter(|t| t.kind == "handoff")
            .collect();
        t.iter().all(|t| t.state != "pending").then_some(t)
    })
    .await;
    t.reverse();
    t
}

/// Exactly one `lead.qualified` is delivered (and no second follows).
async fn one_qualified(receiver: &Receiver) {
    eventually("lead.qualified delivered", WAIT, || async {
        (!delivered(receiver, "lead.qualified").is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(delivered(receiver, "lead.qualified").len(), 1);
}

#[tokio::test]
async fn requalification_follows_the_configured_rule() {
    // notify (the default): only the current owner hears, no new handoff.
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&config(&receiver, "4h", "")).await;
    let t = requalify(&app, "jane@acme.io").await;
    assert_eq!(t.len(), 2);
    assert_eq!(t[1].outcome.as_deref(), Some("requalified: notified ana"));
    let n = eventually("lead.requalified delivered", WAIT, || async {
        delivered(&receiver, "lead.requalified").into_iter().next()
    })
    .await;
    assert_eq!(n["data"]["fields"]["owner"]["name"], "ana");
    one_qualified(&receiver).await;
    app.stop().await;

    // skip: back to SQL silently.
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&config(&receiver, "4h", "requalify = \"skip\"")).await;
    let t = requalify(&app, "jane@acme.io").await;
    assert_eq!(t.len(), 1, "no second handoff");
    one_qualified(&receiver).await;
    assert!(delivered(&receiver, "lead.requalified").is_empty());
    app.stop().await;

    // reenroll: a full handoff again (routing takes the next turn).
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&config(&receiver, "4h", "requalify = \"reenroll\"")).await;
    let t = requalify(&app, "jane@acme.io").await;
    assert_eq!(t.len(), 2);
    assert!(
        t[1].outcome.as_deref().unwrap().starts_with("assigned to"),
        "{:?}",
        t[1].outcome
    );
    let q = eventually("two lead.qualified delivered", WAIT, || async {
        let q = delivered(&receiver, "lead.qualified");
        (q.len() == 2).then_some(q)
    })
    .await;
    assert!(q.iter().any(|e| e["data"]["fields"]["requalified"] == true));
    app.stop().await;
}

#[tokio::test]
async fn round_robin_is_fair_under_concurrent_leads() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&config(&receiver, "4h", "")).await;
    let cfg: leadrelay::config::Config = leadrelay::config::load_str(
        r#"
        [[owners]]
        name = "a"
        [[owners]]
        name = "b"
        [[owners]]
        name = "c"
        [[routing.rules]]
        name = "everyone"
        owners = ["a", "b", "c"]
        "#,
        "owners.toml",
        &|_| None,
    )
    .unwrap()
    .config;
    let cfg = Arc::new(cfg);
    let store: Arc<dyn Store> = app.store.clone();
    let now = Utc::now();
    let template = {
        submit(&app, "x@y.io").await;
        contact(&app, "x@y.io").await
    };
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (store, cfg) = (store.clone(), cfg.clone());
        let mut c = template.clone();
        c.id = leadrelay_model::new_id();
        c.data.domain = Some(format!("d{i}.io"));
        tasks.push(tokio::spawn(async move {
            owners::assign(store.as_ref(), &cfg.owners, &cfg.routing, &c, now)
                .await
                .unwrap()
        }));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        let d = t.await.unwrap();
        *counts.entry(d.owner.unwrap()).or_default() += 1;
    }
    assert_eq!(counts["a"], 100);
    assert_eq!(counts["b"], 100);
    assert_eq!(counts["c"], 100);
    // The counter is durable: the pure decision continues where it stopped.
    let view = owners::load_view(store.as_ref(), &cfg.routing, &template)
        .await
        .unwrap();
    assert_eq!(view.counters[&owners::counter_key("everyone")], 300);
    let d = owners::decide(&cfg.owners, &cfg.routing, &template, &view, now);
    assert_eq!(d.owner.as_deref(), Some("a"));
    app.stop().await;
}

async fn post(app: &TestApp, key: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.client.post(app.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn accept_and_disqualify_through_the_admin_api() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&config(&receiver, "2s", "")).await;
    let (admin, record) = generate_key("ops", Role::Admin);
    app.store.create_api_key(record).await.unwrap();
    let (viewer, record) = generate_key("look", Role::Viewer);
    app.store.create_api_key(record).await.unwrap();

    submit(&app, "jane@acme.io").await;
    let jane = contact(&app, "jane@acme.io").await;
    let accept = format!("/api/v1/contacts/{}/accept", jane.id);
    let (status, body) = post(&app, &admin, &accept, None).await;
    assert_eq!(status, 409, "an MQL cannot be accepted: {body}");
    assert_eq!(body["error"]["code"], "stage");

    ingest_event(&app.store, "meeting.booked", "jane@acme.io", json!({}), &[]).await;
    fired(&app, "jane@acme.io", "handoff").await;
    let (status, _) = post(&app, &viewer, &accept, None).await;
    assert_eq!(status, 403);
    let (status, body) = post(
        &app,
        &admin,
        &accept,
        Some(json!({"reason": "x".repeat(501)})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["fields"][0]["field"], "reason");
    let (status, body) = post(
        &app,
        &admin,
        &accept,
        Some(json!({"reason": "calling today"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["lead"]["accepted_at"].is_string());
    let sla = fired(&app, "jane@acme.io", "sla").await;
    assert!(sla.outcome.unwrap().starts_with("met: accepted"));

    let (status, body) = post(
        &app,
        &admin,
        &format!("/api/v1/contacts/{}/disqualify", jane.id),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lead"]["stage"], "disqualified");
    let (status, _) = post(
        &app,
        &admin,
        &format!("/api/v1/contacts/{}/disqualify", jane.id),
        None,
    )
    .await;
    assert_eq!(status, 409, "already disqualified");
    let (status, _) = post(
        &app,
        &admin,
        &format!("/api/v1/contacts/{}/accept", uuid::Uuid::nil()),
        None,
    )
    .await;
    assert_eq!(status, 404);
    // Both actions are stored events about the contact, routed like others.
    let accepted = eventually("lead.accepted delivered", WAIT, || async {
        delivered(&receiver, "lead.accepted").into_iter().next()
    })
    .await;
    assert_eq!(accepted["data"]["fields"]["reason"], "calling today");
    assert_eq!(accepted["data"]["fields"]["by"], "key:ops");
    app.stop().await;
}

/// A store with scoring on (any `meeting.booked` qualifies) and no timer
/// job running, to drive timers by hand.
async fn bare_store(dir: &tempfile::TempDir) -> (Arc<dyn Store>, crate::support::TestDb) {
    let db = crate::support::TestDb::create(dir.path()).await;
    let cfg = leadrelay::config::load_str(
        r#"
        [[scoring.rules]]
        name = "meeting"
        event = "meeting.booked"
        points = 100
        "#,
        "scoring.toml",
        &|_| None,
    )
    .unwrap()
    .config;
    let options = leadrelay::store::OpenOptions {
        lead_hook: leadrelay::pipeline::LeadHook::from_config(&cfg).map(Arc::new),
        ..Default::default()
    };
    let store = leadrelay::store::open(&db.url, &options).await.unwrap();
    (store, db)
}

#[tokio::test]
async fn timer_leases_expire_and_stale_completions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _db) = bare_store(&dir).await;
    ingest_event(&store, "meeting.booked", "jane@acme.io", json!({}), &[]).await;
    let c = store
        .find_contact_by_email("jane@acme.io")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.lead.stage, Stage::Sql);

    let first = store
        .claim_timers(10, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(first.len(), 1, "the handoff is due at once");
    assert_eq!(first[0].kind, "handoff");
    assert_eq!(first[0].contact_id, c.id);
    assert_eq!(first[0].attempts, 1);
    assert!(
        store
            .claim_timers(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    // The claimer died: the lease expires and another claim takes it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = store
        .claim_timers(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(second[0].attempts, 2);
    let stale = store
        .finish_timer(
            first[0].id,
            first[0].lease_id.unwrap(),
            "done",
            "late",
            vec![],
        )
        .await
        .unwrap();
    assert!(!stale, "the old lease no longer counts");
    let next = leadrelay::store::NewTimer {
        id: leadrelay_model::new_id(),
        kind: "sla".into(),
        contact_id: c.id,
        due_at: Utc::now() + chrono::Duration::hours(4),
        data: json!({"owner": "ana"}),
    };
    let ok = store
        .finish_timer(
            second[0].id,
            second[0].lease_id.unwrap(),
            "done",
            "assigned",
            vec![next.clone()],
        )
        .await
        .unwrap();
    assert!(ok);
    let all = store
        .list_timers(&TimerFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].id, next.id, "newest first");
    assert_eq!(all[0].state, "pending");
    assert_eq!(all[0].data["owner"], "ana");
    assert_eq!(all[1].state, "done");
    assert_eq!(all[1].outcome.as_deref(), Some("assigned"));
    assert!(all[1].fired_at.is_some());
    let done = store
        .list_timers(
            &TimerFilter {
                state: Some("done".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    store.close().await;
}

#[tokio::test]
async fn concurrent_claims_never_share_a_timer() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _db) = bare_store(&dir).await;
    for i in 0..30 {
        ingest_event(
            &store,
            "meeting.booked",
            &format!("p{i}@x{i}.io"),
            json!({}),
            &[],
        )
        .await;
    }
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_timers(2, Duration::from_secs(60))
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|t| t.id));
            }
        }));
    }
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(seen.insert(id), "timer {id} claimed twice");
        }
    }
    assert_eq!(seen.len(), 30);
    store.close().await;
}

#[tokio::test]
async fn assignments_count_toward_capacity_until_disqualified() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _db) = bare_store(&dir).await;
    for email in ["a@acme.io", "b@acme.io", "c@other.io"] {
        ingest_event(&store, "meeting.booked", email, json!({}), &[]).await;
    }
    let id = |e: &'static str| {
        let store = store.clone();
        async move { store.find_contact_by_email(e).await.unwrap().unwrap().id }
    };
    let assign = |owner: &str| leadrelay_model::OwnerAssignment {
        owner: owner.into(),
        reason: "test".into(),
        assigned_at: Utc::now(),
    };
    let a = id("a@acme.io").await;
    let c = store.assign_owner(a, assign("ana")).await.unwrap().unwrap();
    assert_eq!(c.lead.owner.unwrap().owner, "ana");
    let stored = store.get_contact(a).await.unwrap().unwrap();
    assert_eq!(
        stored.lead.owner.unwrap().owner,
        "ana",
        "kept on the record"
    );
    assert_eq!(
        stored.lead.stage,
        Stage::Sql,
        "the rest of the record is intact"
    );
    let b = id("b@acme.io").await;
    store.assign_owner(b, assign("ana")).await.unwrap();
    let o = id("c@other.io").await;
    store.assign_owner(o, assign("ben")).await.unwrap();
    assert!(
        store
            .assign_owner(uuid::Uuid::nil(), assign("x"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.open_leads().await.unwrap(),
        vec![("ana".to_string(), 2), ("ben".to_string(), 1)]
    );
    ingest_event(&store, "lead.disqualified", "b@acme.io", json!({}), &[]).await;
    assert_eq!(
        store.open_leads().await.unwrap(),
        vec![("ana".to_string(), 1), ("ben".to_string(), 1)]
    );
    // The stored contact keeps its owner; re-assigning reopens it.
    store.assign_owner(b, assign("ben")).await.unwrap();
    assert_eq!(
        store.open_leads().await.unwrap(),
        vec![("ana".to_string(), 1), ("ben".to_string(), 2)]
    );
    store.close().await;
}

#[tokio::test]
async fn handoff_sets_owner_stage_and_a_follow_up_task_in_hubspot() {
    use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig};
    let fake = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    let toml = format!(
        r#"{form}
[destinations.hubspot]
connector = "hubspot"
base_url = "{base}"
allow_private_networks = true
token_env = "HUBSPOT_ACCESS_TOKEN"
purposes = ["crm"]
timeout = "2s"

[[routes]]
name = "crm"
destinations = ["hubspot"]

[[scoring.rules]]
name = "meeting"
event = "meeting.booked"
points = 80
[[owners]]
name = "ana"
hubspot_owner_id = "111"
[handoff]
poll_interval = "100ms"
"#,
        form = crate::support::CRM_FORM,
        base = fake.base_url()
    );
    let app = TestApp::builder(&toml)
        .env("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)
        .start()
        .await;
    let r = app
        .post_json(
            "/v1/forms/contact",
            &crate::support::full_lead("jane@acme.io", "Jane", "Doe", "Acme", "Hi"),
        )
        .await;
    assert_eq!(r.status(), 202);
    app.settled("hubspot", 1, WAIT).await;
    let c = fake.contact_by_email("jane@acme.io").expect("contact");
    assert_eq!(c.get("lifecyclestage"), Some("lead"));
    assert!(fake.tasks().is_empty());

    ingest_event(&app.store, "meeting.booked", "jane@acme.io", json!({}), &[]).await;
    let d = app.settled("hubspot", 2, WAIT).await;
    assert!(
        d.iter()
            .all(|d| d.state == leadrelay::store::DeliveryState::Delivered),
        "{d:?}"
    );
    let c = fake.contact_by_email("jane@acme.io").expect("contact");
    assert_eq!(c.get("hubspot_owner_id"), Some("111"));
    assert_eq!(c.get("lifecyclestage"), Some("salesqualifiedlead"));
    let tasks = fake.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        tasks[0].get("hs_task_subject"),
        Some("Follow up with Jane Doe (sales-qualified lead)")
    );
    assert_eq!(tasks[0].get("hubspot_owner_id"), Some("111"));
    let due: chrono::DateTime<Utc> = tasks[0]
        .get("hs_timestamp")
        .expect("due")
        .parse()
        .expect("RFC 3339");
    let hours = (due - Utc::now()).num_minutes();
    assert!(
        (23 * 60..=24 * 60).contains(&hours),
        "due in ~24h: {hours} min"
    );
    assert_eq!(
        fake.associated_ids("tasks", &tasks[0].id, "contacts"),
        vec![c.id.clone()]
    );
    app.stop().await;
}

/// The README's Slack example: one channel for the pipeline's events, the
/// owner (or manager) mentioned.
const SALES_SLACK: &str = r##"
[destinations.sales_slack]
connector = "slack"
token_env = "SLACK_BOT_TOKEN"
channel = "#leads"
base_url = "SLACK_API"
allow_private_networks = true
legal_basis = "legitimate_interest"
blocks = false
text = """{% if event.type == "lead.sla_breached" %}SLA breached: <@{{ data.manager.slack_id }}>, {{ contact.full_name or contact.email }} is waiting for {{ data.owner.name }}{% else %}New SQL for <@{{ data.owner.slack_id }}>: {{ contact.full_name or contact.email }}, score {{ data.score }}{% endif %}"""

[[routes]]
name = "sales alerts"
events = ["lead.qualified", "lead.sla_breached"]
destinations = ["sales_slack"]
"##;

#[tokio::test]
async fn the_owner_is_alerted_on_slack_and_the_manager_on_a_breach() {
    use leadrelay_fakes::slack::{FakeSlack, SlackConfig};
    let slack = FakeSlack::start(SlackConfig::default()).await.unwrap();
    let receiver = Receiver::start().await;
    let mut toml = config(&receiver, "1s", "");
    toml.push_str(&SALES_SLACK.replace("SLACK_API", &slack.api_url()));
    toml = toml.replace(
        "name = \"maria\"\nemail = \"maria@example.com\"",
        "name = \"maria\"\nemail = \"maria@example.com\"\nslack_id = \"U0MARIA\"",
    );
    let app = TestApp::builder(&toml)
        .env("SLACK_BOT_TOKEN", SlackConfig::DEFAULT_BOT_TOKEN)
        .start()
        .await;
    let r = app
        .post_json(
            "/v1/forms/contact",
            &json!({"email": "jane@acme.io", "first_name": "Jane", "consent": "yes"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    ingest_event(&app.store, "meeting.booked", "jane@acme.io", json!({}), &[]).await;
    let texts = eventually("two Slack messages", WAIT, || async {
        let m: Vec<String> = slack
            .messages("leads")
            .into_iter()
            .filter_map(|m| m.text)
            .collect();
        (m.len() == 2).then_some(m)
    })
    .await;
    assert_eq!(texts[0], "New SQL for <@U0ANA>: Jane, score 80");
    assert_eq!(
        texts[1],
        "SLA breached: <@U0MARIA>, Jane is waiting for ana"
    );
    app.stop().await;
}

/// Two nodes on one PostgreSQL database (always PostgreSQL, like
/// `multinode.rs`): turns are shared, and every timer fires exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_turns_and_fire_each_timer_once() {
    let receiver = Receiver::start().await;
    let db = crate::support::TestDb::create_postgres().await;
    let toml = config(&receiver, "1s", "");
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut cfg = leadrelay::config::load_str(&toml, "test.toml", &|_| None)
            .unwrap()
            .config;
        cfg.storage.url = db.url.clone();
        cfg.server.per_ip_limit = leadrelay::config::RateLimit::Off;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        nodes.push(
            leadrelay::app::start(cfg, &|_| None, Some(listener), leadrelay::app::Role::All)
                .await
                .unwrap(),
        );
    }
    let n = 20;
    for i in 0..n {
        let node = &nodes[i % 2];
        let email = format!("p{i}@co{i}.io");
        let r = reqwest::Client::new()
            .post(format!("http://{}/v1/forms/contact", node.addr.unwrap()))
            .json(&lead(&email))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ingest_event(&node.store, "meeting.booked", &email, json!({}), &[]).await;
    }
    let store = nodes[0].store.clone();
    let count = |t: &'static str| {
        let store = store.clone();
        async move {
            let f = leadrelay::store::EventFilter {
                event_type: Some(leadrelay_model::EventType::parse(t).unwrap()),
                ..Default::default()
            };
            store.list_events(&f, None, 1000).await.unwrap().len()
        }
    };
    eventually("every SLA timer fired", WAIT, || async {
        let pending = store
            .list_timers(
                &TimerFilter {
                    state: Some("pending".into()),
                    ..Default::default()
                },
                None,
                1000,
            )
            .await
            .unwrap();
        let all = store
            .list_timers(&TimerFilter::default(), None, 1000)
            .await
            .unwrap();
        (pending.is_empty() && all.len() == 2 * n).then_some(())
    })
    .await;
    assert_eq!(count("lead.qualified").await, n);
    assert_eq!(count("lead.sla_breached").await, n);
    let mut owners: HashMap<String, usize> = HashMap::new();
    for (o, k) in store.open_leads().await.unwrap() {
        owners.insert(o, k as usize);
    }
    assert_eq!(owners["ana"], n / 2);
    assert_eq!(owners["ben"], n / 2);
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn a_retried_handoff_keeps_the_owner_it_chose() {
    use leadrelay::pipeline::handoff::HandoffJob;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = crate::support::TestDb::create(dir.path()).await;
    let mut cfg = leadrelay::config::load_str(&config(&receiver, "4h", ""), "t.toml", &|_| None)
        .unwrap()
        .config;
    cfg.storage.url = db.url.clone();
    let store = leadrelay::app::open_store(&cfg).await.unwrap();
    let cfg = Arc::new(cfg);
    let enabled = leadrelay::delivery::enabled_destinations(&cfg, &|_| None);
    let routes = leadrelay::routing::RouteTable::compile(&cfg.routes, enabled).unwrap();
    let ingestor = Arc::new(
        leadrelay::ingest::Ingestor::new(store.clone(), cfg.clone(), routes, &|_| None)
            .await
            .unwrap(),
    );
    let job = HandoffJob::new(store.clone(), cfg.clone(), ingestor);

    ingest_event(&store, "lead.created", "jane@acme.io", json!({}), &[]).await;
    ingest_event(&store, "meeting.booked", "jane@acme.io", json!({}), &[]).await;
    let c = store
        .find_contact_by_email("jane@acme.io")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.lead.stage, Stage::Sql);
    // A first run claims the timer, assigns ben, and dies before finishing.
    // The lease outlasts the assignment below even on a loaded machine.
    let claimed = store
        .claim_timers(10, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let leased_until = std::time::Instant::now() + Duration::from_secs(3);
    store
        .assign_owner(
            c.id,
            leadrelay_model::OwnerAssignment {
                owner: "ben".into(),
                reason: "round-robin in rule \"all owners\" (turn 1)".into(),
                assigned_at: Utc::now(),
            },
        )
        .await
        .unwrap();
    assert_eq!(job.run_due(Utc::now()).await.unwrap(), 0, "still leased");
    tokio::time::sleep_until((leased_until + Duration::from_millis(100)).into()).await;
    assert_eq!(job.run_due(Utc::now()).await.unwrap(), 1);
    let t = store
        .list_timers(
            &TimerFilter {
                kind: Some("handoff".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(t[0].state, "done");
    assert_eq!(t[0].attempts, 2);
    assert!(
        t[0].outcome
            .as_deref()
            .unwrap()
            .starts_with("assigned to ben"),
        "{:?}",
        t[0].outcome
    );
    assert_eq!(
        store
            .kv_get(&owners::counter_key("all owners"))
            .await
            .unwrap(),
        None,
        "no second turn taken"
    );
    let f = leadrelay::store::EventFilter {
        event_type: Some(leadrelay_model::EventType::parse("lead.qualified").unwrap()),
        ..Default::default()
    };
    let q = store.list_events(&f, None, 10).await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].data["owner"]["name"], "ben");
    store.close().await;
}

#[tokio::test]
async fn erasing_a_person_drops_their_timers_and_assignment() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&config(&receiver, "4h", "")).await;
    qualify(&app, "jane@acme.io").await;
    fired(&app, "jane@acme.io", "handoff").await;
    let c = contact(&app, "jane@acme.io").await;
    assert_eq!(timers(&app, &c).await.len(), 2);
    assert_eq!(
        app.store.open_leads().await.unwrap(),
        vec![("ana".into(), 1)]
    );
    app.store
        .privacy_erase(&leadrelay::store::PrivacyRequest {
            email: "jane@acme.io".into(),
            actor: "cli:test".into(),
            subject_hash: "h".into(),
            reason: None,
            idle_before: None,
        })
        .await
        .unwrap();
    assert!(timers(&app, &c).await.is_empty());
    assert!(app.store.open_leads().await.unwrap().is_empty());
    assert_eq!(
        app.store
            .account_owner("acme.io", uuid::Uuid::nil())
            .await
            .unwrap(),
        None
    );
    app.stop().await;
}

/// Signs in to the dashboard with `key`; returns the session cookie pair.
async fn dashboard_session(app: &TestApp, key: &str) -> String {
    let page = app.client.get(app.url("/ui/login")).send().await.unwrap();
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let r = app
        .client
        .post(app.url("/ui/login"))
        .header("cookie", cookie)
        .form(&[("key", key), ("csrf", &csrf), ("next", "/ui/leads")])
        .send()
        .await
        .unwrap();
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("lr_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn the_dashboard_lead_page_shows_score_owner_and_timers() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&config(&receiver, "4h", "")).await;
    let r = app
        .post_json("/v1/forms/contact", &lead("jane@acme.io"))
        .await;
    let event: String = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .into();
    ingest_event(&app.store, "meeting.booked", "jane@acme.io", json!({}), &[]).await;
    fired(&app, "jane@acme.io", "handoff").await;
    let (key, record) = generate_key("ops", Role::Viewer);
    app.store.create_api_key(record).await.unwrap();
    let session = dashboard_session(&app, &key).await;
    let html = app
        .client
        .get(app.url(&format!("/ui/leads/{event}")))
        .header("cookie", session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<dt>lead score</dt><dd>80 (SQL)</dd>"),
        "{html}"
    );
    assert!(
        html.contains("<dt>owner</dt><dd>ana — round-robin"),
        "{html}"
    );
    assert!(
        html.contains("<dt>sla timer</dt><dd>pending, due"),
        "{html}"
    );
    assert!(
        html.contains("<dt>handoff timer</dt><dd>done, fired"),
        "{html}"
    );
    app.stop().await;
}

#[tokio::test]
async fn requalifying_without_an_owner_hands_off_in_full() {
    // ana and ben are at capacity (0) and there is no fallback: the first
    // handoff finds nobody; "notify" then has nobody to tell.
    let receiver = Receiver::start().await;
    let toml = config(&receiver, "4h", "")
        .replace("name = \"ana\"\n", "name = \"ana\"\ncapacity = 0\n")
        .replace("name = \"ben\"\n", "name = \"ben\"\ncapacity = 0\n");
    let app = TestApp::spawn(&toml).await;
    let t = requalify(&app, "jane@acme.io").await;
    assert_eq!(t.len(), 2);
    for timer in &t {
        assert!(
            timer
                .outcome
                .as_deref()
                .unwrap()
                .starts_with("assigned to nobody"),
            "{:?}",
            timer.outcome
        );
    }
    let q = eventually("two lead.qualified delivered", WAIT, || async {
        let q = delivered(&receiver, "lead.qualified");
        (q.len() == 2).then_some(q)
    })
    .await;
    assert!(q.iter().any(|e| e["data"]["fields"]["requalified"] == true));
    assert!(q.iter().all(|e| e["data"]["fields"]["owner"].is_null()));
    assert!(delivered(&receiver, "lead.requalified").is_empty());
    app.stop().await;
}
