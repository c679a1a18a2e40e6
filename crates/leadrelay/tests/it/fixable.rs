//! Fixable dead letters: leads refused for a cause a person fixes in the
//! destination are retried by themselves once it is fixed; permanent
//! refusals stay dead.

use std::time::Duration;

use leadrelay::store::DeliveryState;
use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig, HubSpotProperty};
use serde_json::json;

use crate::admin::{session_cookie, sign_in};
use crate::support::{TestApp, eventually, lead};

const WAIT: Duration = Duration::from_secs(30);

fn config(base: &str, extra: &str) -> String {
    config_checking(base, extra, "200ms")
}

fn config_checking(base: &str, extra: &str, check_every: &str) -> String {
    crate::crm_hubspot::config(
        base,
        &format!("{extra}\n[delivery.fixable]\ncheck_every = \"{check_every}\"\n"),
    )
}

#[tokio::test]
async fn fifty_leads_dead_on_a_missing_property_are_delivered_once_it_exists() {
    let fake = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    let app = TestApp::builder(&config(
        &fake.base_url(),
        "[destinations.hubspot.mapping.contact]\nfavourite_colour = \"data.colour\"\n",
    ))
    .env("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)
    .start()
    .await;
    for i in 0..50 {
        let mut l = lead(&format!("p{i}@colours.io"));
        l["colour"] = json!("red");
        assert_eq!(app.post_json("/v1/forms/contact", &l).await.status(), 202);
    }
    // HubSpot refuses this address (a quoted local part with a space):
    // a permanent refusal, beside the same missing property.
    let mut invalid = lead("\"bad address\"@colours.io");
    invalid["colour"] = json!("red");
    assert_eq!(
        app.post_json("/v1/forms/contact", &invalid).await.status(),
        202
    );
    let d = app.settled("hubspot", 51, WAIT).await;
    assert!(d.iter().all(|d| d.state == DeliveryState::Dead), "{d:?}");
    let bad_id = d
        .iter()
        .find(|d| d.reason.as_deref().unwrap_or("").contains("INVALID_EMAIL"))
        .expect("the invalid address is refused for it")
        .id;

    // One cause holds the 50 (recorded just after each batch's outcome);
    // the invalid address is no fixable cause.
    let causes = eventually("the causes are recorded", WAIT, || async {
        let c = app.store.fixable_causes(7).await.unwrap();
        (c.first().map(|c| c.waiting) == Some(50)).then_some(c)
    })
    .await;
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(causes[0].kind, "missing_property");
    assert_eq!(causes[0].field, "favourite_colour");
    assert_eq!(causes[0].waiting, 50);
    assert!(causes[0].next_retry_at.unwrap() > chrono::Utc::now() + chrono::Duration::hours(23));
    // The dashboard shows the cause, how many it holds and the next try.
    let (key, record) = leadrelay::auth::generate_key("ops", leadrelay::store::Role::Viewer);
    app.store.create_api_key(record).await.unwrap();
    let cookie = session_cookie(&sign_in(&app, &key).await);
    let html = app
        .client
        .get(app.url("/ui/fixable"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let row = html
        .split("<tr>")
        .find(|r| r.contains("favourite_colour"))
        .unwrap_or_else(|| panic!("no row for the cause: {html}"));
    assert!(
        row.contains("missing property") && row.contains("<td>50</td>"),
        "{row}"
    );
    assert!(
        html.contains("50 waiting, 0 with their retries used up"),
        "{html}"
    );
    // The connector was asked and the property is still missing: nothing moved.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.deliveries("hubspot").await.len(), 51);

    assert!(fake.add_property(HubSpotProperty::text("contacts", "favourite_colour")));
    eventually("the 50 leads reach HubSpot", WAIT, || async {
        let n = fake
            .contacts()
            .iter()
            .filter(|c| c.get("favourite_colour") == Some("red"))
            .count();
        (n == 50).then_some(())
    })
    .await;
    let all = app.settled("hubspot", 101, WAIT).await;
    assert_eq!(
        all.iter()
            .filter(|d| d.state == DeliveryState::Delivered)
            .count(),
        50
    );
    assert!(
        all.iter()
            .filter(|d| d.state == DeliveryState::Delivered)
            .all(|d| d.replay_of.is_some())
    );
    let bad = app.store.get_delivery(bad_id).await.unwrap().unwrap();
    assert_eq!(bad.state, DeliveryState::Dead);
    assert_eq!(
        bad.replayed_by, None,
        "a permanent refusal is never retried"
    );
    assert!(app.store.fixable_causes(7).await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_changed_configuration_retries_its_fixable_dead_letters_at_start() {
    let fake = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    let mapping = |tier: &str| {
        format!(
            "[destinations.hubspot.mapping.contact]\nlead_tier = {{ from = \"data.tier\", map = {{ b = \"{tier}\" }} }}\n"
        )
    };
    let app = TestApp::builder(&config(&fake.base_url(), &mapping("platinum")))
        .env("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)
        .start()
        .await;
    let mut l = lead("tier@x.io");
    l["tier"] = json!("b");
    app.post_json("/v1/forms/contact", &l).await;
    let d = app.settled("hubspot", 1, WAIT).await;
    assert_eq!(d[0].state, DeliveryState::Dead, "{d:?}");
    let causes = eventually("the cause is recorded", WAIT, || async {
        let c = app.store.fixable_causes(7).await.unwrap();
        (!c.is_empty()).then_some(c)
    })
    .await;
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(
        (causes[0].kind.as_str(), causes[0].value.as_deref()),
        ("invalid_option", Some("platinum"))
    );
    // The portal still lacks the option: the probe leaves it waiting.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.deliveries("hubspot").await.len(), 1);
    let stopped = app.stop().await;

    // The mapping is fixed: the next start retries at once.
    let app = TestApp::builder(&config(&fake.base_url(), &mapping("gold")))
        .env("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)
        .resume(stopped)
        .start()
        .await;
    let all = app.settled("hubspot", 2, WAIT).await;
    assert!(
        all.iter().any(|d| d.state == DeliveryState::Delivered),
        "{all:?}"
    );
    assert_eq!(
        fake.contact_by_email("tier@x.io").unwrap().get("lead_tier"),
        Some("gold")
    );
    app.stop().await;
}

#[tokio::test]
async fn leadrelay_check_finds_the_property_and_retries_its_dead_letters() {
    let fake = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    // On the dated API: the single-property read is its own path.
    let mapping = "api_version = \"2026-03\"\n[destinations.hubspot.mapping.contact]\nfavourite_colour = \"data.colour\"\n";
    // The server itself looks only hourly: `check` must do it.
    let text = config_checking(&fake.base_url(), mapping, "1h");
    let app = TestApp::builder(&text)
        .env("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)
        .start()
        .await;
    for i in 0..3 {
        let mut l = lead(&format!("c{i}@colours.io"));
        l["colour"] = json!("blue");
        app.post_json("/v1/forms/contact", &l).await;
    }
    app.settled("hubspot", 3, WAIT).await;
    eventually("the causes are recorded", WAIT, || async {
        let c = app.store.fixable_causes(7).await.unwrap();
        (c.first().map(|c| c.waiting) == Some(3)).then_some(())
    })
    .await;
    let file = app.dir.path().join("check.toml");
    std::fs::write(
        &file,
        format!("{text}\n[storage]\nurl = \"{}\"\n", app.db.url),
    )
    .unwrap();
    let check = |file: std::path::PathBuf| async move {
        let out = tokio::process::Command::new(crate::binary::bin())
            .arg("--config")
            .arg(&file)
            .arg("check")
            .env("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let out = check(file.clone()).await;
    assert!(
        out.contains("API version 2026-03") && !out.contains("WARNING: api_version"),
        "{out}"
    );
    assert!(
        out.contains("fixable hubspot: 3 dead letter(s) held by missing property favourite_colour: still there"),
        "{out}"
    );
    assert_eq!(app.deliveries("hubspot").await.len(), 3);

    assert!(fake.add_property(HubSpotProperty::text("contacts", "favourite_colour")));
    let out = check(file).await;
    assert!(
        out.contains("fixable hubspot: 3 dead letter(s) held by missing property favourite_colour: fixed: retried now")
            && out.contains("3 fixable dead letter(s) retried"),
        "{out}"
    );
    let all = app.settled("hubspot", 6, WAIT).await;
    assert_eq!(
        all.iter()
            .filter(|d| d.state == DeliveryState::Delivered)
            .count(),
        3,
        "{all:?}"
    );
    crate::crm_hubspot::assert_paths_of(&fake, crate::crm_hubspot::DATED);
    app.stop().await;
}
