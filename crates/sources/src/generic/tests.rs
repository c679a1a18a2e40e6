use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, events, hmac_sha256_base64,
    long_text, one_event, receive,
};
use crate::{HookError, HookParse, SourceKind};

const URL: &str = "https://leads.example.com/v1/hooks/zapier";

fn zapier() -> Box<dyn SourceKind> {
    build(
        "generic",
        json!({
            "token_env": "ZAPIER_HOOK_TOKEN",
            "event_type_pointer": "/event",
            "event_type_map": {"new_lead": "lead.created", "demo_booked": "meeting.booked"},
            "external_id_pointer": "/id",
            "occurred_at_pointer": "/created_at",
            "fields": {"email": "/contact/email", "first_name": "/contact/first", "phone": "/contact/phone", "company": "/company"},
            "data": {"plan": "/plan", "utm": "/utm"},
            "default_region": "US"
        }),
        &[("ZAPIER_HOOK_TOKEN", "zap-token")],
    )
}

fn lead() -> String {
    json!({"id": "zap_123", "event": "new_lead", "created_at": "2024-06-10T06:13:20Z",
           "contact": {"email": "Sam@Corp.com", "first": "Sam", "phone": "(415) 555-0123"},
           "company": "Corp", "plan": "pro", "utm": {"source": "ads"}})
    .to_string()
}

#[test]
fn the_mapping_builds_the_event() {
    let req = TestRequest::post(URL, lead()).header("x-leadrelay-token", "zap-token");
    let e = one_event(zapier().as_ref(), &req);
    assert_eq!(e.event_type.as_str(), "lead.created");
    assert_eq!(data_str(&e, "vendor_event"), "new_lead");
    assert_eq!(e.external_id.as_deref(), Some("zap_123"));
    assert_eq!(email_of(&e), "sam@corp.com");
    assert_eq!(e.contact.phone.as_ref().unwrap().as_str(), "+14155550123");
    assert_eq!(e.contact.company.as_deref(), Some("Corp"));
    assert_eq!(data_str(&e, "plan"), "pro");
    assert_eq!(e.data["utm"]["source"], "ads");
    assert_eq!(
        e.occurred_at.unwrap().to_rfc3339(),
        "2024-06-10T06:13:20+00:00"
    );
}

#[test]
fn unmapped_names_are_custom_unless_they_are_leadrelay_types() {
    let req = TestRequest::post(
        &format!("{URL}?token=zap-token"),
        lead().replace("new_lead", "trial_started"),
    );
    let e = one_event(zapier().as_ref(), &req);
    assert_eq!(e.event_type.as_str(), "custom");
    assert_eq!(data_str(&e, "vendor_event"), "trial_started");
    let req = TestRequest::post(
        &format!("{URL}?token=zap-token"),
        lead().replace("new_lead", "form.submitted"),
    );
    assert_eq!(
        one_event(zapier().as_ref(), &req).event_type.as_str(),
        "form.submitted"
    );
}

#[test]
fn batches_and_digests() {
    let source = build(
        "generic",
        json!({"token_env": "T", "event_type": "form.submitted", "events_pointer": "/rows", "fields": {"email": "/email"}}),
        &[("T", "t")],
    );
    let body = json!({"rows": [{"email": "a@x.io"}, {"email": "b@x.io"}, {"email": "b@x.io"}]})
        .to_string();
    let all = events(
        source.as_ref(),
        &TestRequest::post(&format!("{URL}?token=t"), &body),
    );
    assert_eq!(all.len(), 3);
    assert_eq!(
        all[1].external_id, all[2].external_id,
        "identical events share a digest id"
    );
    assert_ne!(all[0].external_id, all[1].external_id);
    let empty = TestRequest::post(&format!("{URL}?token=t"), "{\"rows\": []}");
    assert_eq!(receive(source.as_ref(), &empty).unwrap(), HookParse::Ping);
    let not_array = TestRequest::post(&format!("{URL}?token=t"), "{\"rows\": 1}");
    assert!(
        matches!(receive(source.as_ref(), &not_array), Err(HookError::Malformed(m)) if m.contains("/rows"))
    );
}

#[test]
fn hmac_signatures_in_a_configured_header() {
    let source = build(
        "generic",
        json!({"signature_header": "X-Make-Signature", "signature_secret_env": "MAKE_KEY", "signature_encoding": "base64",
               "signature_prefix": "sha256=", "event_type": "lead.created", "fields": {"email": "/email"}}),
        &[("MAKE_KEY", "make-secret")],
    );
    let body = r#"{"email": "pat@firm.io"}"#;
    let sig = format!(
        "sha256={}",
        hmac_sha256_base64("make-secret", body.as_bytes())
    );
    let good = TestRequest::post(URL, body).header("x-make-signature", &sig);
    assert_eq!(email_of(&one_event(source.as_ref(), &good)), "pat@firm.io");
    let bad = TestRequest::post(URL, body).header("x-make-signature", "sha256=AAAA");
    assert!(matches!(
        receive(source.as_ref(), &bad),
        Err(HookError::Unauthorized(_))
    ));
    let missing = TestRequest::post(URL, body);
    assert!(matches!(
        receive(source.as_ref(), &missing),
        Err(HookError::Unauthorized(_))
    ));
}

#[test]
fn token_failures_malformed_bodies_and_form_posts() {
    assert!(matches!(
        receive(zapier().as_ref(), &TestRequest::post(URL, lead())),
        Err(HookError::Unauthorized(_))
    ));
    let url = format!("{URL}?token=zap-token");
    assert_eq!(
        receive(zapier().as_ref(), &TestRequest::post(&url, "{\"id\":"))
            .unwrap_err()
            .status(),
        400
    );
    let no_name = TestRequest::post(&url, "{\"id\": 1}");
    assert!(
        matches!(receive(zapier().as_ref(), &no_name), Err(HookError::Malformed(m)) if m.contains("/event"))
    );
    let form = TestRequest::post(&url, "event=demo_booked&id=f1")
        .content_type("application/x-www-form-urlencoded");
    assert_eq!(
        one_event(zapier().as_ref(), &form).event_type.as_str(),
        "meeting.booked"
    );
}

#[test]
fn settings_are_validated_with_key_names() {
    let Err(errors) = crate::build(
        "generic",
        &json!({"event_type": "Not Valid", "fields": {"favourite": "/x", "email": "email"}, "signature_header": "x-sig", "data": {"k": "v"}}),
        &|_| None,
    ) else {
        panic!()
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    for expected in [
        "signature_secret_env",
        "event_type",
        "fields.favourite",
        "fields.email",
        "data.k",
    ] {
        assert!(
            fields.contains(&expected),
            "{expected} missing from {fields:?}"
        );
    }
}

/// `events_pointer` arrays are accepted up to 1,000 events.
#[test]
fn the_largest_documented_request_fits() {
    let source = build(
        "generic",
        json!({"token_env": "T", "event_type": "lead.created", "events_pointer": "/rows",
               "fields": {"email": "/email"}}),
        &[("T", "zap-token")],
    );
    let rows: Vec<serde_json::Value> = (0..1000)
        .map(|i| json!({"email": format!("lead{i}@corp.com"), "note": long_text(200)}))
        .collect();
    let req = TestRequest::post(URL, json!({"rows": rows}).to_string())
        .header("x-leadrelay-token", "zap-token");
    assert_largest_fits(source.as_ref(), &req, 1000);
}
