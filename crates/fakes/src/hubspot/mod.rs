//! Fake HubSpot: the CRM v3 objects API (contacts, companies, deals, notes,
//! tasks, meetings, custom objects), the v4 associations API, properties, deal pipelines,
//! account info, the Lists API (lists and their memberships, see `lists`),
//! forms with their submissions and marketing events with their
//! participations (see `marketing`),
//! behind a private-app token — under both path schemes:
//! the numbered (legacy) `/crm/v3/objects/…`, `/crm/v4/associations/…` and
//! the date-versioned `/crm/objects/2026-03/…`, `/crm/associations/2026-03/…`,
//! `/crm/properties/2026-03/…`, `/crm/pipelines/2026-03/…`,
//! `/account-info/2026-03/details` ("2026-03 API reference": `/api-name/
//! {version}/resource`), all on one state. A dated version the fake does not
//! list ([`HubSpotConfig::dated_versions`]) is a 404, as an unreleased one is.
//!
//! # Followed references
//! - developers.hubspot.com API reference: "Contacts" (create, update, read by
//!   `idProperty`, `batch/upsert`, `search`, `gdpr-delete`), "Companies",
//!   "Deals", "Notes", "Tasks", "Meetings" (`hs_timestamp` defaults to
//!   `hs_meeting_start_time`; `hs_meeting_outcome` options), "Custom objects", "Properties", "Pipelines",
//!   batch `create` (inputs with `properties`, inline `associations` and
//!   `objectWriteTraceId`, echoed in the results) and batch `update` (by id or
//!   `idProperty`; missing records reported in `errors` with 207),
//!   "Search" (filterGroups/operators, `total`/`paging.next.after`),
//!   "Associations v4" (default associations, `batch/associate/default`,
//!   inline `associations` with `associationCategory`/`associationTypeId`) and
//!   the association type ids of the official client libraries
//!   (`AssociationType`: note→contact 202, task→contact 204, meeting→contact
//!   200, deal→contact 3,
//!   contact→company 279, ...).
//! - "API usage guidelines and limits": private apps get 100 requests per
//!   10 s (rolling) and a daily limit; every response carries
//!   `X-HubSpot-RateLimit-Daily`, `-Daily-Remaining`, `-Interval-Milliseconds`,
//!   `-Max`, `-Remaining`; a 429 answers
//!   `{"status":"error","message":"You have reached your ten_secondly_rolling limit.",
//!   "errorType":"RATE_LIMIT","correlationId","policyName":"TEN_SECONDLY_ROLLING","requestId"}`
//!   (`DAILY` for the daily limit). The search endpoints have their own
//!   per-second limit.
//! - Error handling: `{"status":"error","message","correlationId","category"}`;
//!   `VALIDATION_ERROR` with `Property values were not valid: [{"isValid":false,
//!   "message","error","name"}]` (`PROPERTY_DOESNT_EXIST`, `INVALID_OPTION`,
//!   `READ_ONLY_VALUE`, `INVALID_EMAIL`), `CONFLICT` "Contact already exists.
//!   Existing ID: N", `INVALID_AUTHENTICATION` for a missing or wrong token.
//!
//! # What it enforces
//! - `Authorization: Bearer <private app token>` on every request (401 otherwise).
//! - Writing a property the object does not have, a read-only property, an
//!   enumeration value that is not an option (`lifecyclestage`,
//!   `hs_lead_status`, task status/priority/type, custom enumerations), an
//!   invalid email, a deal `pipeline` or `dealstage` that is not in the
//!   configured pipelines, a note/task without `hs_timestamp`, a custom object
//!   without its required properties.
//! - Contact email uniqueness (409 on create/update), batch inputs ≤ 100 and
//!   unique ids, `idProperty` must be a unique-value property, search limits
//!   (5 filter groups, 6 filters each, 18 in total, `limit` ≤ 200).
//! - Inline associations and v4 associations: the type id must exist for the
//!   pair of object types and both records must exist.
//! - Rate limits: rolling window, daily limit, search per-second limit, all
//!   configurable.
//!
//! # What it simplifies
//! - One portal, one user; archived records are gone (no restore). No
//!   property history, no `propertiesWithHistory`, no lifecycle-stage ordering
//!   rule, numbers and dates are stored as given (not type-checked).
//! - Search is consistent unless [`HubSpotConfig::search_index_delay`] is set;
//!   `query` matches a substring of any property.
//! - Exact texts of some errors are not documented and are modelled on the
//!   documented shape: the batch-size message, `REQUIRED` property errors,
//!   invalid associations, and 404 bodies (`OBJECT_NOT_FOUND`, "resource not
//!   found"). HubSpot documents no `Retry-After` on 429s, so none is sent:
//!   clients should wait `X-HubSpot-RateLimit-Interval-Milliseconds`.

