//! Symmetry reduction for the pizzeria: workers are interchangeable, and so are orders — an order
//! together with its house (order `o` always goes to house `o`), since the queue, the workers and
//! every door treat all orders alike. Relabelling workers and orders maps every run to a run with
//! the same ledger up to the order names, so every property (all stated over the ledger, for
//! every order alike) has the same verdict on both.
//!
//! The canonical form: each order gets a signature that does not depend on how workers or other
//! orders are named, and orders are sorted by it, every order of tied orders tried (there are at
//! most [`MAX_ORDERS`]`!`). Under each candidate's order names, each
//! worker gets a key that says everything about it, and workers are sorted by it (workers with
//! equal keys are alike in everything, so their order does not matter). Each candidate
//! relabelling is encoded as bytes without building the relabelled state, and the least
//! encoding wins: its fingerprint is the class's ([`canonical_fingerprint`], what the search
//! uses), and applying it gives the representative ([`representative`], for full-state
//! search). Whatever the ties, the result is a relabelling of the state, so the reduction is
//! sound; it is canonical (the same for every member of a class) unless two different
//! signatures or keys hashed alike.

use super::{Handout, Memory, Msg, Pizzeria, PizzeriaState, Slot, Then, Timer};
use crate::dedup::{Fingerprint, Record};
use crate::models::engine::search::fingerprint;
use crate::models::world::{choice_key, envelopes, pie_fingerprint, Order, State};
use crate::models::{MAX_ORDERS, MAX_WORKERS};
use stateright::actor::{ActorModelState, Envelope, Id, Network, RandomChoices, Timers};
use std::sync::OnceLock;

/// The most actors the encoding handles: the queue, the workers and a house per order.
const MAX_ACTORS: usize = 1 + MAX_WORKERS as usize + MAX_ORDERS as usize;

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
#[derive(Clone, Copy)]
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

/// splitmix64's finaliser: signatures and keys are sums of mixed parts (so the order a set is
/// read in does not matter) and chains of them.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Parts hashed in order, as a tuple is.
fn chain(parts: &[u64]) -> u64 {
    parts.iter().fold(0x9e37_79b9_7f4a_7c15, |h, &p| mix(h ^ p))
}

fn sum<I: IntoIterator<Item = u64>>(hashes: I) -> u64 {
    hashes.into_iter().fold(0, u64::wrapping_add)
}

/// `bits` bits of `code` from `shift` on.
fn field(code: u64, shift: u32, bits: u32) -> u64 {
    (code >> shift) & ((1 << bits) - 1)
}

/// An envelope as a number, with the state's own names: its kind (4 bits), order (4), kept or
/// second step (8), a note's worker (8), source (8), destination (8) and copies (8).
fn envelope_code(e: &Envelope<Msg>, copies: usize) -> u64 {
    assert!(copies <= 0xFF, "at most 255 copies of an envelope");
    let (kind, order, extra, worker) = match e.msg {
        Msg::Task { order } => (0u64, order, 0u64, 0usize),
        Msg::Ack { order } => (1, order, 0, 0),
        Msg::AckConfirmed { order } => (2, order, 0, 0),
        Msg::AckRefused { order } => (3, order, 0, 0),
        Msg::Pie { order } => (4, order, 0, 0),
        Msg::Receipt { order, kept } => (5, order, u64::from(kept), 0),
        Msg::Note {
            order,
            worker,
            then,
        } => (6, order, 1 + then as u64, usize::from(worker)),
    };
    kind | u64::from(order) << 4
        | extra << 8
        | (worker as u64) << 16
        | (usize::from(e.src) as u64) << 24
        | (usize::from(e.dst) as u64) << 32
        | (copies as u64) << 40
}
const NOTE: u64 = 6;

