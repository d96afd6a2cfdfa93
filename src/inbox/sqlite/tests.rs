//! The SQLite inbox's own tests: the transaction protocol, files that are not inboxes, and
//! the faults a real file system brings.

use super::*;
use crate::dedup::{Fingerprint, Stage};
use crate::inbox::{KeyError, ManualClock, NotOwnerReason};
use rusqlite::Connection;
use std::path::Path;

type Effect = fn(&mut SqliteTx<'_>, &str) -> Result<Vec<u8>, BoxError>;

/// The tests' effect: a row in a table of their own, in the delivery's transaction.
fn record_pie(tx: &mut SqliteTx<'_>, key: &str) -> rusqlite::Result<i64> {
    tx.execute_batch("CREATE TABLE IF NOT EXISTS pies (number INTEGER PRIMARY KEY, key TEXT)")?;
    tx.execute("INSERT INTO pies (key) VALUES (?1)", [key])?;
    Ok(tx.last_insert_rowid())
}

fn bake_pie(tx: &mut SqliteTx<'_>, key: &str) -> Result<Vec<u8>, BoxError> {
    Ok(format!("pie #{}", record_pie(tx, key)?).into())
}

/// The keys of every pie, in order.
fn pies(inbox: &SqliteInbox) -> Vec<String> {
    let mut stmt = match inbox
        .connection()
        .prepare("SELECT key FROM pies ORDER BY number")
    {
        Ok(stmt) => stmt,
        Err(_) => return Vec::new(), // no pie baked yet
    };
    let keys = stmt.query_map([], |r| r.get(0)).unwrap();
    keys.map(Result::unwrap).collect()
}

fn pie_count(inbox: &SqliteInbox, key: &str) -> usize {
    pies(inbox).iter().filter(|k| *k == key).count()
}

fn deliver(inbox: &mut SqliteInbox, key: &str, payload: &str) -> Result<Outcome, InboxError> {
    let bake: Effect = bake_pie;
    inbox.deliver(key, payload.as_bytes(), |tx| bake(tx, key))
}

fn manual(path: &Path) -> (SqliteInbox, ManualClock) {
    let clock = ManualClock::new(1_000);
    let opts = SqliteOptions::default().with_clock(clock.clone());
    (SqliteInbox::open_with(path, opts).unwrap(), clock)
}

fn acquired(claim: Claim) -> Lease {
    match claim {
        Claim::Acquired(lease) => lease,
        other => panic!("expected a lease, got {other:?}"),
    }
}

#[test]
fn apply_duplicate_conflict_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let mut inbox = SqliteInbox::open(&path).unwrap();
    assert_eq!(
        deliver(&mut inbox, "o1", "apple").unwrap(),
        Outcome::Applied("pie #1".into())
    );
    assert_eq!(
        deliver(&mut inbox, "o1", "apple").unwrap(),
        Outcome::Duplicate("pie #1".into())
    );
    let e = deliver(&mut inbox, "o1", "plum").unwrap_err();
    assert!(
        matches!(&e, InboxError::Conflict { key, stored, incoming }
            if key == "o1" && *stored == Fingerprint::of(b"apple") && *incoming == Fingerprint::of(b"plum")),
        "{e}"
    );
    // Crash-and-reopen: the key and its pie survive; the redelivery is still a duplicate.
    drop(inbox);
    let mut inbox = SqliteInbox::open(&path).unwrap();
    assert!(!deliver(&mut inbox, "o1", "apple").unwrap().is_applied());
    assert_eq!(pie_count(&inbox, "o1"), 1);
    let entry = inbox.get("o1").unwrap().unwrap();
    assert!(
        matches!(entry.record.stage, Stage::Completed { ref result, .. } if result == b"pie #1")
    );
    assert_eq!(inbox.get("o2").unwrap(), None);
    assert_eq!(inbox.entries().unwrap().len(), 1);
}

#[test]
fn the_file_is_wal_and_synchronous_full_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = SqliteInbox::open(dir.path().join("inbox.db")).unwrap();
    let conn = inbox.connection();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    let app: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    assert_eq!((mode.as_str(), sync, app), ("wal", 2, APPLICATION_ID));
}

