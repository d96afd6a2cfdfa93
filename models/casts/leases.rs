//! The cast of the coordinating-consumers designs (the seed's "pass the task to multiple
//! consumers, and ask them to co-ordinate amongst themselves which will execute it"): the queue
//! gives every order to every worker; the workers ask a lock for a lease on the order, and only
//! the holder bakes and delivers. A lease that runs out (the lock's timer) passes to a waiting
//! worker with the next fencing token. How a house treats a pie is the design's choice
//! ([`Door`]).
//!
//! The lock's lease timer firing while its holder is still at work is the stall fault, as the
//! queue's visibility timeout is in the pizzeria: the lock cannot tell a paused holder from a
//! dead one.
//!
//! Actor ids: `0` is the queue, `1..=workers` the workers, then the lock, then one house per order.

use crate::dedup::{self, Record, Retention};
use crate::models::symmetry;
use crate::models::world::{
    choice_key, pie_fingerprint, Faults, History, Message, Order, State, World,
};
use crate::models::Params;
use stateright::actor::{model_timeout, Actor, ActorModel, Id, Network, Out};
use stateright::{Rewrite, RewritePlan};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A fencing token: each lease on an order gets a higher one than the last.
pub type Token = u8;

/// What a house does with a pie at its door.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Door {
    /// Keeps every pie; the token is ignored.
    Plain,
    /// Fencing: keeps the highest token it has seen per order and turns away a pie with a lower one.
    Fenced,
    /// Fencing, and the library's dedup on the order ID ([`dedup::decide`]): turns away a lower
    /// token, and any second pie for an order.
    FencedDedup,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Queue → every worker: here is an order (coordinate among yourselves).
    Task { order: Order },
    /// Worker → lock: may I have the lease on this order?
    Acquire { order: Order },
    /// Lock → worker: the lease is yours, with this fencing token.
    Granted { order: Order, token: Token },
    /// Worker → house: a pie, with the token of the lease it was baked under.
    Pie { order: Order, token: Token },
    /// House → worker: the pie was kept, or turned away. (A kept pie is the effect.)
    Receipt { order: Order, kept: bool },
    /// Worker → lock: the order is done.
    Done { order: Order },
    /// Lock → waiting worker: someone else has done this order; drop it.
    Finished { order: Order },
}

impl Msg {
    fn order(&self) -> Order {
        match *self {
            Msg::Task { order }
            | Msg::Acquire { order }
            | Msg::Granted { order, .. }
            | Msg::Pie { order, .. }
            | Msg::Receipt { order, .. }
            | Msg::Done { order }
            | Msg::Finished { order } => order,
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
            Msg::Acquire { order } => write!(f, "a request for the lease on order {order}"),
            Msg::Granted { order, token } => {
                write!(f, "the lease on order {order} with fencing token {token}")
            }
            Msg::Pie { order, token } => write!(f, "a pie for order {order} (token {token})"),
            Msg::Receipt { order, kept: true } => {
                write!(f, "a receipt: pie for order {order} kept")
            }
            Msg::Receipt { order, kept: false } => {
                write!(f, "a receipt: pie for order {order} turned away")
            }
            Msg::Done { order } => write!(f, "\"order {order} is done\""),
            Msg::Finished { order } => write!(f, "\"order {order} was done by someone else\""),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The lock: the lease on this order runs out.
    LeaseExpiry { order: Order },
    /// A worker's oven: the pie for this order is ready.
    Baked { order: Order },
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timer::LeaseExpiry { order } => write!(f, "lease timer for order {order}"),
            Timer::Baked { order } => write!(f, "oven timer for order {order}"),
        }
    }
}

/// The lock's choice of waiting worker for an expired lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    pub order: Order,
    pub worker: Id,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Workers are ids 1..=workers.
        write!(
            f,
            "worker {} for the lease on order {}",
            usize::from(self.worker) - 1,
            self.order
        )
    }
}

/// The lock's view of one order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The current holder and its token.
    pub holder: Option<(Id, Token)>,
    /// The last token handed out (tokens start at 1).
    pub last_token: Token,
    /// Workers asking for the lease.
    pub waiting: BTreeSet<Id>,
    pub done: bool,
}

