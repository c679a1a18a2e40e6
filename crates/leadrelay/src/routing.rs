//! Routes: which events go to which destinations.
//!
//! A route matches on event type (exact, `prefix.*` or `*`), on the form or
//! source the event came from, and optionally on a condition — a minijinja
//! expression over the event, its contact, attribution and data. Matching
//! runs at ingest, inside the request, so the event and one outbox row per
//! matched destination are written in the same transaction.

use std::collections::BTreeSet;

use leadrelay_model::{Event, OriginKind};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use crate::config::RouteConfig;

#[derive(Debug, Clone)]
enum EventPattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl EventPattern {
    fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(EventPattern::Any);
        }
        if let Some(prefix) = s.strip_suffix(".*") {
            if prefix.is_empty() || prefix.contains('*') {
                return Err(format!("invalid event pattern {s:?}"));
            }
            return Ok(EventPattern::Prefix(format!("{prefix}.")));
        }
        leadrelay_model::EventType::parse(s).map_err(|e| e.to_string())?;
        Ok(EventPattern::Exact(s.to_string()))
    }

    fn matches(&self, t: &str) -> bool {
        match self {
            EventPattern::Any => true,
            EventPattern::Exact(e) => e == t,
            EventPattern::Prefix(p) => t.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledRoute {
    name: String,
    events: Vec<EventPattern>,
    forms: Vec<String>,
    sources: Vec<String>,
    /// Name of the compiled condition template, if any.
    condition: Option<String>,
    when: Option<String>,
    destinations: Vec<String>,
    playbook: Option<String>,
}

/// Why a route did or did not match an event (for `simulate`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RouteDecision {
    pub route: String,
    pub matched: bool,
    pub reason: String,
    pub destinations: Vec<String>,
    /// The playbook the route belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playbook: Option<String>,
}

/// Where an event goes: its destinations and the playbooks that act on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    /// The enabled destinations, each once, in route order.
    pub destinations: Vec<String>,
    /// The playbooks of the matched routes that have an enabled
    /// destination, each once, in route order.
    pub playbooks: Vec<String>,
}

/// A playbook name: 1 to 64 of `a-z`, `0-9` and `-`.
pub fn valid_playbook_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The compiled routes of a configuration.
pub struct RouteTable {
    routes: Vec<CompiledRoute>,
    env: Environment<'static>,
    enabled: BTreeSet<String>,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.routes)
            .field("enabled", &self.enabled)
            .finish()
    }
}

fn condition_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env
}

fn condition_template(expr: &str) -> String {
    format!("{{% if {expr} %}}1{{% endif %}}")
}

