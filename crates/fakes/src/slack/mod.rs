//! Fake Slack: incoming webhooks and the Web API methods `chat.postMessage` and
//! `auth.test`.
//!
//! # Followed references
//! - "Sending messages using incoming webhooks" (docs.slack.dev / api.slack.com/messaging/webhooks),
//!   its "Handling errors" table, and the 2016-05-17 changelog "Improving error conditions for
//!   Incoming Webhooks" (plain-text error bodies with 400/403/404/410 statuses).
//! - Web API method pages `chat.postMessage` and `auth.test` (arguments, response shapes, error
//!   strings), "Using the Slack Web API" (token in the `Authorization: Bearer` header or, for
//!   form bodies only, in the `token` argument; JSON bodies need the header), and "Rate limits"
//!   (posting messages: about one per second per channel, short bursts tolerated; HTTP 429 with
//!   `Retry-After` in seconds and `{"ok":false,"error":"ratelimited"}`).
//! - Block Kit reference: at most 50 blocks per message, section text ≤ 3000 characters,
//!   section fields ≤ 10 items of ≤ 2000 characters, header text `plain_text` ≤ 150 characters,
//!   `block_id` ≤ 255 characters and unique, context ≤ 10 elements, actions ≤ 25 elements.
//!
//! # What it enforces
//! - Webhooks: unknown or disabled webhook → 404 `no_service`; wrong secret for a known
//!   team/bot pair → 403 `invalid_token`; disabled team → 410 `team_disabled`; body that is not
//!   a JSON object (or a form `payload=` holding one) → 400 `invalid_payload`; no `text`, `blocks`
//!   or `attachments` → 400 `no_text`; more than 100 attachments → 400 `too_many_attachments`;
//!   invalid Block Kit → 400 `invalid_blocks`; deleted channel → 404 `channel_not_found`;
//!   archived channel → 410 `channel_is_archived`; posting restricted → 403 `action_prohibited`;
//!   over the per-webhook rate → 429 `rate_limited` with `Retry-After`. Success: 200 `ok`.
//! - `chat.postMessage` (HTTP 200 with `ok:false` for every failure but rate limiting):
//!   `not_authed`, `invalid_auth`, `token_revoked`, `account_inactive`, `missing_scope`
//!   (needs `chat:write`; `chat:write.public` lets a bot post in public channels it is not in),
//!   `channel_not_found`, `is_archived`, `restricted_action`, `not_in_channel`, `no_text`,
//!   `msg_too_long` (text over 40 000 characters), `invalid_blocks` (with Slack's `errors` and
//!   `response_metadata.messages` JSON-pointer details), `invalid_blocks_format`,
//!   `too_many_attachments`, `invalid_json`, `json_not_object`, `invalid_form_data`,
//!   `missing_post_type`, `invalid_post_type`, `invalid_arguments`; HTTP 429 `ratelimited` with
//!   `Retry-After` when a channel is over its rolling window. JSON bodies without a charset get
//!   Slack's `missing_charset` warning. Accepts JSON and `application/x-www-form-urlencoded`
//!   bodies (with `blocks`/`attachments` as JSON strings), and arguments in the query string.
//! - `auth.test`: the same token checks; answers the workspace, user and bot ids.
//! - Interactivity ("Handling user interaction", "Verifying requests from Slack", the
//!   `block_actions` payload reference): [`SlackState::click`] builds the request Slack sends to
//!   an app's Request URL when a user clicks a button of a stored message — a form body with one
//!   `payload` field (the JSON), `X-Slack-Request-Timestamp`, and `X-Slack-Signature:
//!   v0=<hex HMAC-SHA256(signing secret, "v0:<timestamp>:<body>")>`. Buttons are checked as
//!   Block Kit does: `plain_text` text ≤ 75 characters, `action_id` ≤ 255 and unique in its
//!   block, `value` ≤ 2000, `url` ≤ 3000, `style` `primary` or `danger`.
//!
//! # What it simplifies
//! - Rate limits are rolling windows (`limit` posts per `window`, per channel and per webhook;
//!   default 5 per 5 s: one per second on average with a burst of five) instead of Slack's
//!   undisclosed algorithm; there is no workspace-wide limit.
//! - Block Kit validation covers the common blocks and text objects, not every element type.
//! - Webhooks ignore `channel`/`username`/`icon_*` overrides (as app webhooks do) and have no
//!   length limit on `text`; `multipart/form-data` bodies are answered `invalid_form_data`.
//! - Unknown Web API methods answer 404 `unknown_method` (the real status is unverified).