/// A state read once for its canonical form: what the signatures, keys and candidates look at
/// again and again, in small arrays, with the state's own names.
struct Flat<'a> {
    state: &'a State<Pizzeria>,
    layout: Layout,
    /// Per order: 0 visible, 1 gone, 2 + worker number: handed out to that worker.
    slot: [u8; 8],
    /// Per actor: its timers as bits ([`Relabel::timers`]).
    timers: [u32; MAX_ACTORS],
    /// Per worker number: the orders it bakes, and awaits a confirmation for, as bit masks.
    baking: [u8; 8],
    awaiting: [u8; 8],
    /// The queue's pending choices: the orders, and bit `8 × order + worker` per option. (A
    /// worker's key leaves options out: every choice offers every worker.)
    choices: u8,
    options: u64,
    /// Per order: a hash of its house (memory, pending steps, clock, crash, timers, storage).
    house: [u64; 8],
    /// Per order: pies kept.
    effects: [u32; 8],
    /// Orders something is under way for: mail about them, handed out, held by a worker, a
    /// house step pending. The others are inert.
    busy: u8,
    /// Every envelope's [`envelope_code`].
    mail: Vec<u64>,
    /// For each envelope, the workers (by number, as bits) it is from, to or about.
    involves: Vec<u8>,
    /// Every house step pending: (the house's actor id, the order, the worker's number).
    pending: Vec<(u8, Order, u8)>,
}

/// Buffers a [`Flat`] keeps its lists in, handed back and forth so that reading a state
/// allocates nothing.
#[derive(Default)]
struct Lists {
    mail: Vec<u64>,
    involves: Vec<u8>,
    pending: Vec<(u8, Order, u8)>,
}

impl<'a> Flat<'a> {
    fn read(state: &'a State<Pizzeria>, lists: Lists) -> Self {
        let Lists {
            mut mail,
            mut involves,
            mut pending,
        } = lists;
        mail.clear();
        involves.clear();
        pending.clear();
        let layout = Layout::of(state);
        let n = state.actor_states.len();
        assert!(
            layout.orders <= MAX_ORDERS as usize && layout.workers <= MAX_WORKERS as usize,
            "the pizzeria's symmetry handles up to {MAX_ORDERS} orders and {MAX_WORKERS} workers"
        );
        let mut f = Flat {
            state,
            layout,
            slot: [0; 8],
            timers: [0; MAX_ACTORS],
            baking: [0; 8],
            awaiting: [0; 8],
            choices: 0,
            options: 0,
            house: [0; 8],
            effects: [0; 8],
            busy: 0,
            mail: Vec::new(),
            involves: Vec::new(),
            pending: Vec::new(),
        };
        let identity = Relabel::identity(layout);
        for i in 0..n {
            f.timers[i] = state.timers_set[i]
                .iter()
                .fold(0, |m, t| m | identity.timer_bit(t));
            assert!(
                i == 0 || state.random_choices[i].map.is_empty(),
                "only the queue chooses"
            );
        }
        if let PizzeriaState::Queue { orders } = &*state.actor_states[0] {
            for (o, slot) in orders.iter().enumerate() {
                f.slot[o] = match slot {
                    Slot::Visible => 0,
                    Slot::Gone => 1,
                    Slot::HandedOut { worker } => {
                        f.busy |= 1 << o;
                        1 + usize::from(*worker) as u8
                    }
                };
            }
        }
        for (k, handouts) in state.random_choices[0].map.iter() {
            let o = (0..layout.orders as Order)
                .find(|&o| self::key(o) == k)
                .expect("a choice key");
            f.choices |= 1 << o;
            for h in handouts {
                assert_eq!(h.order, o, "a choice of worker is for its own order");
                f.options |= 1 << (8 * u64::from(o) + h.worker_no as u64);
            }
        }
        for w in 0..layout.workers {
            if let PizzeriaState::Worker { baking, awaiting } = &*state.actor_states[1 + w] {
                f.baking[w] = identity.mask(baking);
                f.awaiting[w] = identity.mask(awaiting);
            }
            f.busy |= f.baking[w] | f.awaiting[w] | (f.timers[1 + w] >> 8) as u8;
            assert!(
                state.actor_storages[1 + w].is_none(),
                "workers keep nothing in storage"
            );
        }
        // The invariants the encoding relies on (see `Relabel::encode`).
        let stages = |m: &Memory| {
            for (&o, r) in m {
                assert!(
                    (o as usize) < layout.orders && r.fingerprint == pie_fp(o),
                    "a house remembers only existing orders, with their own pie's fingerprint"
                );
            }
            sum(m.values().map(|r| fingerprint(&r.stage)))
        };
        for o in 0..layout.orders {
            let h = layout.first_house() + o;
            let (memory, steps, now) = match &*state.actor_states[h] {
                PizzeriaState::House {
                    memory,
                    pending: steps,
                    now,
                } => {
                    for &(p, w) in steps {
                        f.busy |= 1 << p;
                        pending.push((h as u8, p, (usize::from(w) - 1) as u8));
                    }
                    (stages(memory), steps.len() as u64, u64::from(*now))
                }
                _ => (0, 0, 0),
            };
            f.house[o] = chain(&[
                memory,
                steps,
                now,
                u64::from(state.crashed[h]),
                u64::from(f.timers[h].count_ones()),
                state.actor_storages[h]
                    .as_ref()
                    .map_or(0, |m| 1 ^ mix(stages(m))),
            ]);
            f.effects[o] = state.history.ledger.effects_of(&(o as Order));
        }
        // Read directly, not through `world::envelopes`: that allocates, and this runs for
        // every state the search generates.
        let Network::UnorderedNonDuplicating(multiset) = &state.network else {
            unreachable!("the pizzeria uses an unordered, non-duplicating network")
        };
        let fh = layout.first_house();
        let worker_bit = |i: u64| match i as usize {
            i if (1..fh).contains(&i) => 1 << (i - 1),
            _ => 0,
        };
        for (e, &copies) in multiset.iter() {
            let c = envelope_code(e, copies);
            f.busy |= 1 << field(c, 4, 4);
            let note = if field(c, 0, 4) == NOTE {
                worker_bit(field(c, 16, 8))
            } else {
                0
            };
            mail.push(c);
            involves.push(worker_bit(field(c, 24, 8)) | worker_bit(field(c, 32, 8)) | note);
        }
        (f.mail, f.involves, f.pending) = (mail, involves, pending);
        f
    }

