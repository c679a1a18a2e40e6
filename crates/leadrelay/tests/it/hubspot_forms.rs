//! HubSpot form submissions and marketing events read into leadrelay: a
//! HubSpot destination's `read.forms` and `read.marketing_events` make
//! `form.submitted` and `marketing_event.*` events about the contact, and a
//! Salesforce destination's `campaign_members.forms` /
//! `campaign_members.marketing_events` make them Campaign Members (the
//! seed's "HubSpot Form Submission → Salesforce Campaign Member") — against
//! a fake HubSpot and a fake Salesforce org, on either store.

use std::time::Duration;

use chrono::Utc;
use leadrelay::connectors::hubspot::read;
use leadrelay::store::{DeliveryState, EventFilter, Role};
use leadrelay_fakes::hubspot::FakeHubSpot;
use leadrelay_fakes::salesforce::FakeSalesforce;
use leadrelay_model::Event;
use serde_json::json;

use crate::admin::key;
use crate::hubspot_read::{
    fakes_with_campaign, internal_error, lead_id, members, rounds_of, start,
};
use crate::support::{TestApp, eventually};
use crate::sync::{hubspot_toml, roomy_hubspot, salesforce_toml};

const WAIT: Duration = Duration::from_secs(30);

/// The events from HubSpot whose type starts with `prefix`, oldest first.
async fn events(app: &TestApp, prefix: &str) -> Vec<Event> {
    let f = EventFilter {
        origin_name: Some("hubspot".into()),
        ..Default::default()
    };
    let mut out: Vec<Event> = app
        .store
        .list_events(&f, None, 1000)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.event_type.as_str().starts_with(prefix))
        .collect();
    out.reverse();
    out
}

fn email(e: &Event) -> String {
    e.contact
        .email
        .as_ref()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default()
}

/// Waits for `n` more whole rounds: one GET of the form's definition each.
async fn form_rounds(hs: &FakeHubSpot, form: &str, n: usize) {
    rounds_of(hs, &format!("/marketing/v3/forms/{form}"), n).await;
}

/// HubSpot reading `read` every 100 ms; what it reads routed to Salesforce,
/// written under legitimate interest (HubSpot reports no consent).
fn with_salesforce(hs: &FakeHubSpot, sf: &FakeSalesforce, read: &str, campaigns: &str) -> String {
    let sf_toml = salesforce_toml(&sf.base_url()).replace(
        "purposes = [\"crm\"]",
        "purposes = [\"crm\"]\nlegal_basis = \"legitimate_interest\"",
    );
    let rest = format!(
        r#"
[destinations.hubspot.read]
{read}
interval = "100ms"

[destinations.salesforce.campaign_members]
{campaigns}

[[routes]]
name = "hubspot_reads"
events = ["form.submitted", "marketing_event.*"]
sources = ["hubspot"]
destinations = ["salesforce"]
"#
    );
    [hubspot_toml(&hs.base_url()), sf_toml, rest].concat()
}

