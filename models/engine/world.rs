//! The world a design runs in: its Stateright actors plus a *bounded* budget of faults, and the
//! shared "exactly one pie per order" properties every design is checked for.
//!
//! Stateright's own fault knobs are unbounded over a run (`LossyNetwork::Yes` drops any number
//! of messages; `max_crashes` bounds only *concurrent* crashes), and with unbounded faults no
//! design can promise every order a pie. [`World`] wraps an [`ActorModel`] and counts each fault
//! (crash, lost message, stall) in the state's history, refusing the fault once its budget is
//! spent — Molly's "no more faults after EFF". Liveness is then a safety property over
//! *quiet* states: whenever nothing but a fault could happen next, every placed order has a pie.
//! (Stateright 0.31's `Expectation::Eventually` accepts retry cycles, so it is not used.)

use crate::ledger::Ledger;
use crate::models::engine::search::{self, Searchable};
use stateright::actor::{
    Actor, ActorModel, ActorModelAction, ActorModelState, Envelope, Id, Network,
};
use stateright::{Model, Path, Property};
use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::hash::Hash;

/// An order's number in the models.
pub type Order = u8;

/// What the checker lets go wrong, at most, in one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Faults {
    /// Crashes of crash-prone actors (workers; houses whose design says they may crash).
    pub crashes: u8,
    /// Messages the network loses.
    pub losses: u8,
    /// Stalls: a timeout that fires although the work it guards is still under way.
    pub stalls: u8,
}

impl Faults {
    /// The budget a design's parameters give.
    pub fn of(p: &crate::models::Params) -> Self {
        Faults {
            crashes: p.crashes,
            losses: p.losses,
            stalls: p.stalls,
        }
    }
}

/// The auxiliary history every design carries: the ledger of pies and the faults used so far.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct History {
    pub ledger: Ledger<Order>,
    pub used: Faults,
}

impl Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}; faults used: {} crashes, {} losses, {} stalls",
            self.ledger, self.used.crashes, self.used.losses, self.used.stalls
        )
    }
}

impl History {
    /// The history of a run in which `orders` were placed and nothing has happened yet.
    pub fn placing(orders: impl IntoIterator<Item = Order>) -> Self {
        History {
            ledger: Ledger::placing(orders),
            used: Faults::default(),
        }
    }
}

/// What every design's message type tells the world: which message *is* an effect.
pub trait Message: Display {
    /// `Some(order)` when sending this message means a pie for `order` was kept by its house
    /// (the house's receipt for a kept pie). Counting effects on send, in the history, means a
    /// crash of the house cannot hide a duplicate.
    fn kept_pie(&self) -> Option<Order>;

    /// Whether the network may lose this message (a lost-message fault). Every message may be
    /// lost unless its cast says otherwise.
    fn may_be_lost(&self) -> bool {
        true
    }
}

/// The state of a [`World`].
pub type State<A> = ActorModelState<A, History>;
/// A step of a [`World`].
pub type Action<A> = ActorModelAction<<A as Actor>::Msg, <A as Actor>::Timer, <A as Actor>::Random>;

/// Names of the shared properties, as sentences.
pub const AT_MOST_ONE_PIE: &str = "at most one pie per order";
pub const NO_UNEXPECTED_PIE: &str = "no pie for an order never placed";
pub const EVERY_ORDER_GETS_A_PIE: &str = "every order gets a pie once nothing more can happen";
pub const SOMETIMES_ALL_DELIVERED: &str = "sometimes every order gets a pie";

/// Says whether firing a timer now is a stall (see [`World::is_stall`]).
pub type StallFn<A, C> =
    fn(&ActorModel<A, C, History>, &State<A>, Id, &<A as Actor>::Timer) -> bool;

/// A step the world itself takes along with an actor's step, for designs with explicit time: given
/// the state before `action` and the state the actors made of it, returns the state after (say,
/// with every actor's clock advanced by one real tick), or `None` when the step cannot happen now.
/// An actor can only change its own state; real time passing changes everybody's.
pub type EnvironmentFn<A, C> =
    fn(&ActorModel<A, C, History>, &State<A>, &Action<A>, State<A>) -> Option<State<A>>;

/// Symmetry: maps a state to the representative of its class (interchangeable actors put in a
/// canonical order), for symmetry reduction. Must return a relabelling of the same state.
pub type RepresentativeFn<A> = fn(&State<A>) -> State<A>;

