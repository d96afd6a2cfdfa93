//! **Coordinating consumers, lease with a fencing token** — [`lease-no-fencing`](crate::models::lease_no_fencing)
//! plus Kleppmann's fix: every lease carries a token higher than the last, the pie carries its
//! lease's token, and the house keeps the highest token it has seen per order and turns away a
//! pie with a lower one.
//!
//! Claim (the issue expected this to hold; the checker says otherwise): at most one pie per order
//! is still violated. Fencing stops a *stale* holder whose pie arrives after a newer holder's —
//! the house has seen the higher token and turns the old pie away (the tests check this really
//! happens in the model). But a pie is an effect to count, not a value to overwrite: when the old
//! holder's pie arrives *first* (its lease ran out while its receipt was on the way, or while it
//! baked), the house keeps it, and then keeps the newer holder's pie too, because its token is
//! higher. A token orders writers; it cannot tell the house that this order already has a pie.
//!
//! The end-to-end argument: the only check that works is at the house, on the order, which is
//! what [`lease-fenced-dedup`](crate::models::lease_fenced_dedup) adds — and that check alone, the
//! idempotent house, is enough. The fencing check at the house is dedup in disguise: per-order
//! memory at the receiver, only keyed by the wrong thing.

use crate::models::leases::{self, Door};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "lease-fencing",
    summary: "the lease design, and the house turns away a pie whose fencing token is lower than one it has seen",
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
    leases::world(p, Door::Fenced)
}
