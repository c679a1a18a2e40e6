//! A local webhook sink: counts deliveries (distinct by `webhook-id`),
//! records when each arrived, and can play dead (503) on command.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

#[derive(Default)]
struct Inner {
    ids: HashSet<String>,
    arrivals: Vec<Instant>,
}

#[derive(Clone, Default)]
pub struct Sink {
    inner: Arc<Mutex<Inner>>,
    down: Arc<AtomicBool>,
    pub addr: String,
}

async fn receive(State(s): State<Sink>, headers: HeaderMap) -> StatusCode {
    if s.down.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut inner = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    if inner.ids.insert(id) {
        inner.arrivals.push(Instant::now());
    }
    StatusCode::OK
}

impl Sink {
    pub async fn start() -> anyhow::Result<Sink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut sink = Sink {
            addr: listener.local_addr()?.to_string(),
            ..Default::default()
        };
        sink.addr = listener.local_addr()?.to_string();
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(sink.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(sink)
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Distinct deliveries received.
    pub fn count(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ids
            .len()
    }

    pub fn arrivals(&self) -> Vec<Instant> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .arrivals
            .clone()
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.ids.clear();
        inner.arrivals.clear();
    }
}
