//! Running the search engine on a design and turning what it finds into a report: a verdict
//! per property, the state count and depth, and for each violation the *shortest*
//! counterexample told as a numbered story.
//!
//! Verdicts and stories come from one run of onepie's own breadth-first search
//! ([`crate::models::engine::search`]): its first witness of a violation is at the least depth by
//! construction. (Stateright's own checker stays behind the explorer, and as a cross-check in
//! the tests.) Depth-first search is an option for deep, narrow spaces; its stories are not
//! always shortest, and the report says which search was used.

use crate::ledger::Tally;
use crate::models::engine::search::{self, Expect, Outcome, SearchOptions, Stop};
pub use crate::models::engine::search::{Strategy, Visited};
use crate::models::world::{Action, Message, State, World};
use serde::Serialize;
use stateright::actor::Actor;
use stateright::{Model, Path};
use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{HashMap, VecDeque};
use std::fmt::{Debug, Display};
use std::hash::{Hash, Hasher};

/// How to run the checker.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Search threads (breadth-first).
    pub threads: usize,
    pub strategy: Strategy,
    /// Reduce by the design's symmetry (interchangeable workers, and orders where they are).
    pub symmetry: bool,
    pub visited: Visited,
    /// Give up (with an error) after generating this many states.
    pub max_states: u64,
    /// Give up (with an error) once the process holds this many bytes.
    pub max_memory: Option<u64>,
    /// Print progress to stderr each second during checks that take over two.
    pub progress: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            threads: available_threads(),
            strategy: Strategy::Bfs,
            symmetry: true,
            visited: Visited::Fingerprints,
            max_states: 2_000_000_000,
            max_memory: None,
            progress: false,
        }
    }
}

/// Every core the process may use.
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
    /// For a violated property, its counterexample (shortest, from breadth-first search).
    pub counterexample: Option<Counterexample>,
}

/// A design's check: verdicts, state count, depth, time, and how it was searched.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub design: &'static str,
    pub bounds: String,
    pub properties: Vec<PropertyReport>,
    /// Distinct states; with symmetry reduction, distinct classes of interchangeable actors.
    pub unique_states: u64,
    /// Successor states generated, duplicates included.
    pub generated_states: u64,
    pub max_depth: usize,
    pub seconds: f64,
    /// Peak resident memory of the process during the check, in bytes.
    pub peak_memory: Option<u64>,
    /// The visited set and parent links, per distinct state, in bytes.
    pub bytes_per_state: f64,
    /// The chance that two distinct states shared a fingerprint (TLC's optimistic estimate);
    /// `null` with `--visited full`.
    pub fingerprint_collision_probability: Option<f64>,
    /// `bfs` or `dfs`.
    pub search: Strategy,
    /// The symmetry reduction used: "none", or what was interchangeable.
    pub reduction: &'static str,
    pub visited: Visited,
    pub threads: usize,
}

impl CheckReport {
    /// The report for `property`, if the design has it.
    pub fn property(&self, property: &str) -> Option<&PropertyReport> {
        self.properties.iter().find(|p| p.property == property)
    }

    /// How the states were searched, in words, for the table.
    pub fn method(&self) -> String {
        let search = match self.search {
            Strategy::Bfs => "breadth-first",
            Strategy::Dfs => "depth-first",
        };
        let visited = match self.visited {
            Visited::Fingerprints => "",
            Visited::FullStates => ", full states",
        };
        match self.reduction {
            "none" => format!("{search}{visited}"),
            r => format!("{search}, symmetry: {r}{visited}"),
        }
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
        bound: u64,
        generated: u64,
    },
    #[error(
        "`{design}` stopped at {used} MB, over --max-memory {bound} MB; lower the sizes, turn \
         symmetry on, or raise --max-memory"
    )]
    TooMuchMemory {
        design: &'static str,
        bound: u64,
        used: u64,
    },
    #[error(
        "`{design}` cannot be simulated yet (its cast's timers are not mapped to time); these can: {valid}"
    )]
    NotSimulable { design: &'static str, valid: String },
    #[error("--{flag} does not apply to `{design}`; it applies to: {applies_to}")]
    DoesNotApply {
        flag: &'static str,
        design: &'static str,
        applies_to: String,
    },
}

