//! The command line: `leadrelay init | serve | check | healthcheck | migrate |
//! simulate | events | deliveries | dlq | sources | keys | privacy | sync | config |
//! fake | version`.

mod fake;
mod health;
mod init;
pub(crate) mod inspect;
mod keys;
pub(crate) mod output;
mod serve;
mod simulate;
mod sources;
mod sync;
mod timers;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::app::Role;
use crate::config::{self, LoadedConfig, Secrets};
use crate::telemetry::{self, LogFormat};
use output::{Level, errln, out, outln};

/// The file used when neither `--config` nor `LEADRELAY_CONFIG` is given and
/// it exists in the working directory (what `leadrelay init` writes).
pub const DEFAULT_CONFIG_FILE: &str = "leadrelay.toml";

#[derive(Debug, Parser)]
#[command(name = "leadrelay", version, about = "Self-hosted lead and sales-event integration engine", long_about = None)]
pub struct Cli {
    /// Configuration file (default: ./leadrelay.toml when it exists, else the
    /// embedded configuration; for `init`, the file to write).
    #[arg(long, short = 'c', global = true, env = "LEADRELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starter ./leadrelay.toml (or --config PATH): the embedded
    /// configuration, commented; --fake VENDOR points it at `leadrelay fake`.
    Init(init::InitArgs),
    /// Run the server and the delivery workers.
    Serve(ServeArgs),
    /// Validate the configuration and test each destination's credentials.
    Check(CheckArgs),
    /// Exit 0 when the server answers ready on /readyz, 1 otherwise (for
    /// container health checks; no curl needed).
    Healthcheck(health::HealthArgs),
    /// Apply database migrations and exit.
    Migrate(StorageArgs),
    /// Show what leadrelay would do with one event (routes, consent, mapped
    /// payloads, score, owner) without storing or sending anything.
    Simulate(simulate::SimulateArgs),
    /// Inspect stored events.
    #[command(subcommand)]
    Events(inspect::EventsCommand),
    /// Inspect deliveries and their attempts.
    #[command(subcommand)]
    Deliveries(inspect::DeliveriesCommand),
    /// Dead letters: list, show, replay, discard.
    #[command(subcommand)]
    Dlq(inspect::DlqCommand),
    /// Handoff and SLA timers: what is due when, and what firing did.
    #[command(subcommand)]
    Timers(timers::TimersCommand),
    /// Inbound vendor webhooks: kinds, configured sources, vendor registration, tokens.
    #[command(subcommand)]
    Sources(sources::SourcesCommand),
    /// API keys for the admin API and the dashboard: create, list, revoke.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Export or erase everything held about a person.
    #[command(subcommand)]
    Privacy(keys::PrivacyCommand),
    /// CRM record syncs: backfill existing records, show health.
    #[command(subcommand)]
    Sync(sync::SyncCommand),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Serve a local fake of a vendor (hubspot, pipedrive, salesforce, slack,
    /// twilio, google, lemlist, smartlead, marketing_cloud, apollo, salesloft,
    /// woodpecker, replyio, mailshake) and print how to point leadrelay at it.
    Fake(fake::FakeArgs),
    /// Print the version.
    Version,
}

#[derive(Debug, Args, Clone, Default)]
pub struct StorageArgs {
    /// Storage URL (overrides `storage.url`), e.g. sqlite://./leadrelay.db.
    #[arg(long, env = "DATABASE_URL")]
    pub storage_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides `server.listen`).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// What this process runs: api (ingest only), worker (delivery only) or all.
    #[arg(long, value_enum, default_value_t = Role::All)]
    pub role: Role,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Only validate the file; do not contact destinations.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the embedded default configuration.
    Default,
}

/// Reads the environment (secrets, `enabled = "auto"` switches).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The configuration file to read: `--config`/`LEADRELAY_CONFIG`, else
/// ./leadrelay.toml when it exists, else none (the embedded default).
pub fn config_path(given: Option<&PathBuf>) -> Option<PathBuf> {
    given.cloned().or_else(|| {
        let p = Path::new(DEFAULT_CONFIG_FILE);
        p.is_file().then(|| p.to_path_buf())
    })
}

