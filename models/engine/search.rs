//! onepie's own state-space search over any [`stateright::Model`]: level-synchronous
//! breadth-first search on all cores (so every counterexample is shortest by construction), or
//! depth-first search for deep, narrow spaces; a visited set of 64-bit fingerprints (as TLC
//! keeps) or of full states (for debugging); optional symmetry reduction by a representative
//! function; and the quiet-state check computed from the successors the search generates anyway.
//!
//! # How a run is laid out
//! Level `d` holds the states first reached after `d` steps, in the order a one-thread FIFO
//! search would first reach them: by (parent's position, action's index), the smallest such pair
//! whichever thread got there first. Each level is kept as two arrays: for each state, the
//! position of its parent in level `d − 1` and which of the parent's steps reached it. That is 8
//! bytes a state, plus the visited set; the states themselves live only in the frontier. A path
//! is rebuilt like TLC's: walk the parent positions back to level 0, replay the steps from the
//! initial state for the (canonical) fingerprint of each state on the chain, then replay
//! forward again from the real initial state, at each step taking the first successor whose
//! fingerprint is the next one on the chain. With symmetry reduction the visited set holds each
//! class's fingerprint, and the frontier the member of the class reached first, or the class
//! packed by the model (it unpacks to the representative), or in full-state mode the
//! representative; the replayed path follows real states, so it replays in Stateright's
//! explorer as it is.
//!
//! Everything a run reports is the same for any number of threads (positions, parents and the
//! chosen counterexamples are all picked by a total order, not by which thread came first).

use super::memory;
use stateright::{Model, Path};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a property asks of the reachable states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Every reachable state satisfies the condition.
    Always,
    /// Some reachable state satisfies the condition.
    Sometimes,
    /// Every reachable *quiet* state satisfies the condition: one where no step but a fault
    /// changes anything (see [`Searchable::expand`]). "Once nothing more can happen, …".
    WhenQuiet,
}

/// A named property for the search.
pub struct Property<M: Model> {
    pub name: &'static str,
    pub expect: Expect,
    pub condition: fn(&M, &M::State) -> bool,
}

/// What the search needs of a model beyond [`Model`].
pub trait Searchable: Model + Sync
where
    Self::State: Clone + Hash + PartialEq + Send + Sync,
    Self::Action: Clone + PartialEq,
{
    /// The properties to check.
    fn search_properties(&self) -> Vec<Property<Self>>;

    /// Pushes every step out of `state` that changes it, as (action, next state), and says
    /// whether `state` is quiet: no step that is not a fault changes it.
    fn expand(&self, state: &Self::State, out: &mut Vec<(Self::Action, Self::State)>) -> bool;

    /// The representative of `state`'s symmetry class, if the model has symmetry: a
    /// relabelling of `state` that is the same for every member of the class.
    fn representative(&self, _state: &Self::State) -> Option<Self::State> {
        None
    }

    /// The fingerprint of `state`'s symmetry class, if the model has symmetry: the same for every
    /// member of the class. By default the fingerprint of the representative; a model can
    /// compute it without building that state, which is most of the cost of the reduction.
    fn canonical_fingerprint(&self, state: &Self::State) -> Option<u64> {
        self.representative(state).map(|r| fingerprint(&r))
    }

    /// Packs `state`'s class as bytes into `out`, if the model can (see [`Searchable::packs`]):
    /// the same bytes for every member of a class, and their [`fingerprint`] is
    /// [`Searchable::canonical_fingerprint`]. False when it cannot.
    fn pack(&self, _state: &Self::State, _out: &mut Vec<u8>) -> bool {
        false
    }

    /// Whether the model packs states ([`Searchable::pack`]): breadth-first search in
    /// fingerprint mode with symmetry then keeps its frontier as bytes, a small part of the
    /// memory whole states take.
    fn packs(&self) -> bool {
        false
    }

    /// The representative of the class packed in `bytes`.
    fn unpack(&self, _bytes: &[u8]) -> Self::State {
        unreachable!("unpack is called only for models that pack")
    }

    /// Whether [`Searchable::representative`] reduces anything.
    fn has_symmetry(&self) -> bool {
        false
    }
}

/// Breadth-first or depth-first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Bfs,
    Dfs,
}