mod associations;
mod changes;

pub use changes::{WebhookSent, WebhookTarget};
mod errors;
mod lists;
mod marketing;
mod objects;

pub use lists::HubSpotList;
pub use marketing::{FormSubmission, HubSpotForm, MarketingEvent, Participation};
mod schema;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use tokio::net::TcpListener;

use crate::common::{FakeServer, Faults, RequestLog, RollingWindow};

use schema::Schema;

/// How a property's values are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyKind {
    Text,
    Number,
    Date,
    DateTime,
    Bool,
    /// A select with these internal values; anything else is `INVALID_OPTION`.
    Enumeration(Vec<String>),
}

/// A custom property defined in the fake portal.
#[derive(Debug, Clone)]
pub struct HubSpotProperty {
    /// `contacts`, `companies`, `deals`, `notes`, `tasks` or a custom object's name.
    pub object_type: String,
    pub name: String,
    pub label: String,
    pub kind: PropertyKind,
    pub read_only: bool,
    /// `hasUniqueValue`: usable as `idProperty` in batch upserts and reads.
    pub unique: bool,
}

impl HubSpotProperty {
    /// A text property.
    pub fn text(object_type: &str, name: &str) -> Self {
        Self {
            object_type: object_type.into(),
            name: name.into(),
            label: name.into(),
            kind: PropertyKind::Text,
            read_only: false,
            unique: false,
        }
    }

    /// An enumeration (select) property with these option values.
    pub fn enumeration(object_type: &str, name: &str, options: &[&str]) -> Self {
        Self {
            kind: PropertyKind::Enumeration(options.iter().map(|o| o.to_string()).collect()),
            ..Self::text(object_type, name)
        }
    }

    /// Marks the property as holding unique values.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }
}

/// A deal stage.
#[derive(Debug, Clone)]
pub struct HubSpotStage {
    pub id: String,
    pub label: String,
    /// Win probability 0.0–1.0.
    pub probability: f64,
    pub closed: bool,
}

/// A deal pipeline with its stages.
#[derive(Debug, Clone)]
pub struct HubSpotPipeline {
    pub id: String,
    pub label: String,
    pub stages: Vec<HubSpotStage>,
}

impl HubSpotPipeline {
    /// HubSpot's default sales pipeline (`default`) and its seven stages.
    pub fn default_sales() -> Self {
        let stage = |id: &str, label: &str, probability: f64, closed: bool| HubSpotStage {
            id: id.into(),
            label: label.into(),
            probability,
            closed,
        };
        Self {
            id: "default".into(),
            label: "Sales Pipeline".into(),
            stages: vec![
                stage("appointmentscheduled", "Appointment Scheduled", 0.2, false),
                stage("qualifiedtobuy", "Qualified To Buy", 0.4, false),
                stage(
                    "presentationscheduled",
                    "Presentation Scheduled",
                    0.6,
                    false,
                ),
                stage(
                    "decisionmakerboughtin",
                    "Decision Maker Bought-In",
                    0.8,
                    false,
                ),
                stage("contractsent", "Contract Sent", 0.9, false),
                stage("closedwon", "Closed Won", 1.0, true),
                stage("closedlost", "Closed Lost", 0.0, true),
            ],
        }
    }
}

/// An association between a custom object type and another type.
#[derive(Debug, Clone)]
pub struct HubSpotCustomAssociation {
    pub to_object_type: String,
    /// Type id from the custom object to `to_object_type`.
    pub type_id: u32,
    /// Type id of the opposite direction.
    pub inverse_type_id: u32,
}

