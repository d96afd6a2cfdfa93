//! **Ack-before-work** — the worker acks an order as soon as it receives it and bakes only after
//! the queue confirms the delete; an order not acked within its visibility timeout is handed
//! out again, and a late ack from a worker that no longer holds it is refused.
//!
//! Claim: same verdicts as delete-on-delivery. The confirmed ack makes exactly one worker the
//! baker (at most one pie holds), but once the delete is confirmed the queue has forgotten the
//! order, so a worker crashing mid-bake loses it. (A fire-and-forget ack with a redelivery
//! timeout is a different design — the ack is lost, the timeout fires, two workers bake.)

use crate::models::pizzeria::{self, Door, PizzeriaCfg, QueuePolicy};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "ack-before-work",
    summary: "the worker acks on receipt and bakes only once the queue confirms the delete",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Holds),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Violated),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params::plain(2, 2, 1, 1, 1),
    larger: Some(Params::plain(3, 3, 1, 1, 1)),
    world: |p| world(p).into(),
};

/// The model at `p`.
pub fn world(p: &Params) -> pizzeria::PizzeriaWorld {
    PizzeriaCfg {
        queue: QueuePolicy::AckBeforeWork,
        door: Door::Plain,
        house_may_crash: false,
    }
    .into_world(p)
}
