//! Test-only helpers shared by the integration tests (each uses some of them).
#![allow(dead_code)]
pub mod broken;

use onepie::testkit::harness::Op;
use proptest::prelude::*;

/// Keys 0–2 go through the transactional path, keys 3–4 through the lease path; payload 1 is
/// the occasional reuse of a key for a different pie.
pub fn op() -> impl Strategy<Value = Op> {
    let tx_key = 0u8..3;
    let payload = prop_oneof![5 => Just(0u8), 1 => Just(1u8)];
    prop_oneof![
        6 => (tx_key.clone(), payload.clone()).prop_map(|(key, payload)| Op::Deliver { key, payload }),
        1 => (tx_key.clone(), payload.clone()).prop_map(|(key, payload)| Op::DeliverFailing { key, payload }),
        1 => (tx_key.clone(), payload.clone()).prop_map(|(key, payload)| Op::CrashMidDelivery { key, payload }),
        1 => (tx_key, payload.clone(), 2u8..5).prop_map(|(key, payload, threads)| Op::Concurrent { key, payload, threads }),
        1 => Just(Op::CrashAndReopen),
        1 => (1u16..200).prop_map(|ms| Op::Wait { ms }),
        2 => (3u8..5, payload).prop_map(|(key, payload)| Op::Claim { key, payload }),
        1 => (0u8..4).prop_map(|lease| Op::Complete { lease }),
        1 => (0u8..4).prop_map(|lease| Op::Release { lease }),
        1 => Just(Op::Prune),
    ]
}

pub fn schedule() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..16)
}
