//! Salesforce as a sync system: the destination's `person_object` (Leads by
//! default, or Contacts) for contacts, Accounts for companies,
//! Opportunities for deals, or a custom object `X__c`, changed since a
//! time through SOQL on `SystemModstamp` (`WHERE SystemModstamp >= T ORDER
//! BY SystemModstamp`, the rest of a large result through
//! `nextRecordsUrl`), and field writes through sObject Collections: `PATCH
//! composite/sobjects` for known ids, up to 200 a request; records not
//! seen yet are looked up by their match field (Email for people; one SOQL
//! `IN (...)` per 100 values), else created with `POST composite/sobjects`.
//!
//! `latest` compares `LastModifiedDate` (changes made by people and
//! automation); the cursor moves by `SystemModstamp`, which system jobs
//! move too, so nothing changed is missed. Converted Leads are read-only
//! in Salesforce and left out. SOQL reads what is committed, so the change
//! feed is consistent (no index lag).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::api::{Failure, Rest, soql_quote};
use super::{PersonObject, Settings};
use crate::config::Problem;
use crate::config::sync::{ObjectSpec, SyncObject};
use crate::connectors::crm::{self, CommonSettings};
use crate::connectors::{BuildContext, ErrorClass, Outcome};
use crate::sync::engine::Val;
use crate::sync::{Page, RemoteRecord, SyncError, SyncSystem, WriteOp};

/// sObject Collections take at most 200 records a request.
const COLLECTION: usize = 200;
/// Emails per `Email IN (...)` lookup (well inside SOQL's length limit).
const LOOKUP: usize = 100;

struct SalesforceSync {
    rest: Rest,
    /// The sObject's API name.
    object: String,
    /// The person object when syncing contacts (creates get a last name
    /// and, for a Lead, a company).
    person: Option<PersonObject>,
    /// The field that matches records (`Email` for people).
    key: String,
}

/// The sync system of a `salesforce` destination's settings, for `spec`'s
/// object.
pub fn system(
    ctx: &BuildContext<'_>,
    spec: &ObjectSpec,
) -> Result<Arc<dyn SyncSystem>, Vec<Problem>> {
    let (common, s): (CommonSettings, Settings) = crm::parse_split(ctx.settings)?;
    let mut problems = Vec::new();
    let (object, person) = match spec.object {
        SyncObject::Contact => (
            s.person_object.api_name().to_string(),
            Some(s.person_object),
        ),
        SyncObject::Company => ("Account".to_string(), None),
        SyncObject::Deal => ("Opportunity".to_string(), None),
        SyncObject::Custom => (spec.vendor_object.clone().unwrap_or_default(), None),
        SyncObject::Task => ("Task".to_string(), None),
    };
    let key = match person {
        Some(_) => "Email".to_string(),
        None => spec.match_field.clone().unwrap_or_default(),
    };
    match super::rest(ctx, &common, &s, &mut problems) {
        Some(rest) if problems.is_empty() => Ok(Arc::new(SalesforceSync {
            rest,
            object,
            person,
            key,
        })),
        _ => Err(problems),
    }
}

/// A Salesforce dateTime (`2026-12-06T10:42:06.000+0000`).
pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A field's value as text: numbers without a needless `.0`, booleans as
/// `true`/`false`, empty as nothing.
fn text(v: Option<&Value>) -> Val {
    match v? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        other => Some(other.to_string()),
    }
}

fn failed(f: Failure) -> SyncError {
    SyncError(f.outcome)
}

/// A record error of an sObject Collections answer.
fn record_error(r: &Value) -> SyncError {
    let errors = super::api::parse_errors(&r["errors"]);
    let message = if errors.is_empty() {
        "Salesforce refused the record without saying why".to_string()
    } else {
        super::api::describe(&errors)
    };
    let retry = errors
        .iter()
        .any(|e| e.code == "UNABLE_TO_LOCK_ROW" || e.code == "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    SyncError(if retry {
        Outcome::retry(ErrorClass::Vendor, message)
    } else {
        Outcome::permanent(ErrorClass::Vendor, message)
    })
}

impl SalesforceSync {
    fn api_name(&self) -> &str {
        &self.object
    }