#[tokio::test]
async fn form_submissions_become_events_and_salesforce_campaign_members() {
    let (hs, sf, campaign) = fakes_with_campaign("Spring Webinar").await;
    let form = hs.create_form("Webinar signup");
    let days = |n: i64| Utc::now() - chrono::Duration::days(n);
    // Older than `form_history` (30 days): not read.
    hs.submit_form_at(
        &form,
        &[("email", "old@acme.io")],
        "https://acme.io/w",
        days(40),
    )
    .unwrap();
    let ann = hs
        .submit_form_at(
            &form,
            &[
                ("email", "ann@acme.io"),
                ("firstname", "Ann"),
                ("lastname", "Lee"),
                ("jobtitle", "CTO"),
                ("interests", "crm"),
                ("interests", "sync"),
            ],
            "https://acme.io/webinar?utm_source=newsletter&utm_campaign=spring",
            days(2),
        )
        .unwrap();
    // Nobody to name: no event.
    hs.submit_form_at(
        &form,
        &[("firstname", "Anon")],
        "https://acme.io/w",
        days(1),
    )
    .unwrap();
    let text = with_salesforce(
        &hs,
        &sf,
        &format!("forms = [\"{form}\"]"),
        "forms = { \"Webinar signup\" = \"Spring Webinar\" }",
    );
    let app = start(&text, None).await;

    let d = app.settled("salesforce", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Delivered, "{d:?}");
    let got = events(&app, "form.").await;
    assert_eq!(got.len(), 1, "{got:?}");
    let e = &got[0];
    assert_eq!(email(e), "ann@acme.io");
    assert_eq!(e.contact.first_name.as_deref(), Some("Ann"));
    assert_eq!(e.contact.title.as_deref(), Some("CTO"));
    assert_eq!(e.data["form_id"], json!(form));
    assert_eq!(e.data["form_name"], json!("Webinar signup"));
    assert_eq!(e.data["conversion_id"], json!(ann));
    assert_eq!(e.data["fields"]["interests"], json!(["crm", "sync"]));
    assert_eq!(e.attribution.param("utm_source"), Some("newsletter"));
    assert!((e.occurred_at - days(2)).num_seconds().abs() < 2, "{e:?}");
    // The golden contact has it, and Salesforce a lead in the campaign.
    let contact = app
        .store
        .find_contact_by_email("ann@acme.io")
        .await
        .unwrap()
        .expect("golden contact");
    assert_eq!(e.contact_id, Some(contact.id));
    let ann_lead = lead_id(&sf, "ann@acme.io");
    assert_eq!(members(&sf), vec![(campaign.clone(), ann_lead)]);

    // A new submission, then one an integration backdated by an hour
    // (behind the newest seen, inside `form_lookback`): both arrive once.
    hs.submit_form(&form, &[("email", "bob@acme.io")], "https://acme.io/w")
        .unwrap();
    form_rounds(&hs, &form, 2).await;
    hs.submit_form_at(
        &form,
        &[("email", "cat@acme.io")],
        "https://acme.io/w",
        Utc::now() - chrono::Duration::hours(1),
    )
    .unwrap();
    let d = app.settled("salesforce", 3, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    form_rounds(&hs, &form, 3).await;
    let mut who: Vec<String> = events(&app, "form.").await.iter().map(email).collect();
    who.sort();
    assert_eq!(who, ["ann@acme.io", "bob@acme.io", "cat@acme.io"]);
    assert_eq!(members(&sf).len(), 3);
    let h = read::health(&app.store, "hubspot").await.expect("health");
    assert!(h.errors.is_empty(), "{h:?}");
    app.stop().await;
}

#[tokio::test]
async fn many_submissions_are_paged_stored_once_and_survive_failures_and_lost_state() {
    let hs = roomy_hubspot().await;
    let form = hs.create_form("Contact us");
    let now = Utc::now();
    for i in 0..120 {
        let at = now - chrono::Duration::minutes(60 * 24 * 10 - i * 100);
        let email = format!("p{i}@acme.io");
        hs.submit_form_at(&form, &[("email", &email)], "https://acme.io/c", at)
            .unwrap();
    }
    let text = format!(
        "{}\n[destinations.hubspot.read]\nforms = [\"{form}\"]\ninterval = \"100ms\"\n",
        hubspot_toml(&hs.base_url())
    );
    let app = start(&text, None).await;
    eventually("120 submissions stored", WAIT, || async {
        (events(&app, "form.").await.len() == 120).then_some(())
    })
    .await;
    // Three pages (the fake refuses a `limit` over 50, as HubSpot does).
    let path = format!("/form-integrations/v1/submissions/forms/{form}");
    assert!(
        hs.requests()
            .entries()
            .iter()
            .filter(|r| r.path == path && r.status == 200)
            .count()
            >= 3
    );

    // HubSpot answers three requests with a 500 while a submission
    // arrives: the round records the error and stores nothing; the next one
    // stores it once.
    hs.faults().push(internal_error(), 3);
    hs.submit_form(&form, &[("email", "late@acme.io")], "https://acme.io/c")
        .unwrap();
    let h = eventually("a failed round is recorded", WAIT, || async {
        read::health(&app.store, "hubspot")
            .await
            .filter(|h| !h.errors.is_empty())
    })
    .await;
    assert!(h.errors.contains_key(&format!("form:{form}")), "{h:?}");
    eventually("the late one stored", WAIT, || async {
        (events(&app, "form.").await.len() == 121).then_some(())
    })
    .await;

    // What the reader recorded is lost (as a crash before recording it
    // would): it reads the whole history again and stores nothing twice.
    let stopped = app.stop().await;
    let app = start(&text, Some(stopped)).await;
    app.store
        .kv_set(&format!("hubspot_read:hubspot:form:{form}"), "{}")
        .await
        .unwrap();
    form_rounds(&hs, &form, 3).await;
    let all = events(&app, "form.").await;
    assert_eq!(all.len(), 121);
    let mut ids: Vec<_> = all
        .iter()
        .map(|e| e.data["conversion_id"].clone())
        .collect();
    ids.sort_by_key(|v| v.to_string());
    ids.dedup();
    assert_eq!(ids.len(), 121);
    // A deleted form is an error of that form, not of the round.
    assert!(hs.delete_form(&form));
    let h = eventually("the deleted form is reported", WAIT, || async {
        read::health(&app.store, "hubspot").await.filter(|h| {
            h.errors
                .get(&format!("form:{form}"))
                .is_some_and(|e| e.contains("404"))
        })
    })
    .await;
    assert_eq!(h.errors.len(), 1, "{h:?}");
    // The API and the dashboard show it (errors by what failed, no email).
    let admin = key(&app, "ops", Role::Admin).await;
    let syncs = app.get_json("/api/v1/syncs", &admin).await;
    let reads = &syncs["reads"][0];
    assert_eq!(reads["destination"], "hubspot");
    assert_eq!(reads["forms"], 1);
    let why = reads["health"]["errors"][format!("form:{form}")]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("404"), "{syncs}");
    let viewer = crate::dashboard::Ui::new(&app, Role::Viewer, "look").await;
    let (status, page) = viewer.get("/ui/syncs").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Read from HubSpot") && page.contains(&format!("form:{form}")),
        "{page}"
    );
    assert!(!page.contains("@acme.io"), "{page}");
    app.stop().await;
}

