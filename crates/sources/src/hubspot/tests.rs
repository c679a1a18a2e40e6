use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, events, has_ref,
    hmac_sha256_base64, long_text, now, one_event, receive,
};
use crate::{HookError, HookParse, SourceKind};

const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
const URL: &str = "https://leads.example.com/v1/hooks/hubspot";

/// The example body from HubSpot's request-validation docs.
const DOC_BODY: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;

fn source() -> Box<dyn SourceKind> {
    build(
        "hubspot",
        json!({"client_secret_env": "HUBSPOT_CLIENT_SECRET"}),
        &[("HUBSPOT_CLIENT_SECRET", SECRET)],
    )
}

/// Signs as HubSpot documents it: base64(HMAC-SHA256(secret, method + uri + body + timestamp)),
/// where `signed_uri` is the URI after HubSpot's own decoding.
fn signed(url: &str, signed_uri: &str, body: &str, timestamp_ms: i64) -> TestRequest {
    let ts = timestamp_ms.to_string();
    let source = format!("POST{signed_uri}{body}{ts}");
    TestRequest::post(url, body)
        .header(
            "x-hubspot-signature-v3",
            &hmac_sha256_base64(SECRET, source.as_bytes()),
        )
        .header("x-hubspot-request-timestamp", &ts)
        .header("x-hubspot-signature-version", "v3")
}

fn fresh(body: &str) -> TestRequest {
    signed(URL, URL, body, now().timestamp_millis() - 2_000)
}

#[test]
fn documented_creation_event_becomes_lead_created() {
    let e = one_event(source().as_ref(), &fresh(DOC_BODY));
    assert_eq!(e.event_type.as_str(), "lead.created");
    assert_eq!(e.external_id.as_deref(), Some("62515:1"));
    assert!(has_ref(&e, "contact", "123"));
    assert_eq!(e.occurred_at.unwrap().timestamp_millis(), 1_564_113_600_000);
    assert_eq!(data_str(&e, "vendor_event"), "contact.creation");
    assert_eq!(e.data["portal_id"], 62515);
    assert_eq!(data_str(&e, "change_source"), "CRM");
}

#[test]
fn contact_property_change_sets_the_field_and_the_change() {
    let body = r#"[{"eventId":1713946541,"subscriptionId":2281234,"portalId":62515,"appId":54321,"occurredAt":1718000000000,"subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":5101,"propertyName":"email","propertyValue":"Jane.Doe@Acme.io","changeSource":"CRM_UI","sourceId":"userId:45678"},
                   {"eventId":1713946542,"subscriptionId":2281235,"portalId":62515,"appId":54321,"occurredAt":1718000000000,"subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":5101,"propertyName":"lifecyclestage","propertyValue":"marketingqualifiedlead","changeSource":"CRM_UI"}]"#;
    let all = events(source().as_ref(), &fresh(body));
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].event_type.as_str(), "contact.updated");
    assert_eq!(email_of(&all[0]), "jane.doe@acme.io");
    assert_eq!(all[0].changes[0].field, "email");
    assert_eq!(all[0].changes[0].value, "Jane.Doe@Acme.io");
    assert_eq!(all[0].changes[0].previous, None);
    assert!(has_ref(&all[0], "contact", "5101"));
    assert_eq!(all[1].changes[0].field, "lifecyclestage");
    assert_eq!(all[1].changes[0].value, "marketingqualifiedlead");
}

#[test]
fn dealstage_change_becomes_deal_stage_changed_and_other_deal_changes_are_custom() {
    let body = r#"[{"eventId":77,"portalId":62515,"occurredAt":1718000000000,"subscriptionType":"deal.propertyChange","objectId":9001,"propertyName":"dealstage","propertyValue":"contractsent","changeSource":"CRM_UI"},
                   {"eventId":78,"portalId":62515,"occurredAt":1718000000000,"subscriptionType":"deal.propertyChange","objectId":9001,"propertyName":"amount","propertyValue":"12000"}]"#;
    let all = events(source().as_ref(), &fresh(body));
    assert_eq!(all[0].event_type.as_str(), "deal.stage_changed");
    assert_eq!(data_str(&all[0], "stage"), "contractsent");
    assert!(has_ref(&all[0], "deal", "9001"));
    assert_eq!(all[1].event_type.as_str(), "custom");
    assert_eq!(data_str(&all[1], "vendor_event"), "deal.propertyChange");
    assert_eq!(all[1].changes[0].field, "amount");
}

#[test]
fn generic_object_subscriptions_use_the_object_type_id() {
    let body = r#"[{"eventId":5,"portalId":1,"occurredAt":1718000000000,"subscriptionType":"object.propertyChange","objectTypeId":"0-3","objectId":42,"propertyName":"dealstage","propertyValue":"closedwon"}]"#;
    let e = one_event(source().as_ref(), &fresh(body));
    assert_eq!(e.event_type.as_str(), "deal.stage_changed");
    assert!(has_ref(&e, "deal", "42"));
}

#[test]
fn a_batch_of_100_becomes_100_events() {
    let items: Vec<_> = (0..100)
        .map(|i| {
            json!({"eventId": 1000 + i, "subscriptionId": 1, "portalId": 62515, "appId": 54321,
                   "occurredAt": 1_718_000_000_000i64, "subscriptionType": "contact.propertyChange",
                   "attemptNumber": 0, "objectId": 500 + i, "propertyName": "firstname", "propertyValue": format!("Name{i}")})
        })
        .collect();
    let body = serde_json::to_string(&items).unwrap();
    let all = events(source().as_ref(), &fresh(&body));
    assert_eq!(all.len(), 100);
    assert_eq!(all[99].external_id.as_deref(), Some("62515:1099"));
    assert_eq!(all[99].contact.first_name.as_deref(), Some("Name99"));
}

