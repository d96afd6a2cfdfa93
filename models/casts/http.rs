//! The cast of the HTTP idempotency-key designs: a client that `POST`s each order with an
//! `Idempotency-Key` header (its order number) and retries, stateless server instances behind a
//! load balancer, and the one durable database they share. How an instance uses the key is the
//! design's middleware ([`Middleware`]): the two modes of `onepie::http::IdempotencyLayer`, and
//! the get → handler → set middleware of popular small crates. Every lookup of the key is the
//! library's [`dedup::decide`] over the database's records.
//!
//! The client sends each key's first request to instance 0, and retries (on its timeout, a 409 or
//! a 503) at the next instance in turn, until a 2xx. Alternating rather than picking at random
//! sends every retry to another instance — the race that matters, as a load balancer would
//! after a failed connection — and keeps the state space small.
//!
//! Faults: instances crash (and restart empty); the network loses HTTP requests and responses;
//! a timeout that fires while its work is still under way is a stall. The database does not
//! crash, and its link to an instance fails only with that instance: a lost connection is an
//! instance crash, which the database learns of by its connection-lost (or lease) timer.
//!
//! A transaction or lease holder is known by its instance and that instance's run (how many
//! times it has restarted): a restarted instance has new connections, so nothing sent to or
//! from its old ones is taken for its own.
//!
//! The ledger counts pies per key, on the message that is the effect: the database's answer to
//! a commit that wrote the pie (transactional), or to the handler's own write
//! (get → handler → set); the instance's note that the handler's external effect happened
//! (lease).
//!
//! Actor ids: `0` is the client, `1..=workers` the instances, then the database.

use crate::dedup::{self, Decision, Millis, Record, Retention, Stage as RecordStage};
use crate::models::world::{pie_fingerprint, Faults, History, Message, Order, State, World};
use crate::models::Params;
use stateright::actor::{model_timeout, Actor, ActorModel, Id, Network, Out};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// How an instance uses the idempotency key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Middleware {
    /// The layer's transactional mode: one database transaction looks the key up (locking it),
    /// and commits the handler's write together with the key's record and response.
    Transactional,
    /// The layer's lease mode, for handlers with external effects: claim the key (a lease with a
    /// fencing token) in its own committed step, run the handler, then complete the key.
    Lease,
    /// Read the key (autocommit); if missing run the handler, whose write commits on its own;
    /// then store the key with the response in a separate step.
    GetHandlerSet,
}

/// A fencing token (lease mode).
pub type Token = dedup::Token;

/// The response the handler produces and the database stores with a key: `201 Created`.
pub const CREATED: u16 = 201;

/// The database's clock stands still at `NOW`: a lease is granted until `NOW + 1`, and the
/// lease timer firing is the clock reaching that deadline (the record is then stamped
/// `lease_until = NOW`, and [`dedup::decide`] calls it expired).
const NOW: Millis = 1;

/// A connection to the database: instance `instance` (numbered from 0) in its run `boot`
/// (0 until its first restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conn {
    pub instance: u8,
    pub boot: u8,
}

impl fmt::Display for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "instance {}", self.instance)?;
        after_restarts(f, self.boot)
    }
}

/// ` (after N restarts)` for a run after the first.
fn after_restarts(f: &mut fmt::Formatter<'_>, boot: u8) -> fmt::Result {
    match boot {
        0 => Ok(()),
        1 => write!(f, " (after its restart)"),
        n => write!(f, " (after {n} restarts)"),
    }
}

/// What an instance answers the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// `201 Created`: the handler ran and the key is recorded.
    Created,
    /// `201 Created`, replayed from the key's record (`Idempotent-Replayed: true`).
    Replayed,
    /// `409 Conflict`: another request holds the key (on this instance, or a live lease); try
    /// again later.
    Conflict,
    /// `503`: the transaction was gone at its commit (rolled back); nothing of this request
    /// was committed, so the key is free for a retry.
    Unavailable,
}

