//! Value transforms: text cleanup, phone numbers, names, domains, dates,
//! numbers. Each is named in the configuration (`transform = ["trim",
//! "lower"]`); some take an argument after a colon (`"e164:DE"`,
//! `"truncate:255"`, `"format:%d.%m.%Y"`, `"join:, "`).

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use leadrelay_model::{ContactData, EmailAddress, PhoneE164, split_full_name};
use serde_json::Value;

use super::as_text;

/// The names `Transform::parse` accepts, for messages and the README.
pub const TRANSFORM_NAMES: &str = "trim, lower, upper, title, e164[:REGION], first_name, last_name, \
domain, date, datetime, epoch_ms, epoch_s, format:STRFTIME, truncate:N, number, integer, boolean, \
string, join[:SEP], html";

#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    Trim,
    Lower,
    Upper,
    /// Each word capitalised.
    Title,
    /// A phone number in E.164, with an optional default region.
    E164(Option<String>),
    /// The first word of a full name.
    FirstName,
    /// Everything after the first word of a full name.
    LastName,
    /// A company domain from an email (skipping free-mail providers) or a URL.
    Domain,
    /// `YYYY-MM-DD`.
    Date,
    /// RFC 3339 in UTC with milliseconds (`2024-05-01T09:30:00.000Z`).
    DateTime,
    /// Milliseconds since the epoch (HubSpot date and datetime properties).
    EpochMs,
    EpochS,
    /// A date formatted with strftime.
    Format(String),
    /// At most N characters.
    Truncate(usize),
    Number,
    Integer,
    Boolean,
    String,
    /// A list joined into text.
    Join(String),
    /// Text escaped for HTML bodies (notes), line breaks as `<br>`.
    Html,
}

