//! Stateright actor models of every delivery design, one file per design, and the machinery
//! to check them for the one invariant in [`crate::ledger`].
//!
//! Each design file says what it claims and why in its doc comment, builds its [`world::World`]
//! from [`Params`], and lists the verdicts it expects at its default size. Those expectations
//! are asserted by `cargo test` against freshly computed verdicts — never printed from a table.

pub mod casts;
pub mod designs;
pub mod engine;
pub mod house;
pub mod proofs;
pub mod simulate;

// Each module keeps the path it had before the folders (`models::world`, `models::pizzeria`,
// `models::idempotent_house`, …), for the rest of the crate and its users.
pub use casts::{clocks, customer, http, leases, pizzeria};
pub use designs::*;
pub use engine::{check, explore, symmetry, world};

use serde::Serialize;
use std::fmt;

pub use check::{CheckError, CheckOptions, CheckReport, Verdict};

/// The sizes and fault budget a design is checked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Params {
    pub orders: u8,
    pub workers: u8,
    pub crashes: u8,
    pub losses: u8,
    pub stalls: u8,
    /// Designs with clocks: each clock runs between 1 − drift% and 1 + drift% as fast as real
    /// time; 100 lets a clock stop (drift without a bound). `None` where there are no clocks.
    pub drift: Option<u8>,
    /// Deadline designs: the ticks the queue waits beyond the lease, on its own clock, before it
    /// hands the order out again. `None` elsewhere.
    pub margin: Option<u8>,
    /// Dedup-window design: the house forgets an order ID this many ticks (of its clock) after
    /// recording it. `None` elsewhere.
    pub window: Option<u8>,
}

/// The largest value each size may take: beyond these even small designs take minutes or
/// gigabytes, and no counterexample needs them.
pub const MAX_ORDERS: u8 = 4;
pub const MAX_WORKERS: u8 = 4;
pub const MAX_FAULTS: u8 = 3;
/// Drift is a percentage; at 100 a clock may stand still, which no margin survives.
pub const MAX_DRIFT: u8 = 100;
pub const MAX_MARGIN: u8 = 8;
pub const MAX_WINDOW: u8 = 4;

impl Params {
    /// `orders` × `workers` with at most `crashes`, `losses` and `stalls` in a run, for a
    /// design without clocks, a lease margin or a dedup window.
    pub const fn plain(orders: u8, workers: u8, crashes: u8, losses: u8, stalls: u8) -> Self {
        Params {
            orders,
            workers,
            crashes,
            losses,
            stalls,
            drift: None,
            margin: None,
            window: None,
        }
    }

    /// Checks the sizes are in range; the error names the valid range.
    pub fn validate(&self) -> Result<(), CheckError> {
        let range = |name: &'static str, value: u8, min: u8, max: u8| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(CheckError::OutOfRange {
                    name,
                    value: value as u64,
                    min: min as u64,
                    max: max as u64,
                })
            }
        };
        range("orders", self.orders, 1, MAX_ORDERS)?;
        range("workers", self.workers, 1, MAX_WORKERS)?;
        range("crashes", self.crashes, 0, MAX_FAULTS)?;
        range("losses", self.losses, 0, MAX_FAULTS)?;
        range("stalls", self.stalls, 0, MAX_FAULTS)?;
        if let Some(drift) = self.drift {
            range("drift", drift, 0, MAX_DRIFT)?;
        }
        if let Some(margin) = self.margin {
            range("margin", margin, 0, MAX_MARGIN)?;
        }
        if let Some(window) = self.window {
            range("window", window, 0, MAX_WINDOW)?;
        }
        Ok(())
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} orders, {} workers, ≤{} crashes, ≤{} lost messages, ≤{} stalls",
            self.orders, self.workers, self.crashes, self.losses, self.stalls
        )?;
        // Only the bounds a design has: clocks, a lease and margin, a dedup window.
        match self.drift {
            Some(d) if d >= MAX_DRIFT => write!(f, ", clock drift unbounded (a clock may stop)")?,
            Some(d) => write!(f, ", clock drift ±{d}%")?,
            None => {}
        }
        if let Some(m) = self.margin {
            write!(
                f,
                ", lease {} ticks + margin {m} ticks",
                clocks::LEASE_TICKS
            )?;
        }
        if let Some(w) = self.window {
            write!(f, ", dedup window {w} ticks")?;
        }
        Ok(())
    }
}

