//! Attribution written back to HubSpot end to end: a journey (two touches,
//! a lead, a deal that HubSpot knows, won) rolled up, one
//! `attribution.updated` event delivered to the fake HubSpot, which then
//! holds the configured contact and deal properties — through a 5xx on the
//! first attempt, and written once however often the rollups run.

use std::time::Duration;

use chrono::Utc;
use leadrelay::store::{DeliveryState, IngestItem};
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig, HubSpotProperty};
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
    deal: Option<&str>,
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
        .map(|id| VendorRef {
            system: "hubspot".into(),
            object: "deal".into(),
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
    // A paid-search lead 20 days ago, a nurture email click 10 days ago,
    // the deal opened 5 days ago and won yesterday for 5,000.
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
            Some(&deal),
        ),
        event(
            "deal.stage_changed",
            1,
            None,
            json!({"stage": "won"}),
            Some(&deal),
        ),
    ] {
        app.store.ingest(vec![item]).await.unwrap();
    }
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
