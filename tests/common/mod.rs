//! Test-only helpers shared by the integration tests (each uses some of them).
#![allow(dead_code)]
pub mod broken;

use onepie::testkit::harness::Op;
use proptest::prelude::*;

/// Keys 0–2 go through the transactional path, keys 3–4 through the lease path; payload 1 is
/// the occasional reuse of a key for a different pie.
pub fn op() -> impl Strategy<Value = Op> {
    let tx_key = 0u8..3;
    let payload = prop_oneof![5 => Just(0u8), 1 => Just(1u8)];
    prop_oneof![
        6 => (tx_key.clone(), payload.clone()).prop_map(|(key, payload)| Op::Deliver { key, payload }),
        1 => (tx_key.clone(), payload.clone()).prop_map(|(key, payload)| Op::DeliverFailing { key, payload }),
        1 => (tx_key.clone(), payload.clone()).prop_map(|(key, payload)| Op::CrashMidDelivery { key, payload }),
        1 => (tx_key, payload.clone(), 2u8..5).prop_map(|(key, payload, threads)| Op::Concurrent { key, payload, threads }),
        1 => Just(Op::CrashAndReopen),
        1 => (1u16..200).prop_map(|ms| Op::Wait { ms }),
        2 => (3u8..5, payload).prop_map(|(key, payload)| Op::Claim { key, payload }),
        1 => (0u8..4).prop_map(|lease| Op::Complete { lease }),
        1 => (0u8..4).prop_map(|lease| Op::Release { lease }),
        1 => Just(Op::Prune),
    ]
}

pub fn schedule() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..16)
}

/// For a test binary with its own `main` (`harness = false`): which of `names` to run, read
/// from libtest's arguments as `cargo test` passes them — name filters, `--exact`, `--skip
/// NAME`, flags with a value (`--test-threads 2`, `--format json`, ...) taken as flags, not
/// filters. With `--list` it prints the names and returns nothing to run.
pub fn chosen(names: &[&'static str]) -> Vec<&'static str> {
    const WITH_VALUE: &[&str] = &["--test-threads", "--format", "--color", "--logfile", "-Z"];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut filters, mut skips, mut exact, mut list) = (Vec::new(), Vec::new(), false, false);
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--skip" => {
                skips.extend(args.get(i + 1).cloned());
                i += 1;
            }
            "--exact" => exact = true,
            "--list" => list = true,
            a if WITH_VALUE.contains(&a) => i += 1,
            a if a.starts_with('-') => {}
            a => filters.push(a.to_string()),
        }
        i += 1;
    }
    let hit = |name: &str, pattern: &String| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern.as_str())
        }
    };
    let picked: Vec<&'static str> = names
        .iter()
        .copied()
        .filter(|n| filters.is_empty() || filters.iter().any(|f| hit(n, f)))
        .filter(|n| !skips.iter().any(|s| hit(n, s)))
        .collect();
    if list {
        for name in &picked {
            println!("{name}: test");
        }
        return Vec::new();
    }
    if picked.len() < names.len() {
        println!("{} filtered out", names.len() - picked.len());
    }
    picked
}
