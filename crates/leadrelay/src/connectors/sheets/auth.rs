//! Google service-account authentication: the OAuth 2.0 JWT bearer grant.
//!
//! An RS256-signed assertion (`iss` = the service account, `scope`, `aud` =
//! the token URI, `iat`, `exp` one hour later) is exchanged at the token
//! URI for an access token, which is cached until a minute before it
//! expires and dropped when the API answers 401.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::http as shared;
use super::super::{AttemptReport, ErrorClass, Outcome};
use crate::redact;

/// The parts of a service-account key file leadrelay uses.
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    #[serde(default)]
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Reads a key from an env var's value: the JSON itself, or a path to it.
    pub fn from_env_value(value: &str) -> Result<Self, String> {
        let text = if value.trim_start().starts_with('{') {
            value.to_string()
        } else {
            std::fs::read_to_string(value.trim())
                .map_err(|e| format!("cannot read the key file: {e}"))?
        };
        let key: ServiceAccountKey = serde_json::from_str(&text)
            .map_err(|e| format!("not a service-account key file: {e}"))?;
        if key.client_email.trim().is_empty() {
            return Err("the key file has no client_email".into());
        }
        jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.as_bytes())
            .map_err(|e| format!("the key file's private_key is not an RSA PEM key: {e}"))?;
        Ok(key)
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// A signed JWT bearer assertion for `key`, valid for one hour.
pub fn assertion(key: &ServiceAccountKey, scope: &str, token_url: &str) -> Result<String, String> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: &key.client_email,
        scope,
        aud: token_url,
        iat: now,
        exp: now + 3600,
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = key.private_key_id.clone();
    let signing_key = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.as_bytes())
        .map_err(|e| format!("the private key cannot sign: {e}"))?;
    jsonwebtoken::encode(&header, &claims, &signing_key)
        .map_err(|e| format!("signing the assertion failed: {e}"))
}

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// Fetches and caches access tokens for one service account.
pub struct TokenSource {
    key: ServiceAccountKey,
    scope: String,
    token_url: String,
    allow_private: bool,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

/// Why no token could be had: the outcome for the deliveries waiting on it,
/// and the token request's attempt report.
pub struct TokenError {
    pub outcome: Outcome,
    pub report: AttemptReport,
}

impl TokenSource {
    pub fn new(
        key: ServiceAccountKey,
        scope: &str,
        token_url: String,
        allow_private: bool,
    ) -> Self {
        Self {
            key,
            scope: scope.to_string(),
            token_url,
            allow_private,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    pub fn client_email(&self) -> &str {
        &self.key.client_email
    }

    /// Forgets the cached token (the API answered 401).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    /// A valid access token: the cached one, or a new one.
    pub async fn token(&self, client: &reqwest::Client) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let (token, expires_in) = self.fetch(client).await?;
        // Refresh a minute early (never less than half the lifetime).
        let margin = Duration::from_secs(60).min(expires_in / 2);
        *cached = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + expires_in.saturating_sub(margin),
        });
        Ok(token)
    }

    async fn fetch(&self, client: &reqwest::Client) -> Result<(String, Duration), TokenError> {
        let assertion =
            assertion(&self.key, &self.scope, &self.token_url).map_err(|m| TokenError {
                outcome: Outcome::CredentialsRejected { message: m },
                report: Default::default(),
            })?;
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ];
        let request = client
            .post(&self.token_url)
            .form(&form)
            .build()
            .map_err(|e| TokenError {
                outcome: Outcome::permanent(
                    ErrorClass::Mapping,
                    format!("cannot build the token request: {e}"),
                ),
                report: Default::default(),
            })?;
        let (result, mut report) =
            shared::send(client, request, &self.token_url, self.allow_private).await;
        // The answer holds the access token: never keep it in the attempt log.
        report.response_excerpt = None;
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                return Err(TokenError {
                    outcome: e.outcome(),
                    report,
                });
            }
        };
        let parsed: Option<Value> = serde_json::from_str(&resp.body).ok();
        if resp.status == 200 {
            let token = parsed
                .as_ref()
                .and_then(|v| v.get("access_token"))
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty());
            let expires_in = parsed
                .as_ref()
                .and_then(|v| v.get("expires_in"))
                .and_then(Value::as_u64)
                .unwrap_or(3600);
            return match token {
                Some(t) => Ok((t.to_string(), Duration::from_secs(expires_in.max(1)))),
                None => Err(TokenError {
                    outcome: Outcome::retry(
                        ErrorClass::Vendor,
                        "the token endpoint answered 200 without an access_token",
                    ),
                    report,
                }),
            };
        }
        let error = parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let description = parsed
            .as_ref()
            .and_then(|v| v.get("error_description"))
            .and_then(Value::as_str)
            .unwrap_or("");
        report.response_excerpt = Some(redact::excerpt(
            &format!("{error}: {description}"),
            shared::EXCERPT_BYTES,
        ));
        let message = format!(
            "Google token endpoint: HTTP {} {error}: {}",
            resp.status,
            redact::excerpt(description, 200)
        );
        let outcome = match (resp.status, error) {
            (400 | 401 | 403, "invalid_grant" | "unauthorized_client" | "invalid_client") => {
                Outcome::CredentialsRejected { message }
            }
            (400, _) => Outcome::permanent(ErrorClass::Auth, message),
            _ => match shared::classify(&resp) {
                Outcome::Retry {
                    class, retry_after, ..
                } => Outcome::Retry {
                    class,
                    message,
                    retry_after,
                },
                Outcome::Throttled { retry_after, .. } => Outcome::Throttled {
                    message,
                    retry_after,
                },
                Outcome::Delivered { .. } => Outcome::retry(ErrorClass::Vendor, message),
                _ => Outcome::CredentialsRejected { message },
            },
        };
        Err(TokenError { outcome, report })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assertions_verify_with_the_public_key() {
        let json = leadrelay_fakes_key_json();
        let key = ServiceAccountKey::from_env_value(&json).unwrap();
        let jwt = assertion(
            &key,
            "https://www.googleapis.com/auth/spreadsheets",
            "http://t/token",
        )
        .unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("kid-1"));
        assert!(ServiceAccountKey::from_env_value("{\"client_email\":\"a\"}").is_err());
        assert!(ServiceAccountKey::from_env_value("/nonexistent/key.json").is_err());
        assert!(
            !format!("{key:?}").contains("PRIVATE"),
            "the key is not in Debug output"
        );
    }

    fn leadrelay_fakes_key_json() -> String {
        serde_json::json!({
            "client_email": "x@y.iam.gserviceaccount.com",
            "private_key": include_str!("../../../../fakes/testdata/google-test-service-account.key.pem"),
            "private_key_id": "kid-1",
        })
        .to_string()
    }
}
