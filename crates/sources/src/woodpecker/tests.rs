use serde_json::json;

use crate::testutil::{TestRequest, build, data_str, email_of, events, has_ref, receive};
use crate::{HookError, SourceKind};

const URL: &str =
    "https://leads.example.com/v1/hooks/woodpecker?token=wp-token&event=prospect_replied";

fn source() -> Box<dyn SourceKind> {
    build(
        "woodpecker",
        json!({"token_env": "WOODPECKER_TOKEN"}),
        &[("WOODPECKER_TOKEN", "wp-token")],
    )
}

fn batch() -> String {
    json!([
        {"prospect": {"id": 301, "email": "Ola@Firma.pl", "first_name": "Ola", "last_name": "Nowak", "company": "Firma",
                      "title": "CTO", "phone": "+48 22 123 45 67", "website": "firma.pl", "city": "Warsaw", "state": "Mazowieckie",
                      "country": "Poland", "campaign_id": 9, "campaign_name": "PL outbound", "status": "REPLIED", "tags": "#vip"},
         "timestamp": "2024-06-10T06:13:20+0200"},
        {"prospect": {"id": 302, "email": "not-an-email", "first_name": "Jan", "campaign_id": 9, "campaign_name": "PL outbound"},
         "timestamp": "2024-06-10T06:14:00+0200"}
    ])
    .to_string()
}

#[test]
fn a_batch_becomes_one_event_per_prospect() {
    let all = events(source().as_ref(), &TestRequest::post(URL, batch()));
    assert_eq!(all.len(), 2);
    let e = &all[0];
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(email_of(e), "ola@firma.pl");
    assert_eq!(e.contact.title.as_deref(), Some("CTO"));
    assert_eq!(e.contact.region.as_deref(), Some("Mazowieckie"));
    assert!(has_ref(e, "prospect", "301") && has_ref(e, "campaign", "9"));
    assert_eq!(data_str(e, "campaign_name"), "PL outbound");
    // Vendors are authoritative about events: an invalid email keeps the event.
    assert!(all[1].contact.email.is_none());
    assert_eq!(data_str(&all[1], "invalid_email"), "not-an-email");
    assert_ne!(all[0].external_id, all[1].external_id);
}

#[test]
fn the_event_comes_from_the_url_and_retries_dedupe() {
    let url = URL.replace("prospect_replied", "prospect_interested");
    let a = events(source().as_ref(), &TestRequest::post(&url, batch()));
    assert_eq!(a[0].event_type.as_str(), "custom");
    assert_eq!(data_str(&a[0], "vendor_event"), "prospect_interested");
    let b = events(source().as_ref(), &TestRequest::post(&url, batch()));
    assert_eq!(a[0].external_id, b[0].external_id);
}

#[test]
fn wrong_token_is_401_and_bad_bodies_400() {
    let wrong = TestRequest::post(
        "https://leads.example.com/v1/hooks/woodpecker?token=no",
        batch(),
    );
    assert!(matches!(
        receive(source().as_ref(), &wrong),
        Err(HookError::Unauthorized(_))
    ));
    for body in ["[{", "[{\"timestamp\": 1}]", "\"text\""] {
        assert_eq!(
            receive(source().as_ref(), &TestRequest::post(URL, body))
                .unwrap_err()
                .status(),
            400,
            "{body}"
        );
    }
}
