//! Fake SaaS vendors for tests, benchmarks and for trying leadrelay without
//! vendor accounts (`leadrelay fake <vendor>`).
//!
//! Each fake is written from the vendor's public API reference and enforces
//! what the real service enforces: authentication, paths and methods,
//! required fields, batch sizes, rate limits with the vendor's own 429 bodies
//! and headers, and its error shapes. A connector that passes against a fake
//! should therefore work against the real service. Each fake keeps the
//! records written to it so tests can assert the resulting vendor state, and
//! [`common::Faults`] lets a test inject failures on command.

// Handlers and their gates refuse a request with the answer itself
// (`Result<_, Response>`): a response is large, and boxing it in a test fake
// buys nothing.
#![allow(clippy::result_large_err)]

pub mod apollo;
pub mod common;
pub mod google;
pub mod hubspot;
pub mod lemlist;
pub mod mailshake;
pub mod marketing_cloud;
pub mod pipedrive;
pub mod replyio;
pub mod salesforce;
pub mod salesloft;
pub mod slack;
pub mod smartlead;
pub mod twilio;
pub mod woodpecker;
