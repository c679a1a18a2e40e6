//! CRM: 10,000 leads into the fake HubSpot, held to HubSpot's private-app
//! limit of 100 requests per 10 s. Batches of 100 contacts per request make
//! 1,000 contacts/s the ceiling; the figure is how close leadrelay gets, with
//! contacts only and with the default mapping (company link and a note with
//! the lead's message, which cost requests of their own).

use std::time::{Duration, Instant};

use leadrelay_fakes::common::LoggedRequest;
use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig};

use crate::load::closed_loop;
use crate::{Cli, base_config, procs, table};

const LEADS: u64 = 10_000;
const CEILING: f64 = 1_000.0;

struct Run {
    name: &'static str,
    settings: &'static str,
}

/// The most requests in any rolling 10 s window.
fn busiest_window(reqs: &[LoggedRequest]) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..reqs.len() {
        while reqs[end].at.duration_since(reqs[start].at) >= Duration::from_secs(10) {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

pub async fn crm(cli: &Cli) -> anyhow::Result<()> {
    println!(
        "\n## CRM: {LEADS} leads into the fake HubSpot at 100 requests / 10 s (batches of 100 → ceiling {CEILING:.0} contacts/s)\n"
    );
    let mut t = table(&[
        "mapping",
        "leads",
        "drain time",
        "leads/s",
        "vs ceiling",
        "requests",
        "busiest 10 s",
        "429s",
    ]);
    let runs = [
        Run {
            name: "contacts only",
            settings: "companies = false\nnotes = false",
        },
        Run {
            name: "default (contact + company link + note)",
            settings: "",
        },
    ];
    for run in runs {
        let fake = FakeHubSpot::start(HubSpotConfig::default()).await?;
        let dir = tempfile::tempdir()?;
        let dest = format!(
            r#"
[delivery]
poll_interval = "200ms"

[destinations.hubspot]
connector = "hubspot"
base_url = "{}"
allow_private_networks = true
token_env = "HUBSPOT_ACCESS_TOKEN"
purposes = ["crm"]
{}

[[routes]]
name = "crm"
destinations = ["hubspot"]
"#,
            fake.base_url(),
            run.settings
        );
        let config = base_config(dir.path(), &dest);
        let env = [("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)];
        // Store the leads first (no workers), then time the drain alone.
        let api = procs::leadrelay_with_env(&cli.bin, dir.path(), &config, "api", &env).await?;
        let filled = closed_loop(
            &api.addr,
            "/v1/forms/contact",
            32,
            Duration::from_secs(300),
            Some(LEADS),
            0,
        )
        .await;
        api.stop();
        // Timed from the worker's start to the vendor's last answer.
        let start = Instant::now();
        let worker =
            procs::leadrelay_with_env(&cli.bin, dir.path(), &config, "worker", &env).await?;
        let mut quiet_since = Instant::now();
        let mut seen = 0;
        while start.elapsed() < Duration::from_secs(600) {
            let n = fake.requests().count();
            if n != seen {
                seen = n;
                quiet_since = Instant::now();
            }
            let written = fake.count("contacts") as u64 >= filled.ok;
            // Done when every contact is there and the vendor has heard nothing for 2 s.
            if (written && quiet_since.elapsed() > Duration::from_secs(2))
                || quiet_since.elapsed() > Duration::from_secs(60)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        worker.stop();
        let contacts = fake.count("contacts");
        let reqs = fake.requests().entries();
        let throttled = reqs.iter().filter(|r| r.status == 429).count();
        let done_at = reqs
            .last()
            .map(|r| r.at.duration_since(start))
            .filter(|_| contacts as u64 >= filled.ok);
        let (time, rate) = match done_at {
            Some(d) => (
                format!("{:.1} s", d.as_secs_f64()),
                contacts as f64 / d.as_secs_f64(),
            ),
            None => ("did not finish".into(), 0.0),
        };
        t.add_row(vec![
            run.name.to_string(),
            format!("{contacts} / {}", filled.ok),
            time,
            format!("{rate:.0}"),
            format!("{:.0} %", rate / CEILING * 100.0),
            reqs.len().to_string(),
            busiest_window(&reqs).to_string(),
            throttled.to_string(),
        ]);
    }
    println!("{t}");
    println!(
        "ceiling: 100 requests / 10 s × 100 contacts per batch upsert = {CEILING:.0} contacts/s; every extra object per batch (company link, notes) costs a request of its own"
    );
    Ok(())
}