    /// The lists, for the next state.
    fn lists(self) -> Lists {
        Lists {
            mail: self.mail,
            involves: self.involves,
            pending: self.pending,
        }
    }

    /// The part actor `i` plays: 0 the queue, 1 a worker, 2 a house.
    fn role(&self, i: u64) -> u64 {
        match i as usize {
            0 => 0,
            i if i < self.layout.first_house() => 1,
            _ => 2,
        }
    }

    /// Order `o`'s signature: everything about it, with workers and other orders unnamed.
    fn order_signature(&self, o: usize) -> u64 {
        let bit = 1u8 << o;
        let has = |mask: u8| u64::from(mask & bit != 0);
        let workers = sum((0..self.layout.workers).map(|w| {
            let id = 1 + w;
            mix(has(self.baking[w])
                | has(self.awaiting[w]) << 1
                | has((self.timers[id] >> 8) as u8) << 2
                | u64::from(self.state.crashed[id]) << 3)
        }));
        let mail = sum(self
            .mail
            .iter()
            .filter(|&&c| field(c, 4, 4) as usize == o)
            .map(|&c| {
                mix(field(c, 0, 4)
                    | field(c, 8, 8) << 4
                    | self.role(field(c, 24, 8)) << 12
                    | self.role(field(c, 32, 8)) << 14
                    | field(c, 40, 8) << 16)
            }));
        chain(&[
            u64::from(self.slot[o].min(2)),
            u64::from(self.timers[0] >> o & 1),
            u64::from(self.choices >> o & 1),
            workers,
            mail,
            self.house[o],
            u64::from(self.effects[o]),
        ])
    }

