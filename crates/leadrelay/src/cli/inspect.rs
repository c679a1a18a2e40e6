//! `events`, `deliveries` and `dlq`: read the store directly, as a table or
//! as JSON.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};
use leadrelay_model::{EventType, OriginKind};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::output::{errln, outln};
use super::{StorageArgs, load_config_for_store};
use crate::app;
use crate::store::{DeliveryFilter, DeliveryState, EventFilter, Store};

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List events, newest first.
    List(EventListArgs),
    /// Show one event with its raw payload and deliveries.
    Show(ShowArgs),
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries, newest first.
    List(DeliveryListArgs),
    /// Show one delivery with every attempt.
    Show(ShowArgs),
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    List(DlqListArgs),
    /// Show one dead letter with its attempts.
    Show(ShowArgs),
    /// Replay dead letters as new deliveries (history is kept).
    Replay(ReplayArgs),
    /// Mark dead letters as discarded (kept, never retried).
    Discard(DiscardArgs),
}

#[derive(Debug, Args)]
pub struct EventListArgs {
    /// Event type, e.g. lead.created.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only events from this form.
    #[arg(long)]
    pub form: Option<String>,
    /// Only events from this vendor webhook source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only events sent to POST /v1/events with this API key (its name).
    #[arg(long, conflicts_with_all = ["form", "source"])]
    pub api: Option<String>,
    /// Text to find (email or any value).
    #[arg(long)]
    pub search: Option<String>,
    /// RFC 3339 time or an age such as 24h.
    #[arg(long)]
    pub since: Option<String>,
    /// Only spam (true) or only non-spam (false).
    #[arg(long)]
    pub spam: Option<bool>,
    /// Most rows shown.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct DeliveryListArgs {
    /// Only deliveries to this destination.
    #[arg(long)]
    pub destination: Option<String>,
    /// pending, in_flight, scheduled, delivered, dead, skipped, discarded.
    #[arg(long)]
    pub state: Option<String>,
    /// Only deliveries of this event.
    #[arg(long)]
    pub event: Option<Uuid>,
    /// Most rows shown.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct DlqListArgs {
    /// Only dead letters of this destination.
    #[arg(long)]
    pub destination: Option<String>,
    /// Most rows shown.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The id (as `list` shows it).
    pub id: Uuid,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Dead letters to replay.
    pub ids: Vec<Uuid>,
    /// Replay every dead letter of this destination.
    #[arg(long)]
    pub destination: Option<String>,
    /// With --destination or --all: only dead letters created since (RFC 3339 or an age such as 24h).
    #[arg(long)]
    pub since: Option<String>,
    /// Replay every dead letter.
    #[arg(long)]
    pub all: bool,
    /// Override a field for the replay: contact.first_name=Jane, data.plan=pro, email=…
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct DiscardArgs {
    pub ids: Vec<Uuid>,
    #[command(flatten)]
    pub storage: StorageArgs,
}

pub(super) async fn open(
    config_path: Option<&PathBuf>,
    storage: &StorageArgs,
) -> Result<Arc<dyn Store>, ExitCode> {
    open_with_config(config_path, storage)
        .await
        .map(|(store, _)| store)
}

/// The store and the configuration it was opened with.
pub(super) async fn open_with_config(
    config_path: Option<&PathBuf>,
    storage: &StorageArgs,
) -> Result<(Arc<dyn Store>, Arc<crate::config::Config>), ExitCode> {
    let loaded = load_config_for_store(config_path)?;
    let mut config = loaded.config;
    if let Some(u) = &storage.storage_url {
        config.storage.url = u.clone();
    }
    let store = app::open_store(&config).await.map_err(|e| {
        errln!("cannot open the store: {e:#}");
        ExitCode::FAILURE
    })?;
    Ok((store, Arc::new(config)))
}

/// RFC 3339, or an age such as `24h` / `7d` before now.
pub fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("--since {s:?}: not an RFC 3339 time or an age like 24h ({e})"))
        .and_then(|d| chrono::Duration::from_std(d).map_err(|e| e.to_string()))
        .map(|d| Utc::now() - d)
}

