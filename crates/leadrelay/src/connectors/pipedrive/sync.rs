//! Pipedrive as a sync system: persons (`object = "contact"`),
//! organizations (`company`) or deals (`deal`) changed since a time
//! through API v2's lists (`updated_since`, sorted by `update_time`, 500 a
//! page, cursor paging), and field writes: `PATCH /api/v2/{object}/{id}`
//! for known records; a record not seen yet is first looked up — a person
//! by exact email search, an organization or a deal by an exact search of
//! the `match` field (`/api/v2/organizations/search`,
//! `/api/v2/deals/search`), each hit read back and compared as the sync
//! compares match values — else created with the match value. Pipedrive
//! has no batch update, so each write is one request.
//!
//! Values are text on the sync's side: numbers are read without a
//! trailing `.0` (a deal's `value` 5000, a `stage_id` 3 read as `"5000"`,
//! `"3"`), and written back as JSON numbers for Pipedrive's number and id
//! fields, so a value map (`map = { closedwon = "4" }`) compares alike both
//! ways. The fields are listed in [`crate::config::sync::pipedrive_fields`].

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::api::Api;
use super::{DEFAULT_BASE_URL, Settings};
use crate::config::Problem;
use crate::config::sync::{ObjectSpec, SyncObject};
use crate::connectors::crm::{self, CommonSettings};
use crate::connectors::{BuildContext, ErrorClass, Outcome};
use crate::sync::engine::Val;
use crate::sync::{Page, RemoteRecord, SyncError, SyncSystem, WriteOp, normalise_key};

const PAGE: &str = "500";
/// Search hits read back to compare their match value.
const CANDIDATES: usize = 5;

/// The Pipedrive objects a sync handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Object {
    Person,
    Organization,
    Deal,
}

impl Object {
    fn plural(self) -> &'static str {
        match self {
            Object::Person => "persons",
            Object::Organization => "organizations",
            Object::Deal => "deals",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Object::Person => "person",
            Object::Organization => "organization",
            Object::Deal => "deal",
        }
    }

    /// The field a new record cannot be made without (filled with the
    /// match value when the sync does not carry it).
    fn title(self) -> &'static str {
        match self {
            Object::Deal => "title",
            Object::Person | Object::Organization => "name",
        }
    }
}

/// How a standard field's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    /// A JSON number (`value`, `probability`).
    Number,
    /// A record id: a JSON integer (`stage_id`, `org_id` …).
    Id,
    /// A person's primary phone (`phones` array).
    Phone,
    /// An organization's `address` object (`{value}`).
    Address,
}

fn kind(field: &str) -> Kind {
    match field {
        "value" | "probability" => Kind::Number,
        "stage_id" | "pipeline_id" | "org_id" | "person_id" | "owner_id" => Kind::Id,
        "phone" => Kind::Phone,
        "address" => Kind::Address,
        _ => Kind::Text,
    }
}

/// Fields Pipedrive requires on a record: a clear is not sent (Pipedrive
/// refuses it), so the record keeps its value.
fn required(object: Object, field: &str) -> bool {
    match object {
        Object::Person | Object::Organization => field == "name",
        Object::Deal => matches!(
            field,
            "title" | "currency" | "status" | "stage_id" | "pipeline_id"
        ),
    }
}

struct PipedriveSync {
    api: Api,
    object: Object,
    /// The `match` field (organizations and deals).
    key: String,
}

/// The sync system of a `pipedrive` destination's settings, for `spec`'s
/// object.
pub fn system(
    ctx: &BuildContext<'_>,
    spec: &ObjectSpec,
) -> Result<Arc<dyn SyncSystem>, Vec<Problem>> {
    let (common, s): (CommonSettings, Settings) = crm::parse_split(ctx.settings)?;
    let object = match spec.object {
        SyncObject::Contact => Object::Person,
        SyncObject::Company => Object::Organization,
        SyncObject::Deal => Object::Deal,
        SyncObject::Custom => {
            return Err(vec![Problem::error(
                "",
                "Pipedrive has no custom objects to sync",
            )]);
        }
        SyncObject::Task => {
            return Err(vec![Problem::error(
                "",
                "Pipedrive activities are not synced yet",
            )]);
        }
    };
    let (client, base, token) =
        crate::sync::client_parts(ctx, &common, &s.token_env, DEFAULT_BASE_URL)?;
    Ok(Arc::new(PipedriveSync {
        api: Api::new(client, base, token, common.allow_private_networks),
        object,
        key: spec.match_field.clone().unwrap_or_default(),
    }))
}

