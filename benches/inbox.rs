//! Inbox throughput against the cheapest thing that could remember a key, in the same run:
//!
//! - the decision core + `MemoryStore` against `HashSet<String>::insert`;
//! - the SQLite inbox (WAL, `synchronous=FULL`) against a bare `INSERT OR IGNORE` into a
//!   one-column table under the same settings, one transaction per key and 1,000 keys per
//!   transaction (`deliver_batch`);
//! - bytes of disk per remembered key;
//! - contention (`-- contention`): 16 threads and 8 processes delivering the same keys to one
//!   file, the inbox against `BEGIN IMMEDIATE` with SQLite's own busy timeout (what the inbox
//!   did before): deliveries that failed "locked", and latency percentiles.
//!
//! Keys are random UUID-shaped strings (36 bytes, like real idempotency keys), payloads ~20
//! bytes, results `"ok"`. Each row is the best of a few alternating rounds. Run with
//! `cargo bench --bench inbox` (about 70 s; it starts a throw-away PostgreSQL for its `postgres`
//! section); `-- --quick` runs smaller rounds.

use onepie::inbox::{InboxStore, MemoryStore, SqliteInbox, SqliteOptions};
use rusqlite::Connection;
use std::collections::HashSet;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

/// SplitMix64: deterministic, dependency-free keys.
struct Keys(u64);

impl Keys {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A UUIDv7-shaped key: a counter where v7 has its timestamp, so keys arrive in order.
    fn ordered(&mut self, i: u64) -> String {
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
            i >> 16,
            i & 0xffff,
            (b >> 52) & 0xfff,
            (b >> 36) & 0xffff,
            b & 0xffff_ffff_ffff
        )
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }
}

struct Workload {
    keys: Vec<String>,
    payloads: Vec<String>,
}

impl Workload {
    /// `n` keys; `ordered` keys continue from `next`, so every round keeps appending.
    fn new(gen: &mut Keys, next: &mut u64, n: usize, ordered: bool) -> Self {
        let keys = (0..n)
            .map(|_| {
                *next += 1;
                if ordered {
                    gen.ordered(*next)
                } else {
                    gen.uuid()
                }
            })
            .collect();
        Workload {
            keys,
            payloads: (0..n).map(|i| format!("apple pie, order {i}")).collect(),
        }
    }

    fn pairs(&self) -> Vec<(&str, &[u8])> {
        self.keys
            .iter()
            .zip(&self.payloads)
            .map(|(k, p)| (k.as_str(), p.as_bytes()))
            .collect()
    }
}

/// This thread's CPU time where Linux reports it (`/proc/thread-self/schedstat`), else wall
/// time: the in-memory rounds are pure CPU, and CPU time keeps other processes on a shared
/// machine from stretching them.
enum CpuClock {
    Cpu(u64),
    Wall(Instant),
}

impl CpuClock {
    fn read() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
        (ns > 0).then_some(ns)
    }

    fn start() -> Self {
        Self::read().map_or_else(|| CpuClock::Wall(Instant::now()), CpuClock::Cpu)
    }

    fn elapsed(&self) -> Duration {
        match self {
            CpuClock::Cpu(start) => Duration::from_nanos(Self::read().unwrap_or(*start) - start),
            CpuClock::Wall(start) => start.elapsed(),
        }
    }
}

/// Throughput of the best round: `rounds` closures, each returning (items, elapsed).
fn best(samples: &[(usize, Duration)]) -> f64 {
    samples
        .iter()
        .map(|(n, d)| *n as f64 / d.as_secs_f64())
        .fold(0.0, f64::max)
}

fn wal_full(conn: &Connection) {
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch("PRAGMA synchronous = FULL").unwrap();
}

