//! A real crash test: a child process streams deliveries into an inbox file and is killed with
//! SIGKILL at random points, then restarted from the first order it had not acknowledged, many
//! times. Afterwards every order has exactly one pie: each acknowledged order exactly one, and
//! no order two. The kill points come from a fixed seed list, so CI is repeatable; set
//! `ONEPIE_CRASH_SOAK=500` (rounds) for a longer soak.
//!
//! This test has its own `main` (harness = false): the same binary is the child when run with
//! `--child`.

use onepie::inbox::{InboxStore, SqliteInbox};
use onepie::ledger::Ledger;
use onepie::testkit::PieLog;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const ORDERS: u32 = 3_000;

fn order(i: u32) -> String {
    format!("order-{i:05}")
}

/// The child: deliver orders `from..ORDERS`, printing `ack N` once each delivery committed.
/// With `broken`, the pie is recorded in a transaction of its own before the order's key is
/// (record after effect): the kind of receiver this test must catch.
fn child(path: &str, from: u32, broken: bool) {
    let mut inbox = SqliteInbox::open(path).expect("open inbox");
    let mut out = std::io::stdout().lock();
    for i in from..ORDERS {
        let key = order(i);
        if broken {
            let attempt = format!("{key}-attempt-{}", std::process::id());
            inbox
                .deliver(&attempt, b"", |tx| {
                    SqliteInbox::record_pie(tx, &key, b"pie")?;
                    Ok(Vec::new())
                })
                .expect("bake");
            let outcome = inbox
                .deliver(&key, key.as_bytes(), |_| Ok(b"kept".to_vec()))
                .expect("record");
            writeln!(out, "ack {i} {}", outcome.label()).unwrap();
            out.flush().unwrap();
            continue;
        }
        let outcome = inbox
            .deliver(&key, key.as_bytes(), |tx| {
                SqliteInbox::record_pie(tx, &key, b"pie")?;
                Ok(b"kept".to_vec())
            })
            .expect("deliver");
        writeln!(out, "ack {i} {}", outcome.label()).unwrap();
        out.flush().unwrap();
    }
}

/// A small deterministic generator for kill delays.
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

fn parent(rounds: usize, broken: bool) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let me = std::env::current_exe().unwrap();
    let mut acked: Vec<bool> = vec![false; ORDERS as usize];
    let mut seed = 0x5eed_0f0e_u64;
    let mut kills = 0;
    let mut redelivered_done = 0;
    for round in 0..=rounds {
        let from = acked.iter().position(|a| !a).unwrap_or(ORDERS as usize) as u32;
        if from == ORDERS {
            break;
        }
        let mut child = Command::new(&me)
            .args([
                if broken { "--broken-child" } else { "--child" },
                path.to_str().unwrap(),
                &from.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| {
                    let mut words = l.split(' ').skip(1);
                    let i = words.next()?.parse::<u32>().ok()?;
                    Some((i, words.next() == Some("duplicate")))
                })
                .collect::<Vec<(u32, bool)>>()
        });
        if round < rounds {
            // Kill somewhere in the next 0–30 ms: before opening, mid-transaction, or between.
            std::thread::sleep(Duration::from_micros(next(&mut seed) % 30_000));
            let _ = child.kill(); // SIGKILL on Unix
            kills += 1;
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        if round == rounds && !status.success() {
            return Err(format!("the final, uninterrupted child failed: {status}"));
        }
        for (i, duplicate) in reader.join().unwrap() {
            acked[i as usize] = true;
            // Committed but killed before its ack: the redelivery found it done.
            redelivered_done += duplicate as u32;
        }
    }
    // Judge with the one classifier: every order placed, pies as the inbox recorded them.
    let inbox = SqliteInbox::open(&path).map_err(|e| e.to_string())?;
    let mut ledger = Ledger::placing((0..ORDERS).map(order));
    for (key, n) in inbox.pie_counts().map_err(|e| e.to_string())? {
        ledger.record_effects(key, n);
    }
    let tally = ledger.tally();
    if !acked.iter().all(|a| *a) {
        return Err(format!("not every order was acknowledged: {tally}"));
    }
    if !tally.is_exactly_once() {
        return Err(format!("after {kills} kills: {tally}"));
    }
    Ok(format!(
        "{kills} SIGKILLs, {redelivered_done} orders committed but killed before their ack; \
         {ORDERS} orders: {tally}"
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(mode @ ("--child" | "--broken-child")) = args.get(1).map(String::as_str) {
        child(&args[2], args[3].parse().unwrap(), mode == "--broken-child");
        return;
    }
    // `cargo test` passes its own flags (e.g. a filter); this file has one test.
    if args.iter().skip(1).any(|a| a == "--list") {
        println!("sigkill_mid_delivery_never_loses_or_duplicates_a_pie: test");
        return;
    }
    let rounds = std::env::var("ONEPIE_CRASH_SOAK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    println!("\nrunning 1 test");
    // Teeth first: the same kills must catch a receiver that records after the effect.
    let teeth = match parent(20, true) {
        Err(why) if why.contains("duplicated") => {
            println!("the record-after-effect child is caught: {why}");
            Ok(())
        }
        Err(why) => Err(format!(
            "the broken child failed in an unexpected way: {why}"
        )),
        Ok(summary) => Err(format!(
            "20 SIGKILLs did not catch the broken child: {summary}"
        )),
    };
    match teeth.and_then(|()| parent(rounds, false)) {
        Ok(summary) => {
            println!(
                "test sigkill_mid_delivery_never_loses_or_duplicates_a_pie ... ok ({summary})"
            );
            println!(
                "\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"
            );
        }
        Err(why) => {
            println!(
                "test sigkill_mid_delivery_never_loses_or_duplicates_a_pie ... FAILED\n  {why}"
            );
            println!("\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n");
            std::process::exit(101);
        }
    }
}
