//! Bob's pizzeria, the cast shared by the queue designs: a persistent queue, workers who take an
//! order, bake it and deliver the pie, and houses that receive pies. A design picks how the queue
//! hands orders out ([`QueuePolicy`]) and how a house treats a pie at its door ([`Door`]).
//!
//! Actor ids: `0` is the queue, `1..=workers` are the workers, then one house per order
//! (order `o` goes to house `o`).

use super::world::{Faults, History, Message, Order, State, World};
use super::Params;
use crate::dedup::{self, Fingerprint, Record, Retention};
use stateright::actor::{model_timeout, Actor, ActorModel, ActorModelAction, Id, Network, Out};
use stateright::Model;
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
}

impl Msg {
    fn order(&self) -> Order {
        match *self {
            Msg::Task { order }
            | Msg::Ack { order }
            | Msg::AckConfirmed { order }
            | Msg::AckRefused { order }
            | Msg::Pie { order }
            | Msg::Receipt { order, .. } => order,
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
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The queue's visibility timeout for an order handed out and not yet acked.
    VisibilityTimeout { order: Order },
    /// A worker's oven: the pie for this order is ready.
    Baked { order: Order },
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timer::VisibilityTimeout { order } => write!(f, "visibility timeout for order {order}"),
            Timer::Baked { order } => write!(f, "oven timer for order {order}"),
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
        write!(f, "Handout {{ order: {}, to: worker {} }}", self.order, self.worker_no)
    }
}

impl fmt::Display for Handout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {} for order {}", self.worker_no, self.order)
    }
}

/// Where the queue thinks an order is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Waiting to be handed out.
    Visible,
    /// Handed out to this worker, not yet acked.
    HandedOut { worker: Id },
    /// Deleted.
    Gone,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PizzeriaState {
    Queue {
        orders: Vec<Slot>,
    },
    /// `awaiting`: acked on receipt, waiting for the queue's confirmation (ack-before-work).
    Worker {
        baking: BTreeSet<Order>,
        awaiting: BTreeSet<Order>,
    },
    /// `memory`: the order IDs the house has accepted (idempotent door only, kept in storage).
    House {
        memory: BTreeMap<Order, Record<()>>,
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
    },
    House {
        no: usize,
        door: Door,
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

fn choice_key(order: Order) -> String {
    format!("order {order}")
}

/// The payload fingerprint of an order's pie, as the house's decision core sees it.
fn pie_fingerprint(order: Order) -> Fingerprint {
    Fingerprint::of(&[order])
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
            Pizzeria::House { no, .. } => format!("house {no}"),
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
            Pizzeria::House { door, .. } => PizzeriaState::House {
                memory: match door {
                    Door::Idempotent => storage.clone().unwrap_or_default(),
                    Door::Plain => Memory::new(),
                },
            },
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

    fn on_msg(
        &self,
        _id: Id,
        state: &mut Cow<PizzeriaState>,
        src: Id,
        msg: Msg,
        o: &mut Out<Self>,
    ) {
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
            (Pizzeria::House { door, .. }, PizzeriaState::House { memory }, Msg::Pie { order }) => {
                match door {
                    Door::Plain => o.send(src, Msg::Receipt { order, kept: true }),
                    Door::Idempotent => {
                        let fp = pie_fingerprint(order);
                        // Check and record in one step: this is the library's decision code.
                        let decision =
                            dedup::decide(memory.get(&order), &fp, Retention::Forever, 0);
                        let kept = decision.runs_effect();
                        if kept {
                            let mut memory = memory.clone();
                            memory.insert(order, Record::completed(fp, (), 0));
                            o.save(memory.clone());
                            *state.to_mut() = PizzeriaState::House { memory };
                        }
                        o.send(src, Msg::Receipt { order, kept });
                    }
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
            (Pizzeria::Queue { workers, .. }, &Timer::VisibilityTimeout { order }) => {
                set_slot(state, order, Slot::Visible);
                o.choose_random(choice_key(order), handouts(order, workers));
            }
            (Pizzeria::Worker { first_house, .. }, &Timer::Baked { order }) if matches!(&**state, PizzeriaState::Worker { baking, .. } if baking.contains(&order)) =>
            {
                worker_mut(state).0.remove(&order);
                o.send(Id::from(first_house + order as usize), Msg::Pie { order });
            }
            _ => {}
        }
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

/// A pizzeria world: the queue, `p.workers` workers and one house per order, with `p`'s faults.
pub fn world(
    p: &Params,
    policy: QueuePolicy,
    door: Door,
    houses_crash: bool,
) -> World<Pizzeria, Setup> {
    let queue = Id::from(0);
    let workers: Vec<Id> = (1..=p.workers as usize).map(Id::from).collect();
    let first_house = 1 + p.workers as usize;
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
        });
    }
    for no in 0..p.orders as usize {
        model = model.actor(Pizzeria::House { no, door });
    }
    let actors = 1 + p.workers as usize + p.orders as usize;
    let crashable = (0..actors)
        .map(|i| (1..first_house).contains(&i) || (i >= first_house && houses_crash))
        .collect();
    World::new(
        model,
        Faults {
            crashes: p.crashes,
            losses: p.losses,
            stalls: p.stalls,
        },
        crashable,
        is_stall,
    )
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
                || model
                    .next_state(
                        state,
                        ActorModelAction::Deliver {
                            src: env.src,
                            dst: env.dst,
                            msg: env.msg.clone(),
                        },
                    )
                    .is_some())
    });
    baking_by_live_worker || acted_on_in_flight
}

/// The world type of every pizzeria design.
pub type PizzeriaWorld = World<Pizzeria, Setup>;
