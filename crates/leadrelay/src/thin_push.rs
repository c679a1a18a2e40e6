//! Mailshake's thin pushes: a push that carries only a `resource_url`
//! becomes the full activity before it is routed, without ingest ever
//! calling Mailshake (a webhook is answered as soon as it is stored).
//!
//! 1. At ingest, a push of a `mailshake` source that resolves (its
//!    `api_key_env` is set and `resolve` is not `false`) whose event has a
//!    `data.resource_url` and no email is stored **unrouted** (no
//!    deliveries) and, before the push is answered, put in the resolver's
//!    queue: a JSON list in the store's key-value table
//!    ([`QUEUE_KEY`], changed by compare-and-set, so every node shares it
//!    and a restart loses nothing). A storage failure answers 503 and
//!    Mailshake pushes again.
//! 2. The resolver (one task per node that runs the engine) takes due
//!    entries one at a time and GETs the `resource_url` with the API key —
//!    only when the URL is on the source's configured Mailshake API
//!    (`api_base_url`: same scheme, host and port, under its path; anything
//!    else is never fetched). `limit_reached` waits until the time Mailshake
//!    names, without counting as a failure.
//! 3. The fetched activity is parsed by the same Mailshake mapping as a full
//!    push and stored as a new event (its vendor id as external id, so two
//!    nodes or a restart store it once), with `data.resolved_from` = the
//!    thin event's id, and routed like any event.
//! 4. A resource that cannot be fetched after `resolve_attempts` (default 5)
//!    failed tries, or is not on the Mailshake host, is routed as it is: a
//!    copy of the thin event with `data.unresolved_reason` (external id
//!    `unresolved:{thin event id}`). Nothing is lost or stuck.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use leadrelay_model::{Event, new_id};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{Config, SourceConfig};
use crate::connectors::Outcome;
use crate::ingest::{HookRequest, Ingestor};
use crate::store::{IngestItem, Store, StoreError};

/// The resolver's queue in the key-value table.
pub const QUEUE_KEY: &str = "thin_push:queue";
const DEFAULT_API: &str = "https://api.mailshake.com/2017-04-01";
const DEFAULT_ATTEMPTS: u32 = 5;
const TICK: Duration = Duration::from_millis(250);

/// One thin push waiting to be resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub event: Uuid,
    pub source: String,
    pub url: String,
    pub attempts: u32,
    pub next_at: DateTime<Utc>,
    #[serde(default)]
    pub last_error: Option<String>,
}

fn resolves(source: &SourceConfig) -> bool {
    source.kind == "mailshake"
        && source.settings.get("api_key_env").is_some()
        && source.settings.get("resolve").and_then(|v| v.as_bool()) != Some(false)
}

/// The `resource_url` of a thin push that must be resolved before routing,
/// `None` for every other event.
pub fn thin_url(config: &Config, source: &str, event: &Event) -> Option<String> {
    let s = config.sources.get(source)?;
    if !resolves(s) || event.contact.email.is_some() {
        return None;
    }
    event.data.get("resource_url")?.as_str().map(str::to_string)
}

fn done_key(event: Uuid) -> String {
    format!("thin_push:done:{event}")
}

async fn load(store: &Arc<dyn Store>) -> Result<(Option<String>, Vec<Pending>), StoreError> {
    let raw = store.kv_get(QUEUE_KEY).await?;
    let list = raw
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    Ok((raw, list))
}

/// Changes the queue with `change` (compare-and-set, retried on a race).
async fn update(
    store: &Arc<dyn Store>,
    mut change: impl FnMut(&mut Vec<Pending>),
) -> Result<(), StoreError> {
    loop {
        let (raw, mut list) = load(store).await?;
        change(&mut list);
        let next = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
        if store
            .kv_compare_and_set(QUEUE_KEY, raw.as_deref(), &next)
            .await?
        {
            return Ok(());
        }
    }
}

/// Queues a stored thin push (idempotent: a push Mailshake repeats, or one
/// resolved already, is not queued twice).
pub async fn enqueue(
    store: &Arc<dyn Store>,
    event: Uuid,
    source: &str,
    url: &str,
) -> Result<(), StoreError> {
    if store.kv_get(&done_key(event)).await?.is_some() {
        return Ok(());
    }
    update(store, |list| {
        if !list.iter().any(|p| p.event == event) {
            list.push(Pending {
                event,
                source: source.to_string(),
                url: url.to_string(),
                attempts: 0,
                next_at: Utc::now(),
                last_error: None,
            });
        }
    })
    .await
}

