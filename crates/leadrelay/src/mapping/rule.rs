//! One field's rule: where its value comes from and what happens to it.

use minijinja::Environment;
use serde_json::Value;

use super::transform::Transform;
use super::{CONTEXT_ROOTS, Templates, as_text, is_empty, lookup};

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// The first non-empty of these context paths.
    Paths(Vec<String>),
    /// A constant.
    Const(Value),
    /// A minijinja template (by its name in the shared environment).
    Template(String),
}

/// What happens to a value that is not in the value map or picklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unmapped {
    /// A permanent mapping error naming the value (the default).
    Error,
    /// Send the value unchanged.
    Keep,
    /// Leave the field out.
    Drop,
}

/// A compiled rule for one vendor field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRule {
    source: Source,
    default: Option<Value>,
    /// Used like `default`, but only when the record is being created
    /// (Salesforce's `[not provided]` for a required `LastName`).
    create_default: Option<Value>,
    /// Written only when the record is being created (an original source).
    create_only: bool,
    required: bool,
    transforms: Vec<Transform>,
    map: Option<Vec<(String, Value)>>,
    picklist: Option<Vec<String>>,
    unmapped: Unmapped,
    fallback: Option<Value>,
}

type ParseErrors = Vec<(String, String)>;

fn check_path(path: &str) -> Result<(), String> {
    let root = path.split('.').next().unwrap_or_default();
    if path.trim().is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!(
            "{path:?} is not a path (write e.g. \"contact.email\")"
        ));
    }
    if !CONTEXT_ROOTS.contains(&root) {
        return Err(format!(
            "{path:?} does not start with a known root ({}); write {{ value = \"…\" }} for a constant",
            CONTEXT_ROOTS.join(", ")
        ));
    }
    Ok(())
}

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

fn scalar(v: &toml::Value) -> Option<Value> {
    match v {
        toml::Value::String(s) => Some(Value::String(s.clone())),
        toml::Value::Integer(i) => Some(Value::from(*i)),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number),
        toml::Value::Boolean(b) => Some(Value::Bool(*b)),
        toml::Value::Datetime(d) => Some(Value::String(d.to_string())),
        toml::Value::Array(a) => a
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        toml::Value::Table(_) => None,
    }
}

impl FieldRule {
    fn from_source(source: Source) -> Self {
        Self {
            source,
            default: None,
            create_default: None,
            create_only: false,
            required: false,
            transforms: Vec::new(),
            map: None,
            picklist: None,
            unmapped: Unmapped::Error,
            fallback: None,
        }
    }

