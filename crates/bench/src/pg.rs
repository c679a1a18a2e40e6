//! PostgreSQL: the same durable ingest as the SQLite scenario (a lead and
//! its outbox row committed before the 202), and delivery throughput with
//! one worker node and with two on one database, in the same run.
//!
//! Each run gets a database of its own on `--pg-url` (created and dropped
//! with `psql`), so runs never see each other's rows.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::load::closed_loop;
use crate::sink::Sink;
use crate::{
    Cli, backup_destination, form_config, procs, row, table, wait_count, webhook_destination,
};

/// Leads in each drained backlog.
const BACKLOG: u64 = 30_000;

/// A database created for one run and dropped when it ends.
struct TempDb {
    server: String,
    name: String,
}

impl TempDb {
    fn create(server: &str, label: &str) -> anyhow::Result<Self> {
        let name = format!("leadrelay_bench_{label}_{}", std::process::id());
        let db = TempDb {
            server: server.trim_end_matches('/').to_string(),
            name,
        };
        db.psql(&format!("DROP DATABASE IF EXISTS {}", db.name))?;
        db.psql(&format!("CREATE DATABASE {}", db.name))?;
        Ok(db)
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    fn psql(&self, sql: &str) -> anyhow::Result<()> {
        let out = Command::new("psql")
            .arg(format!("{}/postgres", self.server))
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .output()
            .map_err(|e| anyhow::anyhow!("psql could not be started ({e}); is it installed?"))?;
        if !out.status.success() {
            anyhow::bail!(
                "psql {sql:?} on {}: {}",
                self.server,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = self.psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn storage(db: &TempDb) -> String {
    format!("url = \"{}\"", db.url())
}

pub async fn postgres(cli: &Cli) -> anyhow::Result<()> {
    println!(
        "\n## PostgreSQL ({}; {} connections, {:?} per run)\n",
        cli.pg_url, cli.connections, cli.duration
    );

    // 1. Ingest: durable leads/s flat out, and latency at 1,000 req/s.
    let dir = tempfile::tempdir()?;
    let db = TempDb::create(&cli.pg_url, "ingest")?;
    let config = form_config(&storage(&db), &backup_destination(dir.path()));
    let lr = procs::leadrelay(&cli.bin, dir.path(), &config, "all").await?;
    // Warm the pool (connections open lazily) before measuring latency.
    let warm = closed_loop(
        &lr.addr,
        "/v1/forms/contact",
        16,
        Duration::from_secs(2),
        None,
        9_000_000,
    )
    .await;
    let steady = crate::steady(cli, &lr.addr).await;
    let mut backup = crate::cpu::BackupLines::new(&dir.path().join("backup"));
    backup
        .wait_for(warm.ok + steady.ok, Duration::from_secs(120))
        .await;
    let run = crate::durable_run(
        cli,
        &lr,
        Some((&mut backup, warm.ok + steady.ok)),
        "ingest-postgres",
    )
    .await;
    lr.stop();
    drop(db);
    let mut t = table(&[
        "ingest",
        "leads/s",
        "p50",
        "p99",
        "p99.9",
        "errors",
        "CPU µs/lead (leadrelay)",
    ]);
    row(
        &mut t,
        "leadrelay, PostgreSQL + backup, durable",
        &run.load,
        &[format!("{:.1}", run.cpu_us)],
    );
    row(&mut t, "leadrelay at 1,000 req/s", &steady, &["".into()]);
    println!("{t}");
    println!(
        "target: >= 8,000 durable leads/s on PostgreSQL (got {:.0}); CPU counts the leadrelay process only (not PostgreSQL's), until the backup held every lead ({})",
        run.load.rate(),
        run.backup_after
            .map(|d| format!("{:.1} s after the load", d.as_secs_f64()))
            .unwrap_or_else(|| "NOT within 300 s".into())
    );

    // 2. Delivery: a backlog stored with no workers, drained by one worker
    // node, then (on a fresh database) by two.
    let sink = Sink::start().await?;
    let mut d = table(&["worker nodes", "deliveries", "time", "deliveries/s", "note"]);
    let mut rates = Vec::new();
    for nodes in [1usize, 2] {
        sink.reset();
        let dir = tempfile::tempdir()?;
        let db = TempDb::create(&cli.pg_url, &format!("drain{nodes}"))?;
        let config = form_config(
            &storage(&db),
            &webhook_destination(&sink.url(), "concurrency = 32"),
        );
        let api = procs::leadrelay(&cli.bin, dir.path(), &config, "api").await?;
        let filled = closed_loop(
            &api.addr,
            "/v1/forms/contact",
            32,
            Duration::from_secs(900),
            Some(BACKLOG),
            0,
        )
        .await;
        api.stop();
        let start = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..nodes {
            workers.push(procs::leadrelay(&cli.bin, dir.path(), &config, "worker").await?);
        }
        let drained = wait_count(&sink, filled.ok as usize, Duration::from_secs(1800)).await;
        let total = start.elapsed();
        for w in workers {
            w.stop();
        }
        drop(db);
        let rate = sink.count() as f64 / total.as_secs_f64();
        rates.push(rate);
        d.add_row(vec![
            nodes.to_string(),
            sink.count().to_string(),
            format!("{:.1} s", total.as_secs_f64()),
            format!("{rate:.0}"),
            if drained.is_some() {
                format!("backlog of {} stored first", filled.ok)
            } else {
                "did not finish".into()
            },
        ]);
    }
    println!("{d}");
    if let [one, two] = rates[..] {
        println!("two nodes / one node = {:.2}", two / one);
    }
    Ok(())
}
