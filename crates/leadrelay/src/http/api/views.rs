//! The JSON the admin API answers with. These types are what the OpenAPI
//! document describes (they derive `ToSchema`), so the document and the
//! answers cannot drift apart. Each view is built from a store record with
//! `mask` set for viewers: emails and phone numbers masked everywhere, in
//! structured fields and in free text (raw payloads, form answers).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use leadrelay_model::{Contact, ContactData, Event};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::admin::ConfiguredDestination;
use crate::redact::{redact_payload, redact_text};
use crate::store::{
    ApiKey, Attempt, AuditRecord, Delivery, DeliveryState, DestinationState, DestinationStats,
    EraseReport, PrivacyExport, RemoteRecord, ReviewItem, ReviewStatus, Role,
};

/// Masks emails and phone-like numbers in every string of a JSON value.
pub fn mask_value(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(redact_text(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(mask_value).collect()),
        Value::Object(m) => Value::Object(mask_map(m)),
        other => other,
    }
}

fn mask_map(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter().map(|(k, v)| (k, mask_value(v))).collect()
}

fn maybe_mask(v: Value, mask: bool) -> Value {
    if mask { mask_value(v) } else { v }
}

fn maybe_mask_text(s: String, mask: bool) -> String {
    if mask { redact_text(&s) } else { s }
}

/// The error body every failure answers with.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `unauthorized`, `forbidden`, `not_found`, `invalid_query`, …
    pub code: String,
    pub message: String,
    /// Per-field problems (422).
    pub fields: Vec<FieldErrorView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FieldErrorView {
    pub field: String,
    pub code: String,
    pub message: String,
}

/// Where an event came from.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OriginView {
    /// `form`, `source`, `api` or `system`.
    pub kind: String,
    pub name: String,
}

/// A person's fields as an event or the golden record holds them.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ContactFields {
    pub email: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub domain: Option<String>,
    pub title: Option<String>,
    pub website: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
    /// Other person-level fields.
    #[schema(value_type = Object)]
    pub custom: Map<String, Value>,
}

impl ContactFields {
    pub fn new(c: &ContactData, mask: bool) -> Self {
        Self {
            email: c
                .email
                .as_ref()
                .map(|e| if mask { e.masked() } else { e.to_string() }),
            phone: c.phone.as_ref().map(|p| {
                if mask {
                    p.masked()
                } else {
                    p.as_str().to_string()
                }
            }),
            first_name: c.first_name.clone(),
            last_name: c.last_name.clone(),
            company: c.company.clone(),
            domain: c.domain.clone(),
            title: c.title.clone(),
            website: c.website.clone(),
            country: c.country.clone(),
            region: c.region.clone(),
            city: c.city.clone(),
            custom: c
                .custom
                .iter()
                .map(|(k, v)| (k.clone(), maybe_mask(v.clone(), mask)))
                .collect(),
        }
    }

    /// "First Last", whichever parts are present.
    pub fn display_name(&self) -> Option<String> {
        let parts: Vec<&str> = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// One consent answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsentView {
    pub purpose: String,
    pub granted: bool,
    pub text_version: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

impl From<&leadrelay_model::ConsentRecord> for ConsentView {
    fn from(c: &leadrelay_model::ConsentRecord) -> Self {
        Self {
            purpose: c.purpose.as_str().to_string(),
            granted: c.granted,
            text_version: c.text_version.clone(),
            recorded_at: c.recorded_at,
        }
    }
}

/// The request body as received.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RawView {
    pub content_type: String,
    /// Empty once retention or an erase removed it.
    pub body: String,
}

/// A line in the events list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventSummary {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub origin: OriginView,
    pub received_at: DateTime<Utc>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub company: Option<String>,
    pub contact_id: Option<Uuid>,
    pub utm_source: Option<String>,
    pub spam: bool,
    /// The playbooks (routes' `playbook`) that acted on this event.
    pub playbooks: Vec<String>,
}

impl EventSummary {
    pub fn new(e: &Event, mask: bool) -> Self {
        let c = ContactFields::new(&e.contact, mask);
        Self {
            id: e.id,
            event_type: e.event_type.as_str().to_string(),
            origin: origin(e),
            received_at: e.received_at,
            name: c.display_name(),
            email: c.email,
            company: c.company,
            contact_id: e.contact_id,
            utm_source: e.attribution.utm_source.clone(),
            spam: e.spam,
            playbooks: e.playbooks.clone(),
        }
    }
}

