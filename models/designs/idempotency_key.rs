//! **Producer retry with an idempotency key** — [`producer-retry`](crate::models::producer_retry), but the
//! customer chooses a key for each order (Stripe's `Idempotency-Key`) and says it on every call;
//! the queue, the workers and the house all use it as the order ID.
//!
//! Claim: all three properties hold. The queue still takes both calls — it does no deduplication
//! of its own here — but both carry the same ID, so the idempotent house keeps the first pie and
//! turns the second away. The key is chosen where the intent is and checked where the effect is:
//! the end-to-end argument, both ends.

use crate::models::customer::{self, Ids};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "idempotency-key",
    summary: "the customer calls again when a call times out, with the same customer-chosen key as the order ID",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Holds),
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
    customer::world(p, Ids::CustomerKey)
}
