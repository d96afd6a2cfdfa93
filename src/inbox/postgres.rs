//! [`PgInbox`]: the inbox in a PostgreSQL database, shared by a fleet of receivers on many
//! hosts (cargo feature `postgres`).
//!
//! **Isolation and locking.** Transactions run at PostgreSQL's default READ COMMITTED, and
//! the key's unique index and row locks make a delivery atomic:
//! - a key the store does not have takes an optimistic path: the caller's effect runs, then
//!   `INSERT … ON CONFLICT DO NOTHING` records it. A concurrent delivery of the same key makes
//!   that insert wait for it and find the key taken; this transaction then rolls back, the
//!   effect's writes with it, and the answer comes from the winner's record. (So two such
//!   deliveries may run their effects at the same time; only one commits. An effect that takes
//!   its own locks may meet the other's and fail, or deadlock: retry it.)
//! - a key the store has and can answer at once (a completed key, a conflict, a live claim)
//!   is answered from one unlocked read, and the transaction is rolled back. That read marks
//!   the transaction with a transaction-local setting (`onepie.delivery`), which the new-key
//!   insert checks to tell whether the effect ended the transaction; so a duplicate uses up no
//!   transaction id. The lock paths below still compare `txid_current()`: they write anyway.
//! - a key the store has (an expired key, an abandoned claim, and every claim) is locked
//!   first — a placeholder insert, else `SELECT … FOR UPDATE`, which waits for any holder and
//!   returns the latest committed version — and decided again under the lock.
//! - a batch locks all its keys up front, new ones first, each group in key order; each effect
//!   runs in a savepoint of its own, and the records are written in one statement at the end.
//!   An effect in a batch that commits on its own commits the earlier items' effects without
//!   their records: never end the transaction an effect is handed.
//!
//! Connection loss, and the serialization or deadlock errors a transaction may hit, come back
//! as retryable errors ([`InboxError::ConnectionLost`], [`InboxError::Serialization`]):
//! retrying is safe, since a delivery that did commit is answered as a duplicate.
//!
//! **Schema.** Three objects prefixed `onepie_` in the connection's schema: `onepie_inbox`
//! (one row per key, as in SQLite), `onepie_meta` (schema version, owner) and the sequence
//! `onepie_tokens` (fencing tokens). Created on first open, under an advisory lock so that a
//! fleet starting at once creates them once.

use super::step::{not_owner, Go, Kept, Request};
use super::{BoxError, Claim, Entry, InboxError, InboxStore, Lease, Outcome, END_OF_TIME};
use super::{Clock, SystemClock};
use crate::dedup::{Fingerprint, KeyError, Millis, Record, Retention, Stage};
use postgres::error::SqlState;
use postgres::{Client, NoTls, Row, Statement, Transaction};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The schema version this build writes and the newest it reads.
pub const PG_SCHEMA_VERSION: i64 = 1;

/// `pg_advisory_xact_lock` key for creating the schema: the bytes "1pie".
const SCHEMA_LOCK: i64 = 0x3170_6965;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS onepie_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS onepie_inbox (
        key TEXT PRIMARY KEY,
        fingerprint BYTEA NOT NULL,
        state INTEGER NOT NULL,
        result BYTEA,
        owner BIGINT,
        lease_until BIGINT,
        created_at BIGINT NOT NULL,
        completed_at BIGINT
    );
    CREATE SEQUENCE IF NOT EXISTS onepie_tokens;";

const COLUMNS: &str = "fingerprint, state, result, owner, lease_until, created_at, completed_at";

/// How to open a [`PgInbox`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Default [`Retention::Forever`]. Give every receiver of a fleet the same.
    pub retention: Retention,
    /// Default [`SystemClock`]. A fleet's clocks should agree to well within a lease.
    pub clock: Arc<dyn Clock>,
    /// How long to wait for the server when connecting; default 10 s.
    pub connect_timeout: Duration,
    /// Create the inbox's tables if absent (default `true`); else [`InboxError::Missing`].
    pub create: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            retention: Retention::Forever,
            clock: Arc::new(SystemClock),
            connect_timeout: Duration::from_secs(10),
            create: true,
        }
    }
}

impl PgOptions {
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Fail with [`InboxError::Missing`] instead of creating the tables: for readers.
    pub fn existing_only(mut self) -> Self {
        self.create = false;
        self
    }
}

