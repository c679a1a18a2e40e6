//! Enrollment: 10,000 qualified leads into the fake Woodpecker (one request
//! at a time per API key) and the fake Smartlead (60 requests per minute,
//! 100 leads per request), each against the vendor's own limit as the
//! ceiling, and a third run where an add limit smaller than the backlog
//! sends most leads through the overflow queue.
//!
//! Every lead qualifies (the route takes the contact form's leads as they
//! come), so the backlog is the whole load: leads are stored first with
//! no worker running, then one worker drains them and the clock runs from
//! its start to the vendor's last answer.
//!
//! Ceilings:
//! - Woodpecker processes one request at a time; the fake takes
//!   `--woodpecker-ms` per request (nominally: a timer sleep ends on the
//!   next millisecond tick or later, and the handler works too), so it can
//!   answer at most one request per processing time. The fake counts the
//!   time it spends processing; the ceiling is computed from that measured
//!   time per request, and the run also reports the share of the drain
//!   Woodpecker was busy. An enrollment is two requests (the lookup that
//!   finds-or-creates and applies `already_enrolled`, then the add), so the
//!   ceiling in enrollments/s is half the requests/s.
//! - Smartlead: 60 requests per minute × 100 leads = 100 enrollments/s.

use std::time::{Duration, Instant};

use leadrelay_fakes::smartlead::{FakeSmartlead, SmartleadConfig};
use leadrelay_fakes::woodpecker::{FakeWoodpecker, WoodpeckerConfig};

use crate::load::{closed_loop, get_json};
use crate::{Cli, base_config, procs, table};

/// One run's vendor: how to count who is enrolled, and the log of requests.
enum Vendor {
    Woodpecker(FakeWoodpecker),
    Smartlead(FakeSmartlead),
}

impl Vendor {
    fn enrolled(&self) -> usize {
        match self {
            Vendor::Woodpecker(f) => f.active_in(WoodpeckerConfig::DEFAULT_CAMPAIGN).len(),
            Vendor::Smartlead(f) => f.campaign_emails(SmartleadConfig::DEFAULT_CAMPAIGN).len(),
        }
    }

    /// How long the vendor spent processing requests (Woodpecker only: its
    /// one-at-a-time turn is the resource the ceiling is made of).
    fn busy(&self) -> Option<Duration> {
        match self {
            Vendor::Woodpecker(f) => Some(f.busy_time()),
            Vendor::Smartlead(_) => None,
        }
    }

    fn requests(&self) -> Vec<leadrelay_fakes::common::LoggedRequest> {
        match self {
            Vendor::Woodpecker(f) => f.requests().entries(),
            Vendor::Smartlead(f) => f.requests().entries(),
        }
    }

    fn base_url(&self) -> String {
        match self {
            Vendor::Woodpecker(f) => f.base_url(),
            Vendor::Smartlead(f) => f.base_url(),
        }
    }
}

struct Run {
    name: String,
    vendor: Vendor,
    destination: String,
    env: [(&'static str, &'static str); 1],
    /// Enrollments/s the vendor allows (for Woodpecker the nominal one:
    /// the run measures the real one from the fake's processing time).
    ceiling: f64,
}

struct Measured {
    enrolled: usize,
    stored: u64,
    drain: Option<Duration>,
    requests: usize,
    throttled: usize,
    overflow_peak: u64,
    overflow_empty: Option<Duration>,
    /// The vendor's processing time during the drain (Woodpecker).
    busy: Option<Duration>,
}

/// `GET /api/v1/enrollment/overflow`'s `total` (None when it cannot be read).
async fn overflow_total(addr: &str, key: &str) -> Option<u64> {
    let (status, v) = get_json(addr, "/api/v1/enrollment/overflow?limit=1", key)
        .await
        .ok()?;
    (status == 200).then(|| v["total"].as_u64()).flatten()
}