/// Symmetry reduction for a world whose actors are partly interchangeable.
pub struct Symmetry<A: Actor>
where
    A::Msg: Ord,
    A::Timer: Ord,
{
    /// The representative of a state's class (kept in the full-state visited set).
    pub representative: RepresentativeFn<A>,
    /// The class packed as bytes, made without building the representative, if the cast can:
    /// the search then fingerprints the bytes and keeps them in its frontier instead of states.
    pub packing: Option<Packing<A>>,
}

/// A cast's packing of a state's symmetry class as bytes.
pub struct Packing<A: Actor>
where
    A::Msg: Ord,
    A::Timer: Ord,
{
    /// Writes the class's bytes: the same for every member of a class, different for
    /// different classes.
    pub pack: fn(&State<A>, &mut Vec<u8>),
    /// The representative of the class packed in the bytes.
    pub unpack: fn(&[u8]) -> State<A>,
}

impl<A: Actor> Clone for Packing<A>
where
    A::Msg: Ord,
    A::Timer: Ord,
{
    fn clone(&self) -> Self {
        *self
    }
}
impl<A: Actor> Copy for Packing<A>
where
    A::Msg: Ord,
    A::Timer: Ord,
{
}

impl<A: Actor> Clone for Symmetry<A>
where
    A::Msg: Ord,
    A::Timer: Ord,
{
    fn clone(&self) -> Self {
        *self
    }
}
impl<A: Actor> Copy for Symmetry<A>
where
    A::Msg: Ord,
    A::Timer: Ord,
{
}

/// An actor model with a bounded fault budget and the shared properties.
pub struct World<A, C>
where
    A: Actor,
    A::Msg: Ord,
    A::Timer: Ord,
{
    pub inner: ActorModel<A, C, History>,
    pub budget: Faults,
    /// Which actors may crash (by index).
    pub crashable: Vec<bool>,
    /// True when firing `timer` at `actor` now is a stall: the work it guards is still under way.
    pub is_stall: StallFn<A, C>,
    /// What the world does by itself along with a step (explicit time), if anything.
    pub environment: Option<EnvironmentFn<A, C>>,
    /// How to reduce by symmetry when some actors are interchangeable: the search engine then
    /// does (breadth-first or depth-first; `--symmetry off` ignores it).
    pub symmetry: Option<Symmetry<A>>,
}

