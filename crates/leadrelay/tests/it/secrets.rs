//! Secret settings never show: every env var a destination reads (webhook
//! URLs, the Slack webhook URL, tokens) is set to a canary value, every
//! delivery fails (connection refused, a reset connection, an unknown host,
//! a 500 that echoes the request path), and then every output is scanned:
//! the admin API for admins and viewers, the dashboard pages, the CLI in
//! JSON and as tables, `leadrelay check`, and the server's own log.

use std::process::Command;
use std::time::Duration;

use leadrelay::auth::generate_key;
use leadrelay::store::{DeliveryState, Role};
use leadrelay_fakes::common::Fault;
use serde_json::Value;

use crate::binary::{FORM, Server, bin, free_port, open_store, write_config};
use crate::support::{Receiver, TestDb, eventually, lead};

/// The secret part of each canary value: none may appear in any output.
const CANARIES: &[&str] = &[
    "CANARYZAP123",
    "zapsecretpath",
    "CANARYMAKE456",
    "makesecretpath",
    "CANARYCRM789",
    "crmsecretpath",
    "CANARYSLACK000",
    "slacksecretpath",
    "CANARYHUBSPOTTOKEN",
    "CANARYPIPEDRIVETOKEN",
];

fn assert_clean(what: &str, text: &str) {
    for c in CANARIES {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(c)).collect();
        assert!(
            lines.is_empty(),
            "{what} shows the secret {c:?}:\n{lines:#?}"
        );
    }
}

fn run_with_env(args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("LEADRELAY_CONFIG")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run leadrelay");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn sign_in(client: &reqwest::Client, base: &str, key: &str) -> String {
    let page = client.get(format!("{base}/ui/login")).send().await.unwrap();
    let cookie = page
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .expect("a CSRF token")
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let resp = client
        .post(format!("{base}/ui/login"))
        .header("cookie", cookie)
        .form(&[("key", key), ("csrf", &csrf), ("next", "/ui/leads")])
        .send()
        .await
        .unwrap();
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("lr_session="))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