impl CheckOptions {
    /// The search engine's options for checking `design`.
    pub fn search_options(&self, design: &str) -> SearchOptions {
        SearchOptions {
            strategy: self.strategy,
            threads: self.threads,
            symmetry: self.symmetry,
            visited: self.visited,
            max_states: self.max_states,
            max_memory: self.max_memory,
            progress: self.progress.then(|| design.to_string()),
        }
    }
}

/// The error for a search of `design` that stopped at one of `opts`' limits.
pub fn stopped(design: &'static str, opts: &CheckOptions, stop: Stop) -> CheckError {
    match stop {
        Stop::TooManyStates { generated } => CheckError::TooManyStates {
            design,
            bound: opts.max_states,
            generated,
        },
        Stop::TooMuchMemory { rss } => CheckError::TooMuchMemory {
            design,
            bound: opts.max_memory.unwrap_or(0) / 1_000_000,
            used: rss / 1_000_000,
        },
    }
}

/// Checks `world` and reports every property. Generic over the design's actors.
/// `reduction` names what the design's symmetry makes interchangeable.
pub fn run<A, C>(
    design: &'static str,
    bounds: String,
    world: World<A, C>,
    reduction: &'static str,
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
    let outcome: Outcome<World<A, C>> = search::search(&world, &opts.search_options(design))
        .map_err(|stop| stopped(design, opts, stop))?;
    let properties = outcome
        .properties
        .into_iter()
        .map(|found| {
            let sometimes = found.expect == Expect::Sometimes;
            let verdict = match (sometimes, found.path.is_some()) {
                (true, true) | (false, false) => Verdict::Holds,
                _ => Verdict::Violated,
            };
            PropertyReport {
                property: found.name,
                expectation: if sometimes { "sometimes" } else { "always" },
                verdict,
                counterexample: found.path.filter(|_| !sometimes).map(|p| tell(&world, p)),
            }
        })
        .collect();
    Ok(CheckReport {
        design,
        bounds,
        properties,
        unique_states: outcome.unique_states,
        generated_states: outcome.generated,
        max_depth: outcome.max_depth,
        seconds: outcome.seconds,
        peak_memory: outcome.peak_rss,
        bytes_per_state: outcome.visited_bytes as f64 / outcome.unique_states.max(1) as f64,
        fingerprint_collision_probability: outcome.collision_probability,
        search: outcome.strategy,
        reduction: if outcome.symmetry { reduction } else { "none" },
        visited: outcome.visited,
        threads: outcome.threads,
    })
}

fn fingerprint<T: Hash>(t: &T) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// A shortest path from an initial state to a state where `bad` holds, by a plain breadth-first
/// search on one thread: for tests and tools that ask about a state the properties do not name.
pub fn shortest_path<M>(
    model: &M,
    bad: impl Fn(&M::State) -> bool,
) -> Option<Path<M::State, M::Action>>
where
    M: Model,
    M::State: Hash + Clone + PartialEq,
    M::Action: Clone + PartialEq,
{
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
        let k = fingerprint(&init);
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
            let next_k = fingerprint(&next);
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
            world.narrate(last, &action, &w[1].0)
        })
        .collect();
    Counterexample {
        steps,
        outcome,
        explorer_path,
        svg,
    }
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
    let (init, steps) = replay_steps(world, explorer_path)?;
    Some(steps.into_iter().last().map_or(init, |(_, _, next)| next))
}

/// One step of a replayed path: the state before, the action, the state after.
pub type Step<A> = (State<A>, Action<A>, State<A>);

/// Replays `explorer_path` on `world`: its initial state and every step.
pub fn replay_steps<A, C>(
    world: &World<A, C>,
    explorer_path: &str,
) -> Option<(State<A>, Vec<Step<A>>)>
where
    A: Actor,
    A::Msg: Ord + Message,
    A::Timer: Ord + Display,
    A::Random: Display,
    C: 'static,
{
    let mut indices = explorer_path.split('/').map(|i| i.parse::<usize>().ok());
    let init = world.init_states().get(indices.next()??)?.clone();
    let mut state = init.clone();
    let mut steps = Vec::new();
    for index in indices {
        let mut actions = Vec::new();
        world.actions(&state, &mut actions);
        let action = actions.get(index?)?.clone();
        let next = world.next_state(&state, action.clone())?;
        steps.push((state, action, next.clone()));
        state = next;
    }
    Some((init, steps))
}

/// What a replayed counterexample ends in, for re-checking it with the classifier.
#[derive(Clone, Debug)]
pub struct Ending {
    pub ledger: crate::ledger::Ledger<crate::models::world::Order>,
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