#[test]
fn a_retry_has_the_same_external_id() {
    let retry = DOC_BODY.replace("\"attemptNumber\":0", "\"attemptNumber\":3");
    let first = one_event(source().as_ref(), &fresh(DOC_BODY));
    let again = one_event(source().as_ref(), &fresh(&retry));
    assert_eq!(first.external_id, again.external_id);
    assert_eq!(first, again);
}

#[test]
fn the_signed_uri_has_hubspots_decoded_characters() {
    // HubSpot decodes only : / ? @ ! $ ' ( ) * , ; before signing: %20 and %3d (=) stay encoded.
    let url = "https://leads.example.com/v1/hooks/hubspot?from=a%3Ab%2cc&keep=%20x%3d";
    let decoded = "https://leads.example.com/v1/hooks/hubspot?from=a:b,c&keep=%20x%3d";
    assert_eq!(super::signing_uri(url), decoded);
    let req = signed(url, decoded, DOC_BODY, now().timestamp_millis());
    assert!(receive(source().as_ref(), &req).is_ok());
    let signed_raw = signed(url, url, DOC_BODY, now().timestamp_millis());
    assert!(receive(source().as_ref(), &signed_raw).is_err());
}

#[test]
fn wrong_signature_is_401() {
    let req = fresh(DOC_BODY).header("x-hubspot-signature-v3", "c2lnbmF0dXJl");
    let err = receive(source().as_ref(), &req).unwrap_err();
    assert!(matches!(err, HookError::Unauthorized(_)), "{err:?}");
    assert_eq!(err.status(), 401);
    // A body changed after signing fails too.
    let mut tampered = fresh(DOC_BODY);
    tampered.body = DOC_BODY.replace("123", "124").into_bytes();
    assert!(matches!(
        receive(source().as_ref(), &tampered),
        Err(HookError::Unauthorized(_))
    ));
}

#[test]
fn missing_headers_are_401() {
    let req = fresh(DOC_BODY).without_header("x-hubspot-signature-v3");
    assert!(
        matches!(receive(source().as_ref(), &req), Err(HookError::Unauthorized(m)) if m.contains("x-hubspot-signature-v3"))
    );
    let req = fresh(DOC_BODY).without_header("x-hubspot-request-timestamp");
    assert!(matches!(
        receive(source().as_ref(), &req),
        Err(HookError::Unauthorized(_))
    ));
}

#[test]
fn a_timestamp_older_than_five_minutes_is_stale() {
    let req = signed(URL, URL, DOC_BODY, now().timestamp_millis() - 301_000);
    let err = receive(source().as_ref(), &req).unwrap_err();
    assert!(matches!(err, HookError::Stale(_)), "{err:?}");
    assert_eq!((err.status(), err.code()), (401, "stale_timestamp"));
    let tolerant = build(
        "hubspot",
        json!({"client_secret_env": "S", "tolerance": "10m"}),
        &[("S", SECRET)],
    );
    assert!(receive(tolerant.as_ref(), &req).is_ok());
}

#[test]
fn malformed_json_is_400_after_authentication() {
    let err = receive(source().as_ref(), &fresh("[{\"eventId\": ")).unwrap_err();
    assert!(
        matches!(err, HookError::Malformed(ref m) if m.contains("invalid JSON")),
        "{err:?}"
    );
    assert_eq!(err.status(), 400);
    let err = receive(source().as_ref(), &fresh("[1, 2]")).unwrap_err();
    assert!(
        matches!(err, HookError::Malformed(ref m) if m.contains("event 0")),
        "{err:?}"
    );
}

#[test]
fn wrong_content_type_is_415() {
    let req = fresh(DOC_BODY).content_type("application/x-www-form-urlencoded");
    assert_eq!(receive(source().as_ref(), &req).unwrap_err().status(), 415);
}

#[test]
fn an_empty_batch_is_a_ping() {
    assert_eq!(
        receive(source().as_ref(), &fresh("[]")).unwrap(),
        HookParse::Ping
    );
}

#[test]
fn settings_errors_name_the_key() {
    let Err(errors) = crate::build(
        "hubspot",
        &json!({"client_secret_env": "NOPE", "tolerance": "x"}),
        &|_| None,
    ) else {
        panic!()
    };
    assert!(errors.iter().any(|e| e.field == "tolerance"), "{errors:?}");
    let Err(errors) = crate::build("hubspot", &json!({"client_secret_env": "NOPE"}), &|_| None)
    else {
        panic!()
    };
    assert_eq!(errors[0].field, "client_secret_env");
    assert!(errors[0].message.contains("NOPE"));
}

/// HubSpot's largest batch: 100 events in one request.
#[test]
fn the_largest_documented_request_fits() {
    let events: Vec<serde_json::Value> = (0..100)
        .map(|i| json!({"eventId": 1000 + i, "subscriptionId": 12345, "portalId": 62515,
                        "occurredAt": 1564113600000i64, "subscriptionType": "contact.propertyChange",
                        "attemptNumber": 0, "objectId": 123 + i, "changeSource": "CRM",
                        "propertyName": "message", "propertyValue": long_text(4_000), "appId": 54321}))
        .collect();
    let body = serde_json::Value::Array(events).to_string();
    assert_largest_fits(source().as_ref(), &fresh(&body), 100);
}
