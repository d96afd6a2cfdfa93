//! "Approximately once", measured: the *same* actors the checker explores, driven through a
//! discrete-event scheduler with sampled durations and sampled faults (`onepie simulate`).
//!
//! One protocol, two semantics. The checker branches on every order of events and spends a fault
//! budget; the simulator runs one history per seed. A timer fires after a duration sampled for
//! its kind (the visibility timeout, the work, a house's clock tick); a message arrives after a
//! sampled delay, or is lost with the loss rate; a crashable actor crashes at the crash rate
//! (a Poisson process over its up time), and restarts after the restart delay with what it
//! saved. A
//! random choice (the queue's pick of a worker) is drawn uniformly. Every run is judged by
//! [`crate::ledger`], as everywhere else.
//!
//! Semantics worth knowing:
//! - messages to a crashed actor wait for its restart (as in the checker's network);
//! - a two-step door's note to itself takes a message delay; the network never loses it (a
//!   crash of the house does);
//! - the queue honours an ack for *any* hand-out of an order, not only the latest (the model's
//!   queue deletes on any ack; SQS only honours the latest receipt handle, so there an earlier
//!   hand-out's ack would fail and the order would be handed out again);
//! - a worker bakes every order it is handed, however many it holds (no capacity limit).

use super::world::{Message, Order, World};
use crate::ledger::{Ledger, Tally};
use serde::Serialize;
use stateright::actor::{Actor, Command, Id, Out};
use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::hash::Hash;

/// Simulated time, in microseconds.
pub type Micros = u64;

/// A small, fast, seedable generator (SplitMix64): the same seed gives the same numbers on
/// every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
    /// A standard normal draw (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// A distribution of durations, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Dist {
    Fixed {
        secs: f64,
    },
    Uniform {
        low: f64,
        high: f64,
    },
    /// Exponential with this mean.
    Exp {
        mean: f64,
    },
    /// Log-normal with this median and shape (σ of the log).
    LogNormal {
        median: f64,
        sigma: f64,
    },
}

impl Dist {
    /// A draw, in microseconds.
    pub fn sample(&self, rng: &mut Rng) -> Micros {
        let secs = match *self {
            Dist::Fixed { secs } => secs,
            Dist::Uniform { low, high } => low + (high - low) * rng.unit(),
            Dist::Exp { mean } => -mean * (1.0 - rng.unit()).ln(),
            Dist::LogNormal { median, sigma } => median * (sigma * rng.normal()).exp(),
        };
        (secs.clamp(0.0, MAX_SECS) * 1e6).round() as Micros
    }

    /// The mean, in seconds.
    pub fn mean(&self) -> f64 {
        match *self {
            Dist::Fixed { secs } => secs,
            Dist::Uniform { low, high } => (low + high) / 2.0,
            Dist::Exp { mean } => mean,
            Dist::LogNormal { median, sigma } => median * (sigma * sigma / 2.0).exp(),
        }
    }

    /// Parses `fixed:2s` (or just `2s`), `uniform:1s..3s`, `exp:2s`, `lognormal:2s,0.5`.
    pub fn parse(text: &str) -> Result<Dist, String> {
        let bad = || {
            format!(
                "`{text}` is not a distribution like 2s, fixed:2s, uniform:1s..3s, exp:2s or lognormal:2s,0.5"
            )
        };
        let (kind, rest) = text.split_once(':').unwrap_or(("fixed", text));
        let d = match kind {
            "fixed" => Dist::Fixed {
                secs: parse_secs(rest).ok_or_else(bad)?,
            },
            "uniform" => {
                let (a, b) = rest.split_once("..").ok_or_else(bad)?;
                let (low, high) = (
                    parse_secs(a).ok_or_else(bad)?,
                    parse_secs(b).ok_or_else(bad)?,
                );
                if high < low {
                    return Err(format!("`{text}`: the upper end is below the lower"));
                }
                Dist::Uniform { low, high }
            }
            "exp" => Dist::Exp {
                mean: parse_secs(rest).ok_or_else(bad)?,
            },
            "lognormal" => {
                let (m, s) = rest.split_once(',').ok_or_else(bad)?;
                let sigma: f64 = s.trim().parse().map_err(|_| bad())?;
                if !(0.0..=MAX_SIGMA).contains(&sigma) {
                    return Err(format!("`{text}`: σ must be between 0 and {MAX_SIGMA}"));
                }
                Dist::LogNormal {
                    median: parse_secs(m).ok_or_else(bad)?,
                    sigma,
                }
            }
            _ => return Err(bad()),
        };
        Ok(d)
    }
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Dist::Fixed { secs } => write!(f, "{}", show_secs(secs)),
            Dist::Uniform { low, high } => {
                write!(f, "uniform {}..{}", show_secs(low), show_secs(high))
            }
            Dist::Exp { mean } => write!(f, "exponential, mean {}", show_secs(mean)),
            Dist::LogNormal { median, sigma } => {
                write!(f, "log-normal, median {}, σ {sigma}", show_secs(median))
            }
        }
    }
}

