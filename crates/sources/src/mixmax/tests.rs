//! Bodies from Mixmax's "Mixmax Webhook event structure" article (Sent,
//! Received, Opened, Bounced), with the article's addresses: Test User2 is
//! the Mixmax user, Test User3 the person they write to.

use serde_json::{Value, json};

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, has_ref, long_text, one_event,
    receive,
};
use crate::{HookError, SourceKind};

/// The URL a rule's webhook action posts to: no `&event=`, the body names it.
const URL: &str = "https://leads.example.com/v1/hooks/mixmax?token=mm-token";

fn source() -> Box<dyn SourceKind> {
    build(
        "mixmax",
        json!({"token_env": "MIXMAX_TOKEN"}),
        &[("MIXMAX_TOKEN", "mm-token")],
    )
}

fn sent() -> Value {
    json!({
        "userId": "T3STUS3R1D",
        "to": [{"email": "engtestuser3@mixmax.com", "name": "Test User3"}],
        "cc": [], "bcc": [],
        "from": {"email": "engtestuser2@mixmax.com", "name": "Test User2"},
        "subject": "Please join me ",
        "sent": 1481745125403i64,
        "id": "16ac8cc837d1b304",
        "threadId": "16008541212e8a32",
        "rfc822Id": "<CAHfzPxo09WCKrtyPRM9g+60za4+0cHffwyT0vf867Pp=ehrfQ@mail.gmail.com>",
        "receivedBy": {"email": "engtestuser2@mixmax.com", "name": "Test User2"},
        "plaintextBody": "Please join me for a meeting. \n--\nEngineering Test",
        "eventName": "message:sent"
    })
}

fn received() -> Value {
    json!({
        "userId": "T3STUS3R1D",
        "to": [{"email": "engtestuser2@mixmax.com", "name": "Test User2"}],
        "cc": [], "bcc": [],
        "from": {"email": "engtestuser3@mixmax.com", "name": "Test User3"},
        "subject": "Re: Please join me ",
        "sent": 1481745135403i64,
        "id": "16ac8cc837d1b304",
        "threadId": "16008541212e8a32",
        "rfc822Id": "<CAHfzPxo09WCKrtyPRM9g+60z9d+0cHffwyT0vf867Pp=ehrfQ@mail.gmail.com>",
        "receivedBy": {"email": "engtestuser2@mixmax.com", "name": "Test User2"},
        "plaintextBody": "this is the body of a received email\r\n",
        "eventName": "message:received"
    })
}

fn opened() -> Value {
    json!({
        "message": {"to": [{"name": "Test User3", "email": "engtestuser3@mixmax.com"}], "cc": [], "bcc": [],
                    "subject": "Please join me "},
        "userId": "T3STUS3R1D",
        "messageId": "VyfSqbL195O0z8VK6L",
        "recipientEmail": "engtestuser3@mixmax.com",
        "recipientName": "Test User3",
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_10_5) AppleWebKit/600.8.9 (KHTML, like Gecko)",
        "timestamp": 1481746916300i64,
        "ipAddress": "::ffff:127.0.0.1",
        "eventName": "opened"
    })
}

fn post(body: &Value) -> TestRequest {
    TestRequest::post(URL, body.to_string())
}

#[test]
fn a_received_reply_is_the_prospect_who_sent_it() {
    let e = one_event(source().as_ref(), &post(&received()));
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(data_str(&e, "vendor_event"), "message:received");
    // The sender (Test User3), never the Mixmax user the reply was sent to.
    assert_eq!(email_of(&e), "engtestuser3@mixmax.com");
    assert_eq!(e.contact.first_name.as_deref(), Some("Test"));
    assert_eq!(e.contact.last_name.as_deref(), Some("User3"));
    assert_eq!(data_str(&e, "subject"), "Re: Please join me");
    assert_eq!(
        data_str(&e, "reply_text"),
        "this is the body of a received email"
    );
    assert!(has_ref(&e, "user", "T3STUS3R1D"));
    assert_eq!(e.occurred_at.unwrap().timestamp_millis(), 1_481_745_135_403);
    assert_eq!(
        one_event(source().as_ref(), &post(&received())).external_id,
        e.external_id
    );
}

#[test]
fn a_sent_message_is_about_its_recipient() {
    let e = one_event(source().as_ref(), &post(&sent()));
    assert_eq!(e.event_type.as_str(), "email.sent");
    assert_eq!(email_of(&e), "engtestuser3@mixmax.com");
    assert!(!e.data.contains_key("reply_text"), "{:?}", e.data);
    // Same message id as the reply in the article, but a different event.
    assert_ne!(
        e.external_id,
        one_event(source().as_ref(), &post(&received())).external_id
    );
}