/// The baseline table: one column. `without_rowid` stores it as the key's b-tree alone; the
/// plain form keeps a rowid table plus the key's unique index.
fn bare(path: &Path, without_rowid: bool) -> Connection {
    let conn = Connection::open(path).unwrap();
    wal_full(&conn);
    let ddl = if without_rowid {
        "CREATE TABLE seen (key TEXT PRIMARY KEY) WITHOUT ROWID"
    } else {
        "CREATE TABLE seen (key TEXT PRIMARY KEY)"
    };
    conn.execute_batch(ddl).unwrap();
    conn
}

fn bare_per_key(conn: &Connection, w: &Workload) -> Duration {
    let mut insert = conn
        .prepare_cached("INSERT OR IGNORE INTO seen (key) VALUES (?1)")
        .unwrap();
    let start = Instant::now();
    for key in &w.keys {
        black_box(insert.execute([key]).unwrap());
    }
    start.elapsed()
}

fn bare_batched(conn: &mut Connection, w: &Workload, batch: usize) -> Duration {
    let start = Instant::now();
    for chunk in w.keys.chunks(batch) {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        {
            let mut insert = tx
                .prepare_cached("INSERT OR IGNORE INTO seen (key) VALUES (?1)")
                .unwrap();
            for key in chunk {
                black_box(insert.execute([key]).unwrap());
            }
        }
        tx.commit().unwrap();
    }
    start.elapsed()
}

/// The floor of a lookup-then-insert design, without any inbox code: per key, hash the
/// payload, probe for the key, insert the row the inbox would write, in a table shaped like
/// the inbox's.
fn floor(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    wal_full(&conn);
    conn.execute_batch(
        "CREATE TABLE inbox (key TEXT PRIMARY KEY NOT NULL, fingerprint BLOB NOT NULL,
             state INTEGER NOT NULL, result TEXT, owner INTEGER, lease_until INTEGER,
             created_at INTEGER, completed_at INTEGER) WITHOUT ROWID",
    )
    .unwrap();
    conn
}

fn floor_batched(conn: &mut Connection, w: &Workload, batch: usize) -> Duration {
    let start = Instant::now();
    for (keys, payloads) in w.keys.chunks(batch).zip(w.payloads.chunks(batch)) {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        {
            let mut probe = tx
                .prepare_cached("SELECT fingerprint, state, result FROM inbox WHERE key = ?1")
                .unwrap();
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO inbox (key, fingerprint, state, result, completed_at)
                     VALUES (?1, ?2, 1, ?3, ?4)",
                )
                .unwrap();
            for (key, payload) in keys.iter().zip(payloads) {
                let fingerprint = onepie::dedup::Fingerprint::of(payload.as_bytes());
                assert!(!probe.exists([key]).unwrap());
                let row = rusqlite::params![key, &fingerprint.0, "ok", 1_777_000_000_000_i64];
                black_box(insert.execute(row).unwrap());
            }
        }
        tx.commit().unwrap();
    }
    start.elapsed()
}

fn inbox_per_key(inbox: &mut SqliteInbox, w: &Workload) -> Duration {
    let start = Instant::now();
    for (key, payload) in w.pairs() {
        let outcome = inbox.deliver(key, payload, |_| Ok("ok".into())).unwrap();
        assert!(black_box(outcome).is_applied());
    }
    start.elapsed()
}

fn inbox_batched(inbox: &mut SqliteInbox, w: &Workload, batch: usize) -> Duration {
    let pairs = w.pairs();
    let start = Instant::now();
    for chunk in pairs.chunks(batch) {
        let outcomes = inbox
            .deliver_batch(chunk, |_, _, _| Ok("ok".into()))
            .unwrap();
        assert!(outcomes.iter().all(|o| o.as_ref().unwrap().is_applied()));
        black_box(outcomes);
    }
    start.elapsed()
}

/// File bytes (database + WAL after a full checkpoint) per key.
fn bytes_per_key(conn: &Connection, path: &Path, keys: usize) -> f64 {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let mut bytes = std::fs::metadata(path).unwrap().len();
    if let Ok(wal) = std::fs::metadata(path.with_extension("db-wal")) {
        bytes += wal.len();
    }
    bytes as f64 / keys as f64
}

