//! Salesforce lead conversion end to end: a qualifying event converts the
//! Lead through the SOAP API's `convertLead()` into a Contact, an Account
//! (merged into the company's existing one) and an Opportunity, once —
//! across a lost answer, a replay, and leads converted in Salesforce.

use std::time::Duration;

use leadrelay::store::{Delivery, DeliveryState};
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::salesforce::{FakeSalesforce, SalesforceConfig};
use serde_json::json;

use crate::crm_salesforce::start;
use crate::support::{TestApp, full_lead, ingest_event};

const WAIT: Duration = Duration::from_secs(30);

const CONVERSION: &str = r#"
[destinations.salesforce.lead_conversion]
events = ["contact.updated"]
stages = ["SQL"]
opportunity_name = "New business"
"#;

/// A `contact.updated` naming the lead's new status.
async fn at_stage(app: &TestApp, email: &str, status: &str) {
    ingest_event(
        &app.store,
        "contact.updated",
        email,
        json!({ "lead_status": status }),
        &["salesforce"],
    )
    .await;
}

/// Every delivery ended delivered.
fn all_delivered(d: &[Delivery]) {
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
}

fn soap_calls(fake: &FakeSalesforce) -> usize {
    fake.requests()
        .entries()
        .iter()
        .filter(|r| r.path.starts_with("/services/Soap/u/"))
        .count()
}

#[tokio::test]
async fn a_qualified_lead_is_converted_once_across_a_lost_answer_and_a_replay() {
    let fake = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    // The company is a customer already: the lead is merged into its Account.
    let acme = fake.seed("Account", json!({"Name": "Acme"}));
    let app = start(&fake, CONVERSION).await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("kim@acme.io", "Kim", "Lee", "Acme", "Call me"),
    )
    .await;
    app.settled("salesforce", 1, WAIT).await;
    let lead = fake.leads()[0].clone();

    // Not the configured stage: nothing is converted.
    at_stage(&app, "kim@acme.io", "MQL").await;
    app.settled("salesforce", 2, WAIT).await;
    assert_eq!(soap_calls(&fake), 0);
    assert!(fake.contacts().is_empty());

    // SQL: the lead update, the lead, account and contact lookups pass;
    // the conversion is done but answered after the 2 s timeout.
    fake.faults().push(Fault::Delay(Duration::ZERO), 4);
    fake.faults()
        .push(Fault::DelayAnswer(Duration::from_secs(3)), 1);
    at_stage(&app, "kim@acme.io", "SQL").await;
    let d = app.settled("salesforce", 3, WAIT).await;
    all_delivered(&d);
    assert!(
        d.iter().any(|d| d.failures == 1),
        "the late answer made a retry: {d:?}"
    );
    // The fake logs a request when it answers; the late call's client hung
    // up first, so only a second call would be in the log: the retry read
    // the Lead converted and made none.
    assert_eq!(soap_calls(&fake), 0, "the retry did not convert again");
    let contacts = fake.contacts();
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    let contact = &contacts[0];
    assert_eq!(contact.text("Email"), Some("kim@acme.io"));
    assert_eq!(contact.text("AccountId"), Some(acme.as_str()));
    assert_eq!(fake.accounts().len(), 1, "merged into the existing account");
    let opps = fake.opportunities();
    assert_eq!(opps.len(), 1, "{opps:?}");
    assert_eq!(opps[0].text("Name"), Some("New business"));
    assert_eq!(opps[0].text("AccountId"), Some(acme.as_str()));
    let lead = fake.record(&lead.id).unwrap();
    assert_eq!(lead.get("IsConverted"), Some(&json!(true)));
    assert_eq!(lead.text("Status"), Some("Closed - Converted"));
    assert_eq!(lead.text("ConvertedContactId"), Some(contact.id.as_str()));

    // The same stage again (a replay): nothing more is converted, and the
    // reply that follows is logged on the Contact, not the converted Lead.
    at_stage(&app, "kim@acme.io", "SQL").await;
    ingest_event(
        &app.store,
        "reply.received",
        "kim@acme.io",
        json!({"reply_text": "Let's sign."}),
        &["salesforce"],
    )
    .await;
    let d = app.settled("salesforce", 5, WAIT).await;
    all_delivered(&d);
    assert_eq!(soap_calls(&fake), 0);
    assert_eq!(fake.contacts().len(), 1);
    assert_eq!(fake.opportunities().len(), 1);
    let tasks = fake.tasks();
    let reply = tasks
        .iter()
        .find(|t| {
            t.text("Description")
                .is_some_and(|b| b.contains("Let's sign."))
        })
        .expect("the reply's task");
    assert_eq!(reply.text("WhoId"), Some(contact.id.as_str()));
    app.stop().await;
}

