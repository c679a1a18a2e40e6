//! Salesloft OAuth 2.0: access tokens from the refresh-token grant, and
//! the refresh token Salesloft rotates on every use.
//!
//! Salesloft answers each refresh with a *new* refresh token and the old
//! one stops working. Keeping only the env var's token would lose the
//! grant at the first restart after a refresh, so the current refresh
//! token is kept in the store (`kv`, key `oauth:salesloft:{destination}`),
//! shared by every node, together with a fingerprint of the env var's
//! token it descends from: when an operator authorizes again and sets a
//! new `SALESLOFT_REFRESH_TOKEN`, the stored chain no longer matches and
//! the new token is used. A node whose refresh is refused (`invalid_grant`)
//! reads the store once more — another node may have rotated the token
//! meanwhile — before it gives up.
//!
//! One access token is shared by every request; it is renewed one minute
//! before it expires, or when the API answers 401 `invalid_token` (a burst
//! of those renews once). The token endpoint's answers never reach the
//! attempt log.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::connectors::http as shared;
use crate::connectors::{ErrorClass, Outcome};
use crate::redact::redact_text;
use crate::store::Store;

/// Renew this long before the access token expires.
const EARLY: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Access {
    token: String,
    expires: Instant,
}

pub struct OAuth {
    client: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: String,
    /// The env var's refresh token (the start of the chain).
    seed: String,
    kv_key: String,
    allow_private: bool,
    store: OnceLock<Arc<dyn Store>>,
    /// The newest refresh token this process holds.
    refresh: Mutex<String>,
    access: tokio::sync::Mutex<Option<Access>>,
}

/// Why the token endpoint refused.
enum Refusal {
    /// `invalid_grant`: the refresh token is used up or revoked.
    Grant(String),
    Other(Outcome),
}

fn fingerprint(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..12])
}

impl OAuth {
    pub fn new(
        client: reqwest::Client,
        token_url: String,
        client_id: String,
        client_secret: String,
        refresh_token: String,
        destination: &str,
        allow_private: bool,
    ) -> Self {
        Self {
            client,
            token_url,
            client_id,
            client_secret,
            refresh: Mutex::new(refresh_token.clone()),
            seed: refresh_token,
            kv_key: format!("oauth:salesloft:{destination}"),
            allow_private,
            store: OnceLock::new(),
            access: tokio::sync::Mutex::new(None),
        }
    }

    pub fn attach_store(&self, store: Arc<dyn Store>) {
        let _ = self.store.set(store);
    }

    pub fn has_store(&self) -> bool {
        self.store.get().is_some()
    }

    /// A valid access token (renewed when it is about to expire).
    pub async fn token(&self) -> Result<String, Outcome> {
        let mut guard = self.access.lock().await;
        if let Some(a) = guard.as_ref()
            && a.expires > Instant::now() + EARLY
        {
            return Ok(a.token.clone());
        }
        let a = self.refresh_grant().await?;
        *guard = Some(a.clone());
        Ok(a.token)
    }

    /// A new access token after the API refused `stale` (unless another
    /// request already replaced it).
    pub async fn renew(&self, stale: &str) -> Result<String, Outcome> {
        let mut guard = self.access.lock().await;
        if let Some(a) = guard.as_ref()
            && a.token != stale
            && a.expires > Instant::now() + EARLY
        {
            return Ok(a.token.clone());
        }
        *guard = None;
        let a = self.refresh_grant().await?;
        *guard = Some(a.clone());
        Ok(a.token)
    }

