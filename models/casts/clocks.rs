//! The cast of the deadline designs: a queue that hands an order out with a *lease*, workers that
//! deliver only while their lease is live, houses that keep every pie — and explicit time.
//!
//! **Time.** Real time passes in whole ticks, and only the model sees it (the actor `time`). Each
//! actor that times something has its own clock, running at a rate fixed for the run and chosen
//! at the start from *1 − ρ* and *1 + ρ* real rate (ρ is the drift bound, `--drift`; at 100% a
//! slow clock stands still). There is no shared clock: the queue and the workers each measure the
//! lease on their own. Everything but a pause takes no time — messages arrive, and ovens finish,
//! within the tick they start in (bounded delay) — so real time moves on only when nothing else
//! could happen, or while a worker is paused. A pause (the stall fault) may last any number of
//! ticks.
//!
//! **Readings.** Clocks have phases the model does not track, so each actor gets the reading that
//! is worst for "at most one pie": a worker's lease clock may have missed most of its first tick
//! (it received the order just before a tick), so after *n* ticks it reads *(n − 1)·r*; the
//! queue's may have counted nearly one tick more than has passed (it handed the order out just
//! after a tick, and looks just before the next), so it reads *(n + 1)·r*. Both are in hundredths
//! of a tick. A worker that reads less hands over more pies, and a queue that reads more hands
//! the order out again sooner, so every real phase is covered by these two.
//!
//! Actor ids: `0` is the queue, `1..=workers` the workers, then one house per order, then `time`.

use crate::models::symmetry;
use crate::models::world::{choice_key, Faults, History, Message, Order, State, World};
use crate::models::Params;
use stateright::actor::{model_timeout, Actor, ActorModel, ActorModelAction, Id, Network, Out};
use stateright::{Model, Rewrite, RewritePlan};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The lease the queue grants, in ticks of the worker's clock.
pub const LEASE_TICKS: u16 = 4;
/// Readings are in hundredths of a tick, so a drift of ρ% is a whole number per tick.
const HUNDREDTHS: u16 = 100;

/// How a worker checks its lease and hands the pie over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Handover {
    /// Checks the lease and hands the pie over in one step.
    Atomic,
    /// Checks the lease, then hands the pie over in a second step; it may pause in between.
    CheckThenPause,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Queue → worker: bake this order within the lease, measured on your clock from now.
    Task { order: Order },
    /// Worker → house: a pie, and what the worker's clock said when it checked the lease.
    Pie { order: Order, checked_at: u16 },
    /// House → queue: the pie was kept; delete the order. (The effect, counted on sending.)
    Kept { order: Order },
    /// Worker → itself (check-then-pause): the lease was live when checked; hand the pie over.
    Checked { order: Order, checked_at: u16 },
}

impl Message for Msg {
    fn kept_pie(&self) -> Option<Order> {
        match *self {
            Msg::Kept { order } => Some(order),
            _ => None,
        }
    }
}

/// A reading in hundredths of a tick, as ticks: `320` → `3.20`.
fn ticks(hundredths: u16) -> String {
    format!("{}.{:02}", hundredths / HUNDREDTHS, hundredths % HUNDREDTHS)
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Msg::Task { order } => write!(f, "order {order} with a {LEASE_TICKS}-tick lease"),
            Msg::Pie { order, checked_at } => write!(
                f,
                "a pie for order {order} (lease checked at {} of {LEASE_TICKS} ticks on the worker's clock)",
                ticks(checked_at)
            ),
            Msg::Kept { order } => write!(f, "\"the pie for order {order} is here\""),
            Msg::Checked { order, checked_at } => write!(
                f,
                "a note: \"lease for order {order} live at {} of {LEASE_TICKS} ticks; hand the pie over\"",
                ticks(checked_at)
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Queue: the lease plus the margin (`wait`, hundredths of a tick) is over, by its clock.
    LeaseOver { order: Order, wait: u16 },
    /// Worker: the pie is ready; check the lease (and, atomically, hand it over).
    Oven { order: Order },
    /// Worker: a stop-the-world pause begins (the stall fault).
    Pause,
    /// Worker: the pause ends.
    Resume,
    /// Time: one real tick passes; every clock moves on at its own rate.
    Tick,
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timer::LeaseOver { order, wait } => write!(
                f,
                "lease-plus-margin timer for order {order} ({} ticks on its clock)",
                ticks(*wait)
            ),
            Timer::Oven { order } => write!(f, "oven timer for order {order}"),
            Timer::Pause => write!(f, "stop-the-world pause"),
            Timer::Resume => write!(f, "wake-up from its pause"),
            Timer::Tick => write!(f, "tick"),
        }
    }
}