/// What the visited set keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Visited {
    /// 64-bit fingerprints: a few bytes a state, with a small stated chance of a collision.
    Fingerprints,
    /// Whole (canonical) states: no collisions, many times the memory. For debugging.
    FullStates,
}

/// How to search.
#[derive(Clone, Debug)]
pub struct SearchOptions {
    pub strategy: Strategy,
    /// Worker threads (breadth-first only; depth-first runs on one).
    pub threads: usize,
    /// Reduce by the model's symmetry, if it has one.
    pub symmetry: bool,
    pub visited: Visited,
    /// Stop with [`Stop::TooManyStates`] after generating this many states.
    pub max_states: u64,
    /// Stop with [`Stop::TooMuchMemory`] when the process's resident memory passes this.
    pub max_memory: Option<u64>,
    /// Print progress to stderr each second, under this label, once a run takes over 2 s.
    pub progress: Option<String>,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            strategy: Strategy::Bfs,
            threads: 1,
            symmetry: true,
            visited: Visited::Fingerprints,
            max_states: u64::MAX,
            max_memory: None,
            progress: None,
        }
    }
}

/// Why a search stopped before it was done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    TooManyStates { generated: u64 },
    TooMuchMemory { rss: u64 },
}

/// One property's result.
pub struct Found<M: Model> {
    pub name: &'static str,
    pub expect: Expect,
    /// A counterexample (for `Always` and `WhenQuiet`) or an example (for `Sometimes`):
    /// shortest for breadth-first search.
    pub path: Option<Path<M::State, M::Action>>,
}

/// The result of a search that ran to the end.
pub struct Outcome<M: Model> {
    pub properties: Vec<Found<M>>,
    /// Distinct states (distinct representatives, with symmetry reduction).
    pub unique_states: u64,
    /// Successor states generated, duplicates included.
    pub generated: u64,
    /// The longest shortest path, counting the initial state as depth 1 (as Stateright does).
    pub max_depth: usize,
    pub seconds: f64,
    /// Peak resident memory of the process during the search, in bytes (where the OS tells).
    pub peak_rss: Option<u64>,
    /// The visited set and parent links (not the frontier), in bytes.
    pub visited_bytes: u64,
    /// TLC's optimistic estimate of the chance that two distinct states shared a fingerprint:
    /// distinct × (generated − distinct) / 2^64. `None` when full states were kept.
    pub collision_probability: Option<f64>,
    pub strategy: Strategy,
    pub symmetry: bool,
    pub visited: Visited,
    pub threads: usize,
}

/// The fingerprint of a state: a stable 64-bit hash (the same keys every run and build).
pub fn fingerprint<T: Hash + ?Sized>(t: &T) -> u64 {
    // 0 never stands for a state: it cannot be confused with an empty slot anywhere.
    FINGERPRINT.hash_one(t).max(1)
}

static FINGERPRINT: ahash::RandomState = ahash::RandomState::with_seeds(
    0x6f6e_6570_6965_2d66,
    0x696e_6765_7270_7269,
    0x6e74_2d73_6565_6473,
    0x2d30_2d31_2d32_2d33,
);

/// Fingerprints are hashes already: the visited set uses them as they are.
#[derive(Default, Clone, Copy)]
pub struct Identity(u64);
impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
type ByFingerprint = BuildHasherDefault<Identity>;

/// 256 shards, chosen by a fingerprint's top byte; the low bits index within a shard.
const SHARDS: usize = 256;
fn shard_of(fp: u64) -> usize {
    (fp >> 56) as usize
}

/// A state as the frontier keeps it: whole, or packed by the model ([`Searchable::pack`]).
enum Kept<S> {
    Whole(Box<S>),
    Packed(Box<[u8]>),
}

/// One shard of the visited set, and the states first reached in this shard at the current level
/// (with the smallest parent position seen so far).
enum Shard<S> {
    Fingerprints {
        seen: HashSet<u64, ByFingerprint>,
        next: HashMap<u64, (Reached, Kept<S>), ByFingerprint>,
    },
    FullStates {
        seen: HashSet<Whole<S>, ahash::RandomState>,
        next: HashMap<Whole<S>, (u64, Reached), ahash::RandomState>,
    },
}