fn origin(e: &Event) -> OriginView {
    OriginView {
        kind: e.origin.kind.as_str().to_string(),
        name: e.origin.name.clone(),
    }
}

/// A stored event with its enrichment and raw payload.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub origin: OriginView,
    pub received_at: DateTime<Utc>,
    pub occurred_at: DateTime<Utc>,
    /// The person as this event described them.
    pub contact: ContactFields,
    /// The golden record the event was merged into.
    pub contact_id: Option<Uuid>,
    /// Validated, normalised fields.
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// Enrichment: UTM parameters, click ids, referrer, landing page, user agent.
    #[schema(value_type = Object)]
    pub attribution: Value,
    pub consent: Vec<ConsentView>,
    /// HMAC of the client IP (never the IP).
    pub ip_hash: Option<String>,
    pub raw: RawView,
    pub spam: bool,
    pub idempotency_key: Option<String>,
    pub external_id: Option<String>,
    /// Ids of the same thing in other systems.
    #[schema(value_type = Vec<Object>)]
    pub vendor_refs: Vec<Value>,
    /// Field changes reported by a CRM.
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<Value>,
    /// The playbooks (routes' `playbook`) that acted on this event.
    pub playbooks: Vec<String>,
}

impl EventView {
    pub fn new(e: &Event, mask: bool) -> Self {
        let to_values = |v: Value| match v {
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        Self {
            id: e.id,
            event_type: e.event_type.as_str().to_string(),
            origin: origin(e),
            received_at: e.received_at,
            occurred_at: e.occurred_at,
            contact: ContactFields::new(&e.contact, mask),
            contact_id: e.contact_id,
            data: if mask {
                mask_map(e.data.clone())
            } else {
                e.data.clone()
            },
            attribution: serde_json::to_value(&e.attribution)
                .map(|v| maybe_mask(v, mask))
                .unwrap_or_else(|_| Value::Object(Map::new())),
            consent: e.consent.iter().map(ConsentView::from).collect(),
            ip_hash: e.ip_hash.clone(),
            raw: RawView {
                content_type: e.raw.content_type.clone(),
                // Decoded by its type first: `omar%40example.com` is an email too.
                body: if mask {
                    redact_payload(&e.raw.content_type, &e.raw.body)
                } else {
                    e.raw.body.clone()
                },
            },
            spam: e.spam,
            idempotency_key: e.idempotency_key.clone(),
            external_id: e.external_id.clone(),
            vendor_refs: to_values(serde_json::to_value(&e.vendor_refs).unwrap_or_default()),
            changes: to_values(
                serde_json::to_value(&e.changes)
                    .map(|v| maybe_mask(v, mask))
                    .unwrap_or_default(),
            ),
            playbooks: e.playbooks.clone(),
        }
    }
}

/// One event to one destination.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub event_id: Uuid,
    pub destination: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub failures: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// Why it is dead or skipped.
    pub reason: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The dead letter this delivery replays.
    pub replay_of: Option<Uuid>,
    /// The delivery that replayed this one.
    pub replayed_by: Option<Uuid>,
    /// Field overrides of a replay.
    #[schema(value_type = Option<Object>)]
    pub overrides: Option<Map<String, Value>>,
}

impl DeliveryView {
    pub fn new(d: &Delivery, mask: bool) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            destination: d.destination.clone(),
            state: d.state,
            attempts: d.attempts,
            failures: d.failures,
            created_at: d.created_at,
            updated_at: d.updated_at,
            next_attempt_at: d.next_attempt_at,
            last_status: d.last_status,
            last_error: d.last_error.clone().map(|s| maybe_mask_text(s, mask)),
            reason: d.reason.clone().map(|s| maybe_mask_text(s, mask)),
            finished_at: d.finished_at,
            replay_of: d.replay_of,
            replayed_by: d.replayed_by,
            overrides: d
                .overrides
                .clone()
                .map(|o| if mask { mask_map(o) } else { o }),
        }
    }
}

