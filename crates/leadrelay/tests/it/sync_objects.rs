//! Companies, deals and custom objects kept in sync between a fake HubSpot
//! and a fake Salesforce org: records matched on first sight by a key
//! (a company's domain against an Account's website, a leadrelay key field
//! on deals and projects), then by the stored link of both ids; value maps
//! both ways (deal stage ↔ Opportunity StageName); ownership; no echo
//! writes.

use std::collections::HashMap;
use std::sync::Arc;

use leadrelay::config;
use leadrelay::sync::SyncRunner;
use leadrelay_fakes::hubspot::FakeHubSpot;
use leadrelay_fakes::salesforce::{FakeSalesforce, SalesforceConfig};
use serde_json::json;

use crate::support::TestApp;
use crate::sync::{
    HS_SF_ENV, app_and_runner, health, hubspot_toml, roomy_hubspot, runner_of, salesforce_toml_as,
    settle_rounds,
};

/// The config of a test whose Salesforce people are `person_object`.
fn toml_as(hs: &str, sf: &str, person_object: &str, sync: &str) -> String {
    let rest = format!(
        r#"

[syncs.crm]
a = "hubspot"
b = "salesforce"
poll_interval = "1h"
clock_skew = "1s"
{sync}
"#
    );
    [
        hubspot_toml(hs),
        salesforce_toml_as(sf, person_object),
        rest,
    ]
    .concat()
}

const COMPANIES: &str = r#"
object = "company"
match = { a = "domain", b = "Website" }

[syncs.crm.fields.name]
a = "name"
b = "Name"

[syncs.crm.fields.phone]
a = "phone"
b = "Phone"
owner = "b"

[syncs.crm.fields.about]
a = "description"
b = "Description"
owner = "a"
"#;

/// HubSpot's default pipeline stages and the Opportunity stages they are.
const DEALS: &str = r#"
object = "deal"
match = { a = "leadrelay_deal_key", b = "LeadRelay_Key__c" }

[syncs.crm.fields.name]
a = "dealname"
b = "Name"

[syncs.crm.fields.stage]
a = "dealstage"
b = "StageName"
map = { appointmentscheduled = "Prospecting", qualifiedtobuy = "Qualification", contractsent = "Proposal/Price Quote", closedwon = "Closed Won", closedlost = "Closed Lost" }

[syncs.crm.fields.amount]
a = "amount"
b = "Amount"

[syncs.crm.fields.close]
a = "closedate"
b = "CloseDate"
"#;

const PROJECTS: &str = r#"
object = "custom"
object_a = "p_projects"
object_b = "Project__c"
match = { a = "project_code", b = "External_Id__c" }

[syncs.crm.fields.name]
a = "project_name"
b = "Name"

[syncs.crm.fields.status]
a = "project_status"
b = "Status__c"
map = { planned = "Planned", active = "Active", done = "Done" }
"#;

pub(crate) struct World {
    pub(crate) hs: FakeHubSpot,
    pub(crate) sf: FakeSalesforce,
    pub(crate) app: TestApp,
    pub(crate) runner: Arc<SyncRunner>,
    /// The whole config (for the other syncs' runners).
    text: String,
}

impl World {
    /// The runner of another sync of the config.
    pub(crate) fn runner(&self, name: &str) -> SyncRunner {
        runner_of(&self.text, name, &HS_SF_ENV, &self.app)
    }

    /// A runner of sync `name` of this world's config with `[syncs.crm]`
    /// given by `sync` instead (a changed setting, as after an edit).
    pub(crate) fn runner_with(&self, sync: &str, name: &str) -> SyncRunner {
        let text = toml_as(&self.hs.base_url(), &self.sf.base_url(), "Lead", sync);
        runner_of(&text, name, &HS_SF_ENV, &self.app)
    }
}

pub(crate) async fn world(sync: &str) -> World {
    world_as("Lead", sync).await
}

/// The world of a test whose Salesforce people are `person_object`.
async fn world_as(person_object: &str, sync: &str) -> World {
    world_of(person_object, sync, SalesforceConfig::default()).await
}

/// [`world`] with a fake Salesforce org of `org`'s settings.
pub(crate) async fn world_with(sync: &str, org: SalesforceConfig) -> World {
    world_of("Lead", sync, org).await
}