/// A clock's rate, fixed for the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rate {
    Slow,
    Fast,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Choice {
    /// The queue hands `order` to this worker.
    Handout { order: Order, worker: Id },
    /// Time sets every clock's rate, once, at the start.
    Rates { drift: u8, rates: Vec<(Id, Rate)> },
}

/// The clocked actors' names by id: the queue is `0`, worker `k` is `k + 1`.
fn clocked_name(id: Id) -> String {
    match usize::from(id) {
        0 => "queue".into(),
        k => format!("worker {}", k - 1),
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::Handout { order, worker } => {
                write!(f, "{} for order {order}", clocked_name(*worker))
            }
            Choice::Rates { drift, rates } if *drift == 0 => {
                let names: Vec<String> = rates.iter().map(|(id, _)| clocked_name(*id)).collect();
                write!(f, "clock rates: {} exact", names.join(", "))
            }
            Choice::Rates { drift, rates } => {
                let rates: Vec<String> = rates
                    .iter()
                    .map(|&(id, rate)| match rate {
                        Rate::Slow if *drift >= 100 => {
                            format!("{}'s stands still", clocked_name(id))
                        }
                        Rate::Slow => format!("{}'s slow (−{drift}%)", clocked_name(id)),
                        Rate::Fast => format!("{}'s fast (+{drift}%)", clocked_name(id)),
                    })
                    .collect();
                write!(f, "clock rates: {}", rates.join(", "))
            }
        }
    }
}

/// Where the queue thinks an order is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    Visible,
    /// Handed out to `worker`; `clock` is the queue's reading of the time since (hundredths).
    Leased {
        worker: Id,
        clock: u16,
        ticked: bool,
    },
    Gone,
}

/// A worker's job: the lease clock (hundredths since it got the order) and how far it got.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Job {
    pub clock: u16,
    /// False until the first tick, which a worker's clock may all but miss.
    pub ticked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TimedState {
    Queue {
        orders: Vec<Slot>,
    },
    Worker {
        jobs: BTreeMap<Order, Job>,
        paused: bool,
    },
    House,
    /// The clocks' rates, in hundredths of a tick per real tick; empty until chosen.
    Time {
        rates: BTreeMap<Id, u16>,
    },
}

#[derive(Clone, Debug)]
pub enum Timed {
    /// `wait`: the lease plus the margin, in hundredths of a tick of the queue's clock.
    Queue {
        workers: Vec<Id>,
        orders: Order,
        wait: u16,
    },
    Worker {
        no: usize,
        handover: Handover,
        first_house: usize,
    },
    House {
        no: usize,
        queue: Id,
    },
    Time {
        clocked: Vec<Id>,
        drift: u8,
    },
}

fn handouts(order: Order, workers: &[Id]) -> Vec<Choice> {
    workers
        .iter()
        .map(|&worker| Choice::Handout { order, worker })
        .collect()
}

/// Every assignment of slow/fast to the clocked actors (one, all exact, without drift).
fn rate_choices(clocked: &[Id], drift: u8) -> Vec<Choice> {
    if drift == 0 {
        return vec![Choice::Rates {
            drift,
            rates: clocked.iter().map(|&id| (id, Rate::Slow)).collect(),
        }];
    }
    (0..1u32 << clocked.len())
        .map(|bits| Choice::Rates {
            drift,
            rates: clocked
                .iter()
                .enumerate()
                .map(|(k, &id)| {
                    (
                        id,
                        if bits >> k & 1 == 1 {
                            Rate::Fast
                        } else {
                            Rate::Slow
                        },
                    )
                })
                .collect(),
        })
        .collect()
}