#[test]
fn bad_keys_record_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut inbox = SqliteInbox::open(dir.path().join("inbox.db")).unwrap();
    assert!(matches!(
        deliver(&mut inbox, "", "apple"),
        Err(InboxError::InvalidKey(KeyError::Empty))
    ));
    let long = "é".repeat(128); // 256 bytes, 128 characters: the limit is in bytes
    assert!(matches!(
        deliver(&mut inbox, &long, "apple"),
        Err(InboxError::InvalidKey(KeyError::TooLong { len: 256 }))
    ));
    assert!(matches!(
        inbox.claim("", b"x", Duration::from_secs(1)),
        Err(InboxError::InvalidKey(_))
    ));
    assert!(deliver(&mut inbox, &"k".repeat(255), "apple")
        .unwrap()
        .is_applied());
    assert_eq!(inbox.entries().unwrap().len(), 1);
}

#[test]
fn a_failed_effect_rolls_back_its_own_writes_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut inbox = SqliteInbox::open(dir.path().join("inbox.db")).unwrap();
    let e = inbox
        .deliver("o1", b"apple", |tx| {
            record_pie(tx, "o1")?;
            Err("the oven broke".into())
        })
        .unwrap_err();
    assert!(
        matches!(&e, InboxError::Effect { key, .. } if key == "o1"),
        "{e}"
    );
    assert!(e.to_string().contains("the oven broke"));
    assert!(pies(&inbox).is_empty() && inbox.entries().unwrap().is_empty());
    // A panicking effect is a crash in the middle: nothing is recorded either.
    let crash = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = inbox.deliver("o1", b"apple", |tx| {
            record_pie(tx, "o1").unwrap();
            panic!("power cut");
        });
    }));
    assert!(crash.is_err());
    assert!(pies(&inbox).is_empty() && inbox.entries().unwrap().is_empty());
    // The retry applies exactly once.
    assert!(deliver(&mut inbox, "o1", "apple").unwrap().is_applied());
    assert_eq!(pie_count(&inbox, "o1"), 1);
}

#[test]
fn an_effect_that_ends_the_transaction_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut inbox = SqliteInbox::open(dir.path().join("inbox.db")).unwrap();
    let e = inbox
        .deliver("o1", b"apple", |tx| {
            tx.execute_batch("COMMIT")?;
            Ok("sneaky".into())
        })
        .unwrap_err();
    assert!(
        matches!(e, InboxError::EffectEndedTransaction { .. }),
        "{e}"
    );
    assert!(inbox.entries().unwrap().is_empty());
}

#[test]
fn effects_can_write_their_own_tables_in_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut inbox = SqliteInbox::open(dir.path().join("inbox.db")).unwrap();
    inbox
        .connection()
        .execute_batch("CREATE TABLE IF NOT EXISTS balance (amount INTEGER)")
        .unwrap();
    for _ in 0..3 {
        inbox
            .deliver("pay-1", b"+5", |tx| {
                tx.execute("INSERT INTO balance VALUES (5)", [])?;
                Ok("paid".into())
            })
            .unwrap();
    }
    let total: i64 = inbox
        .connection()
        .query_row("SELECT sum(amount) FROM balance", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total, 5);
}

