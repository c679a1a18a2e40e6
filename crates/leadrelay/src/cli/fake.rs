//! `leadrelay fake <vendor>`: serves a local fake of a vendor's API (the same
//! fakes the tests use) and prints how to point leadrelay at it, so people
//! can try leadrelay's connectors without vendor accounts.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use leadrelay_fakes::{google, hubspot, lemlist, pipedrive, salesforce, slack, twilio};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Vendor {
    Hubspot,
    Pipedrive,
    Salesforce,
    Slack,
    Twilio,
    Google,
    Lemlist,
}

impl Vendor {
    fn default_listen(self) -> &'static str {
        match self {
            Vendor::Hubspot => "127.0.0.1:8091",
            Vendor::Pipedrive => "127.0.0.1:8092",
            Vendor::Salesforce => "127.0.0.1:8093",
            Vendor::Slack => "127.0.0.1:8094",
            Vendor::Twilio => "127.0.0.1:8095",
            Vendor::Google => "127.0.0.1:8096",
            Vendor::Lemlist => "127.0.0.1:8097",
        }
    }
}

#[derive(Debug, Args)]
pub struct FakeArgs {
    /// Which vendor to fake.
    #[arg(value_enum)]
    pub vendor: Vendor,
    /// Address to listen on (default: 127.0.0.1:8091 … 8097 by vendor; port 0 picks one).
    #[arg(long)]
    pub listen: Option<String>,
}

/// How to point leadrelay at a fake: a configuration snippet and the env vars.
fn instructions(vendor: Vendor, base: &str) -> String {
    let crm = |name: &str, settings: &str, env: &[(&str, &str)]| {
        let exports: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("  export {k}='{v}'"))
            .collect();
        format!(
            "Point leadrelay at it (leadrelay.toml):\n\n  [destinations.{name}]\n  connector = \"{name}\"\n{settings}  allow_private_networks = true\n  purposes = [\"crm\"]\n\n  [[routes]]\n  name = \"{name}\"\n  events = [\"*\"]\n  destinations = [\"{name}\"]\n\nthen, in the shell that runs leadrelay:\n\n{}\n  leadrelay check --config leadrelay.toml && leadrelay serve --config leadrelay.toml\n",
            exports.join("\n")
        )
    };
    match vendor {
        Vendor::Hubspot => crm(
            "hubspot",
            &format!("  base_url = \"{base}\"\n  token_env = \"HUBSPOT_ACCESS_TOKEN\"\n"),
            &[(
                "HUBSPOT_ACCESS_TOKEN",
                hubspot::HubSpotConfig::DEFAULT_TOKEN,
            )],
        ),
        Vendor::Pipedrive => crm(
            "pipedrive",
            &format!("  base_url = \"{base}\"\n  token_env = \"PIPEDRIVE_API_TOKEN\"\n"),
            &[(
                "PIPEDRIVE_API_TOKEN",
                pipedrive::PipedriveConfig::DEFAULT_TOKEN,
            )],
        ),
        Vendor::Salesforce => crm(
            "salesforce",
            &format!("  login_url = \"{base}\"\n"),
            &[
                (
                    "SALESFORCE_CLIENT_ID",
                    salesforce::SalesforceConnectedApp::DEFAULT_CLIENT_ID,
                ),
                (
                    "SALESFORCE_CLIENT_SECRET",
                    salesforce::SalesforceConnectedApp::DEFAULT_CLIENT_SECRET,
                ),
                (
                    "SALESFORCE_REFRESH_TOKEN",
                    salesforce::SalesforceConfig::DEFAULT_REFRESH_TOKEN,
                ),
            ],
        ),
        Vendor::Lemlist => crm(
            "lemlist",
            &format!(
                "  base_url = \"{base}\"\n  campaign_id = \"{}\"\n",
                lemlist::LemlistConfig::DEFAULT_CAMPAIGN
            ),
            &[("LEMLIST_API_KEY", lemlist::LemlistConfig::DEFAULT_API_KEY)],
        ),
        Vendor::Slack | Vendor::Twilio | Vendor::Google => format!(
            "Point the connector's `base_url` at {base} (with allow_private_networks = true) and set its credentials env vars to the values above.\n"
        ),
    }
}

pub async fn fake(args: FakeArgs) -> ExitCode {
    let listen = args
        .listen
        .clone()
        .unwrap_or_else(|| args.vendor.default_listen().to_string());
    // Each fake has its own type; all have `base_url` and `credentials_banner`.
    macro_rules! start {
        ($fake:ty) => {
            <$fake>::start_on(Default::default(), &listen)
                .await
                .map(|f| {
                    let base = f.base_url();
                    (
                        f.credentials_banner(&base),
                        base,
                        Box::new(f) as Box<dyn Send>,
                    )
                })
        };
    }
    let started = match args.vendor {
        Vendor::Hubspot => start!(hubspot::FakeHubSpot),
        Vendor::Pipedrive => start!(pipedrive::FakePipedrive),
        Vendor::Salesforce => start!(salesforce::FakeSalesforce),
        Vendor::Slack => start!(slack::FakeSlack),
        Vendor::Twilio => start!(twilio::FakeTwilio),
        Vendor::Google => start!(google::FakeGoogle),
        Vendor::Lemlist => start!(lemlist::FakeLemlist),
    };
    let (banner, base, server) = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{banner}");
    println!("{}", instructions(args.vendor, &base));
    println!("Every record it receives is kept in memory until you stop it (Ctrl-C).");
    super::serve::wait_for_signal().await;
    drop(server);
    ExitCode::SUCCESS
}
