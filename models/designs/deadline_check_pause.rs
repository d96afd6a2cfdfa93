//! **Deadline, check then pause** — the [`deadline`](crate::models::deadline) design with the same
//! clocks and margin, but the worker checks its lease and hands the pie over in two steps, and
//! may stall in between.
//!
//! Claim: at most one pie per order is violated, with any drift and any margin. The worker's
//! check was true when it was made; the stall after it lasts past the queue's wait, the order goes
//! out again, and the worker then hands over a pie on the strength of a stale check. A deadline
//! only helps if checking it and acting on it are one step — which no real worker can promise
//! for a pie on a doorstep (or a write to another system): this is why the fencing check has to
//! happen at the receiver.

use crate::models::clocks::{self, Handover};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "deadline-check-pause",
    summary: "the deadline design where the worker checks its lease, may stall, then hands over",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Violated),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: crate::models::deadline::DESIGN.defaults,
    larger: None,
    world: |p| world(p).into(),
};

/// The model at `p`: the deadline model with a two-step hand-over.
pub fn world(p: &Params) -> clocks::TimedWorld {
    clocks::world(p, Handover::CheckThenPause)
}
