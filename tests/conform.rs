//! Model and receiver in lockstep (issue 12): every house step the checker explores, replayed
//! on the real stores, agrees with the model; a deliberately broken store is caught at its first
//! diverging step; and each broken design's shortest story, replayed step by step on the broken
//! receiver the harness keeps, goes wrong at the same step with the same tally.

mod common;

use common::broken::{short_window, CheckThenAct, Forgetful, RecordAfterEffect};
use onepie::conform::{self, Target};
use onepie::dedup::{Millis, Record};
use onepie::ledger::{Ledger, Tally};
use onepie::models::house::{Answer, HouseAction};
use onepie::models::pizzeria::{Msg, Pizzeria, Then, Timer};
use onepie::models::world::{Order, AT_MOST_ONE_PIE};
use onepie::models::{self, check, AnyWorld, CheckOptions, Design, Params};
use onepie::testkit::harness::{Fault, Receiver};
use stateright::actor::{ActorModelAction, Id};
use std::collections::BTreeMap;

fn design(name: &str) -> &'static Design {
    models::find(name).unwrap()
}

fn run(d: &'static Design, p: &Params, target: &mut dyn Target) -> conform::Report {
    conform::run(d, p, &CheckOptions::default(), target).unwrap()
}

/// A report with no divergence that still exercised both of the inbox's answers.
fn assert_conforms(r: &conform::Report) {
    assert!(r.divergences.is_empty(), "{r}");
    for answer in ["applied", "duplicate"] {
        assert!(r.by_answer.contains_key(answer), "no {answer} step: {r}");
    }
    print!("{r}");
}

#[test]
fn the_designs_with_a_real_inbox_house_are_these() {
    let names: Vec<&str> = conform::designs().iter().map(|d| d.name).collect();
    assert_eq!(
        names,
        [
            "idempotent-house",
            "shared-dedup-fleet",
            "lease-fenced-dedup",
            "per-host-dedup",
            "producer-retry",
            "idempotency-key"
        ]
    );
    let err = conform::run(
        design("ack-after-work"),
        &design("ack-after-work").defaults,
        &CheckOptions::default(),
        &mut conform::memory(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("these do: idempotent-house"),
        "{err}"
    );
}

#[test]
fn every_real_inbox_design_conforms_on_memory_and_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = conform::sqlite(&dir.path().join("conform.db")).unwrap();
    for d in conform::designs() {
        for r in [
            run(d, &d.defaults, &mut conform::memory()),
            run(d, &d.defaults, &mut sqlite),
        ] {
            assert_conforms(&r);
            // Where houses may crash, restarts were replayed too (a reopened store).
            let crashes = ["idempotent-house", "shared-dedup-fleet", "per-host-dedup"];
            assert_eq!(
                r.by_answer.contains_key("restarted"),
                crashes.contains(&d.name),
                "{r}"
            );
        }
    }
    // One size up where it stays cheap: more workers (hosts) and orders.
    for (name, orders, workers) in [("idempotent-house", 2, 3), ("per-host-dedup", 2, 2)] {
        let d = design(name);
        let p = Params {
            orders,
            workers,
            ..d.defaults
        };
        assert_conforms(&run(d, &p, &mut sqlite));
    }
}

// ---------------------------------------------------------------------------------------------
// Teeth: stores that are wrong in one way each, compiled only for this test.

/// The in-memory store, except that a restart opens a new, empty one: it forgets on reopen.
struct ForgetsOnReopen(conform::StoreTarget<onepie::testkit::PieStore>);

impl Target for ForgetsOnReopen {
    fn describe(&self) -> String {
        "a store that forgets on reopen".into()
    }
    fn set_now(&mut self, now: Millis) {
        self.0.set_now(now)
    }
    fn deliver(&mut self, key: &str, payload: &[u8]) -> Result<Answer, String> {
        self.0.deliver(key, payload)
    }
    fn restart(&mut self) -> Result<(), String> {
        self.0 = conform::memory();
        Ok(())
    }
    fn records(&self, prefix: &str) -> Result<BTreeMap<String, Record<Vec<u8>>>, String> {
        self.0.records(prefix)
    }
    fn pies(&self, prefix: &str) -> Result<BTreeMap<String, u32>, String> {
        self.0.pies(prefix)
    }
}

/// The in-memory store, except that a duplicate runs the effect again (under a fresh key, so
/// the original record is untouched): a store that records but never looks.
struct NeverLooks(conform::StoreTarget<onepie::testkit::PieStore>, u32);

impl Target for NeverLooks {
    fn describe(&self) -> String {
        "a store that never looks".into()
    }
    fn set_now(&mut self, now: Millis) {
        self.0.set_now(now)
    }
    fn deliver(&mut self, key: &str, payload: &[u8]) -> Result<Answer, String> {
        match self.0.deliver(key, payload)? {
            Answer::Duplicate => {
                self.1 += 1;
                // The pie is baked under the same key prefix, as a second pie for it.
                let (prefix, _) = key.rsplit_once('/').unwrap();
                self.0
                    .deliver(&format!("{prefix}/again-{}", self.1), payload)
                    .map(|_| Answer::Applied)
            }
            answer => Ok(answer),
        }
    }
    fn restart(&mut self) -> Result<(), String> {
        self.0.restart()
    }
    fn records(&self, prefix: &str) -> Result<BTreeMap<String, Record<Vec<u8>>>, String> {
        self.0.records(prefix)
    }
    fn pies(&self, prefix: &str) -> Result<BTreeMap<String, u32>, String> {
        self.0.pies(prefix)
    }
}

