//! Alerts: when a destination's failure rate over the window crosses the
//! threshold, or dead letters pile up, or a destination answers 410 and is
//! disabled, one alert goes out per incident — and one recovery notice when
//! it clears.
//!
//! Issues (dead letters of one destination with one cause, see
//! [`super::issues`]) raise an alert of their own when they open and a
//! notice when they resolve, each with a link to the issue's dashboard
//! page; both wait `issue_debounce` so a blip raises nothing. Their state
//! is one store document changed by compare-and-set, and each notice
//! carries an idempotency key derived from the issue, so several nodes or
//! a restart never send one twice.
//!
//! An alert is itself an event (`leadrelay.alert`, no personal data) written
//! to the outbox for the `alerts.notify` destinations, so alerts are durable
//! and retried like any delivery. Incident state lives in the store, so a
//! restart neither repeats nor forgets an open incident.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::Utc;
use leadrelay_model::{Event, EventType, Origin};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::AlertsConfig;
use crate::store::{DestinationStats, IdempotencyKey, IngestItem, Store, StoreError};

/// The event type of alerts and recovery notices.
pub const ALERT_EVENT_TYPE: &str = "leadrelay.alert";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Incident {
    since: chrono::DateTime<Utc>,
    message: String,
}

/// The store document holding the issues alerted as open.
pub const ISSUES_STATE_KEY: &str = "alerts.issues";

/// An issue an alert went out for, until its resolved notice does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenIssue {
    destination: String,
    cause: String,
    /// The issue's first dead letter when it opened (names the incident).
    opened_at: chrono::DateTime<Utc>,
    /// When the issue was last found gone (resolved once gone for the
    /// debounce time).
    #[serde(default)]
    gone_since: Option<chrono::DateTime<Utc>>,
}

/// An issue alert or notice to send.
struct IssueNotice {
    key: String,
    destination: String,
    status: &'static str,
    message: String,
    details: serde_json::Value,
    /// Names this notice for the idempotency of its event.
    idempotency: String,
}

