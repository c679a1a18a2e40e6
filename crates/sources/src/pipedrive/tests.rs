use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, fixture, has_ref, long_text,
    one_event, receive,
};
use crate::{HookError, HookParse, SourceKind};

const URL: &str = "https://leads.example.com/v1/hooks/pipedrive";

fn source() -> Box<dyn SourceKind> {
    build(
        "pipedrive",
        json!({"http_auth_user": "pipedrive", "http_auth_password_env": "PIPEDRIVE_HOOK_PASSWORD"}),
        &[("PIPEDRIVE_HOOK_PASSWORD", "correct horse")],
    )
}

/// As Pipedrive sends it: `Authorization: Basic base64(user:password)`.
fn delivery(body: &str) -> TestRequest {
    let credentials = STANDARD.encode("pipedrive:correct horse");
    TestRequest::post(URL, body).header("authorization", &format!("Basic {credentials}"))
}

#[test]
fn a_person_change_is_a_contact_update_with_field_changes() {
    let e = one_event(
        source().as_ref(),
        &delivery(&fixture("pipedrive_v2_person_change.json")),
    );
    assert_eq!(e.event_type.as_str(), "contact.updated");
    assert_eq!(
        e.external_id.as_deref(),
        Some("7c1f5e2a-9b3d-4e8f-a6c2-1d4b8e9f0a37")
    );
    assert_eq!(email_of(&e), "anna.schmidt@kunde.de");
    assert_eq!(e.contact.first_name.as_deref(), Some("Anna"));
    assert_eq!(e.contact.title.as_deref(), Some("Head of Sales"));
    assert_eq!(e.contact.phone.as_ref().unwrap().as_str(), "+4930901820");
    assert!(has_ref(&e, "person", "12") && has_ref(&e, "organization", "2"));
    let title = e.changes.iter().find(|c| c.field == "job_title").unwrap();
    assert_eq!(
        (&title.value, &title.previous),
        (&json!("Head of Sales"), &Some(json!("Sales Manager")))
    );
    let tier = e
        .changes
        .iter()
        .find(|c| c.field == "custom_fields.b1c4f0d3e5a7")
        .unwrap();
    assert_eq!(
        (&tier.value, &tier.previous),
        (&json!("Enterprise"), &Some(json!("SMB")))
    );
    assert!(e.changes.iter().all(|c| c.field != "update_time"));
    assert_eq!(
        e.occurred_at.unwrap().to_rfc3339(),
        "2024-06-10T06:13:20.754+00:00"
    );
}

#[test]
fn a_deal_stage_change_is_deal_stage_changed() {
    let e = one_event(
        source().as_ref(),
        &delivery(&fixture("pipedrive_v2_deal_stage.json")),
    );
    assert_eq!(e.event_type.as_str(), "deal.stage_changed");
    assert_eq!(e.data["stage_id"], 3);
    assert_eq!(e.data["previous_stage_id"], 2);
    assert_eq!(e.changes.len(), 1);
    assert_eq!(e.changes[0].field, "stage_id");
    assert!(has_ref(&e, "deal", "1") && has_ref(&e, "person", "12"));
    // Other deal changes are custom.
    let other = fixture("pipedrive_v2_deal_stage.json")
        .replace("\"stage_id\": 2", "\"title\": \"Old title\"");
    let e = one_event(source().as_ref(), &delivery(&other));
    assert_eq!(e.event_type.as_str(), "custom");
    assert_eq!(data_str(&e, "vendor_event"), "change.deal");
}

#[test]
fn new_persons_are_new_leads_and_v1_bodies_are_read() {
    let v1 = r#"{"v":1,"matches_filters":{"current":[]},"meta":{"v":1,"action":"added","object":"person","id":10,"company_id":1234567890,"user_id":1234567890,"host":"subdomain.pipedrive.com","timestamp":1739826941,"timestamp_micro":1739826941509060,"permitted_user_ids":[1234567890],"trans_pending":false,"is_bulk_update":false,"pipedrive_service_name":false,"webhook_id":"1234567890"},"current":{"id":10,"name":"Person Name","first_name":"Person","last_name":"Name","email":[{"value":"person@example.com","primary":true}],"phone":[{"value":"","primary":true}],"org_id":null,"owner_id":1234567890},"previous":null,"retry":0,"event":"added.person"}"#;
    let e = one_event(source().as_ref(), &delivery(v1));
    assert_eq!(e.event_type.as_str(), "lead.created");
    assert_eq!(email_of(&e), "person@example.com");
    assert!(e.external_id.as_deref().unwrap().starts_with("sha256:"));
    let retry = v1.replace("\"retry\":0", "\"retry\":1");
    assert_eq!(
        one_event(source().as_ref(), &delivery(&retry)).external_id,
        e.external_id
    );
}

