use serde_json::json;

use crate::testutil::{TestRequest, build, data_str, email_of, has_ref, one_event, receive};
use crate::{HookError, SourceKind};

const URL: &str = "https://leads.example.com/v1/hooks/mixmax?token=mm-token&event=replied";

fn source() -> Box<dyn SourceKind> {
    build(
        "mixmax",
        json!({"token_env": "MIXMAX_TOKEN"}),
        &[("MIXMAX_TOKEN", "mm-token")],
    )
}

fn body() -> String {
    json!({"recipient": {"email": "Lee@Buyer.co", "name": "Lee Park"},
           "message": {"_id": "msg_8f2", "subject": "Pricing follow-up"},
           "sequence": {"_id": "seq_4", "name": "Trial nurture"},
           "timestamp": 1718000000000i64})
    .to_string()
}

#[test]
fn a_reply_rule_is_reply_received() {
    let e = one_event(source().as_ref(), &TestRequest::post(URL, body()));
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(email_of(&e), "lee@buyer.co");
    assert_eq!(e.contact.first_name.as_deref(), Some("Lee"));
    assert_eq!(data_str(&e, "subject"), "Pricing follow-up");
    assert!(has_ref(&e, "message", "msg_8f2") && has_ref(&e, "sequence", "seq_4"));
    assert_eq!(e.occurred_at.unwrap().timestamp(), 1_718_000_000);
    assert_eq!(
        one_event(source().as_ref(), &TestRequest::post(URL, body())).external_id,
        e.external_id
    );
}

#[test]
fn named_events_win_and_unknown_are_custom() {
    let with_name = body().replacen('{', "{\"event\": \"meeting_booked\", ", 1);
    assert_eq!(
        one_event(source().as_ref(), &TestRequest::post(URL, with_name))
            .event_type
            .as_str(),
        "meeting.booked"
    );
    let url = URL.replace("replied", "opportunity_updated");
    assert_eq!(
        one_event(source().as_ref(), &TestRequest::post(&url, body()))
            .event_type
            .as_str(),
        "custom"
    );
}

#[test]
fn wrong_token_401_malformed_400() {
    let wrong = TestRequest::post(
        "https://leads.example.com/v1/hooks/mixmax?event=replied",
        body(),
    );
    assert!(matches!(
        receive(source().as_ref(), &wrong),
        Err(HookError::Unauthorized(_))
    ));
    assert_eq!(
        receive(source().as_ref(), &TestRequest::post(URL, "nope"))
            .unwrap_err()
            .status(),
        400
    );
}