struct Row {
    workload: String,
    baseline: &'static str,
    baseline_rate: f64,
    inbox: &'static str,
    inbox_rate: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--contention-child") {
        return contention_child(&args[i + 1..]);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    // `cargo bench` passes `--bench`; any other argument picks sections: memory, single, batch, postgres, contention.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |section: &str| only.is_empty() || only.iter().any(|o| o == section);
    let scale = if quick { 10 } else { 1 };
    let rounds = 5;
    let dir = tempfile::tempdir().unwrap();
    let (mut gen, mut next) = (Keys(1), 0);
    let mut fresh = |n: usize, ordered: bool| Workload::new(&mut gen, &mut next, n, ordered);
    let total = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut disk: Vec<(String, [f64; 3])> = Vec::new();

    // 1. Decision core + in-memory store vs HashSet::insert, single-threaded. Fresh
    //    containers each round, both starting empty, both allocating their own copy of each
    //    key; the store also hashes the payload, decides, runs the effect and keeps its result.
    //    At 50,000 keys both containers fit in cache, and the store's fixed costs (SHA-256 of
    //    the payload, the clock, the lock, the result string) show; at 500,000 cache misses
    //    dominate both.
    for n in [50_000 / scale, 500_000 / scale] {
        if !run("memory") {
            break;
        }
        let w = fresh(n, false);
        let (mut set_t, mut mem_t) = (Vec::new(), Vec::new());
        for _ in 0..rounds + 2 {
            let mut set = HashSet::new();
            let start = CpuClock::start();
            for key in &w.keys {
                black_box(set.insert(key.clone()));
            }
            set_t.push((n, start.elapsed()));
            drop(set);

            // The real clock, as a receiver would use it.
            let mut store = MemoryStore::new();
            let start = CpuClock::start();
            for (key, payload) in w.keys.iter().zip(&w.payloads) {
                let outcome = store
                    .deliver(key, payload.as_bytes(), |_| Ok("ok".into()))
                    .unwrap();
                black_box(outcome);
            }
            mem_t.push((n, start.elapsed()));
        }
        rows.push(Row {
            workload: format!("in memory, 1 thread, {} keys", thousands(n as f64)),
            baseline: "HashSet<String>::insert",
            baseline_rate: best(&set_t),
            inbox: "MemoryStore::deliver",
            inbox_rate: best(&mem_t),
        });
    }