/// A custom object type of the fake portal.
#[derive(Debug, Clone)]
pub struct HubSpotCustomObjectType {
    /// `2-12345`.
    pub object_type_id: String,
    /// The schema name, e.g. `projects` (fully qualified `p{portalId}_projects`,
    /// short `p_projects`).
    pub name: String,
    pub primary_display_property: String,
    pub required_properties: Vec<String>,
    /// Its properties (their `object_type` is ignored).
    pub properties: Vec<HubSpotProperty>,
    pub associations: Vec<HubSpotCustomAssociation>,
}

impl HubSpotCustomObjectType {
    /// The example type `2-12345` / `p_projects` with a required `project_name`.
    pub fn example_projects() -> Self {
        Self {
            object_type_id: "2-12345".into(),
            name: "projects".into(),
            primary_display_property: "project_name".into(),
            required_properties: vec!["project_name".into()],
            properties: vec![
                HubSpotProperty::text("projects", "project_name"),
                HubSpotProperty::text("projects", "project_code").unique(),
                HubSpotProperty::enumeration(
                    "projects",
                    "project_status",
                    &["planned", "active", "done"],
                ),
            ],
            associations: vec![HubSpotCustomAssociation {
                to_object_type: "contacts".into(),
                type_id: 100,
                inverse_type_id: 101,
            }],
        }
    }
}

/// What the fake portal looks like. `Default`: one private-app token
/// ([`HubSpotConfig::DEFAULT_TOKEN`]), 100 requests per 10 s, 250 000 a day,
/// 5 searches per second, the default sales pipeline, the example custom
/// object `2-12345` (`p_projects`) and a few custom contact properties.
#[derive(Debug, Clone)]
pub struct HubSpotConfig {
    /// Accepted `Authorization: Bearer` tokens.
    pub access_tokens: Vec<String>,
    pub portal_id: u64,
    /// Requests allowed per `rolling_window` (`TEN_SECONDLY_ROLLING`).
    pub rolling_limit: usize,
    pub rolling_window: Duration,
    /// Requests allowed per UTC day (`DAILY`).
    pub daily_limit: u64,
    /// Search requests per second.
    pub search_per_second: usize,
    /// Maximum inputs in a batch request.
    pub batch_limit: usize,
    pub custom_properties: Vec<HubSpotProperty>,
    pub deal_pipelines: Vec<HubSpotPipeline>,
    pub custom_object_types: Vec<HubSpotCustomObjectType>,
    /// Records become visible to search only this long after a write (HubSpot's
    /// search index lags by a few seconds). Zero: immediately.
    pub search_index_delay: Duration,
    /// The date-versioned APIs served beside the numbered ones
    /// (`/crm/objects/2026-03/…`). Default: `2026-03`.
    pub dated_versions: Vec<String>,
}

impl HubSpotConfig {
    pub const DEFAULT_TOKEN: &'static str = "pat-na1-11111111-2222-3333-4444-leadrelayfake";
}

impl Default for HubSpotConfig {
    fn default() -> Self {
        Self {
            access_tokens: vec![Self::DEFAULT_TOKEN.to_string()],
            portal_id: 12345678,
            rolling_limit: 100,
            rolling_window: Duration::from_secs(10),
            daily_limit: 250_000,
            search_per_second: 5,
            batch_limit: 100,
            custom_properties: vec![
                HubSpotProperty::text("contacts", "leadrelay_source"),
                HubSpotProperty::text("contacts", "utm_campaign"),
                HubSpotProperty::enumeration(
                    "contacts",
                    "lead_tier",
                    &["gold", "silver", "bronze"],
                ),
                HubSpotProperty::text("contacts", "external_id").unique(),
                // The unique company key leadrelay upserts companies by
                // (created by the operator, as the README says).
                HubSpotProperty::text("companies", "leadrelay_company_key").unique(),
                // And deals, by the id of the delivery that opened them.
                HubSpotProperty::text("deals", "leadrelay_deal_key").unique(),
            ],
            deal_pipelines: vec![HubSpotPipeline::default_sales()],
            custom_object_types: vec![HubSpotCustomObjectType::example_projects()],
            search_index_delay: Duration::ZERO,
            dated_versions: vec!["2026-03".to_string()],
        }
    }
}

