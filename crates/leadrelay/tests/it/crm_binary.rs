//! The real binary against the fake CRMs: `kill -9` in the middle of
//! delivering 1,000 leads for 200 people to all three CRMs; `leadrelay
//! check` reading credentials and property definitions; `leadrelay fake`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use leadrelay::store::{DeliveryFilter, DeliveryState};
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig};
use leadrelay_fakes::pipedrive::{FakePipedrive, PipedriveConfig};
use leadrelay_fakes::salesforce::{FakeSalesforce, SalesforceConfig, SalesforceConnectedApp};

use crate::binary::{Server, bin, http_client, open_store, write_config};
use crate::support::{CRM_FORM, TestDb, eventually, full_lead};

const HS_TOKEN: &str = HubSpotConfig::DEFAULT_TOKEN;

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HUBSPOT_ACCESS_TOKEN", HS_TOKEN),
        ("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN),
        (
            "SALESFORCE_CLIENT_ID",
            SalesforceConnectedApp::DEFAULT_CLIENT_ID,
        ),
        (
            "SALESFORCE_CLIENT_SECRET",
            SalesforceConnectedApp::DEFAULT_CLIENT_SECRET,
        ),
        (
            "SALESFORCE_REFRESH_TOKEN",
            SalesforceConfig::DEFAULT_REFRESH_TOKEN,
        ),
    ]
}

fn crm_destinations(hs: &str, pd: &str, sf: &str, hubspot_extra: &str) -> String {
    crm_destinations_with(hs, pd, sf, [hubspot_extra, "", ""])
}

/// The three CRM destinations, with extra settings for each (HubSpot,
/// Pipedrive, Salesforce).
fn crm_destinations_with(hs: &str, pd: &str, sf: &str, extra: [&str; 3]) -> String {
    let [hubspot_extra, pipedrive_extra, salesforce_extra] = extra;
    format!(
        r#"
[destinations.hubspot]
connector = "hubspot"
base_url = "{hs}"
allow_private_networks = true
token_env = "HUBSPOT_ACCESS_TOKEN"
purposes = ["crm"]
timeout = "2s"
{hubspot_extra}

[destinations.pipedrive]
connector = "pipedrive"
base_url = "{pd}"
allow_private_networks = true
token_env = "PIPEDRIVE_API_TOKEN"
purposes = ["crm"]
timeout = "2s"
rate_limit = "off"
{pipedrive_extra}

[destinations.salesforce]
connector = "salesforce"
login_url = "{sf}"
allow_private_networks = true
client_id_env = "SALESFORCE_CLIENT_ID"
client_secret_env = "SALESFORCE_CLIENT_SECRET"
refresh_token_env = "SALESFORCE_REFRESH_TOKEN"
purposes = ["crm"]
timeout = "2s"
{salesforce_extra}

[[routes]]
name = "crm"
destinations = ["hubspot", "pipedrive", "salesforce"]
"#
    )
}

fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("LEADRELAY_CONFIG")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run leadrelay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_stream_leaves_exactly_one_record_per_person_in_every_crm() {
    // HubSpot's and Pipedrive's search indexes lag by seconds: a record
    // created just before the kill is not searchable when the restarted
    // process looks for it. (Salesforce's SOQL is consistent; leadrelay
    // does not use its lagging SOSL search.)
    let hs = FakeHubSpot::start(HubSpotConfig {
        search_index_delay: Duration::from_secs(5),
        ..Default::default()
    })
    .await
    .unwrap();
    let pd = FakePipedrive::start(PipedriveConfig {
        burst_limit: 100_000,
        search_burst_limit: 100_000,
        daily_token_budget: 100_000_000,
        search_index_delay: Duration::from_secs(5),
        ..Default::default()
    })
    .await
    .unwrap();
    let sf = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    // Slow vendors keep deliveries in flight when the process dies.
    hs.faults()
        .push(Fault::DelayAnswer(Duration::from_millis(150)), 100_000);
    pd.faults()
        .push(Fault::DelayAnswer(Duration::from_millis(15)), 100_000);
    sf.faults()
        .push(Fault::DelayAnswer(Duration::from_millis(15)), 100_000);

    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(dir.path()).await;
    let body = format!(
        "{}{}",
        CRM_FORM.replace("[delivery]\n", "[delivery]\nlease = \"3s\"\n"),
        crm_destinations_with(
            &hs.base_url(),
            &pd.base_url(),
            &sf.base_url(),
            [
                "deals = true\nfollow_up_task = true",
                "deals = true\nfollow_up_task = true",
                "deals = true\nfollow_up_task = true\nperson_object = \"Contact\"",
            ]
        )
    );
    let config = write_config(dir.path(), &db, &body);
    let creds = env();
    let mut server = Server::start_with_env(&config, dir.path(), &creds).await;

    // Leads are posted while the CRMs are written, and the process is killed
    // mid-stream: as soon as HubSpot's first deals are written (their answer
    // is still on its way: answers come 150 ms late), with Pipedrive and
    // Salesforce writes in flight too. Each lead has an idempotency key, so
    // the ones whose answer the kill swallowed are posted again after the
    // restart without being stored twice.
    let total = 1000;
    let client = http_client();
    let post = move |base: String, i: usize| {
        let client = client.clone();
        async move {
            let email = format!("k{}@corp{}.io", i % 200, (i % 200) % 5);
            client
                .post(format!("{base}/v1/forms/contact"))
                .header("idempotency-key", format!("lead-{i}"))
                .json(&full_lead(
                    &email,
                    "Kim",
                    &format!("N{i}"),
                    &format!("Corp {}", (i % 200) % 5),
                    &format!("Message {i}"),
                ))
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        }
    };
    let mut posts = Vec::new();
    for c in 0..8 {
        let (post, base) = (post.clone(), server.base.clone());
        posts.push(tokio::spawn(async move {
            let mut unanswered = Vec::new();
            for i in (c..total).step_by(8) {
                match post(base.clone(), i).await {
                    Some(status) => assert_eq!(status, 202),
                    None => unanswered.push(i),
                }
            }
            unanswered
        }));
    }
    eventually(
        "deliveries under way in every CRM",
        Duration::from_secs(60),
        || async {
            (!hs.deals().is_empty() && pd.persons().len() >= 5 && sf.contacts().len() >= 5)
                .then_some(())
        },
    )
    .await;
    server.kill9();
    let mut unanswered = Vec::new();
    for p in posts {
        unanswered.extend(p.await.unwrap());
    }

    let store = open_store(&db).await;
    let all = store
        .list_deliveries(&DeliveryFilter::default(), None, 10_000)
        .await
        .unwrap();
    let delivered_before = all
        .iter()
        .filter(|d| d.state == DeliveryState::Delivered)
        .count();
    assert!(
        delivered_before < all.len(),
        "everything was delivered before the kill; the test proves nothing"
    );
    store.close().await;

    let mut again = Server::start_with_env(&config, dir.path(), &creds).await;
    for i in unanswered {
        let status = post(again.base.clone(), i).await;
        assert!(matches!(status, Some(200 | 202)), "{i}: {status:?}");
    }
    let store = open_store(&db).await;
    let finals = eventually(
        "every delivery finishes",
        Duration::from_secs(180),
        || async {
            let all = store
                .list_deliveries(&DeliveryFilter::default(), None, 10_000)
                .await
                .ok()?;
            (all.len() == 3 * total && all.iter().all(|d| !d.state.is_active())).then_some(all)
        },
    )
    .await;
    again.terminate();
    let not_delivered: Vec<_> = finals
        .iter()
        .filter(|d| d.state != DeliveryState::Delivered)
        .collect();
    assert!(not_delivered.is_empty(), "{:?}", not_delivered.first());
    assert_eq!(hs.contacts().len(), 200, "HubSpot contacts");
    assert_eq!(hs.companies().len(), 5, "HubSpot companies");
    assert_eq!(hs.deals().len(), 200, "HubSpot deals");
    assert_eq!(pd.persons().len(), 200, "Pipedrive persons");
    assert_eq!(pd.organizations().len(), 5, "Pipedrive organizations");
    assert_eq!(pd.deals().len(), 200, "Pipedrive deals");
    // A person with a deal gets no Leads Inbox lead.
    assert_eq!(pd.leads().len(), 0, "Pipedrive leads");
    assert_eq!(sf.contacts().len(), 200, "Salesforce contacts");
    assert_eq!(sf.accounts().len(), 5, "Salesforce accounts");
    assert_eq!(sf.opportunities().len(), 200, "Salesforce opportunities");
    // One note (the message) and one follow-up task per event.
    assert_eq!(hs.notes().len(), total, "HubSpot notes");
    assert_eq!(hs.tasks().len(), total, "HubSpot tasks");
    assert_eq!(pd.notes().len(), total, "Pipedrive notes");
    assert_eq!(pd.activities().len(), total, "Pipedrive activities");
    // Salesforce logs the message as a completed Task too.
    assert_eq!(sf.tasks().len(), 2 * total, "Salesforce tasks");
    let log = again.log_text() + &server.log_text();
    for (_, secret) in env() {
        assert!(!log.contains(secret), "a credential appears in the logs");
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_each_crm_and_names_unknown_mapped_properties() {
    let hs = FakeHubSpot::start(HubSpotConfig::default()).await.unwrap();
    let pd = FakePipedrive::start(PipedriveConfig::default())
        .await
        .unwrap();
    let sf = FakeSalesforce::start(SalesforceConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(dir.path()).await;
    let good = write_config(
        dir.path(),
        &db,
        &format!(
            "{CRM_FORM}{}",
            crm_destinations(
                &hs.base_url(),
                &pd.base_url(),
                &sf.base_url(),
                "deals = true"
            )
        ),
    );
    let path = good.to_str().unwrap().to_string();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run_with_env(&["check", "--config", &path], &env()))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok   hubspot (hubspot): portal 12345678"),
        "{out}"
    );
    assert!(out.contains("pipeline default has stages"), "{out}");
    assert!(!out.contains("WARNING: companies"), "{out}");
    // The legacy numbered API is named, with the way off it.
    assert!(
        out.contains("API version v3") && out.contains("WARNING: api_version \"v3\""),
        "{out}"
    );
    assert!(
        out.contains("ok   pipedrive (pipedrive): company leadrelay fake company"),
        "{out}"
    );
    assert!(
        out.contains("ok   salesforce (salesforce): logged in with the refresh token flow"),
        "{out}"
    );
    // Nothing was written: check is read-only.
    assert!(hs.contacts().is_empty() && pd.persons().is_empty() && sf.leads().is_empty());

    // A portal without the unique company key: a clear warning.
    let mut bare = HubSpotConfig::default();
    bare.custom_properties
        .retain(|p| p.name != "leadrelay_company_key" && p.name != "leadrelay_deal_key");
    let hs_bare = FakeHubSpot::start(bare).await.unwrap();
    let nokey = dir.path().join("nokey.toml");
    std::fs::write(
        &nokey,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace(&hs.base_url(), &hs_bare.base_url()),
    )
    .unwrap();
    let path = nokey.to_str().unwrap().to_string();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run_with_env(&["check", "--config", &path], &env()))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("WARNING: companies have no unique-value property \"leadrelay_company_key\""),
        "{out}"
    );
    assert!(
        out.contains("WARNING: deals have no unique-value property \"leadrelay_deal_key\""),
        "{out}"
    );
    assert!(!out.contains("WARNING: Opportunity"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&good).unwrap().replace(
            "deals = true",
            "[destinations.hubspot.mapping.contact]\nfavourite_colour = \"data.colour\"",
        ),
    )
    .unwrap();
    let path = bad.to_str().unwrap().to_string();
    let (code, out, _) =
        tokio::task::spawn_blocking(move || run_with_env(&["check", "--config", &path], &env()))
            .await
            .unwrap();
    assert_eq!(code, 1);
    assert!(
        out.contains("FAIL hubspot (hubspot)")
            && out.contains("not in the portal: contacts.favourite_colour"),
        "{out}"
    );

    // Configuration problems in a mapping surface offline, with their line.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&good).unwrap().replace(
            "deals = true",
            "[destinations.hubspot.mapping.contact]\nfirstname = \"{{ contact.first_name \"\nlastname = { from = \"contact.last_name\", transform = \"sparkle\" }",
        ),
    )
    .unwrap();
    let (code, _, err) = run_with_env(
        &["check", "--offline", "--config", broken.to_str().unwrap()],
        &env(),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("destinations.hubspot.mapping.contact.firstname: template error"),
        "{err}"
    );
    assert!(
        err.contains(
            "destinations.hubspot.mapping.contact.lastname.transform: unknown transform \"sparkle\""
        ),
        "{err}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("mapping.contact.firstname"))
        .unwrap_or_default();
    assert!(
        line.contains("broken.toml:")
            && line
                .split(':')
                .nth(1)
                .is_some_and(|n| n.parse::<u32>().is_ok()),
        "{line}"
    );

    // A version that is not HubSpot's is refused offline, by its field.
    let unversioned = dir.path().join("unversioned.toml");
    std::fs::write(
        &unversioned,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("deals = true", "deals = true\napi_version = \"v4\""),
    )
    .unwrap();
    let (code, _, err) = run_with_env(
        &[
            "check",
            "--offline",
            "--config",
            unversioned.to_str().unwrap(),
        ],
        &env(),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("destinations.hubspot.api_version")
            && err.contains("\"v3\" or a dated version like \"2026-03\""),
        "{err}"
    );
}

