//! Bob's pizzeria, the cast shared by the queue designs: a persistent queue, workers who take an
//! order, bake it and deliver the pie, and houses that receive pies. A design picks how the queue
//! hands orders out ([`QueuePolicy`]) and how a house treats a pie at its door ([`Door`]).
//!
//! Actor ids: `0` is the queue, `1..=workers` are the workers, then one house per order
//! (order `o` goes to house `o`).

#[path = "pizzeria_symmetry.rs"]
pub mod symmetry;
pub use symmetry::{pack, representative, unpack};

use crate::dedup::{self, Record, Retention};
use crate::models::world::{
    choice_key, pie_fingerprint, store_key, Faults, History, Message, Order, State, World,
};
use crate::models::Params;
use stateright::actor::{model_timeout, Actor, ActorModel, Id, Network, Out};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// How the queue hands an order out and when it forgets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueuePolicy {
    /// The HDMQ claim: the order is deleted at the moment it is handed out. Never redelivered.
    DeleteOnHandout,
    /// The worker acks on receipt and bakes only once the queue confirms the delete; an order
    /// not acked before its visibility timeout is handed out again.
    AckBeforeWork,
    /// The worker acks after the house has the pie (SQS visibility timeout): redelivered until acked.
    AckAfterWork,
}

/// What a house does with a pie at its door.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Door {
    /// Keeps every pie.
    Plain,
    /// The seed's answer: checks and records the order ID in one atomic step, with the memory
    /// in durable storage, using the library's own decision core ([`dedup::decide`]).
    Idempotent,
    // The broken ways to deduplicate: each is the idempotent door with one thing wrong.
    /// Looks the order ID up, and records it (keeping the pie) in a later step; two doors, so a
    /// second pie can be looked up in between.
    CheckThenAct,
    /// Checks and records in one step, but the memory is volatile: a restart forgets it.
    Forgetful,
    /// Checks and records in one step, but forgets an ID `window` ticks of its clock after
    /// recording it (SQS FIFO's five minutes, JetStream's duplicate window).
    Window { window: u8 },
    /// Records the ID (durably) in one step and accepts the pie in the next; one pie at a time.
    RecordFirst,
    /// Accepts the pie in one step and records the ID (durably) in the next; one pie at a time.
    AcceptFirst,
    /// The idempotent door, but the fleet of receivers does not share it: each worker's host
    /// keeps its own durable store (a SQLite file per host), so every house has one door per
    /// worker, each with a memory of its own.
    PerHost,
}

impl Door {
    /// Whether the house remembers order IDs in durable storage.
    fn durable(self) -> bool {
        !matches!(self, Door::Plain | Door::Forgetful)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Queue → worker: bake this order.
    Task { order: Order },
    /// Worker → queue: delete this order.
    Ack { order: Order },
    /// Queue → worker (ack-before-work): the delete went through; bake it.
    AckConfirmed { order: Order },
    /// Queue → worker (ack-before-work): the order is no longer yours; do not bake it.
    AckRefused { order: Order },
    /// Worker → house: a pie.
    Pie { order: Order },
    /// House → worker: the house kept the pie (`kept`) or turned a duplicate away.
    Receipt { order: Order, kept: bool },
    /// House → itself (two-step doors): the step still to do for `worker`'s pie.
    Note {
        order: Order,
        worker: Id,
        then: Then,
    },
}

/// A two-step door's second step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Then {
    /// Check-then-act: the ID was not found; record it and keep the pie.
    RecordAndKeep,
    /// Record-first: the ID is recorded; keep the pie.
    Keep,
    /// Accept-first: the pie is kept; record the ID.
    Record,
}

/// A worker's number from its actor id (workers are ids `1..=workers`).
fn worker_no(worker: Id) -> usize {
    usize::from(worker) - 1
}

