//! onepie: which message-delivery designs really give exactly one effect per message.
//!
//! - [`ledger`]: the one invariant ("exactly one pie per order") and its classifier.
//! - [`dedup`]: the sans-IO decision core of a deduplicating receiver.
//! - [`inbox`]: the deduplicating receiver a service uses: in memory, SQLite (feature `sqlite`)
//!   or PostgreSQL (feature `postgres`).
//! - `http` (feature `http`): Idempotency-Key for HTTP services, a tower layer on the inbox.
//! - `testkit` (feature `testkit`): the property-test harness and its pie log.
//! - `models` (feature `models`): Stateright actor models of every delivery design (files
//!   under `models/`) and onepie's search engine over them.
//! - `conform` (feature `conform`): the checker's house steps replayed on the real stores.
//! - `cli` (feature `cli`, the default): the `onepie` command.
//!
//! Dependency direction, enforced by the features: `models`, `testkit` and `cli` use the core
//! (`ledger`, `dedup`, `inbox`); the core uses none of them, so
//! `default-features = false, features = ["sqlite"]` builds the inbox without Stateright or clap.

pub mod dedup;
pub mod inbox;
pub mod ledger;

#[cfg(feature = "http")]
pub mod http;

#[cfg(feature = "testkit")]
pub mod testkit;

#[cfg(feature = "models")]
#[path = "../models/mod.rs"]
pub mod models;

#[cfg(feature = "conform")]
pub mod conform;

#[cfg(feature = "cli")]
pub mod cli;
