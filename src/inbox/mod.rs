//! The real deduplicating receiver: a durable inbox that applies each order's effect once.
//!
//! Every store here runs the same sans-IO decision core, [`crate::dedup::decide`], inside one
//! atomic step of its own (a SQLite `BEGIN IMMEDIATE` transaction, a PostgreSQL transaction
//! holding the key's row or unique-index lock, or a mutex), so the check-then-act race the
//! models show cannot happen. Two ways to use a store:
//!
//! - **Transactional effect** ([`InboxStore::deliver`], [`InboxStore::deliver_batch`]): the
//!   caller's effect runs inside the same transaction that records the key and the effect's
//!   result. A crash anywhere leaves both or neither, so this is the exactly-once path — as
//!   long as the effect's writes go through the transaction it is handed.
//! - **External effect with a lease** ([`InboxStore::claim`] → effect →
//!   [`InboxStore::complete`] or [`InboxStore::release`]): for effects outside the store (an
//!   HTTP call, an email). A claim carries a fencing [`Token`]; an expired claim can be taken
//!   over with a higher token, and a stale owner's `complete` is rejected. **A crash between
//!   the effect and `complete` means the effect can run again** after the lease ends: this path
//!   is at-least-once. To make it exactly-once the receiving side must check the fencing token
//!   (to refuse a stale owner) *and* remember the key (to refuse a second effect from a newer
//!   owner): the `lease-fencing` model shows a token check alone still lets a second pie in.
//!
//! Keys are remembered forever by default ([`Retention::Forever`]). With
//! [`Retention::Window`], keys completed longer ago than the window are forgotten (and
//! [`InboxStore::prune`] deletes them): **a redelivery after the window is applied again**.
//! Choose a window longer than any redelivery delay your producers can have, or keep forever
//! (about 80 bytes of disk per key in SQLite).
//!
//! Stores: `SqliteInbox` (cargo feature `sqlite`: one file, WAL, `synchronous=FULL` by
//! default), `PgInbox` (feature `postgres`: one database shared by a fleet) and
//! [`MemoryStore`] (for tests). Every store runs one delivery the same way: check
//! the key, fingerprint the payload, read the clock, ask the decision core what to do, and
//! persist the record it says to write (`step.rs`); the stores only load and store.
//!
//! A consumer whose effect is a write to its own table, in the delivery's transaction:
//!
//! ```
//! use onepie::inbox::{InboxStore, Outcome, SqliteInbox};
//!
//! # fn main() -> Result<(), onepie::inbox::InboxError> {
//! let dir = tempfile::tempdir().unwrap();
//! let mut inbox = SqliteInbox::open(dir.path().join("inbox.db"))?;
//! inbox.connection().execute_batch("CREATE TABLE IF NOT EXISTS pizzas (id TEXT, topping TEXT)").unwrap();
//!
//! // The same message, delivered twice (a redelivery after a lost ack).
//! for _ in 0..2 {
//!     let outcome = inbox.deliver("order-42", b"margherita", |tx| {
//!         tx.execute("INSERT INTO pizzas VALUES ('order-42', 'margherita')", [])?;
//!         Ok(b"baked".to_vec())
//!     })?;
//!     println!("{outcome}"); // "applied: baked", then "duplicate: baked"
//! }
//! let pizzas: i64 = inbox.connection().query_row("SELECT count(*) FROM pizzas", [], |r| r.get(0)).unwrap();
//! assert_eq!(pizzas, 1);
//! # Ok(()) }
//! ```
//!
//! Group commit: one transaction (one fsync) for many deliveries, a result per item after the
//! commit. The result is bytes: here the number of the row the effect wrote.
//!
//! ```
//! use onepie::inbox::{InboxError, InboxStore, Outcome, SqliteInbox};
//!
//! # fn main() -> Result<(), InboxError> {
//! # let dir = tempfile::tempdir().unwrap();
//! let mut inbox = SqliteInbox::open(dir.path().join("inbox.db"))?;
//! inbox.connection().execute_batch("CREATE TABLE pies (n INTEGER PRIMARY KEY, pie BLOB)").unwrap();
//! let batch = [("order-1", "apple"), ("order-2", "plum"), ("order-1", "apple"), ("order-1", "cherry")];
//! let results = inbox.deliver_batch(&batch, |tx, _key, payload| {
//!     tx.execute("INSERT INTO pies (pie) VALUES (?1)", [payload])?;
//!     Ok(format!("pie #{}", tx.last_insert_rowid()).into())
//! })?;
//! assert_eq!(results[0].as_ref().unwrap(), &Outcome::Applied("pie #1".into()));
//! assert_eq!(results[1].as_ref().unwrap(), &Outcome::Applied("pie #2".into()));
//! assert_eq!(results[2].as_ref().unwrap(), &Outcome::Duplicate("pie #1".into()));
//! assert!(matches!(results[3], Err(InboxError::Conflict { .. }))); // same key, other payload
//! # Ok(()) }
//! ```
//!
//! Retention, with an injected clock:
//!
//! ```
//! use onepie::inbox::{InboxStore, ManualClock, Retention, SqliteInbox, SqliteOptions};
//!
//! # fn main() -> Result<(), onepie::inbox::InboxError> {
//! # let dir = tempfile::tempdir().unwrap();
//! let clock = ManualClock::new(0);
//! let hour = 3_600_000;
//! let opts = SqliteOptions::default().with_clock(clock.clone()).with_retention(Retention::Window(hour));
//! let mut inbox = SqliteInbox::open_with(dir.path().join("inbox.db"), opts)?;
//! assert!(inbox.deliver("order-1", b"apple", |_| Ok("ok".into()))?.is_applied());
//! clock.advance(hour);
//! assert!(!inbox.deliver("order-1", b"apple", |_| Ok("ok".into()))?.is_applied());
//! clock.advance(1);
//! assert_eq!(inbox.prune()?, 1);
//! // Past the window the key is forgotten: the redelivery is applied AGAIN.
//! assert!(inbox.deliver("order-1", b"apple", |_| Ok("ok".into()))?.is_applied());
//! # Ok(()) }
//! ```

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod step;

