//! `leadrelay fake <vendor>`: serves a local fake of a vendor's API (the same
//! fakes the tests use) and prints how to point leadrelay at it, so people
//! can try leadrelay's connectors without vendor accounts.

use std::process::ExitCode;

use super::output::{errln, outln};
use clap::{Args, ValueEnum};
use leadrelay_fakes::{
    apollo, google, hubspot, lemlist, mailshake, marketing_cloud, pipedrive, replyio, salesforce,
    salesloft, slack, smartlead, twilio, woodpecker,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Vendor {
    Hubspot,
    Pipedrive,
    Salesforce,
    Slack,
    Twilio,
    Google,
    Lemlist,
    Smartlead,
    #[value(name = "marketing_cloud", alias = "marketing-cloud")]
    MarketingCloud,
    Apollo,
    Salesloft,
    Woodpecker,
    Replyio,
    Mailshake,
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
            Vendor::Smartlead => "127.0.0.1:8098",
            Vendor::MarketingCloud => "127.0.0.1:8099",
            Vendor::Apollo => "127.0.0.1:8100",
            Vendor::Salesloft => "127.0.0.1:8101",
            Vendor::Woodpecker => "127.0.0.1:8102",
            Vendor::Replyio => "127.0.0.1:8103",
            Vendor::Mailshake => "127.0.0.1:8104",
        }
    }
}

#[derive(Debug, Args)]
pub struct FakeArgs {
    /// Which vendor to fake.
    #[arg(value_enum)]
    pub vendor: Vendor,
    /// Address to listen on (default: 127.0.0.1:8091 … 8104 by vendor, the
    /// URL `leadrelay init --fake` writes; port 0 picks one).
    #[arg(long)]
    pub listen: Option<String>,
}

impl Vendor {
    /// The fake's URL when it listens on its default address.
    pub fn default_url(self) -> String {
        format!("http://{}", self.default_listen())
    }

