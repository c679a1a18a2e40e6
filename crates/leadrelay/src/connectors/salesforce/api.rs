//! Salesforce's REST API: calls on the session's instance (refreshing the
//! session once on 401 `INVALID_SESSION_ID`), SOQL, composite requests,
//! and the classification of Salesforce's error arrays:
//!
//! - `REQUEST_LIMIT_EXCEEDED` (403) throttles: the destination pauses;
//! - `UNABLE_TO_LOCK_ROW`, 5xx and `SERVER_UNAVAILABLE` are retried;
//! - `DUPLICATES_DETECTED` carries the duplicate rule and every record its
//!   matching rules found, each with its `entityType` (a Lead can match a
//!   Contact); the caller decides whether to link to one;
//! - everything else — `FIELD_CUSTOM_VALIDATION_EXCEPTION`,
//!   `REQUIRED_FIELD_MISSING`, `INVALID_FIELD` … — is permanent, with
//!   Salesforce's message and the fields it names.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::auth::Auth;
use crate::connectors::http as shared;
use crate::connectors::{AttemptReport, ErrorClass, Outcome};
use crate::redact::redact_text;
use leadrelay_sources::xml;

/// How long the destination pauses when the org's API request limit is spent.
pub const REQUEST_LIMIT_PAUSE: Duration = Duration::from_secs(15 * 60);

/// One entry of a Salesforce error array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfError {
    pub code: String,
    pub message: String,
    pub fields: Vec<String>,
    /// `DUPLICATES_DETECTED`: the duplicate rule that fired.
    pub duplicate_rule: Option<String>,
    /// `DUPLICATES_DETECTED`: every record its matching rules found.
    pub duplicates: Vec<DuplicateMatch>,
    /// `DUPLICATES_DETECTED`: the rule alerts (a save with the Duplicate
    /// Rule header goes through) rather than blocks.
    pub allow_save: bool,
}

/// One record a duplicate rule matched
/// (`duplicateResult.matchResults[].matchRecords[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateMatch {
    /// The matched record's object (`matchResults[].entityType`: `Lead`, `Contact` …).
    pub entity_type: String,
    pub id: String,
    /// The matching rule that found it (`matchResults[].rule`).
    pub rule: String,
}

/// A call (or a composite subrequest) that did not succeed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub errors: Vec<SfError>,
    /// The composite subrequest that failed.
    pub reference_id: Option<String>,
}

impl Failure {
    fn plain(outcome: Outcome) -> Self {
        Self {
            outcome,
            status: None,
            errors: Vec::new(),
            reference_id: None,
        }
    }

    /// A duplicate rule's answer: the rule, whether it lets a save through
    /// its alert, and the records it matched.
    pub fn duplicates(&self) -> Option<(&str, bool, &[DuplicateMatch])> {
        self.errors
            .iter()
            .find(|e| e.code == "DUPLICATES_DETECTED" && !e.duplicates.is_empty())
            .map(|e| {
                (
                    e.duplicate_rule.as_deref().unwrap_or("a duplicate rule"),
                    e.allow_save,
                    e.duplicates.as_slice(),
                )
            })
    }
}

pub type CallResult = (Result<Value, Failure>, AttemptReport);