async fn world_of(person_object: &str, sync: &str, org: SalesforceConfig) -> World {
    let hs = roomy_hubspot().await;
    let sf = FakeSalesforce::start(org).await.unwrap();
    let text = toml_as(&hs.base_url(), &sf.base_url(), person_object, sync);
    let (app, runner) = app_and_runner(&text, &HS_SF_ENV).await;
    World {
        hs,
        sf,
        app,
        runner,
        text,
    }
}

fn count(log: &[leadrelay_fakes::common::LoggedRequest], method: &str, path_end: &str) -> usize {
    log.iter()
        .filter(|r| r.method == method && r.path.ends_with(path_end) && r.status < 300)
        .count()
}

/// HubSpot companies by name: (domain, phone, description).
fn hs_companies(w: &World) -> HashMap<String, [Option<String>; 3]> {
    w.hs.companies()
        .into_iter()
        .map(|c| {
            let get = |k: &str| c.get(k).filter(|v| !v.is_empty()).map(str::to_string);
            (
                get("name").unwrap_or_default(),
                [get("domain"), get("phone"), get("description")],
            )
        })
        .collect()
}

/// Salesforce Accounts by name: (website, phone, description).
fn sf_accounts(w: &World) -> HashMap<String, [Option<String>; 3]> {
    w.sf.accounts()
        .into_iter()
        .map(|a| {
            let get = |k: &str| a.text(k).filter(|v| !v.is_empty()).map(str::to_string);
            (
                get("Name").unwrap_or_default(),
                [get("Website"), get("Phone"), get("Description")],
            )
        })
        .collect()
}

