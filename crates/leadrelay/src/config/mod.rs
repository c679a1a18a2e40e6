//! Configuration: one TOML file (`leadrelay.toml`), every key documented
//! here where it is declared, unknown keys rejected with their line and
//! column, secrets only ever named by environment variable.
//!
//! Without a file, the embedded `default.toml` is used: a `contact` form,
//! SQLite at `./leadrelay.db`, `127.0.0.1:8080`, an always-on JSONL backup,
//! and destinations that switch on by themselves when the environment
//! variables the seeds name are set.

mod load;
mod location;
mod parse;
pub mod sync;
pub mod units;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use leadrelay_model::ConsentPurpose;
use serde::Deserialize;

pub use load::{
    ConfigError, DEFAULT_CONFIG, LoadedConfig, Problem, Secrets, Severity, load_file,
    load_file_with, load_str, load_str_with, parse_settings,
};
pub use units::{ByteSize, Enabled, HumanDuration, IpRange, Rate, RateLimit};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    /// The HTTP listener and public endpoints.
    pub server: ServerConfig,
    /// Where events and deliveries are stored.
    pub storage: StorageConfig,
    /// IP hashing and data retention.
    pub privacy: PrivacyConfig,
    /// Defaults for every destination's delivery: timeouts, retries, leases.
    pub delivery: DeliveryConfig,
    /// When and where leadrelay raises alerts about failing destinations.
    pub alerts: AlertsConfig,
    /// Website forms accepted at `POST /v1/forms/{name}`.
    pub forms: BTreeMap<String, FormConfig>,
    /// Inbound vendor webhooks accepted at `POST /v1/hooks/{name}`.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Where events are delivered.
    pub destinations: BTreeMap<String, DestinationConfig>,
    /// Which events go to which destinations.
    pub routes: Vec<RouteConfig>,
    /// Lead scoring rules and MQL/SQL thresholds.
    pub scoring: crate::pipeline::ScoringConfig,
    /// The people leads are assigned to.
    pub owners: Vec<crate::pipeline::OwnerConfig>,
    /// How an owner is chosen for a sales-qualified lead.
    pub routing: crate::pipeline::RoutingConfig,
    /// What happens when a contact becomes sales-qualified.
    pub handoff: crate::pipeline::HandoffConfig,
    /// The golden contact record: which source's value each field keeps.
    pub contacts: ContactsConfig,
    /// Reports and multi-touch attribution.
    pub reports: crate::reports::ReportsConfig,
    /// The sales feedback loop: CRM dispositions as ratings, Slack buttons.
    pub feedback: crate::feedback::FeedbackConfig,
    /// Record syncs between CRMs (`[syncs.NAME]`).
    pub syncs: BTreeMap<String, sync::SyncConfig>,
}

/// `[contacts]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ContactsConfig {
    /// Per contact field (`phone`, `company`, … or a custom field), how its
    /// value is chosen when sources disagree. Fields without a rule keep the
    /// latest non-empty value.
    pub fields: BTreeMap<String, ContactFieldConfig>,
}