#[test]
fn leases_fence_stale_owners() {
    let dir = tempfile::tempdir().unwrap();
    let (mut inbox, clock) = manual(&dir.path().join("inbox.db"));
    let lease = Duration::from_millis(100);
    let first = acquired(inbox.claim("o1", b"apple", lease).unwrap());
    assert_eq!((first.lease_until, first.took_over_from), (1_100, None));
    // A live lease: both paths see "in progress", nothing runs.
    let e = inbox.claim("o1", b"apple", lease).unwrap_err();
    assert!(
        matches!(e, InboxError::InProgress { owner, retry_after, .. }
            if owner == first.token && retry_after == Duration::from_millis(100))
    );
    assert!(matches!(
        inbox.deliver("o1", b"apple", |_| panic!("must not run")),
        Err(InboxError::InProgress { .. })
    ));
    assert!(matches!(
        inbox.claim("o1", b"plum", lease),
        Err(InboxError::Conflict { .. })
    ));
    clock.advance(100);
    let second = acquired(inbox.claim("o1", b"apple", lease).unwrap());
    assert!(second.token > first.token);
    assert_eq!(second.took_over_from, Some(first.token));
    for e in [
        inbox.complete(&first, b"late").unwrap_err(),
        inbox.release(&first).unwrap_err(),
    ] {
        assert!(
            matches!(e, InboxError::NotOwner { reason: NotOwnerReason::TakenOver { by }, token, .. }
                if by == second.token && token == first.token),
            "{e}"
        );
    }
    // Past its lease but not taken over: the owner may still complete.
    clock.advance(500);
    inbox.complete(&second, b"sent").unwrap();
    assert!(matches!(
        inbox.complete(&second, b"again"),
        Err(InboxError::NotOwner {
            reason: NotOwnerReason::Completed,
            ..
        })
    ));
    assert_eq!(
        inbox.claim("o1", b"apple", lease).unwrap(),
        Claim::Duplicate("sent".into())
    );
    assert_eq!(
        deliver(&mut inbox, "o1", "apple").unwrap(),
        Outcome::Duplicate("sent".into())
    );
}

#[test]
fn a_transactional_delivery_takes_over_an_abandoned_claim() {
    let dir = tempfile::tempdir().unwrap();
    let (mut inbox, clock) = manual(&dir.path().join("inbox.db"));
    let stale = acquired(
        inbox
            .claim("o1", b"apple", Duration::from_millis(10))
            .unwrap(),
    );
    clock.advance(10);
    assert!(deliver(&mut inbox, "o1", "apple").unwrap().is_applied());
    assert!(matches!(
        inbox.complete(&stale, b"late"),
        Err(InboxError::NotOwner {
            reason: NotOwnerReason::Completed,
            ..
        })
    ));
    let entry = inbox.get("o1").unwrap().unwrap();
    assert_eq!(
        entry.created_at, 1_000,
        "a takeover keeps the key's history"
    );
}

#[test]
fn release_lets_the_next_delivery_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (mut inbox, _) = manual(&dir.path().join("inbox.db"));
    let lease = acquired(inbox.claim("o1", b"apple", Duration::from_secs(1)).unwrap());
    inbox.release(&lease).unwrap();
    assert!(matches!(
        inbox.release(&lease),
        Err(InboxError::NotOwner {
            reason: NotOwnerReason::NotClaimed,
            ..
        })
    ));
    assert!(deliver(&mut inbox, "o1", "apple").unwrap().is_applied());
}

#[test]
fn retention_window_forgets_prunes_and_never_reuses_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let opts = SqliteOptions::default()
        .with_clock(clock.clone())
        .with_retention(Retention::Window(50));
    let mut inbox = SqliteInbox::open_with(dir.path().join("inbox.db"), opts).unwrap();
    assert_eq!(inbox.retention(), Retention::Window(50));
    assert!(deliver(&mut inbox, "o1", "apple").unwrap().is_applied());
    let old = acquired(
        inbox
            .claim("o2", b"plum", Duration::from_millis(5))
            .unwrap(),
    );
    clock.set(50);
    assert!(!deliver(&mut inbox, "o1", "apple").unwrap().is_applied());
    assert_eq!(inbox.prune().unwrap(), 0);
    clock.set(60);
    assert_eq!(
        inbox.prune().unwrap(),
        2,
        "o1 completed at 0, o2's lease ended at 5"
    );
    assert!(inbox.entries().unwrap().is_empty());
    // Past the window the redelivery is applied again: the documented caveat.
    assert!(deliver(&mut inbox, "o1", "apple").unwrap().is_applied());
    assert_eq!(pie_count(&inbox, "o1"), 2);
    // A key forgotten by the window is judged as new, even with another payload.
    clock.set(200);
    assert!(deliver(&mut inbox, "o1", "cherry").unwrap().is_applied());
    let new = acquired(
        inbox
            .claim("o2", b"plum", Duration::from_millis(5))
            .unwrap(),
    );
    assert!(new.token > old.token);
    assert!(matches!(
        inbox.complete(&old, b"x"),
        Err(InboxError::NotOwner { .. })
    ));
}

