//! `leadrelay init`: writes a starter `leadrelay.toml` — the embedded
//! configuration with its comments — so a newcomer has a file to read and
//! change. `--fake VENDOR` points it at `leadrelay fake VENDOR` while
//! keeping the `contact` form and the backup, so the quickstart needs no
//! hand merge.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use toml_edit::{DocumentMut, Item, Table};

use super::fake::Vendor;
use super::output::{errln, outln};
use super::{DEFAULT_CONFIG_FILE, process_env};
use crate::config::{self, Secrets};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write (default: --config, else ./leadrelay.toml).
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Point the file at `leadrelay fake VENDOR` (its URL and credentials'
    /// env vars), keeping the contact form and the backup.
    #[arg(long, value_enum, value_name = "VENDOR")]
    pub fake: Option<Vendor>,
    /// The fake's URL when it does not listen on its default address
    /// (`leadrelay fake VENDOR --listen ADDR`).
    #[arg(long, value_name = "URL", requires = "fake")]
    pub fake_url: Option<String>,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// The first lines of the written file (in place of the embedded file's own
/// header, which explains when the embedded copy is used).
const HEADER: &str = "\
# leadrelay configuration, written by `leadrelay init`.
#
# leadrelay reads ./leadrelay.toml when started in this directory (or the
# file given with --config or LEADRELAY_CONFIG). After a change, run
# `leadrelay check`: it reports every problem with its line. Secrets never go
# in this file: a destination names the environment variable that holds its
# secret (token_env, url_env …), and `enabled = \"auto\"` switches it on when
# that variable is set.
";

/// The starter configuration text for `vendor`'s fake at `fake_url`.
pub fn starter(fake: Option<(Vendor, &str)>) -> Result<String, String> {
    let body = config::DEFAULT_CONFIG
        .split_once("\n\n")
        .map_or(config::DEFAULT_CONFIG, |(_, rest)| rest);
    let text = format!("{HEADER}\n{body}");
    let Some((vendor, url)) = fake else {
        return Ok(text);
    };
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("the embedded configuration does not parse: {e}"))?;
    let setup = vendor.setup(url);
    let destinations = doc
        .entry("destinations")
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .ok_or("[destinations] is not a table")?;
    destinations.set_implicit(true);
    let existed = destinations.contains_key(setup.destination);
    let table = destinations
        .entry(setup.destination)
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .ok_or("the destination is not a table")?;
    let what = if existed { "On" } else { "Added, on" };
    table.decor_mut().set_prefix(format!(
        "\n# {what} at the local fake `leadrelay fake {}` serves at {url}.\n\
         # For the real service: remove base_url (login_url for Salesforce) and\n\
         # allow_private_networks, and export the real credentials.\n",
        vendor.name()
    ));
    for (key, value) in setup.settings {
        table.insert(key, Item::Value(value));
    }
    // The route that sends every event sends to it too.
    if let Some(routes) = doc.get_mut("routes").and_then(Item::as_array_of_tables_mut)
        && let Some(route) = routes.iter_mut().next()
        && let Some(list) = route.get_mut("destinations").and_then(Item::as_array_mut)
        && !list.iter().any(|v| v.as_str() == Some(setup.destination))
    {
        list.push(setup.destination);
    }
    Ok(doc.to_string())
}

pub fn init(config_path: Option<&PathBuf>, args: InitArgs) -> ExitCode {
    let path = args
        .output
        .clone()
        .or_else(|| config_path.cloned())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
    let url = args
        .fake
        .map(|v| args.fake_url.clone().unwrap_or_else(|| v.default_url()));
    if let Some(u) = &url
        && url::Url::parse(u).map_or(true, |p| !matches!(p.scheme(), "http" | "https"))
    {
        errln!("--fake-url {u:?}: write the fake's URL, e.g. http://127.0.0.1:8091");
        return ExitCode::FAILURE;
    }
    let url = url.map(|u| u.trim_end_matches('/').to_string());
    let text = match starter(args.fake.zip(url.as_deref())) {
        Ok(t) => t,
        Err(e) => {
            errln!("cannot write the starter configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Never write a file `check` would refuse.
    if let Err(e) = config::load_str_with(
        &text,
        &path.display().to_string(),
        &process_env,
        Secrets::Optional,
    ) {
        errln!("the starter configuration is invalid (a bug in leadrelay):\n{e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = write(&path, &text, args.force) {
        return e;
    }
    let config_arg = if path == Path::new(DEFAULT_CONFIG_FILE) {
        String::new()
    } else {
        format!(" --config {}", path.display())
    };
    outln!("wrote {}", path.display());
    outln!("Next:");
    if let Some(vendor) = args.fake {
        let setup = vendor.setup(url.as_deref().unwrap_or_default());
        for e in setup.exports() {
            outln!("  {e}");
        }
    }
    outln!("  leadrelay check{config_arg} --offline");
    outln!("  leadrelay serve{config_arg}");
    outln!(
        "  curl -i http://127.0.0.1:8080/v1/forms/contact -H 'content-type: application/json' -d '{{\"email\":\"ada@example.com\",\"consent\":\"on\"}}'"
    );
    ExitCode::SUCCESS
}

/// Writes `text` to `path`; an existing file is kept unless `force`.
fn write(path: &Path, text: &str, force: bool) -> Result<(), ExitCode> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let result = options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()));
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            errln!(
                "{} already exists: leaving it as it is (add --force to replace it, or -o PATH to write elsewhere)",
                path.display()
            );
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            errln!("cannot write {}: {e}", path.display());
            Err(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn the_plain_starter_is_the_embedded_configuration() {
        let text = starter(None).unwrap();
        assert!(text.starts_with("# leadrelay configuration, written by `leadrelay init`."));
        let loaded = config::load_str(&text, "t.toml", &|_| None).unwrap();
        assert!(loaded.config.forms.contains_key("contact"));
        assert!(loaded.config.destinations.contains_key("backup"));
    }

    /// Every fake: the written file keeps the form and the backup, routes to
    /// the fake, and is valid with exactly the exports printed.
    #[test]
    fn every_fake_starter_is_valid_with_its_exports() {
        for vendor in Vendor::value_variants() {
            let url = "http://127.0.0.1:9";
            let text = starter(Some((*vendor, url))).unwrap();
            let setup = vendor.setup(url);
            let env = |name: &str| {
                setup
                    .env
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
            };
            let loaded = config::load_str(&text, "t.toml", &env)
                .unwrap_or_else(|e| panic!("{vendor:?}: {e}\n{text}"));
            let c = &loaded.config;
            assert!(c.forms.contains_key("contact"), "{vendor:?}");
            assert!(c.destinations.contains_key("backup"), "{vendor:?}");
            let enabled = crate::delivery::enabled_destinations(c, &env);
            assert!(enabled.contains(setup.destination), "{vendor:?}");
            assert!(enabled.contains("backup"), "{vendor:?}");
            assert!(
                c.routes[0]
                    .destinations
                    .iter()
                    .any(|d| d == setup.destination),
                "{vendor:?}"
            );
            assert!(text.contains(url), "{vendor:?}");
            // Without the exports, the fake's destination is reported (not
            // silently off).
            if c.destinations[setup.destination].enabled == config::Enabled::On {
                assert!(
                    config::load_str(&text, "t.toml", &|_| None).is_err(),
                    "{vendor:?}"
                );
            }
        }
    }
}
