//! **Idempotent house** — the seed's answer: ack-after-work delivery (at least once), and a
//! house that remembers the order IDs it has accepted and turns away a second pie with the same
//! ID. Checking and recording happen in one atomic step, and the memory is in durable storage,
//! so a crashed house still remembers. The decision is the library's own
//! [`crate::dedup::decide`], the code the real inbox runs.
//!
//! Claim: all three properties hold. Redelivery gives every order at least one pie; the house's
//! memory makes every pie after the first a no-op. Exactly-once *processing* from at-least-once
//! *delivery* plus an idempotent effect.

use crate::models::pizzeria::{self, Door, PizzeriaCfg, QueuePolicy};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "idempotent-house",
    summary: "ack-after-work delivery; the house atomically records order IDs in durable storage and refuses repeats",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Holds),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params::plain(2, 2, 1, 1, 1),
    larger: Some(Params::plain(3, 3, 1, 1, 1)),
    world: |p| world(p).into(),
};

/// The model at `p`: houses may crash too (their memory survives in storage).
pub fn world(p: &Params) -> pizzeria::PizzeriaWorld {
    PizzeriaCfg {
        queue: QueuePolicy::AckAfterWork,
        door: Door::Idempotent,
        house_may_crash: true,
    }
    .into_world(p)
}