impl Status {
    fn is_success(self) -> bool {
        matches!(self, Status::Created | Status::Replayed)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Client → instance: `POST` an order with `Idempotency-Key: order`.
    Request { order: Order },
    /// Instance → client.
    Response { order: Order, status: Status },

    // Transactional: instance → database, then the database's answers.
    /// Open a transaction and look the key up, taking its lock (the model's lock is per key;
    /// SQLite's covers the whole file, and PostgreSQL takes none for a new key).
    Begin { order: Order, boot: u8 },
    /// The key is new and now locked by the transaction: run the handler.
    Locked { order: Order, boot: u8 },
    /// Commit the handler's write (the pie) and the key's record with the response.
    Commit { order: Order, boot: u8 },
    /// Committed: the pie and the key. (The effect.)
    Committed { order: Order, boot: u8 },
    /// The transaction is gone (rolled back): the commit is refused.
    RolledBack { order: Order, boot: u8 },

    // Lease.
    /// Claim the key: a lease with a fencing token.
    Claim { order: Order, boot: u8 },
    /// The lease is yours, with this token.
    Claimed {
        order: Order,
        boot: u8,
        token: Token,
    },
    /// Instance → itself: the handler's external effect happened (the pie is baked); now
    /// complete the key. (The effect.)
    Baked {
        order: Order,
        boot: u8,
        token: Token,
    },
    /// Complete the key with the response, under the lease's token.
    Complete {
        order: Order,
        boot: u8,
        token: Token,
    },
    /// The key is completed.
    Completed { order: Order, boot: u8 },
    /// The lease was taken over: the completion is refused.
    TakenOver { order: Order, boot: u8 },

    // Get → handler → set.
    /// Read the key (autocommit).
    Get { order: Order, boot: u8 },
    /// The key is not stored.
    Missing { order: Order, boot: u8 },
    /// The handler's own write: the pie (autocommit).
    Write { order: Order, boot: u8 },
    /// The pie is written. (The effect.)
    Written { order: Order, boot: u8 },
    /// Store the key with the response (autocommit).
    Store { order: Order, boot: u8 },
    /// The key is stored.
    Stored { order: Order, boot: u8 },

    // Any middleware.
    /// The key is completed with this stored response: replay it.
    Found {
        order: Order,
        boot: u8,
        response: u16,
    },
    /// Another request holds the key (a live lease).
    Busy { order: Order, boot: u8 },
}

impl Msg {
    /// The key the message is about.
    fn order(&self) -> Order {
        match *self {
            Msg::Request { order }
            | Msg::Response { order, .. }
            | Msg::Begin { order, .. }
            | Msg::Locked { order, .. }
            | Msg::Commit { order, .. }
            | Msg::Committed { order, .. }
            | Msg::RolledBack { order, .. }
            | Msg::Claim { order, .. }
            | Msg::Claimed { order, .. }
            | Msg::Baked { order, .. }
            | Msg::Complete { order, .. }
            | Msg::Completed { order, .. }
            | Msg::TakenOver { order, .. }
            | Msg::Get { order, .. }
            | Msg::Missing { order, .. }
            | Msg::Write { order, .. }
            | Msg::Written { order, .. }
            | Msg::Store { order, .. }
            | Msg::Stored { order, .. }
            | Msg::Found { order, .. }
            | Msg::Busy { order, .. } => order,
        }
    }

    /// HTTP between the client and an instance (the rest is an instance's database connection).
    fn is_http(&self) -> bool {
        matches!(self, Msg::Request { .. } | Msg::Response { .. })
    }
}

impl Message for Msg {
    fn kept_pie(&self) -> Option<Order> {
        match *self {
            Msg::Committed { order, .. }
            | Msg::Baked { order, .. }
            | Msg::Written { order, .. } => Some(order),
            _ => None,
        }
    }

