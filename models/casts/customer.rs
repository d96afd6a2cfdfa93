//! The cast of the producer-retry designs: a customer who phones orders in, and calls again when
//! the call times out without a confirmation; behind the phone, the seed's sound pipeline —
//! ack-after-work delivery to an idempotent house that deduplicates by order ID with the
//! library's [`dedup::decide`].
//!
//! The ledger counts pies per *intended* order (the customer's order `o`, delivered to house `o`):
//! two calls for one pizza are one intended order. Whether the second call gets the same ID is
//! the design's choice ([`Ids`]).
//!
//! Actor ids: `0` is the customer, `1` the queue, `2..2 + workers` the workers, then one house
//! per intended order.

use crate::dedup::{self, Record, Retention};
use crate::models::world::{pie_fingerprint, Faults, History, Message, Order, State, World};
use crate::models::Params;
use stateright::actor::{model_timeout, Actor, ActorModel, Id, Network, Out};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Where an order's ID comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ids {
    /// The queue numbers each call it takes: a repeated call is a new order.
    QueueAssigned,
    /// The customer chooses a key per intended order and says it on every call; the queue, the
    /// workers and the house all use it as the order ID (end to end).
    CustomerKey,
}

/// An order ID as the pipeline sees it.
pub type OrderId = u8;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Customer → queue: a call ordering a pie for house `order`, with the customer's key if any.
    Call { order: Order, key: Option<OrderId> },
    /// Queue → customer: the call for `order` was taken, as order ID `id`.
    Confirmed { order: Order, id: OrderId },
    /// Queue → worker: bake entry `entry` of the queue (order ID `id`, for house `order`).
    Task {
        entry: u8,
        id: OrderId,
        order: Order,
    },
    /// Worker → queue: entry done.
    Ack { entry: u8 },
    /// Worker → house: a pie with its order ID.
    Pie {
        entry: u8,
        id: OrderId,
        order: Order,
    },
    /// House → worker: kept, or turned away as a duplicate of `id`. A kept pie is the effect.
    Receipt { entry: u8, order: Order, kept: bool },
}

impl Msg {
    /// What the message is about: the call (`None`) or a queue entry.
    fn entry(&self) -> Option<u8> {
        match *self {
            Msg::Call { .. } | Msg::Confirmed { .. } => None,
            Msg::Task { entry, .. }
            | Msg::Ack { entry }
            | Msg::Pie { entry, .. }
            | Msg::Receipt { entry, .. } => Some(entry),
        }
    }
}

impl Message for Msg {
    fn kept_pie(&self) -> Option<Order> {
        match *self {
            Msg::Receipt {
                order, kept: true, ..
            } => Some(order),
            _ => None,
        }
    }
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Call { order, key: None } => write!(f, "a call ordering a pie for house {order}"),
            Msg::Call {
                order,
                key: Some(key),
            } => write!(f, "a call ordering a pie for house {order}, key #{key}"),
            Msg::Confirmed { order, id } => {
                write!(f, "\"your pie for house {order} is order #{id}\"")
            }
            Msg::Task { id, order, .. } => write!(f, "order #{id} (house {order})"),
            Msg::Ack { entry } => write!(f, "an ack for queue entry {entry}"),
            Msg::Pie { id, .. } => write!(f, "a pie for order #{id}"),
            Msg::Receipt { kept: true, .. } => write!(f, "a receipt: pie kept"),
            Msg::Receipt { kept: false, .. } => {
                write!(f, "a receipt: duplicate pie turned away")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The customer gives up waiting for a confirmation and calls again.
    PhoneTimeout { order: Order },
    /// The queue's visibility timeout for an entry handed out and not yet acked.
    VisibilityTimeout { entry: u8 },
    /// A worker's oven.
    Baked { entry: u8 },
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timer::PhoneTimeout { order } => {
                write!(f, "patience for the call about house {order}")
            }
            Timer::VisibilityTimeout { entry } => {
                write!(f, "visibility timeout for queue entry {entry}")
            }
            Timer::Baked { entry } => write!(f, "oven timer for queue entry {entry}"),
        }
    }
}

/// The queue's choice of worker for an entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handout {
    pub entry: u8,
    pub id: OrderId,
    pub worker: Id,
}

impl fmt::Display for Handout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Workers are ids 2.. .
        write!(
            f,
            "worker {} for order #{}",
            usize::from(self.worker) - 2,
            self.id
        )
    }
}

/// One order the queue took.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    pub id: OrderId,
    /// The house the pie goes to (the customer's address, part of the order).
    pub order: Order,
    pub state: Slot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    Visible,
    HandedOut,
    Gone,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PhoneState {
    Customer {
        confirmed: BTreeSet<Order>,
    },
    Queue {
        entries: Vec<Entry>,
        next_id: OrderId,
    },
    Worker {
        baking: BTreeMap<u8, (OrderId, Order)>,
    },
    House {
        memory: BTreeMap<OrderId, Record<()>>,
    },
}

