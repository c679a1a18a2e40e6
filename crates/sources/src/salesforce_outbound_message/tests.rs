use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, events, fixture, has_ref,
    long_text, receive,
};
use crate::{HookError, HookParse, SourceKind};

const URL: &str = "https://leads.example.com/v1/hooks/salesforce?token=sf-token-1";

fn source() -> Box<dyn SourceKind> {
    build(
        "salesforce_outbound_message",
        json!({"organization_id": "00D000000000062", "token_env": "SF_OM_TOKEN"}),
        &[("SF_OM_TOKEN", "sf-token-1")],
    )
}

/// As Salesforce posts it: text/xml with SOAPAction "".
fn delivery(url: &str, body: &str) -> TestRequest {
    TestRequest::post(url, body)
        .content_type("text/xml; charset=utf-8")
        .header("soapaction", "\"\"")
}

#[test]
fn contact_and_opportunity_notifications() {
    let all = events(
        source().as_ref(),
        &delivery(URL, &fixture("salesforce_outbound_contact.xml")),
    );
    assert_eq!(all.len(), 2);
    let c = &all[0];
    assert_eq!(c.event_type.as_str(), "contact.updated");
    assert_eq!(c.external_id.as_deref(), Some("04l000000000001AAA"));
    assert_eq!(email_of(c), "rose.gonzalez@edge.com");
    assert_eq!(c.contact.first_name.as_deref(), Some("Rose"));
    assert_eq!(c.contact.city.as_deref(), Some("Austin"));
    assert_eq!(c.contact.phone.as_ref().unwrap().as_str(), "+15127576000");
    assert!(
        has_ref(c, "contact", "003000000000001AAA") && has_ref(c, "account", "001000000000001AAA")
    );
    assert_eq!(c.data["fields"]["LeadSource"], "Web & Events");
    assert!(
        c.data["fields"].get("Fax").is_none(),
        "nil fields are skipped"
    );
    assert!(
        c.changes.iter().any(|ch| ch.field == "Title"
            && ch.value == "SVP, Procurement"
            && ch.previous.is_none())
    );
    assert_eq!(data_str(c, "organization_id"), "00D000000000062EAA");
    assert_eq!(
        c.occurred_at.unwrap().to_rfc3339(),
        "2024-06-10T06:13:20+00:00"
    );
    assert!(!c.data.contains_key("session_id"));

    let o = &all[1];
    assert_eq!(o.event_type.as_str(), "deal.stage_changed");
    assert_eq!(data_str(o, "stage"), "Negotiation/Review");
    assert!(has_ref(o, "opportunity", "006000000000001AAA"));
    assert!(o.changes.iter().any(|ch| ch.field == "StageName"));
}

#[test]
fn the_acknowledgement_is_the_soap_ack() {
    let s = source();
    let parsed = receive(
        s.as_ref(),
        &delivery(URL, &fixture("salesforce_outbound_contact.xml")),
    )
    .unwrap();
    let ack = s.acknowledge(&parsed);
    assert_eq!((ack.status, ack.content_type), (200, "text/xml"));
    assert!(ack.body.contains("<Ack>true</Ack>") && ack.body.contains("notificationsResponse"));
    let root = crate::xml::parse(ack.body.as_bytes()).unwrap();
    assert_eq!(
        root.child("Body")
            .unwrap()
            .child("notificationsResponse")
            .unwrap()
            .child_text("Ack"),
        Some("true")
    );
}

#[test]
fn another_org_is_401() {
    let body = fixture("salesforce_outbound_contact.xml")
        .replace("00D000000000062EAA", "00D000000000063EAA");
    let err = receive(source().as_ref(), &delivery(URL, &body)).unwrap_err();
    assert!(
        matches!(err, HookError::Unauthorized(ref m) if m.contains("OrganizationId")),
        "{err:?}"
    );
    // The 18-character form of the configured org is accepted, as is a configured 18-character id.
    let eighteen = build(
        "salesforce_outbound_message",
        json!({"organization_id": "00D000000000062EAA"}),
        &[],
    );
    assert!(
        receive(
            eighteen.as_ref(),
            &delivery(URL, &fixture("salesforce_outbound_contact.xml"))
        )
        .is_ok()
    );
    // The 15-character id is case-sensitive.
    let lower = fixture("salesforce_outbound_contact.xml")
        .replace("00D000000000062EAA", "00d000000000062EAA");
    assert!(matches!(
        receive(eighteen.as_ref(), &delivery(URL, &lower)),
        Err(HookError::Unauthorized(_))
    ));
}

