//! **Idempotency layer, lease mode** — the layer's mode for handlers with external effects: the
//! instance claims the key in its own committed step (a lease with a fencing token, with the
//! library's [`crate::dedup::decide`]: a live lease is `InProgress`, answered 409; an expired one
//! may be taken over with a higher token), runs the handler, whose effect (the pie) happens
//! outside the database, then completes the key with the response (refused if taken over; the instance still answers
//! the handler's response, since the effect has happened).
//!
//! Claim: at most one pie per order is violated; the rest hold. An instance crashes between the
//! handler's effect and the completion; its lease runs out, the client's retry takes the key
//! over, and the handler bakes again: at-least-once, as the layer's documentation says. The
//! fencing token stops the stale completion, not the second effect.

use crate::models::http::{self, HttpCfg, Middleware};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "idempotency-layer-lease",
    summary: "the Idempotency-Key layer's lease mode: claim the key, run a handler with an external effect, then complete the key",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Violated),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params {
        ..crate::models::idempotency_layer::DESIGN.defaults
    },
    larger: None,
    world: |p| world(p).into(),
};

/// The model at `p`.
pub fn world(p: &Params) -> http::HttpWorld {
    HttpCfg {
        middleware: Middleware::Lease,
    }
    .into_world(p)
}
