//! Symmetry reduction for the pizzeria: workers are interchangeable, and so are orders — an order
//! together with its house (order `o` always goes to house `o`), since the queue, the workers and
//! every door treat all orders alike. Relabelling workers and orders maps every run to a run with
//! the same ledger up to the order names, so every property (all stated over the ledger, for
//! every order alike) has the same verdict on both.
//!
//! The representative: each order gets a signature that does not depend on how workers or other
//! orders are named, each worker one in which orders appear only by their signatures; both groups
//! are sorted by signature, ties are broken by trying every order of the tied members (up to
//! [`MAX_CANDIDATES`] relabellings) and keeping the one whose fingerprint is lowest. Whatever the
//! ties, the result is a relabelling of the state, so the reduction is sound; it is canonical
//! (the same for every member of a class) whenever the candidates were not capped.

use super::{Handout, Memory, Msg, Pizzeria, PizzeriaState, Slot, Then, Timer};
use crate::dedup::{Fingerprint, Record};
use crate::models::engine::search::fingerprint;
use crate::models::symmetry::arrangements;
use crate::models::world::{choice_key, pie_fingerprint, Order, State};
use stateright::actor::{ActorModelState, Envelope, Id, Network, RandomChoices, Timers};
use std::sync::OnceLock;

/// The most relabellings tried to break ties in one state.
pub const MAX_CANDIDATES: usize = 24;

/// The pie fingerprints of orders 0..=255, computed once (SHA-256 is not free).
fn pie_fp(order: Order) -> Fingerprint {
    static ALL: OnceLock<Vec<Fingerprint>> = OnceLock::new();
    ALL.get_or_init(|| (0..=255).map(pie_fingerprint).collect())[order as usize]
}

/// The queue's choice keys for orders 0..=255, made once (they are strings).
fn key(order: Order) -> &'static str {
    static ALL: OnceLock<Vec<String>> = OnceLock::new();
    &ALL.get_or_init(|| (0..=255).map(choice_key).collect())[order as usize]
}

/// The cast's layout, read off a state: queue 0, workers 1..=w, then one house per order.
struct Layout {
    workers: usize,
    orders: usize,
}

impl Layout {
    fn of(state: &State<Pizzeria>) -> Self {
        let orders = match &*state.actor_states[0] {
            PizzeriaState::Queue { orders } => orders.len(),
            _ => 0,
        };
        Layout {
            workers: state.actor_states.len() - 1 - orders,
            orders,
        }
    }
    fn first_house(&self) -> usize {
        1 + self.workers
    }
}

/// The part an actor plays, without its name.
#[derive(Hash)]
enum Role {
    Queue,
    Worker,
    House,
}

fn role(layout: &Layout, id: Id) -> Role {
    match usize::from(id) {
        0 => Role::Queue,
        i if i < layout.first_house() => Role::Worker,
        _ => Role::House,
    }
}

/// A message with its order and worker names left out.
fn shape(msg: &Msg) -> (u8, bool, Option<Then>) {
    match *msg {
        Msg::Task { .. } => (0, false, None),
        Msg::Ack { .. } => (1, false, None),
        Msg::AckConfirmed { .. } => (2, false, None),
        Msg::AckRefused { .. } => (3, false, None),
        Msg::Pie { .. } => (4, false, None),
        Msg::Receipt { kept, .. } => (5, kept, None),
        Msg::Note { then, .. } => (6, false, Some(then)),
    }
}

fn sum<I: IntoIterator<Item = u64>>(hashes: I) -> u64 {
    hashes.into_iter().fold(0, u64::wrapping_add)
}

fn envelopes(network: &Network<Msg>) -> Vec<(&Envelope<Msg>, usize)> {
    match network {
        Network::UnorderedNonDuplicating(multiset) => {
            multiset.iter().map(|(e, &n)| (e, n)).collect()
        }
        // The pizzeria's network is always unordered and non-duplicating.
        _ => unreachable!("the pizzeria uses an unordered, non-duplicating network"),
    }
}

