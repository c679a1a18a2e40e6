//! CRM sync with Salesforce as one side: a fake HubSpot and a fake
//! Salesforce org (Leads polled by SOQL on `SystemModstamp`, read in small
//! query batches through `nextRecordsUrl`) edited concurrently on both
//! sides while the sync runs; records missing in Salesforce created once.

use std::collections::HashMap;
use std::sync::Arc;

use leadrelay::config;
use leadrelay::sync::SyncRunner;
use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig};
use leadrelay_fakes::salesforce::{
    FakeSalesforce, SalesforceConfig, SalesforceConnectedApp, SalesforceFieldDef,
};
use serde_json::json;

use crate::support::TestApp;
use crate::sync::{
    PEOPLE, app_and_runner, assert_settled_without_echo_writes, edit_while_syncing, email, health,
    hubspot_toml, roomy_hubspot, salesforce_toml, settle_rounds,
};

/// Small query batches, so every poll pages through `nextRecordsUrl`.
const BATCH: usize = 7;

fn toml(hs: &str, sf: &str, fields: &str) -> String {
    let rest = format!(
        r#"

[syncs.crm]
object = "contact"
a = "hubspot"
b = "salesforce"
poll_interval = "1h"
clock_skew = "1s"
{fields}
"#
    );
    [hubspot_toml(hs), salesforce_toml(sf), rest].concat()
}

/// HubSpot's lifecycle stage owned by HubSpot and mapped to the Lead
/// Status picklist; the title owned by Salesforce; the phone by both.
const FIELDS: &str = r#"
[syncs.crm.fields.phone]
a = "phone"
b = "Phone"

[syncs.crm.fields.stage]
a = "lifecyclestage"
b = "Status"
owner = "a"
map = { lead = "Open - Not Contacted", marketingqualifiedlead = "Working - Contacted", other = "Closed - Not Converted" }

[syncs.crm.fields.title]
a = "jobtitle"
b = "Title"
owner = "b"
"#;

const STAGES: [&str; 3] = ["lead", "marketingqualifiedlead", "other"];

fn sf_stage(s: &str) -> &'static str {
    match s {
        "lead" => "Open - Not Contacted",
        "marketingqualifiedlead" => "Working - Contacted",
        _ => "Closed - Not Converted",
    }
}

fn hs_stage(s: &str) -> String {
    match s {
        "Open - Not Contacted" => "lead",
        "Working - Contacted" => "marketingqualifiedlead",
        "Closed - Not Converted" => "other",
        other => other,
    }
    .to_string()
}

struct World {
    hs: FakeHubSpot,
    sf: FakeSalesforce,
    app: TestApp,
    runner: Arc<SyncRunner>,
}

