//! Delivery keeps pace with ingest: the default configuration (SQLite and
//! the JSONL backup) plus one webhook destination with its default settings,
//! posting to a local sink, under sustained closed-loop load. Reports the
//! deliveries that reached the sink per second during the load against the
//! leads acknowledged per second, and how long the sink and the backup kept
//! receiving after the load ended.

use std::time::{Duration, Instant};

use crate::load::closed_loop;
use crate::sink::Sink;
use crate::{Cli, base_config, cpu, procs, table, wait_count};

fn destinations(dir: &std::path::Path, url: &str) -> String {
    format!(
        r#"
[destinations.backup]
connector = "file"
path = "{}/backup"
legal_basis = "legitimate_interest"

[destinations.sink]
connector = "webhook"
url = "{url}"
allow_private_networks = true
purposes = ["crm"]

[[routes]]
name = "all"
destinations = ["backup", "sink"]
"#,
        dir.display()
    )
}

pub async fn pace(cli: &Cli, sustain: Duration) -> anyhow::Result<()> {
    println!(
        "\n## Delivery keeps pace ({} connections for {:?}; backup + one webhook to a local sink)\n",
        cli.connections, sustain
    );
    let sink = Sink::start().await?;
    let dir = tempfile::tempdir()?;
    let config = base_config(dir.path(), &destinations(dir.path(), &sink.url()));
    let lr = procs::leadrelay(&cli.bin, dir.path(), &config, "all").await?;
    let pid = lr.child.id();
    let cpu0 = cpu::cpu_secs(pid);
    let prof = cpu::Profile::start(cli.perf.as_deref(), "pace", pid);

    let load = closed_loop(
        &lr.addr,
        "/v1/forms/contact",
        cli.connections,
        sustain,
        None,
        0,
    )
    .await;
    let ended = Instant::now();
    let delivered_during = sink.count();
    let mut backup = cpu::BackupLines::new(&dir.path().join("backup"));
    let backup_during = backup.count();
    let limit = Duration::from_secs(300);
    let sink_drain = wait_count(&sink, load.ok as usize, limit).await;
    let backup_drain = backup
        .wait_for(load.ok, limit.saturating_sub(ended.elapsed()))
        .await;
    let cpu_us = cpu::us_per(pid, cpu0, load.ok);
    if let Some(p) = prof {
        p.finish();
    }
    lr.stop();

    let secs = load.elapsed.as_secs_f64();
    let ack_rate = load.rate();
    let drain = |d: Option<Duration>| {
        d.map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| format!("NOT within {} s", limit.as_secs()))
    };
    let mut t = table(&[
        "",
        "count during load",
        "per second",
        "vs acknowledged",
        "still receiving after the load",
    ]);
    t.add_row(vec![
        "leads acknowledged".into(),
        load.ok.to_string(),
        format!("{ack_rate:.0}"),
        "1.00".into(),
        "".into(),
    ]);
    for (name, n, d) in [
        (
            "webhook deliveries at the sink",
            delivered_during as u64,
            sink_drain,
        ),
        ("lines in the backup", backup_during, backup_drain),
    ] {
        let rate = n as f64 / secs;
        t.add_row(vec![
            name.into(),
            n.to_string(),
            format!("{rate:.0}"),
            format!("{:.2}", rate / ack_rate.max(1.0)),
            drain(d),
        ]);
    }
    println!("{t}");
    println!(
        "targets: sink deliveries/s >= 0.8x acknowledged leads/s (got {:.2}x), backlog empty within 5 s of the load ending (sink {}, backup {}); CPU {cpu_us:.1} µs per lead for ingest and both deliveries; errors {}",
        delivered_during as f64 / secs / ack_rate.max(1.0),
        drain(sink_drain),
        drain(backup_drain),
        load.errors
    );
    Ok(())
}
