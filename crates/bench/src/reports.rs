//! The reports scenario: stores `events` events about `contacts` people on
//! SQLite through the store's ingest (batches of 500, as vendor batches
//! arrive), with touches, leads and deals moving through stages; then runs
//! the rollup pass over all of them and times every report.
//!
//! The rollup's cost is reported twice:
//! - in process, as its time per event against the store's own batched
//!   insert of the same events (the strictest comparison: ingest with no
//!   HTTP, validation or delivery);
//! - where it runs in production, beside HTTP ingest: the release binary
//!   with the default configuration (SQLite and the backup) takes the same
//!   flat-out form posts (each with UTM fields, so each is a touch) once
//!   with the rollups at their default interval and once with them held off
//!   (`rollup_interval = "24h"`). CPU per lead is counted until the backup
//!   holds every lead and, with the rollups on, until they have read every
//!   event (a KPI request makes them catch up); the difference is the
//!   rollups' share of ingest's CPU, and the leads/s of the two runs their
//!   effect on throughput.

use std::time::{Duration, Instant};

use chrono::Utc;
use leadrelay::config::Config;
use leadrelay::store::{IngestItem, OpenOptions};
use leadrelay_model::{Attribution, ContactData, EmailAddress, Event, EventType, Origin};
use serde_json::json;

const CAMPAIGNS: [(&str, &str, &str); 6] = [
    ("google", "cpc", "brand"),
    ("google", "cpc", "generic"),
    ("newsletter", "email", "nurture"),
    ("linkedin", "paid_social", "abm"),
    ("partner", "referral", "co-marketing"),
    ("", "", ""),
];

fn event(n: u64, contacts: u64, now: chrono::DateTime<Utc>) -> Event {
    let person = n % contacts;
    let round = n / contacts;
    // Spread over the last 180 days, each person's events in order.
    let at =
        now - chrono::Duration::minutes(
            ((180 * 24 * 60) as u64 * (contacts - person) / contacts) as i64,
        ) + chrono::Duration::hours(round as i64 * 6);
    let email = EmailAddress::parse(&format!("p{person}@bench.example")).expect("email");
    let (event_type, data, attribution) = match (round, person % 5) {
        (0, _) => ("lead.created", json!({}), person),
        // One person in five gets a deal: qualified, proposal, then won or lost.
        (1, 0) => (
            "deal.stage_changed",
            json!({"deal_id": format!("d{person}"), "stage": "qualified", "amount": 1000 + person % 9000}),
            5,
        ),
        (2, 0) => (
            "deal.stage_changed",
            json!({"deal_id": format!("d{person}"), "stage": "proposal"}),
            5,
        ),
        (3, 0) => (
            "deal.stage_changed",
            json!({"deal_id": format!("d{person}"), "stage": if person.is_multiple_of(3) { "won" } else { "lost" }}),
            5,
        ),
        // One in five is handed to sales (the KPIs' response clock and
        // handoffs) and books a meeting.
        (1, 1) => ("lead.qualified", json!({"owner": {"name": "ana"}}), 5),
        (2, 1) => ("meeting.booked", json!({}), 5),
        _ => ("email.clicked", json!({}), person + round),
    };
    let (source, medium, campaign) = CAMPAIGNS[(attribution % 6) as usize];
    let mut a = Attribution::default();
    if !source.is_empty() {
        a.utm_source = Some(source.into());
        a.utm_medium = Some(medium.into());
        a.utm_campaign = Some(campaign.into());
    }
    let mut e = Event::internal(
        EventType::parse(event_type).expect("type"),
        Origin::form("contact"),
        ContactData {
            email: Some(email),
            // Every other lead lacks a company (the data quality KPI).
            company: person.is_multiple_of(2).then(|| "Acme".to_string()),
            first_name: Some("Pat".into()),
            last_name: Some("Lee".into()),
            ..Default::default()
        },
        data.as_object().cloned().unwrap_or_default(),
        now,
    );
    e.occurred_at = at;
    e.attribution = a;
    e
}

