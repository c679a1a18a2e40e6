//! HubSpot as a sync system: records of one object type (contacts,
//! companies, deals or a custom object) changed since a time through the
//! CRM search API (`lastmodifieddate` for contacts, `hs_lastmodifieddate`
//! for the others, ≥ since, oldest first, 100 a page), and field writes
//! through batch update (known ids) and, for records not seen yet, batch
//! upsert by email (contacts) or a search by the match property (`IN`, 100
//! values a search) followed by batch create with the match value (other
//! objects), 100 inputs a request.
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
use crate::config::sync::{ObjectSpec, SyncObject};
use crate::connectors::crm::{self, CommonSettings};
use crate::connectors::{BuildContext, ErrorClass, Outcome};
use crate::sync::{Page, RemoteRecord, SyncError, SyncSystem, WriteOp};

const PAGE: usize = 100;
/// HubSpot refuses `after` beyond 10,000 results of one search.
const SEARCH_WINDOW: usize = 10_000;

/// HubSpot's search `IN` filter takes at most 100 values.
const IN_VALUES: usize = 100;

struct HubSpotSync {
    api: Api,
    /// The object type's path segment (`contacts`, `companies`, `deals`,
    /// a custom object's name or type id).
    object_type: String,
    /// The property `latest` compares and the cursor follows.
    modified: &'static str,
    /// The property that matches records (`email` for contacts).
    key: String,
    contacts: bool,
}

