//! Deliberately broken receivers, built only for tests: each is one of the broken designs the
//! models show violated, and the harness must catch each one.

use onepie::inbox::{Claim, InboxError, Lease, ManualClock, Outcome, Retention};
use onepie::testkit::harness::{Fault, Receiver};
use onepie::testkit::PieStore;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

/// The world outside the receiver: pies already handed over stay handed over, whatever the
/// receiver forgets.
#[derive(Clone, Default)]
struct Pies(Arc<Mutex<BTreeMap<String, u32>>>);

impl Pies {
    fn bake(&self, key: &str) {
        *self.0.lock().unwrap().entry(key.to_string()).or_insert(0) += 1;
    }
    fn counts(&self) -> BTreeMap<String, u32> {
        self.0.lock().unwrap().clone()
    }
}

fn unsupported() -> InboxError {
    InboxError::InvalidKey(onepie::dedup::KeyError::Empty)
}

/// Shared plumbing: these receivers have no lease path and no clock-driven behaviour.
macro_rules! no_leases {
    () => {
        fn claim(&mut self, _: &str, _: &str, _: Duration) -> Result<Claim, InboxError> {
            Err(unsupported())
        }
        fn complete(&mut self, _: &Lease, _: &str) -> Result<(), InboxError> {
            Err(unsupported())
        }
        fn release(&mut self, _: &Lease) -> Result<(), InboxError> {
            Err(unsupported())
        }
        fn prune(&mut self) -> Result<usize, InboxError> {
            Ok(0)
        }
        fn wait(&mut self, _: u64) {}
    };
}

/// Looks the key up, then — in a separate step — bakes and records it. Two deliveries that
/// both look before either records both bake.
#[derive(Default)]
pub struct CheckThenAct {
    seen: Arc<Mutex<BTreeSet<String>>>,
    pies: Pies,
}

impl CheckThenAct {
    /// The first step: is the key known?
    pub fn look(&self, key: &str) -> bool {
        self.seen.lock().unwrap().contains(key)
    }

    /// The second step, on what the first one saw: bake and record, or turn away.
    pub fn act(&self, key: &str, seen_before: bool) -> Result<Outcome, InboxError> {
        if seen_before {
            return Ok(Outcome::Duplicate(key.into()));
        }
        self.pies.bake(key);
        self.seen.lock().unwrap().insert(key.to_string());
        Ok(Outcome::Applied(key.into()))
    }
}

impl Receiver for CheckThenAct {
    fn deliver(&mut self, key: &str, _: &str, fault: Fault) -> Result<Outcome, InboxError> {
        let seen_before = self.look(key);
        if fault != Fault::None {
            return Err(unsupported());
        }
        self.act(key, seen_before)
    }
    fn deliver_concurrently(
        &mut self,
        key: &str,
        _: &str,
        threads: usize,
    ) -> Vec<Result<Outcome, InboxError>> {
        // Every thread checks, then every thread acts: the interleaving the race allows.
        let barrier = Barrier::new(threads);
        let this = &*self;
        std::thread::scope(|s| {
            let joins: Vec<_> = (0..threads)
                .map(|_| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let seen_before = this.look(key);
                        barrier.wait();
                        this.act(key, seen_before)
                    })
                })
                .collect();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        })
    }
    fn crash_and_reopen(&mut self) -> Result<(), InboxError> {
        Ok(())
    }
    fn pie_counts(&self) -> Result<BTreeMap<String, u32>, InboxError> {
        Ok(self.pies.counts())
    }
    no_leases!();
}

/// Remembers order IDs in volatile memory only: a restart forgets them.
#[derive(Default)]
pub struct Forgetful {
    seen: BTreeSet<String>,
    pies: Pies,
}

impl Receiver for Forgetful {
    fn deliver(&mut self, key: &str, _: &str, fault: Fault) -> Result<Outcome, InboxError> {
        if fault != Fault::None {
            return Err(unsupported());
        }
        if !self.seen.insert(key.to_string()) {
            return Ok(Outcome::Duplicate(key.into()));
        }
        self.pies.bake(key);
        Ok(Outcome::Applied(key.into()))
    }
    fn deliver_concurrently(
        &mut self,
        key: &str,
        payload: &str,
        threads: usize,
    ) -> Vec<Result<Outcome, InboxError>> {
        (0..threads)
            .map(|_| self.deliver(key, payload, Fault::None))
            .collect()
    }
    fn crash_and_reopen(&mut self) -> Result<(), InboxError> {
        self.seen.clear();
        Ok(())
    }
    fn pie_counts(&self) -> Result<BTreeMap<String, u32>, InboxError> {
        Ok(self.pies.counts())
    }
    no_leases!();
}

/// Bakes (and the pie leaves the building) first, records the ID in a second step; a crash
/// between the two forgets the ID of a pie that was delivered.
#[derive(Default)]
pub struct RecordAfterEffect {
    seen: BTreeSet<String>,
    pies: Pies,
}

impl RecordAfterEffect {
    /// The first step: bake unless the key is recorded; says whether it baked.
    pub fn accept(&mut self, key: &str) -> bool {
        if self.seen.contains(key) {
            return false;
        }
        self.pies.bake(key);
        true
    }

    /// The second step: record the key.
    pub fn record(&mut self, key: &str) {
        self.seen.insert(key.to_string());
    }
}

impl Receiver for RecordAfterEffect {
    fn deliver(&mut self, key: &str, _: &str, fault: Fault) -> Result<Outcome, InboxError> {
        if !self.accept(key) {
            return Ok(Outcome::Duplicate(key.into()));
        }
        match fault {
            Fault::None => {
                self.record(key);
                Ok(Outcome::Applied(key.into()))
            }
            // Died between the effect and the record: the restart finds no record.
            Fault::CrashInEffect | Fault::EffectFails => Err(unsupported()),
        }
    }
    fn deliver_concurrently(
        &mut self,
        key: &str,
        payload: &str,
        threads: usize,
    ) -> Vec<Result<Outcome, InboxError>> {
        (0..threads)
            .map(|_| self.deliver(key, payload, Fault::None))
            .collect()
    }
    fn crash_and_reopen(&mut self) -> Result<(), InboxError> {
        Ok(())
    }
    fn pie_counts(&self) -> Result<BTreeMap<String, u32>, InboxError> {
        Ok(self.pies.counts())
    }
    no_leases!();
}

/// The real in-memory store, configured with a retention window shorter than the delay a
/// redelivery can have.
pub fn short_window() -> onepie::testkit::harness::StoreReceiver<PieStore> {
    let clock = ManualClock::new(1_000);
    let store =
        PieStore::with_data(Vec::new(), clock.clone()).with_retention(Retention::Window(50));
    onepie::testkit::harness::StoreReceiver::new(clock, move || Ok(store.clone())).unwrap()
}
