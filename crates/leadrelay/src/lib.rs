//! leadrelay: a self-hosted lead and sales-event integration engine.
//!
//! The data flow, as the module tree reads:
//!
//! - [`http`]: public endpoints (forms, hooks, API), admin API, dashboard, ops.
//! - [`ingest`]: parse, validate, enrich (attribution, hashed IP, consent,
//!   idempotency) and route an incoming submission into an [`store::IngestItem`].
//! - [`routing`]: which destinations an event goes to.
//! - [`store`]: ONE transaction writes the event and its outbox rows; the
//!   2xx goes out only after it commits.
//! - [`delivery`]: workers claim due deliveries under a lease, check consent,
//!   rate-limit, send through a [`connectors`] connector, classify the result,
//!   and retry, dead-letter or record success; alerts watch failure rates.
//! - [`connectors`]: one folder per destination kind; [`mapping`] turns an
//!   event and its golden contact into a vendor's fields for the CRM ones.
//! - [`sources`]: the configured vendor webhooks (`/v1/hooks/{source}`),
//!   built by the `leadrelay-sources` library.
//! - [`config`], [`cli`], [`telemetry`]: the edges.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod contacts;
pub mod delivery;
pub mod error;
pub mod feedback;
pub mod http;
pub mod ingest;
pub mod mapping;
pub mod metrics;
pub mod pipeline;
pub mod privacy;
pub mod private_fs;
pub mod redact;
pub mod reports;
pub mod routing;
pub mod simulate;
pub mod sources;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod thin_push;

/// Installs the process-wide TLS crypto provider (ring). Idempotent.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
