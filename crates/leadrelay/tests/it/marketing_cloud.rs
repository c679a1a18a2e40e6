//! Salesforce Marketing Cloud end to end: form POST → leadrelay → the fake
//! tenant's journey entries and data extension rows.

use std::time::Duration;

use leadrelay::store::DeliveryState;
use leadrelay_fakes::marketing_cloud::{
    DeField, FakeMarketingCloud, FieldType, MarketingCloudConfig,
};
use serde_json::json;

use crate::support::{CRM_FORM, TestApp, eventually, lead};

const WAIT: Duration = Duration::from_secs(30);

async fn start(fake: &FakeMarketingCloud, extra: &str) -> TestApp {
    start_with(fake, extra, "").await
}

/// The destination's TOML; `row` adds to `[destinations.mc.mapping.row]`.
fn config(fake: &FakeMarketingCloud, extra: &str, row: &str) -> String {
    format!(
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
{row}

[[routes]]
name = "mc"
destinations = ["mc"]
"#,
        fake.base_url()
    )
}

async fn start_with(fake: &FakeMarketingCloud, extra: &str, row: &str) -> TestApp {
    TestApp::builder(&config(fake, extra, row))
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
    app.hold("mc").await;
    let mut bad = lead("bad@acme.io");
    bad["tier"] = json!("a lot");
    app.post_json("/v1/forms/contact", &lead("ok1@acme.io"))
        .await;
    app.post_json("/v1/forms/contact", &bad).await;
    app.post_json("/v1/forms/contact", &lead("ok2@acme.io"))
        .await;
    app.release("mc", 3).await;
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

/// Holds the destination's deliveries so the next leads share one batch.
#[tokio::test]
async fn a_batch_above_the_threshold_goes_through_the_async_api_and_a_bad_row_dead_letters_alone() {
    let fake = FakeMarketingCloud::start(MarketingCloudConfig {
        pending_polls: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let app = start(
        &fake,
        "batch_size = 100\nasync_above = 5\nasync_poll = \"50ms\"",
    )
    .await;
    app.hold("mc").await;
    for i in 0..8 {
        let mut l = lead(&format!("a{i}@acme.io"));
        l["tier"] = json!(if i == 3 { "lots" } else { "7" });
        app.post_json("/v1/forms/contact", &l).await;
    }
    app.release("mc", 8).await;
    let d = app.settled("mc", 8, WAIT).await;
    let dead: Vec<_> = d
        .iter()
        .filter(|d| d.state == DeliveryState::Dead)
        .collect();
    assert_eq!(dead.len(), 1, "{d:?}");
    assert_eq!(dead[0].contact_key, "email:a3@acme.io");
    let reason = dead[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("Marketing Cloud refused the row") && reason.contains("Score"),
        "{reason}"
    );
    let mut keys: Vec<String> = fake
        .rows("Leads")
        .iter()
        .map(|r| r["ContactKey"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    assert_eq!(keys.len(), 7, "{keys:?}");
    assert!(!keys.contains(&"a3@acme.io".to_string()));
    assert_eq!(fake.async_requests(), 1, "one asynchronous request");
    let paths: Vec<(String, String)> = fake
        .requests()
        .entries()
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert!(
        !paths.iter().any(|(_, p)| p.ends_with("/rowset")),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .filter(|(m, p)| m == "GET" && p.ends_with("/status"))
            .count()
            >= 3,
        "polled until complete: {paths:?}"
    );
    assert!(paths.iter().any(|(_, p)| p.ends_with("/results")));
    // Only the rows Marketing Cloud stored entered the journey.
    assert_eq!(fake.journey_entries().len(), 7);
    app.stop().await;
}

#[tokio::test]
async fn a_missing_column_dead_letter_is_delivered_once_the_column_exists() {
    let fake = FakeMarketingCloud::start(MarketingCloudConfig::default())
        .await
        .unwrap();
    let app = start_with(
        &fake,
        "[delivery.fixable]\ncheck_every = \"200ms\"",
        "Tier = \"data.colour\"",
    )
    .await;
    let mut l = lead("tier@acme.io");
    l["colour"] = json!("gold");
    app.post_json("/v1/forms/contact", &l).await;
    let d = app.settled("mc", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Dead, "{d:?}");
    assert!(
        d[0].reason
            .as_deref()
            .unwrap_or_default()
            .contains("Invalid column name 'Tier'"),
        "{d:?}"
    );
    eventually("the cause is recorded", WAIT, || async {
        let c = app.store.fixable_causes(7).await.unwrap();
        c.iter()
            .any(|c| c.kind == "missing_property" && c.field == "Tier")
            .then_some(())
    })
    .await;
    assert!(fake.rows("Leads").is_empty());
    assert!(fake.add_column("Leads", DeField::new("Tier", FieldType::Text(20))));
    eventually("delivered without a manual replay", WAIT, || async {
        let rows = fake.rows("Leads");
        (rows.len() == 1 && rows[0]["Tier"] == "gold").then_some(())
    })
    .await;
    eventually("the retry is delivered", WAIT, || async {
        let all = app.deliveries("mc").await;
        all.iter()
            .any(|d| d.state == DeliveryState::Delivered)
            .then_some(())
    })
    .await;
    app.stop().await;
}

/// `leadrelay check` reads the data extension's columns (SOAP) and refuses
/// a mapping whose values cannot fit them, naming field and reason.
#[tokio::test]
async fn check_refuses_a_mapping_with_a_wrong_column_type() {
    let fake = FakeMarketingCloud::start(MarketingCloudConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |text: String| {
        let file = dir.path().join("mc.toml");
        std::fs::write(&file, text).unwrap();
        async move {
            let out = tokio::process::Command::new(crate::binary::bin())
                .arg("--config")
                .arg(&file)
                .arg("check")
                .env("MC_CLIENT_ID", MarketingCloudConfig::CLIENT_ID)
                .env("MC_CLIENT_SECRET", MarketingCloudConfig::CLIENT_SECRET)
                .env_remove("LEADRELAY_CONFIG")
                .env_remove("DATABASE_URL")
                .output()
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        }
    };
    let storage = format!(
        "\n[storage]\nurl = \"sqlite://{}\"\n",
        dir.path().join("db.sqlite").display()
    );
    let (code, out) = run(config(
        &fake,
        "",
        "SignedUpAt = { from = \"event.received_at\", transform = \"date\" }",
    ) + &storage)
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("journey entry event APIEvent-leadrelay-welcome found")
            && out.contains("data extension Leads: 7 columns"),
        "{out}"
    );
    let bad = config(
        &fake,
        "",
        "SignedUpAt = \"contact.first_name\"\nNickname = \"contact.first_name\"",
    )
    .replace("Score = \"data.tier\"", "Score = \"contact.email\"");
    let (code, out) = run(bad + &storage).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL mc (marketing_cloud)"), "{out}");
    assert!(
        out.contains(
            "mapping.row.Score: the mapping gives an email address; the column Score is Number"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "mapping.row.SignedUpAt: the mapping gives text; the column SignedUpAt is Date"
        ),
        "{out}"
    );
    assert!(
        out.contains("mapping.row.Nickname: the data extension Leads has no column Nickname"),
        "{out}"
    );
    let (code, out) = run(config(&fake, "", "")
        .replace("APIEvent-leadrelay-welcome", "APIEvent-gone")
        + &storage)
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no event definition APIEvent-gone"), "{out}");
    // check reads; it writes nothing.
    assert!(fake.rows("Leads").is_empty() && fake.journey_entries().is_empty());
}

#[tokio::test]
async fn throttled_calls_wait_for_retry_after_and_deliver() {
    let fake = FakeMarketingCloud::start(MarketingCloudConfig {
        rate_limit: Some((2, Duration::from_secs(2))),
        ..Default::default()
    })
    .await
    .unwrap();
    let app = start(&fake, "").await;
    for i in 0..2 {
        app.post_json("/v1/forms/contact", &lead(&format!("r{i}@acme.io")))
            .await;
    }
    let d = app.settled("mc", 2, Duration::from_secs(60)).await;
    assert!(
        d.iter().all(|d| d.state == DeliveryState::Delivered),
        "{d:?}"
    );
    assert!(
        fake.requests().entries().iter().any(|r| r.status == 429),
        "throttled at least once"
    );
    assert_eq!(fake.rows("Leads").len(), 2);
    app.stop().await;
}