pub(super) fn fail(msg: impl std::fmt::Display) -> ExitCode {
    errln!("{msg}");
    ExitCode::FAILURE
}

pub(super) fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_header(headers.to_vec());
    t
}

pub(super) fn short(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

pub(super) fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => outln!("{s}"),
        Err(e) => errln!("cannot render JSON: {e}"),
    }
}

pub async fn events(config: Option<&PathBuf>, cmd: EventsCommand) -> ExitCode {
    match cmd {
        EventsCommand::List(a) => {
            let store = match open(config, &a.storage).await {
                Ok(s) => s,
                Err(c) => return c,
            };
            let mut filter = EventFilter {
                search: a.search.clone(),
                spam: a.spam,
                ..Default::default()
            };
            if let Some(t) = &a.event_type {
                match EventType::parse(t) {
                    Ok(t) => filter.event_type = Some(t),
                    Err(e) => return fail(e),
                }
            }
            if let Some(f) = &a.form {
                filter.origin_kind = Some(OriginKind::Form);
                filter.origin_name = Some(f.clone());
            }
            if let Some(s) = &a.source {
                filter.origin_kind = Some(OriginKind::Source);
                filter.origin_name = Some(s.clone());
            }
            if let Some(k) = &a.api {
                filter.origin_kind = Some(OriginKind::Api);
                filter.origin_name = Some(k.clone());
            }
            if let Some(s) = &a.since {
                match parse_since(s) {
                    Ok(t) => filter.since = Some(t),
                    Err(e) => return fail(e),
                }
            }
            let list = match store.list_events(&filter, None, a.limit).await {
                Ok(l) => l,
                Err(e) => return fail(e),
            };
            store.close().await;
            if a.json {
                print_json(&list);
                return ExitCode::SUCCESS;
            }
            let mut t = table(&["id", "received", "type", "origin", "email", "spam"]);
            for e in &list {
                t.add_row(vec![
                    e.id.to_string(),
                    short(Some(e.received_at)),
                    e.event_type.to_string(),
                    format!("{}:{}", e.origin.kind.as_str(), e.origin.name),
                    e.contact
                        .email
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    if e.spam { "spam".into() } else { String::new() },
                ]);
            }
            outln!("{t}");
            ExitCode::SUCCESS
        }
        EventsCommand::Show(a) => {
            let store = match open(config, &a.storage).await {
                Ok(s) => s,
                Err(c) => return c,
            };
            let event = match store.get_event(a.id).await {
                Ok(Some(e)) => e,
                Ok(None) => return fail(format!("no event {}", a.id)),
                Err(e) => return fail(e),
            };
            let deliveries = store.deliveries_for_event(a.id).await.unwrap_or_default();
            store.close().await;
            if a.json {
                print_json(&json!({"event": event, "deliveries": deliveries}));
                return ExitCode::SUCCESS;
            }
            print_json(&event);
            let mut t = table(&[
                "delivery",
                "destination",
                "state",
                "attempts",
                "last status",
                "reason / error",
            ]);
            for d in &deliveries {
                t.add_row(vec![
                    d.id.to_string(),
                    d.destination.clone(),
                    d.state.as_str().to_string(),
                    d.attempts.to_string(),
                    d.last_status.map(|s| s.to_string()).unwrap_or_default(),
                    d.reason
                        .clone()
                        .or_else(|| d.last_error.clone())
                        .unwrap_or_default(),
                ]);
            }
            outln!("{t}");
            ExitCode::SUCCESS
        }
    }
}

fn delivery_table(list: &[crate::store::Delivery]) -> Table {
    let mut t = table(&[
        "id",
        "created",
        "destination",
        "state",
        "attempts",
        "next attempt",
        "reason / last error",
    ]);
    for d in list {
        t.add_row(vec![
            d.id.to_string(),
            short(Some(d.created_at)),
            d.destination.clone(),
            d.state.as_str().to_string(),
            d.attempts.to_string(),
            short(d.next_attempt_at),
            d.reason
                .clone()
                .or_else(|| d.last_error.clone())
                .unwrap_or_default(),
        ]);
    }
    t
}

