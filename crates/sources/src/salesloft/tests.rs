use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha1::Sha1;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, fixture, has_ref, long_text,
    one_event, receive,
};
use crate::{HookError, HookParse, SourceKind};

const TOKEN: &str = "salesloft-callback-token";
const URL: &str = "https://leads.example.com/v1/hooks/salesloft";

fn source() -> Box<dyn SourceKind> {
    build(
        "salesloft",
        json!({"callback_token_env": "SALESLOFT_CALLBACK_TOKEN"}),
        &[("SALESLOFT_CALLBACK_TOKEN", TOKEN)],
    )
}

/// Signs as Salesloft documents: hex HMAC-SHA1 of the body keyed with the callback token.
fn delivery(event: &str, body: &str) -> TestRequest {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(TOKEN.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    TestRequest::post(URL, body)
        .header("x-salesloft-event", event)
        .header("x-salesloft-signature", &sig)
}

#[test]
fn person_created_is_a_new_lead_with_the_person() {
    let e = one_event(
        source().as_ref(),
        &delivery("person_created", &fixture("salesloft_person.json")),
    );
    assert_eq!(e.event_type.as_str(), "lead.created");
    assert_eq!(email_of(&e), "steve.rogers@avengers.com");
    assert_eq!(e.contact.first_name.as_deref(), Some("Steve"));
    assert_eq!(e.contact.company.as_deref(), Some("Avengers"));
    assert_eq!(e.contact.title.as_deref(), Some("Captain"));
    assert_eq!(e.contact.region.as_deref(), Some("NY"));
    assert_eq!(e.contact.phone.as_ref().unwrap().as_str(), "+14155550123");
    assert_eq!(
        e.contact.custom["linkedin_url"],
        "https://www.linkedin.com/in/steverogers"
    );
    assert!(has_ref(&e, "person", "1") && has_ref(&e, "account", "1"));
    assert_eq!(e.data["custom_fields"]["Favorite shield"], "round");
}

#[test]
fn person_updated_is_a_contact_update() {
    let e = one_event(
        source().as_ref(),
        &delivery("person_updated", &fixture("salesloft_person.json")),
    );
    assert_eq!(e.event_type.as_str(), "contact.updated");
}

#[test]
fn a_replied_email_is_recorded_once_however_often_it_is_updated() {
    let body = fixture("salesloft_email.json");
    let e = one_event(source().as_ref(), &delivery("email_updated", &body));
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(email_of(&e), "steve.rogers@avengers.com");
    assert!(has_ref(&e, "email", "2") && has_ref(&e, "person", "1") && has_ref(&e, "cadence", "7"));
    // A later update (one more view) reports the same reply: same external id.
    let later = body
        .replace("\"views\": 2", "\"views\": 3")
        .replace("07:00:00", "08:00:00");
    let again = one_event(source().as_ref(), &delivery("email_updated", &later));
    assert_eq!(e.external_id, again.external_id);
    // A bounce is a different canonical event for the same email.
    let bounced = body.replace("\"bounced\": false", "\"bounced\": true");
    let b = one_event(source().as_ref(), &delivery("email_updated", &bounced));
    assert_eq!(b.event_type.as_str(), "email.bounced");
    assert_ne!(b.external_id, e.external_id);
}

#[test]
fn finished_cadence_memberships_complete_the_sequence() {
    let body = r#"{"id": 9, "created_at": "2024-06-01T00:00:00Z", "updated_at": "2024-06-10T00:00:00Z", "added_at": "2024-06-01T00:00:00Z", "person_deleted": false, "currently_on_cadence": false, "current_state": "finished", "cadence": {"id": 7, "_href": "x"}, "person": {"id": 1, "_href": "y"}, "user": {"id": 3}, "counts": {"views": 4, "clicks": 0, "replies": 0, "calls": 1, "sent_emails": 3, "bounces": 0}}"#;
    let e = one_event(
        source().as_ref(),
        &delivery("cadence_membership_updated", body),
    );
    assert_eq!(e.event_type.as_str(), "sequence.completed");
    assert!(
        has_ref(&e, "cadence_membership", "9")
            && has_ref(&e, "cadence", "7")
            && has_ref(&e, "person", "1")
    );
    let active = body.replace("\"finished\"", "\"active\"");
    let e = one_event(
        source().as_ref(),
        &delivery("cadence_membership_updated", &active),
    );
    assert_eq!(e.event_type.as_str(), "custom");
    assert_eq!(data_str(&e, "vendor_event"), "cadence_membership_updated");
}

#[test]
fn meetings_booked_and_canceled() {
    let body = r#"{"id": 55, "title": "Intro", "start_time": "2024-06-12T14:00:00Z", "end_time": "2024-06-12T14:30:00Z", "status": "booked", "canceled_at": null, "recipient_email": "steve.rogers@avengers.com", "recipient_name": "Steve Rogers", "attendees": [{"email": "rep@ourco.com", "organizer": true}, {"email": "steve.rogers@avengers.com", "organizer": false}], "person": {"id": 1}, "created_at": "2024-06-10T00:00:00Z", "updated_at": "2024-06-10T00:00:00Z"}"#;
    let booked = one_event(source().as_ref(), &delivery("meeting_booked", body));
    assert_eq!(booked.event_type.as_str(), "meeting.booked");
    assert_eq!(email_of(&booked), "steve.rogers@avengers.com");
    assert_eq!(data_str(&booked, "start_time"), "2024-06-12T14:00:00Z");
    let canceled = body.replace(
        "\"canceled_at\": null",
        "\"canceled_at\": \"2024-06-11T00:00:00Z\"",
    );
    let e = one_event(source().as_ref(), &delivery("meeting_updated", &canceled));
    assert_eq!(e.event_type.as_str(), "meeting.canceled");
}

#[test]
fn a_retry_has_the_same_external_id() {
    let body = fixture("salesloft_person.json");
    let a = one_event(source().as_ref(), &delivery("person_updated", &body));
    let b = one_event(source().as_ref(), &delivery("person_updated", &body));
    assert_eq!(a.external_id, b.external_id);
}

#[test]
fn bad_signature_is_401() {
    let body = fixture("salesloft_person.json");
    let req = delivery("person_created", &body).header("x-salesloft-signature", &"0".repeat(40));
    assert!(matches!(
        receive(source().as_ref(), &req),
        Err(HookError::Unauthorized(_))
    ));
    let req = delivery("person_created", &body).without_header("x-salesloft-signature");
    assert_eq!(receive(source().as_ref(), &req).unwrap_err().status(), 401);
}

#[test]
fn malformed_bodies_and_missing_event_names_are_400() {
    assert_eq!(
        receive(source().as_ref(), &delivery("person_created", "{\"id\":"))
            .unwrap_err()
            .status(),
        400
    );
    let req = delivery("person_created", "{\"id\": 1}").without_header("x-salesloft-event");
    assert!(
        matches!(receive(source().as_ref(), &req), Err(HookError::Malformed(m)) if m.contains("x-salesloft-event"))
    );
    assert_eq!(
        receive(source().as_ref(), &delivery("person_created", "")).unwrap(),
        HookParse::Ping
    );
}

#[test]
fn the_largest_documented_request_fits() {
    let mut body: serde_json::Value =
        serde_json::from_str(&fixture("salesloft_person.json")).unwrap();
    body["custom_fields"] = json!({"notes": long_text(64 * 1024)});
    let body = body.to_string();
    assert_largest_fits(source().as_ref(), &delivery("person_created", &body), 1);
}
