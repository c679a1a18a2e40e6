//! Change webhooks feeding the sync: the fake HubSpot sends a signed
//! (v3) `contact.propertyChange` webhook for a person's edit; leadrelay's
//! `hubspot` source verifies it and wakes the sync named in
//! `change_sources`, whose round (the poll interval being an hour) carries
//! the change to Pipedrive. A webhook with a bad signature is refused.
//! The same with the fake Pipedrive's webhooks (subscribed through its
//! API, HTTP Basic credentials, sent for changes made in the app and
//! through the API, retried when refused): the sync's own writes come back
//! as `change_source = "api"` webhooks and cause no further writes.
//! The fake Salesforce sends outbound messages (SOAP `notifications`) for
//! every save of a Lead, retried until acknowledged: a person's edit
//! reaches HubSpot at once, the echo of the sync's own write wakes a round
//! that writes nothing, and another org's message is refused.

use std::time::Duration;

use leadrelay_fakes::hubspot::{HubSpotConfig, WebhookTarget};
use leadrelay_fakes::pipedrive::{FakePipedrive, PipedriveConfig};
use leadrelay_fakes::salesforce::{
    FakeSalesforce, OutboundMessageDef, OutboundRetry, OutboundSent, SalesforceConfig,
};
use serde_json::{Value, json};

