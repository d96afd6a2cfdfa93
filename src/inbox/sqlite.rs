//! [`SqliteInbox`]: the durable inbox in one SQLite file (WAL, `synchronous=FULL` by default).
//!
//! Every write is a `BEGIN IMMEDIATE` transaction: it takes SQLite's write lock before reading
//! the key, so the lookup, the decision, the effect and the record are one atomic step across
//! threads and processes. Other writers wait up to the busy timeout, then get
//! [`InboxError::Locked`].

use super::{
    admit, lease_millis, not_owner, Admission, BoxError, Claim, Clock, EffectLog, Entry,
    InboxError, InboxStore, Lease, Outcome, Pie, SystemClock,
};
use crate::dedup::{validate_key, Fingerprint, Millis, Record, Retention, Stage};
use rusqlite::{params, CachedStatement, Connection, ErrorCode, OpenFlags, Row, Transaction};
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `PRAGMA application_id` of every onepie inbox: the bytes `"1pie"`.
pub const APPLICATION_ID: i32 = 0x3170_6965;

/// The schema version (`PRAGMA user_version`) this build writes and the newest it reads.
pub const SCHEMA_VERSION: i64 = 1;

/// Schema version 1. `inbox` has one row per remembered key: state 0 is a claim (`owner`,
/// `lease_until` set), state 1 is completed (`result`, `completed_at` set); `created_at` is
/// NULL when it equals `completed_at` (every transactional delivery), and `fingerprint` is 16
/// bytes: bytes per key are the inbox's main cost. `WITHOUT ROWID` keeps one b-tree keyed by
/// the key, so a delivery touches one b-tree, not a table and an index. `pies` is the effect
/// table of the CLI and the property tests.
fn schema() -> String {
    format!(
        "CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID;
         CREATE TABLE inbox (
             key TEXT PRIMARY KEY NOT NULL,
             fingerprint BLOB NOT NULL,
             state INTEGER NOT NULL,
             result TEXT,
             owner INTEGER,
             lease_until INTEGER,
             created_at INTEGER,
             completed_at INTEGER
         ) WITHOUT ROWID;
         CREATE TABLE pies (
             number INTEGER PRIMARY KEY,
             key TEXT NOT NULL,
             pie TEXT NOT NULL,
             at INTEGER NOT NULL
         );
         INSERT INTO meta (name, value) VALUES ('last_token', 0), ('created_by', 'onepie {}');
         PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {SCHEMA_VERSION};",
        env!("CARGO_PKG_VERSION")
    )
}

macro_rules! select_columns {
    () => {
        "key, fingerprint, state, result, owner, lease_until,
         coalesce(created_at, completed_at), completed_at"
    };
}
const SELECT_ONE: &str = concat!("SELECT ", select_columns!(), " FROM inbox WHERE key = ?1");
const SELECT_ALL: &str = concat!("SELECT ", select_columns!(), " FROM inbox ORDER BY key");
/// A fresh key, completed by a transactional delivery (`created_at` is `completed_at`).
const INSERT_COMPLETED: &str =
    "INSERT INTO inbox (key, fingerprint, state, result, completed_at) VALUES (?1, ?2, 1, ?3, ?4)";
/// A fresh key, claimed.
const INSERT_CLAIMED: &str =
    "INSERT INTO inbox (key, fingerprint, state, owner, lease_until, created_at)
    VALUES (?1, ?2, 0, ?3, ?4, ?5)";

/// SQLite's `synchronous` setting: how hard a commit pushes data to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Synchronous {
    /// No fsync at all: fast, but an OS crash or power loss may corrupt the file. Tests only.
    Off,
    /// In WAL mode, commits are atomic but the last ones may roll back after a power loss.
    Normal,
    /// fsync on every commit: a commit that returned survives a power loss (the default).
    #[default]
    Full,
    /// Like `Full`, plus an fsync of the directory.
    Extra,
}

impl Synchronous {
    fn as_sql(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

/// How to open a [`SqliteInbox`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// Default [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// How long to wait for another connection's lock before [`InboxError::Locked`]; default 5 s.
    pub busy_timeout: Duration,
    /// Default [`Retention::Forever`]. A property of the handle: give every handle the same.
    pub retention: Retention,
    /// Default [`SystemClock`].
    pub clock: Arc<dyn Clock>,
    /// Create the file if it does not exist (default `true`).
    pub create: bool,
    /// Open read-only (default `false`): reads work, every write is [`InboxError::ReadOnly`].
    pub read_only: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            retention: Retention::Forever,
            clock: Arc::new(SystemClock),
            create: true,
            read_only: false,
        }
    }
}

