//! Running the model checker on a design and turning what it finds into a report: a verdict
//! per property, the state count and depth, and for each violation the *shortest*
//! counterexample told as a numbered story.
//!
//! Verdicts come from Stateright's checker: breadth-first, or depth-first with symmetry
//! reduction where a design's workers are interchangeable. Its discoveries are not the shortest
//! paths in 0.31 (a later path overwrites the first one found), so each counterexample is then
//! looked for again by a breadth-first search of our own that stops at the first violating
//! state: in BFS order that path is a shortest one.

use super::world::{Action, Message, State, World};
use crate::ledger::Tally;
use serde::Serialize;
use stateright::actor::{Actor, Envelope, Network};
use stateright::{Checker, Expectation, Model, Path};
use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::{Debug, Display};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// How to run the checker.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Checker threads.
    pub threads: usize,
    /// Give up (with an error) after generating this many states.
    pub max_states: usize,
    /// Print progress to stderr for checks that take more than a couple of seconds.
    pub progress: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            threads: 1,
            max_states: 20_000_000,
            progress: false,
        }
    }
}

/// What a property turned out to be. For an `Always` property, `Holds` means no reachable
/// state breaks it; for a `Sometimes` property, that some reachable state satisfies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Holds,
    Violated,
}

impl Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Holds => "holds",
            Verdict::Violated => "violated",
        })
    }
}

/// A shortest counterexample, as a story and as Stateright sees it.
#[derive(Clone, Debug, Serialize)]
pub struct Counterexample {
    /// One plain-words line per step, unnumbered.
    pub steps: Vec<String>,
    /// The ledger's classification in the last state.
    pub outcome: String,
    /// The explorer's path to the last state, for `#/steps/<path>`.
    pub explorer_path: String,
    /// Stateright's sequence diagram of the path.
    #[serde(skip)]
    pub svg: Option<String>,
}

/// One property's result.
#[derive(Clone, Debug, Serialize)]
pub struct PropertyReport {
    pub property: &'static str,
    pub expectation: &'static str,
    pub verdict: Verdict,
    /// For a violated property, its shortest counterexample.
    pub counterexample: Option<Counterexample>,
}

/// A design's check: verdicts, state count, depth, time.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub design: &'static str,
    pub bounds: String,
    pub properties: Vec<PropertyReport>,
    pub unique_states: usize,
    pub max_depth: usize,
    pub seconds: f64,
    /// How the states were searched: [`SEARCH_BFS`] or [`SEARCH_DFS_SYMMETRY`] (whose
    /// `unique_states` counts one state per symmetry class).
    pub search: &'static str,
}

impl CheckReport {
    /// The report for `property`, if the design has it.
    pub fn property(&self, property: &str) -> Option<&PropertyReport> {
        self.properties.iter().find(|p| p.property == property)
    }
}

/// What can go wrong before or while checking.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("unknown design `{name}`; the designs are: {valid}")]
    UnknownDesign { name: String, valid: String },
    #[error("--{name} {value} is out of range; it must be between {min} and {max}")]
    OutOfRange {
        name: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error(
        "`{design}` did not finish within --max-states {bound} (generated {generated} states); \
         lower the sizes or raise --max-states"
    )]
    TooManyStates {
        design: &'static str,
        bound: usize,
        generated: usize,
    },
    #[error("--{flag} does not apply to `{design}`; it applies to: {applies_to}")]
    DoesNotApply {
        flag: &'static str,
        design: &'static str,
        applies_to: String,
    },
    #[error("internal error: the checker reported `{property}` violated but no counterexample was found again")]
    LostCounterexample { property: &'static str },
}

