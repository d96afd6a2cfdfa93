//! **Get → handler → set** — the idempotency middleware of popular small crates: the instance
//! reads the key (autocommit, with the library's [`crate::dedup::decide`]); if it is stored, it
//! replays the response; if missing, it runs the handler, whose write (the pie) commits on its
//! own, and then stores the key with the response in a separate step.
//!
//! Claim: at most one pie per order is violated; the rest hold. The client's patience runs out
//! while its first request is still being handled (a stall), and the retry reaches the other
//! instance: both read the key before either has stored it, both see it missing, and both
//! handlers bake. It is [check-then-act](crate::models::check_then_act) at the HTTP layer: the lookup
//! and the write it implies are not one transaction.

use crate::models::http::{self, HttpCfg, Middleware};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "get-handler-set",
    summary: "HTTP idempotency middleware that reads the key, runs the handler, then stores the key in separate steps",
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
        middleware: Middleware::GetHandlerSet,
    }
    .into_world(p)
}
