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
//! A deal's contacts (`OpportunityContactRole` as a field) are the
//! Opportunity's contact roles (of the field's `role`, when it names one):
//! read for every Opportunity a poll returns, and — since adding or
//! removing a role moves no Opportunity's modification time — polled
//! apart by their own `SystemModstamp` after the Opportunities (a last
//! page: the Opportunities whose roles changed) and read again for every
//! linked Opportunity by the sweep, which is what sees a role deleted.
//! Written by comparing with the roles the Opportunity has: the missing
//! ones created, the others deleted, through sObject Collections. A
//! contact named twice (Salesforce allows it) counts once.
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
use crate::config::sync::{CONTACT_ROLES, ObjectSpec, SyncObject};
use crate::connectors::crm::{self, CommonSettings};
use crate::connectors::{BuildContext, ErrorClass, Outcome};
use crate::sync::engine::Val;
use crate::sync::{Page, RemoteRecord, SyncError, SyncSystem, WriteOp};

/// sObject Collections take at most 200 records a request.
const COLLECTION: usize = 200;
/// Emails per `Email IN (...)` lookup (well inside SOQL's length limit).
const LOOKUP: usize = 100;
/// The page token of the last page of a poll: Opportunities whose contact
/// roles changed (a query locator path starts with `/query/`).
const ROLES_PAGE: &str = "contact-roles";

struct SalesforceSync {
    rest: Rest,
    /// The sObject's API name.
    object: String,
    /// The person object when syncing contacts (creates get a last name
    /// and, for a Lead, a company).
    person: Option<PersonObject>,
    /// The field that matches records (`Email` for people).
    key: String,
    /// The `Role` the deal's contacts field keeps (None: every role).
    role: Option<String>,
}

/// An Opportunity's contact roles as one value: the Contact ids,
/// `;`-separated, each once.
#[derive(Debug, Default)]
struct Roles {
    contacts: std::collections::BTreeSet<String>,
    /// The latest `LastModifiedDate` and `SystemModstamp` among them.
    modified: Option<DateTime<Utc>>,
    stamp: Option<DateTime<Utc>>,
}

impl Roles {
    fn value(&self) -> Val {
        (!self.contacts.is_empty()).then(|| {
            self.contacts
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(";")
        })
    }
}

