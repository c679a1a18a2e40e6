//! Attribution written back to the CRMs end to end: a journey (two touches,
//! a lead, a deal that the CRM knows, won) rolled up, one
//! `attribution.updated` event delivered to the fake HubSpot, Salesforce or
//! Pipedrive, which then holds the configured person and deal fields —
//! through a 5xx on the first attempt, and written once however often the
//! rollups run. Salesforce also gets Campaign Influence records, never
//! twice when the writeback is delivered again.

use std::time::Duration;

use chrono::Utc;
use leadrelay::store::{DeliveryState, IngestItem};
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig, HubSpotProperty};
use leadrelay_fakes::pipedrive::{FakePipedrive, PipedriveConfig, PipedriveCustomField};
use leadrelay_fakes::salesforce::{
    FakeSalesforce, SalesforceConfig, SalesforceConnectedApp, SalesforceFieldDef,
    SalesforceFieldType,
};
use leadrelay_model::{
    Attribution, ConsentPurpose, ConsentRecord, ContactData, EmailAddress, Event, EventType,
    Origin, VendorRef,
};
use serde_json::{Value, json};

use crate::support::{CRM_FORM, TestApp};

const WAIT: Duration = Duration::from_secs(30);

fn event(
    event_type: &str,
    days_ago: i64,
    utm: Option<(&str, &str, &str)>,
    data: Value,
    deal: Option<(&str, &str, &str)>,
) -> IngestItem {
    let now = Utc::now();
    let mut attribution = Attribution::default();
    if let Some((s, m, c)) = utm {
        attribution.utm_source = Some(s.into());
        attribution.utm_medium = Some(m.into());
        attribution.utm_campaign = Some(c.into());
    }
    let mut e = Event::internal(
        EventType::parse(event_type).unwrap(),
        Origin::source("test"),
        ContactData {
            email: Some(EmailAddress::parse("pat@acme.io").unwrap()),
            first_name: Some("Pat".into()),
            ..Default::default()
        },
        data.as_object().cloned().unwrap_or_default(),
        now,
    );
    e.occurred_at = now - chrono::Duration::days(days_ago);
    e.attribution = attribution;
    e.consent = vec![ConsentRecord {
        purpose: ConsentPurpose::parse("crm").unwrap(),
        granted: true,
        text_version: None,
        recorded_at: now,
    }];
    e.vendor_refs = deal
        .map(|(system, object, id)| VendorRef {
            system: system.into(),
            object: object.into(),
            id: id.into(),
        })
        .into_iter()
        .collect();
    IngestItem {
        event: e,
        destinations: Vec::new(),
        idempotency: None,
    }
}