    /// The name `leadrelay fake` takes.
    pub fn name(self) -> &'static str {
        match self {
            Vendor::Hubspot => "hubspot",
            Vendor::Pipedrive => "pipedrive",
            Vendor::Salesforce => "salesforce",
            Vendor::Slack => "slack",
            Vendor::Twilio => "twilio",
            Vendor::Google => "google",
            Vendor::Lemlist => "lemlist",
            Vendor::Smartlead => "smartlead",
            Vendor::MarketingCloud => "marketing_cloud",
            Vendor::Apollo => "apollo",
            Vendor::Salesloft => "salesloft",
            Vendor::Woodpecker => "woodpecker",
            Vendor::Replyio => "replyio",
            Vendor::Mailshake => "mailshake",
        }
    }

    /// How leadrelay is pointed at this vendor's fake listening at `base`:
    /// the destination `leadrelay init --fake` writes and the env vars.
    pub fn setup(self, base: &str) -> FakeSetup {
        use toml_edit::{Array, Value};
        let s = |v: &str| Value::from(v);
        let list = |items: &[&str]| Value::Array(items.iter().copied().collect::<Array>());
        let on = Value::from(true);
        let crm = || ("purposes", list(&["crm"]));
        match self {
            Vendor::Hubspot => FakeSetup {
                destination: "hubspot",
                settings: vec![
                    ("connector", s("hubspot")),
                    ("enabled", on.clone()),
                    ("token_env", s("HUBSPOT_ACCESS_TOKEN")),
                    ("base_url", s(base)),
                    ("allow_private_networks", on),
                    crm(),
                ],
                env: vec![(
                    "HUBSPOT_ACCESS_TOKEN",
                    hubspot::HubSpotConfig::DEFAULT_TOKEN.to_string(),
                )],
                inspect: Some(format!(
                    "curl -s -H 'Authorization: Bearer {}' '{base}/crm/v3/objects/contacts?properties=email,firstname'",
                    hubspot::HubSpotConfig::DEFAULT_TOKEN
                )),
            },
            Vendor::Pipedrive => FakeSetup {
                destination: "pipedrive",
                settings: vec![
                    ("connector", s("pipedrive")),
                    ("enabled", on.clone()),
                    ("token_env", s("PIPEDRIVE_API_TOKEN")),
                    ("base_url", s(base)),
                    ("allow_private_networks", on),
                    crm(),
                ],
                env: vec![(
                    "PIPEDRIVE_API_TOKEN",
                    pipedrive::PipedriveConfig::DEFAULT_TOKEN.to_string(),
                )],
                inspect: Some(format!(
                    "curl -s -H 'x-api-token: {}' '{base}/api/v2/persons/search?term=ada@example.com&fields=email'",
                    pipedrive::PipedriveConfig::DEFAULT_TOKEN
                )),
            },
            Vendor::Salesforce => FakeSetup {
                destination: "salesforce",
                settings: vec![
                    ("connector", s("salesforce")),
                    ("login_url", s(base)),
                    ("allow_private_networks", on),
                    crm(),
                ],
                env: vec![
                    (
                        "SALESFORCE_CLIENT_ID",
                        salesforce::SalesforceConnectedApp::DEFAULT_CLIENT_ID.to_string(),
                    ),
                    (
                        "SALESFORCE_CLIENT_SECRET",
                        salesforce::SalesforceConnectedApp::DEFAULT_CLIENT_SECRET.to_string(),
                    ),
                    (
                        "SALESFORCE_REFRESH_TOKEN",
                        salesforce::SalesforceConfig::DEFAULT_REFRESH_TOKEN.to_string(),
                    ),
                ],
                inspect: None,
            },
            Vendor::Lemlist => FakeSetup {
                destination: "lemlist",
                settings: vec![
                    ("connector", s("lemlist")),
                    ("base_url", s(base)),
                    ("campaign_id", s(lemlist::LemlistConfig::DEFAULT_CAMPAIGN)),
                    ("allow_private_networks", on),
                    crm(),
                ],
                env: vec![(
                    "LEMLIST_API_KEY",
                    lemlist::LemlistConfig::DEFAULT_API_KEY.to_string(),
                )],
                inspect: None,
            },
            Vendor::Smartlead => FakeSetup {
                destination: "smartlead",
                settings: vec![
                    ("connector", s("smartlead")),
                    ("base_url", s(base)),
                    (
                        "campaign_id",
                        Value::from(smartlead::SmartleadConfig::DEFAULT_CAMPAIGN as i64),
                    ),
                    ("allow_private_networks", on),
                    crm(),
                ],
                env: vec![(
                    "SMARTLEAD_API_KEY",
                    smartlead::SmartleadConfig::DEFAULT_API_KEY.to_string(),
                )],
                inspect: None,
            },
            Vendor::MarketingCloud => {
                let c = marketing_cloud::MarketingCloudConfig::default();
                FakeSetup {
                    destination: "marketing_cloud",
                    settings: vec![
                        ("connector", s("marketing_cloud")),
                        ("auth_base_url", s(base)),
                        ("account_id", s(&c.account_id)),
                        (
                            "event_definition_key",
                            s(c.event_definitions
                                .first()
                                .map(String::as_str)
                                .unwrap_or_default()),
                        ),
                        (
                            "data_extension_key",
                            s(c.data_extensions
                                .keys()
                                .next()
                                .map(String::as_str)
                                .unwrap_or_default()),
                        ),
                        ("allow_private_networks", on),
                        crm(),
                    ],
                    env: vec![
                        ("MC_CLIENT_ID", c.client_id.clone()),
                        ("MC_CLIENT_SECRET", c.client_secret.clone()),
                    ],
                    inspect: None,
                }
            }
            Vendor::Apollo => FakeSetup {
                destination: "apollo",
                settings: vec![
                    ("connector", s("apollo")),
                    ("base_url", s(base)),
                    ("sequence_id", s(apollo::ApolloConfig::DEFAULT_SEQUENCE)),
                    (
                        "email_account_id",
                        s(apollo::ApolloConfig::DEFAULT_EMAIL_ACCOUNT),
                    ),
                    ("allow_private_networks", on),
                    crm(),
                ],
                env: vec![(
                    "APOLLO_API_KEY",
                    apollo::ApolloConfig::DEFAULT_API_KEY.to_string(),
                )],
                inspect: None,
            },
            Vendor::Salesloft => FakeSetup {
                destination: "salesloft",
                settings: vec![
                    ("connector", s("salesloft")),
                    ("base_url", s(base)),
                    ("token_url", s(&format!("{base}/oauth/token"))),
                    (
                        "cadence_id",
                        Value::from(salesloft::SalesloftConfig::DEFAULT_CADENCE as i64),
                    ),
                    ("allow_private_networks", on),
                    crm(),
                ],
                env: vec![
                    (
                        "SALESLOFT_CLIENT_ID",
                        salesloft::SalesloftConfig::DEFAULT_CLIENT_ID.to_string(),
                    ),
                    (
                        "SALESLOFT_CLIENT_SECRET",
                        salesloft::SalesloftConfig::DEFAULT_CLIENT_SECRET.to_string(),
                    ),
                    (
                        "SALESLOFT_REFRESH_TOKEN",
                        salesloft::SalesloftConfig::DEFAULT_REFRESH_TOKEN.to_string(),
                    ),
                ],
                inspect: None,
            },
            Vendor::Woodpecker => sequence_tool(
                "woodpecker",
                base,
                woodpecker::WoodpeckerConfig::DEFAULT_CAMPAIGN,
                (
                    "WOODPECKER_API_KEY",
                    woodpecker::WoodpeckerConfig::DEFAULT_API_KEY,
                ),
            ),
            Vendor::Replyio => sequence_tool(
                "replyio",
                base,
                replyio::ReplyConfig::DEFAULT_CAMPAIGN,
                ("REPLYIO_API_KEY", replyio::ReplyConfig::DEFAULT_API_KEY),
            ),
            Vendor::Mailshake => sequence_tool(
                "mailshake",
                &format!("{base}/2017-04-01"),
                mailshake::MailshakeConfig::DEFAULT_CAMPAIGN,
                (
                    "MAILSHAKE_API_KEY",
                    mailshake::MailshakeConfig::DEFAULT_API_KEY,
                ),
            ),
            Vendor::Slack => FakeSetup {
                destination: "slack",
                settings: vec![
                    ("connector", s("slack")),
                    ("token_env", s("SLACK_BOT_TOKEN")),
                    ("channel", s("#leads")),
                    ("base_url", s(&format!("{base}/api"))),
                    ("allow_private_networks", on),
                    crm(),
                ],
                env: vec![(
                    "SLACK_BOT_TOKEN",
                    slack::SlackConfig::DEFAULT_BOT_TOKEN.to_string(),
                )],
                inspect: None,
            },
            Vendor::Twilio => FakeSetup {
                destination: "sms",
                settings: vec![
                    ("connector", s("sms")),
                    ("account_sid_env", s("TWILIO_ACCOUNT_SID")),
                    ("auth_token_env", s("TWILIO_AUTH_TOKEN")),
                    ("from", s(twilio::TwilioConfig::DEFAULT_FROM)),
                    ("to", list(&["+14155550100"])),
                    ("base_url", s(base)),
                    ("allow_private_networks", on),
                    crm(),
                ],
                env: vec![
                    (
                        "TWILIO_ACCOUNT_SID",
                        twilio::TwilioConfig::DEFAULT_ACCOUNT_SID.to_string(),
                    ),
                    (
                        "TWILIO_AUTH_TOKEN",
                        twilio::TwilioConfig::DEFAULT_AUTH_TOKEN.to_string(),
                    ),
                ],
                inspect: None,
            },
            Vendor::Google => FakeSetup {
                destination: "sheets",
                settings: vec![
                    ("connector", s("sheets")),
                    ("spreadsheet_id", s(google::DEFAULT_SPREADSHEET_ID)),
                    ("sheet", s("Leads")),
                    ("service_account_env", s("GOOGLE_SERVICE_ACCOUNT_JSON")),
                    ("base_url", s(base)),
                    ("allow_private_networks", on),
                    ("legal_basis", s("legitimate_interest")),
                ],
                env: vec![(
                    "GOOGLE_SERVICE_ACCOUNT_JSON",
                    google::test_service_account_json(base),
                )],
                inspect: None,
            },
        }
    }
}