/// A whole state as a set member. Stateright's states are `PartialEq` only; their equality is
/// an equivalence all the same (derived, over plain data).
#[derive(Clone, Hash, PartialEq)]
struct Whole<S>(S);
impl<S: PartialEq> Eq for Whole<S> {}

impl<S: Hash + PartialEq + Clone> Shard<S> {
    fn new(visited: Visited) -> Self {
        match visited {
            Visited::Fingerprints => Shard::Fingerprints {
                seen: HashSet::default(),
                next: HashMap::default(),
            },
            Visited::FullStates => Shard::FullStates {
                seen: HashSet::with_hasher(FINGERPRINT.clone()),
                next: HashMap::with_hasher(FINGERPRINT.clone()),
            },
        }
    }

    /// Offers a state reached by `how` (made by `state` if it is kept): kept for the next level
    /// unless seen. True when the state is new (neither seen nor offered before).
    fn offer(&mut self, fp: u64, how: Reached, state: impl FnOnce() -> Kept<S>) -> bool {
        match self {
            Shard::Fingerprints { seen, next } => {
                if seen.contains(&fp) {
                    return false;
                }
                // The copy kept is the one reached first in FIFO order, not the first thread's:
                // members of a class order their successors differently, and the step indices
                // the levels keep must replay.
                match next.get_mut(&fp) {
                    Some(kept) if how < kept.0 => *kept = (how, state()),
                    Some(_) => {}
                    None => {
                        next.insert(fp, (how, state()));
                        return true;
                    }
                }
                false
            }
            Shard::FullStates { seen, next } => {
                let state = match state() {
                    Kept::Whole(s) => Whole(*s),
                    Kept::Packed(_) => unreachable!("full-state search keeps states whole"),
                };
                if seen.contains(&state) {
                    return false;
                }
                match next.get(&state) {
                    Some(&(_, kept)) if kept <= how => {}
                    Some(_) => {
                        next.remove(&state);
                        next.insert(state, (fp, how));
                    }
                    None => {
                        next.insert(state, (fp, how));
                        return true;
                    }
                }
                false
            }
        }
    }

    /// Ends a level: the new states now count as seen.
    fn drain(&mut self) -> Vec<(u64, Reached, Kept<S>)> {
        let out: Vec<(u64, Reached, Kept<S>)> = match self {
            Shard::Fingerprints { seen, next } => {
                seen.extend(next.keys().copied());
                next.drain().map(|(fp, (p, s))| (fp, p, s)).collect()
            }
            Shard::FullStates { seen, next } => next
                .drain()
                .map(|(s, (fp, p))| {
                    seen.insert(s.clone());
                    (fp, p, Kept::Whole(Box::new(s.0)))
                })
                .collect(),
        };
        match self {
            Shard::Fingerprints { next, .. } => next.shrink_to_fit(),
            Shard::FullStates { next, .. } => next.shrink_to_fit(),
        }
        out
    }