/// Order `o`'s signature: everything about it, with workers and other orders unnamed.
fn order_signature(
    state: &State<Pizzeria>,
    mail: &[(&Envelope<Msg>, usize)],
    layout: &Layout,
    o: Order,
) -> u64 {
    let house = layout.first_house() + o as usize;
    let slot = match &*state.actor_states[0] {
        PizzeriaState::Queue { orders } => match orders[o as usize] {
            Slot::Visible => 0u8,
            Slot::HandedOut { .. } => 1,
            Slot::Gone => 2,
        },
        _ => 3,
    };
    let workers = (1..=layout.workers).map(|w| {
        let (baking, awaiting) = match &*state.actor_states[w] {
            PizzeriaState::Worker { baking, awaiting } => {
                (baking.contains(&o), awaiting.contains(&o))
            }
            _ => (false, false),
        };
        let oven = state.timers_set[w]
            .iter()
            .any(|t| *t == Timer::Baked { order: o });
        fingerprint(&(baking, awaiting, oven, state.crashed[w]))
    });
    let mail = mail
        .iter()
        .filter(|(e, _)| e.msg.order() == o)
        .map(|(e, n)| fingerprint(&(role(layout, e.src), role(layout, e.dst), shape(&e.msg), n)));
    let (memory, pending, now) = match &*state.actor_states[house] {
        PizzeriaState::House {
            memory,
            pending,
            now,
        } => (
            memory
                .values()
                .map(|r| fingerprint(&r.stage))
                .collect::<Vec<_>>(),
            pending.len(),
            *now,
        ),
        _ => (Vec::new(), 0, 0),
    };
    fingerprint(&(
        slot,
        state.timers_set[0]
            .iter()
            .any(|t| *t == Timer::VisibilityTimeout { order: o }),
        state.random_choices[0].map.contains_key(key(o)),
        sum(workers),
        sum(mail),
        (memory, pending, now),
        state.crashed[house],
        state.timers_set[house].iter().count(),
        state.actor_storages[house].as_ref().map(|m| {
            m.values()
                .map(|r| fingerprint(&r.stage))
                .collect::<Vec<_>>()
        }),
        state.history.ledger.effects_of(&o),
    ))
}

/// Worker `w`'s signature (actor `1 + w`): its state and mail, orders by their signatures.
fn worker_signature(
    state: &State<Pizzeria>,
    mail: &[(&Envelope<Msg>, usize)],
    layout: &Layout,
    sig: &[u64],
    w: usize,
) -> u64 {
    let id = 1 + w;
    let sigs = |orders: &std::collections::BTreeSet<Order>| {
        let mut v: Vec<u64> = orders.iter().map(|&o| sig[o as usize]).collect();
        v.sort_unstable();
        v
    };
    let own = match &*state.actor_states[id] {
        PizzeriaState::Worker { baking, awaiting } => (sigs(baking), sigs(awaiting)),
        _ => Default::default(),
    };
    let end = |x: Id| match usize::from(x) {
        i if i == id => 0u8,
        0 => 1,
        i if i < layout.first_house() => 2,
        _ => 3,
    };
    let mail = mail
        .iter()
        .filter(|(e, _)| {
            usize::from(e.src) == id
                || usize::from(e.dst) == id
                || matches!(e.msg, Msg::Note { worker, .. } if usize::from(worker) == id)
        })
        .map(|(e, n)| {
            let about_me = matches!(e.msg, Msg::Note { worker, .. } if usize::from(worker) == id);
            fingerprint(&(
                end(e.src),
                end(e.dst),
                shape(&e.msg),
                sig[e.msg.order() as usize],
                about_me,
                n,
            ))
        });
    let timers = state.timers_set[id].iter().map(|t| match t {
        Timer::Baked { order } => fingerprint(&sig[*order as usize]),
        other => fingerprint(other),
    });
    // Orders the queue has handed to this worker, and houses' pending steps for its pies.
    let handed: Vec<u64> = match &*state.actor_states[0] {
        PizzeriaState::Queue { orders } => {
            let mut v: Vec<u64> = orders
                .iter()
                .enumerate()
                .filter(
                    |(_, s)| matches!(s, Slot::HandedOut { worker } if usize::from(*worker) == id),
                )
                .map(|(o, _)| sig[o])
                .collect();
            v.sort_unstable();
            v
        }
        _ => Vec::new(),
    };
    let pending =
        (0..layout.orders).map(|o| match &*state.actor_states[layout.first_house() + o] {
            PizzeriaState::House { pending, .. } => sum(pending
                .iter()
                .filter(|(_, worker)| usize::from(*worker) == id)
                .map(|(order, _)| fingerprint(&sig[*order as usize]))),
            _ => 0,
        });
    fingerprint(&(
        own,
        state.crashed[id],
        sum(mail),
        sum(timers),
        handed,
        sum(pending),
    ))
}

