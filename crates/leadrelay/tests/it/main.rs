//! Integration tests: one test binary (fast to link), real HTTP on port 0,
//! real SQLite files, a real receiver, and the real `leadrelay` binary.

mod binary;
mod crm_binary;
mod crm_hubspot;
mod crm_pipedrive;
mod crm_salesforce;
mod delivery;
mod ingest;
mod support;
