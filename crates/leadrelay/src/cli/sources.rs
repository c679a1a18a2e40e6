//! `leadrelay sources kinds | list | connect | secret`: what each vendor
//! needs on its side, the URL to give it, registering our webhook through the
//! vendor's API where it has one, and fresh tokens for shared-token sources.
//!
//! Secrets are read from the environment only. URLs that carry a token are
//! printed with `token=${VAR}` (or `***` for what a vendor returns) unless
//! `--show-secrets` asks for the real value.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use leadrelay_sources::connect::{self, CONNECTABLE, ConnectError, YESWARE};
use serde_json::{Value, json};

use super::output::{errln, outln};
use super::{load_config, process_env};
use crate::config::SourceConfig;
use crate::sources::{hook_url, settings_json, token_env};

#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Every source kind: how it authenticates and how to set it up on the vendor's side.
    Kinds(KindsArgs),
    /// Configured sources: the URL to give each vendor, and the webhooks the vendor has registered.
    List(ListArgs),
    /// Register our webhook through the vendor's API (mailshake, smartlead, lemlist, salesloft, calendly).
    Connect(ConnectArgs),
    /// Print a fresh random token for a source's `token_env` (or another webhook secret).
    Secret,
}

#[derive(Debug, Args)]
pub struct KindsArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The URL vendors reach leadrelay at (default: `server.public_url`).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Do not ask the vendors' APIs for their registered webhooks.
    #[arg(long)]
    pub offline: bool,
    /// Print URL tokens instead of `${VAR}` placeholders.
    #[arg(long)]
    pub show_secrets: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The configured source (`[sources.NAME]`).
    pub source: String,
    /// The public URL vendors reach leadrelay at, e.g. https://leads.example.com
    /// (default: `server.public_url`).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Print the registered URLs with their tokens.
    #[arg(long)]
    pub show_secrets: bool,
}

pub async fn sources(config_path: Option<&PathBuf>, cmd: SourcesCommand) -> ExitCode {
    match cmd {
        SourcesCommand::Kinds(args) => kinds(&args),
        SourcesCommand::List(args) => list(config_path, &args).await,
        SourcesCommand::Connect(args) => connect_source(config_path, &args).await,
        SourcesCommand::Secret => secret(),
    }
}

