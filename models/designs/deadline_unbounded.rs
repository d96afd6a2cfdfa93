//! **Deadline, unbounded drift** — the [`deadline`](crate::models::deadline) design with the same
//! margin, where nothing bounds how slowly a clock may run: at "±100%" a slow clock stands still.
//!
//! Claim: at most one pie per order is violated, whatever the margin. A worker whose clock has
//! stopped believes its lease is live forever; after its stall it delivers, long after the queue
//! gave the order out again. This is the seed's caveat made concrete: deadlines need no
//! synchronised clocks, but they do need the *rates* of the clocks to be bounded.

use crate::models::clocks::{self, Handover};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict, MAX_DRIFT};

pub static DESIGN: Design = Design {
    name: "deadline-unbounded",
    summary: "the deadline design when a clock may stand still: no margin is enough",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Violated),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params {
        drift: Some(MAX_DRIFT),
        ..crate::models::deadline::DESIGN.defaults
    },
    larger: None,
    world: |p| world(p).into(),
};

/// The model at `p`: the deadline model itself.
pub fn world(p: &Params) -> clocks::TimedWorld {
    clocks::world(p, Handover::Atomic)
}
