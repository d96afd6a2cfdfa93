//! Many writers on one inbox file: no delivery may fail with "locked" (issue 10, fault 2).
//!
//! Before the fix, 16 threads each delivering the same 3,000 keys saw 9–15 of 48,000
//! deliveries wait out the 5 s busy timeout: SQLite's busy handler naps longer the longer a
//! connection has waited, so the oldest waiter loses. Each writer here starts at a different
//! key, so all of them write new keys at once for most of the run. The busy timeout is cut
//! to 1 s so the test has teeth on any machine: with SQLite's own handler the slowest
//! delivery here took 1.7–2.7 s; with onepie's, under 0.2 s. Latency figures beside bare
//! SQLite's handling come from `cargo bench --bench inbox -- contention`.

use onepie::inbox::{InboxStore, SqliteInbox, SqliteOptions};
use onepie::testkit::PieLog;
use std::path::Path;
use std::time::{Duration, Instant};

const KEYS: usize = 10_000;

fn key(i: usize) -> String {
    format!("order-{i:05}")
}

/// Delivers every key once, starting at `start`; returns each delivery's latency and how many
/// failed (with the first error).
fn deliver_all(path: &Path, start: usize) -> (Vec<Duration>, usize, Option<String>) {
    let opts = SqliteOptions::default().with_busy_timeout(Duration::from_secs(1));
    let mut inbox = SqliteInbox::open_with(path, opts).expect("open");
    let (mut latencies, mut failed, mut first) = (Vec::with_capacity(KEYS), 0, None);
    for i in 0..KEYS {
        let k = key((start + i) % KEYS);
        let t = Instant::now();
        let r = inbox.deliver(&k, b"apple", |tx| {
            SqliteInbox::record_pie(tx, &k, b"apple")?;
            Ok(b"baked".to_vec())
        });
        latencies.push(t.elapsed());
        if let Err(e) = r {
            failed += 1;
            first.get_or_insert(e.to_string());
        }
    }
    (latencies, failed, first)
}

fn judge(
    path: &Path,
    latencies: &mut [Duration],
    failed: usize,
    first: Option<String>,
    what: &str,
) {
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = latencies[latencies.len() - 1];
    eprintln!(
        "{what}: {} deliveries, {failed} failed, p99 {p99:?}, max {max:?}",
        latencies.len()
    );
    assert_eq!(failed, 0, "{what}: first failure: {first:?}");
    let counts = SqliteInbox::open(path).unwrap().pie_counts().unwrap();
    assert_eq!(counts.len(), KEYS);
    assert!(counts.values().all(|&n| n == 1), "a key was applied twice");
}

#[test]
fn sixteen_threads_on_one_file_never_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    drop(SqliteInbox::open(&path).unwrap());
    let results: Vec<_> = std::thread::scope(|s| {
        let joins: Vec<_> = (0..16)
            .map(|t| {
                let path = &path;
                s.spawn(move || deliver_all(path, t * KEYS / 16))
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let mut all = Vec::new();
    let (mut failed, mut first) = (0, None);
    for (l, f, e) in results {
        all.extend(l);
        failed += f;
        first = first.or(e);
    }
    judge(&path, &mut all, failed, first, "16 threads x 10,000 keys");
}

/// Child half of the next test: does nothing unless started by it (with its store and its
/// first key in the environment).
#[test]
fn child_delivers_every_key() {
    let (Some(path), Ok(start)) = (
        std::env::var_os("ONEPIE_CONTENTION_STORE"),
        std::env::var("ONEPIE_CONTENTION_START"),
    ) else {
        return;
    };
    let (latencies, failed, first) = deliver_all(Path::new(&path), start.parse().unwrap());
    let micros: Vec<String> = latencies
        .iter()
        .map(|d| d.as_micros().to_string())
        .collect();
    println!("LATENCIES {}", micros.join(","));
    println!("FAILED {failed} {}", first.unwrap_or_default());
}

#[test]
fn eight_processes_on_one_file_never_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    drop(SqliteInbox::open(&path).unwrap());
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..8)
        .map(|p| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "child_delivers_every_key",
                    "--nocapture",
                    "--quiet",
                ])
                .env("ONEPIE_CONTENTION_STORE", &path)
                .env("ONEPIE_CONTENTION_START", (p * KEYS / 8).to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut all = Vec::new();
    let (mut failed, mut first) = (0, None);
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a child failed: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        for line in text.lines() {
            if let Some(list) = line.strip_prefix("LATENCIES ") {
                all.extend(
                    list.split(',')
                        .map(|us| Duration::from_micros(us.parse().unwrap())),
                );
            } else if let Some(rest) = line.strip_prefix("FAILED ") {
                let (n, e) = rest.split_once(' ').unwrap_or((rest, ""));
                failed += n.parse::<usize>().unwrap();
                if !e.is_empty() {
                    first.get_or_insert(e.to_string());
                }
            }
        }
    }
    assert_eq!(all.len(), 8 * KEYS, "every child reports every delivery");
    judge(&path, &mut all, failed, first, "8 processes x 10,000 keys");
}
