//! [`SqliteInbox`]: the durable inbox in one SQLite file (WAL, `synchronous=FULL` by default).
//!
//! Every write is a `BEGIN IMMEDIATE` transaction: it takes SQLite's write lock before reading
//! the key, so the lookup, the decision, the effect and the record are one atomic step across
//! threads and processes. A redelivery of a completed key is answered from a plain read
//! first, without the write lock. Writers wait for each other (see `busy.rs`) up to the busy
//! timeout, then get [`InboxError::Locked`].
//!
//! Files: `open.rs` (options, schema, telling an inbox from other files), `rows.rs` (the
//! `inbox` table's rows), `errors.rs` (SQLite's errors as [`InboxError`]s), `busy.rs` (waiting
//! for the write lock), and this one: the transaction protocol.

mod busy;
mod errors;
mod open;
mod rows;
#[cfg(test)]
mod tests;

pub use open::{SqliteOptions, Synchronous, APPLICATION_ID, SCHEMA_VERSION};

use super::step::{not_owner, Go, Request};
use super::{BoxError, Claim, Entry, InboxError, InboxStore, Lease, Outcome};
use crate::dedup::{Millis, Retention};
use errors::At;
use rows::Stmts;
use rusqlite::{params, Connection, Transaction};
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
/// inbox.complete(&lease, b"sent")?;
/// assert_eq!(
///     inbox.claim("email-42", b"welcome", Duration::from_secs(30))?,
///     Claim::Duplicate(b"sent".to_vec())
/// );
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SqliteInbox {
    conn: Connection,
    path: PathBuf,
    opts: SqliteOptions,
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

/// One write transaction, with the statements every delivery in it runs.
struct Txn<'t> {
    tx: &'t Transaction<'t>,
    stmts: Stmts<'t>,
    at: At<'t>,
}

impl<'t> Txn<'t> {
    fn new(tx: &'t Transaction<'t>, at: At<'t>) -> Result<Self, InboxError> {
        Ok(Txn {
            tx,
            stmts: Stmts::new(tx, at)?,
            at,
        })
    }

    /// Decides one delivery and, if the core says so, runs the effect and records the key.
    ///
    /// In a batch (`in_batch`), an effect that fails is only that item's error if it wrote
    /// nothing; one that wrote and then failed cannot be undone alone (a savepoint per item
    /// would roughly halve batch throughput), so it fails the whole batch.
    fn deliver(
        &mut self,
        req: Request<'_>,
        in_batch: bool,
        effect: impl FnOnce(&mut SqliteTx<'t>) -> Result<Vec<u8>, BoxError>,
    ) -> Result<Outcome, InboxError> {
        let (at, key) = (self.at, req.key);
        let kept = self.stmts.load(at, key)?;
        let go: Go = match req.admit_delivery(kept.as_ref())? {
            Ok(go) => go,
            Err(answer) => return Ok(answer),
        };
        let changes_before = self.tx.total_changes();
        let mut etx = SqliteTx {
            tx: self.tx,
            at,
            now: req.now,
        };
        let result = match effect(&mut etx) {
            Ok(result) => result,
            Err(source) => {
                let key = key.to_owned();
                if in_batch {
                    // Alone, a rolled-back transaction just means nothing was recorded; in a
                    // batch it also took the earlier items with it.
                    self.still_open(&key)?;
                    if self.tx.total_changes() != changes_before {
                        return Err(InboxError::BatchEffect { key, source });
                    }
                }
                return Err(InboxError::Effect { key, source });
            }
        };
        self.still_open(key)?;
        let new = go.completed(result);
        self.stmts
            .store(at, key, &new, kept.as_ref().map(|k| &k.record))?;
        let crate::dedup::Stage::Completed { result, .. } = new.record.stage else {
            unreachable!("a delivery records a completed key")
        };
        Ok(Outcome::Applied(result))
    }

    /// The effect must leave the delivery's transaction open; if it committed or rolled back
    /// (or hit an error that made SQLite roll back), the key can no longer be recorded
    /// atomically.
    fn still_open(&self, key: &str) -> Result<(), InboxError> {
        if self.tx.is_autocommit() {
            return Err(InboxError::EffectEndedTransaction {
                key: key.to_owned(),
            });
        }
        Ok(())
    }
}

/// After a write guarded by `owner = lease.token`: done if it changed the row, else why the
/// lease does not own the key.
fn owned_if_changed(
    tx: &Transaction<'_>,
    at: At<'_>,
    lease: &Lease,
    changed: usize,
) -> Result<((), bool), InboxError> {
    if changed == 0 {
        let current = rows::load(tx, at, &lease.key)?;
        if let Some(e) = not_owner(lease, current.as_ref().map(|k| &k.record)) {
            return Err(e);
        }
    }
    Ok(((), true))
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

impl SqliteInbox {
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
            reading: self.opts.read_only,
        }
    }