    /// The network loses HTTP only: a database connection fails with its instance (a crash).
    fn may_be_lost(&self) -> bool {
        self.is_http()
    }
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The instance's run, where it is not the first.
        let boot = msg_boot(self);
        match *self {
            Msg::Request { order } => write!(f, "POST /pies with Idempotency-Key {order}"),
            Msg::Response { order, status } => match status {
                Status::Created => write!(f, "201 Created for key {order}"),
                Status::Replayed => write!(f, "201 Created for key {order} (replayed)"),
                Status::Conflict => write!(f, "409 Conflict for key {order} (in progress)"),
                Status::Unavailable => {
                    write!(f, "503 Service Unavailable for key {order} (nothing committed)")
                }
            },
            Msg::Begin { order, .. } => write!(f, "BEGIN; look key {order} up, taking its lock"),
            Msg::Locked { order, .. } => {
                write!(f, "\"key {order} is new, locked for you: run the handler\"")
            }
            Msg::Commit { order, .. } => {
                write!(f, "COMMIT the pie and key {order} with its response")
            }
            Msg::Committed { order, .. } => {
                write!(f, "\"committed: the pie and key {order}\"")
            }
            Msg::RolledBack { .. } => {
                write!(f, "\"no such transaction (rolled back): COMMIT refused\"")
            }
            Msg::Claim { order, .. } => write!(f, "a claim on key {order}"),
            Msg::Claimed { order, token, .. } => {
                write!(f, "\"key {order} is yours: a lease with token {token}\"")
            }
            Msg::Baked { order, token, .. } => write!(
                f,
                "a note: \"the handler baked the pie for key {order} (token {token}): complete key {order}\""
            ),
            Msg::Complete { order, token, .. } => {
                write!(f, "complete key {order} with its response (token {token})")
            }
            Msg::Completed { order, .. } => write!(f, "\"key {order} completed\""),
            Msg::TakenOver { order, .. } => {
                write!(f, "\"key {order} was taken over: completion refused\"")
            }
            Msg::Get { order, .. } => write!(f, "GET key {order}"),
            Msg::Missing { order, .. } => write!(f, "\"key {order} is not stored\""),
            Msg::Write { order, .. } => write!(f, "the handler's INSERT of the pie for key {order}"),
            Msg::Written { order, .. } => write!(f, "\"the pie for key {order} is written\""),
            Msg::Store { order, .. } => write!(f, "SET key {order} with its response"),
            Msg::Stored { order, .. } => write!(f, "\"key {order} is stored\""),
            Msg::Found {
                order, response, ..
            } => write!(f, "\"key {order} is done: its stored response is {response}\""),
            Msg::Busy { order, .. } => write!(f, "\"key {order} is in progress (leased)\""),
        }?;
        after_restarts(f, boot)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The client gives up waiting for an answer about this key and retries.
    Patience { order: Order },
    /// An instance's handler for this key finishes its work.
    Handler { order: Order },
    /// The database: `conn`'s transaction on this key has lost its connection (or has been idle
    /// in the transaction too long) and is rolled back.
    ConnectionLost { order: Order, conn: Conn },
    /// The database: the lease on this key runs out.
    LeaseExpiry { order: Order },
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timer::Patience { order } => write!(f, "patience for key {order}"),
            Timer::Handler { order } => write!(f, "handler timer for key {order}"),
            Timer::ConnectionLost { order, conn } => write!(
                f,
                "connection-lost timer for the transaction of {conn} on key {order}"
            ),
            Timer::LeaseExpiry { order } => write!(f, "lease timer for key {order}"),
        }
    }
}

/// No step of this cast is a random choice.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NoChoice {}