impl SqliteOptions {
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    pub fn with_busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }

    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Fail with [`InboxError::Missing`] instead of creating the file.
    pub fn existing_only(mut self) -> Self {
        self.create = false;
        self
    }

    /// Open read-only; implies [`existing_only`](Self::existing_only).
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self.create = false;
        self
    }
}

/// A durable inbox in one SQLite file. One value is one connection: it is `Send`, not `Sync`;
/// give each thread its own ([`InboxStore::try_clone`] or another [`open`](Self::open)).
/// Several processes may open the same file.
///
/// ```
/// use onepie::inbox::{Claim, InboxStore, SqliteInbox};
/// use std::time::Duration;
///
/// # fn main() -> Result<(), onepie::inbox::InboxError> {
/// let dir = tempfile::tempdir().unwrap();
/// let mut inbox = SqliteInbox::open(dir.path().join("inbox.db"))?;
///
/// // An effect outside the store: claim, act with the fencing token, complete.
/// let Claim::Acquired(lease) = inbox.claim("email-42", b"welcome", Duration::from_secs(30))? else {
///     return Ok(()); // already sent: nothing to do
/// };
/// // send_email(key, token) <- a crash here means it may be sent again: the mail service
/// //                            must refuse stale tokens and remember the key
/// inbox.complete(&lease, "sent")?;
/// assert_eq!(
///     inbox.claim("email-42", b"welcome", Duration::from_secs(30))?,
///     Claim::Duplicate("sent".into())
/// );
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SqliteInbox {
    conn: Connection,
    path: PathBuf,
    opts: SqliteOptions,
}

/// Where an error happened, to turn SQLite's codes into errors a user can act on. Separate
/// from `SqliteInbox` so it can be used while the connection is borrowed by a transaction.
#[derive(Clone, Copy)]
struct At<'a> {
    path: &'a Path,
    busy_timeout: Duration,
}

impl At<'_> {
    fn err(self, e: rusqlite::Error) -> InboxError {
        let path = self.path.to_path_buf();
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => InboxError::Locked {
                path,
                waited: self.busy_timeout,
            },
            Some(ErrorCode::ReadOnly) => InboxError::ReadOnly { path },
            Some(ErrorCode::NotADatabase) => InboxError::NotAnInbox {
                path,
                why: "it is not a SQLite database".into(),
            },
            Some(ErrorCode::DiskFull) => InboxError::DiskFull { path },
            Some(ErrorCode::DatabaseCorrupt) => InboxError::Corrupt {
                path,
                detail: e.to_string(),
            },
            Some(ErrorCode::CannotOpen) => InboxError::Open { path, source: e },
            _ => match e {
                // A row our own schema cannot decode: someone edited the file by hand.
                rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::IntegralValueOutOfRange(..) => InboxError::Corrupt {
                    path,
                    detail: format!("unreadable inbox row: {e}"),
                },
                e => InboxError::Storage { path, source: e },
            },
        }
    }

    fn corrupt(self, detail: impl Into<String>) -> InboxError {
        InboxError::Corrupt {
            path: self.path.to_path_buf(),
            detail: detail.into(),
        }
    }
}

/// What the file at hand turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Empty (new, or zero bytes): ours to initialize.
    Fresh,
    /// An onepie inbox this build understands.
    Inbox,
}

/// Identifies the file from its header and schema without writing anything: a foreign file
/// must never be modified. One statement, so one consistent snapshot even while another
/// process initializes the same file.
fn identify(conn: &Connection, at: At<'_>) -> Result<Kind, InboxError> {
    let (app_id, version, objects): (i32, i64, i64) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id),
                    (SELECT user_version FROM pragma_user_version),
                    (SELECT count(*) FROM sqlite_schema)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(|e| at.err(e))?;
    let path = at.path.to_path_buf();
    if app_id == APPLICATION_ID {
        return match version {
            v if v > SCHEMA_VERSION => Err(InboxError::NewerSchema {
                path,
                found: v,
                supported: SCHEMA_VERSION,
            }),
            v if v < 1 => Err(at.corrupt("onepie application id without a schema version")),
            _ => Ok(Kind::Inbox),
        };
    }
    if app_id == 0 && version == 0 && objects == 0 {
        return Ok(Kind::Fresh);
    }
    let why = if app_id != 0 {
        format!("it is a SQLite database of another application, application_id {app_id:#010x}")
    } else {
        format!("it is a SQLite database with {objects} tables or indexes of its own")
    };
    Err(InboxError::NotAnInbox { path, why })
}

