//! Loading a configuration: parse, collect every unknown key, validate, and
//! report each problem with the line and column it comes from.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::Config;
use super::location::{LineCol, Locator};
use super::validate;

/// The configuration used when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// How serious a problem is: errors stop `serve` and fail `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    /// The key path, e.g. `forms.contact.fields.email.type` or `routes[0].when`.
    pub path: String,
    pub location: Option<LineCol>,
    pub message: String,
    /// Set when the problem is only that this environment variable (a
    /// secret) is unset or empty: commands that never send anything skip
    /// such problems, and a switched-off `enabled = "auto"` destination is
    /// still checked for every other one.
    pub unset_env: Option<String>,
}

impl Problem {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            path: path.into(),
            location: None,
            message: message.into(),
            unset_env: None,
        }
    }

    /// "environment variable VAR is not set", for the setting that names it.
    pub fn unset_env(setting: impl Into<String>, var: &str) -> Self {
        let mut p = Self::error(setting, format!("environment variable {var} is not set"));
        p.unset_env = Some(var.to_string());
        p
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            path: path.into(),
            location: None,
            message: message.into(),
            unset_env: None,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col: error: path: message`
    pub fn render(&self, source_name: &str) -> String {
        let loc = self.location.map(|l| format!("{l}:")).unwrap_or_default();
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let path = if self.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.path)
        };
        format!("{source_name}:{loc} {sev}: {path}{}", self.message)
    }
}

/// A configuration that could not be used, with every problem found.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.problems.iter().filter(|p| p.is_error()).count();
        writeln!(f, "{} has {errors} error(s):", self.source_name)?;
        for p in &self.problems {
            writeln!(f, "  {}", p.render(&self.source_name))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A configuration that parsed and validated, with any warnings.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The file name, or `<embedded default>`.
    pub source_name: String,
    pub warnings: Vec<Problem>,
}

/// Reads and validates a configuration file.
pub fn load_file(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigError> {
    load_file_with(path, env, Secrets::Required)
}

/// Whether destination and source secrets must be in the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Secrets {
    /// `serve`, `check`, `simulate`: an unset secret is an error.
    #[default]
    Required,
    /// Commands that only read or edit the store (`events`, `deliveries`,
    /// `dlq`, `timers`, `keys`, `privacy`, `healthcheck`): they never send
    /// anything, so unset secrets are not reported.
    Optional,
}

/// Parses and validates configuration text. `env` resolves environment
/// variables (secrets and `enabled = "auto"` switches).
pub fn load_str(
    text: &str,
    source_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigError> {
    load_str_with(text, source_name, env, Secrets::Required)
}

/// [`load_file`], choosing whether secrets must be set.
pub fn load_file_with(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: Secrets,
) -> Result<LoadedConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                " — write a starter file with `leadrelay init --config {name}`, or leave out \
                 --config (and LEADRELAY_CONFIG) to use ./leadrelay.toml or the embedded default"
            ),
            std::io::ErrorKind::PermissionDenied => {
                " — the user running leadrelay needs read access to it".to_string()
            }
            _ => String::new(),
        };
        ConfigError {
            source_name: name.clone(),
            problems: vec![Problem::error(
                "",
                format!("cannot read the configuration file: {e}{hint}"),
            )],
        }
    })?;
    load_str_with(&text, &name, env, secrets)
}

/// [`load_str`], choosing whether secrets must be set.
pub fn load_str_with(
    text: &str,
    source_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: Secrets,
) -> Result<LoadedConfig, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        source_name: source_name.to_string(),
        problems,
    };
    let locator = Locator::new(text);

    let (parsed, mut problems) = super::parse::parse(text, &locator);
    let Some(config) = parsed else {
        sort_by_position(&mut problems);
        return Err(fail(problems));
    };

    for mut p in validate::validate(&config, env) {
        if secrets == Secrets::Optional && p.unset_env.is_some() {
            continue;
        }
        if p.location.is_none() {
            p.location = locator.locate(&p.path);
        }
        problems.push(p);
    }

    sort_by_position(&mut problems);
    if problems.iter().any(Problem::is_error) {
        return Err(fail(problems));
    }
    Ok(LoadedConfig {
        config,
        source_name: source_name.to_string(),
        warnings: problems,
    })
}

/// Report in file order; problems without a position last.
fn sort_by_position(problems: &mut [Problem]) {
    problems.sort_by_key(|p| {
        p.location
            .map(|l| (l.line, l.col))
            .unwrap_or((usize::MAX, 0))
    });
}

/// Renders a serde_ignored path as `a.b[2].c`.
pub(super) fn format_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", format_path(parent)),
        Path::Map { parent, key } => {
            let p = format_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => format_path(parent),
    }
}

/// Deserializes a connector's or source's own settings table into `T`,
/// reporting every unknown key and the first type error by key path
/// (relative to the table).
pub fn parse_settings<T: for<'de> Deserialize<'de>>(
    table: &toml::Table,
) -> Result<T, Vec<Problem>> {
    let mut unknown = Vec::new();
    let value = toml::Value::Table(table.clone());
    let result: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut |path| {
            unknown.push(format_path(&path))
        }));
    let mut problems: Vec<Problem> = unknown
        .into_iter()
        .map(|k| Problem::error(k, "unknown key"))
        .collect();
    match result {
        Ok(v) if problems.is_empty() => Ok(v),
        Ok(_) => Err(problems),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            problems.push(Problem::error(path, e.into_inner().to_string()));
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn embedded_default_is_valid() {
        let loaded = load_str(DEFAULT_CONFIG, "<embedded default>", &no_env).unwrap();
        assert!(loaded.config.forms.contains_key("contact"));
        assert_eq!(loaded.config.server.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn trusted_proxies_take_addresses_and_cidr_ranges() {
        let text = "[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"2001:db8::/32\", \"::ffff:192.0.2.1\"]\n";
        let server = load_str(text, "t.toml", &no_env).unwrap().config.server;
        let shown: Vec<String> = server
            .trusted_proxies
            .iter()
            .map(|r| r.0.to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "127.0.0.1/32",
                "10.0.0.0/8",
                "2001:db8::/32",
                "192.0.2.1/32"
            ]
        );
        for bad in ["10.0.0.0/33", "not-an-ip", "10.0.0.1/"] {
            let text = format!("[server]\ntrusted_proxies = [\"{bad}\"]\n");
            let err = load_str(&text, "t.toml", &no_env).unwrap_err();
            let rendered: Vec<String> = err.problems.iter().map(|p| p.render("t.toml")).collect();
            assert!(
                rendered
                    .iter()
                    .any(|r| r.starts_with("t.toml:2:") && r.contains("invalid proxy address")),
                "{bad}: {rendered:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_all_reported_with_positions() {
        let text = "[server]\nlisten = \"127.0.0.1:9\"\nlisen = 1\n\n[storage]\nurll = \"x\"\n";
        let err = load_str(text, "t.toml", &no_env).unwrap_err();
        let rendered: Vec<String> = err.problems.iter().map(|p| p.render("t.toml")).collect();
        assert!(
            rendered.contains(&"t.toml:3:1: error: server.lisen: unknown key".to_string()),
            "{rendered:?}"
        );
        assert!(
            rendered.contains(&"t.toml:6:1: error: storage.urll: unknown key".to_string()),
            "{rendered:?}"
        );
    }

    #[test]
    fn privacy_keys_parse_and_validate() {
        let d = load_str("", "t.toml", &no_env).unwrap().config.privacy;
        assert_eq!(
            d.retention.contacts.map(|c| c.get().as_secs()),
            Some(3 * 365 * 86_400)
        );
        let purposes: Vec<&str> = d.unsubscribe_withdraws.iter().map(|p| p.as_str()).collect();
        assert_eq!(purposes, ["marketing_email", "sms"]);
        let text = "[privacy]\nunsubscribe_withdraws = [\"sms\"]\n[privacy.retention]\ncontacts = \"off\"\ninterval = \"10m\"\n";
        let p = load_str(text, "t.toml", &no_env).unwrap().config.privacy;
        assert!(p.retention.contacts.is_none());
        assert_eq!(p.retention.interval.get().as_secs(), 600);
        assert_eq!(p.unsubscribe_withdraws.len(), 1);
        let y = "[privacy.retention]\ncontacts = \"2y\"\n";
        assert!(
            load_str(y, "t.toml", &no_env)
                .unwrap()
                .config
                .privacy
                .retention
                .contacts
                .is_some()
        );
        for bad in [
            "[privacy.retention]\ncontacts = \"never\"\n",
            "[privacy.retention]\ninterval = \"1ms\"\n",
            "[privacy]\nunsubscribe_withdraws = [\"Bad Name\"]\n",
        ] {
            assert!(load_str(bad, "t.toml", &no_env).is_err(), "{bad}");
        }
    }

    #[test]
    fn source_body_limits_are_between_1kib_and_10mib() {
        let env = |name: &str| (name == "T").then(|| "token".to_string());
        let source = |limit: &str| {
            format!(
                "[sources.wp]\nkind = \"woodpecker\"\ntoken_env = \"T\"\nmax_body_bytes = \"{limit}\"\n"
            )
        };
        assert!(load_str(&source("4MiB"), "t.toml", &env).is_ok());
        for bad in ["512B", "11MiB"] {
            let err = load_str(&source(bad), "t.toml", &env).unwrap_err();
            assert!(
                err.problems
                    .iter()
                    .any(|p| p.path == "sources.wp.max_body_bytes"),
                "{bad}: {:?}",
                err.problems
            );
        }
    }

    #[test]
    fn type_errors_have_positions() {
        let err = load_str("[server]\nmax_body_bytes = \"lots\"\n", "t.toml", &no_env).unwrap_err();
        let p = &err.problems[0];
        assert_eq!(p.location.map(|l| l.line), Some(2));
        assert!(p.message.contains("invalid size"), "{}", p.message);
    }

    #[test]
    fn settings_tables_report_unknown_keys_and_types() {
        #[derive(Deserialize, Debug)]
        struct S {
            #[allow(dead_code)]
            path: String,
            #[allow(dead_code)]
            #[serde(default)]
            n: u32,
        }
        let t: toml::Table = toml::from_str("path = \"x\"\nextra = 1").unwrap();
        let errs = parse_settings::<S>(&t).unwrap_err();
        assert_eq!(errs[0].path, "extra");
        let t: toml::Table = toml::from_str("path = \"x\"\nn = \"seven\"").unwrap();
        let errs = parse_settings::<S>(&t).unwrap_err();
        assert_eq!(errs[0].path, "n");
        let t: toml::Table = toml::from_str("n = 1").unwrap();
        let errs = parse_settings::<S>(&t).unwrap_err();
        assert!(errs[0].message.contains("missing field `path`"), "{errs:?}");
    }
}