/// The sync system of a `hubspot` destination's settings, for `spec`'s
/// object.
pub fn system(
    ctx: &BuildContext<'_>,
    spec: &ObjectSpec,
) -> Result<Arc<dyn SyncSystem>, Vec<Problem>> {
    let (common, s): (CommonSettings, Settings) = crm::parse_split(ctx.settings)?;
    let version = super::api_version(&s).map_err(|p| vec![p])?;
    let (client, base, token) =
        crate::sync::client_parts(ctx, &common, &s.token_env, DEFAULT_BASE_URL)?;
    let object_type = match spec.object {
        SyncObject::Contact => "contacts".to_string(),
        SyncObject::Company => "companies".to_string(),
        SyncObject::Deal => "deals".to_string(),
        SyncObject::Custom => spec.vendor_object.clone().unwrap_or_default(),
        SyncObject::Task => "tasks".to_string(),
    };
    let contacts = spec.object == SyncObject::Contact;
    Ok(Arc::new(HubSpotSync {
        api: Api::new(client, base, token, version, common.allow_private_networks),
        object_type,
        modified: if contacts {
            "lastmodifieddate"
        } else {
            "hs_lastmodifieddate"
        },
        key: if contacts {
            "email".to_string()
        } else {
            spec.match_field.clone().unwrap_or_default()
        },
        contacts,
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

/// The object type of an association field (`associations.companies`).
fn association(field: &str) -> Option<&str> {
    field.strip_prefix("associations.")
}

/// HubSpot's v4 association batch read takes at most 1,000 ids.
const ASSOCIATION_BATCH: usize = 1000;

impl HubSpotSync {
    /// The properties to read: the match key, the modification time and
    /// the synced properties (association fields are read apart).
    fn properties<'a>(&'a self, fields: &'a [String]) -> Vec<&'a str> {
        // (A task sync may have no match key.)
        let mut properties: Vec<&str> = [self.key.as_str(), self.modified]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        properties.extend(
            fields
                .iter()
                .map(String::as_str)
                .filter(|f| association(f).is_none()),
        );
        properties
    }

    /// The records a search or batch read (`rest` of the object's path)
    /// answers, with their association fields; and the whole answer.
    async fn records_of(
        &self,
        rest: &str,
        body: &Value,
        fields: &[String],
    ) -> Result<(Vec<RemoteRecord>, Value), SyncError> {
        let (res, _) = self
            .api
            .call(Method::POST, &self.objects(rest), Some(body))
            .await;
        let v = res.map_err(|f| SyncError(f.outcome))?;
        let mut records: Vec<RemoteRecord> = v["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| self.record(r, fields))
            .collect();
        self.with_associations(&mut records, fields).await?;
        Ok((records, v))
    }

    /// A record of a search or batch read answer.
    fn record(&self, r: &Value, fields: &[String]) -> Option<RemoteRecord> {
        let props = &r["properties"];
        let id = text(r.get("id"))?;
        let modified_at = parse_time(props.get(self.modified))
            .or_else(|| parse_time(r.get("updatedAt")))
            .unwrap_or_else(Utc::now);
        Some(RemoteRecord {
            id,
            key: text(props.get(&self.key)).map(|k| {
                if self.contacts {
                    k.trim().to_lowercase()
                } else {
                    k
                }
            }),
            modified_at,
            cursor_at: None,
            fields: fields
                .iter()
                .filter(|f| association(f).is_none())
                .map(|f| (f.clone(), text(props.get(f))))
                .collect(),
        })
    }

    /// Each record's associated ids of `to_type` (ascending).
    async fn associated(
        &self,
        ids: &[&str],
        to_type: &str,
    ) -> Result<BTreeMap<String, Vec<u64>>, SyncError> {
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for chunk in ids.chunks(ASSOCIATION_BATCH) {
            let inputs: Vec<Value> = chunk.iter().map(|id| json!({"id": id})).collect();
            let path = self.api.path(
                Family::Associations,
                &format!("/{}/{to_type}/batch/read", self.object_type),
            );
            let (res, _) = self
                .api
                .call(Method::POST, &path, Some(&json!({"inputs": inputs})))
                .await;
            let v = res.map_err(|f| SyncError(f.outcome))?;
            for r in v["results"].as_array().into_iter().flatten() {
                let Some(from) = text(r["from"].get("id")) else {
                    continue;
                };
                let mut to: Vec<u64> = r["to"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| text(t.get("toObjectId"))?.parse().ok())
                    .collect();
                to.sort_unstable();
                out.insert(from, to);
            }
        }
        Ok(out)
    }

    /// Fills the association fields: the associated records of each type,
    /// `;`-separated, the oldest first.
    async fn with_associations(
        &self,
        records: &mut [RemoteRecord],
        fields: &[String],
    ) -> Result<(), SyncError> {
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        for field in fields {
            let Some(to_type) = association(field) else {
                continue;
            };
            let found = if ids.is_empty() {
                BTreeMap::new()
            } else {
                self.associated(&ids, to_type).await?
            };
            for r in records.iter_mut() {
                let v = found
                    .get(&r.id)
                    .filter(|to| !to.is_empty())
                    .map(|to| to.iter().map(u64::to_string).collect::<Vec<_>>().join(";"));
                r.fields.insert(field.clone(), v);
            }
        }
        Ok(())
    }

    /// Makes the record's associations of each association field the ones
    /// the op names (`;`-separated ids): the others removed (v4 DELETE),
    /// the missing ones added (default association).
    async fn write_associations(&self, id: &str, op: &WriteOp) -> Result<(), SyncError> {
        for (field, value) in &op.fields {
            let Some(to_type) = association(field) else {
                continue;
            };
            let current = self
                .associated(&[id], to_type)
                .await?
                .remove(id)
                .unwrap_or_default();
            let mut wanted: Vec<u64> = Vec::new();
            for v in value.as_deref().unwrap_or_default().split(';') {
                let v = v.trim();
                if v.is_empty() {
                    continue;
                }
                wanted.push(v.parse().map_err(|_| {
                    failed(format!("{v:?} is not a HubSpot record id for {field}"))
                })?);
            }
            for other in current.iter().filter(|c| !wanted.contains(c)) {
                let path = self.api.path(
                    Family::RecordAssociations,
                    &format!("/{}/{id}/associations/{to_type}/{other}", self.object_type),
                );
                let (res, _) = self.api.call(Method::DELETE, &path, None).await;
                res.map_err(|f| SyncError(f.outcome))?;
            }
            for w in wanted.iter().filter(|w| !current.contains(w)) {
                let path = self.api.path(
                    Family::RecordAssociations,
                    &format!(
                        "/{}/{id}/associations/default/{to_type}/{w}",
                        self.object_type
                    ),
                );
                let (res, _) = self.api.call(Method::PUT, &path, None).await;
                res.map_err(|f| SyncError(f.outcome))?;
            }
        }
        Ok(())
    }

    fn objects(&self, rest: &str) -> String {
        self.api
            .path(Family::Objects, &format!("/{}{rest}", self.object_type))
    }

    /// Ids of records whose match property holds one of `keys` (lower-cased
    /// value → the oldest such record's id).
    async fn find_by_key(&self, keys: &[&str]) -> Result<BTreeMap<String, String>, SyncError> {
        let mut out = BTreeMap::new();
        for chunk in keys.chunks(IN_VALUES) {
            let mut after: Option<String> = None;
            loop {
                let mut body = json!({
                    "filterGroups": [{"filters": [{
                        "propertyName": self.key,
                        "operator": "IN",
                        "values": chunk,
                    }]}],
                    "properties": [self.key],
                    "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                    "limit": PAGE,
                });
                if let Some(a) = &after {
                    body["after"] = json!(a);
                }
                let (res, _) = self
                    .api
                    .call(Method::POST, &self.objects("/search"), Some(&body))
                    .await;
                let v = res.map_err(|f| SyncError(f.outcome))?;
                for r in v["results"].as_array().into_iter().flatten() {
                    if let (Some(k), Some(id)) =
                        (text(r["properties"].get(&self.key)), text(r.get("id")))
                    {
                        out.entry(k.to_lowercase()).or_insert(id);
                    }
                }
                match v["paging"]["next"]["after"].as_str() {
                    Some(a) if a.parse::<usize>().is_ok_and(|n| n + PAGE <= SEARCH_WINDOW) => {
                        after = Some(a.to_string())
                    }
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    /// Batch create of `chunk` (≤ 100 ops), each with its match value; the
    /// results are matched to the inputs by `objectWriteTraceId` (HubSpot
    /// does not promise their order).
    async fn create(
        &self,
        ops: &[WriteOp],
        chunk: &[usize],
        props: &(dyn Fn(&WriteOp) -> Value + Sync),
    ) -> Vec<Result<String, SyncError>> {
        let inputs: Vec<Value> = chunk
            .iter()
            .map(|&i| {
                let mut p = props(&ops[i]);
                if let Some(k) = &ops[i].key
                    && p.get(&self.key).is_none()
                {
                    p[&self.key] = json!(k);
                }
                json!({"properties": p, "objectWriteTraceId": i.to_string()})
            })
            .collect();
        let (res, _) = self
            .api
            .call(
                Method::POST,
                &self.objects("/batch/create"),
                Some(&json!({"inputs": inputs})),
            )
            .await;
        let v = match res {
            Ok(v) => v,
            Err(f) => {
                return chunk
                    .iter()
                    .map(|_| Err(SyncError(f.outcome.clone())))
                    .collect();
            }
        };
        let ids: BTreeMap<String, String> = v["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((text(r.get("objectWriteTraceId"))?, text(r.get("id"))?)))
            .collect();
        let refused: BTreeMap<String, String> = v["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let trace = text(e["context"]["objectWriteTraceId"].get(0))
                    .or_else(|| text(e.get("objectWriteTraceId")))?;
                Some((trace, text(e.get("message")).unwrap_or_default()))
            })
            .collect();
        chunk
            .iter()
            .map(|i| {
                let trace = i.to_string();
                match (ids.get(&trace), refused.get(&trace)) {
                    (Some(id), _) => Ok(id.clone()),
                    (None, Some(m)) => Err(failed(format!("HubSpot refused the record: {m}"))),
                    (None, None) => Err(failed("HubSpot's create answer did not name the record")),
                }
            })
            .collect()
    }
}

#[async_trait]
impl SyncSystem for HubSpotSync {
    async fn changes(
        &self,
        since: Option<DateTime<Utc>>,
        page: Option<&str>,
        fields: &[String],
    ) -> Result<Page, SyncError> {
        let properties = self.properties(fields);
        let mut body = json!({
            "sorts": [{"propertyName": self.modified, "direction": "ASCENDING"}],
            "properties": properties,
            "limit": PAGE,
        });
        if let Some(t) = since {
            body["filterGroups"] = json!([{"filters": [{
                "propertyName": self.modified,
                "operator": "GTE",
                "value": t.timestamp_millis().to_string(),
            }]}]);
        }
        if let Some(after) = page {
            body["after"] = json!(after);
        }
        let (records, v) = self.records_of("/search", &body, fields).await?;
        let next = v["paging"]["next"]["after"]
            .as_str()
            .filter(|a| a.parse::<usize>().is_ok_and(|n| n + PAGE <= SEARCH_WINDOW))
            .map(str::to_string);
        Ok(Page { records, next })
    }

    fn swept(&self, fields: &[String]) -> bool {
        fields.iter().any(|f| association(f).is_some())
    }

    async fn read(
        &self,
        ids: &[String],
        fields: &[String],
    ) -> Result<Vec<RemoteRecord>, SyncError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(PAGE) {
            let inputs: Vec<Value> = chunk.iter().map(|id| json!({"id": id})).collect();
            let body = json!({"inputs": inputs, "properties": self.properties(fields)});
            // Ids no longer there come back in `errors` (207): left out.
            out.extend(self.records_of("/batch/read", &body, fields).await?.0);
        }
        Ok(out)
    }

    async fn write(&self, ops: &[WriteOp]) -> Vec<Result<String, SyncError>> {
        let results = self.write_properties(ops).await;
        let mut out = Vec::with_capacity(ops.len());
        for (op, r) in ops.iter().zip(results) {
            out.push(match r {
                Ok(id) => self.write_associations(&id, op).await.map(|()| id),
                Err(e) => Err(e),
            });
        }
        out
    }
}

impl HubSpotSync {
    async fn write_properties(&self, ops: &[WriteOp]) -> Vec<Result<String, SyncError>> {
        let mut out: Vec<Option<Result<String, SyncError>>> = vec![None; ops.len()];
        let mut found: BTreeMap<usize, String> = BTreeMap::new();
        if !self.contacts {
            // Records the sync has no id for: found by their match value
            // (a record made since the last poll, or by a write cut short)
            // before anything is created.
            let wanted: Vec<usize> = (0..ops.len())
                .filter(|&i| ops[i].id.is_none() && ops[i].key.is_some())
                .collect();
            match self
                .find_by_key(
                    &wanted
                        .iter()
                        .filter_map(|&i| ops[i].key.as_deref())
                        .collect::<Vec<_>>(),
                )
                .await
            {
                Ok(ids) => {
                    for &i in &wanted {
                        if let Some(id) = ops[i]
                            .key
                            .as_deref()
                            .and_then(|k| ids.get(&k.to_lowercase()))
                        {
                            found.insert(i, id.clone());
                        }
                    }
                }
                Err(e) => {
                    // Without the lookup a create could duplicate a
                    // record: those writes wait for the next round.
                    for &i in &wanted {
                        out[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        let props = |op: &WriteOp| -> Value {
            op.fields
                .iter()
                .filter(|(k, _)| association(k).is_none())
                .map(|(k, v)| (k.clone(), json!(v.clone().unwrap_or_default())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let id_of = |i: usize| ops[i].id.clone().or_else(|| found.get(&i).cloned());
        let (known, unknown): (Vec<usize>, Vec<usize>) = (0..ops.len())
            .filter(|&i| out[i].is_none())
            .partition(|&i| id_of(i).is_some());
        for chunk in known.chunks(PAGE) {
            let inputs: Vec<Value> = chunk
                .iter()
                .map(|&i| json!({"id": id_of(i), "properties": props(&ops[i])}))
                .collect();
            let (res, _) = self
                .api
                .call(
                    Method::POST,
                    &self.objects("/batch/update"),
                    Some(&json!({"inputs": inputs})),
                )
                .await;
            for &i in chunk {
                out[i] = Some(match &res {
                    Ok(_) => Ok(id_of(i).unwrap_or_default()),
                    Err(f) => Err(SyncError(f.outcome.clone())),
                });
            }
        }
        if !self.contacts {
            for chunk in unknown.chunks(PAGE) {
                let results = self.create(ops, chunk, &props).await;
                for (&i, r) in chunk.iter().zip(results) {
                    out[i] = Some(r);
                }
            }
            return out
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(failed("not sent"))))
                .collect();
        }
        for chunk in unknown.chunks(PAGE) {
            let inputs: Vec<Value> = chunk
                .iter()
                .map(|&i| {
                    let email = ops[i].key.clone().unwrap_or_default();
                    let mut p = props(&ops[i]);
                    p["email"] = json!(email);
                    json!({"id": email, "idProperty": "email", "properties": p})
                })
                .collect();
            let (res, _) = self
                .api
                .call(
                    Method::POST,
                    &self.objects("/batch/upsert"),
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
                    Ok(_) => ops[i]
                        .key
                        .as_ref()
                        .and_then(|e| ids.get(e))
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
