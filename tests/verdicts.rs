//! Every design's verdicts, computed by the model checker at the design's default size, must be
//! the ones the design claims. A model weakened so it no longer finds its bug fails here; so does
//! a counterexample that does not really end in a state the classifier rejects.

use onepie::models::{self, check, world, CheckOptions, Verdict};
use stateright::{Checker, Model};

/// Every design with a larger size (its proof states it) gets the verdicts it claims there too,
/// and no safety story is longer than at the default size (a larger world has every smaller
/// run, its extra orders and workers idle; a quiet-state story may be longer, since every
/// order must be settled for nothing more to happen).
#[test]
fn larger_sizes_get_the_verdicts_they_claim() {
    let mut checked = 0;
    for design in models::designs() {
        let Some(larger) = &design.larger else {
            continue;
        };
        let small = design
            .check(&design.defaults, &CheckOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", design.name));
        let report = design
            .check(larger, &CheckOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", design.name));
        assert!(
            report.unique_states > small.unique_states,
            "{}",
            design.name
        );
        for (p, s) in report.properties.iter().zip(&small.properties) {
            assert_eq!(
                Some(p.verdict),
                design.expected_verdict(p.property),
                "{}: `{}` at {}",
                design.name,
                p.property,
                report.bounds
            );
            let steps =
                |r: &check::PropertyReport| r.counterexample.as_ref().map(|c| c.steps.len());
            // (A story at the default size and none here is a verdict mismatch, caught above.)
            if p.expectation == "always" && p.property != world::EVERY_ORDER_GETS_A_PIE {
                assert!(steps(p) <= steps(s), "{}: `{}`", design.name, p.property);
            }
        }
        checked += 1;
    }
    assert_eq!(
        checked, 4,
        "the seed's four designs are checked one size up"
    );
}

/// Runs every design once and checks every property against its expectation.
#[test]
fn every_design_gets_the_verdicts_it_claims() {
    let mut mismatches = Vec::new();
    for design in models::designs() {
        let report = design
            .check(&design.defaults, &CheckOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", design.name));
        assert_eq!(
            report.properties.len(),
            design.expected.len(),
            "{}: every property needs an expected verdict",
            design.name
        );
        for p in &report.properties {
            let expected = design
                .expected_verdict(p.property)
                .unwrap_or_else(|| panic!("{}: no expectation for {}", design.name, p.property));
            if p.verdict != expected {
                mismatches.push(format!(
                    "{}: `{}` is {}, expected {expected}",
                    design.name, p.property, p.verdict
                ));
            }
            // A violation must come with a story that really ends in a rejected state.
            match (&p.counterexample, p.expectation, p.verdict) {
                (Some(cx), "always", Verdict::Violated) => {
                    let end = design
                        .ending(&design.defaults, &cx.explorer_path)
                        .unwrap_or_else(|| {
                            panic!("{}: counterexample path does not replay", design.name)
                        });
                    let rejected = match p.property {
                        world::AT_MOST_ONE_PIE => !end.ledger.at_most_one_effect_per_order(),
                        world::NO_UNEXPECTED_PIE => !end.ledger.no_unexpected_effect(),
                        world::EVERY_ORDER_GETS_A_PIE => {
                            end.quiet && !end.ledger.every_placed_order_has_an_effect()
                        }
                        other => panic!("{}: unknown property {other}", design.name),
                    };
                    assert!(
                        rejected,
                        "{}: `{}` counterexample ends in {:?}",
                        design.name, p.property, end.ledger
                    );
                    assert_eq!(
                        cx.explorer_path.split('/').count(),
                        cx.steps.len() + 1,
                        "{}: one explorer index per step plus the initial state",
                        design.name
                    );
                }
                (None, _, Verdict::Violated) if p.expectation == "always" => {
                    panic!(
                        "{}: `{}` violated without a counterexample",
                        design.name, p.property
                    )
                }
                (Some(_), _, Verdict::Holds) => {
                    panic!(
                        "{}: `{}` holds but has a counterexample",
                        design.name, p.property
                    )
                }
                _ => {}
            }
        }
        assert!(
            report.unique_states > 1,
            "{}: explored nothing",
            design.name
        );
    }
    assert!(
        mismatches.is_empty(),
        "verdicts differ:\n{}",
        mismatches.join("\n")
    );
}

/// The seed's stall: the shortest duplicate in ack-after-work is 9 steps, with the stall at
/// step 3. Stateright's own BFS, limited to 8 steps, must find no duplicate at all — so the
/// story is shortest by the checker's account, not only by ours.
#[test]
fn ack_after_work_duplicate_story_is_the_shortest_one() {
    let d = models::find("ack-after-work").unwrap();
    let report = d.check(&d.defaults, &CheckOptions::default()).unwrap();
    let cx = report
        .property(world::AT_MOST_ONE_PIE)
        .and_then(|p| p.counterexample.clone())
        .expect("ack-after-work must have a duplicate");
    assert_eq!(cx.steps.len(), 9, "story:\n{}", cx.steps.join("\n"));
    assert!(cx.steps[2].starts_with("(stall) queue's visibility timeout for order 0 fires"));
    assert!(
        cx.steps[8].ends_with("a SECOND pie for order 0"),
        "{}",
        cx.steps[8]
    );

    // Stateright counts the initial state as depth 1 and skips states at the target depth,
    // so target 10 checks paths of up to 8 steps, and target 11 paths of up to 9.
    let world = models::ack_after_work::world(&d.defaults);
    let bounded = world.checker().target_max_depth(10).spawn_bfs().join();
    assert!(bounded.unique_state_count() > 100);
    assert!(bounded.discovery(world::AT_MOST_ONE_PIE).is_none());
    let deeper = models::ack_after_work::world(&d.defaults)
        .checker()
        .target_max_depth(11)
        .spawn_bfs()
        .join();
    assert!(deeper.discovery(world::AT_MOST_ONE_PIE).is_some());
}

/// Our shortest-path search agrees with the story for a liveness violation too: losing the
/// hand-off loses the order under delete-on-delivery, and that is found in few steps.
#[test]
fn delete_on_delivery_loses_an_order_to_a_lost_handoff_or_a_crash() {
    let d = models::find("delete-on-delivery").unwrap();
    let report = d.check(&d.defaults, &CheckOptions::default()).unwrap();
    let cx = report
        .property(world::EVERY_ORDER_GETS_A_PIE)
        .and_then(|p| p.counterexample.clone())
        .unwrap();
    assert!(
        cx.steps
            .iter()
            .any(|s| s.contains("the network loses order") || s.contains("crashes")),
        "{}",
        cx.steps.join("\n")
    );
    assert!(
        cx.outcome.starts_with("nothing more can happen"),
        "{}",
        cx.outcome
    );

    // Without losses the crash must still lose it: the model is not leaning on one fault only.
    let no_losses = models::Params {
        losses: 0,
        ..d.defaults
    };
    let report = d.check(&no_losses, &CheckOptions::default()).unwrap();
    let p = report.property(world::EVERY_ORDER_GETS_A_PIE).unwrap();
    assert_eq!(p.verdict, Verdict::Violated);
    assert!(p
        .counterexample
        .as_ref()
        .unwrap()
        .steps
        .iter()
        .any(|s| s.contains("crashes")));

    // And with no faults at all, nothing is lost: the violation is the faults' doing.
    let no_faults = models::Params {
        losses: 0,
        crashes: 0,
        ..d.defaults
    };
    let report = d.check(&no_faults, &CheckOptions::default()).unwrap();
    assert_eq!(
        report
            .property(world::EVERY_ORDER_GETS_A_PIE)
            .unwrap()
            .verdict,
        Verdict::Holds
    );
}

/// The duplicate is the faults' doing: without crashes, losses and stalls, ack-after-work
/// delivers exactly once — so the model is not broken in a way that duplicates regardless.
#[test]
fn ack_after_work_without_stalls_or_faults_delivers_exactly_once() {
    let d = models::find("ack-after-work").unwrap();
    let calm = models::Params {
        crashes: 0,
        losses: 0,
        stalls: 0,
        ..d.defaults
    };
    let report = d.check(&calm, &CheckOptions::default()).unwrap();
    for p in &report.properties {
        assert_eq!(p.verdict, Verdict::Holds, "{} without faults", p.property);
    }
}

/// Bad sizes are errors, not panics.
#[test]
fn out_of_range_sizes_are_refused() {
    let d = models::find("ack-after-work").unwrap();
    for bad in [
        models::Params {
            orders: 0,
            ..d.defaults
        },
        models::Params {
            workers: 0,
            ..d.defaults
        },
        models::Params {
            orders: 200,
            ..d.defaults
        },
        models::Params {
            stalls: 9,
            ..d.defaults
        },
    ] {
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("out of range"), "{err}");
    }
    let err = models::find("exactly-once-magic")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("ack-after-work"), "{err}");
    let tiny = CheckOptions {
        max_states: 50,
        ..CheckOptions::default()
    };
    let err = d.check(&d.defaults, &tiny).unwrap_err();
    assert!(
        matches!(err, check::CheckError::TooManyStates { .. }),
        "{err}"
    );
}
