//! Standard Webhooks signatures (https://www.standardwebhooks.com/):
//! `v1,` + base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")), where
//! the key is the base64 part of a `whsec_` secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Signs with one or more secrets (the new one first during rotation).
#[derive(Clone)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} key(s))", self.keys.len())
    }
}

impl Signer {
    pub fn new(secrets: &[String]) -> Result<Self, String> {
        let keys = secrets
            .iter()
            .map(|s| {
                let b64 = s
                    .trim()
                    .strip_prefix("whsec_")
                    .ok_or("signing secrets start with whsec_")?;
                let key = STANDARD
                    .decode(b64)
                    .map_err(|_| "the part after whsec_ must be base64")?;
                if key.len() < 16 {
                    return Err("signing secrets must hold at least 16 bytes");
                }
                Ok(key)
            })
            .collect::<Result<Vec<_>, &str>>()
            .map_err(String::from)?;
        Ok(Self { keys })
    }

    /// The `webhook-signature` header value: one `v1,<sig>` per key.
    pub fn header(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        self.keys
            .iter()
            .map(|k| format!("v1,{}", sign(k, msg_id, timestamp, body)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")).
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_spec_example() {
        // The example from the Standard Webhooks specification.
        let signer = Signer::new(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()]).unwrap();
        let header = signer.header(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_signs_with_every_key() {
        let signer = Signer::new(&[
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
            "whsec_dGVzdC1rZXktbnVtYmVyLXR3bw==".to_string(),
        ])
        .unwrap();
        assert_eq!(signer.header("m", 1, b"{}").matches("v1,").count(), 2);
    }

    #[test]
    fn rejects_bad_secrets() {
        assert!(Signer::new(&["nope".into()]).is_err());
        assert!(Signer::new(&["whsec_!!!".into()]).is_err());
        assert!(Signer::new(&["whsec_YWJj".into()]).is_err(), "too short");
    }
}
