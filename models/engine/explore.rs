//! Serving Stateright's explorer for a design.

use crate::models::world::{Message, World};
use stateright::actor::Actor;
use stateright::Model;
use std::fmt::Display;

/// Serves the explorer for `world` on `addr`; blocks. The caller checks the port is free first
/// (Stateright panics on `AddrInUse`).
pub fn serve<A, C>(world: World<A, C>, addr: std::net::SocketAddr)
where
    A: Actor + Send + Sync + 'static,
    A::Msg: Ord + Message + Send + Sync,
    A::Timer: Ord + Display + Send + Sync,
    A::Random: Display + Send + Sync,
    A::State: Send + Sync,
    A::Storage: Send + Sync,
    C: Send + Sync + 'static,
{
    world.checker().serve(addr);
}