    fn len(&self) -> usize {
        match self {
            Shard::Fingerprints { seen, .. } => seen.len(),
            Shard::FullStates { seen, .. } => seen.len(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            // hashbrown: one control byte and one slot per bucket.
            Shard::Fingerprints { seen, .. } => seen.capacity() * 9 * 8 / 7,
            Shard::FullStates { seen, .. } => {
                seen.capacity() * (std::mem::size_of::<S>() + 1) * 8 / 7
            }
        }
    }
}

/// How a state was first reached: its parent's position in the level before, and the index of
/// the step among the parent's steps. Unique per state, so it orders a level totally.
type Reached = (u32, u32);

/// A finished level: how each state was reached (its parent's position in the level before,
/// and which of the parent's steps), in position order. Fingerprints are not kept: a chain's
/// are recomputed by replaying its steps (see `bfs`), which costs nothing per state.
struct Level {
    parents: Vec<u32>,
    steps: Vec<u32>,
}

/// Shared counters for progress and limits.
struct Counters {
    generated: AtomicU64,
    unique: AtomicU64,
    /// Distinct states found so far, counted as they are found (`unique` counts a breadth-first
    /// level once it is closed): what progress reports.
    found: AtomicU64,
    depth: AtomicUsize,
    stop: AtomicBool,
    /// The resident memory that passed `--max-memory`, once it did.
    over_memory: AtomicU64,
}

/// Searches `model` and reports every property.
pub fn search<M>(model: &M, opts: &SearchOptions) -> Result<Outcome<M>, Stop>
where
    M: Searchable,
    M::State: Clone + Hash + PartialEq + Send + Sync,
    M::Action: Clone + PartialEq,
{
    memory::reset_peak();
    let start = Instant::now();
    let symmetry = opts.symmetry && model.has_symmetry();
    let threads = match opts.strategy {
        Strategy::Bfs => opts.threads.max(1),
        Strategy::Dfs => 1,
    };
    let counters = Counters {
        generated: AtomicU64::new(0),
        unique: AtomicU64::new(0),
        found: AtomicU64::new(0),
        depth: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        over_memory: AtomicU64::new(0),
    };
    // A state's key in the visited set, and the state to keep in the frontier. In fingerprint
    // mode any member of a class will do, so the state is kept as reached and only its class's
    // fingerprint is computed; full-state mode keeps representatives, to compare them whole.
    let key = |s: M::State| -> (u64, M::State) {
        match (symmetry, opts.visited) {
            (false, _) => (fingerprint(&s), s),
            (true, Visited::Fingerprints) => match model.canonical_fingerprint(&s) {
                Some(fp) => (fp, s),
                None => (fingerprint(&s), s),
            },
            (true, Visited::FullStates) => {
                let r = model.representative(&s).unwrap_or(s);
                (fingerprint(&r), r)
            }
        }
    };
    let done = AtomicBool::new(false);
    let (chains, bytes) = std::thread::scope(|scope| {
        {
            let (counters, done) = (&counters, &done);
            scope.spawn(move || monitor(opts, counters, done, start));
        }
        let result = match opts.strategy {
            Strategy::Bfs => bfs(model, opts, threads, symmetry, &counters, &key),
            Strategy::Dfs => dfs(model, opts, &counters, &key),
        };
        done.store(true, Ordering::Relaxed);
        result
    })?;
    let properties = model.search_properties();
    let found = properties
        .iter()
        .zip(chains)
        .map(|(p, chain)| Found {
            name: p.name,
            expect: p.expect,
            path: chain.map(|fps| rebuild(model, &fps, &key)),
        })
        .collect();
    let unique = counters.unique.load(Ordering::Relaxed);
    let generated = counters.generated.load(Ordering::Relaxed);
    Ok(Outcome {
        properties: found,
        unique_states: unique,
        generated,
        max_depth: counters.depth.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
        peak_rss: memory::peak_rss(),
        visited_bytes: bytes,
        collision_probability: match opts.visited {
            Visited::Fingerprints => {
                Some(unique as f64 * generated.saturating_sub(unique) as f64 / 2f64.powi(64))
            }
            Visited::FullStates => None,
        },
        strategy: opts.strategy,
        symmetry,
        visited: opts.visited,
        threads,
    })
}

/// For each property, the fingerprints (of canonical states) from an initial state to its
/// witness, if one was found.
type Chains = Vec<Option<Vec<u64>>>;

/// Checks the state-only properties of `state`; `quiet` is known after expansion.
fn judge<M: Searchable>(
    model: &M,
    properties: &[Property<M>],
    state: &M::State,
    quiet: bool,
) -> Vec<usize>
where
    M::State: Clone + Hash + PartialEq + Send + Sync,
    M::Action: Clone + PartialEq,
{
    // Indices of the properties this state is a witness for (a violation, or for `Sometimes`
    // an example).
    let hits: Vec<usize> = properties
        .iter()
        .enumerate()
        .filter(|(_, p)| match p.expect {
            Expect::Always => !(p.condition)(model, state),
            Expect::Sometimes => (p.condition)(model, state),
            Expect::WhenQuiet => quiet && !(p.condition)(model, state),
        })
        .map(|(i, _)| i)
        .collect();
    hits
}

fn bfs<M, F>(
    model: &M,
    opts: &SearchOptions,
    threads: usize,
    symmetry: bool,
    counters: &Counters,
    key: &F,
) -> Result<(Chains, u64), Stop>
where
    M: Searchable,
    M::State: Clone + Hash + PartialEq + Send + Sync,
    M::Action: Clone + PartialEq,
    F: Fn(M::State) -> (u64, M::State) + Sync,
{
    let properties = model.search_properties();
    let shards: Vec<Mutex<Shard<M::State>>> = (0..SHARDS)
        .map(|_| Mutex::new(Shard::new(opts.visited)))
        .collect();
    // Packed frontiers hold the model's bytes for each class; the fingerprint is of the same
    // bytes, which is what `key` computes for the class too (see `Searchable::pack`).
    let packed = symmetry && opts.visited == Visited::Fingerprints && model.packs();
    // Offers a reached state to its shard; true when it is new.
    let offer = |state: M::State, how: Reached, buf: &mut Vec<u8>| -> bool {
        if packed {
            model.pack(&state, buf);
            let fp = fingerprint(&buf[..]);
            shards[shard_of(fp)]
                .lock()
                .unwrap()
                .offer(fp, how, || Kept::Packed(buf.as_slice().into()))
        } else {
            let (fp, state) = key(state);
            shards[shard_of(fp)]
                .lock()
                .unwrap()
                .offer(fp, how, || Kept::Whole(Box::new(state)))
        }
    };
    // Level 0: the initial states.
    // Initial states in the model's order, as a one-thread FIFO search would take them.
    let mut buf = Vec::new();
    for (i, init) in model.init_states().into_iter().enumerate() {
        if offer(init, (0, i as u32), &mut buf) {
            counters.found.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut levels: Vec<Level> = Vec::new();
    // Each property's first witness: (level, position).
    let mut first: Vec<Option<(usize, u32)>> = vec![None; properties.len()];
    loop {
        // Close the level just generated: it becomes the frontier.
        let mut frontier: Vec<Kept<M::State>> = Vec::new();
        let mut level = Level {
            parents: Vec::new(),
            steps: Vec::new(),
        };
        let mut reached: Vec<(u64, Reached, Kept<M::State>)> = Vec::new();
        for shard in &shards {
            reached.append(&mut shard.lock().unwrap().drain());
        }
        reached.sort_unstable_by_key(|&(_, how, _)| how);
        for (_, (parent, step), state) in reached {
            level.parents.push(parent);
            level.steps.push(step);
            frontier.push(state);
        }
        if frontier.is_empty() {
            break;
        }
        let depth = levels.len();
        levels.push(level);
        counters
            .unique
            .fetch_add(frontier.len() as u64, Ordering::Relaxed);
        counters.depth.store(depth + 1, Ordering::Relaxed);
        check_limits(opts, counters)?;
        // Expand the frontier on all threads; each keeps its own first witnesses.
        let next_chunk = AtomicUsize::new(0);
        let witnesses: Vec<Vec<Option<u32>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine: Vec<Option<u32>> = vec![None; properties.len()];
                        let mut steps = Vec::new();
                        let mut buf = Vec::new();
                        let (mut generated, mut found) = (0u64, 0u64);
                        const CHUNK: usize = 64;
                        loop {
                            if counters.stop.load(Ordering::Relaxed) {
                                break;
                            }
                            let from = next_chunk.fetch_add(CHUNK, Ordering::Relaxed);
                            if from >= frontier.len() {
                                break;
                            }
                            for (pos, kept) in frontier.iter().enumerate().skip(from).take(CHUNK) {
                                let pos = pos as u32;
                                let unpacked;
                                let state = match kept {
                                    Kept::Whole(s) => &**s,
                                    Kept::Packed(bytes) => {
                                        unpacked = model.unpack(bytes);
                                        &unpacked
                                    }
                                };
                                let quiet = model.expand(state, &mut steps);
                                for hit in judge(model, &properties, state, quiet) {
                                    let m = &mut mine[hit];
                                    *m = Some(m.map_or(pos, |p| p.min(pos)));
                                }
                                for (k, (_, next)) in steps.drain(..).enumerate() {
                                    if !model.within_boundary(&next) {
                                        continue;
                                    }
                                    generated += 1;
                                    found += u64::from(offer(next, (pos, k as u32), &mut buf));
                                }
                            }
                            counters.generated.fetch_add(generated, Ordering::Relaxed);
                            counters.found.fetch_add(found, Ordering::Relaxed);
                            (generated, found) = (0, 0);
                            if counters.generated.load(Ordering::Relaxed) > opts.max_states {
                                counters.stop.store(true, Ordering::Relaxed);
                            }
                        }
                        mine
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("search thread"))
                .collect()
        });
        check_limits(opts, counters)?;
        drop(frontier);
        for (i, f) in first.iter_mut().enumerate() {
            if f.is_none() {
                *f = witnesses
                    .iter()
                    .filter_map(|w| w[i])
                    .min()
                    .map(|pos| (depth, pos));
            }
        }
        // Stateright stops once every property has a witness; so do we.
        if first.iter().all(Option::is_some) {
            break;
        }
    }
    let bytes = shards
        .iter()
        .map(|s| s.lock().unwrap().bytes() as u64)
        .sum::<u64>()
        + levels
            .iter()
            .map(|l| (l.parents.capacity() * 4 + l.steps.capacity() * 4) as u64)
            .sum::<u64>();
    debug_assert_eq!(
        shards
            .iter()
            .map(|s| s.lock().unwrap().len() as u64)
            .sum::<u64>(),
        counters.unique.load(Ordering::Relaxed)
    );
    // A kept state as the frontier had it, and its fingerprint.
    let mut keep = |state: M::State| -> (u64, M::State) {
        if packed {
            model.pack(&state, &mut buf);
            let fp = fingerprint(&buf[..]);
            // DFS and `rebuild` fingerprint classes through `key`: it must agree.
            debug_assert_eq!(key(state).0, fp);
            (fp, model.unpack(&buf))
        } else {
            key(state)
        }
    };
    let inits = model.init_states();
    let chains = first
        .into_iter()
        .map(|w| {
            w.map(|(depth, mut pos)| {
                let mut steps = vec![0; depth + 1];
                for d in (0..=depth).rev() {
                    steps[d] = levels[d].steps[pos as usize];
                    pos = levels[d].parents[pos as usize];
                }
                // Replay the kept states along the chain for their fingerprints.
                let (fp, mut state) = keep(inits[steps[0] as usize].clone());
                let mut fps = vec![fp];
                let mut next = Vec::new();
                for &k in &steps[1..] {
                    next.clear();
                    model.expand(&state, &mut next);
                    let (fp, kept) = keep(next.swap_remove(k as usize).1);
                    fps.push(fp);
                    state = kept;
                }
                fps
            })
        })
        .collect();
    Ok((chains, bytes))
}