    fn request<'k>(&self, key: &'k str, payload: &[u8]) -> Result<Request<'k>, InboxError> {
        Ok(Request::new(
            key,
            payload,
            self.opts.clock.now(),
            self.opts.retention,
        )?)
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction and commits if it returned `Ok(true)`.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, At<'_>) -> Result<(T, bool), InboxError>,
    ) -> Result<T, InboxError> {
        if self.opts.read_only {
            return Err(InboxError::ReadOnly {
                path: self.path.clone(),
            });
        }
        let at = At {
            path: &self.path,
            busy_timeout: self.opts.busy_timeout,
            reading: false,
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
        F: FnOnce(&mut SqliteTx<'_>) -> Result<Vec<u8>, BoxError>,
    {
        let req = self.request(key, payload)?;
        if !self.opts.read_only {
            if let Some(kept) = rows::load(&self.conn, self.at(), key)? {
                if let Err(answer) = req.admit_delivery(Some(&kept))? {
                    return Ok(answer);
                }
            }
        }
        self.write(|tx, at| {
            let outcome = Txn::new(tx, at)?.deliver(req, false, effect)?;
            // A duplicate wrote nothing: let the transaction roll back instead of committing.
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
        F: FnMut(&mut SqliteTx<'_>, &str, &[u8]) -> Result<Vec<u8>, BoxError>,
    {
        let (now, retention) = (self.opts.clock.now(), self.opts.retention);
        self.write(|tx, at| {
            let mut txn = Txn::new(tx, at)?;
            let mut out = Vec::with_capacity(items.len());
            for (key, payload) in items {
                let (key, payload) = (key.as_ref(), payload.as_ref());
                let one = Request::new(key, payload, now, retention)
                    .map_err(InboxError::from)
                    .and_then(|req| txn.deliver(req, true, |etx| effect(etx, key, payload)));
                match one {
                    Err(e) if !is_item_error(&e) => return Err(e),
                    one => out.push(one),
                }
            }
            Ok((out, true))
        })
    }

    fn claim(&mut self, key: &str, payload: &[u8], lease: Duration) -> Result<Claim, InboxError> {
        let req = self.request(key, payload)?;
        self.write(|tx, at| {
            let mut txn = Txn::new(tx, at)?;
            let kept = txn.stmts.load(at, key)?;
            let go = match req.admit_claim(kept.as_ref())? {
                Ok(go) => go,
                Err(answer) => return Ok((answer, false)),
            };
            // Tokens come from one counter for the whole file, so a token is never reused,
            // not even after its key was pruned and claimed again.
            let token = tx
                .prepare_cached(
                    "UPDATE meta SET value = value + 1 WHERE name = 'last_token' RETURNING value",
                )
                .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
                .map_err(|e| at.err(e))? as u64;
            let (new, lease) = go.claimed(key, token, lease);
            txn.stmts
                .store(at, key, &new, kept.as_ref().map(|k| &k.record))?;
            Ok((Claim::Acquired(lease), true))
        })
    }

    fn complete(&mut self, lease: &Lease, result: &[u8]) -> Result<(), InboxError> {
        let now = self.opts.clock.now().min(super::END_OF_TIME);
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
            owned_if_changed(tx, at, lease, changed)
        })
    }

    fn release(&mut self, lease: &Lease) -> Result<(), InboxError> {
        self.write(|tx, at| {
            let changed = tx
                .prepare_cached("DELETE FROM inbox WHERE key = ?1 AND state = 0 AND owner = ?2")
                .and_then(|mut s| s.execute(params![lease.key, lease.token as i64]))
                .map_err(|e| at.err(e))?;
            owned_if_changed(tx, at, lease, changed)
        })
    }

    fn get(&self, key: &str) -> Result<Option<Entry>, InboxError> {
        crate::dedup::validate_key(key)?;
        Ok(rows::load(&self.conn, self.at(), key)?.map(|k| k.into_entry(key.to_owned())))
    }

    fn entries(&self) -> Result<Vec<Entry>, InboxError> {
        let at = self.at();
        let mut stmt = self.conn.prepare(rows::SELECT_ALL).map_err(|e| at.err(e))?;
        let rows = stmt
            .query_map([], |row| rows::decode(row, at))
            .map_err(|e| at.err(e))?;
        let mut all = Vec::new();
        for row in rows {
            let (key, k) = row.map_err(|e| at.err(e))??;
            all.push(k.into_entry(key));
        }
        Ok(all)
    }

    fn prune(&mut self) -> Result<usize, InboxError> {
        let Retention::Window(window) = self.opts.retention else {
            return if !self.opts.read_only {
                Ok(0)
            } else {
                Err(InboxError::ReadOnly {
                    path: self.path.clone(),
                })
            };
        };
        let now = self.opts.clock.now().min(super::END_OF_TIME);
        let cutoff = now.saturating_sub(window) as i64;
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
