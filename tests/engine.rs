//! onepie's search engine against Stateright's own checker, and against itself run other ways:
//! depth-first, on one thread or two, with whole states instead of fingerprints, with and without
//! symmetry reduction. Every design, at its default size.

use onepie::models::check::{Strategy, Visited};
use onepie::models::{self, AnyWorld, CheckOptions, CheckReport, Design, Params, Verdict};
use stateright::{Checker, Model};

fn opts(symmetry: bool) -> CheckOptions {
    CheckOptions {
        symmetry,
        ..CheckOptions::default()
    }
}

fn check(d: &Design, p: &Params, o: &CheckOptions) -> CheckReport {
    d.check(p, o).unwrap_or_else(|e| panic!("{}: {e}", d.name))
}

/// (property, verdict, story length) for every property.
fn summary(r: &CheckReport) -> Vec<(&'static str, Verdict, Option<usize>)> {
    r.properties
        .iter()
        .map(|p| {
            (
                p.property,
                p.verdict,
                p.counterexample.as_ref().map(|c| c.steps.len()),
            )
        })
        .collect()
}

/// Stateright's breadth-first search of the same model: unique states, the properties it found
/// a path for, and the length of each path.
fn stateright_bfs<M>(model: M, max_depth: Option<usize>) -> (usize, Vec<(&'static str, usize)>)
where
    M: Model + Send + Sync + 'static,
    M::State: Clone + std::fmt::Debug + std::hash::Hash + PartialEq + Send + Sync,
    M::Action: Clone + std::fmt::Debug + PartialEq + Send + Sync,
{
    let mut builder = model.checker();
    if let Some(depth) = max_depth {
        builder = builder.target_max_depth(depth);
    }
    let checker = builder.spawn_bfs().join();
    let found = checker
        .discoveries()
        .into_iter()
        .map(|(name, path)| (name, path.into_actions().len()))
        .collect();
    (checker.unique_state_count(), found)
}

/// Without symmetry, the engine explores exactly the states Stateright's BFS does, finds the same
/// verdicts, and no story is longer than Stateright's; and each story is shortest by Stateright's
/// own account: its BFS bounded to one step fewer finds no violation of that property.
#[test]
fn the_engine_agrees_with_stateright_on_every_design() {
    for d in models::designs() {
        let ours = check(d, &d.defaults, &opts(false));
        let mut world = (d.world)(&d.defaults);
        // The world's own symmetry is for our engine; Stateright's BFS ignores it anyway.
        match &mut world {
            AnyWorld::Pizzeria(w) => w.symmetry = None,
            AnyWorld::Timed(w) => w.symmetry = None,
            AnyWorld::Lease(w) => w.symmetry = None,
            AnyWorld::Phone(w) => w.symmetry = None,
            AnyWorld::Http(w) => w.symmetry = None,
        }
        let (unique, found) = match world {
            AnyWorld::Pizzeria(w) => stateright_bfs(w, None),
            AnyWorld::Timed(w) => stateright_bfs(w, None),
            AnyWorld::Lease(w) => stateright_bfs(w, None),
            AnyWorld::Phone(w) => stateright_bfs(w, None),
            AnyWorld::Http(w) => stateright_bfs(w, None),
        };
        // Stateright stops early once every property has a path; none of ours does.
        assert!(found.len() < ours.properties.len(), "{}", d.name);
        assert_eq!(
            ours.unique_states, unique as u64,
            "{}: unique states",
            d.name
        );
        for p in &ours.properties {
            let theirs = found.iter().find(|(name, _)| *name == p.property);
            let violated_for_them = match p.expectation {
                "sometimes" => theirs.is_none(),
                _ => theirs.is_some(),
            };
            assert_eq!(
                p.verdict == Verdict::Violated,
                violated_for_them,
                "{}: {}",
                d.name,
                p.property
            );
            if let (Some(cx), Some((_, their_len))) = (&p.counterexample, theirs) {
                assert!(cx.steps.len() <= *their_len, "{}: {}", d.name, p.property);
                // Stateright counts the initial state as depth 1 and skips states at the
                // target depth: target L + 1 explores paths of up to L − 1 steps.
                let shorter = with_world(d, |w| stateright_bfs_bounded(w, cx.steps.len() + 1));
                assert!(
                    !shorter.contains(&p.property),
                    "{}: Stateright finds `{}` in fewer than {} steps",
                    d.name,
                    p.property,
                    cx.steps.len()
                );
            }
        }
    }
}

fn stateright_bfs_bounded(world: AnyWorld, depth: usize) -> Vec<&'static str> {
    let found = match world {
        AnyWorld::Pizzeria(w) => stateright_bfs(w, Some(depth)).1,
        AnyWorld::Timed(w) => stateright_bfs(w, Some(depth)).1,
        AnyWorld::Lease(w) => stateright_bfs(w, Some(depth)).1,
        AnyWorld::Phone(w) => stateright_bfs(w, Some(depth)).1,
        AnyWorld::Http(w) => stateright_bfs(w, Some(depth)).1,
    };
    found.into_iter().map(|(name, _)| name).collect()
}

fn with_world<T>(d: &Design, f: impl FnOnce(AnyWorld) -> T) -> T {
    f((d.world)(&d.defaults))
}

/// Depth-first search visits the same states and reaches the same verdicts; its stories may be
/// longer, never shorter.
#[test]
fn depth_first_agrees_with_breadth_first() {
    for name in [
        "idempotent-house",
        "ack-after-work",
        "lease-fencing",
        "deadline",
    ] {
        let d = models::find(name).unwrap();
        for symmetry in [false, true] {
            let bfs = check(d, &d.defaults, &opts(symmetry));
            let dfs = check(
                d,
                &d.defaults,
                &CheckOptions {
                    strategy: Strategy::Dfs,
                    ..opts(symmetry)
                },
            );
            assert_eq!(bfs.unique_states, dfs.unique_states, "{name}");
            for (a, b) in summary(&bfs).into_iter().zip(summary(&dfs)) {
                assert_eq!(a.1, b.1, "{name}: {}", a.0);
                assert!(a.2 <= b.2, "{name}: {}", a.0);
            }
        }
    }
}

/// Whole states in the visited set instead of fingerprints: the same count, so no fingerprint
/// collision changed it; and the report says how likely one was.
#[test]
fn full_states_count_what_fingerprints_count() {
    let d = models::find("check-then-act").unwrap();
    let fp = check(d, &d.defaults, &opts(true));
    let full = check(
        d,
        &d.defaults,
        &CheckOptions {
            visited: Visited::FullStates,
            ..opts(true)
        },
    );
    assert_eq!(fp.unique_states, full.unique_states);
    assert_eq!(summary(&fp), summary(&full));
    let p = fp.fingerprint_collision_probability.unwrap();
    assert!(p > 0.0 && p < 1e-6, "{p}");
    assert!(full.fingerprint_collision_probability.is_none());
    assert!(fp.bytes_per_state < full.bytes_per_state);
}

/// Two threads report exactly what one does, stories included, for every design.
#[test]
fn thread_count_changes_nothing_reported() {
    for d in models::designs() {
        let run = |threads| {
            check(
                d,
                &d.defaults,
                &CheckOptions {
                    threads,
                    ..CheckOptions::default()
                },
            )
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(one.unique_states, two.unique_states, "{}", d.name);
        assert_eq!(one.max_depth, two.max_depth, "{}", d.name);
        for (a, b) in one.properties.iter().zip(&two.properties) {
            assert_eq!(
                a.counterexample
                    .as_ref()
                    .map(|c| (&c.steps, &c.explorer_path)),
                b.counterexample
                    .as_ref()
                    .map(|c| (&c.steps, &c.explorer_path)),
                "{}: {}",
                d.name,
                a.property
            );
        }
    }
}

/// Symmetry reduction is sound: for every design with a symmetry, the same verdicts and story
/// lengths as the unreduced search at the default size and at one size up, with fewer states.
/// (Pizzeria designs one size up: 3 orders and 1 worker, where orders are what is reduced; the
/// others: one worker more. `producer-retry`, `idempotency-key`, `per-host-dedup` and the HTTP
/// designs have no symmetry.)
#[test]
fn symmetry_keeps_verdicts_and_story_lengths() {
    for d in models::designs() {
        if (d.world)(&d.defaults).reduction() == "none" {
            continue;
        }
        let larger = match (d.world)(&d.defaults) {
            AnyWorld::Pizzeria(_) => Params {
                orders: 3,
                workers: 1,
                ..d.defaults
            },
            _ => Params {
                workers: d.defaults.workers + 1,
                ..d.defaults
            },
        };
        for p in [d.defaults, larger] {
            let reduced = check(d, &p, &opts(true));
            let full = check(d, &p, &opts(false));
            assert_eq!(summary(&reduced), summary(&full), "{} at {p}", d.name);
            assert!(
                reduced.unique_states < full.unique_states,
                "{} at {p}: {} states with symmetry, {} without",
                d.name,
                reduced.unique_states,
                full.unique_states
            );
            eprintln!(
                "{:<22} {:<48} {:>8} states with symmetry, {:>8} without",
                d.name,
                format!("{}×{}", p.orders, p.workers),
                reduced.unique_states,
                full.unique_states
            );
        }
    }
}

/// The pizzeria's representative and class fingerprint are canonical: every relabelling of the
/// workers and orders of a state has the same ones, and the packed class unpacks to the
/// representative (along a story of check-then-act at 2 orders × 2 workers, and of
/// idempotent-house at 3 × 2: every permutation of both).
#[test]
fn pizzeria_representative_is_the_same_for_every_relabelling() {
    use onepie::models::pizzeria::symmetry::{
        canonical_fingerprint, pack, relabel, representative, unpack,
    };
    for (name, p) in [
        ("check-then-act", None),
        (
            "idempotent-house",
            Some(Params {
                orders: 3,
                ..models::find("idempotent-house").unwrap().defaults
            }),
        ),
    ] {
        let d = models::find(name).unwrap();
        let p = p.unwrap_or(d.defaults);
        let AnyWorld::Pizzeria(mut w) = (d.world)(&p) else {
            panic!("{name} is a pizzeria design")
        };
        w.symmetry = None;
        // A long story: every order delivered.
        let path = models::check::shortest_path(&w, |s| {
            s.history.ledger.every_placed_order_has_an_effect()
                && !s.history.ledger.placed().is_empty()
        })
        .unwrap();
        let mut checked = 0;
        for state in path.into_states() {
            let canonical = representative(&state);
            let class = canonical_fingerprint(&state);
            assert_eq!(representative(&canonical), canonical);
            assert_eq!(canonical_fingerprint(&canonical), class);
            // Packed, the class unpacks to its representative.
            let mut bytes = Vec::new();
            pack(&state, &mut bytes);
            assert_eq!(unpack(&bytes), canonical, "{name}");
            for wp in permutations(p.workers as usize) {
                for op in permutations(p.orders as usize) {
                    let orders: Vec<u8> = op.iter().map(|&o| o as u8).collect();
                    let relabelled = relabel(&state, &wp, &orders);
                    // The same run up to names: the same tally of pies.
                    let counts = |l: &onepie::ledger::Ledger<u8>| {
                        let t = l.tally();
                        (t.ok, t.lost.len(), t.duplicated.len(), t.unexpected.len())
                    };
                    assert_eq!(
                        counts(&relabelled.history.ledger),
                        counts(&state.history.ledger)
                    );
                    assert_eq!(representative(&relabelled), canonical, "{name}");
                    assert_eq!(canonical_fingerprint(&relabelled), class, "{name}");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 40, "{name}: {checked}");
    }
}

/// Packing is exact on every reachable state of every pizzeria design with symmetry, at its
/// default size: the packed class unpacks to the representative, whose own packing is the same;
/// and on every fourth state, every relabelling packs to the same bytes.
#[test]
fn pizzeria_packing_round_trips_on_every_reachable_state() {
    use onepie::models::pizzeria::symmetry::{pack, relabel, representative, unpack};
    let mut designs = 0;
    for d in models::designs() {
        let AnyWorld::Pizzeria(mut w) = (d.world)(&d.defaults) else {
            continue;
        };
        if w.symmetry.is_none() {
            continue;
        }
        w.symmetry = None;
        let relabellings: Vec<(Vec<usize>, Vec<u8>)> = permutations(d.defaults.workers as usize)
            .into_iter()
            .flat_map(|wp| {
                permutations(d.defaults.orders as usize)
                    .into_iter()
                    .map(move |op| (wp.clone(), op.into_iter().map(|o| o as u8).collect()))
            })
            .collect();
        let states = std::cell::Cell::new(0u64);
        // A search for a state no run reaches visits every reachable one.
        let none = models::check::shortest_path(&w, |s| {
            let (mut bytes, mut again) = (Vec::new(), Vec::new());
            pack(s, &mut bytes);
            let rep = unpack(&bytes);
            assert!(rep == representative(s), "{}: {s:?}", d.name);
            pack(&rep, &mut again);
            assert_eq!(bytes, again, "{}", d.name);
            // Every relabelling of every fourth state packs to the same bytes: one class.
            if states.get().is_multiple_of(4) {
                for (wp, op) in &relabellings {
                    pack(&relabel(s, wp, op), &mut again);
                    assert_eq!(bytes, again, "{}: {s:?}", d.name);
                }
            }
            states.set(states.get() + 1);
            false
        });
        assert!(none.is_none());
        assert!(states.get() > 100, "{}: {}", d.name, states.get());
        designs += 1;
    }
    assert!(designs >= 10, "{designs}");
}

/// Every order of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    let mut all = vec![vec![]];
    for k in 0..n {
        all = all
            .into_iter()
            .flat_map(|p: Vec<usize>| {
                (0..=k).map(move |i| {
                    let mut q = p.clone();
                    q.insert(i, k);
                    q
                })
            })
            .collect();
    }
    all
}
