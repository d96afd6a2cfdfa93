//! The houses that stand for the real inbox, and every step the checker explores them take, seen
//! as a real store would see it: the records remembered before, the delivery (or restart), the
//! clock, what the house answered, the records after and the pies kept. `onepie conform` replays
//! each distinct step against a real store ([`crate::conform`]).
//!
//! A house stands for the real inbox when its door is the library's [`crate::dedup::decide`]
//! over a durable memory, checked and recorded in one step: the idempotent and per-host doors,
//! the fenced-dedup door (once its fence lets the pie through: the fence sits in front of the
//! inbox and a pie it turns away never reaches the store), and the phone-order houses.

use super::engine::search::{self, Expect, Searchable};
use super::world::{Action, Message, State, World};
use crate::dedup::{self, Decision, Fingerprint, Millis, Record, Retention};
use serde::Serialize;
use stateright::actor::{Actor, ActorModelAction};
use stateright::{Model, Property};
use std::collections::BTreeMap;
use std::fmt::{self, Display};
use std::sync::Mutex;

/// A house's memory as the store keys it: key → record (results are the store's business).
pub type Remembered = BTreeMap<String, Record<()>>;

/// A house's memory keyed by `K`, as the store keys it.
pub fn remembered_of<K: Copy>(
    memory: &BTreeMap<K, Record<()>>,
    key: impl Fn(K) -> String,
) -> Remembered {
    memory.iter().map(|(&k, r)| (key(k), r.clone())).collect()
}

/// A cast whose houses may stand for the real inbox.
/// The defaults say "no such house": a cast without one implements nothing.
pub trait StoreHouse: Actor {
    /// `Some(memory)` when this actor is a house standing for the real inbox, in `state`.
    fn remembered(&self, _state: &Self::State) -> Option<Remembered> {
        None
    }
    /// The delivery `msg` asks this house's store for, as (key, payload), where the payload's
    /// fingerprint is the one the house decides on; `None` if `msg` is not a pie, or the house
    /// turns it away before asking its memory.
    fn delivery(&self, _state: &Self::State, _msg: &Self::Msg) -> Option<(String, Vec<u8>)> {
        None
    }
    /// The memory a restart finds in storage (empty where houses do not crash).
    fn recovered(&self, _storage: Option<&Self::Storage>) -> Remembered {
        Remembered::new()
    }
    /// The house's clock in `state` (the store's clock is set to it), in the store's units.
    fn clock(&self, _state: &Self::State) -> Millis {
        0
    }
}

/// What the house is asked to do.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum HouseAction {
    /// A pie arrives: deliver `payload` under `key`.
    Deliver { key: String, payload: Vec<u8> },
    /// The house crashes and restarts (the store's handle is dropped and reopened).
    Restart,
}

/// The house's answer, named as the inbox names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    /// The effect ran and the key is recorded.
    Applied,
    /// Turned away: the key is recorded with the same payload.
    Duplicate,
    /// Turned away: the key is recorded with another payload.
    Conflict,
    /// Turned away while another delivery holds the key.
    InProgress,
    /// Turned away although the inbox would have applied it (nothing the inbox does).
    Refused,
    /// A restart: nothing answered.
    Restarted,
}

impl Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Answer::Applied => "applied",
            Answer::Duplicate => "duplicate",
            Answer::Conflict => "conflict",
            Answer::InProgress => "in progress",
            Answer::Refused => "refused",
            Answer::Restarted => "restarted",
        })
    }
}

/// One house step, as the store sees it. Distinct steps are what conformance replays.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct HouseStep {
    pub before: Remembered,
    pub action: HouseAction,
    /// The house's clock.
    pub now: Millis,
    pub answer: Answer,
    pub after: Remembered,
    /// Pies kept by this step (counted in the model's ledger).
    pub pies: u32,
}

/// A house step and how the model's story tells it (the first telling in sort order, so
/// reports are the same every run).
#[derive(Clone, Debug, Serialize)]
pub struct Told {
    pub step: HouseStep,
    pub told: String,
}

/// The house step `action` takes from `state` to `next`, if `action` is one.
fn house_step<A, C>(
    world: &World<A, C>,
    state: &State<A>,
    action: &Action<A>,
    next: &State<A>,
) -> Option<Told>
where
    A: StoreHouse,
    A::Msg: Ord + Message,
    A::Timer: Ord + Display,
    A::Random: Display,
    C: 'static,
{
    let actor = |id: stateright::actor::Id| &world.inner.actors[usize::from(id)];
    let pies = |s: &State<A>| s.history.ledger.effects().map(|(_, n)| n).sum::<u32>();
    let told = || world.describe(action, world.is_fault(state, action));
    match action {
        ActorModelAction::Deliver { dst, msg, .. } => {
            let (house, i) = (actor(*dst), usize::from(*dst));
            let before = house.remembered(&state.actor_states[i])?;
            let (key, payload) = house.delivery(&state.actor_states[i], msg)?;
            let after = house.remembered(&next.actor_states[i])?;
            let kept = pies(next) - pies(state);
            let now = house.clock(&state.actor_states[i]);
            // Kept or not is what the house did; why a pie was turned away is named by the
            // library's own decision on the records before.
            let answer = if kept > 0 {
                Answer::Applied
            } else {
                let fp = Fingerprint::of(&payload);
                match dedup::decide(before.get(&key), &fp, Retention::Forever, now) {
                    Decision::Duplicate { .. } => Answer::Duplicate,
                    Decision::Conflict { .. } => Answer::Conflict,
                    Decision::InProgress { .. } => Answer::InProgress,
                    _ => Answer::Refused,
                }
            };
            let step = HouseStep {
                before,
                now,
                action: HouseAction::Deliver { key, payload },
                answer,
                after,
                pies: kept,
            };
            Some(Told { step, told: told() })
        }
        ActorModelAction::Crash(id) => {
            let (house, i) = (actor(*id), usize::from(*id));
            let before = house.remembered(&state.actor_states[i])?;
            let step = HouseStep {
                before,
                now: house.clock(&state.actor_states[i]),
                action: HouseAction::Restart,
                answer: Answer::Restarted,
                after: house.recovered(next.actor_storages[i].as_ref()),
                pies: 0,
            };
            Some(Told {
                step,
                told: format!("{} (and later restarts)", told()),
            })
        }
        _ => None,
    }
}

