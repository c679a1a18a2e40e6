use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, fixture, has_ref,
    hmac_sha256_base64, long_text, one_event, receive,
};
use crate::{HookError, HookParse, SourceKind};

const SECRET: &str = "typeform-webhook-secret";
const URL: &str = "https://leads.example.com/v1/hooks/typeform";

fn source() -> Box<dyn SourceKind> {
    build(
        "typeform",
        json!({"secret_env": "TYPEFORM_SECRET", "fields": {"org": "company"}}),
        &[("TYPEFORM_SECRET", SECRET)],
    )
}

/// Signs as Typeform documents: sha256=base64(HMAC-SHA256(secret, body)).
fn signed(body: &str) -> TestRequest {
    let sig = hmac_sha256_base64(SECRET, body.as_bytes());
    TestRequest::post(URL, body).header("typeform-signature", &format!("sha256={sig}"))
}

#[test]
fn a_form_response_is_a_form_submission_with_the_contact() {
    let e = one_event(
        source().as_ref(),
        &signed(&fixture("typeform_form_response.json")),
    );
    assert_eq!(e.event_type.as_str(), "form.submitted");
    assert_eq!(e.external_id.as_deref(), Some("01HZXQ8R3V8K9W2N4M6P7T5Y1A"));
    assert_eq!(email_of(&e), "laura@example.com");
    assert_eq!(e.contact.first_name.as_deref(), Some("Laura"));
    assert_eq!(e.contact.company.as_deref(), Some("Acme"));
    assert_eq!(e.contact.phone.as_ref().unwrap().as_str(), "+5511999999999");
    assert_eq!(e.data["answers"]["team_size"], "11-50");
    assert_eq!(
        e.data["answers"]["products"],
        json!(["CRM sync", "Alerts", "Reports"])
    );
    assert_eq!(e.data["answers"]["budget"], 4200);
    assert_eq!(e.data["hidden"]["utm_source"], "newsletter");
    assert_eq!(e.data["score"], 9);
    assert_eq!(data_str(&e, "form_title"), "Talk to sales");
    assert!(has_ref(&e, "form", "lT4Z3j"));
    assert!(has_ref(&e, "response", "a3a12ec67a1365927098a606107fac15"));
    assert_eq!(
        e.occurred_at.unwrap().to_rfc3339(),
        "2024-06-10T06:13:20+00:00"
    );
}

#[test]
fn an_invalid_email_answer_is_kept_as_data() {
    let body =
        fixture("typeform_form_response.json").replace("Laura@Example.com", "laura@@example");
    let e = one_event(source().as_ref(), &signed(&body));
    assert!(e.contact.email.is_none());
    assert_eq!(data_str(&e, "invalid_email"), "laura@@example");
}

#[test]
fn a_retry_has_the_same_external_id_even_without_an_event_id() {
    let body = fixture("typeform_form_response.json")
        .replace("\"event_id\": \"01HZXQ8R3V8K9W2N4M6P7T5Y1A\",", "");
    let a = one_event(source().as_ref(), &signed(&body));
    let b = one_event(source().as_ref(), &signed(&body));
    assert!(a.external_id.as_deref().unwrap().starts_with("sha256:"));
    assert_eq!(a.external_id, b.external_id);
}

#[test]
fn bad_signatures_are_401() {
    let body = fixture("typeform_form_response.json");
    let hex_instead = TestRequest::post(URL, &body).header(
        "typeform-signature",
        &format!(
            "sha256={}",
            crate::testutil::hmac_sha256_hex(SECRET, body.as_bytes())
        ),
    );
    assert!(matches!(
        receive(source().as_ref(), &hex_instead),
        Err(HookError::Unauthorized(_))
    ));
    let no_prefix = TestRequest::post(URL, &body).header(
        "typeform-signature",
        &hmac_sha256_base64(SECRET, body.as_bytes()),
    );
    assert!(
        matches!(receive(source().as_ref(), &no_prefix), Err(HookError::Unauthorized(m)) if m.contains("sha256="))
    );
    assert_eq!(
        receive(source().as_ref(), &TestRequest::post(URL, &body))
            .unwrap_err()
            .status(),
        401
    );
}

#[test]
fn malformed_and_wrong_type_bodies() {
    let err = receive(source().as_ref(), &signed("{\"form_response\": [")).unwrap_err();
    assert_eq!(err.status(), 400);
    let err = receive(
        source().as_ref(),
        &signed("{\"event_type\": \"form_response\"}"),
    )
    .unwrap_err();
    assert!(matches!(err, HookError::Malformed(_)));
    let xml = signed("<a/>").content_type("text/xml");
    assert!(matches!(
        receive(source().as_ref(), &xml),
        Err(HookError::UnsupportedMediaType(_))
    ));
}

#[test]
fn an_empty_body_is_a_ping_and_other_event_types_are_custom() {
    assert_eq!(
        receive(source().as_ref(), &signed("")).unwrap(),
        HookParse::Ping
    );
    let e = one_event(
        source().as_ref(),
        &signed(r#"{"event_id":"x1","event_type":"form_partial_response"}"#),
    );
    assert_eq!(e.event_type.as_str(), "custom");
    assert_eq!(data_str(&e, "vendor_event"), "form_partial_response");
}

#[test]
fn field_mappings_must_name_contact_fields() {
    let Err(errors) = crate::build(
        "typeform",
        &json!({"secret_env": "S", "fields": {"org": "organisation"}}),
        &|_| Some("x".into()),
    ) else {
        panic!()
    };
    assert_eq!(errors[0].field, "fields.org");
}

/// A response with long-text answers.
#[test]
fn the_largest_documented_request_fits() {
    let mut body: serde_json::Value =
        serde_json::from_str(&fixture("typeform_form_response.json")).unwrap();
    let answers = body["form_response"]["answers"].as_array_mut().unwrap();
    for i in 0..20 {
        answers.push(json!({"type": "text", "text": long_text(10_000),
                            "field": {"id": format!("long{i}"), "type": "long_text", "ref": format!("long_{i}")}}));
    }
    let body = body.to_string();
    assert_largest_fits(source().as_ref(), &signed(&body), 1);
}

/// Typeform's partial responses (`event_types: {form_response_partial: true}`
/// on the webhook, "Create or update webhook") carry a `form_response` too:
/// stored, with the respondent, but not as a submitted form.
#[test]
fn a_partial_response_is_custom_with_the_respondent() {
    let mut body: serde_json::Value =
        serde_json::from_str(&fixture("typeform_form_response.json")).unwrap();
    body["event_type"] = json!("form_response_partial");
    let body = body.to_string();
    let e = one_event(source().as_ref(), &signed(&body));
    assert_eq!(e.event_type.as_str(), "custom");
    assert_eq!(data_str(&e, "vendor_event"), "form_response_partial");
    assert!(e.contact.email.is_some(), "{:?}", e.contact);
}
