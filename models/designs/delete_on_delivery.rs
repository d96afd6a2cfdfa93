//! **Delete-on-delivery** — the HDMQ paper's "exactly once delivery": the queue deletes an order
//! at the moment it hands it to a worker, and never hands it out again.
//!
//! Claim: at most one pie per order holds (nothing is ever handed out twice), but an order can
//! be lost: a worker that crashes before its pie leaves the oven, or a hand-off the network
//! loses, takes the only copy with it. This is *at most once*, as the seed says.

use crate::models::pizzeria::{self, Door, PizzeriaCfg, QueuePolicy};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "delete-on-delivery",
    summary: "the queue deletes an order as it hands it out (HDMQ's exactly-once delivery)",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Holds),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Violated),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params::plain(2, 2, 1, 1, 0),
    larger: Some(Params::plain(3, 3, 1, 1, 0)),
    world: |p| world(p).into(),
};

/// The model at `p`.
pub fn world(p: &Params) -> pizzeria::PizzeriaWorld {
    PizzeriaCfg {
        queue: QueuePolicy::DeleteOnHandout,
        door: Door::Plain,
        house_may_crash: false,
    }
    .into_world(p)
}
