//! `leadrelay timers list`: the durable handoff and SLA timers (what is due
//! when, what firing did), as `GET /api/v1/timers` and the dashboard's lead
//! page show them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::StorageArgs;
use super::inspect::{fail, open, print_json, short, table};
use super::output::outln;
use crate::http::api::pipeline::{TimerKind, TimerState};
use crate::store::TimerFilter;

#[derive(Debug, Subcommand)]
pub enum TimersCommand {
    /// List timers, newest first.
    List(TimerListArgs),
}

#[derive(Debug, Args)]
pub struct TimerListArgs {
    /// Only this contact's timers (its id) …
    #[arg(long, conflicts_with = "email")]
    pub contact: Option<Uuid>,
    /// … or the contact with this email address.
    #[arg(long)]
    pub email: Option<String>,
    #[arg(long, value_enum)]
    pub state: Option<TimerState>,
    #[arg(long, value_enum)]
    pub kind: Option<TimerKind>,
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

pub async fn timers(config: Option<&PathBuf>, cmd: TimersCommand) -> ExitCode {
    let TimersCommand::List(a) = cmd;
    let store = match open(config, &a.storage).await {
        Ok(s) => s,
        Err(c) => return c,
    };
    let contact_id = match (&a.contact, &a.email) {
        (Some(id), _) => Some(*id),
        (None, Some(email)) => match store
            .find_contact_by_email(&email.trim().to_lowercase())
            .await
        {
            Ok(Some(c)) => Some(c.id),
            Ok(None) => {
                store.close().await;
                return fail(format!("no contact with the email {email:?}"));
            }
            Err(e) => return fail(e),
        },
        (None, None) => None,
    };
    let filter = TimerFilter {
        contact_id,
        state: a.state.map(|s| s.as_str().to_string()),
        kind: a.kind.map(|k| k.as_str().to_string()),
    };
    let list = match store.list_timers(&filter, None, a.limit as usize).await {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    store.close().await;
    if a.json {
        print_json(&list);
        return ExitCode::SUCCESS;
    }
    let mut t = table(&[
        "id", "kind", "state", "due", "fired", "attempts", "contact", "outcome",
    ]);
    for timer in &list {
        t.add_row(vec![
            timer.id.to_string(),
            timer.kind.clone(),
            timer.state.clone(),
            short(Some(timer.due_at)),
            short(timer.fired_at),
            timer.attempts.to_string(),
            timer.contact_id.to_string(),
            timer.outcome.clone().unwrap_or_default(),
        ]);
    }
    outln!("{t}");
    outln!("{} timer(s)", list.len());
    ExitCode::SUCCESS
}