#[tokio::test]
async fn a_won_deal_writes_its_attribution_to_the_hubspot_contact_and_deal_once() {
    let mut hs = HubSpotConfig::default();
    for (object, name) in [
        ("contacts", "lr_first_channel"),
        ("contacts", "lr_first_campaign"),
        ("contacts", "lr_last_campaign"),
        ("deals", "lr_attributed_channel"),
        ("deals", "lr_attributed_campaign"),
        ("deals", "lr_attributed_revenue"),
        ("deals", "lr_model"),
    ] {
        hs.custom_properties
            .push(HubSpotProperty::text(object, name));
    }
    let fake = FakeHubSpot::start(hs).await.unwrap();
    let deal = fake.seed(
        "deals",
        &[
            ("dealname", "Acme"),
            ("dealstage", "appointmentscheduled"),
            ("pipeline", "default"),
        ],
    );
    let config = format!(
        r#"{CRM_FORM}
[destinations.hubspot]
connector = "hubspot"
base_url = "{}"
allow_private_networks = true
token_env = "HUBSPOT_ACCESS_TOKEN"
purposes = ["crm"]
timeout = "2s"
[destinations.hubspot.attribution.contact]
lr_first_channel = "first_touch_channel"
lr_first_campaign = "first_touch_campaign"
lr_last_campaign = "last_touch_campaign"
[destinations.hubspot.attribution.deal]
lr_attributed_channel = "attributed_channel"
lr_attributed_campaign = "attributed_campaign"
lr_attributed_revenue = "attributed_revenue"
lr_model = "attribution_model"

[reports]
rollup_lag = "0s"
rollup_interval = "50ms"
rollup_batch = 2
[reports.writeback]
destinations = ["hubspot"]
model = "w_shaped"
"#,
        fake.base_url()
    );
    let app = TestApp::builder(&config)
        .env("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)
        .start()
        .await;
    // The first attempt meets a 502 (two: the first request of a delivery
    // is the account details read, which tolerates one): the retry writes
    // the same values.
    fake.faults().push(
        Fault::Status {
            status: 502,
            body: "bad gateway".into(),
            headers: vec![],
        },
        2,
    );
    journey(&app, ("hubspot", "deal", &deal)).await;
    app.settled("hubspot", 1, WAIT).await;
    let all = app.deliveries("hubspot").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].state, DeliveryState::Delivered, "{all:?}");
    assert!(all[0].attempts >= 2, "the 502 was retried: {all:?}");

    // W-shaped: the lead's touch is first touch and lead creation (30 + 30
    // %), the email click led to the opportunity (30 %), the remaining 10 %
    // split between the two: 65 % paid search, 35 % email.
    let c = fake.contact_by_email("pat@acme.io").unwrap();
    assert_eq!(c.get("lr_first_channel"), Some("paid_search"));
    assert_eq!(c.get("lr_first_campaign"), Some("spring"));
    assert_eq!(c.get("lr_last_campaign"), Some("nurture"));
    let d = fake.record("deals", &deal).unwrap();
    assert_eq!(d.get("lr_attributed_channel"), Some("paid_search"));
    assert_eq!(d.get("lr_attributed_campaign"), Some("spring"));
    assert_eq!(d.get("lr_attributed_revenue"), Some("3250"));
    assert_eq!(d.get("lr_model"), Some("w_shaped"));
    // The deal is updated in place, never a new one.
    assert_eq!(fake.deals().len(), 1);

    // Later passes (and reports, which catch up first) store nothing more.
    let before = fake.requests().entries().len();
    let rc = leadrelay::reports::ReportsConfig {
        rollup_lag: leadrelay::config::HumanDuration::secs(0),
        writeback: leadrelay::reports::config::WritebackConfig {
            destinations: vec!["hubspot".into()],
            model: "w_shaped".into(),
        },
        ..Default::default()
    };
    for _ in 0..3 {
        leadrelay::reports::rollup::catch_up(app.store.as_ref(), &rc, Utc::now())
            .await
            .unwrap();
    }
    assert_eq!(app.deliveries("hubspot").await.len(), 1);
    assert_eq!(fake.requests().entries().len(), before);
    app.stop().await;
}

/// A paid-search lead 20 days ago, a nurture email click 10 days ago, the
/// deal (`deal`: system, object, id) opened 5 days ago and won yesterday
/// for 5,000.
async fn journey(app: &TestApp, deal: (&str, &str, &str)) {
    for item in [
        event(
            "lead.created",
            20,
            Some(("google", "cpc", "spring")),
            json!({}),
            None,
        ),
        event(
            "email.clicked",
            10,
            Some(("newsletter", "email", "nurture")),
            json!({}),
            None,
        ),
        event(
            "deal.stage_changed",
            5,
            None,
            json!({"stage": "qualified", "amount": 5000}),
            Some(deal),
        ),
        event(
            "deal.stage_changed",
            1,
            None,
            json!({"stage": "won"}),
            Some(deal),
        ),
    ] {
        app.store.ingest(vec![item]).await.unwrap();
    }
}

const REPORTS: &str = r#"
[reports]
rollup_lag = "0s"
rollup_interval = "50ms"
rollup_batch = 2
[reports.writeback]
destinations = ["crm"]
model = "w_shaped"
"#;

/// Later rollup passes store no second writeback for the won deal.
async fn later_passes_store_nothing(app: &TestApp) {
    let rc = leadrelay::reports::ReportsConfig {
        rollup_lag: leadrelay::config::HumanDuration::secs(0),
        writeback: leadrelay::reports::config::WritebackConfig {
            destinations: vec!["crm".into()],
            model: "w_shaped".into(),
        },
        ..Default::default()
    };
    for _ in 0..3 {
        leadrelay::reports::rollup::catch_up(app.store.as_ref(), &rc, Utc::now())
            .await
            .unwrap();
    }
    assert_eq!(app.deliveries("crm").await.len(), 1);
}