/// A CRM record the fake holds.
#[derive(Debug, Clone, PartialEq)]
pub struct HubSpotRecord {
    /// Canonical type: `contacts`, `companies`, `deals`, `notes`, `tasks` or a custom name.
    pub object_type: String,
    pub id: String,
    /// Every property with a value, including `hs_object_id` and the dates.
    pub properties: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl HubSpotRecord {
    /// A property value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }
}

/// One direction of an association between two records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSpotAssociation {
    pub from_type: String,
    pub from_id: String,
    pub to_type: String,
    pub to_id: String,
    pub category: String,
    pub type_id: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct StoredRecord {
    pub record: HubSpotRecord,
    /// When the search index sees this version.
    pub indexed_at: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    next_id: u64,
    /// (type, id) → record.
    pub records: BTreeMap<(String, u64), StoredRecord>,
    pub associations: Vec<HubSpotAssociation>,
    pub gdpr_deleted: Vec<String>,
    /// List id → list.
    pub lists: BTreeMap<String, HubSpotList>,
    /// Form GUID → form and its submissions.
    pub forms: BTreeMap<String, HubSpotForm>,
    /// `marketingEventId` → event and its participations.
    pub marketing_events: BTreeMap<String, MarketingEvent>,
}

impl Store {
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn get(&self, object_type: &str, id: &str) -> Option<&StoredRecord> {
        let id: u64 = id.parse().ok()?;
        self.records.get(&(object_type.to_string(), id))
    }

    /// Finds a record by the value of a property (case-insensitive, as HubSpot
    /// compares emails).
    pub(crate) fn find_by(
        &self,
        object_type: &str,
        property: &str,
        value: &str,
    ) -> Option<&StoredRecord> {
        if property == "hs_object_id" {
            return self.get(object_type, value);
        }
        self.records
            .range((object_type.to_string(), 0)..=(object_type.to_string(), u64::MAX))
            .map(|(_, r)| r)
            .find(|r| {
                r.record
                    .get(property)
                    .is_some_and(|v| v.eq_ignore_ascii_case(value))
            })
    }

    pub(crate) fn of_type(&self, object_type: &str) -> impl Iterator<Item = &StoredRecord> {
        self.records
            .range((object_type.to_string(), 0)..=(object_type.to_string(), u64::MAX))
            .map(|(_, r)| r)
    }

    pub(crate) fn associate(&mut self, a: HubSpotAssociation) {
        if !self.associations.contains(&a) {
            self.associations.push(a);
        }
    }

    /// Removes every association between two records, both directions.
    pub(crate) fn dissociate(&mut self, a: (&str, &str), b: (&str, &str)) {
        self.associations.retain(|x| {
            let forward = (x.from_type.as_str(), x.from_id.as_str()) == a
                && (x.to_type.as_str(), x.to_id.as_str()) == b;
            let back = (x.from_type.as_str(), x.from_id.as_str()) == b
                && (x.to_type.as_str(), x.to_id.as_str()) == a;
            !(forward || back)
        });
    }

