//! The `sheets` connector against the fake Google (token endpoint checking
//! the JWT signature, Sheets v4 with the per-minute write quota): header row
//! and batched rows, quota 429s waited out, an expired token refreshed, a
//! bad range dead-lettered and copied to the failed sheet.

use std::time::Duration;

use leadrelay::store::DeliveryState;
use leadrelay_fakes::google::{DEFAULT_SPREADSHEET_ID, FakeGoogle, GoogleConfig};
use serde_json::json;

use crate::notify_support::{
    GOOGLE_KEY_ENV, WAIT, assert_copied_to_failed_sheet, cell, config, failed_sheet, google_config,
    post, settled, sheets_destination,
};
use crate::support::{TestApp, eventually};

fn routes(dest: &str) -> String {
    format!("\n[[routes]]\nname = \"all\"\ndestinations = [\"{dest}\"]\n")
}

async fn start(google: &FakeGoogle, rest: &str) -> TestApp {
    TestApp::builder(&config(&["failed_sheet"], rest))
        .env(GOOGLE_KEY_ENV, &google.service_account_json())
        .start()
        .await
}

fn appends(google: &FakeGoogle) -> Vec<u16> {
    google
        .requests()
        .entries()
        .into_iter()
        .filter(|r| r.path.ends_with(":append"))
        .map(|r| r.status)
        .collect()
}

#[tokio::test]
async fn rows_under_a_managed_header_in_batches() {
    let google = FakeGoogle::start(google_config()).await.unwrap();
    let rest = format!(
        "{}{}{}",
        sheets_destination("leads_sheet", &google, "Leads", ""),
        failed_sheet(&google),
        routes("leads_sheet")
    );
    let app = start(&google, &rest).await;
    // Hold the destination while five leads arrive: they go out as one batch.
    app.hold("leads_sheet").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            post(
                &app,
                "contact",
                &json!({"email": format!("p{i}@example.com"), "first_name": format!("Pat {i}"),
                    "company": "=HYPERLINK(\"http://evil\")", "message": "Hi, \"there\"",
                    "consent": "yes", "utm_source": "ads"}),
            )
            .await,
        );
    }
    app.release("leads_sheet", 5).await;
    for id in &ids {
        let d = settled(&app, *id, "leads_sheet").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    }
    assert_eq!(appends(&google), vec![200], "one append for the batch");

    let rows = google.rows(DEFAULT_SPREADSHEET_ID, "Leads").unwrap();
    assert_eq!(rows.len(), 6, "a header row and five rows");
    assert_eq!(
        &rows[0][..8],
        &[
            "Received",
            "Event",
            "Origin",
            "Email",
            "First name",
            "Last name",
            "Phone",
            "Company"
        ]
    );
    let emails: Vec<&str> = (1..6).map(|r| cell(&rows, r, "Email")).collect();
    assert_eq!(
        emails,
        vec![
            "p0@example.com",
            "p1@example.com",
            "p2@example.com",
            "p3@example.com",
            "p4@example.com"
        ]
    );
    assert_eq!(cell(&rows, 1, "Origin"), "form:contact");
    assert_eq!(cell(&rows, 1, "UTM source"), "ads");
    assert_eq!(cell(&rows, 1, "Message"), "Hi, \"there\"");
    assert_eq!(
        cell(&rows, 1, "Company"),
        "=HYPERLINK(\"http://evil\")",
        "RAW input: stored as text, never a formula"
    );
    assert_eq!(cell(&rows, 1, "Event ID"), ids[0].to_string());

    // A later lead: the header is not written again.
    let id = post(
        &app,
        "contact",
        &json!({"email": "late@example.com", "consent": "yes"}),
    )
    .await;
    assert_eq!(
        settled(&app, id, "leads_sheet").await.state,
        DeliveryState::Delivered
    );
    let header_writes = google
        .requests()
        .entries()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert_eq!(header_writes, 1);
    assert_eq!(
        google.rows(DEFAULT_SPREADSHEET_ID, "Leads").unwrap().len(),
        7
    );
}

#[tokio::test]
async fn user_entered_values_never_turn_a_leads_text_into_a_formula() {
    let google = FakeGoogle::start(google_config()).await.unwrap();
    let rest = format!(
        "{}{}{}",
        sheets_destination(
            "leads_sheet",
            &google,
            "Leads",
            "value_input_option = \"USER_ENTERED\""
        ),
        failed_sheet(&google),
        routes("leads_sheet")
    );
    let app = start(&google, &rest).await;
    let id = post(
        &app,
        "contact",
        &json!({"email": "u@example.com", "phone": "+1 415 555 2671",
            "company": "=HYPERLINK(\"http://evil\")", "message": "-2+3+cmd|' /C calc'!A0",
            "consent": "yes"}),
    )
    .await;
    let d = settled(&app, id, "leads_sheet").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    // Sheets keeps a `'`-prefixed value as text, without the `'`: the phone
    // number stays text with its `+` (typed in, it would be a number).
    let values = google.values(DEFAULT_SPREADSHEET_ID, "Leads").unwrap();
    let rows = google.rows(DEFAULT_SPREADSHEET_ID, "Leads").unwrap();
    let col = |h: &str| rows[0].iter().position(|c| c == h).unwrap();
    assert_eq!(values[1][col("Phone")], json!("+14155552671"));
    assert_eq!(cell(&rows, 1, "Company"), "=HYPERLINK(\"http://evil\")");
    assert_eq!(cell(&rows, 1, "Message"), "-2+3+cmd|' /C calc'!A0");
}