#[test]
fn a_retry_has_the_same_external_id() {
    let body = fixture("pipedrive_v2_person_change.json");
    let retry = body.replace("\"attempt\": 1", "\"attempt\": 2");
    let a = one_event(source().as_ref(), &delivery(&body));
    let b = one_event(source().as_ref(), &delivery(&retry));
    assert_eq!(a.external_id, b.external_id);
}

#[test]
fn wrong_or_missing_credentials_are_401() {
    let body = fixture("pipedrive_v2_person_change.json");
    let wrong = TestRequest::post(URL, &body).header(
        "authorization",
        &format!("Basic {}", STANDARD.encode("pipedrive:wrong horse")),
    );
    assert!(matches!(
        receive(source().as_ref(), &wrong),
        Err(HookError::Unauthorized(_))
    ));
    let missing = TestRequest::post(URL, &body);
    assert_eq!(
        receive(source().as_ref(), &missing).unwrap_err().status(),
        401
    );
}

#[test]
fn malformed_bodies_are_400() {
    assert_eq!(
        receive(source().as_ref(), &delivery("{\"meta\": {"))
            .unwrap_err()
            .status(),
        400
    );
    let err = receive(source().as_ref(), &delivery("{\"data\": {}}")).unwrap_err();
    assert!(matches!(err, HookError::Malformed(m) if m.contains("meta")));
    assert_eq!(
        receive(source().as_ref(), &delivery("  ")).unwrap(),
        HookParse::Ping
    );
}

#[test]
fn settings_are_checked() {
    let Err(errors) = crate::build(
        "pipedrive",
        &json!({"http_auth_user": "a:b", "http_auth_password_env": "P"}),
        &|_| None,
    ) else {
        panic!()
    };
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["http_auth_user", "http_auth_password_env"]);
}

#[test]
fn the_largest_documented_request_fits() {
    let mut body: serde_json::Value =
        serde_json::from_str(&fixture("pipedrive_v2_person_change.json")).unwrap();
    body["data"]["custom_fields"]["notes"] = json!({"type": "text", "value": long_text(64 * 1024)});
    let body = body.to_string();
    assert_largest_fits(source().as_ref(), &delivery(&body), 1);
}

#[test]
fn a_new_activity_is_a_logged_sales_activity_of_its_person() {
    // API v2 names the activity's people as participants.
    let v2 = json!({
        "meta": {"action": "create", "entity": "activity", "entity_id": "71", "id": "3f9c1b2e-5a4d-4c3b-9e8f-7a6b5c4d3e2f", "version": "2.0", "timestamp": "2024-06-10T07:00:00.000Z"},
        "data": {"id": 71, "subject": "Intro call", "type": "call", "done": true, "deal_id": 1, "owner_id": 5,
                 "participants": [{"person_id": 12, "primary": true}]},
        "previous": null
    });
    let e = one_event(source().as_ref(), &delivery(&v2.to_string()));
    assert_eq!(e.event_type.as_str(), "activity.logged");
    assert!(has_ref(&e, "person", "12") && has_ref(&e, "activity", "71"));
    // API v1: `person_id` on the activity itself.
    let v1 = r#"{"v":1,"meta":{"v":1,"action":"added","object":"activity","id":72,"timestamp":1739826941},"current":{"id":72,"subject":"Demo","type":"meeting","person_id":13},"previous":null,"event":"added.activity"}"#;
    let e = one_event(source().as_ref(), &delivery(v1));
    assert_eq!(e.event_type.as_str(), "activity.logged");
    assert!(has_ref(&e, "person", "13"));
}
