//! Waiting for the write lock fairly enough.
//!
//! SQLite's own busy handler naps longer the longer a connection has waited (up to 100 ms a
//! nap), so under load the oldest waiter is the least likely to see the lock free: with 16
//! writers on one file some deliveries waited past a 5 s timeout while others went through in
//! a millisecond. [`patient`] keeps every waiter's naps short and jittered instead, so whoever
//! waits notices a free lock within about a millisecond, however long it has waited already.
//! (A first-come-first-served queue per file was tried too: it bounded the wait as well, but
//! handing the lock from thread to thread cost 2-9x the throughput.)

use std::time::{Duration, Instant};

/// A busy handler that keeps asking for SQLite's lock every 0.05–1.7 ms until `timeout` has
/// passed since the wait began.
pub(super) fn patient(timeout: Duration) -> impl FnMut(i32) -> bool + Send + 'static {
    let mut since = Instant::now();
    // xorshift64, seeded per connection: naps need jitter, not quality.
    let mut seed = {
        use std::hash::{BuildHasher, Hasher};
        // A fresh random seed per connection, so handles opened together do not nap in step.
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1
    };
    move |count| {
        if count == 0 {
            since = Instant::now();
        }
        if since.elapsed() >= timeout {
            return false;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let spread = 100u64 << count.clamp(0, 4);
        std::thread::sleep(Duration::from_micros(50 + seed % spread));
        true
    }
}