/// Depth-first search on one thread: the stack is the path, so a witness's chain is the stack.
fn dfs<M, F>(
    model: &M,
    opts: &SearchOptions,
    counters: &Counters,
    key: &F,
) -> Result<(Chains, u64), Stop>
where
    M: Searchable,
    M::State: Clone + Hash + PartialEq + Send + Sync,
    M::Action: Clone + PartialEq,
    F: Fn(M::State) -> (u64, M::State) + Sync,
{
    let properties = model.search_properties();
    let mut seen_fp: HashSet<u64, ByFingerprint> = HashSet::default();
    let mut seen_full: HashSet<Whole<M::State>, ahash::RandomState> =
        HashSet::with_hasher(FINGERPRINT.clone());
    let mut first: Chains = vec![None; properties.len()];
    let mut is_new = |fp: u64, s: &M::State| match opts.visited {
        Visited::Fingerprints => seen_fp.insert(fp),
        Visited::FullStates => seen_full.insert(Whole(s.clone())),
    };
    // A frame: the state's fingerprint and the successors still to visit.
    struct Frame<S> {
        fp: u64,
        todo: Vec<(u64, S)>,
    }
    let mut steps = Vec::new();
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut generated = 0u64;
    let mut visit = |fp: u64,
                     state: M::State,
                     stack: &mut Vec<Frame<M::State>>,
                     first: &mut Chains,
                     generated: &mut u64| {
        let quiet = model.expand(&state, &mut steps);
        let chain_here = || {
            let mut c: Vec<u64> = stack.iter().map(|f| f.fp).collect();
            c.push(fp);
            c
        };
        for hit in judge(model, &properties, &state, quiet) {
            if first[hit].is_none() {
                first[hit] = Some(chain_here());
            }
        }
        let mut todo: Vec<(u64, M::State)> = Vec::new();
        for (_, next) in steps.drain(..) {
            if !model.within_boundary(&next) {
                continue;
            }
            *generated += 1;
            todo.push(key(next));
        }
        todo.reverse();
        stack.push(Frame { fp, todo });
    };
    for init in model.init_states() {
        let (fp, s) = key(init);
        if is_new(fp, &s) {
            counters.unique.fetch_add(1, Ordering::Relaxed);
            counters.found.fetch_add(1, Ordering::Relaxed);
            visit(fp, s, &mut stack, &mut first, &mut generated);
        }
        while let Some(top) = stack.last_mut() {
            let Some((fp, s)) = top.todo.pop() else {
                stack.pop();
                continue;
            };
            if !is_new(fp, &s) {
                continue;
            }
            counters.unique.fetch_add(1, Ordering::Relaxed);
            counters.found.fetch_add(1, Ordering::Relaxed);
            visit(fp, s, &mut stack, &mut first, &mut generated);
            counters.depth.fetch_max(stack.len(), Ordering::Relaxed);
            if counters.unique.load(Ordering::Relaxed).is_multiple_of(4096) {
                counters.generated.store(generated, Ordering::Relaxed);
                check_limits(opts, counters)?;
            }
            if first.iter().all(Option::is_some) {
                stack.clear();
            }
        }
    }
    counters.generated.store(generated, Ordering::Relaxed);
    check_limits(opts, counters)?;
    let bytes = (seen_fp.capacity() * 9 * 8 / 7
        + seen_full.capacity() * (std::mem::size_of::<M::State>() + 1) * 8 / 7)
        as u64;
    Ok((first, bytes))
}