/// Whether `url` is on the Mailshake API `base` (scheme, host, port, path
/// prefix) and carries no credentials of its own.
pub fn on_api_host(url: &str, base: &str) -> bool {
    let (Ok(u), Ok(b)) = (url::Url::parse(url), url::Url::parse(base)) else {
        return false;
    };
    let prefix = b.path().trim_end_matches('/');
    u.scheme() == b.scheme()
        && u.host_str().is_some()
        && u.host_str() == b.host_str()
        && u.port_or_known_default() == b.port_or_known_default()
        && u.username().is_empty()
        && u.password().is_none()
        && (u.path() == prefix || u.path().starts_with(&format!("{prefix}/")))
}

/// One source's resolver.
struct Resolver {
    name: String,
    key: String,
    base: String,
    attempts: u32,
    client: reqwest::Client,
    allow_private: bool,
    source: Box<dyn leadrelay_sources::SourceKind>,
}

enum Fetched {
    Activity(Vec<u8>),
    /// Try again at this time without counting a failure.
    Wait(DateTime<Utc>, String),
    Failed(String),
}

impl Resolver {
    async fn fetch(&self, url: &str) -> Fetched {
        let req = match self.client.get(url).basic_auth(&self.key, Some("")).build() {
            Ok(r) => r,
            Err(e) => return Fetched::Failed(format!("cannot build the request: {e}")),
        };
        let (result, _) =
            crate::connectors::http::send(&self.client, req, url, self.allow_private).await;
        match result {
            Err(e) => Fetched::Failed(crate::connectors::crm::outcome_text(&e.outcome())),
            Ok(r) => match crate::connectors::mailshake::classify(&r) {
                Outcome::Delivered { .. } => Fetched::Activity(r.body.into_bytes()),
                Outcome::Throttled {
                    message,
                    retry_after,
                } => {
                    let wait = retry_after.unwrap_or(Duration::from_secs(60));
                    Fetched::Wait(
                        Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                        message,
                    )
                }
                other => Fetched::Failed(crate::connectors::crm::outcome_text(&other)),
            },
        }
    }
}

/// Stores `items` as resolved events of the thin push `p`.
async fn store_resolved(
    store: &Arc<dyn Store>,
    ingestor: &Ingestor,
    p: &Pending,
    mut items: Vec<IngestItem>,
) -> Result<(), StoreError> {
    for item in &mut items {
        item.event
            .data
            .insert("resolved_from".into(), Value::String(p.event.to_string()));
        item.event
            .data
            .insert("resource_url".into(), Value::String(p.url.clone()));
        item.destinations = ingestor.routes().route_and_record(&mut item.event);
    }
    store.ingest(items).await.map(|_| ())
}

/// Routes the thin event as it is, with the reason it was not resolved.
async fn route_as_is(
    store: &Arc<dyn Store>,
    ingestor: &Ingestor,
    thin: &Event,
    reason: &str,
) -> Result<(), StoreError> {
    let mut event = thin.clone();
    event.id = new_id();
    event.external_id = Some(format!("unresolved:{}", thin.id));
    event.data.insert(
        "unresolved_reason".into(),
        Value::String(reason.to_string()),
    );
    event
        .data
        .insert("resolved_from".into(), Value::String(thin.id.to_string()));
    let destinations = ingestor.routes().route_and_record(&mut event);
    tracing::warn!(event = %thin.id, reason, "thin push routed without its activity");
    store
        .ingest(vec![IngestItem {
            event,
            destinations,
            idempotency: None,
        }])
        .await
        .map(|_| ())
}

/// What became of one due entry: `None` = done (remove it), else the entry
/// to keep.
async fn resolve_one(
    store: &Arc<dyn Store>,
    ingestor: &Ingestor,
    resolver: Option<&Resolver>,
    mut p: Pending,
) -> Result<Option<Pending>, StoreError> {
    let Some(thin) = store.get_event(p.event).await? else {
        // Erased or purged meanwhile: nothing to route.
        return Ok(None);
    };
    let Some(r) = resolver else {
        let reason = format!("source {:?} no longer resolves thin pushes", p.source);
        route_as_is(store, ingestor, &thin, &reason).await?;
        return Ok(None);
    };
    if !on_api_host(&p.url, &r.base) {
        let reason = format!(
            "resource_url is not on the configured Mailshake API ({}): not fetched",
            r.base
        );
        route_as_is(store, ingestor, &thin, &reason).await?;
        return Ok(None);
    }
    match r.fetch(&p.url).await {
        Fetched::Activity(body) => {
            let headers = [("content-type".to_string(), "application/json".to_string())];
            let req = leadrelay_sources::InboundRequest {
                method: "GET",
                url: &p.url,
                headers: &headers,
                body: &body,
                received_at: thin.received_at,
            };
            match r.source.parse(&req) {
                Ok(leadrelay_sources::HookParse::Events(events)) if !events.is_empty() => {
                    let hook = HookRequest {
                        source: &r.name,
                        content_type: Some("application/json"),
                        body: &body,
                        client_ip: None,
                        received_at: thin.received_at,
                    };
                    let items = ingestor.hook_items(&hook, events);
                    store_resolved(store, ingestor, &p, items).await?;
                    Ok(None)
                }
                _ => {
                    let reason = "the resource is not a Mailshake activity".to_string();
                    route_as_is(store, ingestor, &thin, &reason).await?;
                    Ok(None)
                }
            }
        }
        Fetched::Wait(at, message) => {
            p.next_at = at;
            p.last_error = Some(message);
            Ok(Some(p))
        }
        Fetched::Failed(message) => {
            p.attempts += 1;
            if p.attempts >= r.attempts {
                let reason = format!(
                    "the resource could not be fetched after {} attempts: {message}",
                    p.attempts
                );
                route_as_is(store, ingestor, &thin, &reason).await?;
                return Ok(None);
            }
            let backoff = 2u64.saturating_pow(p.attempts).min(300);
            p.next_at = Utc::now() + chrono::Duration::seconds(backoff as i64);
            p.last_error = Some(message);
            Ok(Some(p))
        }
    }
}

