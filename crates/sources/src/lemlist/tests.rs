use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, has_ref, long_text, one_event,
    receive,
};
use crate::{HookError, SourceKind};

const URL: &str = "https://leads.example.com/v1/hooks/lemlist?token=lem-token";

fn source() -> Box<dyn SourceKind> {
    build(
        "lemlist",
        json!({"token_env": "LEMLIST_TOKEN", "secret_env": "LEMLIST_SECRET"}),
        &[
            ("LEMLIST_TOKEN", "lem-token"),
            ("LEMLIST_SECRET", "hook-secret"),
        ],
    )
}

/// An `emailsReplied` activity as lemlist posts it (activity object fields).
fn replied() -> String {
    json!({
        "_id": "act_7yWvQzN3kPq2", "type": "emailsReplied", "isFirst": true,
        "createdAt": "2024-06-10T06:13:20.000Z", "teamId": "tea_1", "campaignId": "cam_A1",
        "campaignName": "Founders Q2", "sequenceId": "seq_1", "sequenceStep": 1, "leadId": "lea_9",
        "leadEmail": "Marie@Startup.fr", "leadFirstName": "Marie", "leadLastName": "Curie",
        "leadCompanyName": "Startup SAS", "sendUserEmail": "sdr@ourco.com",
        "text": "Oui, avec plaisir", "secret": "hook-secret"
    })
    .to_string()
}

#[test]
fn a_reply_activity_is_reply_received() {
    let e = one_event(source().as_ref(), &TestRequest::post(URL, replied()));
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(e.external_id.as_deref(), Some("act_7yWvQzN3kPq2"));
    assert_eq!(email_of(&e), "marie@startup.fr");
    assert_eq!(e.contact.last_name.as_deref(), Some("Curie"));
    assert_eq!(e.contact.company.as_deref(), Some("Startup SAS"));
    assert!(has_ref(&e, "lead", "lea_9") && has_ref(&e, "campaign", "cam_A1"));
    assert_eq!(data_str(&e, "campaign_name"), "Founders Q2");
    assert_eq!(e.data["sequence_step"], 1);
}

#[test]
fn interest_events_are_custom_and_retries_dedupe() {
    let body = replied().replace("emailsReplied", "emailsInterested");
    let e = one_event(source().as_ref(), &TestRequest::post(URL, &body));
    assert_eq!(e.event_type.as_str(), "custom");
    assert_eq!(data_str(&e, "vendor_event"), "emailsInterested");
    assert_eq!(
        one_event(source().as_ref(), &TestRequest::post(URL, &body)).external_id,
        e.external_id
    );
}

#[test]
fn wrong_token_or_secret_is_401() {
    let no_token = TestRequest::post("https://leads.example.com/v1/hooks/lemlist", replied());
    assert!(matches!(
        receive(source().as_ref(), &no_token),
        Err(HookError::Unauthorized(_))
    ));
    let wrong_secret = replied().replace("hook-secret", "other");
    assert!(matches!(
        receive(source().as_ref(), &TestRequest::post(URL, wrong_secret)),
        Err(HookError::Unauthorized(_))
    ));
}

#[test]
fn malformed_json_is_400() {
    let token_only = build("lemlist", json!({"token_env": "T"}), &[("T", "lem-token")]);
    assert_eq!(
        receive(token_only.as_ref(), &TestRequest::post(URL, "{\"type\": "))
            .unwrap_err()
            .status(),
        400
    );
}

/// lemlist's lead-state group `warmed` ("Lead replied", Add Webhook event
/// types) is a reply; the sender (`sendUserEmail`) is never the contact.
#[test]
fn a_warmed_lead_replied_and_the_sender_is_not_the_contact() {
    let body = replied().replace("emailsReplied", "warmed");
    let e = one_event(source().as_ref(), &TestRequest::post(URL, &body));
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(data_str(&e, "vendor_event"), "warmed");
    assert_eq!(email_of(&e), "marie@startup.fr");
    let body = replied().replace("emailsReplied", "hooked");
    let e = one_event(source().as_ref(), &TestRequest::post(URL, &body));
    assert_eq!(e.event_type.as_str(), "custom");
}

#[test]
fn the_largest_documented_request_fits() {
    let mut body: serde_json::Value = serde_json::from_str(&replied()).unwrap();
    body["text"] = json!(long_text(128 * 1024));
    let req = TestRequest::post(URL, body.to_string());
    assert_largest_fits(source().as_ref(), &req, 1);
}