/// Every distinct house step of `world`, in a canonical order, from an exhaustive search.
pub struct Explored {
    pub steps: Vec<Told>,
    /// House steps met, counting repeats.
    pub met: u64,
    /// States the search visited (classes, with symmetry).
    pub states: u64,
    pub seconds: f64,
}

/// The world, searched with every house step it generates noted down. Its one property never
/// fails, so the search runs to the end of the state space even for a broken design.
struct Observed<'w, A: Actor, C>
where
    A::Msg: Ord,
    A::Timer: Ord,
{
    world: &'w World<A, C>,
    /// Each distinct step with its first telling, and how many steps were met in all.
    seen: Mutex<(BTreeMap<HouseStep, String>, u64)>,
}

impl<A, C> Model for Observed<'_, A, C>
where
    A: StoreHouse,
    A::Msg: Ord + Message,
    A::Timer: Ord + Display,
    A::Random: Display,
    C: 'static,
{
    type State = State<A>;
    type Action = Action<A>;
    fn init_states(&self) -> Vec<State<A>> {
        self.world.init_states()
    }
    fn actions(&self, state: &State<A>, actions: &mut Vec<Action<A>>) {
        self.world.actions(state, actions)
    }
    fn next_state(&self, last: &State<A>, action: Action<A>) -> Option<State<A>> {
        self.world.next_state(last, action)
    }
    fn properties(&self) -> Vec<Property<Self>> {
        Vec::new()
    }
    fn within_boundary(&self, state: &State<A>) -> bool {
        self.world.within_boundary(state)
    }
}

impl<A, C> Searchable for Observed<'_, A, C>
where
    A: StoreHouse + Sync,
    A::Msg: Ord + Message + Send + Sync,
    A::Timer: Ord + Display + Send + Sync,
    A::Random: Display + Send + Sync,
    A::State: Send + Sync,
    A::Storage: Send + Sync,
    C: Sync + 'static,
{
    fn search_properties(&self) -> Vec<search::Property<Self>> {
        vec![search::Property {
            name: "every house step noted",
            expect: Expect::Always,
            condition: |_, _| true,
        }]
    }
    fn expand(&self, state: &State<A>, out: &mut Vec<(Action<A>, State<A>)>) -> bool {
        let quiet = self.world.expand(state, out);
        let steps: Vec<Told> = out
            .iter()
            .filter_map(|(action, next)| house_step(self.world, state, action, next))
            .collect();
        if !steps.is_empty() {
            let mut seen = self.seen.lock().unwrap();
            seen.1 += steps.len() as u64;
            for Told { step, told } in steps {
                let first = seen.0.entry(step).or_insert_with(|| told.clone());
                if told < *first {
                    *first = told;
                }
            }
        }
        quiet
    }
    fn representative(&self, state: &State<A>) -> Option<State<A>> {
        self.world.representative(state)
    }
    fn canonical_fingerprint(&self, state: &State<A>) -> Option<u64> {
        self.world.canonical_fingerprint(state)
    }
    fn pack(&self, state: &State<A>, out: &mut Vec<u8>) -> bool {
        self.world.pack(state, out)
    }
    fn packs(&self) -> bool {
        self.world.packs()
    }
    fn unpack(&self, bytes: &[u8]) -> State<A> {
        self.world.unpack(bytes)
    }
    fn has_symmetry(&self) -> bool {
        self.world.has_symmetry()
    }
}

/// Searches `world` exhaustively with `opts` and returns its distinct house steps.
pub fn explore<A, C>(
    world: &World<A, C>,
    opts: &search::SearchOptions,
) -> Result<Explored, search::Stop>
where
    A: StoreHouse + Sync,
    A::Msg: Ord + Message + Send + Sync,
    A::Timer: Ord + Display + Send + Sync,
    A::Random: Display + Send + Sync,
    A::State: Send + Sync,
    A::Storage: Send + Sync,
    C: Sync + 'static,
{
    let observed = Observed {
        world,
        seen: Mutex::new((BTreeMap::new(), 0)),
    };
    let outcome = search::search(&observed, opts)?;
    let (steps, met) = observed.seen.into_inner().unwrap();
    Ok(Explored {
        steps: steps
            .into_iter()
            .map(|(step, told)| Told { step, told })
            .collect(),
        met,
        states: outcome.unique_states,
        seconds: outcome.seconds,
    })
}