fn check_limits(opts: &SearchOptions, counters: &Counters) -> Result<(), Stop> {
    let generated = counters.generated.load(Ordering::Relaxed);
    if generated > opts.max_states {
        return Err(Stop::TooManyStates { generated });
    }
    match counters.over_memory.load(Ordering::Relaxed) {
        0 => Ok(()),
        rss => Err(Stop::TooMuchMemory { rss }),
    }
}

/// Replays a chain of canonical fingerprints from the initial states into a path of real states.
fn rebuild<M, F>(model: &M, chain: &[u64], key: &F) -> Path<M::State, M::Action>
where
    M: Searchable,
    M::State: Clone + Hash + PartialEq + Send + Sync,
    M::Action: Clone + PartialEq,
    F: Fn(M::State) -> (u64, M::State),
{
    let init = model
        .init_states()
        .into_iter()
        .find(|s| key(s.clone()).0 == chain[0])
        .expect("the chain starts at an initial state");
    let mut state = init.clone();
    let mut actions = Vec::new();
    let mut steps = Vec::new();
    for &want in &chain[1..] {
        model.expand(&state, &mut steps);
        let (action, next) = steps
            .drain(..)
            .find(|(_, next)| key(next.clone()).0 == want)
            .expect("every link of the chain is a step of the model");
        actions.push(action);
        state = next;
    }
    Path::from_actions(model, init, &actions).expect("the rebuilt path replays")
}