/// A relabelling: worker `w` becomes `workers[w]`, order `o` (and its house) `orders[o]`.
struct Relabel<'a> {
    layout: &'a Layout,
    workers: Vec<usize>,
    orders: Vec<Order>,
}

impl Relabel<'_> {
    fn id(&self, id: Id) -> Id {
        let i = usize::from(id);
        let fh = self.layout.first_house();
        Id::from(match i {
            0 => 0,
            i if i < fh => 1 + self.workers[i - 1],
            i => fh + self.orders[i - fh] as usize,
        })
    }
    fn order(&self, o: Order) -> Order {
        self.orders[o as usize]
    }
    /// Where actor `i` goes.
    fn slot(&self, i: usize) -> usize {
        usize::from(self.id(Id::from(i)))
    }
    fn msg(&self, m: &Msg) -> Msg {
        let o = |o: Order| self.order(o);
        match *m {
            Msg::Task { order } => Msg::Task { order: o(order) },
            Msg::Ack { order } => Msg::Ack { order: o(order) },
            Msg::AckConfirmed { order } => Msg::AckConfirmed { order: o(order) },
            Msg::AckRefused { order } => Msg::AckRefused { order: o(order) },
            Msg::Pie { order } => Msg::Pie { order: o(order) },
            Msg::Receipt { order, kept } => Msg::Receipt {
                order: o(order),
                kept,
            },
            Msg::Note {
                order,
                worker,
                then,
            } => Msg::Note {
                order: o(order),
                worker: self.id(worker),
                then,
            },
        }
    }
    fn timer(&self, t: &Timer) -> Timer {
        match *t {
            Timer::VisibilityTimeout { order } => Timer::VisibilityTimeout {
                order: self.order(order),
            },
            Timer::Baked { order } => Timer::Baked {
                order: self.order(order),
            },
            Timer::HouseClock => Timer::HouseClock,
        }
    }
    fn memory(&self, m: &Memory) -> Memory {
        m.iter()
            .map(|(&o, r)| {
                let o = self.order(o);
                (
                    o,
                    Record {
                        fingerprint: pie_fp(o),
                        stage: r.stage.clone(),
                    },
                )
            })
            .collect()
    }
    fn actor_state(&self, s: &PizzeriaState) -> PizzeriaState {
        match s {
            PizzeriaState::Queue { orders } => {
                let mut out = orders.clone();
                for (o, slot) in orders.iter().enumerate() {
                    out[self.orders[o] as usize] = match slot {
                        Slot::HandedOut { worker } => Slot::HandedOut {
                            worker: self.id(*worker),
                        },
                        other => other.clone(),
                    };
                }
                PizzeriaState::Queue { orders: out }
            }
            PizzeriaState::Worker { baking, awaiting } => PizzeriaState::Worker {
                baking: baking.iter().map(|&o| self.order(o)).collect(),
                awaiting: awaiting.iter().map(|&o| self.order(o)).collect(),
            },
            PizzeriaState::House {
                memory,
                pending,
                now,
            } => {
                let mut pending: Vec<(Order, Id)> = pending
                    .iter()
                    .map(|&(o, w)| (self.order(o), self.id(w)))
                    .collect();
                pending.sort();
                PizzeriaState::House {
                    memory: self.memory(memory),
                    pending,
                    now: *now,
                }
            }
        }
    }
    fn handout(&self, h: &Handout) -> Handout {
        let worker = self.id(h.worker);
        Handout {
            order: self.order(h.order),
            worker,
            worker_no: super::worker_no(worker),
        }
    }

    fn apply(&self, state: &State<Pizzeria>) -> State<Pizzeria> {
        let n = state.actor_states.len();
        let mut from = vec![0; n];
        for (i, f) in (0..n).map(|i| (self.slot(i), i)) {
            from[i] = f;
        }
        let orders_kept = self
            .orders
            .iter()
            .enumerate()
            .all(|(o, &to)| o == to as usize);
        let workers_kept = self.workers.iter().enumerate().all(|(w, &to)| w == to);
        // Whatever names nothing that moves is copied (or shared), not rebuilt: rebuilding
        // costs allocations and a fresh hasher per map.
        let random_choices = (0..n)
            .map(|j| {
                let old = &state.random_choices[from[j]];
                if orders_kept && workers_kept {
                    return old.clone();
                }
                let mut choices = RandomChoices::default();
                for (key, options) in old.map.iter() {
                    let o = (0..self.layout.orders as Order)
                        .find(|&o| self::key(o) == key)
                        .expect("a choice key");
                    let mut options: Vec<Handout> =
                        options.iter().map(|h| self.handout(h)).collect();
                    options.sort();
                    choices.insert(self::key(self.order(o)).to_string(), options);
                }
                choices
            })
            .collect();
        let timers_set = (0..n)
            .map(|j| {
                let old = &state.timers_set[from[j]];
                if orders_kept {
                    return old.clone();
                }
                let mut timers = Timers::new();
                for t in old.iter() {
                    timers.set(self.timer(t));
                }
                timers
            })
            .collect();
        let mut network = Vec::new();
        for (e, count) in envelopes(&state.network) {
            for _ in 0..count {
                network.push(Envelope {
                    src: self.id(e.src),
                    dst: self.id(e.dst),
                    msg: self.msg(&e.msg),
                });
            }
        }
        let mut history = state.history.clone();
        if !orders_kept {
            history.ledger = history.ledger.renamed(|&o| self.order(o));
        }
        // With the orders in place, a worker names only orders, and a house names workers only
        // in pending steps.
        let unchanged = |s: &PizzeriaState| {
            orders_kept
                && match s {
                    PizzeriaState::Queue { .. } => workers_kept,
                    PizzeriaState::Worker { .. } => true,
                    PizzeriaState::House { pending, .. } => workers_kept || pending.is_empty(),
                }
        };
        ActorModelState {
            actor_states: (0..n)
                .map(|j| {
                    let s = &state.actor_states[from[j]];
                    if unchanged(s) {
                        std::sync::Arc::clone(s)
                    } else {
                        std::sync::Arc::new(self.actor_state(s))
                    }
                })
                .collect(),
            network: Network::new_unordered_nonduplicating(network),
            timers_set,
            random_choices,
            crashed: (0..n).map(|j| state.crashed[from[j]]).collect(),
            history,
            actor_storages: (0..n)
                .map(|j| {
                    state.actor_storages[from[j]]
                        .as_ref()
                        .map(|m| self.memory(m))
                })
                .collect(),
        }
    }
}

