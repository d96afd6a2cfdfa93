//! Opening an inbox file: options, the schema, and telling an inbox from anything else
//! without touching it.

use super::busy::patient;
use super::errors::At;
use super::SqliteInbox;
use crate::inbox::{Clock, InboxError, Retention, SystemClock, END_OF_TIME};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `PRAGMA application_id` of every onepie inbox: the bytes `"1pie"`.
pub const APPLICATION_ID: i32 = 0x3170_6965;

/// The schema version (`PRAGMA user_version`) this build writes and the newest it reads.
/// Version 1 also created a `pies` table (now the test kit's and the CLI's own) and declared
/// `result` TEXT; a writable open upgrades it in place (only the version number changes).
pub const SCHEMA_VERSION: i64 = 2;

/// `inbox` has one row per remembered key: state 0 is a claim (`owner`, `lease_until` set),
/// state 1 is completed (`result` bytes, `completed_at` set); `created_at` is NULL when it
/// equals `completed_at` (every transactional delivery), and `fingerprint` is 16 bytes: bytes
/// per key are the inbox's main cost. `WITHOUT ROWID` keeps one b-tree keyed by the key, so a
/// delivery touches one b-tree, not a table and an index.
fn schema() -> String {
    format!(
        "CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID;
         CREATE TABLE inbox (
             key TEXT PRIMARY KEY NOT NULL,
             fingerprint BLOB NOT NULL,
             state INTEGER NOT NULL,
             result BLOB,
             owner INTEGER,
             lease_until INTEGER,
             created_at INTEGER,
             completed_at INTEGER
         ) WITHOUT ROWID;
         INSERT INTO meta (name, value) VALUES ('last_token', 0), ('created_by', 'onepie {}');
         PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {SCHEMA_VERSION};",
        env!("CARGO_PKG_VERSION")
    )
}

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
    /// How long a write waits for other writers before [`InboxError::Locked`]; default 5 s.
    /// A waiting writer checks the lock again about every millisecond.
    pub busy_timeout: Duration,
    /// Default [`Retention::Forever`]. A property of the handle: give every handle the same.
    pub retention: Retention,
    /// Default [`SystemClock`].
    pub clock: Arc<dyn Clock>,
    /// Create the file if it does not exist (default `true`).
    pub create: bool,
    /// Open read-only (default `false`): reads work, every write is [`InboxError::ReadOnly`].
    pub read_only: bool,
    /// With `read_only`: a one-shot snapshot (default `false`). A file no one has open is then
    /// read without locks and without creating anything beside it (SQLite's `immutable`), even
    /// in a read-only directory — but the handle does not see later writes, so do not keep it
    /// open while others write. What `onepie inbox show` uses.
    pub snapshot: bool,
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
            snapshot: false,
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

    /// Open read-only as a one-shot snapshot (see [`SqliteOptions::snapshot`]).
    pub fn snapshot(mut self) -> Self {
        self.snapshot = true;
        self.read_only()
    }
}

/// What the file at hand turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Empty (new, or zero bytes): ours to initialize.
    Fresh,
    /// An onepie inbox this build understands, at this schema version.
    Inbox(i64),
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
            v => Ok(Kind::Inbox(v)),
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

/// `path` as a SQLite URI opening it read-only with `immutable=1`: no locks, no `-wal`, no
/// `-shm`, nothing created or changed beside the file.
fn untouched_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri + "?immutable=1"
}