    pub(crate) fn remove(&mut self, object_type: &str, id: &str) -> Option<HubSpotRecord> {
        let num: u64 = id.parse().ok()?;
        let removed = self.records.remove(&(object_type.to_string(), num))?;
        self.drop_memberships(object_type, num);
        self.associations.retain(|a| {
            !((a.from_type == object_type && a.from_id == id)
                || (a.to_type == object_type && a.to_id == id))
        });
        Some(removed.record)
    }
}

#[derive(Debug)]
struct DailyUsage {
    day: NaiveDate,
    used: u64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// Replaced whole when a property is added (`POST /crm/v3/properties`).
    pub schema: RwLock<Arc<Schema>>,
    pub config: HubSpotConfig,
    pub store: Mutex<Store>,
    rolling: RollingWindow,
    search_window: RollingWindow,
    daily: Mutex<DailyUsage>,
    faults: Faults,
    requests: RequestLog,
    /// Where the app's change webhooks go, once subscribed.
    pub(crate) webhook: Mutex<Option<changes::WebhookTarget>>,
    pub(crate) webhook_log: Mutex<Vec<changes::WebhookSent>>,
}

/// The fake portal's state, shared by the router and the test that inspects it.
#[derive(Debug, Clone)]
pub struct HubSpotState {
    pub(crate) inner: Arc<Inner>,
}

impl HubSpotState {
    pub fn new(config: HubSpotConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                schema: RwLock::new(Arc::new(Schema::new(&config))),
                rolling: RollingWindow::new(config.rolling_limit.max(1), config.rolling_window),
                search_window: RollingWindow::new(
                    config.search_per_second.max(1),
                    Duration::from_secs(1),
                ),
                daily: Mutex::new(DailyUsage {
                    day: Utc::now().date_naive(),
                    used: 0,
                }),
                store: Mutex::new(Store::default()),
                faults: Faults::default(),
                requests: RequestLog::default(),
                webhook: Mutex::new(None),
                webhook_log: Mutex::new(Vec::new()),
                config,
            }),
        }
    }

    /// The portal's schema as it is now.
    pub(crate) fn schema(&self) -> Arc<Schema> {
        self.inner
            .schema
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Creates a custom property in the portal, as a person would in
    /// HubSpot's settings (or `POST /crm/v3/properties/{objectType}`).
    /// False when the object type is unknown.
    pub fn add_property(&self, property: HubSpotProperty) -> bool {
        let mut guard = self.inner.schema.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Schema::clone(&guard);
        let added = next.add_property(&property);
        *guard = Arc::new(next);
        added
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Injected failures for the next requests.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Every request answered, in order.
    pub fn requests(&self) -> &RequestLog {
        &self.inner.requests
    }

    /// The first accepted token.
    pub fn access_token(&self) -> String {
        self.inner
            .config
            .access_tokens
            .first()
            .cloned()
            .unwrap_or_default()
    }

    /// Records of a type (`contacts`, `0-1`, `p_projects`, ...), oldest first.
    pub fn records(&self, object_type: &str) -> Vec<HubSpotRecord> {
        let Some(canonical) = self.schema().resolve(object_type) else {
            return Vec::new();
        };
        self.store()
            .of_type(&canonical)
            .map(|r| r.record.clone())
            .collect()
    }

    /// How many records of a type there are (cheap: no copies).
    pub fn count(&self, object_type: &str) -> usize {
        let Some(canonical) = self.schema().resolve(object_type) else {
            return 0;
        };
        self.store().of_type(&canonical).count()
    }

    pub fn contacts(&self) -> Vec<HubSpotRecord> {
        self.records("contacts")
    }

    pub fn companies(&self) -> Vec<HubSpotRecord> {
        self.records("companies")
    }

    pub fn deals(&self) -> Vec<HubSpotRecord> {
        self.records("deals")
    }

    pub fn notes(&self) -> Vec<HubSpotRecord> {
        self.records("notes")
    }

    pub fn tasks(&self) -> Vec<HubSpotRecord> {
        self.records("tasks")
    }

    pub fn meetings(&self) -> Vec<HubSpotRecord> {
        self.records("meetings")
    }

    /// The contact with this email (case-insensitive).
    pub fn contact_by_email(&self, email: &str) -> Option<HubSpotRecord> {
        self.store()
            .find_by("contacts", "email", email)
            .map(|r| r.record.clone())
    }

    /// One record by type and id.
    pub fn record(&self, object_type: &str, id: &str) -> Option<HubSpotRecord> {
        let canonical = self.schema().resolve(object_type)?;
        self.store().get(&canonical, id).map(|r| r.record.clone())
    }

    /// Every association, one entry per direction.
    pub fn associations(&self) -> Vec<HubSpotAssociation> {
        self.store().associations.clone()
    }

    /// Ids of the `to_type` records associated with a record.
    pub fn associated_ids(&self, from_type: &str, from_id: &str, to_type: &str) -> Vec<String> {
        let (Some(from), Some(to)) = (
            self.schema().resolve(from_type),
            self.schema().resolve(to_type),
        ) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = self
            .store()
            .associations
            .iter()
            .filter(|a| a.from_type == from && a.from_id == from_id && a.to_type == to)
            .map(|a| a.to_id.clone())
            .collect();
        ids.dedup();
        ids
    }

    /// Emails of contacts removed with `gdpr-delete`.
    pub fn gdpr_deleted_emails(&self) -> Vec<String> {
        self.store().gdpr_deleted.clone()
    }

    /// Creates a record directly (no validation, no rate limit), e.g. to set up
    /// an existing contact. Returns its id.
    pub fn seed(&self, object_type: &str, properties: &[(&str, &str)]) -> String {
        let canonical = self
            .schema()
            .resolve(object_type)
            .unwrap_or_else(|| object_type.to_string());
        let props = properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut store = self.store();
        objects::insert_record(&mut store, &canonical, props).id
    }

    /// Requests counted against today's limit.
    pub fn daily_usage(&self) -> u64 {
        self.inner
            .daily
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .used
    }

    /// Sets today's usage, e.g. to just below the limit.
    pub fn set_daily_usage(&self, used: u64) {
        self.inner
            .daily
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .used = used;
    }

    /// A human-readable list of what the fake accepts, for `leadrelay fake hubspot`.
    pub fn credentials_banner(&self, base_url: &str) -> String {
        let c = &self.inner.config;
        let mut out = format!(
            "fake HubSpot listening on {base_url} (portal {})\n",
            c.portal_id
        );
        for t in &c.access_tokens {
            out.push_str(&format!(
                "  private app token: {t}  (Authorization: Bearer ...)\n"
            ));
        }
        out.push_str(&format!(
            "  limits: {} requests per {:?}, {} per day, {} searches per second, batches of {}\n",
            c.rolling_limit, c.rolling_window, c.daily_limit, c.search_per_second, c.batch_limit
        ));
        for p in &c.deal_pipelines {
            let stages: Vec<&str> = p.stages.iter().map(|s| s.id.as_str()).collect();
            out.push_str(&format!(
                "  deal pipeline {}: {}\n",
                p.id,
                stages.join(", ")
            ));
        }
        for t in &c.custom_object_types {
            out.push_str(&format!(
                "  custom object {} (p_{})\n",
                t.object_type_id, t.name
            ));
        }
        out
    }

    fn authorized(&self, req: &Request) -> bool {
        let Some(value) = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return false;
        };
        self.inner
            .config
            .access_tokens
            .iter()
            .any(|t| t == token.trim())
    }

    /// Counts a request against the daily and rolling limits.
    fn take_quota(&self, is_search: bool) -> Result<(u64, usize), &'static str> {
        let mut daily = self.inner.daily.lock().unwrap_or_else(|p| p.into_inner());
        let today = Utc::now().date_naive();
        if daily.day != today {
            daily.day = today;
            daily.used = 0;
        }
        if daily.used >= self.inner.config.daily_limit {
            return Err("DAILY");
        }
        let remaining = self
            .inner
            .rolling
            .hit()
            .map_err(|_| "TEN_SECONDLY_ROLLING")?;
        if is_search && self.inner.search_window.hit().is_err() {
            return Err("SECONDLY");
        }
        daily.used += 1;
        Ok((self.inner.config.daily_limit - daily.used, remaining))
    }

    fn rate_headers(&self, response: &mut Response, daily_remaining: u64, remaining: usize) {
        let c = &self.inner.config;
        let pairs = [
            ("x-hubspot-ratelimit-daily", c.daily_limit.to_string()),
            (
                "x-hubspot-ratelimit-daily-remaining",
                daily_remaining.to_string(),
            ),
            (
                "x-hubspot-ratelimit-interval-milliseconds",
                c.rolling_window.as_millis().to_string(),
            ),
            ("x-hubspot-ratelimit-max", c.rolling_limit.to_string()),
            ("x-hubspot-ratelimit-remaining", remaining.to_string()),
        ];
        for (k, v) in pairs {
            if let Ok(v) = HeaderValue::from_str(&v) {
                response.headers_mut().insert(k, v);
            }
        }
    }
}