/// Which orders and which workers are inert: nothing in flight about them or from them, no worker
/// holding an order, no house step pending, no timer of a worker's. Two inert members with the
/// same signature are alike in everything, and nothing else names them, so swapping them
/// changes nothing.
fn inert(
    state: &State<Pizzeria>,
    mail: &[(&Envelope<Msg>, usize)],
    layout: &Layout,
) -> (Vec<bool>, Vec<bool>) {
    let mut orders = vec![true; layout.orders];
    let mut workers = vec![true; layout.workers];
    let mut touch = |o: Order, w: Option<Id>| {
        orders[o as usize] = false;
        if let Some(w) = w.map(usize::from) {
            if (1..layout.first_house()).contains(&w) {
                workers[w - 1] = false;
            }
        }
    };
    for (e, _) in mail {
        touch(e.msg.order(), Some(e.src));
        touch(e.msg.order(), Some(e.dst));
        if let Msg::Note { order, worker, .. } = e.msg {
            touch(order, Some(worker));
        }
    }
    for (i, s) in state.actor_states.iter().enumerate() {
        match &**s {
            PizzeriaState::Queue { orders } => {
                for (o, slot) in orders.iter().enumerate() {
                    if let Slot::HandedOut { worker } = slot {
                        touch(o as Order, Some(*worker));
                    }
                }
            }
            PizzeriaState::Worker { baking, awaiting } => {
                for &o in baking.iter().chain(awaiting) {
                    touch(o, Some(Id::from(i)));
                }
            }
            PizzeriaState::House { pending, .. } => {
                for &(o, w) in pending {
                    touch(o, Some(w));
                }
            }
        }
    }
    for w in 1..layout.first_house() {
        if state.timers_set[w].iter().next().is_some() {
            workers[w - 1] = false;
        }
    }
    (orders, workers)
}