impl Actor for Timed {
    type Msg = Msg;
    type Timer = Timer;
    type State = TimedState;
    type Storage = ();
    type Random = Choice;

    fn name(&self) -> String {
        match self {
            Timed::Queue { .. } => "queue".into(),
            Timed::Worker { no, .. } => format!("worker {no}"),
            Timed::House { no, .. } => format!("house {no}"),
            Timed::Time { .. } => "time".into(),
        }
    }

    fn on_start(&self, _id: Id, _storage: &Option<()>, o: &mut Out<Self>) -> TimedState {
        match self {
            Timed::Queue {
                workers, orders, ..
            } => {
                for order in 0..*orders {
                    o.choose_random(choice_key(order), handouts(order, workers));
                }
                TimedState::Queue {
                    orders: vec![Slot::Visible; *orders as usize],
                }
            }
            Timed::Worker { .. } => TimedState::Worker {
                jobs: BTreeMap::new(),
                paused: false,
            },
            Timed::House { .. } => TimedState::House,
            Timed::Time { clocked, drift } => {
                o.choose_random("rates", rate_choices(clocked, *drift));
                o.set_timer(Timer::Tick, model_timeout());
                TimedState::Time {
                    rates: BTreeMap::new(),
                }
            }
        }
    }

    fn on_random(&self, _id: Id, state: &mut Cow<TimedState>, choice: &Choice, o: &mut Out<Self>) {
        match (self, state.to_mut(), choice) {
            (
                Timed::Queue { wait, .. },
                TimedState::Queue { orders },
                &Choice::Handout { order, worker },
            ) => {
                let slot = &mut orders[order as usize];
                if *slot == Slot::Visible {
                    o.send(worker, Msg::Task { order });
                    o.set_timer(Timer::LeaseOver { order, wait: *wait }, model_timeout());
                    *slot = Slot::Leased {
                        worker,
                        clock: 0,
                        ticked: false,
                    };
                }
            }
            (
                Timed::Time { .. },
                TimedState::Time { rates },
                Choice::Rates {
                    drift,
                    rates: chosen,
                },
            ) => {
                let drift = u16::from(*drift).min(HUNDREDTHS);
                for &(id, rate) in chosen {
                    let per_tick = match rate {
                        Rate::Slow => HUNDREDTHS - drift,
                        Rate::Fast => HUNDREDTHS + drift,
                    };
                    rates.insert(id, per_tick);
                }
            }
            _ => {}
        }
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<TimedState>, _src: Id, msg: Msg, o: &mut Out<Self>) {
        match (self, &**state, msg) {
            (Timed::Queue { wait, .. }, TimedState::Queue { orders }, Msg::Kept { order })
                if orders[order as usize] != Slot::Gone =>
            {
                o.cancel_timer(Timer::LeaseOver { order, wait: *wait });
                o.remove_random(choice_key(order));
                if let TimedState::Queue { orders } = state.to_mut() {
                    orders[order as usize] = Slot::Gone;
                }
            }
            // The lease runs from the order's arrival, which the worker's network stack notes
            // (and keeps) even while the worker itself is paused.
            (Timed::Worker { .. }, TimedState::Worker { .. }, Msg::Task { order }) => {
                if let TimedState::Worker { jobs, .. } = state.to_mut() {
                    // A new lease on the same order replaces the old one.
                    jobs.insert(
                        order,
                        Job {
                            clock: 0,
                            ticked: false,
                        },
                    );
                }
                o.set_timer(Timer::Oven { order }, model_timeout());
                o.set_timer(Timer::Pause, model_timeout());
            }
            // Check-then-pause: act on the earlier check, whatever the clock says now.
            (
                Timed::Worker { first_house, .. },
                TimedState::Worker {
                    jobs,
                    paused: false,
                },
                Msg::Checked { order, checked_at },
            ) if jobs.contains_key(&order) => {
                let jobs = worker_jobs(state);
                jobs.remove(&order);
                o.send(
                    Id::from(first_house + order as usize),
                    Msg::Pie { order, checked_at },
                );
                if jobs.is_empty() {
                    o.cancel_timer(Timer::Pause);
                }
            }
            (Timed::House { queue, .. }, TimedState::House, Msg::Pie { order, .. }) => {
                o.send(*queue, Msg::Kept { order });
            }
            _ => {}
        }
    }