#[test]
fn forever_retention_prunes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut inbox, clock) = manual(&dir.path().join("inbox.db"));
    deliver(&mut inbox, "o1", "apple").unwrap();
    clock.advance(u32::MAX as u64);
    assert_eq!(inbox.prune().unwrap(), 0);
    assert!(!deliver(&mut inbox, "o1", "apple").unwrap().is_applied());
}

#[test]
fn batch_commits_once_and_judges_each_item() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let mut inbox = SqliteInbox::open(&path).unwrap();
    deliver(&mut inbox, "old", "apple").unwrap();
    let long = "k".repeat(256);
    let items = [
        ("a", "apple"),
        ("a", "apple"),
        ("a", "plum"),
        ("", "x"),
        (long.as_str(), "x"),
        ("b", "boom"),
        ("old", "apple"),
        ("c", "cherry"),
    ];
    let out = inbox
        .deliver_batch(&items, |tx, key, payload| {
            if payload == b"boom" {
                return Err("no dough for this one".into());
            }
            let pie = record_pie(tx, key)?;
            Ok(format!("pie #{pie}").into())
        })
        .unwrap();
    assert_eq!(out.len(), items.len());
    assert_eq!(out[0].as_ref().unwrap(), &Outcome::Applied("pie #2".into()));
    assert_eq!(
        out[1].as_ref().unwrap(),
        &Outcome::Duplicate("pie #2".into())
    );
    assert!(matches!(out[2], Err(InboxError::Conflict { .. })));
    assert!(matches!(
        out[3],
        Err(InboxError::InvalidKey(KeyError::Empty))
    ));
    assert!(matches!(
        out[4],
        Err(InboxError::InvalidKey(KeyError::TooLong { .. }))
    ));
    assert!(matches!(out[5], Err(InboxError::Effect { .. })));
    assert_eq!(
        out[6].as_ref().unwrap(),
        &Outcome::Duplicate("pie #1".into())
    );
    assert_eq!(out[7].as_ref().unwrap(), &Outcome::Applied("pie #3".into()));
    let keys = pies(&inbox);
    assert_eq!(keys, ["old", "a", "c"]);
    drop(inbox);
    let inbox = SqliteInbox::open(&path).unwrap();
    assert_eq!(inbox.entries().unwrap().len(), 3);
}

#[test]
fn an_effect_that_fails_after_writing_fails_its_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut inbox = SqliteInbox::open(dir.path().join("inbox.db")).unwrap();
    let e = inbox
        .deliver_batch(&[("a", "1"), ("b", "2"), ("c", "3")], |tx, key, _| {
            let pie = record_pie(tx, key)?;
            if key == "b" {
                return Err("burnt".into());
            }
            Ok(format!("pie #{pie}").into())
        })
        .unwrap_err();
    assert!(
        matches!(&e, InboxError::BatchEffect { key, .. } if key == "b"),
        "{e}"
    );
    assert!(e.to_string().contains("burnt"));
    assert!(inbox.entries().unwrap().is_empty() && pies(&inbox).is_empty());
    // The same failure alone fails only that delivery.
    let e = inbox
        .deliver("b", b"2", |tx| {
            record_pie(tx, "b")?;
            Err("burnt".into())
        })
        .unwrap_err();
    assert!(matches!(e, InboxError::Effect { .. }), "{e}");
}

#[test]
fn a_batch_whose_transaction_is_lost_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut inbox = SqliteInbox::open(dir.path().join("inbox.db")).unwrap();
    let e = inbox
        .deliver_batch(&[("a", "1"), ("b", "2"), ("c", "3")], |tx, key, _| {
            if key == "b" {
                tx.execute_batch("ROLLBACK")?;
                return Err("gave up".into());
            }
            Ok(format!("pie #{}", record_pie(tx, key)?).into())
        })
        .unwrap_err();
    assert!(
        matches!(&e, InboxError::EffectEndedTransaction { key } if key == "b"),
        "{e}"
    );
    assert!(inbox.entries().unwrap().is_empty() && pies(&inbox).is_empty());
}

