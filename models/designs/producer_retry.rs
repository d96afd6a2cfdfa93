//! **Producer retry without a key** — the customer phones an order in; if the confirmation does
//! not come (the call times out, or the confirmation is lost) they call again. The queue numbers
//! each call it takes, so the second call is a new order with a new ID. Behind the phone is the
//! sound pipeline: ack-after-work delivery and an idempotent house deduplicating by order ID with
//! the library's [`crate::dedup::decide`].
//!
//! Claim: at most one pie per intended order is violated. Both calls were taken, under two IDs;
//! the idempotent house dedups by ID, so it keeps both pies: to it they are two orders. Exactly
//! once end to end has to start where the intent is, with the producer.

use crate::models::customer::{self, Ids};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "producer-retry",
    summary:
        "the customer calls again when a call times out; the queue gives each call a new order ID",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Violated),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params::plain(1, 1, 0, 1, 1),
    larger: None,
    world: |p| world(p).into(),
};

/// The model at `p`.
pub fn world(p: &Params) -> customer::PhoneWorld {
    customer::world(p, Ids::QueueAssigned)
}
