//! Fake Salesforce: the OAuth 2.0 token endpoint (refresh token and JWT
//! bearer flows) and the REST API (`/services/data/vXX.X/`): sObject create,
//! read, update, delete, upsert by external id, SOQL queries, composite
//! requests, sObject Collections create, describe, limits — and the SOAP
//! API's `convertLead()` (`/services/Soap/u/XX.X`, see `soap.rs`).
//!
//! # Followed references
//! - Salesforce Help, "OAuth 2.0 Refresh Token Flow" and "OAuth 2.0 JWT Bearer
//!   Flow for Server-to-Server Integration": `POST /services/oauth2/token`,
//!   form-encoded; JWT claims `iss` (consumer key), `sub` (username), `aud`
//!   (`https://login.salesforce.com`, `https://test.salesforce.com` or the
//!   site URL), `exp`; RS256 signed with the connected app certificate's key.
//!   Responses `{access_token, instance_url, id, token_type, issued_at,
//!   signature, scope}`; errors `{"error","error_description"}`
//!   (`invalid_grant` "invalid assertion", "audience is invalid", "expired
//!   authorization code", "user hasn't approved this consumer", "expired
//!   access/refresh token"; `invalid_client_id` "client identifier invalid";
//!   `invalid_client` "invalid client credentials"; `unsupported_grant_type`).
//! - REST API Developer Guide: "Status Codes and Error Responses" (errors are
//!   arrays of `{message, errorCode, fields}`; 401 `INVALID_SESSION_ID`
//!   "Session expired or invalid"; 403 `REQUEST_LIMIT_EXCEEDED`; 404
//!   `NOT_FOUND`), "sObject Basic Information / Rows" (create 201
//!   `{id, success, errors}`, update/delete 204), "Insert or Update (Upsert) a
//!   Record Using an External ID" (201 `created: true`, 200 `created: false`,
//!   300 on several matches, `updateOnly`), "Query", "Composite"
//!   (`compositeRequest`, `referenceId`, `@{ref.id}`, `allOrNone`, at most 25
//!   subrequests, `PROCESSING_HALTED` for rolled-back subrequests),
//!   "sObject Collections", "Limits", the `Sforce-Limit-Info` header and the
//!   `Sforce-Duplicate-Rule-Header` (`allowSave=true`).
//! - SOAP/REST API object reference for `DuplicateError`/`DuplicateResult`
//!   (`duplicateResult.matchResults[].matchRecords[].record.Id`) and the
//!   standard fields of Lead, Contact, Account, Opportunity and Task.
//!
//! # What it enforces
//! - Sessions: only tokens issued by the token endpoint (or configured static
//!   ones) work, and only for [`SalesforceConfig::session_lifetime`];
//!   [`SalesforceState::expire_all_sessions`] ends them all.
//! - API versions in [`SalesforceConfig::min_api_version`]..=`max_api_version`.
//! - Field-level rules: unknown fields `INVALID_FIELD`, read-only fields
//!   `INVALID_FIELD_FOR_INSERT_UPDATE`, required fields
//!   `REQUIRED_FIELD_MISSING` (Lead LastName+Company, Contact LastName,
//!   Account Name, Opportunity Name+StageName+CloseDate), restricted picklists
//!   `INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST` (Lead Status, Opportunity
//!   StageName, Task Status/Priority, ...), lengths `STRING_TOO_LONG`, emails
//!   `INVALID_EMAIL_ADDRESS`, lookups `MALFORMED_ID` /
//!   `INVALID_CROSS_REFERENCE_KEY`, JSON types `JSON_PARSER_ERROR`.
//! - Configurable validation rules (`FIELD_CUSTOM_VALIDATION_EXCEPTION`),
//!   the standard duplicate rules (`DUPLICATES_DETECTED` naming each matched
//!   record under its `entityType`; a Lead is checked against Leads and
//!   Contacts), an API request limit per window (403
//!   `REQUEST_LIMIT_EXCEEDED`) and injectable `UNABLE_TO_LOCK_ROW`.
//!
//! # What it simplifies
//! - One org and its users; no sharing, profiles or field-level security
//!   beyond read-only system fields; no triggers or relationship queries;
//!   workflow is outbound messages only (`outbound.rs`, sent on every save
//!   of their object). A converted lead cannot be updated
//!   (`CANNOT_UPDATE_CONVERTED_LEAD`). Deleted records are gone (no recycle bin).
//! - SOQL: `SELECT fields|COUNT() FROM obj [WHERE ...] [ORDER BY f [ASC|DESC]]
//!   [LIMIT n] [OFFSET n]` with `=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`, `LIKE`,
//!   `IN`, `NOT IN`, `AND`, `OR`, `NOT`, parentheses; all results in one page.
//! - `OpportunityContactRole` (object reference: a Contact's role on an
//!   Opportunity): `ContactId` must name a Contact (a Lead's id is
//!   `MALFORMED_ID`), the opportunity is set on create only, "each
//!   Opportunity has only one primary contact" (the fake keeps it so by
//!   clearing the earlier primary when another is saved as primary), the
//!   same contact may be named twice (possible, not recommended); a role
//!   deleted directly is gone (its `IsDeleted` only serves a deleted
//!   parent); deleting an Opportunity or a Contact deletes its contact
//!   roles. Adding or removing a role moves no Opportunity's modification
//!   time.
//! - The standard matching rules match on the same Email, or on the same
//!   first name, last name and company (case-insensitive; Salesforce's are
//!   fuzzier still), so a match is not always the same person.
//! - Some error texts are not documented and are modelled on the documented
//!   shape: composite reference failures, the subrequest-count error, JWT
//!   `exp` too far ahead ("invalid assertion").

