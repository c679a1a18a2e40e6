//! Shared by the sequence-tool tests (Apollo, Salesloft): one destination
//! `outbound` fed by the contact form, an `unsubscribe` form (the
//! suppression list) and a `meeting` form (a booked meeting: the
//! `exit_sequences` action), and the checks every tool must pass.

use leadrelay::store::DeliveryState;
use serde_json::json;
use uuid::Uuid;

use crate::notify_support::{config, post, settled};
use crate::support::{Builder, TestApp};

/// A leadrelay with `destination` (the body of `[destinations.outbound]`)
/// and the environment `env`.
pub async fn app(destination: &str, env: &[(&str, &str)]) -> TestApp {
    builder(destination, env).start().await
}

/// [`app`]'s builder (to resume a stopped app).
pub fn builder(destination: &str, env: &[(&str, &str)]) -> Builder {
    let rest = format!(
        r#"
[forms.unsubscribe]
event_type = "unsubscribed"
[forms.unsubscribe.fields.email]
type = "email"
required = true
[forms.meeting]
event_type = "meeting.booked"
[forms.meeting.fields.email]
type = "email"
required = true

[destinations.outbound]
{destination}

[[routes]]
name = "enroll"
forms = ["contact"]
destinations = ["outbound"]

[[routes]]
name = "exit_sequences"
events = ["meeting.booked"]
destinations = ["outbound"]
"#
    );
    let mut b = TestApp::builder(&config(&[], &rest));
    for (k, v) in env {
        b = b.env(k, v);
    }
    b
}

/// Posts the contact form for `who` with consent.
pub async fn lead(app: &TestApp, who: &str) -> Uuid {
    post(app, "contact", &json!({"email": who, "consent": "yes"})).await
}

/// 500 leads for 100 people (`p0@example.com` … `p99@example.com`, five
/// rounds, each round concurrently).
pub async fn five_hundred_leads(app: &TestApp) -> Vec<Uuid> {
    let mut events = Vec::new();
    for round in 0..5 {
        let posts = (0..100).map(|i| {
            let body = json!({"email": format!("p{i}@example.com"), "first_name": format!("P{i}"),
                "company": "Acme", "consent": "yes", "message": format!("round {round}")});
            async move { post(app, "contact", &body).await }
        });
        events.extend(futures::future::join_all(posts).await);
    }
    events
}

/// Waits for each event's delivery to `outbound` and checks its state.
pub async fn assert_all(app: &TestApp, events: &[Uuid], state: DeliveryState) {
    for id in events {
        let d = settled(app, *id, "outbound").await;
        assert_eq!(d.state, state, "{:?}", d.reason);
    }
}

/// The person unsubscribes (a suppression from another source).
pub async fn unsubscribe(app: &TestApp, who: &str) {
    let resp = app
        .post_json("/v1/forms/unsubscribe", &json!({"email": who}))
        .await;
    assert_eq!(resp.status(), 202);
}

/// A meeting is booked for `who`: the exit, delivered, with an attempt.
pub async fn book_meeting(app: &TestApp, who: &str) {
    let resp = app
        .post_json("/v1/forms/meeting", &json!({"email": who}))
        .await;
    assert_eq!(resp.status(), 202);
    let id: Uuid = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let d = settled(app, id, "outbound").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    assert!(!app.store.attempts(d.id).await.unwrap().is_empty());
}

/// The suppressed person is skipped before any request.
pub async fn assert_suppressed(app: &TestApp, who: &str) {
    unsubscribe(app, who).await;
    let id = lead(app, who).await;
    let d = settled(app, id, "outbound").await;
    assert_eq!(d.state, DeliveryState::Skipped);
    let reason = d.reason.unwrap_or_default();
    assert!(reason.starts_with("suppressed: the person"), "{reason}");
    assert!(
        app.store
            .attempts(d.id)
            .await
            .unwrap()
            .iter()
            .all(|a| a.status.is_none())
    );
}

/// Seven people under `add_limit = "3/2s"`: all enrolled, some after
/// waiting in the overflow queue for a later window (nothing sent for them
/// meanwhile).
pub async fn assert_overflow_drains(app: &TestApp) {
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(lead(app, &format!("o{i}@example.com")).await);
    }
    let mut overflowed = 0;
    for id in ids {
        let d = settled(app, id, "outbound").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
        let attempts = app.store.attempts(d.id).await.unwrap();
        if let Some(a) = attempts.iter().find(|a| a.outcome == "overflow") {
            overflowed += 1;
            assert!(a.status.is_none(), "nothing was sent for an overflow");
            let next = a.next_attempt_at.expect("an overflow is scheduled");
            assert_eq!(next.timestamp_millis() % 2000, 0, "{next}");
        }
    }
    assert!(overflowed >= 1, "nothing waited for the next window");
}

/// The statuses of the attempts of `event`'s delivery.
pub async fn statuses(app: &TestApp, event: Uuid) -> Vec<Option<u16>> {
    let d = settled(app, event, "outbound").await;
    app.store
        .attempts(d.id)
        .await
        .unwrap()
        .iter()
        .map(|a| a.status)
        .collect()
}