    /// Worker `w`'s key (actor `1 + w`) once the orders have their new names in `r`:
    /// everything about the worker (its state, timers, whether it is down, the orders the queue
    /// handed it, the house steps pending for its pies, its mail) with other workers unnamed.
    /// Workers with equal keys are alike in everything, so the order they are put in does not
    /// change the encoding.
    fn worker_key(&self, r: &Relabel, w: usize) -> u64 {
        let id = 1 + w;
        let fh = self.layout.first_house();
        let handed = (0..self.layout.orders)
            .filter(|&o| self.slot[o] == 2 + w as u8)
            .fold(0u64, |m, o| m | 1 << r.orders[o]);
        let pending = sum(self
            .pending
            .iter()
            .filter(|&&(_, _, worker)| usize::from(worker) == w)
            .map(|&(h, o, _)| mix((r.slot(h.into()) as u64) << 8 | u64::from(r.order(o)))));
        // This worker, another worker, or the queue or a house by its new name.
        let name = |i: u64| match i as usize {
            i if i == id => 0xFF,
            i if (1..fh).contains(&i) => 0xFE,
            i => r.slot(i) as u64,
        };
        let mail = sum(self
            .mail
            .iter()
            .zip(&self.involves)
            .filter(|&(_, &involves)| involves & 1 << w != 0)
            .map(|(&c, _)| mix(r.rename(c, name))));
        chain(&[
            u64::from(r.remap(self.baking[w])) | u64::from(r.remap(self.awaiting[w])) << 8,
            u64::from(r.timers(self.timers[id])),
            u64::from(self.state.crashed[id]),
            u64::from(self.state.actor_storages[id].is_some()),
            handed,
            pending,
            mail,
        ])
    }
}

/// A relabelling: worker `w` becomes `workers[w]`, order `o` (and its house) `orders[o]`.
/// Entries past the layout's sizes stay as they are.
#[derive(Clone, Copy)]
struct Relabel {
    layout: Layout,
    workers: [usize; 8],
    orders: [Order; 8],
    /// The inverse of `orders`: the old order that goes to each place.
    order_at: [Order; 8],
}