/// One try of a delivery.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub destination: String,
    /// 1 for the first try.
    pub number: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub method: Option<String>,
    /// Without secrets.
    pub url: Option<String>,
    pub request_bytes: Option<u64>,
    pub request_sha256: Option<String>,
    pub status: Option<u16>,
    /// Truncated, personal data redacted.
    pub response_excerpt: Option<String>,
    pub error_class: Option<String>,
    /// `delivered`, `retry`, `throttled`, `dead`, `skipped`.
    pub outcome: String,
    pub message: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The request as sent and the response headers; absent when nothing
    /// was sent over HTTP or the attempt predates request capture.
    pub exchange: Option<ExchangeView>,
}

/// An attempt's HTTP exchange. Secrets appear as `$ENV_VAR_NAME`; other
/// credentials as `[hidden]`; for viewers personal data is masked.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExchangeView {
    pub request_headers: Vec<HeaderView>,
    /// Capped at 16 KiB.
    pub request_body: String,
    /// True when the body was longer than what is kept.
    pub request_body_truncated: bool,
    pub response_headers: Vec<HeaderView>,
    /// The request as a curl command (secrets as env var references);
    /// admins only.
    pub curl: Option<String>,
}

/// One header.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HeaderView {
    pub name: String,
    pub value: String,
}

fn header_views(h: &[(String, String)], mask: bool) -> Vec<HeaderView> {
    h.iter()
        .map(|(k, v)| HeaderView {
            name: k.clone(),
            value: maybe_mask_text(v.clone(), mask),
        })
        .collect()
}

impl ExchangeView {
    pub fn new(a: &Attempt, x: &crate::store::Exchange, mask: bool) -> Self {
        let body = if mask {
            crate::redact::redact_payload(x.content_type(), &x.request_body)
        } else {
            x.request_body.clone()
        };
        Self {
            request_headers: header_views(&x.request_headers, mask),
            request_body: body,
            request_body_truncated: x.request_body_truncated,
            response_headers: header_views(&x.response_headers, mask),
            curl: (!mask).then(|| curl_command(a, x)),
        }
    }
}

/// `curl` repeating a captured request; secrets stay `$VAR` references for
/// the shell to fill in from the environment.
pub fn curl_command(a: &Attempt, x: &crate::store::Exchange) -> String {
    let vars = crate::connectors::http::secret_var_names();
    let mut cmd = String::new();
    if x.request_body_truncated {
        cmd.push_str("# the body was cut at 16 KiB: this sends only its start\n");
    }
    cmd.push_str("curl");
    if let Some(m) = &a.method {
        cmd.push_str(" -X ");
        cmd.push_str(&shell_quote(m, &vars));
    }
    cmd.push(' ');
    cmd.push_str(&shell_quote(a.url.as_deref().unwrap_or(""), &vars));
    for (k, v) in &x.request_headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("host") {
            continue;
        }
        cmd.push_str(" \\\n  -H ");
        cmd.push_str(&shell_quote(&format!("{k}: {v}"), &vars));
    }
    if !x.request_body.is_empty() {
        cmd.push_str(" \\\n  --data-binary ");
        cmd.push_str(&shell_quote(&x.request_body, &vars));
    }
    cmd
}

