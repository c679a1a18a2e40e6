//! CRM-to-CRM sync: a fake HubSpot and a fake Pipedrive edited concurrently
//! on both sides while the sync polls and writes; a conflict under
//! `review` decided through the API and written to both systems.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use leadrelay::config;
use leadrelay::store::Role;
use leadrelay::sync::{Health, SyncRunner};
use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig};
use leadrelay_fakes::pipedrive::{FakePipedrive, PipedriveConfig};
use leadrelay_fakes::salesforce::{SalesforceConfig, SalesforceConnectedApp};
use serde_json::{Value, json};

use crate::admin::key;
use crate::support::TestApp;

pub(crate) const PEOPLE: usize = 40;
const EDITS: usize = 1000;

/// The `hubspot` destination of the sync tests, at the fake's `base`.
pub(crate) fn hubspot_toml(base: &str) -> String {
    format!(
        r#"
[destinations.hubspot]
connector = "hubspot"
base_url = "{base}"
allow_private_networks = true
token_env = "HUBSPOT_ACCESS_TOKEN"
rate_limit = "off"
purposes = ["crm"]
"#
    )
}

/// The `salesforce` destination of the sync tests (refresh-token login),
/// whose people are Leads.
pub(crate) fn salesforce_toml(login_url: &str) -> String {
    salesforce_toml_as(login_url, "Lead")
}

/// The `salesforce` destination of the sync tests whose people are
/// `person_object` (`Lead` or `Contact`).
pub(crate) fn salesforce_toml_as(login_url: &str, person_object: &str) -> String {
    format!(
        r#"
[destinations.salesforce]
connector = "salesforce"
login_url = "{login_url}"
allow_private_networks = true
client_id_env = "SF_CLIENT_ID"
client_secret_env = "SF_CLIENT_SECRET"
refresh_token_env = "SF_REFRESH_TOKEN"
person_object = "{person_object}"
rate_limit = "off"
purposes = ["crm"]
"#
    )
}

