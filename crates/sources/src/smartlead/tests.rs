use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, has_ref, long_text, one_event,
    receive,
};
use crate::{HookError, SourceKind};

const URL: &str = "https://leads.example.com/v1/hooks/smartlead?token=sl-token";

fn source() -> Box<dyn SourceKind> {
    build(
        "smartlead",
        json!({"token_env": "SMARTLEAD_TOKEN", "secret_key_env": "SMARTLEAD_SECRET_KEY"}),
        &[
            ("SMARTLEAD_TOKEN", "sl-token"),
            (
                "SMARTLEAD_SECRET_KEY",
                "e0207d40-84ef-4ad6-89eb-7dbff8c0138d",
            ),
        ],
    )
}

/// The documented EMAIL_REPLY body ("Threaded Replies" response structure), filled in.
fn reply_body() -> String {
    json!({
        "webhook_id": 94, "webhook_name": "leadrelay", "sl_email_lead_id": "2077",
        "sl_email_lead_map_id": "4455", "sl_lead_email": "David.Carroll@Client.com",
        "webhook_url": URL, "stats_id": "9b0f5d6e-stats", "stats_thread_id": "t-1",
        "event_type": "EMAIL_REPLY", "time_replied": "2023-09-25T17:29:11.618881+00:00",
        "event_timestamp": "2023-09-25T17:29:11.618881+00:00", "from_email": "sdr@ourco.com",
        "to_email": "david.carroll@client.com", "to_name": "David Carroll", "subject": "Re: OR",
        "campaign_id": 111, "campaign_name": "OR Tracker", "campaign_status": "ACTIVE", "sequence_number": 1,
        "sent_message": {"message_id": "<sent-1@ourco.com>", "html": "<p>Hi</p>", "text": "Hi", "time": "2023-09-25T10:00:00Z"},
        "reply_message": {"message_id": "<reply-1@client.com>", "html": "<p>Yes</p>", "text": "Yes, let's talk", "time": "2023-09-25T17:29:11Z"},
        "client_id": 111, "app_url": "https://app.smartlead.ai/app/master-inbox?x=1",
        "secret_key": "e0207d40-84ef-4ad6-89eb-7dbff8c0138d", "description": "", "metadata": {"webhook_created_at": "2023-09-01T00:00:00Z"}
    })
    .to_string()
}

#[test]
fn a_reply_is_reply_received_with_the_lead_and_campaign() {
    let e = one_event(source().as_ref(), &TestRequest::post(URL, reply_body()));
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(email_of(&e), "david.carroll@client.com");
    assert_eq!(e.contact.first_name.as_deref(), Some("David"));
    assert!(has_ref(&e, "lead", "2077") && has_ref(&e, "campaign", "111"));
    assert_eq!(data_str(&e, "campaign_name"), "OR Tracker");
    assert_eq!(data_str(&e, "reply_text"), "Yes, let's talk");
    assert_eq!(e.data["sequence_number"], 1);
    assert!(!e.data.contains_key("secret_key"));
}

#[test]
fn other_events_map_and_unknown_ones_are_custom() {
    for (event, expected) in [
        ("EMAIL_SENT", "email.sent"),
        ("EMAIL_OPEN", "email.opened"),
        ("EMAIL_LINK_CLICK", "email.clicked"),
        ("EMAIL_BOUNCE", "email.bounced"),
        ("LEAD_UNSUBSCRIBED", "unsubscribed"),
        ("LEAD_CATEGORY_UPDATED", "custom"),
    ] {
        let body = reply_body().replace("EMAIL_REPLY", event);
        let e = one_event(source().as_ref(), &TestRequest::post(URL, body));
        assert_eq!(e.event_type.as_str(), expected, "{event}");
        assert_eq!(data_str(&e, "vendor_event"), event);
    }
}

