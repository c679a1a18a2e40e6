//! What the notification connectors (`email`, `slack`, `sms`) share: the
//! values their templates see, and message templates — built-in defaults,
//! destination-wide overrides and per-form overrides — compiled and
//! test-rendered when the destination is built, so `leadrelay check`
//! reports a template error with its setting and line instead of the first
//! send failing.
//!
//! A notifier renders three kinds of event: leads and sales events (about a
//! person), alerts (`leadrelay.alert`, see [`crate::delivery::AlertMonitor`];
//! no personal data) and dead-letter copies (`delivery.dead_lettered`). The
//! template context says which: `alert` or `dead_letter` is set.
//!
//! Template context (every template):
//! - `event`: `id`, `type`, `origin` (`kind`, `name`), `form`, `source`, `received_at`
//! - `contact`: every contact field present (`email`, `phone`, `first_name`,
//!   `last_name`, `full_name`, `company`, …, custom fields)
//! - `data`: the event's fields; `attribution`: UTM parameters, click ids,
//!   referrer, landing page; `consent`: purpose → granted
//! - `contact_fields`, `fields`, `attribution_fields`: the same as lists of
//!   `{name, label, value}` (text), in a stable order, for loops
//! - `dashboard_url`: `{server.public_url}/ui/leads/{event.id}`
//! - `owner` (when the person has an assigned owner in `[[owners]]`):
//!   `name`, `email`, `slack_id` — e.g. `<@{{ owner.slack_id }}>` in Slack
//! - `delivery.id`: stable across retries
//! - `alert` (alerts only): `destination`, `alert`, `status` (`firing` /
//!   `resolved`), `message`; issue alerts also `url` (the page)
//! - `dead_letter`, `original` (dead-letter copies only): the failed
//!   destination, reason, status and attempts; the original event's id,
//!   type, origin and fields

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::DeliveryJob;
use crate::config::Problem;
use crate::delivery::{ALERT_EVENT_TYPE, DEAD_LETTER_EVENT_TYPE};
use crate::routing::condition_context;

/// A per-form override of a notifier's templates (`[destinations.NAME.forms.FORM]`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FormOverride {
    /// `false` sends nothing for this form's events (they end `skipped`).
    /// For lead confirmations, listing a form here is what enables them.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Template overrides by part (`subject`, `text`, `html`, `body`).
    #[serde(flatten)]
    pub templates: BTreeMap<String, String>,
}

/// What kind of message an event makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A lead or sales event about a person.
    Event,
    /// A `leadrelay.alert` (no personal data).
    Alert,
    /// A `delivery.dead_lettered` copy.
    DeadLetter,
}

pub fn message_kind(job: &DeliveryJob) -> MessageKind {
    match job.event.event_type.as_str() {
        ALERT_EVENT_TYPE => MessageKind::Alert,
        DEAD_LETTER_EVENT_TYPE => MessageKind::DeadLetter,
        _ => MessageKind::Event,
    }
}

/// The form an event came from, if any.
pub fn form_of(job: &DeliveryJob) -> Option<&str> {
    (job.event.origin.kind == leadrelay_model::OriginKind::Form)
        .then_some(job.event.origin.name.as_str())
}

/// The dashboard page of an event.
pub fn dashboard_url(public_url: &str, event_id: &uuid::Uuid) -> String {
    format!("{}/ui/leads/{event_id}", public_url.trim_end_matches('/'))
}