impl fmt::Display for NoChoice {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

/// How far an instance is with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Waiting for the key's lookup: the transaction's (which may wait for the key's lock), the
    /// claim, or the `GET`.
    LookingUp,
    /// In the handler (lease mode: under the lease with `token`; 0 elsewhere).
    InHandler { token: Token },
    /// Lease mode: the handler's effect happened; the note to complete is on its way.
    Baked { token: Token },
    /// Waiting for the commit (transactional), the completion (lease) or the handler's write
    /// (get → handler → set).
    Finishing,
    /// Get → handler → set: waiting for the key to be stored.
    Storing,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HttpState {
    Client {
        /// Keys answered with a 2xx.
        done: BTreeSet<Order>,
        /// Per key, the instance the next retry goes to.
        next: Vec<u8>,
    },
    Instance {
        /// This run's number (from storage: one more than the last run's).
        boot: u8,
        /// The requests under way, by key (one at a time per key: another request for a key
        /// under way here gets 409).
        steps: BTreeMap<Order, Step>,
    },
    Database {
        /// The idempotency keys' records, with the stored response.
        records: BTreeMap<Order, Record<u16>>,
        /// Transactional: the transaction holding each key's lock. Lease: each lease's holder.
        holders: BTreeMap<Order, Conn>,
        /// Transactional: the transactions waiting for each key's lock, first come first served.
        waiting: BTreeMap<Order, Vec<Conn>>,
    },
}

#[derive(Clone, Debug)]
pub enum Http {
    Client {
        orders: Order,
        instances: u8,
    },
    Instance {
        no: u8,
        middleware: Middleware,
        db: Id,
    },
    Database,
}

/// The client's actor id.
fn client() -> Id {
    Id::from(0)
}

fn instance_id(instance: u8) -> Id {
    Id::from(1 + instance as usize)
}

fn instance_no(id: Id) -> u8 {
    (usize::from(id) - 1) as u8
}

/// The client sends `order` to the instance due next, moves on to the one after, and (re)sets
/// its patience.
fn send_request(instances: u8, next: &mut u8, order: Order, o: &mut Out<Http>) {
    o.send(instance_id(*next), Msg::Request { order });
    *next = (*next + 1) % instances;
    o.set_timer(Timer::Patience { order }, model_timeout());
}

fn client_mut<'a>(state: &'a mut Cow<'_, HttpState>) -> (&'a mut BTreeSet<Order>, &'a mut Vec<u8>) {
    match state.to_mut() {
        HttpState::Client { done, next } => (done, next),
        _ => unreachable!("client_mut on another actor"),
    }
}

fn steps_mut<'a>(state: &'a mut Cow<'_, HttpState>) -> &'a mut BTreeMap<Order, Step> {
    match state.to_mut() {
        HttpState::Instance { steps, .. } => steps,
        _ => unreachable!("steps_mut on another actor"),
    }
}

/// The database's tables.
type Tables<'a> = (
    &'a mut BTreeMap<Order, Record<u16>>,
    &'a mut BTreeMap<Order, Conn>,
    &'a mut BTreeMap<Order, Vec<Conn>>,
);

fn tables<'a>(state: &'a mut Cow<'_, HttpState>) -> Tables<'a> {
    match state.to_mut() {
        HttpState::Database {
            records,
            holders,
            waiting,
        } => (records, holders, waiting),
        _ => unreachable!("tables on another actor"),
    }
}

/// The database's answer to a lookup that found the key completed, or `None`.
fn replay(decision: &Decision<u16>, order: Order, boot: u8) -> Option<Msg> {
    match *decision {
        Decision::Duplicate { result } => Some(Msg::Found {
            order,
            boot,
            response: *result,
        }),
        _ => None,
    }
}

/// Transactional: `conn`'s transaction gets key `order`'s lock and looks the key up (with
/// [`dedup::decide`]). A new key stays locked by it; a completed one is replayed and the
/// transaction ends. Returns whether the transaction now holds the lock.
fn admit(t: &mut Tables, order: Order, conn: Conn, o: &mut Out<Http>) -> bool {
    let (records, holders, _) = t;
    let to = instance_id(conn.instance);
    let boot = conn.boot;
    let decision = dedup::decide(
        records.get(&order),
        &pie_fingerprint(order),
        Retention::Forever,
        NOW,
    );
    if decision.runs_effect() {
        holders.insert(order, conn);
        o.set_timer(Timer::ConnectionLost { order, conn }, model_timeout());
        o.send(to, Msg::Locked { order, boot });
        true
    } else {
        let answer = replay(&decision, order, boot).unwrap_or(Msg::Busy { order, boot });
        o.send(to, answer);
        false
    }
}