    fn on_timeout(&self, id: Id, state: &mut Cow<TimedState>, timer: &Timer, o: &mut Out<Self>) {
        let lease = LEASE_TICKS * HUNDREDTHS;
        match (self, &**state, timer) {
            // Redeliver once the queue's own clock says the lease plus the margin is over.
            (
                Timed::Queue { workers, wait, .. },
                TimedState::Queue { orders },
                &Timer::LeaseOver { order, .. },
            ) => {
                match orders[order as usize] {
                    Slot::Leased { clock, .. } if clock >= *wait => {
                        if let TimedState::Queue { orders } = state.to_mut() {
                            orders[order as usize] = Slot::Visible;
                        }
                        o.choose_random(choice_key(order), handouts(order, workers));
                    }
                    // Not yet: keep waiting (a no-op, so the timer cannot fire now).
                    _ => o.set_timer(timer.clone(), model_timeout()),
                }
            }
            (
                Timed::Worker {
                    handover,
                    first_house,
                    ..
                },
                TimedState::Worker {
                    jobs,
                    paused: false,
                },
                &Timer::Oven { order },
            ) if jobs.contains_key(&order) => {
                let clock = jobs[&order].clock;
                let jobs = worker_jobs(state);
                if clock >= lease {
                    // Too late: the lease is over by this worker's clock, so no pie.
                    jobs.remove(&order);
                } else if *handover == Handover::Atomic {
                    // Check and hand over in one step.
                    jobs.remove(&order);
                    o.send(
                        Id::from(first_house + order as usize),
                        Msg::Pie {
                            order,
                            checked_at: clock,
                        },
                    );
                } else {
                    // Check now, hand over in a later step: the note is the work still to do.
                    o.send(
                        id,
                        Msg::Checked {
                            order,
                            checked_at: clock,
                        },
                    );
                }
                if jobs.is_empty() {
                    o.cancel_timer(Timer::Pause);
                }
            }
            (
                Timed::Worker { .. },
                TimedState::Worker {
                    jobs,
                    paused: false,
                },
                Timer::Pause,
            ) if !jobs.is_empty() => {
                if let TimedState::Worker { paused, .. } = state.to_mut() {
                    *paused = true;
                }
                o.set_timer(Timer::Resume, model_timeout());
            }
            (Timed::Worker { .. }, TimedState::Worker { paused: true, .. }, Timer::Resume) => {
                if let TimedState::Worker { paused, .. } = state.to_mut() {
                    *paused = false;
                }
            }
            // Time's tick does its work in `advance`: moving every clock is no one actor's step.
            (Timed::Time { .. }, _, Timer::Tick) => {}
            // Anything else cannot happen now: keep the timer (a no-op step is no step).
            _ => o.set_timer(timer.clone(), model_timeout()),
        }
    }
}

fn worker_jobs<'a>(state: &'a mut Cow<'_, TimedState>) -> &'a mut BTreeMap<Order, Job> {
    match state.to_mut() {
        TimedState::Worker { jobs, .. } => jobs,
        _ => unreachable!("worker_jobs on a non-worker"),
    }
}

/// The model's configuration, readable by `advance`, `is_stall` and the boundary.
#[derive(Clone, Debug)]
pub struct Setup {
    pub workers: usize,
    /// The queue's wait (lease plus margin) and the lease, in hundredths of a tick.
    pub wait: u16,
    pub lease: u16,
}

/// The index of `time`, the last actor.
fn time_index<T>(actor_states: &[T]) -> usize {
    actor_states.len() - 1
}

