//! Model-checking throughput: unique states per second for every design at its default size,
//! single-threaded BFS, release build. Run with `cargo bench --bench models`.

use onepie::models::{self, CheckOptions};
use std::time::Instant;

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters designs by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    println!(
        "{:<26} {:>12} {:>7} {:>9} {:>14}",
        "design", "states", "depth", "seconds", "states/second"
    );
    let all = Instant::now();
    for d in models::designs() {
        if !filter.is_empty() && !filter.iter().any(|f| d.name.contains(f.as_str())) {
            continue;
        }
        let report = d
            .check(&d.defaults, &CheckOptions::default())
            .expect("check");
        println!(
            "{:<26} {:>12} {:>7} {:>9.2} {:>14.0}",
            d.name,
            report.unique_states,
            report.max_depth,
            report.seconds,
            report.unique_states as f64 / report.seconds
        );
    }
    println!("all designs: {:.1} s", all.elapsed().as_secs_f64());
}
