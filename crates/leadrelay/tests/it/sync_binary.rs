//! `leadrelay sync backfill` as the real binary, killed with `kill -9`
//! while it creates persons (a write done in Pipedrive whose answer never
//! arrived), then run again: every record once, no duplicates.

use std::process::{Command, Stdio};
use std::time::Duration;

use leadrelay_fakes::common::Fault;
use leadrelay_fakes::hubspot::HubSpotConfig;
use leadrelay_fakes::pipedrive::PipedriveConfig;

use crate::binary::{bin, write_config};
use crate::support::{TestDb, eventually};
use crate::sync::{roomy_hubspot, roomy_pipedrive};

const N: usize = 300;

/// `leadrelay sync backfill crm` with the CRM tokens.
fn backfill(config: &str) -> Command {
    let mut c = Command::new(bin());
    c.args(["sync", "backfill", "crm", "--config", config])
        .env("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)
        .env("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN)
        .env_remove("LEADRELAY_CONFIG")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

#[tokio::test]
async fn a_backfill_killed_with_sigkill_resumes_without_duplicates() {
    let hs = roomy_hubspot().await;
    let pd = roomy_pipedrive().await;
    for i in 0..N {
        hs.seed(
            "contacts",
            &[
                ("email", &format!("person{i}@example.com")),
                ("phone", &format!("+1777{i:07}")),
            ],
        );
    }
    // Every Pipedrive answer comes late: the kill lands between a write
    // and its answer.
    pd.faults()
        .push(Fault::DelayAnswer(Duration::from_millis(10)), 100_000);
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(dir.path()).await;
    let body = format!(
        r#"
[destinations.hubspot]
connector = "hubspot"
base_url = "{}"
allow_private_networks = true
token_env = "HUBSPOT_ACCESS_TOKEN"
rate_limit = "off"
purposes = ["crm"]

[destinations.pipedrive]
connector = "pipedrive"
base_url = "{}"
allow_private_networks = true
token_env = "PIPEDRIVE_API_TOKEN"
rate_limit = "off"
purposes = ["crm"]

[syncs.crm]
object = "contact"
a = "hubspot"
b = "pipedrive"
direction = "a_to_b"

[syncs.crm.fields.phone]
a = "phone"
b = "phone"
"#,
        hs.base_url(),
        pd.base_url()
    );
    let config = write_config(dir.path(), &db, &body);
    let config = config.to_str().unwrap().to_string();
    let mut child = backfill(&config)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    eventually("some persons created", Duration::from_secs(60), || async {
        (pd.persons().len() >= 30).then_some(())
    })
    .await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    let cut = pd.persons().len();
    assert!(cut < N, "killed part-way: {cut}");

    let out = tokio::task::spawn_blocking(move || backfill(&config).output().expect("run"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let persons = pd.persons();
    let mut emails: Vec<String> = persons
        .iter()
        .map(|p| p.primary_email().unwrap_or_default().to_string())
        .collect();
    emails.sort();
    emails.dedup();
    assert_eq!(
        (persons.len(), emails.len()),
        (N, N),
        "one person each, none twice"
    );
    for p in &persons {
        let email = p.primary_email().unwrap_or_default();
        let i: usize = email
            .trim_start_matches("person")
            .trim_end_matches("@example.com")
            .parse()
            .unwrap();
        assert_eq!(
            p.phones.first().map(|x| x.value.as_str()),
            Some(format!("+1777{i:07}").as_str())
        );
    }
}