/// `1.5s`, `500ms`, `2m`, `250us` or plain seconds; `None` if not a finite, non-negative time.
pub fn parse_secs(text: &str) -> Option<f64> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    let secs = v * scale;
    (secs.is_finite() && (0.0..=MAX_SECS).contains(&secs)).then_some(secs)
}

/// The longest duration the simulator takes (about 11.6 days): long enough for any question
/// about a queue, short enough that simulated time cannot overflow.
pub const MAX_SECS: f64 = 1e6;

/// The largest log-normal σ: beyond it a draw's tail means nothing but overflow.
pub const MAX_SIGMA: f64 = 10.0;

/// The shortest visibility timeout: a timer must move time on.
pub const MIN_TIMEOUT: f64 = 1e-3;

/// The most crashes per second of up time.
pub const MAX_CRASH_RATE: f64 = 1000.0;

/// The most events one run may take; a run that needs more is cut short (and says so).
pub const MAX_EVENTS: u64 = 1_000_000;

/// Seconds in the shortest plain form: `2s`, `0.5s`, `250ms`.
pub fn show_secs(secs: f64) -> String {
    if secs > 0.0 && secs < 1.0 {
        format!("{}ms", (secs * 1e6).round() / 1e3)
    } else {
        format!("{}s", (secs * 1e3).round() / 1e3)
    }
}

/// What one simulation varies.
#[derive(Clone, Debug, Serialize)]
pub struct SimParams {
    pub orders: u8,
    pub workers: u8,
    /// How long the work (baking) takes.
    pub work: Dist,
    /// The queue's visibility timeout (and a house's clock tick), in seconds; at least
    /// [`MIN_TIMEOUT`].
    pub timeout: f64,
    /// Each message's delay.
    pub delay: Dist,
    /// Crashes per second of a crashable actor's up time (exponential times between crashes).
    pub crash_rate: f64,
    /// A crashed actor restarts after this long, in seconds.
    pub restart: f64,
    /// Each message between two actors is lost with this probability.
    pub loss_rate: f64,
    pub runs: u32,
    pub seed: u64,
}

impl Default for SimParams {
    /// What `onepie simulate` runs without flags: 10 orders, 2 workers, exponential work of
    /// mean 1 s, a 2 s timeout, no faults, no delays, 1,000 runs from seed 1.
    fn default() -> Self {
        SimParams {
            orders: 10,
            workers: 2,
            work: Dist::Exp { mean: 1.0 },
            timeout: 2.0,
            delay: Dist::Fixed { secs: 0.0 },
            crash_rate: 0.0,
            restart: 1.0,
            loss_rate: 0.0,
            runs: 1000,
            seed: 1,
        }
    }
}

/// What a cast tells the simulator: how long its timers run, and which messages are pies and
/// hand-outs.
pub trait SimCast: Actor {
    /// The duration of `timer`, sampled.
    fn duration(timer: &Self::Timer, p: &SimParams, rng: &mut Rng) -> Micros;
    /// `Some(order)` when `msg` is a pie on its way to a house.
    fn pie(msg: &Self::Msg) -> Option<Order>;
    /// `Some(order)` when `msg` hands an order to a worker.
    fn handout(msg: &Self::Msg) -> Option<Order>;
}

/// One run's record: per order, its pies kept, pies baked, hand-outs and time to its first pie.
#[derive(Clone, Debug, Default)]
pub struct RunOutcome {
    pub ledger: Ledger<Order>,
    pub baked: HashMap<Order, u32>,
    pub handouts: HashMap<Order, u32>,
    /// Seconds from the start to each order's first kept pie.
    pub first_pie: HashMap<Order, f64>,
    /// The run stopped at its time horizon or at [`MAX_EVENTS`] with events still pending.
    pub cut_short: bool,
    pub events: u64,
}