mod composite;
mod errors;
mod oauth;
mod outbound;
mod rest;
mod schema;
mod soap;
mod soql;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use crate::common::{FakeServer, Faults, RequestLog};

pub use outbound::{OutboundMessageDef, OutboundRetry, OutboundSent};
pub use schema::{SalesforceFieldDef, SalesforceFieldType, SalesforceObjectDef};

/// A connected app (OAuth client).
#[derive(Debug, Clone)]
pub struct SalesforceConnectedApp {
    /// Consumer key (`client_id`, JWT `iss`).
    pub client_id: String,
    /// Consumer secret.
    pub client_secret: String,
    /// PEM public key or X.509 certificate for JWT bearer assertions.
    pub jwt_public_key_pem: Option<String>,
    /// Whether the refresh token flow needs the `client_secret`.
    pub require_secret_for_refresh: bool,
}

impl SalesforceConnectedApp {
    pub const DEFAULT_CLIENT_ID: &'static str =
        "3MVG9leadrelayFakeConsumerKey.0000000000000000000000000000000000000000";
    pub const DEFAULT_CLIENT_SECRET: &'static str = "LEADRELAYFAKECONSUMERSECRET0001";
    /// The private key matching the default app's certificate: a throwaway test key.
    pub const TEST_PRIVATE_KEY_PEM: &'static str =
        include_str!("../../testdata/salesforce/connected-app.key.pem");

    /// The default app, whose JWT key is `testdata/salesforce/connected-app.pub.pem`.
    pub fn default_app() -> Self {
        Self {
            client_id: Self::DEFAULT_CLIENT_ID.into(),
            client_secret: Self::DEFAULT_CLIENT_SECRET.into(),
            jwt_public_key_pem: Some(
                include_str!("../../testdata/salesforce/connected-app.pub.pem").into(),
            ),
            require_secret_for_refresh: true,
        }
    }
}

/// A user of the org.
#[derive(Debug, Clone)]
pub struct SalesforceUser {
    /// 18-character `005...` id.
    pub id: String,
    pub username: String,
}

/// A refresh token the token endpoint accepts.
#[derive(Debug, Clone)]
pub struct SalesforceRefreshToken {
    pub token: String,
    pub client_id: String,
    pub username: String,
}

/// A validation rule: like a Salesforce rule formula, `fails` returns true
/// when the record (the merged field values) is invalid.
#[derive(Clone)]
pub struct SalesforceValidationRule {
    pub object: String,
    pub name: String,
    pub error_message: String,
    /// The field the error is shown on, if any.
    pub error_field: Option<String>,
    pub fails: RuleCheck,
}

/// A validation rule's check on the merged field values: true means invalid.
pub type RuleCheck = Arc<dyn Fn(&Map<String, Value>) -> bool + Send + Sync>;