impl<A, C> World<A, C>
where
    A: Actor,
    A::Msg: Ord + Message,
    A::Timer: Ord + Display,
    A::Random: Display,
    C: 'static,
{
    /// Wraps `inner` (built with [`World::effects`] as its `record_msg_out`).
    pub fn new(
        inner: ActorModel<A, C, History>,
        budget: Faults,
        crashable: Vec<bool>,
        is_stall: StallFn<A, C>,
    ) -> Self {
        // Let Stateright generate crashes; the budget below decides how many happen in total.
        let inner = inner.max_crashes(budget.crashes as usize);
        World {
            inner,
            budget,
            crashable,
            is_stall,
            environment: None,
            symmetry: None,
        }
    }

    /// The same world, where `environment` also acts along with every step (see [`EnvironmentFn`]).
    pub fn with_environment(mut self, environment: EnvironmentFn<A, C>) -> Self {
        self.environment = Some(environment);
        self
    }

    /// The same world, checked with symmetry reduction under `representative`.
    pub fn with_symmetry(mut self, representative: RepresentativeFn<A>) -> Self {
        self.symmetry = Some(Symmetry {
            representative,
            packing: None,
        });
        self
    }

    /// The same world, checked with symmetry reduction as `symmetry` says.
    pub fn with_symmetry_packed(mut self, symmetry: Symmetry<A>) -> Self {
        self.symmetry = Some(symmetry);
        self
    }

    /// The `record_msg_out` every design uses: a receipt for a kept pie is one effect.
    pub fn effects(
        _: &C,
        history: &History,
        env: stateright::actor::Envelope<&A::Msg>,
    ) -> Option<History> {
        env.msg.kept_pie().map(|order| {
            let mut history = history.clone();
            history.ledger.record_effect(order);
            history
        })
    }

    /// Is `action` allowed in `state`? Only faults are ever refused, once their budget is spent.
    /// `fault` is [`World::is_fault`] of the action, computed once by the caller (for a timeout
    /// it asks the design whether the work is still under way, which is not cheap).
    fn allowed(&self, state: &State<A>, action: &Action<A>, fault: bool) -> bool {
        let used = state.history.used;
        match action {
            // A message an actor sends itself is a note to self, not network traffic: only a
            // crash of that actor loses it.
            ActorModelAction::Drop(env) => {
                env.src != env.dst && env.msg.may_be_lost() && used.losses < self.budget.losses
            }
            ActorModelAction::Crash(id) => {
                used.crashes < self.budget.crashes
                    && self
                        .crashable
                        .get(usize::from(*id))
                        .copied()
                        .unwrap_or(false)
            }
            ActorModelAction::Timeout(..) => !fault || used.stalls < self.budget.stalls,
            _ => true,
        }
    }

    /// True when `action` is a fault: something that may happen but need not.
    pub fn is_fault(&self, state: &State<A>, action: &Action<A>) -> bool {
        match action {
            ActorModelAction::Drop(_) | ActorModelAction::Crash(_) => true,
            ActorModelAction::Timeout(id, timer) => (self.is_stall)(&self.inner, state, *id, timer),
            _ => false,
        }
    }

    /// The state after `action` (allowed, and a fault iff `fault`), or `None` if it changes
    /// nothing: the actors' step, the environment's, and the fault spent.
    fn step(&self, last: &State<A>, action: Action<A>, fault: bool) -> Option<State<A>> {
        let mut used = last.history.used;
        match &action {
            ActorModelAction::Drop(_) => used.losses += 1,
            ActorModelAction::Crash(_) => used.crashes += 1,
            ActorModelAction::Timeout(..) if fault => used.stalls += 1,
            _ => {}
        }
        let env_action = self.environment.map(|env| (env, action.clone()));
        let mut next = self.inner.next_state(last, action)?;
        if let Some((env, action)) = env_action {
            next = env(&self.inner, last, &action, next)?;
        }
        next.history.used = used;
        Some(next)
    }

    /// Quiet: nothing but a fault can change the state any more (every message left in flight
    /// would be ignored, no timer would do anything, no actor is down). The search gets this
    /// from [`Searchable::expand`] as it generates the successors anyway.
    pub fn is_quiet(&self, state: &State<A>) -> bool {
        self.successors(state, &mut Vec::new())
    }

    /// Pushes every allowed step out of `state` that changes it, and says whether `state` is
    /// quiet (no step but a fault changes it). Each timeout's stall test runs once.
    pub fn successors(&self, state: &State<A>, out: &mut Vec<(Action<A>, State<A>)>) -> bool {
        let mut actions = Vec::new();
        self.inner.actions(state, &mut actions);
        let mut quiet = true;
        for action in actions {
            let fault = self.is_fault(state, &action);
            if !self.allowed(state, &action, fault) {
                continue;
            }
            if let Some(next) = self.step(state, action.clone(), fault) {
                quiet &= fault;
                out.push((action, next));
            }
        }
        quiet
    }

    /// An actor's name, e.g. `worker 0`.
    pub fn actor_name(&self, id: Id) -> String {
        self.inner
            .actors
            .get(usize::from(id))
            .map(Actor::name)
            .unwrap_or_else(|| format!("actor {}", usize::from(id)))
    }

    /// A step in plain words, without its consequences; `stall` marks a premature timeout.
    pub fn describe(&self, action: &Action<A>, stall: bool) -> String {
        let name = |id: Id| self.actor_name(id);
        match action {
            ActorModelAction::Deliver { src, dst, msg } => {
                format!("{} receives {msg} from {}", name(*dst), name(*src))
            }
            ActorModelAction::Drop(env) => format!(
                "the network loses {} on its way from {} to {}",
                env.msg,
                name(env.src),
                name(env.dst)
            ),
            ActorModelAction::Timeout(id, timer) if stall => format!(
                "(stall) {}'s {timer} fires while the work is still under way",
                name(*id)
            ),
            ActorModelAction::Timeout(id, timer) => format!("{}'s {timer} fires", name(*id)),
            ActorModelAction::Crash(id) => {
                format!("{} crashes, forgetting all it was doing", name(*id))
            }
            ActorModelAction::Recover(id) => format!("{} restarts", name(*id)),
            ActorModelAction::SelectRandom { actor, random, .. } => {
                format!("{} picks {random}", name(*actor))
            }
        }
    }

    /// One step of a story: what happened, what it sent, and what it did to the pies.
    pub fn narrate(&self, last: &State<A>, action: &Action<A>, next: &State<A>) -> String {
        let name = |id: Id| self.inner.actors[usize::from(id)].name();
        let mut sent = Vec::new();
        let mut line = self.describe(action, self.is_fault(last, action));
        // What the step sent: envelopes in the next network that were not in the last one.
        let mut before = envelope_counts(&last.network);
        for (env, n) in envelope_counts(&next.network) {
            let was = before.remove(&env).unwrap_or(0);
            for _ in was..n {
                sent.push(format!("sends {} to {}", env.msg, name(env.dst)));
            }
        }
        if !sent.is_empty() {
            line.push_str(" and ");
            line.push_str(&sent.join(", "));
        }
        // What the step did to the pies.
        let (was, now) = (&last.history.ledger, &next.history.ledger);
        for (order, now) in now.effects() {
            if now > was.effects_of(order) {
                line.push_str(&match now {
                    1 => format!(" — order {order:?} has its pie"),
                    2 => format!(" — a SECOND pie for order {order:?}"),
                    n => format!(" — pie number {n} for order {order:?}"),
                });
            }
        }
        line
    }

    /// The shared properties, in table order.
    pub fn shared_properties() -> Vec<Property<Self>> {
        vec![
            Property::always(AT_MOST_ONE_PIE, |_, s: &State<A>| {
                at_most_one_pie(&s.history.ledger)
            }),
            Property::always(NO_UNEXPECTED_PIE, |_, s: &State<A>| {
                no_unexpected_pie(&s.history.ledger)
            }),
            Property::always(EVERY_ORDER_GETS_A_PIE, |w: &Self, s: &State<A>| {
                // Cheap test first: the quiet check explores every next step.
                every_order_has_a_pie(&s.history.ledger) || !w.is_quiet(s)
            }),
            Property::sometimes(SOMETIMES_ALL_DELIVERED, |_, s: &State<A>| {
                all_delivered(&s.history.ledger)
            }),
        ]
    }
}

