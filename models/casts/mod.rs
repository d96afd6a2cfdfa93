//! The casts the designs are built from: the actors (queue, workers, houses, clocks, leases, a
//! customer's phone, HTTP instances and their database) and each cast's symmetry.

pub mod clocks;
pub mod customer;
pub mod http;
pub mod leases;
pub mod pizzeria;
