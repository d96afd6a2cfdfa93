//! The property-test harness: runs a schedule of deliveries and faults against any receiver and
//! judges what happened with the same classifier the models use ([`crate::ledger::Ledger`]).
//!
//! A schedule is a list of [`Op`]s — deliveries, redeliveries, a reused key with another
//! payload, concurrent deliveries, failing effects, crashes mid-delivery, crash-and-reopen,
//! waiting (an injectable clock), leases taken over and completed late, pruning. After the
//! schedule the harness *settles*: faults stop, time passes beyond every lease, and every order
//! is redelivered until acknowledged — at-least-once delivery, as the queue would do. The
//! ledger (orders placed, pies per order) must then be exactly one pie per order.
//!
//! Effects on the transactional path are a pie log in the delivery's transaction ([`PieLog`]).
//! Effects on the lease path go to a [`FencedHouse`] outside the store, which refuses a token
//! lower than one it has seen — the fencing check the lease path needs.

use super::PieLog;
use crate::inbox::{BoxError, Claim, InboxError, Lease, ManualClock, Outcome};
use crate::ledger::{Ledger, Tally};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// How long every lease lasts, in milliseconds of the injectable clock.
pub const LEASE_MS: u64 = 100;

/// One step of a schedule. Keys and payloads are small numbers so schedules shrink to
/// readable ones: key `k` is the string `order-k`, payload `p` is `pie p`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Deliver (or redeliver) an order.
    Deliver { key: u8, payload: u8 },
    /// Deliver; the effect writes its pie, then fails: nothing may be recorded.
    DeliverFailing { key: u8, payload: u8 },
    /// Deliver; the process dies inside the effect, after its write and before the commit,
    /// and restarts.
    CrashMidDelivery { key: u8, payload: u8 },
    /// Deliver the same order from `threads` threads at once.
    Concurrent { key: u8, payload: u8, threads: u8 },
    /// The process dies between operations and restarts (every handle dropped and reopened).
    CrashAndReopen,
    /// Time passes on the receiver's clock.
    Wait { ms: u16 },
    /// Claim an order for an external effect (lease path).
    Claim { key: u8, payload: u8 },
    /// The holder of the `n`-th lease taken so far (modulo their number) performs its external
    /// effect at the fenced house and completes — possibly late, after a takeover.
    Complete { lease: u8 },
    /// The holder of the `n`-th lease gives it up without its effect.
    Release { lease: u8 },
    /// Prune keys past the retention window.
    Prune,
}

impl Op {
    fn key(&self) -> Option<(u8, u8)> {
        match *self {
            Op::Deliver { key, payload }
            | Op::DeliverFailing { key, payload }
            | Op::CrashMidDelivery { key, payload }
            | Op::Concurrent { key, payload, .. }
            | Op::Claim { key, payload } => Some((key, payload)),
            _ => None,
        }
    }
}

/// The key string of order `k`.
pub fn key(k: u8) -> String {
    format!("order-{k}")
}

/// The payload of pie `p`.
pub fn payload(p: u8) -> String {
    format!("pie {p}")
}

/// What goes wrong during one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The effect writes its pie and then returns an error.
    EffectFails,
    /// The process dies inside the effect, after its write, before anything commits.
    CrashInEffect,
}

/// Anything that receives deliveries: the real stores through [`StoreReceiver`], and the
/// deliberately broken receivers the tests use to prove the harness has teeth.
pub trait Receiver {
    /// Delivers `payload` under `key`; the effect records the pie `payload` for `key`.
    /// With [`Fault::CrashInEffect`] the receiver must also restart before returning.
    fn deliver(&mut self, key: &str, payload: &str, fault: Fault) -> Result<Outcome, InboxError>;
    /// Delivers from `threads` threads at once; one result per thread.
    fn deliver_concurrently(
        &mut self,
        key: &str,
        payload: &str,
        threads: usize,
    ) -> Vec<Result<Outcome, InboxError>>;
    /// The process dies and restarts.
    fn crash_and_reopen(&mut self) -> Result<(), InboxError>;
    /// Time passes.
    fn wait(&mut self, ms: u64);
    /// Lease path: claim.
    fn claim(&mut self, key: &str, payload: &str, lease: Duration) -> Result<Claim, InboxError>;
    /// Lease path: complete.
    fn complete(&mut self, lease: &Lease, result: &str) -> Result<(), InboxError>;
    /// Lease path: release.
    fn release(&mut self, lease: &Lease) -> Result<(), InboxError>;
    /// Prune expired keys.
    fn prune(&mut self) -> Result<usize, InboxError>;
    /// Pies recorded per key (transactional path).
    fn pie_counts(&self) -> Result<BTreeMap<String, u32>, InboxError>;
}