/// A store that cannot be reopened stops the run with an error naming the step; no panic.
#[test]
fn a_store_that_cannot_be_reopened_is_an_error_not_a_panic() {
    let clock = onepie::inbox::ManualClock::new(0);
    let store = onepie::testkit::PieStore::with_data(Vec::new(), clock.clone());
    let mut opened = 0;
    let mut target = conform::StoreTarget::new("a store that opens once", clock, move || {
        opened += 1;
        if opened == 1 {
            Ok(store.clone())
        } else {
            Err(onepie::inbox::InboxError::InvalidKey(
                onepie::dedup::KeyError::Empty,
            ))
        }
    })
    .unwrap();
    let d = design("idempotent-house");
    let err = conform::run(d, &d.defaults, &CheckOptions::default(), &mut target).unwrap_err();
    assert!(
        err.to_string().contains("the store failed at step"),
        "{err}"
    );
}

#[test]
fn a_store_that_forgets_on_reopen_diverges_at_a_restart() {
    let d = design("idempotent-house");
    let r = run(d, &d.defaults, &mut ForgetsOnReopen(conform::memory()));
    print!("{r}");
    let first = r.divergences.first().expect("the mutant is caught");
    assert_eq!(first.model.action, HouseAction::Restart, "{r}");
    assert!(first.told.contains("crashes"), "{}", first.told);
    assert!(!first.model.after.is_empty() && first.store_after.is_empty());
    // Every divergence is a restart with something to remember; nothing else is wrong.
    assert!(r
        .divergences
        .iter()
        .all(|d| d.model.action == HouseAction::Restart && !d.model.before.is_empty()));
}

#[test]
fn a_store_that_never_looks_diverges_at_a_duplicate() {
    let d = design("idempotency-key");
    let r = run(d, &d.defaults, &mut NeverLooks(conform::memory(), 0));
    print!("{r}");
    let first = r.divergences.first().expect("the mutant is caught");
    assert_eq!(first.model.answer, Answer::Duplicate, "{r}");
    assert_eq!((first.model.pies, first.store_pies), (0, 1));
    assert_eq!(first.store_answer, Ok(Answer::Applied));
    assert_eq!(r.divergences.len(), r.by_answer["duplicate"], "{r}");
}

// ---------------------------------------------------------------------------------------------
// The broken designs' shortest stories, replayed on the broken receivers.

/// A broken receiver driven one model step at a time. `key` is the store's key for the order.
trait Door {
    /// A pie arrives at the door (the first step of a two-step door).
    fn pie(&mut self, key: &str, from: Id);
    /// The second step of a two-step door, for the pie `from` brought.
    fn note(&mut self, _key: &str, _from: Id, _then: Then) {}
    /// The house crashes (and later restarts).
    fn crash(&mut self);
    /// The house's clock moves one tick.
    fn tick(&mut self) {}
    /// Pies baked per key.
    fn pies(&self) -> BTreeMap<String, u32>;
}

#[derive(Default)]
struct Looks {
    receiver: CheckThenAct,
    looked: BTreeMap<(String, Id), bool>,
}

impl Door for Looks {
    fn pie(&mut self, key: &str, from: Id) {
        let seen = self.receiver.look(key);
        if !seen {
            self.looked.insert((key.to_string(), from), seen);
        }
    }
    fn note(&mut self, key: &str, from: Id, _: Then) {
        if let Some(seen) = self.looked.remove(&(key.to_string(), from)) {
            self.receiver.act(key, seen).unwrap();
        }
    }
    fn crash(&mut self) {
        self.looked.clear();
        self.receiver.crash_and_reopen().unwrap();
    }
    fn pies(&self) -> BTreeMap<String, u32> {
        self.receiver.pie_counts().unwrap()
    }
}

#[derive(Default)]
struct Accepts {
    receiver: RecordAfterEffect,
    accepted: BTreeMap<(String, Id), ()>,
}

impl Door for Accepts {
    fn pie(&mut self, key: &str, from: Id) {
        if self.receiver.accept(key) {
            self.accepted.insert((key.to_string(), from), ());
        }
    }
    fn note(&mut self, key: &str, from: Id, _: Then) {
        if self.accepted.remove(&(key.to_string(), from)).is_some() {
            self.receiver.record(key);
        }
    }
    fn crash(&mut self) {
        // The record still to write is lost with the process.
        self.accepted.clear();
        self.receiver.crash_and_reopen().unwrap();
    }
    fn pies(&self) -> BTreeMap<String, u32> {
        self.receiver.pie_counts().unwrap()
    }
}

