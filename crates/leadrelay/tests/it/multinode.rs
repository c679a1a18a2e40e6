//! Several leadrelay nodes on one PostgreSQL database: nothing lost when a
//! node is killed mid-way, budgets shared, and no acknowledged lead lost
//! when the database itself restarts under load. These always run on
//! PostgreSQL (whatever `LEADRELAY_TEST_BACKEND` says).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leadrelay::store::{DeliveryFilter, DeliveryState};
use leadrelay_fakes::common::Fault;
use serde_json::Value;
use uuid::Uuid;

use crate::binary::{FORM, Server, http_client, open_store, write_config};

mod storage_faults;
use crate::support::{Receiver, TestDb, eventually, lead};

/// Posts `total` leads spread over `bases` from `clients` concurrent
/// clients; returns the acknowledged event ids (errors are tolerated:
/// a node may be down).
async fn post_leads(bases: Vec<String>, total: usize, clients: usize, prefix: &str) -> Vec<Uuid> {
    let acked: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (acked, next, bases, prefix) = (
            acked.clone(),
            next.clone(),
            bases.clone(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let base = &bases[i % bases.len()];
                let resp = client
                    .post(format!("{base}/v1/forms/contact"))
                    .json(&lead(&format!("{prefix}{i}@multi.io")))
                    .send()
                    .await;
                if let Ok(r) = resp
                    && r.status() == 202
                    && let Some(id) = r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["id"].as_str().and_then(|s| s.parse().ok()))
                {
                    acked.lock().unwrap().push(id);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }

    acked.lock().unwrap().clone()
}

fn pass() -> Fault {
    Fault::Delay(Duration::ZERO)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_one_killed_nothing_lost_duplicates_only_in_flight() {
    let receivers: Vec<Receiver> =
        futures::future::join_all((0..5).map(|_| Receiver::start())).await;
    let total = 10_000usize;
    // Injected faults: 5xx now and then, a 429 storm, permanent 4xx, slow answers.
    for i in 0..total * 2 {
        receivers[0].faults().push(
            if i % 10 == 3 {
                Fault::Status {
                    status: 500,
                    body: "flaky".into(),
                    headers: vec![],
                }
            } else {
                pass()
            },
            1,
        );
        receivers[1].faults().push(
            if (200..230).contains(&i) {
                Fault::Status {
                    status: 429,
                    body: "slow down".into(),
                    headers: vec![("retry-after".into(), "1".into())],
                }
            } else {
                pass()
            },
            1,
        );
        receivers[2].faults().push(
            if i % 50 == 7 {
                Fault::Status {
                    status: 422,
                    body: "rejected".into(),
                    headers: vec![],
                }
            } else {
                pass()
            },
            1,
        );
        receivers[3].faults().push(
            if i % 100 == 0 {
                Fault::Delay(Duration::from_millis(300))
            } else {
                pass()
            },
            1,
        );
    }
    let mut body = format!(
        "{FORM}\n[delivery]\npoll_interval = \"200ms\"\nlease = \"5s\"\n[delivery.retry]\nbase = \"100ms\"\ncap = \"1s\"\n"
    );
    for (i, r) in receivers.iter().enumerate() {
        body.push_str(&format!(
            "[destinations.d{i}]\nconnector = \"webhook\"\nurl = \"{}\"\nallow_private_networks = true\npurposes = [\"crm\"]\nconcurrency = 8\ntimeout = \"2s\"\n",
            r.url()
        ));
    }
    body.push_str(
        "[[routes]]\nname = \"all\"\ndestinations = [\"d0\", \"d1\", \"d2\", \"d3\", \"d4\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create_postgres().await;
    let config = write_config(dir.path(), &db, &body);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Server::start(&config, dir.path()).await);
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let poster = tokio::spawn(post_leads(bases.clone(), total, 24, "m"));

    // Kill one node once delivery is well under way.
    eventually("deliveries under way", Duration::from_secs(300), || async {
        (receivers[4].delivered().len() >= total / 4).then_some(())
    })
    .await;
    nodes[2].kill9();
    let acked = poster.await.unwrap();
    // Requests to the killed node failed; everything acknowledged counts.
    assert!(
        acked.len() >= total * 6 / 10,
        "only {} of {total} leads were acknowledged",
        acked.len()
    );

    let store = open_store(&db).await;
    let expected = acked.len() * 5;
    let finals = eventually(
        "every delivery ends delivered or dead",
        Duration::from_secs(900),
        || async {
            // Reading 50,000 deliveries is work: leave the nodes the CPU.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut all = Vec::new();
            for d in 0..5 {
                let f = DeliveryFilter {
                    destination: Some(format!("d{d}")),
                    ..Default::default()
                };
                let mut cursor = None;
                loop {
                    let page = store.list_deliveries(&f, cursor, 10_000).await.ok()?;
                    let Some(last) = page.last() else { break };
                    cursor = Some(last.id);
                    all.extend(page);
                }
            }
            // At least the acknowledged leads' deliveries: a request in
            // flight to the killed node may have been stored without its
            // answer reaching the client (stored, not acknowledged).
            (all.len() >= expected && all.iter().all(|d| !d.state.is_active())).then_some(all)
        },
    )
    .await;

    // No acknowledged lead lost.
    for id in &acked {
        assert!(
            store.get_event(*id).await.unwrap().is_some(),
            "acknowledged event {id} is missing"
        );
    }
    // Only the destination that answers 422 has dead letters.
    for d in &finals {
        match d.destination.as_str() {
            "d2" => assert!(matches!(
                d.state,
                DeliveryState::Delivered | DeliveryState::Dead
            )),
            _ => assert_eq!(
                d.state,
                DeliveryState::Delivered,
                "{} ended {:?}: {:?}",
                d.destination,
                d.state,
                d.reason
            ),
        }
    }
    // Every delivered delivery arrived; duplicates only with the same id,
    // and no more than were in flight on the killed node (5 × concurrency 8).
    let mut duplicates = 0usize;
    for (i, r) in receivers.iter().enumerate() {
        let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
        for h in r.delivered() {
            *by_id.entry(h.header("webhook-id").unwrap()).or_default() += 1;
        }
        let delivered: HashSet<String> = finals
            .iter()
            .filter(|d| d.destination == format!("d{i}") && d.state == DeliveryState::Delivered)
            .map(|d| d.id.to_string())
            .collect();
        for id in &delivered {
            assert!(
                by_id.contains_key(id),
                "d{i}: delivery {id} marked delivered but never arrived"
            );
        }
        duplicates += by_id.values().map(|n| n - 1).sum::<usize>();
    }
    assert!(
        duplicates <= 5 * 8,
        "{duplicates} duplicate deliveries; more than were in flight at the kill"
    );
    for n in nodes.iter_mut().take(2) {
        n.terminate();
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_is_shared_by_all_nodes() {
    let receiver = Receiver::start().await;
    let body = format!(
        "{FORM}\n[delivery]\npoll_interval = \"100ms\"\n[destinations.hook]\nconnector = \"webhook\"\nurl = \"{}\"\n\
         allow_private_networks = true\npurposes = [\"crm\"]\nrate_limit = \"10/1s\"\nconcurrency = 4\n\
         [[routes]]\nname = \"all\"\ndestinations = [\"hook\"]\n",
        receiver.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create_postgres().await;
    let config = write_config(dir.path(), &db, &body);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Server::start(&config, dir.path()).await);
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let acked = post_leads(bases, 60, 6, "r").await;
    assert_eq!(acked.len(), 60);
    eventually("all delivered", Duration::from_secs(60), || async {
        (receiver.delivered().len() >= 60).then_some(())
    })
    .await;
    let store = open_store(&db).await;
    let mut starts = Vec::new();
    for d in store
        .list_deliveries(&DeliveryFilter::default(), None, 1000)
        .await
        .unwrap()
    {
        starts.extend(
            store
                .attempts(d.id)
                .await
                .unwrap()
                .iter()
                .map(|a| a.started_at),
        );
    }
    starts.sort();
    // 60 requests at 10/s across three nodes take ≥ 5.9 s; per node budgets would allow ~2 s.
    let span = *starts.last().unwrap() - starts[0];
    assert!(
        span >= chrono::Duration::milliseconds(5_500),
        "60 requests at a shared 10/s took only {span}"
    );
    for n in &mut nodes {
        n.terminate();
    }
    store.close().await;
}

/// A PostgreSQL server of the test's own (so it can be restarted without
/// disturbing other tests), run as the `postgres` OS user.
struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

fn as_postgres(cmd: &Path) -> Command {
    if nix_is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(cmd);
        c
    } else {
        Command::new(cmd)
    }
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        let dir = std::env::temp_dir().join(format!("lr-pg-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        if nix_is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown postgres");
        }
        let ok = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(dir.join("data"))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "initdb failed");
        let port = crate::binary::free_port();
        let pg = PrivatePostgres { dir, port, bin };
        pg.ctl("start");
        pg
    }

    fn ctl(&self, action: &str) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            self.dir.display()
        );
        let ok = as_postgres(&self.bin.join("pg_ctl"))
            .args([action, "-w", "-m", "fast", "-D"])
            .arg(self.dir.join("data"))
            .args(["-o", &opts, "-l"])
            .arg(self.dir.join("log"))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "pg_ctl {action} failed: {}",
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_restart_under_load_loses_no_acknowledged_lead() {
    let pg = PrivatePostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[storage]\nurl = \"{}\"\n[server]\nper_ip_limit = \"off\"\n{FORM}",
        pg.url()
    );
    let config = dir.path().join("leadrelay.toml");
    std::fs::write(&config, body).unwrap();
    let mut node = Server::start(&config, dir.path()).await;
    let base = node.base.clone();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let acked: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let statuses: Arc<Mutex<BTreeMap<u16, usize>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..8 {
        let (running, acked, statuses, base) = (
            running.clone(),
            acked.clone(),
            statuses.clone(),
            base.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = http_client();
            let mut i = 0;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                if let Ok(r) = client
                    .post(format!("{base}/v1/forms/contact"))
                    .json(&lead(&format!("pg{c}-{i}@restart.io")))
                    .send()
                    .await
                {
                    let status = r.status().as_u16();
                    *statuses.lock().unwrap().entry(status).or_default() += 1;
                    if status == 202 {
                        if let Some(id) = r
                            .json::<Value>()
                            .await
                            .ok()
                            .and_then(|v| v["id"].as_str().and_then(|s| s.parse().ok()))
                        {
                            acked.lock().unwrap().push(id);
                        }
                    } else {
                        assert_eq!(
                            status, 503,
                            "during an outage the answer is 503, never a 2xx or another error"
                        );
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    eventually("load running", Duration::from_secs(30), || async {
        (acked.lock().unwrap().len() >= 300).then_some(())
    })
    .await;
    let before = acked.lock().unwrap().len();
    pg.ctl("restart");
    // leadrelay recovers by itself: acknowledgements resume without a restart.
    let start = Instant::now();
    eventually(
        "ingest resumes after the restart",
        Duration::from_secs(60),
        || async { (acked.lock().unwrap().len() >= before + 300).then_some(()) },
    )
    .await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let _ = start;
    let ready = http_client()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    node.terminate();

    let acked = acked.lock().unwrap().clone();
    let store = leadrelay::store::open(&pg.url(), &Default::default())
        .await
        .unwrap();
    let mut missing = 0;
    for id in &acked {
        if store.get_event(*id).await.unwrap().is_none() {
            missing += 1;
        }
    }
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged leads were lost across the restart ({:?})",
        acked.len(),
        statuses.lock().unwrap()
    );
    store.close().await;
}
