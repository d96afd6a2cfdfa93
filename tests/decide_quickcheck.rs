//! Short quickcheck properties of the pure decision core and of key/fingerprint handling.

use onepie::dedup::{
    decide, validate_key, Decision, Fingerprint, KeyError, Record, Retention, MAX_KEY_LEN,
};
use quickcheck_macros::quickcheck;
use std::collections::BTreeMap;

/// A store of records driven only by `decide`: the model's view of the inbox.
fn deliver(
    store: &mut BTreeMap<Vec<u8>, Record<u32>>,
    key: &[u8],
    payload: &[u8],
    effects: &mut u32,
) -> bool {
    let fp = Fingerprint::of(payload);
    let applied = decide(store.get(key), &fp, Retention::Forever, 0).runs_effect();
    if applied {
        *effects += 1;
        store.insert(key.to_vec(), Record::completed(fp, *effects, 0));
    }
    applied
}

/// Delivering a payload twice has the effect of delivering it once.
#[quickcheck]
fn applying_twice_is_applying_once(key: Vec<u8>, payload: Vec<u8>) -> bool {
    let (mut once, mut twice) = (BTreeMap::new(), BTreeMap::new());
    let (mut e1, mut e2) = (0, 0);
    deliver(&mut once, &key, &payload, &mut e1);
    deliver(&mut twice, &key, &payload, &mut e2);
    let second = deliver(&mut twice, &key, &payload, &mut e2);
    !second && e1 == e2 && once == twice
}

/// Any sequence of deliveries runs each key's effect exactly once.
#[quickcheck]
fn every_key_is_applied_exactly_once(deliveries: Vec<(u8, u8)>) -> bool {
    let mut store = BTreeMap::new();
    let mut effects = 0;
    let mut applied: BTreeMap<u8, u32> = BTreeMap::new();
    for (k, _) in &deliveries {
        // One payload per key: a reused key with another payload is a different property.
        if deliver(&mut store, &[*k], &[*k], &mut effects) {
            *applied.entry(*k).or_insert(0) += 1;
        }
    }
    let keys: std::collections::BTreeSet<u8> = deliveries.iter().map(|(k, _)| *k).collect();
    applied.values().all(|&n| n == 1) && applied.len() == keys.len()
}

/// A key's decision does not depend on other keys' deliveries, before or after.
#[quickcheck]
fn decisions_are_independent_of_unrelated_keys(others: Vec<u8>, key: u8) -> bool {
    let mut alone = BTreeMap::new();
    let mut busy = BTreeMap::new();
    let (mut e1, mut e2) = (0, 0);
    for o in others.iter().filter(|&&o| o != key) {
        deliver(&mut busy, &[*o], b"x", &mut e2);
    }
    let a = deliver(&mut alone, &[key], b"x", &mut e1);
    let b = deliver(&mut busy, &[key], b"x", &mut e2);
    a == b && a
}

/// A reused key conflicts exactly when the payload differs.
#[quickcheck]
fn a_reused_key_conflicts_iff_the_payload_differs(first: Vec<u8>, second: Vec<u8>) -> bool {
    let record = Record::completed(Fingerprint::of(&first), (), 0);
    let d = decide(
        Some(&record),
        &Fingerprint::of(&second),
        Retention::Forever,
        0,
    );
    matches!(d, Decision::Conflict { .. }) == (first != second)
}

/// Keys are accepted exactly when they are 1 to 255 bytes without NUL.
#[quickcheck]
fn keys_are_accepted_iff_non_empty_short_and_nul_free(key: String) -> bool {
    match validate_key(&key) {
        Ok(()) => !key.is_empty() && key.len() <= MAX_KEY_LEN && !key.contains('\0'),
        Err(KeyError::Empty) => key.is_empty(),
        Err(KeyError::TooLong { len }) => len == key.len() && len > MAX_KEY_LEN,
        Err(KeyError::Nul) => key.contains('\0') && (1..=MAX_KEY_LEN).contains(&key.len()),
    }
}