const IDENTITY: [Order; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

impl Relabel {
    fn identity(layout: Layout) -> Self {
        Relabel {
            layout,
            workers: IDENTITY.map(usize::from),
            orders: IDENTITY,
            order_at: IDENTITY,
        }
    }
    /// Orders `o` go to the places `to[o]`.
    fn set_orders(&mut self, to: &[Order]) {
        for (o, &p) in to.iter().enumerate() {
            self.orders[o] = p;
            self.order_at[p as usize] = o as Order;
        }
    }
    fn is_identity(&self) -> bool {
        self.workers == IDENTITY.map(usize::from) && self.orders == IDENTITY
    }
    /// A set of orders as a bit mask of their new names.
    fn mask<'b>(&self, orders: impl IntoIterator<Item = &'b Order>) -> u8 {
        orders.into_iter().fold(0, |m, &o| m | 1 << self.order(o))
    }
    /// A bit mask of orders, renamed.
    fn remap(&self, mut mask: u8) -> u8 {
        let mut out = 0;
        while mask != 0 {
            out |= 1 << self.orders[mask.trailing_zeros() as usize];
            mask &= mask - 1;
        }
        out
    }
    /// A timer as a bit: visibility timeouts by order in bits 0–7, ovens in 8–15, the house
    /// clock bit 16.
    fn timer_bit(&self, t: &Timer) -> u32 {
        match *t {
            Timer::VisibilityTimeout { order } => 1 << self.order(order),
            Timer::Baked { order } => 1 << (8 + self.order(order)),
            Timer::HouseClock => 1 << 16,
        }
    }
    /// Timer bits, renamed.
    fn timers(&self, bits: u32) -> u32 {
        u32::from(self.remap(bits as u8))
            | u32::from(self.remap((bits >> 8) as u8)) << 8
            | bits & 1 << 16
    }
    /// An [`envelope_code`] with orders renamed and actors named by `name`.
    fn rename(&self, c: u64, name: impl Fn(u64) -> u64) -> u64 {
        let kind = field(c, 0, 4);
        let worker = if kind == NOTE {
            name(field(c, 16, 8))
        } else {
            0
        };
        kind | u64::from(self.orders[field(c, 4, 4) as usize]) << 4
            | field(c, 8, 8) << 8
            | worker << 16
            | name(field(c, 24, 8)) << 24
            | name(field(c, 32, 8)) << 32
            | field(c, 40, 8) << 40
    }
    /// A memory's records, by new order.
    fn encode_memory(&self, m: &Memory, out: &mut Vec<u8>) {
        out.push(m.len() as u8);
        for p in 0..self.layout.orders {
            let o = self.order_at[p];
            let Some(r) = m.get(&o) else { continue };
            out.push(p as u8);
            out.push(u8::from(r.fingerprint == pie_fp(o)));
            match r.stage {
                crate::dedup::Stage::Completed { at, .. } => {
                    out.push(0);
                    out.extend_from_slice(&at.to_le_bytes());
                }
                crate::dedup::Stage::InProgress { owner, lease_until } => {
                    out.push(1);
                    out.extend_from_slice(&owner.to_le_bytes());
                    out.extend_from_slice(&lease_until.to_le_bytes());
                }
            }
        }
    }

    /// The relabelled state as bytes, without building it: equal bytes exactly when the
    /// relabelled states are equal (given the cast's invariants, checked as it is read: a
    /// house remembers only orders that exist, with their own pie's fingerprint; only the
    /// queue chooses, each choice of worker for its own order). [`unpack`] reads them.
    fn encode(&self, f: &Flat, codes: &mut Vec<u64>, out: &mut Vec<u8>) {
        let state = f.state;
        out.clear();
        out.extend_from_slice(&[self.layout.orders as u8, self.layout.workers as u8]);
        let n = state.actor_states.len();
        let mut from = [0usize; MAX_ACTORS];
        for i in 0..n {
            from[self.slot(i)] = i;
        }
        for &i in &from[..n] {
            out.push(u8::from(state.crashed[i]));
            match &*state.actor_states[i] {
                PizzeriaState::Queue { .. } => {
                    for p in 0..self.layout.orders {
                        out.push(match f.slot[self.order_at[p] as usize] {
                            s @ (0 | 1) => s,
                            // 2 + the new actor id of the worker.
                            s => 3 + self.workers[s as usize - 2] as u8,
                        });
                    }
                }
                PizzeriaState::Worker { .. } => {
                    out.push(self.remap(f.baking[i - 1]));
                    out.push(self.remap(f.awaiting[i - 1]));
                }
                PizzeriaState::House {
                    memory,
                    pending,
                    now,
                } => {
                    self.encode_memory(memory, out);
                    codes.clear();
                    codes.extend(pending.iter().map(|&(o, w)| {
                        u64::from(self.order(o)) << 8 | usize::from(self.id(w)) as u64
                    }));
                    codes.sort_unstable();
                    out.push(codes.len() as u8);
                    out.extend(codes.iter().flat_map(|c| [(c >> 8) as u8, *c as u8]));
                    out.push(*now);
                }
            }
            out.extend_from_slice(&self.timers(f.timers[i]).to_le_bytes());
            // Only the queue chooses (`Flat::read` checks it).
            if i == 0 {
                out.push(self.remap(f.choices));
                let options = (0..64)
                    .filter(|k| f.options & 1 << k != 0)
                    .fold(0u64, |m, k| {
                        m | 1 << (8 * u64::from(self.orders[k / 8]) + self.workers[k % 8] as u64)
                    });
                out.extend_from_slice(&options.to_le_bytes());
            }
            match &state.actor_storages[i] {
                None => out.push(0),
                Some(m) => {
                    out.push(1);
                    self.encode_memory(m, out);
                }
            }
        }
        codes.clear();
        codes.extend(
            f.mail
                .iter()
                .map(|&c| self.rename(c, |i| self.slot(i as usize) as u64)),
        );
        codes.sort_unstable();
        out.extend_from_slice(&(codes.len() as u16).to_le_bytes());
        for c in codes.iter() {
            out.extend_from_slice(&c.to_le_bytes()[..6]);
        }
        // The ledger: orders placed and pies kept, by new name (orders outside the cast, which
        // no run has, keep theirs).
        let ledger = &state.history.ledger;
        let rename = |o: Order| {
            if (o as usize) < self.layout.orders {
                self.order(o)
            } else {
                o
            }
        };
        codes.clear();
        codes.extend(ledger.placed().iter().map(|&o| u64::from(rename(o))));
        codes.extend(
            ledger
                .effects()
                .map(|(&o, count)| 1 << 40 | u64::from(rename(o)) << 32 | u64::from(count)),
        );
        codes.sort_unstable();
        out.push(codes.len() as u8);
        for c in codes.iter() {
            out.extend_from_slice(&c.to_le_bytes()[..6]);
        }
        let used = state.history.used;
        out.extend_from_slice(&[used.crashes, used.losses, used.stalls]);
    }

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
                    msg: self.msg(e.msg),
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

/// Every arrangement of `n` ≤ [`MAX_ORDERS`] orders, made once: a tie is broken by trying those
/// that keep the signatures in order, without allocating.
fn permutations(n: usize) -> &'static [[u8; MAX_ORDERS as usize]] {
    const N: usize = MAX_ORDERS as usize;
    static TABLES: OnceLock<Vec<Vec<[u8; N]>>> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        (0..=N)
            .map(|n| {
                let mut all: Vec<Vec<u8>> = vec![Vec::new()];
                for k in 0..n as u8 {
                    all = all
                        .into_iter()
                        .flat_map(|p| {
                            (0..=p.len()).map(move |i| {
                                let mut q = p.clone();
                                q.insert(i, k);
                                q
                            })
                        })
                        .collect();
                }
                all.into_iter()
                    .map(|p| {
                        let mut a = [0u8; N];
                        a[..n].copy_from_slice(&p);
                        a
                    })
                    .collect()
            })
            .collect()
    });
    &tables[n]
}

