//! Sequence memberships and the overflow queue through the admin API and
//! the dashboard: the shared enrollment model records each person's state
//! per sequence destination (enrolled, queued, exited) whatever the tool,
//! and the overflow queue lists who waits for which window and why.

use chrono::{Duration as ChronoDuration, Utc};
use leadrelay::store::{DeliveryState, Role};
use leadrelay_fakes::lemlist::{FakeLemlist, LemlistConfig};
use leadrelay_fakes::smartlead::{FakeSmartlead, SmartleadConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::get;
use crate::notify_support::{WAIT, config, post, settled};
use crate::support::{TestApp, eventually};

#[tokio::test]
async fn memberships_and_the_overflow_queue_in_the_api_and_dashboard() {
    let lemlist = FakeLemlist::start(LemlistConfig::default()).await.unwrap();
    let smartlead = FakeSmartlead::start(SmartleadConfig {
        per_minute: 600,
        ..Default::default()
    })
    .await
    .unwrap();
    let rest = format!(
        r#"
[forms.meeting]
event_type = "meeting.booked"
[forms.meeting.fields.email]
type = "email"
required = true

[destinations.lemlist]
connector = "lemlist"
campaign_id = "{lemlist_campaign}"
base_url = "{lemlist}"
allow_private_networks = true
purposes = ["crm"]

[destinations.outbound]
connector = "smartlead"
campaign_id = {smartlead_campaign}
base_url = "{smartlead}"
allow_private_networks = true
purposes = ["crm"]
rate_limit = "8/1s"
[destinations.outbound.enrollment]
add_limit = "2/1d"

[[routes]]
name = "enroll"
forms = ["contact"]
destinations = ["lemlist", "outbound"]

[[routes]]
name = "exit_sequences"
events = ["meeting.booked"]
destinations = ["lemlist", "outbound"]
"#,
        lemlist_campaign = LemlistConfig::DEFAULT_CAMPAIGN,
        lemlist = lemlist.base_url(),
        smartlead_campaign = SmartleadConfig::DEFAULT_CAMPAIGN,
        smartlead = smartlead.base_url(),
    );
    let app = TestApp::builder(&config(&[], &rest))
        .env("LEMLIST_API_KEY", LemlistConfig::DEFAULT_API_KEY)
        .env("SMARTLEAD_API_KEY", SmartleadConfig::DEFAULT_API_KEY)
        .start()
        .await;
    let admin = crate::admin::key(&app, "ops", Role::Admin).await;
    let viewer = crate::admin::key(&app, "look", Role::Viewer).await;

    // Three people for an add limit of two a day: the third waits.
    let people = ["ana@example.com", "ben@example.com", "cy@example.com"];
    let mut ids = Vec::new();
    for who in people {
        let id = post(&app, "contact", &json!({"email": who, "consent": "yes"})).await;
        assert_eq!(
            settled(&app, id, "lemlist").await.state,
            DeliveryState::Delivered
        );
        ids.push(id);
    }
    let queued = eventually("the third enrollment waits", WAIT, || async {
        let ds = app.deliveries("outbound").await;
        let done = ds
            .iter()
            .filter(|d| d.state == DeliveryState::Delivered)
            .count();
        let waiting: Vec<_> = ds
            .into_iter()
            .filter(|d| {
                d.state == DeliveryState::Scheduled
                    && d.last_error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("overflow: "))
            })
            .collect();
        (done == 2 && waiting.len() == 1).then_some(waiting)
    })
    .await;
    let waiting_email = queued[0]
        .contact_key
        .trim_start_matches("email:")
        .to_string();

    // The overflow queue: who, since when, the next window, why.
    let (s, q) = get(&app, &admin, "/api/v1/enrollment/overflow").await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(q["total"], 1, "{q}");
    let e = &q["items"][0];
    assert_eq!(e["destination"], "outbound");
    assert_eq!(e["person"], format!("email:{waiting_email}"));
    assert_eq!(e["delivery_id"], queued[0].id.to_string());
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("add limit 2/1day reached"),
        "{e}"
    );
    let next: chrono::DateTime<Utc> = e["next_window"].as_str().unwrap().parse().unwrap();
    let now = Utc::now();
    assert_eq!(
        next,
        (now + ChronoDuration::days(1))
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc(),
        "the next 00:00 UTC window"
    );
    // Viewers see the queue with the person masked; a filter narrows it.
    let (s, vq) = get(&app, &viewer, "/api/v1/enrollment/overflow").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        !vq["items"][0]["person"]
            .as_str()
            .unwrap()
            .contains(&waiting_email),
        "{vq}"
    );
    let (_, other) = get(
        &app,
        &admin,
        "/api/v1/enrollment/overflow?destination=lemlist",
    )
    .await;
    assert_eq!(other["total"], 0);
    let (s, _) = get(&app, &admin, "/api/v1/enrollment/overflow?limit=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Ana books a meeting: out of both sequences.
    let meeting = post(&app, "meeting", &json!({"email": "ana@example.com"})).await;
    for dest in ["lemlist", "outbound"] {
        assert_eq!(
            settled(&app, meeting, dest).await.state,
            DeliveryState::Delivered
        );
    }

    let contact_of = |email: &str| {
        let store = app.store.clone();
        let email = email.to_string();
        async move {
            store
                .find_contact_by_email(&email)
                .await
                .unwrap()
                .unwrap()
                .id
        }
    };
    let states = |v: &Value| -> Vec<(String, String, String, String)> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["destination"].as_str().unwrap().to_string(),
                    m["tool"].as_str().unwrap().to_string(),
                    m["sequence"].as_str().unwrap().to_string(),
                    m["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let ana = contact_of("ana@example.com").await;
    let (s, m) = get(&app, &admin, &format!("/api/v1/contacts/{ana}/memberships")).await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(
        states(&m),
        [
            (
                "lemlist".into(),
                "lemlist".into(),
                LemlistConfig::DEFAULT_CAMPAIGN.into(),
                "exited".into()
            ),
            (
                "outbound".into(),
                "smartlead".into(),
                SmartleadConfig::DEFAULT_CAMPAIGN.to_string(),
                "exited".into()
            ),
        ]
    );
    assert_eq!(
        m["items"][0]["last_change"],
        "exit_sequences: meeting.booked"
    );
    let waiting = contact_of(&waiting_email).await;
    let (_, m) = get(
        &app,
        &viewer,
        &format!("/api/v1/contacts/{waiting}/memberships"),
    )
    .await;
    let s = states(&m);
    assert_eq!(s[0].3, "active", "{m}");
    assert_eq!(s[1].3, "queued", "{m}");
    let (s, _) = get(
        &app,
        &admin,
        &format!("/api/v1/contacts/{}/memberships", uuid::Uuid::nil()),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The dashboard: the contact's sequences and the overflow page.
    let cookie = crate::admin::session_cookie(&crate::admin::sign_in(&app, &admin).await);
    let page = |path: String| {
        let (client, url, cookie) = (app.client.clone(), app.url(&path), cookie.clone());
        async move {
            client
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let html = page(format!("/ui/contacts/{waiting}")).await;
    assert!(html.contains("id=\"memberships\""), "{html}");
    assert!(html.contains("badge membership queued"), "{html}");
    let html = page("/ui/overflow".into()).await;
    assert!(html.contains(&waiting_email), "{html}");
    assert!(html.contains("add limit 2&#x2f;1day reached"), "{html}");
}