// The four properties over the ledger, each stated once: Stateright's checker (for the explorer
// and the cross-checks) and onepie's engine both ask these.
fn at_most_one_pie(l: &Ledger<Order>) -> bool {
    l.at_most_one_effect_per_order()
}
fn no_unexpected_pie(l: &Ledger<Order>) -> bool {
    l.no_unexpected_effect()
}
fn every_order_has_a_pie(l: &Ledger<Order>) -> bool {
    l.every_placed_order_has_an_effect()
}
fn all_delivered(l: &Ledger<Order>) -> bool {
    !l.placed().is_empty() && l.every_placed_order_has_an_effect()
}

impl<A, C> Model for World<A, C>
where
    A: Actor,
    A::Msg: Ord + Message,
    A::Timer: Ord + Display,
    A::Random: Display,
    C: 'static,
{
    type State = State<A>;
    type Action = Action<A>;

    fn init_states(&self) -> Vec<Self::State> {
        self.inner.init_states()
    }

    fn actions(&self, state: &Self::State, actions: &mut Vec<Self::Action>) {
        self.inner.actions(state, actions);
        actions.retain(|a| self.allowed(state, a, self.is_fault(state, a)));
    }

    fn next_state(&self, last: &Self::State, action: Self::Action) -> Option<Self::State> {
        let fault = self.is_fault(last, &action);
        if !self.allowed(last, &action, fault) {
            return None;
        }
        self.step(last, action, fault)
    }

    // The explorer shows these: plain words first, Stateright's state dump after.
    fn format_action(&self, action: &Self::Action) -> String {
        self.describe(action, false)
    }

    fn format_step(&self, last: &Self::State, action: Self::Action) -> Option<String> {
        let next = self.next_state(last, action.clone())?;
        let story = self.narrate(last, &action, &next);
        Some(format!(
            "{story}\n\n{}",
            self.inner.format_step(last, action)?
        ))
    }

    fn as_svg(&self, path: Path<Self::State, Self::Action>) -> Option<String> {
        self.inner.as_svg(path)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        Self::shared_properties()
    }

    fn within_boundary(&self, state: &Self::State) -> bool {
        Model::within_boundary(&self.inner, state)
    }
}