#[derive(Clone, Debug)]
pub enum Phone {
    Customer {
        queue: Id,
        orders: Order,
        ids: Ids,
    },
    Queue {
        workers: Vec<Id>,
    },
    Worker {
        no: usize,
        queue: Id,
        first_house: usize,
    },
    House {
        no: usize,
    },
}

fn call(order: Order, ids: Ids) -> Msg {
    Msg::Call {
        order,
        // The customer's key for an intended order: its own order number.
        key: (ids == Ids::CustomerKey).then_some(order),
    }
}

fn handouts(entry: u8, id: OrderId, workers: &[Id]) -> Vec<Handout> {
    workers
        .iter()
        .map(|&worker| Handout { entry, id, worker })
        .collect()
}

fn choice_key(entry: u8) -> String {
    format!("entry {entry}")
}

impl Actor for Phone {
    type Msg = Msg;
    type Timer = Timer;
    type State = PhoneState;
    type Storage = ();
    type Random = Handout;

    fn name(&self) -> String {
        match self {
            Phone::Customer { .. } => "customer".into(),
            Phone::Queue { .. } => "queue".into(),
            Phone::Worker { no, .. } => format!("worker {no}"),
            Phone::House { no } => format!("house {no}"),
        }
    }

    fn on_start(&self, _id: Id, _storage: &Option<()>, o: &mut Out<Self>) -> PhoneState {
        match self {
            Phone::Customer { queue, orders, ids } => {
                for order in 0..*orders {
                    o.send(*queue, call(order, *ids));
                    o.set_timer(Timer::PhoneTimeout { order }, model_timeout());
                }
                PhoneState::Customer {
                    confirmed: BTreeSet::new(),
                }
            }
            Phone::Queue { .. } => PhoneState::Queue {
                entries: Vec::new(),
                next_id: 0,
            },
            Phone::Worker { .. } => PhoneState::Worker {
                baking: BTreeMap::new(),
            },
            Phone::House { .. } => PhoneState::House {
                memory: BTreeMap::new(),
            },
        }
    }