/// The members of a group sorted by signature, as runs of equal signatures.
fn runs(sigs: &[u64]) -> Vec<Vec<usize>> {
    let mut members: Vec<usize> = (0..sigs.len()).collect();
    members.sort_by_key(|&i| sigs[i]);
    let mut out: Vec<Vec<usize>> = Vec::new();
    for i in members {
        match out.last_mut() {
            Some(run) if sigs[run[0]] == sigs[i] => run.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

/// `arranged[k]` is the member that goes to place `k`; returns where each member goes.
fn places(arranged: &[usize]) -> Vec<usize> {
    let mut to = vec![0; arranged.len()];
    for (k, &m) in arranged.iter().enumerate() {
        to[m] = k;
    }
    to
}

/// The representative of `state`'s class under relabelling workers and orders.
pub fn representative(state: &State<Pizzeria>) -> State<Pizzeria> {
    let layout = Layout::of(state);
    let mail = envelopes(&state.network);
    let order_sigs: Vec<u64> = (0..layout.orders as Order)
        .map(|o| order_signature(state, &mail, &layout, o))
        .collect();
    let worker_sigs: Vec<u64> = (0..layout.workers)
        .map(|w| worker_signature(state, &mail, &layout, &order_sigs, w))
        .collect();
    let (inert_orders, inert_workers) = inert(state, &mail, &layout);
    // A run of inert members (equal, and named by nothing else in the state) needs no trying:
    // every order of it gives the same state.
    let order_choices = arrangements(
        &runs(&order_sigs),
        |run| run.iter().all(|&o| inert_orders[o]),
        MAX_CANDIDATES,
    );
    let worker_choices = arrangements(
        &runs(&worker_sigs),
        |run| run.iter().all(|&w| inert_workers[w]),
        (MAX_CANDIDATES / order_choices.len()).max(1),
    );
    let relabel = |oa: &[usize], wa: &[usize]| Relabel {
        layout: &layout,
        workers: places(wa),
        orders: places(oa).into_iter().map(|p| p as Order).collect(),
    };
    // Most states have one arrangement, often the state's own order: no choosing to do.
    if let ([oa], [wa]) = (&order_choices[..], &worker_choices[..]) {
        let identity = |a: &[usize]| a.iter().enumerate().all(|(k, &m)| k == m);
        if identity(oa) && identity(wa) {
            return state.clone();
        }
        return relabel(oa, wa).apply(state);
    }
    let mut best: Option<(u64, State<Pizzeria>)> = None;
    for oa in &order_choices {
        for wa in &worker_choices {
            let candidate = relabel(oa, wa).apply(state);
            let fp = fingerprint(&candidate);
            if best.as_ref().is_none_or(|(b, _)| fp < *b) {
                best = Some((fp, candidate));
            }
        }
    }
    best.expect("at least one arrangement").1
}

/// `state` with worker `w` renamed `workers[w]` and order `o` (with its house) `orders[o]`.
pub fn relabel(state: &State<Pizzeria>, workers: &[usize], orders: &[Order]) -> State<Pizzeria> {
    let layout = Layout::of(state);
    Relabel {
        layout: &layout,
        workers: workers.to_vec(),
        orders: orders.to_vec(),
    }
    .apply(state)
}