    /// Parses a rule; `Ok(None)` for `false` (the field is removed).
    /// Errors are (sub-key, message) pairs.
    pub(super) fn parse(
        value: &toml::Value,
        template_name: &str,
        env: &mut Environment<'static>,
    ) -> Result<Option<FieldRule>, ParseErrors> {
        let mut errs: ParseErrors = Vec::new();
        let mut add_template = |src: &str, key: &str, errs: &mut ParseErrors| -> Option<Source> {
            match env.add_template_owned(template_name.to_string(), src.to_string()) {
                Ok(()) => Some(Source::Template(template_name.to_string())),
                Err(e) => {
                    errs.push((key.to_string(), format!("template error: {e}")));
                    None
                }
            }
        };
        match value {
            toml::Value::Boolean(false) => return Ok(None),
            toml::Value::String(s) if is_template(s) => {
                let src = add_template(s, "", &mut errs);
                return match src {
                    Some(src) => Ok(Some(Self::from_source(src))),
                    None => Err(errs),
                };
            }
            toml::Value::String(s) => {
                return match check_path(s) {
                    Ok(()) => Ok(Some(Self::from_source(Source::Paths(vec![s.clone()])))),
                    Err(m) => Err(vec![(String::new(), m)]),
                };
            }
            toml::Value::Table(_) => {}
            other => {
                return match scalar(other) {
                    Some(v) => Ok(Some(Self::from_source(Source::Const(v)))),
                    None => Err(vec![(String::new(), "not a valid rule".into())]),
                };
            }
        }
        let Some(table) = value.as_table() else {
            return Err(vec![(String::new(), "not a valid rule".into())]);
        };
        const KEYS: [&str; 12] = [
            "from",
            "value",
            "template",
            "default",
            "create_default",
            "on",
            "required",
            "transform",
            "map",
            "picklist",
            "fallback",
            "unmapped",
        ];
        for k in table.keys() {
            if !KEYS.contains(&k.as_str()) {
                errs.push((
                    k.clone(),
                    format!("unknown key (known: {})", KEYS.join(", ")),
                ));
            }
        }
        let sources = ["from", "value", "template"]
            .iter()
            .filter(|k| table.contains_key(**k))
            .count();
        if sources != 1 {
            errs.push((
                String::new(),
                "give exactly one of `from` (paths), `value` (a constant) or `template`".into(),
            ));
        }
        let mut source = None;
        if let Some(from) = table.get("from") {
            let paths: Option<Vec<String>> = match from {
                toml::Value::String(s) => Some(vec![s.clone()]),
                toml::Value::Array(a) => a.iter().map(|v| v.as_str().map(String::from)).collect(),
                _ => None,
            };
            match paths {
                Some(p) if !p.is_empty() => {
                    for path in &p {
                        if let Err(m) = check_path(path) {
                            errs.push(("from".into(), m));
                        }
                    }
                    source = Some(Source::Paths(p));
                }
                _ => errs.push(("from".into(), "a path or a list of paths".into())),
            }
        }
        if let Some(v) = table.get("value") {
            match scalar(v) {
                Some(v) => source = Some(Source::Const(v)),
                None => errs.push((
                    "value".into(),
                    "a constant: text, number, boolean or list".into(),
                )),
            }
        }
        if let Some(t) = table.get("template") {
            match t.as_str() {
                Some(src) => source = add_template(src, "template", &mut errs),
                None => errs.push(("template".into(), "a template text".into())),
            }
        }
        let mut rule = Self::from_source(source.unwrap_or(Source::Const(Value::Null)));
        if let Some(d) = table.get("default") {
            match scalar(d) {
                Some(v) => rule.default = Some(v),
                None => errs.push(("default".into(), "a constant".into())),
            }
        }
        if let Some(d) = table.get("create_default") {
            match scalar(d) {
                Some(v) => rule.create_default = Some(v),
                None => errs.push(("create_default".into(), "a constant".into())),
            }
        }
        if let Some(on) = table.get("on") {
            match on.as_str() {
                Some("create") => rule.create_only = true,
                Some("always") => rule.create_only = false,
                _ => errs.push(("on".into(), "\"create\" or \"always\"".into())),
            }
        }
        if let Some(r) = table.get("required") {
            match r.as_bool() {
                Some(b) => rule.required = b,
                None => errs.push(("required".into(), "true or false".into())),
            }
        }
        if let Some(t) = table.get("transform") {
            let names: Option<Vec<&str>> = match t {
                toml::Value::String(s) => Some(vec![s.as_str()]),
                toml::Value::Array(a) => a.iter().map(toml::Value::as_str).collect(),
                _ => None,
            };
            match names {
                Some(names) => {
                    for n in names {
                        match Transform::parse(n) {
                            Ok(t) => rule.transforms.push(t),
                            Err(m) => errs.push(("transform".into(), m)),
                        }
                    }
                }
                None => errs.push((
                    "transform".into(),
                    "a transform name or a list of them".into(),
                )),
            }
        }
        if let Some(m) = table.get("map") {
            match m.as_table() {
                Some(t) => {
                    let mut pairs = Vec::new();
                    for (k, v) in t {
                        match scalar(v) {
                            Some(v) => pairs.push((k.clone(), v)),
                            None => errs.push((format!("map.{k}"), "a constant".into())),
                        }
                    }
                    rule.map = Some(pairs);
                }
                None => errs.push(("map".into(), "a table of value = vendor value".into())),
            }
        }
        if let Some(p) = table.get("picklist") {
            let values: Option<Vec<String>> = p
                .as_array()
                .and_then(|a| a.iter().map(|v| v.as_str().map(String::from)).collect());
            match values {
                Some(v) if !v.is_empty() => rule.picklist = Some(v),
                _ => errs.push((
                    "picklist".into(),
                    "a non-empty list of allowed values".into(),
                )),
            }
        }
        if let Some(u) = table.get("unmapped") {
            match u.as_str() {
                Some("error") => rule.unmapped = Unmapped::Error,
                Some("keep") => rule.unmapped = Unmapped::Keep,
                Some("drop") => rule.unmapped = Unmapped::Drop,
                _ => errs.push(("unmapped".into(), "\"error\", \"keep\" or \"drop\"".into())),
            }
        }
        if let Some(f) = table.get("fallback") {
            match scalar(f) {
                Some(v) => rule.fallback = Some(v),
                None => errs.push(("fallback".into(), "a constant".into())),
            }
            if rule.map.is_none() && rule.picklist.is_none() {
                errs.push((
                    "fallback".into(),
                    "a fallback only applies with `map` or `picklist`".into(),
                ));
            }
        }
        if table.contains_key("unmapped") && rule.map.is_none() && rule.picklist.is_none() {
            errs.push((
                "unmapped".into(),
                "`unmapped` only applies with `map` or `picklist`".into(),
            ));
        }
        if let (Some(pick), Some(fb)) = (&rule.picklist, rule.fallback.as_ref().and_then(as_text))
            && !pick.iter().any(|p| p.eq_ignore_ascii_case(&fb))
        {
            errs.push(("fallback".into(), format!("{fb:?} is not in the picklist")));
        }
        if let (Some(pick), Some(map)) = (&rule.picklist, &rule.map) {
            for (k, v) in map {
                if let Some(t) = as_text(v)
                    && !pick.iter().any(|p| p.eq_ignore_ascii_case(&t))
                {
                    errs.push((format!("map.{k}"), format!("{t:?} is not in the picklist")));
                }
            }
        }
        if errs.is_empty() {
            Ok(Some(rule))
        } else {
            Err(errs)
        }
    }

