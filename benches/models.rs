//! The search engine's scale, measured: the four seed designs at 2×2, 3×3 and 4×4 orders ×
//! workers with ≤1 crash, ≤1 lost message and ≤1 stall (and 2×2 with ≤2 of each), each searched
//! three ways in one run — onepie's engine with symmetry reduction, without it, and Stateright's
//! own BFS on the same model — with unique states, seconds, states/s, peak memory and bytes per
//! visited state, and the engine's speed as a ratio to Stateright's.
//!
//! `cargo bench --bench models` runs everything (about 10 minutes on 2 cores: the runs that cannot
//! finish are stopped at a state budget and say so). Arguments filter: a design name, or a size
//! such as `3x3` or `2x2/2`, e.g. `cargo bench --bench models -- idempotent 3x3`.

use onepie::models::engine::memory;
use onepie::models::{self, AnyWorld, CheckError, CheckOptions, Params};
use stateright::{Checker, Model};
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEEDS: [&str; 4] = [
    "delete-on-delivery",
    "ack-before-work",
    "ack-after-work",
    "idempotent-house",
];

/// (label, orders, workers, faults of each kind, state budget for the unreduced runs, which may
/// not finish)
const SIZES: [(&str, u8, u8, u8, u64); 4] = [
    ("2x2", 2, 2, 1, 50_000_000),
    ("2x2/2", 2, 2, 2, 20_000_000),
    ("3x3", 3, 3, 1, 10_000_000),
    ("4x4", 4, 4, 1, 10_000_000),
];

struct Row {
    unique: Option<u64>,
    seconds: f64,
    peak: Option<u64>,
    bytes_per_state: Option<f64>,
    note: String,
}

fn engine(d: &models::Design, p: &Params, symmetry: bool, budget: u64) -> Row {
    let opts = CheckOptions {
        symmetry,
        max_states: budget,
        max_memory: Some(12 << 30),
        ..CheckOptions::default()
    };
    let start = Instant::now();
    match d.check(p, &opts) {
        Ok(r) => Row {
            unique: Some(r.unique_states),
            seconds: r.seconds,
            peak: r.peak_memory,
            bytes_per_state: Some(r.bytes_per_state),
            note: String::new(),
        },
        Err(e) => Row {
            unique: None,
            seconds: start.elapsed().as_secs_f64(),
            peak: memory::peak_rss(),
            bytes_per_state: None,
            note: match e {
                CheckError::TooManyStates { generated, .. } => {
                    format!("stopped after {generated} generated states")
                }
                CheckError::TooMuchMemory { used, .. } => format!("stopped at {used} MB"),
                other => other.to_string(),
            },
        },
    }
}

fn stateright<M>(model: M, budget: u64) -> Row
where
    M: Model + Send + Sync + 'static,
    M::State: Clone + std::fmt::Debug + std::hash::Hash + PartialEq + Send + Sync,
    M::Action: Clone + std::fmt::Debug + PartialEq + Send + Sync,
{
    let start = Instant::now();
    let threads = models::check::available_threads();
    let checker = model
        .checker()
        .threads(threads)
        .target_state_count(budget as usize)
        .spawn_bfs()
        .join();
    let seconds = start.elapsed().as_secs_f64();
    let finished = checker.state_count() < budget as usize;
    Row {
        unique: finished.then(|| checker.unique_state_count() as u64),
        seconds,
        peak: memory::peak_rss(),
        bytes_per_state: None,
        note: if finished {
            String::new()
        } else {
            format!("stopped after {} generated states", checker.state_count())
        },
    }
}

fn stateright_any(world: AnyWorld, budget: u64) -> Row {
    match world {
        AnyWorld::Pizzeria(w) => stateright(w, budget),
        AnyWorld::Timed(w) => stateright(w, budget),
        AnyWorld::Lease(w) => stateright(w, budget),
        AnyWorld::Phone(w) => stateright(w, budget),
        AnyWorld::Http(w) => stateright(w, budget),
    }
}