#[test]
fn a_locked_file_is_a_typed_error_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let opts = SqliteOptions::default().with_busy_timeout(Duration::from_millis(50));
    let mut inbox = SqliteInbox::open_with(&path, opts.clone()).unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let e = deliver(&mut inbox, "o1", "apple").unwrap_err();
    assert!(
        matches!(&e, InboxError::Locked { waited, .. } if *waited == Duration::from_millis(50)),
        "{e}"
    );
    assert!(e.is_retryable());
    let e = inbox
        .deliver_batch(&[("o1", "apple")], |tx, k, _| bake_pie(tx, k))
        .unwrap_err();
    assert!(matches!(e, InboxError::Locked { .. }));
    other.execute_batch("ROLLBACK").unwrap();
    assert!(inbox.entries().unwrap().is_empty());
    assert!(deliver(&mut inbox, "o1", "apple").unwrap().is_applied());
    // An exclusive lock (taken while no one else has the file open) blocks even reading
    // the header at open.
    drop(inbox);
    other
        .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE;")
        .unwrap();
    assert!(matches!(
        SqliteInbox::open_with(&path, opts),
        Err(InboxError::Locked { .. })
    ));
}

#[test]
fn read_only_handles_read_but_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    deliver(&mut SqliteInbox::open(&path).unwrap(), "o1", "apple").unwrap();
    let mut ro = SqliteInbox::open_with(&path, SqliteOptions::default().read_only()).unwrap();
    assert_eq!(ro.entries().unwrap().len(), 1);
    for e in [
        deliver(&mut ro, "o2", "apple").unwrap_err(),
        ro.claim("o2", b"x", Duration::from_secs(1)).unwrap_err(),
        ro.prune().unwrap_err(),
    ] {
        assert!(matches!(e, InboxError::ReadOnly { .. }), "{e}");
    }
}

#[test]
fn a_file_without_write_permission_is_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    deliver(&mut SqliteInbox::open(&path).unwrap(), "o1", "apple").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    if std::fs::OpenOptions::new().write(true).open(&path).is_ok() {
        // Running as root: permissions do not stop writes, so there is nothing to test.
        // `read_only_handles_read_but_refuse_writes` covers the error itself.
        return;
    }
    let e = SqliteInbox::open(&path).unwrap_err();
    assert!(matches!(e, InboxError::ReadOnly { .. }), "{e}");
}

#[test]
fn foreign_files_are_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // Not SQLite at all.
    let text = dir.path().join("notes.txt");
    let bytes = b"SQLite format 2? no: a shopping list. flour, apples, butter\n".repeat(100);
    std::fs::write(&text, &bytes).unwrap();
    let e = SqliteInbox::open(&text).unwrap_err();
    assert!(
        matches!(&e, InboxError::NotAnInbox { why, .. } if why.contains("not a SQLite")),
        "{e}"
    );
    assert_eq!(std::fs::read(&text).unwrap(), bytes);
    // SQLite, but another application's.
    for (name, setup) in [
        ("app.db", "PRAGMA application_id = 42;"),
        ("tables.db", "CREATE TABLE customers (name TEXT);"),
    ] {
        let path = dir.path().join(name);
        Connection::open(&path)
            .unwrap()
            .execute_batch(setup)
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let e = SqliteInbox::open(&path).unwrap_err();
        assert!(matches!(e, InboxError::NotAnInbox { .. }), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "{name} was modified");
        assert!(!dir.path().join(format!("{name}-wal")).exists());
    }
    // An empty file (e.g. from `touch`) is a new inbox.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert!(
        deliver(&mut SqliteInbox::open(&empty).unwrap(), "o1", "apple")
            .unwrap()
            .is_applied()
    );
    // ...but a read-only handle does not create one in it.
    let other_empty = dir.path().join("empty2.db");
    std::fs::write(&other_empty, b"").unwrap();
    assert!(matches!(
        SqliteInbox::open_with(&other_empty, SqliteOptions::default().read_only()),
        Err(InboxError::NotAnInbox { .. })
    ));
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    drop(SqliteInbox::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 7")
        .unwrap();
    let e = SqliteInbox::open(&path).unwrap_err();
    assert!(
        matches!(
            e,
            InboxError::NewerSchema {
                found: 7,
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("upgrade onepie"));
}

#[test]
fn missing_files_and_directories_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = SqliteInbox::open_with(
        dir.path().join("no.db"),
        SqliteOptions::default().existing_only(),
    )
    .unwrap_err();
    assert!(matches!(e, InboxError::Missing { .. }), "{e}");
    let e = SqliteInbox::open(dir.path().join("no/such/dir/inbox.db")).unwrap_err();
    assert!(matches!(e, InboxError::Open { .. }), "{e}");
}

#[test]
fn a_damaged_row_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let mut inbox = SqliteInbox::open(&path).unwrap();
    deliver(&mut inbox, "o1", "apple").unwrap();
    inbox
        .connection()
        .execute_batch("UPDATE inbox SET state = 9; INSERT INTO inbox VALUES ('o2', x'00', 1, 'r', NULL, NULL, 0, 0);")
        .unwrap();
    let e = deliver(&mut inbox, "o1", "apple").unwrap_err();
    assert!(
        matches!(&e, InboxError::Corrupt { detail, .. } if detail.contains("unknown state 9")),
        "{e}"
    );
    let e = deliver(&mut inbox, "o2", "apple").unwrap_err();
    assert!(matches!(e, InboxError::Corrupt { .. }), "{e}");
    assert!(matches!(inbox.entries(), Err(InboxError::Corrupt { .. })));
}

