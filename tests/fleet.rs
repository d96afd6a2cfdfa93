//! A fleet of receivers on one PostgreSQL inbox, crashing: 8 concurrent `onepie inbox deliver
//! --store postgres://…` processes deliver every order (with redeliveries of orders already
//! acknowledged), while this test SIGKILLs random ones mid-delivery and, once, crashes the
//! PostgreSQL server itself (`pg_ctl stop -m immediate`) and starts it again. An order that was
//! not acknowledged — killed, refused while the server was down — goes back in the queue, as
//! an at-least-once queue would. Afterwards every order is acknowledged and has exactly one
//! pie, judged by `ledger`.
//!
//! `cargo test` runs a short fixed-seed run (600 orders); `ONEPIE_FLEET_SOAK=1` runs 10,000
//! orders with at least 1,000 kills. Own `main` (harness = false).

mod common;

use onepie::inbox::PgInbox;
use onepie::ledger::Ledger;
use onepie::testkit::postgres::Cluster;
use onepie::testkit::PieLog;
use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WORKERS: u64 = 8;

fn order(i: u32) -> String {
    format!("order-{i:05}")
}

/// SplitMix64, seeded per worker: the kill schedule is repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Queue {
    todo: VecDeque<u32>,
    acked: Vec<bool>,
    acks: usize,
    kills: usize,
    refused: usize,
    redeliveries: usize,
    in_flight: usize,
    /// The first thing that went wrong; every worker stops when it is set.
    failed: Option<String>,
}

fn worker(url: &str, q: &Mutex<Queue>, seed: u64, kill_one_in: u64) {
    let mut rng = Rng(seed);
    loop {
        let next = {
            let mut q = q.lock().unwrap();
            if q.failed.is_some() {
                return;
            }
            let next = q.todo.pop_front();
            if next.is_some() {
                q.in_flight += 1;
            } else if q.in_flight == 0 {
                return;
            }
            next
        };
        let Some(i) = next else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let delivered = (|| {
            let mut child = Command::new(env!("CARGO_BIN_EXE_onepie"))
                .args(["inbox", "deliver", "--store", url, &order(i), "pie"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            if rng.below(kill_one_in) == 0 {
                // Anywhere from before the connection to after the commit.
                std::thread::sleep(Duration::from_micros(rng.below(12_000)));
                child.kill()?;
            }
            child.wait_with_output()
        })();
        let mut q = q.lock().unwrap();
        q.in_flight -= 1;
        let out = match delivered {
            Ok(out) => out,
            Err(e) => {
                q.failed.get_or_insert(format!("cannot run onepie: {e}"));
                return;
            }
        };
        // Killed only if the kill landed before the process ended by itself.
        let killed = out.status.signal() == Some(9);
        let text = String::from_utf8_lossy(&out.stdout);
        let acked = out.status.success()
            && (text.starts_with("applied:") || text.starts_with("duplicate:"));
        q.kills += killed as usize;
        if acked {
            if !q.acked[i as usize] {
                q.acked[i as usize] = true;
                q.acks += 1;
                // Now and then the queue redelivers an acknowledged order anyway.
                if rng.below(5) == 0 {
                    q.redeliveries += 1;
                    let at = rng.below(q.todo.len() as u64 + 1) as usize;
                    q.todo.insert(at, i);
                }
            }
        } else {
            if !killed {
                q.refused += 1;
                // Only "try again" may end a delivery unacknowledged: the server was down.
                if out.status.code() != Some(75) {
                    let err = String::from_utf8_lossy(&out.stderr).into_owned();
                    q.failed
                        .get_or_insert(format!("order {i}: {} {err}", out.status));
                    return;
                }
            }
            q.todo.push_back(i);
        }
    }
}

fn run(orders: u32, kill_one_in: u64, min_kills: usize) -> Result<String, String> {
    let cluster = Cluster::start().map_err(|e| e.to_string())?;
    let url = cluster.url();
    let started = Instant::now();
    let q = Arc::new(Mutex::new(Queue {
        todo: (0..orders).collect(),
        acked: vec![false; orders as usize],
        ..Queue::default()
    }));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (q, url) = (Arc::clone(&q), url.clone());
            std::thread::spawn(move || worker(&url, &q, 0x5EED + w, kill_one_in))
        })
        .collect();
    // Halfway through, the server crashes and comes back.
    let mut server_crashes = 0;
    while !workers.iter().all(|w| w.is_finished()) {
        if server_crashes == 0 && q.lock().unwrap().acks >= orders as usize / 2 {
            cluster.crash().map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(300));
            cluster.restart().map_err(|e| e.to_string())?;
            server_crashes += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for w in workers {
        w.join()
            .map_err(|_| "a worker panicked (see above)".to_string())?;
    }
    let q = q.lock().unwrap();
    if let Some(why) = &q.failed {
        return Err(why.clone());
    }
    let inbox = PgInbox::open(&url).map_err(|e| e.to_string())?;
    let mut ledger = Ledger::placing((0..orders).map(order));
    for (key, n) in inbox.pie_counts().map_err(|e| e.to_string())? {
        ledger.record_effects(key, n);
    }
    let tally = ledger.tally();
    if q.acks != orders as usize {
        return Err(format!(
            "only {} of {orders} orders acknowledged: {tally}",
            q.acks
        ));
    }
    if !tally.is_exactly_once() {
        return Err(format!("after {} kills: {tally}", q.kills));
    }
    // `show` reads the same store: one completed key per order.
    let show = Command::new(env!("CARGO_BIN_EXE_onepie"))
        .args(["inbox", "show", "--store", &url, "--json"])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&show.stdout);
    let completed = text.matches("\"state\": \"completed\"").count();
    if !show.status.success() || completed != orders as usize {
        return Err(format!(
            "`onepie inbox show` found {completed} completed keys: {}",
            String::from_utf8_lossy(&show.stderr)
        ));
    }
    if q.kills < min_kills || server_crashes != 1 {
        return Err(format!(
            "only {} kills (wanted {min_kills}) and {server_crashes} server crashes",
            q.kills
        ));
    }
    Ok(format!(
        "{orders} orders, {} redeliveries of acknowledged ones, {} SIGKILLs, {} deliveries \
         refused while the server was down, 1 server crash; {tally}; {:.1} s",
        q.redeliveries,
        q.kills,
        q.refused,
        started.elapsed().as_secs_f64()
    ))
}

fn main() {
    const NAME: &str = "fleet_of_eight_survives_sigkills_and_a_server_crash";
    if common::chosen(&[NAME]).is_empty() {
        return;
    }
    let soak = std::env::var_os("ONEPIE_FLEET_SOAK").is_some();
    let result = if soak {
        run(10_000, 8, 1_000)
    } else {
        run(600, 6, 50)
    };
    match result {
        Ok(summary) => {
            println!("test {NAME} ... ok ({summary})\n\ntest result: ok. 1 passed; 0 failed\n")
        }
        Err(why) => {
            println!(
                "test {NAME} ... FAILED\n  {why}\n\ntest result: FAILED. 0 passed; 1 failed\n"
            );
            std::process::exit(101);
        }
    }
}
