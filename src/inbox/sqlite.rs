//! [`SqliteInbox`]: the durable inbox in one SQLite file (WAL, `synchronous=FULL` by default).
//!
//! Every write is a `BEGIN IMMEDIATE` transaction: it takes SQLite's write lock before reading
//! the key, so the lookup, the decision, the effect and the record are one atomic step across
//! threads and processes. Other writers wait up to the busy timeout, then get
//! [`InboxError::Locked`].

use super::{
    in_progress, lease_millis, not_owner, BoxError, Claim, Clock, EffectLog, Entry, InboxError,
    InboxStore, Lease, Outcome, Pie, SystemClock,
};
use crate::dedup::{decide, validate_key, Decision, Fingerprint, Millis, Record, Retention, Stage};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction};
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
/// `lease_until` set), state 1 is completed (`result`, `completed_at` set). `WITHOUT ROWID`
/// keeps one b-tree keyed by the key, so a delivery touches one index, not two. `pies` is the
/// effect table of the CLI and the property tests.
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
             created_at INTEGER NOT NULL,
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

const COLUMNS: &str =
    "key, fingerprint, state, result, owner, lease_until, created_at, completed_at";

/// SQLite's `synchronous` setting: how hard a commit pushes data to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Synchronous {
    /// No fsync: a power loss may lose recent commits (never half of one).
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
/// // send_email(..., fencing_token = lease.token)   <- a crash here means it may be sent again
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
        other => return Ok(Err(at.corrupt(format!("key {key:?} has unknown state {other}")))),
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

fn load(conn: &Connection, at: At<'_>, key: &str) -> Result<Option<Stored>, InboxError> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM inbox WHERE key = ?1"))
        .map_err(|e| at.err(e))?;
    let row = stmt
        .query_row([key], |row| decode(row, at))
        .optional()
        .map_err(|e| at.err(e))?;
    row.transpose().map(|o| o.map(|(_, stored)| stored))
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
    let created_at = new.created_at as i64;
    let changed = match prev {
        None => tx
            .prepare_cached(&format!(
                "INSERT INTO inbox ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    key, fingerprint, state, result, owner, lease_until, created_at, completed_at
                ])
            }),
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

fn exec(tx: &Connection, at: At<'_>, sql: &str) -> Result<(), InboxError> {
    tx.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(|e| at.err(e))
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

/// Decides and applies one delivery inside `tx`. With `savepoint`, the effect runs inside a
/// savepoint so an effect error undoes only this item (the batch path).
#[allow(clippy::too_many_arguments)]
fn deliver_one<'t>(
    tx: &'t Transaction<'t>,
    at: At<'t>,
    key: &str,
    fingerprint: Fingerprint,
    retention: Retention,
    now: Millis,
    savepoint: bool,
    effect: impl FnOnce(&mut SqliteTx<'t>) -> Result<String, BoxError>,
) -> Result<Outcome, InboxError> {
    let existing = load(tx, at, key)?;
    let prev = existing.as_ref().map(|s| &s.record);
    let created_at = match decide(prev, &fingerprint, retention, now) {
        Decision::Duplicate { result } => return Ok(Outcome::Duplicate(result.clone())),
        Decision::Conflict { stored } => {
            return Err(InboxError::Conflict {
                key: key.to_owned(),
                stored,
                incoming: fingerprint,
            })
        }
        Decision::InProgress { owner, lease_until } => {
            return Err(in_progress(key, owner, lease_until, now))
        }
        // A takeover keeps the key's history; a new or forgotten key starts a new one.
        Decision::TakeOver { .. } => existing.as_ref().map_or(now, |s| s.created_at),
        Decision::Apply | Decision::Expired => now,
    };
    if savepoint {
        exec(tx, at, "SAVEPOINT onepie_item")?;
    }
    let mut etx = SqliteTx { tx, at, now };
    let result = match effect(&mut etx) {
        Ok(result) => result,
        Err(source) => {
            if savepoint {
                // Alone, a rolled-back transaction just means nothing was recorded; in a
                // batch it also took the earlier items with it, so the whole batch fails.
                still_in_transaction(tx, key)?;
                exec(tx, at, "ROLLBACK TO onepie_item")?;
                exec(tx, at, "RELEASE onepie_item")?;
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
    write_row(tx, at, key, new, prev)?;
    if savepoint {
        exec(tx, at, "RELEASE onepie_item")?;
    }
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
            if conn
                .is_readonly(rusqlite::MAIN_DB)
                .map_err(|e| at.err(e))?
            {
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
            let outcome = deliver_one(tx, at, key, fingerprint, retention, now, false, effect)?;
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
            let mut out = Vec::with_capacity(items.len());
            for (key, payload) in items {
                let (key, payload) = (key.as_ref(), payload.as_ref());
                let one = validate_key(key).map_err(InboxError::from).and_then(|()| {
                    let fingerprint = Fingerprint::of(payload);
                    deliver_one(tx, at, key, fingerprint, retention, now, true, |etx| {
                        effect(etx, key, payload)
                    })
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
            let existing = load(tx, at, key)?;
            let prev = existing.as_ref().map(|s| &s.record);
            let (took_over_from, created_at) = match decide(prev, &fingerprint, retention, now) {
                Decision::Duplicate { result } => {
                    return Ok((Claim::Duplicate(result.clone()), false))
                }
                Decision::Conflict { stored } => {
                    return Err(InboxError::Conflict {
                        key: key.to_owned(),
                        stored,
                        incoming: fingerprint,
                    })
                }
                Decision::InProgress { owner, lease_until } => {
                    return Err(in_progress(key, owner, lease_until, now))
                }
                Decision::TakeOver { stale_owner } => (
                    Some(stale_owner),
                    existing.as_ref().map_or(now, |s| s.created_at),
                ),
                Decision::Apply | Decision::Expired => (None, now),
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
            write_row(tx, at, key, new, prev)?;
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
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM inbox ORDER BY key"))
            .map_err(|e| at.err(e))?;
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