/// The statements every delivery runs, prepared once per connection.
#[derive(Clone)]
struct Stmts {
    select: Statement,
    probe: Statement,
    insert_new: Statement,
    lock: Statement,
    insert_placeholder: Statement,
    write: Statement,
}

/// A deduplicating inbox in a PostgreSQL database. One value is one connection; give each
/// thread its own ([`InboxStore::try_clone`]). Any number of processes on any number of hosts
/// may share the database.
pub struct PgInbox {
    /// In a `RefCell` because `postgres` needs `&mut Client` even to read, and the trait's
    /// reads take `&self`; a handle is used by one thread at a time anyway.
    client: RefCell<Client>,
    config: postgres::Config,
    /// The URL without its password, for messages.
    store: String,
    opts: PgOptions,
    stmts: Stmts,
}

impl fmt::Debug for PgInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgInbox")
            .field("store", &self.store)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// What a transactional effect receives from a [`PgInbox`]: the delivery's open transaction
/// (it derefs to [`postgres::Transaction`]). Whatever it writes commits together with the key,
/// or not at all.
pub struct PgTx<'t> {
    tx: Transaction<'t>,
    now: Millis,
}

impl<'t> PgTx<'t> {
    /// The inbox clock at the start of this delivery.
    pub fn now(&self) -> Millis {
        self.now
    }
}

impl<'t> Deref for PgTx<'t> {
    type Target = Transaction<'t>;
    fn deref(&self) -> &Transaction<'t> {
        &self.tx
    }
}

impl DerefMut for PgTx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl fmt::Debug for PgTx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTx").field("now", &self.now).finish()
    }
}

/// How messages name the server: user, hosts, ports and database from the parsed
/// connection string (URL or `key=value` form), never its password.
fn display_name(config: &postgres::Config) -> String {
    use postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, port)| match h {
            Host::Tcp(h) => format!("{h}:{port}"),
            Host::Unix(p) => format!("{}:{port}", p.display()),
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// A statement after the caller's effect failed: [`InboxError::EffectEndedTransaction`] if the
/// effect ended or broke the delivery's transaction (an error it carried on past aborts it;
/// a `COMMIT` or `ROLLBACK` ends it, and the savepoint with it), else [`pg_err`].
fn ended_or<'a>(store: &'a str, key: &'a str) -> impl Fn(postgres::Error) -> InboxError + 'a {
    move |e| match e.code() {
        Some(c)
            if *c == SqlState::IN_FAILED_SQL_TRANSACTION
                || *c == SqlState::NO_ACTIVE_SQL_TRANSACTION
                || *c == SqlState::S_E_INVALID_SPECIFICATION =>
        {
            InboxError::EffectEndedTransaction {
                key: key.to_owned(),
            }
        }
        _ => pg_err(store, e),
    }
}

/// PostgreSQL's errors as [`InboxError`]s, naming the store.
fn pg_err(store: &str, e: postgres::Error) -> InboxError {
    let store = store.to_string();
    let path = || PathBuf::from(&store);
    match e.code() {
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            InboxError::Serialization {
                store,
                source: e.into(),
            }
        }
        // Who may connect to what: wrong user, password or database.
        Some(c) if c.code().starts_with("28") || *c == SqlState::INVALID_CATALOG_NAME => {
            InboxError::Open {
                path: path(),
                source: e.into(),
            }
        }
        Some(c) if *c == SqlState::DISK_FULL => InboxError::DiskFull { path: path() },
        Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => {
            InboxError::ReadOnly { path: path() }
        }
        Some(c)
            if c.code().starts_with("08")
                || c.code().starts_with("57P")
                || *c == SqlState::TOO_MANY_CONNECTIONS =>
        {
            InboxError::ConnectionLost {
                store,
                source: e.into(),
            }
        }
        Some(_) => InboxError::Storage {
            path: path(),
            source: e.into(),
        },
        // No SQLSTATE: the connection failed or closed — or the client itself refused
        // something (a row count, a type), which retrying will not mend.
        None if e.is_closed()
            || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) =>
        {
            InboxError::ConnectionLost {
                store,
                source: e.into(),
            }
        }
        None => InboxError::Storage {
            path: path(),
            source: e.into(),
        },
    }
}