#[tokio::test]
async fn a_lead_converted_in_salesforce_is_taken_over_not_converted_again() {
    let fake = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let app = start(&fake, CONVERSION).await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("lou@beta.io", "Lou", "Ray", "Beta", ""),
    )
    .await;
    app.settled("salesforce", 1, WAIT).await;
    let lead = fake.leads()[0].id.clone();
    // A person converts the lead in Salesforce (or a process killed after
    // its conversion never kept the ids).
    let account = fake.seed("Account", json!({"Name": "Beta"}));
    let contact = fake.seed(
        "Contact",
        json!({"LastName": "Ray", "Email": "lou@beta.io", "AccountId": account}),
    );
    assert!(fake.edit(
        &lead,
        json!({"IsConverted": true, "Status": "Closed - Converted", "ConvertedAccountId": account, "ConvertedContactId": contact})
    ));

    at_stage(&app, "lou@beta.io", "SQL").await;
    let d = app.settled("salesforce", 2, WAIT).await;
    all_delivered(&d);
    assert_eq!(soap_calls(&fake), 0, "not converted again");
    assert_eq!(fake.contacts().len(), 1);
    assert!(fake.opportunities().is_empty());
    let ids = app
        .store
        .remote_ids("salesforce", std::slice::from_ref(&d[0].contact_key))
        .await
        .unwrap();
    assert!(
        ids.iter().any(|r| r.object == "contact" && r.id == contact),
        "the Contact is kept as the person's: {ids:?}"
    );
    app.stop().await;
}

/// The fake enforces `convertLead()`'s rules as Salesforce answers them:
/// a status that is not a converted one, a converted lead, a session that
/// is not one.
#[tokio::test]
async fn an_invalid_converted_status_dead_letters_with_salesforces_reason() {
    let fake = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let app = start(
        &fake,
        r#"
[destinations.salesforce.lead_conversion]
events = ["contact.updated"]
converted_status = "Qualified"
opportunity = false
"#,
    )
    .await;
    app.post_json(
        "/v1/forms/contact",
        &full_lead("rae@gamma.io", "Rae", "Fox", "Gamma", ""),
    )
    .await;
    app.settled("salesforce", 1, WAIT).await;
    ingest_event(
        &app.store,
        "contact.updated",
        "rae@gamma.io",
        json!({}),
        &["salesforce"],
    )
    .await;
    let d = app.settled("salesforce", 2, WAIT).await;
    let dead = d
        .iter()
        .find(|d| d.state == DeliveryState::Dead)
        .expect("dead-lettered");
    let reason = dead.last_error.clone().unwrap_or_default();
    assert!(
        reason.contains("INVALID_STATUS") && reason.contains("Qualified"),
        "{reason}"
    );
    // The attempt log keeps the SOAP envelope without the session id.
    let attempts = app.store.attempts(dead.id).await.unwrap();
    let sent = attempts
        .iter()
        .filter_map(|a| a.exchange.as_ref())
        .map(|x| x.request_body.clone())
        .find(|b| b.contains("convertLead"))
        .expect("the convertLead request in the attempt log");
    assert!(
        sent.contains("<urn:sessionId>[hidden]</urn:sessionId>")
            && sent.contains("<urn:convertedStatus>Qualified</urn:convertedStatus>"),
        "{sent}"
    );
    assert!(fake.contacts().is_empty());
    app.stop().await;
}
