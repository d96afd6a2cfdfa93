//! **Ack-after-work with a redelivery timeout** (SQS's visibility timeout): the worker acks only
//! once the house has the pie; until then the queue hands the order out again each time its
//! visibility timeout fires.
//!
//! Claim: every order gets a pie once faults stop (a crashed worker's or lost message's order
//! comes back when its timeout fires), but at most one pie per order is violated. The queue
//! cannot tell a stalled worker from a dead one: a worker that is merely slow past the timeout
//! still delivers, after a second worker has delivered too. No choice of timeout fixes this
//! without bounding how slow a worker may be — this is *at least once*.

use crate::models::pizzeria::{self, Door, PizzeriaCfg, QueuePolicy};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "ack-after-work",
    summary:
        "the worker acks after delivery; unacked orders are redelivered after a visibility timeout",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Violated),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params::plain(2, 2, 1, 1, 1),
    larger: Some(Params::plain(3, 3, 1, 1, 1)),
    world: |p| world(p).into(),
};

/// The model at `p`.
pub fn world(p: &Params) -> pizzeria::PizzeriaWorld {
    PizzeriaCfg {
        queue: QueuePolicy::AckAfterWork,
        door: Door::Plain,
        house_may_crash: false,
    }
    .into_world(p)
}
