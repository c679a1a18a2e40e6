use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, has_ref, long_text, one_event,
    receive,
};
use crate::{HookError, HookParse, SourceKind};

const URL: &str = "https://leads.example.com/v1/hooks/apollo?token=ap-token";

fn source() -> Box<dyn SourceKind> {
    build(
        "apollo",
        json!({"token_env": "APOLLO_TOKEN"}),
        &[("APOLLO_TOKEN", "ap-token")],
    )
}

fn contact_updated() -> String {
    json!({
        "id": "wh_evt_1", "event": "contact.updated", "timestamp": "2024-06-10T06:13:20Z",
        "data": {"contact": {"id": "66a1f0c2", "first_name": "Tim", "last_name": "Zheng", "name": "Tim Zheng",
                             "title": "Founder", "email": "tim@apollo-demo.io", "linkedin_url": "http://www.linkedin.com/in/tim",
                             "organization": {"id": "5e66b6381e05b4008c8331b8", "name": "Apollo", "primary_domain": "apollo.io"},
                             "phone_numbers": [{"raw_number": "(415) 555-0100", "sanitized_number": "+14155550100"}]},
                 "changes": {"title": {"from": "CEO", "to": "Founder"}}}
    })
    .to_string()
}

#[test]
fn a_contact_update_with_changes() {
    let e = one_event(
        source().as_ref(),
        &TestRequest::post(URL, contact_updated()),
    );
    assert_eq!(e.event_type.as_str(), "contact.updated");
    assert_eq!(e.external_id.as_deref(), Some("wh_evt_1"));
    assert_eq!(email_of(&e), "tim@apollo-demo.io");
    assert_eq!(e.contact.company.as_deref(), Some("Apollo"));
    assert_eq!(e.contact.domain.as_deref(), Some("apollo.io"));
    assert_eq!(e.contact.phone.as_ref().unwrap().as_str(), "+14155550100");
    assert!(
        has_ref(&e, "contact", "66a1f0c2") && has_ref(&e, "account", "5e66b6381e05b4008c8331b8")
    );
    assert_eq!(e.changes[0].field, "title");
    assert_eq!(e.changes[0].previous, Some(json!("CEO")));
}

#[test]
fn flat_bodies_name_the_event_in_the_url_and_dedupe_by_digest() {
    let body = r#"{"email": "ana@acme.io", "first_name": "Ana", "sequence": {"id": "seq_1", "name": "Inbound"}}"#;
    let req = TestRequest::post(&format!("{URL}&event=sequence_finished"), body);
    let e = one_event(source().as_ref(), &req);
    assert_eq!(e.event_type.as_str(), "sequence.completed");
    assert_eq!(data_str(&e, "sequence_name"), "Inbound");
    assert!(e.external_id.as_deref().unwrap().starts_with("sha256:"));
    assert_eq!(
        one_event(source().as_ref(), &req).external_id,
        e.external_id
    );
}

#[test]
fn wrong_token_401_malformed_400_blank_ping() {
    let wrong = TestRequest::post(
        "https://leads.example.com/v1/hooks/apollo",
        contact_updated(),
    );
    assert!(matches!(
        receive(source().as_ref(), &wrong),
        Err(HookError::Unauthorized(_))
    ));
    assert_eq!(
        receive(source().as_ref(), &TestRequest::post(URL, "{]"))
            .unwrap_err()
            .status(),
        400
    );
    assert_eq!(
        receive(source().as_ref(), &TestRequest::post(URL, "")).unwrap(),
        HookParse::Ping
    );
}

#[test]
fn the_largest_documented_request_fits() {
    let mut body: serde_json::Value = serde_json::from_str(&contact_updated()).unwrap();
    body["data"]["contact"]["headline"] = json!(long_text(64 * 1024));
    let req = TestRequest::post(URL, body.to_string());
    assert_largest_fits(source().as_ref(), &req, 1);
}
