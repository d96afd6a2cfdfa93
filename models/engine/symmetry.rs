//! Symmetry reduction for worlds whose workers are interchangeable: two states that differ only
//! by which worker is which behave the same, so the checker needs to see only one of them.
//!
//! [`sort_actors`] relabels a group of interchangeable actors into a canonical order and rewrites
//! every actor id the state mentions (in actor states, messages, timers and random choices)
//! accordingly. The result is always a relabelling of the given state, so using it as the
//! search engine's representative is sound whatever the order chosen; choosing the same order for
//! every member of a class is what makes the reduction effective.

use crate::models::world::{envelopes, History, State};
use stateright::actor::{Actor, ActorModelState, Id, RandomChoices, Timers};
use stateright::{Rewrite, RewritePlan};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

fn fingerprint<T: Hash + ?Sized>(t: &T) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// Where an envelope's other end is, seen from one member of the group: outside actors keep their
/// ids (they are not relabelled), group members are all alike.
#[derive(Hash, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Itself,
    Peer,
    Other(usize),
}

/// What one group member looks like, without its own id: its state, whether it is down, its
/// storage, timers and random choices, and the messages to and from it.
fn view<A>(state: &State<A>, group: &[usize], i: usize) -> u64
where
    A: Actor,
    A::Msg: Ord,
    A::Timer: Ord,
{
    let end = |id: Id| {
        let j = usize::from(id);
        if j == i {
            End::Itself
        } else if group.contains(&j) {
            End::Peer
        } else {
            End::Other(j)
        }
    };
    // Sums of hashes: the order the network and the timers iterate in does not matter.
    let mail = envelopes(&state.network)
        .into_iter()
        .filter(|(env, _)| usize::from(env.src) == i || usize::from(env.dst) == i)
        .map(|(env, n)| fingerprint(&(end(env.src), end(env.dst), env.msg, n)))
        .fold(0u64, u64::wrapping_add);
    let timers = state.timers_set[i]
        .iter()
        .map(fingerprint)
        .fold(0u64, u64::wrapping_add);
    fingerprint(&(
        &*state.actor_states[i],
        state.crashed[i],
        &state.actor_storages[i],
        timers,
        &state.random_choices[i],
        mail,
    ))
}

/// `state` with actor `i` moved to index `to[i]` (all other ids kept), every id rewritten.
/// Storage is copied as is: the designs keep no actor ids in storage.
pub fn relabel<A>(state: &State<A>, to: &[usize]) -> State<A>
where
    A: Actor,
    A::Msg: Ord + Rewrite<Id>,
    A::State: Rewrite<Id>,
    A::Timer: Ord + Rewrite<Id>,
    A::Random: Rewrite<Id>,
{
    let plan = RewritePlan::new(to.to_vec(), |id: &Id, to: &Vec<usize>| {
        Id::from(to[usize::from(*id)])
    });
    let n = to.len();
    let mut from = vec![0; n];
    for (i, &j) in to.iter().enumerate() {
        from[j] = i;
    }
    let random_choices = (0..n)
        .map(|j| {
            let mut choices = RandomChoices::default();
            for (key, options) in state.random_choices[from[j]].map.iter() {
                let mut options: Vec<A::Random> =
                    options.iter().map(|r| r.rewrite(&plan)).collect();
                options.sort();
                choices.insert(key.clone(), options);
            }
            choices
        })
        .collect();
    let timers_set = (0..n)
        .map(|j| {
            let mut timers = Timers::new();
            for t in state.timers_set[from[j]].iter() {
                timers.set(t.rewrite(&plan));
            }
            timers
        })
        .collect();
    ActorModelState {
        actor_states: (0..n)
            .map(|j| state.actor_states[from[j]].rewrite(&plan))
            .collect(),
        network: state.network.rewrite(&plan),
        timers_set,
        random_choices,
        crashed: (0..n).map(|j| state.crashed[from[j]]).collect(),
        history: History::clone(&state.history),
        actor_storages: (0..n)
            .map(|j| state.actor_storages[from[j]].clone())
            .collect(),
    }
}

/// The representative of `state`'s class when the actors at the indices in `group` are
/// interchangeable: the group sorted by what each member looks like, ties broken by trying every
/// order of the tied members (up to 24 candidates) and keeping the one that hashes lowest.
pub fn sort_actors<A>(state: &State<A>, group: &[usize]) -> State<A>
where
    A: Actor,
    A::Msg: Ord + Rewrite<Id>,
    A::State: Rewrite<Id>,
    A::Timer: Ord + Rewrite<Id>,
    A::Random: Rewrite<Id>,
{
    let n = state.actor_states.len();
    let mut members: Vec<(u64, usize)> =
        group.iter().map(|&i| (view(state, group, i), i)).collect();
    members.sort_by_key(|&(v, _)| v);
    // Orders to try: the sorted one, with every permutation of each run of equal views.
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for (k, &(v, i)) in members.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if k > 0 && members[k - 1].0 == v => run.push(i),
            _ => runs.push(vec![i]),
        }
    }
    let orders = arrangements(&runs, |_| false, 24);
    let mut slots: Vec<usize> = group.to_vec();
    slots.sort_unstable();
    if let [order] = &orders[..] {
        // No ties: the one order is canonical (and often already the state's own).
        if *order == slots {
            return state.clone();
        }
    }
    orders
        .into_iter()
        .map(|order| {
            // The k-th member in this order moves to the k-th group slot.
            let mut to: Vec<usize> = (0..n).collect();
            for (k, &i) in order.iter().enumerate() {
                to[i] = slots[k];
            }
            relabel(state, &to)
        })
        .min_by_key(fingerprint)
        .expect("at least one order")
}

/// Every arrangement of a group's members, run by run (the members of each run of equal
/// signatures in every order), each as the list of members in their new places; at most `cap`,
/// beyond which a run keeps the order it has. A run for which `fixed` says so is not permuted.
pub fn arrangements(
    runs: &[Vec<usize>],
    fixed: impl Fn(&[usize]) -> bool,
    cap: usize,
) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new()];
    for run in runs {
        let perms = if fixed(run) {
            vec![run.clone()]
        } else {
            permutations(run)
        };
        if out.len() * perms.len() > cap {
            out.iter_mut().for_each(|o| o.extend(run));
        } else {
            out = out
                .iter()
                .flat_map(|o| {
                    perms.iter().map(move |p| {
                        let mut o = o.clone();
                        o.extend(p);
                        o
                    })
                })
                .collect();
        }
    }
    out
}

/// Every order of `items`.
fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for (k, &first) in items.iter().enumerate() {
        let rest: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != k)
            .map(|(_, &x)| x)
            .collect();
        for mut p in permutations(&rest) {
            p.insert(0, first);
            all.push(p);
        }
    }
    all
}