/// Transactional: the transaction holding `order`'s lock has ended (committed or rolled back);
/// the waiting transactions get the lock in turn, until one keeps it.
fn release(t: &mut Tables, order: Order, o: &mut Out<Http>) {
    t.1.remove(&order);
    loop {
        let Some(queue) = t.2.get_mut(&order) else {
            return;
        };
        let next = queue.remove(0);
        if queue.is_empty() {
            t.2.remove(&order);
        }
        if admit(t, order, next, o) {
            return;
        }
    }
}

impl Http {
    fn client_msg(&self, state: &mut Cow<HttpState>, msg: Msg, o: &mut Out<Self>) {
        let (Http::Client { instances, .. }, HttpState::Client { done, .. }) = (self, &**state)
        else {
            return;
        };
        let Msg::Response { order, status } = msg else {
            return;
        };
        if done.contains(&order) {
            return;
        }
        let (done, next) = client_mut(state);
        if status.is_success() {
            done.insert(order);
            o.cancel_timer(Timer::Patience { order });
        } else {
            // 409 or 503: try again, at the other instance.
            send_request(*instances, &mut next[order as usize], order, o);
        }
    }

    fn instance_msg(
        &self,
        id: Id,
        state: &mut Cow<HttpState>,
        src: Id,
        msg: Msg,
        o: &mut Out<Self>,
    ) {
        let (Http::Instance { middleware, db, .. }, HttpState::Instance { boot, steps }) =
            (self, &**state)
        else {
            return;
        };
        let (db, boot) = (*db, *boot);
        let order = msg.order();
        let step = steps.get(&order).copied();
        let answer = |status, o: &mut Out<Self>| {
            o.send(client(), Msg::Response { order, status });
        };
        // Answers on an older run's connections never reach this run.
        let current = match msg {
            Msg::Request { .. } | Msg::Response { .. } => true,
            ref m => msg_boot(m) == boot,
        };
        if !current {
            return;
        }
        match (msg, step) {
            // The layer's in-flight guard: another request for a key this instance is working on
            // gets 409 at once.
            (Msg::Request { .. }, Some(_)) => answer(Status::Conflict, o),
            (Msg::Request { .. }, None) => {
                steps_mut(state).insert(order, Step::LookingUp);
                o.send(
                    db,
                    match middleware {
                        Middleware::Transactional => Msg::Begin { order, boot },
                        Middleware::Lease => Msg::Claim { order, boot },
                        Middleware::GetHandlerSet => Msg::Get { order, boot },
                    },
                );
            }
            (Msg::Locked { .. } | Msg::Missing { .. }, Some(Step::LookingUp)) => {
                steps_mut(state).insert(order, Step::InHandler { token: 0 });
                o.set_timer(Timer::Handler { order }, model_timeout());
            }
            (Msg::Claimed { token, .. }, Some(Step::LookingUp)) => {
                steps_mut(state).insert(order, Step::InHandler { token });
                o.set_timer(Timer::Handler { order }, model_timeout());
            }
            (Msg::Found { .. }, Some(Step::LookingUp)) => {
                steps_mut(state).remove(&order);
                answer(Status::Replayed, o);
            }
            (Msg::Busy { .. }, Some(Step::LookingUp)) => {
                steps_mut(state).remove(&order);
                answer(Status::Conflict, o);
            }
            (Msg::Baked { token, .. }, Some(Step::Baked { token: t }))
                if src == id && t == token =>
            {
                steps_mut(state).insert(order, Step::Finishing);
                o.send(db, Msg::Complete { order, boot, token });
            }
            // Lease: a refused completion still answers the handler's response, as the layer
            // does: the effect has happened, and the response is its true answer.
            (
                Msg::Committed { .. } | Msg::Completed { .. } | Msg::TakenOver { .. },
                Some(Step::Finishing),
            )
            | (Msg::Stored { .. }, Some(Step::Storing)) => {
                steps_mut(state).remove(&order);
                answer(Status::Created, o);
            }
            (Msg::RolledBack { .. }, Some(Step::Finishing)) => {
                steps_mut(state).remove(&order);
                answer(Status::Unavailable, o);
            }
            (Msg::Written { .. }, Some(Step::Finishing)) => {
                steps_mut(state).insert(order, Step::Storing);
                o.send(db, Msg::Store { order, boot });
            }
            _ => {}
        }
    }