enum Kind<A: Actor> {
    Deliver {
        src: Id,
        dst: Id,
        msg: A::Msg,
    },
    Timer {
        actor: Id,
        timer: A::Timer,
        gen: u64,
    },
    Random {
        actor: Id,
        key: String,
        gen: u64,
    },
    Recover {
        actor: Id,
    },
    /// The actor's `life`-th life ends (a later life has its own crash scheduled).
    Crash {
        actor: Id,
        life: u64,
    },
}

struct Event<A: Actor> {
    at: Micros,
    seq: u64,
    kind: Kind<A>,
}

impl<A: Actor> PartialEq for Event<A> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<A: Actor> Eq for Event<A> {}
impl<A: Actor> PartialOrd for Event<A> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<A: Actor> Ord for Event<A> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One actor's runtime: its state (`None` while crashed), timers and pending choices.
struct Slot<A: Actor> {
    state: Option<A::State>,
    storage: Option<A::Storage>,
    timers: HashMap<A::Timer, u64>,
    randoms: HashMap<String, (u64, Vec<A::Random>)>,
    /// Messages that arrived while it was down, delivered when it restarts.
    held: Vec<(Id, A::Msg)>,
    /// How many times it has started.
    life: u64,
}

struct Runner<'w, A: SimCast, C>
where
    A::Msg: Ord,
    A::Timer: Ord,
{
    world: &'w World<A, C>,
    p: &'w SimParams,
    rng: Rng,
    now: Micros,
    seq: u64,
    gen: u64,
    queue: BinaryHeap<Reverse<Event<A>>>,
    /// Events in the queue other than crashes: when none is left, nothing more can happen
    /// but crashes, and the run is over.
    work: usize,
    slots: Vec<Slot<A>>,
    out: RunOutcome,
}

