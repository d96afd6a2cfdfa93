//! [`MemoryStore`]: the decision core over a `HashMap` behind a mutex. Not durable; for tests,
//! the property harness and as the fastest possible baseline.

use super::step::{not_owner, Kept, Request};
use super::{BoxError, Claim, Clock, Entry, InboxError, InboxStore, Lease, Outcome, SystemClock};
use crate::dedup::{Millis, Retention, Stage, Token};
use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// An in-memory store. Clones (and [`InboxStore::try_clone`]) share the same state, like
/// several connections to one database; the mutex plays the role of the write transaction.
///
/// `T` is the caller's own data, kept beside the keys (`()` by default): a transactional effect
/// stages writes to it with [`MemoryTx::on_commit`], and they apply only if the delivery
/// commits — the in-memory counterpart of writing your own tables in SQLite's transaction.
///
/// ```
/// use onepie::inbox::{InboxStore, ManualClock, MemoryStore, Outcome};
///
/// let mut store = MemoryStore::with_data(Vec::<String>::new(), ManualClock::new(0));
/// for _ in 0..2 {
///     store.deliver("order-1", b"apple", |tx| {
///         tx.on_commit(|pies| pies.push("apple pie".to_string()));
///         Ok("baked".into())
///     }).unwrap();
/// }
/// assert_eq!(store.read(|pies| pies.len()), 1);
/// ```
pub struct MemoryStore<T = ()> {
    state: Arc<Mutex<State<T>>>,
    clock: Arc<dyn Clock>,
    retention: Retention,
}

impl<T> Clone for MemoryStore<T> {
    fn clone(&self) -> Self {
        MemoryStore {
            state: Arc::clone(&self.state),
            clock: Arc::clone(&self.clock),
            retention: self.retention,
        }
    }
}

impl<T> fmt::Debug for MemoryStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("clock", &self.clock)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

struct State<T> {
    keys: HashMap<String, Kept>,
    data: T,
    last_token: Token,
}

/// A write to the caller's data, applied when the delivery commits.
type Staged<T> = Box<dyn FnOnce(&mut T)>;

/// The transactional effect's view of a [`MemoryStore`].
pub struct MemoryTx<'t, T> {
    now: Millis,
    data: &'t T,
    staged: &'t mut Vec<Staged<T>>,
}

impl<T> MemoryTx<'_, T> {
    /// The store's clock at the start of this delivery.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// The caller's data as it was when this delivery (or its batch) began: staged writes
    /// show only after the commit.
    pub fn data(&self) -> &T {
        self.data
    }

    /// Stages a write to the caller's data; it applies if and only if the delivery commits.
    pub fn on_commit(&mut self, write: impl FnOnce(&mut T) + 'static) {
        self.staged.push(Box::new(write));
    }

    /// How many writes this delivery (or its batch, so far) has staged.
    pub fn staged(&self) -> usize {
        self.staged.len()
    }
}

impl<T> fmt::Debug for MemoryTx<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTx")
            .field("now", &self.now)
            .field("staged", &self.staged.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock, keeping keys forever.
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }

    /// An empty store on `clock` (e.g. a [`ManualClock`](super::ManualClock)).
    pub fn with_clock(clock: impl Clock + 'static) -> Self {
        Self::with_data((), clock)
    }
}

impl<T> MemoryStore<T> {
    /// An empty store on `clock` keeping `data` of the caller's beside the keys.
    pub fn with_data(data: T, clock: impl Clock + 'static) -> Self {
        MemoryStore {
            state: Arc::new(Mutex::new(State {
                keys: HashMap::new(),
                data,
                last_token: 0,
            })),
            clock: Arc::new(clock),
            retention: Retention::Forever,
        }
    }

    /// This store with a retention policy (the state stays shared with other handles).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Reads the caller's data (every committed write applied).
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.lock().data)
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panicking effect poisons the mutex but never leaves a half-applied delivery:
        // staged writes and the record are only applied after the effect returned.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn request<'k>(&self, key: &'k str, payload: &[u8]) -> Result<Request<'k>, InboxError> {
        Ok(Request::new(
            key,
            payload,
            self.clock.now(),
            self.retention,
        )?)
    }
}

/// How to undo one applied key of a batch: its previous record, if any.
type Undo = Vec<(String, Option<Kept>)>;

