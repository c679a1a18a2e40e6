//! What every fake shares: starting a server on port 0, a request log, fault
//! injection on command, and a rolling-window rate limiter.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Response, StatusCode};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A fake vendor server running in the background; dropped, it stops.
pub struct FakeServer {
    pub addr: SocketAddr,
    handle: JoinHandle<()>,
}

impl FakeServer {
    /// Serves `router` on `listen` (use `127.0.0.1:0` in tests).
    pub async fn start(router: Router, listen: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let handle = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "fake server stopped");
            }
        });
        Ok(Self { addr, handle })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// A failure a test asks a fake to produce.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and body (JSON or text) instead of handling the request.
    Status {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Wait this long before handling the request (to trip client timeouts).
    Delay(Duration),
    /// Handle the request (the write is done), then wait this long before
    /// answering: a client killed meanwhile never learns what was written.
    DelayAnswer(Duration),
    /// Drop the connection without answering.
    Reset,
}

/// A queue of injected failures: each request takes the next one, if any.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    queue: Arc<Mutex<VecDeque<Fault>>>,
}

impl Faults {
    /// Makes the next `times` requests fail with `fault`.
    pub fn push(&self, fault: Fault, times: usize) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..times {
            q.push_back(fault.clone());
        }
    }

    pub fn clear(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn next(&self) -> Option<Fault> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Handles a request with `handle` under the next fault, if any.
    pub async fn around(
        &self,
        handle: impl std::future::Future<Output = Response<Body>>,
    ) -> Response<Body> {
        let fault = self.next();
        if let Some(Fault::DelayAnswer(d)) = fault {
            let response = handle.await;
            tokio::time::sleep(d).await;
            return response;
        }
        match fault {
            Some(f) => match Self::inject(f).await {
                Some(injected) => injected,
                None => handle.await,
            },
            None => handle.await,
        }
    }

    /// Applies the next fault, if any: `Some(response)` to send instead of
    /// handling the request. `Reset` is answered by panicking the handler task,
    /// which makes hyper close the connection without a response.
    pub async fn apply(&self) -> Option<Response<Body>> {
        Self::inject(self.next()?).await
    }

    async fn inject(fault: Fault) -> Option<Response<Body>> {
        match fault {
            Fault::Status {
                status,
                body,
                headers,
            } => {
                let mut b = Response::builder().status(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                );
                let json = body.trim_start().starts_with('{') || body.trim_start().starts_with('[');
                b = b.header(
                    "content-type",
                    if json {
                        "application/json"
                    } else {
                        "text/plain"
                    },
                );
                for (k, v) in headers {
                    b = b.header(k, v);
                }
                Some(b.body(Body::from(body)).unwrap_or_default())
            }
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                None
            }
            // Only [`Faults::around`] can answer late; here it is a delay.
            Fault::DelayAnswer(d) => {
                tokio::time::sleep(d).await;
                None
            }
            Fault::Reset => {
                std::panic::resume_unwind(Box::new("fake: connection reset on command"))
            }
        }
    }
}

/// A rolling-window limiter: at most `limit` requests in any `window`.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    limit: usize,
    window: Duration,
    hits: Arc<Mutex<VecDeque<Instant>>>,
}

impl RollingWindow {
    pub fn new(limit: usize, window: Duration) -> Self {
        Self {
            limit,
            window,
            hits: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// Records a request. `Ok(remaining)` if it is within the limit, else
    /// `Err(wait)` with the time until a slot frees up.
    pub fn hit(&self) -> Result<usize, Duration> {
        let now = Instant::now();
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        while hits
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            hits.pop_front();
        }
        if hits.len() >= self.limit {
            let oldest = *hits.front().expect("non-empty when at limit");
            return Err(self.window.saturating_sub(now.duration_since(oldest)));
        }
        hits.push_back(now);
        Ok(self.limit - hits.len())
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

/// One request as a fake saw it, for tests to assert on.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub at: Instant,
}

/// The requests a fake has answered, in order.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    entries: Arc<Mutex<Vec<LoggedRequest>>>,
}

impl RequestLog {
    pub fn record(&self, method: &str, path: &str, status: u16) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(LoggedRequest {
                method: method.to_string(),
                path: path.to_string(),
                status,
                at: Instant::now(),
            });
    }

    pub fn entries(&self) -> Vec<LoggedRequest> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn count(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Whether `s` looks like an email address the way the sequence tools
/// check it: one `@`, something before it, a dotted domain, no spaces.
pub fn plausible_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
        && !domain.contains('@')
}

/// The `(user, password)` of an `Authorization: Basic …` header value.
pub fn basic_credentials(header: Option<&str>) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = header?.trim().strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':').unwrap_or((text.as_str(), ""));
    Some((user.to_string(), password.to_string()))
}

/// A query string's value for `name`.
pub fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query?)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// A JSON answer with `status`.
pub fn json_response(status: u16, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read() {
        use base64::Engine;
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("key-1:")
        );
        assert_eq!(
            basic_credentials(Some(&v)),
            Some(("key-1".to_string(), String::new()))
        );
        assert_eq!(basic_credentials(Some("Bearer x")), None);
        assert_eq!(
            query_value(Some("a=1&apiKey=k%40"), "apiKey").as_deref(),
            Some("k@")
        );
    }

    #[test]
    fn rolling_window_limits() {
        let w = RollingWindow::new(3, Duration::from_millis(200));
        assert_eq!(w.hit(), Ok(2));
        assert_eq!(w.hit(), Ok(1));
        assert_eq!(w.hit(), Ok(0));
        assert!(w.hit().is_err());
        std::thread::sleep(Duration::from_millis(210));
        assert!(w.hit().is_ok());
    }
}
