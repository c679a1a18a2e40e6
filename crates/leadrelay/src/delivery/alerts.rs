//! Alerts: when a destination's failure rate over the window crosses the
//! threshold, or dead letters pile up, or a destination answers 410 and is
//! disabled, one alert goes out per incident — and one recovery notice when
//! it clears.
//!
//! An alert is itself an event (`leadrelay.alert`, no personal data) written
//! to the outbox for the `alerts.notify` destinations, so alerts are durable
//! and retried like any delivery. Incident state lives in the store, so a
//! restart neither repeats nor forgets an open incident.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use leadrelay_model::{Event, EventType, Origin};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::AlertsConfig;
use crate::store::{DestinationStats, IngestItem, Store};

/// The event type of alerts and recovery notices.
pub const ALERT_EVENT_TYPE: &str = "leadrelay.alert";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Incident {
    since: chrono::DateTime<Utc>,
    message: String,
}

pub struct AlertMonitor {
    store: Arc<dyn Store>,
    config: AlertsConfig,
    destinations: Vec<String>,
    enabled: BTreeSet<String>,
}

impl AlertMonitor {
    pub fn new(
        store: Arc<dyn Store>,
        config: AlertsConfig,
        destinations: Vec<String>,
        enabled: BTreeSet<String>,
    ) -> Self {
        Self {
            store,
            config,
            destinations,
            enabled,
        }
    }

    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.check_interval.get()) => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = self.evaluate().await {
                tracing::warn!(error = %e, "alert evaluation failed");
            }
        }
    }

    /// Checks every destination once.
    pub async fn evaluate(&self) -> Result<(), crate::store::StoreError> {
        let window = chrono::Duration::from_std(self.config.window.get())
            .unwrap_or(chrono::Duration::minutes(15));
        let stats = self.store.destination_stats(Utc::now() - window).await?;
        for name in &self.destinations {
            let s = stats
                .iter()
                .find(|s| &s.destination == name)
                .cloned()
                .unwrap_or_else(|| DestinationStats {
                    destination: name.clone(),
                    ..Default::default()
                });
            self.check_failure_rate(&s).await?;
            self.check_dead_letters(&s).await?;
        }
        Ok(())
    }

    async fn check_failure_rate(
        &self,
        s: &DestinationStats,
    ) -> Result<(), crate::store::StoreError> {
        let judged = s.window_succeeded + s.window_failed;
        let rate = s.success_rate().map(|r| 1.0 - r);
        let firing = judged >= u64::from(self.config.min_attempts)
            && rate.is_some_and(|r| r > self.config.failure_rate);
        let cleared = rate.is_some_and(|r| r <= self.config.failure_rate);
        let message = format!(
            "{}: {:.0}% of {judged} attempts failed in the last {} (threshold {:.0}%)",
            s.destination,
            rate.unwrap_or(0.0) * 100.0,
            humantime::format_duration(self.config.window.get()),
            self.config.failure_rate * 100.0
        );
        self.transition(
            &s.destination,
            "failure_rate",
            firing,
            cleared,
            &message,
            json!({
                "failure_rate": rate,
                "attempts": judged,
                "backlog": s.backlog(),
            }),
        )
        .await
    }

    async fn check_dead_letters(
        &self,
        s: &DestinationStats,
    ) -> Result<(), crate::store::StoreError> {
        let threshold = u64::from(self.config.dead_letters.max(1));
        let firing = s.window_dead >= threshold;
        let message = format!(
            "{}: {} deliveries dead-lettered in the last {} ({} dead letters in total)",
            s.destination,
            s.window_dead,
            humantime::format_duration(self.config.window.get()),
            s.dead
        );
        self.transition(
            &s.destination,
            "dead_letters",
            firing,
            !firing,
            &message,
            json!({
                "dead_letters_in_window": s.window_dead,
                "dead_letters_total": s.dead,
            }),
        )
        .await
    }

    /// Opens or closes an incident, sending one notice for each change.
    async fn transition(
        &self,
        destination: &str,
        kind: &str,
        firing: bool,
        cleared: bool,
        message: &str,
        details: serde_json::Value,
    ) -> Result<(), crate::store::StoreError> {
        let key = format!("alert:{destination}:{kind}");
        let open: Option<Incident> = self
            .store
            .kv_get(&key)
            .await?
            .and_then(|v| serde_json::from_str(&v).ok());
        match (open, firing, cleared) {
            (None, true, _) => {
                let incident = Incident {
                    since: Utc::now(),
                    message: message.to_string(),
                };
                self.store
                    .kv_set(&key, &serde_json::to_string(&incident).unwrap_or_default())
                    .await?;
                tracing::error!(destination, kind, "alert: {message}");
                self.send(destination, kind, "firing", message, details)
                    .await
            }
            (Some(incident), false, true) => {
                self.store.kv_set(&key, "null").await?;
                let msg = format!(
                    "recovered: {destination} ({kind}) since {}",
                    incident.since.to_rfc3339()
                );
                tracing::warn!(destination, kind, "alert resolved");
                self.send(destination, kind, "resolved", &msg, details)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Opens or closes the incident of a KPI below its target (destination
    /// `kpis`, alert kind the KPI's name): one alert, then one recovery notice.
    pub async fn kpi_transition(
        &self,
        kpi: &str,
        firing: bool,
        cleared: bool,
        message: &str,
        details: serde_json::Value,
    ) -> Result<(), crate::store::StoreError> {
        self.transition("kpis", kpi, firing, cleared, message, details)
            .await
    }

    /// Raised by the dispatcher when a destination answers 410 Gone.
    pub async fn destination_disabled(&self, destination: &str, reason: &str) {
        let message = format!(
            "{destination} was disabled: {reason}. Fix the endpoint, re-enable it, then replay its dead letters."
        );
        if let Err(e) = self
            .send(destination, "disabled", "firing", &message, json!({}))
            .await
        {
            tracing::warn!(error = %e, "sending the alert failed");
        }
    }

    async fn send(
        &self,
        destination: &str,
        kind: &str,
        status: &str,
        message: &str,
        details: serde_json::Value,
    ) -> Result<(), crate::store::StoreError> {
        let targets: Vec<String> = self
            .config
            .notify
            .iter()
            .filter(|n| self.enabled.contains(*n))
            .cloned()
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut data = serde_json::Map::new();
        data.insert("destination".into(), json!(destination));
        data.insert("alert".into(), json!(kind));
        data.insert("status".into(), json!(status));
        data.insert("message".into(), json!(message));
        data.insert("details".into(), details);
        let event = Event::internal(
            EventType::Custom(ALERT_EVENT_TYPE.into()),
            Origin::system("alerts"),
            Default::default(),
            data,
            now,
        );
        self.store
            .ingest_one(IngestItem {
                event,
                destinations: targets,
                idempotency: None,
            })
            .await
            .map(|_| ())
    }
}