/// A delivery design: its name, what it is, what we expect of it, and its model. A design file
/// is its doc comment, this and its world; checking, replaying and exploring are the same for
/// every design (below).
pub struct Design {
    /// The name used on the command line, e.g. `ack-after-work`.
    pub name: &'static str,
    /// One line: what the design does.
    pub summary: &'static str,
    /// The verdict each property should get at the default size.
    pub expected: &'static [(&'static str, Verdict)],
    /// The default size: big enough for every counterexample, small enough for seconds.
    pub defaults: Params,
    /// A larger size the design is also checked at, where that takes seconds: its proof states
    /// the verdicts there too, and `cargo test` asserts they are the expected ones.
    pub larger: Option<Params>,
    /// The design's model at the given sizes.
    pub world: fn(&Params) -> AnyWorld,
}

/// A design's model, whichever cast it is built from.
pub enum AnyWorld {
    Pizzeria(pizzeria::PizzeriaWorld),
    Timed(clocks::TimedWorld),
    Lease(leases::LeaseWorld),
    Phone(customer::PhoneWorld),
    Http(http::HttpWorld),
}

/// Runs `$body` with `$w` bound to the concrete world inside an [`AnyWorld`].
macro_rules! with_world {
    ($any:expr, $w:ident => $body:expr) => {
        match $any {
            AnyWorld::Pizzeria($w) => $body,
            AnyWorld::Timed($w) => $body,
            AnyWorld::Lease($w) => $body,
            AnyWorld::Phone($w) => $body,
            AnyWorld::Http($w) => $body,
        }
    };
}

impl From<pizzeria::PizzeriaWorld> for AnyWorld {
    fn from(w: pizzeria::PizzeriaWorld) -> Self {
        AnyWorld::Pizzeria(w)
    }
}
impl From<clocks::TimedWorld> for AnyWorld {
    fn from(w: clocks::TimedWorld) -> Self {
        AnyWorld::Timed(w)
    }
}
impl From<leases::LeaseWorld> for AnyWorld {
    fn from(w: leases::LeaseWorld) -> Self {
        AnyWorld::Lease(w)
    }
}
impl From<customer::PhoneWorld> for AnyWorld {
    fn from(w: customer::PhoneWorld) -> Self {
        AnyWorld::Phone(w)
    }
}
impl From<http::HttpWorld> for AnyWorld {
    fn from(w: http::HttpWorld) -> Self {
        AnyWorld::Http(w)
    }
}

impl AnyWorld {
    /// What the cast's symmetry treats as interchangeable.
    pub fn reduction(&self) -> &'static str {
        let reduced = with_world!(self, w => w.symmetry.is_some());
        match self {
            _ if !reduced => "none",
            AnyWorld::Pizzeria(_) => pizzeria::SYMMETRY,
            AnyWorld::Timed(_) => clocks::SYMMETRY,
            AnyWorld::Lease(_) => leases::SYMMETRY,
            AnyWorld::Phone(_) => customer::SYMMETRY,
            AnyWorld::Http(_) => http::SYMMETRY,
        }
    }
}

impl Design {
    /// The expected verdict of `property` at the default size.
    pub fn expected_verdict(&self, property: &str) -> Option<Verdict> {
        self.expected
            .iter()
            .find(|(name, _)| *name == property)
            .map(|(_, v)| *v)
    }

    /// Model-checks the design at `params`.
    pub fn check(&self, params: &Params, opts: &CheckOptions) -> Result<CheckReport, CheckError> {
        let world = (self.world)(params);
        let reduction = world.reduction();
        with_world!(world, w => check::run(self.name, params.to_string(), w, reduction, opts))
    }