impl Msg {
    fn order(&self) -> Order {
        match *self {
            Msg::Task { order }
            | Msg::Ack { order }
            | Msg::AckConfirmed { order }
            | Msg::AckRefused { order }
            | Msg::Pie { order }
            | Msg::Receipt { order, .. }
            | Msg::Note { order, .. } => order,
        }
    }
}

impl Message for Msg {
    fn kept_pie(&self) -> Option<Order> {
        match *self {
            Msg::Receipt { order, kept: true } => Some(order),
            _ => None,
        }
    }
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Task { order } => write!(f, "order {order}"),
            Msg::Ack { order } => write!(f, "an ack for order {order}"),
            Msg::AckConfirmed { order } => write!(f, "\"order {order} is yours\""),
            Msg::AckRefused { order } => write!(f, "\"order {order} is not yours\""),
            Msg::Pie { order } => write!(f, "a pie for order {order}"),
            Msg::Receipt { order, kept: true } => {
                write!(f, "a receipt: pie for order {order} kept")
            }
            Msg::Receipt { order, kept: false } => {
                write!(f, "a receipt: duplicate pie for order {order} turned away")
            }
            Msg::Note {
                order,
                worker,
                then,
            } => {
                let w = worker_no(*worker);
                match then {
                    Then::RecordAndKeep => write!(
                        f,
                        "a note: \"order {order} not seen before: record it, keep worker {w}'s pie\""
                    ),
                    Then::Keep => {
                        write!(f, "a note: \"order {order} recorded: keep worker {w}'s pie\"")
                    }
                    Then::Record => write!(
                        f,
                        "a note: \"worker {w}'s pie for order {order} kept: record order {order}\""
                    ),
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The queue's visibility timeout for an order handed out and not yet acked.
    VisibilityTimeout { order: Order },
    /// A worker's oven: the pie for this order is ready.
    Baked { order: Order },
    /// A house's clock moves on one tick (window door).
    HouseClock,
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timer::VisibilityTimeout { order } => write!(f, "visibility timeout for order {order}"),
            Timer::Baked { order } => write!(f, "oven timer for order {order}"),
            Timer::HouseClock => write!(f, "clock tick"),
        }
    }
}

/// The queue's choice of worker for an order.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handout {
    pub order: Order,
    pub worker: Id,
    worker_no: usize,
}

// The explorer's diagram labels use Debug: name the worker, not its actor id.
impl fmt::Debug for Handout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Handout {{ order: {}, to: worker {} }}",
            self.order, self.worker_no
        )
    }
}

impl fmt::Display for Handout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {} for order {}", self.worker_no, self.order)
    }
}

/// Where the queue thinks an order is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Waiting to be handed out.
    Visible,
    /// Handed out to this worker, not yet acked.
    HandedOut { worker: Id },
    /// Deleted.
    Gone,
}

// The explorer shows states with `{:#?}`: name workers rather than actor ids (worker n is
// actor n + 1), and show a house's memory as the orders it remembers.
impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Visible => f.write_str("visible"),
            Slot::HandedOut { worker } => {
                write!(
                    f,
                    "handed out to worker {}, not acked",
                    usize::from(*worker) - 1
                )
            }
            Slot::Gone => f.write_str("gone"),
        }
    }
}