impl SalesforceValidationRule {
    pub fn new(
        object: &str,
        name: &str,
        error_message: &str,
        error_field: Option<&str>,
        fails: impl Fn(&Map<String, Value>) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            object: object.into(),
            name: name.into(),
            error_message: error_message.into(),
            error_field: error_field.map(str::to_string),
            fails: Arc::new(fails),
        }
    }
}

impl fmt::Debug for SalesforceValidationRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalesforceValidationRule")
            .field("object", &self.object)
            .field("name", &self.name)
            .finish()
    }
}

/// What the fake org looks like. `Default`: the default connected app, one
/// integration user with a refresh token, one static access token, 2-hour
/// sessions, API versions 60.0–64.0, 100 000 API requests per 24 h, duplicate
/// rules on, custom fields `External_Id__c` (external id) on Lead and Contact,
/// and the custom object `Project__c`.
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// 18-character `00D...` org id.
    pub org_id: String,
    /// The login URL used in identity URLs and accepted as JWT `aud`.
    pub login_url: String,
    /// Other accepted JWT audiences (the fake's own URL is always accepted).
    pub extra_audiences: Vec<String>,
    pub connected_apps: Vec<SalesforceConnectedApp>,
    pub users: Vec<SalesforceUser>,
    pub refresh_tokens: Vec<SalesforceRefreshToken>,
    /// Access tokens valid from the start (for the first user), for tests that skip OAuth.
    pub static_access_tokens: Vec<String>,
    pub session_lifetime: Duration,
    /// JWT assertions whose `exp` is further ahead are rejected; `None`: no bound.
    pub jwt_max_exp_ahead: Option<Duration>,
    pub min_api_version: u32,
    pub max_api_version: u32,
    /// API requests allowed per `api_limit_window`.
    pub api_request_limit: u64,
    pub api_limit_window: Duration,
    /// The standard duplicate rules on Lead and Contact are active (as
    /// they are by default): a matching save answers `DUPLICATES_DETECTED`.
    pub duplicate_rules: bool,
    /// The rules' action on create and edit is Block; by default it is
    /// Allow with an Alert (the standard rules' setting), which a request
    /// with `Sforce-Duplicate-Rule-Header: allowSave=true` saves through.
    pub duplicate_rules_block: bool,
    /// Extra fields on standard objects: (object, field).
    pub custom_fields: Vec<(String, SalesforceFieldDef)>,
    pub custom_objects: Vec<SalesforceObjectDef>,
    pub validation_rules: Vec<SalesforceValidationRule>,
    /// Records a query answers at once (Salesforce: 2,000 by default); the
    /// rest is read through `nextRecordsUrl`.
    pub query_batch_size: usize,
    /// Lead statuses whose `IsConverted` is true: the `convertedStatus`
    /// values `convertLead()` accepts (default: `Closed - Converted`).
    pub converted_lead_statuses: Vec<String>,
    /// Customizable Campaign Influence is enabled: the org has
    /// `CampaignInfluenceModel` and `CampaignInfluence` (without it,
    /// Salesforce does not know those objects).
    pub campaign_influence: bool,
}

impl SalesforceConfig {
    pub const DEFAULT_USERNAME: &'static str = "integration@leadrelay-fake.test";
    pub const DEFAULT_REFRESH_TOKEN: &'static str =
        "5Aep861leadrelayFakeRefreshToken000000000000000000000000000000000000";
    pub const DEFAULT_STATIC_TOKEN: &'static str =
        "00D5e000000FAKE!AQleadrelayFakeStaticSessionToken";
}

