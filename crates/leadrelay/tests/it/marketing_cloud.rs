//! Salesforce Marketing Cloud end to end: form POST → leadrelay → the fake
//! tenant's journey entries and data extension rows.

use std::time::Duration;

use leadrelay::store::DeliveryState;
use leadrelay_fakes::marketing_cloud::{FakeMarketingCloud, MarketingCloudConfig};
use serde_json::json;

use crate::support::{CRM_FORM, TestApp, lead};

const WAIT: Duration = Duration::from_secs(30);

async fn start(fake: &FakeMarketingCloud, extra: &str) -> TestApp {
    let toml = format!(
        r#"{CRM_FORM}
[destinations.mc]
connector = "marketing_cloud"
auth_base_url = "{}"
allow_private_networks = true
account_id = "514000123"
event_definition_key = "APIEvent-leadrelay-welcome"
data_extension_key = "Leads"
purposes = ["crm"]
timeout = "2s"
{extra}

[destinations.mc.mapping.row]
Score = "data.tier"

[[routes]]
name = "mc"
destinations = ["mc"]
"#,
        fake.base_url()
    );
    TestApp::builder(&toml)
        .env("MC_CLIENT_ID", MarketingCloudConfig::CLIENT_ID)
        .env("MC_CLIENT_SECRET", MarketingCloudConfig::CLIENT_SECRET)
        .start()
        .await
}

#[tokio::test]
async fn a_form_post_enters_the_journey_and_upserts_a_data_extension_row() {
    let fake = FakeMarketingCloud::start(MarketingCloudConfig::default())
        .await
        .unwrap();
    let app = start(&fake, "").await;
    let mut l = lead("Jane@Acme.io");
    l["tier"] = json!("42");
    assert_eq!(app.post_json("/v1/forms/contact", &l).await.status(), 202);
    let d = app.settled("mc", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Delivered, "{d:?}");

    let rows = fake.rows("Leads");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["ContactKey"], "jane@acme.io", "{rows:?}");
    assert_eq!(rows[0]["Email"], "jane@acme.io");
    assert_eq!(rows[0]["FirstName"], "Test");
    assert_eq!(rows[0]["Score"], "42");
    let entries = fake.journey_entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].event_definition_key,
        "APIEvent-leadrelay-welcome"
    );
    assert_eq!(entries[0].contact_key, "jane@acme.io");
    assert_eq!(entries[0].data["Email"], "jane@acme.io");

    // The token is reused; once it has expired, a 401 refreshes it once.
    app.post_json("/v1/forms/contact", &lead("second@acme.io"))
        .await;
    app.settled("mc", 2, WAIT).await;
    assert_eq!(fake.tokens_issued(), 1);
    fake.expire_tokens();
    app.post_json("/v1/forms/contact", &lead("third@acme.io"))
        .await;
    let d = app.settled("mc", 3, WAIT).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    assert_eq!(fake.tokens_issued(), 2);
    assert_eq!(fake.rows("Leads").len(), 3);
    assert_eq!(fake.journey_entries().len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_row_the_data_extension_refuses_dead_letters_alone_with_the_reason() {
    let fake = FakeMarketingCloud::start(MarketingCloudConfig::default())
        .await
        .unwrap();
    let app = start(&fake, "batch_size = 50").await;
    // Hold deliveries so the three share one rowset call.
    app.store
        .pause_destination(
            "mc",
            chrono::Utc::now() + chrono::Duration::milliseconds(1500),
            "test",
        )
        .await
        .unwrap();
    let mut bad = lead("bad@acme.io");
    bad["tier"] = json!("a lot");
    app.post_json("/v1/forms/contact", &lead("ok1@acme.io"))
        .await;
    app.post_json("/v1/forms/contact", &bad).await;
    app.post_json("/v1/forms/contact", &lead("ok2@acme.io"))
        .await;
    let d = app.settled("mc", 3, WAIT).await;
    let dead: Vec<_> = d
        .iter()
        .filter(|d| d.state == DeliveryState::Dead)
        .collect();
    assert_eq!(dead.len(), 1, "{d:?}");
    let reason = dead[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("Marketing Cloud HTTP 400") && reason.contains("Score"),
        "{reason}"
    );
    let keys: Vec<String> = fake
        .rows("Leads")
        .iter()
        .map(|r| r["ContactKey"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, vec!["ok1@acme.io", "ok2@acme.io"]);
    // Only the delivered ones entered the journey.
    assert_eq!(fake.journey_entries().len(), 2);
    let rowsets: Vec<u16> = fake
        .requests()
        .entries()
        .iter()
        .filter(|r| r.path.ends_with("/rowset"))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        rowsets,
        vec![400, 200, 400, 200],
        "one batch, then row by row"
    );
    app.stop().await;
}

#[tokio::test]
async fn wrong_credentials_or_business_unit_dead_letter_as_rejected_credentials() {
    let fake = FakeMarketingCloud::start(MarketingCloudConfig {
        account_id: "999".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let app = start(&fake, "").await;
    app.post_json("/v1/forms/contact", &lead("x@acme.io")).await;
    let d = app.settled("mc", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Dead);
    let reason = d[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("credentials rejected") && reason.contains("account_id"),
        "{reason}"
    );
    assert!(fake.rows("Leads").is_empty());
    app.stop().await;
}