/// `[contacts.fields.NAME]`, e.g. `sources = ["source:hubspot", "form:*"]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ContactFieldConfig {
    /// `latest` (default without `sources`), `first`, `priority` (default
    /// with `sources`) or `never_overwrite`.
    pub strategy: Option<crate::contacts::Strategy>,
    /// Sources allowed to change the value once set, most trusted first:
    /// `form:NAME`, `source:NAME` (or just `NAME`), `api:NAME`, with `*`
    /// for any name or kind. Unlisted sources only fill an empty field.
    pub sources: Vec<String>,
    /// The field is a custom one (not a standard contact field); required so
    /// a misspelt standard field is reported rather than silently custom.
    pub custom: bool,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address to listen on. Overridden by `--listen`.
    pub listen: SocketAddr,
    /// The URL at which people and vendors reach this server (used in
    /// dashboard links in notifications and to verify signed webhooks).
    /// Defaults to `http://{listen}`.
    pub public_url: Option<String>,
    /// Largest request body accepted on public endpoints (413 beyond).
    pub max_body_bytes: ByteSize,
    /// Largest body of `POST /v1/events` (one event or an array of up to
    /// 100; 413 beyond).
    pub max_events_body_bytes: ByteSize,
    /// Submissions allowed per client IP on public endpoints, e.g. `"60/1m"`,
    /// or `"off"`. Beyond it: 429 with `Retry-After`.
    pub per_ip_limit: RateLimit,
    /// Reverse proxies whose `X-Forwarded-For` header is trusted to name the
    /// client: addresses or CIDR ranges (`"10.0.0.0/8"`). Requests from
    /// anywhere else are identified by their TCP peer address.
    pub trusted_proxies: Vec<IpRange>,
    /// How long shutdown waits for in-flight requests and deliveries.
    pub shutdown_grace: HumanDuration,
    /// Longest a client may take to send a request's head (request line and
    /// headers). A kept-alive connection that starts no new request within
    /// this time is closed too, so idle sockets cannot pile up.
    pub header_read_timeout: HumanDuration,
    /// Longest a client may take to send a request's body once its head has
    /// arrived (408 beyond), however slowly the bytes trickle in.
    pub body_read_timeout: HumanDuration,
    /// Most client connections open at once; beyond it new connections wait
    /// in the listen queue. Lowered at start-up to fit the process's open-file
    /// limit (less a reserve for the database and files).
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            max_body_bytes: ByteSize(64 * 1024),
            max_events_body_bytes: ByteSize(1024 * 1024),
            per_ip_limit: RateLimit::Limit(Rate {
                count: 60,
                period: std::time::Duration::from_secs(60),
            }),
            trusted_proxies: Vec::new(),
            shutdown_grace: HumanDuration::secs(15),
            header_read_timeout: HumanDuration::secs(10),
            body_read_timeout: HumanDuration::secs(30),
            max_connections: 10_000,
        }
    }
}

impl ServerConfig {
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// `sqlite://PATH` (the embedded default, `sqlite://./leadrelay.db`) or
    /// `postgres://user@host/db`. Overridden by `--storage-url`.
    pub url: String,
    /// SQLite durability: `"full"` fsyncs every commit (a power cut loses
    /// nothing acknowledged); `"normal"` survives process crashes only.
    pub sqlite_synchronous: SqliteSynchronous,
    /// Most ingest requests committed together in one transaction.
    pub group_commit_max: usize,
    /// PostgreSQL: connections per node.
    pub pool_size: usize,
    /// PostgreSQL: longest a single statement may run.
    pub statement_timeout: HumanDuration,
    /// Longest any store call may take before it fails as "storage
    /// unavailable" (ingest answers 503 with `Retry-After`): a database that
    /// stops answering cannot hold requests or workers.
    pub timeout: HumanDuration,
    /// The same for the calls that scan a lot: reports, privacy export and
    /// erasure, replays, the retention purge.
    pub long_timeout: HumanDuration,
    /// PostgreSQL: require the server's TLS certificate to chain to the
    /// Mozilla roots and match the host. Off: like libpq's default, TLS is
    /// used when the server offers it, unverified (`sslmode=disable` in the
    /// URL turns TLS off).
    pub tls_verify: bool,
    /// PostgreSQL: this node's stable name among the nodes sharing the
    /// database (e.g. its host name). At start-up a node gives back the
    /// delivery leases its previous run held (after a crash or `kill -9`),
    /// so those deliveries are retried at once rather than when the lease
    /// expires. Unset: leases of a crashed run expire as usual. Never give
    /// two running nodes the same name. (SQLite is one node: every lease is
    /// given back at start-up.)
    pub node_id: Option<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://./leadrelay.db".into(),
            sqlite_synchronous: SqliteSynchronous::Full,
            group_commit_max: 512,
            pool_size: 16,
            statement_timeout: HumanDuration::secs(10),
            timeout: HumanDuration::secs(5),
            long_timeout: HumanDuration::secs(60),
            tls_verify: false,
            node_id: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

/// `[privacy]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PrivacyConfig {
    /// The env var holding the key for hashing client IPs (HMAC-SHA256). When
    /// unset, a key is generated once and kept in the store.
    pub ip_hash_key_env: String,
    /// How long data is kept; older data is purged by a background job.
    pub retention: RetentionConfig,
    /// The purposes an `unsubscribed` event withdraws when it names none
    /// itself (its data's `purposes`): by default the marketing ones.
    pub unsubscribe_withdraws: Vec<ConsentPurpose>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            ip_hash_key_env: "LEADRELAY_IP_HASH_KEY".into(),
            retention: RetentionConfig::default(),
            unsubscribe_withdraws: ["marketing_email", "sms"]
                .iter()
                .filter_map(|p| ConsentPurpose::parse(p).ok())
                .collect(),
        }
    }
}