/// One row of `inbox`, decoded.
struct Stored {
    record: Record<String>,
    created_at: Millis,
}

fn decode(row: &Row<'_>, at: At<'_>) -> rusqlite::Result<Result<(String, Stored), InboxError>> {
    // Columns in the order of COLUMNS.
    let key: String = row.get(0)?;
    let fingerprint = Fingerprint(row.get(1)?);
    let state: i64 = row.get(2)?;
    let stage = match state {
        0 => Stage::InProgress {
            owner: row.get::<_, i64>(4)? as u64,
            lease_until: row.get::<_, i64>(5)? as Millis,
        },
        1 => Stage::Completed {
            result: row.get(3)?,
            at: row.get::<_, i64>(7)? as Millis,
        },
        other => {
            return Ok(Err(
                at.corrupt(format!("key {key:?} has unknown state {other}"))
            ))
        }
    };
    let created_at = row.get::<_, i64>(6)? as Millis;
    Ok(Ok((
        key,
        Stored {
            record: Record { fingerprint, stage },
            created_at,
        },
    )))
}

/// The two statements every delivery runs, prepared once per transaction: a batch of a
/// thousand keys then pays for the statement cache lookup once, not a thousand times.
struct Stmts<'c> {
    select: CachedStatement<'c>,
    insert_completed: CachedStatement<'c>,
}

impl<'c> Stmts<'c> {
    fn new(conn: &'c Connection, at: At<'_>) -> Result<Self, InboxError> {
        Ok(Stmts {
            select: conn.prepare_cached(SELECT_ONE).map_err(|e| at.err(e))?,
            insert_completed: conn
                .prepare_cached(INSERT_COMPLETED)
                .map_err(|e| at.err(e))?,
        })
    }

    fn load(&mut self, at: At<'_>, key: &str) -> Result<Option<Stored>, InboxError> {
        let mut rows = self.select.query([key]).map_err(|e| at.err(e))?;
        match rows.next().map_err(|e| at.err(e))? {
            None => Ok(None),
            Some(row) => Ok(Some(decode(row, at).map_err(|e| at.err(e))??.1)),
        }
    }
}

fn load(conn: &Connection, at: At<'_>, key: &str) -> Result<Option<Stored>, InboxError> {
    Stmts::new(conn, at)?.load(at, key)
}

/// The row's new contents.
struct NewRow<'a> {
    fingerprint: &'a Fingerprint,
    stage: Stage<&'a str>,
    created_at: Millis,
}

/// Writes `key`'s row. A fresh key is inserted; an existing row is replaced only if it is still
/// exactly `prev` (compare-and-swap, never a blind overwrite). Under the write lock the swap
/// cannot miss; if it does, something else wrote the file behind SQLite's locks.
fn write_row(
    tx: &Connection,
    stmts: &mut Stmts<'_>,
    at: At<'_>,
    key: &str,
    new: NewRow<'_>,
    prev: Option<&Record<String>>,
) -> Result<(), InboxError> {
    let (state, result, owner, lease_until, completed_at) = match new.stage {
        Stage::InProgress { owner, lease_until } => {
            (0, None, Some(owner as i64), Some(lease_until as i64), None)
        }
        Stage::Completed { result, at } => (1, Some(result), None, None, Some(at as i64)),
    };
    let fingerprint = &new.fingerprint.0;
    let created_at = (Some(new.created_at as i64) != completed_at).then_some(new.created_at as i64);
    let changed = match prev {
        // The hot path of every delivery: four bound values, nothing else. A fresh key is
        // created when it completes, so `created_at` stays NULL.
        None if state == 1 => {
            stmts
                .insert_completed
                .execute(params![key, fingerprint, result, completed_at])
        }
        None => tx
            .prepare_cached(INSERT_CLAIMED)
            .and_then(|mut s| s.execute(params![key, fingerprint, owner, lease_until, created_at])),
        Some(prev) => {
            let (prev_state, prev_owner, prev_at) = match prev.stage {
                Stage::InProgress { owner, .. } => (0, Some(owner as i64), None),
                Stage::Completed { at, .. } => (1, None, Some(at as i64)),
            };
            tx.prepare_cached(
                "UPDATE inbox SET fingerprint = ?2, state = ?3, result = ?4, owner = ?5,
                     lease_until = ?6, created_at = ?7, completed_at = ?8
                 WHERE key = ?1 AND state = ?9 AND owner IS ?10 AND completed_at IS ?11",
            )
            .and_then(|mut s| {
                s.execute(params![
                    key,
                    fingerprint,
                    state,
                    result,
                    owner,
                    lease_until,
                    created_at,
                    completed_at,
                    prev_state,
                    prev_owner,
                    prev_at
                ])
            })
        }
    }
    .map_err(|e| at.err(e))?;
    if changed != 1 {
        return Err(at.corrupt(format!(
            "key {key:?} changed while this connection held the write lock"
        )));
    }
    Ok(())
}

