//! Load generation over raw HTTP/1.1 keep-alive connections: closed-loop
//! (as fast as the server answers) and open-loop (a fixed request rate,
//! latency measured from the scheduled send time so a slow server cannot
//! hide its queueing).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    pub fn p(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

/// A realistic ~600-byte form submission with a unique email.
pub fn payload(n: u64) -> Bytes {
    let v = serde_json::json!({
        "email": format!("lead{n}@bench-example.com"),
        "first_name": "Alexandra",
        "last_name": "Montgomery-Smith",
        "company": "Northwind Traders International",
        "phone": "+1 415 555 2671",
        "message": "Hello, we are evaluating tools for our revenue operations team and would like a demo of the \
                    enterprise plan next week. We have about 40 sales reps in three regions and need CRM sync \
                    with HubSpot and Salesforce, plus Slack alerts for new inbound leads. Thanks!",
        "consent": "on",
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "q4-demand-gen",
        "landing_page": "https://www.example.com/pricing?utm_source=google",
    });
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

/// What one request posts: a path, an optional bearer key, and the body for
/// the n-th request.
#[derive(Clone)]
pub struct Spec {
    pub path: String,
    pub bearer: Option<String>,
    pub body: fn(u64) -> Bytes,
}

impl Spec {
    /// A form submission ([`payload`]) to `path`.
    pub fn form(path: &str) -> Self {
        Spec {
            path: path.to_string(),
            bearer: None,
            body: payload,
        }
    }
}

/// One event for `POST /v1/events`, the same person and text as [`payload`].
pub fn event(n: u64) -> serde_json::Value {
    serde_json::json!({
        "type": "lead.created",
        "contact": {
            "email": format!("lead{n}@bench-example.com"),
            "first_name": "Alexandra",
            "last_name": "Montgomery-Smith",
            "company": "Northwind Traders International",
            "phone": "+1 415 555 2671",
        },
        "data": {
            "message": "Hello, we are evaluating tools for our revenue operations team and would like a demo of the \
                        enterprise plan next week. We have about 40 sales reps in three regions and need CRM sync \
                        with HubSpot and Salesforce, plus Slack alerts for new inbound leads. Thanks!",
        },
        "attribution": {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "q4-demand-gen"},
        "consent": {"crm": true},
    })
}

/// One event per request.
pub fn event_body(n: u64) -> Bytes {
    Bytes::from(serde_json::to_vec(&event(n)).unwrap_or_default())
}

/// Events per request of [`batch_body`].
pub const BATCH: u64 = 100;

/// [`BATCH`] events per request (request n carries events n·100 … n·100+99).
pub fn batch_body(n: u64) -> Bytes {
    let events: Vec<_> = (n * BATCH..(n + 1) * BATCH).map(event).collect();
    Bytes::from(serde_json::to_vec(&events).unwrap_or_default())
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn post(sender: &mut Sender, host: &str, spec: &Spec, n: u64) -> anyhow::Result<u16> {
    sender.ready().await?;
    let mut req = Request::post(spec.path.as_str())
        .header("host", host)
        .header("content-type", "application/json");
    if let Some(key) = &spec.bearer {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let req = req.body(Full::new((spec.body)(n)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

/// `GET path` with a bearer key on a fresh connection: the status and the
/// body as JSON (`null` when it is not JSON).
pub async fn get_json(
    addr: &str,
    path: &str,
    key: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut sender = connect(addr).await?;
    let req = Request::get(path)
        .header("host", addr)
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or_default()))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// `connections` clients, each sending as fast as answers come, for
/// `duration` or until `max_requests` have been sent in total.
pub async fn closed_loop(
    addr: &str,
    path: &str,
    connections: usize,
    duration: Duration,
    max_requests: Option<u64>,
    start_n: u64,
) -> LoadResult {
    closed_loop_spec(
        addr,
        &Spec::form(path),
        connections,
        duration,
        max_requests,
        start_n,
    )
    .await
}

/// [`closed_loop`] posting what `spec` says.
pub async fn closed_loop_spec(
    addr: &str,
    spec: &Spec,
    connections: usize,
    duration: Duration,
    max_requests: Option<u64>,
    start_n: u64,
) -> LoadResult {
    let counter = Arc::new(AtomicU64::new(start_n));
    let limit = max_requests.map(|m| start_n + m);
    let hist = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (addr, spec) = (addr.to_string(), spec.clone());
        let (counter, hist, errors, ok) =
            (counter.clone(), hist.clone(), errors.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = histogram();
            let mut sender = match connect(&addr).await {
                Ok(s) => s,
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            while start.elapsed() < duration {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if limit.is_some_and(|l| n >= l) {
                    break;
                }
                let t = Instant::now();
                match post(&mut sender, &addr, &spec, n).await {
                    Ok(s) if (200..300).contains(&s) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let _ = local.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        match connect(&addr).await {
                            Ok(s) => sender = s,
                            Err(_) => return,
                        }
                    }
                }
            }
            let _ = hist.lock().await.add(&local);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    let latency_us = hist.lock().await.clone();
    LoadResult {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latency_us,
    }
}

/// A fixed `rate` of requests per second for `duration`, spread over
/// `connections`; latency counts from each request's scheduled time.
pub async fn open_loop(
    addr: &str,
    path: &str,
    rate: u64,
    connections: usize,
    duration: Duration,
    start_n: u64,
) -> LoadResult {
    let interval = Duration::from_secs_f64(connections as f64 / rate as f64);
    let total_per_conn = (duration.as_secs_f64() / interval.as_secs_f64()) as u64;
    let hist = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (addr, spec) = (addr.to_string(), Spec::form(path));
        let (hist, errors, ok) = (hist.clone(), errors.clone(), ok.clone());
        // Stagger connections evenly across one interval.
        let offset = interval.mul_f64(c as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut local = histogram();
            let Ok(mut sender) = connect(&addr).await else {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            for i in 0..total_per_conn {
                let scheduled = start + offset + interval.mul_f64(i as f64);
                tokio::time::sleep_until(scheduled.into()).await;
                let n = start_n + i * connections as u64 + c as u64;
                match post(&mut sender, &addr, &spec, n).await {
                    Ok(s) if (200..300).contains(&s) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let _ = local.record(scheduled.elapsed().as_micros().max(1) as u64);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let _ = hist.lock().await.add(&local);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    let latency_us = hist.lock().await.clone();
    LoadResult {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latency_us,
    }
}