/// "first_name" → "First name", "utm_source" → "UTM source".
pub fn label(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("utm_") {
        return format!("UTM {}", rest.replace('_', " "));
    }
    let spaced = name.replace(['_', '-'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A JSON value as one line of text.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Array(a) => a.iter().map(text_of).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// `{name, label, value}` entries for the non-empty values of a map.
fn entries(map: &Map<String, Value>, order: &[&str]) -> Vec<Value> {
    let mut keys: Vec<&String> = map.keys().collect();
    // Known names first in their usual order, the rest alphabetically.
    keys.sort_by_key(|k| {
        (
            order.iter().position(|o| o == k).unwrap_or(usize::MAX),
            (*k).clone(),
        )
    });
    keys.into_iter()
        .filter_map(|k| {
            let text = text_of(&map[k]);
            (!text.trim().is_empty()).then(|| json!({"name": k, "label": label(k), "value": text}))
        })
        .collect()
}

const CONTACT_ORDER: &[&str] = &[
    "full_name",
    "email",
    "phone",
    "company",
    "title",
    "website",
    "domain",
    "city",
    "region",
    "country",
];
const ATTRIBUTION_ORDER: &[&str] = &[
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "referrer",
    "landing_page",
];

/// The values a notification template sees (see the module docs).
pub fn context(job: &DeliveryJob, public_url: &str) -> Value {
    let mut ctx = condition_context(&job.event);
    let kind = message_kind(job);
    let Some(obj) = ctx.as_object_mut() else {
        return ctx;
    };
    let mut contact = obj
        .get("contact")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // First and last name are shown as the full name.
    if contact.contains_key("full_name") {
        contact.remove("first_name");
        contact.remove("last_name");
    }
    obj.insert(
        "contact_fields".into(),
        Value::Array(entries(&contact, CONTACT_ORDER)),
    );
    let fields = match kind {
        MessageKind::DeadLetter => job
            .event
            .data
            .get("original")
            .and_then(|o| o.get("fields"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        MessageKind::Alert => Map::new(),
        MessageKind::Event => job.event.data.clone(),
    };
    // Form fields that fill the contact are listed with the contact.
    let fields: Map<String, Value> = fields
        .into_iter()
        .filter(|(k, _)| {
            !leadrelay_model::CONTACT_FIELDS.contains(&k.as_str()) && !contact.contains_key(k)
        })
        .collect();
    obj.insert("fields".into(), Value::Array(entries(&fields, &[])));
    if let Some(o) = &job.owner {
        obj.insert(
            "owner".into(),
            json!({"name": o.name, "email": o.email, "slack_id": o.slack_id}),
        );
    }
    let attribution = match serde_json::to_value(&job.event.attribution) {
        Ok(Value::Object(m)) => {
            let mut m = m;
            m.remove("user_agent");
            m
        }
        _ => Map::new(),
    };
    obj.insert(
        "attribution_fields".into(),
        Value::Array(entries(&attribution, ATTRIBUTION_ORDER)),
    );
    obj.insert(
        "dashboard_url".into(),
        json!(dashboard_url(public_url, &job.event.id)),
    );
    obj.insert(
        "delivery".into(),
        json!({"id": job.delivery.id.to_string()}),
    );
    match kind {
        MessageKind::Alert => {
            obj.insert("alert".into(), Value::Object(job.event.data.clone()));
        }
        MessageKind::DeadLetter => {
            for key in ["dead_letter", "original"] {
                if let Some(v) = job.event.data.get(key) {
                    obj.insert(key.into(), v.clone());
                }
            }
        }
        MessageKind::Event => {}
    }
    ctx
}

/// Compiled templates: a default per part, plus per-form overrides.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

fn template_problem(path: &str, e: &minijinja::Error) -> Problem {
    let line = e
        .line()
        .map(|l| format!(" on line {l}"))
        .unwrap_or_default();
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    Problem::error(path, format!("template error{line}: {}{detail}", e.kind()))
}

/// Collects templates, reporting each error under its setting path.
pub struct TemplatesBuilder {
    env: Environment<'static>,
    names: Vec<(String, String)>,
    problems: Vec<Problem>,
}

impl Default for TemplatesBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TemplatesBuilder {
    pub fn new() -> Self {
        let mut env = Environment::new();
        // A missing field renders empty (a lead without a company is normal).
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        // `{% … %}` lines leave no blank lines behind.
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        env.set_auto_escape_callback(|name| {
            if name.ends_with("html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        Self {
            env,
            names: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Adds the template for `part` (for every form, or for `form`);
    /// `path` is the setting it came from, for error reports.
    pub fn add(&mut self, part: &str, form: Option<&str>, source: &str, path: &str) {
        let name = template_name(part, form);
        match self
            .env
            .add_template_owned(name.clone(), source.to_string())
        {
            Ok(()) => self.names.push((name, path.to_string())),
            Err(e) => self.problems.push(template_problem(path, &e)),
        }
    }

    /// Test-renders every template against sample events (a lead, an alert
    /// and a dead-letter copy), so errors that only show when rendering
    /// (unknown filters, bad operations) are reported now.
    pub fn finish(mut self, public_url: &str) -> Result<Templates, Vec<Problem>> {
        if self.problems.is_empty() {
            let samples: Vec<Value> = sample_jobs()
                .iter()
                .map(|j| context(j, public_url))
                .collect();
            for (name, path) in &self.names {
                let Ok(t) = self.env.get_template(name) else {
                    continue;
                };
                for s in &samples {
                    if let Err(e) = t.render(minijinja::Value::from(minijinja::value::Serde(s))) {
                        self.problems.push(template_problem(path, &e));
                        break;
                    }
                }
            }
        }
        if self.problems.is_empty() {
            Ok(Templates { env: self.env })
        } else {
            Err(self.problems)
        }
    }
}

fn template_name(part: &str, form: Option<&str>) -> String {
    match form {
        Some(f) => format!("forms.{f}.{part}"),
        None => part.to_string(),
    }
}

impl Templates {
    /// Renders `part` for an event from `form` (its override, else the default).
    pub fn render(&self, part: &str, form: Option<&str>, ctx: &Value) -> Result<String, String> {
        let t = form
            .and_then(|f| self.env.get_template(&template_name(part, Some(f))).ok())
            .or_else(|| self.env.get_template(part).ok())
            .ok_or_else(|| format!("no {part} template"))?;
        t.render(minijinja::Value::from(minijinja::value::Serde(ctx)))
            .map_err(|e| format!("the {part} template failed: {e}"))
    }

    pub fn has(&self, part: &str) -> bool {
        self.env.get_template(part).is_ok()
    }
}

/// Sample events for test renders.
fn sample_jobs() -> Vec<DeliveryJob> {
    use leadrelay_model::{ContactData, EmailAddress, Event, EventType, Origin, PhoneE164};
    let now = chrono::Utc::now();
    let mut data = Map::new();
    data.insert("message".into(), json!("Hello, we need 20 seats."));
    data.insert("seats".into(), json!(20));
    let lead = Event {
        id: leadrelay_model::new_id(),
        event_type: EventType::parse("lead.created").unwrap_or(EventType::Custom("lead".into())),
        origin: Origin::form("contact"),
        received_at: now,
        occurred_at: now,
        contact: ContactData {
            email: EmailAddress::parse("jane@example.com").ok(),
            phone: PhoneE164::parse("+14155550123", None).ok(),
            first_name: Some("Jane".into()),
            last_name: Some("Doe".into()),
            company: Some("Acme".into()),
            ..Default::default()
        },
        contact_id: None,
        data,
        attribution: leadrelay_model::Attribution {
            utm_source: Some("google".into()),
            ..Default::default()
        },
        consent: vec![],
        ip_hash: None,
        raw: Default::default(),
        spam: false,
        idempotency_key: None,
        external_id: None,
        vendor_refs: vec![],
        changes: vec![],
        playbooks: vec![],
    };
    let mut alert = lead.clone();
    alert.event_type = EventType::Custom(ALERT_EVENT_TYPE.into());
    alert.origin = Origin::system("alerts");
    alert.contact = ContactData::default();
    alert.attribution = Default::default();
    alert.data = json!({"destination": "crm", "alert": "failure_rate", "status": "firing",
        "message": "crm: 50% of 10 attempts failed", "details": {}})
    .as_object()
    .cloned()
    .unwrap_or_default();
    let mut dead = lead.clone();
    dead.event_type = EventType::Custom(DEAD_LETTER_EVENT_TYPE.into());
    dead.origin = Origin::system("dead_letters");
    dead.data = json!({
        "dead_letter": {"destination": "crm", "connector": "webhook", "delivery_id": "x",
            "reason": "HTTP 400", "status": 400, "attempts": 1},
        "original": {"event_id": "x", "type": "lead.created", "origin": "form:contact",
            "received_at": now.to_rfc3339(), "fields": {"message": "Hello"}},
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    [lead, alert, dead]
        .into_iter()
        .map(|event| DeliveryJob {
            delivery: sample_delivery(event.id),
            event,
            contact: None,
            remote_ids: vec![],
            owner: None,
        })
        .collect()
}

fn sample_delivery(event_id: uuid::Uuid) -> crate::store::Delivery {
    let now = chrono::Utc::now();
    crate::store::Delivery {
        id: leadrelay_model::new_id(),
        event_id,
        destination: "sample".into(),
        contact_key: "email:jane@example.com".into(),
        state: crate::store::DeliveryState::InFlight,
        attempts: 0,
        failures: 0,
        created_at: now,
        updated_at: now,
        next_attempt_at: None,
        lease_id: None,
        last_status: None,
        last_error: None,
        reason: None,
        finished_at: None,
        replay_of: None,
        replayed_by: None,
        overrides: None,
    }
}

/// A sample job (a lead from the `contact` form), for connector unit tests.
#[cfg(test)]
pub fn sample_lead_job() -> DeliveryJob {
    sample_jobs().remove(0)
}

/// Sample alert and dead-letter jobs, for connector unit tests.
#[cfg(test)]
pub fn sample_alert_job() -> DeliveryJob {
    sample_jobs().remove(1)
}

#[cfg(test)]
pub fn sample_dead_letter_job() -> DeliveryJob {
    sample_jobs().remove(2)
}

/// Per-form settings parsed from a `forms` table, checked: form names must
/// be slugs and override parts must be among `parts`.
pub fn add_form_overrides(
    builder: &mut TemplatesBuilder,
    forms: &BTreeMap<String, FormOverride>,
    parts: &[&str],
) {
    for (form, o) in forms {
        for (part, source) in &o.templates {
            let path = format!("forms.{form}.{part}");
            if !parts.contains(&part.as_str()) {
                builder.problems.push(Problem::error(
                    path,
                    format!("unknown key (templates here: {})", parts.join(", ")),
                ));
                continue;
            }
            builder.add(part, Some(form), source, &path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_has_lists_links_and_kinds() {
        let job = sample_lead_job();
        let ctx = context(&job, "https://leads.example.com/");
        assert_eq!(
            ctx["dashboard_url"],
            format!("https://leads.example.com/ui/leads/{}", job.event.id)
        );
        let labels: Vec<&str> = ctx["contact_fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["label"].as_str().unwrap())
            .collect();
        assert_eq!(labels, vec!["Full name", "Email", "Phone", "Company"]);
        assert_eq!(ctx["fields"][0]["label"], "Message");
        assert!(ctx.get("alert").is_none());
        let alert = context(&sample_alert_job(), "http://x");
        assert_eq!(alert["alert"]["status"], "firing");
        let dead = context(&sample_dead_letter_job(), "http://x");
        assert_eq!(dead["dead_letter"]["destination"], "crm");
        assert_eq!(dead["fields"][0]["name"], "message");
    }

    #[test]
    fn template_errors_name_the_setting_and_line() {
        let mut b = TemplatesBuilder::new();
        b.add("subject", None, "Hi {{ contact.first_name", "subject");
        b.add(
            "text",
            Some("contact"),
            "ok\n{{ 1 | nosuchfilter }}",
            "forms.contact.text",
        );
        let errs = b.finish("http://x").unwrap_err();
        assert_eq!(errs.len(), 1, "syntax errors stop before test renders");
        assert_eq!(errs[0].path, "subject");
        assert!(errs[0].message.contains("line 1"), "{}", errs[0].message);

        let mut b = TemplatesBuilder::new();
        b.add(
            "text",
            Some("contact"),
            "ok\n{{ 1 | nosuchfilter }}",
            "forms.contact.text",
        );
        let errs = b.finish("http://x").unwrap_err();
        assert_eq!(errs[0].path, "forms.contact.text");
        assert!(errs[0].message.contains("line 2"), "{}", errs[0].message);
    }

    #[test]
    fn form_overrides_win_and_html_is_escaped() {
        let mut b = TemplatesBuilder::new();
        b.add("html", None, "<p>{{ contact.company }}</p>", "html");
        b.add(
            "html",
            Some("demo"),
            "<b>{{ contact.full_name }}</b>",
            "forms.demo.html",
        );
        let t = b.finish("http://x").unwrap();
        let mut job = sample_lead_job();
        job.event.contact.company = Some("<Acme & Co>".into());
        let ctx = context(&job, "http://x");
        assert_eq!(
            t.render("html", Some("contact"), &ctx).unwrap(),
            "<p>&lt;Acme &amp; Co&gt;</p>"
        );
        assert_eq!(
            t.render("html", Some("demo"), &ctx).unwrap(),
            "<b>Jane Doe</b>"
        );
    }
}
