//! Column mappings for tabular destinations (`sheets`, `csv`): headers and
//! one minijinja expression per column, evaluated over the notification
//! context (see [`crate::connectors::notify`]). The order is the order
//! written, so columns stay stable; add new columns at the end.

use minijinja::{Environment, UndefinedBehavior};
use serde::Deserialize;
use serde_json::Value;

use crate::config::Problem;

/// Text a spreadsheet would read as a formula (OWASP, CSV injection): it
/// starts with `=`, `+`, `-`, `@`, a tab or a CR. Phone numbers such as
/// `+14155550123` are included: `+1+HYPERLINK(…)` and `-2+3+cmd|…` start
/// with a sign and a digit too, and no rule on what follows is safe.
pub fn formula_like(text: &str) -> bool {
    text.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// `columns = "leads" | "dead_letters" | [ … ]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ColumnsSetting {
    Preset(String),
    List(Vec<ColumnSpec>),
}

/// `"contact.email"` or `{ header = "Email", value = "contact.email" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ColumnSpec {
    Expr(String),
    Full { header: String, value: String },
}

/// Google's limit on one cell.
const MAX_CELL_CHARS: usize = 50_000;

const LEADS: &[(&str, &str)] = &[
    ("Received", "event.received_at"),
    ("Event", "event.type"),
    ("Origin", "event.origin.kind ~ ':' ~ event.origin.name"),
    ("Email", "contact.email"),
    ("First name", "contact.first_name"),
    ("Last name", "contact.last_name"),
    ("Phone", "contact.phone"),
    ("Company", "contact.company"),
    ("Title", "contact.title"),
    ("Country", "contact.country"),
    ("Message", "data.message"),
    ("UTM source", "attribution.utm_source"),
    ("UTM medium", "attribution.utm_medium"),
    ("UTM campaign", "attribution.utm_campaign"),
    ("UTM term", "attribution.utm_term"),
    ("UTM content", "attribution.utm_content"),
    ("Referrer", "attribution.referrer"),
    ("Landing page", "attribution.landing_page"),
    ("Event ID", "event.id"),
    ("Delivery ID", "delivery.id"),
];

const DEAD_LETTERS: &[(&str, &str)] = &[
    ("Failed at", "dead_letter.dead_at"),
    ("Destination", "dead_letter.destination"),
    ("Reason", "dead_letter.reason"),
    ("Status", "dead_letter.status"),
    ("Attempts", "dead_letter.attempts"),
    ("Email", "contact.email"),
    ("First name", "contact.first_name"),
    ("Last name", "contact.last_name"),
    ("Phone", "contact.phone"),
    ("Company", "contact.company"),
    ("Message", "original.fields.message"),
    ("UTM source", "attribution.utm_source"),
    ("UTM campaign", "attribution.utm_campaign"),
    ("Original event", "original.type"),
    ("Original event ID", "original.event_id"),
    ("Received", "original.received_at"),
    ("Failed delivery ID", "dead_letter.delivery_id"),
];

/// Compiled columns.
pub struct Columns {
    env: Environment<'static>,
    columns: Vec<(String, String)>,
}

impl Columns {
    pub fn compile(setting: Option<&ColumnsSetting>) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let columns: Vec<(String, String)> = match setting {
            None => preset(LEADS),
            Some(ColumnsSetting::Preset(p)) => match p.as_str() {
                "leads" => preset(LEADS),
                "dead_letters" => preset(DEAD_LETTERS),
                other => {
                    problems.push(Problem::error(
                        "columns",
                        format!("unknown preset {other:?} (leads, dead_letters, or a list)"),
                    ));
                    Vec::new()
                }
            },
            Some(ColumnsSetting::List(list)) => list
                .iter()
                .map(|c| match c {
                    ColumnSpec::Expr(e) => (e.clone(), e.clone()),
                    ColumnSpec::Full { header, value } => (header.clone(), value.clone()),
                })
                .collect(),
        };
        if columns.is_empty() && problems.is_empty() {
            problems.push(Problem::error("columns", "name at least one column"));
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        for (i, (header, expr)) in columns.iter().enumerate() {
            if header.trim().is_empty() {
                problems.push(Problem::error(
                    format!("columns[{i}].header"),
                    "empty header",
                ));
            }
            if let Err(e) = env.compile_expression(expr) {
                problems.push(Problem::error(
                    format!("columns[{i}]"),
                    format!("invalid expression {expr:?}: {e}"),
                ));
            }
        }
        if problems.is_empty() {
            Ok(Self { env, columns })
        } else {
            Err(problems)
        }
    }