impl fmt::Debug for PizzeriaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PizzeriaState::Queue { orders } => {
                let mut d = f.debug_struct("Queue");
                for (order, slot) in orders.iter().enumerate() {
                    d.field(&format!("order {order}"), slot);
                }
                d.finish()
            }
            PizzeriaState::Worker { baking, awaiting } => f
                .debug_struct("Worker")
                .field("baking", baking)
                .field("awaiting confirmation", awaiting)
                .finish(),
            PizzeriaState::House {
                memory,
                pending,
                now,
            } => {
                let remembers: Vec<&Order> = memory.keys().collect();
                let mut d = f.debug_struct("House");
                d.field("remembers orders", &remembers);
                if !pending.is_empty() {
                    let steps: Vec<String> = pending
                        .iter()
                        .map(|(o, w)| format!("order {o} from worker {}", usize::from(*w) - 1))
                        .collect();
                    d.field("second step pending", &steps);
                }
                if *now > 0 {
                    d.field("clock", now);
                }
                d.finish()
            }
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PizzeriaState {
    Queue {
        orders: Vec<Slot>,
    },
    /// `awaiting`: acked on receipt, waiting for the queue's confirmation (ack-before-work).
    Worker {
        baking: BTreeSet<Order>,
        awaiting: BTreeSet<Order>,
    },
    /// `memory`: the order IDs the house has accepted (deduplicating doors only); `pending`:
    /// second steps still to do (two-step doors), volatile; `now`: its clock (window door only).
    House {
        memory: BTreeMap<Order, Record<()>>,
        pending: Vec<(Order, Id)>,
        now: u8,
    },
}

#[derive(Clone, Debug)]
pub enum Pizzeria {
    Queue {
        policy: QueuePolicy,
        workers: Vec<Id>,
        orders: Order,
    },
    Worker {
        no: usize,
        policy: QueuePolicy,
        queue: Id,
        first_house: usize,
        /// Houses' doors per order: 1, or one per worker's host ([`Door::PerHost`]).
        doors: usize,
    },
    House {
        no: usize,
        door: Door,
        /// With [`Door::PerHost`]: the host (the worker's number) whose store this door is.
        host: Option<usize>,
    },
}

/// The idempotent house's durable memory.
pub type Memory = BTreeMap<Order, Record<()>>;

fn handouts(order: Order, workers: &[Id]) -> Vec<Handout> {
    workers
        .iter()
        .enumerate()
        .map(|(worker_no, &worker)| Handout {
            order,
            worker,
            worker_no,
        })
        .collect()
}

impl Actor for Pizzeria {
    type Msg = Msg;
    type Timer = Timer;
    type State = PizzeriaState;
    type Storage = Memory;
    type Random = Handout;

    fn name(&self) -> String {
        match self {
            Pizzeria::Queue { .. } => "queue".into(),
            Pizzeria::Worker { no, .. } => format!("worker {no}"),
            Pizzeria::House { no, host: None, .. } => format!("house {no}"),
            Pizzeria::House {
                no, host: Some(h), ..
            } => format!("house {no} via host {h}"),
        }
    }

    fn on_start(&self, _id: Id, storage: &Option<Memory>, o: &mut Out<Self>) -> PizzeriaState {
        match self {
            Pizzeria::Queue {
                workers, orders, ..
            } => {
                for order in 0..*orders {
                    o.choose_random(choice_key(order), handouts(order, workers));
                }
                PizzeriaState::Queue {
                    orders: vec![Slot::Visible; *orders as usize],
                }
            }
            Pizzeria::Worker { .. } => PizzeriaState::Worker {
                baking: BTreeSet::new(),
                awaiting: BTreeSet::new(),
            },
            Pizzeria::House { door, .. } => {
                let memory = if door.durable() {
                    storage.clone().unwrap_or_default()
                } else {
                    Memory::new()
                };
                if matches!(door, Door::Window { .. }) && !memory.is_empty() {
                    o.set_timer(Timer::HouseClock, model_timeout());
                }
                PizzeriaState::House {
                    memory,
                    pending: Vec::new(),
                    now: 0,
                }
            }
        }
    }

    fn on_random(&self, _id: Id, state: &mut Cow<PizzeriaState>, h: &Handout, o: &mut Out<Self>) {
        let Pizzeria::Queue { policy, .. } = self else {
            return;
        };
        let PizzeriaState::Queue { orders } = state.to_mut() else {
            return;
        };
        let slot = &mut orders[h.order as usize];
        if *slot != Slot::Visible {
            return;
        }
        o.send(h.worker, Msg::Task { order: h.order });
        *slot = match policy {
            QueuePolicy::DeleteOnHandout => Slot::Gone,
            QueuePolicy::AckBeforeWork | QueuePolicy::AckAfterWork => {
                o.set_timer(Timer::VisibilityTimeout { order: h.order }, model_timeout());
                Slot::HandedOut { worker: h.worker }
            }
        };
    }