/// Buffers the canonical form is built in, kept per thread: the search asks for it millions of
/// times, and allocating them each time was a large part of its cost.
#[derive(Default)]
struct Scratch {
    best: Vec<u8>,
    candidate: Vec<u8>,
    codes: Vec<u64>,
    lists: Lists,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = Default::default();
}

/// The relabelling that puts `state` in its class's canonical form, whose encoding it leaves in
/// `scratch.best`. Orders are sorted by signature; ties are tried in every order unless the
/// tied orders are inert. For each,
/// workers are sorted by their keys under those order names (ties are workers alike in
/// everything). The candidate with the least encoding wins.
fn canonical(state: &State<Pizzeria>, scratch: &mut Scratch) -> Relabel {
    let f = Flat::read(state, std::mem::take(&mut scratch.lists));
    let layout = f.layout;
    let (orders, workers) = (layout.orders, layout.workers);
    let mut sigs = [0u64; 8];
    for (o, sig) in sigs.iter_mut().enumerate().take(orders) {
        *sig = f.order_signature(o);
    }
    let mut sorted = IDENTITY.map(usize::from);
    sorted[..orders].sort_unstable_by_key(|&o| sigs[o]);
    let tied = sorted[..orders]
        .windows(2)
        .any(|p| sigs[p[0]] == sigs[p[1]] && (f.busy >> p[0] & 1 == 1 || f.busy >> p[1] & 1 == 1));
    let mut best: Option<Relabel> = None;
    let mut consider = |arranged: &[usize]| {
        let mut r = Relabel::identity(layout);
        for (p, &o) in arranged.iter().enumerate() {
            r.orders[o] = p as Order;
            r.order_at[p] = o as Order;
        }
        let mut keys = [0u64; 8];
        for (w, key) in keys.iter_mut().enumerate().take(workers) {
            *key = f.worker_key(&r, w);
        }
        let mut by_key = IDENTITY.map(usize::from);
        by_key[..workers].sort_unstable_by_key(|&w| keys[w]);
        for (k, &w) in by_key[..workers].iter().enumerate() {
            r.workers[w] = k;
        }
        r.encode(&f, &mut scratch.codes, &mut scratch.candidate);
        if best.is_none() || scratch.candidate < scratch.best {
            std::mem::swap(&mut scratch.best, &mut scratch.candidate);
            best = Some(r);
        }
    };
    let inert = |o: usize| f.busy >> o & 1 == 0;
    if !tied {
        // Most states: no ties to try, or only ties of inert orders (alike in everything).
        consider(&sorted[..orders]);
    } else {
        // Every arrangement that keeps the signatures in order, inert equals in one order.
        for perm in permutations(orders) {
            let arranged = perm.map(usize::from);
            let arranged = &arranged[..orders];
            let admissible = arranged.windows(2).all(|p| {
                let (a, b) = (p[0], p[1]);
                sigs[a] < sigs[b] || (sigs[a] == sigs[b] && !(inert(a) && inert(b) && a > b))
            });
            if admissible {
                consider(arranged);
            }
        }
    }
    scratch.lists = f.lists();
    best.expect("at least one arrangement")
}