pub use crate::dedup::{
    Fingerprint, KeyError, Millis, NotOwnerReason, Record, Retention, Stage, Token, MAX_KEY_LEN,
};
pub use memory::{MemoryStore, MemoryTx};
#[cfg(feature = "postgres")]
pub use postgres::{PgInbox, PgOptions, PgTx, PG_SCHEMA_VERSION};
#[cfg(feature = "sqlite")]
pub use sqlite::{
    SqliteInbox, SqliteOptions, SqliteTx, Synchronous, APPLICATION_ID, SCHEMA_VERSION,
};

use serde::Serialize;
use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What an effect may fail with: any error, boxed. `?` converts into it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The latest time any store can hold (`i64::MAX` milliseconds: SQLite's and PostgreSQL's
/// 64-bit integers are signed). Leases and clock readings beyond it are clamped to it, so a
/// lease of [`Duration::MAX`] is "until the end of time", never a negative number.
pub const END_OF_TIME: Millis = i64::MAX as Millis;

/// The receiver's clock, in milliseconds. Injectable so tests can expire leases and retention
/// windows without sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time in milliseconds.
    fn now(&self) -> Millis;
}

/// Wall-clock time: milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        // A clock before 1970 is a misconfigured host; treat it as time zero rather than panic.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as Millis)
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// ```
/// use onepie::inbox::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// let shared = clock.clone();
/// clock.advance(500);
/// assert_eq!(shared.now(), 1_500);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `start` milliseconds.
    pub fn new(start: Millis) -> Self {
        ManualClock(Arc::new(AtomicU64::new(start)))
    }

    /// Sets the time to `now`.
    pub fn set(&self, now: Millis) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: Millis) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a delivery did. The result is the bytes the effect returned: whatever the caller needs
/// to answer a redelivery (a receipt, a serialised response). `"text".into()` makes one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "outcome", content = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// The effect ran now (the key was new, expired, or taken over); its result is stored.
    Applied(Vec<u8>),
    /// The key was already completed with the same payload: nothing ran; the stored result.
    Duplicate(Vec<u8>),
}

