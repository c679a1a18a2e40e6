//! HubSpot's HTTP API: one authenticated call, and the classification of
//! HubSpot's answers into outcomes (what to retry is decided here, how to
//! retry by the shared scheduler).
//!
//! - 429 bodies name their policy: `DAILY` pauses the destination until the
//!   portal's midnight (the daily limit's reset) instead of burning retries;
//!   `TEN_SECONDLY_ROLLING` and `SECONDLY` pause it briefly.
//! - 400 `VALIDATION_ERROR` lists the failing properties (`Property values
//!   were not valid: [...]`); they are parsed so a batch can tell which
//!   inputs were bad, and the dead letter names the property.
//! - 401 is a rejected token; 5xx, 408 and 425 are retried.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};
use reqwest::Method;
use serde_json::Value;

use crate::connectors::http::{self as shared, HttpResponse};
use crate::connectors::{AttemptReport, ErrorClass, Outcome};
use crate::redact::redact_text;

/// One property HubSpot refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyError {
    pub name: String,
    /// `PROPERTY_DOESNT_EXIST`, `INVALID_OPTION`, `READ_ONLY_VALUE`, …
    pub error: String,
    pub message: String,
}

impl PropertyError {
    /// Errors about the property itself (every record that writes it fails),
    /// as opposed to one record's value.
    pub fn is_about_property(&self) -> bool {
        matches!(
            self.error.as_str(),
            "PROPERTY_DOESNT_EXIST" | "READ_ONLY_VALUE" | "INVALID_PROPERTY"
        )
    }
}

/// A call that did not succeed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub category: Option<String>,
    pub properties: Vec<PropertyError>,
}

impl Failure {
    fn new(outcome: Outcome, status: Option<u16>) -> Self {
        Self {
            outcome,
            status,
            category: None,
            properties: Vec::new(),
        }
    }
}

pub type CallResult = (Result<Value, Failure>, AttemptReport);

/// Which of HubSpot's API path schemes the connector speaks.
///
/// HubSpot files the numbered APIs (`/crm/v3/objects/…`, `/crm/v4/associations/…`)
/// under "legacy" and publishes date-versioned ones beside them, with the
/// version after the API's name: `/crm/objects/2026-03/contacts`,
/// `/crm/associations/2026-03/{from}/{to}/batch/…`,
/// `/crm/properties/2026-03/{objectType}`, `/crm/pipelines/2026-03/deals`,
/// `/account-info/2026-03/details`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiVersion {
    /// The numbered (legacy) APIs: v3, and v4 for associations.
    V3,
    /// A dated version, `YYYY-MM` (HubSpot releases in March and September;
    /// a `-beta` suffix names a pre-release).
    Dated(String),
}

/// The API families the connector calls; each has its own path prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// CRM records (`objects`), including per-record association paths.
    Objects,
    /// Batch associations (v4 in the numbered scheme).
    Associations,
    /// One record's associations (`/crm/v4/objects/…` in the numbered
    /// scheme, beside the records in a dated one).
    RecordAssociations,
    Properties,
    Pipelines,
    AccountInfo,
    /// Lists and their memberships (`/crm/v3/lists`, `/crm/lists/{date}`).
    Lists,
    /// Form definitions (`/marketing/v3/forms`, `/marketing/forms/{date}`).
    Forms,
    /// Marketing events and their participations
    /// (`/marketing/v3/marketing-events`, `/marketing/marketing-events/{date}`).
    MarketingEvents,
}

impl ApiVersion {
    /// `"v3"` or `YYYY-MM` (optionally `-beta`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("v3") {
            return Ok(Self::V3);
        }
        let date = s.strip_suffix("-beta").unwrap_or(s);
        let ok = date.len() == 7
            && date.as_bytes()[4] == b'-'
            && date[..4].chars().all(|c| c.is_ascii_digit())
            && date[5..].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m))
            && date[..4].parse::<u16>().is_ok_and(|y| y >= 2025);
        if ok {
            Ok(Self::Dated(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a HubSpot API version: \"v3\" or a dated version like \"2026-03\""
            ))
        }
    }

    /// `"v3"` or the date.
    pub fn as_str(&self) -> &str {
        match self {
            Self::V3 => "v3",
            Self::Dated(d) => d,
        }
    }

    /// The path of `rest` (which starts with `/`) in `family`.
    pub fn path(&self, family: Family, rest: &str) -> String {
        let prefix = match (self, family) {
            (Self::V3, Family::Objects) => "/crm/v3/objects".to_string(),
            (Self::V3, Family::Associations) => "/crm/v4/associations".to_string(),
            (Self::V3, Family::RecordAssociations) => "/crm/v4/objects".to_string(),
            (Self::V3, Family::Properties) => "/crm/v3/properties".to_string(),
            (Self::V3, Family::Pipelines) => "/crm/v3/pipelines".to_string(),
            (Self::V3, Family::AccountInfo) => "/account-info/v3".to_string(),
            (Self::V3, Family::Lists) => "/crm/v3/lists".to_string(),
            (Self::Dated(d), Family::Objects) => format!("/crm/objects/{d}"),
            (Self::Dated(d), Family::Associations) => format!("/crm/associations/{d}"),
            (Self::Dated(d), Family::RecordAssociations) => format!("/crm/objects/{d}"),
            (Self::Dated(d), Family::Properties) => format!("/crm/properties/{d}"),
            (Self::Dated(d), Family::Pipelines) => format!("/crm/pipelines/{d}"),
            (Self::Dated(d), Family::AccountInfo) => format!("/account-info/{d}"),
            (Self::Dated(d), Family::Lists) => format!("/crm/lists/{d}"),
            (Self::V3, Family::Forms) => "/marketing/v3/forms".to_string(),
            (Self::Dated(d), Family::Forms) => format!("/marketing/forms/{d}"),
            (Self::V3, Family::MarketingEvents) => "/marketing/v3/marketing-events".to_string(),
            (Self::Dated(d), Family::MarketingEvents) => {
                format!("/marketing/marketing-events/{d}")
            }
        };
        format!("{prefix}{rest}")
    }
}

