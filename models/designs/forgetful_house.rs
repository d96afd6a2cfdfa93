//! **Forgetful house** — the idempotent house, except that its memory of order IDs is volatile:
//! it is not saved to storage, so a house that crashes and restarts remembers nothing.
//!
//! Claim: at most one pie per order is violated. A pie is kept and recorded in memory; the house
//! crashes and restarts empty; a redelivery of the same order (after a stall) finds no record and
//! is kept again. Dedup state must outlive the receiver's restarts as long as redeliveries can
//! arrive.

use crate::models::pizzeria::{self, Door, PizzeriaCfg, QueuePolicy};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "forgetful-house",
    summary: "the idempotent house, but its memory of order IDs is lost when it restarts",
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
        door: Door::Forgetful,
        house_may_crash: true,
    }
    .into_world(p)
}
