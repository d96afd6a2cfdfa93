//! **Deadline on the task** — the seed's "don't perform this task at all if you can't get it done
//! by five o'clock on Friday", without synchronised clocks. The queue hands an order out with a
//! lease of [`LEASE_TICKS`](clocks::LEASE_TICKS) ticks, which the worker measures on its own clock
//! from the order's arrival; the queue hands it out again only once its *own* clock says the lease
//! plus a safety margin is over. The worker checks its clock and hands the pie over in one step,
//! and only while the lease is live. The house keeps every pie and tells the queue.
//!
//! Claim: with clocks that drift at most ±20% and a margin of 4 ticks on a 4-tick lease, all three
//! properties hold. Counting whole ticks since the hand-out (see [`clocks`] for how readings are
//! taken), a worker can still hand over in tick *n* only if *(n − 1)(1 − ρ) < L*, so *n ≤ 5*; the
//! queue can hand the order out again in tick *n* only if *(n + 1)(1 + ρ) ≥ L + M*, so *n ≥ 6*.
//! No tick allows both, so a stalled worker always finds its lease over before the order can be
//! anywhere else: the stall that breaks ack-after-work is harmless here. With a margin of 3 the
//! two meet in tick 5 (`--margin 3` is violated). Roughly, the margin must cover how far the
//! clocks can drift apart over a lease, *2ρL/(1 − ρ)*, plus the hand-out and the "pie is here"
//! message. Only the clocks' *rates* are bounded; no clock is ever compared with another.
//!
//! What else it leans on: messages arrive within the tick they are sent in, none is lost, and the
//! worker's lease runs from the order's arrival even if the worker is paused then. A lost "pie is
//! here" would make the queue hand out an order that was delivered (`--losses 1` is violated):
//! deadlines fix stalled workers, not lost acknowledgements.

use crate::models::clocks::{self, Handover};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "deadline",
    summary: "leased hand-out; the worker checks its own clock and hands over in one step; the margin covers the drift",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Holds),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params {
        orders: 1,
        workers: 2,
        crashes: 1,
        losses: 0,
        stalls: 1,
        drift: Some(20),
        margin: Some(4),
        window: None,
    },
    larger: None,
    world: |p| world(p).into(),
};

/// The model at `p`.
pub fn world(p: &Params) -> clocks::TimedWorld {
    clocks::world(p, Handover::Atomic)
}