impl Default for SalesforceConfig {
    fn default() -> Self {
        Self {
            org_id: schema::id18("00D5e000000FAKE"),
            login_url: "https://login.salesforce.com".into(),
            extra_audiences: vec!["https://test.salesforce.com".into()],
            connected_apps: vec![SalesforceConnectedApp::default_app()],
            users: vec![SalesforceUser {
                id: schema::id18("0055e000001FAKE"),
                username: Self::DEFAULT_USERNAME.into(),
            }],
            refresh_tokens: vec![SalesforceRefreshToken {
                token: Self::DEFAULT_REFRESH_TOKEN.into(),
                client_id: SalesforceConnectedApp::DEFAULT_CLIENT_ID.into(),
                username: Self::DEFAULT_USERNAME.into(),
            }],
            static_access_tokens: vec![Self::DEFAULT_STATIC_TOKEN.into()],
            session_lifetime: Duration::from_secs(2 * 3600),
            jwt_max_exp_ahead: Some(Duration::from_secs(5 * 60)),
            min_api_version: 60,
            max_api_version: 64,
            api_request_limit: 100_000,
            api_limit_window: Duration::from_secs(24 * 3600),
            duplicate_rules: true,
            duplicate_rules_block: false,
            custom_fields: vec![
                (
                    "Lead".into(),
                    SalesforceFieldDef::text("External_Id__c", "External Id", 255).external_id(),
                ),
                (
                    "Lead".into(),
                    SalesforceFieldDef::text("UTM_Source__c", "UTM Source", 255),
                ),
                (
                    "Lead".into(),
                    SalesforceFieldDef::new(
                        "Lead_Score__c",
                        "Lead Score",
                        SalesforceFieldType::Double,
                    ),
                ),
                (
                    "Contact".into(),
                    SalesforceFieldDef::text("External_Id__c", "External Id", 255).external_id(),
                ),
                // The keys leadrelay upserts opportunities and tasks by
                // (created by the operator, as the book says).
                (
                    "Opportunity".into(),
                    SalesforceFieldDef::text("LeadRelay_Key__c", "LeadRelay Key", 80).external_id(),
                ),
                (
                    "Task".into(),
                    SalesforceFieldDef::text("LeadRelay_Key__c", "LeadRelay Key", 80).external_id(),
                ),
            ],
            custom_objects: vec![SalesforceObjectDef {
                name: "Project__c".into(),
                label: "Project".into(),
                key_prefix: "a01".into(),
                custom: true,
                fields: vec![
                    SalesforceFieldDef::text("Name", "Project Name", 80).required(),
                    SalesforceFieldDef::picklist(
                        "Status__c",
                        "Status",
                        &["Planned", "Active", "Done"],
                    ),
                    SalesforceFieldDef::reference("Lead__c", "Lead", &["Lead"]),
                    SalesforceFieldDef::text("External_Id__c", "External Id", 255).external_id(),
                ],
            }],
            validation_rules: Vec::new(),
            query_batch_size: 2000,
            converted_lead_statuses: vec!["Closed - Converted".into()],
            campaign_influence: true,
        }
    }
}

/// A record the fake org holds.
#[derive(Debug, Clone, PartialEq)]
pub struct SalesforceRecord {
    pub object: String,
    /// 18-character id.
    pub id: String,
    /// Field values by API name, including `Id` and system fields.
    pub fields: Map<String, Value>,
}