/// `[privacy.retention]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// Raw request bodies kept with events.
    pub raw_payloads: HumanDuration,
    /// The attempt log (every try of every delivery).
    pub attempts: HumanDuration,
    /// Finished deliveries (delivered or skipped; dead letters are kept until
    /// replayed or discarded).
    pub deliveries: HumanDuration,
    /// Contacts with no event for this long are erased (their events
    /// scrubbed, their unsent deliveries stopped, exactly like a privacy
    /// erase, each audited); `"off"` keeps them.
    #[serde(deserialize_with = "units::duration_or_off")]
    pub contacts: Option<HumanDuration>,
    /// How often the purge job runs.
    pub interval: HumanDuration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            raw_payloads: HumanDuration::secs(90 * 86_400),
            attempts: HumanDuration::secs(30 * 86_400),
            deliveries: HumanDuration::secs(90 * 86_400),
            contacts: Some(HumanDuration::secs(3 * 365 * 86_400)),
            interval: HumanDuration::secs(3600),
        }
    }
}

/// `[delivery]`: defaults for every destination (each may override).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DeliveryConfig {
    /// Per-request timeout for a connector's calls.
    pub timeout: HumanDuration,
    /// Retry policy.
    pub retry: RetryConfig,
    /// How long a worker holds a claimed delivery before another may take it.
    pub lease: HumanDuration,
    /// How often idle workers look for due deliveries (ingest also wakes them).
    pub poll_interval: HumanDuration,
    /// Circuit breaker.
    pub circuit: CircuitConfig,
    /// Destinations that receive a copy of every dead letter (e.g. a
    /// "failed" Google Sheet): an event `delivery.dead_lettered` carrying the
    /// original event, the destination and the reason, stored in the same
    /// transaction that marks the delivery dead. A destination never receives
    /// copies of its own dead letters, and copies are never copied.
    pub dead_letter_copies: Vec<String>,
    /// Automatic retries of dead letters refused for a fixable cause.
    pub fixable: FixableConfig,
}

/// `[delivery.fixable]`: dead letters a destination refused for a reason
/// a person can fix there (a missing property, a picklist value, a
/// validation rule, a required field) are retried by themselves when the
/// cause may be gone: the destination's configuration changed, the
/// connector finds the cause fixed (checked every `check_every`, and by
/// `leadrelay check`), or every `retry_every` — at most `max_retries` times.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FixableConfig {
    /// Off: fixable dead letters wait for a person like any other.
    pub enabled: bool,
    /// Scheduled retry interval (default daily).
    pub retry_every: HumanDuration,
    /// How often the connector is asked whether a cause is fixed (a read of
    /// the destination's schema per cause), and due retries are made.
    pub check_every: HumanDuration,
    /// Automatic retries per event and destination; then a person decides.
    pub max_retries: u32,
}

impl Default for FixableConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retry_every: HumanDuration::secs(24 * 3600),
            check_every: HumanDuration::secs(15 * 60),
            max_retries: 7,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            timeout: HumanDuration::secs(10),
            retry: RetryConfig::default(),
            lease: HumanDuration::secs(60),
            poll_interval: HumanDuration::secs(1),
            circuit: CircuitConfig::default(),
            dead_letter_copies: Vec::new(),
            fixable: FixableConfig::default(),
        }
    }
}

/// `[delivery.retry]` / `[destinations.NAME.retry]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// First backoff step; each further step doubles (1 s, 2 s, 4 s, 8 s …),
    /// with full jitter.
    pub base: HumanDuration,
    /// Longest single backoff step.
    pub cap: HumanDuration,
    /// Give up (dead-letter) once a delivery is this old.
    pub max_age: HumanDuration,
    /// Give up after this many failed attempts (unset: only `max_age` applies).
    pub max_attempts: Option<u32>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            base: HumanDuration::secs(1),
            cap: HumanDuration::secs(3600),
            max_age: HumanDuration::secs(72 * 3600),
            max_attempts: None,
        }
    }
}

