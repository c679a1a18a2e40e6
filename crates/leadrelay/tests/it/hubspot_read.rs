//! HubSpot read into leadrelay: a HubSpot destination's `read` block turns
//! the memberships of its lists into `list.joined` / `list.left` events
//! (the golden contact keeps the names of its lists), and the Salesforce
//! destination's `campaign_members.lists` makes them Campaign Members —
//! against a fake HubSpot and a fake Salesforce org, on either store.

use std::time::Duration;

use leadrelay::connectors::hubspot::read;
use leadrelay::store::{DeliveryState, EventFilter};
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::hubspot::FakeHubSpot;
use leadrelay_fakes::salesforce::{FakeSalesforce, SalesforceConfig, SalesforceConnectedApp};
use leadrelay_model::EventType;
use serde_json::{Value, json};

use crate::support::{TestApp, eventually};
use crate::sync::{hubspot_toml, roomy_hubspot, salesforce_toml};

const WAIT: Duration = Duration::from_secs(30);

/// HubSpot reading `list` every 100 ms; Salesforce making its members
/// members of `campaign`; list events routed from HubSpot to Salesforce.
fn config(hs: &FakeHubSpot, sf: &FakeSalesforce, list: &str, campaign: &str) -> String {
    let rest = format!(
        r#"
[destinations.hubspot.read]
lists = ["{list}"]
interval = "100ms"

[destinations.salesforce.campaign_members]
lists = {{ "{list}" = "{campaign}" }}

[[routes]]
name = "lists"
events = ["list.*"]
sources = ["hubspot"]
destinations = ["salesforce"]
"#
    );
    // A list gives no consent: the org is written under legitimate interest.
    let sf_toml = salesforce_toml(&sf.base_url()).replace(
        "purposes = [\"crm\"]",
        "purposes = [\"crm\"]\nlegal_basis = \"legitimate_interest\"",
    );
    [hubspot_toml(&hs.base_url()), sf_toml, rest].concat()
}

pub(crate) async fn start(config: &str, resume: Option<crate::support::Stopped>) -> TestApp {
    let mut b = TestApp::builder(config)
        .env(
            "HUBSPOT_ACCESS_TOKEN",
            leadrelay_fakes::hubspot::HubSpotConfig::DEFAULT_TOKEN,
        )
        .env("SF_CLIENT_ID", SalesforceConnectedApp::DEFAULT_CLIENT_ID)
        .env(
            "SF_CLIENT_SECRET",
            SalesforceConnectedApp::DEFAULT_CLIENT_SECRET,
        )
        .env("SF_REFRESH_TOKEN", SalesforceConfig::DEFAULT_REFRESH_TOKEN);
    if let Some(s) = resume {
        b = b.resume(s);
    }
    b.start().await
}

/// HubSpot's answer to a request that failed on its side (a 500).
pub(crate) fn internal_error() -> Fault {
    Fault::Status {
        status: 500,
        body: json!({"status": "error", "message": "internal error", "category": "INTERNAL_ERROR"})
            .to_string(),
        headers: vec![],
    }
}

/// A fake HubSpot, a fake Salesforce org and the id of its active
/// campaign `name`.
pub(crate) async fn fakes_with_campaign(name: &str) -> (FakeHubSpot, FakeSalesforce, String) {
    let hs = roomy_hubspot().await;
    let sf = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let campaign = sf.seed("Campaign", json!({"Name": name, "IsActive": true}));
    (hs, sf, campaign)
}