/// A sequence tool's destination on its fake: a numeric campaign and an
/// API key in an env var.
fn sequence_tool(
    connector: &'static str,
    base: &str,
    campaign: u64,
    (var, key): (&'static str, &str),
) -> FakeSetup {
    use toml_edit::{Array, Value};
    FakeSetup {
        destination: connector,
        settings: vec![
            ("connector", Value::from(connector)),
            ("base_url", Value::from(base)),
            ("campaign_id", Value::from(campaign as i64)),
            ("allow_private_networks", Value::from(true)),
            (
                "purposes",
                Value::Array(["crm"].into_iter().collect::<Array>()),
            ),
        ],
        env: vec![(var, key.to_string())],
        inspect: None,
    }
}

/// What `leadrelay init --fake VENDOR` writes and the shell needs.
pub struct FakeSetup {
    /// The destination's name in the configuration.
    pub destination: &'static str,
    /// Its keys, in order (set on the embedded default's table when it has
    /// one, so its comments stay).
    pub settings: Vec<(&'static str, toml_edit::Value)>,
    /// The environment variables holding the credentials the fake accepts.
    pub env: Vec<(&'static str, String)>,
    /// A command that shows what the fake received.
    pub inspect: Option<String>,
}

impl FakeSetup {
    /// `export NAME='value'` lines.
    pub fn exports(&self) -> Vec<String> {
        self.env
            .iter()
            .map(|(k, v)| format!("export {k}='{v}'"))
            .collect()
    }
}

/// The quickstart that works with the file `leadrelay init --fake` writes.
fn instructions(vendor: Vendor, base: &str) -> String {
    let setup = vendor.setup(base);
    let init = if base == vendor.default_url() {
        format!("leadrelay init --fake {}", vendor.name())
    } else {
        format!("leadrelay init --fake {} --fake-url {base}", vendor.name())
    };
    let mut out = format!(
        "Try leadrelay against it, in another shell (in an empty directory):\n\n  \
         {init}   # writes ./leadrelay.toml: the contact form, the backup and this fake\n"
    );
    for e in setup.exports() {
        out.push_str(&format!("  {e}\n"));
    }
    out.push_str(
        "  leadrelay serve &\n  \
         curl -i http://127.0.0.1:8080/v1/forms/contact -H 'content-type: application/json' \\\n      \
         -d '{\"email\":\"ada@example.com\",\"first_name\":\"Ada\",\"consent\":\"on\"}'\n",
    );
    if let Some(cmd) = &setup.inspect {
        out.push_str(&format!("  {cmd}   # what the fake received\n"));
    }
    out.push_str(&format!(
        "  leadrelay deliveries list   # the delivery to {} and the backup\n  \
         leadrelay keys create --name me --role admin   # then sign in at http://127.0.0.1:8080/ui/ with the key\n",
        setup.destination
    ));
    out
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
        Vendor::Smartlead => start!(smartlead::FakeSmartlead),
        Vendor::MarketingCloud => start!(marketing_cloud::FakeMarketingCloud),
        Vendor::Apollo => start!(apollo::FakeApollo),
        Vendor::Salesloft => start!(salesloft::FakeSalesloft),
        Vendor::Woodpecker => start!(woodpecker::FakeWoodpecker),
        Vendor::Replyio => start!(replyio::FakeReply),
        Vendor::Mailshake => start!(mailshake::FakeMailshake),
    };
    let (banner, base, server) = match started {
        Ok(s) => s,
        Err(e) => {
            errln!("{}", super::listen_error(&listen, &e));
            return ExitCode::FAILURE;
        }
    };
    outln!("{banner}");
    outln!("{}", instructions(args.vendor, &base));
    outln!("Every record it receives is kept in memory until you stop it (Ctrl-C).");
    super::serve::wait_for_signal().await;
    drop(server);
    ExitCode::SUCCESS
}
