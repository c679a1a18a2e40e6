//! Web API methods: `POST /api/chat.postMessage` and `/api/auth.test`.
//!
//! Every answer is HTTP 200 with `{"ok": ...}` except rate limiting (HTTP 429, `Retry-After`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::blocks::{self, BlocksError};
use super::{
    MessageSource, SCOPE_CHAT_WRITE, SCOPE_CHAT_WRITE_PUBLIC, SlackMessage, SlackState, SlackToken,
    TokenStatus, find_channel, retry_after_secs,
};

/// Longest `text` accepted before `msg_too_long`.
pub const MAX_TEXT_CHARS: usize = 40_000;
/// Most legacy attachments a message may carry.
pub const MAX_ATTACHMENTS: usize = 100;

/// The arguments of a Web API call, wherever they came from.
struct Args {
    params: Map<String, Value>,
    token: Option<String>,
    warnings: Vec<&'static str>,
}

impl Args {
    fn str(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(Value::as_str)
    }
}

/// A failed call: the `error` string plus any extra fields Slack adds.
struct Failure {
    error: &'static str,
    extra: Map<String, Value>,
}

impl Failure {
    fn new(error: &'static str) -> Self {
        Self {
            error,
            extra: Map::new(),
        }
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }
}

fn with_warnings(mut body: Map<String, Value>, warnings: &[&'static str]) -> Map<String, Value> {
    if let Some(first) = warnings.first() {
        body.insert("warning".into(), json!(first));
        let meta = body.entry("response_metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("warnings".into(), json!(warnings));
        }
    }
    body
}

fn failure_response(f: Failure, warnings: &[&'static str]) -> Response {
    let mut body = Map::new();
    body.insert("ok".into(), json!(false));
    body.insert("error".into(), json!(f.error));
    body.extend(f.extra);
    Json(Value::Object(with_warnings(body, warnings))).into_response()
}

fn success_response(body: Map<String, Value>, warnings: &[&'static str]) -> Response {
    let mut out = Map::new();
    out.insert("ok".into(), json!(true));
    out.extend(body);
    Json(Value::Object(with_warnings(out, warnings))).into_response()
}

/// Reads arguments from the query string and the body, as Slack does: JSON bodies
/// (`application/json`), form bodies (`application/x-www-form-urlencoded`, `text/plain`).
fn parse_args(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Result<Args, Failure> {
    let mut params = Map::new();
    let mut warnings = Vec::new();
    if let Some(q) = query {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(q).map_err(|_| Failure::new("invalid_form_data"))?;
        for (k, v) in pairs {
            params.insert(k, Value::String(v));
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let mut json_body = false;
    match content_type {
        None if body.is_empty() => {}
        None => return Err(Failure::new("missing_post_type")),
        Some(ct) => {
            let mime = ct.split(';').next().unwrap_or("").trim().to_string();
            let charset = ct
                .split(';')
                .skip(1)
                .find_map(|p| p.trim().strip_prefix("charset=").map(str::to_string));
            if let Some(cs) = &charset {
                let cs = cs.trim_matches('"');
                if cs != "utf-8" && cs != "iso-8859-1" {
                    return Err(Failure::new("invalid_charset"));
                }
            }
            match mime.as_str() {
                "application/json" => {
                    json_body = true;
                    if charset.is_none() {
                        warnings.push("missing_charset");
                    }
                    if !body.is_empty() {
                        let value: Value = serde_json::from_slice(body)
                            .map_err(|_| Failure::new("invalid_json"))?;
                        let Value::Object(obj) = value else {
                            return Err(Failure::new("json_not_object"));
                        };
                        params.extend(obj);
                    }
                }
                "application/x-www-form-urlencoded" | "text/plain" => {
                    let text =
                        std::str::from_utf8(body).map_err(|_| Failure::new("invalid_form_data"))?;
                    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(text)
                        .map_err(|_| Failure::new("invalid_form_data"))?;
                    for (k, v) in pairs {
                        params.insert(k, Value::String(v));
                    }
                }
                "multipart/form-data" => return Err(Failure::new("invalid_form_data")),
                _ => return Err(Failure::new("invalid_post_type")),
            }
        }
    }
    let header_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
        .filter(|t| !t.is_empty());
    // A JSON body cannot carry the token: Slack only reads it from the header then.
    let arg_token = if json_body {
        None
    } else {
        params
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(Args {
        token: header_token.or(arg_token),
        params,
        warnings,
    })
}

fn authenticate(state: &SlackState, args: &Args) -> Result<SlackToken, Failure> {
    let Some(token) = args.token.as_deref() else {
        return Err(Failure::new("not_authed"));
    };
    let ws = state.workspace();
    let Some(found) = ws.tokens.iter().find(|t| t.token == token) else {
        return Err(Failure::new("invalid_auth"));
    };
    match found.status {
        TokenStatus::Active => Ok(found.clone()),
        TokenStatus::Revoked => Err(Failure::new("token_revoked")),
        TokenStatus::Inactive => Err(Failure::new("account_inactive")),
    }
}

/// `ANY /api/{method}`.
pub async fn dispatch(
    State(state): State<SlackState>,
    Path(method_name): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let body = if method == Method::GET {
        Bytes::new()
    } else {
        body
    };
    let args = match parse_args(&headers, query.as_deref(), &body) {
        Ok(a) => a,
        Err(f) => return failure_response(f, &[]),
    };
    match method_name.as_str() {
        "chat.postMessage" => post_message(&state, args),
        "auth.test" => auth_test(&state, args),
        other => (
            StatusCode::NOT_FOUND,
            Json(json!({"ok": false, "error": "unknown_method", "req_method": other})),
        )
            .into_response(),
    }
}

fn auth_test(state: &SlackState, args: Args) -> Response {
    let token = match authenticate(state, &args) {
        Ok(t) => t,
        Err(f) => return failure_response(f, &args.warnings),
    };
    let mut body = Map::new();
    body.insert("url".into(), json!(state.inner.team_url));
    body.insert("team".into(), json!(state.inner.team_name));
    body.insert("user".into(), json!(token.user_name));
    body.insert("team_id".into(), json!(state.inner.team_id));
    body.insert("user_id".into(), json!(token.user_id));
    if let Some(bot) = &token.bot_id {
        body.insert("bot_id".into(), json!(bot));
    }
    body.insert("is_enterprise_install".into(), json!(false));
    success_response(body, &args.warnings)
}

/// Reads a JSON-valued argument: a JSON value in JSON bodies, a JSON string in form bodies.
fn json_arg(args: &Args, name: &str) -> Result<Option<Value>, ()> {
    match args.params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => serde_json::from_str(s).map(Some).map_err(|_| ()),
        Some(other) => Ok(Some(other.clone())),
    }
}

fn post_message(state: &SlackState, args: Args) -> Response {
    let warnings = args.warnings.clone();
    match try_post_message(state, &args) {
        Ok(body) => success_response(body, &warnings),
        Err(PostError::Failure(f)) => failure_response(f, &warnings),
        Err(PostError::RateLimited(secs)) => {
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

enum PostError {
    Failure(Failure),
    RateLimited(u64),
}

impl From<Failure> for PostError {
    fn from(f: Failure) -> Self {
        PostError::Failure(f)
    }
}

fn try_post_message(state: &SlackState, args: &Args) -> Result<Map<String, Value>, PostError> {
    let token = authenticate(state, args)?;
    if !token.scopes.iter().any(|s| s == SCOPE_CHAT_WRITE) {
        return Err(Failure::new("missing_scope")
            .with("needed", json!(SCOPE_CHAT_WRITE))
            .with("provided", json!(token.scopes.join(",")))
            .into());
    }
    let channel_arg = match args.params.get("channel") {
        None => return Err(Failure::new("channel_not_found").into()),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(Failure::new("channel_not_found").into());
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(Failure::new("invalid_arguments").into()),
    };
    let channel = {
        let ws = state.workspace();
        find_channel(&ws.channels, &channel_arg).cloned()
    };
    let Some(channel) = channel else {
        return Err(Failure::new("channel_not_found").into());
    };
    if channel.is_private && !channel.bot_is_member {
        // Private channels are invisible to non-members.
        return Err(Failure::new("channel_not_found").into());
    }
    if channel.is_archived {
        return Err(Failure::new("is_archived").into());
    }
    if channel.posting_restricted {
        return Err(Failure::new("restricted_action").into());
    }
    if !channel.bot_is_member && !token.scopes.iter().any(|s| s == SCOPE_CHAT_WRITE_PUBLIC) {
        return Err(Failure::new("not_in_channel").into());
    }

    let text = match args.params.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Failure::new("invalid_arguments").into()),
    };
    let blocks = json_arg(args, "blocks").map_err(|_| Failure::new("invalid_blocks_format"))?;
    let attachments =
        json_arg(args, "attachments").map_err(|_| Failure::new("invalid_attachments"))?;
    let has_text = text.as_deref().is_some_and(|t| !t.trim().is_empty());
    let has_blocks = blocks
        .as_ref()
        .and_then(Value::as_array)
        .is_some_and(|b| !b.is_empty());
    let has_attachments = attachments
        .as_ref()
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if let Some(b) = &blocks {
        match blocks::validate(b) {
            Ok(()) => {}
            Err(BlocksError::Format) => return Err(Failure::new("invalid_blocks_format").into()),
            Err(BlocksError::Invalid(errors)) => {
                let messages: Vec<String> = errors.iter().map(|e| format!("[ERROR] {e}")).collect();
                return Err(Failure::new("invalid_blocks")
                    .with("errors", json!(errors))
                    .with("response_metadata", json!({ "messages": messages }))
                    .into());
            }
        }
    }
    if let Some(a) = &attachments {
        match a.as_array() {
            Some(list) if list.len() > MAX_ATTACHMENTS => {
                return Err(Failure::new("too_many_attachments").into());
            }
            Some(_) => {}
            None => return Err(Failure::new("invalid_attachments").into()),
        }
    }
    if !has_text && !has_blocks && !has_attachments {
        return Err(Failure::new("no_text").into());
    }
    if text
        .as_deref()
        .is_some_and(|t| t.chars().count() > MAX_TEXT_CHARS)
    {
        return Err(Failure::new("msg_too_long").into());
    }
    let thread_ts = args.str("thread_ts").map(str::to_string);

    SlackState::take_slot(
        &state.inner.channel_windows,
        &channel.id,
        state.inner.post_limit,
        state.inner.post_window,
    )
    .map_err(|wait| PostError::RateLimited(retry_after_secs(wait)))?;

    let mut ws = state.workspace();
    // The channel may have changed while the lock was released.
    if find_channel(&ws.channels, &channel.id).is_none() {
        return Err(Failure::new("channel_not_found").into());
    }
    let ts = SlackState::next_ts(&mut ws);
    let mut message = Map::new();
    message.insert("type".into(), json!("message"));
    message.insert("subtype".into(), json!("bot_message"));
    message.insert("text".into(), json!(text.clone().unwrap_or_default()));
    message.insert("user".into(), json!(token.user_id));
    if let Some(bot) = &token.bot_id {
        message.insert("bot_id".into(), json!(bot));
    }
    message.insert("team".into(), json!(state.inner.team_id));
    message.insert("ts".into(), json!(ts));
    if let Some(b) = &blocks {
        message.insert("blocks".into(), b.clone());
    }
    if let Some(a) = &attachments {
        message.insert("attachments".into(), a.clone());
    }
    if let Some(t) = &thread_ts {
        message.insert("thread_ts".into(), json!(t));
    }
    ws.messages.push(SlackMessage {
        channel: channel.id.clone(),
        ts: ts.clone(),
        text,
        blocks,
        attachments,
        thread_ts,
        source: MessageSource::WebApi {
            user_id: token.user_id.clone(),
        },
    });
    let mut body = Map::new();
    body.insert("channel".into(), json!(channel.id));
    body.insert("ts".into(), json!(ts));
    body.insert("message".into(), Value::Object(message));
    Ok(body)
}

/// Any other path: Slack answers a plain 404.
pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 Not Found").into_response()
}
