use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, events, has_ref, long_text,
    receive,
};
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

/// One entry of Woodpecker's documented `prospect_replied` payload
/// (developers.woodpecker.co/docs/webhooks/prospect-replied).
const DOCUMENTED_REPLY: &str = r##"{
  "method": "prospect_replied",
  "prospect": {
    "id": 1234567890, "email": "erlich@bachmanity.com", "first_name": "Erlich", "last_name": "Bachman",
    "company": "Bachmanity", "website": "https://bachmanity.com", "linkedin_url": "https://linkedin.com/erlich-bachman",
    "tags": "#VISIONARY", "title": "CEO", "phone": "+1 987-654-321", "address": "700 Welch Road",
    "city": "Palo Alto", "country": "United States",
    "snippet1": "You are running a successful startup incubator Bachmanity",
    "snippet2": "", "snippet3": "", "snippet4": "", "snippet5": "", "snippet6": "", "snippet7": "", "snippet8": "",
    "snippet9": "", "snippet10": "", "snippet11": "", "snippet12": "", "snippet13": "", "snippet14": "", "snippet15": "",
    "snippet_labels": {"my snippet label": "You are running a successful startup incubator Bachmanity"},
    "industry": "IT", "state": "California", "last_contacted": "2025-03-20T14:32:34+0100", "status": "REPLIED",
    "in_campaign": 2, "emails_sent": 3, "imported": "saasinamerica.csv", "interested": "INTERESTED",
    "campaign_id": 123456, "campaign_name": "SaaS in America", "campaign_email": "jared.dunn@piedpiper.com",
    "campaign_emails": ["jared.dunn@piedpiper.com", "richard.hendricks@piedpiper.com", "jian@bachmanity.com"],
    "campaign_email_sent": 2, "step": 2, "step_type": "EMAIL", "followup_after": "2025-03-22T00:00:00+0100"
  },
  "email": {
    "id": 191867492, "mail_id": 123321, "subject": "Reply message subject", "sender": "Erlich from Bachmanity",
    "email": "erlich@bachmanity.com", "date": "2025-03-21T20:47:40+0100", "message": "reply content"
  },
  "timestamp": "2025-03-21T20:47:47+0100",
  "firm_id": 456789
}"##;

/// The documented reply, for prospect `n` (its own id, address and email id).
pub(crate) fn documented_reply(n: usize) -> serde_json::Value {
    let mut entry: serde_json::Value = serde_json::from_str(DOCUMENTED_REPLY).unwrap();
    let email = format!("erlich{n}@bachmanity.com");
    entry["prospect"]["id"] = json!(1_234_567_890 + n as u64);
    entry["prospect"]["email"] = json!(email);
    entry["email"]["id"] = json!(191_867_492 + n as u64);
    entry["email"]["email"] = json!(email);
    entry
}

/// The event name is in each entry (`method`): a subscription URL without
/// `&event=` still maps, and the reply itself is kept.
#[test]
fn the_documented_body_names_its_event() {
    let url = "https://leads.example.com/v1/hooks/woodpecker?token=wp-token";
    let body = serde_json::Value::Array(vec![documented_reply(0)]).to_string();
    let all = events(source().as_ref(), &TestRequest::post(url, body));
    let e = &all[0];
    assert_eq!(e.event_type.as_str(), "reply.received");
    assert_eq!(data_str(e, "vendor_event"), "prospect_replied");
    assert_eq!(email_of(e), "erlich0@bachmanity.com");
    assert_eq!(e.contact.company.as_deref(), Some("Bachmanity"));
    assert_eq!(data_str(e, "subject"), "Reply message subject");
    assert_eq!(data_str(e, "reply_text"), "reply content");
    assert!(has_ref(e, "prospect", "1234567890") && has_ref(e, "email", "191867492"));
    // Documented names map; a click keeps its link.
    let mut click = documented_reply(1);
    click["method"] = json!("link_clicked");
    click["click_url"] = json!("https://google.com");
    let all = events(
        source().as_ref(),
        &TestRequest::post(url, serde_json::Value::Array(vec![click]).to_string()),
    );
    assert_eq!(all[0].event_type.as_str(), "email.clicked");
    assert_eq!(data_str(&all[0], "link"), "https://google.com");
}

/// Woodpecker's maximum batch: 100 documented replies in one request, one
/// event each, every one distinct.
#[test]
fn a_full_batch_of_100_replies_is_100_events() {
    let batch: Vec<serde_json::Value> = (0..100).map(documented_reply).collect();
    let body = serde_json::Value::Array(batch).to_string();
    let all = events(source().as_ref(), &TestRequest::post(URL, body));
    assert_eq!(all.len(), 100);
    let ids: std::collections::HashSet<_> = all.iter().map(|e| e.external_id.clone()).collect();
    assert_eq!(ids.len(), 100);
    assert_eq!(email_of(&all[99]), "erlich99@bachmanity.com");
}

/// Woodpecker's largest batch, 100 replies, each with a 10 KB reply text.
#[test]
fn the_largest_documented_request_fits() {
    let batch: Vec<serde_json::Value> = (0..100)
        .map(|n| {
            let mut entry = documented_reply(n);
            entry["email"]["message"] = json!(long_text(10_000));
            entry
        })
        .collect();
    let req = TestRequest::post(URL, serde_json::Value::Array(batch).to_string());
    assert_largest_fits(source().as_ref(), &req, 100);
}

/// An entry that names its event but carries no prospect (a campaign-level
/// notification) is kept, without a contact, rather than refusing the batch
/// (Woodpecker retries a refused batch and then unsubscribes the URL).
#[test]
fn a_named_entry_without_a_prospect_keeps_the_batch() {
    let url = "https://leads.example.com/v1/hooks/woodpecker?token=wp-token";
    let campaign = json!({"method": "campaign_completed", "campaign_id": 123456,
                          "campaign_name": "SaaS in America", "timestamp": "2025-03-21T20:47:47+0100"});
    let body = serde_json::Value::Array(vec![documented_reply(0), campaign]).to_string();
    let all = events(source().as_ref(), &TestRequest::post(url, body));
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].event_type.as_str(), "custom");
    assert_eq!(data_str(&all[1], "vendor_event"), "campaign_completed");
    assert!(all[1].contact.email.is_none());
    assert!(has_ref(&all[1], "campaign", "123456"));
    // An unnamed entry without a prospect is still not Woodpecker's.
    let bad = json!([{"timestamp": 1}]).to_string();
    assert_eq!(
        receive(source().as_ref(), &TestRequest::post(url, bad))
            .unwrap_err()
            .status(),
        400
    );
}