/// The list events stored, oldest first: (type, email, list id).
async fn list_events(app: &TestApp) -> Vec<(String, String, String)> {
    let f = EventFilter {
        origin_name: Some("hubspot".into()),
        ..Default::default()
    };
    let mut out: Vec<(String, String, String)> = app
        .store
        .list_events(&f, None, 1000)
        .await
        .expect("events")
        .into_iter()
        .rev()
        .filter(|e| e.event_type.as_str().starts_with("list."))
        .map(|e| {
            (
                e.event_type.as_str().to_string(),
                e.contact
                    .email
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default(),
                e.data["list_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The golden contact's `hubspot_lists`.
async fn lists_of(app: &TestApp, email: &str) -> Option<Value> {
    app.store
        .find_contact_by_email(email)
        .await
        .expect("contact")
        .and_then(|c| c.data.custom.get(read::LISTS_FIELD).cloned())
}

pub(crate) fn members(sf: &FakeSalesforce) -> Vec<(String, String)> {
    sf.records("CampaignMember")
        .into_iter()
        .map(|m| {
            (
                m.text("CampaignId").unwrap_or_default().to_string(),
                m.text("LeadId").unwrap_or_default().to_string(),
            )
        })
        .collect()
}

pub(crate) fn lead_id(sf: &FakeSalesforce, email: &str) -> String {
    sf.leads()
        .into_iter()
        .find(|l| l.text("Email") == Some(email))
        .map(|l| l.id)
        .unwrap_or_else(|| panic!("no lead {email}"))
}

/// Successful GETs of `path`: the reader's rounds, one GET of each list
/// (form, marketing event) a round.
fn gets(hs: &FakeHubSpot, path: &str) -> usize {
    hs.requests()
        .entries()
        .iter()
        .filter(|r| r.method == "GET" && r.path == path && r.status == 200)
        .count()
}

/// Waits until the reader has made `n` more successful GETs of `path`.
pub(crate) async fn rounds_of(hs: &FakeHubSpot, path: &str, n: usize) {
    let start = gets(hs, path);
    eventually(&format!("{n} more rounds"), WAIT, || async {
        (gets(hs, path) >= start + n).then_some(())
    })
    .await;
}

/// Waits until the reader has finished `n` more whole rounds of `list`.
async fn rounds(hs: &FakeHubSpot, list: &str, n: usize) {
    rounds_of(hs, &format!("/crm/v3/lists/{list}"), n).await;
}

#[tokio::test]
async fn list_memberships_become_events_and_salesforce_campaign_members() {
    let (hs, sf, campaign) = fakes_with_campaign("Spring Webinar").await;
    let ann = hs.seed("contacts", &[("email", "ann@acme.io"), ("lastname", "Ann")]);
    let bob = hs.seed("contacts", &[("email", "bob@acme.io"), ("lastname", "Bob")]);
    // A contact without an email is not recorded (nobody to name).
    let nobody = hs.seed("contacts", &[("firstname", "Nobody")]);
    let list = hs.create_list("Webinar attendees", "MANUAL");
    assert!(hs.add_to_list(&list, &[&ann, &nobody]));
    let text = config(&hs, &sf, &list, &campaign);
    let app = start(&text, None).await;

    // Ann is in the list: one event, one Campaign Member.
    let d = app.settled("salesforce", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Delivered, "{d:?}");
    let ann_lead = lead_id(&sf, "ann@acme.io");
    assert_eq!(members(&sf), vec![(campaign.clone(), ann_lead.clone())]);
    assert_eq!(
        lists_of(&app, "ann@acme.io").await,
        Some(json!(["Webinar attendees"]))
    );
    let h = read::health(&app.store, "hubspot").await.expect("health");
    assert!(h.errors.is_empty(), "{h:?}");

    // Bob joins; Ann leaves: Bob becomes a member, Ann's member is deleted.
    assert!(hs.add_to_list(&list, &[&bob]));
    assert!(hs.remove_from_list(&list, &[&ann]));
    let d = app.settled("salesforce", 3, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    let bob_lead = lead_id(&sf, "bob@acme.io");
    assert_eq!(members(&sf), vec![(campaign.clone(), bob_lead)]);
    assert_eq!(lists_of(&app, "ann@acme.io").await, Some(json!([])));
    assert_eq!(
        lists_of(&app, "bob@acme.io").await,
        Some(json!(["Webinar attendees"]))
    );
    let expected = vec![
        (
            "list.joined".to_string(),
            "ann@acme.io".to_string(),
            list.clone(),
        ),
        (
            "list.joined".to_string(),
            "bob@acme.io".to_string(),
            list.clone(),
        ),
        (
            "list.left".to_string(),
            "ann@acme.io".to_string(),
            list.clone(),
        ),
    ];
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(list_events(&app).await, sorted);
    // Leaving made no second lead for Ann.
    assert_eq!(sf.leads().len(), 2);

    // Restart having lost what the reader recorded (as a crash between
    // storing the events and recording the members would): the list is
    // read again from the start and nothing is stored twice.
    let stopped = app.stop().await;
    let app = start(&text, Some(stopped)).await;
    app.store
        .kv_set(&format!("hubspot_read:hubspot:list:{list}"), "{}")
        .await
        .unwrap();
    rounds(&hs, &list, 3).await;
    assert_eq!(list_events(&app).await, sorted);
    assert_eq!(app.deliveries("salesforce").await.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_failing_hubspot_changes_nothing_and_is_read_again() {
    let (hs, sf, campaign) = fakes_with_campaign("Spring Webinar").await;
    let ann = hs.seed("contacts", &[("email", "ann@acme.io"), ("lastname", "Ann")]);
    let list = hs.create_list("Webinar attendees", "MANUAL");
    assert!(hs.add_to_list(&list, &[&ann]));
    let app = start(&config(&hs, &sf, &list, &campaign), None).await;
    app.settled("salesforce", 1, WAIT).await;

    // The list is emptied while every memberships read fails (a 429, then
    // 500s): nobody leaves on a read that did not finish.
    let throttled = Fault::Status {
        status: 429,
        body: json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.", "errorType": "RATE_LIMIT", "category": "RATE_LIMITS", "policyName": "TEN_SECONDLY_ROLLING"}).to_string(),
        headers: vec![],
    };
    hs.faults().push(throttled, 1);
    hs.faults().push(internal_error(), 5);
    assert!(hs.remove_from_list(&list, &[&ann]));
    let h = eventually("a failed round is recorded", WAIT, || async {
        read::health(&app.store, "hubspot")
            .await
            .filter(|h| !h.errors.is_empty())
    })
    .await;
    assert!(h.errors.contains_key(&list), "{h:?}");
    // Then HubSpot answers again: Ann leaves, once.
    let d = app.settled("salesforce", 2, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    assert!(members(&sf).is_empty());
    rounds(&hs, &list, 2).await;
    let left: Vec<_> = list_events(&app)
        .await
        .into_iter()
        .filter(|(t, _, _)| t == "list.left")
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        app.store
            .list_events(&EventFilter::default(), None, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.event_type != EventType::FormSubmitted)
    );
    app.stop().await;
}

/// A list being re-evaluated (`PROCESSING`) or deleted empties nobody's
/// lists; `leadrelay check` refuses a read block without lists.
#[tokio::test]
async fn a_list_in_processing_or_deleted_makes_nobody_leave() {
    let (hs, sf, campaign) = fakes_with_campaign("Spring Webinar").await;
    let ann = hs.seed("contacts", &[("email", "ann@acme.io"), ("lastname", "Ann")]);
    let list = hs.create_list("Dynamic", "DYNAMIC");
    assert!(hs.add_to_list(&list, &[&ann]));
    let app = start(&config(&hs, &sf, &list, &campaign), None).await;
    app.settled("salesforce", 1, WAIT).await;

    hs.set_list_processing(&list, "PROCESSING");
    assert!(hs.remove_from_list(&list, &[&ann]));
    rounds(&hs, &list, 3).await;
    assert!(hs.delete_list(&list));
    eventually("the deleted list is reported", WAIT, || async {
        read::health(&app.store, "hubspot")
            .await
            .filter(|h| h.errors.get(&list).is_some_and(|e| e.contains("404")))
    })
    .await;
    assert_eq!(list_events(&app).await.len(), 1);
    assert_eq!(members(&sf).len(), 1);
    app.stop().await;

    let bad = config(&hs, &sf, &list, &campaign).replace(
        &format!("lists = [\"{list}\"]"),
        "lists = [\"webinar\"]\nrate_share = 2.0",
    );
    let err = match leadrelay::config::load_str(&bad, "bad.toml", &|_| None) {
        Ok(loaded) => {
            leadrelay::delivery::build_destinations(&loaded.config, &|_| Some("x".into()))
                .err()
                .map(|ps| {
                    ps.iter()
                        .map(|p| format!("{}: {}", p.path, p.message))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default()
        }
        Err(e) => e.to_string(),
    };
    assert!(err.contains("read.lists[0]"), "{err}");
    assert!(err.contains("read.rate_share"), "{err}");
}
