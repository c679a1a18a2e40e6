//! Tests that run the real `leadrelay` binary: kill -9 in the middle of
//! ingest and of delivery, graceful shutdown, `check` output, and the CLI.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leadrelay::store::{DeliveryFilter, DeliveryState, OpenOptions, Store};
use leadrelay_fakes::common::Fault;
use serde_json::Value;
use uuid::Uuid;

use crate::support::{Receiver, TestDb, eventually, lead, wait_ready};

pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_leadrelay"))
}

pub(crate) fn http_client() -> reqwest::Client {
    leadrelay::init_crypto();
    reqwest::Client::new()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    log: PathBuf,
}

impl Server {
    pub(crate) async fn start(config: &Path, dir: &Path) -> Server {
        Self::start_with_env(config, dir, &[]).await
    }

    /// Starts the binary with extra environment variables (credentials).
    pub(crate) async fn start_with_env(config: &Path, dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(bin());
        command.arg("serve");
        Self::launch(command, config, dir, env).await
    }

    /// Starts `leadrelay serve` with extra arguments (`--role api`).
    pub(crate) async fn start_with_args(config: &Path, dir: &Path, args: &[&str]) -> Server {
        let mut command = Command::new(bin());
        command.arg("serve").args(args);
        Self::launch(command, config, dir, &[]).await
    }

    /// Starts the binary with a soft open-file limit of `limit`, as systemd
    /// starts a service whose unit sets no `LimitNOFILE`.
    pub(crate) async fn start_with_open_file_limit(
        config: &Path,
        dir: &Path,
        limit: u64,
    ) -> Server {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("ulimit -Sn {limit} && exec \"$0\" \"$@\""))
            .arg(bin())
            .arg("serve");
        Self::launch(sh, config, dir, &[]).await
    }

    /// Runs `command` (which says `serve` and any arguments of its own) with
    /// the configuration, a free port and the log file.
    async fn launch(
        mut command: Command,
        config: &Path,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Server {
        let port = free_port();
        let log = dir.join(format!("serve-{port}.log"));
        let child = command
            .arg("--config")
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .envs(env.iter().copied())
            .env("RUST_LOG", "debug")
            .env_remove("LEADRELAY_CONFIG")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn leadrelay");
        let base = format!("http://127.0.0.1:{port}");
        // Owned before waiting, so a failed start still kills the child.
        let server = Server {
            child,
            base: base.clone(),
            log,
        };
        wait_ready("the binary is ready", &base, Duration::from_secs(30)).await;
        server
    }

    pub(crate) fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        self.child.wait().expect("wait")
    }

    pub(crate) fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn open_store(db: &TestDb) -> Arc<dyn Store> {
    leadrelay::store::open(&db.url, &OpenOptions::default())
        .await
        .unwrap()
}