impl Transform {
    pub fn parse(spec: &str) -> Result<Transform, String> {
        let (name, arg) = match spec.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a)),
            None => (spec.trim(), None),
        };
        let no_arg = |t: Transform| -> Result<Transform, String> {
            match arg {
                None => Ok(t),
                Some(_) => Err(format!("transform {name:?} takes no argument")),
            }
        };
        match name {
            "trim" => no_arg(Transform::Trim),
            "lower" | "lowercase" => no_arg(Transform::Lower),
            "upper" | "uppercase" => no_arg(Transform::Upper),
            "title" | "titlecase" => no_arg(Transform::Title),
            "e164" | "phone" => match arg {
                None => Ok(Transform::E164(None)),
                Some(r) => {
                    PhoneE164::check_region(r.trim()).map_err(|e| e.to_string())?;
                    Ok(Transform::E164(Some(r.trim().to_uppercase())))
                }
            },
            "first_name" => no_arg(Transform::FirstName),
            "last_name" => no_arg(Transform::LastName),
            "domain" => no_arg(Transform::Domain),
            "date" => no_arg(Transform::Date),
            "datetime" => no_arg(Transform::DateTime),
            "epoch_ms" => no_arg(Transform::EpochMs),
            "epoch_s" | "epoch" => no_arg(Transform::EpochS),
            "format" => {
                let f = arg.ok_or("format needs a strftime pattern, e.g. \"format:%d.%m.%Y\"")?;
                let bad = chrono::format::StrftimeItems::new(f)
                    .any(|i| matches!(i, chrono::format::Item::Error));
                if bad || f.is_empty() {
                    return Err(format!("{f:?} is not a valid strftime pattern"));
                }
                Ok(Transform::Format(f.to_string()))
            }
            "truncate" => {
                let n = arg
                    .and_then(|a| a.trim().parse::<usize>().ok())
                    .filter(|n| *n > 0)
                    .ok_or("truncate needs a length, e.g. \"truncate:255\"")?;
                Ok(Transform::Truncate(n))
            }
            "number" => no_arg(Transform::Number),
            "integer" => no_arg(Transform::Integer),
            "boolean" | "bool" => no_arg(Transform::Boolean),
            "string" | "text" => no_arg(Transform::String),
            "join" => Ok(Transform::Join(arg.unwrap_or(", ").to_string())),
            "html" => no_arg(Transform::Html),
            other => Err(format!(
                "unknown transform {other:?} (known: {TRANSFORM_NAMES})"
            )),
        }
    }

    /// Applies the transform to a non-empty value.
    pub fn apply(&self, v: &Value) -> Result<Value, String> {
        let text = || as_text(v).unwrap_or_default();
        Ok(match self {
            Transform::Trim => Value::String(text().trim().to_string()),
            Transform::Lower => Value::String(text().to_lowercase()),
            Transform::Upper => Value::String(text().to_uppercase()),
            Transform::Title => Value::String(title_case(&text())),
            Transform::E164(region) => {
                let t = text();
                let p = PhoneE164::parse(&t, region.as_deref())
                    .map_err(|e| format!("{:?} is not a phone number: {e}", mask(&t)))?;
                Value::String(p.as_str().to_string())
            }
            Transform::FirstName => Value::String(split_full_name(&text()).0),
            Transform::LastName => split_full_name(&text())
                .1
                .map(Value::String)
                .unwrap_or(Value::Null),
            Transform::Domain => domain_of(&text()).map(Value::String).unwrap_or(Value::Null),
            Transform::Date => {
                let d = date_of(v)?;
                Value::String(d.format("%Y-%m-%d").to_string())
            }
            Transform::DateTime => {
                Value::String(datetime_of(v)?.to_rfc3339_opts(SecondsFormat::Millis, true))
            }
            Transform::EpochMs => Value::from(datetime_of(v)?.timestamp_millis()),
            Transform::EpochS => Value::from(datetime_of(v)?.timestamp()),
            Transform::Format(f) => Value::String(datetime_of(v)?.format(f).to_string()),
            Transform::Truncate(n) => Value::String(text().chars().take(*n).collect()),
            Transform::Number => match v {
                Value::Number(_) => v.clone(),
                _ => {
                    let t = text();
                    let cleaned: String = t
                        .trim()
                        .chars()
                        .filter(|c| *c != ',' && *c != '_')
                        .collect();
                    let n: f64 = cleaned
                        .parse()
                        .map_err(|_| format!("{t:?} is not a number"))?;
                    serde_json::Number::from_f64(n)
                        .map(Value::Number)
                        .ok_or_else(|| format!("{t:?} is not a finite number"))?
                }
            },
            Transform::Integer => {
                let t = text();
                let n: f64 = t
                    .trim()
                    .parse()
                    .map_err(|_| format!("{t:?} is not a number"))?;
                Value::from(n.round() as i64)
            }
            Transform::Boolean => match v {
                Value::Bool(_) => v.clone(),
                _ => {
                    let t = text().trim().to_lowercase();
                    match t.as_str() {
                        "true" | "yes" | "y" | "on" | "1" | "checked" => Value::Bool(true),
                        "false" | "no" | "n" | "off" | "0" | "" => Value::Bool(false),
                        _ => return Err(format!("{t:?} is not a yes/no value")),
                    }
                }
            },
            Transform::String => Value::String(text()),
            Transform::Join(sep) => match v {
                Value::Array(a) => {
                    Value::String(a.iter().filter_map(as_text).collect::<Vec<_>>().join(sep))
                }
                _ => Value::String(text()),
            },
            Transform::Html => Value::String(html(&text())),
        })
    }
}

fn mask(s: &str) -> String {
    let n = s.chars().count();
    if n <= 4 {
        "****".into()
    } else {
        format!("{}…", s.chars().take(4).collect::<String>())
    }
}

fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if c.is_whitespace() || c == '-' || c == '\'' {
            start = true;
            out.push(c);
        } else if start {
            out.extend(c.to_uppercase());
            start = false;
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("<br>"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The company domain in an email address (None for free-mail providers)
/// or a URL/host name (`https://www.Acme.io/x` → `acme.io`).
pub fn domain_of(s: &str) -> Option<String> {
    let s = s.trim();
    if s.contains('@') && !s.contains("://") {
        let email = EmailAddress::parse(s).ok()?;
        let mut c = ContactData {
            email: Some(email),
            ..Default::default()
        };
        c.derive_domain();
        return c.domain;
    }
    let mut c = ContactData {
        website: Some(s.to_string()),
        ..Default::default()
    };
    c.derive_domain();
    c.domain.filter(|d| !d.contains(' '))
}

/// Parses a date or instant: RFC 3339, `YYYY-MM-DD[ HH:MM[:SS]]`, or epoch
/// seconds/milliseconds (numbers or digit strings).
pub fn parse_datetime(v: &Value) -> Option<DateTime<Utc>> {
    let from_epoch = |n: f64| -> Option<DateTime<Utc>> {
        if !n.is_finite() {
            return None;
        }
        let ms = if n.abs() >= 1e11 { n } else { n * 1000.0 };
        Utc.timestamp_millis_opt(ms as i64).single()
    };
    match v {
        Value::Number(n) => from_epoch(n.as_f64()?),
        Value::String(s) => {
            let s = s.trim();
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
                return from_epoch(s.parse().ok()?);
            }
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.with_timezone(&Utc));
            }
            for f in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
                if let Ok(t) = DateTime::parse_from_str(s, f) {
                    return Some(t.with_timezone(&Utc));
                }
            }
            for f in [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%d %H:%M",
            ] {
                if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
                    return Some(t.and_utc());
                }
            }
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        }
        _ => None,
    }
}

