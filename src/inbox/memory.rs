//! [`MemoryStore`]: the decision core over a `HashMap` behind a mutex. Not durable; for tests,
//! the property harness and as the fastest possible baseline.

use super::{
    admit, lease_millis, not_owner, Admission, BoxError, Claim, Clock, EffectLog, Entry,
    InboxError, InboxStore, Lease, Outcome, Pie, SystemClock,
};
use crate::dedup::{validate_key, Fingerprint, Millis, Record, Retention, Stage, Token};
use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// An in-memory store. Clones (and [`InboxStore::try_clone`]) share the same state, like
/// several connections to one database; the mutex plays the role of the write transaction.
///
/// ```
/// use onepie::inbox::{EffectLog, InboxStore, ManualClock, MemoryStore, Outcome};
///
/// let clock = ManualClock::new(0);
/// let mut store = MemoryStore::with_clock(clock.clone());
/// let bake = |tx: &mut onepie::inbox::MemoryTx| -> Result<String, onepie::inbox::BoxError> {
///     Ok(format!("pie #{}", tx.record_pie("order-1", "apple")?))
/// };
/// assert_eq!(store.deliver("order-1", b"apple", bake).unwrap(), Outcome::Applied("pie #1".into()));
/// assert_eq!(store.deliver("order-1", b"apple", bake).unwrap(), Outcome::Duplicate("pie #1".into()));
/// assert_eq!(store.pie_counts().unwrap()["order-1"], 1);
/// ```
#[derive(Clone, Debug)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
    retention: Retention,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<String, Slot>,
    pies: Vec<Pie>,
    last_token: Token,
}

#[derive(Debug)]
struct Slot {
    record: Record<String>,
    created_at: Millis,
}

/// The transactional effect's view of a [`MemoryStore`]: pies recorded here are kept only if
/// the effect returns `Ok`.
#[derive(Debug)]
pub struct MemoryTx {
    now: Millis,
    next_number: u64,
    staged: Vec<Pie>,
}

impl MemoryTx {
    /// The store's clock at the start of this delivery.
    pub fn now(&self) -> Millis {
        self.now
    }
}

impl EffectLog for MemoryTx {
    fn record_pie(&mut self, key: &str, pie: &str) -> Result<u64, InboxError> {
        let number = self.next_number + self.staged.len() as u64;
        self.staged.push(Pie {
            number,
            key: key.to_owned(),
            pie: pie.to_owned(),
            at: self.now,
        });
        Ok(number)
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
        MemoryStore {
            state: Arc::default(),
            clock: Arc::new(clock),
            retention: Retention::Forever,
        }
    }

    /// This store with a retention policy (the state stays shared with other handles).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking effect poisons the mutex but never leaves a half-applied delivery:
        // staged pies and the record are only written after the effect returned.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// How to undo one applied key of a batch: its previous slot, if any.
type Undo = Vec<(String, Option<Slot>)>;

impl State {
    /// Decides one delivery and, if the decision runs the effect, runs it and records the key.
    /// In a batch, `undo` collects what to restore if the batch fails.
    fn deliver_one(
        &mut self,
        key: &str,
        fingerprint: Fingerprint,
        retention: Retention,
        now: Millis,
        undo: Option<&mut Undo>,
        effect: impl FnOnce(&mut MemoryTx) -> Result<String, BoxError>,
    ) -> Result<Outcome, InboxError> {
        let State { keys, pies, .. } = self;
        // One hash and one probe for the common fresh key; the key is copied up front, as
        // `HashSet::insert(key.to_owned())` would.
        let slot = keys.entry(key.to_owned());
        let existing = match &slot {
            MapEntry::Occupied(o) => Some(o.get()),
            MapEntry::Vacant(_) => None,
        };
        let created_at = match admit(
            existing.map(|s| (&s.record, s.created_at)),
            key,
            fingerprint,
            retention,
            now,
        )? {
            Admission::Done(result) => return Ok(Outcome::Duplicate(result)),
            Admission::Go { created_at, .. } => created_at,
        };
        let mut tx = MemoryTx {
            now,
            next_number: pies.len() as u64 + 1,
            staged: Vec::new(),
        };
        let result = match effect(&mut tx) {
            Ok(result) => result,
            // Same rule as SQLite, so one property test fits both stores: in a batch, an
            // effect that wrote and then failed fails the whole batch.
            Err(source) if undo.is_some() && !tx.staged.is_empty() => {
                return Err(InboxError::BatchEffect {
                    key: key.to_owned(),
                    source,
                })
            }
            Err(source) => {
                return Err(InboxError::Effect {
                    key: key.to_owned(),
                    source,
                })
            }
        };
        pies.append(&mut tx.staged);
        let new = Slot {
            record: Record::completed(fingerprint, result.clone(), now),
            created_at,
        };
        let old = match slot {
            MapEntry::Occupied(mut o) => Some(std::mem::replace(o.get_mut(), new)),
            MapEntry::Vacant(v) => {
                v.insert(new);
                None
            }
        };
        if let Some(undo) = undo {
            undo.push((key.to_owned(), old));
        }
        Ok(Outcome::Applied(result))
    }
}

/// Undoes a batch's changes unless it completed: on a batch-failing error and when an effect
/// panics, so the batch is all-or-nothing like a SQLite transaction.
struct Batch<'a> {
    state: &'a mut State,
    undo: Undo,
    pies_before: usize,
    committed: bool,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for (key, old) in self.undo.drain(..).rev() {
            match old {
                Some(slot) => {
                    self.state.keys.insert(key, slot);
                }
                None => {
                    self.state.keys.remove(&key);
                }
            }
        }
        self.state.pies.truncate(self.pies_before);
    }
}