/// Checks that a route condition compiles.
pub fn check_condition(expr: &str) -> Result<(), String> {
    let env = condition_env();
    env.template_from_str(&condition_template(expr))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl RouteTable {
    /// Compiles `routes`. Only destinations in `enabled` receive deliveries.
    pub fn compile(
        routes: &[RouteConfig],
        enabled: BTreeSet<String>,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut env = condition_env();
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let mut events = Vec::new();
            for (j, e) in r.events.iter().enumerate() {
                match EventPattern::parse(e) {
                    Ok(p) => events.push(p),
                    Err(m) => problems.push((format!("routes[{i}].events[{j}]"), m)),
                }
            }
            let condition = match &r.when {
                Some(expr) => {
                    let name = format!("route{i}");
                    match env.add_template_owned(name.clone(), condition_template(expr)) {
                        Ok(()) => Some(name),
                        Err(e) => {
                            problems.push((
                                format!("routes[{i}].when"),
                                format!("invalid condition: {e}"),
                            ));
                            None
                        }
                    }
                }
                None => None,
            };
            out.push(CompiledRoute {
                name: r.name.clone(),
                events,
                forms: r.forms.clone(),
                sources: r.sources.clone(),
                condition,
                when: r.when.clone(),
                destinations: r.destinations.clone(),
                playbook: r.playbook.clone(),
            });
        }
        if problems.is_empty() {
            Ok(Self {
                routes: out,
                env,
                enabled,
            })
        } else {
            Err(problems)
        }
    }

    /// The enabled destinations `event` goes to, each once, in route order.
    pub fn destinations_for(&self, event: &Event) -> Vec<String> {
        self.route(event).destinations
    }

    /// Where `event` goes and which playbooks act on it.
    pub fn route(&self, event: &Event) -> Routed {
        let mut out = Routed::default();
        for d in self.decide(event).into_iter().filter(|d| d.matched) {
            if let Some(p) = d.playbook
                && !d.destinations.is_empty()
                && !out.playbooks.contains(&p)
            {
                out.playbooks.push(p);
            }
            for dest in d.destinations {
                if !out.destinations.contains(&dest) {
                    out.destinations.push(dest);
                }
            }
        }
        out
    }

    /// Routes `event`: records the playbooks that act on it on the event
    /// and returns its destinations.
    pub fn route_and_record(&self, event: &mut Event) -> Vec<String> {
        let routed = self.route(event);
        event.playbooks = routed.playbooks;
        routed.destinations
    }

    /// Every route's decision for `event`.
    pub fn decide(&self, event: &Event) -> Vec<RouteDecision> {
        let mut context: Option<Value> = None;
        self.routes
            .iter()
            .map(|r| {
                let (matched, reason) = self.route_matches(r, event, &mut context);
                let destinations = r
                    .destinations
                    .iter()
                    .filter(|d| self.enabled.contains(*d))
                    .cloned()
                    .collect();
                RouteDecision {
                    route: r.name.clone(),
                    matched,
                    reason,
                    destinations,
                    playbook: r.playbook.clone(),
                }
            })
            .collect()
    }

    fn route_matches(
        &self,
        r: &CompiledRoute,
        event: &Event,
        context: &mut Option<Value>,
    ) -> (bool, String) {
        let t = event.event_type.as_str();
        if !r.events.iter().any(|p| p.matches(t)) {
            return (false, format!("event type {t} not in the route's events"));
        }
        let origin = &event.origin;
        let from = |kind: OriginKind, names: &[String]| {
            names.is_empty() || (origin.kind == kind && names.contains(&origin.name))
        };
        if !from(OriginKind::Form, &r.forms) {
            return (false, "not from one of the route's forms".into());
        }
        if !from(OriginKind::Source, &r.sources) {
            return (false, "not from one of the route's sources".into());
        }
        let Some(name) = &r.condition else {
            return (true, "type and origin match".into());
        };
        let ctx = context.get_or_insert_with(|| condition_context(event));
        let rendered = self
            .env
            .get_template(name)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&*ctx))));
        match rendered {
            Ok(s) if s == "1" => (
                true,
                format!("condition true: {}", r.when.as_deref().unwrap_or("")),
            ),
            Ok(_) => (
                false,
                format!("condition false: {}", r.when.as_deref().unwrap_or("")),
            ),
            Err(e) => {
                tracing::warn!(route = %r.name, event_id = %event.id, error = %e, "route condition failed to evaluate; route not taken");
                (false, format!("condition error: {e}"))
            }
        }
    }
}