/// Checks `world` and reports every property. Generic over the design's actors.
pub fn run<A, C>(
    design: &'static str,
    bounds: String,
    world: World<A, C>,
    opts: &CheckOptions,
) -> Result<CheckReport, CheckError>
where
    A: Actor + Send + Sync + 'static,
    A::Msg: Ord + Message + Send + Sync,
    A::Timer: Ord + Display + Send + Sync,
    A::Random: Display + Send + Sync,
    A::State: Send + Sync,
    A::Storage: Send + Sync,
    C: Send + Sync + 'static,
{
    let start = Instant::now();
    let symmetry = world.symmetry;
    let builder = world
        .checker()
        .threads(opts.threads.max(1))
        .target_state_count(opts.max_states);
    // Stateright reduces symmetry in its depth-first search only; verdicts are exhaustive either
    // way, and the stories come from our own breadth-first search below.
    match symmetry {
        Some(representative) => conclude(
            design,
            bounds,
            builder.symmetry_fn(representative).spawn_dfs(),
            opts,
            start,
            SEARCH_DFS_SYMMETRY,
        ),
        None => conclude(design, bounds, builder.spawn_bfs(), opts, start, SEARCH_BFS),
    }
}

/// How the state space was searched, as the report says it.
pub const SEARCH_BFS: &str = "breadth-first";
pub const SEARCH_DFS_SYMMETRY: &str = "depth-first, with symmetry reduction";

