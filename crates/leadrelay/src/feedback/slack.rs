//! Slack interactivity for the rating buttons: the request check and the
//! `block_actions` payload.
//!
//! Slack signs every request to an app's Interactivity Request URL:
//! `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret,
//! "v0:" + X-Slack-Request-Timestamp + ":" + raw body)>`. A request older
//! (or newer) than five minutes is refused, so a captured one cannot be
//! replayed. The body is `application/x-www-form-urlencoded` with one field,
//! `payload`, holding the JSON.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The action ids of the rating buttons: `leadrelay_rate_<1..5>`.
pub const ACTION_PREFIX: &str = "leadrelay_rate_";

/// How far a request's timestamp may be from now.
pub const MAX_SKEW_SECS: i64 = 300;

/// The rating buttons: (rating, text, style).
pub const BUTTONS: [(u8, &str, Option<&str>); 3] = [
    (5, "Good lead", Some("primary")),
    (3, "OK lead", None),
    (1, "Poor lead", Some("danger")),
];

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlackRequestError {
    #[error("x-slack-request-timestamp: missing or not a number")]
    NoTimestamp,
    #[error("x-slack-request-timestamp: more than 5 minutes from now")]
    Stale,
    #[error("x-slack-signature: missing or not v0=<hex>")]
    NoSignature,
    #[error("x-slack-signature: does not match the body")]
    BadSignature,
    #[error("payload: {0}")]
    BadPayload(String),
}

/// The signature Slack sends for `body` at `timestamp`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a request's timestamp and signature.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SlackRequestError> {
    let ts = timestamp.ok_or(SlackRequestError::NoTimestamp)?;
    let secs: i64 = ts
        .trim()
        .parse()
        .map_err(|_| SlackRequestError::NoTimestamp)?;
    if (now_secs - secs).abs() > MAX_SKEW_SECS {
        return Err(SlackRequestError::Stale);
    }
    let given = signature
        .filter(|s| s.starts_with("v0=") && s.len() == 67)
        .ok_or(SlackRequestError::NoSignature)?;
    let expected = sign(secret, ts.trim(), body);
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(SlackRequestError::BadSignature)
    }
}

/// One rating button click.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub contact_id: Uuid,
    pub rating: u8,
    /// `slack:<user id> (<user name>)`.
    pub user: String,
    /// Unique per click (`action_ts` with the user), for idempotency.
    pub key: String,
}

/// The rating clicks of an interaction (other interactions and other
/// buttons — the link to the dashboard — give none).
pub fn clicks(body: &[u8]) -> Result<Vec<Click>, SlackRequestError> {
    let payload = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| SlackRequestError::BadPayload("missing".into()))?;
    let v: Value = serde_json::from_str(&payload)
        .map_err(|e| SlackRequestError::BadPayload(format!("not JSON: {e}")))?;
    if v.get("type").and_then(Value::as_str) != Some("block_actions") {
        return Ok(Vec::new());
    }
    let user_id = v
        .pointer("/user/id")
        .and_then(Value::as_str)
        .ok_or_else(|| SlackRequestError::BadPayload("user.id missing".into()))?;
    let user_name = v
        .pointer("/user/username")
        .or_else(|| v.pointer("/user/name"))
        .and_then(Value::as_str);
    let user = match user_name {
        Some(n) => format!("slack:{user_id} ({n})"),
        None => format!("slack:{user_id}"),
    };
    let mut out = Vec::new();
    for a in v
        .get("actions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let Some(suffix) = a
            .get("action_id")
            .and_then(Value::as_str)
            .and_then(|id| id.strip_prefix(ACTION_PREFIX))
        else {
            continue;
        };
        let value = a.get("value").and_then(Value::as_str).unwrap_or_default();
        let bad = || SlackRequestError::BadPayload(format!("action value {value:?}"));
        let (contact, r) = value.split_once(':').ok_or_else(bad)?;
        let contact_id = Uuid::parse_str(contact).map_err(|_| bad())?;
        // The button's id and value name the same rating.
        let rating: u8 = r.parse().ok().filter(|_| r == suffix).ok_or_else(bad)?;
        out.push(Click {
            contact_id,
            rating,
            user: user.clone(),
            key: format!(
                "slack:{user_id}:{}:{value}",
                a.get("action_ts")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            ),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(payload: &serde_json::Value) -> Vec<u8> {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish()
            .into_bytes()
    }

    #[test]
    fn signatures_are_checked_with_the_timestamp() {
        // The expected value is from Python's hmac module, computed apart.
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let raw = b"payload=%7B%22type%22%3A%22block_actions%22%7D";
        let sig = sign(secret, "1531420618", raw);
        assert_eq!(
            sig,
            "v0=9dffc25b49a4a7fc2e15c9c9450bf8af09eb501fcef9039eaea3deb58af0c82c"
        );
        assert_eq!(
            verify(
                secret,
                Some("1531420618"),
                Some(&sig),
                raw,
                1531420618 + 299
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                secret,
                Some("1531420618"),
                Some(&sig),
                raw,
                1531420618 + 301
            ),
            Err(SlackRequestError::Stale)
        );
        let mut other = raw.to_vec();
        other.push(b'x');
        assert_eq!(
            verify(secret, Some("1531420618"), Some(&sig), &other, 1531420618),
            Err(SlackRequestError::BadSignature)
        );
        assert_eq!(
            verify(secret, None, Some(&sig), raw, 0),
            Err(SlackRequestError::NoTimestamp)
        );
        assert_eq!(
            verify(secret, Some("1531420618"), Some("v1=abc"), raw, 1531420618),
            Err(SlackRequestError::NoSignature)
        );
    }

    #[test]
    fn rating_clicks_are_read_and_other_buttons_ignored() {
        let id = Uuid::now_v7();
        let p = serde_json::json!({
            "type": "block_actions",
            "user": {"id": "U123", "username": "ann", "team_id": "T1"},
            "actions": [
                {"action_id": "open_lead", "type": "button", "action_ts": "1.2"},
                {"action_id": "leadrelay_rate_5", "value": format!("{id}:5"), "type": "button", "action_ts": "1.3"}
            ]
        });
        let c = clicks(&body(&p)).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].contact_id, id);
        assert_eq!(c[0].rating, 5);
        assert_eq!(c[0].user, "slack:U123 (ann)");
        // The id and the value disagree: refused.
        let p = serde_json::json!({"type": "block_actions", "user": {"id": "U1"},
            "actions": [{"action_id": "leadrelay_rate_5", "value": format!("{id}:1")}]});
        assert!(clicks(&body(&p)).is_err());
        // Other interactions rate nothing.
        let p = serde_json::json!({"type": "view_submission", "user": {"id": "U1"}});
        assert!(clicks(&body(&p)).unwrap().is_empty());
        assert!(clicks(b"nothing=1").is_err());
    }
}