    fn on_msg(&self, id: Id, state: &mut Cow<PizzeriaState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match (self, &**state, msg) {
            // The queue deletes on ack. Ack-before-work confirms only the current holder's ack.
            (
                Pizzeria::Queue { policy, .. },
                PizzeriaState::Queue { orders },
                Msg::Ack { order },
            ) => {
                let slot = orders[order as usize].clone();
                match policy {
                    QueuePolicy::AckAfterWork if slot != Slot::Gone => {
                        o.cancel_timer(Timer::VisibilityTimeout { order });
                        o.remove_random(choice_key(order));
                        set_slot(state, order, Slot::Gone);
                    }
                    QueuePolicy::AckBeforeWork if slot == (Slot::HandedOut { worker: src }) => {
                        o.cancel_timer(Timer::VisibilityTimeout { order });
                        set_slot(state, order, Slot::Gone);
                        o.send(src, Msg::AckConfirmed { order });
                    }
                    QueuePolicy::AckBeforeWork => o.send(src, Msg::AckRefused { order }),
                    _ => {}
                }
            }
            (
                Pizzeria::Worker { policy, queue, .. },
                PizzeriaState::Worker { .. },
                Msg::Task { order },
            ) => {
                if *policy == QueuePolicy::AckBeforeWork {
                    o.send(*queue, Msg::Ack { order });
                    worker_mut(state).1.insert(order);
                } else {
                    start_baking(state, order, o);
                }
            }
            (
                Pizzeria::Worker { .. },
                PizzeriaState::Worker { awaiting, .. },
                Msg::AckConfirmed { order },
            ) if awaiting.contains(&order) => {
                worker_mut(state).1.remove(&order);
                start_baking(state, order, o);
            }
            (
                Pizzeria::Worker { .. },
                PizzeriaState::Worker { awaiting, .. },
                Msg::AckRefused { order },
            ) if awaiting.contains(&order) => {
                worker_mut(state).1.remove(&order);
            }
            // Ack-after-work: the house has the pie (or already had one), so the order is done.
            (
                Pizzeria::Worker {
                    policy: QueuePolicy::AckAfterWork,
                    queue,
                    ..
                },
                PizzeriaState::Worker { .. },
                Msg::Receipt { order, .. },
            ) => o.send(*queue, Msg::Ack { order }),
            (
                Pizzeria::House { door, .. },
                PizzeriaState::House {
                    memory,
                    pending,
                    now,
                },
                Msg::Pie { order },
            ) => {
                let fp = pie_fingerprint(order);
                let retention = match door {
                    Door::Window { window } => Retention::Window(u64::from(*window)),
                    _ => Retention::Forever,
                };
                let now = u64::from(*now);
                match door {
                    Door::Plain => o.send(src, Msg::Receipt { order, kept: true }),
                    // One door, busy with the second step of the last pie: this one waits.
                    Door::RecordFirst | Door::AcceptFirst if !pending.is_empty() => {}
                    _ => {
                        // The library's decision code, here and in every deduplicating door.
                        let decision = dedup::decide(memory.get(&order), &fp, retention, now);
                        if !decision.runs_effect() {
                            o.send(src, Msg::Receipt { order, kept: false });
                            return;
                        }
                        let then = match door {
                            // Check and record in one step.
                            Door::Idempotent
                            | Door::PerHost
                            | Door::Forgetful
                            | Door::Window { .. } => {
                                remember(state, *door, order, now, o);
                                o.send(src, Msg::Receipt { order, kept: true });
                                return;
                            }
                            Door::CheckThenAct => Then::RecordAndKeep,
                            Door::RecordFirst => {
                                remember(state, *door, order, now, o);
                                Then::Keep
                            }
                            Door::AcceptFirst => {
                                o.send(src, Msg::Receipt { order, kept: true });
                                Then::Record
                            }
                            Door::Plain => unreachable!("the plain door keeps every pie"),
                        };
                        // The second step is a note to self, lost only if the house crashes.
                        let pending = house_pending(state);
                        pending.push((order, src));
                        pending.sort();
                        o.send(
                            id,
                            Msg::Note {
                                order,
                                worker: src,
                                then,
                            },
                        );
                    }
                }
            }
            // The second step, only for work this run of the house still has pending (a note
            // from before a restart is ignored: the step is lost with the crash).
            (
                Pizzeria::House { door, .. },
                PizzeriaState::House { pending, now, .. },
                Msg::Note {
                    order,
                    worker,
                    then,
                },
            ) if pending.contains(&(order, worker)) => {
                let now = u64::from(*now);
                let pending = house_pending(state);
                let k = pending
                    .iter()
                    .position(|&p| p == (order, worker))
                    .expect("pending");
                pending.remove(k);
                match then {
                    // No second look: whatever arrived since, this pie is kept.
                    Then::RecordAndKeep => {
                        remember(state, *door, order, now, o);
                        o.send(worker, Msg::Receipt { order, kept: true });
                    }
                    Then::Keep => o.send(worker, Msg::Receipt { order, kept: true }),
                    Then::Record => remember(state, *door, order, now, o),
                }
            }
            _ => {}
        }
    }

