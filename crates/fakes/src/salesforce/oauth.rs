//! `POST /services/oauth2/token`: the refresh token flow and the JWT bearer
//! flow, issuing sessions that the REST API accepts until they expire.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::errors::oauth;
use super::{SalesforceConnectedApp, SalesforceState, Session, random_token};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Creates a session for `user_id`; returns the access token.
pub(crate) fn new_session(state: &SalesforceState, user_id: &str) -> String {
    let org15: String = state.inner.config.org_id.chars().take(15).collect();
    let token = format!("{org15}!AQ{}", random_token(96));
    let expires_at = Instant::now() + state.inner.config.session_lifetime;
    state
        .inner
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            token.clone(),
            Session {
                user_id: user_id.to_string(),
                expires_at,
            },
        );
    token
}

/// `http://host:port` of the request, the fake's own URL.
pub(crate) fn own_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// HMAC-SHA256 of `id + issued_at` keyed by the client secret, base64, as
/// Salesforce signs token responses.
fn signature(app: &SalesforceConnectedApp, id: &str, issued_at: &str) -> String {
    crate::common::hmac_sha256_base64(&app.client_secret, &format!("{id}{issued_at}"))
}

fn success(
    state: &SalesforceState,
    headers: &HeaderMap,
    app: &SalesforceConnectedApp,
    user_id: &str,
    scope: &str,
) -> Response {
    let token = new_session(state, user_id);
    let issued_at = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default())
    .to_string();
    let id = format!(
        "{}/id/{}/{}",
        state.inner.config.login_url, state.inner.config.org_id, user_id
    );
    Json(json!({
        "access_token": token,
        "signature": signature(app, &id, &issued_at),
        "scope": scope,
        "instance_url": own_url(headers),
        "id": id,
        "token_type": "Bearer",
        "issued_at": issued_at,
    }))
    .into_response()
}

/// `POST /services/oauth2/token`
pub(crate) async fn token(
    State(state): State<SalesforceState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match get("grant_type") {
        Some("refresh_token") => refresh(
            &state,
            &headers,
            get("client_id"),
            get("client_secret"),
            get("refresh_token"),
        ),
        Some(JWT_BEARER) => jwt_bearer(&state, &headers, get("assertion")),
        _ => oauth("unsupported_grant_type", "grant type not supported"),
    }
}

fn refresh(
    state: &SalesforceState,
    headers: &HeaderMap,
    client_id: Option<&str>,
    client_secret: Option<&str>,
    refresh_token: Option<&str>,
) -> Response {
    let config = &state.inner.config;
    let Some(app) =
        client_id.and_then(|id| config.connected_apps.iter().find(|a| a.client_id == id))
    else {
        return oauth("invalid_client_id", "client identifier invalid");
    };
    match client_secret {
        Some(secret) if secret != app.client_secret => {
            return oauth("invalid_client", "invalid client credentials");
        }
        None if app.require_secret_for_refresh => {
            return oauth("invalid_client", "invalid client credentials");
        }
        _ => {}
    }
    let Some(grant) = refresh_token.and_then(|t| {
        config
            .refresh_tokens
            .iter()
            .find(|r| r.token == t && r.client_id == app.client_id)
    }) else {
        return oauth("invalid_grant", "expired access/refresh token");
    };
    let Some(user) = config.users.iter().find(|u| u.username == grant.username) else {
        return oauth("invalid_grant", "expired access/refresh token");
    };
    success(state, headers, app, &user.id, "api refresh_token")
}

fn jwt_bearer(state: &SalesforceState, headers: &HeaderMap, assertion: Option<&str>) -> Response {
    let config = &state.inner.config;
    let Some(assertion) = assertion.filter(|a| !a.is_empty()) else {
        return oauth("invalid_grant", "invalid assertion");
    };
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return oauth("invalid_grant", "invalid assertion");
    };
    if header.alg != Algorithm::RS256 {
        return oauth("invalid_grant", "invalid assertion");
    }
    let Ok(unverified) = jsonwebtoken::dangerous::insecure_decode::<Value>(assertion) else {
        return oauth("invalid_grant", "invalid assertion");
    };
    let claims = unverified.claims;
    let Some(app) = claims["iss"]
        .as_str()
        .and_then(|iss| config.connected_apps.iter().find(|a| a.client_id == iss))
    else {
        return oauth("invalid_client_id", "client identifier invalid");
    };
    let Some(key) = app
        .jwt_public_key_pem
        .as_deref()
        .and_then(|pem| DecodingKey::from_rsa_pem(pem.as_bytes()).ok())
    else {
        return oauth("invalid_grant", "invalid assertion");
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    if jsonwebtoken::decode::<Value>(assertion, &key, &validation).is_err() {
        return oauth("invalid_grant", "invalid assertion");
    }
    let own = own_url(headers);
    let audiences: Vec<&str> = match &claims["aud"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let accepted = |aud: &str| {
        let aud = aud.trim_end_matches('/');
        aud == config.login_url.trim_end_matches('/')
            || aud == own
            || config
                .extra_audiences
                .iter()
                .any(|a| a.trim_end_matches('/') == aud)
    };
    if !audiences.iter().any(|a| accepted(a)) {
        return oauth("invalid_grant", "audience is invalid");
    }
    let Some(exp) = claims["exp"]
        .as_u64()
        .or_else(|| claims["exp"].as_f64().map(|f| f as u64))
    else {
        return oauth("invalid_grant", "invalid assertion");
    };
    let now = now_secs();
    if exp <= now {
        return oauth("invalid_grant", "expired authorization code");
    }
    if config
        .jwt_max_exp_ahead
        .is_some_and(|max| exp > now + max.as_secs())
    {
        return oauth("invalid_grant", "invalid assertion");
    }
    let Some(user) = claims["sub"]
        .as_str()
        .and_then(|sub| config.users.iter().find(|u| u.username == sub))
    else {
        return oauth("invalid_grant", "user hasn't approved this consumer");
    };
    success(state, headers, app, &user.id, "api")
}
