//! What the admin API and the dashboard share: key verification, privacy,
//! the configured destinations, destination health, and bulk replay jobs
//! with their progress.

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
use crate::store::{DestinationState, DestinationStats, Store};

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
    pub jobs: Arc<ReplayJobs>,
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
            jobs: Arc::new(ReplayJobs::default()),
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

/// A bulk replay running in the background, and how far it got.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayProgress {
    pub id: Uuid,
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    pub total: usize,
    /// Dead letters processed so far.
    pub done: usize,
    /// Of those, replayed as new deliveries (the others were replayed
    /// meanwhile or are no longer dead).
    pub replayed: usize,
    pub finished: bool,
    pub error: Option<String>,
}

impl ReplayProgress {
    pub fn percent(&self) -> usize {
        (self.done * 100).checked_div(self.total).unwrap_or(100)
    }
}

/// Bulk replays started from the dashboard, kept in memory (the most recent
/// [`MAX_JOBS`]); each replays in chunks so progress can be shown.
#[derive(Default)]
pub struct ReplayJobs {
    jobs: Mutex<HashMap<Uuid, ReplayProgress>>,
}

const MAX_JOBS: usize = 50;

impl ReplayJobs {
    fn update(&self, id: Uuid, f: impl FnOnce(&mut ReplayProgress)) {
        if let Some(p) = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
        {
            f(p);
        }
    }

    pub fn get(&self, id: Uuid) -> Option<ReplayProgress> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Starts replaying `ids` in the background (each replay with the
    /// field `overrides`, if any); returns the job id.
    pub fn start(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        ids: Vec<Uuid>,
        overrides: Option<serde_json::Map<String, serde_json::Value>>,
        actor: &str,
    ) -> Uuid {
        let id = leadrelay_model::new_id();
        {
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
                ReplayProgress {
                    id,
                    started_by: actor.to_string(),
                    started_at: Utc::now(),
                    total: ids.len(),
                    done: 0,
                    replayed: 0,
                    finished: ids.is_empty(),
                    error: None,
                },
            );
        }
        let jobs = self.clone();
        let actor = actor.to_string();
        tokio::spawn(async move {
            for chunk in ids.chunks(REPLAY_CHUNK) {
                match store.replay(chunk.to_vec(), overrides.clone()).await {
                    Ok(pairs) => jobs.update(id, |p| {
                        p.done += chunk.len();
                        p.replayed += pairs.len();
                    }),
                    Err(e) => {
                        tracing::warn!(job = %id, error = %e, "bulk replay stopped");
                        jobs.update(id, |p| {
                            p.error = Some(e.to_string());
                            p.finished = true;
                        });
                        return;
                    }
                }
            }
            jobs.update(id, |p| p.finished = true);
            tracing::info!(job = %id, actor, "bulk replay finished");
        });
        id
    }
}