impl Outcome {
    /// The effect's result, stored or fresh.
    pub fn result(&self) -> &[u8] {
        match self {
            Outcome::Applied(r) | Outcome::Duplicate(r) => r,
        }
    }

    /// The result as text, with any bytes that are not UTF-8 replaced by `�`.
    pub fn result_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.result())
    }

    /// The effect's result, by value.
    pub fn into_result(self) -> Vec<u8> {
        match self {
            Outcome::Applied(r) | Outcome::Duplicate(r) => r,
        }
    }

    /// True when the effect ran during this delivery.
    pub fn is_applied(&self) -> bool {
        matches!(self, Outcome::Applied(_))
    }

    /// `"applied"` or `"duplicate"`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied(_) => "applied",
            Outcome::Duplicate(_) => "duplicate",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.label(), self.result_text())
    }
}

/// The answer to [`InboxStore::claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the key until `lease.lease_until`: run the effect, then
    /// [`InboxStore::complete`] (or [`InboxStore::release`] if it did not happen).
    Acquired(Lease),
    /// The key was already completed with the same payload: do nothing; the stored result.
    Duplicate(Vec<u8>),
}

/// A claim on a key, held by a fencing token.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Lease {
    pub key: String,
    /// The fencing token: unique in the store and higher than every token issued before it.
    /// The effect's target should refuse tokens lower than one it has seen, and remember the
    /// key too: a token check alone cannot refuse a newer owner's repeat of a done effect.
    /// Pass it to whatever the effect talks to, so that side can reject stale owners.
    pub token: Token,
    /// The lease ends at this time (at most [`END_OF_TIME`]); after it, another worker may
    /// take the key over.
    pub lease_until: Millis,
    /// Set when this claim took over an expired lease: that owner's effect may already have
    /// run, so the effect's target must be checked (by token) before acting again.
    pub took_over_from: Option<Token>,
}

/// What a store remembers about one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Entry {
    pub key: String,
    pub record: Record<Vec<u8>>,
    /// When the key was first applied or claimed (in this retention life).
    pub created_at: Millis,
}

/// A store that deduplicates deliveries with [`crate::dedup::decide`]: in memory (for tests),
/// SQLite (feature `sqlite`) or PostgreSQL (feature `postgres`). One value is one handle (one connection); use [`try_clone`] to get another
/// handle on the same store for another thread.
///
/// [`try_clone`]: InboxStore::try_clone
pub trait InboxStore: Sized + Send {
    /// What a transactional effect receives. Everything written through it commits or rolls
    /// back together with the key.
    type Tx<'t>;

    /// Another handle on the same store (a new connection to the same file or database, or a
    /// shared in-memory state), for another thread.
    fn try_clone(&self) -> Result<Self, InboxError>;

    /// The store's clock reading now.
    fn now(&self) -> Millis;

    /// How long completed keys are remembered.
    fn retention(&self) -> Retention;