pub async fn run(cli: &crate::Cli, events: u64, contacts: u64) -> anyhow::Result<()> {
    http_cost(cli).await?;
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("reports.db").display());
    let store = leadrelay::store::open(&url, &OpenOptions::default()).await?;
    let now = Utc::now();
    println!("reports: storing {events} events about {contacts} people on SQLite …");
    let started = Instant::now();
    let batch = 500u64;
    let mut n = 0;
    while n < events {
        let items: Vec<IngestItem> = (n..(n + batch).min(events))
            .map(|i| IngestItem {
                event: event(i, contacts, now),
                destinations: Vec::new(),
                idempotency: None,
            })
            .collect();
        n += items.len() as u64;
        store.ingest(items).await?;
    }
    let ingest = started.elapsed();

    let mut cfg = Config::default();
    cfg.reports.rollup_lag = leadrelay::config::HumanDuration::secs(0);
    cfg.reports.stages = vec!["qualified".into(), "proposal".into(), "won".into()];
    let started = Instant::now();
    let pass =
        leadrelay::reports::rollup::catch_up(store.as_ref(), &cfg.reports, Utc::now()).await?;
    let rollup = started.elapsed();

    let per = |d: Duration| d.as_secs_f64() * 1e6 / events as f64;
    let mut t = crate::table(&["step", "time", "events/s", "µs/event"]);
    for (name, d) in [
        ("ingest (store, batches of 500)", ingest),
        ("rollup pass", rollup),
    ] {
        t.add_row([
            name.to_string(),
            format!("{:.1} s", d.as_secs_f64()),
            format!("{:.0}", events as f64 / d.as_secs_f64()),
            format!("{:.1}", per(d)),
        ]);
    }
    println!("{t}");
    println!(
        "rollup cost: {:.1} % of ingest time for the same events ({} batches)",
        100.0 * rollup.as_secs_f64() / ingest.as_secs_f64(),
        pass.batches
    );

    let mut t = crate::table(&["report (180 days)", "rows", "time"]);
    let filter = leadrelay::reports::Filter {
        since: Some(now - chrono::Duration::days(180)),
        until: Some(now + chrono::Duration::days(1)),
        ..Default::default()
    };
    for (name, _) in leadrelay::reports::REPORTS {
        let started = Instant::now();
        let table =
            leadrelay::reports::run(store.as_ref(), &cfg, name, &filter, Utc::now()).await?;
        t.add_row([
            name.to_string(),
            table.rows.len().to_string(),
            format!("{:.0} ms", started.elapsed().as_secs_f64() * 1000.0),
        ]);
    }
    cfg.reports.kpis.window = leadrelay::config::HumanDuration::secs(180 * 86_400);
    let started = Instant::now();
    let kpis =
        leadrelay::reports::kpi::compute(store.as_ref(), &cfg.reports.kpis, Utc::now()).await?;
    t.add_row([
        "KPIs (/api/v1/kpis)".to_string(),
        kpis.len().to_string(),
        format!("{:.0} ms", started.elapsed().as_secs_f64() * 1000.0),
    ]);
    println!("{t}");
    store.close().await;
    Ok(())
}

/// The rollups beside HTTP ingest: CPU per lead and leads/s with the
/// rollups on (default interval) and held off, in one run.
async fn http_cost(cli: &crate::Cli) -> anyhow::Result<()> {
    println!(
        "\n## Rollups beside HTTP ingest ({} connections, {:?} per run, default configuration, form posts with UTM fields)\n",
        cli.connections, cli.duration
    );
    let mut t = crate::table(&[
        "rollups",
        "leads/s",
        "p99",
        "CPU µs/lead",
        "events the rollups read",
    ]);
    let mut cpu = Vec::new();
    let mut rates = Vec::new();
    for (name, extra) in [
        ("held off (rollup_interval = 24h)", "[reports]\nrollup_interval = \"24h\"\n"),
        ("on (default: every 5 s)", ""),
    ] {
        let dir = tempfile::tempdir()?;
        let config = crate::base_config(
            dir.path(),
            &format!("{extra}{}", crate::backup_destination(dir.path())),
        );
        let lr = crate::procs::leadrelay(&cli.bin, dir.path(), &config, "all").await?;
        let key = crate::procs::admin_key(&cli.bin, &dir.path().join("bench.toml"), &[])?;
        let pid = lr.child.id();
        let cpu0 = crate::cpu::cpu_secs(pid);
        let load = crate::load::closed_loop(
            &lr.addr,
            "/v1/forms/contact",
            cli.connections,
            cli.duration,
            None,
            1_000_000,
        )
        .await;
        let mut backup = crate::cpu::BackupLines::new(&dir.path().join("backup"));
        let done = backup.wait_for(load.ok, Duration::from_secs(300)).await;
        anyhow::ensure!(done.is_some(), "the backup did not get every lead within 300 s");
        // Past the rollups' lag, so one catch-up reads every event.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let read = if extra.is_empty() {
            let (status, _) = crate::load::get_json(&lr.addr, "/api/v1/kpis", &key).await?;
            anyhow::ensure!(status == 200, "GET /api/v1/kpis answered {status}");
            "every one".to_string()
        } else {
            "none".to_string()
        };
        let us = crate::cpu::us_per(pid, cpu0, load.ok);
        lr.stop();
        t.add_row([
            name.to_string(),
            format!("{:.0}", load.rate()),
            format!("{:.2} ms", load.p(0.99)),
            format!("{us:.1}"),
            read,
        ]);
        cpu.push(us);
        rates.push(load.rate());
    }
    println!("{t}");
    println!(
        "rollup cost beside HTTP ingest: {:+.1} µs per lead = {:.1} % of ingest's CPU per lead; leads/s {:.1} % of the run without rollups (target: under 10 %)",
        cpu[1] - cpu[0],
        100.0 * (cpu[1] - cpu[0]) / cpu[0],
        100.0 * rates[1] / rates[0],
    );
    Ok(())
}