fn entry(key: &str, slot: &Slot) -> Entry {
    Entry {
        key: key.to_owned(),
        record: slot.record.clone(),
        created_at: slot.created_at,
    }
}

impl InboxStore for MemoryStore {
    type Tx<'t> = MemoryTx;

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
        F: FnOnce(&mut MemoryTx) -> Result<String, BoxError>,
    {
        validate_key(key)?;
        let fingerprint = Fingerprint::of(payload);
        let now = self.clock.now();
        self.lock()
            .deliver_one(key, fingerprint, self.retention, now, None, effect)
    }

    fn deliver_batch<K, P, F>(
        &mut self,
        items: &[(K, P)],
        mut effect: F,
    ) -> Result<Vec<Result<Outcome, InboxError>>, InboxError>
    where
        K: AsRef<str>,
        P: AsRef<[u8]>,
        F: FnMut(&mut MemoryTx, &str, &[u8]) -> Result<String, BoxError>,
    {
        let now = self.clock.now();
        let mut state = self.lock();
        let pies_before = state.pies.len();
        let mut batch = Batch {
            state: &mut state,
            undo: Vec::new(),
            pies_before,
            committed: false,
        };
        let mut out = Vec::with_capacity(items.len());
        for (key, payload) in items {
            let (key, payload) = (key.as_ref(), payload.as_ref());
            let one = validate_key(key).map_err(InboxError::from).and_then(|()| {
                let fingerprint = Fingerprint::of(payload);
                batch.state.deliver_one(
                    key,
                    fingerprint,
                    self.retention,
                    now,
                    Some(&mut batch.undo),
                    |tx| effect(tx, key, payload),
                )
            });
            match one {
                Err(e @ InboxError::BatchEffect { .. }) => return Err(e),
                one => out.push(one),
            }
        }
        batch.committed = true;
        Ok(out)
    }

    fn claim(&mut self, key: &str, payload: &[u8], lease: Duration) -> Result<Claim, InboxError> {
        validate_key(key)?;
        let fingerprint = Fingerprint::of(payload);
        let now = self.clock.now();
        let mut state = self.lock();
        let slot = state.keys.get(key);
        let (took_over_from, created_at) = match admit(
            slot.map(|s| (&s.record, s.created_at)),
            key,
            fingerprint,
            self.retention,
            now,
        )? {
            Admission::Done(result) => return Ok(Claim::Duplicate(result)),
            Admission::Go {
                created_at,
                took_over_from,
            } => (took_over_from, created_at),
        };
        state.last_token += 1;
        let token = state.last_token;
        let lease_until = now.saturating_add(lease_millis(lease));
        state.keys.insert(
            key.to_owned(),
            Slot {
                record: Record::claimed(fingerprint, token, lease_until),
                created_at,
            },
        );
        Ok(Claim::Acquired(Lease {
            key: key.to_owned(),
            token,
            lease_until,
            took_over_from,
        }))
    }

    fn complete(&mut self, lease: &Lease, result: &str) -> Result<(), InboxError> {
        let now = self.clock.now();
        let mut state = self.lock();
        if let Some(e) = not_owner(lease, state.keys.get(&lease.key).map(|s| &s.record)) {
            return Err(e);
        }
        let slot = state.keys.get_mut(&lease.key).expect("owner checked above");
        slot.record.stage = Stage::Completed {
            result: result.to_owned(),
            at: now,
        };
        Ok(())
    }