    fn in_memory(&self) -> String {
        self.refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The refresh token to use: the stored chain when it descends from
    /// the env var's token, else the one in memory.
    async fn current(&self) -> String {
        let Some(store) = self.store.get() else {
            return self.in_memory();
        };
        match store.kv_get(&self.kv_key).await {
            Ok(Some(raw)) => {
                let v: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
                match (v["seed"].as_str(), v["refresh_token"].as_str()) {
                    (Some(seed), Some(t)) if seed == fingerprint(&self.seed) && !t.is_empty() => {
                        t.to_string()
                    }
                    _ => self.in_memory(),
                }
            }
            Ok(None) => self.in_memory(),
            Err(e) => {
                tracing::warn!(error = %e, "salesloft: cannot read the stored refresh token");
                self.in_memory()
            }
        }
    }

    /// Keeps the rotated refresh token (memory and store).
    async fn keep(&self, token: &str) {
        *self.refresh.lock().unwrap_or_else(|p| p.into_inner()) = token.to_string();
        let Some(store) = self.store.get() else {
            return;
        };
        let v = serde_json::json!({"seed": fingerprint(&self.seed), "refresh_token": token});
        if let Err(e) = store.kv_set(&self.kv_key, &v.to_string()).await {
            tracing::error!(
                error = %e,
                "salesloft: cannot store the rotated refresh token; a restart before the next \
                 refresh will need a new authorization"
            );
        }
    }

    async fn refresh_grant(&self) -> Result<Access, Outcome> {
        let mut token = self.current().await;
        for attempt in 0..2 {
            match self.call(&token).await {
                Ok((access, rotated)) => {
                    if let Some(r) = rotated {
                        self.keep(&r).await;
                    }
                    return Ok(access);
                }
                Err(Refusal::Grant(m)) => {
                    let again = self.current().await;
                    if attempt == 0 && again != token {
                        token = again;
                        continue;
                    }
                    return Err(Outcome::CredentialsRejected {
                        message: format!(
                            "Salesloft refused the refresh token ({m}): authorize leadrelay in \
                             Salesloft again and set the new refresh token"
                        ),
                    });
                }
                Err(Refusal::Other(o)) => return Err(o),
            }
        }
        Err(Outcome::retry(
            ErrorClass::Auth,
            "Salesloft login did not finish",
        ))
    }

    async fn call(&self, refresh_token: &str) -> Result<(Access, Option<String>), Refusal> {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
            ("refresh_token", refresh_token),
        ];
        let request = self
            .client
            .post(&self.token_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .build()
            .map_err(|e| {
                Refusal::Other(Outcome::permanent(
                    ErrorClass::Auth,
                    format!("cannot build the token request: {e}"),
                ))
            })?;
        // The report is dropped on purpose: the answer carries the tokens.
        let (result, _report) =
            shared::send(&self.client, request, &self.token_url, self.allow_private).await;
        let resp = result.map_err(|e| Refusal::Other(e.outcome()))?;
        let body: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
        if (200..300).contains(&resp.status) {
            let Some(token) = body["access_token"].as_str().filter(|t| !t.is_empty()) else {
                return Err(Refusal::Other(Outcome::retry(
                    ErrorClass::Auth,
                    "Salesloft's token answer has no access_token",
                )));
            };
            let ttl = body["expires_in"].as_u64().unwrap_or(7200);
            let access = Access {
                token: token.to_string(),
                expires: Instant::now() + Duration::from_secs(ttl),
            };
            let rotated = body["refresh_token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            return Ok((access, rotated));
        }
        let code = body["error"].as_str().unwrap_or("error");
        let description = redact_text(body["error_description"].as_str().unwrap_or_default());
        let detail = format!("HTTP {} {code}: {description}", resp.status);
        Err(match (resp.status, code) {
            (_, "invalid_grant") => Refusal::Grant(detail),
            (408 | 425 | 429 | 500..=599, _) => Refusal::Other(Outcome::Retry {
                class: ErrorClass::Auth,
                message: format!("Salesloft token endpoint: {detail}"),
                retry_after: shared::parse_retry_after(&resp.headers),
            }),
            _ => Refusal::Other(Outcome::CredentialsRejected {
                message: format!("Salesloft token endpoint refused the client: {detail}"),
            }),
        })
    }
}
