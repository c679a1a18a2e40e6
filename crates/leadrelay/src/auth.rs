//! Who may use the admin API and the dashboard: API keys and sessions.
//!
//! A key is 32 random bytes shown once at creation (`lr_…`, base64url);
//! the store keeps only its SHA-256. A high-entropy random secret needs no
//! slow hash: nobody can guess a preimage, and a lookup by hash leaks no
//! timing about the secret. Dashboard sessions work the same way: the
//! cookie holds a random token, the store its hash, with an expiry and the
//! CSRF token of the session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::{ApiKey, NewApiKey, Role, Store, StoreError};

/// Every API key starts with this.
pub const KEY_PREFIX: &str = "lr_";

/// Characters of a key shown in lists to recognise it (`lr_` + 6).
const SHOWN_PREFIX_LEN: usize = 9;

/// How often a key's `last_used_at` is written at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Hex SHA-256 of a secret (API key or session token).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// `bytes` random bytes, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(buf.as_mut_slice());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A new key: the secret to show once, and what the store keeps.
pub fn generate_key(name: &str, role: Role) -> (String, NewApiKey) {
    let secret = format!("{KEY_PREFIX}{}", random_token(32));
    let record = NewApiKey {
        id: leadrelay_model::new_id(),
        name: name.to_string(),
        role,
        prefix: secret[..SHOWN_PREFIX_LEN].to_string(),
        hash: hash_secret(&secret),
        created_at: Utc::now(),
    };
    (secret, record)
}

/// Checks a key name: 1–64 letters, digits, `.`, `_`, `-` or spaces.
pub fn validate_key_name(name: &str) -> Result<(), String> {
    let ok = !name.trim().is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._- @".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key name {name:?}: use 1–64 letters, digits, spaces, '.', '_', '-' or '@'"
        ))
    }
}

/// The caller of a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: Uuid,
    pub key_name: String,
    pub role: Role,
}

impl Principal {
    pub fn from_key(key: &ApiKey) -> Self {
        Self {
            key_id: key.id,
            key_name: key.name.clone(),
            role: key.role,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Admin and viewer keys read the admin API and sign in to the
    /// dashboard; ingest keys only send events.
    pub fn can_read(&self) -> bool {
        self.role != Role::Ingest
    }

    /// May send events to `POST /v1/events` (admin and ingest keys).
    pub fn can_send_events(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Ingest)
    }

    /// Viewers see emails and phone numbers masked.
    pub fn masks_personal_data(&self) -> bool {
        self.role != Role::Admin
    }

    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_name)
    }
}

/// Why a key was refused (each answers 401).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("no API key: send Authorization: Bearer lr_…")]
    Missing,
    #[error("the Authorization header must be: Bearer lr_…")]
    Malformed,
    #[error("unknown API key")]
    Unknown,
    #[error("this API key was revoked")]
    Revoked,
    #[error("{0}")]
    Storage(StoreError),
}

/// Verifies API keys against the store.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    /// When each key's last use was last written.
    touched: Arc<Mutex<HashMap<Uuid, Instant>>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            touched: Arc::default(),
        }
    }

    /// Verifies a key secret and records its use (at most once a minute).
    pub async fn verify(&self, secret: &str) -> Result<(Principal, ApiKey), AuthError> {
        let secret = secret.trim();
        if !secret.starts_with(KEY_PREFIX) || secret.len() > 256 {
            return Err(AuthError::Unknown);
        }
        let key = self
            .store
            .api_key_by_hash(&hash_secret(secret))
            .await
            .map_err(AuthError::Storage)?
            .ok_or(AuthError::Unknown)?;
        if !key.is_active() {
            return Err(AuthError::Revoked);
        }
        self.touch(key.id).await;
        Ok((Principal::from_key(&key), key))
    }

    /// Verifies an `Authorization` header value.
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let value = header.ok_or(AuthError::Missing)?;
        let (scheme, secret) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        self.verify(secret).await.map(|(p, _)| p)
    }

    /// Writes `last_used_at` unless it was written within the last minute.
    pub async fn touch(&self, id: Uuid) {
        let due = {
            let mut map = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            match map.get(&id) {
                Some(t) if now.duration_since(*t) < TOUCH_EVERY => false,
                _ => {
                    map.insert(id, now);
                    true
                }
            }
        };
        if due && let Err(e) = self.store.touch_api_key(id, Utc::now()).await {
            tracing::warn!(error = %e, "cannot record API key use");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_only_hashed() {
        let (a, rec_a) = generate_key("ops", Role::Admin);
        let (b, _) = generate_key("ops", Role::Admin);
        assert_ne!(a, b);
        assert!(a.starts_with("lr_"));
        assert_eq!(a.len(), 3 + 43);
        assert_eq!(rec_a.hash, hash_secret(&a));
        assert!(!rec_a.hash.contains(&a[3..]));
        assert_eq!(rec_a.prefix, &a[..9]);
    }

    #[test]
    fn key_names() {
        assert!(validate_key_name("ops-team 1").is_ok());
        assert!(validate_key_name("").is_err());
        assert!(validate_key_name("   ").is_err());
        assert!(validate_key_name("a\nb").is_err());
        assert!(validate_key_name(&"x".repeat(65)).is_err());
    }
}