    fn release(&mut self, lease: &Lease) -> Result<(), InboxError> {
        let mut state = self.lock();
        if let Some(e) = not_owner(lease, state.keys.get(&lease.key).map(|s| &s.record)) {
            return Err(e);
        }
        state.keys.remove(&lease.key);
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Entry>, InboxError> {
        validate_key(key)?;
        Ok(self.lock().keys.get(key).map(|slot| entry(key, slot)))
    }

    fn entries(&self) -> Result<Vec<Entry>, InboxError> {
        let mut all: Vec<Entry> = self
            .lock()
            .keys
            .iter()
            .map(|(key, slot)| entry(key, slot))
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    fn pies(&self) -> Result<Vec<Pie>, InboxError> {
        Ok(self.lock().pies.clone())
    }

    fn prune(&mut self) -> Result<usize, InboxError> {
        let Retention::Window(window) = self.retention else {
            return Ok(0);
        };
        let cutoff = self.clock.now().saturating_sub(window);
        let mut state = self.lock();
        let before = state.keys.len();
        state.keys.retain(|_, slot| match slot.record.stage {
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

    fn bake(key: &'static str) -> impl Fn(&mut MemoryTx) -> Result<String, BoxError> {
        move |tx| Ok(format!("pie #{}", tx.record_pie(key, "apple")?))
    }

    fn store() -> (MemoryStore, ManualClock) {
        let clock = ManualClock::new(1_000);
        (MemoryStore::with_clock(clock.clone()), clock)
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
        assert_eq!(s.pies().unwrap().len(), 1);
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
                tx.record_pie("o1", "half-baked")?;
                Err("oven broke".into())
            })
            .unwrap_err();
        assert!(matches!(e, InboxError::Effect { .. }), "{e}");
        assert!(s.pies().unwrap().is_empty() && s.entries().unwrap().is_empty());
        assert!(s.deliver("o1", b"apple", bake("o1")).unwrap().is_applied());
        assert_eq!(s.pie_counts().unwrap()["o1"], 1);
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
        let e = s.complete(&first, "late").unwrap_err();
        assert!(matches!(
            e,
            InboxError::NotOwner { reason: NotOwnerReason::TakenOver { by }, .. } if by == second.token
        ));
        assert!(matches!(
            s.release(&first),
            Err(InboxError::NotOwner { .. })
        ));
        s.complete(&second, "done").unwrap();
        assert!(matches!(
            s.complete(&second, "again"),
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
        let mut s = MemoryStore::with_clock(clock.clone()).with_retention(Retention::Window(50));
        assert!(s.deliver("o1", b"apple", bake("o1")).unwrap().is_applied());
        clock.set(50);
        assert!(!s.deliver("o1", b"apple", bake("o1")).unwrap().is_applied());
        assert_eq!(s.prune().unwrap(), 0);
        clock.set(51);
        assert_eq!(s.prune().unwrap(), 1);
        // After the window the redelivery is applied again: the documented caveat.
        assert!(s.deliver("o1", b"apple", bake("o1")).unwrap().is_applied());
        assert_eq!(s.pie_counts().unwrap()["o1"], 2);
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
                Ok(format!("pie #{}", tx.record_pie(key, "p")?))
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
        assert_eq!(s.pies().unwrap().len(), 1);
    }

    #[test]
    fn a_batch_is_all_or_nothing_when_an_effect_fails_after_writing_or_panics() {
        let (mut s, _) = store();
        s.deliver("old", b"apple", bake("old")).unwrap();
        let e = s
            .deliver_batch(&[("a", "1"), ("old", "apple"), ("b", "2")], |tx, key, _| {
                tx.record_pie(key, "p")?;
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
        assert_eq!(s.pies().unwrap().len(), 1);
        let mut s2 = s.clone();
        let crash = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _ = s2.deliver_batch(&[("a", "1"), ("b", "2")], |tx, key, _| {
                tx.record_pie(key, "p")?;
                if key == "b" {
                    panic!("power cut");
                }
                Ok("ok".into())
            });
        }));
        assert!(crash.is_err());
        assert_eq!(s.entries().unwrap().len(), 1);
        assert_eq!(s.pies().unwrap().len(), 1);
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
        assert_eq!(s.pie_counts().unwrap()["o1"], 1);
    }
}
