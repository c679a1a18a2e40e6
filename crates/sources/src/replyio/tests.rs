use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, has_ref, long_text, one_event,
    receive,
};
use crate::{HookError, SourceKind};

const URL: &str = "https://leads.example.com/v1/hooks/reply?token=rp-token";

fn source() -> Box<dyn SourceKind> {
    build(
        "replyio",
        json!({"token_env": "REPLY_TOKEN"}),
        &[("REPLY_TOKEN", "rp-token")],
    )
}

/// The documented delivery envelope (snake_case keys, event block, contact_fields, sequence_fields).
fn replied() -> String {
    json!({
        "event": {"date": "2024-06-10T06:13:20.123Z", "id": "550e8400-e29b-41d4-a716-446655440000", "type": "email_replied",
                  "user_id": 1001, "team_id": 77, "subscription_id": 12},
        "contact_fields": {"id": 12345, "email": "John.Doe@Example.com", "first_name": "John", "last_name": "Doe",
                           "title": "CEO", "company": "Example Corp", "phone": "+1 212 555 0199", "domain": "example.com",
                           "linkedin_profile": "https://linkedin.com/in/jdoe"},
        "sequence_fields": {"id": 67890, "name": "Outbound Q2", "step_number": 2},
        "reply_reason": "EmailDetected",
        "email_subject": "Re: quick idea"
    })
    .to_string()
}

#[test]
fn a_reply_is_reply_received_with_the_contact() {
    let e = one_event(source().as_ref(), &TestRequest::post(URL, replied()));
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(
        e.external_id.as_deref(),
        Some("550e8400-e29b-41d4-a716-446655440000")
    );
    assert_eq!(email_of(&e), "john.doe@example.com");
    assert_eq!(e.contact.title.as_deref(), Some("CEO"));
    assert_eq!(e.contact.company.as_deref(), Some("Example Corp"));
    assert_eq!(e.contact.phone.as_ref().unwrap().as_str(), "+12125550199");
    assert!(has_ref(&e, "contact", "12345") && has_ref(&e, "sequence", "67890"));
    assert_eq!(data_str(&e, "sequence_name"), "Outbound Q2");
    assert_eq!(data_str(&e, "reply_reason"), "EmailDetected");
    assert_eq!(e.occurred_at.unwrap().timestamp_millis(), 1_718_000_000_123);
}

#[test]
fn finished_and_opted_out_contacts() {
    let e = one_event(
        source().as_ref(),
        &TestRequest::post(URL, replied().replace("email_replied", "contact_finished")),
    );
    assert_eq!(e.event_type.as_str(), "sequence.completed");
    let e = one_event(
        source().as_ref(),
        &TestRequest::post(URL, replied().replace("email_replied", "contact_opted_out")),
    );
    assert_eq!(e.event_type.as_str(), "unsubscribed");
    let e = one_event(
        source().as_ref(),
        &TestRequest::post(URL, replied().replace("email_replied", "email_auto_reply")),
    );
    assert_eq!(e.event_type.as_str(), "custom");
}

#[test]
fn a_retry_has_the_same_external_id() {
    let a = one_event(source().as_ref(), &TestRequest::post(URL, replied()));
    let b = one_event(source().as_ref(), &TestRequest::post(URL, replied()));
    assert_eq!(a.external_id, b.external_id);
}

#[test]
fn wrong_token_is_401_and_malformed_json_400() {
    let wrong = TestRequest::post(
        "https://leads.example.com/v1/hooks/reply?token=x",
        replied(),
    );
    assert!(matches!(
        receive(source().as_ref(), &wrong),
        Err(HookError::Unauthorized(_))
    ));
    assert_eq!(
        receive(source().as_ref(), &TestRequest::post(URL, "{\"event\": {"))
            .unwrap_err()
            .status(),
        400
    );
}

/// The names on Reply.io's "Webhook events" page (docs.reply.io/essentials/webhook-events)
/// map like the older catalog names; an `email_unsubscribed` is an opt-out.
#[test]
fn the_current_event_names_map_like_the_older_ones() {
    for (name, expected) in [
        ("meeting_booked", "meeting.booked"),
        ("meeting_cancelled", "meeting.canceled"),
        ("email_unsubscribed", "unsubscribed"),
        ("link_clicked", "email.clicked"),
        ("sequence_completed", "sequence.completed"),
        ("email_link_clicked", "email.clicked"),
        ("contact_opted_out", "unsubscribed"),
        ("auto_reply_received", "custom"),
        ("meeting_rescheduled", "custom"),
    ] {
        let e = one_event(
            source().as_ref(),
            &TestRequest::post(URL, replied().replace("email_replied", name)),
        );
        assert_eq!(e.event_type.as_str(), expected, "{name}");
        assert_eq!(data_str(&e, "vendor_event"), name);
        assert_eq!(email_of(&e), "john.doe@example.com", "{name}");
    }
}

/// An email event with the email text included (`includeEmailText`).
#[test]
fn the_largest_documented_request_fits() {
    let mut body: serde_json::Value = serde_json::from_str(&replied()).unwrap();
    body["email_text"] = json!(long_text(500_000));
    let req = TestRequest::post(URL, body.to_string());
    assert_largest_fits(source().as_ref(), &req, 1);
}