    /// What kind of value the rule produces, as far as its configuration
    /// tells (for `check` against a destination's column types).
    pub fn value_kind(&self) -> ValueKind {
        let mut kind = match (&self.source, &self.map) {
            (_, Some(map)) => ValueKind::common(map.iter().map(|(_, v)| ValueKind::of(v))),
            (Source::Const(v), None) => ValueKind::of(v),
            (Source::Template(_), None) => ValueKind::Text { max: None },
            (Source::Paths(paths), None) => {
                ValueKind::common(paths.iter().map(|p| ValueKind::of_path(p)))
            }
        };
        for t in &self.transforms {
            kind = match t {
                Transform::Number | Transform::EpochMs | Transform::EpochS => ValueKind::Number,
                Transform::Integer => ValueKind::Integer,
                Transform::Boolean => ValueKind::Boolean,
                Transform::Date | Transform::DateTime => ValueKind::Date,
                Transform::E164(_) => ValueKind::Phone,
                Transform::Truncate(n) => match kind {
                    ValueKind::Text { max } => ValueKind::Text {
                        max: Some(max.map_or(*n, |m| m.min(*n))),
                    },
                    ValueKind::Email => ValueKind::Email,
                    other => other,
                },
                Transform::Format(_)
                | Transform::String
                | Transform::Join(_)
                | Transform::Html
                | Transform::FirstName
                | Transform::LastName
                | Transform::Title
                | Transform::Domain => match kind {
                    ValueKind::Unknown => ValueKind::Unknown,
                    _ => ValueKind::Text { max: None },
                },
                Transform::Trim | Transform::Lower | Transform::Upper => kind,
            };
        }
        kind
    }

    /// The rule's source paths (for documentation and `check`).
    pub fn paths(&self) -> &[String] {
        match &self.source {
            Source::Paths(p) => p,
            _ => &[],
        }
    }

    /// Computes the value for one record: `Ok(None)` leaves the field out.
    /// `creating`: the record is new (`on = "create"` and `create_default` apply).
    pub(super) fn evaluate(
        &self,
        templates: &Templates,
        ctx: &Value,
        creating: bool,
    ) -> Result<Option<Value>, String> {
        if self.create_only && !creating {
            return Ok(None);
        }
        let mut value = match &self.source {
            Source::Paths(paths) => paths
                .iter()
                .filter_map(|p| lookup(ctx, p))
                .find(|v| !is_empty(v))
                .cloned()
                .unwrap_or(Value::Null),
            Source::Const(v) => v.clone(),
            Source::Template(name) => {
                let text = templates.render(name, ctx)?;
                Value::String(text.trim().to_string())
            }
        };
        for t in &self.transforms {
            if is_empty(&value) {
                break;
            }
            value = t.apply(&value)?;
        }
        if is_empty(&value)
            && let Some(d) = &self.default
        {
            value = d.clone();
        }
        if is_empty(&value)
            && creating
            && let Some(d) = &self.create_default
        {
            value = d.clone();
        }
        if !is_empty(&value)
            && let Some(map) = &self.map
        {
            let text = as_text(&value).unwrap_or_default();
            let hit = map.iter().find(|(k, _)| *k == text).or_else(|| {
                map.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(text.trim()))
            });
            value = match hit {
                Some((_, v)) => v.clone(),
                None => self.unmapped_value(value, || {
                    let known: Vec<&str> = map.iter().map(|(k, _)| k.as_str()).collect();
                    format!(
                        "value {text:?} is not in the value map (known: {}); add it, or set `fallback` or `unmapped`",
                        known.join(", ")
                    )
                })?,
            };
        }
        if !is_empty(&value)
            && let Some(pick) = &self.picklist
        {
            let text = as_text(&value).unwrap_or_default();
            value = match pick.iter().find(|p| p.eq_ignore_ascii_case(text.trim())) {
                Some(canonical) => Value::String(canonical.clone()),
                None => self.unmapped_value(value, || {
                    format!(
                        "value {text:?} is not one of the picklist values ({}); set `fallback` or `unmapped`",
                        pick.join(", ")
                    )
                })?,
            };
        }
        if is_empty(&value) {
            if self.required {
                let from = match &self.source {
                    Source::Paths(p) => format!(" (from {})", p.join(", ")),
                    _ => String::new(),
                };
                return Err(format!("required but empty{from}"));
            }
            return Ok(None);
        }
        Ok(Some(value))
    }

    fn unmapped_value(
        &self,
        value: Value,
        message: impl FnOnce() -> String,
    ) -> Result<Value, String> {
        if let Some(fb) = &self.fallback {
            return Ok(fb.clone());
        }
        match self.unmapped {
            Unmapped::Keep => Ok(value),
            Unmapped::Drop => Ok(Value::Null),
            Unmapped::Error => Err(message()),
        }
    }
}

