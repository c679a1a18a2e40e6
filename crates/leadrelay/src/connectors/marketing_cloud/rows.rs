//! The asynchronous data extension rows API, for batches above
//! `async_above` rows:
//!
//! 1. `PUT /data/v1/async/dataextensions/key:{key}/rows` with
//!    `{"items": [{column: value, …}]}` (an upsert) → 202 `{"requestId"}`;
//! 2. `GET /data/v1/async/{requestId}/status` every `async_poll` until its
//!    `status.requestStatus` is no longer `Pending` (at most `async_timeout`:
//!    then every row is retried — sending an upsert again is safe);
//! 3. `GET /data/v1/async/{requestId}/results?page=N&pageSize=…`: one item
//!    per row with `status` (`OK` or `Error`), `errorCode` and `message`.
//!    An item is matched to its row by the primary key column's value (the
//!    contact key), or by its position when the items carry no columns.
//!    A row with an error item dead-letters with that message; the others
//!    are delivered.

use std::collections::HashMap;
use std::time::Instant;

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Body, MarketingCloud, classify, error_text};
use crate::connectors::crm;
use crate::connectors::{AttemptReport, ErrorClass, JobResult, Outcome};

/// Result items read per page.
const PAGE_SIZE: usize = 200;

impl MarketingCloud {
    /// Upserts `batch` (`(index, contact key, values)`) through the
    /// asynchronous API and records one result per row in `results`.
    pub(super) async fn upsert_async(
        &self,
        de: &str,
        batch: &[(usize, String, Map<String, Value>)],
        results: &mut [Option<JobResult>],
    ) {
        let set_all = |results: &mut [Option<JobResult>], o: &Outcome, r: &AttemptReport| {
            for (i, _, _) in batch {
                results[*i] = Some(JobResult {
                    outcome: o.clone(),
                    report: r.clone(),
                });
            }
        };
        let items: Vec<Value> = batch
            .iter()
            .map(|(_, k, v)| {
                let mut row = v.clone();
                row.insert(self.primary_key.clone(), json!(k));
                Value::Object(row)
            })
            .collect();
        let path = format!(
            "/data/v1/async/dataextensions/key:{}/rows",
            crm::path_segment(de)
        );
        let body = json!({ "items": items });
        let (sent, report) = self.call(Method::PUT, &path, Body::Json(&body)).await;
        let resp = match sent {
            Ok(r) => r,
            Err(o) => return set_all(results, &o, &report),
        };
        if !(200..300).contains(&resp.status) {
            return set_all(results, &classify(&resp), &report);
        }
        let v: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
        let Some(request_id) = v["requestId"].as_str().map(str::to_string) else {
            let o = Outcome::retry(
                ErrorClass::Vendor,
                "Marketing Cloud accepted the rows but named no requestId",
            );
            return set_all(results, &o, &report);
        };
        let status = match self.await_request(&request_id).await {
            Ok(s) => s,
            Err(o) => return set_all(results, &o, &report),
        };
        let items = match self.request_results(&request_id).await {
            Ok(items) => items,
            Err(o) => return set_all(results, &o, &report),
        };
        // Match each item to its row.
        let by_key: HashMap<String, usize> = batch
            .iter()
            .enumerate()
            .map(|(n, (_, k, _))| (k.to_lowercase(), n))
            .collect();
        let mut errors: Vec<Option<String>> = vec![None; batch.len()];
        let mut seen = vec![false; batch.len()];
        for (pos, item) in items.iter().enumerate() {
            let key = item
                .as_object()
                .and_then(|o| {
                    o.iter()
                        .find(|(c, _)| c.eq_ignore_ascii_case(&self.primary_key))
                        .map(|(_, v)| v)
                })
                .and_then(crate::mapping::as_text);
            let n = match key {
                Some(k) => by_key.get(&k.to_lowercase()).copied(),
                None if items.len() == batch.len() => Some(pos),
                None => None,
            };
            let Some(n) = n else { continue };
            seen[n] = true;
            if !item["status"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("OK"))
            {
                errors[n] = Some(format!(
                    "Marketing Cloud refused the row ({}): {}",
                    item["errorCode"].as_str().unwrap_or("Error"),
                    crate::redact::redact_text(item["message"].as_str().unwrap_or("no message")),
                ));
            }
        }
        let complete =
            status.eq_ignore_ascii_case("Complete") || status.eq_ignore_ascii_case("Completed");
        for (n, (i, _, _)) in batch.iter().enumerate() {
            let outcome = match &errors[n] {
                Some(m) => Outcome::permanent(ErrorClass::Http4xx, m.clone()),
                None if complete && (seen[n] || items.is_empty()) => Outcome::delivered(),
                None => Outcome::retry(
                    ErrorClass::Vendor,
                    format!(
                        "Marketing Cloud's asynchronous request {request_id} ended {status} without a result for this row"
                    ),
                ),
            };
            results[*i] = Some(JobResult {
                outcome,
                report: report.clone(),
            });
        }
    }

    /// Polls the request's status until it is no longer pending; its
    /// `requestStatus` (`Complete` or `Error`).
    async fn await_request(&self, request_id: &str) -> Result<String, Outcome> {
        let path = format!("/data/v1/async/{}/status", crm::path_segment(request_id));
        let deadline = Instant::now() + self.async_timeout;
        loop {
            tokio::time::sleep(self.async_poll).await;
            let resp = self.call(Method::GET, &path, Body::None).await.0?;
            if !(200..300).contains(&resp.status) {
                return Err(as_retry(classify(&resp)));
            }
            let v: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
            let status = v["status"]["requestStatus"].as_str().unwrap_or_default();
            if !status.is_empty() && !status.eq_ignore_ascii_case("Pending") {
                return Ok(status.to_string());
            }
            if status.is_empty()
                && v["resultMessages"]
                    .as_array()
                    .is_some_and(|m| !m.is_empty())
            {
                return Err(Outcome::retry(
                    ErrorClass::Vendor,
                    format!(
                        "Marketing Cloud's asynchronous request {request_id}: {}",
                        error_text(&resp)
                    ),
                ));
            }
            if Instant::now() >= deadline {
                return Err(Outcome::retry(
                    ErrorClass::Timeout,
                    format!(
                        "Marketing Cloud's asynchronous request {request_id} was still pending after {}",
                        humantime::format_duration(self.async_timeout)
                    ),
                ));
            }
        }
    }

    /// Every result item of a finished request (all pages).
    async fn request_results(&self, request_id: &str) -> Result<Vec<Value>, Outcome> {
        let mut items = Vec::new();
        for page in 1.. {
            let path = format!(
                "/data/v1/async/{}/results?page={page}&pageSize={PAGE_SIZE}",
                crm::path_segment(request_id)
            );
            let resp = self.call(Method::GET, &path, Body::None).await.0?;
            if !(200..300).contains(&resp.status) {
                return Err(as_retry(classify(&resp)));
            }
            let v: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
            let got = v["items"].as_array().cloned().unwrap_or_default();
            let count = v["count"].as_u64().unwrap_or(0) as usize;
            let done = got.is_empty() || got.len() < PAGE_SIZE;
            items.extend(got);
            if done || items.len() >= count {
                break;
            }
        }
        Ok(items)
    }
}

/// Reading a request that Marketing Cloud accepted: a refusal there is not
/// the rows' fault, so it is retried (the upsert is sent again).
fn as_retry(o: Outcome) -> Outcome {
    match o {
        Outcome::Permanent { class, message } => Outcome::Retry {
            class,
            message,
            retry_after: None,
        },
        other => other,
    }
}