/// A value as the sync compares it: text, numbers without a trailing `.0`.
fn text(v: Option<&Value>) -> Val {
    match v? {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        Value::Number(n) => Some(match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => {
                format!("{}", f as i64)
            }
            _ => n.to_string(),
        }),
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

/// A record's field value, by the sync's field name.
fn read_field(record: &Value, field: &str) -> Val {
    match field.strip_prefix("custom_fields.") {
        Some(key) => text(record["custom_fields"].get(key)),
        None => match kind(field) {
            Kind::Phone => primary(&record["phones"]),
            Kind::Address => match &record["address"] {
                Value::Object(a) => text(a.get("value")),
                other => text(Some(other)),
            },
            // v1-style answers nest linked records (`org_id: {value}`).
            Kind::Id => match &record[field] {
                Value::Object(o) => text(o.get("value").or_else(|| o.get("id"))),
                other => text(Some(other)),
            },
            _ => text(record.get(field)),
        },
    }
}

fn failed(message: impl Into<String>) -> SyncError {
    SyncError(Outcome::permanent(ErrorClass::Vendor, message))
}

/// A standard field's JSON value.
fn json_value(field: &str, v: &Val) -> Result<Value, SyncError> {
    let Some(v) = v else {
        return Ok(match kind(field) {
            Kind::Phone => json!([]),
            _ => Value::Null,
        });
    };
    Ok(match kind(field) {
        Kind::Text => json!(v),
        Kind::Number => {
            let n: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| failed(format!("{field}: {v:?} is not a number")))?;
            json!(n)
        }
        Kind::Id => {
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| failed(format!("{field}: {v:?} is not a Pipedrive id (a number)")))?;
            json!(n)
        }
        Kind::Phone => json!([{"value": v, "primary": true, "label": "work"}]),
        Kind::Address => json!({ "value": v }),
    })
}

impl PipedriveSync {
    /// The PATCH/POST body setting the op's fields.
    fn body(&self, op: &WriteOp) -> Result<Map<String, Value>, SyncError> {
        let mut b = Map::new();
        let mut custom = Map::new();
        for (field, v) in &op.fields {
            match field.strip_prefix("custom_fields.") {
                Some(key) => {
                    custom.insert(key.to_string(), json!(v));
                }
                None if v.is_none() && required(self.object, field) => {}
                None => {
                    let name = if kind(field) == Kind::Phone {
                        "phones"
                    } else {
                        field
                    };
                    b.insert(name.to_string(), json_value(field, v)?);
                }
            }
        }
        if !custom.is_empty() {
            b.insert("custom_fields".into(), Value::Object(custom));
        }
        Ok(b)
    }

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

