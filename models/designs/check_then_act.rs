//! **Check-then-act house** — the idempotent house, except that looking the order ID up and
//! recording it are two steps: the house looks the ID up when a pie arrives, and records it (and
//! keeps the pie) in a second step, noted to itself. It has two doors, so a second pie can be
//! looked up in between. Both steps use the library's [`crate::dedup::decide`] and memory in
//! durable storage; only the atomicity is gone.
//!
//! Claim: at most one pie per order is violated. After a stall the order is delivered twice; both
//! pies are looked up before either is recorded, both lookups say "not seen", and both pies are
//! kept. `decide` must run in the same step (transaction) as the write it implies.

use crate::models::pizzeria::{self, Door, PizzeriaCfg, QueuePolicy};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "check-then-act",
    summary: "the idempotent house, but looking the ID up and recording it are two steps",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Violated),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params {
        ..crate::models::idempotent_house::DESIGN.defaults
    },
    larger: None,
    world: |p| world(p).into(),
};

/// The model at `p`.
pub fn world(p: &Params) -> pizzeria::PizzeriaWorld {
    PizzeriaCfg {
        queue: QueuePolicy::AckAfterWork,
        door: Door::CheckThenAct,
        house_may_crash: true,
    }
    .into_world(p)
}