/// Applies injected faults and records every request in the log.
async fn observe(State(state): State<HubSpotState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let response = state.inner.faults.around(next.run(req)).await;
    state
        .inner
        .requests
        .record(&method, &path, response.status().as_u16());
    response
}

/// Authenticates the token, then counts the request against the limits.
async fn guard(State(state): State<HubSpotState>, req: Request, next: Next) -> Response {
    if !state.authorized(&req) {
        return errors::unauthorized().into_response();
    }
    let is_search = req.uri().path().ends_with("/search");
    match state.take_quota(is_search) {
        Ok((daily_remaining, remaining)) => {
            let mut response = next.run(req).await;
            state.rate_headers(&mut response, daily_remaining, remaining);
            response
        }
        Err(policy) => {
            let daily_remaining = {
                let d = state.inner.daily.lock().unwrap_or_else(|p| p.into_inner());
                state.inner.config.daily_limit.saturating_sub(d.used)
            };
            let mut response = errors::rate_limited(policy).into_response();
            state.rate_headers(&mut response, daily_remaining, 0);
            response
        }
    }
}

async fn account_details(State(state): State<HubSpotState>) -> Response {
    Json(json!({
        "portalId": state.inner.config.portal_id,
        "accountType": "STANDARD",
        "timeZone": "US/Eastern",
        "companyCurrency": "USD",
        "additionalCurrencies": [],
        "utcOffset": "-05:00",
        "utcOffsetMilliseconds": -18000000,
        "uiDomain": "app.hubspot.com",
        "dataHostingLocation": "na1",
    }))
    .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "").into_response()
}

