//! **Record first, then accept** — the idempotent house, except that recording the order ID (in
//! durable storage) and accepting the pie are two steps, one pie at a time, and the house may
//! crash between them: it records the ID, then keeps the pie in the next step.
//!
//! Claim: at most one pie per order holds, but every order getting a pie is violated. If the
//! house crashes after recording and before accepting, the pie is gone, and every redelivery is
//! turned away as a duplicate: the order never gets its pie. Recording the intent is not the
//! effect; the record and the effect must commit together.

use crate::models::pizzeria::{self, Door, PizzeriaCfg, QueuePolicy};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "record-first",
    summary: "the idempotent house, but it records the ID, then accepts the pie, in two steps",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Holds),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Violated),
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
        door: Door::RecordFirst,
        house_may_crash: true,
    }
    .into_world(p)
}
