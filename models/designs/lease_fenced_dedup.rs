//! **Coordinating consumers, fencing plus dedup** — [`lease-fencing`](crate::models::lease_fencing) with
//! a house that also remembers which orders it has a pie for, using the library's
//! [`crate::dedup::decide`] on the order ID, and turns away any second pie for an order.
//!
//! Claim: all three properties hold. This is the seed's idempotent house behind a lock: the lock
//! and the tokens now only save work (fewer wasted pies); correctness comes entirely from the
//! receiver's memory of order IDs. That is the point of the fencing designs — the fencing check
//! at the house was dedup in disguise, and only becomes sufficient once it *is* dedup.

use crate::models::leases::{self, Door};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "lease-fenced-dedup",
    summary:
        "the fencing design, and the house also refuses a second pie for an order (dedup::decide)",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Holds),
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
    leases::world(p, Door::FencedDedup)
}
