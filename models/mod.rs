//! Stateright actor models of every delivery design, one file per design, and the machinery
//! to check them for the one invariant in [`crate::ledger`].
//!
//! Each design file says what it claims and why in its doc comment, builds its [`world::World`]
//! from [`Params`], and lists the verdicts it expects at its default size. Those expectations
//! are asserted by `cargo test` against freshly computed verdicts — never printed from a table.

pub mod check;
pub mod explore;
pub mod pizzeria;
pub mod proofs;
pub mod world;

pub mod ack_after_work;
pub mod ack_before_work;
pub mod delete_on_delivery;
pub mod idempotent_house;

use serde::Serialize;
use std::fmt;

pub use check::{CheckError, CheckOptions, CheckReport, Verdict};

/// The sizes and fault budget a design is checked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Params {
    pub orders: u8,
    pub workers: u8,
    pub crashes: u8,
    pub losses: u8,
    pub stalls: u8,
}

/// The largest value each size may take: beyond these even small designs take minutes or
/// gigabytes, and no counterexample needs them.
pub const MAX_ORDERS: u8 = 4;
pub const MAX_WORKERS: u8 = 4;
pub const MAX_FAULTS: u8 = 3;

impl Params {
    /// Checks the sizes are in range; the error names the valid range.
    pub fn validate(&self) -> Result<(), CheckError> {
        let range = |name: &'static str, value: u8, min: u8, max: u8| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(CheckError::OutOfRange {
                    name,
                    value: value as u64,
                    min: min as u64,
                    max: max as u64,
                })
            }
        };
        range("orders", self.orders, 1, MAX_ORDERS)?;
        range("workers", self.workers, 1, MAX_WORKERS)?;
        range("crashes", self.crashes, 0, MAX_FAULTS)?;
        range("losses", self.losses, 0, MAX_FAULTS)?;
        range("stalls", self.stalls, 0, MAX_FAULTS)?;
        Ok(())
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} orders, {} workers, ≤{} crashes, ≤{} lost messages, ≤{} stalls",
            self.orders, self.workers, self.crashes, self.losses, self.stalls
        )
    }
}

/// A delivery design: its name, what it is, what we expect of it, and how to check it.
pub struct Design {
    /// The name used on the command line, e.g. `ack-after-work`.
    pub name: &'static str,
    /// One line: what the design does.
    pub summary: &'static str,
    /// The verdict each property should get at the default size.
    pub expected: &'static [(&'static str, Verdict)],
    /// The default size: big enough for every counterexample, small enough for seconds.
    pub defaults: Params,
    /// Model-checks the design at `params`.
    pub check: fn(&Params, &CheckOptions) -> Result<CheckReport, CheckError>,
    /// Replays an explorer path (as in a counterexample) and says how it ends.
    pub ending: fn(&Params, &str) -> Option<check::Ending>,
    /// Serves Stateright's explorer for the design at `params` on `addr` (blocks).
    pub explore: fn(&Params, std::net::SocketAddr),
}

impl Design {
    /// The expected verdict of `property` at the default size.
    pub fn expected_verdict(&self, property: &str) -> Option<Verdict> {
        self.expected
            .iter()
            .find(|(name, _)| *name == property)
            .map(|(_, v)| *v)
    }
}

/// Every design, in the order the table lists them.
pub fn designs() -> Vec<&'static Design> {
    vec![
        &delete_on_delivery::DESIGN,
        &ack_before_work::DESIGN,
        &ack_after_work::DESIGN,
        &idempotent_house::DESIGN,
    ]
}

/// Looks a design up by name; the error lists the valid names.
pub fn find(name: &str) -> Result<&'static Design, CheckError> {
    designs()
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| CheckError::UnknownDesign {
            name: name.to_string(),
            valid: designs()
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}
