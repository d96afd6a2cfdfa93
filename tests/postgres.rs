//! `PgInbox` against a real PostgreSQL server, started here (a throw-away cluster: initdb,
//! pg_ctl on a free loopback port, removed at the end). If the server cannot start, every test
//! fails with the reason: nothing is skipped.
//!
//! Each test gets a fresh database. `cargo test --release --test postgres -- NAME` runs the
//! tests whose names contain NAME.

mod common;
#[path = "common/shop.rs"]
mod shop;

use onepie::inbox::{
    Claim, InboxError, InboxStore, ManualClock, NotOwnerReason, Outcome, PgInbox, PgOptions,
    Retention, END_OF_TIME,
};
use onepie::ledger::Ledger;
use onepie::testkit::harness::{self, Op, StoreReceiver};
use onepie::testkit::postgres::Cluster;
use onepie::testkit::{PieLog, PieStore};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

struct Db {
    url: String,
}

/// A fresh database in `cluster`.
fn fresh(cluster: &Cluster) -> Db {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("t{}", N.fetch_add(1, Ordering::Relaxed));
    let mut admin = postgres::Client::connect(&cluster.url(), postgres::NoTls).unwrap();
    // Durability is the crash tests' business: here, commits need not wait for the disk.
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET synchronous_commit = off"
        ))
        .unwrap();
    Db {
        url: cluster.url_for(&name),
    }
}

fn manual(db: &Db) -> (PgInbox, ManualClock) {
    let clock = ManualClock::new(1_000);
    let inbox =
        PgInbox::open_with(&db.url, PgOptions::default().with_clock(clock.clone())).unwrap();
    (inbox, clock)
}

fn bake(inbox: &mut PgInbox, key: &str, payload: &str) -> Result<Outcome, InboxError> {
    inbox.deliver(key, payload.as_bytes(), |tx| {
        let n = PgInbox::record_pie(tx, key, payload.as_bytes())?;
        Ok(format!("pie #{n}").into())
    })
}

fn acquired(c: Claim) -> onepie::inbox::Lease {
    match c {
        Claim::Acquired(l) => l,
        other => panic!("expected a lease, got {other:?}"),
    }
}

fn apply_duplicate_conflict_and_reconnect(db: &Db) {
    let mut inbox = PgInbox::open(&db.url).unwrap();
    assert_eq!(
        bake(&mut inbox, "o1", "apple").unwrap(),
        Outcome::Applied("pie #1".into())
    );
    assert_eq!(
        bake(&mut inbox, "o1", "apple").unwrap(),
        Outcome::Duplicate("pie #1".into())
    );
    let e = bake(&mut inbox, "o1", "plum").unwrap_err();
    assert!(matches!(e, InboxError::Conflict { .. }), "{e}");
    assert!(matches!(
        bake(&mut inbox, "", "x"),
        Err(InboxError::InvalidKey(_))
    ));
    drop(inbox);
    let mut again = PgInbox::open(&db.url).unwrap();
    assert!(!bake(&mut again, "o1", "apple").unwrap().is_applied());
    assert_eq!(again.pie_counts().unwrap()["o1"], 1);
    assert_eq!(again.entries().unwrap().len(), 1);
    assert!(again.get("o2").unwrap().is_none());

    // Redeliveries answered as duplicates use up no transaction ids (wraparound is a fleet's
    // problem): the counter's own reads take one each, 20 duplicates none (before the fix, 21
    // were counted).
    let mut admin = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let xid = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT txid_current()", &[]).unwrap().get(0)
    };
    let before = xid(&mut admin);
    for _ in 0..20 {
        assert!(!bake(&mut again, "o1", "apple").unwrap().is_applied());
    }
    let used = xid(&mut admin) - before;
    assert!(used <= 2, "20 duplicates used {used} transaction ids");
}