/// An authenticated HubSpot client.
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
    version: ApiVersion,
    allow_private: bool,
    /// The portal's UTC offset (its daily limit resets at its midnight).
    utc_offset_ms: Mutex<Option<i64>>,
}

impl Api {
    pub fn new(
        client: reqwest::Client,
        base: String,
        token: String,
        version: ApiVersion,
        allow_private: bool,
    ) -> Self {
        Self {
            client,
            base,
            token,
            version,
            allow_private,
            utc_offset_ms: Mutex::new(None),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn version(&self) -> &ApiVersion {
        &self.version
    }

    /// The path of `rest` in `family`, in the configured API version.
    pub fn path(&self, family: Family, rest: &str) -> String {
        self.version.path(family, rest)
    }

    /// Sends one request; `path` starts with `/` and may carry a query.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> CallResult {
        let url = format!("{}{path}", self.base);
        let display = match url.split_once('?') {
            Some((p, _)) => p.to_string(),
            None => url.clone(),
        };
        let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.token))
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("Bearer invalid"));
        auth.set_sensitive(true);
        let mut req = self
            .client
            .request(method, &url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let request = match req.build() {
            Ok(r) => r,
            Err(e) => {
                let f = Failure::new(
                    Outcome::permanent(
                        ErrorClass::Mapping,
                        format!("cannot build the request: {e}"),
                    ),
                    None,
                );
                return (Err(f), AttemptReport::default());
            }
        };
        let (result, report) =
            shared::send(&self.client, request, &display, self.allow_private).await;
        let out = match result {
            Ok(resp) => self.classify(&resp),
            Err(e) => Err(Failure::new(e.outcome(), None)),
        };
        (out, report)
    }

    /// Remembers the portal's UTC offset from the account details.
    pub fn set_utc_offset(&self, details: &Value) {
        if let Some(ms) = details.get("utcOffsetMilliseconds").and_then(Value::as_i64) {
            *self.utc_offset_ms.lock().unwrap_or_else(|p| p.into_inner()) = Some(ms);
        }
    }

    /// Time until the portal's next midnight (UTC when unknown).
    pub fn until_daily_reset(&self) -> Duration {
        let offset = self
            .utc_offset_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(0);
        let now_local = Utc::now() + ChronoDuration::milliseconds(offset);
        let next = (now_local.date_naive() + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .map(|m| m.and_utc());
        let wait = next
            .map(|m| m - now_local)
            .unwrap_or_else(|| ChronoDuration::hours(1));
        // A minute of slack: the reset is not to the millisecond.
        (wait + ChronoDuration::seconds(60))
            .to_std()
            .unwrap_or(Duration::from_secs(3600))
    }

    fn classify(&self, resp: &HttpResponse) -> Result<Value, Failure> {
        let status = resp.status;
        let body: Value = if resp.body.trim().is_empty() {
            Value::Null
        } else {
            match serde_json::from_str(&resp.body) {
                Ok(v) => v,
                Err(_) if (200..300).contains(&status) => {
                    return Err(Failure::new(
                        Outcome::retry(
                            ErrorClass::Vendor,
                            format!("HubSpot answered {status} with a body that is not JSON"),
                        ),
                        Some(status),
                    ));
                }
                Err(_) => Value::Null,
            }
        };
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let raw_message = body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| crate::redact::excerpt(&resp.body, 300));
        let message = redact_text(&raw_message);
        let category = body
            .get("category")
            .or_else(|| body.get("errorType"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut failure = match status {
            429 => {
                let policy = body
                    .get("policyName")
                    .and_then(Value::as_str)
                    .unwrap_or("TEN_SECONDLY_ROLLING")
                    .to_string();
                let retry_after = match policy.as_str() {
                    "DAILY" => self.until_daily_reset(),
                    "SECONDLY" => Duration::from_secs(1),
                    _ => shared::parse_retry_after(&resp.headers).unwrap_or(Duration::from_secs(1)),
                };
                let text = format!("HubSpot rate limit {policy}: {message}");
                // Every other request of the destination waits too.
                crate::connectors::pace::hold(retry_after, &text);
                Failure::new(
                    Outcome::Throttled {
                        message: text,
                        retry_after: Some(retry_after),
                    },
                    Some(status),
                )
            }
            401 => Failure::new(
                Outcome::CredentialsRejected {
                    message: format!("HubSpot rejected the private app token: {message}"),
                },
                Some(status),
            ),
            408 | 425 | 500..=599 => Failure::new(
                Outcome::Retry {
                    class: if status >= 500 {
                        ErrorClass::Http5xx
                    } else {
                        ErrorClass::Http4xx
                    },
                    message: format!("HubSpot HTTP {status}: {message}"),
                    retry_after: shared::parse_retry_after(&resp.headers),
                },
                Some(status),
            ),
            _ => {
                let properties = property_errors(&raw_message);
                let text = if properties.is_empty() {
                    format!(
                        "HubSpot HTTP {status} {}: {message}",
                        category.as_deref().unwrap_or("error")
                    )
                } else {
                    describe(&properties)
                };
                match shared::classify(resp) {
                    Outcome::Gone { .. } => {
                        Failure::new(Outcome::Gone { message: text }, Some(status))
                    }
                    _ => {
                        let mut f = Failure::new(
                            Outcome::permanent(ErrorClass::Http4xx, text),
                            Some(status),
                        );
                        f.properties = properties;
                        f
                    }
                }
            }
        };
        failure.category = category;
        Err(failure)
    }
}

/// Parses `Property values were not valid: [{"isValid":false,...}]`.
pub fn property_errors(message: &str) -> Vec<PropertyError> {
    let Some(start) = message.find('[') else {
        return Vec::new();
    };
    if !message[..start].contains("Property values were not valid") {
        return Vec::new();
    }
    let list: Vec<Value> = serde_json::from_str(&message[start..]).unwrap_or_default();
    list.iter()
        .filter_map(|e| {
            Some(PropertyError {
                name: e.get("name")?.as_str()?.to_string(),
                error: e
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("INVALID")
                    .to_string(),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            })
        })
        .collect()
}

/// "HubSpot rejected property "x": Property "x" does not exist (PROPERTY_DOESNT_EXIST)",
/// with personal data in HubSpot's messages redacted.
pub fn describe(errors: &[PropertyError]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            format!(
                "HubSpot rejected property \"{}\": {} ({})",
                e.name,
                redact_text(&e.message),
                e.error
            )
        })
        .collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_property_errors() {
        let msg = r#"Property values were not valid: [{"isValid":false,"message":"Property \"nope\" does not exist","error":"PROPERTY_DOESNT_EXIST","name":"nope"},{"isValid":false,"message":"x was not one of the allowed options: [a, b]","error":"INVALID_OPTION","name":"lead_tier"}]"#;
        let errs = property_errors(msg);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].name, "nope");
        assert!(errs[0].is_about_property());
        assert!(!errs[1].is_about_property());
        assert_eq!(
            describe(&errs[..1]),
            "HubSpot rejected property \"nope\": Property \"nope\" does not exist (PROPERTY_DOESNT_EXIST)"
        );
        assert!(property_errors("Something else [1]").is_empty());
        assert!(property_errors("Property values were not valid: [garbage").is_empty());
    }

    #[test]
    fn api_versions_parse_and_build_each_family_path() {
        let v3 = ApiVersion::parse("v3").unwrap();
        let dated = ApiVersion::parse("2026-03").unwrap();
        assert_eq!(
            ApiVersion::parse("2026-09-beta").unwrap().as_str(),
            "2026-09-beta"
        );
        for bad in ["v4", "2026-3", "2026-13", "26-03", "2026/03", "", "1999-03"] {
            assert!(ApiVersion::parse(bad).is_err(), "{bad}");
        }
        let cases = [
            (
                Family::Objects,
                "/contacts/batch/upsert",
                "/crm/v3/objects/contacts/batch/upsert",
                "/crm/objects/2026-03/contacts/batch/upsert",
            ),
            (
                Family::Associations,
                "/contacts/companies/batch/associate/default",
                "/crm/v4/associations/contacts/companies/batch/associate/default",
                "/crm/associations/2026-03/contacts/companies/batch/associate/default",
            ),
            (
                Family::Properties,
                "/contacts/email",
                "/crm/v3/properties/contacts/email",
                "/crm/properties/2026-03/contacts/email",
            ),
            (
                Family::Pipelines,
                "/deals",
                "/crm/v3/pipelines/deals",
                "/crm/pipelines/2026-03/deals",
            ),
            (
                Family::AccountInfo,
                "/details",
                "/account-info/v3/details",
                "/account-info/2026-03/details",
            ),
        ];
        for (family, rest, old, new) in cases {
            assert_eq!(v3.path(family, rest), old);
            assert_eq!(dated.path(family, rest), new);
        }
    }
}
