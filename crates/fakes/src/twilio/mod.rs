//! Fake Twilio: the Programmable Messaging REST API (2010-04-01) for sending SMS.
//!
//! # Followed references
//! - "Messages resource" (twilio.com/docs/messaging/api/message-resource): `POST
//!   /2010-04-01/Accounts/{AccountSid}/Messages.json` with form-encoded `To`, `From` or
//!   `MessagingServiceSid`, `Body` (≤ 1600 characters) or `MediaUrl`; answered 201 with the
//!   Message resource (`sid` `SM…`, `status` `queued`, or `accepted` through a Messaging Service
//!   with `from` null and `num_segments` "0"; dates in RFC 2822; numbers as strings).
//! - "Accounts resource": `GET /2010-04-01/Accounts/{Sid}.json`.
//! - REST API authentication: HTTP Basic with `AccountSid:AuthToken` or `ApiKeySid:ApiKeySecret`.
//! - Error dictionary and the REST error body `{"code","message","more_info","status"}`:
//!   20003 (401, authentication), 20404 (404, unknown resource), 20429 (429, too many
//!   requests), 21211 (invalid `To`), 21212 (invalid `From`), 21266 (`To` = `From`), 21602
//!   (body required), 21603 (`From` required), 21604 (`To` required), 21606 (`From` not
//!   message-capable), 21610 (recipient opted out: "Attempt to send to unsubscribed
//!   recipient"), 21617 (body over 1600 characters), 21659 (`From` is not a Twilio number),
//!   21660 (`From` belongs to another account).
//!
//! # What it enforces
//! Basic auth (missing or wrong → 401 code 20003 with `WWW-Authenticate`); the path's account
//! must be the authenticated one (else 404 code 20404); required parameters and their error
//! codes in Twilio's order (To, From/MessagingServiceSid, Body/MediaUrl); E.164 `To`; `From`
//! must be one of the account's SMS-capable numbers or an alphanumeric sender ID; unknown
//! Messaging Service; opted-out recipients (configurable list); body length; a rolling-window
//! rate limit per account (default 10 requests per second) answered 429 code 20429. Segments
//! are counted as Twilio bills them (GSM-7 160/153, UCS-2 70/67).
//!
//! # What it simplifies
//! - Messages stay `queued`/`accepted` unless a test moves them ([`TwilioState::set_status`]);
//!   no status callbacks are sent and no price is computed.
//! - Country permissions (21408), trial-account restrictions (21608), carrier checks and
//!   landline detection are not modelled; any well-formed E.164 number is deliverable.
//! - The exact wording of 20003, 21606, 21659, 21660 and of the Messaging Service error
//!   (21701 here) follows the error dictionary titles, unverified against live responses;
//!   429 responses carry no `Retry-After` (Twilio does not document one).

mod messages;
mod segments;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::any;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;

use crate::common::{FakeServer, Faults, RequestLog, RollingWindow};

pub use segments::count as count_segments;

/// The API version path prefix.
pub const API_VERSION: &str = "2010-04-01";
/// Longest accepted `Body`.
pub const MAX_BODY_CHARS: usize = 1600;

/// One of the account's phone numbers.
#[derive(Debug, Clone)]
pub struct TwilioNumber {
    /// E.164, e.g. `+15017122661`.
    pub number: String,
    /// Voice-only numbers answer 21606 when used as `From`.
    pub sms_capable: bool,
}

/// An API key (`SK…`) that may authenticate instead of the auth token.
#[derive(Debug, Clone)]
pub struct TwilioApiKey {
    pub sid: String,
    pub secret: String,
}

/// What the fake account looks like. `Default` gives [`TwilioConfig::DEFAULT_ACCOUNT_SID`] /
/// [`TwilioConfig::DEFAULT_AUTH_TOKEN`], one API key, the SMS-capable sender
/// [`TwilioConfig::DEFAULT_FROM`], a voice-only number, one Messaging Service, one opted-out
/// recipient and 10 requests per second.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token: String,
    pub friendly_name: String,
    pub api_keys: Vec<TwilioApiKey>,
    pub phone_numbers: Vec<TwilioNumber>,
    /// Messaging Service SIDs (`MG…`) of the account.
    pub messaging_services: Vec<String>,
    /// Twilio numbers owned by other accounts: `From` one of these answers 21660.
    pub other_accounts_numbers: Vec<String>,
    /// Recipients who replied STOP: sending to them answers 21610.
    pub opted_out: Vec<String>,
    /// At most `rate_limit` API requests per `rate_window` (429 code 20429 beyond).
    pub rate_limit: usize,
    pub rate_window: Duration,
}