/// `s` single-quoted for a POSIX shell, except `$VAR` for a name in `vars`,
/// which is left for the shell to expand (`'…'"$VAR"'…'`).
fn shell_quote(s: &str, vars: &[String]) -> String {
    let mut out = String::from("'");
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        let var = vars.iter().find(|v| {
            after.starts_with(v.as_str())
                && !after[v.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        });
        out.push_str(&rest[..i].replace('\'', "'\\''"));
        match var {
            Some(v) => {
                out.push_str("'\"$");
                out.push_str(v);
                out.push_str("\"'");
                rest = &after[v.len()..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(&rest.replace('\'', "'\\''"));
    out.push('\'');
    out
}

impl AttemptView {
    pub fn new(a: &Attempt, mask: bool) -> Self {
        Self {
            id: a.id,
            delivery_id: a.delivery_id,
            destination: a.destination.clone(),
            number: a.number,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            method: a.method.clone(),
            url: a.url.clone().map(|s| maybe_mask_text(s, mask)),
            request_bytes: a.request_bytes,
            request_sha256: a.request_sha256.clone(),
            status: a.status,
            response_excerpt: a.response_excerpt.clone().map(|s| maybe_mask_text(s, mask)),
            error_class: a.error_class.clone(),
            outcome: a.outcome.clone(),
            message: a.message.clone().map(|s| maybe_mask_text(s, mask)),
            next_attempt_at: a.next_attempt_at,
            exchange: a.exchange.as_ref().map(|x| ExchangeView::new(a, x, mask)),
        }
    }
}

/// A delivery with every attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryDetail {
    pub delivery: DeliveryView,
    pub attempts: Vec<AttemptView>,
}

/// An event with its deliveries and their attempts: the lead's timeline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventDetail {
    pub event: EventView,
    pub deliveries: Vec<DeliveryDetail>,
}

/// Where a golden-record field's value came from.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProvenanceView {
    /// `form:contact`, `source:hubspot` …
    pub source: String,
    pub event_id: Uuid,
    pub at: DateTime<Utc>,
}

/// The golden record of one person.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactView {
    pub id: Uuid,
    pub fields: ContactFields,
    /// Per field, the event that set its current value.
    pub provenance: BTreeMap<String, ProvenanceView>,
    /// The latest answer per consent purpose.
    pub consent: BTreeMap<String, ConsentView>,
    /// Score, stage, owner and handoff times (absent before any scoring).
    pub lead: Option<super::pipeline::LeadView>,
    /// The contact's handoff and SLA timers, newest first (single-contact
    /// answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timers: Option<Vec<crate::store::Timer>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ContactView {
    pub fn new(c: &Contact, mask: bool) -> Self {
        Self {
            id: c.id,
            fields: ContactFields::new(&c.data, mask),
            provenance: c
                .provenance
                .iter()
                .map(|(k, p)| {
                    (
                        k.clone(),
                        ProvenanceView {
                            source: p.source.clone(),
                            event_id: p.event_id,
                            at: p.at,
                        },
                    )
                })
                .collect(),
            consent: c
                .consent
                .iter()
                .map(|(k, r)| (k.clone(), ConsentView::from(r)))
                .collect(),
            lead: (!c.lead.is_empty()).then(|| super::pipeline::LeadView::from(&c.lead)),
            timers: None,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// A destination's state and health over the window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DestinationHealth {
    pub name: String,
    /// The connector, when the destination is configured.
    pub connector: Option<String>,
    /// Configured and switched on.
    pub enabled: bool,
    pub paused: bool,
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<String>,
    /// Disabled after `410 Gone`.
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    /// `closed`, `open` or `half_open`.
    pub circuit: String,
    /// Unfinished deliveries.
    pub backlog: u64,
    pub pending: u64,
    pub in_flight: u64,
    pub scheduled: u64,
    /// Dead letters waiting for a person.
    pub dead_letters: u64,
    /// The window the figures below cover, in hours.
    pub window_hours: i64,
    pub attempts: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Succeeded share of attempts in the window, 0–1 (null without attempts).
    pub success_rate: Option<f64>,
    pub latency_p50_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
    /// `failing` (circuit open, or under half of the window's attempts
    /// succeeded), `degraded` (circuit half-open, or under 95 %), `healthy`,
    /// or `idle` (no attempts in the window).
    pub health: &'static str,
}

/// Fewest attempts in the window before a low success rate counts.
const HEALTH_MIN_ATTEMPTS: u64 = 3;

/// The health verdict of [`DestinationHealth::health`].
pub fn health_verdict(circuit: &str, succeeded: u64, failed: u64) -> &'static str {
    let n = succeeded + failed;
    let rate = (n > 0).then(|| succeeded as f64 / n as f64);
    match (circuit, rate) {
        ("open", _) => "failing",
        (_, Some(r)) if r < 0.5 && (n >= HEALTH_MIN_ATTEMPTS || succeeded == 0) => "failing",
        ("half_open", _) => "degraded",
        (_, Some(r)) if r < 0.95 => "degraded",
        (_, None) => "idle",
        _ => "healthy",
    }
}

impl DestinationHealth {
    pub fn new(
        configured: Option<&ConfiguredDestination>,
        s: &DestinationStats,
        st: &DestinationState,
        now: DateTime<Utc>,
        window_hours: i64,
    ) -> Self {
        let paused = st.paused_at(now);
        Self {
            name: s.destination.clone(),
            connector: configured.map(|c| c.connector.clone()),
            enabled: configured.is_some_and(|c| c.enabled),
            paused,
            paused_until: st.paused_until.filter(|_| paused),
            pause_reason: st.pause_reason.clone().filter(|_| paused),
            disabled: st.disabled,
            disabled_reason: st.disabled_reason.clone(),
            circuit: st.circuit.clone(),
            backlog: s.backlog(),
            pending: s.pending,
            in_flight: s.in_flight,
            scheduled: s.scheduled,
            dead_letters: s.dead,
            window_hours,
            attempts: s.window_attempts,
            succeeded: s.window_succeeded,
            failed: s.window_failed,
            success_rate: s.success_rate(),
            latency_p50_ms: s.latency_p50_ms,
            latency_p99_ms: s.latency_p99_ms,
            health: health_verdict(&st.circuit, s.window_succeeded, s.window_failed),
        }
    }
}

/// An item of the review queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewItemView {
    pub id: Uuid,
    /// e.g. `sync_conflict`.
    pub kind: String,
    pub status: ReviewStatus,
    pub summary: String,
    pub contact_id: Option<Uuid>,
    pub destination: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
}