pub(crate) fn write_config(dir: &Path, db: &TestDb, body: &str) -> PathBuf {
    let path = dir.join("leadrelay.toml");
    let text = format!(
        "[storage]\nurl = \"{}\"\n[server]\nper_ip_limit = \"off\"\ntrusted_proxies = [\"127.0.0.1\"]\n{body}",
        db.url
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) const FORM: &str = r#"
[forms.contact]
[forms.contact.fields.email]
type = "email"
required = true
[forms.contact.fields.first_name]
type = "text"
[forms.contact.consent.crm]
field = "consent"
version = "v1"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_lead_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(dir.path()).await;
    let config = write_config(dir.path(), &db, FORM);
    let mut server = Server::start(&config, dir.path()).await;
    let acked: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let test_ip = "198.51.100.23";
    let mut clients = Vec::new();
    for c in 0..16 {
        let acked = acked.clone();
        let url = format!("{}/v1/forms/contact", server.base);
        clients.push(tokio::spawn(async move {
            let client = http_client();
            for i in 0.. {
                let resp = client
                    .post(&url)
                    .header("x-forwarded-for", test_ip)
                    .json(&lead(&format!("c{c}-{i}@crash.io")))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 202 => {
                        let id = r
                            .json::<Value>()
                            .await
                            .ok()
                            .and_then(|v| v["id"].as_str().and_then(|s| s.parse().ok()));
                        if let Some(id) = id {
                            acked.lock().unwrap().push(id);
                        }
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    // The server died under us: stop.
                    Err(_) => return,
                }
            }
        }));
    }
    let start = Instant::now();
    while acked.lock().unwrap().len() < 2000 && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    for c in clients {
        let _ = c.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 2000,
        "only {} leads acknowledged before the kill",
        acked.len()
    );
    let log = server.log_text();
    assert!(
        !log.contains(test_ip),
        "the raw client IP appears in the logs"
    );

    // A restart recovers the database and serves again.
    let mut again = Server::start(&config, dir.path()).await;
    again.terminate();
    let store = open_store(&db).await;
    let mut missing = 0;
    for id in &acked {
        if store.get_event(*id).await.unwrap().is_none() {
            missing += 1;
        }
    }
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged leads were lost",
        acked.len()
    );
    store.close().await;
    assert!(!db.contains(test_ip), "the raw IP is in the database");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_delivery_loses_nothing_and_duplicates_keep_their_id() {
    let receiver = Receiver::start().await;
    // A slow receiver keeps deliveries in flight when the process dies.
    receiver
        .faults()
        .push(Fault::Delay(Duration::from_millis(30)), 100_000);
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        r#"{FORM}
[delivery]
poll_interval = "100ms"
lease = "3s"
[destinations.hook]
connector = "webhook"
url = "{}"
allow_private_networks = true
purposes = ["crm"]
concurrency = 8
timeout = "1s"
[[routes]]
name = "all"
destinations = ["hook"]
"#,
        receiver.url()
    );
    let db = TestDb::create(dir.path()).await;
    let config = write_config(dir.path(), &db, &body);
    let mut server = Server::start(&config, dir.path()).await;
    let client = http_client();
    let total = 400;
    for i in 0..total {
        let r = client
            .post(format!("{}/v1/forms/contact", server.base))
            .json(&lead(&format!("d{i}@crash.io")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    eventually("some deliveries done", Duration::from_secs(30), || async {
        (receiver.delivered().len() >= 50).then_some(())
    })
    .await;
    server.kill9();
    let before_restart = receiver.delivered().len();
    assert!(
        before_restart < total,
        "everything was delivered before the kill; the test proves nothing"
    );

    let mut again = Server::start(&config, dir.path()).await;
    let store = open_store(&db).await;
    let filter = DeliveryFilter {
        destination: Some("hook".into()),
        ..Default::default()
    };
    let finals = eventually(
        "every delivery finishes",
        Duration::from_secs(120),
        || async {
            let all = store.list_deliveries(&filter, None, 10_000).await.ok()?;
            (all.len() == total && all.iter().all(|d| !d.state.is_active())).then_some(all)
        },
    )
    .await;
    again.terminate();
    assert!(
        finals.iter().all(|d| d.state == DeliveryState::Delivered),
        "none dead-lettered, none lost"
    );

    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    let mut events = HashSet::new();
    for h in receiver.delivered() {
        *by_id.entry(h.header("webhook-id").unwrap()).or_default() += 1;
        events.insert(h.json()["data"]["event_id"].as_str().unwrap().to_string());
    }
    assert_eq!(events.len(), total, "every lead reached the receiver");
    let ids: HashSet<String> = finals.iter().map(|d| d.id.to_string()).collect();
    assert_eq!(
        by_id.keys().cloned().collect::<HashSet<_>>(),
        ids,
        "every request carried its delivery id"
    );
    let duplicates: usize = by_id.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= 8 + 8,
        "{duplicates} duplicates: more than were in flight at the kill"
    );
    store.close().await;
}

/// The delivery id of every record of the `*.{ext}` backup files in `dir`
/// (JSON Lines, or CSV rows without their header rows).
fn backup_ids(dir: &Path, ext: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(&format!(".{ext}")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if ext == "jsonl" {
                // A line caught half-written counts as a record of its own.
                let id = serde_json::from_str::<Value>(line)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(String::from));
                out.push(id.unwrap_or_else(|| format!("unreadable: {line}")));
            } else if !line.starts_with("Received,") {
                // The leads columns end with the delivery id.
                out.push(line.rsplit(',').next().unwrap_or_default().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_while_backing_up_writes_each_lead_once() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("jsonl");
    let csv = dir.path().join("csv");
    let body = format!(
        r#"{FORM}
[delivery]
poll_interval = "20ms"
# A lease is at least six timeouts: the 1 s timeouts below keep it at 6 s,
# so the batches the killed process held are sent again soon on
# PostgreSQL (SQLite takes every lease back at start).
lease = "2s"
[destinations.backup]
connector = "file"
path = "{jsonl}"
legal_basis = "legitimate_interest"
batch_size = 5
timeout = "1s"
[destinations.backup_csv]
connector = "csv"
path = "{csv}"
legal_basis = "legitimate_interest"
batch_size = 5
timeout = "1s"
[[routes]]
name = "all"
destinations = ["backup", "backup_csv"]
"#,
        jsonl = jsonl.display(),
        csv = csv.display(),
    );
    let db = TestDb::create(dir.path()).await;
    let config = write_config(dir.path(), &db, &body);
    let mut server = Server::start(&config, dir.path()).await;
    // Leads keep arriving while the process dies, so both backups are busy
    // appending at the kill. Whether the kill falls between a batch's fsync
    // and its outcome's commit is chance (without the journal, about one run
    // in three wrote a batch twice); the rotate unit tests cover that case
    // every time.
    let acked = Arc::new(Mutex::new(0usize));
    let mut clients = Vec::new();
    for c in 0..4 {
        let acked = acked.clone();
        let url = format!("{}/v1/forms/contact", server.base);
        clients.push(tokio::spawn(async move {
            let client = http_client();
            for i in 0.. {
                match client
                    .post(&url)
                    .json(&lead(&format!("b{c}-{i}@crash.io")))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 202 => *acked.lock().unwrap() += 1,
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return,
                }
            }
        }));
    }
    eventually("backups under way", Duration::from_secs(60), || async {
        (backup_ids(&jsonl, "jsonl").len() >= 200 && backup_ids(&csv, "csv").len() >= 200)
            .then_some(())
    })
    .await;
    server.kill9();
    for c in clients {
        let _ = c.await;
    }

    let mut again = Server::start(&config, dir.path()).await;
    let store = open_store(&db).await;
    let finals = eventually(
        "every backup delivery finishes",
        Duration::from_secs(120),
        || async {
            let all = store
                .list_deliveries(&DeliveryFilter::default(), None, 100_000)
                .await
                .ok()?;
            all.iter().all(|d| !d.state.is_active()).then_some(all)
        },
    )
    .await;
    again.terminate();
    let events = store
        .list_events(&Default::default(), None, 100_000)
        .await
        .unwrap()
        .len();
    assert!(
        events >= *acked.lock().unwrap(),
        "an acknowledged lead was lost"
    );
    assert!(
        finals.iter().all(|d| d.state == DeliveryState::Delivered),
        "none dead-lettered"
    );
    assert_eq!(finals.len(), 2 * events, "one delivery per lead and backup");
    for (what, ids) in [
        ("JSON Lines", backup_ids(&jsonl, "jsonl")),
        ("CSV", backup_ids(&csv, "csv")),
    ] {
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), events, "{what}: every lead backed up");
        assert_eq!(
            ids.len(),
            distinct.len(),
            "{what}: {} lines written twice",
            ids.len() - distinct.len()
        );
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_in_flight_work_and_marks_nothing_undelivered_as_delivered() {
    let receiver = Receiver::start().await;
    receiver
        .faults()
        .push(Fault::Delay(Duration::from_millis(50)), 100_000);
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        r#"{FORM}
[delivery]
poll_interval = "100ms"
[destinations.hook]
connector = "webhook"
url = "{}"
allow_private_networks = true
purposes = ["crm"]
concurrency = 4
[[routes]]
name = "all"
destinations = ["hook"]
"#,
        receiver.url()
    );
    let db = TestDb::create(dir.path()).await;
    let config = write_config(dir.path(), &db, &body);
    let mut server = Server::start(&config, dir.path()).await;
    let client = http_client();
    for i in 0..200 {
        client
            .post(format!("{}/v1/forms/contact", server.base))
            .json(&lead(&format!("t{i}@term.io")))
            .send()
            .await
            .unwrap();
    }
    eventually("some delivered", Duration::from_secs(30), || async {
        (receiver.delivered().len() >= 20).then_some(())
    })
    .await;
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    let store = open_store(&db).await;
    let filter = DeliveryFilter {
        destination: Some("hook".into()),
        state: Some(DeliveryState::Delivered),
        ..Default::default()
    };
    let delivered = store.list_deliveries(&filter, None, 10_000).await.unwrap();
    let seen: HashSet<String> = receiver
        .delivered()
        .iter()
        .filter_map(|h| h.header("webhook-id"))
        .collect();
    for d in &delivered {
        assert!(
            seen.contains(&d.id.to_string()),
            "delivery {} is marked delivered but never arrived",
            d.id
        );
    }
    let in_flight = store
        .list_deliveries(
            &DeliveryFilter {
                state: Some(DeliveryState::InFlight),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert!(
        in_flight.is_empty(),
        "leases were finished or released at shutdown"
    );
    store.close().await;
}

pub(crate) fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
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

#[test]
fn check_reports_every_problem_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[server]
listen = "127.0.0.1:8080"
lisen = "typo"

[forms.contact]
honeypot = "website"
[forms.contact.fields.email]
type = "email"
requird = true

[destinations.crm]
connector = "webhook"
url = "https://crm.example.com/hook"

[destinations.mystery]
connector = "carrier-pigeon"
legal_basis = "legitimate_interest"

[[routes]]
name = "all"
when = "contact.email =="
destinations = ["crm", "nowhere"]
"#,
    )
    .unwrap();
    let (code, _out, err) = run(&["check", "--offline", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let p = path.display().to_string();
    for want in [
        format!("{p}:3:1: error: server.lisen: unknown key"),
        format!("{p}:9:1: error: forms.contact.fields.email.requird: unknown key"),
        format!("{p}:11:15: error: destinations.crm.purposes"),
        format!(
            "{p}:16:1: error: destinations.mystery.connector: unknown connector \"carrier-pigeon\""
        ),
        format!("{p}:21:1: error: routes[0].when: invalid condition"),
        format!("{p}:22:"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert!(err.contains("no destination named \"nowhere\""), "{err}");

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        crate::support::webhook_config("https://crm.example.com/hook", ""),
    )
    .unwrap();
    let (code, out, err) = run(&["check", "--offline", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration is valid"));

    let (code, _, err) = run(&[
        "check",
        "--offline",
        "--config",
        "/nonexistent/leadrelay.toml",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn embedded_default_checks_clean_and_prints() {
    let (code, out, err) = run(&["check", "--offline"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run(&["config", "default"]);
    assert_eq!(code, 0);
    assert!(out.contains("[forms.contact]"));
    let (code, out, _) = run(&["version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("leadrelay "));
    let (code, _, err) = run(&["serve", "--listen", "not-an-address"]);
    assert_eq!(code, 2, "clap rejects bad arguments: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_events_and_replays_dead_letters_with_edits() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        r#"{FORM}
[delivery]
poll_interval = "100ms"
[destinations.hook]
connector = "webhook"
url = "{}"
allow_private_networks = true
purposes = ["crm"]
[[routes]]
name = "all"
destinations = ["hook"]
"#,
        receiver.url()
    );
    let db = TestDb::create(dir.path()).await;
    let config = write_config(dir.path(), &db, &body);
    let cfg = config.to_str().unwrap();
    receiver.fail_next(400, "rejected", 2);
    let mut server = Server::start(&config, dir.path()).await;
    let client = http_client();
    for email in ["cli1@x.io", "cli2@x.io"] {
        client
            .post(format!("{}/v1/forms/contact", server.base))
            .json(&lead(email))
            .send()
            .await
            .unwrap();
    }
    let store = open_store(&db).await;
    let dead_filter = DeliveryFilter {
        state: Some(DeliveryState::Dead),
        ..Default::default()
    };
    eventually("two dead letters", Duration::from_secs(20), || async {
        (store
            .list_deliveries(&dead_filter, None, 10)
            .await
            .ok()?
            .len()
            == 2)
            .then_some(())
    })
    .await;

    let (code, out, err) = run(&["events", "list", "--json", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    let events: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(events.as_array().unwrap().len(), 2);
    let (code, out, _) = run(&["dlq", "list", "--config", cfg]);
    assert_eq!(code, 0);
    assert!(
        out.contains("HTTP 400") && out.contains("2 dead letter(s)"),
        "{out}"
    );
    let (code, out, err) = run(&[
        "dlq",
        "replay",
        "--all",
        "--set",
        "first_name=Fixed",
        "--config",
        cfg,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 2"), "{out}");
    let (code, _, err) = run(&["dlq", "replay", "--config", cfg]);
    assert_eq!(code, 1);
    assert!(err.contains("exactly one"), "{err}");
    let (code, _, err) = run(&["dlq", "replay", "--destination", "nope", "--config", cfg]);
    assert_eq!(code, 1, "an unknown destination is an error: {err}");
    assert!(err.contains("no destination named \"nope\""), "{err}");

    eventually("replays delivered", Duration::from_secs(20), || async {
        (receiver.delivered().len() == 2).then_some(())
    })
    .await;
    for h in receiver.delivered() {
        assert_eq!(h.json()["data"]["contact"]["first_name"], "Fixed");
    }
    let (code, out, _) = run(&["dlq", "list", "--json", "--config", cfg]);
    assert_eq!(code, 0);
    let still_dead: Value = serde_json::from_str(&out).unwrap();
    // The originals stay dead (history kept) but are marked replayed.
    assert!(
        still_dead
            .as_array()
            .unwrap()
            .iter()
            .all(|d| !d["replayed_by"].is_null())
    );
    server.terminate();
    store.close().await;
}