    /// The organization or deal whose match field holds `key` (as the sync
    /// compares match values), the oldest when several do.
    async fn find_by_key(&self, key: &str) -> Result<Option<String>, SyncError> {
        let Some(wanted) = normalise_key(key) else {
            return Ok(None);
        };
        let search_field = match self.key.strip_prefix("custom_fields.") {
            Some(_) => "custom_fields",
            None => self.key.as_str(),
        };
        let path = format!("/api/v2/{}/search", self.object.plural());
        let mut terms = vec![key.trim().to_string()];
        if wanted != terms[0] {
            terms.push(wanted.clone());
        }
        let mut found: Vec<u64> = Vec::new();
        for term in &terms {
            let (res, _) = self
                .api
                .call(
                    Method::GET,
                    &path,
                    &[
                        ("term", term.as_str()),
                        ("fields", search_field),
                        ("exact_match", "true"),
                    ],
                    None,
                )
                .await;
            let v = res.map_err(|f| SyncError(f.outcome))?;
            let ids = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["item"]["id"].as_u64());
            for id in ids.take(CANDIDATES) {
                if found.contains(&id) {
                    continue;
                }
                // The hit is read back: a custom-field search matches any
                // custom field, and the exact search ignores what the sync's
                // comparison ignores only in part.
                let (res, _) = self
                    .api
                    .call(
                        Method::GET,
                        &format!("/api/v2/{}/{id}", self.object.plural()),
                        &[],
                        None,
                    )
                    .await;
                match res {
                    Ok(r) => {
                        if read_field(&r, &self.key).and_then(|k| normalise_key(&k))
                            == Some(wanted.clone())
                        {
                            found.push(id);
                        }
                    }
                    Err(f) if f.status == Some(404) => {}
                    Err(f) => return Err(SyncError(f.outcome)),
                }
            }
        }
        Ok(found.into_iter().min().map(|id| id.to_string()))
    }

    async fn write_one(&self, op: &WriteOp) -> Result<String, SyncError> {
        let key = op.key.as_deref().unwrap_or_default();
        let id = match (&op.id, self.object) {
            (Some(id), _) => Some(id.clone()),
            (None, Object::Person) if key.is_empty() => {
                return Err(failed("the person has no email to find or create it by"));
            }
            (None, Object::Person) => self.find_by_email(key).await?,
            (None, _) if key.is_empty() => None,
            (None, _) => self.find_by_key(key).await?,
        };
        let mut b = self.body(op)?;
        let plural = self.object.plural();
        let (method, path) = match &id {
            Some(id) => (Method::PATCH, format!("/api/v2/{plural}/{id}")),
            None => {
                if self.object == Object::Person {
                    b.insert(
                        "emails".into(),
                        json!([{"value": key, "primary": true, "label": "work"}]),
                    );
                } else if !key.is_empty() && !op.fields.contains_key(&self.key) {
                    // The match value goes with the new record, so it
                    // matches again later.
                    let with_key = WriteOp {
                        fields: [(self.key.clone(), Some(key.to_string()))].into(),
                        ..op.clone()
                    };
                    for (k, v) in self.body(&with_key)? {
                        match (b.get_mut(&k), v) {
                            (Some(Value::Object(have)), Value::Object(more)) => have.extend(more),
                            (Some(have), v) => *have = v,
                            (None, v) => {
                                b.insert(k, v);
                            }
                        }
                    }
                }
                let title = self.object.title();
                if b.get(title).is_none_or(Value::is_null) {
                    if key.is_empty() {
                        return Err(failed(format!(
                            "a new Pipedrive {} needs a {title}: sync one, or a match value",
                            self.object.noun()
                        )));
                    }
                    b.insert(title.into(), json!(key));
                }
                (Method::POST, format!("/api/v2/{plural}"))
            }
        };
        let (res, _) = self
            .api
            .call(method, &path, &[], Some(&Value::Object(b)))
            .await;
        let v = res.map_err(|f| SyncError(f.outcome))?;
        text(v.get("id")).ok_or_else(|| {
            failed(format!(
                "Pipedrive's answer did not name the {}",
                self.object.noun()
            ))
        })
    }

    /// The match value of a listed record.
    fn key_of(&self, r: &Value) -> Val {
        match self.object {
            Object::Person => primary(&r["emails"]).map(|e| e.trim().to_lowercase()),
            _ => read_field(r, &self.key),
        }
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
        let path = format!("/api/v2/{}", self.object.plural());
        let (res, _) = self
            .api
            .call_enveloped(Method::GET, &path, &query, None)
            .await;
        let v = res.map_err(|f| SyncError(f.outcome))?;
        let mut records = Vec::new();
        for r in v["data"].as_array().into_iter().flatten() {
            let Some(id) = text(r.get("id")) else {
                continue;
            };
            let modified_at = r["update_time"]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(Utc::now);
            records.push(RemoteRecord {
                id,
                key: self.key_of(r),
                modified_at,
                cursor_at: None,
                fields: fields
                    .iter()
                    .map(|f| (f.clone(), read_field(r, f)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_the_other_crms_write_them() {
        assert_eq!(text(Some(&json!(5000.0))).as_deref(), Some("5000"));
        assert_eq!(text(Some(&json!(3))).as_deref(), Some("3"));
        assert_eq!(text(Some(&json!(12.5))).as_deref(), Some("12.5"));
        assert_eq!(text(Some(&json!(""))), None);
        let deal = json!({"stage_id": 4, "org_id": {"value": 17, "name": "Acme"},
                          "custom_fields": {"abc": 2.0}});
        assert_eq!(read_field(&deal, "stage_id").as_deref(), Some("4"));
        assert_eq!(read_field(&deal, "org_id").as_deref(), Some("17"));
        assert_eq!(read_field(&deal, "custom_fields.abc").as_deref(), Some("2"));
        let org = json!({"address": {"value": "1 Main St", "country": "US"}});
        assert_eq!(read_field(&org, "address").as_deref(), Some("1 Main St"));
    }

    #[test]
    fn values_are_written_in_pipedrives_types() {
        assert_eq!(json_value("stage_id", &Some("3".into())).unwrap(), json!(3));
        assert_eq!(
            json_value("value", &Some("5000".into())).unwrap(),
            json!(5000.0)
        );
        assert_eq!(json_value("org_id", &None).unwrap(), Value::Null);
        assert!(json_value("value", &Some("lots".into())).is_err());
        assert!(json_value("person_id", &Some("?b:12".into())).is_err());
        assert_eq!(
            json_value("address", &Some("1 Main St".into())).unwrap(),
            json!({"value": "1 Main St"})
        );
    }
}