/// The effect must leave the delivery's transaction open; if it committed or rolled back (or
/// hit an error that made SQLite roll back), the key can no longer be recorded atomically.
fn still_in_transaction(tx: &Connection, key: &str) -> Result<(), InboxError> {
    if tx.is_autocommit() {
        return Err(InboxError::EffectEndedTransaction {
            key: key.to_owned(),
        });
    }
    Ok(())
}

/// Decides and applies one delivery inside `tx`.
///
/// In a batch (`in_batch`), an effect that fails is only that item's error if it wrote
/// nothing; one that wrote and then failed cannot be undone alone (a savepoint per item would
/// roughly halve batch throughput), so it fails the whole batch.
#[allow(clippy::too_many_arguments)]
fn deliver_one<'t>(
    tx: &'t Transaction<'t>,
    stmts: &mut Stmts<'_>,
    at: At<'t>,
    key: &str,
    fingerprint: Fingerprint,
    retention: Retention,
    now: Millis,
    in_batch: bool,
    effect: impl FnOnce(&mut SqliteTx<'t>) -> Result<String, BoxError>,
) -> Result<Outcome, InboxError> {
    let existing = stmts.load(at, key)?;
    let prev = existing.as_ref().map(|s| &s.record);
    let created_at = match admit(
        existing.as_ref().map(|s| (&s.record, s.created_at)),
        key,
        fingerprint,
        retention,
        now,
    )? {
        Admission::Done(result) => return Ok(Outcome::Duplicate(result)),
        Admission::Go { created_at, .. } => created_at,
    };
    let changes_before = tx.total_changes();
    let mut etx = SqliteTx { tx, at, now };
    let result = match effect(&mut etx) {
        Ok(result) => result,
        Err(source) => {
            if in_batch {
                // Alone, a rolled-back transaction just means nothing was recorded; in a
                // batch it also took the earlier items with it.
                still_in_transaction(tx, key)?;
                if tx.total_changes() != changes_before {
                    return Err(InboxError::BatchEffect {
                        key: key.to_owned(),
                        source,
                    });
                }
            }
            return Err(InboxError::Effect {
                key: key.to_owned(),
                source,
            });
        }
    };
    still_in_transaction(tx, key)?;
    let new = NewRow {
        fingerprint: &fingerprint,
        stage: Stage::Completed {
            result: &result,
            at: now,
        },
        created_at,
    };
    write_row(tx, stmts, at, key, new, prev)?;
    Ok(Outcome::Applied(result))
}

/// Errors that belong to one item of a batch; anything else fails the whole batch.
fn is_item_error(e: &InboxError) -> bool {
    matches!(
        e,
        InboxError::InvalidKey(_)
            | InboxError::Conflict { .. }
            | InboxError::InProgress { .. }
            | InboxError::Effect { .. }
    )
}

/// What a transactional effect receives from a [`SqliteInbox`]: the delivery's open
/// transaction (it derefs to [`rusqlite::Transaction`], so run any SQL through it). Whatever it
/// writes commits together with the key, or not at all.
pub struct SqliteTx<'t> {
    tx: &'t Transaction<'t>,
    at: At<'t>,
    now: Millis,
}