impl<T> State<T> {
    /// Decides one delivery and, if the decision runs the effect, runs it and records the key.
    /// Its staged writes join `staged`, and `undo` collects what to restore if the delivery
    /// (or its batch) does not complete.
    fn deliver_one(
        &mut self,
        req: Request<'_>,
        staged: &mut Vec<Staged<T>>,
        undo: &mut Undo,
        in_batch: bool,
        effect: impl FnOnce(&mut MemoryTx<'_, T>) -> Result<Vec<u8>, BoxError>,
    ) -> Result<Outcome, InboxError> {
        let State { keys, data, .. } = self;
        // One hash and one probe for the common fresh key.
        let slot = keys.entry(req.key.to_owned());
        let kept = match &slot {
            MapEntry::Occupied(o) => Some(o.get()),
            MapEntry::Vacant(_) => None,
        };
        let go = match req.admit_delivery(kept)? {
            Ok(go) => go,
            Err(answer) => return Ok(answer),
        };
        let before = staged.len();
        let mut tx = MemoryTx {
            now: req.now,
            data,
            staged,
        };
        let result = match effect(&mut tx) {
            Ok(result) => result,
            Err(source) => {
                let wrote = staged.len() > before;
                staged.truncate(before);
                let key = req.key.to_owned();
                // Same rule as SQLite, so one property test fits both stores: in a batch, an
                // effect that wrote and then failed fails the whole batch.
                return Err(if in_batch && wrote {
                    InboxError::BatchEffect { key, source }
                } else {
                    InboxError::Effect { key, source }
                });
            }
        };
        let new = go.completed(result.clone());
        let old = match slot {
            MapEntry::Occupied(mut o) => Some(std::mem::replace(o.get_mut(), new)),
            MapEntry::Vacant(v) => {
                v.insert(new);
                None
            }
        };
        undo.push((req.key.to_owned(), old));
        Ok(Outcome::Applied(result))
    }

    fn commit(&mut self, staged: Vec<Staged<T>>) {
        for write in staged {
            write(&mut self.data);
        }
    }
}

/// Undoes the keys a delivery or batch recorded unless it completed: on a batch-failing error,
/// and when an effect or a staged write panics, so it is all-or-nothing like a SQLite
/// transaction. (Staged writes not yet applied are simply dropped.)
struct Batch<'a, T> {
    state: &'a mut State<T>,
    undo: Undo,
    committed: bool,
}

impl<T> Drop for Batch<'_, T> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for (key, old) in self.undo.drain(..).rev() {
            match old {
                Some(kept) => {
                    self.state.keys.insert(key, kept);
                }
                None => {
                    self.state.keys.remove(&key);
                }
            }
        }
    }
}

fn entry(key: &str, kept: &Kept) -> Entry {
    kept.clone().into_entry(key.to_owned())
}