async fn show_delivery(store: &Arc<dyn Store>, id: Uuid, as_json: bool) -> ExitCode {
    let d = match store.get_delivery(id).await {
        Ok(Some(d)) => d,
        Ok(None) => return fail(format!("no delivery {id}")),
        Err(e) => return fail(e),
    };
    let attempts = store.attempts(id).await.unwrap_or_default();
    if as_json {
        print_json(&json!({"delivery": d, "attempts": attempts}));
        return ExitCode::SUCCESS;
    }
    outln!("{}", delivery_table(std::slice::from_ref(&d)));
    let mut t = table(&[
        "#",
        "started",
        "ms",
        "request",
        "status",
        "outcome",
        "class",
        "response / message",
    ]);
    for a in &attempts {
        t.add_row(vec![
            a.number.to_string(),
            short(Some(a.started_at)),
            a.duration_ms.to_string(),
            format!(
                "{} {}",
                a.method.clone().unwrap_or_default(),
                a.url.clone().unwrap_or_default()
            ),
            a.status.map(|s| s.to_string()).unwrap_or_default(),
            a.outcome.clone(),
            a.error_class.clone().unwrap_or_default(),
            a.message
                .clone()
                .or_else(|| a.response_excerpt.clone())
                .unwrap_or_default(),
        ]);
    }
    outln!("{t}");
    ExitCode::SUCCESS
}

pub async fn deliveries(config: Option<&PathBuf>, cmd: DeliveriesCommand) -> ExitCode {
    match cmd {
        DeliveriesCommand::List(a) => {
            let store = match open(config, &a.storage).await {
                Ok(s) => s,
                Err(c) => return c,
            };
            let state = match a.state.as_deref().map(|s| DeliveryState::parse(s).ok_or(s)) {
                Some(Err(s)) => return fail(format!("unknown state {s:?}")),
                Some(Ok(s)) => Some(s),
                None => None,
            };
            let filter = DeliveryFilter {
                destination: a.destination.clone(),
                state,
                event_id: a.event,
                ..Default::default()
            };
            let list = match store.list_deliveries(&filter, None, a.limit).await {
                Ok(l) => l,
                Err(e) => return fail(e),
            };
            store.close().await;
            if a.json {
                print_json(&list);
            } else {
                outln!("{}", delivery_table(&list));
            }
            ExitCode::SUCCESS
        }
        DeliveriesCommand::Show(a) => {
            let store = match open(config, &a.storage).await {
                Ok(s) => s,
                Err(c) => return c,
            };
            let code = show_delivery(&store, a.id, a.json).await;
            store.close().await;
            code
        }
    }
}

/// Parses `--set field=value`; values that parse as JSON (numbers, true,
/// quoted strings) keep their type, anything else is text.
pub fn parse_overrides(sets: &[String]) -> Result<Option<Map<String, Value>>, String> {
    if sets.is_empty() {
        return Ok(None);
    }
    let mut m = Map::new();
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("--set {s:?}: write FIELD=VALUE"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("--set {s:?}: the field name is empty"));
        }
        let value = serde_json::from_str::<Value>(v)
            .ok()
            .filter(|v| !v.is_object() && !v.is_array())
            .unwrap_or_else(|| Value::String(v.to_string()));
        m.insert(k.to_string(), value);
    }
    Ok(Some(m))
}