async fn measure(cli: &Cli, run: &Run, leads: u64) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let config = base_config(dir.path(), &run.destination);
    // Store the leads first (no workers), then time the drain alone.
    let api = procs::leadrelay_with_env(&cli.bin, dir.path(), &config, "api", &run.env).await?;
    let filled = closed_loop(
        &api.addr,
        "/v1/forms/contact",
        32,
        Duration::from_secs(600),
        Some(leads),
        0,
    )
    .await;
    let key = procs::admin_key(&cli.bin, &dir.path().join("bench.toml"), &run.env)?;
    let busy_before = run.vendor.busy();
    let start = Instant::now();
    let worker =
        procs::leadrelay_with_env(&cli.bin, dir.path(), &config, "worker", &run.env).await?;
    let mut quiet_since = Instant::now();
    let mut seen = 0;
    let mut overflow_peak = 0;
    let mut overflow_empty = None;
    let mut enrolled = 0;
    while start.elapsed() < Duration::from_secs(1800) {
        let n = run.vendor.requests().len();
        if n != seen {
            seen = n;
            quiet_since = Instant::now();
        }
        enrolled = run.vendor.enrolled();
        let waiting = overflow_total(&api.addr, &key).await;
        if let Some(w) = waiting {
            overflow_peak = overflow_peak.max(w);
            if w > 0 {
                overflow_empty = None;
            } else if overflow_empty.is_none() {
                overflow_empty = Some(start.elapsed());
            }
        }
        let done = enrolled as u64 >= filled.ok;
        // Done when everyone is enrolled and the vendor has heard nothing
        // for 2 s; given up when it has heard nothing for 3 minutes (longer
        // than an overflow window).
        if (done && quiet_since.elapsed() > Duration::from_secs(2))
            || quiet_since.elapsed() > Duration::from_secs(180)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    worker.stop();
    api.stop();
    let reqs = run.vendor.requests();
    let drain = reqs
        .last()
        .map(|r| r.at.duration_since(start))
        .filter(|_| enrolled as u64 >= filled.ok);
    Ok(Measured {
        enrolled,
        stored: filled.ok,
        drain,
        requests: reqs.len(),
        throttled: reqs.iter().filter(|r| r.status == 429).count(),
        overflow_peak,
        overflow_empty: overflow_empty.filter(|_| overflow_peak > 0),
        busy: run
            .vendor
            .busy()
            .zip(busy_before)
            .map(|(after, before)| after.saturating_sub(before)),
    })
}

/// A sequence destination `name` (its connector too) filled from the contact
/// form, with `extra` settings.
fn destination(name: &str, campaign: u64, base: &str, extra: &str) -> String {
    format!(
        r#"
[delivery]
poll_interval = "200ms"

[destinations.{name}]
connector = "{name}"
campaign_id = {campaign}
base_url = "{base}"
allow_private_networks = true
purposes = ["crm"]
{extra}

[[routes]]
name = "enroll"
forms = ["contact"]
destinations = ["{name}"]
"#
    )
}

