//! `leadrelay sync`: pull existing records into a CRM sync (backfill) and
//! show each sync's health.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use super::StorageArgs;
use super::inspect::{fail, open_with_config};
use super::output::outln;
use crate::sync::{BackfillEnd, SyncRunner};

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Pull every existing record of both systems of a sync and settle
    /// them (resumable: run it again after a crash to continue).
    Backfill(BackfillArgs),
    /// Each sync's health (records, cursors, writes, echoes, conflicts, errors), then each HubSpot read's
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The sync's name (`[syncs.NAME]`).
    pub sync: String,
    /// The share of each system's daily API quota the backfill may spend
    /// in a day (default: the sync's `backfill_quota_share`, 0.25)
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    pub quota_share: Option<f64>,
    /// When the day's share is spent, exit (status 75) instead of waiting
    /// for the next UTC day; run it again then to go on
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a share: a number more than 0 and at most 1, such as 0.25"
        )),
    }
}

/// The exit status of a backfill that stopped for the day (`--no-wait`):
/// EX_TEMPFAIL, try again later.
const PAUSED: u8 = 75;

pub async fn sync(config: Option<&PathBuf>, cmd: SyncCommand) -> ExitCode {
    match cmd {
        SyncCommand::Backfill(a) => backfill(config, a).await,
        SyncCommand::Status(a) => status(config, a).await,
    }
}

async fn backfill(config: Option<&PathBuf>, a: BackfillArgs) -> ExitCode {
    let (store, cfg) = match open_with_config(config, &a.storage).await {
        Ok(s) => s,
        Err(c) => return c,
    };
    if !cfg.syncs.contains_key(&a.sync) {
        store.close().await;
        return fail(format!("there is no sync named {:?}", a.sync));
    }
    let runner = match SyncRunner::build(&a.sync, &cfg, &super::process_env, store.clone()) {
        Ok(r) => r,
        Err(ps) => {
            store.close().await;
            return fail(
                ps.iter()
                    .map(|p| p.render("config"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
    };
    // A progress bar is not a JSON line: none with --log-format json.
    let bar = if super::output::is_json() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} records settled ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let share = a
        .quota_share
        .or_else(|| cfg.syncs.get(&a.sync).map(|s| s.backfill_quota_share))
        .unwrap_or(0.25);
    let h = loop {
        let (h, end) = runner.backfill_sharing(share, |n| bar.inc(n)).await;
        let BackfillEnd::QuotaSpent {
            system,
            spent,
            budget,
            until,
        } = end
        else {
            break h;
        };
        let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default();
        let message = format!(
            "the backfill's share of {system}'s daily API quota is spent ({spent} of {budget})"
        );
        if a.no_wait {
            bar.finish_and_clear();
            store.close().await;
            outln!(
                "sync {}: {message}; run it again after {} to go on",
                a.sync,
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            return ExitCode::from(PAUSED);
        }
        bar.suspend(|| {
            outln!(
                "sync {}: {message}; waiting until {} (Ctrl-C stops; running it again goes on)",
                a.sync,
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        });
        tokio::time::sleep(wait + std::time::Duration::from_secs(1)).await;
    };
    bar.finish_and_clear();
    store.close().await;
    outln!(
        "sync {}: {} records known, {} written to {}, {} written to {}, {} conflicts for review, {} errors",
        a.sync,
        h.records,
        h.writes_a,
        h.a,
        h.writes_b,
        h.b,
        h.conflicts_for_review,
        h.errors
    );
    match h.last_error {
        Some(e) => fail(format!(
            "the backfill stopped on an error (run it again to resume): {e}"
        )),
        None => ExitCode::SUCCESS,
    }
}

async fn status(config: Option<&PathBuf>, a: StatusArgs) -> ExitCode {
    let (store, cfg) = match open_with_config(config, &a.storage).await {
        Ok(s) => s,
        Err(c) => return c,
    };
    let result = crate::sync::health(&cfg, &store).await;
    let reads = crate::connectors::hubspot::read::statuses(&cfg, &store).await;
    store.close().await;
    match result {
        Ok(list) => {
            for h in list {
                outln!("{}", serde_json::to_string(&h).unwrap_or_default());
            }
            for r in reads {
                outln!("{}", serde_json::to_string(&r).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
