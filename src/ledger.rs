//! The one invariant: **exactly one pie per order**.
//!
//! A [`Ledger`] records which orders were placed and how many effects (pies) each order
//! produced. [`Ledger::tally`] classifies it the way Jepsen's `total-queue` checker does —
//! counting *lost*, *duplicated* and *unexpected* explicitly instead of returning a bare
//! boolean — and the three predicates below are the properties every model and every
//! property test checks. Models and tests call these functions; nothing copies them.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Debug};

/// What happened, per order: placed orders and the number of effects each order key produced.
///
/// `K` is the order key: a small integer in the models, a string key in the real inbox.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Ledger<K: Ord> {
    placed: BTreeSet<K>,
    effects: BTreeMap<K, u32>,
}

impl<K: Ord> Default for Ledger<K> {
    fn default() -> Self {
        Ledger {
            placed: BTreeSet::new(),
            effects: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Ledger<K> {
    /// An empty ledger: nothing placed, nothing delivered.
    pub fn new() -> Self {
        Self::default()
    }

    /// A ledger in which `orders` were placed and nothing was delivered yet.
    pub fn placing(orders: impl IntoIterator<Item = K>) -> Self {
        let mut ledger = Self::new();
        for order in orders {
            ledger.place(order);
        }
        ledger
    }

    /// Records that `order` was placed (placing it twice is the same as once).
    pub fn place(&mut self, order: K) {
        self.placed.insert(order);
    }

    /// Records one effect (one pie kept by the house) for `order`.
    pub fn record_effect(&mut self, order: K) {
        *self.effects.entry(order).or_insert(0) += 1;
    }

    /// Records `count` effects at once (used when reading a ledger back from a store).
    pub fn record_effects(&mut self, order: K, count: u32) {
        if count > 0 {
            *self.effects.entry(order).or_insert(0) += count;
        }
    }

    /// The same ledger with every key renamed by `rename`, a one-to-one mapping. The models use
    /// it to relabel interchangeable orders (symmetry reduction).
    pub fn renamed(&self, rename: impl Fn(&K) -> K) -> Self {
        Ledger {
            placed: self.placed.iter().map(&rename).collect(),
            effects: self.effects.iter().map(|(k, &n)| (rename(k), n)).collect(),
        }
    }

    /// The orders placed so far.
    pub fn placed(&self) -> &BTreeSet<K> {
        &self.placed
    }

    /// Every order with at least one effect, and its effect count.
    pub fn effects(&self) -> impl Iterator<Item = (&K, u32)> {
        self.effects
            .iter()
            .map(|(k, &n)| (k, n))
            .filter(|&(_, n)| n > 0)
    }

    /// How many effects `order` produced.
    pub fn effects_of(&self, order: &K) -> u32 {
        self.effects.get(order).copied().unwrap_or(0)
    }

    /// Classifies every order: lost, duplicated, unexpected, and how many were fine.
    pub fn tally(&self) -> Tally<K> {
        let mut tally = Tally {
            placed: self.placed.len(),
            ok: 0,
            lost: Vec::new(),
            duplicated: Vec::new(),
            unexpected: Vec::new(),
        };
        for order in &self.placed {
            match self.effects_of(order) {
                0 => tally.lost.push(order.clone()),
                1 => tally.ok += 1,
                n => tally.duplicated.push((order.clone(), n)),
            }
        }
        for (order, &n) in &self.effects {
            if n > 0 && !self.placed.contains(order) {
                tally.unexpected.push((order.clone(), n));
            }
        }
        tally
    }

    /// Safety, always: no order has more than one effect.
    pub fn at_most_one_effect_per_order(&self) -> bool {
        self.effects.values().all(|&n| n <= 1)
    }

    /// Safety, always: no effect for an order that was never placed.
    pub fn no_unexpected_effect(&self) -> bool {
        self.effects
            .iter()
            .all(|(order, &n)| n == 0 || self.placed.contains(order))
    }

    /// Liveness, checked where nothing more can happen: every placed order has an effect.
    pub fn every_placed_order_has_an_effect(&self) -> bool {
        self.placed.iter().all(|order| self.effects_of(order) > 0)
    }

    /// All three at once: exactly one effect per placed order and nothing else.
    pub fn exactly_one_effect_per_order(&self) -> bool {
        self.at_most_one_effect_per_order()
            && self.no_unexpected_effect()
            && self.every_placed_order_has_an_effect()
    }
}

// Debug reads like the story: `placed {0, 1}; pies {0: 2}` rather than struct internals.
impl<K: Ord + Debug> Debug for Ledger<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "placed {:?}; pies {:?}", self.placed, self.effects)
    }
}

/// Per-order classification of a [`Ledger`], Jepsen `total-queue` style.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tally<K> {
    /// Number of orders placed.
    pub placed: usize,
    /// Placed orders with exactly one effect.
    pub ok: usize,
    /// Placed orders with no effect.
    pub lost: Vec<K>,
    /// Orders with more than one effect, with their effect count.
    pub duplicated: Vec<(K, u32)>,
    /// Orders never placed that still had effects, with their effect count.
    pub unexpected: Vec<(K, u32)>,
}

impl<K: Debug> Tally<K> {
    /// True when every placed order had exactly one effect and nothing else happened.
    pub fn is_exactly_once(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.unexpected.is_empty()
    }
}

impl<K: Debug> fmt::Display for Tally<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} placed, {} ok, {} lost, {} duplicated, {} unexpected",
            self.placed,
            self.ok,
            self.lost.len(),
            self.duplicated.len(),
            self.unexpected.len()
        )?;
        if !self.lost.is_empty() {
            write!(f, "; lost {:?}", self.lost)?;
        }
        if !self.duplicated.is_empty() {
            write!(f, "; duplicated (order, pies) {:?}", self.duplicated)?;
        }
        if !self.unexpected.is_empty() {
            write!(f, "; unexpected (order, pies) {:?}", self.unexpected)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_with_one_pie_is_fine() {
        let mut l = Ledger::placing([0u8, 1]);
        l.record_effect(0);
        l.record_effect(1);
        let t = l.tally();
        assert!(t.is_exactly_once());
        assert_eq!(t.ok, 2);
        assert!(l.exactly_one_effect_per_order());
    }

    #[test]
    fn lost_duplicated_and_unexpected_are_counted_separately() {
        let mut l = Ledger::placing([0u8, 1, 2]);
        l.record_effect(0);
        l.record_effect(1);
        l.record_effect(1);
        l.record_effect(7);
        let t = l.tally();
        assert_eq!(t.lost, vec![2]);
        assert_eq!(t.duplicated, vec![(1, 2)]);
        assert_eq!(t.unexpected, vec![(7, 1)]);
        assert_eq!(t.ok, 1);
        assert!(!l.at_most_one_effect_per_order());
        assert!(!l.no_unexpected_effect());
        assert!(!l.every_placed_order_has_an_effect());
        assert_eq!(
            t.to_string(),
            "3 placed, 1 ok, 1 lost, 1 duplicated, 1 unexpected; lost [2]; \
             duplicated (order, pies) [(1, 2)]; unexpected (order, pies) [(7, 1)]"
        );
    }

    #[test]
    fn nothing_placed_nothing_delivered_is_vacuously_fine() {
        let l: Ledger<u8> = Ledger::new();
        assert!(l.exactly_one_effect_per_order());
    }
}
