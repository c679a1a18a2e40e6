//! What every HTTP connector shares: a client that refuses private
//! addresses unless allowed, sending with a timeout while recording the
//! attempt, and the default classification of responses.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::header::HeaderMap;
use sha2::{Digest, Sha256};

use super::{AttemptReport, ErrorClass, Outcome};
use crate::redact;
use crate::store::Exchange;

/// Longest response excerpt kept in the attempt log.
pub const EXCERPT_BYTES: usize = 512;
/// How long a 429 without `Retry-After` holds the destination's requests
/// (at least; the connector's verdict may extend it).
const MIN_HOLD: Duration = Duration::from_secs(1);
/// Most response body read from a vendor (the rest is dropped).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// A response, with its body read (up to [`MAX_RESPONSE_BYTES`]).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

#[cfg(test)]
impl HttpResponse {
    /// A vendor's answer as the connectors' classification tests need it.
    pub fn canned(status: u16, headers: &[(&'static str, &str)], body: &str) -> HttpResponse {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                *k,
                reqwest::header::HeaderValue::from_str(v).expect("test header"),
            );
        }
        HttpResponse {
            status,
            headers: h,
            body: body.into(),
        }
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq)]
pub enum SendError {
    Timeout,
    Connect(String),
    /// The URL points at a private, loopback or link-local address.
    Blocked(String),
    /// Not sent: the destination was throttled moments ago and is on hold
    /// for this long (see [`super::pace::Hold`]).
    Held(super::pace::Held),
    Other(String),
}

impl SendError {
    /// The default verdict for a request that got no answer.
    pub fn outcome(&self) -> Outcome {
        match self {
            SendError::Timeout => {
                Outcome::retry(ErrorClass::Timeout, "timed out waiting for the destination")
            }
            SendError::Connect(m) => {
                Outcome::retry(ErrorClass::Connect, format!("connection failed: {m}"))
            }
            SendError::Blocked(m) => Outcome::permanent(ErrorClass::Blocked, m.clone()),
            SendError::Held(h) => Outcome::Throttled {
                message: format!(
                    "not sent: paused {}s more after {}",
                    h.left.as_secs().max(1),
                    h.reason
                ),
                retry_after: Some(h.left),
            },
            SendError::Other(m) => Outcome::retry(ErrorClass::Connect, m.clone()),
        }
    }
}

