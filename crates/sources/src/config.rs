//! Source settings: each kind's table is deserialized into its own struct
//! (`deny_unknown_fields`), every problem is reported with the key at fault,
//! and secrets are resolved from the environment variables the settings name
//! (secrets never live in the configuration file).

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::{SourceConfigError, SourceKind};

/// Resolves environment-variable names.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(crate) fn config_error(field: &str, message: impl Into<String>) -> SourceConfigError {
    SourceConfigError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Deserializes a kind's settings, collecting every unknown key and bad value
/// instead of stopping at the first.
pub(crate) fn parse_settings<T: DeserializeOwned>(
    settings: &Value,
) -> Result<T, Vec<SourceConfigError>> {
    let mut table = match settings {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => {
            return Err(vec![config_error(
                "",
                "a source's settings must be a table",
            )]);
        }
    };
    let mut errors = Vec::new();
    // Each round removes the key at fault, so the loop ends within one round per key.
    for _ in 0..=settings.as_object().map_or(0, |m| m.len()) {
        match serde_path_to_error::deserialize::<_, T>(Value::Object(table.clone())) {
            Ok(parsed) if errors.is_empty() => return Ok(parsed),
            Ok(_) => return Err(errors),
            Err(e) => {
                let message = e.inner().to_string();
                let top = e.path().iter().next().map(|seg| seg.to_string());
                if let Some(key) = quoted_after(&message, "unknown field `") {
                    let field = match top.as_deref() {
                        Some(parent) if parent != key => format!("{parent}.{key}"),
                        _ => key.to_string(),
                    };
                    errors.push(config_error(&field, unknown_key_message(&message)));
                    remove_path(&mut table, top.as_deref(), key);
                } else if let Some(key) = quoted_after(&message, "missing field `") {
                    // A key already reported as invalid (and removed) is missing now: say nothing twice.
                    if !errors.iter().any(|err| err.field == key) {
                        errors.push(config_error(key, "is required"));
                    }
                    return Err(errors);
                } else if let Some(key) = top.filter(|k| table.contains_key(k)) {
                    errors.push(config_error(&e.path().to_string(), message));
                    table.remove(&key);
                } else {
                    errors.push(config_error("", message));
                    return Err(errors);
                }
            }
        }
    }
    Err(errors)
}

fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    rest.split('`').next()
}

fn unknown_key_message(serde_message: &str) -> String {
    match serde_message.split_once(", expected ") {
        Some((_, expected)) => format!("unknown key; expected {expected}"),
        None => "unknown key".to_string(),
    }
}

fn remove_path(table: &mut Map<String, Value>, parent: Option<&str>, key: &str) {
    match parent.filter(|p| *p != key).and_then(|p| table.get_mut(p)) {
        Some(Value::Object(inner)) => {
            inner.remove(key);
        }
        _ => {
            table.remove(key);
        }
    }
}

/// The built source, unless configuration problems were found.
pub(crate) fn finish<T: SourceKind + 'static>(
    source: Option<T>,
    errors: Vec<SourceConfigError>,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    match source {
        Some(source) if errors.is_empty() => Ok(Box::new(source)),
        _ => Err(errors),
    }
}

/// A secret read from the environment. Its Debug output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn new(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Reads the secret held by the env var that settings key `key` names.
pub(crate) fn secret_from_env(
    env: Env,
    key: &str,
    var: &str,
    errors: &mut Vec<SourceConfigError>,
) -> Option<Secret> {
    if var.trim().is_empty() {
        errors.push(config_error(key, "names no environment variable"));
        return None;
    }
    match env(var) {
        Some(value) if !value.trim().is_empty() => Some(Secret(value.trim().to_string())),
        Some(_) => {
            errors.push(config_error(
                key,
                format!("environment variable {var} is empty"),
            ));
            None
        }
        None => {
            errors.push(config_error(
                key,
                format!("environment variable {var} is not set"),
            ));
            None
        }
    }
}

/// Like [`secret_from_env`] for an optional setting.
pub(crate) fn optional_secret(
    env: Env,
    key: &str,
    var: Option<&String>,
    errors: &mut Vec<SourceConfigError>,
) -> Option<Secret> {
    var.and_then(|v| secret_from_env(env, key, v, errors))
}

/// The replay window for vendors that sign a timestamp: `"5m"`, `"90s"` or a
/// number of seconds. Defaults to five minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tolerance(pub Duration);

pub(crate) const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
const MAX_TOLERANCE: Duration = Duration::from_secs(24 * 3600);

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance(DEFAULT_TOLERANCE)
    }
}

impl<'de> Deserialize<'de> for Tolerance {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        let duration = match Raw::deserialize(d)? {
            Raw::Seconds(s) => Duration::from_secs(s),
            Raw::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{t:?} is not a duration such as \"5m\" or \"300s\" ({e})"
                ))
            })?,
        };
        if duration.is_zero() || duration > MAX_TOLERANCE {
            return Err(serde::de::Error::custom(
                "the tolerance must be between 1s and 24h",
            ));
        }
        Ok(Tolerance(duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        token_env: String,
        #[serde(default)]
        tolerance: Tolerance,
        #[serde(default)]
        fields: std::collections::BTreeMap<String, String>,
    }

    #[test]
    fn reports_every_unknown_key_and_bad_value() {
        let errors = parse_settings::<Demo>(&json!({
            "token_env": "T", "colour": 1, "shape": 2, "tolerance": "soon"
        }))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"colour")
                && fields.contains(&"shape")
                && fields.contains(&"tolerance"),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .find(|e| e.field == "colour")
                .unwrap()
                .message
                .contains("token_env")
        );
    }

    #[test]
    fn missing_required_key_is_named() {
        let errors = parse_settings::<Demo>(&json!({})).unwrap_err();
        assert_eq!(errors, vec![config_error("token_env", "is required")]);
        let errors = parse_settings::<Demo>(&json!({"token_env": 5})).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "token_env");
    }

    #[test]
    fn tolerance_accepts_text_and_seconds() {
        let d: Demo = parse_settings(&json!({"token_env": "T", "tolerance": "90s"})).unwrap();
        assert_eq!(d.tolerance.0, Duration::from_secs(90));
        let d: Demo = parse_settings(&json!({"token_env": "T", "tolerance": 60})).unwrap();
        assert_eq!(d.tolerance.0, Duration::from_secs(60));
        let d: Demo = parse_settings(&json!({"token_env": "T"})).unwrap();
        assert_eq!(d.tolerance.0, DEFAULT_TOLERANCE);
        assert!(parse_settings::<Demo>(&json!({"token_env": "T", "tolerance": 0})).is_err());
        let _ = (d.fields, d.token_env);
    }

    #[test]
    fn secrets_come_from_env() {
        let env = |name: &str| (name == "SET").then(|| "s3cret".to_string());
        let mut errors = Vec::new();
        assert_eq!(
            secret_from_env(&env, "token_env", "SET", &mut errors)
                .unwrap()
                .as_str(),
            "s3cret"
        );
        assert!(secret_from_env(&env, "token_env", "UNSET", &mut errors).is_none());
        assert_eq!(errors[0].field, "token_env");
        assert!(errors[0].message.contains("UNSET is not set"));
        assert_eq!(format!("{:?}", Secret::new("x")), "Secret(***)");
    }
}