pub async fn dlq(config: Option<&PathBuf>, cmd: DlqCommand) -> ExitCode {
    match cmd {
        DlqCommand::List(a) => {
            let store = match open(config, &a.storage).await {
                Ok(s) => s,
                Err(c) => return c,
            };
            let filter = DeliveryFilter {
                destination: a.destination.clone(),
                state: Some(DeliveryState::Dead),
                exclude_replayed: true,
                ..Default::default()
            };
            let list = match store.list_deliveries(&filter, None, a.limit).await {
                Ok(l) => l,
                Err(e) => return fail(e),
            };
            store.close().await;
            if a.json {
                print_json(&list);
            } else {
                outln!("{}", delivery_table(&list));
                outln!("{} dead letter(s) shown", list.len());
            }
            ExitCode::SUCCESS
        }
        DlqCommand::Show(a) => {
            let store = match open(config, &a.storage).await {
                Ok(s) => s,
                Err(c) => return c,
            };
            let code = show_delivery(&store, a.id, a.json).await;
            store.close().await;
            code
        }
        DlqCommand::Discard(a) => {
            if a.ids.is_empty() {
                return fail("name the dead letters to discard");
            }
            let store = match open(config, &a.storage).await {
                Ok(s) => s,
                Err(c) => return c,
            };
            let n = store.discard(a.ids.clone()).await;
            store.close().await;
            match n {
                Ok(n) => {
                    outln!("discarded {n} of {} dead letter(s)", a.ids.len());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        DlqCommand::Replay(a) => replay(config, a).await,
    }
}

async fn replay(config: Option<&PathBuf>, a: ReplayArgs) -> ExitCode {
    let selectors =
        usize::from(!a.ids.is_empty()) + usize::from(a.destination.is_some()) + usize::from(a.all);
    if selectors != 1 {
        return fail(
            "replay takes dead-letter ids, or --destination NAME, or --all (exactly one of them)",
        );
    }
    let overrides = match parse_overrides(&a.set) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let since = match a.since.as_deref().map(parse_since).transpose() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let (store, cfg) = match open_with_config(config, &a.storage).await {
        Ok(s) => s,
        Err(c) => return c,
    };
    let ids: Vec<Uuid> = if !a.ids.is_empty() {
        a.ids.clone()
    } else {
        match crate::store::dead_letter_ids(store.as_ref(), a.destination.clone(), since).await {
            Ok(ids) => ids,
            Err(e) => return fail(e),
        }
    };
    // A name that is neither configured nor holds dead letters is a typo.
    if let Some(name) = &a.destination
        && ids.is_empty()
        && !cfg.destinations.contains_key(name)
    {
        store.close().await;
        return fail(format!("there is no destination named {name:?}"));
    }
    // A progress bar is not a JSON line: none with --log-format json.
    let bar = if super::output::is_json() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(ids.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} replayed ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut replayed = 0usize;
    for chunk in ids.chunks(200) {
        match store.replay(chunk.to_vec(), overrides.clone()).await {
            Ok(pairs) => {
                replayed += pairs.len();
                bar.inc(chunk.len() as u64);
            }
            Err(e) => {
                bar.abandon();
                store.close().await;
                return fail(format!("replay stopped after {replayed}: {e}"));
            }
        }
    }
    bar.finish_and_clear();
    store.close().await;
    let skipped = ids.len() - replayed;
    outln!(
        "replayed {replayed} dead letter(s) as new deliveries{}",
        if skipped > 0 {
            format!("; {skipped} skipped (not dead, unknown, or already replayed)")
        } else {
            String::new()
        }
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_keep_types() {
        let m = parse_overrides(&[
            "first_name=Jane".into(),
            "data.seats=12".into(),
            "ok=true".into(),
            "q=\"7\"".into(),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(m["first_name"], json!("Jane"));
        assert_eq!(m["data.seats"], json!(12));
        assert_eq!(m["ok"], json!(true));
        assert_eq!(m["q"], json!("7"));
        assert!(parse_overrides(&["novalue".into()]).is_err());
        assert!(parse_overrides(&["=x".into()]).is_err());
    }

    #[test]
    fn since_forms() {
        assert!(parse_since("2024-01-02T03:04:05Z").is_ok());
        let t = parse_since("2h").unwrap();
        assert!(Utc::now() - t >= chrono::Duration::minutes(119));
        assert!(parse_since("yesterday-ish").is_err());
    }
}
