//! Integration tests: one test binary (fast to link), real HTTP on port 0,
//! real SQLite files, a real receiver, and the real `leadrelay` binary.

mod admin;
mod binary;
mod delivery;
mod ingest;
mod support;