/// Where one API version's families live: (CRM objects, per-record
/// associations, batch associations, properties, pipelines, account info).
struct Prefixes {
    objects: String,
    record_associations: String,
    associations: String,
    properties: String,
    pipelines: String,
    account_info: String,
    lists: String,
    forms: String,
    marketing_events: String,
}

impl Prefixes {
    /// The numbered (legacy) APIs: v3, v4 for associations.
    fn numbered() -> Self {
        Self {
            objects: "/crm/v3/objects".into(),
            record_associations: "/crm/v4/objects".into(),
            associations: "/crm/v4/associations".into(),
            properties: "/crm/v3/properties".into(),
            pipelines: "/crm/v3/pipelines".into(),
            account_info: "/account-info/v3".into(),
            lists: "/crm/v3/lists".into(),
            forms: "/marketing/v3/forms".into(),
            marketing_events: "/marketing/v3/marketing-events".into(),
        }
    }

    /// A date-versioned API: `/crm/objects/2026-03/…` and so on.
    fn dated(version: &str) -> Self {
        Self {
            objects: format!("/crm/objects/{version}"),
            record_associations: format!("/crm/objects/{version}"),
            associations: format!("/crm/associations/{version}"),
            properties: format!("/crm/properties/{version}"),
            pipelines: format!("/crm/pipelines/{version}"),
            account_info: format!("/account-info/{version}"),
            lists: format!("/crm/lists/{version}"),
            forms: format!("/marketing/forms/{version}"),
            marketing_events: format!("/marketing/marketing-events/{version}"),
        }
    }

