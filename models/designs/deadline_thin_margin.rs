//! **Deadline, thin margin** — the [`deadline`](crate::models::deadline) design with the same clocks
//! (±20%) but a margin of one tick, less than the two ticks the clocks can drift apart over a
//! 4-tick lease (*2ρL/(1 − ρ)*), let alone the hand-offs on top.
//!
//! Claim: at most one pie per order is violated. The counterexample needs no clock to misbehave
//! beyond its bound: the queue's clock runs fast and the stalled worker's slow, so the queue's
//! "lease plus margin" is over while the worker's clock still says its lease is live; the order
//! goes out again and both pies arrive. Same model as `deadline`, one parameter changed.

use crate::models::clocks::{self, Handover};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "deadline-thin-margin",
    summary:
        "the deadline design with a margin smaller than the clocks can drift apart over a lease",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Violated),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params {
        margin: Some(1),
        ..crate::models::deadline::DESIGN.defaults
    },
    larger: None,
    world: |p| world(p).into(),
};

/// The model at `p`: the deadline model itself.
pub fn world(p: &Params) -> clocks::TimedWorld {
    clocks::world(p, Handover::Atomic)
}
