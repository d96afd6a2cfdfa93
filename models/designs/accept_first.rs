//! **Accept first, then record** — the idempotent house, except that accepting the pie and
//! recording the order ID (in durable storage) are two steps, one pie at a time, and the house
//! may crash between them: it keeps the pie, then records the ID in the next step.
//!
//! Claim: at most one pie per order is violated. If the house crashes after keeping the pie and
//! before recording it, a redelivery (after a stall) finds no record and is kept too: two pies.
//! With [`record-first`](crate::models::record_first), this is the pair of ways a two-step dedup fails:
//! at most once, or at least once, never exactly once.

use crate::models::pizzeria::{self, Door, PizzeriaCfg, QueuePolicy};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "accept-first",
    summary: "the idempotent house, but it accepts the pie, then records the ID, in two steps",
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
        door: Door::AcceptFirst,
        house_may_crash: true,
    }
    .into_world(p)
}