fn a_failed_effect_rolls_back_its_writes(db: &Db) {
    let mut inbox = PgInbox::open(&db.url).unwrap();
    let e = inbox
        .deliver("o1", b"apple", |tx| {
            PgInbox::record_pie(tx, "o1", b"half")?;
            Err("the oven broke".into())
        })
        .unwrap_err();
    assert!(matches!(e, InboxError::Effect { .. }), "{e}");
    assert!(inbox.pies().unwrap().is_empty() && inbox.entries().unwrap().is_empty());
    // An effect that swallows its own SQL error leaves an aborted transaction: refused.
    let e = inbox
        .deliver("o1", b"apple", |tx| {
            let _ = tx.execute("SELECT 1/0", &[]);
            Ok(b"pretend".to_vec())
        })
        .unwrap_err();
    assert!(
        matches!(e, InboxError::EffectEndedTransaction { .. }),
        "{e}"
    );
    // One that commits on its own is refused too, and the key is not recorded as completed.
    let e = inbox
        .deliver("o2", b"apple", |tx| {
            tx.batch_execute("COMMIT")?;
            Ok(b"sneaky".to_vec())
        })
        .unwrap_err();
    assert!(
        matches!(e, InboxError::EffectEndedTransaction { .. }),
        "{e}"
    );
    assert!(
        inbox.get("o2").unwrap().is_none(),
        "o2 must not be recorded"
    );
    assert!(bake(&mut inbox, "o1", "apple").unwrap().is_applied());
    assert_eq!(inbox.pie_counts().unwrap()["o1"], 1);
}

fn leases_fence_stale_owners(db: &Db) {
    let (mut inbox, clock) = manual(db);
    let lease = Duration::from_millis(100);
    let first = acquired(inbox.claim("o1", b"apple", lease).unwrap());
    assert_eq!((first.lease_until, first.took_over_from), (1_100, None));
    assert!(matches!(
        inbox.claim("o1", b"apple", lease),
        Err(InboxError::InProgress { .. })
    ));
    assert!(matches!(
        inbox.deliver("o1", b"apple", |_| panic!("must not run")),
        Err(InboxError::InProgress { .. })
    ));
    clock.advance(100);
    let second = acquired(inbox.claim("o1", b"apple", lease).unwrap());
    assert!(second.token > first.token);
    assert_eq!(second.took_over_from, Some(first.token));
    assert!(matches!(
        inbox.complete(&first, b"late"),
        Err(InboxError::NotOwner {
            reason: NotOwnerReason::TakenOver { .. },
            ..
        })
    ));
    inbox.complete(&second, b"sent").unwrap();
    assert_eq!(
        inbox.claim("o1", b"apple", lease).unwrap(),
        Claim::Duplicate(b"sent".to_vec())
    );
    // Release frees a key.
    let l = acquired(inbox.claim("o2", b"plum", lease).unwrap());
    inbox.release(&l).unwrap();
    assert!(matches!(
        inbox.release(&l),
        Err(InboxError::NotOwner {
            reason: NotOwnerReason::NotClaimed,
            ..
        })
    ));
    assert!(bake(&mut inbox, "o2", "plum").unwrap().is_applied());
}

fn retention_prunes_but_never_a_live_claim(db: &Db) {
    let clock = ManualClock::new(0);
    let opts = PgOptions::default()
        .with_clock(clock.clone())
        .with_retention(Retention::Window(50));
    let mut inbox = PgInbox::open_with(&db.url, opts).unwrap();
    assert!(bake(&mut inbox, "o1", "apple").unwrap().is_applied());
    let forever = acquired(inbox.claim("o2", b"plum", Duration::MAX).unwrap());
    assert_eq!(forever.lease_until, END_OF_TIME);
    clock.set(60);
    assert_eq!(inbox.prune().unwrap(), 1, "o1 only: o2's lease never ends");
    assert!(
        bake(&mut inbox, "o1", "apple").unwrap().is_applied(),
        "past the window"
    );
    assert!(matches!(
        bake(&mut inbox, "o2", "plum"),
        Err(InboxError::InProgress { .. })
    ));
}