/// Watches the memory limit (every 50 ms) and prints progress each second once the search has
/// run for two. It wakes every 2 ms to see whether the search is done, so a small check does
/// not wait for it.
fn monitor(opts: &SearchOptions, counters: &Counters, done: &AtomicBool, start: Instant) {
    let mut last = (Instant::now(), 0u64);
    let mut ticks = 0u32;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(2));
        ticks += 1;
        if !ticks.is_multiple_of(25) {
            continue;
        }
        if let (Some(max), Some(rss)) = (opts.max_memory, memory::rss()) {
            if rss > max {
                counters.over_memory.store(rss, Ordering::Relaxed);
                counters.stop.store(true, Ordering::Relaxed);
            }
        }
        let Some(label) = &opts.progress else {
            continue;
        };
        if start.elapsed() < Duration::from_secs(2) || last.0.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let unique = counters.found.load(Ordering::Relaxed);
        let rate = unique.saturating_sub(last.1) as f64 / last.0.elapsed().as_secs_f64();
        eprintln!(
            "  {label}: {unique} states, {:.0} k states/s, depth {}, {} MB, {:.0} s",
            rate / 1e3,
            counters.depth.load(Ordering::Relaxed),
            memory::rss().unwrap_or(0) / 1_000_000,
            start.elapsed().as_secs_f64()
        );
        last = (Instant::now(), unique);
    }
}