/// `[delivery.circuit]` / `[destinations.NAME.circuit]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitConfig {
    /// Consecutive retryable failures that open the circuit.
    pub failure_threshold: u32,
    /// First wait before a probe while open (doubles up to `max_probe_interval`).
    pub probe_interval: HumanDuration,
    pub max_probe_interval: HumanDuration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            probe_interval: HumanDuration::secs(15),
            max_probe_interval: HumanDuration::secs(300),
        }
    }
}

/// `[alerts]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AlertsConfig {
    /// Destinations that receive alerts and recovery notices (Slack, email,
    /// webhook …). Empty: alerts are only logged and shown on the dashboard.
    pub notify: Vec<String>,
    /// Failure rate over `window` above which a destination is alerting.
    pub failure_rate: f64,
    pub window: HumanDuration,
    /// Fewest attempts in the window before the rate counts.
    pub min_attempts: u32,
    /// New dead letters in the window that raise an alert by themselves.
    pub dead_letters: u32,
    /// How often the alert monitor evaluates.
    pub check_interval: HumanDuration,
    /// Send an alert when a dashboard issue (dead letters of one
    /// destination with one cause) opens, and a notice when it resolves.
    pub issues: bool,
    /// How long an issue must stay open before its alert goes out, and
    /// stay resolved before its notice does (a blip fixed at once, or an
    /// automatic retry, raises nothing).
    pub issue_debounce: HumanDuration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            notify: Vec::new(),
            failure_rate: 0.2,
            window: HumanDuration::secs(15 * 60),
            min_attempts: 10,
            dead_letters: 5,
            check_interval: HumanDuration::secs(30),
            issues: true,
            issue_debounce: HumanDuration::secs(5 * 60),
        }
    }
}

/// `[forms.NAME]`: a website form.
#[derive(Debug, Clone, Deserialize)]
pub struct FormConfig {
    /// A human title, shown in the dashboard.
    #[serde(default)]
    pub title: Option<String>,
    /// The event type a submission becomes (default `lead.created`).
    #[serde(default = "default_form_event_type")]
    pub event_type: String,
    /// The form's fields, by the name they are posted under.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldConfig>,
    /// A field that humans never fill (hidden with CSS). A submission that
    /// fills it is answered as a success, stored as spam, and never delivered.
    #[serde(default)]
    pub honeypot: Option<String>,
    /// Consent checkboxes by purpose (`crm`, `marketing_email`, `sms` …).
    #[serde(default)]
    pub consent: BTreeMap<String, ConsentFieldConfig>,
    /// Origins allowed to post (CORS with preflight): exact origins such as
    /// `"https://www.example.com"`, or `"*"`. Empty: any origin may post but
    /// no CORS headers are sent.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Where a browser form post is sent after success (303). Without it,
    /// browsers get leadrelay's own thank-you page.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// A form field that carries an idempotency key (in addition to the
    /// `Idempotency-Key` header).
    #[serde(default)]
    pub idempotency_field: Option<String>,
    /// Per-form body size limit (default: `server.max_body_bytes`).
    #[serde(default)]
    pub max_body_bytes: Option<ByteSize>,
    /// Default region for phone numbers written without `+country` (ISO
    /// alpha-2, e.g. `"US"`); a field's own `default_region` wins.
    #[serde(default)]
    pub default_region: Option<String>,
    /// Reject fields that are not declared (422) instead of ignoring them.
    #[serde(default)]
    pub reject_unknown_fields: bool,
}

fn default_form_event_type() -> String {
    "lead.created".into()
}

/// `[forms.NAME.fields.FIELD]`
#[derive(Debug, Clone, Deserialize)]
pub struct FieldConfig {
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default)]
    pub required: bool,
    /// Longest accepted value in characters (text, hidden; default 1000).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// The allowed values of a `picklist`.
    #[serde(default)]
    pub options: Vec<String>,
    /// Phone only: region for numbers without `+country`.
    #[serde(default)]
    pub default_region: Option<String>,
    /// Number only: bounds.
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// The contact field this fills (`first_name`, `company`, …). Defaults to
    /// the field's own name when that is a standard contact field; other
    /// fields are kept with the event's data.
    #[serde(default)]
    pub contact: Option<String>,
    /// Shown in error messages and the dashboard.
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Email,
    Phone,
    Text,
    #[serde(alias = "enum")]
    Picklist,
    Url,
    Number,
    Boolean,
    Hidden,
}