fn decode(row: &Row, store: &str) -> Result<Kept, InboxError> {
    let fp: Vec<u8> = row.get("fingerprint");
    let fingerprint = Fingerprint(fp.try_into().map_err(|_| InboxError::Corrupt {
        path: PathBuf::from(store),
        detail: "a fingerprint is not 16 bytes".into(),
    })?);
    let stage = match row.get::<_, i32>("state") {
        0 => Stage::InProgress {
            owner: row.get::<_, Option<i64>>("owner").unwrap_or(0) as u64,
            lease_until: row.get::<_, Option<i64>>("lease_until").unwrap_or(0) as Millis,
        },
        1 => Stage::Completed {
            result: row.get::<_, Option<Vec<u8>>>("result").unwrap_or_default(),
            at: row.get::<_, Option<i64>>("completed_at").unwrap_or(0) as Millis,
        },
        other => {
            return Err(InboxError::Corrupt {
                path: PathBuf::from(store),
                detail: format!("unknown state {other}"),
            })
        }
    };
    Ok(Kept {
        record: Record { fingerprint, stage },
        created_at: row.get::<_, i64>("created_at") as Millis,
    })
}

/// The columns of a record, in `write`'s parameter order after the key.
struct Columns {
    fingerprint: Vec<u8>,
    state: i32,
    result: Option<Vec<u8>>,
    owner: Option<i64>,
    lease_until: Option<i64>,
    created_at: i64,
    completed_at: Option<i64>,
}

fn columns(k: &Kept) -> Columns {
    let (state, result, owner, lease_until, completed_at) = match &k.record.stage {
        Stage::InProgress { owner, lease_until } => (
            0,
            None,
            Some(*owner as i64),
            Some(*lease_until as i64),
            None,
        ),
        Stage::Completed { result, at } => (1, Some(result.clone()), None, None, Some(*at as i64)),
    };
    Columns {
        fingerprint: k.record.fingerprint.0.to_vec(),
        state,
        result,
        owner,
        lease_until,
        created_at: k.created_at as i64,
        completed_at,
    }
}

impl PgInbox {
    /// Connects to `url` (`postgres://user:password@host:port/database`) with the default
    /// options, creating the inbox's tables if absent.
    ///
    /// Errors: [`InboxError::Open`] for a URL that is not one, [`InboxError::ConnectionLost`]
    /// when the server cannot be reached, [`InboxError::NotAnInbox`] when `onepie_` tables
    /// exist that are not an inbox's, [`InboxError::NewerSchema`].
    pub fn open(url: &str) -> Result<Self, InboxError> {
        Self::open_with(url, PgOptions::default())
    }