impl SalesforceRecord {
    /// A field value (exact API name).
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    /// A text field value.
    pub fn text(&self, field: &str) -> Option<&str> {
        self.get(field).and_then(Value::as_str)
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Store {
    next: u64,
    /// id → record, in creation order within each key prefix.
    pub records: BTreeMap<String, SalesforceRecord>,
    /// Open query locators: the result set's records as answered.
    pub locators: BTreeMap<String, Vec<Value>>,
}

impl Store {
    pub(crate) fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub(crate) fn of(&self, object: &str) -> impl Iterator<Item = &SalesforceRecord> {
        let object = object.to_string();
        self.records.values().filter(move |r| r.object == object)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub user_id: String,
    pub expires_at: Instant,
}

#[derive(Debug)]
pub(crate) struct ApiUsage {
    pub window_start: Instant,
    pub used: u64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub config: SalesforceConfig,
    /// Every object with system and custom fields merged in.
    pub objects: Vec<SalesforceObjectDef>,
    pub store: Mutex<Store>,
    pub sessions: Mutex<HashMap<String, Session>>,
    pub api: Mutex<ApiUsage>,
    pub lock_failures: Mutex<usize>,
    /// Outbound messages: definitions, queue, what was sent.
    pub outbound: Mutex<outbound::Outbound>,
    pub outbound_wake: tokio::sync::Notify,
    faults: Faults,
    requests: RequestLog,
}

/// The fake org's state, shared by the router and the test that inspects it.
#[derive(Debug, Clone)]
pub struct SalesforceState {
    pub(crate) inner: Arc<Inner>,
}

impl SalesforceState {
    pub fn new(config: SalesforceConfig) -> Self {
        let mut objects = schema::standard_objects();
        if config.campaign_influence {
            objects.extend(schema::campaign_influence_objects());
        }
        objects.extend(config.custom_objects.iter().cloned());
        for obj in &mut objects {
            let mut fields = schema::system_fields();
            fields.append(&mut obj.fields);
            for (target, f) in &config.custom_fields {
                if target.eq_ignore_ascii_case(&obj.name) {
                    fields.push(f.clone());
                }
            }
            obj.fields = fields;
        }
        let mut sessions = HashMap::new();
        if let Some(user) = config.users.first() {
            for t in &config.static_access_tokens {
                sessions.insert(
                    t.clone(),
                    Session {
                        user_id: user.id.clone(),
                        expires_at: Instant::now() + config.session_lifetime,
                    },
                );
            }
        }
        Self {
            inner: Arc::new(Inner {
                objects,
                store: Mutex::new(Store::default()),
                sessions: Mutex::new(sessions),
                api: Mutex::new(ApiUsage {
                    window_start: Instant::now(),
                    used: 0,
                }),
                lock_failures: Mutex::new(0),
                outbound: Mutex::new(outbound::Outbound::default()),
                outbound_wake: tokio::sync::Notify::new(),
                faults: Faults::default(),
                requests: RequestLog::default(),
                config,
            }),
        }
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn object(&self, name: &str) -> Option<&SalesforceObjectDef> {
        self.inner
            .objects
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
    }

    /// Injected failures for the next requests.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Every request answered, in order.
    pub fn requests(&self) -> &RequestLog {
        &self.inner.requests
    }

    /// Records of an object type, oldest first.
    pub fn records(&self, object: &str) -> Vec<SalesforceRecord> {
        let Some(def) = self.object(object) else {
            return Vec::new();
        };
        self.store().of(&def.name).cloned().collect()
    }

    pub fn leads(&self) -> Vec<SalesforceRecord> {
        self.records("Lead")
    }

    pub fn contacts(&self) -> Vec<SalesforceRecord> {
        self.records("Contact")
    }

    pub fn accounts(&self) -> Vec<SalesforceRecord> {
        self.records("Account")
    }

    pub fn opportunities(&self) -> Vec<SalesforceRecord> {
        self.records("Opportunity")
    }

    pub fn tasks(&self) -> Vec<SalesforceRecord> {
        self.records("Task")
    }

    /// One record by 15- or 18-character id.
    pub fn record(&self, id: &str) -> Option<SalesforceRecord> {
        self.store().records.get(&schema::id18(id)).cloned()
    }

    /// Creates a record directly (no validation, no limits; `CreatedDate`,
    /// `LastModifiedDate` and `SystemModstamp` may be given, as an old
    /// record would have them). Returns its id.
    pub fn seed(&self, object: &str, fields: Value) -> String {
        let map = fields.as_object().cloned().unwrap_or_default();
        let name = self
            .object(object)
            .map(|o| o.name.clone())
            .unwrap_or_else(|| object.to_string());
        let id = rest::insert(self, &name, map);
        self.record_saved(&name, &id);
        id
    }

    /// The org's 18-character id (`00D…`).
    pub fn org_id(&self) -> String {
        self.inner.config.org_id.clone()
    }

    /// Deletes a record as a person would in Salesforce (with what is
    /// deleted with it: an Opportunity's or a Contact's contact roles).
    /// False when there is no such record.
    pub fn delete(&self, id: &str) -> bool {
        rest::remove(&mut self.store(), &schema::id18(id)).is_some()
    }

    /// Changes a record as a person editing it in Salesforce would (no
    /// validation; `LastModifiedDate` and `SystemModstamp` move on).
    /// False when there is no such record.
    pub fn edit(&self, id: &str, changes: Value) -> bool {
        let mut store = self.store();
        let Some(record) = store.records.get_mut(&schema::id18(id)) else {
            return false;
        };
        for (k, v) in changes.as_object().cloned().unwrap_or_default() {
            record.fields.insert(k, v);
        }
        let now = Value::String(rest::sf_time(chrono::Utc::now()));
        record.fields.insert("LastModifiedDate".into(), now.clone());
        record.fields.insert("SystemModstamp".into(), now);
        let (object, id) = (record.object.clone(), record.id.clone());
        drop(store);
        self.record_saved(&object, &id);
        true
    }

    /// Issues a session for the first user, as a successful login would.
    pub fn issue_access_token(&self) -> String {
        let user = self
            .inner
            .config
            .users
            .first()
            .map(|u| u.id.clone())
            .unwrap_or_default();
        oauth::new_session(self, &user)
    }

    /// Ends every session: later REST calls answer 401 `INVALID_SESSION_ID`.
    pub fn expire_all_sessions(&self) {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// API requests counted in the current window.
    pub fn api_usage(&self) -> u64 {
        self.inner
            .api
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .used
    }

    /// Uses up the API request limit: the next calls answer 403 `REQUEST_LIMIT_EXCEEDED`.
    pub fn exhaust_api_limit(&self) {
        self.inner
            .api
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .used = self.inner.config.api_request_limit;
    }

    /// Makes the next `n` writes fail with `UNABLE_TO_LOCK_ROW`.
    pub fn fail_next_writes_with_lock(&self, n: usize) {
        *self
            .inner
            .lock_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = n;
    }

    /// A human-readable list of what the fake accepts, for `leadrelay fake salesforce`.
    pub fn credentials_banner(&self, base_url: &str) -> String {
        let c = &self.inner.config;
        let mut out = format!(
            "fake Salesforce listening on {base_url} (org {})\n",
            c.org_id
        );
        out.push_str(&format!("  token endpoint: {base_url}/services/oauth2/token; REST: {base_url}/services/data/v{}.0/\n", c.max_api_version));
        for app in &c.connected_apps {
            out.push_str(&format!(
                "  connected app client_id: {}\n  client_secret: {}\n",
                app.client_id, app.client_secret
            ));
        }
        for u in &c.users {
            out.push_str(&format!("  user: {} ({})\n", u.username, u.id));
        }
        for r in &c.refresh_tokens {
            out.push_str(&format!("  refresh_token: {}\n", r.token));
        }
        for t in &c.static_access_tokens {
            out.push_str(&format!(
                "  access token (Authorization: Bearer ...): {t}\n"
            ));
        }
        out.push_str(&format!(
            "  JWT aud: {} (or this URL); sessions last {:?}\n",
            c.login_url, c.session_lifetime
        ));
        out
    }
}

pub(crate) fn random_token(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
    (0..len)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

/// Applies injected faults and records every request in the log.
async fn observe(State(state): State<SalesforceState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let response = state.inner.faults.around(next.run(req)).await;
    state
        .inner
        .requests
        .record(&method, &path, response.status().as_u16());
    response
}

async fn not_found() -> Response {
    errors::not_found().into_response()
}

/// The fake's routes, to serve on any listener.
pub fn router(state: SalesforceState) -> Router {
    Router::new()
        .route("/services/oauth2/token", post(oauth::token))
        .route("/services/data", get(rest::versions))
        .route("/services/data/", get(rest::versions))
        .route("/services/data/{*rest}", any(rest::handle))
        .route("/services/Soap/u/{version}", post(soap::handle))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A running fake Salesforce. Derefs to [`SalesforceState`] for the accessors.
pub struct FakeSalesforce {
    server: FakeServer,
    state: SalesforceState,
}

impl FakeSalesforce {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(config: SalesforceConfig) -> std::io::Result<Self> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    /// Starts on `listen`.
    pub async fn start_on(config: SalesforceConfig, listen: &str) -> std::io::Result<Self> {
        let state = SalesforceState::new(config);
        let server = FakeServer::start(router(state.clone()), listen).await?;
        state.outbound_lock().instance = server.base_url();
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:PORT`: both the login URL (token endpoint) and the
    /// `instance_url` the token endpoint hands out.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn state(&self) -> &SalesforceState {
        &self.state
    }
}

impl std::ops::Deref for FakeSalesforce {
    type Target = SalesforceState;
    fn deref(&self) -> &SalesforceState {
        &self.state
    }
}

/// Serves a fake Salesforce on `listen` until the future is dropped, after
/// printing the credentials it accepts (for `leadrelay fake salesforce --listen ADDR`).
pub async fn serve(listen: &str, config: SalesforceConfig) -> std::io::Result<()> {
    let state = SalesforceState::new(config);
    let listener = TcpListener::bind(listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    state.outbound_lock().instance = base.clone();
    println!("{}", state.credentials_banner(&base));
    axum::serve(listener, router(state)).await
}