/// The env of a HubSpot + Salesforce sync test: the fakes' credentials.
pub(crate) const HS_SF_ENV: [(&str, &str); 4] = [
    ("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN),
    ("SF_CLIENT_ID", SalesforceConnectedApp::DEFAULT_CLIENT_ID),
    (
        "SF_CLIENT_SECRET",
        SalesforceConnectedApp::DEFAULT_CLIENT_SECRET,
    ),
    ("SF_REFRESH_TOKEN", SalesforceConfig::DEFAULT_REFRESH_TOKEN),
];

/// Another sync of the config `text` (run by the test, on the app's
/// store), beside the `crm` runner of [`app_and_runner`].
pub(crate) fn runner_of(text: &str, name: &str, env: &[(&str, &str)], app: &TestApp) -> SyncRunner {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |k: &str| env.get(k).cloned();
    let cfg = config::load_str(text, "test.toml", &lookup).unwrap().config;
    SyncRunner::build(name, &cfg, &lookup, app.store.clone()).unwrap()
}

/// The `pipedrive` destination of the sync tests.
pub(crate) fn pipedrive_toml(base: &str) -> String {
    format!(
        r#"
[destinations.pipedrive]
connector = "pipedrive"
base_url = "{base}"
allow_private_networks = true
token_env = "PIPEDRIVE_API_TOKEN"
rate_limit = "off"
purposes = ["crm"]
"#
    )
}

fn toml(hs: &str, pd: &str, fields: &str) -> String {
    let rest = format!(
        r#"

[syncs.crm]
object = "contact"
a = "hubspot"
b = "pipedrive"
poll_interval = "1h"
clock_skew = "1s"
{fields}
"#
    );
    [hubspot_toml(hs), pipedrive_toml(pd), rest].concat()
}

const FIELDS: &str = r#"
[syncs.crm.fields.phone]
a = "phone"
b = "phone"

[syncs.crm.fields.stage]
a = "lifecyclestage"
b = "custom_fields.stage"
owner = "a"
map = { lead = "Lead", marketingqualifiedlead = "MQL", salesqualifiedlead = "SQL", customer = "Customer" }

[syncs.crm.fields.title]
a = "jobtitle"
b = "custom_fields.title"
owner = "b"
"#;

struct World {
    hs: FakeHubSpot,
    pd: FakePipedrive,
    app: TestApp,
    runner: Arc<SyncRunner>,
}

/// A fake HubSpot whose limits no test round reaches.
pub(crate) async fn roomy_hubspot() -> FakeHubSpot {
    FakeHubSpot::start(HubSpotConfig {
        search_per_second: 10_000,
        rolling_limit: 100_000,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A fake Pipedrive whose limits no test round reaches.
pub(crate) async fn roomy_pipedrive() -> FakePipedrive {
    FakePipedrive::start(PipedriveConfig {
        burst_limit: 100_000,
        search_burst_limit: 100_000,
        daily_token_budget: 100_000_000,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The app of config `text` with `env`, after its own first sync round
/// (nothing to see yet; it then sleeps for the hour), and the test's own
/// runner of sync `crm` on the app's store: the test drives the rounds.
pub(crate) async fn app_and_runner(text: &str, env: &[(&str, &str)]) -> (TestApp, Arc<SyncRunner>) {
    let mut builder = TestApp::builder(text);
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    let app = builder.start().await;
    crate::support::eventually(
        "the app's first sync round",
        Duration::from_secs(10),
        || async { health(&app).await.last_round_at.map(|_| ()) },
    )
    .await;
    let runner = Arc::new(runner_of(text, "crm", env, &app));
    (app, runner)
}

async fn world(fields: &str) -> World {
    let hs = roomy_hubspot().await;
    let pd = roomy_pipedrive().await;
    let text = toml(&hs.base_url(), &pd.base_url(), fields);
    let (app, runner) = app_and_runner(
        &text,
        &[
            ("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN),
            ("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN),
        ],
    )
    .await;
    World {
        hs,
        pd,
        app,
        runner,
    }
}

/// The stored health of sync `crm`.
pub(crate) async fn health(app: &TestApp) -> Health {
    health_of(app, "crm").await
}

/// The stored health of sync `name`.
pub(crate) async fn health_of(app: &TestApp, name: &str) -> Health {
    let v = app
        .store
        .kv_get(&format!("sync:{name}:health:"))
        .await
        .unwrap();
    v.map(|v| serde_json::from_str(&v).unwrap())
        .unwrap_or_default()
}

pub(crate) fn email(i: usize) -> String {
    format!("person{i}@example.com")
}

/// Both systems' view: email → (phone, stage, title), in HubSpot's words.
fn views(w: &World) -> [HashMap<String, [Option<String>; 3]>; 2] {
    let rev = |s: &str| {
        match s {
            "Lead" => "lead",
            "MQL" => "marketingqualifiedlead",
            "SQL" => "salesqualifiedlead",
            "Customer" => "customer",
            other => other,
        }
        .to_string()
    };
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
    let pd =
        w.pd.persons()
            .into_iter()
            .map(|p| {
                let cf = |k: &str| {
                    p.custom_fields
                        .get(k)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                (
                    p.primary_email().unwrap_or_default().to_string(),
                    [
                        p.phones.first().map(|x| x.value.clone()),
                        cf("stage").map(|s| rev(&s)),
                        cf("title"),
                    ],
                )
            })
            .collect();
    [hs, pd]
}

/// Rounds until one writes nothing (at most `max`); the rounds run.
pub(crate) async fn settle_rounds(runner: &SyncRunner, app: &TestApp, max: usize) -> usize {
    for n in 1..=max {
        let before = health(app).await;
        let after = runner.round().await;
        if after.writes_a == before.writes_a && after.writes_b == before.writes_b {
            return n;
        }
    }
    panic!(
        "the sync did not settle in {max} rounds: {:?}",
        health(app).await
    );
}

async fn settle(w: &World, max: usize) -> usize {
    settle_rounds(&w.runner, &w.app, max).await
}

fn writes(log: &[leadrelay_fakes::common::LoggedRequest], method: &str, path_part: &str) -> usize {
    log.iter()
        .filter(|r| r.method == method && r.path.contains(path_part) && r.status < 300)
        .count()
}

/// `EDITS` random edits of `PEOPLE` records, made by `edit(person, field,
/// side, value)` — field 0 the phone (owned by both), 1 the stage (owned
/// by `a`; `stages` in `a`'s words), 2 the title (owned by `b`) — while
/// the runner's rounds run, letting a round finish every 100 edits.
/// Returns per side the edits of fields it may change and the stray edits
/// of fields the other side owns (to be undone).
pub(crate) async fn edit_while_syncing(
    runner: &Arc<SyncRunner>,
    stages: &[&str],
    mut edit: impl FnMut(usize, usize, usize, &str),
) -> ([usize; 2], [usize; 2]) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let rounds = {
        let runner = runner.clone();
        let (stop, done) = (stop.clone(), done.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                runner.round().await;
                done.fetch_add(1, Ordering::AcqRel);
            }
            done.load(Ordering::Acquire)
        })
    };
    let mut edits_on = [0usize; 2];
    let mut stray = [0usize; 2];
    for n in 0..EDITS {
        let i = rand::random_range(0..PEOPLE);
        let field = rand::random_range(0..3);
        let side = rand::random_range(0..2);
        let value = match field {
            0 => format!("+1666{n:07}"),
            1 => stages[rand::random_range(0..stages.len())].to_string(),
            _ => format!("Title {n}"),
        };
        edit(i, field, side, &value);
        // The stage is a's, the title b's.
        if (side, field) == (0, 2) || (side, field) == (1, 1) {
            stray[side] += 1;
        } else {
            edits_on[side] += 1;
        }
        if n % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if n % 100 == 99 {
            let seen = done.load(Ordering::Acquire);
            while done.load(Ordering::Acquire) == seen {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    stop.store(true, Ordering::Release);
    let during = rounds.await.unwrap();
    assert!(during >= 10, "rounds ran while editing: {during}");
    (edits_on, stray)
}

/// After [`edit_while_syncing`] and settling: the other side's edits of
/// owned fields were undone (ownership); further rounds write nothing (no
/// ping-pong); every write carried a change (no more writes into a system
/// than changes made on the other side plus undone stray edits); echoes
/// were dropped. Returns the health figures.
pub(crate) async fn assert_settled_without_echo_writes(
    runner: &SyncRunner,
    app: &TestApp,
    edits_on: [usize; 2],
    stray: [usize; 2],
) -> Health {
    let h = health(app).await;
    assert!(h.restores > 0, "{h:?}");
    for _ in 0..3 {
        let r = runner.round().await;
        assert_eq!(
            (r.writes_a, r.writes_b),
            (h.writes_a, h.writes_b),
            "ping-pong: {r:?}"
        );
    }
    assert!(
        h.writes_b as usize <= edits_on[0] + stray[1],
        "{h:?} {edits_on:?} {stray:?}"
    );
    assert!(
        h.writes_a as usize <= edits_on[1] + stray[0],
        "{h:?} {edits_on:?} {stray:?}"
    );
    assert!(
        h.echoes_dropped > 0 && h.echoes_dropped <= h.values_written,
        "{h:?}"
    );
    h
}

#[tokio::test]
async fn two_crms_edited_concurrently_end_identical_without_echo_writes() {
    let w = world(FIELDS).await;
    let stages = [
        "lead",
        "marketingqualifiedlead",
        "salesqualifiedlead",
        "customer",
    ];
    let pd_stage = |s: &str| match s {
        "lead" => "Lead",
        "marketingqualifiedlead" => "MQL",
        "salesqualifiedlead" => "SQL",
        _ => "Customer",
    };
    let mut hs_ids = Vec::new();
    let mut pd_ids = Vec::new();
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
        let id = w.pd.seed_person(&format!("Person {i}"), Some(&e));
        w.pd.edit_person(
            id,
            &[
                ("phone", &phone),
                ("custom_fields.stage", "Lead"),
                ("custom_fields.title", "Buyer"),
            ],
        );
        pd_ids.push(id);
    }
    // The first round sees every record on both sides, already equal.
    w.runner.round().await;
    let h0 = health(&w.app).await;
    assert_eq!(h0.records, PEOPLE as u64);
    assert_eq!((h0.writes_a, h0.writes_b), (0, 0), "{h0:?}");
    let hs_log0 = w.hs.requests().entries().len();
    let pd_log0 = w.pd.requests().entries().len();

    // 1,000 edits on both sides while the sync runs rounds.
    let (edits_on, stray) = edit_while_syncing(&w.runner, &stages, |i, field, side, value| {
        if side == 0 {
            let prop = ["phone", "lifecyclestage", "jobtitle"][field];
            assert!(w.hs.edit("contacts", &hs_ids[i], &[(prop, value)]));
        } else {
            let (f, v) = match field {
                0 => ("phone", value.to_string()),
                1 => ("custom_fields.stage", pd_stage(value).to_string()),
                _ => ("custom_fields.title", value.to_string()),
            };
            assert!(w.pd.edit_person(pd_ids[i], &[(f, &v)]));
        }
    })
    .await;
    // Modification times are second-precision in Pipedrive: let the
    // overlap window pass over the last edits, then settle.
    settle(&w, 20).await;

    let [hs, pd] = views(&w);
    for i in 0..PEOPLE {
        let e = email(i);
        let (a, b) = (&hs[&e], &pd[&e]);
        assert_eq!(a, b, "{e}: HubSpot {a:?} vs Pipedrive {b:?}");
    }
    let h = assert_settled_without_echo_writes(&w.runner, &w.app, edits_on, stray).await;
    // The sync's write count is what Pipedrive received (one PATCH each).
    let pd_log = w.pd.requests().entries();
    assert_eq!(
        writes(&pd_log[pd_log0..], "PATCH", "/api/v2/persons/"),
        h.writes_b as usize
    );
    let hs_log = w.hs.requests().entries();
    let hs_batches = writes(&hs_log[hs_log0..], "POST", "/batch/update");
    assert!(hs_batches as u64 <= h.writes_a && (h.writes_a == 0 || hs_batches > 0));
    assert_eq!(h.errors, 0, "{h:?}");
}

/// Ada's title under `review`, changed in both systems since the last
/// round (HubSpot: CTO, Pipedrive: VP Engineering): a conflict waits.
async fn ada_in_conflict() -> World {
    let w = world(
        r#"
[syncs.crm.fields.title]
a = "jobtitle"
b = "custom_fields.title"
conflict = "review"
"#,
    )
    .await;
    let hs_id = w.hs.seed(
        "contacts",
        &[("email", "ada@example.com"), ("jobtitle", "Engineer")],
    );
    let pd_id = w.pd.seed_person("Ada", Some("ada@example.com"));
    w.pd.edit_person(pd_id, &[("custom_fields.title", "Engineer")]);
    w.runner.round().await;
    w.hs.edit("contacts", &hs_id, &[("jobtitle", "CTO")]);
    w.pd.edit_person(pd_id, &[("custom_fields.title", "VP Engineering")]);
    w.runner.round().await;
    w
}

#[tokio::test]
async fn a_review_conflict_waits_then_the_decision_reaches_both_systems() {
    let w = ada_in_conflict().await;
    w.runner.round().await;
    let [hs, pd] = views(&w);
    let h = health(&w.app).await;
    assert_eq!(
        hs["ada@example.com"][2].as_deref(),
        Some("CTO"),
        "nothing written {h:?}"
    );
    assert_eq!(
        pd["ada@example.com"][2].as_deref(),
        Some("VP Engineering"),
        "{h:?}"
    );

    let admin = key(&w.app, "ops", Role::Admin).await;
    let list: Value = w
        .app
        .client
        .get(w.app.url("/api/v1/review?status=open"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    let item = &items[0];
    assert_eq!(item["kind"], "sync_conflict");
    assert_eq!(item["details"]["a"]["value"], "CTO");
    assert_eq!(item["details"]["b"]["value"], "VP Engineering");
    assert_eq!(item["details"]["b"]["system"], "pipedrive");
    let id = item["id"].as_str().unwrap();

    let decide = |body: Value| {
        let req = w
            .app
            .client
            .post(w.app.url(&format!("/api/v1/review/{id}/decide")))
            .bearer_auth(&admin)
            .json(&body);
        async move { req.send().await.unwrap() }
    };
    assert_eq!(
        decide(json!({"take": "a", "value": "x"})).await.status(),
        422
    );
    assert_eq!(decide(json!({"take": "c"})).await.status(), 422);
    let r = decide(json!({"value": "Chief Technology Officer"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        decide(json!({"take": "b"})).await.status(),
        409,
        "already decided"
    );
    w.runner.round().await;
    w.runner.round().await;
    let [hs, pd] = views(&w);
    assert_eq!(
        hs["ada@example.com"][2].as_deref(),
        Some("Chief Technology Officer")
    );
    assert_eq!(
        pd["ada@example.com"][2].as_deref(),
        Some("Chief Technology Officer")
    );
    let h = health(&w.app).await;
    assert_eq!(
        (h.writes_a, h.writes_b, h.conflicts_for_review),
        (1, 1, 1),
        "{h:?}"
    );

    let syncs = w.app.get_json("/api/v1/syncs", &admin).await;
    assert_eq!(syncs["syncs"][0]["sync"], "crm");
    assert_eq!(syncs["syncs"][0]["writes_b"], 1);
}

/// `transform_a` / `transform_b` shape every value carried into a system
/// (after the value map): the system a value came from keeps its own
/// spelling, the transformed writes come back as echoes and nothing
/// ping-pongs; a value a transform refuses is not written and the health
/// names the reason.
#[tokio::test]
async fn transforms_shape_the_values_written_each_way_without_echo_writes() {
    let w = world(
        r#"
[syncs.crm.fields.phone]
a = "phone"
b = "phone"
transform_b = "e164:US"

[syncs.crm.fields.title]
a = "jobtitle"
b = "custom_fields.title"
transform_a = ["trim", "title"]
transform_b = ["trim", "upper"]
"#,
    )
    .await;
    const ADA: &str = "ada@example.com";
    let hs_id = w.hs.seed(
        "contacts",
        &[
            ("email", ADA),
            ("phone", "(415) 555-0100"),
            ("jobtitle", "head of data"),
        ],
    );
    settle(&w, 5).await;
    let [hs, pd] = views(&w);
    assert_eq!(pd[ADA][0].as_deref(), Some("+14155550100"));
    assert_eq!(pd[ADA][2].as_deref(), Some("HEAD OF DATA"));
    // HubSpot keeps its own spelling: its values were not written back.
    assert_eq!(hs[ADA][0].as_deref(), Some("(415) 555-0100"));
    assert_eq!(hs[ADA][2].as_deref(), Some("head of data"));
    let h = health(&w.app).await;
    assert_eq!((h.writes_a, h.writes_b), (0, 1), "{h:?}");

    // A Pipedrive edit reaches HubSpot through a's transforms; Pipedrive
    // keeps what was typed there.
    let pd_id =
        w.pd.persons()
            .into_iter()
            .find(|p| p.primary_email() == Some(ADA))
            .unwrap()
            .id;
    w.pd.edit_person(pd_id, &[("custom_fields.title", "  chief of staff ")]);
    settle(&w, 5).await;
    let [hs, pd] = views(&w);
    assert_eq!(hs[ADA][2].as_deref(), Some("Chief Of Staff"));
    assert_eq!(pd[ADA][2].as_deref(), Some("  chief of staff "));
    let h = health(&w.app).await;
    assert_eq!((h.writes_a, h.writes_b), (1, 1), "{h:?}");
    assert!(h.echoes_dropped >= 2, "{h:?}");
    for _ in 0..2 {
        let r = w.runner.round().await;
        assert_eq!((r.writes_a, r.writes_b), (1, 1), "ping-pong: {r:?}");
    }

    // A phone the transform cannot read is not written; the health says why.
    w.hs.edit("contacts", &hs_id, &[("phone", "call me maybe")]);
    let r = w.runner.round().await;
    assert_eq!((r.writes_a, r.writes_b), (1, 1), "{r:?}");
    let err = r.last_error.unwrap_or_default();
    assert!(
        err.contains("transform_b") && err.contains("phone"),
        "{err}"
    );
    assert!(!err.contains(ADA), "the error names no email: {err}");
    assert_eq!(views(&w)[1][ADA][0].as_deref(), Some("+14155550100"));
    // Once it is a number again, it is written.
    w.hs.edit("contacts", &hs_id, &[("phone", "415.555.0199")]);
    settle(&w, 5).await;
    assert_eq!(views(&w)[1][ADA][0].as_deref(), Some("+14155550199"));
}

#[tokio::test]
async fn sync_definitions_are_checked() {
    let text = r#"
[destinations.hs]
connector = "hubspot"
[destinations.hook]
connector = "webhook"
url_env = "HOOK_URL"
[syncs.bad]
object = "contact"
a = "hs"
b = "hook"
direction = "a_to_b"
[syncs.bad.fields.stage]
a = "email"
b = "x"
owner = "b"
map = { lead = "Lead", mql = "Lead" }
[syncs.bad.fields.phone]
a = "phone"
b = "phone"
transform_b = ["trim", "sparkle"]
"#;
    let env = |_: &str| Some("x".to_string());
    let err = match config::load_str(text, "t.toml", &env) {
        Ok(_) => panic!("the bad sync was accepted"),
        Err(e) => e.to_string(),
    };
    for needle in [
        "syncs.bad.b",
        "webhook connector",
        "syncs.bad.fields.stage.a",
        "syncs.bad.fields.stage.owner",
        "syncs.bad.fields.stage.map.mql",
        "syncs.bad.fields.phone.transform_b[1]",
        "unknown transform \"sparkle\"",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
}

#[tokio::test]
async fn a_backfill_cut_short_resumes_without_duplicates() {
    let w = world(FIELDS).await;
    const N: usize = 150;
    for i in 0..N {
        w.hs.seed(
            "contacts",
            &[
                ("email", &email(i)),
                ("phone", &format!("+1777{i:07}")),
                ("lifecyclestage", "customer"),
            ],
        );
    }
    // The first backfill is stopped (as a crash would) once Pipedrive has
    // some of the persons.
    let first = {
        let runner = w.runner.clone();
        tokio::spawn(async move { runner.backfill(|_| {}).await })
    };
    crate::support::eventually("some persons created", Duration::from_secs(30), || async {
        (w.pd.persons().len() >= 20).then_some(())
    })
    .await;
    first.abort();
    let _ = first.await;
    let cut = w.pd.persons().len();
    assert!(cut < N, "stopped part-way: {cut}");
    // Again, from a new runner (a restarted process) on the same store.
    let env = |k: &str| match k {
        "HUBSPOT_ACCESS_TOKEN" => Some(HubSpotConfig::DEFAULT_TOKEN.to_string()),
        "PIPEDRIVE_API_TOKEN" => Some(PipedriveConfig::DEFAULT_TOKEN.to_string()),
        _ => None,
    };
    let text = toml(&w.hs.base_url(), &w.pd.base_url(), FIELDS);
    let cfg = config::load_str(&text, "test.toml", &env).unwrap().config;
    let runner = SyncRunner::build("crm", &cfg, &env, w.app.store.clone()).unwrap();
    let mut progress = 0;
    let (h, end) = runner.backfill(|n| progress += n).await;
    assert_eq!(end, leadrelay::sync::BackfillEnd::Done);
    assert!(progress >= (N - cut) as u64, "{progress}");
    assert_eq!(h.last_error, None);
    let persons = w.pd.persons();
    let mut emails: Vec<_> = persons
        .iter()
        .map(|p| p.primary_email().unwrap_or_default().to_string())
        .collect();
    emails.sort();
    emails.dedup();
    assert_eq!(
        (persons.len(), emails.len()),
        (N, N),
        "one person each, no duplicates"
    );
    let [hs, pd] = views(&w);
    for i in 0..N {
        assert_eq!(hs[&email(i)][..2], pd[&email(i)][..2], "{}", email(i));
    }
}

#[tokio::test]
async fn a_sync_conflict_is_decided_on_the_dashboard_and_counted_on_metrics() {
    let w = ada_in_conflict().await;

    let metrics = || async {
        w.app
            .client
            .get(w.app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let m = metrics().await;
    assert!(
        m.contains(r#"leadrelay_sync_conflicts_waiting{sync="crm"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"leadrelay_sync_records{sync="crm"} 1"#), "{m}");
    assert!(
        m.contains(r#"leadrelay_sync_cursor_lag_seconds{sync="crm",system="pipedrive"}"#),
        "{m}"
    );

    let admin = crate::dashboard::Ui::new(&w.app, Role::Admin, "ops").await;
    let viewer = crate::dashboard::Ui::new(&w.app, Role::Viewer, "look").await;
    let (status, page) = viewer.get("/ui/syncs").await;
    assert_eq!(status, 200);
    assert!(page.contains("hubspot ↔ pipedrive"), "{page}");
    let (_, review) = admin.get("/ui/review").await;
    assert!(
        review.contains("Keep pipedrive&#x27;s value") || review.contains("Keep pipedrive's value"),
        "{review}"
    );
    assert!(review.contains("VP Engineering") && review.contains("CTO"));
    let (_, seen_by_viewer) = viewer.get("/ui/review").await;
    assert!(
        !seen_by_viewer.contains("/decide"),
        "no buttons for viewers"
    );

    let list: Value = w
        .app
        .client
        .get(w.app.url("/api/v1/review?status=open"))
        .bearer_auth(key(&w.app, "api", Role::Admin).await)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["items"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/ui/review/{id}/decide");
    // A viewer may not decide; a form without its CSRF token is refused;
    // closing it without a decision is refused (the field stays held).
    assert_eq!(viewer.post(&path, &[("take", "b")]).await.0, 403);
    let no_csrf = w
        .app
        .client
        .post(w.app.url(&path))
        .header("cookie", &admin.cookie)
        .form(&[("take", "b")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    let (status, _, _) = admin
        .post(&format!("/ui/review/{id}"), &[("status", "dismissed")])
        .await;
    assert_eq!(status, 409);
    assert_eq!(admin.post(&path, &[("take", "c")]).await.0, 400);
    let (status, location, _) = admin.post(&path, &[("take", "b")]).await;
    assert_eq!(
        (status.as_u16(), location.as_str()),
        (303, "/ui/review?notice=decided")
    );
    assert_eq!(
        admin.post(&path, &[("take", "a")]).await.0,
        409,
        "decided once"
    );

    w.runner.round().await;
    w.runner.round().await;
    let [hs, pd] = views(&w);
    assert_eq!(hs["ada@example.com"][2].as_deref(), Some("VP Engineering"));
    assert_eq!(pd["ada@example.com"][2].as_deref(), Some("VP Engineering"));
    let m = metrics().await;
    assert!(
        m.contains(r#"leadrelay_sync_conflicts_waiting{sync="crm"} 0"#),
        "{m}"
    );
    assert!(
        m.contains(r#"leadrelay_sync_writes{sync="crm",system="hubspot"} 1"#),
        "{m}"
    );
}