    fn on_timeout(
        &self,
        _id: Id,
        state: &mut Cow<PizzeriaState>,
        timer: &Timer,
        o: &mut Out<Self>,
    ) {
        match (self, timer) {
            (
                Pizzeria::House {
                    door: Door::Window { window },
                    ..
                },
                Timer::HouseClock,
            ) => {
                if let PizzeriaState::House { now, .. } = state.to_mut() {
                    *now += 1;
                    // Enough ticks for an ID recorded at the start to be forgotten; no more.
                    if *now <= *window {
                        o.set_timer(Timer::HouseClock, model_timeout());
                    }
                }
            }
            (Pizzeria::Queue { workers, .. }, &Timer::VisibilityTimeout { order }) => {
                set_slot(state, order, Slot::Visible);
                o.choose_random(choice_key(order), handouts(order, workers));
            }
            (
                Pizzeria::Worker {
                    no,
                    first_house,
                    doors,
                    ..
                },
                &Timer::Baked { order },
            ) if matches!(&**state, PizzeriaState::Worker { baking, .. } if baking.contains(&order)) =>
            {
                worker_mut(state).0.remove(&order);
                // The door of this worker's host, where each host has its own.
                let door = first_house + order as usize * doors + if *doors > 1 { *no } else { 0 };
                o.send(Id::from(door), Msg::Pie { order });
            }
            _ => {}
        }
    }
}

/// Records `order` as accepted at `now`, in storage if the door's memory is durable; a window
/// house's clock starts (or keeps) ticking so the ID can be forgotten.
fn remember(
    state: &mut Cow<PizzeriaState>,
    door: Door,
    order: Order,
    now: u64,
    o: &mut Out<Pizzeria>,
) {
    if let PizzeriaState::House { memory, now: t, .. } = state.to_mut() {
        memory.insert(order, Record::completed(pie_fingerprint(order), (), now));
        if door.durable() {
            o.save(memory.clone());
        }
        if let Door::Window { window } = door {
            if *t <= window {
                o.set_timer(Timer::HouseClock, model_timeout());
            }
        }
    }
}

fn house_pending<'a>(state: &'a mut Cow<'_, PizzeriaState>) -> &'a mut Vec<(Order, Id)> {
    match state.to_mut() {
        PizzeriaState::House { pending, .. } => pending,
        _ => unreachable!("house_pending on a non-house"),
    }
}

