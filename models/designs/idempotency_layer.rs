//! **Idempotency layer, transactional mode** — the protocol of `onepie::http::IdempotencyLayer`:
//! a client `POST`s an order with an `Idempotency-Key` and retries (on a timeout, a 409 or a
//! 503) at the other of two stateless, crash-prone server instances sharing one database. The
//! instance opens a transaction that looks the key up with the library's
//! [`crate::dedup::decide`], locking it; a completed key's stored response is replayed; a new
//! key stays locked while the handler runs, and the handler's write (the pie) commits together
//! with the key's record and response, in one step. A transaction whose connection is lost (its
//! instance crashed, or it sat idle in the transaction too long: a stall) is rolled back, and
//! its late commit is refused.
//!
//! Claim: all four properties hold. The pie is only ever written by a commit that also records
//! the key, under the key's lock, after a lookup that found it missing; a second transaction for
//! the key waits for the lock and then sees the record. A rolled-back transaction wrote
//! nothing, so a retry that runs the handler again is the first to commit.

use crate::models::http::{self, HttpCfg, Middleware};
use crate::models::world::{
    AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use crate::models::{Design, Params, Verdict};

pub static DESIGN: Design = Design {
    name: "idempotency-layer",
    summary: "HTTP Idempotency-Key middleware: look the key up, run the handler and record the key in one transaction",
    expected: &[
        (AT_MOST_ONE_PIE, Verdict::Holds),
        (NO_UNEXPECTED_PIE, Verdict::Holds),
        (EVERY_ORDER_GETS_A_PIE, Verdict::Holds),
        (SOMETIMES_ALL_DELIVERED, Verdict::Holds),
    ],
    defaults: Params::plain(1, 2, 1, 1, 1),
    larger: None,
    world: |p| world(p).into(),
};

/// The model at `p`.
pub fn world(p: &Params) -> http::HttpWorld {
    HttpCfg {
        middleware: Middleware::Transactional,
    }
    .into_world(p)
}