    fn database_msg(&self, state: &mut Cow<HttpState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        let (
            Http::Database,
            HttpState::Database {
                records, holders, ..
            },
        ) = (self, &**state)
        else {
            return;
        };
        let order = msg.order();
        let boot = msg_boot(&msg);
        let conn = Conn {
            instance: instance_no(src),
            boot,
        };
        let fp = pie_fingerprint(order);
        let completed = || Record::completed(fp, CREATED, NOW);
        match msg {
            // Transactional.
            Msg::Begin { .. } => {
                let mut t = tables(state);
                if t.1.contains_key(&order) {
                    // The key is locked: this transaction waits (no answer yet).
                    t.2.entry(order).or_default().push(conn);
                } else {
                    admit(&mut t, order, conn, o);
                }
            }
            Msg::Commit { .. } if holders.get(&order) == Some(&conn) => {
                let mut t = tables(state);
                // The handler's write and the key's record, in one commit.
                t.0.insert(order, completed());
                o.cancel_timer(Timer::ConnectionLost { order, conn });
                o.send(src, Msg::Committed { order, boot });
                release(&mut t, order, o);
            }
            Msg::Commit { .. } => o.send(src, Msg::RolledBack { order, boot }),
            // Lease.
            Msg::Claim { .. } => {
                let decision = dedup::decide(records.get(&order), &fp, Retention::Forever, NOW);
                let token = match decision {
                    Decision::TakeOver { stale_owner } => Some(stale_owner + 1),
                    ref d if d.runs_effect() => Some(1),
                    _ => None,
                };
                match token {
                    Some(token) => {
                        let answer = Msg::Claimed { order, boot, token };
                        let (records, holders, _) = tables(state);
                        records.insert(order, Record::claimed(fp, token, NOW + 1));
                        holders.insert(order, conn);
                        o.set_timer(Timer::LeaseExpiry { order }, model_timeout());
                        o.send(src, answer);
                    }
                    None => {
                        let answer =
                            replay(&decision, order, boot).unwrap_or(Msg::Busy { order, boot });
                        o.send(src, answer);
                    }
                }
            }
            Msg::Complete { token, .. } => {
                // The stores' own fencing check: a stale token records nothing.
                if dedup::owns(records.get(&order), token).is_ok() {
                    let (records, holders, _) = tables(state);
                    records.insert(order, completed());
                    holders.remove(&order);
                    o.cancel_timer(Timer::LeaseExpiry { order });
                    o.send(src, Msg::Completed { order, boot });
                } else {
                    o.send(src, Msg::TakenOver { order, boot });
                }
            }
            // Get → handler → set.
            Msg::Get { .. } => {
                let decision = dedup::decide(records.get(&order), &fp, Retention::Forever, NOW);
                let answer = if decision.runs_effect() {
                    Msg::Missing { order, boot }
                } else {
                    replay(&decision, order, boot).unwrap_or(Msg::Busy { order, boot })
                };
                o.send(src, answer);
            }
            Msg::Write { .. } => o.send(src, Msg::Written { order, boot }),
            Msg::Store { .. } => {
                tables(state).0.insert(order, completed());
                o.send(src, Msg::Stored { order, boot });
            }
            _ => {}
        }
    }
}