mod blocks;
mod interactivity;
pub use interactivity::SignedInteraction;
mod web_api;
mod webhook;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, post};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::common::{FakeServer, Faults, RequestLog, RollingWindow};

/// The OAuth scope `chat.postMessage` needs.
pub const SCOPE_CHAT_WRITE: &str = "chat:write";
/// The scope that lets a bot post in public channels it is not a member of.
pub const SCOPE_CHAT_WRITE_PUBLIC: &str = "chat:write.public";

/// Whether a token still works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Active,
    /// The app was uninstalled or the token revoked: `token_revoked`.
    Revoked,
    /// The user or workspace was deleted: `account_inactive`.
    Inactive,
}

/// A Web API token the fake accepts.
#[derive(Debug, Clone)]
pub struct SlackToken {
    /// The token itself, e.g. `xoxb-...`.
    pub token: String,
    /// The user id `auth.test` reports (the bot user for bot tokens).
    pub user_id: String,
    /// The user name `auth.test` reports.
    pub user_name: String,
    /// The bot id, for bot tokens.
    pub bot_id: Option<String>,
    /// Granted OAuth scopes.
    pub scopes: Vec<String>,
    pub status: TokenStatus,
}

/// A channel of the fake workspace.
#[derive(Debug, Clone)]
pub struct SlackChannel {
    /// Channel id, e.g. `C0123456789`.
    pub id: String,
    /// Name without `#`.
    pub name: String,
    pub is_private: bool,
    pub is_archived: bool,
    /// Whether the bot user is a member (needed to post unless the channel is public and the
    /// token has `chat:write.public`).
    pub bot_is_member: bool,
    /// A workspace preference forbids posting here: `restricted_action` for the Web API,
    /// `action_prohibited` for webhooks.
    pub posting_restricted: bool,
}

impl SlackChannel {
    /// A public, unarchived channel the bot is a member of.
    pub fn new(id: &str, name: &str) -> Self {
        Self {
            id: id.to_string(),
            name: name.to_string(),
            is_private: false,
            is_archived: false,
            bot_is_member: true,
            posting_restricted: false,
        }
    }
}

/// An incoming webhook: `POST /services/{team_id}/{bot_id}/{secret}`.
#[derive(Debug, Clone)]
pub struct SlackWebhook {
    pub team_id: String,
    /// The `B...` part of the URL.
    pub bot_id: String,
    pub secret: String,
    /// The channel id the webhook posts to.
    pub channel_id: String,
    /// A disabled or removed webhook answers `no_service`.
    pub disabled: bool,
}

impl SlackWebhook {
    /// The path of this webhook, `/services/T/B/secret`.
    pub fn path(&self) -> String {
        format!("/services/{}/{}/{}", self.team_id, self.bot_id, self.secret)
    }
}

/// What the fake Slack workspace looks like. `Default` gives one bot token
/// ([`SlackConfig::DEFAULT_BOT_TOKEN`]), channels `#general`, `#leads` (bot member),
/// `#sales` (public, bot not a member), `#private-deals` (private, bot not a member),
/// `#old-leads` (archived), one webhook posting to `#leads`, and 5 posts per 5 s per channel.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub team_id: String,
    pub team_name: String,
    /// Workspace URL `auth.test` reports, e.g. `https://leadrelay-fake.slack.com/`.
    pub team_url: String,
    /// A disabled workspace answers webhooks with 410 `team_disabled`.
    pub team_disabled: bool,
    pub tokens: Vec<SlackToken>,
    pub channels: Vec<SlackChannel>,
    pub webhooks: Vec<SlackWebhook>,
    /// `chat.postMessage`: at most this many posts per channel in `post_window`.
    pub post_limit: usize,
    pub post_window: Duration,
    /// Incoming webhooks: at most this many posts per webhook in `webhook_window`.
    pub webhook_limit: usize,
    pub webhook_window: Duration,
    /// The app's signing secret, used to sign interactivity requests.
    pub signing_secret: String,
}

