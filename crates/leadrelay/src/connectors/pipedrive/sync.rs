//! Pipedrive as a sync system: persons changed since a time through API
//! v2's list (`updated_since`, sorted by `update_time`, 500 a page, cursor
//! paging), and field writes: `PATCH /api/v2/persons/{id}` for known
//! persons; a person not seen yet is found by exact email search, else
//! created. Pipedrive has no batch update, so each write is one request.
//!
//! Fields: `name`, `phone` (the primary phone), `marketing_status` and
//! `custom_fields.KEY`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::api::Api;
use super::{DEFAULT_BASE_URL, Settings};
use crate::config::Problem;
use crate::connectors::crm::{self, CommonSettings};
use crate::connectors::{BuildContext, ErrorClass, Outcome};
use crate::sync::engine::Val;
use crate::sync::{Page, RemoteRecord, SyncError, SyncSystem, WriteOp};

const PAGE: &str = "500";

struct PipedriveSync {
    api: Api,
}

/// The sync system of a `pipedrive` destination's settings.
pub fn system(ctx: &BuildContext<'_>) -> Result<Arc<dyn SyncSystem>, Vec<Problem>> {
    let (common, s): (CommonSettings, Settings) = crm::parse_split(ctx.settings)?;
    let (client, base, token) =
        crate::sync::client_parts(ctx, &common, &s.token_env, DEFAULT_BASE_URL)?;
    Ok(Arc::new(PipedriveSync {
        api: Api::new(client, base, token, common.allow_private_networks),
    }))
}

fn text(v: Option<&Value>) -> Val {
    match v? {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn primary(points: &Value) -> Val {
    let list = points.as_array()?;
    let p = list
        .iter()
        .find(|p| p["primary"].as_bool() == Some(true))
        .or_else(|| list.first())?;
    text(p.get("value"))
}

/// A person field's value, by the sync's field name.
fn read_field(person: &Value, field: &str) -> Val {
    match field.strip_prefix("custom_fields.") {
        Some(key) => text(person["custom_fields"].get(key)),
        None if field == "phone" => primary(&person["phones"]),
        None => text(person.get(field)),
    }
}

/// The PATCH/POST body setting these fields.
fn body(op: &WriteOp) -> Value {
    let mut b = Map::new();
    let mut custom = Map::new();
    for (field, v) in &op.fields {
        match field.strip_prefix("custom_fields.") {
            Some(key) => {
                custom.insert(key.to_string(), json!(v));
            }
            None if field == "phone" => {
                let phones = match v {
                    Some(p) => json!([{"value": p, "primary": true, "label": "work"}]),
                    None => json!([]),
                };
                b.insert("phones".into(), phones);
            }
            None => {
                b.insert(field.clone(), json!(v));
            }
        }
    }
    if !custom.is_empty() {
        b.insert("custom_fields".into(), Value::Object(custom));
    }
    Value::Object(b)
}

fn failed(message: impl Into<String>) -> SyncError {
    SyncError(Outcome::permanent(ErrorClass::Vendor, message))
}

impl PipedriveSync {
    async fn find_by_email(&self, email: &str) -> Result<Option<String>, SyncError> {
        let (res, _) = self
            .api
            .call(
                Method::GET,
                "/api/v2/persons/search",
                &[
                    ("term", email),
                    ("fields", "email"),
                    ("exact_match", "true"),
                ],
                None,
            )
            .await;
        let v = res.map_err(|f| SyncError(f.outcome))?;
        Ok(v["items"]
            .as_array()
            .and_then(|items| items.first())
            .and_then(|i| text(i["item"].get("id"))))
    }

    async fn write_one(&self, op: &WriteOp) -> Result<String, SyncError> {
        let email = op.key.as_deref().unwrap_or_default();
        let id = match &op.id {
            Some(id) => Some(id.clone()),
            None if email.is_empty() => {
                return Err(failed("the person has no email to find or create it by"));
            }
            None => self.find_by_email(email).await?,
        };
        let mut b = body(op);
        let (method, path) = match &id {
            Some(id) => (Method::PATCH, format!("/api/v2/persons/{id}")),
            None => {
                if b.get("name").is_none_or(Value::is_null) {
                    b["name"] = json!(email);
                }
                b["emails"] = json!([{"value": email, "primary": true, "label": "work"}]);
                (Method::POST, "/api/v2/persons".to_string())
            }
        };
        let (res, _) = self.api.call(method, &path, &[], Some(&b)).await;
        let v = res.map_err(|f| SyncError(f.outcome))?;
        text(v.get("id")).ok_or_else(|| failed("Pipedrive's answer did not name the person"))
    }
}

#[async_trait]
impl SyncSystem for PipedriveSync {
    fn consistent(&self) -> bool {
        true
    }

    async fn changes(
        &self,
        since: Option<DateTime<Utc>>,
        page: Option<&str>,
        fields: &[String],
    ) -> Result<Page, SyncError> {
        let since = since.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
        let mut query = vec![
            ("sort_by", "update_time"),
            ("sort_direction", "asc"),
            ("limit", PAGE),
        ];
        if let Some(s) = &since {
            query.push(("updated_since", s));
        }
        if let Some(c) = page {
            query.push(("cursor", c));
        }
        let (res, _) = self
            .api
            .call_enveloped(Method::GET, "/api/v2/persons", &query, None)
            .await;
        let v = res.map_err(|f| SyncError(f.outcome))?;
        let mut records = Vec::new();
        for p in v["data"].as_array().into_iter().flatten() {
            let Some(id) = text(p.get("id")) else {
                continue;
            };
            let modified_at = p["update_time"]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(Utc::now);
            records.push(RemoteRecord {
                id,
                key: primary(&p["emails"]).map(|e| e.trim().to_lowercase()),
                modified_at,
                cursor_at: None,
                fields: fields
                    .iter()
                    .map(|f| (f.clone(), read_field(p, f)))
                    .collect(),
            });
        }
        let next = text(v["additional_data"].get("next_cursor"));
        Ok(Page { records, next })
    }

    async fn write(&self, ops: &[WriteOp]) -> Vec<Result<String, SyncError>> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(self.write_one(op).await);
        }
        out
    }
}
