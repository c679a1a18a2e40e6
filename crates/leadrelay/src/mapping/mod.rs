//! Field mapping: per destination, turns an event and its golden contact
//! into a vendor's fields (HubSpot properties, Pipedrive fields, Salesforce
//! fields), the same way for every connector.
//!
//! A mapping is a table per vendor object (`contact`, `company`, `deal`,
//! `note`, `task`, …), vendor field → rule. Each connector ships a default
//! mapping (written in the same TOML a user writes, so the README shows it
//! verbatim); a destination's `[destinations.NAME.mapping.OBJECT]` table
//! overrides it field by field, and `FIELD = false` removes a default field.
//!
//! A rule is either a path (`"contact.first_name"`), a template
//! (`"{{ contact.company }} – web lead"`), or a table:
//!
//! ```toml
//! phone = { from = "contact.phone", transform = "e164" }
//! lifecyclestage = { value = "lead" }
//! lead_tier = { from = "data.tier", map = { A = "gold", B = "silver" }, fallback = "bronze" }
//! hs_lead_status = { from = "data.status", picklist = ["NEW", "OPEN"], unmapped = "drop" }
//! email = { from = ["contact.email", "data.work_email"], required = true, transform = ["trim", "lower"] }
//! LastName = { from = "contact.last_name", create_default = "[not provided]" }
//! LeadSource = { value = "Web", on = "create" }
//! ```
//!
//! At send time the rule reads its source from the *mapping context* (see
//! [`context`]), applies its transforms, falls back to its default when the
//! result is empty, translates through its value map and picklist, and
//! checks `required`. Empty results are left out (a CRM value is never erased
//! by a blank). Every failure is a [`MappingError`] naming the object and the
//! field; connectors turn it into a permanent `Mapping` dead letter. Problems
//! in the configuration itself (unknown transforms, templates that do not
//! compile, paths outside the context) are reported by `leadrelay check`.

mod rule;
mod transform;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use leadrelay_model::Event;
use minijinja::Environment;
use serde_json::{Map, Value, json};

use crate::config::Problem;
use crate::connectors::DeliveryJob;

pub use rule::{FieldRule, ValueKind};
pub use transform::{Transform, parse_datetime};

/// The roots a path or template may read from.
pub const CONTEXT_ROOTS: [&str; 9] = [
    "event",
    "contact",
    "data",
    "attribution",
    "consent",
    "activity",
    "crm",
    "ids",
    "delivery",
];

/// Why a record could not be mapped: permanent, names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    /// The vendor object (`contact`, `Lead`, `p_projects` …).
    pub object: String,
    /// The vendor field.
    pub field: String,
    pub message: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mapping {}.{}: {}",
            self.object, self.field, self.message
        )
    }
}

impl std::error::Error for MappingError {}

/// The rules of one vendor object, in field order.
#[derive(Debug, Clone, Default)]
pub struct ObjectMapping {
    pub name: String,
    pub fields: Vec<(String, FieldRule)>,
}

impl ObjectMapping {
    /// The vendor fields this object writes.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(n, _)| n.as_str())
    }

    pub fn contains(&self, field: &str) -> bool {
        self.fields.iter().any(|(n, _)| n == field)
    }

    /// Maps one record (`creating`: it is new, so `on = "create"` fields and
    /// `create_default`s apply). Keys with dots (`custom_fields.abc`) become
    /// nested objects.
    pub fn apply(
        &self,
        templates: &Templates,
        ctx: &Value,
        creating: bool,
    ) -> Result<Map<String, Value>, MappingError> {
        let mut out = Map::new();
        for (field, rule) in &self.fields {
            let value =
                rule.evaluate(templates, ctx, creating)
                    .map_err(|message| MappingError {
                        object: self.name.clone(),
                        field: field.clone(),
                        message,
                    })?;
            if let Some(v) = value {
                insert_dotted(&mut out, field, v);
            }
        }
        Ok(out)
    }
}

fn insert_dotted(out: &mut Map<String, Value>, key: &str, value: Value) {
    match key.split_once('.') {
        Some((head, rest)) if !head.is_empty() && !rest.is_empty() => {
            let slot = out
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(m) = slot {
                insert_dotted(m, rest, value);
            }
        }
        _ => {
            out.insert(key.to_string(), value);
        }
    }
}

/// Compiled templates shared by every rule of a destination.
#[derive(Clone)]
pub struct Templates {
    env: Arc<Environment<'static>>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Templates")
    }
}

impl Templates {
    fn render(&self, name: &str, ctx: &Value) -> Result<String, String> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| format!("template error: {e}"))?;
        t.render(minijinja::Value::from(minijinja::value::Serde(ctx)))
            .map_err(|e| format!("template failed: {e}"))
    }
}

fn template_env() -> Environment<'static> {
    let mut env = Environment::new();
    // `contact.company` on a lead without a company renders empty rather than failing.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env
}