/// The instance run a database message belongs to.
fn msg_boot(msg: &Msg) -> u8 {
    match *msg {
        Msg::Request { .. } | Msg::Response { .. } => 0,
        Msg::Begin { boot, .. }
        | Msg::Locked { boot, .. }
        | Msg::Commit { boot, .. }
        | Msg::Committed { boot, .. }
        | Msg::RolledBack { boot, .. }
        | Msg::Claim { boot, .. }
        | Msg::Claimed { boot, .. }
        | Msg::Baked { boot, .. }
        | Msg::Complete { boot, .. }
        | Msg::Completed { boot, .. }
        | Msg::TakenOver { boot, .. }
        | Msg::Get { boot, .. }
        | Msg::Missing { boot, .. }
        | Msg::Write { boot, .. }
        | Msg::Written { boot, .. }
        | Msg::Store { boot, .. }
        | Msg::Stored { boot, .. }
        | Msg::Found { boot, .. }
        | Msg::Busy { boot, .. } => boot,
    }
}

impl Actor for Http {
    type Msg = Msg;
    type Timer = Timer;
    type State = HttpState;
    /// An instance's run number, kept across restarts.
    type Storage = u8;
    type Random = NoChoice;

    fn name(&self) -> String {
        match self {
            Http::Client { .. } => "client".into(),
            Http::Instance { no, .. } => format!("instance {no}"),
            Http::Database => "database".into(),
        }
    }

    fn on_start(&self, _id: Id, storage: &Option<u8>, o: &mut Out<Self>) -> HttpState {
        match self {
            Http::Client { orders, instances } => {
                let mut next = vec![0; *orders as usize];
                for order in 0..*orders {
                    send_request(*instances, &mut next[order as usize], order, o);
                }
                HttpState::Client {
                    done: BTreeSet::new(),
                    next,
                }
            }
            Http::Instance { .. } => {
                let boot = storage.map_or(0, |b| b + 1);
                o.save(boot);
                HttpState::Instance {
                    boot,
                    steps: BTreeMap::new(),
                }
            }
            Http::Database => HttpState::Database {
                records: BTreeMap::new(),
                holders: BTreeMap::new(),
                waiting: BTreeMap::new(),
            },
        }
    }

    fn on_msg(&self, id: Id, state: &mut Cow<HttpState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match self {
            Http::Client { .. } => self.client_msg(state, msg, o),
            Http::Instance { .. } => self.instance_msg(id, state, src, msg, o),
            Http::Database => self.database_msg(state, src, msg, o),
        }
    }

    fn on_timeout(&self, id: Id, state: &mut Cow<HttpState>, timer: &Timer, o: &mut Out<Self>) {
        match (self, &**state, *timer) {
            // No 2xx yet: retry at the next instance.
            (
                Http::Client { instances, .. },
                HttpState::Client { done, .. },
                Timer::Patience { order },
            ) if !done.contains(&order) => {
                let (_, next) = client_mut(state);
                send_request(*instances, &mut next[order as usize], order, o);
            }
            // The handler's work is done: commit it, have its external effect, or write it.
            (
                Http::Instance { middleware, db, .. },
                HttpState::Instance { boot, steps },
                Timer::Handler { order },
            ) => {
                let Some(&Step::InHandler { token }) = steps.get(&order) else {
                    return;
                };
                let (db, boot) = (*db, *boot);
                match middleware {
                    Middleware::Transactional => {
                        steps_mut(state).insert(order, Step::Finishing);
                        o.send(db, Msg::Commit { order, boot });
                    }
                    Middleware::Lease => {
                        steps_mut(state).insert(order, Step::Baked { token });
                        o.send(id, Msg::Baked { order, boot, token });
                    }
                    Middleware::GetHandlerSet => {
                        steps_mut(state).insert(order, Step::Finishing);
                        o.send(db, Msg::Write { order, boot });
                    }
                }
            }
            // The transaction's connection is lost: roll it back.
            (
                Http::Database,
                HttpState::Database { holders, .. },
                Timer::ConnectionLost { order, conn },
            ) if holders.get(&order) == Some(&conn) => {
                let mut t = tables(state);
                release(&mut t, order, o);
            }
            // The lease runs out: the key may be taken over.
            (Http::Database, HttpState::Database { records, .. }, Timer::LeaseExpiry { order }) => {
                if let Some(Record {
                    fingerprint,
                    stage: RecordStage::InProgress { owner, .. },
                }) = records.get(&order).cloned()
                {
                    tables(state)
                        .0
                        .insert(order, Record::claimed(fingerprint, owner, NOW));
                }
            }
            _ => {}
        }
    }
}