use crate::sync::{
    HS_SF_ENV, app_and_runner, health, hubspot_toml, pipedrive_toml, roomy_hubspot,
    roomy_pipedrive, salesforce_toml, settle_rounds,
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

const PD_HOOK_USER: &str = "leadrelay";
const PD_HOOK_PASSWORD: &str = "pipedrive-hook-password";

fn pipedrive_changes_toml(hs: &str, pd: &str) -> String {
    let rest = r#"
[sources.pd_changes]
kind = "pipedrive"
http_auth_user = "leadrelay"
http_auth_password_env = "PD_HOOK_PASSWORD"

[syncs.crm]
object = "company"
a = "hubspot"
b = "pipedrive"
poll_interval = "1h"
change_sources = ["pd_changes"]
match = { a = "name", b = "name" }

[syncs.crm.fields.address]
a = "address"
b = "address"
"#;
    [rest.to_string(), hubspot_toml(hs), pipedrive_toml(pd)].concat()
}

/// Subscribes a webhook for organization changes through Pipedrive's API.
async fn subscribe(pd: &FakePipedrive, url: &str, password: &str) -> u64 {
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/webhooks", pd.base_url()))
        .header("x-api-token", PipedriveConfig::DEFAULT_TOKEN)
        .json(&json!({
            "subscription_url": url,
            "event_action": "*",
            "event_object": "organization",
            "http_auth_user": PD_HOOK_USER,
            "http_auth_password": password,
            "version": "2.0",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.unwrap();
    v["data"]["id"].as_u64().unwrap()
}

fn successful(log: &[leadrelay_fakes::common::LoggedRequest], method: &str, path: &str) -> usize {
    log.iter()
        .filter(|r| r.method == method && r.path.contains(path) && r.status < 300)
        .count()
}

#[tokio::test]
async fn pipedrive_change_webhooks_wake_the_sync_and_its_own_writes_echo_back_harmlessly() {
    let hs = roomy_hubspot().await;
    let pd = FakePipedrive::start(PipedriveConfig {
        burst_limit: 100_000,
        search_burst_limit: 100_000,
        daily_token_budget: 100_000_000,
        webhook_retry_delays: vec![Duration::from_millis(100), Duration::from_millis(200)],
        ..Default::default()
    })
    .await
    .unwrap();
    let (app, runner) = app_and_runner(
        &pipedrive_changes_toml(&hs.base_url(), &pd.base_url()),
        &[
            ("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN),
            ("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN),
            ("PD_HOOK_PASSWORD", PD_HOOK_PASSWORD),
        ],
    )
    .await;
    let hs_id = hs.seed("companies", &[("name", "Acme"), ("address", "1 Main St")]);
    let pd_id = pd.seed_organization("Acme");
    // Matched and settled by the test's own rounds; the app's sync then
    // sleeps for its hour.
    settle_rounds(&runner, &app, 5).await;
    assert_eq!(pd.organizations()[0].address.as_deref(), Some("1 Main St"));
    let hook_url = app.url("/v1/hooks/pd_changes");
    let good = subscribe(&pd, &hook_url, PD_HOOK_PASSWORD).await;

    // A person's edit in Pipedrive reaches HubSpot at once.
    assert!(pd.edit_organization(pd_id, json!({"address": {"value": "2 High St"}})));
    let address = || {
        hs.companies()
            .into_iter()
            .find(|c| c.id == hs_id)
            .and_then(|c| c.get("address").map(str::to_string))
    };
    crate::support::eventually(
        "the webhook's round writes the address to HubSpot",
        Duration::from_secs(30),
        || async { (address().as_deref() == Some("2 High St")).then_some(()) },
    )
    .await;
    let sent = pd.webhooks_sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].status, Some(200), "{sent:?}");
    assert_eq!(sent[0].body["meta"]["change_source"], "app");
    assert_eq!(sent[0].body["meta"]["entity"], "organization");
    assert_eq!(
        sent[0].body["previous"]["address"]["value"],
        json!("1 Main St")
    );

    // The sync's own write into Pipedrive comes back as an API change
    // webhook: the round it starts writes nothing anywhere.
    // Let the app's round finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hs.edit("companies", &hs_id, &[("address", "3 Low St")]));
    let (hs_log, pd_log) = (hs.requests().count(), pd.requests().count());
    let r = runner.round().await;
    assert_eq!(r.last_error, None, "{r:?}");
    crate::support::eventually(
        "the echo webhook was delivered and its round ran",
        Duration::from_secs(30),
        || async {
            let echoed = pd
                .webhooks_sent()
                .iter()
                .any(|s| s.body["meta"]["change_source"] == "api" && s.status == Some(200));
            let later = health(&app).await.last_round_at > r.last_round_at;
            (echoed && later).then_some(())
        },
    )
    .await;
    // Let any round still running finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pd_requests = pd.requests().entries();
    let hs_requests = hs.requests().entries();
    assert_eq!(
        successful(&pd_requests[pd_log..], "PATCH", "/api/v2/organizations"),
        1
    );
    assert_eq!(
        successful(&hs_requests[hs_log..], "POST", "companies/batch/"),
        0
    );
    assert_eq!(pd.organizations()[0].address.as_deref(), Some("3 Low St"));
    assert_eq!(address().as_deref(), Some("3 Low St"));

    // A webhook with wrong credentials is refused (401), retried as
    // Pipedrive retries, and wakes nothing.
    let res = reqwest::Client::new()
        .delete(format!("{}/api/v1/webhooks/{good}", pd.base_url()))
        .header("x-api-token", PipedriveConfig::DEFAULT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let bad = subscribe(&pd, &hook_url, "not the password").await;
    let rounds_before = health(&app).await.last_round_at;
    assert!(pd.edit_organization(pd_id, json!({"address": {"value": "4 Far St"}})));
    let tries = || {
        pd.webhooks_sent()
            .into_iter()
            .filter(|s| s.webhook_id == bad)
            .collect::<Vec<_>>()
    };
    crate::support::eventually(
        "the refused webhook was tried three times",
        Duration::from_secs(30),
        || async { (tries().len() == 3).then_some(()) },
    )
    .await;
    let tries = tries();
    assert!(tries.iter().all(|t| t.status == Some(401)), "{tries:?}");
    assert_eq!(
        tries.iter().map(|t| t.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        tries
            .iter()
            .all(|t| t.body["meta"]["id"] == tries[0].body["meta"]["id"]),
        "a retry is the same event"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(health(&app).await.last_round_at, rounds_before);
    assert_eq!(address().as_deref(), Some("3 Low St"));
}

const OM_TOKEN: &str = "outbound-message-token";

fn salesforce_changes_toml(hs: &str, sf: &str, org: &str) -> String {
    let rest = format!(
        r#"
[server]
public_url = "{PUBLIC}"

[sources.sf_changes]
kind = "salesforce_outbound_message"
organization_id = "{org}"
token_env = "SF_OM_TOKEN"

[sources.hs_changes]
kind = "hubspot"
client_secret_env = "HUBSPOT_CLIENT_SECRET"

[syncs.crm]
object = "contact"
a = "hubspot"
b = "salesforce"
poll_interval = "1h"
change_sources = ["sf_changes", "hs_changes"]

[syncs.crm.fields.title]
a = "jobtitle"
b = "Title"

[syncs.crm.fields.phone]
a = "phone"
b = "Phone"
"#
    );
    [rest, hubspot_toml(hs), salesforce_toml(sf)].concat()
}

/// A fake org that retries unacknowledged outbound messages within
/// milliseconds, with an outbound message on Leads to `url`.
async fn org_sending_lead_changes(org_id: Option<&str>, url: &str) -> FakeSalesforce {
    let mut config = SalesforceConfig::default();
    if let Some(id) = org_id {
        config.org_id = id.to_string();
    }
    let sf = FakeSalesforce::start(config).await.unwrap();
    sf.set_outbound_retry(OutboundRetry {
        first: Duration::from_millis(50),
        max_interval: Duration::from_millis(200),
        max_age: Duration::from_secs(120),
        timeout: Duration::from_secs(10),
    });
    sf.add_outbound_message(OutboundMessageDef {
        object: "Lead".into(),
        fields: ["Id", "Email", "Title", "Phone", "LastModifiedDate"]
            .map(String::from)
            .to_vec(),
        endpoint_url: url.to_string(),
        send_session_id: false,
    });
    sf
}

/// Waits until every notification the org queued is acknowledged.
async fn all_acknowledged(sf: &FakeSalesforce) -> Vec<OutboundSent> {
    crate::support::eventually(
        "Salesforce's outbound messages acknowledged",
        Duration::from_secs(30),
        || async { (sf.outbound_queued() == 0).then(|| sf.outbound_sent()) },
    )
    .await
}

#[tokio::test]
async fn salesforce_outbound_messages_start_the_sync_round_and_echoes_write_nothing() {
    let hs = roomy_hubspot().await;
    // The endpoint is wrong at first (nothing listens there): Salesforce
    // keeps the message and retries it.
    let sf = org_sending_lead_changes(None, "http://127.0.0.1:9/nowhere").await;
    let org = sf.state().org_id();
    let mut env = HS_SF_ENV.to_vec();
    env.extend([("SF_OM_TOKEN", OM_TOKEN), ("HUBSPOT_CLIENT_SECRET", SECRET)]);
    let text = salesforce_changes_toml(&hs.base_url(), &sf.base_url(), &org);
    let (app, _runner) = app_and_runner(&text, &env).await;
    let hs_id = hs.seed(
        "contacts",
        &[("email", "ada@example.com"), ("jobtitle", "Engineer")],
    );
    let lead = sf.seed(
        "Lead",
        json!({"LastName": "Ada", "Company": "Acme", "Email": "ada@example.com", "Title": "Engineer"}),
    );
    // The seed's own message is retried until the endpoint is right, then
    // delivered: its round links the two records.
    crate::support::eventually("failed deliveries", Duration::from_secs(30), || async {
        (sf.outbound_sent()
            .iter()
            .filter(|s| s.status.is_none())
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    let initial = health(&app).await;
    sf.set_outbound_endpoint(&app.url(&format!("/v1/hooks/sf_changes?token={OM_TOKEN}")));
    let sent = all_acknowledged(&sf).await;
    assert!(
        sent.windows(2)
            .all(|w| w[0].notifications == w[1].notifications),
        "one notification, retried"
    );
    let before = crate::support::eventually("the first round", Duration::from_secs(30), || async {
        let h = health(&app).await;
        (h.last_round_at != initial.last_round_at).then_some(h)
    })
    .await;
    assert_eq!(before.records, 1, "{before:?}");

    // A person's edit in Salesforce reaches HubSpot at once.
    let (hs0, sf0) = (hs.requests().count(), sf.requests().count());
    assert!(sf.edit(&lead, json!({"Title": "CTO"})));
    let title = || {
        hs.contacts()
            .into_iter()
            .find(|c| c.id == hs_id)
            .and_then(|c| c.get("jobtitle").map(str::to_string))
    };
    crate::support::eventually(
        "the outbound message's round writes the title to HubSpot",
        Duration::from_secs(30),
        || async { (title().as_deref() == Some("CTO")).then_some(()) },
    )
    .await;
    let sent = all_acknowledged(&sf).await;
    let last = sent.last().unwrap();
    assert!(last.acked && last.status == Some(200), "{last:?}");
    assert!(last.body.contains(&format!("<sf:Id>{lead}</sf:Id>")));
    crate::support::eventually(
        "the round saved its figures",
        Duration::from_secs(30),
        || async {
            let h = health(&app).await;
            (h.last_round_at != before.last_round_at && h.writes_a == before.writes_a + 1)
                .then_some(h)
        },
    )
    .await;
    let hs_log = hs.requests().entries();
    assert_eq!(successful(&hs_log[hs0..], "POST", "/batch/update"), 1);
    let sf_log = sf.requests().entries();
    assert_eq!(
        successful(&sf_log[sf0..], "PATCH", "/composite/sobjects"),
        0
    );

    // The sync's own write into Salesforce (a HubSpot edit, its webhook
    // waking the round) sends a message too: changes made through the API
    // do. Held back until the write's round is over (the endpoint is down
    // meanwhile), its round finds the echo and writes nothing anywhere.
    let om_url = app.url(&format!("/v1/hooks/sf_changes?token={OM_TOKEN}"));
    sf.set_outbound_endpoint("http://127.0.0.1:9/nowhere");
    hs.state().subscribe_webhooks(WebhookTarget {
        url: app.url("/v1/hooks/hs_changes"),
        signed_url: format!("{PUBLIC}/v1/hooks/hs_changes"),
        client_secret: SECRET.into(),
    });
    let (hs1, sf1) = (hs.requests().count(), sf.requests().count());
    assert!(hs.edit("contacts", &hs_id, &[("phone", "+15550100")]));
    let wrote = crate::support::eventually(
        "the webhook's round writes to Salesforce",
        Duration::from_secs(30),
        || async {
            let h = health(&app).await;
            (h.writes_b == before.writes_b + 1).then_some(h)
        },
    )
    .await;
    crate::support::eventually(
        "the echo's message waits",
        Duration::from_secs(30),
        || async {
            (sf.outbound_sent()
                .last()
                .is_some_and(|s| s.status.is_none()))
            .then_some(())
        },
    )
    .await;
    sf.set_outbound_endpoint(&om_url);
    let sent = all_acknowledged(&sf).await;
    assert!(
        sent.last()
            .unwrap()
            .body
            .contains("<sf:Phone>+15550100</sf:Phone>")
    );
    let h = crate::support::eventually("the echo's round", Duration::from_secs(30), || async {
        let h = health(&app).await;
        (h.last_round_at != wrote.last_round_at).then_some(h)
    })
    .await;
    assert_eq!(
        (h.writes_a, h.writes_b),
        (wrote.writes_a, wrote.writes_b),
        "{h:?}"
    );
    assert!(h.echoes_dropped > wrote.echoes_dropped, "{h:?}");
    let hs_log = hs.requests().entries();
    assert_eq!(successful(&hs_log[hs1..], "POST", "/batch/update"), 0);
    let sf_log = sf.requests().entries();
    assert_eq!(
        successful(&sf_log[sf1..], "PATCH", "/composite/sobjects"),
        1
    );

    // Another org's message (the right token, the wrong OrganizationId)
    // is refused every time it is retried, and wakes nothing.
    let other = org_sending_lead_changes(Some("00D5e000000OTHRAAA"), &om_url).await;
    let quiet = health(&app).await;
    other.seed(
        "Lead",
        json!({"LastName": "Eve", "Company": "Evil", "Email": "eve@example.com"}),
    );
    let refused = crate::support::eventually(
        "the forged message retried",
        Duration::from_secs(30),
        || async {
            let sent = other.outbound_sent();
            (sent.len() >= 3).then_some(sent)
        },
    )
    .await;
    assert!(
        refused.iter().all(|s| s.status == Some(401) && !s.acked),
        "{refused:?}"
    );
    assert_eq!(health(&app).await.last_round_at, quiet.last_round_at);
}