#[tokio::test]
async fn marketing_event_participations_become_events_and_member_statuses() {
    let (hs, sf, campaign) = fakes_with_campaign("Launch Webinar").await;
    // The campaign's own member statuses, as an admin adds them.
    for label in ["Registered", "Attended"] {
        sf.seed(
            "CampaignMemberStatus",
            json!({"CampaignId": campaign, "Label": label}),
        );
    }
    let ann = hs.seed(
        "contacts",
        &[("email", "ann@acme.io"), ("firstname", "Ann")],
    );
    let nobody = hs.seed("contacts", &[("firstname", "Nobody")]);
    let event = hs.create_marketing_event("Launch Webinar", "zoom-123");
    let t0 = Utc::now() - chrono::Duration::hours(3);
    assert!(hs.set_participation(&event, &ann, "REGISTERED", t0));
    assert!(hs.set_participation(&event, &nobody, "REGISTERED", t0));
    let text = with_salesforce(
        &hs,
        &sf,
        &format!("marketing_events = [\"{event}\"]"),
        &format!(
            "marketing_events = {{ \"{event}\" = \"{campaign}\" }}\nmarketing_event_statuses = {{ REGISTERED = \"Registered\", ATTENDED = \"Attended\" }}"
        ),
    );
    let app = start(&text, None).await;
    let d = app.settled("salesforce", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Delivered, "{d:?}");
    let status = || {
        sf.records("CampaignMember")
            .into_iter()
            .map(|m| m.text("Status").unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(status(), ["Registered"]);
    let got = events(&app, "marketing_event.").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].event_type.as_str(), "marketing_event.registered");
    assert_eq!(email(&got[0]), "ann@acme.io");
    assert_eq!(got[0].data["marketing_event_name"], json!("Launch Webinar"));
    assert_eq!(got[0].data["external_event_id"], json!("zoom-123"));

    // Ann attends: a second event, the member's status follows, once.
    assert!(hs.set_participation(&event, &ann, "ATTENDED", Utc::now()));
    let d = app.settled("salesforce", 2, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    assert_eq!(status(), ["Attended"]);
    let path = format!("/marketing/v3/marketing-events/participations/{event}/breakdown");
    let reads = || {
        hs.requests()
            .entries()
            .iter()
            .filter(|r| r.path == path)
            .count()
    };
    let seen = reads();
    eventually("three more rounds", WAIT, || async {
        (reads() >= seen + 3).then_some(())
    })
    .await;
    let types: Vec<String> = events(&app, "marketing_event.")
        .await
        .iter()
        .map(|e| e.event_type.as_str().to_string())
        .collect();
    assert_eq!(
        types,
        ["marketing_event.registered", "marketing_event.attended"]
    );
    assert_eq!(sf.leads().len(), 1);
    assert_eq!(app.deliveries("salesforce").await.len(), 2);
    app.stop().await;
}
