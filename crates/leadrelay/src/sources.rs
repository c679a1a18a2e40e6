//! The configured inbound sources (`[sources.NAME]`): each is built once, at
//! start-up, from its `kind` and settings by the `leadrelay-sources` library,
//! which owns every vendor's authentication and mapping. This module only
//! turns configuration into built sources (reporting problems by key path, so
//! `leadrelay check` can point at the line) and says where vendors reach them.

use std::collections::HashMap;

use leadrelay_sources::SourceKind;
use serde_json::Value;

use crate::config::{Config, Problem, SourceConfig};

/// Every configured source by name, ready to authenticate and parse requests.
pub type Sources = HashMap<String, Box<dyn SourceKind>>;

/// The path of the hook endpoint for a source.
pub fn hook_path(name: &str) -> String {
    format!("/v1/hooks/{name}")
}

/// The URL a vendor calls: the public URL (without a trailing slash) and the
/// hook path.
pub fn hook_url(public_url: &str, name: &str) -> String {
    format!("{}{}", public_url.trim_end_matches('/'), hook_path(name))
}

/// The largest body a source accepts (413 beyond): its `max_body_bytes`
/// when set; otherwise its kind's default, which fits the vendor's largest
/// documented request (Woodpecker's 100-prospect batches, Salesforce's 100
/// notifications …), and never less than `server.max_body_bytes`.
pub fn body_limit(config: &Config, name: &str) -> usize {
    let server = config.server.max_body_bytes.bytes() as usize;
    match config.sources.get(name) {
        Some(source) => match source.max_body_bytes {
            Some(limit) => limit.bytes() as usize,
            None => leadrelay_sources::default_max_body_bytes(&source.kind)
                .map_or(server, |kind| kind.max(server)),
        },
        None => server,
    }
}

/// A source's settings table as JSON, the form the library reads (TOML
/// dates, which no kind uses, become their RFC 3339 text).
pub fn settings_json(source: &SourceConfig) -> Value {
    Value::Object(
        source
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), toml_to_json(v)))
            .collect(),
    )
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// Builds one source; every problem carries the key path
/// `sources.NAME.<setting>`.
pub fn build_source(
    name: &str,
    source: &SourceConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Box<dyn SourceKind>, Vec<Problem>> {
    leadrelay_sources::build(&source.kind, &settings_json(source), env).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| {
                let path = if e.field.is_empty() {
                    format!("sources.{name}")
                } else {
                    format!("sources.{name}.{}", e.field)
                };
                let mut p = Problem::error(path, e.message);
                // The setting names an env var that is unset or blank: only
                // the secret is missing (see `Problem::unset_env`).
                if let Some(var) = source.settings.get(&e.field).and_then(|v| v.as_str())
                    && e.field.ends_with("_env")
                    && env(var).is_none_or(|v| v.trim().is_empty())
                {
                    p.unset_env = Some(var.to_string());
                }
                p
            })
            .collect()
    })
}

/// Builds every configured source, or reports every problem found.
pub fn build_all(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Sources, Vec<Problem>> {
    let mut built = HashMap::new();
    let mut problems = Vec::new();
    for (name, source) in &config.sources {
        match build_source(name, source, env) {
            Ok(s) => {
                built.insert(name.clone(), s);
            }
            Err(ps) => problems.extend(ps),
        }
    }
    if problems.is_empty() {
        Ok(built)
    } else {
        Err(problems)
    }
}

/// The env var a source's shared URL token is read from (`token_env`), for
/// the kinds that take one.
pub fn token_env(source: &SourceConfig) -> Option<&str> {
    source.settings.get("token_env").and_then(|v| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn body_limits_come_from_the_source_then_the_kind_never_below_the_server() {
        let c = config(
            "[sources.wp]\nkind = \"woodpecker\"\ntoken_env = \"T\"\n\
             [sources.wp_small]\nkind = \"woodpecker\"\ntoken_env = \"T\"\nmax_body_bytes = \"128KiB\"\n\
             [sources.sf]\nkind = \"salesforce_outbound_message\"\norganization_id = \"00D000000000062\"\n",
        );
        assert_eq!(body_limit(&c, "wp"), 2 * 1024 * 1024);
        assert_eq!(body_limit(&c, "wp_small"), 128 * 1024);
        assert_eq!(body_limit(&c, "sf"), 2 * 1024 * 1024);
        assert_eq!(body_limit(&c, "nope"), 64 * 1024);
        // A server limit above a kind's default raises it.
        let c = config(
            "[server]\nmax_body_bytes = \"4MiB\"\n[sources.wp]\nkind = \"woodpecker\"\ntoken_env = \"T\"\n",
        );
        assert_eq!(body_limit(&c, "wp"), 4 * 1024 * 1024);
    }

    #[test]
    fn settings_become_json_without_the_kind() {
        let c = config(
            "[sources.zap]\nkind = \"generic\"\ntoken_env = \"T\"\nevent_type = \"lead.created\"\nfields = { email = \"/e\" }\ntolerance = 30\n",
        );
        let s = settings_json(&c.sources["zap"]);
        assert_eq!(
            s,
            serde_json::json!({"token_env": "T", "event_type": "lead.created", "fields": {"email": "/e"}, "tolerance": 30})
        );
        assert_eq!(token_env(&c.sources["zap"]), Some("T"));
    }

    #[test]
    fn problems_carry_the_source_key_path() {
        let c = config(
            "[sources.cal]\nkind = \"calendly\"\nsigning_key_env = \"CAL_KEY\"\n[sources.typo]\nkind = \"calendly\"\nsigning_key_env = \"CAL_KEY\"\ncolour = 1\n[sources.old]\nkind = \"yesware\"\n",
        );
        let Err(problems) = build_all(&c, &|_| None) else {
            panic!("built without secrets")
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"sources.typo.colour"), "{problems:?}");
        assert!(
            paths.contains(&"sources.cal.signing_key_env"),
            "{problems:?}"
        );
        let kind = problems
            .iter()
            .find(|p| p.path == "sources.old.kind")
            .expect("unknown kind reported");
        assert!(kind.message.contains("hubspot"), "{}", kind.message);

        let ok = build_all(
            &config("[sources.cal]\nkind = \"calendly\"\nsigning_key_env = \"CAL_KEY\"\n"),
            &|k| (k == "CAL_KEY").then(|| "key".to_string()),
        )
        .unwrap();
        assert_eq!(ok["cal"].kind(), "calendly");
    }

    #[test]
    fn hook_urls_join_without_double_slashes() {
        assert_eq!(
            hook_url("https://leads.example.com/", "hubspot"),
            "https://leads.example.com/v1/hooks/hubspot"
        );
    }
}