/// Any one-step receiver: a pie is one delivery. `tick_ms` of its clock per model tick.
struct OneStep<R: Receiver>(R, u64);

impl<R: Receiver> Door for OneStep<R> {
    fn pie(&mut self, key: &str, _: Id) {
        self.0.deliver(key, "pie", Fault::None).unwrap();
    }
    fn crash(&mut self) {
        self.0.crash_and_reopen().unwrap();
    }
    fn tick(&mut self) {
        self.0.wait(self.1);
    }
    fn pies(&self) -> BTreeMap<String, u32> {
        self.0.pie_counts().unwrap()
    }
}

/// Whether some order has a second pie.
fn second_pie(counts: impl IntoIterator<Item = u32>) -> bool {
    counts.into_iter().any(|n| n >= 2)
}

/// Replays `name`'s shortest story of a duplicate on `door`; returns the model's and the
/// receiver's step of the second pie, and their tallies at the end.
fn replay_story(name: &str, door: &mut dyn Door) -> ((usize, Tally<Order>), (usize, Tally<Order>)) {
    let d = design(name);
    let report = d.check(&d.defaults, &CheckOptions::default()).unwrap();
    let cx = report
        .property(AT_MOST_ONE_PIE)
        .and_then(|p| p.counterexample.clone())
        .unwrap_or_else(|| panic!("{name} has no duplicate story"));
    let AnyWorld::Pizzeria(world) = (d.world)(&d.defaults) else {
        panic!("{name} is not a pizzeria design");
    };
    let (_, steps) = check::replay_steps(&world, &cx.explorer_path).expect("the story replays");
    assert_eq!(steps.len(), cx.steps.len());
    let is_house = |id: Id| matches!(world.inner.actors[usize::from(id)], Pizzeria::House { .. });
    let key = |order: Order| format!("order-{order}");
    let (mut model_step, mut door_step) = (None, None);
    for (k, (_, action, next)) in steps.iter().enumerate() {
        match action {
            ActorModelAction::Deliver { src, dst, msg } if is_house(*dst) => match *msg {
                Msg::Pie { order } => door.pie(&key(order), *src),
                Msg::Note {
                    order,
                    worker,
                    then,
                } => door.note(&key(order), worker, then),
                _ => {}
            },
            ActorModelAction::Crash(id) if is_house(*id) => door.crash(),
            ActorModelAction::Timeout(id, Timer::HouseClock) if is_house(*id) => door.tick(),
            _ => {}
        }
        if model_step.is_none() && second_pie(next.history.ledger.effects().map(|(_, n)| n)) {
            model_step = Some(k + 1);
        }
        if door_step.is_none() && second_pie(door.pies().into_values()) {
            door_step = Some(k + 1);
        }
    }
    let last = &steps.last().unwrap().2.history.ledger;
    let mut theirs = Ledger::placing(last.placed().iter().copied());
    for (k, n) in door.pies() {
        theirs.record_effects(k.trim_start_matches("order-").parse().unwrap(), n);
    }
    println!(
        "{name}: the story's second pie at step {model_step:?} of {}; the receiver's at {door_step:?}",
        steps.len()
    );
    (
        (
            model_step.expect("the story has a second pie"),
            last.tally(),
        ),
        (door_step.unwrap_or(0), theirs.tally()),
    )
}

#[test]
fn check_then_act_goes_wrong_at_the_storys_step_on_the_racy_receiver() {
    let (model, receiver) = replay_story("check-then-act", &mut Looks::default());
    assert_eq!(model, receiver);
}

#[test]
fn forgetful_house_goes_wrong_at_the_storys_step_on_the_forgetful_receiver() {
    let (model, receiver) = replay_story("forgetful-house", &mut OneStep(Forgetful::default(), 0));
    assert_eq!(model, receiver);
}

#[test]
fn dedup_window_goes_wrong_at_the_storys_step_on_the_short_window_store() {
    // The short-window store remembers 50 ms; the model's window is one tick.
    assert_eq!(design("dedup-window").defaults.window, Some(1));
    let (model, receiver) = replay_story("dedup-window", &mut OneStep(short_window(), 50));
    assert_eq!(model, receiver);
}

#[test]
fn accept_first_goes_wrong_at_the_storys_step_on_the_record_after_effect_receiver() {
    let (model, receiver) = replay_story("accept-first", &mut Accepts::default());
    assert_eq!(model, receiver);
}

/// The replay has teeth: the sound store, driven through the same stories, never bakes twice.
#[test]
fn the_sound_store_driven_through_the_broken_stories_bakes_once() {
    for name in ["forgetful-house", "dedup-window"] {
        let clock = onepie::inbox::ManualClock::new(1_000);
        let store = onepie::testkit::PieStore::with_data(Vec::new(), clock.clone());
        let sound =
            onepie::testkit::harness::StoreReceiver::new(clock, move || Ok(store.clone())).unwrap();
        let (model, receiver) = replay_story(name, &mut OneStep(sound, 50));
        assert!(model.0 > 0);
        assert_eq!(receiver.0, 0, "{name}: the sound store baked a second pie");
        assert!(receiver.1.duplicated.is_empty());
    }
}