/// `[forms.NAME.consent.PURPOSE]`
#[derive(Debug, Clone, Deserialize)]
pub struct ConsentFieldConfig {
    /// The checkbox field posted for this purpose.
    pub field: String,
    /// The version of the consent text shown next to the checkbox; stored with
    /// every consent record.
    pub version: String,
    /// The consent text itself (for the record and the dashboard).
    #[serde(default)]
    pub text: Option<String>,
    /// Reject the submission (422) unless this consent is given.
    #[serde(default)]
    pub required: bool,
}

/// `[sources.NAME]`: an inbound vendor webhook.
#[derive(Debug, Clone, Deserialize)]
pub struct SourceConfig {
    /// The vendor format: `mailshake`, `hubspot`, `calendly`, `generic` …
    /// (`leadrelay sources kinds` lists them all).
    pub kind: String,
    /// Per-source body size limit (413 beyond). Default: the kind's, which
    /// fits the vendor's largest documented request (e.g. 2 MiB for
    /// Woodpecker's 100-prospect batches and Salesforce's 100 notifications),
    /// and never less than `server.max_body_bytes`. At most 10 MiB.
    #[serde(default)]
    pub max_body_bytes: Option<ByteSize>,
    /// Kind-specific settings (secrets by env-var name, e.g. `secret_env`).
    #[serde(flatten)]
    pub settings: toml::Table,
}

/// Why a destination may receive personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    /// The person consented to every purpose in `purposes` (the default).
    Consent,
    /// Processing without consent under legitimate interest (e.g. your own
    /// backups); documented by setting this explicitly.
    LegitimateInterest,
}

/// `[destinations.NAME]`: where events are delivered.
#[derive(Debug, Clone, Deserialize)]
pub struct DestinationConfig {
    /// The connector: `file`, `webhook`, … (see the README's connector list).
    pub connector: String,
    /// `true`, `false`, or `"auto"` (on when its `*_env` variables are set).
    #[serde(default)]
    pub enabled: Enabled,
    /// Consent purposes a person must have granted before their data is sent.
    #[serde(default)]
    pub purposes: Vec<ConsentPurpose>,
    /// `consent` (default) or `legitimate_interest`.
    #[serde(default)]
    pub legal_basis: Option<LegalBasis>,
    /// Requests per window, e.g. `"100/10s"`; defaults per connector.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Requests in flight at once; defaults per connector.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Deliveries per request for connectors that batch; defaults per connector.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Per-request timeout (default `delivery.timeout`).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Retry policy overrides (default `delivery.retry`).
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Circuit breaker overrides (default `delivery.circuit`).
    #[serde(default)]
    pub circuit: Option<CircuitConfig>,
    /// Where this destination's dead letters are copied (default
    /// `delivery.dead_letter_copies`; `[]` for nowhere).
    #[serde(default)]
    pub dead_letter_copies: Option<Vec<String>>,
    /// Connector-specific settings (`path`, `url_env`, `token_env` …).
    #[serde(flatten)]
    pub settings: toml::Table,
}

/// `[[routes]]`: which events go to which destinations.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteConfig {
    /// A name for logs, `check` and `simulate`.
    pub name: String,
    /// Event types: exact (`lead.created`), prefix (`email.*`) or `*`.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// Only events from these forms (empty: any).
    #[serde(default)]
    pub forms: Vec<String>,
    /// Only events from these sources (empty: any): `[sources.X]` names, or
    /// HubSpot destinations that read lists (their events come from
    /// `source:NAME`).
    #[serde(default)]
    pub sources: Vec<String>,
    /// A condition (minijinja expression) over `event`, `contact`,
    /// `attribution` and `data`, e.g. `contact.country == "DE" and data.budget > 1000`.
    #[serde(default)]
    pub when: Option<String>,
    /// Destinations that receive matching events.
    pub destinations: Vec<String>,
    /// The playbook this route belongs to (the routes of a file in
    /// `playbooks/` carry its name): recorded on every event the route
    /// matches, shown in the lead timeline, the events API and `simulate`.
    #[serde(default)]
    pub playbook: Option<String>,
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}