/// The representative of `state`'s class under relabelling workers and orders.
pub fn representative(state: &State<Pizzeria>) -> State<Pizzeria> {
    let r = SCRATCH.with(|s| canonical(state, &mut s.borrow_mut()));
    if r.is_identity() {
        state.clone()
    } else {
        r.apply(state)
    }
}

/// `state`'s class packed as bytes: its canonical form's encoding, made without building the
/// representative. [`unpack`] rebuilds the representative from them.
pub fn pack(state: &State<Pizzeria>, out: &mut Vec<u8>) {
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        canonical(state, s);
        out.clear();
        out.extend_from_slice(&s.best);
    })
}

/// The fingerprint of `state`'s class, as the search computes it: of [`pack`]'s bytes.
pub fn canonical_fingerprint(state: &State<Pizzeria>) -> u64 {
    let mut bytes = Vec::new();
    pack(state, &mut bytes);
    fingerprint(&bytes[..])
}

/// Reads the encoding [`Relabel::encode`] writes.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().expect("a packed pizzeria state");
        self.0 = rest;
        b
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("N bytes")
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    fn u48(&mut self) -> u64 {
        let b: [u8; 6] = self.bytes();
        let mut full = [0u8; 8];
        full[..6].copy_from_slice(&b);
        u64::from_le_bytes(full)
    }
    fn memory(&mut self) -> Memory {
        let len = self.u8();
        (0..len)
            .map(|_| {
                let order = self.u8();
                assert_eq!(self.u8(), 1, "a house remembers its own pie's fingerprint");
                let stage = match self.u8() {
                    0 => crate::dedup::Stage::Completed {
                        result: (),
                        at: self.u64(),
                    },
                    _ => crate::dedup::Stage::InProgress {
                        owner: self.u64(),
                        lease_until: self.u64(),
                    },
                };
                let record = Record {
                    fingerprint: pie_fp(order),
                    stage,
                };
                (order, record)
            })
            .collect()
    }
}