/// Runs one search in a fresh process (this bench, with `--one DESIGN SIZE HOW`), so each peak
/// memory figure is that run's own: an allocator keeps what earlier runs freed.
fn isolated(design: &str, size: &str, how: &str) -> Row {
    let out = std::process::Command::new(std::env::current_exe().expect("the bench binary"))
        .args(["--one", design, size, how])
        .output()
        .expect("run one search");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let f: Vec<&str> = line.splitn(5, '\t').collect();
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
    Row {
        unique: num(0).map(|u| u as u64),
        seconds: num(1).unwrap_or(f64::NAN),
        peak: num(2).map(|b| b as u64),
        bytes_per_state: num(3),
        note: f.get(4).map_or_else(
            || format!("failed: {}", String::from_utf8_lossy(&out.stderr)),
            |n| n.to_string(),
        ),
    }
}

/// The child's side of [`isolated`].
fn one(design: &str, size: &str, how: &str) {
    let d = models::find(design).expect("a seed design");
    let (_, orders, workers, faults, budget) =
        SIZES.into_iter().find(|s| s.0 == size).expect("a size");
    let p = params(d, orders, workers, faults);
    let row = match how {
        // The reduced search is expected to finish at every size: no state budget.
        "onepie+symmetry" => engine(d, &p, true, u64::MAX),
        "onepie" => engine(d, &p, false, budget),
        _ => {
            let mut world = (d.world)(&p);
            if let AnyWorld::Pizzeria(w) = &mut world {
                w.symmetry = None;
            }
            stateright_any(world, budget)
        }
    };
    let opt = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
    println!(
        "{}\t{}\t{}\t{}\t{}",
        opt(row.unique.map(|u| u as f64)),
        row.seconds,
        opt(row.peak.map(|b| b as f64)),
        opt(row.bytes_per_state),
        row.note
    );
}

fn params(d: &models::Design, orders: u8, workers: u8, faults: u8) -> Params {
    Params {
        orders,
        workers,
        crashes: faults,
        losses: faults,
        stalls: if d.defaults.stalls == 0 { 0 } else { faults },
        ..d.defaults
    }
}

fn print(design: &str, size: &str, how: &str, row: &Row, baseline: Option<&Row>) {
    let rate = row.unique.map(|u| u as f64 / row.seconds);
    let ratio = match (
        rate,
        baseline.and_then(|b| b.unique.map(|u| u as f64 / b.seconds)),
    ) {
        (Some(a), Some(b)) => format!("{:.2}×", a / b),
        _ => "–".to_string(),
    };
    println!(
        "{:<20} {:<6} {:<16} {:>11} {:>8.2} {:>12} {:>9} {:>8} {:>8}  {}",
        design,
        size,
        how,
        row.unique.map_or("–".to_string(), |u| u.to_string()),
        row.seconds,
        rate.map_or("–".to_string(), |r| format!("{r:.0}")),
        row.peak.map_or("–".to_string(), |b| format!("{}", b >> 20)),
        row.bytes_per_state
            .map_or("–".to_string(), |b| format!("{b:.1}")),
        ratio,
        row.note
    );
}

fn main() {
    onepie::cli::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        return one(&args[i + 1], &args[i + 2], &args[i + 3]);
    }
    let filters: Vec<String> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
    let threads = models::check::available_threads();
    println!("onepie engine vs Stateright 0.31 BFS, {threads} threads each; states/s counts unique (canonical) states; ratio: states/s over Stateright's.");
    println!(
        "{:<20} {:<6} {:<16} {:>11} {:>8} {:>12} {:>9} {:>8} {:>8}",
        "design", "size", "search", "states", "seconds", "states/s", "peak MB", "B/state", "ratio"
    );
    let all = Instant::now();
    for (size, ..) in SIZES {
        for name in SEEDS {
            if !filters
                .iter()
                .all(|f| name.contains(f.as_str()) || size == f)
            {
                continue;
            }
            let baseline = isolated(name, size, "stateright bfs");
            print(
                name,
                size,
                "onepie+symmetry",
                &isolated(name, size, "onepie+symmetry"),
                Some(&baseline),
            );
            print(
                name,
                size,
                "onepie",
                &isolated(name, size, "onepie"),
                Some(&baseline),
            );
            print(name, size, "stateright bfs", &baseline, None);
        }
    }
    let check_all = Instant::now();
    for d in models::designs() {
        d.check(&d.defaults, &CheckOptions::default())
            .expect("default check");
    }
    println!(
        "\n`onepie check` (all {} designs at their default sizes): {:.1} s",
        models::designs().len(),
        check_all.elapsed().as_secs_f64()
    );
    println!("bench total: {:.0} s", all.elapsed().as_secs_f64());
}