#[test]
fn other_sqlite_failures_are_storage_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let inbox = SqliteInbox::open(&path).unwrap();
    inbox.connection().execute_batch("DROP TABLE meta").unwrap();
    let e = SqliteInbox::open(&path)
        .unwrap()
        .claim("o1", b"apple", Duration::from_secs(1))
        .unwrap_err();
    assert!(
        matches!(&e, InboxError::Storage { path: p, .. } if *p == path),
        "{e}"
    );
    assert!(e.to_string().contains("no such table: meta"), "{e}");
}

#[test]
fn a_full_disk_is_a_typed_error_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut inbox = SqliteInbox::open(dir.path().join("inbox.db")).unwrap();
    // Cap the file at its current size: the next page SQLite needs is "disk full".
    let pages: i64 = inbox
        .connection()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    inbox
        .connection()
        .pragma_update(None, "max_page_count", pages)
        .unwrap();
    let big = "x".repeat(10_000);
    let e = inbox
        .deliver("o1", b"apple", |tx| {
            tx.execute_batch("CREATE TABLE IF NOT EXISTS big (x TEXT)")?;
            tx.execute("INSERT INTO big VALUES (?1)", [&big])?;
            Ok("pie".into())
        })
        .unwrap_err();
    // The effect saw SQLITE_FULL first; either way nothing was recorded.
    assert!(
        matches!(&e, InboxError::Effect { source, .. } if source.to_string().contains("full")),
        "{e}"
    );
    let e = inbox
        .deliver(&"k".repeat(255), &[0; 10], |_| Ok(big.clone().into_bytes()))
        .unwrap_err();
    assert!(matches!(e, InboxError::DiskFull { .. }), "{e}");
    assert!(inbox.entries().unwrap().is_empty() && pies(&inbox).is_empty());
}

#[test]
fn threads_delivering_one_key_apply_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = SqliteInbox::open(dir.path().join("inbox.db")).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let mut inbox = inbox.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut applied = 0;
                for i in 0..20 {
                    // Every thread delivers the same 20 keys; thread t starts at key t.
                    let key = format!("order-{}", (i + t) % 20);
                    if deliver(&mut inbox, &key, "apple").unwrap().is_applied() {
                        applied += 1;
                    }
                }
                applied
            })
        })
        .collect();
    let applied: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(applied, 20);
    let mut keys = pies(&inbox);
    keys.sort();
    keys.dedup();
    assert_eq!((keys.len(), pies(&inbox).len()), (20, 20));
}

