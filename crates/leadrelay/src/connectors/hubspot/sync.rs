//! HubSpot as a sync system: contacts changed since a time through the CRM
//! search API (`lastmodifieddate` ≥ since, oldest first, 100 a page), and
//! field writes through batch update (known ids) and batch upsert by email
//! (records not seen yet), 100 inputs a request.
//!
//! The search index lags writes by seconds, so a poll can show a record's
//! older state after a newer one: the sync's overlap window and write
//! ledger absorb that. A search result set ends at 10,000 records; the
//! cursor moves on by modification time so a later poll continues.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use super::api::{Api, Family};
use super::{DEFAULT_BASE_URL, Settings};
use crate::config::Problem;
use crate::connectors::crm::{self, CommonSettings};
use crate::connectors::{BuildContext, ErrorClass, Outcome};
use crate::sync::{Page, RemoteRecord, SyncError, SyncSystem, WriteOp};

const PAGE: usize = 100;
/// HubSpot refuses `after` beyond 10,000 results of one search.
const SEARCH_WINDOW: usize = 10_000;

struct HubSpotSync {
    api: Api,
}

/// The sync system of a `hubspot` destination's settings.
pub fn system(ctx: &BuildContext<'_>) -> Result<Arc<dyn SyncSystem>, Vec<Problem>> {
    let (common, s): (CommonSettings, Settings) = crm::parse_split(ctx.settings)?;
    let version = super::api_version(&s).map_err(|p| vec![p])?;
    let (client, base, token) =
        crate::sync::client_parts(ctx, &common, &s.token_env, DEFAULT_BASE_URL)?;
    Ok(Arc::new(HubSpotSync {
        api: Api::new(client, base, token, version, common.allow_private_networks),
    }))
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            s.parse::<i64>()
                .ok()
                .and_then(DateTime::<Utc>::from_timestamp_millis)
        })
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn failed(message: impl Into<String>) -> SyncError {
    SyncError(Outcome::permanent(ErrorClass::Vendor, message))
}

#[async_trait]
impl SyncSystem for HubSpotSync {
    async fn changes(
        &self,
        since: Option<DateTime<Utc>>,
        page: Option<&str>,
        fields: &[String],
    ) -> Result<Page, SyncError> {
        let mut properties: Vec<&str> = vec!["email", "lastmodifieddate"];
        properties.extend(fields.iter().map(String::as_str));
        let mut body = json!({
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            "properties": properties,
            "limit": PAGE,
        });
        if let Some(t) = since {
            body["filterGroups"] = json!([{"filters": [{
                "propertyName": "lastmodifieddate",
                "operator": "GTE",
                "value": t.timestamp_millis().to_string(),
            }]}]);
        }
        if let Some(after) = page {
            body["after"] = json!(after);
        }
        let (res, _) = self
            .api
            .call(
                Method::POST,
                &self.api.path(Family::Objects, "/contacts/search"),
                Some(&body),
            )
            .await;
        let v = res.map_err(|f| SyncError(f.outcome))?;
        let mut records = Vec::new();
        for r in v["results"].as_array().into_iter().flatten() {
            let props = &r["properties"];
            let Some(id) = text(r.get("id")) else {
                continue;
            };
            let modified_at = parse_time(props.get("lastmodifieddate"))
                .or_else(|| parse_time(r.get("updatedAt")))
                .unwrap_or_else(Utc::now);
            records.push(RemoteRecord {
                id,
                email: text(props.get("email")).map(|e| e.trim().to_lowercase()),
                modified_at,
                cursor_at: None,
                fields: fields
                    .iter()
                    .map(|f| (f.clone(), text(props.get(f))))
                    .collect(),
            });
        }
        let next = v["paging"]["next"]["after"]
            .as_str()
            .filter(|a| a.parse::<usize>().is_ok_and(|n| n + PAGE <= SEARCH_WINDOW))
            .map(str::to_string);
        Ok(Page { records, next })
    }

    async fn write(&self, ops: &[WriteOp]) -> Vec<Result<String, SyncError>> {
        let mut out: Vec<Option<Result<String, SyncError>>> = vec![None; ops.len()];
        let props = |op: &WriteOp| -> Value {
            op.fields
                .iter()
                .map(|(k, v)| (k.clone(), json!(v.clone().unwrap_or_default())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let (known, unknown): (Vec<usize>, Vec<usize>) =
            (0..ops.len()).partition(|&i| ops[i].id.is_some());
        for chunk in known.chunks(PAGE) {
            let inputs: Vec<Value> = chunk
                .iter()
                .map(|&i| json!({"id": ops[i].id, "properties": props(&ops[i])}))
                .collect();
            let (res, _) = self
                .api
                .call(
                    Method::POST,
                    &self.api.path(Family::Objects, "/contacts/batch/update"),
                    Some(&json!({"inputs": inputs})),
                )
                .await;
            for &i in chunk {
                out[i] = Some(match &res {
                    Ok(_) => Ok(ops[i].id.clone().unwrap_or_default()),
                    Err(f) => Err(SyncError(f.outcome.clone())),
                });
            }
        }
        for chunk in unknown.chunks(PAGE) {
            let inputs: Vec<Value> = chunk
                .iter()
                .map(|&i| {
                    let mut p = props(&ops[i]);
                    p["email"] = json!(ops[i].email);
                    json!({"id": ops[i].email, "idProperty": "email", "properties": p})
                })
                .collect();
            let (res, _) = self
                .api
                .call(
                    Method::POST,
                    &self.api.path(Family::Objects, "/contacts/batch/upsert"),
                    Some(&json!({"inputs": inputs})),
                )
                .await;
            let ids: BTreeMap<String, String> = match &res {
                Ok(v) => v["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| {
                        Some((
                            text(r["properties"].get("email"))?.to_lowercase(),
                            text(r.get("id"))?,
                        ))
                    })
                    .collect(),
                Err(_) => BTreeMap::new(),
            };
            for &i in chunk {
                out[i] = Some(match &res {
                    Err(f) => Err(SyncError(f.outcome.clone())),
                    Ok(_) => ids
                        .get(&ops[i].email)
                        .cloned()
                        .ok_or_else(|| failed("HubSpot's upsert answer did not name the contact")),
                });
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(failed("not sent"))))
            .collect()
    }
}