/// The kind of value a mapping rule produces, as far as its configuration
/// tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Free text; `max`: at most this many characters (a constant's length,
    /// `truncate:N`).
    Text {
        max: Option<usize>,
    },
    Email,
    Phone,
    Integer,
    Number,
    Date,
    Boolean,
    /// Anything (`data.*` values, mixed sources).
    Unknown,
}

impl ValueKind {
    /// How a check names it.
    pub fn describe(self) -> String {
        match self {
            Self::Text { max: Some(n) } => format!("text of up to {n} characters"),
            Self::Text { max: None } => "text".into(),
            Self::Email => "an email address".into(),
            Self::Phone => "a phone number".into(),
            Self::Integer => "a whole number".into(),
            Self::Number => "a number".into(),
            Self::Date => "a date".into(),
            Self::Boolean => "a boolean".into(),
            Self::Unknown => "any value".into(),
        }
    }

    /// The kind of a constant.
    pub fn of(v: &Value) -> Self {
        match v {
            Value::Bool(_) => Self::Boolean,
            Value::Number(n) if n.is_i64() || n.is_u64() => Self::Integer,
            Value::Number(_) => Self::Number,
            Value::String(s) => {
                let t = s.trim();
                if t.parse::<i64>().is_ok() {
                    Self::Integer
                } else if t.parse::<f64>().is_ok() {
                    Self::Number
                } else if t.eq_ignore_ascii_case("true") || t.eq_ignore_ascii_case("false") {
                    Self::Boolean
                } else if super::parse_datetime(v).is_some() {
                    Self::Date
                } else if t.contains('@') && !t.contains(' ') {
                    Self::Email
                } else {
                    Self::Text {
                        max: Some(s.chars().count()),
                    }
                }
            }
            _ => Self::Unknown,
        }
    }

    /// The kind of a context path's values.
    pub fn of_path(path: &str) -> Self {
        match path {
            "contact.email" => Self::Email,
            "contact.phone" => Self::Phone,
            "event.received_at" | "event.occurred_at" => Self::Date,
            p if p.starts_with("contact.") || p.starts_with("attribution.") => {
                Self::Text { max: None }
            }
            p if p.starts_with("event.") || p.starts_with("delivery.") || p.starts_with("ids.") => {
                Self::Text { max: None }
            }
            p if p.starts_with("consent.") => Self::Boolean,
            _ => Self::Unknown,
        }
    }

    /// One kind for values of several kinds (`Unknown` when they differ).
    fn common(kinds: impl Iterator<Item = ValueKind>) -> Self {
        let mut out: Option<ValueKind> = None;
        for k in kinds {
            out = Some(match (out, k) {
                (None, k) => k,
                (Some(ValueKind::Text { max: a }), ValueKind::Text { max: b }) => ValueKind::Text {
                    max: a.zip(b).map(|(a, b)| a.max(b)),
                },
                (Some(a), b) if a == b => a,
                (Some(ValueKind::Integer), ValueKind::Number)
                | (Some(ValueKind::Number), ValueKind::Integer) => ValueKind::Number,
                _ => ValueKind::Unknown,
            });
        }
        out.unwrap_or(ValueKind::Unknown)
    }
}