impl<'t> SqliteTx<'t> {
    /// The delivery's transaction.
    pub fn transaction(&self) -> &Transaction<'t> {
        self.tx
    }

    /// The inbox clock at the start of this delivery.
    pub fn now(&self) -> Millis {
        self.now
    }
}

impl<'t> Deref for SqliteTx<'t> {
    type Target = Transaction<'t>;

    fn deref(&self) -> &Transaction<'t> {
        self.tx
    }
}

impl fmt::Debug for SqliteTx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteTx")
            .field("path", &self.at.path)
            .field("now", &self.now)
            .finish()
    }
}

impl EffectLog for SqliteTx<'_> {
    fn record_pie(&mut self, key: &str, pie: &str) -> Result<u64, InboxError> {
        self.tx
            .prepare_cached("INSERT INTO pies (key, pie, at) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![key, pie, self.now as i64]))
            .map_err(|e| self.at.err(e))?;
        Ok(self.tx.last_insert_rowid() as u64)
    }
}

impl SqliteInbox {
    /// Opens (creating if absent) the inbox at `path` with the default options: WAL,
    /// `synchronous=FULL`, 5 s busy timeout, keys kept forever, system clock.
    ///
    /// Errors: [`InboxError::NotAnInbox`] for a file that is not an onepie inbox (left
    /// untouched), [`InboxError::NewerSchema`], [`InboxError::ReadOnly`],
    /// [`InboxError::Locked`], [`InboxError::Open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, InboxError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens the inbox at `path` with `opts`.
    ///
    /// ```
    /// use onepie::inbox::{InboxError, Retention, SqliteInbox, SqliteOptions, Synchronous};
    /// let dir = tempfile::tempdir().unwrap();
    /// let opts = SqliteOptions::default()
    ///     .with_synchronous(Synchronous::Normal)
    ///     .with_retention(Retention::Window(7 * 24 * 3600 * 1000));
    /// let inbox = SqliteInbox::open_with(dir.path().join("inbox.db"), opts).unwrap();
    /// # drop(inbox);
    /// let missing = SqliteInbox::open_with(dir.path().join("nope.db"), SqliteOptions::default().existing_only());
    /// assert!(matches!(missing, Err(InboxError::Missing { .. })));
    /// ```
    pub fn open_with(path: impl AsRef<Path>, opts: SqliteOptions) -> Result<Self, InboxError> {
        let path = path.as_ref().to_path_buf();
        if (!opts.create || opts.read_only) && !path.exists() {
            return Err(InboxError::Missing { path });
        }
        let flags = if opts.read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let at = At {
            path: &path,
            busy_timeout: opts.busy_timeout,
        };
        let mut conn = Connection::open_with_flags(&path, flags).map_err(|e| at.err(e))?;
        conn.busy_timeout(opts.busy_timeout)
            .map_err(|e| at.err(e))?;
        let kind = identify(&conn, at)?;
        if opts.read_only {
            if kind == Kind::Fresh {
                return Err(InboxError::NotAnInbox {
                    path,
                    why: "it is empty: no inbox was created in it yet".into(),
                });
            }
        } else {
            // SQLite quietly opens a file it may not write read-only; say so now, not at the
            // first delivery.
            if conn.is_readonly(rusqlite::MAIN_DB).map_err(|e| at.err(e))? {
                return Err(InboxError::ReadOnly { path });
            }
            // WAL persists in the file; the readback is ignored because a file system without
            // shared memory keeps the rollback journal, which is just as safe, only slower.
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
                .map_err(|e| at.err(e))?;
            conn.execute_batch(&format!(
                "PRAGMA synchronous = {}",
                opts.synchronous.as_sql()
            ))
            .map_err(|e| at.err(e))?;
            if kind == Kind::Fresh {
                // Another process may be initializing the same file: decide again under the
                // write lock.
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(|e| at.err(e))?;
                if identify(&tx, at)? == Kind::Fresh {
                    tx.execute_batch(&schema()).map_err(|e| at.err(e))?;
                }
                tx.commit().map_err(|e| at.err(e))?;
            }
        }
        Ok(SqliteInbox { conn, path, opts })
    }

