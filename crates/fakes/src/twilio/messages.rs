//! The REST handlers: authentication, the Messages collection and instances, the Account.

// Handlers bail out with the finished vendor response; it is built once per request, so its
// size on the error path does not matter.
#![allow(clippy::result_large_err)]

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{API_VERSION, MAX_BODY_CHARS, TwilioMessage, TwilioState, segments};

/// A Twilio REST error: `{"code","message","more_info","status"}`.
pub(super) fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    let body = json!({
        "code": code,
        "message": message.into(),
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

fn auth_error(message: &str) -> Response {
    let mut resp = error(StatusCode::UNAUTHORIZED, 20003, message);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Twilio API\""),
    );
    resp
}

fn not_found_error(path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        20404,
        format!("The requested resource {path} was not found"),
    )
}

fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, 20004, "Method not allowed")
}

/// Checks HTTP Basic credentials: the account SID with its auth token, or an API key SID with
/// its secret. Returns the authenticated account SID.
fn authenticate(state: &TwilioState, headers: &HeaderMap) -> Result<String, Response> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(auth_error("Authentication Error - No credentials provided"));
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return Err(auth_error("Authentication Error - No credentials provided"));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Err(auth_error("Authentication Error - invalid username"));
    };
    let config = &state.inner.config;
    if user == config.account_sid {
        return if password == config.auth_token {
            Ok(config.account_sid.clone())
        } else {
            Err(auth_error("Authentication Error - invalid password"))
        };
    }
    match config.api_keys.iter().find(|k| k.sid == user) {
        Some(key) if key.secret == password => Ok(config.account_sid.clone()),
        Some(_) => Err(auth_error("Authentication Error - invalid password")),
        None => Err(auth_error("Authentication Error - invalid username")),
    }
}

/// Authenticates and checks that the path names the authenticated account.
fn authorize(
    state: &TwilioState,
    headers: &HeaderMap,
    path_account: &str,
    uri: &Uri,
) -> Result<(), Response> {
    let account = authenticate(state, headers)?;
    if account != path_account {
        return Err(not_found_error(uri.path()));
    }
    Ok(())
}

fn rfc2822(t: &DateTime<Utc>) -> String {
    t.to_rfc2822()
}

fn message_json(m: &TwilioMessage) -> Value {
    let uri = format!(
        "/{API_VERSION}/Accounts/{}/Messages/{}.json",
        m.account_sid, m.sid
    );
    json!({
        "account_sid": m.account_sid,
        "api_version": API_VERSION,
        "body": m.body,
        "date_created": rfc2822(&m.date_created),
        "date_sent": Value::Null,
        "date_updated": rfc2822(&m.date_updated),
        "direction": "outbound-api",
        "error_code": Value::Null,
        "error_message": Value::Null,
        "from": m.from,
        "messaging_service_sid": m.messaging_service_sid,
        "num_media": m.media_urls.len().to_string(),
        "num_segments": m.num_segments.to_string(),
        "price": Value::Null,
        "price_unit": "USD",
        "sid": m.sid,
        "status": m.status,
        "subresource_uris": {
            "media": format!("/{API_VERSION}/Accounts/{}/Messages/{}/Media.json", m.account_sid, m.sid),
            "feedback": format!("/{API_VERSION}/Accounts/{}/Messages/{}/Feedback.json", m.account_sid, m.sid),
        },
        "to": m.to,
        "uri": uri,
    })
}

/// `+` then 7 to 15 digits, the first not 0.
fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
}

/// An alphanumeric sender ID: 1 to 11 characters of letters, digits and spaces, at least one
/// letter.
fn is_alphanumeric_sender(from: &str) -> bool {
    (1..=11).contains(&from.chars().count())
        && from.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
        && from.chars().any(|c| c.is_ascii_alphabetic())
}

/// `/2010-04-01/Accounts/{account}/Messages.json`: POST creates, GET lists.
pub async fn messages_collection(
    State(state): State<TwilioState>,
    Path(account): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(resp) = authorize(&state, &headers, &account, &uri) {
        return resp;
    }
    if state.inner.window.hit().is_err() {
        return error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
    }
    match method {
        Method::POST => create_message(&state, &account, &body),
        Method::GET => list_messages(&state, &account),
        _ => method_not_allowed(),
    }
}

fn list_messages(state: &TwilioState, account: &str) -> Response {
    let mut messages = state.messages();
    messages.reverse(); // newest first, as Twilio lists them
    let uri = format!("/{API_VERSION}/Accounts/{account}/Messages.json?PageSize=50&Page=0");
    let items: Vec<Value> = messages.iter().map(message_json).collect();
    Json(json!({
        "end": items.len().saturating_sub(1),
        "first_page_uri": uri,
        "messages": items,
        "next_page_uri": Value::Null,
        "page": 0,
        "page_size": 50,
        "previous_page_uri": Value::Null,
        "start": 0,
        "uri": uri,
    }))
    .into_response()
}