    // 2. One fsync'd transaction per key (key order hardly matters next to the fsync).
    //    fsync times swing with whatever else uses the disk, so many short alternating rounds.
    if run("single") {
        let n = 50 / scale;
        let bare_conn = bare(&dir.path().join("bare-single.db"), false);
        let mut inbox = SqliteInbox::open(dir.path().join("inbox-single.db")).unwrap();
        let (mut bare_t, mut inbox_t) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            bare_t.push((n, bare_per_key(&bare_conn, &fresh(n, true))));
            inbox_t.push((n, inbox_per_key(&mut inbox, &fresh(n, true))));
        }
        rows.push(Row {
            workload: "SQLite, 1 key per transaction".into(),
            baseline: "bare INSERT OR IGNORE",
            baseline_rate: best(&bare_t),
            inbox: "SqliteInbox::deliver",
            inbox_rate: best(&inbox_t),
        });
    }

    // 3. Group commit, 1,000 keys per transaction, with time-ordered keys (UUIDv7, order
    //    numbers) and with random ones (UUIDv4), whose inserts land all over the b-tree.
    //    Two baselines: the plain one-column table, and the same WITHOUT ROWID.
    let batch = 1_000;
    for (ordered, n, label) in [
        (true, 100_000 / scale, "ordered"),
        (false, 40_000 / scale, "random"),
    ] {
        if !run("batch") {
            continue;
        }
        let path = |name: &str| dir.path().join(format!("{name}-{label}.db"));
        let mut plain = bare(&path("plain"), false);
        let mut slim = bare(&path("slim"), true);
        let mut raw = floor(&path("raw"));
        let mut inbox = SqliteInbox::open(path("inbox")).unwrap();
        let (mut plain_t, mut slim_t, mut raw_t, mut inbox_t) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            plain_t.push((n, bare_batched(&mut plain, &fresh(n, ordered), batch)));
            slim_t.push((n, bare_batched(&mut slim, &fresh(n, ordered), batch)));
            raw_t.push((n, floor_batched(&mut raw, &fresh(n, ordered), batch)));
            inbox_t.push((n, inbox_batched(&mut inbox, &fresh(n, ordered), batch)));
        }
        let workload = format!("SQLite, 1,000 {label} keys per transaction");
        let inbox_rate = best(&inbox_t);
        rows.push(Row {
            workload: workload.clone(),
            baseline: "bare INSERT OR IGNORE",
            baseline_rate: best(&plain_t),
            inbox: "SqliteInbox::deliver_batch",
            inbox_rate,
        });
        rows.push(Row {
            workload: workload.clone(),
            baseline: "bare, WITHOUT ROWID table",
            baseline_rate: best(&slim_t),
            inbox: "SqliteInbox::deliver_batch",
            inbox_rate,
        });
        rows.push(Row {
            workload,
            baseline: "floor: raw SELECT + INSERT",
            baseline_rate: best(&raw_t),
            inbox: "SqliteInbox::deliver_batch",
            inbox_rate,
        });
        // 4. Disk per remembered key, from the same files.
        let keys = rounds * n;
        disk.push((
            format!("{label} keys, {} per file", thousands(keys as f64)),
            [
                bytes_per_key(&plain, &path("plain"), keys),
                bytes_per_key(&slim, &path("slim"), keys),
                bytes_per_key(inbox.connection(), &path("inbox"), keys),
            ],
        ));
    }

    println!("onepie inbox benchmark: 36-byte UUID-shaped keys, ~20-byte payloads, result \"ok\"");
    println!(
        "SQLite: WAL, synchronous=FULL, wall time, best of {rounds} interleaved rounds \
         (1 key per transaction: best of 20 rounds of 50 keys)"
    );
    println!("in memory: thread CPU time, best of {} rounds", rounds + 2);
    println!();
    let mut table = vec![[
        "workload",
        "baseline",
        "baseline/s",
        "inbox",
        "inbox/s",
        "ratio",
    ]
    .map(String::from)];
    for r in &rows {
        table.push([
            r.workload.clone(),
            r.baseline.to_string(),
            thousands(r.baseline_rate),
            r.inbox.to_string(),
            thousands(r.inbox_rate),
            format!("{:.2}", r.baseline_rate / r.inbox_rate),
        ]);
    }
    print_table(&table, &[false, false, true, false, true, true]);
    println!();
    println!(
        "ratio = inbox time per delivery / baseline time per key (lower is better)\n\
         bare  = INSERT OR IGNORE into a one-column table: key TEXT PRIMARY KEY (a rowid table \
         and its index), or the same WITHOUT ROWID\n\
         floor = the inbox's own SQL without the inbox code: hash, probe the key, insert its row"
    );
    if !disk.is_empty() {
        println!();
        let mut table = vec![[
            "disk per remembered key, bytes",
            "bare table",
            "bare WITHOUT ROWID",
            "inbox",
        ]
        .map(String::from)];
        for (name, [plain, slim, inbox]) in &disk {
            table.push([
                name.clone(),
                format!("{plain:.1}"),
                format!("{slim:.1}"),
                format!("{inbox:.1}"),
            ]);
        }
        print_table(&table, &[false, true, true, true]);
    }
    if run("postgres") {
        println!();
        postgres(if quick { 2_000 } else { 10_000 });
    }
    if run("contention") {
        println!();
        contention(dir.path(), if quick { 1_000 } else { 10_000 });
    }
    println!();
    println!("total {:.1} s", total.elapsed().as_secs_f64());
}