/// The state [`pack`] packed: the representative of its class.
pub fn unpack(bytes: &[u8]) -> State<Pizzeria> {
    let mut r = Reader(bytes);
    let orders = r.u8() as usize;
    let workers = r.u8() as usize;
    let first_house = 1 + workers;
    let n = first_house + orders;
    let set = |mask: u8| -> std::collections::BTreeSet<Order> {
        (0..8).filter(|o| mask & 1 << o != 0).collect()
    };
    let mut actor_states = Vec::with_capacity(n);
    let (mut crashed, mut timers_set, mut random_choices, mut actor_storages) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for i in 0..n {
        crashed.push(r.u8() == 1);
        actor_states.push(std::sync::Arc::new(if i == 0 {
            PizzeriaState::Queue {
                orders: (0..orders)
                    .map(|_| match r.u8() {
                        0 => Slot::Visible,
                        1 => Slot::Gone,
                        w => Slot::HandedOut {
                            worker: Id::from(w as usize - 2),
                        },
                    })
                    .collect(),
            }
        } else if i < first_house {
            PizzeriaState::Worker {
                baking: set(r.u8()),
                awaiting: set(r.u8()),
            }
        } else {
            let memory = r.memory();
            let pending = (0..r.u8())
                .map(|_| {
                    let order = r.u8();
                    (order, Id::from(r.u8() as usize))
                })
                .collect();
            PizzeriaState::House {
                memory,
                pending,
                now: r.u8(),
            }
        }));
        let bits = r.u32();
        let mut timers = Timers::new();
        for o in 0..8 {
            if bits & 1 << o != 0 {
                timers.set(Timer::VisibilityTimeout { order: o });
            }
            if bits & 1 << (8 + o) != 0 {
                timers.set(Timer::Baked { order: o });
            }
        }
        if bits & 1 << 16 != 0 {
            timers.set(Timer::HouseClock);
        }
        timers_set.push(timers);
        let (keys, options) = if i == 0 { (r.u8(), r.u64()) } else { (0, 0) };
        let mut choices = RandomChoices::default();
        for o in (0..orders as Order).filter(|o| keys & 1 << o != 0) {
            let handouts = (0..workers)
                .filter(|w| options & 1 << (8 * u64::from(o) + *w as u64) != 0)
                .map(|w| Handout {
                    order: o,
                    worker: Id::from(1 + w),
                    worker_no: w,
                })
                .collect();
            choices.insert(self::key(o).to_string(), handouts);
        }
        random_choices.push(choices);
        actor_storages.push(match r.u8() {
            0 => None,
            _ => Some(r.memory()),
        });
    }
    let mut network = Vec::new();
    for _ in 0..r.u16() {
        let c = r.u48();
        let field = |shift: u32, bits: u32| ((c >> shift) & ((1 << bits) - 1)) as u8;
        let order = field(4, 4);
        let msg = match field(0, 4) {
            0 => Msg::Task { order },
            1 => Msg::Ack { order },
            2 => Msg::AckConfirmed { order },
            3 => Msg::AckRefused { order },
            4 => Msg::Pie { order },
            5 => Msg::Receipt {
                order,
                kept: field(8, 8) == 1,
            },
            _ => Msg::Note {
                order,
                worker: Id::from(field(16, 8) as usize),
                then: match field(8, 8) {
                    1 => Then::RecordAndKeep,
                    2 => Then::Keep,
                    _ => Then::Record,
                },
            },
        };
        let (src, dst) = (field(24, 8) as usize, field(32, 8) as usize);
        for _ in 0..field(40, 8) {
            network.push(Envelope {
                src: Id::from(src),
                dst: Id::from(dst),
                msg: msg.clone(),
            });
        }
    }
    let mut ledger = crate::ledger::Ledger::new();
    for _ in 0..r.u8() {
        let c = r.u48();
        let order = (c >> 32) as Order;
        if c >> 40 == 0 {
            ledger.place(c as Order);
        } else {
            ledger.record_effects(order, c as u32);
        }
    }
    let [crashes, losses, stalls] = r.bytes();
    assert!(
        r.0.is_empty(),
        "a packed pizzeria state has no bytes left over"
    );
    ActorModelState {
        actor_states,
        network: Network::new_unordered_nonduplicating(network),
        timers_set,
        random_choices,
        crashed,
        history: crate::models::world::History {
            ledger,
            used: crate::models::world::Faults {
                crashes,
                losses,
                stalls,
            },
        },
        actor_storages,
    }
}

/// `state` with worker `w` renamed `workers[w]` and order `o` (with its house) `orders[o]`.
pub fn relabel(state: &State<Pizzeria>, workers: &[usize], orders: &[Order]) -> State<Pizzeria> {
    let mut r = Relabel::identity(Layout::of(state));
    r.workers[..workers.len()].copy_from_slice(workers);
    r.set_orders(orders);
    r.apply(state)
}
