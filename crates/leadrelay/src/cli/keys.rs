//! `keys` (API keys for the admin API and the dashboard) and `privacy`
//! (export or erase a person).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::StorageArgs;
use super::inspect::{fail, open, open_with_config, print_json, short, table};
use super::output::{errln, outln};
use crate::auth::{generate_key, validate_key_name};
use crate::privacy::Privacy;
use crate::store::Role;
use leadrelay_model::ConsentPurpose;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once, on stdout.
    Create(CreateKeyArgs),
    /// List keys (never their secrets).
    List(ListKeysArgs),
    /// Revoke a key by name or id; its dashboard sessions end with it.
    Revoke(RevokeKeyArgs),
}

#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    /// A name to recognise the key by (who or what uses it).
    #[arg(long)]
    pub name: String,
    /// admin (acts), viewer (reads, personal data masked) or ingest (only
    /// sends events to POST /v1/events).
    #[arg(long, value_enum)]
    pub role: Role,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct ListKeysArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct RevokeKeyArgs {
    /// The key's name or id.
    pub key: String,
    #[command(flatten)]
    pub storage: StorageArgs,
}

pub async fn keys(config: Option<&PathBuf>, cmd: KeysCommand) -> ExitCode {
    match cmd {
        KeysCommand::Create(a) => {
            if let Err(e) = validate_key_name(&a.name) {
                return fail(e);
            }
            let store = match open(config, &a.storage).await {
                Ok(s) => s,
                Err(c) => return c,
            };
            let (secret, record) = generate_key(a.name.trim(), a.role);
            let created = store.create_api_key(record).await;
            store.close().await;
            match created {
                Ok(k) => {
                    errln!(
                        "created {} key {:?} ({}); store the key now, it is not shown again:",
                        k.role.as_str(),
                        k.name,
                        k.id
                    );
                    outln!("{secret}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        KeysCommand::List(a) => {
            let store = match open(config, &a.storage).await {
                Ok(s) => s,
                Err(c) => return c,
            };
            let keys = store.api_keys().await;
            store.close().await;
            let keys = match keys {
                Ok(k) => k,
                Err(e) => return fail(e),
            };
            if a.json {
                print_json(&keys);
                return ExitCode::SUCCESS;
            }
            let mut t = table(&[
                "id",
                "name",
                "role",
                "key",
                "created",
                "last used",
                "revoked",
            ]);
            for k in &keys {
                t.add_row(vec![
                    k.id.to_string(),
                    k.name.clone(),
                    k.role.as_str().to_string(),
                    format!("{}…", k.prefix),
                    short(Some(k.created_at)),
                    short(k.last_used_at),
                    short(k.revoked_at),
                ]);
            }
            outln!("{t}");
            ExitCode::SUCCESS
        }
        KeysCommand::Revoke(a) => {
            let store = match open(config, &a.storage).await {
                Ok(s) => s,
                Err(c) => return c,
            };
            let revoked = store.revoke_api_key(a.key.trim()).await;
            store.close().await;
            match revoked {
                Ok(k) => {
                    outln!("revoked key {:?} ({})", k.name, k.id);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Print everything held about a person as JSON (audited).
    Export(PrivacyArgs),
    /// Erase a person: their contact, the personal data and raw payloads of
    /// their events, unsent deliveries (audited).
    Erase(EraseArgs),
    /// Withdraw a person's consent for purposes (default: the configured
    /// `privacy.unsubscribe_withdraws`); their waiting deliveries to
    /// destinations needing them are skipped (audited).
    Withdraw(WithdrawArgs),
}

#[derive(Debug, Args)]
pub struct WithdrawArgs {
    #[command(flatten)]
    pub request: PrivacyArgs,
    /// A purpose to withdraw (repeatable), e.g. --purpose marketing_email.
    #[arg(long = "purpose")]
    pub purposes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PrivacyArgs {
    pub email: String,
    /// Why (kept in the audit log).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct EraseArgs {
    #[command(flatten)]
    pub request: PrivacyArgs,
    /// Confirm: erasing cannot be undone.
    #[arg(long)]
    pub yes: bool,
}

fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

pub async fn privacy(config: Option<&PathBuf>, cmd: PrivacyCommand) -> ExitCode {
    let (args, erase) = match cmd {
        PrivacyCommand::Withdraw(w) => return withdraw(config, w).await,
        PrivacyCommand::Export(a) => (a, false),
        PrivacyCommand::Erase(e) => {
            if !e.yes {
                return fail("erasing cannot be undone: add --yes to confirm");
            }
            (e.request, true)
        }
    };
    let email = match Privacy::normalise(args.email.trim()) {
        Ok(e) => e,
        Err(m) => return fail(format!("{:?}: {m}", args.email)),
    };
    let (store, cfg) = match open_with_config(config, &args.storage).await {
        Ok(s) => s,
        Err(c) => return c,
    };
    let privacy = Privacy::new(store.clone(), cfg);
    let code = if erase {
        match privacy.erase(&email, &cli_actor(), args.reason).await {
            Ok(r) => {
                print_json(&r);
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        }
    } else {
        match privacy.export(&email, &cli_actor(), args.reason).await {
            Ok(x) => {
                print_json(&x);
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        }
    };
    store.close().await;
    code
}

async fn withdraw(config: Option<&PathBuf>, w: WithdrawArgs) -> ExitCode {
    let args = w.request;
    let mut purposes: Vec<ConsentPurpose> = Vec::new();
    for p in &w.purposes {
        match ConsentPurpose::parse(p.trim()) {
            Ok(p) if !purposes.contains(&p) => purposes.push(p),
            Ok(_) => {}
            Err(e) => return fail(format!("--purpose: {e}")),
        }
    }
    let email = match Privacy::normalise(args.email.trim()) {
        Ok(e) => e,
        Err(m) => return fail(format!("{:?}: {m}", args.email)),
    };
    let (store, cfg) = match open_with_config(config, &args.storage).await {
        Ok(s) => s,
        Err(c) => return c,
    };
    let privacy = Privacy::new(store.clone(), cfg);
    let code = match privacy
        .withdraw(&email, &purposes, &cli_actor(), args.reason)
        .await
    {
        Ok(r) => {
            print_json(&r);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    };
    store.close().await;
    code
}