/// A destination's compiled mapping: every object's rules and their templates.
#[derive(Debug, Clone)]
pub struct Mapping {
    objects: BTreeMap<String, ObjectMapping>,
    templates: Templates,
}

impl Mapping {
    /// Compiles `defaults` (the connector's TOML) overlaid by the user's
    /// `mapping` table. `objects` are the object names the connector knows;
    /// problem paths start at `mapping.`.
    pub fn compile(
        defaults: &str,
        user: Option<&toml::Table>,
        objects: &[&str],
    ) -> Result<Mapping, Vec<Problem>> {
        Self::compile_with(defaults, user, objects, &[])
    }

    /// Like [`Mapping::compile`], plus extra objects (custom objects) given
    /// as (name, table, problem path).
    pub fn compile_with(
        defaults: &str,
        user: Option<&toml::Table>,
        objects: &[&str],
        extra: &[(String, toml::Table, String)],
    ) -> Result<Mapping, Vec<Problem>> {
        let mut problems = Vec::new();
        let defaults: toml::Table = match toml::from_str(defaults) {
            Ok(t) => t,
            Err(e) => {
                return Err(vec![Problem::error(
                    "mapping",
                    format!("the built-in default mapping is invalid: {e}"),
                )]);
            }
        };
        let mut env = template_env();
        let mut compiled = BTreeMap::new();
        if let Some(user) = user {
            for name in user.keys() {
                if !objects.contains(&name.as_str()) {
                    problems.push(Problem::error(
                        format!("mapping.{name}"),
                        format!("unknown object {name:?} (known: {})", objects.join(", ")),
                    ));
                }
            }
        }
        for object in objects {
            let base = defaults.get(*object).and_then(toml::Value::as_table);
            let over = user
                .and_then(|u| u.get(*object))
                .map(|v| match v.as_table() {
                    Some(t) => Some(t),
                    None => {
                        problems.push(Problem::error(
                            format!("mapping.{object}"),
                            "must be a table of vendor field = rule",
                        ));
                        None
                    }
                })
                .unwrap_or(None);
            let m = compile_object(
                object,
                base,
                over,
                &format!("mapping.{object}"),
                &mut env,
                &mut problems,
            );
            compiled.insert(object.to_string(), m);
        }
        for (name, table, path) in extra {
            let m = compile_object(name, None, Some(table), path, &mut env, &mut problems);
            compiled.insert(name.clone(), m);
        }
        if problems.is_empty() {
            Ok(Mapping {
                objects: compiled,
                templates: Templates { env: Arc::new(env) },
            })
        } else {
            Err(problems)
        }
    }

    pub fn object(&self, name: &str) -> Option<&ObjectMapping> {
        self.objects.get(name)
    }

    /// Every object and the vendor fields it writes (for `check`).
    pub fn objects(&self) -> impl Iterator<Item = &ObjectMapping> {
        self.objects.values()
    }

    /// Maps `object` for a record being created (or upserted); an object
    /// without rules maps to nothing.
    pub fn apply(&self, object: &str, ctx: &Value) -> Result<Map<String, Value>, MappingError> {
        self.apply_as(object, ctx, true)
    }

    /// Maps `object` for an update of an existing record: `on = "create"`
    /// fields and `create_default`s are left out.
    pub fn apply_update(
        &self,
        object: &str,
        ctx: &Value,
    ) -> Result<Map<String, Value>, MappingError> {
        self.apply_as(object, ctx, false)
    }

    fn apply_as(
        &self,
        object: &str,
        ctx: &Value,
        creating: bool,
    ) -> Result<Map<String, Value>, MappingError> {
        match self.objects.get(object) {
            Some(m) => m.apply(&self.templates, ctx, creating),
            None => Ok(Map::new()),
        }
    }
}

fn compile_object(
    object: &str,
    base: Option<&toml::Table>,
    over: Option<&toml::Table>,
    path: &str,
    env: &mut Environment<'static>,
    problems: &mut Vec<Problem>,
) -> ObjectMapping {
    // Field order: defaults first (in their order), then the user's new fields.
    let mut order: Vec<String> = Vec::new();
    let mut rules: BTreeMap<String, (toml::Value, String)> = BTreeMap::new();
    for (layer, is_user) in [(base, false), (over, true)] {
        let Some(table) = layer else { continue };
        for (field, value) in table {
            let fpath = if is_user {
                format!("{path}.{field}")
            } else {
                format!("(default mapping) {object}.{field}")
            };
            if !order.contains(field) {
                order.push(field.clone());
            }
            rules.insert(field.clone(), (value.clone(), fpath));
        }
    }
    let mut fields = Vec::new();
    for field in order {
        let Some((value, fpath)) = rules.remove(&field) else {
            continue;
        };
        if field.trim().is_empty() {
            problems.push(Problem::error(fpath, "the vendor field name is empty"));
            continue;
        }
        let template_name = format!("{object}.{field}");
        match FieldRule::parse(&value, &template_name, env) {
            Ok(Some(rule)) => fields.push((field, rule)),
            Ok(None) => {}
            Err(errs) => {
                for (sub, msg) in errs {
                    let p = if sub.is_empty() {
                        fpath.clone()
                    } else {
                        format!("{fpath}.{sub}")
                    };
                    problems.push(Problem::error(p, msg));
                }
            }
        }
    }
    ObjectMapping {
        name: object.to_string(),
        fields,
    }
}