/// Reads `[{"message","errorCode","fields","duplicateResult"}]`.
pub fn parse_errors(body: &Value) -> Vec<SfError> {
    let list = match body {
        Value::Array(a) => a.clone(),
        Value::Object(_) => vec![body.clone()],
        _ => Vec::new(),
    };
    list.iter()
        .filter_map(|e| {
            let code = e
                .get("errorCode")
                .or_else(|| e.get("statusCode"))
                .and_then(Value::as_str)?
                .to_string();
            let result = &e["duplicateResult"];
            let duplicates = result["matchResults"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|m| {
                    let rule = m["rule"].as_str().unwrap_or_default().to_string();
                    let entity = m["entityType"].as_str().map(str::to_string);
                    m["matchRecords"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(move |r| {
                            let record = &r["record"];
                            // The entity type, else the record's own `attributes.type`.
                            let entity_type = entity.clone().or_else(|| {
                                record["attributes"]["type"].as_str().map(str::to_string)
                            })?;
                            Some(DuplicateMatch {
                                entity_type,
                                id: record["Id"].as_str()?.to_string(),
                                rule: rule.clone(),
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            Some(SfError {
                code,
                message: e["message"].as_str().unwrap_or_default().to_string(),
                fields: e["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str().map(str::to_string))
                    .collect(),
                duplicate_rule: result["duplicateRule"].as_str().map(str::to_string),
                allow_save: result["allowSave"].as_bool() == Some(true),
                duplicates,
            })
        })
        .collect()
}

/// "Salesforce REQUIRED_FIELD_MISSING: Required fields are missing: [LastName] (fields LastName)".
pub fn describe(errors: &[SfError]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            let fields = if e.fields.is_empty() {
                String::new()
            } else {
                format!(" (fields {})", e.fields.join(", "))
            };
            format!("Salesforce {}: {}{fields}", e.code, redact_text(&e.message))
        })
        .collect();
    parts.join("; ")
}

/// The verdict on an error answer (direct or composite subrequest).
pub fn error_outcome(status: u16, errors: &[SfError], retry_after: Option<Duration>) -> Outcome {
    let text = if errors.is_empty() {
        format!("Salesforce HTTP {status}")
    } else {
        describe(errors)
    };
    let has = |code: &str| errors.iter().any(|e| e.code == code);
    if has("REQUEST_LIMIT_EXCEEDED") {
        let wait = retry_after.unwrap_or(REQUEST_LIMIT_PAUSE);
        // Every other request of the destination waits too.
        crate::connectors::pace::hold(wait, &text);
        return Outcome::Throttled {
            message: text,
            retry_after: Some(wait),
        };
    }
    if has("INVALID_SESSION_ID") || status == 401 {
        return Outcome::CredentialsRejected { message: text };
    }
    if has("UNABLE_TO_LOCK_ROW")
        || has("SERVER_UNAVAILABLE")
        || matches!(status, 408 | 425 | 500..=599)
    {
        return Outcome::Retry {
            class: if status >= 500 {
                ErrorClass::Http5xx
            } else {
                ErrorClass::Vendor
            },
            message: text,
            retry_after,
        };
    }
    if status == 410 {
        return Outcome::Gone { message: text };
    }
    Outcome::permanent(ErrorClass::Http4xx, text)
}

/// Escapes a value for a SOQL string literal.
pub fn soql_quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// One subrequest of a composite request.
#[derive(Debug, Clone)]
pub struct Sub {
    pub method: &'static str,
    /// After `/services/data/vXX.X`.
    pub path: String,
    pub reference_id: String,
    pub body: Option<Value>,
    /// Save even if a duplicate rule (with its Alert action) matches.
    pub allow_save: bool,
}

/// The Duplicate Rule header that saves through a rule's alert (a rule
/// whose action is Block still refuses).
pub const ALLOW_SAVE_HEADER: (&str, &str) = ("Sforce-Duplicate-Rule-Header", "allowSave=true");

/// The answer of a call whose refreshed session was refused again.
fn kept_rejecting<T>() -> (Result<T, Failure>, AttemptReport) {
    let o = Outcome::CredentialsRejected {
        message: "Salesforce kept rejecting the session".into(),
    };
    (Err(Failure::plain(o)), AttemptReport::default())
}

/// The REST API on the session's instance.
pub struct Rest {
    client: reqwest::Client,
    pub auth: Auth,
    /// `v60.0`.
    version: String,
    allow_private: bool,
}

impl Rest {
    pub fn new(client: reqwest::Client, auth: Auth, version: String, allow_private: bool) -> Self {
        Self {
            client,
            auth,
            version,
            allow_private,
        }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// `/services/data/v60.0`
    pub fn data_path(&self) -> String {
        format!("/services/data/{}", self.version)
    }

    /// A request to `/services/data/vXX.X{path}`; a 401 refreshes the
    /// session and tries once more.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> CallResult {
        self.call_with(method, path, query, body, false).await
    }

    /// [`Rest::call`], saving through a duplicate rule's alert when `allow_save`.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        allow_save: bool,
    ) -> CallResult {
        let mut session = match self.auth.session().await {
            Ok(s) => s,
            Err(o) => return (Err(Failure::plain(o)), AttemptReport::default()),
        };
        for attempt in 0..2 {
            let url = format!("{}{}{path}", session.instance_url, self.data_path());
            let mut auth = match reqwest::header::HeaderValue::from_str(&format!(
                "Bearer {}",
                session.access_token
            )) {
                Ok(v) => v,
                Err(_) => {
                    let o = Outcome::CredentialsRejected {
                        message: "Salesforce returned an access token that is not a valid header"
                            .into(),
                    };
                    return (Err(Failure::plain(o)), AttemptReport::default());
                }
            };
            auth.set_sensitive(true);
            let mut req = self
                .client
                .request(method.clone(), &url)
                .header(reqwest::header::AUTHORIZATION, auth)
                .header(reqwest::header::ACCEPT, "application/json");
            if !query.is_empty() {
                req = req.query(query);
            }
            if allow_save {
                req = req.header(ALLOW_SAVE_HEADER.0, ALLOW_SAVE_HEADER.1);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let request = match req.build() {
                Ok(r) => r,
                Err(e) => {
                    let o = Outcome::permanent(
                        ErrorClass::Mapping,
                        format!("cannot build the request: {e}"),
                    );
                    return (Err(Failure::plain(o)), AttemptReport::default());
                }
            };
            let (result, report) =
                shared::send(&self.client, request, &url, self.allow_private).await;
            let resp = match result {
                Ok(r) => r,
                Err(e) => return (Err(Failure::plain(e.outcome())), report),
            };
            let parsed: Value = if resp.body.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&resp.body).unwrap_or(Value::Null)
            };
            if (200..300).contains(&resp.status) {
                return (Ok(parsed), report);
            }
            let errors = parse_errors(&parsed);
            let expired =
                resp.status == 401 || errors.iter().any(|e| e.code == "INVALID_SESSION_ID");
            if expired && attempt == 0 {
                match self.auth.refresh(&session.access_token).await {
                    Ok(s) => {
                        session = s;
                        continue;
                    }
                    Err(o) => return (Err(Failure::plain(o)), report),
                }
            }
            let mut outcome = error_outcome(
                resp.status,
                &errors,
                shared::parse_retry_after(&resp.headers),
            );
            if expired {
                outcome = Outcome::CredentialsRejected {
                    message: format!(
                        "Salesforce rejected a fresh session ({}): {}",
                        self.auth.flow_name(),
                        describe(&errors)
                    ),
                };
            } else if resp.status == 300 {
                outcome = Outcome::permanent(
                    ErrorClass::Vendor,
                    "Salesforce: several records match the external id (HTTP 300)",
                );
            }
            let f = Failure {
                outcome,
                status: Some(resp.status),
                errors,
                reference_id: None,
            };
            return (Err(f), report);
        }
        kept_rejecting()
    }

    /// Calls the SOAP API's partner endpoint (`/services/Soap/u/XX.X`) with
    /// `body` as the envelope's body and the session in its
    /// `SessionHeader` (an OAuth access token is a session id there).
    /// Ok: the answer's `Body` element. A fault `INVALID_SESSION_ID`
    /// refreshes the session and tries once more; the attempt log shows the
    /// envelope with the session id hidden.
    pub async fn soap(&self, body: &str) -> (Result<xml::Element, Failure>, AttemptReport) {
        let mut session = match self.auth.session().await {
            Ok(s) => s,
            Err(o) => return (Err(Failure::plain(o)), AttemptReport::default()),
        };
        let version = self.version.trim_start_matches('v');
        for attempt in 0..2 {
            let url = format!("{}/services/Soap/u/{version}", session.instance_url);
            let envelope = format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:partner.soap.sforce.com"><soapenv:Header><urn:SessionHeader><urn:sessionId>{}</urn:sessionId></urn:SessionHeader></soapenv:Header><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#,
                crate::http::html::escape(&session.access_token)
            );
            let request = match self
                .client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=UTF-8")
                .header("SOAPAction", "\"\"")
                .body(envelope)
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let o = Outcome::permanent(
                        ErrorClass::Mapping,
                        format!("cannot build the request: {e}"),
                    );
                    return (Err(Failure::plain(o)), AttemptReport::default());
                }
            };
            let (result, mut report) =
                shared::send(&self.client, request, &url, self.allow_private).await;
            if let Some(x) = report.exchange.as_mut() {
                x.request_body = x.request_body.replace(
                    &crate::http::html::escape(&session.access_token),
                    "[hidden]",
                );
            }
            let resp = match result {
                Ok(r) => r,
                Err(e) => return (Err(Failure::plain(e.outcome())), report),
            };
            let root = xml::parse(resp.body.as_bytes()).ok();
            let body = root.as_ref().and_then(|r| r.child("Body"));
            let fault = body.and_then(|b| b.child("Fault"));
            if (200..300).contains(&resp.status)
                && let Some(b) = body
                && fault.is_none()
            {
                return (Ok(b.clone()), report);
            }
            let code = fault
                .and_then(|f| f.child_text("faultcode"))
                .map(|c| c.rsplit(':').next().unwrap_or(c).to_string())
                .unwrap_or_default();
            let message = fault
                .and_then(|f| f.child_text("faultstring"))
                .map(redact_text)
                .unwrap_or_else(|| format!("Salesforce SOAP HTTP {}", resp.status));
            if code == "INVALID_SESSION_ID" && attempt == 0 {
                match self.auth.refresh(&session.access_token).await {
                    Ok(s) => {
                        session = s;
                        continue;
                    }
                    Err(o) => return (Err(Failure::plain(o)), report),
                }
            }
            let errors = vec![SfError {
                code: code.clone(),
                message: message.clone(),
                fields: Vec::new(),
                duplicate_rule: None,
                duplicates: Vec::new(),
                allow_save: false,
            }];
            let outcome = match code.as_str() {
                "INVALID_SESSION_ID" => Outcome::CredentialsRejected {
                    message: format!(
                        "Salesforce rejected a fresh session ({}): {message}",
                        self.auth.flow_name()
                    ),
                },
                // A fault naming the caller's request (`Client`, an API
                // code other than a limit) is permanent; a server fault or
                // an answer that is no SOAP at all is retried.
                "REQUEST_LIMIT_EXCEEDED" => error_outcome(403, &errors, None),
                "" | "Server" => Outcome::Retry {
                    class: ErrorClass::Http5xx,
                    message,
                    retry_after: None,
                },
                _ if resp.status >= 500 && fault.is_none() => Outcome::Retry {
                    class: ErrorClass::Http5xx,
                    message,
                    retry_after: None,
                },
                _ => Outcome::permanent(
                    ErrorClass::Vendor,
                    format!("Salesforce SOAP fault {code}: {message}"),
                ),
            };
            let f = Failure {
                outcome,
                status: Some(resp.status),
                errors,
                reference_id: None,
            };
            return (Err(f), report);
        }
        kept_rejecting()
    }

    /// Runs a SOQL query; returns its `records`.
    pub async fn query(&self, soql: &str) -> (Result<Vec<Value>, Failure>, AttemptReport) {
        let (res, report) = self.call(Method::GET, "/query", &[("q", soql)], None).await;
        (
            res.map(|v| v["records"].as_array().cloned().unwrap_or_default()),
            report,
        )
    }

    /// Sends subrequests in one all-or-none composite request. Ok: each
    /// subrequest's body by reference id, in order.
    pub async fn composite(
        &self,
        subs: &[Sub],
    ) -> (Result<Vec<(String, Value)>, Failure>, AttemptReport) {
        let data = self.data_path();
        let requests: Vec<Value> = subs
            .iter()
            .map(|s| {
                let mut r = json!({"method": s.method, "url": format!("{data}{}", s.path), "referenceId": s.reference_id});
                if let Some(b) = &s.body {
                    r["body"] = b.clone();
                }
                if s.allow_save {
                    r["httpHeaders"] = json!({ALLOW_SAVE_HEADER.0: ALLOW_SAVE_HEADER.1});
                }
                r
            })
            .collect();
        let body = json!({"allOrNone": true, "compositeRequest": requests});
        let (res, report) = self
            .call(Method::POST, "/composite", &[], Some(&body))
            .await;
        let v = match res {
            Ok(v) => v,
            Err(f) => return (Err(f), report),
        };
        let mut out = Vec::new();
        // (halted by another subrequest's failure, the failure)
        let mut failures: Vec<(bool, Failure)> = Vec::new();
        for r in v["compositeResponse"].as_array().into_iter().flatten() {
            let status = r["httpStatusCode"].as_u64().unwrap_or(0) as u16;
            let reference = r["referenceId"].as_str().unwrap_or_default().to_string();
            if status < 400 {
                out.push((reference, r["body"].clone()));
                continue;
            }
            let errors = parse_errors(&r["body"]);
            let halted = !errors.is_empty()
                && errors.iter().all(|e| {
                    e.code == "PROCESSING_HALTED" || e.code == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
                });
            failures.push((
                halted,
                Failure {
                    outcome: error_outcome(status, &errors, None),
                    status: Some(status),
                    errors,
                    reference_id: Some(reference),
                },
            ));
        }
        let failure = match failures.iter().position(|(halted, _)| !halted) {
            Some(i) => Some(failures.swap_remove(i).1),
            None => failures.into_iter().next().map(|(_, f)| f),
        };
        match failure {
            // The attempt shows the failed subrequest's status, not the
            // envelope's 200.
            Some(f) => (
                Err(f.clone()),
                AttemptReport {
                    status: f.status.or(report.status),
                    ..report
                },
            ),
            None if out.len() == subs.len() => (Ok(out), report),
            None => (
                Err(Failure::plain(Outcome::retry(
                    ErrorClass::Vendor,
                    "Salesforce's composite answer is missing subrequests",
                ))),
                report,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_salesforce_errors() {
        let e = |code: &str| {
            parse_errors(
                &json!([{"message": format!("{code} message"), "errorCode": code, "fields": ["LastName"]}]),
            )
        };
        assert!(matches!(
            error_outcome(403, &e("REQUEST_LIMIT_EXCEEDED"), None),
            Outcome::Throttled { retry_after: Some(d), .. } if d == REQUEST_LIMIT_PAUSE
        ));
        assert!(matches!(
            error_outcome(400, &e("UNABLE_TO_LOCK_ROW"), None),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            error_outcome(503, &e("SERVER_UNAVAILABLE"), None),
            Outcome::Retry { .. }
        ));
        for code in [
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "REQUIRED_FIELD_MISSING",
            "INVALID_FIELD",
        ] {
            match error_outcome(400, &e(code), None) {
                Outcome::Permanent { message, .. } => {
                    assert_eq!(
                        message,
                        format!("Salesforce {code}: {code} message (fields LastName)")
                    )
                }
                o => panic!("{code}: {o:?}"),
            }
        }
    }

    #[test]
    fn reads_the_duplicate_records_with_their_entity_type() {
        let body = json!([{"message": "Use one of these records?", "errorCode": "DUPLICATES_DETECTED",
            "duplicateResult": {"duplicateRule": "Standard_Lead_Duplicate_Rule", "matchResults": [
                {"entityType": "Lead", "rule": "Standard_Lead_Match_Rule_v1_0",
                 "matchRecords": [{"record": {"Id": "00Q000000000001AAA"}}]},
                {"entityType": "Contact", "rule": "Standard_Contact_Match_Rule_v1_1",
                 "matchRecords": [{"record": {"attributes": {"type": "Contact"}, "Id": "003000000000001AAA"}}]}]}}]);
        let errs = parse_errors(&body);
        let f = Failure {
            errors: errs,
            ..Failure::plain(Outcome::permanent(ErrorClass::Http4xx, "dup"))
        };
        let (rule, _, found) = f.duplicates().expect("a duplicate answer");
        assert_eq!(rule, "Standard_Lead_Duplicate_Rule");
        let found: Vec<(&str, &str)> = found
            .iter()
            .map(|m| (m.entity_type.as_str(), m.id.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("Lead", "00Q000000000001AAA"),
                ("Contact", "003000000000001AAA")
            ]
        );
    }

    #[test]
    fn quotes_soql() {
        assert_eq!(soql_quote("o'neil@x.io"), "'o\\'neil@x.io'");
        assert_eq!(soql_quote("a\\b"), "'a\\\\b'");
    }
}