/// Deliveries/s on a throw-away PostgreSQL server, for 1, 8 and 32 connections, one key per
/// transaction and 1,000 per transaction, against a bare `INSERT … ON CONFLICT DO NOTHING`
/// into a one-column table in the same run and under the same `synchronous_commit` (on, the
/// default); then bytes per remembered key.
fn postgres(keys: usize) {
    use onepie::inbox::{PgInbox, PgOptions};
    use onepie::testkit::postgres::Cluster;
    let cluster = Cluster::start().unwrap_or_else(|e| panic!("{e}"));
    let mut admin = postgres::Client::connect(&cluster.url(), postgres::NoTls).unwrap();
    let mut table = vec![[
        "PostgreSQL, synchronous_commit=on",
        "connections",
        "bare/s",
        "inbox/s",
        "ratio",
    ]
    .map(String::from)];
    let mut n = 0;
    for (batch, conns) in [(1, 1), (1, 8), (1, 32), (1000, 1), (1000, 8), (1000, 32)] {
        // Each measurement in a fresh database, so the tables start empty.
        let mut fresh = || {
            n += 1;
            let name = format!("bench{n}");
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
            cluster.url_for(&name)
        };
        let (bare_url, inbox_url) = (fresh(), fresh());
        let keys_of = |c: usize| -> Vec<String> {
            (0..keys / conns)
                .map(|i| format!("{c:02}-{i:08}-7f3a-4c1e-9b2d-0123456789ab"))
                .collect()
        };
        let mut setup = postgres::Client::connect(&bare_url, postgres::NoTls).unwrap();
        setup
            .batch_execute("CREATE TABLE seen (key TEXT PRIMARY KEY)")
            .unwrap();
        drop(PgInbox::open(&inbox_url).unwrap());
        let timed = |work: &(dyn Fn(usize) + Sync)| {
            let t = Instant::now();
            std::thread::scope(|s| {
                for c in 0..conns {
                    s.spawn(move || work(c));
                }
            });
            (keys / conns * conns) as f64 / t.elapsed().as_secs_f64()
        };
        let bare = timed(&|c| {
            let mut client = postgres::Client::connect(&bare_url, postgres::NoTls).unwrap();
            let insert = client
                .prepare("INSERT INTO seen (key) VALUES ($1) ON CONFLICT DO NOTHING")
                .unwrap();
            for chunk in keys_of(c).chunks(batch) {
                let mut tx = client.transaction().unwrap();
                for k in chunk {
                    tx.execute(&insert, &[k]).unwrap();
                }
                tx.commit().unwrap();
            }
        });
        let inbox = timed(&|c| {
            let mut inbox = PgInbox::open_with(&inbox_url, PgOptions::default()).unwrap();
            let keys = keys_of(c);
            if batch == 1 {
                for k in &keys {
                    inbox
                        .deliver(k, b"apple pie, order", |_| Ok(b"ok".to_vec()))
                        .unwrap();
                }
            } else {
                for chunk in keys.chunks(batch) {
                    let items: Vec<(&str, &[u8])> = chunk
                        .iter()
                        .map(|k| (k.as_str(), &b"apple pie, order"[..]))
                        .collect();
                    for r in inbox
                        .deliver_batch(&items, |_, _, _| Ok(b"ok".to_vec()))
                        .unwrap()
                    {
                        r.unwrap();
                    }
                }
            }
        });
        table.push([
            if batch == 1 {
                "1 key per transaction".into()
            } else {
                "1,000 keys per transaction".to_string()
            },
            conns.to_string(),
            thousands(bare),
            thousands(inbox),
            format!("{:.2}", bare / inbox),
        ]);
        if batch == 1000 && conns == 32 {
            let mut c = postgres::Client::connect(&inbox_url, postgres::NoTls).unwrap();
            c.batch_execute("VACUUM ANALYZE onepie_inbox").unwrap();
            let row = c
                .query_one(
                    "SELECT pg_total_relation_size('onepie_inbox')::float8 / count(*) FROM onepie_inbox",
                    &[],
                )
                .unwrap();
            let per_key: f64 = row.get(0);
            let mut b = postgres::Client::connect(&bare_url, postgres::NoTls).unwrap();
            let bare_per_key: f64 = b
                .query_one(
                    "SELECT pg_total_relation_size('seen')::float8 / count(*) FROM seen",
                    &[],
                )
                .unwrap()
                .get(0);
            println!(
                "PostgreSQL bytes per remembered key (table + index): inbox {per_key:.0}, bare one-column table {bare_per_key:.0}"
            );
        }
    }
    print_table(&table, &[false, true, true, true, true]);
    println!("ratio = bare deliveries/s over inbox deliveries/s (lower is better); keys are 39-byte UUID-like strings");
}

