//! Interactivity: the signed `block_actions` request Slack sends to an
//! app's Request URL when a user clicks a button of a message.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::SlackState;

/// A request as Slack would send it; post it to the app's Request URL
/// with `Content-Type: application/x-www-form-urlencoded`.
#[derive(Debug, Clone)]
pub struct SignedInteraction {
    /// `X-Slack-Request-Timestamp`.
    pub timestamp: String,
    /// `X-Slack-Signature`.
    pub signature: String,
    /// `payload=<url-encoded JSON>`.
    pub body: String,
    /// The payload, decoded (for assertions).
    pub payload: Value,
}

/// `v0=<hex HMAC-SHA256(secret, "v0:<timestamp>:<body>")>`.
pub fn signature(secret: &str, timestamp: &str, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

impl SlackState {
    /// The request a click by `user_id` on the button `action_id` of the
    /// message `ts` makes, signed with the app's signing secret (None when
    /// there is no such message or button). `at_secs` (Unix time) is the
    /// request's timestamp: now, unless a test wants a stale one.
    pub fn click(
        &self,
        ts: &str,
        action_id: &str,
        user_id: &str,
        at_secs: Option<u64>,
    ) -> Option<SignedInteraction> {
        let ws = self.workspace();
        let message = ws.messages.iter().find(|m| m.ts == ts)?;
        let blocks = message.blocks.as_ref()?.as_array()?;
        let (block_id, element) = blocks.iter().enumerate().find_map(|(i, b)| {
            let el = b
                .get("elements")?
                .as_array()?
                .iter()
                .find(|e| e.get("action_id").and_then(Value::as_str) == Some(action_id))?;
            let block_id = b
                .get("block_id")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| format!("b{i}"));
            Some((block_id, el.clone()))
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let channel = ws.channels.iter().find(|c| c.id == message.channel);
        let mut action = json!({
            "action_id": action_id,
            "block_id": block_id,
            "text": element.get("text").cloned().unwrap_or(Value::Null),
            "type": "button",
            "action_ts": format!("{now:.6}"),
        });
        for k in ["value", "style", "url"] {
            if let Some(v) = element.get(k) {
                action[k] = v.clone();
            }
        }
        let team = &self.inner.team_id;
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user_id, "username": format!("user-{}", user_id.to_lowercase()),
                     "name": format!("user-{}", user_id.to_lowercase()), "team_id": team},
            "api_app_id": "A0FAKEAPP01",
            "token": "fakeVerificationToken",
            "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel,
                          "is_ephemeral": false},
            "trigger_id": format!("{:.0}.{}.fake", now * 1000.0, team),
            "team": {"id": team, "domain": "leadrelay-fake"},
            "is_enterprise_install": false,
            "channel": {"id": message.channel, "name": channel.map(|c| c.name.clone())},
            "message": {"type": "message", "ts": message.ts, "text": message.text,
                        "blocks": message.blocks},
            "response_url": format!("https://hooks.slack.com/actions/{team}/1/fake"),
            "actions": [action],
        });
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).ok()?;
        let timestamp = at_secs.unwrap_or(now as u64).to_string();
        Some(SignedInteraction {
            signature: signature(&self.inner.signing_secret, &timestamp, &body),
            timestamp,
            body,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_hmac() {
        // From Python: hmac.new(secret, b"v0:1531420618:" + body, sha256).hexdigest()
        assert_eq!(
            signature(
                "8f742231b10e8888abcd99yyyzzz85a5",
                "1531420618",
                "payload=%7B%22type%22%3A%22block_actions%22%7D"
            ),
            "v0=9dffc25b49a4a7fc2e15c9c9450bf8af09eb501fcef9039eaea3deb58af0c82c"
        );
    }
}