/// The values a route condition sees.
pub fn condition_context(event: &Event) -> Value {
    let mut contact = event.contact.to_flat_map();
    if let Some(full) = event.contact.full_name() {
        contact.insert("full_name".into(), Value::String(full));
    }
    let consent: serde_json::Map<String, Value> = event
        .consent
        .iter()
        .map(|c| (c.purpose.as_str().to_string(), Value::Bool(c.granted)))
        .collect();
    let form = (event.origin.kind == OriginKind::Form).then(|| event.origin.name.clone());
    let source = (event.origin.kind == OriginKind::Source).then(|| event.origin.name.clone());
    json!({
        "event": {
            "id": event.id.to_string(),
            "type": event.event_type.as_str(),
            "origin": {"kind": event.origin.kind.as_str(), "name": event.origin.name},
            "form": form,
            "source": source,
            "received_at": event.received_at.to_rfc3339(),
        },
        "contact": contact,
        "attribution": event.attribution,
        "data": event.data,
        "consent": consent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use leadrelay_model::{ContactData, EmailAddress, EventType, Origin};

    fn event(t: &str, origin: Origin, country: Option<&str>, budget: Option<i64>) -> Event {
        let mut data = serde_json::Map::new();
        if let Some(b) = budget {
            data.insert("budget".into(), json!(b));
        }
        Event {
            id: leadrelay_model::new_id(),
            event_type: EventType::parse(t).unwrap(),
            origin,
            received_at: Utc::now(),
            occurred_at: Utc::now(),
            contact: ContactData {
                email: Some(EmailAddress::parse("a@b.io").unwrap()),
                country: country.map(String::from),
                ..Default::default()
            },
            contact_id: None,
            data,
            attribution: Default::default(),
            consent: vec![],
            ip_hash: None,
            raw: Default::default(),
            spam: false,
            idempotency_key: None,
            external_id: None,
            vendor_refs: vec![],
            changes: vec![],
            playbooks: vec![],
        }
    }

    fn route(name: &str, events: &[&str], when: Option<&str>, dests: &[&str]) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            events: events.iter().map(|s| s.to_string()).collect(),
            forms: vec![],
            sources: vec![],
            when: when.map(String::from),
            destinations: dests.iter().map(|s| s.to_string()).collect(),
            playbook: None,
        }
    }

    fn enabled(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn patterns_conditions_and_enabled_set() {
        let routes = vec![
            route("all", &["*"], None, &["backup"]),
            route("email", &["email.*"], None, &["slack"]),
            route(
                "de",
                &["lead.created"],
                Some("contact.country == 'DE' and data.budget > 1000"),
                &["crm", "backup"],
            ),
            route("off", &["*"], None, &["disabled"]),
        ];
        let table = RouteTable::compile(&routes, enabled(&["backup", "slack", "crm"])).unwrap();
        let e = event(
            "lead.created",
            Origin::form("contact"),
            Some("DE"),
            Some(5000),
        );
        assert_eq!(table.destinations_for(&e), vec!["backup", "crm"]);
        let e = event("lead.created", Origin::form("contact"), Some("DE"), None);
        assert_eq!(
            table.destinations_for(&e),
            vec!["backup"],
            "missing budget makes the condition false"
        );
        let e = event("email.opened", Origin::source("mailshake"), None, None);
        assert_eq!(table.destinations_for(&e), vec!["backup", "slack"]);
    }

    #[test]
    fn origin_filters() {
        let mut r = route("forms", &["*"], None, &["crm"]);
        r.forms = vec!["contact".into()];
        let table = RouteTable::compile(&[r], enabled(&["crm"])).unwrap();
        assert_eq!(
            table.destinations_for(&event("lead.created", Origin::form("contact"), None, None)),
            vec!["crm"]
        );
        assert!(
            table
                .destinations_for(&event("lead.created", Origin::form("other"), None, None))
                .is_empty()
        );
        assert!(
            table
                .destinations_for(&event(
                    "lead.created",
                    Origin::source("contact"),
                    None,
                    None
                ))
                .is_empty()
        );
    }

    #[test]
    fn bad_conditions_and_patterns_are_reported() {
        let routes = vec![route(
            "x",
            &["not a type"],
            Some("contact.email =="),
            &["a"],
        )];
        let errs = RouteTable::compile(&routes, enabled(&["a"])).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, vec!["routes[0].events[0]", "routes[0].when"]);
        assert!(check_condition("contact.email ==").is_err());
        assert!(check_condition("contact.email is defined").is_ok());
    }
}