async fn world(fields: &str) -> World {
    let hs = roomy_hubspot().await;
    let mut sf_config = SalesforceConfig {
        query_batch_size: BATCH,
        ..Default::default()
    };
    // The operator's origin-marker field.
    sf_config.custom_fields.push((
        "Lead".into(),
        SalesforceFieldDef::text("LeadRelay_Last_Write__c", "LeadRelay Last Write", 255),
    ));
    let sf = FakeSalesforce::start(sf_config).await.unwrap();
    let text = toml(&hs.base_url(), &sf.base_url(), fields);
    let (app, runner) = app_and_runner(
        &text,
        &[
            ("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN),
            ("SF_CLIENT_ID", SalesforceConnectedApp::DEFAULT_CLIENT_ID),
            (
                "SF_CLIENT_SECRET",
                SalesforceConnectedApp::DEFAULT_CLIENT_SECRET,
            ),
            ("SF_REFRESH_TOKEN", SalesforceConfig::DEFAULT_REFRESH_TOKEN),
        ],
    )
    .await;
    World {
        hs,
        sf,
        app,
        runner,
    }
}

/// Both systems' view: email → (phone, stage, title), in HubSpot's words.
fn views(w: &World) -> [HashMap<String, [Option<String>; 3]>; 2] {
    let hs =
        w.hs.contacts()
            .into_iter()
            .map(|c| {
                let get = |k: &str| c.get(k).filter(|v| !v.is_empty()).map(str::to_string);
                (
                    get("email").unwrap_or_default(),
                    [get("phone"), get("lifecyclestage"), get("jobtitle")],
                )
            })
            .collect();
    let sf =
        w.sf.leads()
            .into_iter()
            .map(|l| {
                let get = |k: &str| l.text(k).filter(|v| !v.is_empty()).map(str::to_string);
                (
                    get("Email").unwrap_or_default().to_lowercase(),
                    [
                        get("Phone"),
                        get("Status").map(|s| hs_stage(&s)),
                        get("Title"),
                    ],
                )
            })
            .collect();
    [hs, sf]
}

async fn settle(w: &World, max: usize) {
    settle_rounds(&w.runner, &w.app, max).await;
}

fn count(log: &[leadrelay_fakes::common::LoggedRequest], method: &str, path_end: &str) -> usize {
    log.iter()
        .filter(|r| r.method == method && r.path.ends_with(path_end) && r.status < 300)
        .count()
}

#[tokio::test]
async fn hubspot_and_salesforce_leads_edited_concurrently_end_identical_without_echo_writes() {
    let w = world(FIELDS).await;
    let mut hs_ids = Vec::new();
    let mut sf_ids = Vec::new();
    for i in 0..PEOPLE {
        let e = email(i);
        let phone = format!("+1555000{i:04}");
        hs_ids.push(w.hs.seed(
            "contacts",
            &[
                ("email", &e),
                ("phone", &phone),
                ("lifecyclestage", "lead"),
                ("jobtitle", "Buyer"),
            ],
        ));
        // Salesforce keeps the address as typed; the sync matches it
        // case-insensitively.
        sf_ids.push(w.sf.seed(
            "Lead",
            json!({"LastName": format!("Person{i}"), "Company": format!("Co {i}"),
                   "Email": e.to_uppercase(), "Phone": phone,
                   "Status": "Open - Not Contacted", "Title": "Buyer"}),
        ));
    }
    // A converted Lead is read-only in Salesforce: the sync leaves it out.
    w.sf.seed(
        "Lead",
        json!({"LastName": "Converted", "Company": "Old", "Email": "old@example.com",
               "IsConverted": true, "Title": "Gone"}),
    );
    let sf_log0 = w.sf.requests().count();
    w.runner.round().await;
    let h0 = health(&w.app).await;
    assert_eq!(h0.records, PEOPLE as u64, "{h0:?}");
    assert_eq!((h0.writes_a, h0.writes_b, h0.errors), (0, 0, 0), "{h0:?}");
    // The Leads in batches of 7: one query, then nextRecordsUrl reads.
    let log = w.sf.requests().entries();
    assert_eq!(count(&log[sf_log0..], "GET", "/query"), 1);
    let more = log[sf_log0..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/query/01g"))
        .count();
    assert_eq!(more, PEOPLE.div_ceil(BATCH) - 1);
    let sf_log1 = w.sf.requests().count();
    let hs_log1 = w.hs.requests().count();

    let (edits_on, stray) = edit_while_syncing(&w.runner, &STAGES, |i, field, side, value| {
        if side == 0 {
            let prop = ["phone", "lifecyclestage", "jobtitle"][field];
            assert!(w.hs.edit("contacts", &hs_ids[i], &[(prop, value)]));
        } else {
            let change = match field {
                0 => json!({"Phone": value}),
                1 => json!({"Status": sf_stage(value)}),
                _ => json!({"Title": value}),
            };
            assert!(w.sf.edit(&sf_ids[i], change));
        }
    })
    .await;
    settle(&w, 20).await;

    let [hs, sf] = views(&w);
    for i in 0..PEOPLE {
        let e = email(i);
        assert_eq!(hs[&e], sf[&e], "{e}: HubSpot vs Salesforce");
    }
    assert!(
        !hs.contains_key("old@example.com"),
        "converted Lead left out"
    );
    let h = assert_settled_without_echo_writes(&w.runner, &w.app, edits_on, stray).await;
    assert_eq!(h.errors, 0, "{h:?}");
    // Salesforce's writes went out as sObject Collections updates (up to
    // 200 records each), never one request per record, and no record was
    // created (every Lead was known).
    let sf_log = w.sf.requests().entries();
    let patches = count(&sf_log[sf_log1..], "PATCH", "/composite/sobjects");
    assert!(
        patches as u64 <= h.writes_b && (h.writes_b == 0 || patches > 0),
        "{patches} {h:?}"
    );
    assert_eq!(count(&sf_log[sf_log1..], "POST", "/composite/sobjects"), 0);
    assert_eq!(w.sf.leads().len(), PEOPLE + 1);
    let hs_log = w.hs.requests().entries();
    assert_eq!(count(&hs_log[hs_log1..], "POST", "/batch/upsert"), 0);
}

#[tokio::test]
async fn records_missing_in_salesforce_are_found_by_email_or_created_once() {
    let w = world(&format!("origin_b = \"LeadRelay_Last_Write__c\"\n{FIELDS}")).await;
    // A first round moves the Salesforce cursor to now.
    w.sf.seed(
        "Lead",
        json!({"LastName": "Marker", "Company": "Acme", "Email": "marker@example.com"}),
    );
    w.runner.round().await;
    // A Lead untouched since 2020: behind the cursor, so no poll shows it;
    // the sync finds it by its address (any case) instead of creating one.
    let old = "2020-01-02T03:04:05.000+0000";
    let existing = w.sf.seed(
        "Lead",
        json!({"LastName": "Known", "Company": "Acme", "Email": "Person3@Example.com",
               "CreatedDate": old, "LastModifiedDate": old, "SystemModstamp": old}),
    );
    for i in 0..12 {
        w.hs.seed(
            "contacts",
            &[
                ("email", &email(i)),
                ("phone", &format!("+1777{i:07}")),
                ("lifecyclestage", "marketingqualifiedlead"),
            ],
        );
    }
    let sf_log0 = w.sf.requests().count();
    let h = w.runner.round().await;
    assert_eq!(h.last_error, None, "{h:?}");
    settle(&w, 5).await;
    let leads = w.sf.leads();
    assert_eq!(leads.len(), 12 + 1, "one Lead per person");
    let known = w.sf.record(&existing).unwrap();
    assert_eq!(known.text("LastName"), Some("Known"));
    assert_eq!(known.text("Status"), Some("Working - Contacted"));
    assert_eq!(known.text("Phone"), Some("+17770000003"));
    let created = leads
        .iter()
        .find(|l| l.text("Email") == Some("person7@example.com"))
        .unwrap();
    assert_eq!(created.text("LastName"), Some("person7"));
    assert_eq!(created.text("Company"), Some("[not provided]"));
    assert_eq!(created.text("Phone"), Some("+17770000007"));
    assert_eq!(created.text("Status"), Some("Working - Contacted"));
    // Every sync write carries the origin marker; the marker is not synced.
    for lead in [&known, created] {
        let marker = lead.text("LeadRelay_Last_Write__c").unwrap_or_default();
        assert!(marker.starts_with("leadrelay sync crm at 20"), "{marker}");
    }
    assert!(
        w.hs.contacts()
            .iter()
            .all(|c| c.get("LeadRelay_Last_Write__c").is_none())
    );
    let marker_lead = leads
        .iter()
        .find(|l| l.text("Email") == Some("marker@example.com"));
    assert_eq!(
        marker_lead.unwrap().text("LeadRelay_Last_Write__c"),
        None,
        "never written"
    );
    // One lookup by email for all of them, one create, one update.
    let log = w.sf.requests().entries();
    assert_eq!(count(&log[sf_log0..], "POST", "/composite/sobjects"), 1);
    assert_eq!(count(&log[sf_log0..], "PATCH", "/composite/sobjects"), 1);

    // A value the restricted picklist does not hold (not in the map) is
    // refused by Salesforce with its error code; the write stays pending.
    w.hs.seed(
        "contacts",
        &[
            ("email", "odd@example.com"),
            ("lifecyclestage", "evangelist"),
        ],
    );
    let h = w.runner.round().await;
    assert_eq!(h.pending, 1, "{h:?}");
    let err = h.last_error.clone().unwrap_or_default();
    assert!(
        err.contains("salesforce") && err.contains("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        "{err}"
    );
    assert!(
        !w.sf
            .leads()
            .iter()
            .any(|l| l.text("Email") == Some("odd@example.com"))
    );
}

#[tokio::test]
async fn salesforce_sync_fields_are_checked() {
    let text = r#"
[destinations.hs]
connector = "hubspot"
[destinations.sf]
connector = "salesforce"
[syncs.bad]
object = "contact"
a = "hs"
b = "sf"
origin_b = "Last Write"
[syncs.bad.fields.mail]
a = "phone"
b = "Email"
[syncs.bad.fields.name]
a = "firstname"
b = "Name"
[syncs.bad.fields.stamp]
a = "lastname"
b = "Last Name"
"#;
    let env = |_: &str| Some("x".to_string());
    let err = match config::load_str(text, "t.toml", &env) {
        Ok(_) => panic!("the bad sync was accepted"),
        Err(e) => e.to_string(),
    };
    for needle in [
        "syncs.bad.fields.mail.b",
        "Email matches the records",
        "syncs.bad.fields.name.b",
        "read-only Salesforce field",
        "syncs.bad.fields.stamp.b",
        "not a Salesforce field API name",
        "syncs.bad.origin_b",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
}
