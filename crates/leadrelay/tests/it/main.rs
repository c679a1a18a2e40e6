//! Integration tests: one test binary (fast to link), real HTTP on port 0,
//! real SQLite files, a real receiver, and the real `leadrelay` binary.

mod binary;
mod delivery;
mod hooks;
mod ingest;
mod multinode;
mod store;
mod support;