#[test]
fn threads_opening_a_new_file_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut inbox = SqliteInbox::open(&path).unwrap();
                deliver(&mut inbox, "o1", "apple").unwrap().is_applied()
            })
        })
        .collect();
    let applied = threads.into_iter().map(|t| t.join().unwrap());
    assert_eq!(applied.filter(|&a| a).count(), 1);
}

/// Child half of `processes_delivering_the_same_keys_apply_each_once`: does nothing unless
/// started by it.
#[test]
fn child_process_delivers() {
    let Some(path) = std::env::var_os("ONEPIE_INBOX_CHILD_STORE") else {
        return;
    };
    let mut inbox = SqliteInbox::open(&path).unwrap();
    for i in 0..50 {
        deliver(&mut inbox, &format!("order-{i}"), "apple").unwrap();
    }
}

#[test]
fn processes_delivering_the_same_keys_apply_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "inbox::sqlite::tests::child_process_delivers",
                    "--quiet",
                ])
                .env("ONEPIE_INBOX_CHILD_STORE", &path)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let all = pies(&SqliteInbox::open(&path).unwrap());
    let mut keys = all.clone();
    keys.sort();
    keys.dedup();
    assert_eq!((keys.len(), all.len()), (50, 50));
}

#[test]
fn a_claim_with_an_unbounded_lease_is_neither_pruned_nor_taken_over() {
    // Before the fix the lease ended at u64::MAX, stored as -1: `prune` deleted the live claim
    // and the next delivery baked a second pie while the owner still held the key.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let opts = SqliteOptions::default()
        .with_clock(clock.clone())
        .with_retention(Retention::Window(50));
    let mut inbox = SqliteInbox::open_with(dir.path().join("inbox.db"), opts).unwrap();
    let lease = acquired(inbox.claim("o1", b"apple", Duration::MAX).unwrap());
    assert_eq!(lease.lease_until, crate::inbox::END_OF_TIME);
    clock.advance(10_000_000);
    assert_eq!(inbox.prune().unwrap(), 0);
    let e = deliver(&mut inbox, "o1", "apple").unwrap_err();
    assert!(matches!(e, InboxError::InProgress { .. }), "{e}");
    assert!(pies(&inbox).is_empty());
    // The same lease read back from the file is still the owner's.
    let entry = inbox.get("o1").unwrap().unwrap();
    assert!(
        matches!(entry.record.stage, Stage::InProgress { lease_until, .. }
        if lease_until == crate::inbox::END_OF_TIME)
    );
    inbox.complete(&lease, b"done").unwrap();
}

#[test]
fn refused_files_get_nothing_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    {
        let app = Connection::open(&path).unwrap();
        app.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap();
        app.execute_batch(
            "CREATE TABLE customers (name TEXT); INSERT INTO customers VALUES ('ann');",
        )
        .unwrap();
    }
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listing(), ["app.db"]);
    let before = std::fs::read(&path).unwrap();
    for opts in [
        SqliteOptions::default(),
        SqliteOptions::default().read_only(),
    ] {
        let e = SqliteInbox::open_with(&path, opts).unwrap_err();
        assert!(matches!(e, InboxError::NotAnInbox { .. }), "{e}");
        assert_eq!(
            listing(),
            ["app.db"],
            "a refused file must get no -wal or -shm"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
    // A directory is not an inbox either, and says so.
    let e = SqliteInbox::open_with(dir.path(), SqliteOptions::default().read_only()).unwrap_err();
    assert!(
        matches!(&e, InboxError::NotAnInbox { why, .. } if why == "it is a directory"),
        "{e}"
    );
}

#[test]
fn a_snapshot_of_a_quiet_inbox_creates_nothing_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    deliver(&mut SqliteInbox::open(&path).unwrap(), "o1", "apple").unwrap();
    let count = || std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(count(), 1, "the last connection removes -wal and -shm");
    let snap = SqliteInbox::open_with(&path, SqliteOptions::default().snapshot()).unwrap();
    assert_eq!(snap.entries().unwrap().len(), 1);
    assert_eq!(count(), 1);
    // While a writer has it open, a snapshot goes through SQLite's shared memory and sees the
    // writer's latest commit.
    let mut writer = SqliteInbox::open(&path).unwrap();
    deliver(&mut writer, "o2", "plum").unwrap();
    let snap = SqliteInbox::open_with(&path, SqliteOptions::default().snapshot()).unwrap();
    assert_eq!(snap.entries().unwrap().len(), 2);
}