    fn on_random(&self, _id: Id, state: &mut Cow<PhoneState>, h: &Handout, o: &mut Out<Self>) {
        if let PhoneState::Queue { entries, .. } = state.to_mut() {
            let entry = &mut entries[h.entry as usize];
            if entry.state == Slot::Visible {
                entry.state = Slot::HandedOut;
                o.send(
                    h.worker,
                    Msg::Task {
                        entry: h.entry,
                        id: entry.id,
                        order: entry.order,
                    },
                );
                o.set_timer(Timer::VisibilityTimeout { entry: h.entry }, model_timeout());
            }
        }
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<PhoneState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match (self, &**state, msg) {
            (
                Phone::Customer { .. },
                PhoneState::Customer { confirmed },
                Msg::Confirmed { order, .. },
            ) if !confirmed.contains(&order) => {
                o.cancel_timer(Timer::PhoneTimeout { order });
                if let PhoneState::Customer { confirmed } = state.to_mut() {
                    confirmed.insert(order);
                }
            }
            // Every call is taken as an order: with a key it keeps the key as its ID.
            (
                Phone::Queue { workers },
                PhoneState::Queue { entries, .. },
                Msg::Call { order, key },
            ) => {
                let entry = entries.len() as u8;
                let PhoneState::Queue { entries, next_id } = state.to_mut() else {
                    unreachable!()
                };
                let id = key.unwrap_or(*next_id);
                if key.is_none() {
                    *next_id += 1;
                }
                entries.push(Entry {
                    id,
                    order,
                    state: Slot::Visible,
                });
                o.send(src, Msg::Confirmed { order, id });
                o.choose_random(choice_key(entry), handouts(entry, id, workers));
            }
            (Phone::Queue { .. }, PhoneState::Queue { entries, .. }, Msg::Ack { entry })
                if entries[entry as usize].state != Slot::Gone =>
            {
                o.cancel_timer(Timer::VisibilityTimeout { entry });
                o.remove_random(choice_key(entry));
                if let PhoneState::Queue { entries, .. } = state.to_mut() {
                    entries[entry as usize].state = Slot::Gone;
                }
            }
            (
                Phone::Worker { .. },
                PhoneState::Worker { baking },
                Msg::Task { entry, id, order },
            ) if !baking.contains_key(&entry) => {
                if let PhoneState::Worker { baking } = state.to_mut() {
                    baking.insert(entry, (id, order));
                }
                o.set_timer(Timer::Baked { entry }, model_timeout());
            }
            (
                Phone::Worker { queue, .. },
                PhoneState::Worker { .. },
                Msg::Receipt { entry, .. },
            ) => o.send(*queue, Msg::Ack { entry }),
            (Phone::House { .. }, PhoneState::House { memory }, Msg::Pie { entry, id, order }) => {
                let fp = pie_fingerprint(order);
                // The library's decision, keyed by the order ID the pie carries.
                let kept = dedup::decide(memory.get(&id), &fp, Retention::Forever, 0).runs_effect();
                if kept {
                    if let PhoneState::House { memory } = state.to_mut() {
                        memory.insert(id, Record::completed(fp, (), 0));
                    }
                }
                o.send(src, Msg::Receipt { entry, order, kept });
            }
            _ => {}
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<PhoneState>, timer: &Timer, o: &mut Out<Self>) {
        match (self, &**state, timer) {
            // No confirmation yet: call again.
            (
                Phone::Customer { queue, ids, .. },
                PhoneState::Customer { .. },
                &Timer::PhoneTimeout { order },
            ) => {
                o.send(*queue, call(order, *ids));
                o.set_timer(Timer::PhoneTimeout { order }, model_timeout());
            }
            (
                Phone::Queue { workers },
                PhoneState::Queue { entries, .. },
                &Timer::VisibilityTimeout { entry },
            ) => {
                let id = entries[entry as usize].id;
                if let PhoneState::Queue { entries, .. } = state.to_mut() {
                    entries[entry as usize].state = Slot::Visible;
                }
                o.choose_random(choice_key(entry), handouts(entry, id, workers));
            }
            (
                Phone::Worker { first_house, .. },
                PhoneState::Worker { baking },
                &Timer::Baked { entry },
            ) => {
                if let Some(&(id, order)) = baking.get(&entry) {
                    if let PhoneState::Worker { baking } = state.to_mut() {
                        baking.remove(&entry);
                    }
                    o.send(
                        Id::from(first_house + order as usize),
                        Msg::Pie { entry, id, order },
                    );
                }
            }
            _ => {}
        }
    }
}

/// The model's configuration.
#[derive(Clone, Debug)]
pub struct Setup {
    pub workers: usize,
}

/// A timeout is a stall when what it waits for is still under way: for the customer, the call or
/// its confirmation is on the line; for the queue, a live worker is baking the entry or a message
/// about it is on its way (and would be acted on).
fn is_stall(
    model: &ActorModel<Phone, Setup, History>,
    state: &State<Phone>,
    _actor: Id,
    timer: &Timer,
) -> bool {
    match *timer {
        Timer::PhoneTimeout { order } => state.network.iter_deliverable().any(|env| {
            matches!(*env.msg, Msg::Call { order: o, .. } | Msg::Confirmed { order: o, .. } if o == order)
        }),
        Timer::VisibilityTimeout { entry } => {
            let baking = (0..model.cfg.workers).any(|k| {
                let i = 2 + k;
                !state.crashed[i]
                    && matches!(&*state.actor_states[i],
                        PhoneState::Worker { baking } if baking.contains_key(&entry))
            });
            baking
                || state.network.iter_deliverable().any(|env| {
                    env.msg.entry() == Some(entry)
                        && (state.crashed[usize::from(env.dst)]
                            || crate::models::world::would_act(model, state, env))
                })
        }
        Timer::Baked { .. } => false,
    }
}

/// No symmetry reduction: the customer's calls and the queue's order numbers are told apart.
pub const SYMMETRY: &str = "none";

/// The world type of the producer-retry designs.
pub type PhoneWorld = World<Phone, Setup>;

/// A producer-retry world at `p`: the customer with `p.orders` intended orders, the queue,
/// `p.workers` workers and one house per intended order.
pub fn world(p: &Params, ids: Ids) -> PhoneWorld {
    let queue = Id::from(1);
    let workers: Vec<Id> = (2..2 + p.workers as usize).map(Id::from).collect();
    let first_house = 2 + p.workers as usize;
    let mut model = ActorModel::new(
        Setup {
            workers: workers.len(),
        },
        History::placing(0..p.orders),
    )
    .actor(Phone::Customer {
        queue,
        orders: p.orders,
        ids,
    })
    .actor(Phone::Queue {
        workers: workers.clone(),
    })
    .init_network(Network::new_unordered_nonduplicating([]))
    .lossy_network(if p.losses > 0 {
        stateright::actor::LossyNetwork::Yes
    } else {
        stateright::actor::LossyNetwork::No
    })
    .record_msg_out(World::<Phone, Setup>::effects);
    for no in 0..workers.len() {
        model = model.actor(Phone::Worker {
            no,
            queue,
            first_house,
        });
    }
    for no in 0..p.orders as usize {
        model = model.actor(Phone::House { no });
    }
    let actors = first_house + p.orders as usize;
    let crashable = (0..actors).map(|i| (2..first_house).contains(&i)).collect();
    World::new(model, Faults::of(p), crashable, is_stall)
}

/// Every house here stands for the real inbox (see [`crate::models::house`]), keyed by the order ID
/// the pie carries. Houses here do not crash.
impl crate::models::house::StoreHouse for Phone {
    fn remembered(&self, state: &PhoneState) -> Option<crate::models::house::Remembered> {
        match state {
            PhoneState::House { memory } => {
                Some(crate::models::house::remembered_of(memory, |id| {
                    format!("order-#{id}")
                }))
            }
            _ => None,
        }
    }

    fn delivery(&self, _state: &PhoneState, msg: &Msg) -> Option<(String, Vec<u8>)> {
        match *msg {
            Msg::Pie { id, order, .. } => Some((
                format!("order-#{id}"),
                crate::models::world::pie_payload(order),
            )),
            _ => None,
        }
    }
}