impl ReviewItemView {
    pub fn new(r: &ReviewItem, mask: bool) -> Self {
        Self {
            id: r.id,
            kind: r.kind.clone(),
            status: r.status,
            summary: r.summary.clone(),
            contact_id: r.contact_id,
            destination: r.destination.clone(),
            details: maybe_mask(r.details.clone(), mask),
            created_at: r.created_at,
            resolved_at: r.resolved_at,
            resolved_by: r.resolved_by.clone(),
            resolution: r.resolution.clone(),
        }
    }
}

/// A record a destination keeps for a person.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RemoteRecordView {
    pub destination: String,
    /// e.g. `contact`.
    pub object: String,
    /// Our key for it, e.g. `email:…`.
    pub key: String,
    /// The destination's id.
    pub id: String,
}

impl From<&RemoteRecord> for RemoteRecordView {
    fn from(r: &RemoteRecord) -> Self {
        Self {
            destination: r.destination.clone(),
            object: r.remote.object.clone(),
            key: r.remote.key.clone(),
            id: r.remote.id.clone(),
        }
    }
}

/// Everything held about one person.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PrivacyExportView {
    /// The audit record of this export.
    pub audit_id: Uuid,
    pub contact: Option<ContactView>,
    pub events: Vec<EventView>,
    pub deliveries: Vec<DeliveryView>,
    pub attempts: Vec<AttemptView>,
    pub remote_records: Vec<RemoteRecordView>,
}

impl From<&PrivacyExport> for PrivacyExportView {
    fn from(x: &PrivacyExport) -> Self {
        Self {
            audit_id: x.audit_id,
            contact: x.contact.as_ref().map(|c| ContactView::new(c, false)),
            events: x.events.iter().map(|e| EventView::new(e, false)).collect(),
            deliveries: x
                .deliveries
                .iter()
                .map(|d| DeliveryView::new(d, false))
                .collect(),
            attempts: x
                .attempts
                .iter()
                .map(|a| AttemptView::new(a, false))
                .collect(),
            remote_records: x
                .remote_records
                .iter()
                .map(RemoteRecordView::from)
                .collect(),
        }
    }
}

/// What an erase removed. `remote_records` are the records destinations
/// keep for the person, for erasure there.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EraseReportView {
    pub audit_id: Uuid,
    pub contact_id: Option<Uuid>,
    pub event_ids: Vec<Uuid>,
    pub deliveries_stopped: u64,
    pub overrides_cleared: u64,
    pub remote_records: Vec<RemoteRecordView>,
    /// Local backup files rewritten without the person's lines.
    pub backups: Vec<BackupErasureView>,
    /// Erase requests queued to the CRMs that hold the person.
    pub remote_erasures: Vec<RemoteErasureView>,
}

