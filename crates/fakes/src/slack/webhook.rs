//! Incoming webhooks: `POST /services/{team}/{bot}/{secret}`, answered in plain text
//! (`ok`, or an error string with the status from Slack's "Handling errors" table).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::blocks::{self, BlocksError};
use super::web_api::MAX_ATTACHMENTS;
use super::{MessageSource, SlackMessage, SlackState, retry_after_secs};

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

/// The payload: a JSON body, or a form body whose `payload` field holds the JSON.
fn parse_payload(headers: &HeaderMap, body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let value: Value = if ct.starts_with("application/x-www-form-urlencoded") {
        let text = std::str::from_utf8(body).ok()?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(text).ok()?;
        let payload = pairs.into_iter().find(|(k, _)| k == "payload")?.1;
        serde_json::from_str(&payload).ok()?
    } else {
        serde_json::from_slice(body).ok()?
    };
    match value {
        Value::Object(obj) => Some(obj),
        _ => None,
    }
}

pub async fn incoming_webhook(
    State(state): State<SlackState>,
    Path((team, bot, secret)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/services/{team}/{bot}/{secret}");
    let (hook, channel) = {
        let ws = state.workspace();
        let Some(hook) = ws
            .webhooks
            .iter()
            .find(|w| w.team_id == team && w.bot_id == bot)
            .cloned()
        else {
            return text(StatusCode::NOT_FOUND, "no_service");
        };
        if hook.secret != secret {
            return text(StatusCode::FORBIDDEN, "invalid_token");
        }
        if hook.disabled {
            return text(StatusCode::NOT_FOUND, "no_service");
        }
        if ws.team_disabled {
            return text(StatusCode::GONE, "team_disabled");
        }
        let channel = ws
            .channels
            .iter()
            .find(|c| c.id == hook.channel_id)
            .cloned();
        (hook, channel)
    };
    let Some(payload) = parse_payload(&headers, &body) else {
        return text(StatusCode::BAD_REQUEST, "invalid_payload");
    };
    let Some(channel) = channel else {
        return text(StatusCode::NOT_FOUND, "channel_not_found");
    };
    if channel.is_archived {
        return text(StatusCode::GONE, "channel_is_archived");
    }
    if channel.posting_restricted {
        return text(StatusCode::FORBIDDEN, "action_prohibited");
    }
    let message_text = match payload.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return text(StatusCode::BAD_REQUEST, "invalid_payload"),
    };
    let blocks = payload.get("blocks").filter(|b| !b.is_null()).cloned();
    let attachments = payload.get("attachments").filter(|a| !a.is_null()).cloned();
    if let Some(b) = &blocks
        && let Err(BlocksError::Format | BlocksError::Invalid(_)) = blocks::validate(b)
    {
        return text(StatusCode::BAD_REQUEST, "invalid_blocks");
    }
    if let Some(a) = &attachments {
        match a.as_array() {
            Some(list) if list.len() > MAX_ATTACHMENTS => {
                return text(StatusCode::BAD_REQUEST, "too_many_attachments");
            }
            Some(_) => {}
            None => return text(StatusCode::BAD_REQUEST, "invalid_payload"),
        }
    }
    let has_text = message_text
        .as_deref()
        .is_some_and(|t| !t.trim().is_empty());
    let has_blocks = blocks
        .as_ref()
        .and_then(Value::as_array)
        .is_some_and(|b| !b.is_empty());
    let has_attachments = attachments
        .as_ref()
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !has_text && !has_blocks && !has_attachments {
        return text(StatusCode::BAD_REQUEST, "no_text");
    }
    if let Err(wait) = SlackState::take_slot(
        &state.inner.webhook_windows,
        &path,
        state.inner.webhook_limit,
        state.inner.webhook_window,
    ) {
        let mut resp = text(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        if let Ok(v) = HeaderValue::from_str(&retry_after_secs(wait).to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let mut ws = state.workspace();
    let ts = SlackState::next_ts(&mut ws);
    ws.messages.push(SlackMessage {
        channel: hook.channel_id.clone(),
        ts,
        text: message_text,
        blocks,
        attachments,
        thread_ts: payload
            .get("thread_ts")
            .and_then(Value::as_str)
            .map(str::to_string),
        source: MessageSource::Webhook { path },
    });
    text(StatusCode::OK, "ok")
}
