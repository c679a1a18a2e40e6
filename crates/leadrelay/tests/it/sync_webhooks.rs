//! Change webhooks feeding the sync: the fake HubSpot sends a signed
//! (v3) `contact.propertyChange` webhook for a person's edit; leadrelay's
//! `hubspot` source verifies it and wakes the sync named in
//! `change_sources`, whose round (the poll interval being an hour) carries
//! the change to Pipedrive. A webhook with a bad signature is refused.

use std::time::Duration;

use leadrelay_fakes::hubspot::{HubSpotConfig, WebhookTarget};
use leadrelay_fakes::pipedrive::PipedriveConfig;
use serde_json::Value;

use crate::sync::{
    app_and_runner, health, hubspot_toml, pipedrive_toml, roomy_hubspot, roomy_pipedrive,
};

const PUBLIC: &str = "https://leadrelay.example";
const SECRET: &str = "hubspot-app-client-secret";

fn toml(hs: &str, pd: &str) -> String {
    let rest = format!(
        r#"
[server]
public_url = "{PUBLIC}"

[sources.hs_changes]
kind = "hubspot"
client_secret_env = "HUBSPOT_CLIENT_SECRET"

[syncs.crm]
object = "contact"
a = "hubspot"
b = "pipedrive"
poll_interval = "1h"
change_sources = ["hs_changes"]

[syncs.crm.fields.title]
a = "jobtitle"
b = "custom_fields.title"
"#
    );
    [rest, hubspot_toml(hs), pipedrive_toml(pd)].concat()
}

#[tokio::test]
async fn a_hubspot_change_webhook_starts_the_sync_round_at_once() {
    let hs = roomy_hubspot().await;
    let pd = roomy_pipedrive().await;
    let (app, runner) = app_and_runner(
        &toml(&hs.base_url(), &pd.base_url()),
        &[
            ("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN),
            ("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN),
            ("HUBSPOT_CLIENT_SECRET", SECRET),
        ],
    )
    .await;
    let hs_id = hs.seed(
        "contacts",
        &[("email", "ada@example.com"), ("jobtitle", "Engineer")],
    );
    let pd_id = pd.seed_person("Ada", Some("ada@example.com"));
    pd.edit_person(pd_id, &[("custom_fields.title", "Engineer")]);
    // The records are known (the test's own round); the app's sync then
    // sleeps for its hour.
    runner.round().await;
    let rounds_before = health(&app).await.last_round_at;

    let hook_url = app.url("/v1/hooks/hs_changes");
    hs.state().subscribe_webhooks(WebhookTarget {
        url: hook_url.clone(),
        signed_url: format!("{PUBLIC}/v1/hooks/hs_changes"),
        client_secret: SECRET.into(),
    });
    assert!(hs.edit("contacts", &hs_id, &[("jobtitle", "CTO")]));
    let title = || {
        pd.persons()
            .into_iter()
            .find(|p| p.id == pd_id)
            .and_then(|p| {
                p.custom_fields
                    .get("title")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
    };
    crate::support::eventually(
        "the webhook's round writes the title to Pipedrive",
        Duration::from_secs(30),
        || async { (title().as_deref() == Some("CTO")).then_some(()) },
    )
    .await;
    let sent = hs.state().webhooks_sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].status, Some(200), "{sent:?}");
    assert!(sent[0].body.contains("contact.propertyChange"));
    // The app's round saves its figures after its writes.
    crate::support::eventually(
        "the app's round saved its figures",
        Duration::from_secs(30),
        || async {
            let h = health(&app).await;
            (h.writes_b == 1 && h.last_round_at != rounds_before).then_some(())
        },
    )
    .await;
    // The write into Pipedrive is not echoed back into HubSpot.
    runner.round().await;
    let h = health(&app).await;
    assert_eq!((h.writes_a, h.writes_b), (0, 1), "{h:?}");

    // A webhook signed with another secret is refused (401) and stored
    // nowhere, so it wakes nothing.
    hs.state().subscribe_webhooks(WebhookTarget {
        url: hook_url,
        signed_url: format!("{PUBLIC}/v1/hooks/hs_changes"),
        client_secret: "not the secret".into(),
    });
    assert!(hs.edit("contacts", &hs_id, &[("jobtitle", "CEO")]));
    crate::support::eventually(
        "the forged webhook answered",
        Duration::from_secs(30),
        || async { (hs.state().webhooks_sent().len() == 2).then_some(()) },
    )
    .await;
    assert_eq!(hs.state().webhooks_sent()[1].status, Some(401));
}