    /// One row with its headers, in column order (for `simulate`).
    pub fn preview(&self, ctx: &Value) -> Result<Value, String> {
        let row = self.row(ctx)?;
        Ok(serde_json::json!({"columns": self.headers(), "row": row}))
    }

    pub fn headers(&self) -> Vec<String> {
        self.columns.iter().map(|(h, _)| h.clone()).collect()
    }

    /// One row of cells: strings, numbers, booleans; empty for missing values.
    pub fn row(&self, ctx: &Value) -> Result<Vec<Value>, String> {
        let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
        self.columns
            .iter()
            .map(|(header, expr)| {
                let compiled = self
                    .env
                    .compile_expression(expr)
                    .map_err(|e| format!("column {header:?}: {e}"))?;
                let v = compiled
                    .eval(ctx.clone())
                    .map_err(|e| format!("column {header:?}: {e}"))?;
                Ok(cell(&v))
            })
            .collect()
    }
}

fn preset(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(h, e)| (h.to_string(), e.to_string()))
        .collect()
}

/// A value as a cell: scalars as they are, lists joined, maps as JSON.
fn cell(v: &minijinja::Value) -> Value {
    if v.is_undefined() || v.is_none() {
        return Value::String(String::new());
    }
    let json = serde_json::to_value(v).unwrap_or(Value::Null);
    let out = match json {
        Value::Null => Value::String(String::new()),
        Value::Bool(_) | Value::Number(_) => json,
        Value::String(s) => Value::String(s),
        Value::Array(a) => Value::String(
            a.iter()
                .map(crate::connectors::notify::text_of)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        other => Value::String(other.to_string()),
    };
    match out {
        Value::String(s) if s.chars().count() > MAX_CELL_CHARS => {
            Value::String(s.chars().take(MAX_CELL_CHARS).collect())
        }
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::notify;

    #[test]
    fn presets_and_custom_columns() {
        let c = Columns::compile(None).unwrap();
        let job = notify::sample_lead_job();
        let ctx = notify::context(&job, "http://x");
        let row = c.row(&ctx).unwrap();
        let headers = c.headers();
        let at = |h: &str| &row[headers.iter().position(|x| x == h).unwrap()];
        assert_eq!(at("Email"), "jane@example.com");
        assert_eq!(at("UTM source"), "google");
        assert_eq!(at("Title"), "", "missing values are empty cells");
        assert_eq!(at("Event ID"), &Value::String(job.event.id.to_string()));

        let list: ColumnsSetting = serde_json::from_value(serde_json::json!([
            "contact.email",
            {"header": "Seats", "value": "data.seats"},
            {"header": "Name", "value": "contact.first_name ~ ' ' ~ contact.last_name"},
        ]))
        .unwrap();
        let c = Columns::compile(Some(&list)).unwrap();
        assert_eq!(c.headers(), vec!["contact.email", "Seats", "Name"]);
        assert_eq!(
            c.row(&ctx).unwrap(),
            vec![
                Value::String("jane@example.com".into()),
                serde_json::json!(20),
                Value::String("Jane Doe".into())
            ]
        );

        let dead = Columns::compile(Some(&ColumnsSetting::Preset("dead_letters".into()))).unwrap();
        let ctx = notify::context(&notify::sample_dead_letter_job(), "http://x");
        let row = dead.row(&ctx).unwrap();
        assert_eq!(row[1], "crm");
        assert_eq!(row[2], "HTTP 400");

        let bad: ColumnsSetting =
            serde_json::from_value(serde_json::json!([{"header": "X", "value": "a +"}])).unwrap();
        let errs = Columns::compile(Some(&bad)).err().unwrap();
        assert_eq!(errs[0].path, "columns[0]");
        assert!(Columns::compile(Some(&ColumnsSetting::Preset("nope".into()))).is_err());
    }
}