pub struct AlertMonitor {
    store: Arc<dyn Store>,
    config: AlertsConfig,
    destinations: Vec<String>,
    enabled: BTreeSet<String>,
    /// `server.public_url`, for links to the dashboard.
    public_url: String,
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
            public_url: String::new(),
        }
    }

    /// Links in issue alerts point at this address (`server.public_url`).
    pub fn with_public_url(mut self, url: &str) -> Self {
        self.public_url = url.trim_end_matches('/').to_string();
        self
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
        if self.config.issues && !self.targets().is_empty() {
            self.check_issues().await?;
        }
        Ok(())
    }

    /// Opens and resolves issue incidents: compares the open issues with
    /// the stored document, sends what changed (idempotently), then stores
    /// the new document if no other node changed it meanwhile (else the
    /// next round starts again from that node's version).
    pub async fn check_issues(&self) -> Result<(), StoreError> {
        let debounce = chrono::Duration::from_std(self.config.issue_debounce.get())
            .unwrap_or(chrono::Duration::minutes(5));
        let (issues, capped) = super::issues::open_issues(self.store.as_ref()).await?;
        let stored = self.store.kv_get(ISSUES_STATE_KEY).await?;
        let mut state: BTreeMap<String, OpenIssue> = stored
            .as_deref()
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        let before = state.clone();
        let now = Utc::now();
        let mut notices = Vec::new();
        let present: BTreeMap<&str, &super::issues::Issue> =
            issues.iter().map(|i| (i.key.as_str(), i)).collect();
        for issue in &issues {
            match state.get_mut(&issue.key) {
                Some(open) => open.gone_since = None,
                None if !issue.muted && now - issue.first_seen >= debounce => {
                    let url = self.issue_url(&issue.key);
                    notices.push(IssueNotice {
                        key: issue.key.clone(),
                        destination: issue.destination.clone(),
                        status: "firing",
                        message: format!(
                            "{}: new issue — {} ({} dead letter{}, {} {} affected, since {})",
                            issue.destination,
                            issue.cause,
                            issue.count,
                            if issue.count == 1 { "" } else { "s" },
                            issue.people,
                            if issue.people == 1 {
                                "person"
                            } else {
                                "people"
                            },
                            issue.first_seen.format("%Y-%m-%d %H:%M UTC"),
                        ),
                        details: json!({
                            "issue": issue.key, "cause": issue.cause, "class": issue.class,
                            "count": issue.count, "people": issue.people,
                            "first_seen": issue.first_seen, "url": url,
                        }),
                        idempotency: format!(
                            "issue:{}:{}:opened",
                            issue.key,
                            issue.first_seen.timestamp_millis()
                        ),
                    });
                    state.insert(
                        issue.key.clone(),
                        OpenIssue {
                            destination: issue.destination.clone(),
                            cause: issue.cause.clone(),
                            opened_at: issue.first_seen,
                            gone_since: None,
                        },
                    );
                }
                None => {}
            }
        }
        // A capped scan did not see every open dead letter: an issue missing
        // from it may still be open, so nothing resolves until it is whole.
        let gone: Vec<String> = state
            .keys()
            .filter(|k| !capped && !present.contains_key(k.as_str()))
            .cloned()
            .collect();
        for key in gone {
            let since = state
                .get_mut(&key)
                .map(|open| *open.gone_since.get_or_insert(now));
            if since.is_none_or(|since| now - since < debounce) {
                continue;
            }
            let Some(open) = state.remove(&key) else {
                continue;
            };
            notices.push(IssueNotice {
                status: "resolved",
                message: format!(
                    "{}: issue resolved — {} (open since {})",
                    open.destination,
                    open.cause,
                    open.opened_at.format("%Y-%m-%d %H:%M UTC"),
                ),
                details: json!({
                    "issue": key, "cause": open.cause, "opened_at": open.opened_at,
                    "url": self.issue_url(&key),
                }),
                idempotency: format!("issue:{key}:{}:resolved", open.opened_at.timestamp_millis()),
                destination: open.destination,
                key,
            });
        }
        if state == before {
            return Ok(());
        }
        // Sent before the document is stored: a crash in between sends
        // again next round, and the idempotency key makes that a no-op.
        for n in notices {
            tracing::warn!(destination = n.destination, issue = %n.key, status = n.status, "issue alert: {}", n.message);
            self.send_keyed(
                &n.destination,
                "issue",
                n.status,
                &n.message,
                n.details,
                Some(n.idempotency),
            )
            .await?;
        }
        let value = serde_json::to_string(&state).unwrap_or_else(|_| "{}".into());
        self.store
            .kv_compare_and_set(ISSUES_STATE_KEY, stored.as_deref(), &value)
            .await?;
        Ok(())
    }

    /// The dashboard page of an issue.
    fn issue_url(&self, key: &str) -> String {
        format!("{}/ui/issues/{key}", self.public_url)
    }

    fn targets(&self) -> Vec<String> {
        self.config
            .notify
            .iter()
            .filter(|n| self.enabled.contains(*n))
            .cloned()
            .collect()
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
        self.send_keyed(destination, kind, status, message, details, None)
            .await
    }

    /// Writes an alert event for the `notify` destinations; with a key, a
    /// second event under the same key (within 24 hours) is not stored.
    async fn send_keyed(
        &self,
        destination: &str,
        kind: &str,
        status: &str,
        message: &str,
        details: serde_json::Value,
        idempotency: Option<String>,
    ) -> Result<(), crate::store::StoreError> {
        let targets = self.targets();
        if targets.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut data = serde_json::Map::new();
        data.insert("destination".into(), json!(destination));
        data.insert("alert".into(), json!(kind));
        data.insert("status".into(), json!(status));
        data.insert("message".into(), json!(message));
        if let Some(url) = details.get("url").cloned() {
            data.insert("url".into(), url);
        }
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
                idempotency: idempotency.map(|key| IdempotencyKey {
                    scope: "alerts".into(),
                    key,
                    fingerprint: None,
                }),
            })
            .await
            .map(|_| ())
    }
}