impl SlackConfig {
    pub const DEFAULT_SIGNING_SECRET: &'static str = "fakeSigningSecret0000000000000001";
    pub const DEFAULT_TEAM_ID: &'static str = "T0FAKE00001";
    pub const DEFAULT_BOT_TOKEN: &'static str = "xoxb-1111111111-2222222222-leadrelayfakebottoken";
    pub const DEFAULT_BOT_USER_ID: &'static str = "U0FAKEBOT01";
    pub const DEFAULT_BOT_ID: &'static str = "B0FAKEBOT01";
    pub const DEFAULT_WEBHOOK_BOT_ID: &'static str = "B0FAKEHOOK1";
    pub const DEFAULT_WEBHOOK_SECRET: &'static str = "fakeWebhookSecret0000001";
    pub const LEADS_CHANNEL_ID: &'static str = "C0FAKELEADS";
}

impl Default for SlackConfig {
    fn default() -> Self {
        let mut sales = SlackChannel::new("C0FAKESALES", "sales");
        sales.bot_is_member = false;
        let mut private = SlackChannel::new("G0FAKEDEALS", "private-deals");
        private.is_private = true;
        private.bot_is_member = false;
        let mut archived = SlackChannel::new("C0FAKEOLDLD", "old-leads");
        archived.is_archived = true;
        Self {
            team_id: Self::DEFAULT_TEAM_ID.to_string(),
            team_name: "leadrelay fake workspace".to_string(),
            team_url: "https://leadrelay-fake.slack.com/".to_string(),
            team_disabled: false,
            tokens: vec![SlackToken {
                token: Self::DEFAULT_BOT_TOKEN.to_string(),
                user_id: Self::DEFAULT_BOT_USER_ID.to_string(),
                user_name: "leadrelay".to_string(),
                bot_id: Some(Self::DEFAULT_BOT_ID.to_string()),
                scopes: vec![SCOPE_CHAT_WRITE.to_string()],
                status: TokenStatus::Active,
            }],
            channels: vec![
                SlackChannel::new("C0FAKEGENRL", "general"),
                SlackChannel::new(Self::LEADS_CHANNEL_ID, "leads"),
                sales,
                private,
                archived,
            ],
            webhooks: vec![SlackWebhook {
                team_id: Self::DEFAULT_TEAM_ID.to_string(),
                bot_id: Self::DEFAULT_WEBHOOK_BOT_ID.to_string(),
                secret: Self::DEFAULT_WEBHOOK_SECRET.to_string(),
                channel_id: Self::LEADS_CHANNEL_ID.to_string(),
                disabled: false,
            }],
            post_limit: 5,
            post_window: Duration::from_secs(5),
            webhook_limit: 5,
            webhook_window: Duration::from_secs(5),
            signing_secret: Self::DEFAULT_SIGNING_SECRET.to_string(),
        }
    }
}

/// How a message reached the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageSource {
    /// `chat.postMessage`, authenticated as this user id.
    WebApi { user_id: String },
    /// An incoming webhook, by its path.
    Webhook { path: String },
}

/// A message the fake accepted.
#[derive(Debug, Clone)]
pub struct SlackMessage {
    /// Channel id.
    pub channel: String,
    pub ts: String,
    pub text: Option<String>,
    /// The `blocks` array as received (parsed from a string for form bodies).
    pub blocks: Option<Value>,
    pub attachments: Option<Value>,
    pub thread_ts: Option<String>,
    pub source: MessageSource,
}

#[derive(Debug)]
struct Workspace {
    channels: Vec<SlackChannel>,
    webhooks: Vec<SlackWebhook>,
    tokens: Vec<SlackToken>,
    team_disabled: bool,
    messages: Vec<SlackMessage>,
    last_ts_micros: u128,
}