    /// Connects to `url` with `opts`.
    pub fn open_with(url: &str, opts: PgOptions) -> Result<Self, InboxError> {
        let mut config = postgres::Config::from_str(url).map_err(|e| InboxError::Open {
            // Unparsed, so the password cannot be picked out: name no more than the scheme.
            path: PathBuf::from("the PostgreSQL connection string"),
            source: e.into(),
        })?;
        let store = display_name(&config);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(opts.connect_timeout);
        }
        Self::connect(config, store, opts)
    }

    fn connect(
        config: postgres::Config,
        store: String,
        opts: PgOptions,
    ) -> Result<Self, InboxError> {
        let mut client = config.connect(NoTls).map_err(|e| pg_err(&store, e))?;
        Self::setup(&mut client, &store, opts.create)?;
        let err = |e| pg_err(&store, e);
        let stmts = Stmts {
            select: client
                .prepare(&format!("SELECT {COLUMNS} FROM onepie_inbox WHERE key = $1"))
                .map_err(err)?,
            lock: client
                .prepare(&format!(
                    "SELECT {COLUMNS}, txid_current() AS xid FROM onepie_inbox WHERE key = $1 FOR UPDATE"
                ))
                .map_err(err)?,
            probe: client
                .prepare(&format!(
                    "SELECT set_config('onepie.delivery', 'on', true) AS marker, {COLUMNS}
                     FROM (SELECT 1) AS one LEFT JOIN onepie_inbox ON key = $1"
                ))
                .map_err(err)?,
            // A new key's record after its effect ran, if the key is still free. The probe's
            // transaction-local marker tells whether this still is the delivery's transaction:
            // a local setting ends with its transaction, so if the effect ended it the marker
            // is gone and this inserts nothing. (A marker, not `txid_current()`, so that a
            // delivery answered as a duplicate uses up no transaction id.)
            insert_new: client
                .prepare(
                    "WITH ins AS (
                         INSERT INTO onepie_inbox (key, fingerprint, state, result, created_at, completed_at)
                         SELECT $1, $2, 1, $3, $4, $4
                         WHERE current_setting('onepie.delivery', true) = 'on'
                         ON CONFLICT (key) DO NOTHING RETURNING 1)
                     SELECT (SELECT count(*) FROM ins),
                            coalesce(current_setting('onepie.delivery', true) = 'on', false)",
                )
                .map_err(err)?,
            insert_placeholder: client
                .prepare(
                    "INSERT INTO onepie_inbox (key, fingerprint, state, owner, lease_until, created_at)
                     VALUES ($1, $2, 0, 0, 0, 0) ON CONFLICT (key) DO NOTHING
                     RETURNING txid_current() AS xid",
                )
                .map_err(err)?,
            // The row is locked by this transaction; `txid_current() = $9` makes the write a
            // no-op if the effect ended the transaction (the write would run in a new one).
            write: client
                .prepare(
                    "UPDATE onepie_inbox SET fingerprint = $2, state = $3, result = $4, owner = $5,
                         lease_until = $6, created_at = $7, completed_at = $8
                     WHERE key = $1 AND txid_current() = $9",
                )
                .map_err(err)?,
        };
        Ok(PgInbox {
            client: RefCell::new(client),
            config,
            store,
            opts,
            stmts,
        })
    }

    /// Creates the schema if absent; refuses foreign or newer ones.
    fn setup(client: &mut Client, store: &str, create: bool) -> Result<(), InboxError> {
        let err = |e| pg_err(store, e);
        let path = || PathBuf::from(store);
        let mut tx = client.transaction().map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .map_err(err)?;
        let row = tx
            .query_one(
                "SELECT to_regclass('onepie_meta') IS NOT NULL, to_regclass('onepie_inbox') IS NOT NULL",
                &[],
            )
            .map_err(err)?;
        let (meta, inbox): (bool, bool) = (row.get(0), row.get(1));
        if meta {
            let version: Option<String> = tx
                .query_opt(
                    "SELECT value FROM onepie_meta WHERE name = 'schema_version'",
                    &[],
                )
                .map_err(err)?
                .map(|r| r.get(0));
            let Some(version) = version.and_then(|v| v.parse::<i64>().ok()) else {
                return Err(InboxError::NotAnInbox {
                    path: path(),
                    why: "it has an onepie_meta table without an inbox schema version".into(),
                });
            };
            if version > PG_SCHEMA_VERSION {
                return Err(InboxError::NewerSchema {
                    path: path(),
                    found: version,
                    supported: PG_SCHEMA_VERSION,
                });
            }
            if !inbox {
                return Err(InboxError::Corrupt {
                    path: path(),
                    detail: "onepie_meta exists but onepie_inbox does not".into(),
                });
            }
        } else if inbox {
            return Err(InboxError::NotAnInbox {
                path: path(),
                why: "it has an onepie_inbox table that onepie did not create".into(),
            });
        } else if !create {
            return Err(InboxError::Missing { path: path() });
        } else {
            tx.batch_execute(SCHEMA).map_err(err)?;
            tx.execute(
                "INSERT INTO onepie_meta (name, value) VALUES ('schema_version', $1), ('created_by', $2)",
                &[&PG_SCHEMA_VERSION.to_string(), &format!("onepie {}", env!("CARGO_PKG_VERSION"))],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// The server, as messages name it (the URL without its password).
    pub fn store(&self) -> &str {
        &self.store
    }

    /// The options it was opened with.
    pub fn options(&self) -> &PgOptions {
        &self.opts
    }

    /// The underlying connection, for your own tables. Do not write the `onepie_` tables.
    pub fn client(&mut self) -> &mut Client {
        self.client.get_mut()
    }

    /// Runs `f` on the connection from a shared handle (for reads outside a delivery).
    pub fn with_client<R>(&self, f: impl FnOnce(&mut Client) -> R) -> R {
        f(&mut self.client.borrow_mut())
    }

    fn err(&self) -> impl Fn(postgres::Error) -> InboxError + '_ {
        move |e| pg_err(&self.store, e)
    }

    fn request<'k>(&self, key: &'k str, payload: &[u8]) -> Result<Request<'k>, InboxError> {
        Ok(Request::new(
            key,
            payload,
            self.opts.clock.now(),
            self.opts.retention,
        )?)
    }
}