fn datetime_of(v: &Value) -> Result<DateTime<Utc>, String> {
    parse_datetime(v).ok_or_else(|| {
        format!(
            "{} is not a date or time (RFC 3339, YYYY-MM-DD or epoch)",
            as_text(v).unwrap_or_default()
        )
    })
}

fn date_of(v: &Value) -> Result<NaiveDate, String> {
    datetime_of(v).map(|t| t.date_naive())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(spec: &str, v: Value) -> Result<Value, String> {
        Transform::parse(spec).unwrap().apply(&v)
    }

    #[test]
    fn text_transforms() {
        assert_eq!(t("trim", json!("  a b ")).unwrap(), "a b");
        assert_eq!(t("lower", json!("JaNe@X.IO")).unwrap(), "jane@x.io");
        assert_eq!(t("upper", json!("de")).unwrap(), "DE");
        assert_eq!(
            t("title", json!("jANE o'neil-smith")).unwrap(),
            "Jane O'Neil-Smith"
        );
        assert_eq!(t("truncate:3", json!("abcdef")).unwrap(), "abc");
        assert_eq!(t("html", json!("a<b>\n&")).unwrap(), "a&lt;b&gt;<br>&amp;");
        assert_eq!(t("join:;", json!(["a", "b"])).unwrap(), "a;b");
    }

    #[test]
    fn phone_names_domains() {
        assert_eq!(
            t("e164:US", json!("(415) 555-2671")).unwrap(),
            "+14155552671"
        );
        assert!(t("e164", json!("not a phone")).is_err());
        assert_eq!(t("first_name", json!("Jane van Doe")).unwrap(), "Jane");
        assert_eq!(t("last_name", json!("Jane van Doe")).unwrap(), "van Doe");
        assert_eq!(t("last_name", json!("Jane")).unwrap(), Value::Null);
        assert_eq!(t("domain", json!("jane@Acme.io")).unwrap(), "acme.io");
        assert_eq!(t("domain", json!("jane@gmail.com")).unwrap(), Value::Null);
        assert_eq!(
            t("domain", json!("https://www.acme.io/about")).unwrap(),
            "acme.io"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(
            t("date", json!("2024-05-01T23:30:00Z")).unwrap(),
            "2024-05-01"
        );
        assert_eq!(
            t("epoch_ms", json!("2024-05-01")).unwrap(),
            json!(1_714_521_600_000i64)
        );
        assert_eq!(
            t("epoch_s", json!(1_714_521_600_000i64)).unwrap(),
            json!(1_714_521_600)
        );
        assert_eq!(
            t("datetime", json!("2024-05-01 09:30")).unwrap(),
            "2024-05-01T09:30:00.000Z"
        );
        assert_eq!(
            t("format:%d.%m.%Y", json!("2024-05-01")).unwrap(),
            "01.05.2024"
        );
        assert!(t("date", json!("yesterday")).is_err());
        assert!(Transform::parse("format:%Q").is_err());
    }

    #[test]
    fn numbers_and_booleans() {
        assert_eq!(t("number", json!("1,200.5")).unwrap(), json!(1200.5));
        assert_eq!(t("integer", json!("7.6")).unwrap(), json!(8));
        assert!(t("number", json!("lots")).is_err());
        assert_eq!(t("boolean", json!("on")).unwrap(), json!(true));
        assert_eq!(t("boolean", json!("No")).unwrap(), json!(false));
        assert_eq!(t("string", json!(12)).unwrap(), json!("12"));
    }

    #[test]
    fn unknown_transforms_and_arguments() {
        assert!(Transform::parse("sparkle").unwrap_err().contains("known:"));
        assert!(Transform::parse("trim:x").is_err());
        assert!(Transform::parse("truncate").is_err());
        assert!(Transform::parse("e164:XX").is_err());
    }
}