#[derive(Debug)]
struct Inner {
    team_id: String,
    team_name: String,
    team_url: String,
    post_limit: usize,
    post_window: Duration,
    webhook_limit: usize,
    webhook_window: Duration,
    signing_secret: String,
    workspace: Mutex<Workspace>,
    channel_windows: Mutex<HashMap<String, RollingWindow>>,
    webhook_windows: Mutex<HashMap<String, RollingWindow>>,
    faults: Faults,
    requests: RequestLog,
}

/// The fake workspace's state, shared by the router and the test that inspects it.
#[derive(Debug, Clone)]
pub struct SlackState {
    inner: Arc<Inner>,
}

impl SlackState {
    pub fn new(config: SlackConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                team_id: config.team_id,
                team_name: config.team_name,
                team_url: config.team_url,
                post_limit: config.post_limit,
                post_window: config.post_window,
                webhook_limit: config.webhook_limit,
                webhook_window: config.webhook_window,
                signing_secret: config.signing_secret,
                workspace: Mutex::new(Workspace {
                    channels: config.channels,
                    webhooks: config.webhooks,
                    tokens: config.tokens,
                    team_disabled: config.team_disabled,
                    messages: Vec::new(),
                    last_ts_micros: 0,
                }),
                channel_windows: Mutex::new(HashMap::new()),
                webhook_windows: Mutex::new(HashMap::new()),
                faults: Faults::default(),
                requests: RequestLog::default(),
            }),
        }
    }

    fn workspace(&self) -> MutexGuard<'_, Workspace> {
        self.inner
            .workspace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Injected failures for the next requests.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Every request answered, in order.
    pub fn requests(&self) -> &RequestLog {
        &self.inner.requests
    }

    /// Messages posted to a channel (by id, name or `#name`), oldest first.
    pub fn messages(&self, channel: &str) -> Vec<SlackMessage> {
        let ws = self.workspace();
        let Some(id) = find_channel(&ws.channels, channel).map(|c| c.id.clone()) else {
            return Vec::new();
        };
        ws.messages
            .iter()
            .filter(|m| m.channel == id)
            .cloned()
            .collect()
    }

    /// Every message posted, oldest first.
    pub fn all_messages(&self) -> Vec<SlackMessage> {
        self.workspace().messages.clone()
    }

    /// Archives or unarchives a channel (by id or name). Returns false if there is none.
    pub fn set_archived(&self, channel: &str, archived: bool) -> bool {
        self.update_channel(channel, |c| c.is_archived = archived)
    }

    /// Adds the bot to a channel or removes it.
    pub fn set_bot_member(&self, channel: &str, member: bool) -> bool {
        self.update_channel(channel, |c| c.bot_is_member = member)
    }

    /// Deletes a channel: later posts answer `channel_not_found`.
    pub fn delete_channel(&self, channel: &str) -> bool {
        let mut ws = self.workspace();
        let before = ws.channels.len();
        let key = channel.trim_start_matches('#').to_string();
        ws.channels.retain(|c| c.id != key && c.name != key);
        ws.channels.len() != before
    }

    /// Changes a token's status (e.g. revokes it).
    pub fn set_token_status(&self, token: &str, status: TokenStatus) -> bool {
        let mut ws = self.workspace();
        match ws.tokens.iter_mut().find(|t| t.token == token) {
            Some(t) => {
                t.status = status;
                true
            }
            None => false,
        }
    }

    /// The webhook paths (`/services/T/B/secret`) the fake serves.
    pub fn webhook_paths(&self) -> Vec<String> {
        self.workspace()
            .webhooks
            .iter()
            .map(SlackWebhook::path)
            .collect()
    }

    /// A human-readable list of the credentials the fake accepts, for `leadrelay fake slack`.
    pub fn credentials_banner(&self, base_url: &str) -> String {
        let ws = self.workspace();
        let mut out = format!("fake Slack listening on {base_url}\n");
        out.push_str(&format!("  Web API base URL: {base_url}/api\n"));
        for t in &ws.tokens {
            out.push_str(&format!(
                "  token: {} (user {}, scopes {}, {:?})\n",
                t.token,
                t.user_id,
                t.scopes.join(","),
                t.status
            ));
        }
        for w in &ws.webhooks {
            out.push_str(&format!(
                "  incoming webhook: {base_url}{} -> {}\n",
                w.path(),
                w.channel_id
            ));
        }
        for c in &ws.channels {
            out.push_str(&format!(
                "  channel #{} ({}){}{}{}\n",
                c.name,
                c.id,
                if c.is_private { " private" } else { "" },
                if c.is_archived { " archived" } else { "" },
                if c.bot_is_member { " bot-member" } else { "" }
            ));
        }
        out
    }

    fn update_channel(&self, channel: &str, f: impl FnOnce(&mut SlackChannel)) -> bool {
        let mut ws = self.workspace();
        let key = channel.trim_start_matches('#');
        match ws
            .channels
            .iter_mut()
            .find(|c| c.id == key || c.name == key)
        {
            Some(c) => {
                f(c);
                true
            }
            None => false,
        }
    }

    /// A message timestamp `"<secs>.<6 digits>"`, strictly increasing.
    fn next_ts(ws: &mut Workspace) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or_default();
        let micros = now.max(ws.last_ts_micros + 1);
        ws.last_ts_micros = micros;
        format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
    }

    /// Takes a slot in a rolling window keyed by `key`; `Err(wait)` when full.
    fn take_slot(
        windows: &Mutex<HashMap<String, RollingWindow>>,
        key: &str,
        limit: usize,
        window: Duration,
    ) -> Result<(), Duration> {
        let mut map = windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = map
            .entry(key.to_string())
            .or_insert_with(|| RollingWindow::new(limit.max(1), window));
        w.hit().map(|_| ())
    }
}