fn set_slot(state: &mut Cow<PizzeriaState>, order: Order, slot: Slot) {
    if let PizzeriaState::Queue { orders } = state.to_mut() {
        orders[order as usize] = slot;
    }
}

fn worker_mut<'a>(
    state: &'a mut Cow<'_, PizzeriaState>,
) -> (&'a mut BTreeSet<Order>, &'a mut BTreeSet<Order>) {
    match state.to_mut() {
        PizzeriaState::Worker { baking, awaiting } => (baking, awaiting),
        _ => unreachable!("worker_mut on a non-worker"),
    }
}

fn start_baking(state: &mut Cow<PizzeriaState>, order: Order, o: &mut Out<Pizzeria>) {
    if worker_mut(state).0.insert(order) {
        o.set_timer(Timer::Baked { order }, model_timeout());
    }
}

/// The model's configuration, readable by `is_stall`.
#[derive(Clone, Debug)]
pub struct Setup {
    pub workers: usize,
}

/// What makes one pizzeria design differ from another.
#[derive(Clone, Copy, Debug)]
pub struct PizzeriaCfg {
    /// How the queue hands orders out and forgets them.
    pub queue: QueuePolicy,
    /// What a house does with a pie at its door.
    pub door: Door,
    /// Whether houses may crash (their durable memory, if any, survives in storage).
    pub house_may_crash: bool,
}

impl PizzeriaCfg {
    /// The design's world at sizes `p`, with symmetry reduction over workers and orders (none
    /// for per-host doors: a worker and its host's doors would have to move together, and the
    /// reduction does not know that layout).
    pub fn into_world(self, p: &Params) -> PizzeriaWorld {
        let world = world(p, self.queue, self.door, self.house_may_crash);
        if self.door == Door::PerHost {
            world
        } else {
            world.with_symmetry_packed(crate::models::world::Symmetry {
                representative,
                packing: Some(crate::models::world::Packing { pack, unpack }),
            })
        }
    }
}

/// A pizzeria world: the queue, `p.workers` workers and one house per order (with
/// [`Door::PerHost`], one door per order and worker's host), with `p`'s faults.
fn world(p: &Params, policy: QueuePolicy, door: Door, houses_crash: bool) -> PizzeriaWorld {
    let queue = Id::from(0);
    let workers: Vec<Id> = (1..=p.workers as usize).map(Id::from).collect();
    let first_house = 1 + p.workers as usize;
    let doors = if door == Door::PerHost {
        p.workers as usize
    } else {
        1
    };
    let mut model = ActorModel::new(
        Setup {
            workers: p.workers as usize,
        },
        History::placing(0..p.orders),
    )
    .actor(Pizzeria::Queue {
        policy,
        workers: workers.clone(),
        orders: p.orders,
    })
    .init_network(Network::new_unordered_nonduplicating([]))
    .lossy_network(if p.losses > 0 {
        stateright::actor::LossyNetwork::Yes
    } else {
        stateright::actor::LossyNetwork::No
    })
    .record_msg_out(World::<Pizzeria, Setup>::effects);
    for no in 0..p.workers as usize {
        model = model.actor(Pizzeria::Worker {
            no,
            policy,
            queue,
            first_house,
            doors,
        });
    }
    for no in 0..p.orders as usize {
        for h in 0..doors {
            let host = (doors > 1).then_some(h);
            model = model.actor(Pizzeria::House { no, door, host });
        }
    }
    let actors = first_house + p.orders as usize * doors;
    let crashable = (0..actors)
        .map(|i| (1..first_house).contains(&i) || (i >= first_house && houses_crash))
        .collect();
    World::new(model, Faults::of(p), crashable, is_stall)
}