fn batches_lock_in_key_order_and_fail_items_alone(db: &Db) {
    let mut inbox = PgInbox::open(&db.url).unwrap();
    inbox
        .client()
        .batch_execute("CREATE TABLE orders (key TEXT, payload BYTEA)")
        .unwrap();
    bake(&mut inbox, "old", "apple").unwrap();
    let long = "k".repeat(256);
    let items = [
        ("b", "apple"),
        ("a", "apple"),
        ("a", "apple"),
        ("a", "plum"),
        ("", "x"),
        (long.as_str(), "x"),
        ("c", "boom"),
        ("old", "apple"),
    ];
    let out = inbox
        .deliver_batch(&items, |tx, key, payload| {
            tx.execute("INSERT INTO orders VALUES ($1, $2)", &[&key, &payload])?;
            if payload == b"boom" {
                return Err("burnt after writing".into());
            }
            Ok(format!("ok {key}").into())
        })
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap(), &Outcome::Applied("ok b".into()));
    assert_eq!(out[1].as_ref().unwrap(), &Outcome::Applied("ok a".into()));
    assert_eq!(out[2].as_ref().unwrap(), &Outcome::Duplicate("ok a".into()));
    assert!(matches!(out[3], Err(InboxError::Conflict { .. })));
    assert!(matches!(out[4], Err(InboxError::InvalidKey(_))));
    assert!(matches!(out[5], Err(InboxError::InvalidKey(_))));
    // Its own savepoint undid its write: only this item failed.
    assert!(matches!(out[6], Err(InboxError::Effect { .. })));
    assert!(!out[7].as_ref().unwrap().is_applied());
    let rows: i64 = inbox
        .client()
        .query_one("SELECT count(*) FROM orders", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "b and a, once each");
    let keys: Vec<String> = inbox
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["a", "b", "old"], "c's placeholder is gone");
}

fn sixteen_connections_apply_each_key_once(db: &Db) {
    let inbox = PgInbox::open(&db.url).unwrap();
    std::thread::scope(|s| {
        for t in 0..16 {
            let mut inbox = inbox.try_clone().unwrap();
            s.spawn(move || {
                for i in 0..200 {
                    let key = format!("order-{}", (i + t * 13) % 200);
                    bake(&mut inbox, &key, "apple").unwrap();
                }
            });
        }
    });
    let counts = inbox.pie_counts().unwrap();
    assert_eq!(counts.len(), 200);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    // Batches over the same keys in different orders wait for each other, never deadlock.
    std::thread::scope(|s| {
        for t in 0..8 {
            let mut inbox = inbox.try_clone().unwrap();
            s.spawn(move || {
                let mut keys: Vec<String> = (0..300).map(|i| format!("batch-{i}")).collect();
                if t % 2 == 1 {
                    keys.reverse();
                }
                let items: Vec<(String, &str)> = keys.into_iter().map(|k| (k, "p")).collect();
                // Every item answers (applied, or a duplicate of another batch's).
                for r in inbox
                    .deliver_batch(&items, |tx, key, p| {
                        PgInbox::record_pie(tx, key, p)?;
                        Ok(b"ok".to_vec())
                    })
                    .unwrap()
                {
                    r.unwrap();
                }
            });
        }
    });
    let counts = inbox.pie_counts().unwrap();
    assert_eq!(counts.len(), 500);
    assert!(counts.values().all(|&n| n == 1));
}

fn foreign_and_newer_schemas_are_refused(db: &Db) {
    let mut admin = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    admin
        .batch_execute("CREATE TABLE onepie_inbox (id INT)")
        .unwrap();
    let e = PgInbox::open(&db.url).unwrap_err();
    assert!(matches!(e, InboxError::NotAnInbox { .. }), "{e}");
    admin.batch_execute("DROP TABLE onepie_inbox").unwrap();
    drop(PgInbox::open(&db.url).unwrap());
    admin
        .batch_execute("UPDATE onepie_meta SET value = '9' WHERE name = 'schema_version'")
        .unwrap();
    let e = PgInbox::open(&db.url).unwrap_err();
    assert!(matches!(e, InboxError::NewerSchema { found: 9, .. }), "{e}");
}

fn bad_urls_and_absent_servers_are_one_line_errors(_: &Db) {
    let e = PgInbox::open("postgres://nobody@127.0.0.1:1/none").unwrap_err();
    assert!(
        matches!(e, InboxError::ConnectionLost { .. }) && e.is_retryable(),
        "{e}"
    );
    let e = PgInbox::open("postgres://u:hunter2@[::1/x").unwrap_err();
    assert!(matches!(e, InboxError::Open { .. }), "{e}");
    let text = e.to_string();
    assert!(!text.contains('\n') && !text.contains("hunter2"), "{e}");
}