/// Locks `key`'s row in `tx`: inserts a placeholder for a new key, or locks the existing row.
/// Returns the record (`None` for a new key) and the transaction's id.
fn lock(
    tx: &mut Transaction<'_>,
    stmts: &Stmts,
    store: &str,
    key: &str,
    fingerprint: &Fingerprint,
) -> Result<(Option<Kept>, i64), InboxError> {
    let err = |e| pg_err(store, e);
    loop {
        if let Some(row) = tx
            .query_opt(&stmts.insert_placeholder, &[&key, &&fingerprint.0[..]])
            .map_err(err)?
        {
            return Ok((None, row.get("xid")));
        }
        // Someone else's row: wait for its holder, then read the committed version. If that
        // holder rolled back its placeholder, there is nothing to lock: insert again.
        if let Some(row) = tx.query_opt(&stmts.lock, &[&key]).map_err(err)? {
            return Ok((Some(decode(&row, store)?), row.get("xid")));
        }
    }
}

/// [`lock`] for a batch's distinct keys, in key order: read the transaction id, insert
/// placeholders for the new ones, then lock the rest (three statements). Returns each key's record, the keys that got a
/// placeholder, and the transaction's id.
#[allow(clippy::type_complexity)]
fn lock_all<'k>(
    tx: &mut Transaction<'_>,
    store: &str,
    keys: &BTreeMap<&'k str, Fingerprint>,
) -> Result<(BTreeMap<&'k str, Option<Kept>>, BTreeSet<&'k str>, i64), InboxError> {
    let err = |e| pg_err(store, e);
    let mut kept = BTreeMap::new();
    let mut placeholders = BTreeSet::new();
    let mut xid = tx
        .query_one("SELECT txid_current()", &[])
        .map_err(err)?
        .get::<_, i64>(0);
    let mut todo: Vec<&'k str> = keys.keys().copied().collect();
    while !todo.is_empty() {
        let fps: Vec<&[u8]> = todo.iter().map(|k| &keys[k].0[..]).collect();
        let inserted = tx
            .query(
                "INSERT INTO onepie_inbox (key, fingerprint, state, owner, lease_until, created_at)
                 SELECT k, f, 0, 0, 0, 0 FROM unnest($1::text[], $2::bytea[]) AS t(k, f)
                 ORDER BY k COLLATE \"C\"
                 ON CONFLICT (key) DO NOTHING RETURNING key",
                &[&todo, &fps],
            )
            .map_err(err)?;
        for row in &inserted {
            let key: String = row.get(0);
            let key = todo[todo.iter().position(|k| *k == key).expect("one of ours")];
            placeholders.insert(key);
            kept.insert(key, None);
        }
        let rest: Vec<&'k str> = todo
            .iter()
            .copied()
            .filter(|k| !kept.contains_key(k))
            .collect();
        if rest.is_empty() {
            break;
        }
        let rows = tx
            .query(
                &format!(
                    "SELECT key, {COLUMNS}, txid_current() AS xid FROM onepie_inbox
                     WHERE key = ANY($1) ORDER BY key COLLATE \"C\" FOR UPDATE"
                ),
                &[&rest],
            )
            .map_err(err)?;
        for row in &rows {
            let key: String = row.get("key");
            let key = rest[rest.iter().position(|k| *k == key).expect("one of ours")];
            kept.insert(key, Some(decode(row, store)?));
            xid = row.get("xid");
        }
        // Keys whose concurrent inserter rolled back: neither inserted nor found. Again.
        todo = rest.into_iter().filter(|k| !kept.contains_key(k)).collect();
    }
    Ok((kept, placeholders, xid))
}

/// [`write`] for many keys in one statement.
fn write_all(
    tx: &mut Transaction<'_>,
    store: &str,
    records: &[(&str, &Kept)],
    xid: i64,
) -> Result<(), InboxError> {
    if records.is_empty() {
        return Ok(());
    }
    let cols: Vec<Columns> = records.iter().map(|(_, k)| columns(k)).collect();
    let keys: Vec<&str> = records.iter().map(|(k, _)| *k).collect();
    let fps: Vec<&[u8]> = cols.iter().map(|c| &c.fingerprint[..]).collect();
    let states: Vec<i32> = cols.iter().map(|c| c.state).collect();
    let results: Vec<Option<&[u8]>> = cols.iter().map(|c| c.result.as_deref()).collect();
    let owners: Vec<Option<i64>> = cols.iter().map(|c| c.owner).collect();
    let leases: Vec<Option<i64>> = cols.iter().map(|c| c.lease_until).collect();
    let created: Vec<i64> = cols.iter().map(|c| c.created_at).collect();
    let completed: Vec<Option<i64>> = cols.iter().map(|c| c.completed_at).collect();
    let n = tx
        .execute(
            "UPDATE onepie_inbox AS i SET fingerprint = u.f, state = u.s, result = u.r,
                 owner = u.o, lease_until = u.l, created_at = u.c, completed_at = u.d
             FROM unnest($1::text[], $2::bytea[], $3::int4[], $4::bytea[], $5::int8[],
                         $6::int8[], $7::int8[], $8::int8[]) AS u(k, f, s, r, o, l, c, d)
             WHERE i.key = u.k AND txid_current() = $9",
            &[
                &keys, &fps, &states, &results, &owners, &leases, &created, &completed, &xid,
            ],
        )
        .map_err(ended_or(store, keys[0]))?;
    if n != records.len() as u64 {
        return Err(InboxError::EffectEndedTransaction {
            key: keys[0].to_owned(),
        });
    }
    Ok(())
}