/// Builds a client with `timeout`, no redirects, rustls, and (unless
/// `allow_private`) a resolver that drops private addresses.
pub fn client(timeout: Duration, allow_private: bool) -> Result<reqwest::Client, String> {
    crate::init_crypto();
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("leadrelay/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60));
    if !allow_private {
        b = b.dns_resolver(Arc::new(PublicOnlyResolver));
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Sends `request` and records the attempt. `display_url` is what the
/// attempt log shows (secrets removed); errors never show more of the URL.
pub async fn send(
    client: &reqwest::Client,
    request: reqwest::Request,
    display_url: &str,
    allow_private: bool,
) -> (Result<HttpResponse, SendError>, AttemptReport) {
    send_inner(client, request, display_url, allow_private, false).await
}

/// [`send`] to a URL that is itself a secret (a Zapier hook, a Slack
/// incoming webhook): a response that echoes the URL's path or query has
/// them replaced by `display_url` too.
pub async fn send_to_secret_url(
    client: &reqwest::Client,
    request: reqwest::Request,
    display_url: &str,
    allow_private: bool,
) -> (Result<HttpResponse, SendError>, AttemptReport) {
    send_inner(client, request, display_url, allow_private, true).await
}

async fn send_inner(
    client: &reqwest::Client,
    request: reqwest::Request,
    display_url: &str,
    allow_private: bool,
    secret_url: bool,
) -> (Result<HttpResponse, SendError>, AttemptReport) {
    let body_bytes = request
        .body()
        .and_then(|b| b.as_bytes())
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    // A URL read from a secret (a Zapier hook, a Slack webhook) must not
    // reach the attempt log through an error or an echoing response.
    let hide = Hidden::of(request.url(), display_url);
    let exchange = capture_request(request.headers(), &body_bytes);
    let mut report = AttemptReport {
        exchange: Some(exchange),
        started_at: Some(Utc::now()),
        method: Some(request.method().to_string()),
        url: Some(display_url.to_string()),
        request_bytes: Some(body_bytes.len() as u64),
        request_sha256: Some(hex::encode(Sha256::digest(&body_bytes))),
        ..Default::default()
    };
    if !allow_private && let Some(reason) = literal_private_host(request.url()) {
        return (Err(SendError::Blocked(reason)), report);
    }
    // The destination's rate limit counts every request, and a throttled
    // destination sends nothing more until its pause is over (see `pace`).
    if let Err(held) = super::pace::before_request().await {
        report.response_excerpt = Some("not sent: the destination is paused".into());
        return (Err(SendError::Held(held)), report);
    }
    report.started_at = Some(Utc::now());
    let start = Instant::now();
    let result = client.execute(request).await;
    let result = match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            super::pace::observe(&headers);
            if status == 429 {
                // Hold the destination's other requests at once; connectors
                // that know a longer pause (a daily limit) extend it.
                super::pace::hold(
                    parse_retry_after(&headers).unwrap_or(MIN_HOLD),
                    &format!("HTTP 429 from {display_url}"),
                );
            }
            let body = read_capped(resp).await;
            report.status = Some(status);
            if let Some(x) = report.exchange.as_mut() {
                x.response_headers = scrub_headers(&headers);
            }
            let body = if secret_url { hide.scrub(body) } else { body };
            report.response_excerpt =
                Some(redact::excerpt(&body, EXCERPT_BYTES)).filter(|s| !s.is_empty());
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
        }
        // reqwest's errors print the whole URL: drop it at the source.
        Err(e) => Err(classify_reqwest_error(e.without_url(), &hide)),
    };
    report.duration = start.elapsed();
    if let Err(e) = &result {
        report.response_excerpt = Some(match e {
            SendError::Timeout => "timeout".into(),
            SendError::Held(_) => "not sent: the destination is paused".into(),
            SendError::Connect(m) | SendError::Blocked(m) | SendError::Other(m) => {
                redact::excerpt(m, EXCERPT_BYTES)
            }
        });
    }
    (result, report)
}

/// Values of secrets read from env vars, each with its var's name, longest
/// first (so a secret containing another is replaced whole).
static SECRETS: std::sync::RwLock<Vec<(String, String)>> = std::sync::RwLock::new(Vec::new());

/// Remembers that `value` is the secret in env var `var`: captured requests
/// show `$var` wherever the value would appear. Called by
/// [`super::BuildContext::secret`] for every secret a connector reads.
pub fn remember_secret(var: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    let mut s = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if s.iter().any(|(v, n)| v == value && n == var) {
        return;
    }
    s.push((value.to_string(), var.to_string()));
    s.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
}

/// The env var names of the remembered secrets.
pub fn secret_var_names() -> Vec<String> {
    let s = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<String> = s.iter().map(|(_, n)| n.clone()).collect();
    names.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    names.dedup();
    names
}

/// `text` with every remembered secret value replaced by `$VAR`.
pub fn scrub_secrets(text: &str) -> String {
    let s = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for (value, var) in s.iter() {
        if out.contains(value.as_str()) {
            out = out.replace(value.as_str(), &format!("${var}"));
        }
    }
    out
}

/// Headers whose values are credentials even when they hold no remembered
/// secret (an OAuth access token, a Basic pair): their value is hidden.
fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || [
        "token", "secret", "api-key", "apikey", "api_key", "password",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// Header pairs with secrets replaced by their env var names and other
/// credentials hidden (`Bearer [hidden]`).
fn scrub_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let raw = String::from_utf8_lossy(v.as_bytes());
            let mut value = scrub_secrets(&raw);
            if is_credential_header(k.as_str()) && value == raw {
                value = match value.split_once(' ') {
                    Some((scheme, _)) if !scheme.is_empty() => format!("{scheme} [hidden]"),
                    _ => "[hidden]".to_string(),
                };
            }
            (k.as_str().to_string(), value)
        })
        .collect()
}