    /// Replays an explorer path (as in a counterexample) and says how it ends.
    pub fn ending(&self, params: &Params, explorer_path: &str) -> Option<check::Ending> {
        with_world!((self.world)(params), w => check::ending(&w, explorer_path))
    }

    /// Whether some house of the design stands for the real inbox (see [`house`]).
    pub fn has_store_house(&self, params: &Params) -> bool {
        use house::StoreHouse;
        use stateright::Model;
        with_world!((self.world)(params), w => w.init_states().iter().any(|s| {
            w.inner
                .actors
                .iter()
                .zip(&s.actor_states)
                .any(|(actor, state)| actor.remembered(state).is_some())
        }))
    }

    /// Every distinct step the design's real-inbox houses take, from an exhaustive search at
    /// `params` (see [`house::explore`]).
    pub fn house_steps(
        &self,
        params: &Params,
        opts: &CheckOptions,
    ) -> Result<house::Explored, CheckError> {
        let search = opts.search_options(self.name);
        with_world!((self.world)(params), w => house::explore(&w, &search))
            .map_err(|stop| check::stopped(self.name, opts, stop))
    }

    /// Whether `onepie simulate` can run the design (its cast's timers are mapped to time).
    pub fn simulable(&self) -> bool {
        matches!((self.world)(&self.defaults), AnyWorld::Pizzeria(_))
    }

    /// Simulates the design with `p` on `threads` threads (see [`simulate`]); `tick` is
    /// called after each run.
    pub fn simulate(
        &self,
        p: &simulate::SimParams,
        threads: usize,
        tick: &(dyn Fn() + Sync),
    ) -> Result<simulate::Summary, CheckError> {
        let params = Params {
            orders: p.orders,
            workers: p.workers,
            ..self.defaults
        };
        match (self.world)(&params) {
            AnyWorld::Pizzeria(w) => Ok(simulate::simulate(self.name, &w, p, threads, tick)),
            _ => Err(CheckError::NotSimulable {
                design: self.name,
                valid: designs()
                    .iter()
                    .filter(|d| d.simulable())
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Serves Stateright's explorer for the design at `params` on `addr` (blocks).
    pub fn explore(&self, params: &Params, addr: std::net::SocketAddr) {
        with_world!((self.world)(params), w => explore::serve(w, addr))
    }
}

/// Every design, in the order the table lists them.
pub fn designs() -> Vec<&'static Design> {
    vec![
        &delete_on_delivery::DESIGN,
        &ack_before_work::DESIGN,
        &ack_after_work::DESIGN,
        &idempotent_house::DESIGN,
        &shared_dedup_fleet::DESIGN,
        &deadline::DESIGN,
        &deadline_thin_margin::DESIGN,
        &deadline_unbounded::DESIGN,
        &deadline_check_pause::DESIGN,
        &lease_no_fencing::DESIGN,
        &lease_fencing::DESIGN,
        &lease_fenced_dedup::DESIGN,
        &check_then_act::DESIGN,
        &forgetful_house::DESIGN,
        &per_host_dedup::DESIGN,
        &dedup_window::DESIGN,
        &record_first::DESIGN,
        &accept_first::DESIGN,
        &producer_retry::DESIGN,
        &idempotency_key::DESIGN,
        &idempotency_layer::DESIGN,
        &idempotency_layer_lease::DESIGN,
        &get_handler_set::DESIGN,
    ]
}

/// Looks a design up by name; the error lists the valid names.
pub fn find(name: &str) -> Result<&'static Design, CheckError> {
    designs()
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| CheckError::UnknownDesign {
            name: name.to_string(),
            valid: designs()
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The designs that have the parameter `flag` (`drift`, `margin` or `window`).
pub fn designs_with(flag: &str) -> Vec<&'static str> {
    designs()
        .into_iter()
        .filter(|d| match flag {
            "drift" => d.defaults.drift.is_some(),
            "margin" => d.defaults.margin.is_some(),
            "window" => d.defaults.window.is_some(),
            _ => false,
        })
        .map(|d| d.name)
        .collect()
}