#[test]
fn a_missing_or_wrong_token_is_401() {
    let body = fixture("salesforce_outbound_contact.xml");
    let no_token = delivery("https://leads.example.com/v1/hooks/salesforce", &body);
    assert!(matches!(
        receive(source().as_ref(), &no_token),
        Err(HookError::Unauthorized(_))
    ));
    let wrong = delivery(
        "https://leads.example.com/v1/hooks/salesforce?token=nope",
        &body,
    );
    assert!(matches!(
        receive(source().as_ref(), &wrong),
        Err(HookError::Unauthorized(_))
    ));
}

#[test]
fn a_retry_has_the_same_external_ids() {
    let body = fixture("salesforce_outbound_contact.xml");
    let a = events(source().as_ref(), &delivery(URL, &body));
    let b = events(source().as_ref(), &delivery(URL, &body));
    assert_eq!(a, b);
}

#[test]
fn malformed_xml_dtds_and_wrong_types_are_rejected() {
    for body in [
        "<soapenv:Envelope><soapenv:Body>",
        "{\"not\": \"xml\"}",
        "<Envelope><Body></Body></Envelope>",
        r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><Envelope><Body><notifications><OrganizationId>&e;</OrganizationId></notifications></Body></Envelope>"#,
        "<Envelope><Body><notifications><OrganizationId>&bogus;</OrganizationId></notifications></Body></Envelope>",
    ] {
        let err = receive(source().as_ref(), &delivery(URL, body)).unwrap_err();
        assert!(matches!(err, HookError::Malformed(_)), "{body}: {err:?}");
        assert_eq!(err.status(), 400);
    }
    let json_type =
        delivery(URL, &fixture("salesforce_outbound_contact.xml")).content_type("application/json");
    assert_eq!(
        receive(source().as_ref(), &json_type).unwrap_err().status(),
        415
    );
}

#[test]
fn a_message_without_notifications_is_a_ping() {
    let body = r#"<Envelope><Body><notifications><OrganizationId>00D000000000062EAA</OrganizationId></notifications></Body></Envelope>"#;
    assert_eq!(
        receive(source().as_ref(), &delivery(URL, body)).unwrap(),
        HookParse::Ping
    );
}

#[test]
fn org_ids_are_validated() {
    assert_eq!(super::checksum_suffix("00D000000000062"), "EAA");
    for bad in [
        "00D00000000006",
        "001000000000062",
        "00D000000000062XYZ",
        "00D00000000006!",
    ] {
        let Err(errors) = crate::build(
            "salesforce_outbound_message",
            &json!({"organization_id": bad}),
            &|_| None,
        ) else {
            panic!("{bad} accepted")
        };
        assert_eq!(errors[0].field, "organization_id", "{bad}");
    }
}

/// Salesforce's largest message: 100 notifications ("A single SOAP message can
/// include up to 100 notifications"), each a Contact with a long description.
#[test]
fn the_largest_documented_request_fits() {
    let doc = fixture("salesforce_outbound_contact.xml");
    let start = doc.find("<Notification>").unwrap();
    let end = doc.find("</Notification>").unwrap() + "</Notification>".len();
    let one = &doc[start..end];
    let all: String = (0..100)
        .map(|i| {
            one.replace("04l000000000001AAA", &format!("04l0000000{i:05}AAA"))
                .replace(
                    "<sf:LeadSource>",
                    &format!(
                        "<sf:Description>{}</sf:Description><sf:LeadSource>",
                        long_text(10_000)
                    ),
                )
        })
        .collect();
    let body = format!(
        "{}{}{}",
        &doc[..start],
        all,
        &doc[doc.rfind("</Notification>").unwrap() + "</Notification>".len()..]
    );
    assert_largest_fits(source().as_ref(), &delivery(URL, &body), 100);
}

#[test]
fn tasks_and_events_are_logged_sales_activities_of_their_person() {
    let body = fixture("salesforce_outbound_contact.xml").replace(
        r#"<sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>003000000000001AAA</sf:Id>"#,
        r#"<sObject xsi:type="sf:Task" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>00T000000000001AAA</sf:Id>
     <sf:WhoId>00Q000000000007AAA</sf:WhoId>
     <sf:Subject>Call</sf:Subject>"#,
    );
    let all = events(source().as_ref(), &delivery(URL, &body));
    let t = &all[0];
    assert_eq!(t.event_type.as_str(), "activity.logged");
    assert!(has_ref(t, "lead", "00Q000000000007AAA"));
    assert!(has_ref(t, "task", "00T000000000001AAA"));
    // A contact's Event.
    let body = body
        .replace("sf:Task", "sf:Event")
        .replace("00Q000000000007AAA", "003000000000009AAA");
    let e = &events(source().as_ref(), &delivery(URL, &body))[0];
    assert_eq!(e.event_type.as_str(), "activity.logged");
    assert!(has_ref(e, "contact", "003000000000009AAA"));
}