/// How a writer under contention gets its turn.
#[derive(Clone, Copy, PartialEq)]
enum Contender {
    /// `SqliteInbox::deliver`: a completed key answered from a read; short jittered naps while
    /// another writer holds the lock.
    Inbox,
    /// What the inbox did before: every delivery in `BEGIN IMMEDIATE`, SQLite's own
    /// `busy_timeout` (naps growing to 100 ms).
    SqliteBusyTimeout,
}

/// One writer: delivers keys `start..start+n` (mod n), each with a fsync'd commit when new.
/// Returns each delivery's latency in microseconds and how many failed.
fn contend(path: &Path, start: usize, n: usize, who: Contender) -> (Vec<u64>, usize) {
    let timeout = Duration::from_secs(5);
    let (mut lat, mut failed) = (Vec::with_capacity(n), 0);
    let key = |i: usize| format!("order-{:06}", (start + i) % n);
    match who {
        Contender::Inbox => {
            let opts = SqliteOptions::default().with_busy_timeout(timeout);
            let mut inbox = SqliteInbox::open_with(path, opts).unwrap();
            for i in 0..n {
                let k = key(i);
                let t = Instant::now();
                let r = inbox.deliver(&k, b"apple", |_| Ok(b"ok".to_vec()));
                lat.push(t.elapsed().as_micros() as u64);
                failed += r.is_err() as usize;
            }
        }
        Contender::SqliteBusyTimeout => {
            let mut conn = Connection::open(path).unwrap();
            conn.busy_timeout(timeout).unwrap();
            for i in 0..n {
                let k = key(i);
                let t = Instant::now();
                let r = (|| -> rusqlite::Result<()> {
                    let tx =
                        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    tx.execute("INSERT OR IGNORE INTO seen (key) VALUES (?1)", [&k])?;
                    tx.commit()
                })();
                lat.push(t.elapsed().as_micros() as u64);
                failed += r.is_err() as usize;
            }
        }
    }
    (lat, failed)
}

/// `--contention-child PATH START N inbox|sqlite`: one process of the 8-process rows.
fn contention_child(args: &[String]) {
    let who = if args[3] == "inbox" {
        Contender::Inbox
    } else {
        Contender::SqliteBusyTimeout
    };
    let (lat, failed) = contend(
        Path::new(&args[0]),
        args[1].parse().unwrap(),
        args[2].parse().unwrap(),
        who,
    );
    let text: Vec<String> = lat.iter().map(u64::to_string).collect();
    println!("{failed} {}", text.join(","));
}