#[test]
fn an_open_names_the_recipient() {
    let e = one_event(source().as_ref(), &post(&opened()));
    assert_eq!(e.event_type.as_str(), "email.opened");
    assert_eq!(email_of(&e), "engtestuser3@mixmax.com");
    assert_eq!(e.contact.last_name.as_deref(), Some("User3"));
    assert!(has_ref(&e, "message", "VyfSqbL195O0z8VK6L"));
    let mut clicked = opened();
    clicked["eventName"] = json!("clicked");
    assert_eq!(
        one_event(source().as_ref(), &post(&clicked))
            .event_type
            .as_str(),
        "email.clicked"
    );
}

#[test]
fn the_user_is_never_the_contact() {
    // A reply from the user's own mailbox (e.g. a note to self) has no prospect.
    let mut to_self = received();
    to_self["from"] = json!({"email": "EngTestUser2@Mixmax.com", "name": "Test User2"});
    let e = one_event(source().as_ref(), &post(&to_self));
    assert!(e.contact.email.is_none(), "{:?}", e.contact);
    // A sent message to the user and a prospect: the prospect.
    let mut cc = sent();
    cc["to"] = json!([{"email": "engtestuser2@mixmax.com"}, {"email": "lee@buyer.co", "name": "Lee Park"}]);
    assert_eq!(
        email_of(&one_event(source().as_ref(), &post(&cc))),
        "lee@buyer.co"
    );
    // The documented bounce: from the mail system, to the user — no contact, still stored.
    let bounce = json!({
        "userId": "5bedd41b3303c50f616e2b49",
        "to": [{"email": "papamixmax@gmail.com", "name": ""}], "cc": [], "bcc": [],
        "from": {"email": "mailer-daemon@googlemail.com", "name": "Mail Delivery Subsystem"},
        "subject": "Delivery Status Notification (Failure)",
        "sent": 1641992000000i64,
        "receivedBy": {"email": "papamixmax@gmail.com", "name": ""},
        "eventName": "bounced"
    });
    let e = one_event(source().as_ref(), &post(&bounce));
    assert_eq!(e.event_type.as_str(), "email.bounced");
    assert!(e.contact.email.is_none(), "{:?}", e.contact);
}

#[test]
fn the_body_names_the_event_and_the_url_is_a_fallback() {
    // The body's eventName wins over a stale ?event=.
    let url = format!("{URL}&event=opened");
    let e = one_event(
        source().as_ref(),
        &TestRequest::post(&url, received().to_string()),
    );
    assert_eq!(e.event_type.as_str(), "reply.received");
    // A body without eventName takes the URL's.
    let mut unnamed = received();
    unnamed.as_object_mut().unwrap().remove("eventName");
    let url = format!("{URL}&event=replied");
    let e = one_event(
        source().as_ref(),
        &TestRequest::post(&url, unnamed.to_string()),
    );
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(email_of(&e), "engtestuser3@mixmax.com");
    // Unknown names are custom.
    let mut other = opened();
    other["eventName"] = json!("livefeed:opportunity_updated");
    assert_eq!(
        one_event(source().as_ref(), &post(&other))
            .event_type
            .as_str(),
        "custom"
    );
}

#[test]
fn wrong_token_401_malformed_400() {
    let wrong = TestRequest::post(
        "https://leads.example.com/v1/hooks/mixmax",
        received().to_string(),
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

/// A received message with a long plain-text body (quoted thread).
#[test]
fn the_largest_documented_request_fits() {
    let mut body = received();
    body["plaintextBody"] = json!(long_text(500_000));
    assert_largest_fits(source().as_ref(), &post(&body), 1);
}

/// A rule body that names the person outright (`recipient`) keeps it when
/// the URL says the event is a reply.
#[test]
fn a_named_recipient_is_the_person_of_a_reply_without_a_sender() {
    let url = format!("{URL}&event=replied");
    let body = json!({"recipient": {"email": "Lee@Buyer.co", "name": "Lee Park"},
                      "message": {"_id": "msg_8f2", "subject": "Pricing follow-up"},
                      "timestamp": 1718000000000i64});
    let e = one_event(
        source().as_ref(),
        &TestRequest::post(&url, body.to_string()),
    );
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(email_of(&e), "lee@buyer.co");
    assert!(has_ref(&e, "message", "msg_8f2"));
}
