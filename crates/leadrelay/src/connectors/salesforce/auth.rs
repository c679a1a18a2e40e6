//! Salesforce OAuth 2.0: the refresh-token flow and the JWT bearer flow
//! (RS256 assertion signed with the connected app's certificate key), and
//! the session they yield (`access_token` + the `instance_url` REST calls
//! go to).
//!
//! One session is shared by every request. A 401 `INVALID_SESSION_ID`
//! makes the REST layer ask for a fresh one with the token it saw
//! ([`Auth::refresh`]): if another request already replaced it, that session
//! is used; otherwise leadrelay logs in again. Logins are serialised, so a
//! burst of expired requests causes one login, not one each.
//!
//! The token endpoint's answers never reach the attempt log (they carry the
//! access token); its errors are reported by their OAuth error code and
//! description only.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::Value;

use crate::connectors::http as shared;
use crate::connectors::{ErrorClass, Outcome};
use crate::redact::redact_text;

/// How leadrelay logs in.
pub enum Flow {
    RefreshToken {
        client_id: String,
        client_secret: Option<String>,
        refresh_token: String,
    },
    Jwt {
        client_id: String,
        username: String,
        audience: String,
        key: EncodingKey,
    },
}

impl Flow {
    pub fn name(&self) -> &'static str {
        match self {
            Flow::RefreshToken { .. } => "refresh token",
            Flow::Jwt { .. } => "JWT bearer",
        }
    }
}

/// A logged-in session.
#[derive(Clone)]
pub struct Session {
    pub access_token: String,
    /// Where REST calls go (`https://yourorg.my.salesforce.com`).
    pub instance_url: String,
}

pub struct Auth {
    client: reqwest::Client,
    token_url: String,
    flow: Flow,
    allow_private: bool,
    /// Replaces the token response's `instance_url` (proxies, tests).
    instance_override: Option<String>,
    session: tokio::sync::Mutex<Option<Session>>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
}

impl Auth {
    pub fn new(
        client: reqwest::Client,
        token_url: String,
        flow: Flow,
        allow_private: bool,
        instance_override: Option<String>,
    ) -> Self {
        Self {
            client,
            token_url,
            flow,
            allow_private,
            instance_override,
            session: tokio::sync::Mutex::new(None),
        }
    }

    pub fn flow_name(&self) -> &'static str {
        self.flow.name()
    }

    /// The current session, logging in when there is none.
    pub async fn session(&self) -> Result<Session, Outcome> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let s = self.login().await?;
        *guard = Some(s.clone());
        Ok(s)
    }

    /// A fresh session after `stale` was rejected (unless another request
    /// already replaced it).
    pub async fn refresh(&self, stale: &str) -> Result<Session, Outcome> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref()
            && s.access_token != stale
        {
            return Ok(s.clone());
        }
        *guard = None;
        let s = self.login().await?;
        *guard = Some(s.clone());
        Ok(s)
    }

    fn form(&self) -> Result<Vec<(&'static str, String)>, Outcome> {
        Ok(match &self.flow {
            Flow::RefreshToken {
                client_id,
                client_secret,
                refresh_token,
            } => {
                let mut f = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("client_id", client_id.clone()),
                    ("refresh_token", refresh_token.clone()),
                ];
                if let Some(s) = client_secret {
                    f.push(("client_secret", s.clone()));
                }
                f
            }
            Flow::Jwt {
                client_id,
                username,
                audience,
                key,
            } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                let claims = Claims {
                    iss: client_id,
                    sub: username,
                    aud: audience,
                    // Salesforce wants the expiry within three minutes.
                    exp: now + 120,
                };
                let assertion = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key)
                    .map_err(|e| Outcome::CredentialsRejected {
                        message: format!("cannot sign the Salesforce JWT assertion: {e}"),
                    })?;
                vec![
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string(),
                    ),
                    ("assertion", assertion),
                ]
            }
        })
    }

    async fn login(&self) -> Result<Session, Outcome> {
        let form = self.form()?;
        let request = self
            .client
            .post(&self.token_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .build()
            .map_err(|e| {
                Outcome::permanent(
                    ErrorClass::Auth,
                    format!("cannot build the login request: {e}"),
                )
            })?;
        // The report is dropped on purpose: the answer carries the access token.
        let (result, _report) =
            shared::send(&self.client, request, &self.token_url, self.allow_private).await;
        let resp = result.map_err(|e| e.outcome())?;
        let body: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
        if (200..300).contains(&resp.status) {
            let token = body["access_token"].as_str().filter(|t| !t.is_empty());
            let instance = self.instance_override.clone().or_else(|| {
                body["instance_url"]
                    .as_str()
                    .map(|s| s.trim_end_matches('/').to_string())
            });
            return match (token, instance) {
                (Some(t), Some(i)) => Ok(Session {
                    access_token: t.to_string(),
                    instance_url: i,
                }),
                _ => Err(Outcome::retry(
                    ErrorClass::Auth,
                    "Salesforce's token response has no access_token or instance_url",
                )),
            };
        }
        let code = body["error"].as_str().unwrap_or("error");
        let description = redact_text(body["error_description"].as_str().unwrap_or_default());
        let message = format!(
            "Salesforce login ({}) failed: HTTP {} {code}: {description}",
            self.flow.name(),
            resp.status
        );
        Err(match resp.status {
            408 | 425 | 429 | 500..=599 => Outcome::Retry {
                class: ErrorClass::Auth,
                message,
                retry_after: shared::parse_retry_after(&resp.headers),
            },
            _ => Outcome::CredentialsRejected { message },
        })
    }
}
