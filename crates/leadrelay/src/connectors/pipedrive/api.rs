//! Pipedrive's HTTP API: the `x-api-token` header, the `{success, data}`
//! envelopes, and token-based rate limits read from the `x-ratelimit-*`
//! headers so requests slow down *before* Pipedrive answers 429.
//!
//! Pipedrive limits each token in rolling 2-second windows (and by a daily
//! token budget). Every answer says how many requests are left in the
//! window (`x-ratelimit-remaining`) and when it resets
//! (`x-ratelimit-reset`, seconds). Each request sent takes one from that
//! remainder before its answer comes back, so concurrent requests are
//! counted too; when it falls to a tenth of the limit, every request waits
//! for the reset (at most a few seconds). A 429 still arriving holds every
//! request of the destination and pauses it for its `Retry-After`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::connectors::http::{self as shared, HttpResponse};
use crate::connectors::{AttemptReport, ErrorClass, Outcome};
use crate::redact::redact_text;

/// Longest wait for a window to reset before a request.
const MAX_SLOWDOWN: Duration = Duration::from_secs(3);
/// Pipedrive's rolling window, assumed when an answer did not say when it resets.
const WINDOW: Duration = Duration::from_secs(2);

/// What the last answers said about one rate-limit window.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    limit: Option<u64>,
    remaining: Option<u64>,
    reset_at: Option<Instant>,
}

impl Window {
    fn observe(&mut self, headers: &HeaderMap) {
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        if let Some(l) = num("x-ratelimit-limit") {
            self.limit = Some(l as u64);
        }
        if let Some(r) = num("x-ratelimit-remaining") {
            self.remaining = Some(r.max(0.0) as u64);
        }
        if let Some(s) = num("x-ratelimit-reset") {
            self.reset_at = Some(Instant::now() + Duration::from_secs_f64(s.clamp(0.0, 60.0)));
        }
    }

    /// Takes one request from the window's remainder (`None`: send now),
    /// or says how long to wait when it is nearly spent. Every request
    /// about to be sent takes one, so requests in flight together cannot
    /// overrun the window before their answers update it.
    fn wait(&mut self, now: Instant) -> Option<Duration> {
        if self.reset_at.is_some_and(|r| r <= now) {
            // A fresh window; the next answer corrects the guess.
            self.remaining = self.limit;
            self.reset_at = None;
        }
        let remaining = self.remaining?;
        let low = self.limit.map(|l| (l / 10).max(1)).unwrap_or(1);
        if remaining > low {
            self.remaining = Some(remaining - 1);
            return None;
        }
        let reset_at = *self.reset_at.get_or_insert(now + WINDOW);
        Some((reset_at - now).min(MAX_SLOWDOWN))
    }
}

/// Rate-limit state per bucket (search requests have their own).
#[derive(Debug, Default)]
struct Budget {
    general: Window,
    search: Window,
}

/// A call that did not succeed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub outcome: Outcome,
    pub status: Option<u16>,
}

pub type CallResult = (Result<Value, Failure>, AttemptReport);

pub struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
    allow_private: bool,
    budget: Mutex<Budget>,
}

fn is_search(path: &str) -> bool {
    path.split('?').next().unwrap_or(path).ends_with("/search")
}