    /// Delivers `payload` under `key`: if the key is new (or expired, or its lease was
    /// abandoned) runs `effect` and records the key with the effect's result in one
    /// transaction; if it was already completed with the same payload, returns the stored
    /// result without running anything.
    ///
    /// Errors, each with nothing recorded: [`InboxError::InvalidKey`], [`InboxError::Conflict`]
    /// (same key, different payload), [`InboxError::InProgress`] (a live lease), and
    /// [`InboxError::Effect`] when the effect returns `Err` (its writes are rolled back too,
    /// so the delivery can simply be retried); plus the store's own faults.
    fn deliver<F>(&mut self, key: &str, payload: &[u8], effect: F) -> Result<Outcome, InboxError>
    where
        F: FnOnce(&mut Self::Tx<'_>) -> Result<Vec<u8>, BoxError>;

    /// Group commit: delivers every `(key, payload)` in **one** transaction and returns a
    /// result per item, in order, only after that transaction committed.
    ///
    /// Items are decided in order, so a key that appears twice is applied once: the second
    /// occurrence is a [`Outcome::Duplicate`] (or a [`InboxError::Conflict`] if its payload
    /// differs). Item errors — bad key, conflict, in progress, or an effect that returned
    /// `Err` *before writing anything* — fail only their item. The outer `Err` fails the whole
    /// batch, and then nothing from it is recorded: a store fault, or an effect that wrote and
    /// then failed ([`InboxError::BatchEffect`]: undoing one item's writes would take a
    /// savepoint per item, which costs about half the batch's throughput in SQLite). "Wrote"
    /// means changed rows, as SQLite counts them; schema changes are not noticed. `PgInbox`
    /// runs each effect in a savepoint, so there any failing effect fails only its item.
    fn deliver_batch<K, P, F>(
        &mut self,
        items: &[(K, P)],
        effect: F,
    ) -> Result<Vec<Result<Outcome, InboxError>>, InboxError>
    where
        K: AsRef<str>,
        P: AsRef<[u8]>,
        F: FnMut(&mut Self::Tx<'_>, &str, &[u8]) -> Result<Vec<u8>, BoxError>;

    /// Claims `key` for an effect outside the store, for `lease` from now (any length: a lease
    /// past [`END_OF_TIME`] ends there). An expired claim is taken over with a new, higher
    /// token (compare-and-swap on the old token).
    ///
    /// Errors: [`InboxError::InvalidKey`], [`InboxError::Conflict`], [`InboxError::InProgress`].
    fn claim(&mut self, key: &str, payload: &[u8], lease: Duration) -> Result<Claim, InboxError>;

    /// Records `result` for a claimed key. Succeeds while `lease.token` still owns the key,
    /// even after its lease ended if no one took it over; otherwise [`InboxError::NotOwner`]
    /// and nothing is recorded.
    fn complete(&mut self, lease: &Lease, result: &[u8]) -> Result<(), InboxError>;

    /// Gives the key up (the effect did not happen), so the next delivery applies it.
    /// Rejected with [`InboxError::NotOwner`] unless `lease.token` still owns the key.
    fn release(&mut self, lease: &Lease) -> Result<(), InboxError>;

    /// What the store remembers about `key`.
    fn get(&self, key: &str) -> Result<Option<Entry>, InboxError>;

    /// Every remembered key once, ordered by key.
    fn entries(&self) -> Result<Vec<Entry>, InboxError>;

    /// Deletes keys completed longer ago than the retention window, and claims whose lease
    /// ended longer ago than it; returns how many. Does nothing under [`Retention::Forever`].
    /// Expired keys are already treated as new before they are pruned; a live claim is never
    /// pruned.
    fn prune(&mut self) -> Result<usize, InboxError>;
}

/// Everything that can go wrong, each with what to do about it. Nothing of the failed
/// delivery was recorded — with two exceptions the messages say: after
/// [`InboxError::ConnectionLost`] the delivery may have committed (retry: it is then a
/// duplicate), and after [`InboxError::EffectEndedTransaction`] whatever the effect wrote before
/// ending the transaction stays (the key does not).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    #[error(transparent)]
    InvalidKey(#[from] KeyError),

    #[error("key {key:?} was already used for a different payload (stored {stored:?}, this one {incoming:?}); nothing was applied: give each distinct order its own key")]
    Conflict {
        key: String,
        stored: Fingerprint,
        incoming: Fingerprint,
    },

    #[error("key {key:?} is being processed by token {owner} for another {retry_after:?}; nothing was applied: retry after the lease ends")]
    InProgress {
        key: String,
        owner: Token,
        lease_until: Millis,
        retry_after: Duration,
    },

    #[error("the effect for key {key:?} failed, so nothing was recorded and the delivery can be retried: {source}")]
    Effect {
        key: String,
        #[source]
        source: BoxError,
    },

    #[error("the effect for key {key:?} failed after writing through the batch's transaction, which cannot be undone for one item, so the whole batch was rolled back and nothing was recorded: retry the batch without it, or fail before writing: {source}")]
    BatchEffect {
        key: String,
        #[source]
        source: BoxError,
    },

    #[error("the effect for key {key:?} ended the delivery's transaction (COMMIT, ROLLBACK, or an error that made SQLite roll back), so the key was not recorded: run effects only through the transaction they are given")]
    EffectEndedTransaction { key: String },

    #[error("token {token} does not own key {key:?} ({reason}), so its result was not recorded; the effect it guarded may run again elsewhere: make its target check the token")]
    NotOwner {
        key: String,
        token: Token,
        reason: NotOwnerReason,
    },

    #[error("{} does not exist, and this handle may not create an inbox", path.display())]
    Missing { path: PathBuf },

    #[error("{} is not an onepie inbox ({why}); it was left untouched: pass an inbox file or a new path", path.display())]
    NotAnInbox { path: PathBuf, why: String },

    #[error("{} has inbox schema version {found}, newer than the version {supported} this onepie understands; it was left untouched: upgrade onepie", path.display())]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    #[error("{} stayed locked by other writers for {waited:?}; nothing was recorded: retry, or raise the busy timeout", path.display())]
    Locked { path: PathBuf, waited: Duration },

    #[error("{} is read-only, so nothing was recorded: check the permissions of the file and its directory (SQLite also writes -wal and -shm files next to it)", path.display())]
    ReadOnly { path: PathBuf },

    #[error("cannot read {}: {why}", path.display())]
    Unreadable { path: PathBuf, why: String },

    #[error("the disk holding {} is full, so nothing was recorded: free some space and retry", path.display())]
    DiskFull { path: PathBuf },

    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: BoxError,
    },

    #[error("{} is damaged ({detail}): restore it from a backup or move it aside", path.display())]
    Corrupt { path: PathBuf, detail: String },

    #[error("lost the connection to {store} ({source}); the delivery may or may not have committed: retry it, and a committed one is answered as a duplicate")]
    ConnectionLost {
        store: String,
        #[source]
        source: BoxError,
    },

    #[error("{store} rolled the transaction back to keep concurrent ones apart ({source}); nothing was recorded: retry")]
    Serialization {
        store: String,
        #[source]
        source: BoxError,
    },

    #[error("the inbox {} failed: {source}", path.display())]
    Storage {
        path: PathBuf,
        #[source]
        source: BoxError,
    },
}

impl InboxError {
    /// True for errors that may go away by themselves: retry the same delivery later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            InboxError::InProgress { .. }
                | InboxError::Locked { .. }
                | InboxError::Effect { .. }
                | InboxError::ConnectionLost { .. }
                | InboxError::Serialization { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_accessors() {
        let a = Outcome::Applied("pie #1".into());
        let d = Outcome::Duplicate("pie #1".into());
        assert!(a.is_applied() && !d.is_applied());
        assert_eq!((a.label(), d.label()), ("applied", "duplicate"));
        assert_eq!(a.to_string(), "applied: pie #1");
        assert_eq!(d.result(), b"pie #1");
        assert_eq!(d.into_result(), b"pie #1");
        let binary = Outcome::Applied(vec![b'o', b'k', 0xff]);
        assert_eq!(binary.to_string(), "applied: ok\u{fffd}");
    }

    #[test]
    fn manual_clock_is_shared_and_settable() {
        let c = ManualClock::new(5);
        let c2 = c.clone();
        c.advance(10);
        assert_eq!(c2.now(), 15);
        c2.set(3);
        assert_eq!(c.now(), 3);
        assert!(SystemClock.now() > 1_600_000_000_000);
    }

    #[test]
    fn every_message_is_one_line_and_retryability_is_classified() {
        let path = PathBuf::from("/tmp/x.db");
        let errors = [
            InboxError::from(KeyError::Empty),
            InboxError::InProgress {
                key: "k".into(),
                owner: 1,
                lease_until: 2,
                retry_after: Duration::from_millis(2),
            },
            InboxError::Locked {
                path: path.clone(),
                waited: Duration::from_secs(5),
            },
            InboxError::NotOwner {
                key: "k".into(),
                token: 1,
                reason: NotOwnerReason::TakenOver { by: 2 },
            },
            InboxError::ReadOnly { path },
        ];
        for e in &errors {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let retryable: Vec<bool> = errors.iter().map(InboxError::is_retryable).collect();
        assert_eq!(retryable, [false, true, true, false, false]);
    }
}