/// How far a worker is with an order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Asked the lock; waiting for the lease.
    Waiting,
    /// Holds the lease with this token; the pie is in the oven.
    Baking { token: Token },
    /// The pie is on its way; waiting for the house's receipt.
    Delivered,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LeaseState {
    Queue,
    Worker {
        orders: BTreeMap<Order, Stage>,
    },
    Lock {
        leases: Vec<Lease>,
    },
    /// `highest`: the highest token seen per order; `memory`: accepted order IDs (dedup door).
    House {
        highest: BTreeMap<Order, Token>,
        memory: BTreeMap<Order, Record<()>>,
    },
}

#[derive(Clone, Debug)]
pub enum Leasing {
    Queue {
        workers: Vec<Id>,
        orders: Order,
    },
    Worker {
        no: usize,
        lock: Id,
        first_house: usize,
    },
    Lock {
        orders: Order,
    },
    House {
        no: usize,
        door: Door,
    },
}

impl Actor for Leasing {
    type Msg = Msg;
    type Timer = Timer;
    type State = LeaseState;
    type Storage = ();
    type Random = Grant;

    fn name(&self) -> String {
        match self {
            Leasing::Queue { .. } => "queue".into(),
            Leasing::Worker { no, .. } => format!("worker {no}"),
            Leasing::Lock { .. } => "lock".into(),
            Leasing::House { no, .. } => format!("house {no}"),
        }
    }

    fn on_start(&self, _id: Id, _storage: &Option<()>, o: &mut Out<Self>) -> LeaseState {
        match self {
            Leasing::Queue { workers, orders } => {
                for order in 0..*orders {
                    for &w in workers {
                        o.send(w, Msg::Task { order });
                    }
                }
                LeaseState::Queue
            }
            Leasing::Worker { .. } => LeaseState::Worker {
                orders: BTreeMap::new(),
            },
            Leasing::Lock { orders } => LeaseState::Lock {
                leases: vec![Lease::default(); *orders as usize],
            },
            Leasing::House { .. } => LeaseState::House {
                highest: BTreeMap::new(),
                memory: BTreeMap::new(),
            },
        }
    }