/// The property harness (the same schedules as against SQLite): exactly one pie per order,
/// and the same answer as the in-memory reference at every step.
fn property_harness_agrees_with_the_reference(db: &Db) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let url = db.url.clone();
    let result = runner.run(&common::schedule(), |ops: Vec<Op>| {
        // A fresh inbox per case: empty the tables.
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        admin
            .batch_execute("DROP TABLE IF EXISTS pies; DROP TABLE IF EXISTS onepie_inbox, onepie_meta; DROP SEQUENCE IF EXISTS onepie_tokens")
            .unwrap();
        let clock = ManualClock::new(1_000);
        let (u, c) = (url.clone(), clock.clone());
        let mut real = StoreReceiver::new(clock, move || {
            PgInbox::open_with(&u, PgOptions::default().with_clock(c.clone()))
        })
        .unwrap();
        let real = harness::run(&mut real, &ops).unwrap();
        let clock = ManualClock::new(1_000);
        let store = PieStore::with_data(Vec::new(), clock.clone());
        let mut reference = StoreReceiver::new(clock, move || Ok(store.clone())).unwrap();
        let reference = harness::run(&mut reference, &ops).unwrap();
        if let Some(v) = &real.violation {
            return Err(TestCaseError::fail(format!("exactly one pie per order broken {v}")));
        }
        for (i, (a, b)) in real.seen.iter().zip(&reference.seen).enumerate() {
            if a != b {
                return Err(TestCaseError::fail(format!(
                    "step {} ({:?}): PostgreSQL {a:?}, reference {b:?}",
                    i + 1,
                    ops[i]
                )));
            }
        }
        if real.ledger != reference.ledger {
            return Err(TestCaseError::fail("ledgers differ"));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Model and receiver in lockstep on PostgreSQL: every house step the checker explores for every
/// design whose house stands for the real inbox, replayed on `PgInbox` (and once through the CLI).
fn every_real_inbox_design_conforms(db: &Db) {
    let mut target = onepie::conform::postgres(&db.url).unwrap();
    for d in onepie::conform::designs() {
        let r = onepie::conform::run(d, &d.defaults, &Default::default(), &mut target).unwrap();
        print!("{r}");
        assert!(r.divergences.is_empty(), "{r}");
        assert!(r.by_answer.contains_key("applied") && r.by_answer.contains_key("duplicate"));
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onepie"))
        .args(["conform", "idempotent-house", "--store", &db.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("replayed on postgres") && text.contains(": 0 divergences"),
        "{text}"
    );
}

/// The quickcheck law the SQLite inbox obeys, on PostgreSQL: any bytes as key and payload,
/// delivered twice, are applied once; another payload under the same key is a conflict.
fn quickcheck_applying_twice_is_applying_once(db: &Db) {
    // quickcheck takes plain functions: the database reaches them through a static.
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.set(db.url.clone()).unwrap();
    fn prop(key: String, payload: Vec<u8>, other: Vec<u8>) -> bool {
        let mut inbox = PgInbox::open(URL.get().unwrap()).unwrap();
        // Each case (and each shrink step) starts from an empty inbox: short random keys repeat.
        inbox
            .client()
            .batch_execute("DELETE FROM onepie_inbox")
            .unwrap();
        let r1 = inbox.deliver(&key, &payload, |_| Ok(payload.clone()));
        let r2 = inbox.deliver(&key, &payload, |_| Ok(b"again".to_vec()));
        let r3 = inbox.deliver(&key, &other, |_| Ok(b"other".to_vec()));
        match (r1, r2) {
            (Err(InboxError::InvalidKey(_)), Err(InboxError::InvalidKey(_))) => {
                key.is_empty() || key.len() > 255 || key.contains('\0')
            }
            (Ok(Outcome::Applied(a)), Ok(Outcome::Duplicate(b))) => {
                a == payload
                    && b == payload
                    && (other == payload || matches!(r3, Err(InboxError::Conflict { .. })))
            }
            _ => false,
        }
    }
    quickcheck::QuickCheck::new()
        .tests(200)
        .quickcheck(prop as fn(String, Vec<u8>, Vec<u8>) -> bool);
}

/// The HTTP layer in transactional mode on PostgreSQL, two instances sharing the database:
/// 64 concurrent requests with one key (32 per instance) bake one pie; ten keys at once each
/// bake one; a retry on the other instance replays. A new key is delivered optimistically on
/// PostgreSQL, so each instance may run the handler once for it (one commits): at most 2 runs
/// per key.
fn the_http_layer_bakes_once_across_two_instances(db: &Db) {
    use onepie::http::IdempotencyLayer;
    use std::sync::Arc;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let inbox = PgInbox::open(&db.url).unwrap();
    let oven = Arc::new(shop::Oven::default());
    oven.bake_ms.store(50, Ordering::SeqCst);
    // The postgres crate's synchronous client runs a runtime of its own, so connections are
    // made outside this one (the layer makes its own on tokio's blocking pool).
    let layers: Vec<_> = (0..2)
        .map(|_| IdempotencyLayer::transactional(inbox.try_clone().unwrap()))
        .collect();
    rt.block_on(async {
        let mut addrs = Vec::new();
        for layer in layers {
            addrs.push(shop::serve(shop::app(layer, oven.clone())).await);
        }
        let c = shop::client();
        let mut requests = Vec::new();
        for i in 0..64 {
            let (c, addr) = (c.clone(), addrs[i % 2]);
            requests.push(tokio::spawn(async move {
                shop::post_order(&c, addr, "order-1", "apple").await
            }));
        }
        for i in 0..10 {
            let (c, addr) = (c.clone(), addrs[i % 2]);
            requests.push(tokio::spawn(async move {
                shop::post_order(&c, addr, &format!("order-k{i}"), "plum").await
            }));
        }
        for r in requests {
            let reply = r.await.unwrap();
            assert!([201, 409].contains(&reply.status), "{reply:?}");
        }
        let first = shop::post_order(&c, addrs[0], "order-1", "apple").await;
        let other = shop::post_order(&c, addrs[1], "order-1", "apple").await;
        assert_eq!((first.status, first.replayed()), (201, true));
        assert_eq!((other.status, other.replayed()), (201, true));
        assert_eq!(other.body, first.body);
        assert_eq!(
            shop::post_order(&c, addrs[1], "order-1", "cherry")
                .await
                .status,
            422
        );
    });
    let keys: Vec<String> = std::iter::once("order-1".to_string())
        .chain((0..10).map(|i| format!("order-k{i}")))
        .collect();
    let mut ledger = Ledger::placing(keys);
    for (key, n) in inbox.pie_counts().unwrap() {
        ledger.record_effects(key, n);
    }
    let tally = ledger.tally();
    assert!(tally.is_exactly_once(), "{tally:?}");
    let runs = oven.runs.load(Ordering::SeqCst);
    assert!(
        (11..=22).contains(&runs),
        "{runs} handler runs for 11 keys on 2 instances"
    );
}

fn main() {
    type Test = (&'static str, fn(&Db));
    let tests: &[Test] = &[
        (
            "apply_duplicate_conflict_and_reconnect",
            apply_duplicate_conflict_and_reconnect,
        ),
        (
            "a_failed_effect_rolls_back_its_writes",
            a_failed_effect_rolls_back_its_writes,
        ),
        ("leases_fence_stale_owners", leases_fence_stale_owners),
        (
            "retention_prunes_but_never_a_live_claim",
            retention_prunes_but_never_a_live_claim,
        ),
        (
            "batches_lock_in_key_order_and_fail_items_alone",
            batches_lock_in_key_order_and_fail_items_alone,
        ),
        (
            "sixteen_connections_apply_each_key_once",
            sixteen_connections_apply_each_key_once,
        ),
        (
            "foreign_and_newer_schemas_are_refused",
            foreign_and_newer_schemas_are_refused,
        ),
        (
            "bad_urls_and_absent_servers_are_one_line_errors",
            bad_urls_and_absent_servers_are_one_line_errors,
        ),
        (
            "property_harness_agrees_with_the_reference",
            property_harness_agrees_with_the_reference,
        ),
        (
            "quickcheck_applying_twice_is_applying_once",
            quickcheck_applying_twice_is_applying_once,
        ),
        (
            "every_real_inbox_design_conforms",
            every_real_inbox_design_conforms,
        ),
        (
            "the_http_layer_bakes_once_across_two_instances",
            the_http_layer_bakes_once_across_two_instances,
        ),
    ];
    let names: Vec<&'static str> = tests.iter().map(|(n, _)| *n).collect();
    let picked = common::chosen(&names);
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(name, _)| picked.contains(name))
        .collect();
    if chosen.is_empty() {
        return;
    }
    let cluster = match Cluster::start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let mut failed = Vec::new();
    for (name, test) in &chosen {
        let db = fresh(&cluster);
        let started = std::time::Instant::now();
        let ok = std::panic::catch_unwind(|| test(&db)).is_ok();
        println!(
            "test {name} ... {} ({:.1} s)",
            if ok { "ok" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if !ok {
            failed.push(*name);
        }
    }
    drop(cluster);
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        chosen.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
