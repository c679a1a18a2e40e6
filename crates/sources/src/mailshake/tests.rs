use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, has_ref, long_text, one_event,
    receive,
};
use crate::{HookError, HookParse, SourceKind};

fn source() -> Box<dyn SourceKind> {
    build(
        "mailshake",
        json!({"token_env": "MAILSHAKE_PUSH_TOKEN"}),
        &[("MAILSHAKE_PUSH_TOKEN", "ms-secret")],
    )
}

/// What Mailshake POSTs to a push target URL (its docs: `resource_url` is the only key).
const PUSH: &str =
    r#"{"resource_url": "https://api.mailshake.com/2017-04-01/push/resolve?id=c0f8e6b2"}"#;

#[test]
fn a_push_is_stored_with_its_resource_url_and_the_subscribed_event() {
    let req = TestRequest::post(
        "https://leads.example.com/v1/hooks/mailshake?token=ms-secret&event=Replied",
        PUSH,
    );
    let e = one_event(source().as_ref(), &req);
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(data_str(&e, "vendor_event"), "Replied");
    assert_eq!(
        data_str(&e, "resource_url"),
        "https://api.mailshake.com/2017-04-01/push/resolve?id=c0f8e6b2"
    );
    assert!(e.contact.is_empty());
    // Mailshake retries the same push: same external id.
    let again = one_event(source().as_ref(), &req);
    assert_eq!(e.external_id, again.external_id);
}

#[test]
fn full_activity_objects_are_mapped_with_the_recipient() {
    let reply = r#"{"object": "reply", "id": 1, "actionDate": "2024-06-10T06:13:20.000Z", "isDuplicate": false,
        "recipient": {"object": "recipient", "id": 5, "emailAddress": "Jane@Acme.io", "fullName": "Jane Doe", "created": "2024-05-01T00:00:00Z", "isPaused": false, "contactID": 9, "first": "Jane", "last": "Doe", "fields": {"company": "Acme"}},
        "campaign": {"object": "campaign", "id": 42, "title": "Q2 outreach", "created": "2024-05-01T00:00:00Z"},
        "type": "reply", "subject": "Re: quick question", "externalID": "abc", "plainTextBody": "Sounds good, let's talk"}"#;
    let req = TestRequest::post("https://leads.example.com/v1/hooks/mailshake", reply)
        .header("x-leadrelay-token", "ms-secret");
    let e = one_event(source().as_ref(), &req);
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(e.external_id.as_deref(), Some("reply:1"));
    assert_eq!(email_of(&e), "jane@acme.io");
    assert_eq!(e.contact.first_name.as_deref(), Some("Jane"));
    assert_eq!(e.contact.company.as_deref(), Some("Acme"));
    assert!(has_ref(&e, "campaign", "42") && has_ref(&e, "recipient", "5"));
    assert_eq!(data_str(&e, "campaign_name"), "Q2 outreach");
}

#[test]
fn unknown_events_are_custom() {
    let req = TestRequest::post(
        "https://leads.example.com/v1/hooks/mailshake?token=ms-secret&event=TaskDue",
        PUSH,
    );
    let e = one_event(source().as_ref(), &req);
    assert_eq!(e.event_type.as_str(), "custom");
    assert_eq!(data_str(&e, "vendor_event"), "TaskDue");
}

#[test]
fn missing_or_wrong_token_is_401() {
    let req = TestRequest::post(
        "https://leads.example.com/v1/hooks/mailshake?event=Replied",
        PUSH,
    );
    assert!(matches!(
        receive(source().as_ref(), &req),
        Err(HookError::Unauthorized(_))
    ));
    let req = TestRequest::post(
        "https://leads.example.com/v1/hooks/mailshake?token=guess",
        PUSH,
    );
    assert!(matches!(
        receive(source().as_ref(), &req),
        Err(HookError::Unauthorized(_))
    ));
}

#[test]
fn malformed_json_is_400_and_blank_is_a_ping() {
    let req = TestRequest::post(
        "https://leads.example.com/v1/hooks/mailshake?token=ms-secret",
        "{\"resource_url\": ",
    );
    assert_eq!(receive(source().as_ref(), &req).unwrap_err().status(), 400);
    let req = TestRequest::post(
        "https://leads.example.com/v1/hooks/mailshake?token=ms-secret",
        "[]",
    );
    assert_eq!(receive(source().as_ref(), &req).unwrap_err().status(), 400);
    let req = TestRequest::post(
        "https://leads.example.com/v1/hooks/mailshake?token=ms-secret",
        "",
    );
    assert_eq!(receive(source().as_ref(), &req).unwrap(), HookParse::Ping);
}

/// A full activity object (as Zapier relays it) with the reply's text.
#[test]
fn the_largest_documented_request_fits() {
    let url = "https://leads.example.com/v1/hooks/mailshake?token=ms-secret&event=Replied";
    let body = json!({"object": "reply", "id": 1, "recipient": {"emailAddress": "lee@buyer.co", "fullName": "Lee Park"},
                      "campaign": {"id": 7, "title": "Q2"}, "subject": "Re: hello",
                      "body": long_text(200_000), "plainTextBody": long_text(100_000)});
    let req = TestRequest::post(url, body.to_string());
    assert_largest_fits(source().as_ref(), &req, 1);
}

/// The push events Mailshake documents (API docs, Pushes > Events): each maps
/// from the `event` the target URL carries.
#[test]
fn the_documented_push_events_map() {
    for (event, expected) in [
        ("Replied", "reply.received"),
        ("Opened", "email.opened"),
        ("Clicked", "email.clicked"),
        ("MessageSent", "email.sent"),
        ("LeadCreated", "lead.created"),
        ("LeadStatusChanged", "custom"),
    ] {
        let url =
            format!("https://leads.example.com/v1/hooks/mailshake?token=ms-secret&event={event}");
        let e = one_event(source().as_ref(), &TestRequest::post(&url, PUSH));
        assert_eq!(e.event_type.as_str(), expected, "{event}");
        assert_eq!(data_str(&e, "vendor_event"), event);
    }
}
