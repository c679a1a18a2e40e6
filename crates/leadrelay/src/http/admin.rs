//! What the admin API and the dashboard share: key verification, privacy,
//! the configured destinations, destination health, and bulk jobs (replays
//! of dead letters, actions on waiting deliveries) with their progress.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::AppState;
use super::api::views::DestinationHealth;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::error::ApiError;
use crate::privacy::Privacy;
use crate::store::{DestinationState, DestinationStats, Store, WaitingFilter};

/// Destination health covers this many hours of attempts.
pub const HEALTH_WINDOW_HOURS: i64 = 24;

/// Dead letters replayed per store call in bulk replays.
pub const REPLAY_CHUNK: usize = 100;

/// A destination named in the configuration.
#[derive(Debug, Clone)]
pub struct ConfiguredDestination {
    pub name: String,
    pub connector: String,
    /// Switched on (`enabled = true`, or `"auto"` with its env vars set).
    pub enabled: bool,
}

pub struct AdminContext {
    pub auth: Authenticator,
    pub privacy: Arc<Privacy>,
    pub destinations: Vec<ConfiguredDestination>,
    /// Session cookies carry `Secure` (the public URL is https).
    pub secure_cookies: bool,
    pub jobs: Arc<BulkJobs>,
}

impl AdminContext {
    pub fn new(
        store: Arc<dyn Store>,
        privacy: Arc<Privacy>,
        config: &Config,
        enabled: &BTreeSet<String>,
    ) -> Self {
        let destinations = config
            .destinations
            .iter()
            .map(|(name, d)| ConfiguredDestination {
                name: name.clone(),
                connector: d.connector.clone(),
                enabled: enabled.contains(name),
            })
            .collect();
        Self {
            auth: Authenticator::new(store),
            privacy,
            destinations,
            secure_cookies: config.server.public_url().starts_with("https://"),
            jobs: Arc::new(BulkJobs::default()),
        }
    }

    pub fn configured(&self, name: &str) -> Option<&ConfiguredDestination> {
        self.destinations.iter().find(|d| d.name == name)
    }
}

/// Health of every destination: the configured ones, and any other that
/// still has deliveries or state (removed from the configuration later).
pub async fn destination_health(app: &AppState) -> Result<Vec<DestinationHealth>, ApiError> {
    let now = Utc::now();
    let since = now - chrono::Duration::hours(HEALTH_WINDOW_HOURS);
    let stats = app.store.destination_stats(since).await?;
    let states = app.store.destination_states().await?;
    let mut by: BTreeMap<String, (Option<DestinationStats>, Option<DestinationState>)> =
        BTreeMap::new();
    for d in &app.admin.destinations {
        by.entry(d.name.clone()).or_default();
    }
    for s in stats {
        let name = s.destination.clone();
        by.entry(name).or_default().0 = Some(s);
    }
    for s in states {
        let name = s.name.clone();
        by.entry(name).or_default().1 = Some(s);
    }
    Ok(by
        .into_iter()
        .map(|(name, (stats, state))| {
            let stats = stats.unwrap_or_else(|| DestinationStats {
                destination: name.clone(),
                ..Default::default()
            });
            let state = state.unwrap_or_else(|| DestinationState::new(&name));
            DestinationHealth::new(
                app.admin.configured(&name),
                &stats,
                &state,
                now,
                HEALTH_WINDOW_HOURS,
            )
        })
        .collect())
}

/// One destination's health; 404 when no destination has that name.
pub async fn one_destination_health(
    app: &AppState,
    name: &str,
) -> Result<DestinationHealth, ApiError> {
    destination_health(app)
        .await?
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| ApiError::not_found(format!("there is no destination named {name:?}")))
}

/// What a bulk job does.
pub enum BulkWork {
    /// Replays these dead letters, each with the field overrides, if any.
    Replay {
        ids: Vec<Uuid>,
        overrides: Option<serde_json::Map<String, serde_json::Value>>,
    },
    /// Acts on waiting deliveries: the selected ones, or every one matching
    /// the filter when the job starts.
    Waiting {
        action: WaitingAction,
        filter: WaitingFilter,
        selected: Option<Vec<Uuid>>,
    },
}

/// What to do with waiting deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitingAction {
    /// Due now instead of at their next retry time.
    RetryNow,
    /// Ended as discarded with this reason (recorded on each delivery).
    Cancel(String),
}

impl WaitingAction {
    fn kind(&self) -> &'static str {
        match self {
            WaitingAction::RetryNow => "retry_now",
            WaitingAction::Cancel(_) => "cancel",
        }
    }
}

/// A bulk job running in the background, and how far it got.
#[derive(Debug, Clone, Serialize)]
pub struct BulkProgress {
    pub id: Uuid,
    /// `replay`, `retry_now` or `cancel`.
    pub kind: &'static str,
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    pub total: usize,
    /// Deliveries processed so far.
    pub done: usize,
    /// Of those, changed (replayed as new deliveries, made due, cancelled);
    /// the others had moved on meanwhile (replayed, delivered, in flight).
    pub changed: usize,
    pub finished: bool,
    pub error: Option<String>,
}

impl BulkProgress {
    pub fn percent(&self) -> usize {
        (self.done * 100).checked_div(self.total).unwrap_or(100)
    }
}