fn kinds(args: &KindsArgs) -> ExitCode {
    if args.json {
        let kinds: Vec<Value> = leadrelay_sources::kind_infos()
            .map(|i| {
                json!({
                    "kind": i.name,
                    "title": i.title,
                    "auth": i.auth,
                    "setup": i.setup,
                    "connect": CONNECTABLE.contains(&i.name),
                    "largest_request": i.largest_request,
                    "max_body_bytes": i.max_body_bytes,
                    "docs": i.docs.iter().map(|(title, url)| json!({"title": title, "url": url})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let out = json!({
            "kinds": kinds,
            "without_webhooks": [{"vendor": "yesware", "alternative": YESWARE}],
        });
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    for i in leadrelay_sources::kind_infos() {
        outln!("{} — {}", i.name, i.title);
        print_wrapped("auth", i.auth);
        print_wrapped("setup", i.setup);
        print_wrapped(
            "body limit",
            &format!(
                "{} KiB by default ({}); max_body_bytes overrides it",
                i.max_body_bytes / 1024,
                i.largest_request
            ),
        );
        for (title, url) in i.docs {
            print_wrapped("docs", &format!("{title}: {url}"));
        }
        if CONNECTABLE.contains(&i.name) {
            print_wrapped(
                "connect",
                "`leadrelay sources connect SOURCE --public-url URL` registers the webhook through the vendor's API",
            );
        }
        outln!();
    }
    outln!("yesware — no webhooks");
    print_wrapped("instead", YESWARE);
    outln!();
    outln!(
        "Every source answers at POST <public_url>/v1/hooks/<source>. Full event mappings: the book, Reference > Sources (docs/src/reference/sources/)."
    );
    ExitCode::SUCCESS
}

/// Prints `label: text`, wrapped at 100 columns and indented.
fn print_wrapped(label: &str, text: &str) {
    let indent = " ".repeat(label.len() + 4);
    let mut line = format!("  {label}: ");
    let mut fresh = true;
    for word in text.split_whitespace() {
        if !fresh && line.len() + 1 + word.len() > 100 {
            outln!("{line}");
            line = indent.clone();
            fresh = true;
        }
        if !fresh {
            line.push(' ');
        }
        line.push_str(word);
        fresh = false;
    }
    outln!("{line}");
}

/// The public URL to use: the flag, else the configured one, checked.
fn public_url(flag: Option<&String>, configured: String) -> Result<String, String> {
    let u = flag.cloned().unwrap_or(configured);
    match url::Url::parse(&u) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            Ok(u.trim_end_matches('/').to_string())
        }
        _ => Err(format!(
            "{u:?} is not an http(s) URL; give the URL vendors reach leadrelay at, e.g. --public-url https://leads.example.com"
        )),
    }
}

/// The URL to paste into the vendor: the hook URL, with `?token=` for the
/// kinds that authenticate with a shared URL token.
fn paste_url(public: &str, name: &str, source: &SourceConfig, show_secrets: bool) -> String {
    let base = hook_url(public, name);
    match token_env(source) {
        Some(var) => match process_env(var).filter(|_| show_secrets) {
            Some(token) => match url::Url::parse(&base) {
                Ok(mut u) => {
                    u.query_pairs_mut().append_pair("token", &token);
                    u.to_string()
                }
                Err(_) => base,
            },
            None => format!("{base}?token=${{{var}}}"),
        },
        None => base,
    }
}

/// Hides `token=` values in a URL a vendor returned.
fn redact_url(u: &str, show_secrets: bool) -> String {
    if show_secrets {
        return u.to_string();
    }
    match url::Url::parse(u) {
        Ok(mut parsed) if parsed.query().is_some() => {
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "token" {
                        "***".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
            parsed.to_string().replace("%2A%2A%2A", "***")
        }
        _ => u.to_string(),
    }
}

/// Whether the source's settings name an API credential, so the vendor's
/// registered webhooks can be listed.
fn has_api_credentials(source: &SourceConfig) -> bool {
    source.settings.contains_key("api_key_env") || source.settings.contains_key("api_token_env")
}

async fn list(config_path: Option<&PathBuf>, args: &ListArgs) -> ExitCode {
    let Ok(loaded) = load_config(config_path) else {
        return ExitCode::FAILURE;
    };
    let config = loaded.config;
    let public = match public_url(args.public_url.as_ref(), config.server.public_url()) {
        Ok(u) => u,
        Err(e) => {
            errln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows = Vec::new();
    for (name, source) in &config.sources {
        let info = leadrelay_sources::describe(&source.kind);
        // Kinds without a subscription API (and Mailshake, which cannot list)
        // answer without a request, saying where their webhooks are made.
        let asks_vendor = CONNECTABLE.contains(&source.kind.as_str()) && source.kind != "mailshake";
        let remote: Value = if args.offline {
            Value::Null
        } else if asks_vendor && !has_api_credentials(source) {
            let needs = if source.kind == "calendly" {
                "api_token_env and organization"
            } else {
                "api_key_env"
            };
            json!({"note": format!("set {needs} to list and register the vendor's webhooks")})
        } else {
            match connect::list(&source.kind, &settings_json(source), &process_env).await {
                Ok(hooks) => Value::Array(
                    hooks
                        .iter()
                        .map(|h| {
                            json!({
                                "id": h.id,
                                "url": redact_url(&h.url, args.show_secrets),
                                "events": h.events,
                                "active": h.active,
                            })
                        })
                        .collect(),
                ),
                Err(ConnectError::Unsupported(m)) => json!({"note": m}),
                Err(e) => json!({"error": e.to_string()}),
            }
        };
        rows.push(json!({
            "source": name,
            "kind": source.kind,
            "auth": info.map(|i| i.auth),
            "url": paste_url(&public, name, source, args.show_secrets),
            "remote": remote,
        }));
    }
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(rows)).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    if rows.is_empty() {
        outln!(
            "no sources configured: add a [sources.NAME] table with a kind (see `leadrelay sources kinds`)"
        );
        return ExitCode::SUCCESS;
    }
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_header(vec!["source", "kind", "URL to give the vendor"]);
    for r in &rows {
        t.add_row(vec![
            r["source"].as_str().unwrap_or_default(),
            r["kind"].as_str().unwrap_or_default(),
            r["url"].as_str().unwrap_or_default(),
        ]);
    }
    outln!("{t}");
    for r in &rows {
        let remote = &r["remote"];
        if remote.is_null() {
            continue;
        }
        let label = format!(
            "{} ({})",
            r["source"].as_str().unwrap_or_default(),
            r["kind"].as_str().unwrap_or_default()
        );
        match remote {
            Value::Array(hooks) => {
                outln!(
                    "{label}: {} webhook(s) registered at the vendor",
                    hooks.len()
                );
                for h in hooks {
                    let events: Vec<&str> = h["events"]
                        .as_array()
                        .map(|e| e.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let state = match h["active"].as_bool() {
                        Some(true) => " active",
                        Some(false) => " INACTIVE",
                        None => "",
                    };
                    outln!(
                        "  {} {} [{}]{state}",
                        h["id"].as_str().unwrap_or_default(),
                        h["url"].as_str().unwrap_or_default(),
                        if events.is_empty() {
                            "all events".to_string()
                        } else {
                            events.join(", ")
                        }
                    );
                }
            }
            other => {
                let text = other["error"]
                    .as_str()
                    .map(|e| format!("cannot list the vendor's webhooks: {e}"))
                    .or_else(|| other["note"].as_str().map(String::from))
                    .unwrap_or_default();
                outln!("{label}: {text}");
            }
        }
    }
    ExitCode::SUCCESS
}

async fn connect_source(config_path: Option<&PathBuf>, args: &ConnectArgs) -> ExitCode {
    let Ok(loaded) = load_config(config_path) else {
        return ExitCode::FAILURE;
    };
    let config = loaded.config;
    let Some(source) = config.sources.get(&args.source) else {
        let known: Vec<&str> = config.sources.keys().map(String::as_str).collect();
        errln!(
            "there is no source named {:?} (configured: {})",
            args.source,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        return ExitCode::FAILURE;
    };
    let configured = match (&args.public_url, &config.server.public_url) {
        (None, None) => {
            errln!(
                "give --public-url: the URL the vendor can reach leadrelay at (server.public_url is not set)"
            );
            return ExitCode::FAILURE;
        }
        _ => config.server.public_url(),
    };
    let public = match public_url(args.public_url.as_ref(), configured) {
        Ok(u) => u,
        Err(e) => {
            errln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if public.starts_with("http://") {
        errln!("warning: {public} is not https; most vendors refuse plain-http webhook URLs");
    }
    let url = hook_url(&public, &args.source);
    match connect::register(&source.kind, &settings_json(source), &process_env, &url).await {
        Ok(regs) => {
            outln!(
                "registered {} webhook(s) for {} ({}) at {url}",
                regs.len(),
                args.source,
                source.kind
            );
            for r in &regs {
                outln!(
                    "  {} {} [{}]",
                    r.vendor_id.as_deref().unwrap_or("-"),
                    redact_url(&r.url, args.show_secrets),
                    if r.events.is_empty() {
                        "all events".to_string()
                    } else {
                        r.events.join(", ")
                    }
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("cannot connect {}: {e}", args.source);
            ExitCode::FAILURE
        }
    }
}

const SECRET_HELP: &str = "\
A fresh random token (256 bits). Secrets live in environment variables, never in the
configuration file:
  1. set it in leadrelay's environment under the name your source's token_env names,
     e.g. MAILSHAKE_PUSH_TOKEN=<token> in the service's environment file;
  2. give it to the vendor in the webhook URL, .../v1/hooks/<source>?token=<token>, or as
     the X-Leadrelay-Token header (`leadrelay sources list --show-secrets` prints the URL).
It also suits the secrets you choose yourself: Calendly's signing_key_env, Salesloft's
callback_token_env, lemlist's secret_env, a generic source's signature_secret_env.
";

fn secret() -> ExitCode {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    outln!("{}", hex::encode(bytes));
    super::output::message(super::output::Level::Info, SECRET_HELP);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> SourceConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn paste_urls_carry_a_token_placeholder() {
        let s = source("kind = \"mailshake\"\ntoken_env = \"MS_TOKEN\"\n");
        assert_eq!(
            paste_url("https://leads.example.com", "ms", &s, false),
            "https://leads.example.com/v1/hooks/ms?token=${MS_TOKEN}"
        );
        let signed = source("kind = \"hubspot\"\nclient_secret_env = \"HS\"\n");
        assert_eq!(
            paste_url("https://leads.example.com/", "hs", &signed, false),
            "https://leads.example.com/v1/hooks/hs"
        );
    }

    #[test]
    fn vendor_urls_hide_tokens() {
        assert_eq!(
            redact_url("https://x.io/v1/hooks/a?token=s3cret&event=Replied", false),
            "https://x.io/v1/hooks/a?token=***&event=Replied"
        );
        assert_eq!(
            redact_url("https://x.io/v1/hooks/a?token=s3cret", true),
            "https://x.io/v1/hooks/a?token=s3cret"
        );
        assert_eq!(redact_url("not a url", false), "not a url");
    }

    #[test]
    fn public_urls_must_be_http() {
        assert!(public_url(Some(&"ftp://x".to_string()), String::new()).is_err());
        assert_eq!(
            public_url(None, "https://leads.example.com/".into()).unwrap(),
            "https://leads.example.com"
        );
    }
}