#[test]
fn a_read_only_handle_opened_on_a_quiet_inbox_sees_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    deliver(&mut SqliteInbox::open(&path).unwrap(), "o1", "apple").unwrap();
    let ro = SqliteInbox::open_with(&path, SqliteOptions::default().read_only()).unwrap();
    let mut writer = SqliteInbox::open(&path).unwrap();
    for i in 0..50 {
        deliver(&mut writer, &format!("k{i}"), "plum").unwrap();
    }
    // The writes are in the writer's -wal, which only a live handle reads.
    assert_eq!(ro.entries().unwrap().len(), 51);
}

#[test]
fn a_version_1_file_is_read_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    {
        // What onepie 0.1 wrote: results as TEXT, its pie log inside.
        let v1 = Connection::open(&path).unwrap();
        v1.execute_batch(&format!(
            "CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID;
             CREATE TABLE inbox (key TEXT PRIMARY KEY NOT NULL, fingerprint BLOB NOT NULL,
                 state INTEGER NOT NULL, result TEXT, owner INTEGER, lease_until INTEGER,
                 created_at INTEGER, completed_at INTEGER) WITHOUT ROWID;
             CREATE TABLE pies (number INTEGER PRIMARY KEY, key TEXT NOT NULL, pie TEXT NOT NULL, at INTEGER NOT NULL);
             INSERT INTO meta VALUES ('last_token', 0);
             PRAGMA application_id = {APPLICATION_ID};
             PRAGMA user_version = 1;"
        ))
        .unwrap();
        v1.execute(
            "INSERT INTO inbox (key, fingerprint, state, result, completed_at) VALUES ('o1', ?1, 1, 'pie #1', 5)",
            [&Fingerprint::of(b"apple").0],
        )
        .unwrap();
        // Version 1's unbounded lease: u64::MAX stored as -1.
        v1.execute(
            "INSERT INTO inbox (key, fingerprint, state, owner, lease_until, created_at) VALUES ('o2', ?1, 0, 1, -1, 5)",
            [&Fingerprint::of(b"plum").0],
        )
        .unwrap();
    }
    let ro = SqliteInbox::open_with(&path, SqliteOptions::default().read_only()).unwrap();
    assert_eq!(
        ro.get("o1").unwrap().unwrap().record.stage,
        Stage::Completed {
            result: b"pie #1".to_vec(),
            at: 5
        }
    );
    drop(ro);
    let mut inbox = SqliteInbox::open(&path).unwrap();
    assert_eq!(
        deliver(&mut inbox, "o1", "apple").unwrap(),
        Outcome::Duplicate("pie #1".into())
    );
    let version: i64 = inbox
        .connection()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    // The held claim is still held, and a pruning handle keeps it.
    drop(inbox);
    let opts = SqliteOptions::default().with_retention(Retention::Window(1));
    let mut inbox = SqliteInbox::open_with(&path, opts).unwrap();
    assert_eq!(inbox.prune().unwrap(), 1, "o1, completed long ago; not o2");
    assert!(matches!(
        deliver(&mut inbox, "o2", "plum"),
        Err(InboxError::InProgress { .. })
    ));
}

#[test]
fn results_are_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut inbox = SqliteInbox::open(dir.path().join("inbox.db")).unwrap();
    let receipt = vec![0, 159, 146, 150, 255];
    let first = inbox
        .deliver("o1", b"apple", |_| Ok(receipt.clone()))
        .unwrap();
    let again = inbox
        .deliver("o1", b"apple", |_| panic!("ran twice"))
        .unwrap();
    assert_eq!(
        (first.result(), again.result()),
        (&receipt[..], &receipt[..])
    );
}

#[test]
fn the_schema_has_no_tables_but_the_inbox_own() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = SqliteInbox::open(dir.path().join("inbox.db")).unwrap();
    let mut stmt = inbox
        .connection()
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap();
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tables, ["inbox", "meta"]);
}