impl<A, C> Runner<'_, A, C>
where
    A: SimCast,
    A::Msg: Ord + Message,
    A::Timer: Ord + Hash + Eq,
{
    fn push(&mut self, at: Micros, kind: Kind<A>) {
        self.seq += 1;
        if !matches!(kind, Kind::Crash { .. }) {
            self.work += 1;
        }
        self.queue.push(Reverse(Event {
            at,
            seq: self.seq,
            kind,
        }));
    }

    /// Carries out an actor's commands.
    fn apply(&mut self, id: Id, out: Out<A>) {
        let i = usize::from(id);
        for command in out {
            match command {
                Command::Send(dst, msg) => self.send(id, dst, msg),
                Command::SetTimer(timer, _) => {
                    self.gen += 1;
                    let gen = self.gen;
                    let at = self
                        .now
                        .saturating_add(A::duration(&timer, self.p, &mut self.rng));
                    self.slots[i].timers.insert(timer.clone(), gen);
                    self.push(
                        at,
                        Kind::Timer {
                            actor: id,
                            timer,
                            gen,
                        },
                    );
                }
                Command::CancelTimer(timer) => {
                    self.slots[i].timers.remove(&timer);
                }
                Command::ChooseRandom(key, options) if options.is_empty() => {
                    self.slots[i].randoms.remove(&key);
                }
                Command::ChooseRandom(key, options) => {
                    self.gen += 1;
                    let gen = self.gen;
                    self.slots[i].randoms.insert(key.clone(), (gen, options));
                    self.push(
                        self.now,
                        Kind::Random {
                            actor: id,
                            key,
                            gen,
                        },
                    );
                }
                Command::Save(storage) => self.slots[i].storage = Some(storage),
            }
        }
    }

    fn send(&mut self, src: Id, dst: Id, msg: A::Msg) {
        let at_secs = self.now as f64 / 1e6;
        if let Some(order) = msg.kept_pie() {
            self.out.ledger.record_effect(order);
            self.out.first_pie.entry(order).or_insert(at_secs);
        }
        if let Some(order) = A::pie(&msg) {
            *self.out.baked.entry(order).or_insert(0) += 1;
        }
        if let Some(order) = A::handout(&msg) {
            *self.out.handouts.entry(order).or_insert(0) += 1;
        }
        // A note to self is not network traffic: only a crash loses it.
        if src != dst && self.rng.chance(self.p.loss_rate) {
            return;
        }
        // A note to self (a two-step door's second step) takes a message delay too: the gap
        // between its two steps is where other deliveries get in.
        let delay = self.p.delay.sample(&mut self.rng);
        self.push(
            self.now.saturating_add(delay),
            Kind::Deliver { src, dst, msg },
        );
    }

    /// Runs `f` on actor `id`'s state (owned, so a change costs no clone), then its commands.
    fn handle(&mut self, id: Id, f: impl FnOnce(&A, Id, &mut Cow<A::State>, &mut Out<A>)) {
        let i = usize::from(id);
        let Some(state) = self.slots[i].state.take() else {
            return;
        };
        let mut cow = Cow::Owned(state);
        let mut out = Out::new();
        f(&self.world.inner.actors[i], id, &mut cow, &mut out);
        self.slots[i].state = Some(cow.into_owned());
        self.apply(id, out);
    }

    fn crash(&mut self, id: Id) {
        let restart = (self.p.restart * 1e6) as Micros;
        let slot = &mut self.slots[usize::from(id)];
        slot.state = None;
        slot.timers.clear();
        slot.randoms.clear();
        self.push(
            self.now.saturating_add(restart),
            Kind::Recover { actor: id },
        );
    }

    fn start(&mut self, id: Id) {
        let i = usize::from(id);
        self.slots[i].life += 1;
        if self.world.crashable[i] && self.p.crash_rate > 0.0 {
            let after = -(1.0 - self.rng.unit()).ln() / self.p.crash_rate;
            let life = self.slots[i].life;
            self.push(
                self.now
                    .saturating_add((after.min(MAX_SECS) * 1e6) as Micros),
                Kind::Crash { actor: id, life },
            );
        }
        let mut out = Out::new();
        let state = self.world.inner.actors[i].on_start(id, &self.slots[i].storage, &mut out);
        self.slots[i].state = Some(state);
        self.apply(id, out);
    }

    fn run(mut self, horizon: Micros) -> RunOutcome {
        for i in 0..self.slots.len() {
            self.start(Id::from(i));
        }
        while self.work > 0 {
            let Some(Reverse(event)) = self.queue.pop() else {
                break;
            };
            if event.at > horizon || self.out.events >= MAX_EVENTS {
                self.out.cut_short = true;
                break;
            }
            if !matches!(event.kind, Kind::Crash { .. }) {
                self.work -= 1;
            }
            self.now = event.at;
            self.out.events += 1;
            match event.kind {
                Kind::Deliver { src, dst, msg } => {
                    let i = usize::from(dst);
                    if self.slots[i].state.is_none() {
                        self.slots[i].held.push((src, msg));
                        continue;
                    }
                    self.handle(dst, |a, id, s, o| a.on_msg(id, s, src, msg, o));
                }
                Kind::Crash { actor, life } => {
                    let slot = &self.slots[usize::from(actor)];
                    if slot.life == life && slot.state.is_some() {
                        self.crash(actor);
                    }
                }
                Kind::Timer { actor, timer, gen } => {
                    let slot = &mut self.slots[usize::from(actor)];
                    if slot.timers.get(&timer) != Some(&gen) {
                        continue;
                    }
                    slot.timers.remove(&timer);
                    self.handle(actor, |a, id, s, o| a.on_timeout(id, s, &timer, o));
                }
                Kind::Random { actor, key, gen } => {
                    let slot = &mut self.slots[usize::from(actor)];
                    let Some((g, options)) = slot.randoms.remove(&key) else {
                        continue;
                    };
                    if g != gen {
                        slot.randoms.insert(key, (g, options));
                        continue;
                    }
                    let pick = options[self.rng.below(options.len())].clone();
                    self.handle(actor, |a, id, s, o| a.on_random(id, s, &pick, o));
                }
                Kind::Recover { actor } => {
                    self.start(actor);
                    let held = std::mem::take(&mut self.slots[usize::from(actor)].held);
                    for (src, msg) in held {
                        self.push(
                            self.now,
                            Kind::Deliver {
                                src,
                                dst: actor,
                                msg,
                            },
                        );
                    }
                }
            }
        }
        self.out
    }
}

/// Simulates one run of `world` with `p`, seeded with `seed`.
pub fn run<A, C>(world: &World<A, C>, p: &SimParams, seed: u64) -> RunOutcome
where
    A: SimCast,
    A::Msg: Ord + Message,
    A::Timer: Ord + Hash + Eq,
{
    let slots = world
        .inner
        .actors
        .iter()
        .map(|_| Slot {
            state: None,
            storage: None,
            timers: HashMap::new(),
            randoms: HashMap::new(),
            held: Vec::new(),
            life: 0,
        })
        .collect();
    // Long enough for any run to settle by itself; a run still busy then is reported.
    let scale = p
        .timeout
        .max(p.work.mean())
        .max(p.delay.mean())
        .max(p.restart);
    let horizon = ((scale * 10_000.0).max(1.0) * 1e6) as Micros;
    Runner {
        world,
        p,
        rng: Rng::new(seed),
        now: 0,
        seq: 0,
        gen: 0,
        queue: BinaryHeap::new(),
        work: 0,
        slots,
        out: RunOutcome {
            ledger: world.inner.init_history.ledger.clone(),
            ..RunOutcome::default()
        },
    }
    .run(horizon)
}

