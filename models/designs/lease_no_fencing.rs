//! **Coordinating consumers, lease without fencing** — the seed's "pass the task to multiple
//! consumers, and ask them to co-ordinate amongst themselves which will execute it". The queue
//! gives the order to every worker; each asks the lock for a lease on it; only the holder bakes
//! and delivers, then tells the lock the order is done. A lease the lock hears nothing about runs
//! out, and a waiting worker gets it (so a crashed holder does not lose the order).
//!
//! Claim: every order gets a pie, but at most one pie per order is violated. The lock cannot tell
//! a paused holder from a dead one any better than the queue could: its lease runs out while the
//! holder is still at work (here, its receipt still on the way), another worker takes the lease
//! and delivers, and the house keeps both pies. Coordinating consumers "is a reasonable solution
//! from the queue's perspective, but just moves the problem down to the consumer".

use crate::models::leases::{self, Door};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "lease-no-fencing",
    summary: "every worker gets the order; a lock leases it to one at a time; leases expire; the house keeps every pie",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Violated),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params::plain(1, 3, 1, 0, 1),
    larger: None,
    world: |p| world(p).into(),
};

/// The model at `p`.
pub fn world(p: &Params) -> leases::LeaseWorld {
    leases::world(p, Door::Plain)
}