    fn on_random(&self, _id: Id, state: &mut Cow<LeaseState>, g: &Grant, o: &mut Out<Self>) {
        if let LeaseState::Lock { leases } = state.to_mut() {
            let lease = &mut leases[g.order as usize];
            if lease.holder.is_none() && !lease.done && lease.waiting.remove(&g.worker) {
                grant(lease, g.order, g.worker, o);
            }
        }
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<LeaseState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match (self, &**state, msg) {
            (Leasing::Worker { lock, .. }, LeaseState::Worker { orders }, Msg::Task { order })
                if !orders.contains_key(&order) =>
            {
                o.send(*lock, Msg::Acquire { order });
                worker_orders(state).insert(order, Stage::Waiting);
            }
            (
                Leasing::Worker { .. },
                LeaseState::Worker { orders },
                Msg::Granted { order, token },
            ) if orders.get(&order) == Some(&Stage::Waiting) => {
                worker_orders(state).insert(order, Stage::Baking { token });
                o.set_timer(Timer::Baked { order }, model_timeout());
            }
            (
                Leasing::Worker { lock, .. },
                LeaseState::Worker { orders },
                Msg::Receipt { order, .. },
            ) if orders.get(&order) == Some(&Stage::Delivered) => {
                worker_orders(state).remove(&order);
                o.send(*lock, Msg::Done { order });
            }
            (Leasing::Worker { .. }, LeaseState::Worker { orders }, Msg::Finished { order })
                if orders.get(&order) == Some(&Stage::Waiting) =>
            {
                worker_orders(state).remove(&order);
            }
            (Leasing::Lock { .. }, LeaseState::Lock { leases }, Msg::Acquire { order }) => {
                let lease = &leases[order as usize];
                if lease.done {
                    o.send(src, Msg::Finished { order });
                } else if lease.holder.is_none() {
                    let lease = &mut lock_leases(state)[order as usize];
                    grant(lease, order, src, o);
                } else if !lease.waiting.contains(&src) {
                    lock_leases(state)[order as usize].waiting.insert(src);
                }
            }
            (Leasing::Lock { .. }, LeaseState::Lock { leases }, Msg::Done { order })
                if !leases[order as usize].done =>
            {
                let lease = &mut lock_leases(state)[order as usize];
                lease.done = true;
                lease.holder = None;
                for w in std::mem::take(&mut lease.waiting) {
                    o.send(w, Msg::Finished { order });
                }
                o.cancel_timer(Timer::LeaseExpiry { order });
                o.remove_random(choice_key(order));
            }
            (
                Leasing::House { door, .. },
                LeaseState::House { highest, memory },
                Msg::Pie { order, token },
            ) => {
                let kept = match door {
                    Door::Plain => true,
                    Door::Fenced => highest.get(&order).is_none_or(|&h| token >= h),
                    Door::FencedDedup => {
                        // The library's decision, keyed by the order ID: a second pie is a
                        // duplicate whatever its token.
                        highest.get(&order).is_none_or(|&h| token >= h)
                            && dedup::decide(
                                memory.get(&order),
                                &pie_fingerprint(order),
                                Retention::Forever,
                                0,
                            )
                            .runs_effect()
                    }
                };
                // Every house notes the highest token it has seen; only fenced doors act on it.
                if let LeaseState::House { highest, memory } = state.to_mut() {
                    let h = highest.entry(order).or_insert(token);
                    *h = (*h).max(token);
                    if kept && *door == Door::FencedDedup {
                        memory.insert(order, Record::completed(pie_fingerprint(order), (), 0));
                    }
                }
                o.send(src, Msg::Receipt { order, kept });
            }
            _ => {}
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<LeaseState>, timer: &Timer, o: &mut Out<Self>) {
        match (self, &**state, timer) {
            (
                Leasing::Worker { first_house, .. },
                LeaseState::Worker { orders },
                &Timer::Baked { order },
            ) => {
                if let Some(&Stage::Baking { token }) = orders.get(&order) {
                    worker_orders(state).insert(order, Stage::Delivered);
                    o.send(
                        Id::from(first_house + order as usize),
                        Msg::Pie { order, token },
                    );
                }
            }
            // The lease runs out: the next waiting worker may have it.
            (Leasing::Lock { .. }, LeaseState::Lock { leases }, &Timer::LeaseExpiry { order }) => {
                let lease = &leases[order as usize];
                if lease.holder.is_some() && !lease.done {
                    let lease = &mut lock_leases(state)[order as usize];
                    lease.holder = None;
                    let choices: Vec<Grant> = lease
                        .waiting
                        .iter()
                        .map(|&worker| Grant { order, worker })
                        .collect();
                    if !choices.is_empty() {
                        o.choose_random(choice_key(order), choices);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Gives `worker` the lease on `order` with the next token.
fn grant(lease: &mut Lease, order: Order, worker: Id, o: &mut Out<Leasing>) {
    lease.last_token += 1;
    lease.holder = Some((worker, lease.last_token));
    o.send(
        worker,
        Msg::Granted {
            order,
            token: lease.last_token,
        },
    );
    o.set_timer(Timer::LeaseExpiry { order }, model_timeout());
}

fn worker_orders<'a>(state: &'a mut Cow<'_, LeaseState>) -> &'a mut BTreeMap<Order, Stage> {
    match state.to_mut() {
        LeaseState::Worker { orders } => orders,
        _ => unreachable!("worker_orders on a non-worker"),
    }
}

fn lock_leases<'a>(state: &'a mut Cow<'_, LeaseState>) -> &'a mut Vec<Lease> {
    match state.to_mut() {
        LeaseState::Lock { leases } => leases,
        _ => unreachable!("lock_leases on a non-lock"),
    }
}

/// The model's configuration.
#[derive(Clone, Debug)]
pub struct Setup {
    pub workers: usize,
}

/// The lease timer is a stall when the holder is alive and still at the order: baking it,
/// waiting for its receipt, or with a message about it on the way that would be acted on.
fn is_stall(
    model: &ActorModel<Leasing, Setup, History>,
    state: &State<Leasing>,
    actor: Id,
    timer: &Timer,
) -> bool {
    let &Timer::LeaseExpiry { order } = timer else {
        return false;
    };
    let LeaseState::Lock { leases } = &*state.actor_states[usize::from(actor)] else {
        return false;
    };
    let Some((holder, _)) = leases[order as usize].holder else {
        return false;
    };
    if state.crashed[usize::from(holder)] {
        return false;
    }
    let at_work = matches!(&*state.actor_states[usize::from(holder)],
        LeaseState::Worker { orders } if matches!(orders.get(&order), Some(Stage::Baking { .. } | Stage::Delivered)));
    let on_the_way = state.network.iter_deliverable().any(|env| {
        env.msg.order() == order
            && (env.src == holder || env.dst == holder)
            && crate::models::world::would_act(model, state, env)
    });
    at_work || on_the_way
}

/// Workers are interchangeable.
fn representative(state: &State<Leasing>) -> State<Leasing> {
    let workers: Vec<usize> = state
        .actor_states
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(***s, LeaseState::Worker { .. }))
        .map(|(i, _)| i)
        .collect();
    symmetry::sort_actors(state, &workers)
}

/// What the symmetry reduction treats as interchangeable: the workers (one order by default).
pub const SYMMETRY: &str = "workers";

/// The world type of the coordinating-consumers designs.
pub type LeaseWorld = World<Leasing, Setup>;

/// A coordinating-consumers world at `p`: the queue, `p.workers` workers, the lock, one house
/// per order with `door`.
pub fn world(p: &Params, door: Door) -> LeaseWorld {
    let workers: Vec<Id> = (1..=p.workers as usize).map(Id::from).collect();
    let lock = Id::from(1 + workers.len());
    let first_house = 2 + workers.len();
    let mut model = ActorModel::new(
        Setup {
            workers: workers.len(),
        },
        History::placing(0..p.orders),
    )
    .actor(Leasing::Queue {
        workers: workers.clone(),
        orders: p.orders,
    })
    .init_network(Network::new_unordered_nonduplicating([]))
    .lossy_network(if p.losses > 0 {
        stateright::actor::LossyNetwork::Yes
    } else {
        stateright::actor::LossyNetwork::No
    })
    .record_msg_out(World::<Leasing, Setup>::effects);
    for no in 0..workers.len() {
        model = model.actor(Leasing::Worker {
            no,
            lock,
            first_house,
        });
    }
    model = model.actor(Leasing::Lock { orders: p.orders });
    for no in 0..p.orders as usize {
        model = model.actor(Leasing::House { no, door });
    }
    let actors = first_house + p.orders as usize;
    let crashable = (0..actors)
        .map(|i| (1..=workers.len()).contains(&i))
        .collect();
    World::new(model, Faults::of(p), crashable, is_stall).with_symmetry(representative)
}

// Relabelling workers (symmetry): the lock's leases and the grants name one.
impl Rewrite<Id> for LeaseState {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        match self {
            LeaseState::Lock { leases } => LeaseState::Lock {
                leases: leases
                    .iter()
                    .map(|l| Lease {
                        holder: l.holder.map(|(w, t)| (plan.rewrite(&w), t)),
                        last_token: l.last_token,
                        waiting: l.waiting.iter().map(|w| plan.rewrite(w)).collect(),
                        done: l.done,
                    })
                    .collect(),
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

impl Rewrite<Id> for Grant {
    fn rewrite<S>(&self, plan: &RewritePlan<Id, S>) -> Self {
        Grant {
            order: self.order,
            worker: plan.rewrite(&self.worker),
        }
    }
}

/// The fenced-dedup house stands for the real inbox behind a fence (see [`crate::models::house`]): a
/// pie the fence turns away never reaches the store. Houses here do not crash.
impl crate::models::house::StoreHouse for Leasing {
    fn remembered(&self, state: &LeaseState) -> Option<crate::models::house::Remembered> {
        match (self, state) {
            (
                Leasing::House {
                    door: Door::FencedDedup,
                    ..
                },
                LeaseState::House { memory, .. },
            ) => Some(crate::models::house::remembered_of(
                memory,
                crate::models::world::store_key,
            )),
            _ => None,
        }
    }

    fn delivery(&self, state: &LeaseState, msg: &Msg) -> Option<(String, Vec<u8>)> {
        match (state, msg) {
            (LeaseState::House { highest, .. }, &Msg::Pie { order, token })
                if highest.get(&order).is_none_or(|&h| token >= h) =>
            {
                let payload = crate::models::world::pie_payload(order);
                Some((crate::models::world::store_key(order), payload))
            }
            _ => None,
        }
    }
}