/// Real time passing: `time`'s tick moves every live clock on by its rate. It may pass only when
/// someone is waiting for time (a lease clock has not yet reached what its owner waits for) and
/// nothing else could happen now except a paused worker waking up or a queue timer firing late.
fn advance(
    model: &ActorModel<Timed, Setup, History>,
    last: &State<Timed>,
    action: &ActorModelAction<Msg, Timer, Choice>,
    mut next: State<Timed>,
) -> Option<State<Timed>> {
    let time = time_index(&last.actor_states);
    if !matches!(action, ActorModelAction::Timeout(id, Timer::Tick) if usize::from(*id) == time) {
        return Some(next);
    }
    let TimedState::Time { rates } = &*last.actor_states[time] else {
        return None;
    };
    if rates.is_empty() {
        return None;
    }
    let cfg = &model.cfg;
    let waiting = last.actor_states.iter().enumerate().any(|(i, s)| {
        !last.crashed[i]
            && match &**s {
                TimedState::Queue { orders } => orders
                    .iter()
                    .any(|slot| matches!(slot, Slot::Leased { clock, .. } if *clock < cfg.wait)),
                TimedState::Worker { jobs, .. } => jobs.values().any(|j| j.clock < cfg.lease),
                _ => false,
            }
    });
    if !waiting || urgent(model, last) {
        return None;
    }
    for (i, s) in next.actor_states.iter_mut().enumerate() {
        let Some(&rate) = rates.get(&Id::from(i)) else {
            continue;
        };
        if next.crashed[i] {
            continue;
        }
        let mut moved = (**s).clone();
        match &mut moved {
            TimedState::Queue { orders } => {
                for slot in orders.iter_mut() {
                    if let Slot::Leased { clock, ticked, .. } = slot {
                        // The queue's first tick may count (nearly) twice: see the module docs.
                        let step = if *ticked { rate } else { 2 * rate };
                        *clock = (*clock + step).min(cfg.wait);
                        *ticked = true;
                    }
                }
            }
            TimedState::Worker { jobs, .. } => {
                for job in jobs.values_mut() {
                    // A worker's first tick may count (nearly) nothing: see the module docs.
                    if job.ticked {
                        job.clock = (job.clock + rate).min(cfg.lease);
                    }
                    job.ticked = true;
                }
            }
            _ => {}
        }
        if moved != **s {
            *s = Arc::new(moved);
        }
    }
    next.timers_set[time].set(Timer::Tick);
    Some(next)
}

/// Could anything happen now that takes no time? (Faults, time's own tick, a paused worker's
/// wake-up and the queue's lease timers are not counted: those may wait for time.)
fn urgent(model: &ActorModel<Timed, Setup, History>, state: &State<Timed>) -> bool {
    if state.crashed.iter().any(|&c| c) || state.random_choices.iter().any(|r| !r.map.is_empty()) {
        return true; // a restart, or the queue choosing a worker
    }
    let mut actions = Vec::new();
    model.actions(state, &mut actions);
    actions.into_iter().any(|a| {
        let waits = match &a {
            ActorModelAction::Drop(_) | ActorModelAction::Crash(_) => true,
            ActorModelAction::Timeout(_, t) => matches!(
                t,
                Timer::Tick | Timer::Pause | Timer::Resume | Timer::LeaseOver { .. }
            ),
            _ => false,
        };
        !waits && model.next_state(state, a).is_some()
    })
}

/// The only stall is a worker's pause: work taking longer than it should.
fn is_stall(_: &ActorModel<Timed, Setup, History>, _: &State<Timed>, _: Id, timer: &Timer) -> bool {
    matches!(timer, Timer::Pause)
}

/// The clocks' rates are set before anything else happens.
fn rates_first(_: &Setup, state: &State<Timed>) -> bool {
    let time = time_index(&state.actor_states);
    matches!(&*state.actor_states[time], TimedState::Time { rates } if !rates.is_empty())
        || (state.network.len() == 0 && state.history.used == Faults::default())
}

