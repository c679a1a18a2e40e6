use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, fixture, has_ref, hmac_sha256_hex,
    long_text, now, one_event, receive,
};
use crate::{HookError, HookParse, SourceKind};

const KEY: &str = "calendly-signing-key-0123456789";
const URL: &str = "https://leads.example.com/v1/hooks/calendly";

fn source() -> Box<dyn SourceKind> {
    build(
        "calendly",
        json!({"signing_key_env": "CALENDLY_SIGNING_KEY"}),
        &[("CALENDLY_SIGNING_KEY", KEY)],
    )
}

/// Signs as Calendly documents: t=<unix>,v1=hex(HMAC-SHA256(key, "<t>.<body>")).
fn signed_at(body: &str, t: i64) -> TestRequest {
    let v1 = hmac_sha256_hex(KEY, format!("{t}.{body}").as_bytes());
    TestRequest::post(URL, body).header("calendly-webhook-signature", &format!("t={t},v1={v1}"))
}

fn fresh(body: &str) -> TestRequest {
    signed_at(body, now().timestamp() - 5)
}

#[test]
fn invitee_created_is_a_booked_meeting() {
    let e = one_event(
        source().as_ref(),
        &fresh(&fixture("calendly_invitee_created.json")),
    );
    assert_eq!(e.event_type.as_str(), "meeting.booked");
    assert_eq!(email_of(&e), "test@example.com");
    assert_eq!(e.contact.first_name.as_deref(), Some("John"));
    assert_eq!(e.contact.last_name.as_deref(), Some("Doe"));
    assert_eq!(e.contact.phone.as_ref().unwrap().as_str(), "+14155550123");
    assert_eq!(data_str(&e, "meeting_name"), "15 Minute Meeting");
    assert_eq!(data_str(&e, "start_time"), "2024-06-12T14:00:00.000000Z");
    assert_eq!(e.data["tracking"]["utm_source"], "linkedin");
    assert_eq!(e.data["questions_and_answers"][0]["answer"], "Acme Rockets");
    assert!(has_ref(
        &e,
        "invitee",
        "https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2/invitees/AAAAAAAAAAAAAAAA"
    ));
    assert!(has_ref(
        &e,
        "scheduled_event",
        "https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2"
    ));
    assert!(e.external_id.as_deref().unwrap().starts_with("sha256:"));
    assert_eq!(
        e.occurred_at.unwrap().to_rfc3339(),
        "2024-06-10T06:13:20+00:00"
    );
}

#[test]
fn invitee_canceled_is_a_canceled_meeting_with_the_reason() {
    let e = one_event(
        source().as_ref(),
        &fresh(&fixture("calendly_invitee_canceled.json")),
    );
    assert_eq!(e.event_type.as_str(), "meeting.canceled");
    assert_eq!(data_str(&e, "cancel_reason"), "Double booked");
    assert_eq!(data_str(&e, "canceler_type"), "invitee");
    // Booking and cancellation of the same invitee are two events.
    let booked = one_event(
        source().as_ref(),
        &fresh(&fixture("calendly_invitee_created.json")),
    );
    assert_ne!(booked.external_id, e.external_id);
}

#[test]
fn unknown_events_are_custom() {
    let body = r#"{"created_at":"2024-06-10T07:00:00Z","event":"invitee_no_show.created","payload":{"uri":"https://api.calendly.com/invitee_no_shows/X1","invitee":"https://api.calendly.com/scheduled_events/E/invitees/I","created_at":"2024-06-10T07:00:00Z"}}"#;
    let e = one_event(source().as_ref(), &fresh(body));
    assert_eq!(e.event_type.as_str(), "custom");
    assert_eq!(data_str(&e, "vendor_event"), "invitee_no_show.created");
    assert!(has_ref(
        &e,
        "invitee",
        "https://api.calendly.com/scheduled_events/E/invitees/I"
    ));
}