impl TwilioConfig {
    pub const DEFAULT_ACCOUNT_SID: &'static str = "ACfa4e0000000000000000000000000001";
    pub const DEFAULT_AUTH_TOKEN: &'static str = "fa4ec0ffee0000000000000000000001";
    pub const DEFAULT_API_KEY_SID: &'static str = "SKfa4e0000000000000000000000000001";
    pub const DEFAULT_API_KEY_SECRET: &'static str = "fakeApiKeySecret0000000000000001";
    pub const DEFAULT_FROM: &'static str = "+15017122661";
    pub const VOICE_ONLY_NUMBER: &'static str = "+15017122662";
    pub const OTHER_ACCOUNT_NUMBER: &'static str = "+15017122663";
    pub const DEFAULT_MESSAGING_SERVICE_SID: &'static str = "MGfa4e0000000000000000000000000001";
    pub const OPTED_OUT_NUMBER: &'static str = "+15558675310";
}

impl Default for TwilioConfig {
    fn default() -> Self {
        Self {
            account_sid: Self::DEFAULT_ACCOUNT_SID.to_string(),
            auth_token: Self::DEFAULT_AUTH_TOKEN.to_string(),
            friendly_name: "leadrelay fake account".to_string(),
            api_keys: vec![TwilioApiKey {
                sid: Self::DEFAULT_API_KEY_SID.to_string(),
                secret: Self::DEFAULT_API_KEY_SECRET.to_string(),
            }],
            phone_numbers: vec![
                TwilioNumber {
                    number: Self::DEFAULT_FROM.to_string(),
                    sms_capable: true,
                },
                TwilioNumber {
                    number: Self::VOICE_ONLY_NUMBER.to_string(),
                    sms_capable: false,
                },
            ],
            messaging_services: vec![Self::DEFAULT_MESSAGING_SERVICE_SID.to_string()],
            other_accounts_numbers: vec![Self::OTHER_ACCOUNT_NUMBER.to_string()],
            opted_out: vec![Self::OPTED_OUT_NUMBER.to_string()],
            rate_limit: 10,
            rate_window: Duration::from_secs(1),
        }
    }
}

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct TwilioMessage {
    /// `SM` + 32 hex digits.
    pub sid: String,
    pub account_sid: String,
    pub to: String,
    /// `None` when sent through a Messaging Service.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    pub media_urls: Vec<String>,
    /// Segments as billed (0 through a Messaging Service, as Twilio answers).
    pub num_segments: u32,
    pub status: String,
    pub status_callback: Option<String>,
    pub date_created: DateTime<Utc>,
    pub date_updated: DateTime<Utc>,
}

#[derive(Debug)]
struct Inner {
    config: TwilioConfig,
    created: DateTime<Utc>,
    messages: Mutex<Vec<TwilioMessage>>,
    opted_out: Mutex<Vec<String>>,
    window: RollingWindow,
    faults: Faults,
    requests: RequestLog,
}

/// The fake account's state, shared by the router and the test that inspects it.
#[derive(Debug, Clone)]
pub struct TwilioState {
    inner: Arc<Inner>,
}

impl TwilioState {
    pub fn new(config: TwilioConfig) -> Self {
        let window = RollingWindow::new(config.rate_limit.max(1), config.rate_window);
        Self {
            inner: Arc::new(Inner {
                opted_out: Mutex::new(config.opted_out.clone()),
                config,
                created: Utc::now(),
                messages: Mutex::new(Vec::new()),
                window,
                faults: Faults::default(),
                requests: RequestLog::default(),
            }),
        }
    }

    fn messages_mut(&self) -> MutexGuard<'_, Vec<TwilioMessage>> {
        self.inner
            .messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub fn requests(&self) -> &RequestLog {
        &self.inner.requests
    }