/// Workers are interchangeable (their clock rates move with them).
fn representative(state: &State<Timed>) -> State<Timed> {
    let workers: Vec<usize> = state
        .actor_states
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(***s, TimedState::Worker { .. }))
        .map(|(i, _)| i)
        .collect();
    symmetry::sort_actors(state, &workers)
}

/// What the symmetry reduction treats as interchangeable: the workers; orders are not (each
/// order's lease and the clocks are tracked one by one).
pub const SYMMETRY: &str = "workers";

/// The world type of the deadline designs.
pub type TimedWorld = World<Timed, Setup>;

/// A deadline world at `p`: the queue, `p.workers` workers, one house per order, and time.
pub fn world(p: &Params, handover: Handover) -> TimedWorld {
    let queue = Id::from(0);
    let workers: Vec<Id> = (1..=p.workers as usize).map(Id::from).collect();
    let first_house = 1 + p.workers as usize;
    let time = first_house + p.orders as usize;
    let lease = LEASE_TICKS * HUNDREDTHS;
    let wait = lease + u16::from(p.margin.unwrap_or(0)) * HUNDREDTHS;
    let mut clocked = vec![queue];
    clocked.extend(&workers);
    let mut model = ActorModel::new(
        Setup {
            workers: workers.len(),
            wait,
            lease,
        },
        History::placing(0..p.orders),
    )
    .actor(Timed::Queue {
        workers: workers.clone(),
        orders: p.orders,
        wait,
    })
    .init_network(Network::new_unordered_nonduplicating([]))
    .lossy_network(if p.losses > 0 {
        stateright::actor::LossyNetwork::Yes
    } else {
        stateright::actor::LossyNetwork::No
    })
    .record_msg_out(World::<Timed, Setup>::effects)
    .within_boundary(rates_first);
    for no in 0..workers.len() {
        model = model.actor(Timed::Worker {
            no,
            handover,
            first_house,
        });
    }
    for no in 0..p.orders as usize {
        model = model.actor(Timed::House { no, queue });
    }
    model = model.actor(Timed::Time {
        clocked,
        drift: p.drift.unwrap_or(0),
    });
    let crashable = (0..=time).map(|i| (1..first_house).contains(&i)).collect();
    World::new(model, Faults::of(p), crashable, is_stall)
        .with_environment(advance)
        .with_symmetry(representative)
}

// Relabelling workers (symmetry): only the queue's slots, time's rates and the handouts name one.
impl Rewrite<Id> for TimedState {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        match self {
            TimedState::Queue { orders } => TimedState::Queue {
                orders: orders
                    .iter()
                    .map(|slot| match slot {
                        Slot::Leased {
                            worker,
                            clock,
                            ticked,
                        } => Slot::Leased {
                            worker: plan.rewrite(worker),
                            clock: *clock,
                            ticked: *ticked,
                        },
                        other => other.clone(),
                    })
                    .collect(),
            },
            TimedState::Time { rates } => TimedState::Time {
                rates: rates.iter().map(|(id, r)| (plan.rewrite(id), *r)).collect(),
            },
            other => other.clone(),
        }
    }
}

impl Rewrite<Id> for Msg {
    fn rewrite<S>(&self, _: &RewritePlan<Id, S>) -> Self {
        self.clone()
    }
}

impl Rewrite<Id> for Timer {
    fn rewrite<S>(&self, _: &RewritePlan<Id, S>) -> Self {
        self.clone()
    }
}

impl Rewrite<Id> for Choice {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        match self {
            Choice::Handout { order, worker } => Choice::Handout {
                order: *order,
                worker: plan.rewrite(worker),
            },
            Choice::Rates { drift, rates } => {
                let mut rates: Vec<(Id, Rate)> =
                    rates.iter().map(|(id, r)| (plan.rewrite(id), *r)).collect();
                rates.sort();
                Choice::Rates {
                    drift: *drift,
                    rates,
                }
            }
        }
    }
}

/// No house here stands for the real inbox: every door is plain (the designs are about when the
/// queue hands an order out again).
impl crate::models::house::StoreHouse for Timed {}