/// The mapping context of one delivery: what paths and templates read.
///
/// - `event`: `id`, `type`, `origin.kind`, `origin.name`, `form`, `source`,
///   `received_at`, `occurred_at`
/// - `contact`: the golden record (falling back to the event's own contact
///   data), standard fields plus custom ones, and `full_name`
/// - `data`: the event's fields (form answers such as `message`, vendor details)
/// - `attribution`: UTM parameters, click ids, `referrer`, `landing_page`
/// - `consent`: purpose → granted
/// - `delivery`: `id`
///
/// Connectors add `activity` (the note or task being written: `subject`,
/// `body`, `due_date`, `due_at`, `start_at`), `crm` (values from their
/// settings and the event: `owner_id`, `pipeline`, `deal_stage`,
/// `lifecycle_stage`, `lead_status` …) and `ids` (the vendor ids known so
/// far: `contact`, `company`, `deal`, `person` …).
pub fn context(job: &DeliveryJob) -> Value {
    let event = &job.event;
    let mut data = job
        .contact
        .as_ref()
        .map(|c| c.data.clone())
        .unwrap_or_else(|| event.contact.clone());
    // The event's own values fill what the golden record lacks.
    fill_missing(&mut data, &event.contact);
    let mut contact = data.to_flat_map();
    if let Some(full) = data.full_name() {
        contact.insert("full_name".into(), Value::String(full));
    }
    let consent: Map<String, Value> = match &job.contact {
        Some(c) => c
            .consent
            .iter()
            .map(|(k, r)| (k.clone(), Value::Bool(r.granted)))
            .collect(),
        None => event
            .consent
            .iter()
            .map(|c| (c.purpose.as_str().to_string(), Value::Bool(c.granted)))
            .collect(),
    };
    json!({
        "event": event_json(event),
        "contact": contact,
        "data": event.data,
        "attribution": event.attribution,
        "consent": consent,
        "activity": {},
        "crm": {},
        "ids": {},
        "delivery": {"id": job.delivery.id.to_string()},
    })
}

fn event_json(event: &Event) -> Value {
    use leadrelay_model::OriginKind;
    let form = (event.origin.kind == OriginKind::Form).then(|| event.origin.name.clone());
    let source = (event.origin.kind == OriginKind::Source).then(|| event.origin.name.clone());
    json!({
        "id": event.id.to_string(),
        "type": event.event_type.as_str(),
        "origin": {"kind": event.origin.kind.as_str(), "name": event.origin.name},
        "form": form,
        "source": source,
        "received_at": event.received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "occurred_at": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

fn fill_missing(into: &mut leadrelay_model::ContactData, from: &leadrelay_model::ContactData) {
    if into.email.is_none() {
        into.email = from.email.clone();
    }
    if into.phone.is_none() {
        into.phone = from.phone.clone();
    }
    let pairs: [(&mut Option<String>, &Option<String>); 9] = [
        (&mut into.first_name, &from.first_name),
        (&mut into.last_name, &from.last_name),
        (&mut into.company, &from.company),
        (&mut into.domain, &from.domain),
        (&mut into.title, &from.title),
        (&mut into.website, &from.website),
        (&mut into.country, &from.country),
        (&mut into.region, &from.region),
        (&mut into.city, &from.city),
    ];
    for (slot, value) in pairs {
        if slot.as_deref().is_none_or(|s| s.trim().is_empty()) && value.is_some() {
            *slot = value.clone();
        }
    }
    for (k, v) in &from.custom {
        into.custom.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// Sets `ctx[root][key] = value` (roots such as `ids`, `crm`, `activity`).
pub fn set(ctx: &mut Value, root: &str, key: &str, value: impl Into<Value>) {
    if let Some(obj) = ctx.as_object_mut() {
        let slot = obj
            .entry(root.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = slot {
            m.insert(key.to_string(), value.into());
        }
    }
}

/// Reads a dotted path (`contact.email`, `data.answers.0`) from a context.
pub fn lookup<'a>(ctx: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = ctx;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Null, blank strings and empty arrays/objects count as "no value".
pub fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A value as text (numbers and booleans printed, arrays joined by `;`).
pub fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(a) => Some(a.iter().filter_map(as_text).collect::<Vec<_>>().join(";")),
        Value::Object(_) => Some(v.to_string()),
    }
}

#[cfg(test)]
mod tests;
