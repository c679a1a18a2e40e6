//! The shape shared by vendors that do not sign their webhooks (Mailshake,
//! Apollo, Smartlead, Lemlist, Mixmax, Groove, Reply.io, Woodpecker, Qwilr):
//! a per-source shared token in the URL or `X-Leadrelay-Token`, optionally a
//! secret the vendor echoes in the body, a JSON (or form) body, and a
//! per-vendor mapping function.

use leadrelay_model::EventType;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{HeaderHmac, SharedToken, ct_eq};
use crate::config::{Env, Secret, parse_settings};
use crate::json::{json_body, json_or_form_body};
use crate::{
    HookError, HookParse, InboundEvent, InboundRequest, KindInfo, SourceConfigError, SourceKind,
};

/// Maps one authenticated body onto events (an empty list is a ping).
pub(crate) type Mapper = fn(&InboundRequest<'_>, &Value) -> Result<Vec<InboundEvent>, HookError>;

/// A secret the vendor copies into every body (Smartlead's `secret_key`,
/// Lemlist's `secret`), compared in constant time.
#[derive(Debug)]
pub(crate) struct BodySecret {
    pub field: &'static str,
    pub secret: Secret,
}

#[derive(Debug)]
pub(crate) struct TokenSource {
    pub info: &'static KindInfo,
    pub token: Option<SharedToken>,
    pub signature: Option<HeaderHmac>,
    pub body_secret: Option<BodySecret>,
    pub accepts_form: bool,
    pub map: Mapper,
}

/// Settings of the vendors whose only setting is the token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenSettings {
    /// Env var holding the shared token the vendor's webhook URL carries
    /// (`?token=…`) or sends as `X-Leadrelay-Token`.
    pub token_env: String,
}

/// Builds a token-only source from [`TokenSettings`].
pub(crate) fn build_token_only(
    info: &'static KindInfo,
    settings: &Value,
    env: Env,
    accepts_form: bool,
    map: Mapper,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    let s: TokenSettings = parse_settings(settings)?;
    let mut errors = Vec::new();
    let token = SharedToken::from_env(env, "token_env", &s.token_env, &mut errors);
    finish(
        TokenSource {
            info,
            token,
            signature: None,
            body_secret: None,
            accepts_form,
            map,
        },
        errors,
    )
}

/// Returns the source unless configuration problems were found.
pub(crate) fn finish(
    source: TokenSource,
    errors: Vec<SourceConfigError>,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    crate::config::finish(Some(source), errors)
}

impl TokenSource {
    fn body(&self, req: &InboundRequest<'_>) -> Result<Option<Value>, HookError> {
        if self.accepts_form {
            json_or_form_body(req)
        } else {
            json_body(req)
        }
    }
}

impl SourceKind for TokenSource {
    fn kind(&self) -> &'static str {
        self.info.name
    }

    fn authenticate(&self, req: &InboundRequest<'_>) -> Result<(), HookError> {
        if let Some(token) = &self.token {
            token.check(req)?;
        }
        if let Some(signature) = &self.signature {
            signature.check(req)?;
        }
        if let Some(BodySecret { field, secret }) = &self.body_secret {
            // The secret travels in the body: read it as JSON (never stored before this check passes).
            let body = self.body(req)?.unwrap_or(Value::Null);
            let provided = body.get(*field).and_then(Value::as_str).unwrap_or("");
            if provided.is_empty() {
                return Err(HookError::Unauthorized(format!("the body has no {field}")));
            }
            if !ct_eq(provided.as_bytes(), secret.as_bytes()) {
                return Err(HookError::Unauthorized(format!("wrong {field}")));
            }
        }
        Ok(())
    }

    fn parse(&self, req: &InboundRequest<'_>) -> Result<HookParse, HookError> {
        let Some(body) = self.body(req)? else {
            return Ok(HookParse::Ping);
        };
        Ok(crate::json::parsed((self.map)(req, &body)?))
    }
}

/// Looks a vendor event name up in a table, ignoring case and the
/// separators vendors disagree on (`email_replied` = `EmailReplied` =
/// `email.replied` = `email:replied`).
pub(crate) fn lookup(name: &str, table: &[(&str, EventType)]) -> Option<EventType> {
    let key = normalize(name);
    table
        .iter()
        .find(|(n, _)| normalize(n) == key)
        .map(|(_, t)| t.clone())
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '.' | '_' | '-' | ' ' | ':'))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case_and_separators() {
        let table = [("email_replied", EventType::ReplyReceived)];
        assert_eq!(
            lookup("EMAIL_REPLIED", &table),
            Some(EventType::ReplyReceived)
        );
        assert_eq!(
            lookup("email.replied", &table),
            Some(EventType::ReplyReceived)
        );
        assert_eq!(
            lookup("EmailReplied", &table),
            Some(EventType::ReplyReceived)
        );
        assert_eq!(
            lookup("email:replied", &table),
            Some(EventType::ReplyReceived)
        );
        assert_eq!(lookup("email_replied_twice", &table), None);
    }
}