    /// The same handlers (and state) under this version's paths.
    fn routes(&self, r: Router<HubSpotState>) -> Router<HubSpotState> {
        let Prefixes {
            objects: o,
            record_associations: ra,
            associations: a,
            properties: p,
            pipelines: pl,
            account_info: ai,
            lists: l,
            forms: f,
            marketing_events: me,
        } = self;
        r.route(&format!("{ai}/details"), get(account_details))
            .route(&format!("{f}/{{form_id}}"), get(marketing::read_form))
            .route(
                &format!("{me}/participations/{{event_id}}/breakdown"),
                get(marketing::participations),
            )
            .route(l, post(lists::create))
            .route(&format!("{l}/search"), post(lists::search))
            .route(&format!("{l}/{{list_id}}"), get(lists::read))
            .route(
                &format!("{l}/{{list_id}}/memberships"),
                get(lists::memberships),
            )
            .route(
                &format!("{l}/{{list_id}}/memberships/join-order"),
                get(lists::join_order),
            )
            .route(&format!("{l}/{{list_id}}/memberships/add"), put(lists::add))
            .route(
                &format!("{l}/{{list_id}}/memberships/remove"),
                put(lists::remove),
            )
            .route(
                &format!("{p}/{{object_type}}"),
                get(objects::list_properties),
            )
            .route(
                &format!("{p}/{{object_type}}/{{name}}"),
                get(objects::get_property),
            )
            .route(
                &format!("{pl}/{{object_type}}"),
                get(objects::list_pipelines),
            )
            .route(
                &format!("{o}/{{object_type}}"),
                get(objects::list).post(objects::create),
            )
            .route(
                &format!("{o}/{{object_type}}/search"),
                post(objects::search),
            )
            .route(
                &format!("{o}/{{object_type}}/batch/upsert"),
                post(objects::batch_upsert),
            )
            .route(
                &format!("{o}/{{object_type}}/batch/create"),
                post(objects::batch_create),
            )
            .route(
                &format!("{o}/{{object_type}}/batch/update"),
                post(objects::batch_update),
            )
            .route(
                &format!("{o}/{{object_type}}/batch/read"),
                post(objects::batch_read),
            )
            .route(
                &format!("{o}/{{object_type}}/gdpr-delete"),
                post(objects::gdpr_delete),
            )
            .route(
                &format!("{o}/{{object_type}}/{{object_id}}"),
                get(objects::read)
                    .patch(objects::update)
                    .delete(objects::archive),
            )
            // The parameters are named as in the record routes: in a dated
            // version both live under `/crm/objects/{version}/`.
            .route(
                &format!(
                    "{ra}/{{object_type}}/{{object_id}}/associations/default/{{to_type}}/{{to_id}}"
                ),
                put(associations::put_default),
            )
            .route(
                &format!("{ra}/{{object_type}}/{{object_id}}/associations/{{to_type}}"),
                get(associations::list),
            )
            .route(
                &format!("{ra}/{{object_type}}/{{object_id}}/associations/{{to_type}}/{{to_id}}"),
                delete(associations::remove),
            )
            .route(
                &format!("{a}/{{from_type}}/{{to_type}}/batch/associate/default"),
                post(associations::batch_default),
            )
            .route(
                &format!("{a}/{{from_type}}/{{to_type}}/batch/read"),
                post(associations::batch_read),
            )
    }
}

/// The fake's routes, to serve on any listener: the numbered (v3/v4) APIs
/// and every dated version in [`HubSpotConfig::dated_versions`], all on the
/// same state.
pub fn router(state: HubSpotState) -> Router {
    // Form submissions have one (v1) path in every scheme.
    let mut r = Prefixes::numbered().routes(Router::new()).route(
        "/form-integrations/v1/submissions/forms/{form_id}",
        get(marketing::submissions),
    );
    for v in &state.inner.config.dated_versions {
        r = Prefixes::dated(v).routes(r);
    }
    r.fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A running fake HubSpot. Derefs to [`HubSpotState`] for the accessors.
pub struct FakeHubSpot {
    server: FakeServer,
    state: HubSpotState,
}

impl FakeHubSpot {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(config: HubSpotConfig) -> std::io::Result<Self> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    /// Starts on `listen`.
    pub async fn start_on(config: HubSpotConfig, listen: &str) -> std::io::Result<Self> {
        let state = HubSpotState::new(config);
        let server = FakeServer::start(router(state.clone()), listen).await?;
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:PORT` (the real one is `https://api.hubapi.com`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn state(&self) -> &HubSpotState {
        &self.state
    }
}

impl std::ops::Deref for FakeHubSpot {
    type Target = HubSpotState;
    fn deref(&self) -> &HubSpotState {
        &self.state
    }
}

/// Serves a fake HubSpot on `listen` until the future is dropped, after
/// printing the token it accepts (for `leadrelay fake hubspot --listen ADDR`).
pub async fn serve(listen: &str, config: HubSpotConfig) -> std::io::Result<()> {
    let state = HubSpotState::new(config);
    let listener = TcpListener::bind(listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("{}", state.credentials_banner(&base));
    axum::serve(listener, router(state)).await
}

/// `2024-01-02T03:04:05.678Z`, the way HubSpot prints instants.
pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}