fn create_message(state: &TwilioState, account: &str, body: &[u8]) -> Response {
    let bad = |code: u32, message: String| error(StatusCode::BAD_REQUEST, code, message);
    // Twilio reads form parameters whatever the content type; a body it cannot read carries none.
    let params: Vec<(String, String)> = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_urlencoded::from_str(text).ok())
        .unwrap_or_default();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
    };
    let to = get("To").filter(|v| !v.is_empty());
    let from = get("From").filter(|v| !v.is_empty());
    let service = get("MessagingServiceSid").filter(|v| !v.is_empty());
    let text = params
        .iter()
        .find(|(k, _)| k == "Body")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let media_urls: Vec<String> = params
        .iter()
        .filter(|(k, v)| k == "MediaUrl" && !v.trim().is_empty())
        .map(|(_, v)| v.clone())
        .collect();

    let Some(to) = to else {
        return bad(21604, "A 'To' phone number is required.".into());
    };
    if from.is_none() && service.is_none() {
        return bad(21603, "A 'From' phone number is required.".into());
    }
    if text.trim().is_empty() && media_urls.is_empty() {
        return bad(21602, "Message body is required.".into());
    }
    if text.chars().count() > MAX_BODY_CHARS {
        return bad(
            21617,
            "The concatenated message body exceeds the 1600 character limit.".into(),
        );
    }
    if !is_e164(&to) {
        return bad(21211, format!("Invalid 'To' Phone Number: {to}"));
    }
    let config = &state.inner.config;
    if let Some(sid) = &service
        && !config.messaging_services.iter().any(|s| s == sid)
    {
        return bad(
            21701,
            format!("The Messaging Service Sid {sid} is invalid."),
        );
    }
    if let Some(from) = &from {
        if is_e164(from) {
            match config.phone_numbers.iter().find(|n| &n.number == from) {
                Some(n) if n.sms_capable => {}
                Some(_) => {
                    return bad(
                        21606,
                        format!(
                            "The 'From' phone number provided ({from}) is not a valid message-capable Twilio phone number for this destination."
                        ),
                    );
                }
                None if config.other_accounts_numbers.iter().any(|n| n == from) => {
                    return bad(
                        21660,
                        format!(
                            "Mismatch between the 'From' number {from} and the account {account}"
                        ),
                    );
                }
                None => {
                    return bad(
                        21659,
                        format!(
                            "'From' {from} is not a Twilio phone number or Short Code country mismatch"
                        ),
                    );
                }
            }
        } else if !is_alphanumeric_sender(from) {
            return bad(
                21212,
                format!(
                    "The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric sender ID."
                ),
            );
        }
        if *from == to {
            return bad(
                21266,
                format!("'To' and 'From' number cannot be the same: {to}"),
            );
        }
    }
    if state.is_opted_out(&to) {
        return bad(21610, "Attempt to send to unsubscribed recipient".into());
    }

    let now = Utc::now();
    let via_service = service.is_some() && from.is_none();
    let message = TwilioMessage {
        sid: format!("SM{}", uuid::Uuid::now_v7().simple()),
        account_sid: account.to_string(),
        to,
        from: if via_service { None } else { from },
        messaging_service_sid: service,
        num_segments: if via_service {
            0
        } else {
            segments::count(&text).max(u32::from(!media_urls.is_empty()))
        },
        body: text,
        media_urls,
        status: if via_service { "accepted" } else { "queued" }.to_string(),
        status_callback: get("StatusCallback").filter(|v| !v.is_empty()),
        date_created: now,
        date_updated: now,
    };
    let body = message_json(&message);
    state.messages_mut().push(message);
    (StatusCode::CREATED, Json(body)).into_response()
}

/// `/2010-04-01/Accounts/{account}/Messages/{sid}.json`: GET fetches one message.
pub async fn message_instance(
    State(state): State<TwilioState>,
    Path((account, file)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = authorize(&state, &headers, &account, &uri) {
        return resp;
    }
    let Some(sid) = file.strip_suffix(".json") else {
        return not_found_error(uri.path());
    };
    if method != Method::GET {
        return method_not_allowed();
    }
    match state
        .messages()
        .iter()
        .find(|m| m.sid == sid && m.account_sid == account)
    {
        Some(m) => Json(message_json(m)).into_response(),
        None => not_found_error(uri.path()),
    }
}

/// `/2010-04-01/Accounts/{sid}.json`: GET fetches the account (used to check credentials).
pub async fn account_instance(
    State(state): State<TwilioState>,
    Path(file): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(account) = file.strip_suffix(".json") else {
        return not_found_error(uri.path());
    };
    if let Err(resp) = authorize(&state, &headers, account, &uri) {
        return resp;
    }
    if method != Method::GET {
        return method_not_allowed();
    }
    let config = &state.inner.config;
    let base = format!("/{API_VERSION}/Accounts/{account}");
    Json(json!({
        "date_created": rfc2822(&state.inner.created),
        "date_updated": rfc2822(&state.inner.created),
        "friendly_name": config.friendly_name,
        "owner_account_sid": account,
        "sid": account,
        "status": "active",
        "subresource_uris": {
            "messages": format!("{base}/Messages.json"),
            "incoming_phone_numbers": format!("{base}/IncomingPhoneNumbers.json"),
        },
        "type": "Full",
        "uri": format!("{base}.json"),
    }))
    .into_response()
}

/// Anything else: Twilio's 20404.
pub async fn not_found(uri: Uri) -> Response {
    not_found_error(uri.path())
}