/// The model's configuration, readable by `is_stall`.
#[derive(Clone, Debug)]
pub struct Setup {
    pub workers: usize,
}

/// Is `conn`'s instance, in that run, alive and still working on a request for `order`? (The
/// database answers every call and its link loses nothing, so a live instance with a request
/// under way is always getting somewhere.)
fn at_work(state: &State<Http>, conn: Conn, order: Order) -> bool {
    let i = 1 + conn.instance as usize;
    !state.crashed[i]
        && matches!(&*state.actor_states[i],
            HttpState::Instance { boot, steps } if *boot == conn.boot && steps.contains_key(&order))
}

/// A timeout is a stall when what it waits for is still under way. For the client: a request
/// for the key or an answer to it is on its way, or a live instance is working on the key. For
/// the database's connection-lost and lease timers: the transaction's (or lease's) instance is
/// alive, in the same run, and still working on the key — once it has crashed, the timer is how
/// the database recovers, no fault needed.
fn is_stall(
    model: &ActorModel<Http, Setup, History>,
    state: &State<Http>,
    _actor: Id,
    timer: &Timer,
) -> bool {
    let db = model.cfg.workers + 1;
    match *timer {
        Timer::Patience { order } => {
            state
                .network
                .iter_deliverable()
                .any(|env| env.msg.is_http() && env.msg.order() == order)
                || (0..model.cfg.workers).any(|k| {
                    let i = 1 + k;
                    !state.crashed[i]
                        && matches!(&*state.actor_states[i],
                            HttpState::Instance { steps, .. } if steps.contains_key(&order))
                })
        }
        Timer::ConnectionLost { order, conn } => at_work(state, conn, order),
        Timer::LeaseExpiry { order } => match &*state.actor_states[db] {
            HttpState::Database { holders, .. } => holders
                .get(&order)
                .is_some_and(|&conn| at_work(state, conn, order)),
            _ => false,
        },
        Timer::Handler { .. } => false,
    }
}

/// No symmetry reduction: the client's order of instances tells them apart.
pub const SYMMETRY: &str = "none";

/// The world type of the HTTP designs.
pub type HttpWorld = World<Http, Setup>;

/// What makes one HTTP design differ from another.
#[derive(Clone, Copy, Debug)]
pub struct HttpCfg {
    /// How an instance uses the idempotency key.
    pub middleware: Middleware,
}

impl HttpCfg {
    /// The design's world at `p`: the client with `p.orders` keys, `p.workers` instances and
    /// the database, with `p`'s faults (crashes are the instances').
    pub fn into_world(self, p: &Params) -> HttpWorld {
        let workers = p.workers as usize;
        let db = Id::from(1 + workers);
        let mut model = ActorModel::new(Setup { workers }, History::placing(0..p.orders))
            .actor(Http::Client {
                orders: p.orders,
                instances: p.workers,
            })
            .init_network(Network::new_unordered_nonduplicating([]))
            .lossy_network(if p.losses > 0 {
                stateright::actor::LossyNetwork::Yes
            } else {
                stateright::actor::LossyNetwork::No
            })
            .record_msg_out(World::<Http, Setup>::effects);
        for no in 0..p.workers {
            model = model.actor(Http::Instance {
                no,
                middleware: self.middleware,
                db,
            });
        }
        model = model.actor(Http::Database);
        let crashable = (0..workers + 2)
            .map(|i| (1..=workers).contains(&i))
            .collect();
        World::new(model, Faults::of(p), crashable, is_stall)
    }
}

/// The database is not the inbox's one-step deliver (its key is held across steps), so no house
/// here stands for the real inbox.
impl crate::models::house::StoreHouse for Http {}