/// Writes `key`'s record in the transaction `xid` that holds its lock.
fn write(
    tx: &mut Transaction<'_>,
    stmts: &Stmts,
    store: &str,
    key: &str,
    new: &Kept,
    xid: i64,
) -> Result<(), InboxError> {
    let c = columns(new);
    let n = tx
        .execute(
            &stmts.write,
            &[
                &key,
                &c.fingerprint,
                &c.state,
                &c.result,
                &c.owner,
                &c.lease_until,
                &c.created_at,
                &c.completed_at,
                &xid,
            ],
        )
        .map_err(ended_or(store, key))?;
    if n != 1 {
        return Err(InboxError::EffectEndedTransaction {
            key: key.to_owned(),
        });
    }
    Ok(())
}

impl InboxStore for PgInbox {
    type Tx<'t> = PgTx<'t>;

    fn try_clone(&self) -> Result<Self, InboxError> {
        Self::connect(self.config.clone(), self.store.clone(), self.opts.clone())
    }

    fn now(&self) -> Millis {
        self.opts.clock.now()
    }

    fn retention(&self) -> Retention {
        self.opts.retention
    }

    fn deliver<F>(&mut self, key: &str, payload: &[u8], effect: F) -> Result<Outcome, InboxError>
    where
        F: FnOnce(&mut PgTx<'_>) -> Result<Vec<u8>, BoxError>,
    {
        let req = self.request(key, payload)?;
        let (stmts, store) = (self.stmts.clone(), self.store.clone());
        let err = |e| pg_err(&store, e);
        let mut tx = self.client.get_mut().transaction().map_err(err)?;
        // One round trip: a marker for this transaction, and what the store holds, unlocked.
        let probe = tx.query_one(&stmts.probe, &[&key]).map_err(err)?;
        let seen = match probe.get::<_, Option<Vec<u8>>>("fingerprint") {
            Some(_) => Some(decode(&probe, &store)?),
            None => None,
        };
        let Some(seen) = seen else {
            // A new key, optimistically: run the effect, then insert the record. A concurrent
            // delivery of the same key makes the insert wait for it and find the key taken;
            // then this transaction rolls back, the effect's writes with it.
            let mut etx = PgTx { tx, now: req.now };
            let result = effect(&mut etx).map_err(|source| InboxError::Effect {
                key: key.to_owned(),
                source,
            })?;
            let mut tx = etx.tx;
            let (now, fp) = (req.now as i64, &req.fingerprint.0[..]);
            let row = tx
                .query_one(&stmts.insert_new, &[&key, &fp, &result, &now])
                .map_err(ended_or(&store, key))?;
            let (inserted, same_transaction): (i64, bool) = (row.get(0), row.get(1));
            if !same_transaction {
                return Err(InboxError::EffectEndedTransaction {
                    key: key.to_owned(),
                });
            }
            if inserted == 1 {
                tx.commit().map_err(err)?;
                return Ok(Outcome::Applied(result));
            }
            // The insert waited for the other delivery to commit; a new statement sees its
            // record. Returning drops (rolls back) this transaction.
            let row = tx.query_opt(&stmts.select, &[&key]).map_err(err)?;
            let kept = row.map(|r| decode(&r, &store)).transpose()?;
            return match req.admit_delivery(kept.as_ref())? {
                Err(answer) => Ok(answer),
                Ok(_) => Err(InboxError::Serialization {
                    store,
                    source: "another delivery of the key committed while this one ran its effect, and left it to run again".into(),
                }),
            };
        };
        // A completed key (the common redelivery), a conflict or a live claim: answered
        // without a lock (dropping the transaction rolls it back).
        if let Err(answer) = req.admit_delivery(Some(&seen))? {
            return Ok(answer);
        }
        // An expired key or an abandoned claim: lock it and decide again.
        let (kept, xid) = lock(&mut tx, &stmts, &store, key, &req.fingerprint)?;
        let go: Go = match req.admit_delivery(kept.as_ref())? {
            Ok(go) => go,
            Err(answer) => return Ok(answer),
        };
        let mut etx = PgTx { tx, now: req.now };
        let result = effect(&mut etx).map_err(|source| InboxError::Effect {
            key: key.to_owned(),
            source,
        })?;
        let mut tx = etx.tx;
        let new = go.completed(result);
        write(&mut tx, &stmts, &store, key, &new, xid)?;
        tx.commit().map_err(err)?;
        let Stage::Completed { result, .. } = new.record.stage else {
            unreachable!("a delivery records a completed key")
        };
        Ok(Outcome::Applied(result))
    }

    /// One transaction: every key locked up front in key order (two statements for the whole
    /// batch), each effect in a savepoint of its own — so an effect that fails, even after
    /// writing, fails only its item — and every record written in one statement.
    fn deliver_batch<K, P, F>(
        &mut self,
        items: &[(K, P)],
        mut effect: F,
    ) -> Result<Vec<Result<Outcome, InboxError>>, InboxError>
    where
        K: AsRef<str>,
        P: AsRef<[u8]>,
        F: FnMut(&mut PgTx<'_>, &str, &[u8]) -> Result<Vec<u8>, BoxError>,
    {
        let (now, retention) = (self.opts.clock.now(), self.opts.retention);
        let reqs: Vec<Result<Request<'_>, KeyError>> = items
            .iter()
            .map(|(k, p)| Request::new(k.as_ref(), p.as_ref(), now, retention))
            .collect();
        // Each distinct valid key once, in key order: batches sharing keys lock them in the
        // same order, so they wait for each other instead of deadlocking.
        let mut first: BTreeMap<&str, Fingerprint> = BTreeMap::new();
        for r in reqs.iter().flatten() {
            first.entry(r.key).or_insert(r.fingerprint);
        }
        let store = self.store.clone();
        let err = |e| pg_err(&store, e);
        let mut tx = self.client.get_mut().transaction().map_err(err)?;
        let (mut kept, placeholders, xid) = lock_all(&mut tx, &store, &first)?;
        tx.batch_execute("SAVEPOINT onepie_item").map_err(err)?;
        let mut etx = PgTx { tx, now };
        let mut out = Vec::with_capacity(items.len());
        let mut written: BTreeSet<&str> = BTreeSet::new();
        for ((_, payload), req) in items.iter().zip(&reqs) {
            let req = match req {
                Ok(req) => req,
                Err(e) => {
                    out.push(Err(e.clone().into()));
                    continue;
                }
            };
            let current = kept.get(req.key).and_then(Option::as_ref);
            let go = match req.admit_delivery(current) {
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
                Ok(Err(answer)) => {
                    out.push(Ok(answer));
                    continue;
                }
                Ok(Ok(go)) => go,
            };
            match effect(&mut etx, req.key, payload.as_ref()) {
                Ok(result) => {
                    etx.tx
                        .batch_execute("RELEASE SAVEPOINT onepie_item; SAVEPOINT onepie_item")
                        .map_err(ended_or(&store, req.key))?;
                    let new = go.completed(result.clone());
                    kept.insert(req.key, Some(new));
                    written.insert(req.key);
                    out.push(Ok(Outcome::Applied(result)));
                }
                Err(source) => {
                    etx.tx
                        .batch_execute("ROLLBACK TO SAVEPOINT onepie_item")
                        .map_err(ended_or(&store, req.key))?;
                    out.push(Err(InboxError::Effect {
                        key: req.key.to_owned(),
                        source,
                    }));
                }
            }
        }
        let mut tx = etx.tx;
        let records: Vec<(&str, &Kept)> = written
            .iter()
            .map(|k| (*k, kept[k].as_ref().expect("written keys have records")))
            .collect();
        write_all(&mut tx, &store, &records, xid)?;
        // Placeholders of new keys whose every delivery failed.
        let unused: Vec<&str> = placeholders.difference(&written).copied().collect();
        if !unused.is_empty() {
            tx.execute("DELETE FROM onepie_inbox WHERE key = ANY($1)", &[&unused])
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(out)
    }

    fn claim(&mut self, key: &str, payload: &[u8], lease: Duration) -> Result<Claim, InboxError> {
        let req = self.request(key, payload)?;
        let (stmts, store) = (self.stmts.clone(), self.store.clone());
        let err = |e| pg_err(&store, e);
        let mut tx = self.client.get_mut().transaction().map_err(err)?;
        let (kept, xid) = lock(&mut tx, &stmts, &store, key, &req.fingerprint)?;
        let go = match req.admit_claim(kept.as_ref())? {
            Ok(go) => go,
            Err(answer) => return Ok(answer),
        };
        // A sequence: tokens are unique and increasing across the whole fleet, never reused.
        let token: i64 = tx
            .query_one("SELECT nextval('onepie_tokens')", &[])
            .map_err(err)?
            .get(0);
        let (new, lease) = go.claimed(key, token as u64, lease);
        write(&mut tx, &stmts, &store, key, &new, xid)?;
        tx.commit().map_err(err)?;
        Ok(Claim::Acquired(lease))
    }

    fn complete(&mut self, lease: &Lease, result: &[u8]) -> Result<(), InboxError> {
        let now = self.opts.clock.now().min(END_OF_TIME) as i64;
        let changed = self
            .client
            .get_mut()
            .execute(
                "UPDATE onepie_inbox SET state = 1, result = $3, owner = NULL, lease_until = NULL,
                     completed_at = $4
                 WHERE key = $1 AND state = 0 AND owner = $2",
                &[&lease.key, &(lease.token as i64), &result, &now],
            )
            .map_err(self.err())?;
        self.owned_if_changed(lease, changed)
    }

    fn release(&mut self, lease: &Lease) -> Result<(), InboxError> {
        let changed = self
            .client
            .get_mut()
            .execute(
                "DELETE FROM onepie_inbox WHERE key = $1 AND state = 0 AND owner = $2",
                &[&lease.key, &(lease.token as i64)],
            )
            .map_err(self.err())?;
        self.owned_if_changed(lease, changed)
    }

    fn get(&self, key: &str) -> Result<Option<Entry>, InboxError> {
        crate::dedup::validate_key(key)?;
        let row = self
            .client
            .borrow_mut()
            .query_opt(&self.stmts.select, &[&key])
            .map_err(self.err())?;
        row.map(|r| decode(&r, &self.store).map(|k| k.into_entry(key.to_owned())))
            .transpose()
    }

    fn entries(&self) -> Result<Vec<Entry>, InboxError> {
        // Byte order, as SQLite sorts: the database's collation may differ.
        let rows = self
            .client
            .borrow_mut()
            .query(
                &format!("SELECT key, {COLUMNS} FROM onepie_inbox ORDER BY key COLLATE \"C\""),
                &[],
            )
            .map_err(self.err())?;
        rows.iter()
            .map(|r| decode(r, &self.store).map(|k| k.into_entry(r.get("key"))))
            .collect()
    }

    fn prune(&mut self) -> Result<usize, InboxError> {
        let Retention::Window(window) = self.opts.retention else {
            return Ok(0);
        };
        let cutoff = (self
            .opts
            .clock
            .now()
            .min(END_OF_TIME)
            .saturating_sub(window)) as i64;
        let n = self
            .client
            .get_mut()
            .execute(
                "DELETE FROM onepie_inbox WHERE (state = 1 AND completed_at < $1)
                                             OR (state = 0 AND lease_until < $1)",
                &[&cutoff],
            )
            .map_err(self.err())?;
        Ok(n as usize)
    }
}

impl PgInbox {
    fn owned_if_changed(&mut self, lease: &Lease, changed: u64) -> Result<(), InboxError> {
        if changed == 0 {
            let current = self.get(&lease.key)?;
            if let Some(e) = not_owner(lease, current.as_ref().map(|e| &e.record)) {
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_repeated_in_messages() {
        for (url, name) in [
            (
                "postgres://app:s3cret@db:5433/orders",
                "postgres://app@db:5433/orders",
            ),
            (
                "postgres://app@db/orders?password=s3cret",
                "postgres://app@db:5432/orders",
            ),
            (
                "host=db user=app password=s3cret dbname=orders",
                "postgres://app@db:5432/orders",
            ),
        ] {
            assert_eq!(
                display_name(&postgres::Config::from_str(url).unwrap()),
                name
            );
        }
    }
}