/// 16 threads, then 8 processes, each delivering the same `n` keys to one file (each writer
/// starting at a different key), with the inbox and with SQLite's own busy handling.
fn contention(dir: &Path, n: usize) {
    let mut table = vec![[
        "writers on one file, each delivering the same keys",
        "handling",
        "failed (locked)",
        "p50 ms",
        "p99 ms",
        "max ms",
        "seconds",
    ]
    .map(String::from)];
    for (writers, processes) in [(16, false), (8, true)] {
        for who in [Contender::SqliteBusyTimeout, Contender::Inbox] {
            let path = dir.join(format!(
                "contention-{writers}-{}.db",
                who == Contender::Inbox
            ));
            match who {
                Contender::Inbox => drop(SqliteInbox::open(&path).unwrap()),
                Contender::SqliteBusyTimeout => {
                    bare(&path, true);
                }
            }
            let t = Instant::now();
            let results: Vec<(Vec<u64>, usize)> = if processes {
                let exe = std::env::current_exe().unwrap();
                let children: Vec<_> = (0..writers)
                    .map(|w| {
                        std::process::Command::new(&exe)
                            .arg("--contention-child")
                            .arg(&path)
                            .arg((w * n / writers).to_string())
                            .arg(n.to_string())
                            .arg(if who == Contender::Inbox {
                                "inbox"
                            } else {
                                "sqlite"
                            })
                            .stdout(std::process::Stdio::piped())
                            .spawn()
                            .unwrap()
                    })
                    .collect();
                children
                    .into_iter()
                    .map(|c| {
                        let out = String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap();
                        let (failed, lat) = out.trim().split_once(' ').unwrap();
                        (
                            lat.split(',').map(|x| x.parse().unwrap()).collect(),
                            failed.parse().unwrap(),
                        )
                    })
                    .collect()
            } else {
                std::thread::scope(|s| {
                    let joins: Vec<_> = (0..writers)
                        .map(|w| {
                            let path = &path;
                            s.spawn(move || contend(path, w * n / writers, n, who))
                        })
                        .collect();
                    joins.into_iter().map(|j| j.join().unwrap()).collect()
                })
            };
            let seconds = t.elapsed().as_secs_f64();
            let mut lat: Vec<u64> = results
                .iter()
                .flat_map(|(l, _)| l.iter().copied())
                .collect();
            let failed: usize = results.iter().map(|(_, f)| f).sum();
            lat.sort_unstable();
            let ms = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
            table.push([
                format!(
                    "{writers} {} x {} keys",
                    if processes { "processes" } else { "threads" },
                    thousands(n as f64)
                ),
                match who {
                    Contender::Inbox => "SqliteInbox::deliver".into(),
                    Contender::SqliteBusyTimeout => "BEGIN IMMEDIATE + busy_timeout 5 s".into(),
                },
                format!("{failed} of {}", thousands(lat.len() as f64)),
                format!("{:.2}", ms(0.5)),
                format!("{:.2}", ms(0.99)),
                format!("{:.0}", ms(1.0)),
                format!("{seconds:.1}"),
            ]);
        }
    }
    print_table(&table, &[false, false, true, true, true, true, true]);
}

/// A Markdown table, columns as wide as their widest cell; `right` aligns numbers.
fn print_table<const N: usize>(rows: &[[String; N]], right: &[bool; N]) {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String; N]| {
        let cells: Vec<String> = (0..N)
            .map(|i| {
                let w = widths[i];
                if right[i] {
                    format!(" {:>w$} ", row[i])
                } else {
                    format!(" {:<w$} ", row[i])
                }
            })
            .collect();
        format!("|{}|", cells.join("|"))
    };
    println!("{}", line(&rows[0]));
    let rule: Vec<String> = (0..N)
        .map(|i| {
            let dashes = "-".repeat(widths[i] + 1);
            if right[i] {
                format!("{dashes}:")
            } else {
                format!("{dashes}-")
            }
        })
        .collect();
    println!("|{}|", rule.join("|"));
    for row in &rows[1..] {
        println!("{}", line(row));
    }
}

fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
