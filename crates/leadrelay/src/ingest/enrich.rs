//! Enrichment at ingest: attribution (UTM parameters, click ids, referrer,
//! landing page, user agent) and the client IP as a keyed hash — the raw IP
//! is never stored or logged.

use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use leadrelay_model::{Attribution, CLICK_ID_FIELDS, UTM_FIELDS};
use sha2::Sha256;

use super::body::{FieldValue, Submission};

/// Longest attribution value kept (longer ones are cut).
const MAX_ATTRIBUTION_LEN: usize = 2048;

/// Hashes client IPs with HMAC-SHA256 under the installation's key.
#[derive(Clone)]
pub struct IpHasher {
    /// The MAC keyed once (its inner and outer pads already hashed); each
    /// IP hashes a clone of it.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for IpHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IpHasher(..)")
    }
}

impl IpHasher {
    pub fn new(key: &[u8]) -> Self {
        Self {
            keyed: <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .expect("HMAC accepts keys of any length"),
        }
    }

    /// Hex HMAC-SHA256 of the IP's canonical text form.
    pub fn hash(&self, ip: IpAddr) -> String {
        // IPv4-mapped IPv6 hashes like the IPv4 address it carries.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let mut mac = self.keyed.clone();
        mac.update(ip.to_string().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Request context that attribution is drawn from.
pub struct RequestContext<'a> {
    /// The query string of the POST URL (`?utm_source=…`).
    pub query: Option<&'a str>,
    pub referer_header: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

fn clean(v: &str) -> Option<String> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    let mut end = v.len().min(MAX_ATTRIBUTION_LEN);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    Some(v[..end].chars().filter(|c| !c.is_control()).collect())
}

fn field_text(s: &Submission, name: &str) -> Option<String> {
    s.get(name)
        .and_then(FieldValue::as_text)
        .and_then(|v| clean(&v))
}

fn query_pairs(url_or_query: &str) -> Vec<(String, String)> {
    let query = match url::Url::parse(url_or_query) {
        Ok(u) => u.query().unwrap_or("").to_string(),
        Err(_) => url_or_query.trim_start_matches('?').to_string(),
    };
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// Attribution from, in order of precedence: the submitted fields, the
/// POST URL's query string, then the landing page URL's query string.
pub fn attribution(s: &Submission, ctx: &RequestContext<'_>) -> Attribution {
    let mut a = Attribution {
        referrer: field_text(s, "referrer")
            .or_else(|| field_text(s, "referer"))
            .or_else(|| ctx.referer_header.and_then(clean)),
        landing_page: field_text(s, "landing_page")
            .or_else(|| field_text(s, "page_url"))
            .or_else(|| ctx.referer_header.and_then(clean)),
        user_agent: ctx
            .user_agent
            .and_then(clean)
            .map(|ua| ua.chars().take(512).collect()),
        ..Default::default()
    };
    let from_query = ctx.query.map(query_pairs).unwrap_or_default();
    let from_landing = a
        .landing_page
        .as_deref()
        .map(query_pairs)
        .unwrap_or_default();
    for name in UTM_FIELDS.iter().chain(CLICK_ID_FIELDS.iter()) {
        let value = field_text(s, name)
            .or_else(|| {
                from_query
                    .iter()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| clean(v))
            })
            .or_else(|| {
                from_landing
                    .iter()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| clean(v))
            });
        if let Some(v) = value {
            a.set_param(name, v);
        }
    }
    a
}

/// Attribution a vendor reported with an event: UTM parameters and click ids
/// at the top of the event's data or in its `tracking` (Calendly), `hidden`
/// (Typeform hidden fields) or `utm` object. The first value found wins.
pub fn vendor_attribution(data: &serde_json::Map<String, serde_json::Value>) -> Attribution {
    let mut a = Attribution::default();
    let nested = ["tracking", "hidden", "utm"]
        .iter()
        .filter_map(|k| data.get(*k).and_then(serde_json::Value::as_object));
    for obj in std::iter::once(data).chain(nested) {
        for name in UTM_FIELDS.iter().chain(CLICK_ID_FIELDS.iter()) {
            if a.param(name).is_some() {
                continue;
            }
            if let Some(v) = obj
                .get(*name)
                .and_then(serde_json::Value::as_str)
                .and_then(clean)
            {
                a.set_param(name, v);
            }
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_hash_is_keyed_and_stable() {
        let h = IpHasher::new(b"k1");
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(h.hash(ip), h.hash(ip));
        assert_ne!(h.hash(ip), IpHasher::new(b"k2").hash(ip));
        assert_eq!(h.hash(ip).len(), 64);
        assert!(!h.hash(ip).contains("203"));
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(h.hash(mapped), h.hash(ip));
    }

    #[test]
    fn ip_hash_is_hmac_sha256_of_the_ip_text() {
        // Python: hmac.new(b"k1", b"203.0.113.9", hashlib.sha256).hexdigest().
        // Hashes already stored must stay comparable, so the keyed MAC
        // reused across calls gives exactly what a fresh one gives.
        let h = IpHasher::new(b"k1");
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let want = "9ec81a2830201c74d61d8bd5968e494ee05c1be099d12a56cc967e3548fc37df";
        assert_eq!(h.hash(ip), want);
        assert_eq!(h.hash(ip), want, "a second call starts from the same key");
    }

    #[test]
    fn attribution_precedence() {
        let s = Submission {
            fields: vec![
                ("utm_source".into(), FieldValue::Text("newsletter".into())),
                (
                    "landing_page".into(),
                    FieldValue::Text(
                        "https://x.io/p?utm_campaign=spring&gclid=G1&utm_source=ignored".into(),
                    ),
                ),
            ],
        };
        let ctx = RequestContext {
            query: Some("utm_medium=email&utm_source=also-ignored"),
            referer_header: Some("https://google.com/"),
            user_agent: Some("UA/1"),
        };
        let a = attribution(&s, &ctx);
        assert_eq!(a.utm_source.as_deref(), Some("newsletter"));
        assert_eq!(a.utm_medium.as_deref(), Some("email"));
        assert_eq!(a.utm_campaign.as_deref(), Some("spring"));
        assert_eq!(a.gclid.as_deref(), Some("G1"));
        assert_eq!(a.referrer.as_deref(), Some("https://google.com/"));
        assert_eq!(a.user_agent.as_deref(), Some("UA/1"));
    }

    #[test]
    fn vendor_attribution_reads_tracking_and_hidden_fields() {
        let data = serde_json::json!({
            "utm_campaign": "top",
            "tracking": {"utm_source": "linkedin", "utm_campaign": "nested", "salesforce_uuid": null},
            "hidden": {"gclid": " G2 ", "utm_medium": 5},
        });
        let a = vendor_attribution(data.as_object().unwrap());
        assert_eq!(a.utm_campaign.as_deref(), Some("top"));
        assert_eq!(a.utm_source.as_deref(), Some("linkedin"));
        assert_eq!(a.gclid.as_deref(), Some("G2"));
        assert_eq!(a.utm_medium, None);
    }
}