impl Api {
    pub fn new(client: reqwest::Client, base: String, token: String, allow_private: bool) -> Self {
        Self {
            client,
            base,
            token,
            allow_private,
            budget: Mutex::new(Budget::default()),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn slowdown(&self, search: bool) -> Option<Duration> {
        let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        let w = if search {
            &mut b.search
        } else {
            &mut b.general
        };
        w.wait(Instant::now())
    }

    fn observe(&self, search: bool, headers: &HeaderMap) {
        let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        let w = if search {
            &mut b.search
        } else {
            &mut b.general
        };
        w.observe(headers);
    }

    /// One request: `path` starts with `/api/v…`; `query` pairs are encoded.
    /// Ok is the answer's `data`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> CallResult {
        let (res, report) = self.call_enveloped(method, path, query, body).await;
        (
            res.map(|b| b.get("data").cloned().unwrap_or(Value::Null)),
            report,
        )
    }

    /// Like [`Api::call`], but Ok is the whole answer (`data` and
    /// `additional_data`, e.g. the next page's cursor).
    pub async fn call_enveloped(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> CallResult {
        let search = is_search(path);
        // Wait while the window is spent (bounded: an answer that never
        // resets it does not stall a request for ever).
        for _ in 0..4 {
            match self.slowdown(search) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => break,
            }
        }
        let url = format!("{}{path}", self.base);
        let mut token = match reqwest::header::HeaderValue::from_str(&self.token) {
            Ok(v) => v,
            Err(_) => {
                let f = Failure {
                    outcome: Outcome::CredentialsRejected {
                        message: "the Pipedrive API token is not a valid header value".into(),
                    },
                    status: None,
                };
                return (Err(f), AttemptReport::default());
            }
        };
        token.set_sensitive(true);
        let mut req = self
            .client
            .request(method, &url)
            .header("x-api-token", token)
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let request = match req.build() {
            Ok(r) => r,
            Err(e) => {
                let f = Failure {
                    outcome: Outcome::permanent(
                        ErrorClass::Mapping,
                        format!("cannot build the request: {e}"),
                    ),
                    status: None,
                };
                return (Err(f), AttemptReport::default());
            }
        };
        let (result, report) = shared::send(&self.client, request, &url, self.allow_private).await;
        let out = match result {
            Ok(resp) => {
                self.observe(search, &resp.headers);
                classify(&resp)
            }
            Err(e) => Err(Failure {
                outcome: e.outcome(),
                status: None,
            }),
        };
        (out, report)
    }
}

fn classify(resp: &HttpResponse) -> Result<Value, Failure> {
    let status = resp.status;
    let body: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
    let error = body
        .get("error")
        .and_then(Value::as_str)
        .map(redact_text)
        .unwrap_or_else(|| crate::redact::excerpt(&resp.body, 300));
    let fail = |outcome: Outcome| {
        Err(Failure {
            outcome,
            status: Some(status),
        })
    };
    match status {
        200..=299 => {
            if body.get("success").and_then(Value::as_bool) == Some(false) {
                return fail(Outcome::permanent(
                    ErrorClass::Vendor,
                    format!("Pipedrive: {error}"),
                ));
            }
            if body.is_null() {
                return fail(Outcome::retry(
                    ErrorClass::Vendor,
                    format!("Pipedrive answered {status} with a body that is not JSON"),
                ));
            }
            Ok(body)
        }
        429 => {
            let retry_after = shared::parse_retry_after(&resp.headers).or_else(|| {
                resp.headers
                    .get("x-ratelimit-reset")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map(|s| Duration::from_secs_f64(s.clamp(0.0, 86_400.0)))
            });
            let retry_after = retry_after.unwrap_or(Duration::from_secs(2));
            // Every other request of the destination waits too.
            let text = format!("Pipedrive HTTP 429: {error}");
            crate::connectors::pace::hold(retry_after, &text);
            fail(Outcome::Throttled {
                message: text,
                retry_after: Some(retry_after),
            })
        }
        401 => fail(Outcome::CredentialsRejected {
            message: format!("Pipedrive rejected the API token: {error}"),
        }),
        410 => fail(Outcome::Gone {
            message: format!("Pipedrive HTTP 410: {error}"),
        }),
        408 | 425 | 500..=599 => fail(Outcome::Retry {
            class: if status >= 500 {
                ErrorClass::Http5xx
            } else {
                ErrorClass::Http4xx
            },
            message: format!("Pipedrive HTTP {status}: {error}"),
            retry_after: shared::parse_retry_after(&resp.headers),
        }),
        _ => fail(Outcome::permanent(
            ErrorClass::Http4xx,
            format!("Pipedrive HTTP {status}: {error}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(limit: &str, remaining: &str, reset: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", HeaderValue::from_str(limit).unwrap());
        h.insert(
            "x-ratelimit-remaining",
            HeaderValue::from_str(remaining).unwrap(),
        );
        h.insert("x-ratelimit-reset", HeaderValue::from_str(reset).unwrap());
        h
    }

    #[test]
    fn slows_down_when_the_window_is_nearly_spent() {
        let mut w = Window::default();
        let now = Instant::now();
        assert_eq!(w.wait(now), None, "nothing known yet");
        w.observe(&headers("40", "20", "2"));
        assert_eq!(w.wait(Instant::now()), None, "plenty left");
        w.observe(&headers("40", "3", "2"));
        let wait = w.wait(Instant::now()).expect("waits for the reset");
        assert!(wait <= MAX_SLOWDOWN);
        assert!(
            w.wait(Instant::now()).is_some(),
            "every request waits, not only the next one"
        );
        w.observe(&headers("40", "0", "600"));
        assert_eq!(w.wait(Instant::now()), Some(MAX_SLOWDOWN), "bounded");
    }

    #[test]
    fn requests_in_flight_count_against_the_window() {
        let mut w = Window::default();
        let now = Instant::now();
        w.observe(&headers("40", "7", "2"));
        // Seven left, four kept in reserve: three go, the rest wait.
        let sent = (0..10).take_while(|_| w.wait(now).is_none()).count();
        assert_eq!(sent, 3);
        assert!(w.wait(now).is_some());
        // After the reset a fresh window is assumed.
        let later = now + Duration::from_secs(3);
        assert_eq!(w.wait(later), None);
        assert_eq!(w.remaining, Some(39));
    }

    #[test]
    fn classifies_pipedrive_answers() {
        let resp = |status: u16, body: &str, h: HeaderMap| HttpResponse {
            status,
            headers: h,
            body: body.into(),
        };
        let ok = classify(&resp(
            200,
            r#"{"success":true,"data":{"id":5}}"#,
            HeaderMap::new(),
        ))
        .unwrap();
        assert_eq!(ok["data"]["id"], 5);
        let mut h = headers("40", "0", "2");
        h.insert("retry-after", HeaderValue::from_static("2"));
        match classify(&resp(
            429,
            r#"{"success":false,"error":"Rate limit has been exceeded"}"#,
            h,
        )) {
            Err(Failure {
                outcome:
                    Outcome::Throttled {
                        retry_after,
                        message,
                    },
                ..
            }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(2)));
                assert!(message.contains("Rate limit"));
            }
            other => panic!("{other:?}"),
        }
        match classify(&resp(
            400,
            r#"{"success":false,"error":"Validation failed: title: Parameter 'title' is required"}"#,
            HeaderMap::new(),
        )) {
            Err(Failure {
                outcome: Outcome::Permanent { message, .. },
                ..
            }) => assert!(message.contains("Parameter 'title' is required")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&resp(
                401,
                r#"{"success":false,"error":"unauthorized access"}"#,
                HeaderMap::new()
            )),
            Err(Failure {
                outcome: Outcome::CredentialsRejected { .. },
                ..
            })
        ));
        assert!(matches!(
            classify(&resp(502, "<html>bad gateway</html>", HeaderMap::new())),
            Err(Failure {
                outcome: Outcome::Retry { .. },
                ..
            })
        ));
        assert!(matches!(
            classify(&resp(200, "not json", HeaderMap::new())),
            Err(Failure {
                outcome: Outcome::Retry { .. },
                ..
            })
        ));
    }
}
