//! Pipedrive organizations and deals in CRM sync: organizations kept in
//! sync with HubSpot companies (matched on first sight by a domain custom
//! field against HubSpot's `domain`, then linked), deals with Salesforce
//! Opportunities (stage ids mapped to stage names both ways, the deal's
//! organization translated through the companies sync's links); records
//! created where missing; ownership; no echo writes.

use std::collections::HashMap;
use std::sync::Arc;

use leadrelay::sync::SyncRunner;
use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig};
use leadrelay_fakes::pipedrive::{FakePipedrive, PipedriveConfig, PipedriveCustomField};
use leadrelay_fakes::salesforce::{FakeSalesforce, SalesforceConfig, SalesforceConnectedApp};
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::sync::{
    app_and_runner, health, health_of, hubspot_toml, pipedrive_toml, roomy_hubspot, runner_of,
    salesforce_toml, settle_rounds,
};

/// Organization custom fields: the company's domain, and a description.
const DOMAIN: &str = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0";
const ABOUT: &str = "abababababababababababababababababababab";
/// The deal custom field holding the key shared with Salesforce.
const DEAL_KEY: &str = "dededededededededededededededededededede";

/// A fake Pipedrive with the custom fields above, whose limits no test
/// round reaches.
async fn pipedrive() -> FakePipedrive {
    let field = |object: &str, key: &str| PipedriveCustomField {
        object: object.into(),
        key: key.into(),
        name: format!("LR {key}"),
        field_type: "varchar".into(),
    };
    FakePipedrive::start(PipedriveConfig {
        burst_limit: 100_000,
        search_burst_limit: 100_000,
        daily_token_budget: 100_000_000,
        custom_fields: vec![
            field("organization", DOMAIN),
            field("organization", ABOUT),
            field("deal", DEAL_KEY),
        ],
        ..Default::default()
    })
    .await
    .unwrap()
}

fn companies_toml(hs: &str, pd: &str) -> String {
    let rest = format!(
        r#"
[syncs.crm]
object = "company"
a = "hubspot"
b = "pipedrive"
poll_interval = "1h"
clock_skew = "1s"
match = {{ a = "domain", b = "custom_fields.{DOMAIN}" }}

[syncs.crm.fields.name]
a = "name"
b = "name"

[syncs.crm.fields.address]
a = "address"
b = "address"
owner = "b"

[syncs.crm.fields.about]
a = "description"
b = "custom_fields.{ABOUT}"
owner = "a"
"#
    );
    [hubspot_toml(hs), pipedrive_toml(pd), rest].concat()
}

struct HubSpotWorld {
    hs: FakeHubSpot,
    pd: FakePipedrive,
    app: TestApp,
    runner: Arc<SyncRunner>,
}