/// The effect every harness delivery runs: record the pie in the delivery's transaction.
fn bake<S: PieLog>(
    tx: &mut S::Tx<'_>,
    key: &str,
    payload: &str,
    fault: Fault,
) -> Result<Vec<u8>, BoxError> {
    S::record_pie(tx, key, payload.as_bytes())?;
    match fault {
        Fault::None => Ok(payload.as_bytes().to_vec()),
        Fault::EffectFails => Err("the oven broke".into()),
        // A process that dies before COMMIT leaves what an error leaves: a rolled-back
        // transaction. The restart happens in `StoreReceiver::deliver`.
        Fault::CrashInEffect => Err("the worker died mid-bake".into()),
    }
}

/// Opens a store (again, after a crash).
type Opener<S> = Box<dyn FnMut() -> Result<S, InboxError>>;

/// A real [`InboxStore`] as a [`Receiver`], with a manual clock and a way to reopen it.
pub struct StoreReceiver<S: PieLog> {
    store: Option<S>,
    reopen: Opener<S>,
    clock: ManualClock,
}

impl<S: PieLog + 'static> StoreReceiver<S> {
    /// `open` opens the store — and opens it again after a crash — reading time from `clock`.
    /// A durable store reopens what it had; an in-memory reference store returns a handle on
    /// the same state (it stands for a store that survives the crash).
    pub fn new(
        clock: ManualClock,
        mut open: impl FnMut() -> Result<S, InboxError> + 'static,
    ) -> Result<Self, InboxError> {
        let store = open()?;
        Ok(StoreReceiver {
            store: Some(store),
            reopen: Box::new(open),
            clock,
        })
    }

    fn store(&mut self) -> &mut S {
        self.store.as_mut().expect("the store is open")
    }
}

impl<S: PieLog + 'static> Receiver for StoreReceiver<S> {
    fn deliver(&mut self, key: &str, payload: &str, fault: Fault) -> Result<Outcome, InboxError> {
        let result = self.store().deliver(key, payload.as_bytes(), |tx| {
            bake::<S>(tx, key, payload, fault)
        });
        if fault == Fault::CrashInEffect {
            self.crash_and_reopen()?;
        }
        result
    }

    fn deliver_concurrently(
        &mut self,
        key: &str,
        payload: &str,
        threads: usize,
    ) -> Vec<Result<Outcome, InboxError>> {
        let handles: Vec<Result<S, InboxError>> =
            (0..threads).map(|_| self.store().try_clone()).collect();
        let barrier = std::sync::Barrier::new(threads);
        std::thread::scope(|s| {
            let joins: Vec<_> = handles
                .into_iter()
                .map(|handle| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let mut store = handle?;
                        barrier.wait();
                        store.deliver(key, payload.as_bytes(), |tx| {
                            bake::<S>(tx, key, payload, Fault::None)
                        })
                    })
                })
                .collect();
            joins
                .into_iter()
                .map(|j| j.join().expect("delivery thread"))
                .collect()
        })
    }

    fn crash_and_reopen(&mut self) -> Result<(), InboxError> {
        drop(self.store.take());
        self.store = Some((self.reopen)()?);
        Ok(())
    }

    fn wait(&mut self, ms: u64) {
        self.clock.advance(ms);
    }

    fn claim(&mut self, key: &str, payload: &str, lease: Duration) -> Result<Claim, InboxError> {
        self.store().claim(key, payload.as_bytes(), lease)
    }

    fn complete(&mut self, lease: &Lease, result: &str) -> Result<(), InboxError> {
        self.store().complete(lease, result.as_bytes())
    }

    fn release(&mut self, lease: &Lease) -> Result<(), InboxError> {
        self.store().release(lease)
    }

    fn prune(&mut self) -> Result<usize, InboxError> {
        self.store().prune()
    }

    fn pie_counts(&self) -> Result<BTreeMap<String, u32>, InboxError> {
        self.store.as_ref().expect("the store is open").pie_counts()
    }
}

/// The receiving side of the lease path. It refuses a pie from a token lower than one it has
/// seen (a stale lease holder) and — like any receiver of an at-least-once effect — a second
/// pie for an order it already has. Fencing alone is not enough: a stale holder that acts
/// before the new holder's token reaches the house still gets its pie in, and then the new
/// holder's pie is a duplicate (see [`FencedHouse::fence_only`]). The fencing check is dedup
/// in disguise, as the coordinating-consumers models show.
#[derive(Clone, Debug)]
pub struct FencedHouse {
    dedup: bool,
    highest: BTreeMap<String, u64>,
    pies: BTreeMap<String, u32>,
}

