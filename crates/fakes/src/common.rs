//! What every fake shares: starting a server on port 0, a request log, fault
//! injection on command, and a rolling-window rate limiter.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Response, StatusCode};
use axum::middleware::Next;
use serde_json::Value;
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

/// A fake's handle, `$name`: its server and its state (`Deref` to the
/// state, for tests), started on port 0 (`start`) or an address
/// (`start_on`, for `leadrelay fake`).
#[macro_export]
macro_rules! fake_handle {
    ($name:ident, $state:ty, $config:ty, $router:path) => {
        pub struct $name {
            server: $crate::common::FakeServer,
            state: $state,
        }

        impl $name {
            pub async fn start(config: $config) -> std::io::Result<Self> {
                Self::start_on(config, "127.0.0.1:0").await
            }

            pub async fn start_on(config: $config, listen: &str) -> std::io::Result<Self> {
                let state = <$state>::new(config);
                let server =
                    $crate::common::FakeServer::start($router(state.clone()), listen).await?;
                Ok(Self { server, state })
            }

            /// `http://127.0.0.1:PORT`, without a trailing slash.
            pub fn base_url(&self) -> String {
                self.server.base_url()
            }
        }

        impl std::ops::Deref for $name {
            type Target = $state;
            fn deref(&self) -> &$state {
                &self.state
            }
        }
    };
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

/// A fixed-window budget (Apollo's per-minute/hour/day windows,
/// Salesloft's cost per minute): at most `limit` units from the start of
/// a window until `window` has passed, then a fresh window.
#[derive(Debug, Clone)]
pub struct FixedWindow {
    limit: u64,
    window: Duration,
    state: Arc<Mutex<(Instant, u64)>>,
}

impl FixedWindow {
    pub fn new(limit: u64, window: Duration) -> Self {
        Self {
            limit,
            window,
            state: Arc::new(Mutex::new((Instant::now(), 0))),
        }
    }

    fn roll(&self, state: &mut (Instant, u64), now: Instant) {
        if now.duration_since(state.0) >= self.window {
            *state = (now, 0);
        }
    }

    /// Whether `cost` more units fit the current window (nothing is taken);
    /// `Err(wait)` until the window ends when they do not.
    pub fn fits(&self, cost: u64) -> Result<(), Duration> {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.roll(&mut st, now);
        if st.1 + cost > self.limit {
            return Err(self.window.saturating_sub(now.duration_since(st.0)));
        }
        Ok(())
    }

    /// Takes `cost` units: `Ok(used)` after taking them, or `Err(wait)`.
    pub fn take(&self, cost: u64) -> Result<u64, Duration> {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.roll(&mut st, now);
        if st.1 + cost > self.limit {
            return Err(self.window.saturating_sub(now.duration_since(st.0)));
        }
        st.1 += cost;
        Ok(st.1)
    }

    /// Units used in the current window.
    pub fn used(&self) -> u64 {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.roll(&mut st, Instant::now());
        st.1
    }

    pub fn limit(&self) -> u64 {
        self.limit
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

/// A JSON answer with `status`.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

/// A 429 with `body`, `Retry-After: secs` (when given) and the vendor's
/// rate headers.
pub fn too_many_requests(
    body: &Value,
    retry_after: Option<u64>,
    headers: &[(&'static str, String)],
) -> Response<Body> {
    let mut r = json_response(StatusCode::TOO_MANY_REQUESTS, body);
    if let Some(secs) = retry_after {
        r.headers_mut().insert("retry-after", secs.into());
    }
    set_headers(&mut r, headers);
    r
}

/// Adds `headers` to a response (values that are not valid header text are
/// left out).
pub fn set_headers(r: &mut Response<Body>, headers: &[(&'static str, String)]) {
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(*k, v);
        }
    }
}

/// Seconds to wait, rounded up, at least 1.
pub fn wait_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The middleware every fake shares: the next injected fault answers
/// first; then `gate` (authentication, rate limits) either refuses the
/// request with its answer or lets it through with headers to add to the
/// handler's answer (the rate headers); every answer goes into `log`.
pub async fn guard(
    faults: &Faults,
    log: &RequestLog,
    req: Request,
    next: Next,
    gate: impl FnOnce(&Request) -> Result<Vec<(&'static str, String)>, Response<Body>>,
) -> Response<Body> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let response = match faults.apply().await {
        Some(injected) => injected,
        None => match gate(&req) {
            Err(refused) => refused,
            Ok(headers) => {
                let mut r = next.run(req).await;
                set_headers(&mut r, &headers);
                r
            }
        },
    };
    log.record(&method, &path, response.status().as_u16());
    response
}

/// The value of `name` in a query string.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query?)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
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

/// base64(HMAC-SHA256(secret, message)), as vendors sign webhooks and
/// token answers.
pub(crate) fn hmac_sha256_base64(secret: &str, message: &str) -> String {
    use base64::Engine;
    jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        jsonwebtoken::Algorithm::HS256,
    )
    .ok()
    .and_then(|url_safe| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(url_safe)
            .ok()
    })
    .map(|raw| base64::engine::general_purpose::STANDARD.encode(raw))
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
            query_param(Some("a=1&apiKey=k%40"), "apiKey").as_deref(),
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

    #[test]
    fn fixed_window_counts_costs() {
        let w = FixedWindow::new(5, Duration::from_millis(200));
        assert_eq!(w.take(3), Ok(3));
        assert!(w.fits(2).is_ok());
        assert!(w.take(3).is_err());
        assert_eq!(w.used(), 3);
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(w.take(5), Ok(5));
    }
}
