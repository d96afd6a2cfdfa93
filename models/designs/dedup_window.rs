//! **Dedup window** — the idempotent house, except that it forgets an order ID a fixed number of
//! ticks of its own clock after recording it (SQS FIFO's five-minute deduplication interval,
//! NATS JetStream's duplicate window, Kafka's producer-ID expiry). The house calls the library's
//! [`crate::dedup::decide`] with `Retention::Window`. The house does not crash here: forgetting
//! is the design, not a fault.
//!
//! Claim: at most one pie per order is violated. After a stall the order is delivered again; if
//! the redelivery arrives more than the window after the first pie, the ID is forgotten and the
//! pie is kept again. A window is only safe if redelivery is bounded in time by less than the
//! window — which is a bound on how slow the pipeline may be, the very thing a stall breaks.

use crate::models::pizzeria::{self, Door, PizzeriaCfg, QueuePolicy};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "dedup-window",
    summary: "the idempotent house, but it forgets an order ID a window of time after recording it",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Violated),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params {
        window: Some(1),
        ..crate::models::idempotent_house::DESIGN.defaults
    },
    larger: None,
    world: |p| world(p).into(),
};

/// The model at `p`.
pub fn world(p: &Params) -> pizzeria::PizzeriaWorld {
    PizzeriaCfg {
        queue: QueuePolicy::AckAfterWork,
        door: Door::Window {
            window: p.window.unwrap_or(0),
        },
        house_may_crash: false,
    }
    .into_world(p)
}