impl<T: Send + 'static> InboxStore for MemoryStore<T> {
    type Tx<'t> = MemoryTx<'t, T>;

    fn try_clone(&self) -> Result<Self, InboxError> {
        Ok(self.clone())
    }

    fn now(&self) -> Millis {
        self.clock.now()
    }

    fn retention(&self) -> Retention {
        self.retention
    }

    fn deliver<F>(&mut self, key: &str, payload: &[u8], effect: F) -> Result<Outcome, InboxError>
    where
        F: FnOnce(&mut MemoryTx<'_, T>) -> Result<Vec<u8>, BoxError>,
    {
        let req = self.request(key, payload)?;
        let mut state = self.lock();
        let mut staged = Vec::new();
        let mut guard = Batch {
            state: &mut state,
            undo: Vec::new(),
            committed: false,
        };
        let outcome = guard
            .state
            .deliver_one(req, &mut staged, &mut guard.undo, false, effect)?;
        guard.state.commit(staged);
        guard.committed = true;
        Ok(outcome)
    }

    fn deliver_batch<K, P, F>(
        &mut self,
        items: &[(K, P)],
        mut effect: F,
    ) -> Result<Vec<Result<Outcome, InboxError>>, InboxError>
    where
        K: AsRef<str>,
        P: AsRef<[u8]>,
        F: FnMut(&mut MemoryTx<'_, T>, &str, &[u8]) -> Result<Vec<u8>, BoxError>,
    {
        let now = self.clock.now();
        let mut state = self.lock();
        let mut staged = Vec::new();
        let mut batch = Batch {
            state: &mut state,
            undo: Vec::new(),
            committed: false,
        };
        let mut out = Vec::with_capacity(items.len());
        for (key, payload) in items {
            let (key, payload) = (key.as_ref(), payload.as_ref());
            let one = Request::new(key, payload, now, self.retention)
                .map_err(InboxError::from)
                .and_then(|req| {
                    batch
                        .state
                        .deliver_one(req, &mut staged, &mut batch.undo, true, |tx| {
                            effect(tx, key, payload)
                        })
                });
            match one {
                Err(e @ InboxError::BatchEffect { .. }) => return Err(e),
                one => out.push(one),
            }
        }
        batch.state.commit(staged);
        batch.committed = true;
        Ok(out)
    }

    fn claim(&mut self, key: &str, payload: &[u8], lease: Duration) -> Result<Claim, InboxError> {
        let req = self.request(key, payload)?;
        let mut state = self.lock();
        let go = match req.admit_claim(state.keys.get(key))? {
            Ok(go) => go,
            Err(answer) => return Ok(answer),
        };
        state.last_token += 1;
        let (kept, lease) = go.claimed(key, state.last_token, lease);
        state.keys.insert(key.to_owned(), kept);
        Ok(Claim::Acquired(lease))
    }

    fn complete(&mut self, lease: &Lease, result: &[u8]) -> Result<(), InboxError> {
        let now = self.clock.now();
        let mut state = self.lock();
        if let Some(e) = not_owner(lease, state.keys.get(&lease.key).map(|k| &k.record)) {
            return Err(e);
        }
        let kept = state.keys.get_mut(&lease.key).expect("owner checked above");
        kept.record.stage = Stage::Completed {
            result: result.to_vec(),
            at: now,
        };
        Ok(())
    }

    fn release(&mut self, lease: &Lease) -> Result<(), InboxError> {
        let mut state = self.lock();
        if let Some(e) = not_owner(lease, state.keys.get(&lease.key).map(|k| &k.record)) {
            return Err(e);
        }
        state.keys.remove(&lease.key);
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Entry>, InboxError> {
        crate::dedup::validate_key(key)?;
        Ok(self.lock().keys.get(key).map(|kept| entry(key, kept)))
    }

    fn entries(&self) -> Result<Vec<Entry>, InboxError> {
        let mut all: Vec<Entry> = self
            .lock()
            .keys
            .iter()
            .map(|(key, kept)| entry(key, kept))
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    fn prune(&mut self) -> Result<usize, InboxError> {
        let Retention::Window(window) = self.retention else {
            return Ok(0);
        };
        let cutoff = self.clock.now().saturating_sub(window);
        let mut state = self.lock();
        let before = state.keys.len();
        state.keys.retain(|_, kept| match kept.record.stage {
            Stage::Completed { at, .. } => at >= cutoff,
            Stage::InProgress { lease_until, .. } => lease_until >= cutoff,
        });
        Ok(before - state.keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{KeyError, ManualClock, NotOwnerReason};
    use super::*;

    /// The tests' effect: a pie in the store's own data, numbered from 1.
    type Pies = Vec<String>;

    fn record_pie(tx: &mut MemoryTx<'_, Pies>, key: &str) -> usize {
        let key = key.to_owned();
        tx.on_commit(move |pies| pies.push(key));
        tx.data().len() + tx.staged()
    }

    fn bake(key: &'static str) -> impl Fn(&mut MemoryTx<'_, Pies>) -> Result<Vec<u8>, BoxError> {
        move |tx| Ok(format!("pie #{}", record_pie(tx, key)).into())
    }

    fn store() -> (MemoryStore<Pies>, ManualClock) {
        let clock = ManualClock::new(1_000);
        (MemoryStore::with_data(Pies::new(), clock.clone()), clock)
    }

    fn pies(s: &MemoryStore<Pies>) -> Pies {
        s.read(Clone::clone)
    }

    #[test]
    fn apply_then_duplicate_then_conflict() {
        let (mut s, _) = store();
        assert_eq!(
            s.deliver("o1", b"apple", bake("o1")).unwrap(),
            Outcome::Applied("pie #1".into())
        );
        assert_eq!(
            s.deliver("o1", b"apple", bake("o1")).unwrap(),
            Outcome::Duplicate("pie #1".into())
        );
        let e = s.deliver("o1", b"plum", bake("o1")).unwrap_err();
        assert!(
            matches!(e, InboxError::Conflict { ref key, .. } if key == "o1"),
            "{e}"
        );
        assert_eq!(pies(&s).len(), 1);
    }

    #[test]
    fn bad_keys_are_refused_before_anything_runs() {
        let (mut s, _) = store();
        let e = s.deliver("", b"x", |_| panic!("no effect")).unwrap_err();
        assert!(matches!(e, InboxError::InvalidKey(KeyError::Empty)));
        let long = "k".repeat(256);
        let e = s.deliver(&long, b"x", |_| panic!("no effect")).unwrap_err();
        assert!(matches!(
            e,
            InboxError::InvalidKey(KeyError::TooLong { len: 256 })
        ));
        assert!(s.entries().unwrap().is_empty());
    }

    #[test]
    fn a_failed_effect_records_nothing_and_can_be_retried() {
        let (mut s, _) = store();
        let e = s
            .deliver("o1", b"apple", |tx| {
                record_pie(tx, "o1");
                Err("oven broke".into())
            })
            .unwrap_err();
        assert!(matches!(e, InboxError::Effect { .. }), "{e}");
        assert!(pies(&s).is_empty() && s.entries().unwrap().is_empty());
        assert!(s.deliver("o1", b"apple", bake("o1")).unwrap().is_applied());
        assert_eq!(pies(&s).iter().filter(|k| *k == "o1").count(), 1);
    }

    #[test]
    fn lease_claim_complete_and_stale_owner() {
        let (mut s, clock) = store();
        let Claim::Acquired(first) = s.claim("o1", b"apple", Duration::from_millis(100)).unwrap()
        else {
            panic!("fresh key must be acquired")
        };
        assert_eq!(first.took_over_from, None);
        assert!(matches!(
            s.claim("o1", b"apple", Duration::from_millis(100)),
            Err(InboxError::InProgress { owner, .. }) if owner == first.token
        ));
        clock.advance(100);
        let Claim::Acquired(second) = s.claim("o1", b"apple", Duration::from_millis(100)).unwrap()
        else {
            panic!("expired lease must be taken over")
        };
        assert!(second.token > first.token);
        assert_eq!(second.took_over_from, Some(first.token));
        let e = s.complete(&first, b"late").unwrap_err();
        assert!(matches!(
            e,
            InboxError::NotOwner { reason: NotOwnerReason::TakenOver { by }, .. } if by == second.token
        ));
        assert!(matches!(
            s.release(&first),
            Err(InboxError::NotOwner { .. })
        ));
        s.complete(&second, b"done").unwrap();
        assert!(matches!(
            s.complete(&second, b"again"),
            Err(InboxError::NotOwner {
                reason: NotOwnerReason::Completed,
                ..
            })
        ));
        assert_eq!(
            s.claim("o1", b"apple", Duration::from_millis(1)).unwrap(),
            Claim::Duplicate("done".into())
        );
    }

    #[test]
    fn release_frees_the_key() {
        let (mut s, _) = store();
        let Claim::Acquired(l) = s.claim("o1", b"apple", Duration::from_secs(1)).unwrap() else {
            panic!()
        };
        s.release(&l).unwrap();
        assert!(matches!(
            s.release(&l),
            Err(InboxError::NotOwner {
                reason: NotOwnerReason::NotClaimed,
                ..
            })
        ));
        assert!(s.deliver("o1", b"apple", bake("o1")).unwrap().is_applied());
    }

    #[test]
    fn retention_forgets_and_prunes() {
        let clock = ManualClock::new(0);
        let mut s = MemoryStore::with_data(Pies::new(), clock.clone())
            .with_retention(Retention::Window(50));
        assert!(s.deliver("o1", b"apple", bake("o1")).unwrap().is_applied());
        clock.set(50);
        assert!(!s.deliver("o1", b"apple", bake("o1")).unwrap().is_applied());
        assert_eq!(s.prune().unwrap(), 0);
        clock.set(51);
        assert_eq!(s.prune().unwrap(), 1);
        // After the window the redelivery is applied again: the documented caveat.
        assert!(s.deliver("o1", b"apple", bake("o1")).unwrap().is_applied());
        assert_eq!(pies(&s).iter().filter(|k| *k == "o1").count(), 2);
    }

    #[test]
    fn batch_handles_repeats_and_item_errors() {
        let (mut s, _) = store();
        let items = [
            ("a", "apple"),
            ("a", "apple"),
            ("a", "plum"),
            ("", "x"),
            ("b", "boom"),
        ];
        let out = s
            .deliver_batch(&items, |tx, key, payload| {
                if payload == b"boom" {
                    return Err("boom".into());
                }
                Ok(format!("pie #{}", record_pie(tx, key)).into())
            })
            .unwrap();
        assert_eq!(out[0].as_ref().unwrap(), &Outcome::Applied("pie #1".into()));
        assert_eq!(
            out[1].as_ref().unwrap(),
            &Outcome::Duplicate("pie #1".into())
        );
        assert!(matches!(out[2], Err(InboxError::Conflict { .. })));
        assert!(matches!(out[3], Err(InboxError::InvalidKey(_))));
        assert!(matches!(out[4], Err(InboxError::Effect { .. })));
        assert_eq!(pies(&s).len(), 1);
    }

    #[test]
    fn a_batch_is_all_or_nothing_when_an_effect_fails_after_writing_or_panics() {
        let (mut s, _) = store();
        s.deliver("old", b"apple", bake("old")).unwrap();
        let e = s
            .deliver_batch(&[("a", "1"), ("old", "apple"), ("b", "2")], |tx, key, _| {
                record_pie(tx, key);
                if key == "b" {
                    return Err("burnt".into());
                }
                Ok("ok".into())
            })
            .unwrap_err();
        assert!(
            matches!(&e, InboxError::BatchEffect { key, .. } if key == "b"),
            "{e}"
        );
        let keys: Vec<String> = s.entries().unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["old"]);
        assert_eq!(pies(&s).len(), 1);
        let mut s2 = s.clone();
        let crash = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _ = s2.deliver_batch(&[("a", "1"), ("b", "2")], |tx, key, _| {
                record_pie(tx, key);
                if key == "b" {
                    panic!("power cut");
                }
                Ok("ok".into())
            });
        }));
        assert!(crash.is_err());
        assert_eq!(s.entries().unwrap().len(), 1);
        assert_eq!(pies(&s).len(), 1);
    }

    #[test]
    fn threads_share_one_store_and_apply_once() {
        let (s, _) = store();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let mut s = s.try_clone().unwrap();
                std::thread::spawn(move || s.deliver("o1", b"apple", bake("o1")).unwrap())
            })
            .collect();
        let applied = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(Outcome::is_applied)
            .count();
        assert_eq!(applied, 1);
        assert_eq!(pies(&s).iter().filter(|k| *k == "o1").count(), 1);
    }

    #[test]
    fn a_claim_with_an_unbounded_lease_is_neither_pruned_nor_taken_over() {
        let clock = ManualClock::new(1_000);
        let mut s = MemoryStore::with_data(Pies::new(), clock.clone())
            .with_retention(Retention::Window(50));
        let Claim::Acquired(lease) = s.claim("o1", b"apple", Duration::MAX).unwrap() else {
            panic!("fresh key must be acquired")
        };
        assert_eq!(lease.lease_until, crate::inbox::END_OF_TIME);
        clock.advance(10_000_000);
        assert_eq!(s.prune().unwrap(), 0);
        assert!(matches!(
            s.deliver("o1", b"apple", bake("o1")),
            Err(InboxError::InProgress { .. })
        ));
        assert!(pies(&s).is_empty());
    }

    #[test]
    fn a_staged_write_that_panics_leaves_no_key_recorded() {
        let (mut s, _) = store();
        let mut s2 = s.clone();
        let crash = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _ = s2.deliver("o1", b"apple", |tx| {
                tx.on_commit(|_| panic!("disk gone"));
                Ok(b"ok".to_vec())
            });
        }));
        assert!(crash.is_err());
        assert!(
            s.entries().unwrap().is_empty(),
            "the key must not outlive its effect"
        );
        assert!(s.deliver("o1", b"apple", bake("o1")).unwrap().is_applied());
    }
}