/// The delivered writeback sent again (a replay, or a writeback of the same
/// deal delivered twice): a new event with the same data.
async fn send_again(app: &TestApp) {
    let first = app.deliveries("crm").await;
    let mut e = app
        .store
        .get_event(first[0].event_id)
        .await
        .unwrap()
        .unwrap();
    e.id = leadrelay_model::new_id();
    app.store
        .ingest(vec![IngestItem {
            event: e,
            destinations: vec!["crm".into()],
            idempotency: None,
        }])
        .await
        .unwrap();
    let all = app.settled("crm", 2, WAIT).await;
    assert!(
        all.iter().all(|d| d.state == DeliveryState::Delivered),
        "{all:?}"
    );
}

fn bad_gateway() -> Fault {
    Fault::Status {
        status: 502,
        body: "bad gateway".into(),
        headers: vec![],
    }
}

#[tokio::test]
async fn a_won_deal_writes_its_attribution_and_campaign_influence_to_salesforce_once() {
    let mut sf = SalesforceConfig::default();
    for (object, name) in [
        ("Contact", "LR_First_Channel__c"),
        ("Contact", "LR_First_Campaign__c"),
        ("Contact", "LR_Last_Campaign__c"),
        ("Opportunity", "LR_Attributed_Campaign__c"),
        ("Opportunity", "LR_Model__c"),
    ] {
        sf.custom_fields
            .push((object.into(), SalesforceFieldDef::text(name, name, 255)));
    }
    sf.custom_fields.push((
        "Opportunity".into(),
        SalesforceFieldDef::new(
            "LR_Attributed_Revenue__c",
            "LR Attributed Revenue",
            SalesforceFieldType::Currency,
        ),
    ));
    let fake = FakeSalesforce::start(sf).await.unwrap();
    let contact = fake.seed(
        "Contact",
        json!({"FirstName": "Pat", "LastName": "Lee", "Email": "pat@acme.io"}),
    );
    let opp = fake.seed(
        "Opportunity",
        json!({"Name": "Acme", "StageName": "Qualification", "CloseDate": "2026-12-31"}),
    );
    // The spring campaign has ended (inactive): its influence still counts.
    let spring = fake.seed("Campaign", json!({"Name": "spring", "IsActive": false}));
    let nurture = fake.seed("Campaign", json!({"Name": "nurture", "IsActive": true}));
    let model = fake.seed(
        "CampaignInfluenceModel",
        json!({"DeveloperName": "leadrelay_w_shaped", "MasterLabel": "leadrelay W-shaped"}),
    );
    // Pat is a member of the nurture campaign already (sent the emails).
    fake.seed(
        "CampaignMember",
        json!({"CampaignId": nurture, "ContactId": contact, "Status": "Sent"}),
    );
    let config = format!(
        r#"{CRM_FORM}
[destinations.crm]
connector = "salesforce"
login_url = "{}"
allow_private_networks = true
client_id_env = "SF_CLIENT_ID"
client_secret_env = "SF_CLIENT_SECRET"
refresh_token_env = "SF_REFRESH_TOKEN"
person_object = "Contact"
purposes = ["crm"]
timeout = "2s"
[destinations.crm.attribution.contact]
LR_First_Channel__c = "first_touch_channel"
LR_First_Campaign__c = "first_touch_campaign"
LR_Last_Campaign__c = "last_touch_campaign"
[destinations.crm.attribution.opportunity]
LR_Attributed_Campaign__c = "attributed_campaign"
LR_Attributed_Revenue__c = "attributed_revenue"
LR_Model__c = "attribution_model"
[destinations.crm.attribution.campaign_influence]
model_id = "{model}"
[destinations.crm.attribution.campaign_members]
status = "Responded"
{REPORTS}"#,
        fake.base_url()
    );
    let app = TestApp::builder(&config)
        .env("SF_CLIENT_ID", SalesforceConnectedApp::DEFAULT_CLIENT_ID)
        .env(
            "SF_CLIENT_SECRET",
            SalesforceConnectedApp::DEFAULT_CLIENT_SECRET,
        )
        .env("SF_REFRESH_TOKEN", SalesforceConfig::DEFAULT_REFRESH_TOKEN)
        .start()
        .await;
    // The first attempt meets a 502: the retry writes the same values.
    fake.faults().push(bad_gateway(), 1);
    journey(&app, ("salesforce", "opportunity", &opp)).await;
    let all = app.settled("crm", 1, WAIT).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].state, DeliveryState::Delivered, "{all:?}");
    assert!(all[0].attempts >= 2, "the 502 was retried: {all:?}");

    // The contact Salesforce had is updated in place.
    assert_eq!(fake.contacts().len(), 1);
    let c = fake.record(&contact).unwrap();
    assert_eq!(c.text("LR_First_Channel__c"), Some("paid_search"));
    assert_eq!(c.text("LR_First_Campaign__c"), Some("spring"));
    assert_eq!(c.text("LR_Last_Campaign__c"), Some("nurture"));
    assert_eq!(fake.opportunities().len(), 1);
    let o = fake.record(&opp).unwrap();
    assert_eq!(o.text("LR_Attributed_Campaign__c"), Some("spring"));
    assert_eq!(
        o.get("LR_Attributed_Revenue__c").and_then(Value::as_f64),
        Some(3250.0)
    );
    assert_eq!(o.text("LR_Model__c"), Some("w_shaped"));
    assert_eq!(o.text("StageName"), Some("Qualification"), "left alone");

    // W-shaped: 65 % paid search (spring), 35 % email (nurture).
    let influence = || {
        let mut v: Vec<(String, Option<f64>, String, String, String)> = fake
            .records("CampaignInfluence")
            .into_iter()
            .map(|r| {
                let t = |f: &str| r.text(f).unwrap_or_default().to_string();
                (
                    t("CampaignId"),
                    r.get("Influence").and_then(Value::as_f64),
                    t("OpportunityId"),
                    t("ModelId"),
                    t("ContactId"),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let mut want = vec![
        (
            spring.clone(),
            Some(65.0),
            opp.clone(),
            model.clone(),
            contact.clone(),
        ),
        (
            nurture.clone(),
            Some(35.0),
            opp.clone(),
            model.clone(),
            contact.clone(),
        ),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(influence(), want);
    // Pat joined the spring campaign; the nurture membership is kept as it was.
    let members = || {
        let mut v: Vec<(String, String, String)> = fake
            .records("CampaignMember")
            .into_iter()
            .map(|r| {
                let t = |f: &str| r.text(f).unwrap_or_default().to_string();
                (t("CampaignId"), t("ContactId"), t("Status"))
            })
            .collect();
        v.sort();
        v
    };
    let mut want_members = vec![
        (spring.clone(), contact.clone(), "Responded".to_string()),
        (nurture.clone(), contact.clone(), "Sent".to_string()),
    ];
    want_members.sort();
    assert_eq!(members(), want_members);

    later_passes_store_nothing(&app).await;
    // Delivered again: the records are found, none is added or changed.
    let posts = |fake: &FakeSalesforce| {
        fake.requests()
            .entries()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/sobjects/CampaignInfluence"))
            .count()
    };
    let before = posts(&fake);
    send_again(&app).await;
    assert_eq!(influence(), want);
    assert_eq!(members(), want_members);
    assert_eq!(posts(&fake), before);
    assert_eq!(fake.contacts().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_won_deal_writes_its_attribution_to_the_pipedrive_person_and_deal_once() {
    const FIRST_CHANNEL: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
    const LAST_CAMPAIGN: &str = "1111111111222222222233333333334444444444";
    const DEAL_CAMPAIGN: &str = "abcdefabcdefabcdefabcdefabcdefabcdefabcd";
    const DEAL_REVENUE: &str = "9999999999888888888877777777776666666666";
    // Pipedrive refuses deal custom field keys the company does not have.
    let deal_field = |key: &str, field_type: &str| PipedriveCustomField {
        object: "deal".into(),
        key: key.into(),
        name: format!("LR {key}"),
        field_type: field_type.into(),
    };
    let fake = FakePipedrive::start(PipedriveConfig {
        burst_limit: 10_000,
        search_burst_limit: 10_000,
        daily_token_budget: 10_000_000,
        custom_fields: vec![
            deal_field(DEAL_CAMPAIGN, "varchar"),
            deal_field(DEAL_REVENUE, "double"),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let person = fake.seed_person("Pat Lee", Some("pat@acme.io"));
    let deal = fake.seed_deal("Acme", 1);
    let other = fake.seed_deal("Another deal of Pat", 1);
    let config = format!(
        r#"{CRM_FORM}
[destinations.crm]
connector = "pipedrive"
base_url = "{}"
allow_private_networks = true
token_env = "PIPEDRIVE_API_TOKEN"
purposes = ["crm"]
timeout = "2s"
[destinations.crm.attribution.person]
{FIRST_CHANNEL} = "first_touch_channel"
"custom_fields.{LAST_CAMPAIGN}" = "last_touch_campaign"
[destinations.crm.attribution.deal]
{DEAL_CAMPAIGN} = "attributed_campaign"
{DEAL_REVENUE} = "attributed_revenue"
{REPORTS}"#,
        fake.base_url()
    );
    let app = TestApp::builder(&config)
        .env("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN)
        .start()
        .await;
    fake.faults().push(bad_gateway(), 1);
    let deal_id = deal.to_string();
    journey(&app, ("pipedrive", "deal", &deal_id)).await;
    let all = app.settled("crm", 1, WAIT).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].state, DeliveryState::Delivered, "{all:?}");
    assert!(all[0].attempts >= 2, "the 502 was retried: {all:?}");

    let persons = fake.persons();
    assert_eq!(persons.len(), 1, "the person is updated, not created");
    let p = &persons[0];
    assert_eq!(p.id, person);
    assert_eq!(
        p.custom_fields.get(FIRST_CHANNEL),
        Some(&json!("paid_search"))
    );
    assert_eq!(p.custom_fields.get(LAST_CAMPAIGN), Some(&json!("nurture")));
    let deals = fake.deals();
    assert_eq!(deals.len(), 2, "no deal opened");
    let d = deals.iter().find(|d| d.id == deal).unwrap();
    assert_eq!(d.custom_fields.get(DEAL_CAMPAIGN), Some(&json!("spring")));
    assert_eq!(d.custom_fields.get(DEAL_REVENUE), Some(&json!(3250)));
    let o = deals.iter().find(|d| d.id == other).unwrap();
    assert!(o.custom_fields.is_empty(), "only the won deal: {o:?}");

    later_passes_store_nothing(&app).await;
    send_again(&app).await;
    assert_eq!(fake.persons().len(), 1);
    assert_eq!(fake.deals().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn attribution_sections_are_checked_per_crm() {
    for (connector, extra, path_) in [
        (
            "salesforce",
            "[destinations.crm.attribution.deal]\nX__c = \"revenue\"",
            "attribution.deal",
        ),
        (
            "salesforce",
            "[destinations.crm.attribution.lead]\nX__c = \"revenue\"",
            "attribution.lead",
        ),
        (
            "salesforce",
            "[destinations.crm.attribution.campaign_influence]\nmodel = \"x\"",
            "attribution.campaign_influence.model_id",
        ),
        (
            "salesforce",
            "[destinations.crm.attribution.campaign_members]\nstatus = \"\"",
            "attribution.campaign_members.status",
        ),
        (
            "pipedrive",
            "[destinations.crm.attribution.person]\nlr_channel = \"first_touch_channel\"",
            "attribution.person.lr_channel",
        ),
        (
            "pipedrive",
            "[destinations.crm.attribution.contact]\nabcdefabcdefabcdefabcdefabcdefabcdefabcd = \"revenue\"",
            "attribution.contact",
        ),
    ] {
        let person_object = if connector == "salesforce" {
            "person_object = \"Contact\"\n"
        } else {
            ""
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leadrelay.toml");
        std::fs::write(
            &path,
            format!("[destinations.crm]\nconnector = \"{connector}\"\n{person_object}{extra}\n"),
        )
        .unwrap();
        let (code, out, err) =
            crate::binary::run(&["check", "--offline", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{connector} {extra}: {out}{err}");
        assert!(
            err.contains(&format!("destinations.crm.{path_}")),
            "{connector} {extra}: {path_} in {err}"
        );
    }
}

/// `leadrelay check` (online) against a fake org: the attribution fields and
/// the Campaign Influence model must exist.
fn check_salesforce(
    fake: &FakeSalesforce,
    db: &crate::support::TestDb,
    model: &str,
) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = crate::binary::write_config(
        dir.path(),
        db,
        &format!(
            r#"{CRM_FORM}
[destinations.crm]
connector = "salesforce"
login_url = "{}"
allow_private_networks = true
person_object = "Contact"
purposes = ["crm"]
timeout = "2s"
[destinations.crm.attribution.contact]
LR_First_Channel__c = "first_touch_channel"
[destinations.crm.attribution.opportunity]
LR_Model__c = "attribution_model"
[destinations.crm.attribution.campaign_influence]
model_id = "{model}"
"#,
            fake.base_url()
        ),
    );
    let out = std::process::Command::new(crate::binary::bin())
        .args(["check", "--config", path.to_str().unwrap()])
        .env_remove("LEADRELAY_CONFIG")
        .env_remove("DATABASE_URL")
        .env(
            "SALESFORCE_CLIENT_ID",
            SalesforceConnectedApp::DEFAULT_CLIENT_ID,
        )
        .env(
            "SALESFORCE_CLIENT_SECRET",
            SalesforceConnectedApp::DEFAULT_CLIENT_SECRET,
        )
        .env(
            "SALESFORCE_REFRESH_TOKEN",
            SalesforceConfig::DEFAULT_REFRESH_TOKEN,
        )
        .output()
        .expect("run leadrelay");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_missing_salesforce_attribution_fields_and_influence_model() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::support::TestDb::create(dir.path()).await;
    // The org has neither the fields nor the model.
    let bare = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let (code, out) =
        tokio::task::block_in_place(|| check_salesforce(&bare, &db, "03V5e000000NoneEAA"));
    assert_eq!(code, 1, "{out}");
    for want in [
        "Contact.LR_First_Channel__c",
        "Opportunity.LR_Model__c",
        "CampaignInfluenceModel 03V5e000000NoneEAA",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }

    // Without Customizable Campaign Influence the model cannot be read.
    let off = FakeSalesforce::start(SalesforceConfig {
        campaign_influence: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let (code, out) =
        tokio::task::block_in_place(|| check_salesforce(&off, &db, "03V5e000000NoneEAA"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is Customizable Campaign Influence enabled?"),
        "{out}"
    );

    // All there: ok.
    let mut sf = SalesforceConfig::default();
    sf.custom_fields.push((
        "Contact".into(),
        SalesforceFieldDef::text("LR_First_Channel__c", "LR First Channel", 255),
    ));
    sf.custom_fields.push((
        "Opportunity".into(),
        SalesforceFieldDef::text("LR_Model__c", "LR Model", 255),
    ));
    let full = FakeSalesforce::start(sf).await.unwrap();
    let model = full.seed(
        "CampaignInfluenceModel",
        json!({"DeveloperName": "leadrelay", "MasterLabel": "leadrelay"}),
    );
    let (code, out) = tokio::task::block_in_place(|| check_salesforce(&full, &db, &model));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("WARNING: CampaignInfluenceModel"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_pipedrive_attribution_keys_the_company_lacks() {
    const CHANNEL: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
    const CAMPAIGN: &str = "abcdefabcdefabcdefabcdefabcdefabcdefabcd";
    let dir = tempfile::tempdir().unwrap();
    let db = crate::support::TestDb::create(dir.path()).await;
    let field = |object: &str, key: &str| PipedriveCustomField {
        object: object.into(),
        key: key.into(),
        name: format!("LR {key}"),
        field_type: "varchar".into(),
    };
    let run = |fake: &FakePipedrive| {
        let path = crate::binary::write_config(
            dir.path(),
            &db,
            &format!(
                r#"{CRM_FORM}
[destinations.crm]
connector = "pipedrive"
base_url = "{}"
allow_private_networks = true
purposes = ["crm"]
timeout = "2s"
[destinations.crm.attribution.person]
{CHANNEL} = "first_touch_channel"
[destinations.crm.attribution.deal]
"custom_fields.{CAMPAIGN}" = "attributed_campaign"
"#,
                fake.base_url()
            ),
        );
        let out = std::process::Command::new(crate::binary::bin())
            .args(["check", "--config", path.to_str().unwrap()])
            .env_remove("LEADRELAY_CONFIG")
            .env_remove("DATABASE_URL")
            .env("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN)
            .output()
            .expect("run leadrelay");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // The person field exists; the deal's key is a person field's, not a deal's.
    let partial = FakePipedrive::start(PipedriveConfig {
        custom_fields: vec![field("person", CHANNEL), field("person", CAMPAIGN)],
        ..Default::default()
    })
    .await
    .unwrap();
    let (code, out) = tokio::task::block_in_place(|| run(&partial));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "no such custom field in the company: attribution.deal.custom_fields.{CAMPAIGN}"
        )),
        "{out}"
    );
    let full = FakePipedrive::start(PipedriveConfig {
        custom_fields: vec![field("person", CHANNEL), field("deal", CAMPAIGN)],
        ..Default::default()
    })
    .await
    .unwrap();
    let (code, out) = tokio::task::block_in_place(|| run(&full));
    assert_eq!(code, 0, "{out}");
}