/// Loads the configuration (see [`config_path`]), printing every problem on
/// failure and every warning.
pub fn load_config(path: Option<&PathBuf>) -> Result<LoadedConfig, ExitCode> {
    load_config_with(path, Secrets::Required, true)
}

/// For commands that only read or edit the store: destinations' secrets
/// need not be set, and warnings about delivery (switched-off destinations,
/// unrouted sources) are not theirs to report; errors still are.
pub fn load_config_for_store(path: Option<&PathBuf>) -> Result<LoadedConfig, ExitCode> {
    load_config_with(path, Secrets::Optional, false)
}

pub(super) fn load_config_with(
    path: Option<&PathBuf>,
    secrets: Secrets,
    show_warnings: bool,
) -> Result<LoadedConfig, ExitCode> {
    let result = match config_path(path) {
        Some(p) => config::load_file_with(&p, &process_env, secrets),
        None => config::load_str_with(
            config::DEFAULT_CONFIG,
            "<embedded default>",
            &process_env,
            secrets,
        ),
    };
    match result {
        Ok(loaded) => {
            if show_warnings {
                for w in &loaded.warnings {
                    output::message(Level::Warning, &w.render(&loaded.source_name));
                }
            }
            Ok(loaded)
        }
        Err(e) => {
            output::message(Level::Error, &e.to_string());
            Err(ExitCode::FAILURE)
        }
    }
}

/// Why a listener could not be opened, and what to do about it.
pub(crate) fn listen_error(addr: &str, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let hint = match e.kind() {
        ErrorKind::AddrInUse => {
            " — another process is using this port: stop it, or choose another address with \
             --listen (e.g. --listen 127.0.0.1:8081)"
        }
        ErrorKind::PermissionDenied => {
            " — ports below 1024 need privileges: choose a port above 1024 with --listen"
        }
        ErrorKind::AddrNotAvailable => {
            " — no network interface has this address: use --listen 127.0.0.1:PORT or 0.0.0.0:PORT"
        }
        _ => "",
    };
    format!("cannot listen on {addr}: {e}{hint}")
}

/// Whether `--log-format json` is on the command line (read before clap,
/// so that even a usage error is a JSON record).
fn json_requested(args: &[std::ffi::OsString]) -> bool {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    args.iter().enumerate().any(|(i, a)| {
        a == "--log-format=json"
            || (a == "--log-format" && args.get(i + 1).is_some_and(|v| v == "json"))
    })
}

pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let usage_only = matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if json_requested(&args) && !usage_only {
                telemetry::init(LogFormat::Json);
                output::set_json(true);
                let text = e.render().to_string();
                tracing::error!("{}", text.trim());
                return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
            }
            // clap writes help to stdout and errors to stderr, without
            // panicking on a closed pipe.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    telemetry::init(cli.log_format);
    output::set_json(cli.log_format == LogFormat::Json);
    crate::init_crypto();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            errln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            outln!("leadrelay {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Default) => {
            out!("{}", config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Command::Init(args) => init::init(cli.config.as_ref(), args),
        Command::Healthcheck(args) => health::healthcheck(cli.config.as_ref(), args).await,
        Command::Serve(args) => serve::serve(cli.config.as_ref(), args).await,
        Command::Check(args) => serve::check(cli.config.as_ref(), args).await,
        Command::Migrate(args) => serve::migrate(cli.config.as_ref(), args).await,
        Command::Simulate(args) => simulate::simulate(cli.config.as_ref(), args).await,
        Command::Events(cmd) => inspect::events(cli.config.as_ref(), cmd).await,
        Command::Deliveries(cmd) => inspect::deliveries(cli.config.as_ref(), cmd).await,
        Command::Dlq(cmd) => inspect::dlq(cli.config.as_ref(), cmd).await,
        Command::Timers(cmd) => timers::timers(cli.config.as_ref(), cmd).await,
        Command::Sources(cmd) => sources::sources(cli.config.as_ref(), cmd).await,
        Command::Keys(cmd) => keys::keys(cli.config.as_ref(), cmd).await,
        Command::Privacy(cmd) => keys::privacy(cli.config.as_ref(), cmd).await,
        Command::Fake(args) => fake::fake(args).await,
        Command::Sync(cmd) => sync::sync(cli.config.as_ref(), cmd).await,
    }
}
