//! The OAuth 2.0 token endpoint for service accounts: `POST /token` with
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<RS256 JWT>`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{GoogleState, IssuedToken};

pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The longest lifetime an assertion may claim (`exp - iat`).
const MAX_ASSERTION_LIFETIME: i64 = 3600;
/// How far in the future `iat` may be (clock skew).
const MAX_CLOCK_SKEW: i64 = 300;

pub const MSG_BAD_SIGNATURE: &str = "Invalid JWT Signature.";
pub const MSG_UNKNOWN_ACCOUNT: &str = "Invalid grant: account not found";
pub const MSG_BAD_TIMEFRAME: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";
pub const MSG_BAD_AUDIENCE: &str = "Invalid JWT: Failed audience check.";
pub const MSG_BAD_SCOPE: &str = "Invalid OAuth scope or ID token audience provided.";
pub const MSG_UNAUTHORIZED_CLIENT: &str = "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.";

#[derive(Debug, Deserialize)]
struct Claims {
    iss: Option<String>,
    scope: Option<String>,
    aud: Option<Value>,
    iat: Option<Value>,
    exp: Option<Value>,
    sub: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    let mut resp = (
        status,
        Json(json!({"error": error, "error_description": description.into()})),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn as_secs(v: &Option<Value>) -> Option<i64> {
    match v {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    }
}

/// A scope Google would recognise: a googleapis.com auth URL or an OpenID scope.
fn known_scope(scope: &str) -> bool {
    scope.starts_with("https://www.googleapis.com/auth/")
        || matches!(scope, "openid" | "email" | "profile")
}

pub async fn token(State(state): State<GoogleState>, headers: HeaderMap, body: Bytes) -> Response {
    let params: Vec<(String, String)> = std::str::from_utf8(&body)
        .ok()
        .and_then(|t| serde_urlencoded::from_str(t).ok())
        .unwrap_or_default();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let grant_type = get("grant_type").unwrap_or_default();
    if grant_type != JWT_BEARER_GRANT {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("Invalid grant_type: {grant_type}"),
        );
    }
    let Some(assertion) = get("assertion").filter(|a| !a.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };

    let Ok(header) = jsonwebtoken::decode_header(&assertion) else {
        return invalid_grant(MSG_BAD_SIGNATURE);
    };
    if header.alg != Algorithm::RS256 {
        return invalid_grant(MSG_BAD_SIGNATURE);
    }
    let Ok(unverified) = jsonwebtoken::dangerous::insecure_decode::<Claims>(&assertion) else {
        return invalid_grant(MSG_BAD_SIGNATURE);
    };
    let Some(iss) = unverified.claims.iss.clone() else {
        return invalid_grant(MSG_UNKNOWN_ACCOUNT);
    };
    let Some(account) = state
        .inner
        .config
        .service_accounts
        .iter()
        .find(|a| a.client_email == iss)
    else {
        return invalid_grant(MSG_UNKNOWN_ACCOUNT);
    };
    let Ok(key) = DecodingKey::from_rsa_pem(account.public_key_pem.as_bytes()) else {
        tracing::error!(account = %iss, "fake google: the configured public key is not an RSA PEM");
        return invalid_grant(MSG_BAD_SIGNATURE);
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<Claims>(&assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => {
            return match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidToken => invalid_grant(MSG_BAD_SIGNATURE),
                _ => invalid_grant(MSG_BAD_TIMEFRAME),
            };
        }
    };

    let now = now_secs();
    let (Some(iat), Some(exp)) = (as_secs(&claims.iat), as_secs(&claims.exp)) else {
        return invalid_grant(MSG_BAD_TIMEFRAME);
    };
    if exp <= iat || exp - iat > MAX_ASSERTION_LIFETIME || exp <= now || iat > now + MAX_CLOCK_SKEW
    {
        return invalid_grant(MSG_BAD_TIMEFRAME);
    }

    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let own = format!("http://{host}/token");
    let aud_ok = match &claims.aud {
        Some(Value::String(aud)) => {
            *aud == own || state.inner.config.token_audiences.iter().any(|a| a == aud)
        }
        _ => false,
    };
    if !aud_ok {
        return invalid_grant(MSG_BAD_AUDIENCE);
    }

    let scopes: Vec<String> = claims
        .scope
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if scopes.is_empty() || !scopes.iter().all(|s| known_scope(s)) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", MSG_BAD_SCOPE);
    }
    if claims
        .sub
        .as_deref()
        .is_some_and(|s| !s.is_empty() && s != iss)
    {
        // Domain-wide delegation is not configured for any fake account.
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            MSG_UNAUTHORIZED_CLIENT,
        );
    }

    let lifetime = state.inner.config.token_lifetime;
    let access_token = format!("ya29.c.fake-{}", uuid::Uuid::now_v7().simple());
    state.tokens().insert(
        access_token.clone(),
        IssuedToken {
            email: iss,
            scopes,
            expires_at: Instant::now() + lifetime,
        },
    );
    let expires_in = lifetime.saturating_sub(Duration::from_secs(1)).as_secs();
    let mut resp = Json(json!({
        "access_token": access_token,
        "expires_in": expires_in,
        "token_type": "Bearer",
    }))
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