pub async fn enroll(cli: &Cli, leads: u64, woodpecker_ms: u64) -> anyhow::Result<()> {
    let wp_ms = woodpecker_ms.max(1);
    let wp_requests = 1000.0 / wp_ms as f64;
    println!(
        "\n## Enrollment: {leads} qualified leads into the fake Woodpecker (one request at a time, {wp_ms} ms each) and the fake Smartlead (60 requests / min, 100 leads each)\n"
    );
    let wp = Vendor::Woodpecker(
        FakeWoodpecker::start(WoodpeckerConfig {
            processing_time: Duration::from_millis(wp_ms),
            ..Default::default()
        })
        .await?,
    );
    let sl = Vendor::Smartlead(FakeSmartlead::start(SmartleadConfig::default()).await?);
    let sl_over = Vendor::Smartlead(FakeSmartlead::start(SmartleadConfig::default()).await?);
    let overflow_limit = "2000/30s";
    let runs = [
        Run {
            name: "woodpecker".into(),
            destination: destination(
                "woodpecker",
                WoodpeckerConfig::DEFAULT_CAMPAIGN,
                &wp.base_url(),
                "",
            ),
            vendor: wp,
            env: [("WOODPECKER_API_KEY", WoodpeckerConfig::DEFAULT_API_KEY)],
            ceiling: wp_requests / 2.0,
        },
        Run {
            name: "smartlead".into(),
            destination: destination(
                "smartlead",
                SmartleadConfig::DEFAULT_CAMPAIGN,
                &sl.base_url(),
                "",
            ),
            vendor: sl,
            env: [("SMARTLEAD_API_KEY", SmartleadConfig::DEFAULT_API_KEY)],
            ceiling: 100.0,
        },
        Run {
            name: format!("smartlead, add_limit {overflow_limit}"),
            destination: destination(
                "smartlead",
                SmartleadConfig::DEFAULT_CAMPAIGN,
                &sl_over.base_url(),
                &format!("[destinations.smartlead.enrollment]\nadd_limit = \"{overflow_limit}\""),
            ),
            vendor: sl_over,
            env: [("SMARTLEAD_API_KEY", SmartleadConfig::DEFAULT_API_KEY)],
            // The add limit, not the vendor, is the ceiling of this run.
            ceiling: 2000.0 / 30.0,
        },
    ];
    let mut t = table(&[
        "tool",
        "enrolled",
        "drain time",
        "enrollments/s",
        "ceiling",
        "vs ceiling",
        "requests",
        "requests/s",
        "429s",
        "vendor busy",
        "overflow peak",
        "overflow empty at",
    ]);
    let mut wp_processing = None;
    for run in &runs {
        let m = measure(cli, run, leads).await?;
        let (time, rate, req_rate) = match m.drain {
            Some(d) => (
                format!("{:.1} s", d.as_secs_f64()),
                m.enrolled as f64 / d.as_secs_f64(),
                m.requests as f64 / d.as_secs_f64(),
            ),
            None => ("did not finish".into(), 0.0, 0.0),
        };
        // Woodpecker's ceiling from what a request really took at the fake
        // (its sleep of `--woodpecker-ms` rounds up to the timer's next
        // millisecond, and the handler works too): one request at a time,
        // two per enrollment.
        let ceiling = match m.busy {
            Some(busy) if m.requests > 0 && !busy.is_zero() => {
                let per_request = busy.as_secs_f64() / m.requests as f64;
                wp_processing = Some(per_request);
                1.0 / (2.0 * per_request)
            }
            _ => run.ceiling,
        };
        let busy_share = match (m.busy, m.drain) {
            (Some(b), Some(d)) if !d.is_zero() => {
                format!("{:.0} %", b.as_secs_f64() / d.as_secs_f64() * 100.0)
            }
            _ => "—".into(),
        };
        t.add_row(vec![
            run.name.clone(),
            format!("{} / {}", m.enrolled, m.stored),
            time,
            format!("{rate:.1}"),
            format!("{ceiling:.1}/s"),
            format!("{:.0} %", rate / ceiling * 100.0),
            m.requests.to_string(),
            format!("{req_rate:.1}"),
            m.throttled.to_string(),
            busy_share,
            m.overflow_peak.to_string(),
            m.overflow_empty
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| "—".into()),
        ]);
    }
    println!("{t}");
    let wp_measured = wp_processing
        .map(|s| format!("{:.2} ms each as measured at the fake", s * 1000.0))
        .unwrap_or_else(|| "not measured".into());
    println!(
        "ceilings: Woodpecker one request at a time ({wp_ms} ms nominal, {wp_requests:.0} requests/s = {:.0} enrollments/s; {wp_measured}) at 2 requests per enrollment (lookup, add); vendor busy = the share of the drain Woodpecker spent processing; Smartlead 60 requests/min × 100 leads = 100/s; with add_limit {overflow_limit} the limit itself ({:.1}/s): the overflow queue drains one window at a time",
        wp_requests / 2.0,
        2000.0 / 30.0
    );
    Ok(())
}