/// The latest of two times.
fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
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
            role: spec.contact_role.clone(),
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
        for (k, v) in op.fields.iter().filter(|(k, _)| *k != CONTACT_ROLES) {
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

impl SalesforceSync {
    /// Every page of a query's records.
    async fn query_all(&self, soql: &str) -> Result<Vec<Value>, SyncError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let (records, more) = self.query_page(Some(soql), next.as_deref()).await?;
            out.extend(records);
            match more {
                Some(n) => next = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// The `AND Role = '…'` of the field's role, if any.
    fn role_filter(&self) -> String {
        self.role
            .as_deref()
            .map(|r| format!(" AND Role = {}", soql_quote(r)))
            .unwrap_or_default()
    }

    /// The contact roles (`Id`, `ContactId`, times) of these Opportunities.
    async fn contact_roles(&self, opportunities: &[&str]) -> Result<Vec<Value>, SyncError> {
        let mut out = Vec::new();
        for chunk in opportunities.chunks(LOOKUP) {
            let list: Vec<String> = chunk.iter().map(|id| soql_quote(id)).collect();
            let soql = format!(
                "SELECT Id, OpportunityId, ContactId, LastModifiedDate, SystemModstamp FROM {CONTACT_ROLES} WHERE OpportunityId IN ({}){} ORDER BY Id ASC",
                list.join(", "),
                self.role_filter(),
            );
            out.extend(self.query_all(&soql).await?);
        }
        Ok(out)
    }

    /// Each Opportunity's contact roles as a value.
    async fn roles_of(&self, opportunities: &[&str]) -> Result<BTreeMap<String, Roles>, SyncError> {
        let mut out: BTreeMap<String, Roles> = BTreeMap::new();
        for r in self.contact_roles(opportunities).await? {
            let (Some(opp), Some(contact)) =
                (text(r.get("OpportunityId")), text(r.get("ContactId")))
            else {
                continue;
            };
            let roles = out.entry(opp).or_default();
            roles.contacts.insert(contact);
            roles.modified = later(roles.modified, parse_time(&r["LastModifiedDate"]));
            roles.stamp = later(roles.stamp, parse_time(&r["SystemModstamp"]));
        }
        Ok(out)
    }

    /// The SELECT list of a read: the key, the times and the synced fields
    /// (the contact roles are read apart).
    fn select<'a>(&'a self, fields: &'a [String]) -> Vec<&'a str> {
        // (A task sync may have no match key.)
        let mut select: Vec<&str> = ["Id", &self.key, "LastModifiedDate", "SystemModstamp"]
            .into_iter()
            .filter(|f| !f.is_empty())
            .collect();
        for f in fields.iter().filter(|f| *f != CONTACT_ROLES) {
            if !select.iter().any(|s| s.eq_ignore_ascii_case(f)) {
                select.push(f);
            }
        }
        select
    }

    /// Rows of the object as records, with their contact roles when the
    /// sync keeps them.
    async fn records(
        &self,
        rows: Vec<Value>,
        fields: &[String],
    ) -> Result<Vec<RemoteRecord>, SyncError> {
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
                fields: fields
                    .iter()
                    .filter(|f| *f != CONTACT_ROLES)
                    .map(|f| (f.clone(), text(r.get(f))))
                    .collect(),
            });
        }
        if fields.iter().any(|f| f == CONTACT_ROLES) {
            let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
            let mut roles = if ids.is_empty() {
                BTreeMap::new()
            } else {
                self.roles_of(&ids).await?
            };
            for r in &mut records {
                let of = roles.remove(&r.id).unwrap_or_default();
                r.fields.insert(CONTACT_ROLES.to_string(), of.value());
                if let Some(m) = of.modified {
                    r.modified_at = r.modified_at.max(m);
                }
                r.cursor_at = later(r.cursor_at, of.stamp);
            }
        }
        Ok(records)
    }

    /// The records with these ids (those that exist).
    async fn by_ids(
        &self,
        ids: &[&str],
        fields: &[String],
    ) -> Result<Vec<RemoteRecord>, SyncError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(LOOKUP) {
            let list: Vec<String> = chunk.iter().map(|id| soql_quote(id)).collect();
            let mut soql = format!(
                "SELECT {} FROM {} WHERE Id IN ({})",
                self.select(fields).join(", "),
                self.api_name(),
                list.join(", ")
            );
            if let Some(f) = self.base_filter() {
                soql.push_str(&format!(" AND {f}"));
            }
            let rows = self.query_all(&soql).await?;
            out.extend(self.records(rows, fields).await?);
        }
        Ok(out)
    }

    /// The last page of a poll: the Opportunities whose contact roles were
    /// created or edited since `since`.
    async fn role_changes(
        &self,
        since: DateTime<Utc>,
        fields: &[String],
    ) -> Result<Vec<RemoteRecord>, SyncError> {
        let soql = format!(
            "SELECT OpportunityId FROM {CONTACT_ROLES} WHERE SystemModstamp >= {}{} ORDER BY SystemModstamp ASC",
            since.format("%Y-%m-%dT%H:%M:%SZ"),
            self.role_filter(),
        );
        let mut ids: Vec<String> = self
            .query_all(&soql)
            .await?
            .iter()
            .filter_map(|r| text(r.get("OpportunityId")))
            .collect();
        ids.sort();
        ids.dedup();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.by_ids(&ids, fields).await
    }

    /// Makes each Opportunity's contact roles the Contacts named (`;`-
    /// separated ids): the missing ones created (with the field's role),
    /// the others deleted. Per op index, the error that stopped it.
    async fn write_roles(&self, wanted: &[(usize, String, Val)]) -> BTreeMap<usize, SyncError> {
        let mut errors: BTreeMap<usize, SyncError> = BTreeMap::new();
        let opps: Vec<&str> = wanted.iter().map(|(_, id, _)| id.as_str()).collect();
        let current = match self.contact_roles(&opps).await {
            Ok(c) => c,
            Err(e) => return wanted.iter().map(|(i, _, _)| (*i, e.clone())).collect(),
        };
        let mut deletes: Vec<(usize, String)> = Vec::new();
        let mut creates: Vec<(usize, Value)> = Vec::new();
        for (i, opp, value) in wanted {
            let want: std::collections::BTreeSet<&str> = value
                .as_deref()
                .unwrap_or_default()
                .split(';')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            let mut have: std::collections::BTreeSet<String> = Default::default();
            for r in current
                .iter()
                .filter(|r| text(r.get("OpportunityId")).as_deref() == Some(opp))
            {
                let (Some(role), Some(contact)) = (text(r.get("Id")), text(r.get("ContactId")))
                else {
                    continue;
                };
                if want.contains(contact.as_str()) {
                    have.insert(contact);
                } else {
                    deletes.push((*i, role));
                }
            }
            for c in want.iter().filter(|c| !have.contains(**c)) {
                let mut body = json!({
                    "attributes": {"type": CONTACT_ROLES},
                    "OpportunityId": opp,
                    "ContactId": c,
                });
                if let Some(r) = &self.role {
                    body["Role"] = json!(r);
                }
                creates.push((*i, body));
            }
        }
        for chunk in deletes.chunks(COLLECTION) {
            let ids: Vec<&str> = chunk.iter().map(|(_, id)| id.as_str()).collect();
            let joined = ids.join(",");
            let (res, _) = self
                .rest
                .call(
                    Method::DELETE,
                    "/composite/sobjects",
                    &[("ids", joined.as_str()), ("allOrNone", "false")],
                    None,
                )
                .await;
            match res {
                Err(f) => {
                    for (i, _) in chunk {
                        errors.entry(*i).or_insert_with(|| failed(f.clone()));
                    }
                }
                Ok(v) => {
                    let results = v.as_array().cloned().unwrap_or_default();
                    for (n, (i, _)) in chunk.iter().enumerate() {
                        let Some(r) = results.get(n) else { continue };
                        // A role deleted meanwhile is as wanted.
                        let gone = super::api::parse_errors(&r["errors"]).iter().all(|e| {
                            e.code == "ENTITY_IS_DELETED" || e.code == "INVALID_CROSS_REFERENCE_KEY"
                        });
                        if r["success"].as_bool() != Some(true) && !gone {
                            errors.entry(*i).or_insert_with(|| record_error(r));
                        }
                    }
                }
            }
        }
        for chunk in creates.chunks(COLLECTION) {
            let bodies = chunk.iter().map(|(_, b)| b.clone()).collect();
            let results = self.collection(Method::POST, bodies).await;
            for ((i, _), r) in chunk.iter().zip(results) {
                if let Err(e) = r {
                    errors.entry(*i).or_insert(e);
                }
            }
        }
        errors
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
        let roles = fields.iter().any(|f| f == CONTACT_ROLES);
        if page == Some(ROLES_PAGE) {
            let records = match since {
                Some(t) => self.role_changes(t, fields).await?,
                None => Vec::new(),
            };
            return Ok(Page {
                records,
                next: None,
            });
        }
        let mut filters: Vec<String> = self.base_filter().map(str::to_string).into_iter().collect();
        if let Some(t) = since {
            // Second precision, `>=`: the overlap re-reads the boundary.
            filters.push(format!(
                "SystemModstamp >= {}",
                t.format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
        let mut soql = format!(
            "SELECT {} FROM {}",
            self.select(fields).join(", "),
            self.api_name()
        );
        if !filters.is_empty() {
            soql.push_str(&format!(" WHERE {}", filters.join(" AND ")));
        }
        soql.push_str(" ORDER BY SystemModstamp ASC");
        let (rows, next) = self.query_page(Some(&soql), page).await?;
        let records = self.records(rows, fields).await?;
        // After the last page of records, the records whose contact roles
        // changed (a first poll reads every record, roles and all).
        let next = next.or_else(|| (roles && since.is_some()).then(|| ROLES_PAGE.to_string()));
        Ok(Page { records, next })
    }

    fn swept(&self, fields: &[String]) -> bool {
        fields.iter().any(|f| f == CONTACT_ROLES)
    }

    async fn read(
        &self,
        ids: &[String],
        fields: &[String],
    ) -> Result<Vec<RemoteRecord>, SyncError> {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.by_ids(&ids, fields).await
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
                // Only contact roles to write: the record stays as it is.
                Some(id) if op.fields.keys().all(|k| k == CONTACT_ROLES) => {
                    out[i] = Some(Ok(id.to_string()));
                }
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
        let roles: Vec<(usize, String, Val)> = ops
            .iter()
            .enumerate()
            .filter_map(|(i, op)| {
                let value = op.fields.get(CONTACT_ROLES)?;
                let Some(Ok(id)) = &out[i] else { return None };
                Some((i, id.clone(), value.clone()))
            })
            .collect();
        if !roles.is_empty() {
            for (i, e) in self.write_roles(&roles).await {
                out[i] = Some(Err(e));
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