    /// The file this inbox lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.opts
    }

    /// The underlying connection, for reading your own tables (and `PRAGMA`s). Do not write
    /// the `inbox` and `meta` tables behind the inbox's back.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn at(&self) -> At<'_> {
        At {
            path: &self.path,
            busy_timeout: self.opts.busy_timeout,
        }
    }

    fn writable(&self) -> Result<(), InboxError> {
        if self.opts.read_only {
            return Err(InboxError::ReadOnly {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction and commits if it returned `Ok(true)`.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, At<'_>) -> Result<(T, bool), InboxError>,
    ) -> Result<T, InboxError> {
        self.writable()?;
        let at = At {
            path: &self.path,
            busy_timeout: self.opts.busy_timeout,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| at.err(e))?;
        let (value, commit) = f(&tx, at)?;
        if commit {
            tx.commit().map_err(|e| at.err(e))?;
        }
        Ok(value)
    }
}

impl InboxStore for SqliteInbox {
    type Tx<'t> = SqliteTx<'t>;

    fn try_clone(&self) -> Result<Self, InboxError> {
        Self::open_with(&self.path, self.opts.clone())
    }

    fn now(&self) -> Millis {
        self.opts.clock.now()
    }

    fn retention(&self) -> Retention {
        self.opts.retention
    }

    fn deliver<F>(&mut self, key: &str, payload: &[u8], effect: F) -> Result<Outcome, InboxError>
    where
        F: FnOnce(&mut SqliteTx<'_>) -> Result<String, BoxError>,
    {
        validate_key(key)?;
        let fingerprint = Fingerprint::of(payload);
        let (now, retention) = (self.opts.clock.now(), self.opts.retention);
        self.write(|tx, at| {
            // A duplicate wrote nothing: let the transaction roll back instead of committing.
            let mut stmts = Stmts::new(tx, at)?;
            let outcome = deliver_one(
                tx,
                &mut stmts,
                at,
                key,
                fingerprint,
                retention,
                now,
                false,
                effect,
            )?;
            let commit = outcome.is_applied();
            Ok((outcome, commit))
        })
    }

    fn deliver_batch<K, P, F>(
        &mut self,
        items: &[(K, P)],
        mut effect: F,
    ) -> Result<Vec<Result<Outcome, InboxError>>, InboxError>
    where
        K: AsRef<str>,
        P: AsRef<[u8]>,
        F: FnMut(&mut SqliteTx<'_>, &str, &[u8]) -> Result<String, BoxError>,
    {
        let (now, retention) = (self.opts.clock.now(), self.opts.retention);
        self.write(|tx, at| {
            let mut stmts = Stmts::new(tx, at)?;
            let mut out = Vec::with_capacity(items.len());
            for (key, payload) in items {
                let (key, payload) = (key.as_ref(), payload.as_ref());
                let one = validate_key(key).map_err(InboxError::from).and_then(|()| {
                    let fingerprint = Fingerprint::of(payload);
                    deliver_one(
                        tx,
                        &mut stmts,
                        at,
                        key,
                        fingerprint,
                        retention,
                        now,
                        true,
                        |etx| effect(etx, key, payload),
                    )
                });
                match one {
                    Err(e) if !is_item_error(&e) => return Err(e),
                    one => out.push(one),
                }
            }
            Ok((out, true))
        })
    }

    fn claim(&mut self, key: &str, payload: &[u8], lease: Duration) -> Result<Claim, InboxError> {
        validate_key(key)?;
        let fingerprint = Fingerprint::of(payload);
        let (now, retention) = (self.opts.clock.now(), self.opts.retention);
        self.write(|tx, at| {
            let mut stmts = Stmts::new(tx, at)?;
            let existing = stmts.load(at, key)?;
            let prev = existing.as_ref().map(|s| &s.record);
            let (took_over_from, created_at) = match admit(
                existing.as_ref().map(|s| (&s.record, s.created_at)),
                key,
                fingerprint,
                retention,
                now,
            )? {
                Admission::Done(result) => return Ok((Claim::Duplicate(result), false)),
                Admission::Go {
                    created_at,
                    took_over_from,
                } => (took_over_from, created_at),
            };
            // Tokens come from one counter for the whole file, so a token is never reused,
            // not even after its key was pruned and claimed again.
            let token = tx
                .prepare_cached(
                    "UPDATE meta SET value = value + 1 WHERE name = 'last_token' RETURNING value",
                )
                .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
                .map_err(|e| at.err(e))? as u64;
            let lease_until = now.saturating_add(lease_millis(lease));
            let new = NewRow {
                fingerprint: &fingerprint,
                stage: Stage::InProgress {
                    owner: token,
                    lease_until,
                },
                created_at,
            };
            write_row(tx, &mut stmts, at, key, new, prev)?;
            let lease = Lease {
                key: key.to_owned(),
                token,
                lease_until,
                took_over_from,
            };
            Ok((Claim::Acquired(lease), true))
        })
    }

    fn complete(&mut self, lease: &Lease, result: &str) -> Result<(), InboxError> {
        let now = self.opts.clock.now();
        self.write(|tx, at| {
            let changed = tx
                .prepare_cached(
                    "UPDATE inbox SET state = 1, result = ?3, owner = NULL, lease_until = NULL,
                         completed_at = ?4
                     WHERE key = ?1 AND state = 0 AND owner = ?2",
                )
                .and_then(|mut s| {
                    s.execute(params![lease.key, lease.token as i64, result, now as i64])
                })
                .map_err(|e| at.err(e))?;
            if changed == 0 {
                let current = load(tx, at, &lease.key)?;
                if let Some(e) = not_owner(lease, current.as_ref().map(|s| &s.record)) {
                    return Err(e);
                }
            }
            Ok(((), true))
        })
    }

    fn release(&mut self, lease: &Lease) -> Result<(), InboxError> {
        self.write(|tx, at| {
            let changed = tx
                .prepare_cached("DELETE FROM inbox WHERE key = ?1 AND state = 0 AND owner = ?2")
                .and_then(|mut s| s.execute(params![lease.key, lease.token as i64]))
                .map_err(|e| at.err(e))?;
            if changed == 0 {
                let current = load(tx, at, &lease.key)?;
                if let Some(e) = not_owner(lease, current.as_ref().map(|s| &s.record)) {
                    return Err(e);
                }
            }
            Ok(((), true))
        })
    }

    fn get(&self, key: &str) -> Result<Option<Entry>, InboxError> {
        validate_key(key)?;
        Ok(load(&self.conn, self.at(), key)?.map(|s| Entry {
            key: key.to_owned(),
            record: s.record,
            created_at: s.created_at,
        }))
    }

    fn entries(&self) -> Result<Vec<Entry>, InboxError> {
        let at = self.at();
        let mut stmt = self.conn.prepare(SELECT_ALL).map_err(|e| at.err(e))?;
        let rows = stmt
            .query_map([], |row| decode(row, at))
            .map_err(|e| at.err(e))?;
        let mut all = Vec::new();
        for row in rows {
            let (key, s) = row.map_err(|e| at.err(e))??;
            all.push(Entry {
                key,
                record: s.record,
                created_at: s.created_at,
            });
        }
        Ok(all)
    }

    fn pies(&self) -> Result<Vec<Pie>, InboxError> {
        let at = self.at();
        let mut stmt = self
            .conn
            .prepare("SELECT number, key, pie, at FROM pies ORDER BY number")
            .map_err(|e| at.err(e))?;
        let pies = stmt
            .query_map([], |r| {
                Ok(Pie {
                    number: r.get::<_, i64>(0)? as u64,
                    key: r.get(1)?,
                    pie: r.get(2)?,
                    at: r.get::<_, i64>(3)? as Millis,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| at.err(e))?;
        Ok(pies)
    }

    fn prune(&mut self) -> Result<usize, InboxError> {
        self.writable()?;
        let Retention::Window(window) = self.opts.retention else {
            return Ok(0);
        };
        let cutoff = self.opts.clock.now().saturating_sub(window) as i64;
        self.write(|tx, at| {
            let n = tx
                .prepare_cached(
                    "DELETE FROM inbox WHERE (state = 1 AND completed_at < ?1)
                                          OR (state = 0 AND lease_until < ?1)",
                )
                .and_then(|mut s| s.execute([cutoff]))
                .map_err(|e| at.err(e))?;
            Ok((n, true))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{KeyError, ManualClock, NotOwnerReason};
    use super::*;
    use std::path::Path;

    type Effect = fn(&mut SqliteTx<'_>, &str) -> Result<String, BoxError>;

    fn bake_pie(tx: &mut SqliteTx<'_>, key: &str) -> Result<String, BoxError> {
        Ok(format!("pie #{}", tx.record_pie(key, "apple")?))
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
        assert_eq!(inbox.pie_counts().unwrap()["o1"], 1);
        let entry = inbox.get("o1").unwrap().unwrap();
        assert!(
            matches!(entry.record.stage, Stage::Completed { ref result, .. } if result == "pie #1")
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
                tx.record_pie("o1", "half-baked")?;
                Err("the oven broke".into())
            })
            .unwrap_err();
        assert!(
            matches!(&e, InboxError::Effect { key, .. } if key == "o1"),
            "{e}"
        );
        assert!(e.to_string().contains("the oven broke"));
        assert!(inbox.pies().unwrap().is_empty() && inbox.entries().unwrap().is_empty());
        // A panicking effect is a crash in the middle: nothing is recorded either.
        let crash = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = inbox.deliver("o1", b"apple", |tx| {
                tx.record_pie("o1", "half-baked").unwrap();
                panic!("power cut");
            });
        }));
        assert!(crash.is_err());
        assert!(inbox.pies().unwrap().is_empty() && inbox.entries().unwrap().is_empty());
        // The retry applies exactly once.
        assert!(deliver(&mut inbox, "o1", "apple").unwrap().is_applied());
        assert_eq!(inbox.pie_counts().unwrap()["o1"], 1);
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
            inbox.complete(&first, "late").unwrap_err(),
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
        inbox.complete(&second, "sent").unwrap();
        assert!(matches!(
            inbox.complete(&second, "again"),
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
            inbox.complete(&stale, "late"),
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
        assert_eq!(inbox.pie_counts().unwrap()["o1"], 2);
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
            inbox.complete(&old, "x"),
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
                let pie = tx.record_pie(key, std::str::from_utf8(payload)?)?;
                Ok(format!("pie #{pie}"))
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
        let keys: Vec<String> = inbox.pies().unwrap().into_iter().map(|p| p.key).collect();
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
                let pie = tx.record_pie(key, "p")?;
                if key == "b" {
                    return Err("burnt".into());
                }
                Ok(format!("pie #{pie}"))
            })
            .unwrap_err();
        assert!(
            matches!(&e, InboxError::BatchEffect { key, .. } if key == "b"),
            "{e}"
        );
        assert!(e.to_string().contains("burnt"));
        assert!(inbox.entries().unwrap().is_empty() && inbox.pies().unwrap().is_empty());
        // The same failure alone fails only that delivery.
        let e = inbox
            .deliver("b", b"2", |tx| {
                tx.record_pie("b", "p")?;
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
                Ok(format!("pie #{}", tx.record_pie(key, "p")?))
            })
            .unwrap_err();
        assert!(
            matches!(&e, InboxError::EffectEndedTransaction { key } if key == "b"),
            "{e}"
        );
        assert!(inbox.entries().unwrap().is_empty() && inbox.pies().unwrap().is_empty());
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
        assert!(e.is_retryable() && e.exit_code() == 75);
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
        inbox.connection().execute_batch("DROP TABLE pies").unwrap();
        let e = inbox.pies().unwrap_err();
        assert!(
            matches!(&e, InboxError::Storage { path: p, .. } if *p == path),
            "{e}"
        );
        assert!(e.to_string().contains("no such table: pies"), "{e}");
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
                tx.record_pie("o1", &big)?;
                Ok("pie".into())
            })
            .unwrap_err();
        // The effect saw SQLITE_FULL first; either way nothing was recorded.
        assert!(
            matches!(&e, InboxError::Effect { source, .. } if source.to_string().contains("full")),
            "{e}"
        );
        let e = inbox
            .deliver(&"k".repeat(255), &[0; 10], |_| Ok(big.clone()))
            .unwrap_err();
        assert!(matches!(e, InboxError::DiskFull { .. }), "{e}");
        assert!(inbox.entries().unwrap().is_empty() && inbox.pies().unwrap().is_empty());
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
        let counts = inbox.pie_counts().unwrap();
        assert_eq!(counts.len(), 20);
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
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
        let applied = threads
            .into_iter()
            .filter(|_| true)
            .map(|t| t.join().unwrap());
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
        let counts = SqliteInbox::open(&path).unwrap().pie_counts().unwrap();
        assert_eq!(counts.len(), 50);
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    }
}