/// The request as sent, for the attempt log: headers and body (capped at
/// [`Exchange::MAX_BODY`]) with secrets replaced by their env var names.
/// Personal data stays (admins may inspect it; viewers see it masked).
fn capture_request(headers: &HeaderMap, body: &[u8]) -> Exchange {
    // Scrubbed before the cut, so a secret across the cut cannot leave half
    // of itself behind.
    let mut text = scrub_secrets(&String::from_utf8_lossy(body));
    let truncated = text.len() > Exchange::MAX_BODY;
    if truncated {
        let mut cut = Exchange::MAX_BODY;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Exchange {
        request_headers: scrub_headers(headers),
        request_body: text,
        request_body_truncated: truncated,
        response_headers: Vec::new(),
    }
}

async fn read_capped(mut resp: reqwest::Response) -> String {
    let mut buf: Vec<u8> = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_RESPONSE_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= MAX_RESPONSE_BYTES {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The parts of a request URL the attempt log must not show: the whole URL
/// and, when the display form leaves it out, its path and query.
struct Hidden {
    needles: Vec<String>,
    display: String,
}

impl Hidden {
    fn of(url: &reqwest::Url, display_url: &str) -> Hidden {
        let mut needles = Vec::new();
        let tail = &url[url::Position::BeforePath..];
        if tail.len() > 1 && !display_url.contains(tail) {
            needles.push(url.as_str().to_string());
            needles.push(tail.to_string());
            let path = url.path();
            if path.len() > 1 && !display_url.contains(path) {
                needles.push(path.to_string());
            }
            if let Some(q) = url.query().filter(|q| !q.is_empty()) {
                needles.push(q.to_string());
            }
        }
        Hidden {
            needles,
            display: display_url.to_string(),
        }
    }

    /// `text` with every hidden part replaced by the display URL.
    fn scrub(&self, mut text: String) -> String {
        for n in &self.needles {
            if text.contains(n.as_str()) {
                text = text.replace(n.as_str(), &self.display);
            }
        }
        text
    }
}

fn classify_reqwest_error(e: reqwest::Error, hide: &Hidden) -> SendError {
    if e.is_timeout() {
        return SendError::Timeout;
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    let msg = hide.scrub(msg);
    if msg.contains("private network") {
        return SendError::Blocked(msg);
    }
    if e.is_connect() || e.is_request() {
        return SendError::Connect(msg);
    }
    SendError::Other(msg)
}

/// Percent-encodes a path segment (external id values such as emails).
pub fn path_segment(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The default classification of an HTTP answer:
/// 2xx delivered; 408, 425, 5xx retry (honouring `Retry-After`); 429
/// throttled; 401 credentials rejected; 410 gone; other 4xx permanent.
pub fn classify(resp: &HttpResponse) -> Outcome {
    let retry_after = parse_retry_after(&resp.headers);
    let excerpt = redact::excerpt(&resp.body, 200);
    let detail = if excerpt.is_empty() {
        String::new()
    } else {
        format!(": {excerpt}")
    };
    match resp.status {
        200..=299 => Outcome::delivered(),
        408 | 425 => Outcome::Retry {
            class: ErrorClass::Http4xx,
            message: format!("HTTP {}{detail}", resp.status),
            retry_after,
        },
        429 => Outcome::Throttled {
            message: format!("HTTP 429{detail}"),
            retry_after,
        },
        401 => Outcome::CredentialsRejected {
            message: format!("HTTP 401{detail}"),
        },
        410 => Outcome::Gone {
            message: format!("HTTP 410{detail}"),
        },
        400..=499 => {
            Outcome::permanent(ErrorClass::Http4xx, format!("HTTP {}{detail}", resp.status))
        }
        500..=599 => Outcome::Retry {
            class: ErrorClass::Http5xx,
            message: format!("HTTP {}{detail}", resp.status),
            retry_after,
        },
        _ => Outcome::permanent(
            ErrorClass::Http4xx,
            format!("unexpected HTTP {}{detail}", resp.status),
        ),
    }
}

/// `Retry-After` in seconds or as an HTTP date; capped at one day.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let d = if let Ok(secs) = v.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        Duration::from_secs_f64(secs.min(86_400.0))
    } else {
        let when = httpdate::parse_http_date(v).ok()?;
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(Duration::from_secs(86_400)))
}

/// True for addresses on the public internet.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_ip(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// A reason if the URL's host is a literal non-public IP.
fn literal_private_host(url: &reqwest::Url) -> Option<String> {
    let ip: IpAddr = match url.host()? {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
        url::Host::Domain(_) => return None,
    };
    (!is_public_ip(ip)).then(|| {
        format!("blocked: {ip} is a private network address (set allow_private_networks = true to allow it)")
    })
}

/// Resolves names and keeps only public addresses: the check is on the
/// resolved address, so a public name pointing at 127.0.0.1 is refused too.
struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| is_public_ip(a.ip()))
                .collect();
            if public.is_empty() {
                let msg = format!(
                    "blocked: {host} resolves only to private network addresses (set allow_private_networks = true to allow it)"
                );
                return Err(msg.into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn resp(status: u16, retry_after: Option<&str>) -> HttpResponse {
        let mut headers = HeaderMap::new();
        if let Some(r) = retry_after {
            headers.insert(
                reqwest::header::RETRY_AFTER,
                HeaderValue::from_str(r).unwrap(),
            );
        }
        HttpResponse {
            status,
            headers,
            body: "{\"error\":\"x\"}".into(),
        }
    }

    #[test]
    fn default_classification() {
        assert!(matches!(
            classify(&resp(200, None)),
            Outcome::Delivered { .. }
        ));
        assert!(matches!(
            classify(&resp(204, None)),
            Outcome::Delivered { .. }
        ));
        for s in [408, 425, 500, 502, 503, 504] {
            assert!(
                matches!(classify(&resp(s, None)), Outcome::Retry { .. }),
                "{s}"
            );
        }
        assert!(
            matches!(classify(&resp(429, Some("7"))), Outcome::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(7))
        );
        assert!(matches!(
            classify(&resp(401, None)),
            Outcome::CredentialsRejected { .. }
        ));
        assert!(matches!(classify(&resp(410, None)), Outcome::Gone { .. }));
        for s in [400, 403, 404, 409, 422] {
            assert!(
                matches!(classify(&resp(s, None)), Outcome::Permanent { .. }),
                "{s}"
            );
        }
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("120"),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(120)));
        let future = std::time::SystemTime::now() + Duration::from_secs(30);
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(future)).unwrap(),
        );
        let d = parse_retry_after(&h).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("soon"),
        );
        assert_eq!(parse_retry_after(&h), None);
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("99999999"),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn captured_requests_name_secrets_and_cap_the_body() {
        remember_secret("H22B_UNIT_SECRET", "unit-secret-0042");
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("unit-secret-0042"));
        h.insert(
            "authorization",
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        h.insert("x-plain", HeaderValue::from_static("kept"));
        let mut body = b"{\"token\":\"unit-secret-0042\",\"pad\":\"".to_vec();
        body.resize(Exchange::MAX_BODY + 100, b'a');
        let x = capture_request(&h, &body);
        assert!(
            x.request_headers
                .contains(&("x-api-key".into(), "$H22B_UNIT_SECRET".into()))
        );
        assert!(
            x.request_headers
                .contains(&("authorization".into(), "Basic [hidden]".into()))
        );
        assert!(
            x.request_headers
                .contains(&("x-plain".into(), "kept".into()))
        );
        assert!(
            x.request_body
                .starts_with("{\"token\":\"$H22B_UNIT_SECRET\"")
        );
        assert!(x.request_body_truncated);
        assert!(x.request_body.len() <= Exchange::MAX_BODY);
        let small = capture_request(&HeaderMap::new(), b"{}");
        assert_eq!(
            (small.request_body.as_str(), small.request_body_truncated),
            ("{}", false)
        );
    }

    #[test]
    fn private_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public_ip(ip.parse().unwrap()), "{ip}");
        }
    }
}
