//! The command line: `leadrelay serve | check | migrate | simulate | events |
//! deliveries | dlq | sources | keys | privacy | config | fake | version`.

mod fake;
mod inspect;
mod keys;
mod serve;
mod simulate;
mod sources;
mod timers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::app::Role;
use crate::config::{self, LoadedConfig};
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(name = "leadrelay", version, about = "Self-hosted lead and sales-event integration engine", long_about = None)]
pub struct Cli {
    /// Configuration file (default: the embedded configuration).
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
    /// Run the server and the delivery workers.
    Serve(ServeArgs),
    /// Validate the configuration and test each destination's credentials.
    Check(CheckArgs),
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
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Serve a local fake of a vendor (hubspot, pipedrive, salesforce, slack,
    /// twilio, google) and print how to point leadrelay at it.
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

/// Loads the configuration file (or the embedded default), printing every
/// problem on failure.
pub fn load_config(path: Option<&PathBuf>) -> Result<LoadedConfig, ExitCode> {
    let result = match path {
        Some(p) => config::load_file(p, &process_env),
        None => config::load_str(config::DEFAULT_CONFIG, "<embedded default>", &process_env),
    };
    match result {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{}", w.render(&loaded.source_name));
            }
            Ok(loaded)
        }
        Err(e) => {
            eprint!("{e}");
            Err(ExitCode::FAILURE)
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    crate::init_crypto();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            println!("leadrelay {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{}", config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
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
    }
}
