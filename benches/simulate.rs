//! The simulator's speed: simulated orders per second for the four seed designs at 2 workers,
//! on one thread and on every core, against the target of 200,000 orders/s per core (issue 13).
//! Each design runs 20,000 runs of 10 orders (200,000 orders), exponential work of mean 1 s, a
//! 2 s visibility timeout, message delays exponential with mean 10 ms, 1% of messages lost and
//! 0.01 crashes per second: every kind of event the simulator has.
//!
//! `cargo bench --bench simulate` (a few seconds).

use onepie::models::check::available_threads;
use onepie::models::simulate::{Dist, SimParams};
use onepie::models::{self};
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TARGET_PER_CORE: f64 = 200_000.0;

fn main() {
    onepie::cli::keep_freed_memory();
    let p = SimParams {
        delay: Dist::Exp { mean: 0.01 },
        crash_rate: 0.01,
        loss_rate: 0.01,
        runs: 20_000,
        ..SimParams::default()
    };
    let all = available_threads();
    println!(
        "{:<20} {:>8} {:>14} {:>10} {:>16} {:>10}",
        "design", "threads", "orders/s", "events/s", "orders/s/core", "vs target"
    );
    for name in [
        "delete-on-delivery",
        "ack-before-work",
        "ack-after-work",
        "idempotent-house",
    ] {
        let d = models::find(name).unwrap();
        for threads in [1, all] {
            // Best of three, so a busy moment on the machine does not count.
            let mut best = f64::MAX;
            let mut summary = None;
            for _ in 0..3 {
                let t = Instant::now();
                let s = d.simulate(&p, threads, &|| {}).unwrap();
                best = best.min(t.elapsed().as_secs_f64());
                summary = Some(s);
            }
            let s = summary.unwrap();
            let rate = s.orders as f64 / best;
            let per_core = rate / threads as f64;
            println!(
                "{:<20} {:>8} {:>14.0} {:>10.0} {:>16.0} {:>9.2}×",
                name,
                threads,
                rate,
                s.events as f64 / best,
                per_core,
                per_core / TARGET_PER_CORE
            );
        }
    }
}