fn config_body(closed: u16) -> String {
    format!(
        r#"{FORM}
[delivery]
poll_interval = "100ms"
timeout = "1s"
[delivery.retry]
base = "50ms"
cap = "100ms"
max_attempts = 4

[destinations.zapier]
connector = "webhook"
preset = "zapier"
url_env = "ZAPIER_WEBHOOK_URL"
allow_private_networks = true
purposes = ["crm"]

[destinations.make]
connector = "webhook"
preset = "make"
url_env = "MAKE_WEBHOOK_URL"
purposes = ["crm"]

[destinations.crm_webhook]
connector = "webhook"
preset = "crm"
url_env = "CRM_WEBHOOK_URL"
allow_private_networks = true
purposes = ["crm"]

[destinations.slack]
connector = "slack"
webhook_url_env = "SLACK_WEBHOOK_URL"
allow_private_networks = true
purposes = ["crm"]

[destinations.hubspot]
connector = "hubspot"
token_env = "HUBSPOT_ACCESS_TOKEN"
base_url = "http://127.0.0.1:{closed}"
allow_private_networks = true
purposes = ["crm"]

[destinations.pipedrive]
connector = "pipedrive"
token_env = "PIPEDRIVE_API_TOKEN"
base_url = "http://127.0.0.1:{closed}"
allow_private_networks = true
purposes = ["crm"]

[[routes]]
name = "everything"
destinations = ["zapier", "make", "crm_webhook", "slack", "hubspot", "pipedrive"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_urls_and_tokens_appear_in_no_output() {
    let receiver = Receiver::start().await;
    let closed = free_port();
    // The receiver's real path is /hook; the secret rides in the query,
    // where Zapier-style "secret URL" tokens often are.
    let crm_url = format!("{}?token=CANARYCRM789&p=crmsecretpath", receiver.url());
    let echo = "no hook at /hook?token=CANARYCRM789&p=crmsecretpath".to_string();
    receiver.faults().push(Fault::Reset, 1);
    receiver.fail_next(500, &echo, 1);
    receiver
        .faults()
        .push(Fault::Delay(Duration::from_secs(3)), 1);
    receiver.fail_next(404, &echo, 1);
    let env: Vec<(&str, String)> = vec![
        (
            "ZAPIER_WEBHOOK_URL",
            format!("http://127.0.0.1:{closed}/hooks/catch/CANARYZAP123/zapsecretpath/"),
        ),
        (
            "MAKE_WEBHOOK_URL",
            "https://hook.canary-unknown.invalid/CANARYMAKE456/makesecretpath".into(),
        ),
        ("CRM_WEBHOOK_URL", crm_url),
        (
            "SLACK_WEBHOOK_URL",
            format!("http://127.0.0.1:{closed}/services/T000/CANARYSLACK000/slacksecretpath"),
        ),
        ("HUBSPOT_ACCESS_TOKEN", "pat-na1-CANARYHUBSPOTTOKEN".into()),
        ("PIPEDRIVE_API_TOKEN", "CANARYPIPEDRIVETOKEN".into()),
    ];
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(dir.path()).await;
    let config = write_config(dir.path(), &db, &config_body(closed));
    let cfg = config.to_str().unwrap();
    let mut server = Server::start_with_env(&config, dir.path(), &env_refs).await;
    leadrelay::init_crypto();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut body = lead("casey@example.com");
    body["message"] = Value::String("hello".into());
    let resp = client
        .post(format!("{}/v1/forms/contact", server.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let event = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let store = open_store(&db).await;
    let event_id = event.parse().unwrap();
    eventually("every delivery dead", Duration::from_secs(60), || async {
        let ds = store.deliveries_for_event(event_id).await.ok()?;
        (ds.len() == 6 && ds.iter().all(|d| d.state == DeliveryState::Dead)).then_some(())
    })
    .await;
    assert!(
        receiver.hits().len() >= 2,
        "the CRM webhook was tried: {}",
        receiver.hits().len()
    );
    let (admin, record) = generate_key("ops", Role::Admin);
    store.create_api_key(record).await.unwrap();
    let (viewer, record) = generate_key("marketing", Role::Viewer);
    store.create_api_key(record).await.unwrap();
    let deliveries = store.deliveries_for_event(event_id).await.unwrap();

    // The admin API, for both roles.
    let mut paths = vec![
        "/api/v1/deliveries?limit=100".to_string(),
        "/api/v1/dead-letters?limit=100".to_string(),
        "/api/v1/destinations".to_string(),
        format!("/api/v1/events/{event}"),
    ];
    for d in &deliveries {
        paths.push(format!("/api/v1/deliveries/{}", d.id));
        paths.push(format!("/api/v1/destinations/{}", d.destination));
    }
    let mut seen_errors = 0;
    for key in [&admin, &viewer] {
        for p in &paths {
            let r = client
                .get(format!("{}{p}", server.base))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{p}");
            let text = r.text().await.unwrap();
            assert_clean(&format!("GET {p}"), &text);
            seen_errors += text.matches("connection failed").count();
        }
    }
    assert!(
        seen_errors > 0,
        "the failures are visible, only without secrets"
    );

    // The dashboard.
    let session = sign_in(&client, &server.base, &admin).await;
    let mut pages = vec![
        "/ui/".to_string(),
        "/ui/leads".to_string(),
        format!("/ui/leads/{event}"),
        "/ui/dead-letters".to_string(),
        "/ui/destinations".to_string(),
    ];
    pages.dedup();
    for p in &pages {
        let r = client
            .get(format!("{}{p}", server.base))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{p}");
        assert_clean(&format!("dashboard {p}"), &r.text().await.unwrap());
    }

    // The CLI, as JSON and as tables.
    for args in [
        vec!["deliveries", "list", "--json"],
        vec!["deliveries", "list"],
        vec!["dlq", "list", "--json"],
        vec!["dlq", "list"],
    ] {
        let mut all = args.clone();
        all.extend(["--config", cfg]);
        let (code, out) = run_with_env(&all, &env);
        assert_eq!(code, 0, "{args:?}: {out}");
        assert_clean(&format!("leadrelay {}", args.join(" ")), &out);
    }
    for d in &deliveries {
        let id = d.id.to_string();
        for sub in ["deliveries", "dlq"] {
            let (_, out) = run_with_env(&[sub, "show", &id, "--config", cfg], &env);
            assert_clean(&format!("leadrelay {sub} show"), &out);
        }
    }
    let (_, out) = run_with_env(&["check", "--config", cfg], &env);
    assert!(out.contains("crm_webhook"), "{out}");
    assert_clean("leadrelay check", &out);

    server.terminate();
    assert_clean("the server log", &server.log_text());
    store.close().await;
}

#[tokio::test]
async fn migrate_does_not_print_the_storage_password() {
    let db = TestDb::create_postgres().await;
    // The local server trusts its users, so any password opens it.
    let url = db
        .url
        .replacen("postgres://postgres@", "postgres://postgres:CANARYPW41@", 1);
    assert!(url.contains("CANARYPW41"), "{url}");
    let (code, out) = run_with_env(&["migrate", "--storage-url", &url], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("schema version"), "{out}");
    assert!(!out.contains("CANARYPW41"), "{out}");
    assert!(out.contains("postgres:***@"), "{out}");
}