fn find_channel<'a>(channels: &'a [SlackChannel], key: &str) -> Option<&'a SlackChannel> {
    let key = key.trim_start_matches('#');
    channels
        .iter()
        .find(|c| c.id == key)
        .or_else(|| channels.iter().find(|c| c.name == key))
}

/// `Retry-After` seconds for a wait: rounded up, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Applies injected faults and records every request in the log.
async fn observe(State(state): State<SlackState>, req: Request, next: Next) -> Response {
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
pub fn router(state: SlackState) -> Router {
    Router::new()
        .route(
            "/services/{team}/{bot}/{secret}",
            post(webhook::incoming_webhook),
        )
        .route("/api/{method}", any(web_api::dispatch))
        .fallback(web_api::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A running fake Slack. Derefs to [`SlackState`] for the accessors.
pub struct FakeSlack {
    server: FakeServer,
    state: SlackState,
}

impl FakeSlack {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(config: SlackConfig) -> std::io::Result<Self> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    /// Starts on `listen`.
    pub async fn start_on(config: SlackConfig, listen: &str) -> std::io::Result<Self> {
        let state = SlackState::new(config);
        let server = FakeServer::start(router(state.clone()), listen).await?;
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The Web API base, `http://127.0.0.1:PORT/api` (the real one is `https://slack.com/api`).
    pub fn api_url(&self) -> String {
        format!("{}/api", self.base_url())
    }

    /// The URL of the default webhook ([`SlackConfig::DEFAULT_WEBHOOK_SECRET`]), or of the first
    /// configured one.
    pub fn webhook_url(&self) -> String {
        let path = self
            .state
            .webhook_paths()
            .into_iter()
            .next()
            .unwrap_or_else(|| "/services/none".into());
        format!("{}{}", self.base_url(), path)
    }

    pub fn state(&self) -> &SlackState {
        &self.state
    }
}

impl std::ops::Deref for FakeSlack {
    type Target = SlackState;
    fn deref(&self) -> &SlackState {
        &self.state
    }
}

/// Serves a fake Slack on `listen` until the future is dropped, after printing the
/// credentials it accepts (for `leadrelay fake slack --listen ADDR`).
pub async fn serve(listen: &str, config: SlackConfig) -> std::io::Result<()> {
    let state = SlackState::new(config);
    let listener = TcpListener::bind(listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("{}", state.credentials_banner(&base));
    axum::serve(listener, router(state)).await
}