#[test]
fn routing_form_submissions_are_form_submissions() {
    let body = r#"{"created_at":"2024-06-10T07:00:00Z","event":"routing_form_submission.created","payload":{"uri":"https://api.calendly.com/routing_form_submissions/S1","routing_form":"https://api.calendly.com/routing_forms/F1","questions_and_answers":[{"question_uuid":"q1","question":"Work email","answer":"ana@acme.io"}],"tracking":{"utm_source":"ads"},"submitter":null,"result":{"type":"event_type","value":"https://api.calendly.com/event_types/T"}}}"#;
    let e = one_event(source().as_ref(), &fresh(body));
    assert_eq!(e.event_type.as_str(), "form.submitted");
    assert_eq!(email_of(&e), "ana@acme.io");
    assert!(has_ref(
        &e,
        "routing_form",
        "https://api.calendly.com/routing_forms/F1"
    ));
}

#[test]
fn a_retry_has_the_same_external_id() {
    let body = fixture("calendly_invitee_created.json");
    let first = one_event(source().as_ref(), &fresh(&body));
    let retry = one_event(source().as_ref(), &signed_at(&body, now().timestamp() - 60));
    assert_eq!(first.external_id, retry.external_id);
}

#[test]
fn bad_or_missing_signature_is_401() {
    let body = fixture("calendly_invitee_created.json");
    let t = now().timestamp();
    let forged = TestRequest::post(URL, &body).header(
        "calendly-webhook-signature",
        &format!("t={t},v1={}", "ab".repeat(32)),
    );
    assert!(matches!(
        receive(source().as_ref(), &forged),
        Err(HookError::Unauthorized(_))
    ));
    // Signed with a different timestamp than the one sent.
    let v1 = hmac_sha256_hex(KEY, format!("{}.{body}", t - 1).as_bytes());
    let replayed_t = TestRequest::post(URL, &body)
        .header("calendly-webhook-signature", &format!("t={t},v1={v1}"));
    assert!(matches!(
        receive(source().as_ref(), &replayed_t),
        Err(HookError::Unauthorized(_))
    ));
    let missing = TestRequest::post(URL, &body);
    assert_eq!(
        receive(source().as_ref(), &missing).unwrap_err().status(),
        401
    );
    let no_t = TestRequest::post(URL, &body).header("calendly-webhook-signature", "v1=00");
    assert!(
        matches!(receive(source().as_ref(), &no_t), Err(HookError::Unauthorized(m)) if m.contains("t="))
    );
}

#[test]
fn an_old_timestamp_is_stale() {
    let req = signed_at(
        &fixture("calendly_invitee_created.json"),
        now().timestamp() - 600,
    );
    assert!(matches!(
        receive(source().as_ref(), &req),
        Err(HookError::Stale(_))
    ));
    let patient = build(
        "calendly",
        json!({"signing_key_env": "K", "tolerance": 900}),
        &[("K", KEY)],
    );
    assert!(receive(patient.as_ref(), &req).is_ok());
}

#[test]
fn malformed_bodies_are_400() {
    for body in [
        "{\"event\": \"invitee.created\", ",
        "[]",
        "{\"event\": \"invitee.created\"}",
        "{\"payload\": {}}",
    ] {
        let err = receive(source().as_ref(), &fresh(body)).unwrap_err();
        assert!(matches!(err, HookError::Malformed(_)), "{body}: {err:?}");
    }
}

#[test]
fn an_empty_body_is_a_ping() {
    assert_eq!(
        receive(source().as_ref(), &fresh("")).unwrap(),
        HookParse::Ping
    );
}

/// An invitee with ten questions answered at length.
#[test]
fn the_largest_documented_request_fits() {
    let mut body: serde_json::Value =
        serde_json::from_str(&fixture("calendly_invitee_created.json")).unwrap();
    let answers: Vec<serde_json::Value> = (0..10)
        .map(|i| json!({"question": format!("Question {i}"), "answer": long_text(10_000), "position": i}))
        .collect();
    body["payload"]["questions_and_answers"] = json!(answers);
    let body = body.to_string();
    assert_largest_fits(source().as_ref(), &fresh(&body), 1);
}
