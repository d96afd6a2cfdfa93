//! **Shared dedup fleet** — a fleet of receivers on one shared store: every worker is a receiving
//! process on a host of its own, all pulling from one queue (ack-after-work), and every one of
//! them checks, records and applies through the *same* durable store (one PostgreSQL, the
//! library's `PgInbox`). The store runs [`crate::dedup::decide`] and keeps the pie in the
//! transaction that records the order ID.
//!
//! Claim: all three properties hold, for a fleet of any size the checker reaches. Which host a
//! redelivery lands on does not matter: every host asks the one memory. This is the
//! idempotent house read as a fleet, and it is the same world by construction (a shared store
//! cannot tell hosts apart); it is checked here with more hosts than orders, beside its cousin
//! [`crate::models::per_host_dedup`], where each host keeps a store of its own and the guarantee is lost.

use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "shared-dedup-fleet",
    summary: "a fleet of receiving hosts that all check, record and apply through one shared durable store",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Holds),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params {
        orders: 1,
        workers: 3,
        ..crate::models::idempotent_house::DESIGN.defaults
    },
    // The idempotent house's world, read as a fleet: hosts = workers, one shared store.
    larger: None,
    world: |p| crate::models::idempotent_house::world(p).into(),
};
