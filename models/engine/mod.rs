//! The checking engine: the world every design runs in (bounded faults, the shared properties),
//! onepie's own state-space search over Stateright models, symmetry reduction, the stories a
//! check tells, the explorer glue, and what the engine needs to measure itself.

pub mod check;
pub mod explore;
pub mod memory;
pub mod search;
pub mod symmetry;
pub mod world;