    /// Every message accepted, oldest first.
    pub fn messages(&self) -> Vec<TwilioMessage> {
        self.messages_mut().clone()
    }

    /// Messages sent to one number.
    pub fn messages_to(&self, to: &str) -> Vec<TwilioMessage> {
        self.messages_mut()
            .iter()
            .filter(|m| m.to == to)
            .cloned()
            .collect()
    }

    /// Moves a message to another status (`sent`, `delivered`, `undelivered`, `failed`…).
    pub fn set_status(&self, sid: &str, status: &str) -> bool {
        let mut messages = self.messages_mut();
        match messages.iter_mut().find(|m| m.sid == sid) {
            Some(m) => {
                m.status = status.to_string();
                m.date_updated = Utc::now();
                true
            }
            None => false,
        }
    }

    /// A recipient replies STOP (later sends to them answer 21610).
    pub fn opt_out(&self, number: &str) {
        self.inner
            .opted_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(number.to_string());
    }

    fn is_opted_out(&self, number: &str) -> bool {
        self.inner
            .opted_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|n| n == number)
    }

    /// A human-readable list of the credentials the fake accepts, for `leadrelay fake twilio`.
    pub fn credentials_banner(&self, base_url: &str) -> String {
        let c = &self.inner.config;
        let mut out = format!("fake Twilio listening on {base_url}\n");
        out.push_str(&format!("  API base URL: {base_url}/{API_VERSION}\n"));
        out.push_str(&format!(
            "  TWILIO_ACCOUNT_SID={}\n  TWILIO_AUTH_TOKEN={}\n",
            c.account_sid, c.auth_token
        ));
        for k in &c.api_keys {
            out.push_str(&format!("  API key: {} / {}\n", k.sid, k.secret));
        }
        for n in &c.phone_numbers {
            out.push_str(&format!(
                "  number {}{}\n",
                n.number,
                if n.sms_capable {
                    " (SMS)"
                } else {
                    " (voice only)"
                }
            ));
        }
        for s in &c.messaging_services {
            out.push_str(&format!("  Messaging Service {s}\n"));
        }
        for n in &c.opted_out {
            out.push_str(&format!("  opted out: {n}\n"));
        }
        out
    }
}

/// Applies injected faults and records every request in the log.
async fn observe(State(state): State<TwilioState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let response = state.inner.faults.around(next.run(req)).await;
    state
        .inner
        .requests
        .record(&method, &path, response.status().as_u16());
    response
}

/// The fake's routes, to serve on any listener.
pub fn router(state: TwilioState) -> Router {
    Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            any(messages::messages_collection),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Messages/{message}",
            any(messages::message_instance),
        )
        .route(
            "/2010-04-01/Accounts/{account}",
            any(messages::account_instance),
        )
        .fallback(messages::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A running fake Twilio. Derefs to [`TwilioState`] for the accessors.
pub struct FakeTwilio {
    server: FakeServer,
    state: TwilioState,
}

impl FakeTwilio {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(config: TwilioConfig) -> std::io::Result<Self> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    pub async fn start_on(config: TwilioConfig, listen: &str) -> std::io::Result<Self> {
        let state = TwilioState::new(config);
        let server = FakeServer::start(router(state.clone()), listen).await?;
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:PORT` (the real one is `https://api.twilio.com`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The Messages endpoint of the configured account.
    pub fn messages_url(&self) -> String {
        format!(
            "{}/{API_VERSION}/Accounts/{}/Messages.json",
            self.base_url(),
            self.state.inner.config.account_sid
        )
    }

    pub fn state(&self) -> &TwilioState {
        &self.state
    }
}

impl std::ops::Deref for FakeTwilio {
    type Target = TwilioState;
    fn deref(&self) -> &TwilioState {
        &self.state
    }
}

/// Serves a fake Twilio on `listen` until the future is dropped, after printing the
/// credentials it accepts (for `leadrelay fake twilio --listen ADDR`).
pub async fn serve(listen: &str, config: TwilioConfig) -> std::io::Result<()> {
    let state = TwilioState::new(config);
    let listener = TcpListener::bind(listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("{}", state.credentials_banner(&base));
    axum::serve(listener, router(state)).await
}
