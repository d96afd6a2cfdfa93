//! **Per-host dedup** — the fleet of [`crate::models::shared_dedup_fleet`], except that each receiving
//! host keeps its own durable store (a SQLite file on every host): a host checks and records
//! order IDs atomically and durably, but only in its own memory.
//!
//! Claim: at most one pie per order is violated. Host 0's receiver takes the order and its
//! visibility timeout fires while it is still baking (a stall); it keeps the pie and records the
//! order in its own store; the queue hands the order to the receiver on host 1, whose store has
//! never seen it, and a second pie is kept.
//! It is the forgetful house's story with the memory split across hosts instead of lost in a
//! restart. With one host (`--workers 1`) the split disappears and the design holds again.
//!
//! No symmetry reduction: a worker and its host's doors would have to be relabelled together.

use crate::models::pizzeria::{self, Door, PizzeriaCfg, QueuePolicy};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "per-host-dedup",
    summary: "the shared dedup fleet, but every host deduplicates in a durable store of its own",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Violated),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params {
        orders: 1,
        workers: 2,
        ..crate::models::idempotent_house::DESIGN.defaults
    },
    larger: None,
    world: |p| world(p).into(),
};

/// The model at `p`: one door per order and host (hosts are the workers); the stores may
/// crash and restart with their memory.
pub fn world(p: &Params) -> pizzeria::PizzeriaWorld {
    PizzeriaCfg {
        queue: QueuePolicy::AckAfterWork,
        door: Door::PerHost,
        house_may_crash: true,
    }
    .into_world(p)
}