/// Many runs, summed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub design: String,
    pub runs: u32,
    pub orders: u64,
    /// Orders with more than one pie kept (duplicated effects).
    pub duplicated: u64,
    /// Pies kept beyond the first, over all orders.
    pub extra_pies: u64,
    /// Pies baked beyond the first per order (work wasted, kept or turned away).
    pub wasted_pies: u64,
    /// Placed orders with no pie at the end of their run.
    pub lost: u64,
    /// Pies for orders never placed.
    pub unexpected: u64,
    /// Orders handed out more than once.
    pub handed_out_again: u64,
    /// Hand-outs, over all orders.
    pub handouts: u64,
    /// Runs stopped at the time horizon or at [`MAX_EVENTS`] with work still pending.
    pub cut_short: u32,
    /// Seconds to the first pie: median and 99th percentile over orders that got one.
    pub p50_time_to_pie: Option<f64>,
    pub p99_time_to_pie: Option<f64>,
    pub events: u64,
}

impl Summary {
    pub fn rate(&self, n: u64) -> f64 {
        if self.orders == 0 {
            0.0
        } else {
            n as f64 / self.orders as f64
        }
    }
}

/// Runs `p.runs` runs of `world` (run `r` seeded with `p.seed + r`) on `threads` threads and
/// sums them; the numbers do not depend on `threads`. `tick` is called after each run (for a
/// progress bar).
pub fn simulate<A, C>(
    design: &str,
    world: &World<A, C>,
    p: &SimParams,
    threads: usize,
    tick: &(dyn Fn() + Sync),
) -> Summary
where
    A: SimCast + Sync,
    A::Msg: Ord + Message + Sync,
    A::Timer: Ord + Hash + Eq + Sync,
    A::Random: Sync,
    A::State: Sync,
    A::Storage: Sync,
    C: Sync,
{
    let threads = threads.clamp(1, p.runs.max(1) as usize);
    let parts: Vec<(Summary, Vec<f64>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut s = Summary::default();
                    let mut times = Vec::new();
                    for r in (t as u32..p.runs).step_by(threads) {
                        let out = run(world, p, p.seed.wrapping_add(u64::from(r)));
                        add(&mut s, &out);
                        times.extend(out.first_pie.values().copied());
                        tick();
                    }
                    (s, times)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("simulation thread"))
            .collect()
    });
    let mut s = Summary {
        design: design.to_string(),
        ..Summary::default()
    };
    let mut times = Vec::new();
    for (part, t) in parts {
        s.merge(&part);
        times.extend(t);
    }
    times.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        (!times.is_empty()).then(|| times[((times.len() - 1) as f64 * q).round() as usize])
    };
    s.p50_time_to_pie = pct(0.5);
    s.p99_time_to_pie = pct(0.99);
    s
}

/// Adds one run to `s`, judged by the ledger.
fn add(s: &mut Summary, out: &RunOutcome) {
    let tally: Tally<Order> = out.ledger.tally();
    s.merge(&Summary {
        runs: 1,
        orders: tally.placed as u64,
        duplicated: tally.duplicated.len() as u64,
        extra_pies: tally
            .duplicated
            .iter()
            .map(|&(_, n)| u64::from(n) - 1)
            .sum(),
        wasted_pies: out
            .baked
            .values()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum(),
        lost: tally.lost.len() as u64,
        unexpected: tally.unexpected.len() as u64,
        handed_out_again: out.handouts.values().filter(|&&n| n > 1).count() as u64,
        handouts: out.handouts.values().map(|&n| u64::from(n)).sum(),
        cut_short: u32::from(out.cut_short),
        events: out.events,
        ..Summary::default()
    });
}

impl Summary {
    /// Adds `other`'s counts to these (the percentiles are computed once, over all runs).
    fn merge(&mut self, other: &Summary) {
        self.runs += other.runs;
        self.orders += other.orders;
        self.duplicated += other.duplicated;
        self.extra_pies += other.extra_pies;
        self.wasted_pies += other.wasted_pies;
        self.lost += other.lost;
        self.unexpected += other.unexpected;
        self.handed_out_again += other.handed_out_again;
        self.handouts += other.handouts;
        self.cut_short += other.cut_short;
        self.events += other.events;
    }
}
