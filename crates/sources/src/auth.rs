//! The checks every vendor's authentication is built from: HMAC signatures,
//! shared tokens, HTTP Basic credentials and replay windows. Every comparison
//! of a secret-derived value is constant-time (`subtle`); tokens are compared
//! through their SHA-256 digests so their length does not leak either.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Env, Secret, secret_from_env};
use crate::{HookError, InboundRequest, SourceConfigError};

/// The header a shared token may be sent in (the alternative is `?token=`).
pub(crate) const TOKEN_HEADER: &str = "x-leadrelay-token";

/// Constant-time equality of two byte strings of possibly different length.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    bool::from(da.as_slice().ct_eq(db.as_slice()))
}

fn mac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
    let mut m = <M as KeyInit>::new_from_slice(key).ok()?;
    for part in parts {
        m.update(part);
    }
    Some(m.finalize().into_bytes().to_vec())
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
    mac::<Hmac<Sha256>>(key, parts)
}

/// HMAC-SHA1 over the concatenation of `parts` (Salesloft).
pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
    mac::<Hmac<Sha1>>(key, parts)
}

/// How a vendor writes a MAC into a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    fn decode(self, s: &str) -> Option<Vec<u8>> {
        let s = s.trim();
        match self {
            Encoding::Hex => hex::decode(s).ok(),
            Encoding::Base64 => STANDARD.decode(s).ok(),
        }
    }
}

/// Whether `provided` (as the vendor encoded it) equals the `expected` MAC.
pub(crate) fn mac_matches(expected: Option<Vec<u8>>, provided: &str, encoding: Encoding) -> bool {
    match (expected, encoding.decode(provided)) {
        (Some(expected), Some(provided)) => {
            bool::from(expected.as_slice().ct_eq(provided.as_slice()))
        }
        _ => false,
    }
}

/// A required header, or 401 naming it.
pub(crate) fn required_header<'r>(
    req: &InboundRequest<'r>,
    name: &str,
) -> Result<&'r str, HookError> {
    req.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| HookError::Unauthorized(format!("missing {name} header")))
}

/// Rejects timestamps further than `tolerance` from `now`, in either direction.
pub(crate) fn check_window(
    signed_at: DateTime<Utc>,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), HookError> {
    let skew = (now - signed_at).abs();
    match chrono::Duration::from_std(tolerance) {
        Ok(tol) if skew <= tol => Ok(()),
        _ => Err(HookError::Stale(format!(
            "signed at {} which is {}s away from now; the window is {}s",
            signed_at.to_rfc3339(),
            skew.num_seconds(),
            tolerance.as_secs()
        ))),
    }
}

/// Parses a Unix timestamp in seconds or milliseconds (values past year 5138
/// in seconds are read as milliseconds).
pub(crate) fn unix_timestamp(s: &str, header: &str) -> Result<DateTime<Utc>, HookError> {
    let n: i64 = s
        .trim()
        .parse()
        .map_err(|_| HookError::Unauthorized(format!("{header} is not a Unix timestamp")))?;
    let parsed = if n.abs() >= 100_000_000_000 {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    };
    parsed.ok_or_else(|| HookError::Unauthorized(format!("{header} is out of range")))
}

/// A per-source shared secret for vendors that do not sign their requests:
/// sent as the `X-Leadrelay-Token` header or as the `token` query parameter of
/// the URL configured on the vendor's side.
#[derive(Debug, Clone)]
pub(crate) struct SharedToken(Secret);

impl SharedToken {
    pub(crate) fn from_env(
        env: Env,
        key: &str,
        var: &str,
        errors: &mut Vec<SourceConfigError>,
    ) -> Option<Self> {
        secret_from_env(env, key, var, errors).map(SharedToken)
    }

    #[cfg(test)]
    pub(crate) fn new(token: &str) -> Self {
        SharedToken(Secret::new(token))
    }

    pub(crate) fn check(&self, req: &InboundRequest<'_>) -> Result<(), HookError> {
        let provided = req
            .header(TOKEN_HEADER)
            .map(str::to_string)
            .or_else(|| req.query_param("token"));
        match provided {
            None => Err(HookError::Unauthorized(format!(
                "missing token: send it in the {TOKEN_HEADER} header or the token query parameter"
            ))),
            Some(p) if ct_eq(p.trim().as_bytes(), self.0.as_bytes()) => Ok(()),
            Some(_) => Err(HookError::Unauthorized("wrong token".into())),
        }
    }
}

/// An HMAC-SHA256 of the raw body in a header, optionally after a prefix
/// such as `sha256=` (Smartlead, generic sources).
#[derive(Debug, Clone)]
pub(crate) struct HeaderHmac {
    /// Lower-case header name.
    pub(crate) header: String,
    pub(crate) prefix: String,
    pub(crate) secret: Secret,
    /// The encodings the sender may use; the first that matches wins.
    pub(crate) encodings: Vec<Encoding>,
}