/// Waits for `checker`, then turns its discoveries into verdicts and shortest stories.
fn conclude<A, C, K>(
    design: &'static str,
    bounds: String,
    checker: K,
    opts: &CheckOptions,
    start: Instant,
    search: &'static str,
) -> Result<CheckReport, CheckError>
where
    A: Actor + Send + Sync + 'static,
    A::Msg: Ord + Message + Send + Sync,
    A::Timer: Ord + Display + Send + Sync,
    A::Random: Display + Send + Sync,
    A::State: Send + Sync,
    A::Storage: Send + Sync,
    C: Send + Sync + 'static,
    K: Checker<World<A, C>>,
{
    let mut last_print = Instant::now();
    while !checker.is_done() {
        std::thread::sleep(Duration::from_millis(20));
        if opts.progress
            && start.elapsed() > Duration::from_secs(2)
            && last_print.elapsed() > Duration::from_secs(1)
        {
            eprintln!(
                "  {design}: {} unique states, depth {}, {:.0} s …",
                checker.unique_state_count(),
                checker.max_depth(),
                start.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
    }
    let checker = checker.join();
    if checker.state_count() >= opts.max_states {
        return Err(CheckError::TooManyStates {
            design,
            bound: opts.max_states,
            generated: checker.state_count(),
        });
    }
    let discoveries = checker.discoveries();
    let world = checker.model();
    let mut properties = Vec::new();
    for property in world.properties() {
        let found = discoveries.contains_key(property.name);
        let (expectation, verdict) = match property.expectation {
            Expectation::Sometimes => (
                "sometimes",
                if found {
                    Verdict::Holds
                } else {
                    Verdict::Violated
                },
            ),
            _ => (
                "always",
                if found {
                    Verdict::Violated
                } else {
                    Verdict::Holds
                },
            ),
        };
        let counterexample = if verdict == Verdict::Violated && expectation == "always" {
            let condition = property.condition;
            let path =
                shortest_path_up_to_symmetry(world, |s| !condition(world, s), world.symmetry)
                    .ok_or(CheckError::LostCounterexample {
                        property: property.name,
                    })?;
            Some(tell(world, path))
        } else {
            None
        };
        properties.push(PropertyReport {
            property: property.name,
            expectation,
            verdict,
            counterexample,
        });
    }
    Ok(CheckReport {
        design,
        bounds,
        properties,
        unique_states: checker.unique_state_count(),
        max_depth: checker.max_depth(),
        seconds: start.elapsed().as_secs_f64(),
        search,
    })
}

fn fingerprint<T: Hash>(t: &T) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// A shortest path from an initial state to a state where `bad` holds, by breadth-first search.
pub fn shortest_path<M>(
    model: &M,
    bad: impl Fn(&M::State) -> bool,
) -> Option<Path<M::State, M::Action>>
where
    M: Model,
    M::State: Hash + Clone + PartialEq,
    M::Action: Clone + PartialEq,
{
    shortest_path_up_to_symmetry(model, bad, None)
}

/// A symmetry representative function for `M`'s states.
pub type Representative<M> = fn(&<M as Model>::State) -> <M as Model>::State;

/// Like [`shortest_path`], but with symmetry reduction: a state whose `representative` was seen
/// already is not explored again. For a `bad` that is symmetric too, the first bad state found is
/// still at the least depth; the path follows the states actually reached, so it replays as is.
pub fn shortest_path_up_to_symmetry<M>(
    model: &M,
    bad: impl Fn(&M::State) -> bool,
    representative: Option<Representative<M>>,
) -> Option<Path<M::State, M::Action>>
where
    M: Model,
    M::State: Hash + Clone + PartialEq,
    M::Action: Clone + PartialEq,
{
    let key = |s: &M::State| match representative {
        Some(r) => fingerprint(&r(s)),
        None => fingerprint(s),
    };
    // Each visited state remembers its parent and the action that led to it (or which initial
    // state it is).
    enum Came<A> {
        Init(usize),
        From(u64, A),
    }
    let mut parents: HashMap<u64, Came<M::Action>> = HashMap::new();
    let mut frontier = VecDeque::new();
    let mut found = None;
    for (i, init) in model.init_states().into_iter().enumerate() {
        let k = key(&init);
        if let Entry::Vacant(e) = parents.entry(k) {
            e.insert(Came::Init(i));
            if bad(&init) {
                found = Some((init, k));
                break;
            }
            frontier.push_back((init, k));
        }
    }
    'search: while found.is_none() {
        let (state, k) = frontier.pop_front()?;
        for (action, next) in model.next_steps(&state) {
            if !model.within_boundary(&next) {
                continue;
            }
            let next_k = key(&next);
            if let Entry::Vacant(e) = parents.entry(next_k) {
                e.insert(Came::From(k, action));
                if bad(&next) {
                    found = Some((next, next_k));
                    break 'search;
                }
                frontier.push_back((next, next_k));
            }
        }
    }
    let (last, mut k) = found?;
    let mut actions = Vec::new();
    let init = loop {
        match parents.get(&k)? {
            Came::From(parent, action) => {
                actions.push(action.clone());
                k = *parent;
            }
            Came::Init(i) => break model.init_states().into_iter().nth(*i)?,
        }
    };
    actions.reverse();
    let path = Path::from_actions(model, init, &actions)?;
    debug_assert!(path.last_state() == &last);
    Some(path)
}

/// Tells a path as a story in plain words.
fn tell<A, C>(world: &World<A, C>, path: Path<State<A>, Action<A>>) -> Counterexample
where
    A: Actor,
    A::Msg: Ord + Message,
    A::Timer: Ord + Display,
    A::Random: Display,
    C: 'static,
{
    let explorer_path = path.encode(world);
    let last = path.last_state();
    let outcome = if world.is_quiet(last) {
        let tally: Tally<_> = last.history.ledger.tally();
        format!("nothing more can happen: {tally}")
    } else {
        format!("so far {:?}", last.history.ledger)
    };
    let svg = world.as_svg(path.clone());
    let steps = path
        .into_vec()
        .windows(2)
        .map(|w| {
            let (last, action) = (
                &w[0].0,
                w[0].1
                    .clone()
                    .expect("every step but the last has an action"),
            );
            narrate(world, last, &action, &w[1].0)
        })
        .collect();
    Counterexample {
        steps,
        outcome,
        explorer_path,
        svg,
    }
}

/// One step of a story: what happened, what it sent, and what it did to the pies.
pub fn narrate<A, C>(
    world: &World<A, C>,
    last: &State<A>,
    action: &Action<A>,
    next: &State<A>,
) -> String
where
    A: Actor,
    A::Msg: Ord + Message,
    A::Timer: Ord + Display,
    A::Random: Display,
    C: 'static,
{
    let name = |id: stateright::actor::Id| world.inner.actors[usize::from(id)].name();
    let mut sent = Vec::new();
    let mut line = world.describe(action, world.is_fault(last, action));
    // What the step sent: envelopes in the next network that were not in the last one.
    let mut before = envelope_counts(&last.network);
    for (env, n) in envelope_counts(&next.network) {
        let was = before.remove(&env).unwrap_or(0);
        for _ in was..n {
            sent.push(format!("sends {} to {}", env.msg, name(env.dst)));
        }
    }
    if !sent.is_empty() {
        line.push_str(" and ");
        line.push_str(&sent.join(", "));
    }
    // What the step did to the pies.
    let (was, now) = (&last.history.ledger, &next.history.ledger);
    for (order, now) in now.effects() {
        if now > was.effects_of(order) {
            line.push_str(&match now {
                1 => format!(" — order {order:?} has its pie"),
                2 => format!(" — a SECOND pie for order {order:?}"),
                n => format!(" — pie number {n} for order {order:?}"),
            });
        }
    }
    line
}

/// How many copies of each envelope are in flight. (Stateright 0.31's `Network::iter_all`
/// yields an envelope with n > 1 copies n + 1 times, so the multiset is read directly.)
fn envelope_counts<M: Clone + Eq + Hash + Ord>(
    network: &Network<M>,
) -> BTreeMap<Envelope<M>, usize> {
    let mut counts = BTreeMap::new();
    match network {
        Network::UnorderedNonDuplicating(multiset) => {
            for (env, n) in multiset.iter() {
                counts.insert(env.clone(), *n);
            }
        }
        Network::UnorderedDuplicating(set, _) => {
            for env in set.iter() {
                counts.insert(env.clone(), 1);
            }
        }
        Network::Ordered(flows) => {
            for (&(src, dst), msgs) in flows {
                for msg in msgs {
                    *counts
                        .entry(Envelope {
                            src,
                            dst,
                            msg: msg.clone(),
                        })
                        .or_insert(0) += 1;
                }
            }
        }
    }
    counts
}

/// The last state of an explorer path (`0/3/1/…`: the initial state's index, then action
/// indices), replayed on `world` step by step. `None` if the path does not fit the model.
pub fn replay<A, C>(world: &World<A, C>, explorer_path: &str) -> Option<State<A>>
where
    A: Actor,
    A::Msg: Ord + Message,
    A::Timer: Ord + Display,
    A::Random: Display,
    C: 'static,
{
    let mut indices = explorer_path.split('/').map(|i| i.parse::<usize>().ok());
    let mut state = world.init_states().get(indices.next()??)?.clone();
    for index in indices {
        let mut actions = Vec::new();
        world.actions(&state, &mut actions);
        let action = actions.get(index?)?.clone();
        state = world.next_state(&state, action)?;
    }
    Some(state)
}

/// What a replayed counterexample ends in, for re-checking it with the classifier.
#[derive(Clone, Debug)]
pub struct Ending {
    pub ledger: crate::ledger::Ledger<super::world::Order>,
    /// Nothing but a fault could happen next.
    pub quiet: bool,
}

/// Replays `explorer_path` on `world` and reports its last state's ledger and quietness.
pub fn ending<A, C>(world: &World<A, C>, explorer_path: &str) -> Option<Ending>
where
    A: Actor,
    A::Msg: Ord + Message,
    A::Timer: Ord + Display,
    A::Random: Display,
    C: 'static,
{
    let state = replay(world, explorer_path)?;
    Some(Ending {
        quiet: world.is_quiet(&state),
        ledger: state.history.ledger,
    })
}