/// Bulk jobs started from the dashboard, kept in memory (the most recent
/// [`MAX_JOBS`]); each works in chunks so progress can be shown.
#[derive(Default)]
pub struct BulkJobs {
    jobs: Mutex<HashMap<Uuid, BulkProgress>>,
}

const MAX_JOBS: usize = 50;

/// Waiting deliveries read per page by a bulk job working by filter.
const WAITING_PAGE: usize = 500;

impl BulkJobs {
    fn update(&self, id: Uuid, f: impl FnOnce(&mut BulkProgress)) {
        if let Some(p) = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
        {
            f(p);
        }
    }

    pub fn get(&self, id: Uuid) -> Option<BulkProgress> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn register(&self, kind: &'static str, total: usize, actor: &str) -> Uuid {
        let id = leadrelay_model::new_id();
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.len() >= MAX_JOBS {
            let mut finished: Vec<(DateTime<Utc>, Uuid)> = jobs
                .values()
                .filter(|j| j.finished)
                .map(|j| (j.started_at, j.id))
                .collect();
            finished.sort();
            for (_, old) in finished.into_iter().take(jobs.len() + 1 - MAX_JOBS) {
                jobs.remove(&old);
            }
        }
        jobs.insert(
            id,
            BulkProgress {
                id,
                kind,
                started_by: actor.to_string(),
                started_at: Utc::now(),
                total,
                done: 0,
                changed: 0,
                finished: total == 0,
                error: None,
            },
        );
        id
    }

    fn stop(&self, id: Uuid, e: &crate::store::StoreError) {
        tracing::warn!(job = %id, error = %e, "bulk job stopped");
        self.update(id, |p| {
            p.error = Some(e.to_string());
            p.finished = true;
        });
    }

    /// Starts `work` in the background; returns the job id. A job by
    /// filter counts its deliveries first (the total shown).
    pub async fn start(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        work: BulkWork,
        actor: &str,
    ) -> Result<Uuid, ApiError> {
        let (kind, total) = match &work {
            BulkWork::Replay { ids, .. } => ("replay", ids.len()),
            BulkWork::Waiting {
                action,
                selected: Some(ids),
                ..
            } => (action.kind(), ids.len()),
            BulkWork::Waiting {
                action,
                filter,
                selected: None,
            } => (
                action.kind(),
                usize::try_from(store.count_waiting(filter).await?).unwrap_or(usize::MAX),
            ),
        };
        let id = self.register(kind, total, actor);
        let jobs = self.clone();
        let actor = actor.to_string();
        tokio::spawn(async move {
            let result = match work {
                BulkWork::Replay { ids, overrides } => {
                    jobs.replay(id, &*store, ids, overrides).await
                }
                BulkWork::Waiting {
                    action,
                    filter,
                    selected,
                } => jobs.waiting(id, &*store, action, filter, selected).await,
            };
            match result {
                Ok(()) => {
                    jobs.update(id, |p| p.finished = true);
                    tracing::info!(job = %id, kind, actor, "bulk job finished");
                }
                Err(e) => jobs.stop(id, &e),
            }
        });
        Ok(id)
    }

    async fn replay(
        &self,
        id: Uuid,
        store: &dyn Store,
        ids: Vec<Uuid>,
        overrides: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<(), crate::store::StoreError> {
        for chunk in ids.chunks(REPLAY_CHUNK) {
            let pairs = store.replay(chunk.to_vec(), overrides.clone()).await?;
            self.update(id, |p| {
                p.done += chunk.len();
                p.changed += pairs.len();
            });
        }
        Ok(())
    }

    async fn waiting(
        &self,
        id: Uuid,
        store: &dyn Store,
        action: WaitingAction,
        mut filter: WaitingFilter,
        selected: Option<Vec<Uuid>>,
    ) -> Result<(), crate::store::StoreError> {
        let apply = |ids: Vec<Uuid>| {
            let action = action.clone();
            async move {
                match action {
                    WaitingAction::RetryNow => store.retry_now(ids).await,
                    WaitingAction::Cancel(reason) => store.cancel_waiting(ids, &reason).await,
                }
            }
        };
        if let Some(ids) = selected {
            for chunk in ids.chunks(REPLAY_CHUNK) {
                let n = apply(chunk.to_vec()).await?;
                self.update(id, |p| {
                    p.done += chunk.len();
                    p.changed += n;
                });
            }
            return Ok(());
        }
        // Only what was waiting when the job started: later deliveries are
        // not what the operator counted and confirmed.
        let started = self.get(id).map(|p| p.started_at).unwrap_or_else(Utc::now);
        filter.until = Some(filter.until.map_or(started, |u| u.min(started)));
        let mut cursor = None;
        loop {
            let page = store
                .waiting_deliveries(&filter, cursor, WAITING_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            cursor = Some(last.id);
            let ids: Vec<Uuid> = page.iter().map(|d| d.id).collect();
            let len = ids.len();
            let n = apply(ids).await?;
            self.update(id, |p| {
                p.done += len;
                p.changed += n;
                p.total = p.total.max(p.done);
            });
            if len < WAITING_PAGE {
                break;
            }
        }
        Ok(())
    }
}
