//! The checking engine: onepie's own state-space search over Stateright models, and what it
//! needs to measure itself.

pub mod memory;
pub mod search;