/// A visibility timeout is a stall when the order is still being worked on: a live worker is
/// baking it, or a message about it is still on its way (and would be acted on). Otherwise the order really is stuck, and the timeout is how the queue
/// recovers it — no fault needed.
fn is_stall(
    model: &ActorModel<Pizzeria, Setup, History>,
    state: &State<Pizzeria>,
    _actor: Id,
    timer: &Timer,
) -> bool {
    let &Timer::VisibilityTimeout { order } = timer else {
        return false;
    };
    // A worker waiting for a confirmation that will never come (its ack was lost) is not
    // working on the order; only one still baking it is.
    let baking_by_live_worker = (1..=model.cfg.workers).any(|i| {
        !state.crashed[i]
            && matches!(&*state.actor_states[i],
                PizzeriaState::Worker { baking, .. } if baking.contains(&order))
    });
    // A message left over that its receiver would ignore is not work under way.
    let acted_on_in_flight = state.network.iter_deliverable().any(|env| {
        env.msg.order() == order
            && (state.crashed[usize::from(env.dst)]
                // A pie waiting at a one-pie-at-a-time door is work under way too.
                || matches!(&*state.actor_states[usize::from(env.dst)],
                    PizzeriaState::House { pending, .. } if !pending.is_empty())
                || crate::models::world::would_act(model, state, env))
    });
    baking_by_live_worker || acted_on_in_flight
}

/// What the pizzeria's symmetry reduction treats as interchangeable.
pub const SYMMETRY: &str = "workers and orders";

/// The world type of every pizzeria design.
pub type PizzeriaWorld = World<Pizzeria, Setup>;

/// Houses with the idempotent or per-host door stand for the real inbox (see
/// [`crate::models::house`]); the broken doors do not: each is the inbox with one thing wrong.
impl crate::models::house::StoreHouse for Pizzeria {
    fn remembered(&self, state: &PizzeriaState) -> Option<crate::models::house::Remembered> {
        match (self, state) {
            (
                Pizzeria::House {
                    door: Door::Idempotent | Door::PerHost,
                    ..
                },
                PizzeriaState::House { memory, .. },
            ) => Some(crate::models::house::remembered_of(memory, store_key)),
            _ => None,
        }
    }

    fn delivery(&self, _state: &PizzeriaState, msg: &Msg) -> Option<(String, Vec<u8>)> {
        match *msg {
            // The payload whose fingerprint the door decides on.
            Msg::Pie { order } => {
                Some((store_key(order), crate::models::world::pie_payload(order)))
            }
            _ => None,
        }
    }

    fn recovered(&self, storage: Option<&Memory>) -> crate::models::house::Remembered {
        storage.map_or_else(Default::default, |m| {
            crate::models::house::remembered_of(m, store_key)
        })
    }

    fn clock(&self, state: &PizzeriaState) -> crate::dedup::Millis {
        match state {
            PizzeriaState::House { now, .. } => u64::from(*now),
            _ => 0,
        }
    }
}

/// The simulator's timings ([`crate::models::simulate`]): the visibility timeout is `--timeout`, the
/// oven is the work, and a window house's clock ticks once per timeout.
impl crate::models::simulate::SimCast for Pizzeria {
    fn duration(
        timer: &Timer,
        p: &crate::models::simulate::SimParams,
        rng: &mut crate::models::simulate::Rng,
    ) -> crate::models::simulate::Micros {
        match timer {
            Timer::VisibilityTimeout { .. } | Timer::HouseClock => {
                use crate::models::simulate::{MAX_SECS, MIN_TIMEOUT};
                (p.timeout.clamp(MIN_TIMEOUT, MAX_SECS) * 1e6) as u64
            }
            Timer::Baked { .. } => p.work.sample(rng),
        }
    }

    fn pie(msg: &Msg) -> Option<Order> {
        match *msg {
            Msg::Pie { order } => Some(order),
            _ => None,
        }
    }

    fn handout(msg: &Msg) -> Option<Order> {
        match *msg {
            Msg::Task { order } => Some(order),
            _ => None,
        }
    }
}
