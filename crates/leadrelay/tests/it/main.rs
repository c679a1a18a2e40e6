//! Integration tests: one test binary (fast to link), real HTTP on port 0,
//! real SQLite files, a real receiver, and the real `leadrelay` binary.

mod admin;
mod api_events;
mod binary;
mod connections;
mod contacts;
mod crm_binary;
mod crm_hubspot;
mod crm_pipedrive;
mod crm_salesforce;
mod csv;
mod delivery;
mod email;
mod first_run;
mod hooks;
mod ingest;
mod lemlist;
mod multinode;
mod notify_support;
mod openapi;
mod pipeline;
mod poison;
mod privacy;
mod request_headers;
mod secrets;
mod sheets;
mod simulate;
mod slack;
mod sms;
mod store;
mod support;
mod sync;
mod viewer_masking;