/// One pass: every due entry, one request at a time.
async fn round(store: &Arc<dyn Store>, ingestor: &Ingestor, resolvers: &[Resolver]) {
    let due: Vec<Pending> = match load(store).await {
        Ok((_, list)) => list
            .into_iter()
            .filter(|p| p.next_at <= Utc::now())
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "thin pushes: cannot read the queue");
            return;
        }
    };
    for p in due {
        let resolver = resolvers.iter().find(|r| r.name == p.source);
        let event = p.event;
        let kept = match resolve_one(store, ingestor, resolver, p).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, %event, "thin pushes: storage error; tried again");
                return;
            }
        };
        if kept.is_none()
            && let Err(e) = store.kv_set(&done_key(event), "1").await
        {
            tracing::warn!(error = %e, %event, "thin pushes: cannot mark as resolved");
        }
        let result = update(store, |list| {
            list.retain(|x| x.event != event);
            if let Some(k) = &kept {
                list.push(k.clone());
            }
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, %event, "thin pushes: cannot update the queue");
            return;
        }
    }
}

fn resolvers(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Vec<Resolver> {
    let mut out = Vec::new();
    for (name, s) in &config.sources {
        if !resolves(s) {
            continue;
        }
        let text = |k: &str| s.settings.get(k).and_then(|v| v.as_str());
        let Some(key) = text("api_key_env")
            .and_then(env)
            .filter(|k| !k.trim().is_empty())
        else {
            tracing::warn!(source = %name, "thin pushes: the API key env var is unset; they are routed as they are");
            continue;
        };
        let allow_private = s
            .settings
            .get("allow_private_networks")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let (Ok(client), Ok(source)) = (
            crate::connectors::http::client(Duration::from_secs(30), allow_private),
            crate::sources::build_source(name, s, env),
        ) else {
            continue;
        };
        out.push(Resolver {
            name: name.clone(),
            key,
            base: text("api_base_url")
                .unwrap_or(DEFAULT_API)
                .trim_end_matches('/')
                .to_string(),
            attempts: s
                .settings
                .get("resolve_attempts")
                .and_then(|v| v.as_integer())
                .map_or(DEFAULT_ATTEMPTS, |n| n.clamp(1, 20) as u32),
            client,
            allow_private,
            source,
        });
    }
    out
}

/// Starts the resolver when a source resolves thin pushes.
pub fn start(
    store: Arc<dyn Store>,
    config: &Config,
    ingestor: Arc<Ingestor>,
    env: &dyn Fn(&str) -> Option<String>,
    shutdown: CancellationToken,
) -> Option<JoinHandle<()>> {
    if !config.sources.values().any(resolves) {
        return None;
    }
    let resolvers = resolvers(config, env);
    Some(tokio::spawn(async move {
        loop {
            round(&store, &ingestor, &resolvers).await;
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_urls_on_the_api_are_fetched() {
        let base = "https://api.mailshake.com/2017-04-01";
        assert!(on_api_host(
            "https://api.mailshake.com/2017-04-01/activity/1?x=2",
            base
        ));
        for bad in [
            "https://evil.example/2017-04-01/activity/1",
            "http://api.mailshake.com/2017-04-01/activity/1",
            "https://api.mailshake.com:8443/2017-04-01/activity/1",
            "https://api.mailshake.com.evil.example/2017-04-01/x",
            "https://user:pw@api.mailshake.com/2017-04-01/x",
            "https://api.mailshake.com/other/x",
            "https://api.mailshake.com/2017-04-01-evil/x",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(!on_api_host(bad, base), "{bad}");
        }
    }
}