impl HeaderHmac {
    pub(crate) fn check(&self, req: &InboundRequest<'_>) -> Result<(), HookError> {
        let header = required_header(req, &self.header)?;
        let provided = header
            .trim()
            .strip_prefix(self.prefix.as_str())
            .ok_or_else(|| {
                HookError::Unauthorized(format!(
                    "{} does not start with {:?}",
                    self.header, self.prefix
                ))
            })?;
        let expected = hmac_sha256(self.secret.as_bytes(), &[req.body]);
        if self
            .encodings
            .iter()
            .any(|enc| mac_matches(expected.clone(), provided, *enc))
        {
            Ok(())
        } else {
            Err(HookError::Unauthorized(format!(
                "{} does not match",
                self.header
            )))
        }
    }
}

/// HTTP Basic credentials the vendor was configured to send.
#[derive(Debug, Clone)]
pub(crate) struct BasicAuth {
    pub(crate) user: String,
    pub(crate) password: Secret,
}

impl BasicAuth {
    pub(crate) fn check(&self, req: &InboundRequest<'_>) -> Result<(), HookError> {
        let header = required_header(req, "authorization")?;
        let encoded = header
            .trim()
            .strip_prefix("Basic ")
            .or_else(|| header.trim().strip_prefix("basic "))
            .ok_or_else(|| HookError::Unauthorized("authorization is not HTTP Basic".into()))?;
        let decoded = STANDARD
            .decode(encoded.trim())
            .map_err(|_| HookError::Unauthorized("Basic credentials are not base64".into()))?;
        let (user, password) = match decoded.iter().position(|b| *b == b':') {
            Some(i) => (&decoded[..i], &decoded[i + 1..]),
            None => {
                return Err(HookError::Unauthorized(
                    "Basic credentials have no ':'".into(),
                ));
            }
        };
        // Both halves are always compared, so timing does not tell which one was wrong.
        let ok = ct_eq(user, self.user.as_bytes()) & ct_eq(password, self.password.as_bytes());
        if ok {
            Ok(())
        } else {
            Err(HookError::Unauthorized("wrong Basic credentials".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestRequest;

    #[test]
    fn ct_eq_compares_content() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }

    #[test]
    fn mac_matching_decodes_the_vendor_encoding() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let hex = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert!(mac_matches(mac.clone(), hex, Encoding::Hex));
        assert!(mac_matches(mac.clone(), &hex.to_uppercase(), Encoding::Hex));
        assert!(!mac_matches(mac.clone(), "00", Encoding::Hex));
        assert!(!mac_matches(mac, "not hex", Encoding::Hex));
    }

    #[test]
    fn window_is_symmetric() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let five = Duration::from_secs(300);
        assert!(check_window(now - chrono::Duration::seconds(299), now, five).is_ok());
        assert!(check_window(now + chrono::Duration::seconds(299), now, five).is_ok());
        assert!(matches!(
            check_window(now - chrono::Duration::seconds(301), now, five),
            Err(HookError::Stale(_))
        ));
        assert!(matches!(
            check_window(now + chrono::Duration::seconds(301), now, five),
            Err(HookError::Stale(_))
        ));
    }

    #[test]
    fn unix_timestamps_in_seconds_or_millis() {
        assert_eq!(
            unix_timestamp("1700000000", "t").unwrap().timestamp(),
            1_700_000_000
        );
        assert_eq!(
            unix_timestamp("1700000000123", "t")
                .unwrap()
                .timestamp_millis(),
            1_700_000_000_123
        );
        assert!(unix_timestamp("yesterday", "t").is_err());
    }

    #[test]
    fn shared_token_from_header_or_query() {
        let token = SharedToken::new("tok-123");
        let ok_header =
            TestRequest::post("https://x.test/v1/hooks/s", "{}").header(TOKEN_HEADER, "tok-123");
        assert!(token.check(&ok_header.req()).is_ok());
        let ok_query = TestRequest::post("https://x.test/v1/hooks/s?token=tok-123", "{}");
        assert!(token.check(&ok_query.req()).is_ok());
        let wrong = TestRequest::post("https://x.test/v1/hooks/s?token=tok-124", "{}");
        assert_eq!(
            token.check(&wrong.req()).unwrap_err(),
            HookError::Unauthorized("wrong token".into())
        );
        let missing = TestRequest::post("https://x.test/v1/hooks/s", "{}");
        assert_eq!(token.check(&missing.req()).unwrap_err().status(), 401);
    }

    #[test]
    fn basic_auth() {
        let auth = BasicAuth {
            user: "pd".into(),
            password: Secret::new("pw"),
        };
        let good = format!("Basic {}", STANDARD.encode("pd:pw"));
        let r = TestRequest::post("https://x.test/h", "{}").header("authorization", &good);
        assert!(auth.check(&r.req()).is_ok());
        for bad in [
            format!("Basic {}", STANDARD.encode("pd:px")),
            "Bearer x".to_string(),
            "Basic !!".to_string(),
        ] {
            let r = TestRequest::post("https://x.test/h", "{}").header("authorization", &bad);
            assert_eq!(auth.check(&r.req()).unwrap_err().status(), 401, "{bad}");
        }
    }
}