async fn hubspot_world() -> HubSpotWorld {
    let hs = roomy_hubspot().await;
    let pd = pipedrive().await;
    let (app, runner) = app_and_runner(
        &companies_toml(&hs.base_url(), &pd.base_url()),
        &[
            ("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN),
            ("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN),
        ],
    )
    .await;
    HubSpotWorld {
        hs,
        pd,
        app,
        runner,
    }
}

fn count(log: &[leadrelay_fakes::common::LoggedRequest], method: &str, path: &str) -> usize {
    log.iter()
        .filter(|r| r.method == method && r.path.starts_with(path) && r.status < 300)
        .count()
}

fn custom(cf: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    cf.get(key).and_then(Value::as_str).map(str::to_string)
}

/// HubSpot companies by name: (domain, address, description).
fn hs_companies(w: &HubSpotWorld) -> HashMap<String, [Option<String>; 3]> {
    w.hs.companies()
        .into_iter()
        .map(|c| {
            let get = |k: &str| c.get(k).filter(|v| !v.is_empty()).map(str::to_string);
            (
                get("name").unwrap_or_default(),
                [get("domain"), get("address"), get("description")],
            )
        })
        .collect()
}

/// Pipedrive organizations by name: (domain, address, about).
fn pd_organizations(w: &HubSpotWorld) -> HashMap<String, [Option<String>; 3]> {
    w.pd.organizations()
        .into_iter()
        .map(|o| {
            (
                o.name.clone(),
                [
                    custom(&o.custom_fields, DOMAIN),
                    o.address.clone(),
                    custom(&o.custom_fields, ABOUT),
                ],
            )
        })
        .collect()
}

#[tokio::test]
async fn organizations_and_hubspot_companies_are_matched_then_linked_and_kept_in_sync() {
    let w = hubspot_world().await;
    // Acme is in both (a domain against a URL in a custom field), Beta
    // only in HubSpot, Gamma only in Pipedrive.
    let acme_hs = w.hs.seed(
        "companies",
        &[
            ("name", "Acme"),
            ("domain", "acme.test"),
            ("description", "Anvils"),
        ],
    );
    w.hs.seed(
        "companies",
        &[
            ("name", "Beta"),
            ("domain", "beta.test"),
            ("description", "Brooms"),
        ],
    );
    let acme_pd = w.pd.seed_organization("Acme");
    assert!(w.pd.edit_organization(
        acme_pd,
        json!({"address": {"value": "1 Main St"}, "custom_fields": {DOMAIN: "https://www.Acme.test/"}}),
    ));
    let gamma_pd = w.pd.seed_organization("Gamma");
    assert!(w.pd.edit_organization(
        gamma_pd,
        json!({"address": {"value": "3 Side St"}, "custom_fields": {DOMAIN: "gamma.test"}}),
    ));
    let h = w.runner.round().await;
    assert_eq!(h.last_error, None, "{h:?}");
    settle_rounds(&w.runner, &w.app, 5).await;
    let (hs, pd) = (hs_companies(&w), pd_organizations(&w));
    assert_eq!((hs.len(), pd.len()), (3, 3), "{hs:?} {pd:?}");
    // Acme matched (not created again): HubSpot got Pipedrive's address,
    // Pipedrive got HubSpot's description.
    assert_eq!(
        pd["Acme"],
        [
            Some("https://www.Acme.test/".into()),
            Some("1 Main St".into()),
            Some("Anvils".into())
        ]
    );
    assert_eq!(hs["Acme"][1].as_deref(), Some("1 Main St"));
    // Created records carry the match value, so they match again later.
    assert_eq!(
        pd["Beta"],
        [Some("beta.test".into()), None, Some("Brooms".into())]
    );
    assert_eq!(
        hs["Gamma"],
        [Some("gamma.test".into()), Some("3 Side St".into()), None]
    );
    assert_eq!(health(&w.app).await.records, 3);

    // The domain changes in HubSpot: the link holds, nothing is created;
    // a rename in Pipedrive reaches HubSpot.
    let pd_log0 = w.pd.requests().count();
    assert!(w.hs.edit(
        "companies",
        &acme_hs,
        &[
            ("domain", "acme-corp.test"),
            ("description", "Anvils & more")
        ]
    ));
    assert!(w.pd.edit_organization(acme_pd, json!({"name": "Acme Corp"})));
    settle_rounds(&w.runner, &w.app, 5).await;
    let (hs, pd) = (hs_companies(&w), pd_organizations(&w));
    assert_eq!((hs.len(), pd.len()), (3, 3), "{hs:?} {pd:?}");
    assert_eq!(hs["Acme Corp"][0].as_deref(), Some("acme-corp.test"));
    assert_eq!(pd["Acme Corp"][2].as_deref(), Some("Anvils & more"));
    let log = w.pd.requests().entries();
    assert_eq!(count(&log[pd_log0..], "POST", "/api/v2/organizations"), 0);

    // The address is Pipedrive's, the description HubSpot's: a change made
    // on the other side is undone.
    let restores0 = health(&w.app).await.restores;
    assert!(w.hs.edit("companies", &acme_hs, &[("address", "Elsewhere")]));
    assert!(w.pd.edit_organization(acme_pd, json!({"custom_fields": {ABOUT: "Typo"}})));
    settle_rounds(&w.runner, &w.app, 5).await;
    let (hs, pd) = (hs_companies(&w), pd_organizations(&w));
    assert_eq!(hs["Acme Corp"][1].as_deref(), Some("1 Main St"));
    assert_eq!(pd["Acme Corp"][2].as_deref(), Some("Anvils & more"));
    assert_eq!(health(&w.app).await.restores - restores0, 2);

    // Settled: further rounds write nothing (the echoes are recognised).
    let before = health(&w.app).await;
    let pd_log = w.pd.requests().count();
    for _ in 0..3 {
        let r = w.runner.round().await;
        assert_eq!((r.writes_a, r.writes_b), (before.writes_a, before.writes_b));
    }
    let log = w.pd.requests().entries();
    assert_eq!(count(&log[pd_log..], "PATCH", "/api/v2/organizations"), 0);
    assert!(before.echoes_dropped > 0, "{before:?}");
    assert_eq!(before.errors, 0, "{before:?}");
}

fn deals_toml(pd: &str, sf: &str) -> String {
    let rest = format!(
        r#"
[syncs.crm]
object = "deal"
a = "pipedrive"
b = "salesforce"
poll_interval = "1h"
clock_skew = "1s"
match = {{ a = "custom_fields.{DEAL_KEY}", b = "LeadRelay_Key__c" }}

[syncs.crm.fields.name]
a = "title"
b = "Name"

[syncs.crm.fields.stage]
a = "stage_id"
b = "StageName"
map = {{ "1" = "Prospecting", "2" = "Qualification", "4" = "Proposal/Price Quote", "5" = "Negotiation/Review" }}

[syncs.crm.fields.amount]
a = "value"
b = "Amount"

[syncs.crm.fields.close]
a = "expected_close_date"
b = "CloseDate"

[syncs.crm.fields.company]
a = "org_id"
b = "AccountId"
link = "companies"

[syncs.companies]
object = "company"
a = "pipedrive"
b = "salesforce"
poll_interval = "1h"
match = {{ a = "name", b = "Name" }}

[syncs.companies.fields.name]
a = "name"
b = "Name"

[syncs.companies.fields.address]
a = "address"
b = "BillingStreet"
"#
    );
    [pipedrive_toml(pd), salesforce_toml(sf), rest].concat()
}

struct DealsWorld {
    pd: FakePipedrive,
    sf: FakeSalesforce,
    app: TestApp,
    /// Sync `crm` (deals) and sync `companies`, driven by the test.
    runner: Arc<SyncRunner>,
    companies: Arc<SyncRunner>,
}

async fn deals_world() -> DealsWorld {
    let pd = pipedrive().await;
    let sf = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let text = deals_toml(&pd.base_url(), &sf.base_url());
    let env = [
        ("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN),
        ("SF_CLIENT_ID", SalesforceConnectedApp::DEFAULT_CLIENT_ID),
        (
            "SF_CLIENT_SECRET",
            SalesforceConnectedApp::DEFAULT_CLIENT_SECRET,
        ),
        ("SF_REFRESH_TOKEN", SalesforceConfig::DEFAULT_REFRESH_TOKEN),
    ];
    let (app, runner) = app_and_runner(&text, &env).await;
    let companies = Arc::new(runner_of(&text, "companies", &env, &app));
    DealsWorld {
        pd,
        sf,
        app,
        runner,
        companies,
    }
}

#[tokio::test]
async fn deals_and_opportunities_sync_stages_amounts_and_their_organization() {
    let DealsWorld {
        pd,
        sf,
        app,
        runner,
        companies,
    } = deals_world().await;

    // The organizations: Acme and Beta in both, matched by name.
    let pd_acme = pd.seed_organization("Acme");
    let pd_beta = pd.seed_organization("Beta");
    let sf_acme = sf.seed("Account", json!({"Name": "Acme"}));
    let sf_beta = sf.seed("Account", json!({"Name": "Beta"}));
    // A deal only in Pipedrive (Acme's), an Opportunity only in Salesforce
    // (Beta's), and one in both with the same key.
    let big = pd.seed_deal("Big deal", 2);
    assert!(pd.edit_deal(
        big,
        json!({"value": 5000, "expected_close_date": "2027-03-31", "org_id": pd_acme,
               "custom_fields": {DEAL_KEY: "deal-1"}}),
    ));
    let small = sf.seed(
        "Opportunity",
        json!({"Name": "Small deal", "LeadRelay_Key__c": "deal-2", "StageName": "Prospecting",
               "Amount": 700.5, "CloseDate": "2027-01-15", "AccountId": sf_beta}),
    );
    let both_pd = pd.seed_deal("Shared deal", 4);
    assert!(pd.edit_deal(
        both_pd,
        json!({"value": 1200, "expected_close_date": "2027-06-30",
               "custom_fields": {DEAL_KEY: "deal-3"}}),
    ));
    sf.seed(
        "Opportunity",
        json!({"Name": "Shared deal", "LeadRelay_Key__c": "deal-3", "StageName": "Proposal/Price Quote",
               "Amount": 1200, "CloseDate": "2027-06-30"}),
    );
    let c = companies.round().await;
    assert_eq!(c.last_error, None, "{c:?}");
    let h = runner.round().await;
    assert_eq!(h.last_error, None, "{h:?}");
    settle_rounds(&runner, &app, 5).await;

    let opp = |key: &str| {
        sf.opportunities()
            .into_iter()
            .find(|o| o.text("LeadRelay_Key__c") == Some(key))
            .unwrap()
    };
    let deal = |key: &str| {
        pd.deals()
            .into_iter()
            .find(|d| custom(&d.custom_fields, DEAL_KEY).as_deref() == Some(key))
            .unwrap()
    };
    assert_eq!((pd.deals().len(), sf.opportunities().len()), (3, 3));
    // Created in Salesforce with the stage's name, the amount, the date
    // and Acme's Account id.
    let created = opp("deal-1");
    assert_eq!(created.text("Name"), Some("Big deal"));
    assert_eq!(created.text("StageName"), Some("Qualification"));
    assert_eq!(created.get("Amount").and_then(Value::as_f64), Some(5000.0));
    assert_eq!(created.text("CloseDate"), Some("2027-03-31"));
    assert_eq!(created.text("AccountId"), Some(sf_acme.as_str()));
    // Created in Pipedrive with the stage's id and Beta's organization id.
    let copied = deal("deal-2");
    assert_eq!(copied.title, "Small deal");
    assert_eq!(copied.stage_id, 1);
    assert_eq!(copied.value, 700.5);
    assert_eq!(copied.expected_close_date.as_deref(), Some("2027-01-15"));
    assert_eq!(copied.org_id, Some(pd_beta));
    // The shared deal was matched, not created again.
    assert_eq!(deal("deal-3").id, both_pd);

    // A stage moved in Salesforce reaches Pipedrive as a stage id; one
    // moved in Pipedrive reaches Salesforce as a name; the organization
    // moved in Pipedrive is Salesforce's other Account.
    assert!(sf.edit(&small, json!({"StageName": "Negotiation/Review"})));
    assert!(pd.edit_deal(big, json!({"stage_id": 4, "org_id": pd_beta})));
    settle_rounds(&runner, &app, 5).await;
    assert_eq!(deal("deal-2").stage_id, 5);
    let moved = opp("deal-1");
    assert_eq!(moved.text("StageName"), Some("Proposal/Price Quote"));
    assert_eq!(moved.text("AccountId"), Some(sf_beta.as_str()));
    assert!(sf.edit(&small, json!({"AccountId": sf_acme})));
    settle_rounds(&runner, &app, 5).await;
    assert_eq!(deal("deal-2").org_id, Some(pd_acme));

    // Settled: rounds write nothing more, no request changes Pipedrive.
    let h = health(&app).await;
    assert_eq!((h.errors, h.pending), (0, 0), "{h:?}");
    assert_eq!(health_of(&app, "companies").await.errors, 0);
    let pd_log = pd.requests().count();
    for _ in 0..2 {
        let r = runner.round().await;
        assert_eq!((r.writes_a, r.writes_b), (h.writes_a, h.writes_b));
    }
    let log = pd.requests().entries();
    assert_eq!(count(&log[pd_log..], "PATCH", "/api/v2/deals"), 0);
    assert_eq!(count(&log[pd_log..], "POST", "/api/v2/deals"), 0);
    assert_eq!((pd.deals().len(), sf.opportunities().len()), (3, 3));
}

#[tokio::test]
async fn a_deal_whose_organization_is_not_linked_yet_waits_for_it() {
    let DealsWorld {
        pd,
        sf,
        app,
        runner,
        companies,
    } = deals_world().await;
    let org = pd.seed_organization("Delta");
    let big = pd.seed_deal("Delta deal", 1);
    assert!(pd.edit_deal(
        big,
        json!({"expected_close_date": "2027-02-01", "org_id": org,
               "custom_fields": {DEAL_KEY: "deal-9"}}),
    ));
    // The companies sync has not run: the deal goes over without its
    // Account, the association waits. (The Opportunity is made more than
    // `clock_skew` after the deal's change: its empty AccountId must not
    // count as a newer change than the deal's organization.)
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let h = runner.round().await;
    assert_eq!(h.pending, 1, "{h:?}");
    let opp = || {
        sf.opportunities()
            .into_iter()
            .find(|o| o.text("LeadRelay_Key__c") == Some("deal-9"))
            .unwrap()
    };
    assert_eq!(opp().text("AccountId"), None);
    companies.round().await;
    let account = sf
        .accounts()
        .into_iter()
        .find(|a| a.text("Name") == Some("Delta"))
        .unwrap();
    settle_rounds(&runner, &app, 5).await;
    assert_eq!(opp().text("AccountId"), account.text("Id"));
    assert_eq!(
        pd.deals()[0].org_id,
        Some(org),
        "the deal keeps its organization"
    );
    let h = health(&app).await;
    assert_eq!((h.errors, h.pending), (0, 0), "{h:?}");
}