#[tokio::test]
async fn companies_are_matched_by_domain_then_linked_for_good() {
    let w = world(COMPANIES).await;
    // Acme is in both (a domain against a website), Beta only in HubSpot,
    // Gamma only in Salesforce.
    let acme_hs = w.hs.seed(
        "companies",
        &[
            ("name", "Acme"),
            ("domain", "acme.test"),
            ("phone", "+15550001"),
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
    let acme_sf = w.sf.seed(
        "Account",
        json!({"Name": "Acme", "Website": "https://www.Acme.test/", "Phone": "+15550001"}),
    );
    w.sf.seed(
        "Account",
        json!({"Name": "Gamma", "Website": "gamma.test", "Phone": "+15550003"}),
    );
    let h = w.runner.round().await;
    assert_eq!(h.last_error, None, "{h:?}");
    settle_rounds(&w.runner, &w.app, 5).await;
    let (hs, sf) = (hs_companies(&w), sf_accounts(&w));
    assert_eq!((hs.len(), sf.len()), (3, 3), "{hs:?} {sf:?}");
    // Acme matched (not created again) and got HubSpot's description.
    assert_eq!(
        sf["Acme"],
        [
            Some("https://www.Acme.test/".into()),
            Some("+15550001".into()),
            Some("Anvils".into())
        ]
    );
    // Created records carry the match value, so they match again later.
    assert_eq!(sf["Beta"][0].as_deref(), Some("beta.test"));
    assert_eq!(sf["Beta"][2].as_deref(), Some("Brooms"));
    assert_eq!(hs["Gamma"][0].as_deref(), Some("gamma.test"));
    assert_eq!(hs["Gamma"][1].as_deref(), Some("+15550003"));
    let h = health(&w.app).await;
    assert_eq!(h.records, 3, "{h:?}");

    // The domain changes in HubSpot: the link holds, nothing is created,
    // and the other edits still flow both ways.
    let sf_log0 = w.sf.requests().count();
    assert!(w.hs.edit(
        "companies",
        &acme_hs,
        &[
            ("domain", "acme-corp.test"),
            ("description", "Anvils & more")
        ]
    ));
    assert!(w.sf.edit(&acme_sf, json!({"Name": "Acme Corp"})));
    settle_rounds(&w.runner, &w.app, 5).await;
    let (hs, sf) = (hs_companies(&w), sf_accounts(&w));
    assert_eq!((hs.len(), sf.len()), (3, 3), "{hs:?} {sf:?}");
    assert_eq!(hs["Acme Corp"][0].as_deref(), Some("acme-corp.test"));
    assert_eq!(sf["Acme Corp"][2].as_deref(), Some("Anvils & more"));
    let log = w.sf.requests().entries();
    assert_eq!(count(&log[sf_log0..], "POST", "/composite/sobjects"), 0);

    // The phone is Salesforce's: a change made in HubSpot is undone; the
    // description is HubSpot's: a change made in Salesforce is undone.
    let restores0 = health(&w.app).await.restores;
    assert!(w.hs.edit("companies", &acme_hs, &[("phone", "+19999")]));
    assert!(w.sf.edit(&acme_sf, json!({"Description": "Typo"})));
    settle_rounds(&w.runner, &w.app, 5).await;
    let (hs, sf) = (hs_companies(&w), sf_accounts(&w));
    assert_eq!(hs["Acme Corp"][1].as_deref(), Some("+15550001"));
    assert_eq!(sf["Acme Corp"][2].as_deref(), Some("Anvils & more"));
    let h = health(&w.app).await;
    assert_eq!(h.restores - restores0, 2, "{h:?}");

    // Settled: further rounds write nothing (the echoes are recognised).
    let before = health(&w.app).await;
    for _ in 0..3 {
        let r = w.runner.round().await;
        assert_eq!((r.writes_a, r.writes_b), (before.writes_a, before.writes_b));
    }
    assert!(before.echoes_dropped > 0, "{before:?}");
    assert_eq!(before.errors, 0, "{before:?}");
}

#[tokio::test]
async fn a_second_company_with_the_same_domain_is_not_guessed_between() {
    let w = world(COMPANIES).await;
    w.hs.seed("companies", &[("name", "Acme"), ("domain", "acme.test")]);
    w.sf.seed(
        "Account",
        json!({"Name": "Acme", "Website": "acme.test", "Phone": "+15550001"}),
    );
    settle_rounds(&w.runner, &w.app, 5).await;
    // A duplicate Account appears in Salesforce: it is left out (and
    // counted), never linked to the HubSpot company or copied into it.
    let dup = w.sf.seed(
        "Account",
        json!({"Name": "Acme Duplicate", "Website": "http://acme.test"}),
    );
    let h = w.runner.round().await;
    assert_eq!(h.duplicates, 1, "{h:?}");
    settle_rounds(&w.runner, &w.app, 5).await;
    let hs = hs_companies(&w);
    assert_eq!(hs.len(), 1, "{hs:?}");
    assert_eq!(hs["Acme"][1].as_deref(), Some("+15550001"));
    assert!(w.sf.record(&dup).is_some());
}

#[tokio::test]
async fn deals_sync_with_stages_mapped_both_ways() {
    let w = world(DEALS).await;
    let big = w.hs.seed(
        "deals",
        &[
            ("dealname", "Big deal"),
            ("leadrelay_deal_key", "deal-1"),
            ("pipeline", "default"),
            ("dealstage", "qualifiedtobuy"),
            ("amount", "5000"),
            ("closedate", "2027-03-31"),
        ],
    );
    let small = w.sf.seed(
        "Opportunity",
        json!({"Name": "Small deal", "LeadRelay_Key__c": "deal-2", "StageName": "Prospecting",
               "Amount": 700, "CloseDate": "2027-01-15"}),
    );
    let h = w.runner.round().await;
    assert_eq!(h.last_error, None, "{h:?}");
    settle_rounds(&w.runner, &w.app, 5).await;
    let opp = |key: &str| {
        w.sf.opportunities()
            .into_iter()
            .find(|o| o.text("LeadRelay_Key__c") == Some(key))
            .unwrap()
    };
    let deal = |key: &str| {
        w.hs.deals()
            .into_iter()
            .find(|d| d.get("leadrelay_deal_key") == Some(key))
            .unwrap()
    };
    let created = opp("deal-1");
    assert_eq!(created.text("Name"), Some("Big deal"));
    assert_eq!(created.text("StageName"), Some("Qualification"));
    assert_eq!(created.get("Amount").and_then(|v| v.as_f64()), Some(5000.0));
    assert_eq!(created.text("CloseDate"), Some("2027-03-31"));
    let copied = deal("deal-2");
    assert_eq!(copied.get("dealstage"), Some("appointmentscheduled"));
    assert_eq!(copied.get("amount"), Some("700"));

    // A stage moved in Salesforce reaches HubSpot in HubSpot's words, and
    // back again.
    assert!(w.sf.edit(&small, json!({"StageName": "Closed Won"})));
    assert!(w.hs.edit("deals", &big, &[("dealstage", "contractsent")]));
    settle_rounds(&w.runner, &w.app, 5).await;
    assert_eq!(deal("deal-2").get("dealstage"), Some("closedwon"));
    assert_eq!(
        opp("deal-1").text("StageName"),
        Some("Proposal/Price Quote")
    );
    assert!(w.hs.edit("deals", &big, &[("closedate", "2030-01-01")]));
    settle_rounds(&w.runner, &w.app, 5).await;
    assert_eq!(opp("deal-1").text("CloseDate"), Some("2030-01-01"));
    assert_eq!((w.hs.deals().len(), w.sf.opportunities().len()), (2, 2));
    let h = health(&w.app).await;
    assert_eq!(h.errors, 0, "{h:?}");
    for _ in 0..2 {
        let r = w.runner.round().await;
        assert_eq!((r.writes_a, r.writes_b), (h.writes_a, h.writes_b));
    }
}

#[tokio::test]
async fn custom_objects_sync_between_hubspot_and_salesforce() {
    let w = world(PROJECTS).await;
    w.hs.seed(
        "p_projects",
        &[
            ("project_name", "Rollout"),
            ("project_code", "PRJ-1"),
            ("project_status", "active"),
        ],
    );
    let sf_id = w.sf.seed(
        "Project__c",
        json!({"Name": "Migration", "External_Id__c": "PRJ-2", "Status__c": "Planned"}),
    );
    settle_rounds(&w.runner, &w.app, 5).await;
    let projects = w.sf.records("Project__c");
    let rollout = projects
        .iter()
        .find(|p| p.text("External_Id__c") == Some("PRJ-1"))
        .unwrap();
    assert_eq!(rollout.text("Name"), Some("Rollout"));
    assert_eq!(rollout.text("Status__c"), Some("Active"));
    assert!(w.sf.edit(&sf_id, json!({"Status__c": "Done"})));
    settle_rounds(&w.runner, &w.app, 5).await;
    let hs = w.hs.records("p_projects");
    let migration = hs
        .iter()
        .find(|p| p.get("project_code") == Some("PRJ-2"))
        .unwrap();
    assert_eq!(migration.get("project_name"), Some("Migration"));
    assert_eq!(migration.get("project_status"), Some("done"));
    assert_eq!((hs.len(), w.sf.records("Project__c").len()), (2, 2));
}

#[tokio::test]
async fn object_syncs_are_checked() {
    let text = r#"
[destinations.hs]
connector = "hubspot"
[destinations.sf]
connector = "salesforce"
[destinations.pd]
connector = "pipedrive"
[syncs.nokey]
object = "company"
a = "hs"
b = "sf"
change_sources = ["nowhere"]
[syncs.nokey.fields.name]
a = "name"
b = "Name"
[syncs.nokey.fields.parent]
a = "associations.companies"
b = "ParentId"
[syncs.nokey.fields.owner]
a = "associations.contacts"
b = "OwnerId"
link = "ghost"
[syncs.custom]
object = "custom"
a = "hs"
b = "sf"
object_b = "Project"
match = { a = "project_code", b = "External_Id__c" }
[syncs.custom.fields.name]
a = "project_name"
b = "Name"
[syncs.people]
object = "contact"
a = "hs"
b = "sf"
object_a = "contacts"
match = { a = "email", b = "Email" }
[syncs.people.fields.title]
a = "jobtitle"
b = "Title"
[syncs.pd]
object = "deal"
a = "hs"
b = "pd"
match = { a = "leadrelay_deal_key", b = "owner_id" }
[syncs.pd.fields.name]
a = "dealname"
b = "add_time"
[syncs.pd.fields.company]
a = "associations.companies"
b = "org_id"
link = "pd"
[syncs.pd.fields.person]
a = "hubspot_owner_id"
b = "person_id"
[syncs.pd.fields.title]
a = "description"
b = "title"
link = "people"
[syncs.pd.fields.amount]
a = "amount"
b = "value"
[syncs.pdcustom]
object = "custom"
a = "hs"
b = "pd"
object_a = "p_projects"
object_b = "projects"
match = { a = "project_code", b = "custom_fields.code" }
[syncs.pdcustom.fields.name]
a = "project_name"
b = "custom_fields.name"
"#;
    let env = |_: &str| Some("x".to_string());
    let err = match config::load_str(text, "t.toml", &env) {
        Ok(_) => panic!("the bad syncs were accepted"),
        Err(e) => e.to_string(),
    };
    for needle in [
        "syncs.nokey.match",
        "syncs.custom.object_a",
        "syncs.custom.object_b",
        "not a Salesforce custom object",
        "syncs.people.object_a",
        "syncs.people.match",
        "syncs.pd.match.b",
        "Pipedrive's deal search finds records by title or custom_fields.KEY",
        "syncs.pd.fields.name.b",
        "a Pipedrive deal field the sync handles is title, value",
        "syncs.pd.fields.person.b",
        "\"person_id\" holds a Pipedrive record id: name the contact sync",
        "syncs.pd.fields.company.b",
        "link names a company sync, not a deal one",
        "syncs.pd.fields.title.b",
        "\"title\" is not a Pipedrive association",
        "syncs.pdcustom.object_b",
        "only HubSpot and Salesforce have custom objects",
        "syncs.nokey.fields.parent.a",
        "an association names the sync",
        "syncs.nokey.fields.owner.link",
        "no sync named \"ghost\"",
        "syncs.nokey.change_sources[0]",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    // A company's Name is a plain field in Salesforce (read-only only on
    // Leads and Contacts).
    assert!(!err.contains("syncs.nokey.fields.name.b"), "{err}");
    // A deal's value is a Pipedrive deal field.
    assert!(!err.contains("syncs.pd.fields.amount"), "{err}");
}

/// Companies kept in sync by `companies`; deals by `crm`, whose company
/// association is translated through the companies' links.
const DEALS_WITH_COMPANIES: &str = r#"
object = "deal"
match = { a = "leadrelay_deal_key", b = "LeadRelay_Key__c" }
sweep_interval = "0s"

[syncs.crm.fields.name]
a = "dealname"
b = "Name"

[syncs.crm.fields.stage]
a = "dealstage"
b = "StageName"
map = { appointmentscheduled = "Prospecting", qualifiedtobuy = "Qualification" }

[syncs.crm.fields.close]
a = "closedate"
b = "CloseDate"

[syncs.crm.fields.company]
a = "associations.companies"
b = "AccountId"
link = "companies"

[syncs.companies]
object = "company"
a = "hubspot"
b = "salesforce"
poll_interval = "1h"
match = { a = "domain", b = "Website" }

[syncs.companies.fields.name]
a = "name"
b = "Name"
"#;

#[tokio::test]
async fn a_deals_company_is_associated_alike_on_both_sides() {
    let w = world(DEALS_WITH_COMPANIES).await;
    let companies = w.runner("companies");

    let hs_acme =
        w.hs.seed("companies", &[("name", "Acme"), ("domain", "acme.test")]);
    let hs_beta =
        w.hs.seed("companies", &[("name", "Beta"), ("domain", "beta.test")]);
    let sf_acme =
        w.sf.seed("Account", json!({"Name": "Acme", "Website": "acme.test"}));
    let sf_beta =
        w.sf.seed("Account", json!({"Name": "Beta", "Website": "beta.test"}));
    let big = w.hs.seed(
        "deals",
        &[
            ("dealname", "Big deal"),
            ("leadrelay_deal_key", "deal-1"),
            ("dealstage", "qualifiedtobuy"),
            ("closedate", "2027-03-31"),
        ],
    );
    assert!(w.hs.associate_records(("deals", &big), ("companies", &hs_acme)));
    let small = w.sf.seed(
        "Opportunity",
        json!({"Name": "Small deal", "LeadRelay_Key__c": "deal-2", "StageName": "Prospecting",
               "CloseDate": "2027-01-15", "AccountId": sf_beta}),
    );
    companies.round().await;
    settle_rounds(&w.runner, &w.app, 5).await;
    let opp = |key: &str| {
        w.sf.opportunities()
            .into_iter()
            .find(|o| o.text("LeadRelay_Key__c") == Some(key))
            .unwrap()
    };
    let hs_deal_id = |key: &str| {
        w.hs.deals()
            .into_iter()
            .find(|d| d.get("leadrelay_deal_key") == Some(key))
            .unwrap()
            .id
    };
    let hs_companies_of = |deal: &str| w.hs.associated_ids("deals", deal, "companies");
    // Each side gets its own company's id.
    assert_eq!(opp("deal-1").text("AccountId"), Some(sf_acme.as_str()));
    let small_hs = hs_deal_id("deal-2");
    assert_eq!(hs_companies_of(&small_hs), vec![hs_beta.clone()]);

    // Moved to Beta in HubSpot: no modification time moves, the sweep
    // sees it; the old association is gone, not doubled.
    w.hs.dissociate_records(("deals", &big), ("companies", &hs_acme));
    assert!(w.hs.associate_records(("deals", &big), ("companies", &hs_beta)));
    // Moved to Acme in Salesforce.
    assert!(w.sf.edit(&small, json!({"AccountId": sf_acme})));
    settle_rounds(&w.runner, &w.app, 5).await;
    assert_eq!(opp("deal-1").text("AccountId"), Some(sf_beta.as_str()));
    assert_eq!(hs_companies_of(&small_hs), vec![hs_acme.clone()]);

    // A company the companies sync has not seen yet: the association
    // waits (pending) until the company is in Salesforce, then follows.
    let hs_gamma =
        w.hs.seed("companies", &[("name", "Gamma"), ("domain", "gamma.test")]);
    w.hs.dissociate_records(("deals", &big), ("companies", &hs_beta));
    assert!(w.hs.associate_records(("deals", &big), ("companies", &hs_gamma)));
    let h = w.runner.round().await;
    assert_eq!(h.pending, 1, "{h:?}");
    assert_eq!(opp("deal-1").text("AccountId"), Some(sf_beta.as_str()));
    companies.round().await;
    let sf_gamma =
        w.sf.accounts()
            .into_iter()
            .find(|a| a.text("Name") == Some("Gamma"))
            .unwrap()
            .fields["Id"]
            .as_str()
            .unwrap()
            .to_string();
    settle_rounds(&w.runner, &w.app, 5).await;
    assert_eq!(opp("deal-1").text("AccountId"), Some(sf_gamma.as_str()));
    assert_eq!(hs_companies_of(&big), vec![hs_gamma]);
    let h = health(&w.app).await;
    assert_eq!((h.errors, h.pending), (0, 0), "{h:?}");
    for _ in 0..2 {
        let r = w.runner.round().await;
        assert_eq!((r.writes_a, r.writes_b), (h.writes_a, h.writes_b));
    }
}

/// People kept in sync by `people` (HubSpot contacts, Salesforce
/// Contacts); deals by `crm`, whose contacts are the Opportunity's
/// Decision Makers, translated through the people's links.
const DEALS_WITH_CONTACTS: &str = r#"
object = "deal"
match = { a = "leadrelay_deal_key", b = "LeadRelay_Key__c" }
sweep_interval = "0s"

[syncs.crm.fields.name]
a = "dealname"
b = "Name"

[syncs.crm.fields.stage]
a = "dealstage"
b = "StageName"
map = { appointmentscheduled = "Prospecting", qualifiedtobuy = "Qualification" }

[syncs.crm.fields.close]
a = "closedate"
b = "CloseDate"

[syncs.crm.fields.contacts]
a = "associations.contacts"
b = "OpportunityContactRole"
link = "people"
role = "Decision Maker"
conflict = "field_merge"

[syncs.people]
object = "contact"
a = "hubspot"
b = "salesforce"
poll_interval = "1h"

[syncs.people.fields.title]
a = "jobtitle"
b = "Title"
"#;

#[tokio::test]
async fn a_deals_contacts_are_kept_as_a_set_against_the_opportunitys_contact_roles() {
    let w = world_as("Contact", DEALS_WITH_CONTACTS).await;
    let people = w.runner("people");
    let person = |email: &str| {
        w.hs.seed(
            "contacts",
            &[("email", email), ("firstname", "P"), ("jobtitle", "Buyer")],
        )
    };
    let (hs_ada, hs_bo, hs_cy) = (
        person("ada@x.test"),
        person("bo@x.test"),
        person("cy@x.test"),
    );
    let sf_ada = w.sf.seed(
        "Contact",
        json!({"LastName": "Ada", "Email": "ada@x.test", "Title": "Buyer"}),
    );
    let sf_di = w.sf.seed(
        "Contact",
        json!({"LastName": "Di", "Email": "di@x.test", "Title": "CFO"}),
    );
    let big = w.hs.seed(
        "deals",
        &[
            ("dealname", "Big deal"),
            ("leadrelay_deal_key", "deal-1"),
            ("dealstage", "qualifiedtobuy"),
            ("closedate", "2027-03-31"),
        ],
    );
    for c in [&hs_ada, &hs_bo] {
        assert!(w.hs.associate_records(("deals", &big), ("contacts", c)));
    }
    let small = w.sf.seed(
        "Opportunity",
        json!({"Name": "Small deal", "LeadRelay_Key__c": "deal-2", "StageName": "Prospecting",
               "CloseDate": "2027-01-15"}),
    );
    let role = |opp: &str, contact: &str, role: &str| {
        w.sf.seed(
            "OpportunityContactRole",
            json!({"OpportunityId": opp, "ContactId": contact, "Role": role}),
        )
    };
    let di_on_small = role(&small, &sf_di, "Decision Maker");
    // Another role than the field's: neither synced nor ever deleted.
    let influencer = role(&small, &sf_ada, "Influencer");
    people.round().await;
    people.round().await;
    settle_rounds(&w.runner, &w.app, 6).await;

    let sf_contact = |email: &str| {
        w.sf.contacts()
            .into_iter()
            .find(|c| c.text("Email") == Some(email))
            .map(|c| c.id)
            .unwrap()
    };
    let hs_contact = |email: &str| {
        w.hs.contacts()
            .into_iter()
            .find(|c| c.get("email") == Some(email))
            .map(|c| c.id)
            .unwrap()
    };
    let opp = |key: &str| {
        w.sf.opportunities()
            .into_iter()
            .find(|o| o.text("LeadRelay_Key__c") == Some(key))
            .unwrap()
            .id
    };
    // The contacts of each side's deal, as the other side's ids.
    let roles_of = |opp: &str| {
        let mut ids: Vec<String> =
            w.sf.records("OpportunityContactRole")
                .into_iter()
                .filter(|r| {
                    r.text("OpportunityId") == Some(opp) && r.text("Role") == Some("Decision Maker")
                })
                .map(|r| r.text("ContactId").unwrap().to_string())
                .collect();
        ids.sort();
        ids
    };
    let contacts_of = |deal: &str| {
        let mut ids = w.hs.associated_ids("deals", deal, "contacts");
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let (big_sf, small_hs) = (opp("deal-1"), {
        w.hs.deals()
            .into_iter()
            .find(|d| d.get("leadrelay_deal_key") == Some("deal-2"))
            .unwrap()
            .id
    });
    assert_eq!(
        roles_of(&big_sf),
        sorted(vec![sf_ada.clone(), sf_contact("bo@x.test")])
    );
    // Created roles carry the field's role.
    assert_eq!(w.sf.records("OpportunityContactRole").len(), 4);
    assert_eq!(contacts_of(&small_hs), vec![hs_contact("di@x.test")]);
    assert!(w.sf.record(&influencer).is_some());

    // Removed in HubSpot (no modification time moves: the sweep sees it)
    // and in Salesforce (deleted: the sweep sees it); added in Salesforce
    // (the roles' own poll sees it).
    w.hs.dissociate_records(("deals", &big), ("contacts", &hs_bo));
    assert!(w.sf.delete(&di_on_small));
    role(&small, &sf_contact("bo@x.test"), "Decision Maker");
    let sf_log0 = w.sf.requests().count();
    settle_rounds(&w.runner, &w.app, 6).await;
    assert_eq!(roles_of(&big_sf), vec![sf_ada.clone()]);
    assert_eq!(contacts_of(&small_hs), vec![hs_bo.clone()]);
    let log = w.sf.requests().entries();
    let deletes = log[sf_log0..]
        .iter()
        .filter(|r| {
            r.method == "DELETE" && r.path.ends_with("/composite/sobjects") && r.status < 300
        })
        .count();
    assert_eq!(deletes, 1, "one sObject Collections delete");
    assert!(w.sf.record(&influencer).is_some());

    // A contact the people sync has not seen yet: the set waits (pending)
    // until the contact is in Salesforce, then follows whole.
    let hs_eve = person("eve@x.test");
    assert!(w.hs.associate_records(("deals", &big), ("contacts", &hs_eve)));
    let h = w.runner.round().await;
    assert_eq!(h.pending, 1, "{h:?}");
    assert_eq!(roles_of(&big_sf), vec![sf_ada.clone()]);
    people.round().await;
    settle_rounds(&w.runner, &w.app, 6).await;
    let sf_eve = sf_contact("eve@x.test");
    assert_eq!(
        roles_of(&big_sf),
        sorted(vec![sf_ada.clone(), sf_eve.clone()])
    );

    // Changed on both sides at once (Cy added in HubSpot, Ada removed in
    // Salesforce): field_merge keeps both changes.
    assert!(w.hs.associate_records(("deals", &big), ("contacts", &hs_cy)));
    let ada_on_big =
        w.sf.records("OpportunityContactRole")
            .into_iter()
            .find(|r| {
                r.text("OpportunityId") == Some(big_sf.as_str())
                    && r.text("ContactId") == Some(sf_ada.as_str())
            })
            .unwrap()
            .id;
    assert!(w.sf.delete(&ada_on_big));
    let settled0 = health(&w.app).await.conflicts_settled;
    settle_rounds(&w.runner, &w.app, 6).await;
    let sf_cy = sf_contact("cy@x.test");
    assert_eq!(roles_of(&big_sf), sorted(vec![sf_cy, sf_eve]));
    assert_eq!(contacts_of(&big), sorted(vec![hs_cy, hs_eve]));
    let h = health(&w.app).await;
    assert_eq!(h.conflicts_settled - settled0, 1, "{h:?}");
    assert_eq!((h.errors, h.pending), (0, 0), "{h:?}");

    // Settled: further rounds write nothing into either system.
    let sf_log1 = w.sf.requests().count();
    for _ in 0..2 {
        let r = w.runner.round().await;
        assert_eq!((r.writes_a, r.writes_b), (h.writes_a, h.writes_b));
    }
    let log = w.sf.requests().entries();
    assert!(
        log[sf_log1..].iter().all(|r| r.method == "GET"),
        "only reads once settled"
    );
}

#[tokio::test]
async fn contact_role_fields_are_checked() {
    let text = r#"
[destinations.hs]
connector = "hubspot"
[destinations.sf]
connector = "salesforce"
[syncs.people]
object = "contact"
a = "hs"
b = "sf"
[syncs.people.fields.title]
a = "jobtitle"
b = "Title"
[syncs.people.fields.deals]
a = "associations.deals"
b = "OpportunityContactRole"
link = "deals"
[syncs.deals]
object = "deal"
a = "hs"
b = "sf"
match = { a = "leadrelay_deal_key", b = "LeadRelay_Key__c" }
[syncs.deals.fields.contacts]
a = "associations.contacts"
b = "OpportunityContactRole"
link = "people"
role = " "
conflict = "field_merge"
[syncs.deals.fields.name]
a = "dealname"
b = "Name"
role = "Decision Maker"
[syncs.deals.fields.company]
a = "associations.companies"
b = "AccountId"
link = "people"
conflict = "field_merge"
[syncs.back]
object = "deal"
a = "sf"
b = "hs"
match = { a = "LeadRelay_Key__c", b = "leadrelay_deal_key" }
[syncs.back.fields.contacts]
a = "Name"
b = "OpportunityContactRole"
link = "people"
"#;
    let env = |_: &str| Some("x".to_string());
    let err = match config::load_str(text, "t.toml", &env) {
        Ok(_) => panic!("the bad contact roles were accepted"),
        Err(e) => e.to_string(),
    };
    for needle in [
        // A contact role names a Contact, never a Lead.
        "syncs.deals.fields.contacts.b",
        "set person_object = \"Contact\"",
        "syncs.deals.fields.contacts.role",
        // Only deals have contact roles.
        "syncs.people.fields.deals.b",
        "only in an object = \"deal\" sync",
        // A role only means something for contact roles.
        "syncs.deals.fields.name.role",
        // One record on one side: nothing to merge.
        "syncs.deals.fields.company.conflict",
        // The Salesforce object on the HubSpot side; a single field
        // against a set.
        "syncs.back.fields.contacts.b",
        "is a Salesforce object",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    // A set against a set merges.
    assert!(
        !err.contains("syncs.deals.fields.contacts.conflict"),
        "{err}"
    );
}