    /// `WHERE` conditions every read of the object carries.
    fn base_filter(&self) -> Option<&'static str> {
        (self.person == Some(PersonObject::Lead)).then_some("IsConverted = false")
    }

    /// Runs a query or reads its next batch; returns the records and the
    /// next batch's path (after the API version), if any.
    async fn query_page(
        &self,
        soql: Option<&str>,
        next: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), SyncError> {
        let (res, _) = match next {
            Some(path) => self.rest.call(Method::GET, path, &[], None).await,
            None => {
                let q = soql.unwrap_or_default();
                self.rest
                    .call(Method::GET, "/query", &[("q", q)], None)
                    .await
            }
        };
        let v = res.map_err(failed)?;
        let records = v["records"].as_array().cloned().unwrap_or_default();
        let data = self.rest.data_path();
        let next = match (v["done"].as_bool(), v["nextRecordsUrl"].as_str()) {
            (Some(false), Some(url)) => Some(
                url.strip_prefix(data.as_str())
                    .filter(|p| p.starts_with("/query/"))
                    .ok_or_else(|| {
                        SyncError(Outcome::permanent(
                            ErrorClass::Vendor,
                            format!(
                                "Salesforce answered a nextRecordsUrl outside {data}/query: {url}"
                            ),
                        ))
                    })?
                    .to_string(),
            ),
            (Some(false), None) => {
                return Err(SyncError(Outcome::permanent(
                    ErrorClass::Vendor,
                    "Salesforce said the query is not done but gave no nextRecordsUrl",
                )));
            }
            _ => None,
        };
        Ok((records, next))
    }

    /// Ids of records with these match values (lower-cased value →
    /// oldest id).
    async fn find_by_key(&self, keys: &[&str]) -> Result<BTreeMap<String, String>, SyncError> {
        let mut out = BTreeMap::new();
        for chunk in keys.chunks(LOOKUP) {
            let list: Vec<String> = chunk.iter().map(|e| soql_quote(e)).collect();
            let mut soql = format!(
                "SELECT Id, {key} FROM {} WHERE {key} IN ({})",
                self.api_name(),
                list.join(", "),
                key = self.key,
            );
            if let Some(f) = self.base_filter() {
                soql.push_str(&format!(" AND {f}"));
            }
            soql.push_str(" ORDER BY CreatedDate ASC");
            let mut next = None;
            loop {
                let (records, more) = self.query_page(Some(&soql), next.as_deref()).await?;
                for r in records {
                    if let (Some(e), Some(id)) = (text(r.get(&self.key)), text(r.get("Id"))) {
                        out.entry(e.trim().to_lowercase()).or_insert(id);
                    }
                }
                match more {
                    Some(n) => next = Some(n),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// The record body of an sObject Collections request.
    fn body(&self, op: &WriteOp, id: Option<&str>) -> Value {
        let mut m = Map::new();
        m.insert("attributes".into(), json!({"type": self.api_name()}));
        for (k, v) in &op.fields {
            m.insert(k.clone(), json!(v));
        }
        match id {
            Some(id) => {
                m.insert("id".into(), json!(id));
            }
            None => {
                if let Some(k) = &op.key
                    && m.get(&self.key).is_none_or(Value::is_null)
                {
                    m.insert(self.key.clone(), json!(k));
                }
                let Some(person) = self.person else {
                    // Accounts, Opportunities and custom objects get what
                    // the sync maps: their required fields (Name, StageName,
                    // CloseDate …) must be among the synced fields, else
                    // Salesforce refuses the record with its reason.
                    return Value::Object(m);
                };
                // Required on create: a last name (the address's local
                // part until someone knows better) and, for a Lead, a
                // company ("[not provided]", Salesforce's own convention).
                let email = op.key.as_deref().unwrap_or_default();
                if m.get("LastName").is_none_or(Value::is_null) {
                    let local = email.split('@').next().unwrap_or(email);
                    m.insert("LastName".into(), json!(local));
                }
                if person == PersonObject::Lead && m.get("Company").is_none_or(Value::is_null) {
                    m.insert("Company".into(), json!("[not provided]"));
                }
            }
        }
        Value::Object(m)
    }

    /// One sObject Collections request; one result per body, in order.
    async fn collection(
        &self,
        method: Method,
        bodies: Vec<Value>,
    ) -> Vec<Result<String, SyncError>> {
        let n = bodies.len();
        let body = json!({"allOrNone": false, "records": bodies});
        // Records the sync creates mirror records of the other system: a
        // duplicate rule's alert is saved through (a blocking rule still
        // refuses, with its message).
        let (res, _) = self
            .rest
            .call_with(method, "/composite/sobjects", &[], Some(&body), true)
            .await;
        match res {
            Err(f) => (0..n).map(|_| Err(failed(f.clone()))).collect(),
            Ok(v) => {
                let results = v.as_array().cloned().unwrap_or_default();
                (0..n)
                    .map(|i| match results.get(i) {
                        Some(r) if r["success"].as_bool() == Some(true) => text(r.get("id"))
                            .ok_or_else(|| {
                                SyncError(Outcome::permanent(
                                    ErrorClass::Vendor,
                                    "Salesforce's answer did not name the record",
                                ))
                            }),
                        Some(r) => Err(record_error(r)),
                        None => Err(SyncError(Outcome::retry(
                            ErrorClass::Vendor,
                            "Salesforce's answer is missing records",
                        ))),
                    })
                    .collect()
            }
        }
    }
}

#[async_trait]
impl SyncSystem for SalesforceSync {
    fn consistent(&self) -> bool {
        true
    }

    async fn changes(
        &self,
        since: Option<DateTime<Utc>>,
        page: Option<&str>,
        fields: &[String],
    ) -> Result<Page, SyncError> {
        // (A task sync may have no match key.)
        let mut select: Vec<&str> = ["Id", &self.key, "LastModifiedDate", "SystemModstamp"]
            .into_iter()
            .filter(|f| !f.is_empty())
            .collect();
        for f in fields {
            if !select.iter().any(|s| s.eq_ignore_ascii_case(f)) {
                select.push(f);
            }
        }
        let mut filters: Vec<String> = self.base_filter().map(str::to_string).into_iter().collect();
        if let Some(t) = since {
            // Second precision, `>=`: the overlap re-reads the boundary.
            filters.push(format!(
                "SystemModstamp >= {}",
                t.format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
        let mut soql = format!("SELECT {} FROM {}", select.join(", "), self.api_name());
        if !filters.is_empty() {
            soql.push_str(&format!(" WHERE {}", filters.join(" AND ")));
        }
        soql.push_str(" ORDER BY SystemModstamp ASC");
        let (rows, next) = self.query_page(Some(&soql), page).await?;
        let mut records = Vec::new();
        for r in rows {
            let Some(id) = text(r.get("Id")) else {
                continue;
            };
            let stamp = parse_time(&r["SystemModstamp"]);
            let modified_at = parse_time(&r["LastModifiedDate"])
                .or(stamp)
                .unwrap_or_else(Utc::now);
            records.push(RemoteRecord {
                id,
                key: text(r.get(&self.key)).map(|k| {
                    if self.person.is_some() {
                        k.trim().to_lowercase()
                    } else {
                        k
                    }
                }),
                modified_at,
                cursor_at: stamp,
                fields: fields.iter().map(|f| (f.clone(), text(r.get(f)))).collect(),
            });
        }
        Ok(Page { records, next })
    }

    async fn write(&self, ops: &[WriteOp]) -> Vec<Result<String, SyncError>> {
        let mut out: Vec<Option<Result<String, SyncError>>> = vec![None; ops.len()];
        let unknown: Vec<&str> = ops
            .iter()
            .filter(|o| o.id.is_none())
            .filter_map(|o| o.key.as_deref())
            .collect();
        let found = if unknown.is_empty() {
            Ok(BTreeMap::new())
        } else {
            self.find_by_key(&unknown).await
        };
        let found = match found {
            Ok(f) => f,
            Err(e) => {
                // Without the lookup a create could duplicate a record:
                // those writes wait for the next round.
                for (i, op) in ops.iter().enumerate() {
                    if op.id.is_none() {
                        out[i] = Some(Err(e.clone()));
                    }
                }
                BTreeMap::new()
            }
        };
        let mut updates: Vec<(usize, Value)> = Vec::new();
        let mut creates: Vec<(usize, Value)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            let by_key = op
                .key
                .as_ref()
                .and_then(|k| found.get(&k.to_lowercase()))
                .map(String::as_str);
            match op.id.as_deref().or(by_key) {
                Some(id) => updates.push((i, self.body(op, Some(id)))),
                None => creates.push((i, self.body(op, None))),
            }
        }
        for (method, list) in [(Method::PATCH, updates), (Method::POST, creates)] {
            for chunk in list.chunks(COLLECTION) {
                let bodies = chunk.iter().map(|(_, b)| b.clone()).collect();
                let results = self.collection(method.clone(), bodies).await;
                for ((i, _), r) in chunk.iter().zip(results) {
                    out[*i] = Some(r);
                }
            }
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(SyncError(Outcome::permanent(
                        ErrorClass::Vendor,
                        "not sent",
                    )))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_salesforce_values_and_times() {
        assert_eq!(text(Some(&json!(42.0))), Some("42".into()));
        assert_eq!(text(Some(&json!(4.5))), Some("4.5".into()));
        assert_eq!(text(Some(&json!(true))), Some("true".into()));
        assert_eq!(text(Some(&json!(""))), None);
        assert_eq!(text(Some(&Value::Null)), None);
        let t = parse_time(&json!("2026-12-06T10:42:06.123+0000")).unwrap();
        assert_eq!(t.timestamp_millis() % 1000, 123);
        assert_eq!(
            parse_time(&json!("2026-12-06T10:42:06Z"))
                .unwrap()
                .timestamp(),
            t.timestamp()
        );
        assert!(parse_time(&json!("yesterday")).is_none());
    }
}
