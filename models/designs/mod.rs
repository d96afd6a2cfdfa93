//! The delivery designs, one file each: its doc comment (what it claims and why), its
//! expectations, and its world built from a cast (see [`super::casts`]).

pub mod accept_first;
pub mod ack_after_work;
pub mod ack_before_work;
pub mod check_then_act;
pub mod deadline;
pub mod deadline_check_pause;
pub mod deadline_thin_margin;
pub mod deadline_unbounded;
pub mod dedup_window;
pub mod delete_on_delivery;
pub mod forgetful_house;
pub mod get_handler_set;
pub mod idempotency_key;
pub mod idempotency_layer;
pub mod idempotency_layer_lease;
pub mod idempotent_house;
pub mod lease_fenced_dedup;
pub mod lease_fencing;
pub mod lease_no_fencing;
pub mod per_host_dedup;
pub mod producer_retry;
pub mod record_first;
pub mod shared_dedup_fleet;
