use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, has_ref, long_text, one_event,
    receive,
};
use crate::{HookError, SourceKind};

const URL: &str = "https://leads.example.com/v1/hooks/qwilr?token=qw-token";

fn source() -> Box<dyn SourceKind> {
    build(
        "qwilr",
        json!({"token_env": "QWILR_TOKEN"}),
        &[("QWILR_TOKEN", "qw-token")],
    )
}

fn accepted() -> String {
    json!({"event": "pageAccepted", "timestamp": "2024-06-10T06:13:20Z",
           "page": {"id": "65f1c0d2e3", "name": "Acme — Annual plan", "url": "https://acme.qwilr.com/Annual-plan-abc",
                    "metadata": {"hubspot_deal_id": "9001"}},
           "acceptor": {"name": "Dana Scully", "email": "Dana@Acme.com", "company": "Acme"}})
    .to_string()
}

#[test]
fn an_accepted_page_is_proposal_accepted() {
    let e = one_event(source().as_ref(), &TestRequest::post(URL, accepted()));
    assert_eq!(e.event_type.as_str(), "proposal.accepted");
    assert_eq!(email_of(&e), "dana@acme.com");
    assert_eq!(e.contact.last_name.as_deref(), Some("Scully"));
    assert!(has_ref(&e, "page", "65f1c0d2e3"));
    assert_eq!(data_str(&e, "page_name"), "Acme — Annual plan");
    assert_eq!(e.data["page_metadata"]["hubspot_deal_id"], "9001");
    assert_eq!(
        one_event(source().as_ref(), &TestRequest::post(URL, accepted())).external_id,
        e.external_id
    );
}

#[test]
fn viewed_pages_and_url_named_events() {
    let body = r#"{"pageId": "65f1c0d2e3", "viewer": {"email": "dana@acme.com"}}"#;
    let e = one_event(
        source().as_ref(),
        &TestRequest::post(&format!("{URL}&event=viewed"), body),
    );
    assert_eq!(e.event_type.as_str(), "proposal.viewed");
    assert!(has_ref(&e, "page", "65f1c0d2e3"));
}

#[test]
fn wrong_token_401_malformed_400() {
    assert!(matches!(
        receive(
            source().as_ref(),
            &TestRequest::post("https://x.test/h", accepted())
        ),
        Err(HookError::Unauthorized(_))
    ));
    assert_eq!(
        receive(source().as_ref(), &TestRequest::post(URL, "{\"event\""))
            .unwrap_err()
            .status(),
        400
    );
}

#[test]
fn the_largest_documented_request_fits() {
    let mut body: serde_json::Value = serde_json::from_str(&accepted()).unwrap();
    body["page_metadata"] = json!({"notes": long_text(64 * 1024)});
    let req = TestRequest::post(URL, body.to_string());
    assert_largest_fits(source().as_ref(), &req, 1);
}