#[test]
fn untracked_replies_read_the_sender() {
    let body = r#"{"event_timestamp":"2024-04-17T05:24:33.353Z","reply_message":{"message_id":"<m@mail.gmail.com>","html":"","text":"Hi\n","time":"2024-04-17T05:24:33.353Z"},"secret_key":"e0207d40-84ef-4ad6-89eb-7dbff8c0138d","description":"","sender_detail":"sunita soy <Sunita@Example.org>","recipient_detail":"sdr@ourco.com","subject":"Untracked replies","visible_text":"Hi\n","has_attachment":false,"metadata":{"webhook_created_at":"2024-04-12T13:51:26.269Z"},"webhook_url":"x","webhook_id":94,"webhook_name":"test","event_type":"UNTRACKED_REPLIES"}"#;
    let e = one_event(source().as_ref(), &TestRequest::post(URL, body));
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(email_of(&e), "sunita@example.org");
    assert_eq!(e.contact.first_name.as_deref(), Some("sunita"));
}

#[test]
fn a_retry_has_the_same_external_id() {
    let a = one_event(source().as_ref(), &TestRequest::post(URL, reply_body()));
    let b = one_event(source().as_ref(), &TestRequest::post(URL, reply_body()));
    assert_eq!(a.external_id, b.external_id);
}

#[test]
fn a_wrong_secret_key_or_token_is_401() {
    let body = reply_body().replace("\"secret_key\":\"e0207d40", "\"secret_key\":\"f0207d40");
    assert!(
        matches!(receive(source().as_ref(), &TestRequest::post(URL, body)), Err(HookError::Unauthorized(m)) if m.contains("secret_key"))
    );
    let no_token = TestRequest::post("https://leads.example.com/v1/hooks/smartlead", reply_body());
    assert!(matches!(
        receive(source().as_ref(), &no_token),
        Err(HookError::Unauthorized(_))
    ));
    let secret_only = build(
        "smartlead",
        json!({"secret_key_env": "K"}),
        &[("K", "e0207d40-84ef-4ad6-89eb-7dbff8c0138d")],
    );
    let no_secret = r#"{"event_type": "EMAIL_SENT", "to_email": "a@b.co"}"#;
    assert!(matches!(
        receive(secret_only.as_ref(), &TestRequest::post(URL, no_secret)),
        Err(HookError::Unauthorized(_))
    ));
}

#[test]
fn malformed_json_is_400() {
    assert_eq!(
        receive(
            source().as_ref(),
            &TestRequest::post(URL, "{\"event_type\":")
        )
        .unwrap_err()
        .status(),
        400
    );
}

#[test]
fn one_of_token_or_secret_is_required() {
    let Err(errors) = crate::build("smartlead", &json!({}), &|_| None) else {
        panic!()
    };
    assert_eq!(errors[0].field, "signing_secret_env");
}

#[test]
fn the_signature_header_is_checked_and_the_request_id_is_the_external_id() {
    let signed = build(
        "smartlead",
        json!({"signing_secret_env": "SL_SIGNING"}),
        &[("SL_SIGNING", "whsec-sl")],
    );
    let body = reply_body();
    let sig = crate::testutil::hmac_sha256_hex("whsec-sl", body.as_bytes());
    let req = TestRequest::post("https://leads.example.com/v1/hooks/smartlead", &body)
        .header("x-smartlead-signature", &format!("sha256={sig}"))
        .header("x-request-id", "req_01J0ABC");
    let e = one_event(signed.as_ref(), &req);
    assert_eq!(e.external_id.as_deref(), Some("req_01J0ABC"));
    let forged = req.clone().header(
        "x-smartlead-signature",
        &format!("sha256={}", "00".repeat(32)),
    );
    assert!(matches!(
        receive(signed.as_ref(), &forged),
        Err(HookError::Unauthorized(_))
    ));
    let unsigned = req.without_header("x-smartlead-signature");
    assert!(matches!(
        receive(signed.as_ref(), &unsigned),
        Err(HookError::Unauthorized(_))
    ));
}

/// A reply carries the sent and the reply message as HTML and text.
#[test]
fn the_largest_documented_request_fits() {
    let mut body: serde_json::Value = serde_json::from_str(&reply_body()).unwrap();
    body["sent_message"] = json!({"message_id": "<a@b>", "html": long_text(200_000), "text": long_text(100_000), "time": "2024-06-10T06:13:20Z"});
    body["reply_message"] = json!({"message_id": "<c@d>", "html": long_text(300_000), "text": long_text(150_000), "time": "2024-06-10T06:13:20Z"});
    let req = TestRequest::post(URL, body.to_string());
    assert_largest_fits(source().as_ref(), &req, 1);
}