/// An erase request queued to a CRM (follow it as a delivery).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RemoteErasureView {
    pub destination: String,
    pub event_id: Uuid,
    pub delivery_id: Option<Uuid>,
    pub records: Vec<RemoteRecordRefView>,
}

/// A record in a destination.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RemoteRecordRefView {
    pub object: String,
    pub id: String,
}

/// A local backup file an erase rewrote (or could not).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BackupErasureView {
    pub destination: String,
    pub file: String,
    pub lines_removed: u64,
    pub error: Option<String>,
}

impl From<&EraseReport> for EraseReportView {
    fn from(r: &EraseReport) -> Self {
        Self {
            audit_id: r.audit_id,
            contact_id: r.contact_id,
            event_ids: r.event_ids.clone(),
            deliveries_stopped: r.deliveries_stopped,
            overrides_cleared: r.overrides_cleared,
            remote_records: r
                .remote_records
                .iter()
                .map(RemoteRecordView::from)
                .collect(),
            backups: r
                .backups
                .iter()
                .map(|b| BackupErasureView {
                    destination: b.destination.clone(),
                    file: b.file.clone(),
                    lines_removed: b.lines_removed,
                    error: b.error.clone(),
                })
                .collect(),
            remote_erasures: r
                .remote_erasures
                .iter()
                .map(|e| RemoteErasureView {
                    destination: e.destination.clone(),
                    event_id: e.event_id,
                    delivery_id: e.delivery_id,
                    records: e
                        .records
                        .iter()
                        .map(|x| RemoteRecordRefView {
                            object: x.object.clone(),
                            id: x.id.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// One privacy audit entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditRecordView {
    pub id: Uuid,
    /// `export` or `erase`.
    pub action: String,
    /// `key:NAME` or `cli:USER`.
    pub actor: String,
    /// Keyed hash of the email.
    pub subject_hash: String,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
}

impl From<&AuditRecord> for AuditRecordView {
    fn from(a: &AuditRecord) -> Self {
        Self {
            id: a.id,
            action: a.action.clone(),
            actor: a.actor.clone(),
            subject_hash: a.subject_hash.clone(),
            at: a.at,
            reason: a.reason.clone(),
            details: a.details.clone(),
        }
    }
}

/// The caller's key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeView {
    pub name: String,
    pub role: Role,
}

/// An API key as listed (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(k: &ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name.clone(),
            role: k.role,
            prefix: k.prefix.clone(),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

macro_rules! page {
    ($name:ident, $item:ty, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Serialize, ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` for the next page; null on the last page.
            pub next_cursor: Option<Uuid>,
        }
    };
}

page!(EventPage, EventSummary, "A page of events, newest first.");
page!(
    ContactPage,
    ContactView,
    "A page of contacts, newest first."
);
page!(
    DeliveryPage,
    DeliveryView,
    "A page of deliveries, newest first."
);
page!(
    ReviewPage,
    ReviewItemView,
    "A page of review items, newest first."
);
page!(
    AuditPage,
    AuditRecordView,
    "A page of audit records, newest first."
);

/// Body of a single replay (optional).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Field overrides for the replay, e.g. `{"contact.first_name": "Jane"}`.
    #[schema(value_type = Option<Object>)]
    pub overrides: Option<Map<String, Value>>,
}

/// Which dead letters to replay: named by id, or every one of a destination
/// (`"*"`: of every destination).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BulkReplayRequest {
    Ids(ReplayByIds),
    Destination(ReplayByDestination),
}

/// Dead letters named by id.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayByIds {
    #[schema(max_items = 1000)]
    pub ids: Vec<Uuid>,
    /// Field overrides for the replays.
    #[schema(value_type = Option<Object>)]
    pub overrides: Option<Map<String, Value>>,
}

/// Every dead letter of a destination (`"*"`: of every destination).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayByDestination {
    #[schema(min_length = 1, max_length = 100)]
    pub destination: String,
    /// Only dead letters created since.
    pub since: Option<DateTime<Utc>>,
    /// Field overrides for the replays.
    #[schema(value_type = Option<Object>)]
    pub overrides: Option<Map<String, Value>>,
}

/// A dead letter and the new delivery replaying it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayPair {
    pub dead_letter_id: Uuid,
    pub delivery_id: Uuid,
}

/// What a replay did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayResult {
    /// Dead letters asked for.
    pub requested: usize,
    /// Replayed as new deliveries.
    pub replayed: Vec<ReplayPair>,
    /// Not replayed: unknown, not dead, or already replayed.
    pub skipped: Vec<Uuid>,
}

/// Which dead letters to discard.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardRequest {
    #[schema(max_items = 1000)]
    pub ids: Vec<Uuid>,
}

/// What a discard did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DiscardResult {
    pub requested: usize,
    pub discarded: usize,
}

/// Pausing a destination (optional body).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Until when; without it, until resumed.
    pub until: Option<DateTime<Utc>>,
    /// Shown beside the pause.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// How a review item is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    Resolved,
    Dismissed,
}

impl From<ReviewDecision> for ReviewStatus {
    fn from(d: ReviewDecision) -> Self {
        match d {
            ReviewDecision::Resolved => ReviewStatus::Resolved,
            ReviewDecision::Dismissed => ReviewStatus::Dismissed,
        }
    }
}

/// Closing a review item.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub status: ReviewDecision,
    #[schema(max_length = 2000)]
    pub resolution: Option<String>,
}

/// Whom a privacy request is about.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivacyRequestBody {
    /// The address as stored (compared without regard to case).
    #[schema(max_length = 254, pattern = "^[^@]+@[^@]+$")]
    pub email: String,
    /// Why (kept in the audit log).
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// Whose consent is withdrawn, for which purposes.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawRequestBody {
    /// The person's address.
    #[schema(max_length = 254, pattern = "^[^@]+@[^@]+$")]
    pub email: String,
    /// Purposes to withdraw, e.g. `["marketing_email"]`; absent or empty:
    /// the configured `privacy.unsubscribe_withdraws`.
    #[schema(max_items = 32)]
    pub purposes: Option<Vec<PurposeName>>,
    /// Why (kept in the audit log).
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// A consent purpose: 1-64 lowercase letters, digits or underscores,
/// starting with a letter (`crm`, `marketing_email`, `sms` …).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(value_type = String, pattern = "^[a-z][a-z0-9_]{0,63}$")]
pub struct PurposeName(pub String);

/// What a withdrawal recorded.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WithdrawReportView {
    /// The audit record.
    pub audit_id: Uuid,
    /// The stored `unsubscribed` event carrying the withdrawal (null: the
    /// address is not a valid email, so no contact can have it; audited only).
    pub event_id: Option<Uuid>,
    /// The contact now holding it.
    pub contact_id: Option<Uuid>,
    /// The purposes withdrawn.
    pub purposes: Vec<String>,
}

impl From<&crate::privacy::WithdrawReport> for WithdrawReportView {
    fn from(r: &crate::privacy::WithdrawReport) -> Self {
        Self {
            audit_id: r.audit_id,
            event_id: r.event_id,
            contact_id: r.contact_id,
            purposes: r.purposes.iter().map(|p| p.as_str().to_string()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_quote_leaves_only_known_vars_to_the_shell() {
        let vars = vec!["API_KEY".to_string()];
        assert_eq!(
            shell_quote("x-api-key: $API_KEY", &vars),
            "'x-api-key: '\"$API_KEY\"''"
        );
        // Other dollars, quotes and longer names stay literal.
        assert_eq!(
            shell_quote("it's $HOME $API_KEYS", &vars),
            "'it'\\''s $HOME $API_KEYS'"
        );
    }

    use super::health_verdict;

    #[test]
    fn a_destination_that_never_succeeds_is_failing_not_active() {
        assert_eq!(health_verdict("closed", 0, 21), "failing");
        assert_eq!(health_verdict("closed", 0, 1), "failing");
        assert_eq!(health_verdict("open", 50, 0), "failing");
        assert_eq!(health_verdict("closed", 1, 2), "failing");
        assert_eq!(health_verdict("closed", 90, 10), "degraded");
        assert_eq!(health_verdict("half_open", 10, 0), "degraded");
        assert_eq!(health_verdict("closed", 99, 1), "healthy");
        assert_eq!(health_verdict("closed", 0, 0), "idle");
    }
}