#[tokio::test]
async fn the_write_quota_is_waited_out_and_an_expired_token_refreshed() {
    let google = FakeGoogle::start(GoogleConfig {
        write_requests_per_window: 1,
        // Long enough that the header write and the append (milliseconds
        // apart) always share a window, even on a loaded machine.
        quota_window: Duration::from_secs(5),
        ..google_config()
    })
    .await
    .unwrap();
    let rest = format!(
        "{}{}{}",
        sheets_destination("leads_sheet", &google, "Leads", ""),
        failed_sheet(&google),
        routes("leads_sheet")
    );
    let app = start(&google, &rest).await;

    // The header write takes the quota: the append answers 429 until the
    // window frees up; the destination pauses and tries again.
    let id = post(
        &app,
        "contact",
        &json!({"email": "q@example.com", "consent": "yes"}),
    )
    .await;
    let d = settled(&app, id, "leads_sheet").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    let attempts = app.store.attempts(d.id).await.unwrap();
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert_eq!(attempts[0].outcome, "throttled");
    assert_eq!(attempts[0].status, Some(429));
    assert!(
        attempts[0]
            .message
            .as_deref()
            .unwrap()
            .contains("RESOURCE_EXHAUSTED"),
        "{:?}",
        attempts[0].message
    );
    assert_eq!(appends(&google).last(), Some(&200));
    assert_eq!(google.issued_tokens(), 1, "the token is cached");

    // The token expires: the 401 is answered by a new token, same attempt.
    google.expire_tokens();
    let id = post(
        &app,
        "contact",
        &json!({"email": "t@example.com", "consent": "yes"}),
    )
    .await;
    let d = settled(&app, id, "leads_sheet").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    assert_eq!(google.issued_tokens(), 2);
    assert!(
        google
            .requests()
            .entries()
            .iter()
            .any(|r| r.status == 401 && r.path.ends_with(":append")),
        "the expired token was refused once"
    );
    let rows = eventually("both rows", WAIT, || async {
        let r = google.rows(DEFAULT_SPREADSHEET_ID, "Leads")?;
        (r.len() == 3).then_some(r)
    })
    .await;
    assert_eq!(cell(&rows, 2, "Email"), "t@example.com");
    // No token in the attempt log.
    let log = serde_json::to_string(&app.store.attempts(d.id).await.unwrap()).unwrap();
    assert!(!log.contains("ya29."), "{log}");
}

#[tokio::test]
async fn a_bad_range_is_dead_lettered_and_copied_to_the_failed_sheet() {
    let google = FakeGoogle::start(google_config()).await.unwrap();
    let rest = format!(
        "{}{}{}",
        sheets_destination("leads_sheet", &google, "No such tab", ""),
        failed_sheet(&google),
        routes("leads_sheet")
    );
    let app = start(&google, &rest).await;
    let id = post(
        &app,
        "contact",
        &json!({"email": "gone@example.com", "first_name": "Gus", "message": "hello",
            "consent": "yes"}),
    )
    .await;
    let dead = settled(&app, id, "leads_sheet").await;
    assert_eq!(dead.state, DeliveryState::Dead);
    assert_eq!(dead.last_status, Some(400));
    assert!(
        dead.reason
            .as_deref()
            .unwrap()
            .contains("Unable to parse range"),
        "{:?}",
        dead.reason
    );
    assert_copied_to_failed_sheet(&google, &dead, "gone@example.com").await;
    let rows = google.rows(DEFAULT_SPREADSHEET_ID, "Failed").unwrap();
    assert_eq!(cell(&rows, 1, "First name"), "Gus");
    assert_eq!(cell(&rows, 1, "Message"), "hello");
    assert_eq!(cell(&rows, 1, "Original event ID"), id.to_string());
    assert_eq!(cell(&rows, 1, "Attempts"), "1");

    // The copy is an event of its own, and the failed sheet's delivery of it
    // is recorded like any other.
    let copy = app
        .store
        .list_events(
            &leadrelay::store::EventFilter {
                event_type: Some(
                    leadrelay_model::EventType::parse("delivery.dead_lettered").unwrap(),
                ),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(copy.len(), 1);
    assert_eq!(copy[0].data["dead_letter"]["destination"], "leads_sheet");
    assert_eq!(copy[0].data["original"]["event_id"], id.to_string());
    let copy_delivery = settled(&app, copy[0].id, "failed_sheet").await;
    assert_eq!(copy_delivery.state, DeliveryState::Delivered);

    // A replay that dies again is copied again: one copy per dead delivery.
    let pairs = app.store.replay(vec![dead.id], None).await.unwrap();
    let replayed = eventually("the replay is dead too", WAIT, || async {
        let d = app.store.get_delivery(pairs[0].1).await.unwrap()?;
        (!d.state.is_active()).then_some(d)
    })
    .await;
    assert_eq!(replayed.state, DeliveryState::Dead);
    let rows = crate::notify_support::failed_rows(&google, 2).await;
    assert_eq!(rows.len(), 3, "one copy per dead delivery: {rows:?}");
}