impl Default for FencedHouse {
    fn default() -> Self {
        FencedHouse {
            dedup: true,
            highest: BTreeMap::new(),
            pies: BTreeMap::new(),
        }
    }
}

impl FencedHouse {
    /// A house that checks fencing tokens but does not remember orders: at least once.
    pub fn fence_only() -> Self {
        FencedHouse {
            dedup: false,
            ..FencedHouse::default()
        }
    }

    /// Offers a pie for `key` from the holder of `token`; true if the house kept it.
    pub fn offer(&mut self, key: &str, token: u64) -> bool {
        let highest = self.highest.entry(key.to_string()).or_insert(0);
        if token < *highest {
            return false;
        }
        *highest = token;
        let pies = self.pies.entry(key.to_string()).or_insert(0);
        if self.dedup && *pies > 0 {
            return false;
        }
        *pies += 1;
        true
    }
}

/// What one operation did, normalised so two receivers can be compared.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seen {
    Applied(String),
    Duplicate(String),
    Acquired { took_over: bool },
    Done,
    Pruned(usize),
    Error(&'static str),
}

fn seen(r: &Result<Outcome, InboxError>) -> Seen {
    match r {
        Ok(o @ Outcome::Applied(_)) => Seen::Applied(o.result_text().into_owned()),
        Ok(o @ Outcome::Duplicate(_)) => Seen::Duplicate(o.result_text().into_owned()),
        Err(e) => Seen::Error(error_kind(e)),
    }
}

/// The kind of an error, without its details (paths, times).
pub fn error_kind(e: &InboxError) -> &'static str {
    match e {
        InboxError::InvalidKey(_) => "invalid key",
        InboxError::Conflict { .. } => "conflict",
        InboxError::InProgress { .. } => "in progress",
        InboxError::Effect { .. } => "effect failed",
        InboxError::NotOwner { .. } => "not owner",
        _ => "store fault",
    }
}

/// The result of running a schedule.
#[derive(Clone, Debug)]
pub struct Run {
    /// What each operation did, in order (a concurrent delivery's results sorted).
    pub seen: Vec<Vec<Seen>>,
    /// Placed orders and their pies, after settling.
    pub ledger: Ledger<String>,
    /// The first violation found, if any.
    pub violation: Option<Violation>,
}

/// A broken promise, with the step after which it was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// `None` when seen only after settling.
    pub after_step: Option<usize>,
    pub tally: Tally<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.after_step {
            Some(i) => write!(f, "after step {}: {}", i + 1, self.tally),
            None => write!(f, "after settling: {}", self.tally),
        }
    }
}

/// Runs `schedule` against `receiver`, settles, and judges the ledger.
pub fn run(receiver: &mut dyn Receiver, schedule: &[Op]) -> Result<Run, InboxError> {
    run_with_house(receiver, schedule, FencedHouse::default())
}

