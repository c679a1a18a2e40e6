//! The sales feedback loop: sales rate a lead's quality (1 poor … 5 good)
//! from their CRM (a disposition / lead-status field arriving by webhook),
//! from Slack (rating buttons on the handoff message) or from the dashboard,
//! and the ratings are rolled up by source, campaign and score band beside
//! each person's deal outcome, so the calibration report can show where
//! the scoring rules over- or under-rate.
//!
//! - [`rate`]: a rating from Slack or the dashboard is stored as a
//!   `lead.rated` event (routed like any other event), so every rating has
//!   one path into the rollups and an audit trail.
//! - [`pass`]: the background pass that reads new events after its own
//!   cursor and keeps the feedback rollups (`store::feedback`) in step.
//! - [`report`]: the `feedback` and `calibration` reports.
//! - [`slack`]: Slack interactivity (signed requests, `block_actions`).

pub mod config;
pub mod pass;
pub mod report;
pub mod slack;

use chrono::{DateTime, Utc};
use leadrelay_model::{EventType, Origin};
use serde_json::{Map, json};
use uuid::Uuid;

pub use config::FeedbackConfig;

use crate::ingest::Ingestor;
use crate::store::{IdempotencyKey, IngestItem, RATING_MAX, RATING_MIN, Store, StoreError};

/// The event type of a rating.
pub const RATED: &str = "lead.rated";

/// One rating to record.
#[derive(Debug, Clone)]
pub struct Rating {
    pub contact_id: Uuid,
    pub rating: u8,
    /// `slack`, `dashboard`, …
    pub via: String,
    /// Who rated, when known.
    pub by: Option<String>,
    /// An idempotency key (the same click delivered twice rates once).
    pub key: Option<String>,
}

/// Why a rating was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RateError {
    #[error("rating: {0} is not 1 to 5")]
    OutOfRange(u8),
    #[error("there is no contact {0}")]
    NoContact(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stores a rating as a `lead.rated` event about the contact. Returns the
/// event's id.
pub async fn rate(
    store: &dyn Store,
    ingestor: &Ingestor,
    r: Rating,
    now: DateTime<Utc>,
) -> Result<Uuid, RateError> {
    if !(RATING_MIN..=RATING_MAX).contains(&r.rating) {
        return Err(RateError::OutOfRange(r.rating));
    }
    let contact = store
        .get_contact(r.contact_id)
        .await?
        .ok_or(RateError::NoContact(r.contact_id))?;
    let mut data = Map::new();
    data.insert("rating".into(), json!(r.rating));
    data.insert("via".into(), json!(r.via));
    data.insert("rated_by".into(), json!(r.by));
    let mut event = leadrelay_model::Event::internal(
        EventType::parse(RATED).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        Origin::system("feedback"),
        contact.data.clone(),
        data,
        now,
    );
    let destinations = ingestor.routes().route_and_record(&mut event);
    let id = store
        .ingest_one(IngestItem {
            event,
            destinations,
            idempotency: r.key.map(|key| IdempotencyKey {
                scope: "feedback".into(),
                key,
                fingerprint: None,
            }),
        })
        .await?;
    Ok(id)
}
