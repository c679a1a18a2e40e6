//! Per-step costs of the ingest path (development aid, not a test):
//! `cargo run --release -p leadrelay --example microbench`.
use std::time::Instant;

use leadrelay_model::{EmailAddress, PhoneE164};

fn time<T>(name: &str, n: usize, mut f: impl FnMut(usize) -> T) {
    let start = Instant::now();
    for i in 0..n {
        std::hint::black_box(f(i));
    }
    println!(
        "{name:<40} {:>8.2} µs",
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}

#[tokio::main]
async fn main() {
    time("phone parse", 20_000, |_| {
        PhoneE164::parse("+1 415 555 2671", Some("US"))
    });
    time("email parse", 20_000, |i| {
        EmailAddress::parse(&format!("lead{i}@bench-example.com"))
    });
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/db", dir.path().display());
    let store = leadrelay::store::open(&url, &Default::default())
        .await
        .unwrap();
    let cfg = leadrelay::config::load_str(leadrelay::config::DEFAULT_CONFIG, "d", &|_| None)
        .unwrap()
        .config;
    let routes =
        leadrelay::routing::RouteTable::compile(&cfg.routes, ["backup".to_string()].into())
            .unwrap();
    let ing = std::sync::Arc::new(
        leadrelay::ingest::Ingestor::new(store.clone(), std::sync::Arc::new(cfg), routes, &|_| {
            None
        })
        .await
        .unwrap(),
    );
    let body = |i: usize| {
        bytes::Bytes::from(format!(
            r#"{{"email":"lead{i}@bench-example.com","first_name":"Alexandra","last_name":"Montgomery-Smith","company":"Northwind Traders International","phone":"+1 415 555 2671","message":"Hello, we are evaluating tools for our revenue operations team and would like a demo of the enterprise plan next week. We have about 40 sales reps in three regions and need CRM sync with HubSpot and Salesforce, plus Slack alerts for new inbound leads. Thanks!","consent":"on","utm_source":"google","utm_medium":"cpc","utm_campaign":"q4-demand-gen","landing_page":"https://www.example.com/pricing?utm_source=google"}}"#
        ))
    };
    let sub = |i: usize| leadrelay::ingest::FormSubmission {
        form: "contact",
        content_type: Some("application/json"),
        body: body(i),
        idempotency_header: None,
        client_ip: Some("203.0.113.1".parse().unwrap()),
        context: leadrelay::ingest::enrich::RequestContext {
            query: None,
            referer_header: None,
            user_agent: Some("bench"),
        },
    };
    let n = 5000;
    let start = Instant::now();
    let mut items = Vec::new();
    for i in 0..n {
        items.push(ing.form_item(sub(i)).await.unwrap());
    }
    println!(
        "{:<40} {:>8.2} µs",
        "build item (parse+validate+enrich)",
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let ev = items[0].event.clone();
    time("serialize event json", 20_000, |_| {
        serde_json::to_string(&ev).unwrap()
    });
    time("contacts::merge (new)", 20_000, |_| {
        leadrelay::contacts::merge(None, &ev, chrono::Utc::now())
    });
    let c = leadrelay::contacts::merge(None, &ev, chrono::Utc::now());
    time("contacts::merge (existing)", 20_000, |_| {
        leadrelay::contacts::merge(c.clone(), &ev, chrono::Utc::now())
    });
    // Store throughput: 64 concurrent single-item ingests.
    let start = Instant::now();
    let mut tasks = Vec::new();
    let store2 = store.clone();
    let chunks: Vec<Vec<_>> = items.chunks(n / 64 + 1).map(|c| c.to_vec()).collect();
    for chunk in chunks {
        let s = store2.clone();
        tasks.push(tokio::spawn(async move {
            for it in chunk {
                s.ingest(vec![it]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "{:<40} {:>8.2} µs  ({:.0}/s)",
        "store.ingest (64 concurrent)",
        start.elapsed().as_secs_f64() * 1e6 / n as f64,
        n as f64 / start.elapsed().as_secs_f64()
    );
}