/// [`run`] with the lease path's effects going to `house`.
pub fn run_with_house(
    receiver: &mut dyn Receiver,
    schedule: &[Op],
    mut house: FencedHouse,
) -> Result<Run, InboxError> {
    // Order key → the payload the store holds for it: the first one tried, then the one of
    // the latest delivery or claim the store accepted (a reused key with another payload is
    // the producer's mistake, refused as a conflict; settling must not repeat it).
    let mut placed: BTreeMap<String, String> = BTreeMap::new();
    // Every lease taken, and whether its holder is done with it (completed or released).
    let mut leases: Vec<(Lease, bool)> = Vec::new();
    let mut all_seen = Vec::new();
    let mut violation = None;
    let ledger_now =
        |receiver: &dyn Receiver, placed: &BTreeMap<String, String>, house: &FencedHouse| {
            let mut ledger = Ledger::placing(placed.keys().cloned());
            for (k, n) in receiver.pie_counts()? {
                ledger.record_effects(k, n);
            }
            for (k, &n) in &house.pies {
                ledger.record_effects(k.clone(), n);
            }
            Ok::<_, InboxError>(ledger)
        };
    for (step, op) in schedule.iter().enumerate() {
        if let Some((k, p)) = op.key() {
            placed.entry(key(k)).or_insert_with(|| payload(p));
        }
        let seen_now = match op {
            Op::Deliver { key: k, payload: p } => {
                vec![seen(&receiver.deliver(&key(*k), &payload(*p), Fault::None))]
            }
            Op::DeliverFailing { key: k, payload: p } => {
                vec![seen(&receiver.deliver(
                    &key(*k),
                    &payload(*p),
                    Fault::EffectFails,
                ))]
            }
            Op::CrashMidDelivery { key: k, payload: p } => {
                vec![seen(&receiver.deliver(
                    &key(*k),
                    &payload(*p),
                    Fault::CrashInEffect,
                ))]
            }
            Op::Concurrent {
                key: k,
                payload: p,
                threads,
            } => {
                let mut v: Vec<Seen> = receiver
                    .deliver_concurrently(&key(*k), &payload(*p), (*threads).max(1) as usize)
                    .iter()
                    .map(seen)
                    .collect();
                v.sort();
                v
            }
            Op::CrashAndReopen => {
                receiver.crash_and_reopen()?;
                vec![Seen::Done]
            }
            Op::Wait { ms } => {
                receiver.wait(*ms as u64);
                vec![Seen::Done]
            }
            Op::Claim { key: k, payload: p } => {
                vec![
                    match receiver.claim(&key(*k), &payload(*p), Duration::from_millis(LEASE_MS)) {
                        Ok(Claim::Acquired(lease)) => {
                            let took_over = lease.took_over_from.is_some();
                            leases.push((lease, false));
                            Seen::Acquired { took_over }
                        }
                        Ok(Claim::Duplicate(s)) => {
                            Seen::Duplicate(String::from_utf8_lossy(&s).into_owned())
                        }
                        Err(e) => Seen::Error(error_kind(&e)),
                    },
                ]
            }
            Op::Complete { lease: n } | Op::Release { lease: n }
                if leases.is_empty() || leases[*n as usize % leases.len()].1 =>
            {
                vec![Seen::Done]
            }
            Op::Complete { lease: n } => {
                let i = *n as usize % leases.len();
                leases[i].1 = true;
                let lease = leases[i].0.clone();
                // The external effect, at the house, then the record. A house that turns the
                // pie away (stale token, or it has one) still counts as done for the holder.
                let kept = house.offer(&lease.key, lease.token);
                let pie = placed.get(&lease.key).cloned().unwrap_or_default();
                vec![
                    if kept {
                        Seen::Done
                    } else {
                        Seen::Error("turned away")
                    },
                    match receiver.complete(&lease, &pie) {
                        Ok(()) => Seen::Done,
                        Err(e) => Seen::Error(error_kind(&e)),
                    },
                ]
            }
            Op::Release { lease: n } => {
                let i = *n as usize % leases.len();
                leases[i].1 = true;
                vec![match receiver.release(&leases[i].0) {
                    Ok(()) => Seen::Done,
                    Err(e) => Seen::Error(error_kind(&e)),
                }]
            }
            Op::Prune => vec![match receiver.prune() {
                Ok(n) => Seen::Pruned(n),
                Err(e) => Seen::Error(error_kind(&e)),
            }],
        };
        if let (Some((k, p)), Some(Seen::Applied(_) | Seen::Acquired { .. })) =
            (op.key(), seen_now.first())
        {
            placed.insert(key(k), payload(p));
        }
        if let (
            Op::Concurrent {
                key: k, payload: p, ..
            },
            true,
        ) = (op, seen_now.iter().any(|s| matches!(s, Seen::Applied(_))))
        {
            placed.insert(key(*k), payload(*p));
        }
        all_seen.push(seen_now);
        // Safety is checked after every step: at most one pie, none unexpected.
        let ledger = ledger_now(receiver, &placed, &house)?;
        if violation.is_none()
            && !(ledger.at_most_one_effect_per_order() && ledger.no_unexpected_effect())
        {
            violation = Some(Violation {
                after_step: Some(step),
                tally: ledger.tally(),
            });
        }
    }
    // Settle: faults stop, every lease runs out, and every order is redelivered until it is
    // acknowledged (the lease path's orders through a fresh claim and a fenced effect).
    receiver.wait(LEASE_MS + 1);
    for (k, p) in &placed {
        for _attempt in 0..3 {
            let claimed_path = leases.iter().any(|(l, _)| &l.key == k);
            let done = if claimed_path {
                match receiver.claim(k, p, Duration::from_millis(LEASE_MS)) {
                    Ok(Claim::Acquired(lease)) => {
                        house.offer(&lease.key, lease.token);
                        receiver.complete(&lease, p).is_ok()
                    }
                    Ok(Claim::Duplicate(_)) => true,
                    Err(_) => false,
                }
            } else {
                receiver.deliver(k, p, Fault::None).is_ok()
            };
            if done {
                break;
            }
            receiver.wait(LEASE_MS + 1);
        }
    }
    let ledger = ledger_now(receiver, &placed, &house)?;
    if violation.is_none() && !ledger.exactly_one_effect_per_order() {
        violation = Some(Violation {
            after_step: None,
            tally: ledger.tally(),
        });
    }
    Ok(Run {
        seen: all_seen,
        ledger,
        violation,
    })
}