#[test]
fn the_embedded_default_checks_offline_without_crm_credentials() {
    let (code, out, err) = run_with_env(&["check", "--offline"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("destinations.hubspot: switched off"), "{err}");
    assert!(
        err.contains("destinations.pipedrive: switched off"),
        "{err}"
    );
    let (code, out, _) = run_with_env(&["config", "default"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("token_env = \"HUBSPOT_ACCESS_TOKEN\""));
}

#[tokio::test]
async fn the_fake_command_serves_a_vendor_and_prints_how_to_use_it() {
    let mut child = Command::new(bin())
        .args(["fake", "pipedrive", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.contains("Ctrl-C");
            lines.push(line);
            if done {
                let _ = tx.send(lines.join("\n"));
                return;
            }
        }
        let _ = tx.send(lines.join("\n"));
    });
    let text = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("banner");
    let url = text
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .expect("a URL")
        .to_string();
    // The quickstart works with the file `init --fake` writes (not a
    // snippet that clashes with the default configuration).
    assert!(
        text.contains(&format!("leadrelay init --fake pipedrive --fake-url {url}")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "export PIPEDRIVE_API_TOKEN='{}'",
            PipedriveConfig::DEFAULT_TOKEN
        )),
        "{text}"
    );
    let resp = http_client()
        .get(format!("{url}/api/v1/users/me"))
        .header("x-api-token", PipedriveConfig::DEFAULT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}