impl<A, C> Searchable for World<A, C>
where
    A: Actor + Sync,
    A::Msg: Ord + Message + Send + Sync,
    A::Timer: Ord + Display + Send + Sync,
    A::Random: Display + Send + Sync,
    A::State: Send + Sync,
    A::Storage: Send + Sync,
    C: Sync + 'static,
{
    fn search_properties(&self) -> Vec<search::Property<Self>> {
        use search::{Expect, Property};
        vec![
            Property {
                name: AT_MOST_ONE_PIE,
                expect: Expect::Always,
                condition: |_, s| at_most_one_pie(&s.history.ledger),
            },
            Property {
                name: NO_UNEXPECTED_PIE,
                expect: Expect::Always,
                condition: |_, s| no_unexpected_pie(&s.history.ledger),
            },
            Property {
                name: EVERY_ORDER_GETS_A_PIE,
                expect: Expect::WhenQuiet,
                condition: |_, s| every_order_has_a_pie(&s.history.ledger),
            },
            Property {
                name: SOMETIMES_ALL_DELIVERED,
                expect: Expect::Sometimes,
                condition: |_, s| all_delivered(&s.history.ledger),
            },
        ]
    }

    fn expand(&self, state: &State<A>, out: &mut Vec<(Action<A>, State<A>)>) -> bool {
        self.successors(state, out)
    }

    fn representative(&self, state: &State<A>) -> Option<State<A>> {
        self.symmetry.map(|s| (s.representative)(state))
    }

    fn canonical_fingerprint(&self, state: &State<A>) -> Option<u64> {
        let s = self.symmetry?;
        let mut bytes = Vec::new();
        Some(if self.pack(state, &mut bytes) {
            search::fingerprint(&bytes[..])
        } else {
            search::fingerprint(&(s.representative)(state))
        })
    }

    fn pack(&self, state: &State<A>, out: &mut Vec<u8>) -> bool {
        match self.symmetry.and_then(|s| s.packing) {
            Some(p) => {
                (p.pack)(state, out);
                true
            }
            None => false,
        }
    }

    fn packs(&self) -> bool {
        self.symmetry.is_some_and(|s| s.packing.is_some())
    }

    fn unpack(&self, bytes: &[u8]) -> State<A> {
        let packing = self.symmetry.and_then(|s| s.packing);
        (packing.expect("unpack only where the world packs").unpack)(bytes)
    }

    fn has_symmetry(&self) -> bool {
        self.symmetry.is_some()
    }
}

/// Would delivering `env` now change anything? The same answer as asking the model for the
/// delivery's next state (`next_state(..).is_some()`), without building that state: only the
/// receiving actor's handler runs. Stall tests ask this of every message in flight.
pub fn would_act<A, C>(
    model: &ActorModel<A, C, History>,
    state: &State<A>,
    env: stateright::actor::Envelope<&A::Msg>,
) -> bool
where
    A: Actor,
    A::Msg: Ord,
    A::Timer: Ord,
{
    let dst = usize::from(env.dst);
    let (Some(actor), Some(actor_state)) = (model.actors.get(dst), state.actor_states.get(dst))
    else {
        return false;
    };
    if state.crashed[dst] {
        return false;
    }
    let mut next = std::borrow::Cow::Borrowed(&**actor_state);
    let mut out = stateright::actor::Out::new();
    actor.on_msg(env.dst, &mut next, env.src, env.msg.clone(), &mut out);
    !stateright::actor::is_no_op(&next, &out)
}

/// The payload fingerprint of an order's pie, as every deduplicating house hands it to
/// [`crate::dedup::decide`].
pub fn pie_fingerprint(order: Order) -> crate::dedup::Fingerprint {
    crate::dedup::Fingerprint::of(&pie_payload(order))
}

/// The payload of an order's pie, as a real store is handed it (see [`crate::models::house`]).
pub fn pie_payload(order: Order) -> Vec<u8> {
    vec![order]
}

/// The key a real store remembers an order by (see [`crate::models::house`]).
pub fn store_key(order: Order) -> String {
    format!("order-{order}")
}

/// The key of the queue's random choice of worker for an order.
pub fn choice_key(order: Order) -> String {
    format!("order {order}")
}

/// How many copies of each envelope are in flight.
fn envelope_counts<M: Clone + Eq + Hash + Ord>(
    network: &Network<M>,
) -> BTreeMap<Envelope<M>, usize> {
    let mut counts = BTreeMap::new();
    for (env, n) in envelopes(network) {
        *counts
            .entry(Envelope {
                src: env.src,
                dst: env.dst,
                msg: env.msg.clone(),
            })
            .or_insert(0) += n;
    }
    counts
}

/// Every envelope in flight with its number of copies (an ordered flow's repeats one by one).
/// Stateright 0.31's `Network::iter_all` yields an envelope with n > 1 copies n + 1 times, so
/// the multiset is read directly.
pub fn envelopes<M: Eq + Hash>(network: &Network<M>) -> Vec<(Envelope<&M>, usize)> {
    match network {
        Network::UnorderedNonDuplicating(multiset) => multiset
            .iter()
            .map(|(env, n)| {
                (
                    Envelope {
                        src: env.src,
                        dst: env.dst,
                        msg: &env.msg,
                    },
                    *n,
                )
            })
            .collect(),
        Network::UnorderedDuplicating(set, _) => set
            .iter()
            .map(|env| {
                (
                    Envelope {
                        src: env.src,
                        dst: env.dst,
                        msg: &env.msg,
                    },
                    1,
                )
            })
            .collect(),
        Network::Ordered(flows) => flows
            .iter()
            .flat_map(|(&(src, dst), msgs)| {
                msgs.iter().map(move |msg| (Envelope { src, dst, msg }, 1))
            })
            .collect(),
    }
}
