//! onepie: which message-delivery designs really give exactly one effect per message.
//!
//! - [`ledger`]: the one invariant ("exactly one pie per order") and its classifier.
//! - [`dedup`]: the sans-IO decision core of a deduplicating receiver.
//! - [`models`]: Stateright actor models of every delivery design (files under `models/`).
//!
//! Dependency direction: `models` uses `ledger` and `dedup`; the core never uses `models`.

pub mod cli;
pub mod dedup;
pub mod harness;
pub mod inbox;
pub mod ledger;

#[path = "../models/mod.rs"]
pub mod models;