fn wal_of(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Opens `path` read-only; with `untouched`, a file with no `-wal` beside it (no writer has it
/// open: a WAL connection keeps one while it is open) is opened immutable, since SQLite would
/// otherwise create `-wal` and `-shm` next to it — even next to a file it then refuses — and
/// could not read it at all in a read-only directory. Immutable means no locks and no change
/// detection: right for a quick look, wrong for a handle kept open.
fn open_for_reading(path: &Path, untouched: bool, at: At<'_>) -> Result<Connection, InboxError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = if untouched && !wal_of(path).exists() {
        Connection::open_with_flags(untouched_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(|e| at.err(e))?;
    conn.busy_handler(Some(patient(at.busy_timeout)))
        .map_err(|e| at.err(e))?;
    Ok(conn)
}

impl SqliteInbox {
    /// Opens (creating if absent) the inbox at `path` with the default options: WAL,
    /// `synchronous=FULL`, 5 s busy timeout, keys kept forever, system clock.
    ///
    /// Errors: [`InboxError::NotAnInbox`] for a file that is not an onepie inbox (left
    /// untouched, nothing created beside it), [`InboxError::NewerSchema`],
    /// [`InboxError::ReadOnly`], [`InboxError::Locked`], [`InboxError::Open`].
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
        let at = At {
            path: &path,
            busy_timeout: opts.busy_timeout,
            reading: opts.read_only,
        };
        let exists = match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                return Err(InboxError::NotAnInbox {
                    path,
                    why: "it is a directory".into(),
                })
            }
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(InboxError::Open {
                    path,
                    source: e.into(),
                })
            }
        };
        if !exists && (!opts.create || opts.read_only) {
            return Err(InboxError::Missing { path });
        }
        if opts.read_only {
            // Identify without touching; then keep a live handle unless a snapshot was asked for.
            let probe = open_for_reading(&path, true, at)?;
            if identify(&probe, at)? == Kind::Fresh {
                return Err(InboxError::NotAnInbox {
                    path,
                    why: "it is empty: no inbox was created in it yet".into(),
                });
            }
            let conn = if opts.snapshot {
                probe
            } else {
                drop(probe);
                open_for_reading(&path, false, at)?
            };
            return Ok(SqliteInbox { conn, path, opts });
        }
        if exists {
            // Look before opening for writing: a file that is not ours must be left exactly
            // as it was, with nothing new beside it.
            identify(&open_for_reading(&path, true, at)?, at)?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags).map_err(|e| at.err(e))?;
        conn.busy_handler(Some(patient(opts.busy_timeout)))
            .map_err(|e| at.err(e))?;
        // SQLite quietly opens a file it may not write read-only; say so now, not at the
        // first delivery.
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(|e| at.err(e))? {
            return Err(InboxError::ReadOnly { path });
        }
        let kind = identify(&conn, at)?;
        // WAL persists in the file; the readback is ignored because a file system without
        // shared memory keeps the rollback journal, which is just as safe, only slower.
        // Switching to WAL needs the file to itself, and SQLite answers "busy" at once, without
        // the busy handler, while another process opening the same new file holds a lock: try
        // again until the busy timeout. (Found by the four-process test: 8 in 100 runs failed.)
        let started = std::time::Instant::now();
        loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())) {
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::DatabaseBusy
                        && started.elapsed() < opts.busy_timeout =>
                {
                    std::thread::sleep(Duration::from_millis(1))
                }
                done => break done.map_err(|e| at.err(e))?,
            }
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {}",
            opts.synchronous.as_sql()
        ))
        .map_err(|e| at.err(e))?;
        if kind != Kind::Inbox(SCHEMA_VERSION) {
            // Another process may be initializing or upgrading the same file: decide again
            // under the write lock.
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| at.err(e))?;
            match identify(&tx, at)? {
                Kind::Fresh => tx.execute_batch(&schema()),
                // Version 1 stored an unbounded lease as a negative `lease_until`, which
                // `prune` would delete while held: it becomes the end of time.
                Kind::Inbox(v) if v < SCHEMA_VERSION => tx.execute_batch(&format!(
                    "UPDATE inbox SET lease_until = {END_OF_TIME} WHERE state = 0 AND lease_until < 0;
                     PRAGMA user_version = {SCHEMA_VERSION}"
                )),
                Kind::Inbox(_) => Ok(()),
            }
            .map_err(|e| at.err(e))?;
            tx.commit().map_err(|e| at.err(e))?;
        }
        Ok(SqliteInbox { conn, path, opts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_escape_everything_but_plain_path_characters() {
        assert_eq!(
            untouched_uri(Path::new("/tmp/a b/in?box#1%.db")),
            "file:/tmp/a%20b/in%3Fbox%231%25.db?immutable=1"
        );
    }
}
