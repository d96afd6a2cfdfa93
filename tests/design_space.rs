//! The rest of the design space (issue 5): deadlines under clock drift, coordinating consumers,
//! the broken ways to deduplicate, and producer retries. For every design: each property's
//! verdict at the default size; each violation's shortest story — its exact length and the step
//! that tells what went wrong — replayed to a state the classifier rejects; and, where a design's
//! claim hangs on one parameter, the same model with that parameter changed, so a model too weak
//! to find the bug (or too strong to let the fix work) fails here.

use onepie::ledger::Ledger;
use onepie::models::world::{
    Order, AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE, NO_UNEXPECTED_PIE, SOMETIMES_ALL_DELIVERED,
};
use onepie::models::{self, check, CheckOptions, CheckReport, Design, Params, Verdict};
use stateright::actor::ActorModelAction;
use stateright::Model;

use Verdict::{Holds, Violated};

fn design(name: &str) -> &'static Design {
    models::find(name).unwrap()
}

fn run(d: &Design, p: &Params) -> CheckReport {
    d.check(p, &CheckOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", d.name))
}

/// The verdicts of the four properties, in table order.
fn verdicts(r: &CheckReport) -> Vec<(&'static str, Verdict)> {
    r.properties
        .iter()
        .map(|p| (p.property, p.verdict))
        .collect()
}

fn expect(at_most_one: Verdict, every_order: Verdict) -> Vec<(&'static str, Verdict)> {
    vec![
        (AT_MOST_ONE_PIE, at_most_one),
        (NO_UNEXPECTED_PIE, Holds),
        (EVERY_ORDER_GETS_A_PIE, every_order),
        (SOMETIMES_ALL_DELIVERED, Holds),
    ]
}

/// Does the classifier reject this ending for `property`?
fn rejected(property: &str, ledger: &Ledger<Order>, quiet: bool) -> bool {
    match property {
        AT_MOST_ONE_PIE => !ledger.at_most_one_effect_per_order(),
        NO_UNEXPECTED_PIE => !ledger.no_unexpected_effect(),
        EVERY_ORDER_GETS_A_PIE => quiet && !ledger.every_placed_order_has_an_effect(),
        other => panic!("unknown property {other}"),
    }
}

/// Checks `name` at `p`: its verdicts are `expected`; the violated property's story has `len`
/// steps, step `k` (1-based) contains `text` for each `(k, text)` in `telling`, and its explorer
/// path replays (with the design's own `ending`) to a state the classifier rejects. Returns the
/// story.
fn story(
    name: &str,
    p: &Params,
    expected: Vec<(&'static str, Verdict)>,
    property: &str,
    len: usize,
    telling: &[(usize, &str)],
) -> Vec<String> {
    let d = design(name);
    let r = run(d, p);
    assert_eq!(verdicts(&r), expected, "{name} at {p}");
    let cx = r
        .property(property)
        .and_then(|p| p.counterexample.clone())
        .unwrap_or_else(|| panic!("{name}: `{property}` has no counterexample"));
    let told = cx.steps.join("\n");
    assert_eq!(cx.steps.len(), len, "{name}: story\n{told}");
    for &(k, text) in telling {
        assert!(
            cx.steps[k - 1].contains(text),
            "{name}: step {k} should contain {text:?}; story\n{told}"
        );
    }
    let end = d.ending(p, &cx.explorer_path).expect("the story replays");
    assert!(
        rejected(property, &end.ledger, end.quiet),
        "{name}: the story ends in {:?}, which the classifier accepts",
        end.ledger
    );
    cx.steps
}

/// Only the verdicts, for a design at other sizes.
fn verdicts_at(name: &str, p: &Params) -> Vec<(&'static str, Verdict)> {
    verdicts(&run(design(name), p))
}

// ---------------------------------------------------------------------------------------------
// Deadlines under clock drift.

#[test]
fn deadline_with_a_margin_covering_the_drift_holds() {
    let d = design("deadline");
    let r = run(d, &d.defaults);
    assert_eq!(verdicts(&r), expect(Holds, Holds));
    assert!(r.bounds.contains("clock drift ±20%"), "{}", r.bounds);
    assert!(
        r.bounds.contains("lease 4 ticks + margin 4 ticks"),
        "{}",
        r.bounds
    );
    assert!(r
        .bounds
        .contains("1 orders, 2 workers, ≤1 crashes, ≤0 lost messages, ≤1 stalls"));
}

/// The margin the checker needs is exact to the tick: 3 is one too few at ±20% on a 4-tick
/// lease, and the story for 3 shows the fast queue clock and the slow worker clock.
#[test]
fn deadline_margin_threshold_is_between_three_and_four_ticks() {
    let d = design("deadline");
    let three = Params {
        margin: Some(3),
        ..d.defaults
    };
    let steps = story(
        "deadline",
        &three,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        17,
        &[
            (1, "queue's fast (+20%), worker 0's slow (−20%)"),
            (4, "(stall) worker 0's stop-the-world pause"),
            (
                10,
                "lease-plus-margin timer for order 0 (7.00 ticks on its clock) fires",
            ),
            (12, "lease checked at 3.20 of 4 ticks"),
            (17, "a SECOND pie for order 0"),
        ],
    );
    assert_eq!(
        steps.iter().filter(|s| *s == "time's tick fires").count(),
        5
    );
}

/// Without drift the margin still has to cover the hand-out and the "pie is here" message.
#[test]
fn deadline_without_drift_still_needs_a_margin() {
    let d = design("deadline");
    let exact = |margin| Params {
        drift: Some(0),
        margin: Some(margin),
        ..d.defaults
    };
    assert_eq!(verdicts_at("deadline", &exact(1)), expect(Violated, Holds));
    assert_eq!(verdicts_at("deadline", &exact(2)), expect(Holds, Holds));
}

/// Deadlines fix stalled workers, not lost acknowledgements.
#[test]
fn deadline_does_not_survive_a_lost_pie_is_here() {
    let d = design("deadline");
    let lossy = Params {
        losses: 1,
        ..d.defaults
    };
    story(
        "deadline",
        &lossy,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        17,
        &[(6, "the network loses \"the pie for order 0 is here\"")],
    );
}

#[test]
fn deadline_thin_margin_duplicates_on_a_fast_queue_clock_and_a_slow_worker_clock() {
    let d = design("deadline-thin-margin");
    story(
        d.name,
        &d.defaults,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        16,
        &[
            (1, "queue's fast (+20%), worker 0's slow (−20%)"),
            (4, "(stall) worker 0's stop-the-world pause"),
            (5, "time's tick fires"),
            (8, "time's tick fires"),
            (
                9,
                "queue's lease-plus-margin timer for order 0 (5.00 ticks on its clock) fires",
            ),
            (11, "lease checked at 2.40 of 4 ticks"),
            (16, "a SECOND pie for order 0"),
        ],
    );
    // Without the stall there is no duplicate at all: the worker is never late.
    let calm = Params {
        stalls: 0,
        ..d.defaults
    };
    assert_eq!(verdicts_at(d.name, &calm), expect(Holds, Holds));
}

#[test]
fn deadline_with_a_clock_that_may_stop_duplicates_whatever_the_margin() {
    let d = design("deadline-unbounded");
    story(
        d.name,
        &d.defaults,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        15,
        &[
            (1, "worker 0's stands still"),
            (4, "(stall) worker 0's stop-the-world pause"),
            (10, "lease checked at 0.00 of 4 ticks"),
            (15, "a SECOND pie for order 0"),
        ],
    );
    let widest = Params {
        margin: Some(models::MAX_MARGIN),
        ..d.defaults
    };
    assert_eq!(verdicts_at(d.name, &widest), expect(Violated, Holds));
}

#[test]
fn deadline_checked_then_paused_duplicates_with_any_clocks() {
    let d = design("deadline-check-pause");
    story(
        d.name,
        &d.defaults,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        20,
        &[
            (
                4,
                "sends a note: \"lease for order 0 live at 0.00 of 4 ticks",
            ),
            (5, "(stall) worker 0's stop-the-world pause"),
            (12, "queue's lease-plus-margin timer for order 0"),
            (14, "worker 0 receives a note"),
            (14, "sends a pie for order 0"),
            (20, "a SECOND pie for order 0"),
        ],
    );
    // Perfect clocks and the widest margin do not help: the check is stale, not wrong.
    let perfect = Params {
        drift: Some(0),
        margin: Some(models::MAX_MARGIN),
        ..d.defaults
    };
    assert_eq!(verdicts_at(d.name, &perfect), expect(Violated, Holds));
}

// ---------------------------------------------------------------------------------------------
// Coordinating consumers.

#[test]
fn lease_without_fencing_duplicates_after_the_lease_runs_out() {
    let d = design("lease-no-fencing");
    story(
        d.name,
        &d.defaults,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        11,
        &[
            (5, "sends a pie for order 0 (token 1)"),
            (7, "(stall) lock's lease timer for order 0 fires"),
            (8, "the lease on order 0 with fencing token 2 to worker 1"),
            (11, "pie for order 0 (token 2)"),
            (11, "a SECOND pie for order 0"),
        ],
    );
}

/// Fencing does not stop the duplicate where the old holder's pie arrives first: the newer
/// token is higher, so the house keeps that pie too.
#[test]
fn lease_with_fencing_still_duplicates_when_the_stale_pie_arrives_first() {
    let d = design("lease-fencing");
    story(
        d.name,
        &d.defaults,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        11,
        &[
            (6, "house 0 receives a pie for order 0 (token 1)"),
            (6, "order 0 has its pie"),
            (7, "(stall) lock's lease timer for order 0 fires"),
            (11, "house 0 receives a pie for order 0 (token 2)"),
            (11, "a SECOND pie for order 0"),
        ],
    );
}

/// A pie with a lower token than the house has seen: the state the story reaches (a
/// paused holder delivers after another worker delivered). Without fencing the house keeps it,
/// a second pie; with fencing it turns it away. So the fencing check is not vacuous — it just
/// answers a different question.
fn stale_pie_delivered(world: &models::leases::LeaseWorld) -> (u32, u32) {
    use models::leases::{LeaseState, Msg};
    let house = |s: &models::world::State<models::leases::Leasing>| s.actor_states.len() - 1;
    let stale = |s: &models::world::State<models::leases::Leasing>| {
        let LeaseState::House { highest, .. } = &*s.actor_states[house(s)] else {
            return false;
        };
        s.network.iter_deliverable().any(|env| {
            matches!(env.msg, Msg::Pie { order, token } if highest.get(order).is_some_and(|h| token < h))
        })
    };
    let path = check::shortest_path(world, stale).expect("a stale pie reaches the door");
    let before = path.last_state().clone();
    let env = before
        .network
        .iter_deliverable()
        .find(|env| matches!(env.msg, Msg::Pie { token: 1, .. }))
        .expect("the token-1 pie is on its way");
    let after = world
        .next_state(
            &before,
            ActorModelAction::Deliver {
                src: env.src,
                dst: env.dst,
                msg: env.msg.clone(),
            },
        )
        .expect("the house takes the pie in");
    (
        before.history.ledger.effects_of(&0),
        after.history.ledger.effects_of(&0),
    )
}

#[test]
fn fencing_turns_away_a_pie_that_arrives_after_a_newer_token() {
    let unfenced = models::lease_no_fencing::world(&design("lease-no-fencing").defaults);
    assert_eq!(stale_pie_delivered(&unfenced), (1, 2), "kept: a second pie");
    let fenced = models::lease_fencing::world(&design("lease-fencing").defaults);
    assert_eq!(stale_pie_delivered(&fenced), (1, 1), "turned away");
}

#[test]
fn lease_with_fencing_and_dedup_holds() {
    let d = design("lease-fenced-dedup");
    let r = run(d, &d.defaults);
    assert_eq!(verdicts(&r), expect(Holds, Holds));
    assert!(r
        .bounds
        .contains("1 orders, 3 workers, ≤1 crashes, ≤0 lost messages, ≤1 stalls"));
}

// ---------------------------------------------------------------------------------------------
// The broken ways to deduplicate (the sound idempotent house holds: see tests/verdicts.rs).

#[test]
fn check_then_act_keeps_two_pies_looked_up_before_either_was_recorded() {
    let d = design("check-then-act");
    story(
        d.name,
        &d.defaults,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        11,
        &[
            (3, "(stall) queue's visibility timeout for order 0"),
            (5, "\"order 0 not seen before: record it"),
            (9, "\"order 0 not seen before: record it"),
            (10, "house 0 receives a note"),
            (11, "house 0 receives a note"),
            (11, "a SECOND pie for order 0"),
        ],
    );
}

#[test]
fn forgetful_house_keeps_a_redelivery_after_a_restart() {
    let d = design("forgetful-house");
    story(
        d.name,
        &d.defaults,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        11,
        &[
            (5, "order 0 has its pie"),
            (6, "house 0 crashes"),
            (7, "house 0 restarts"),
            (11, "a SECOND pie for order 0"),
        ],
    );
    // Its memory is the only thing wrong: without crashes it deduplicates.
    let no_crash = Params {
        crashes: 0,
        ..d.defaults
    };
    assert_eq!(verdicts_at(d.name, &no_crash), expect(Holds, Holds));
}

/// A fleet whose hosts each keep their own store: the second host never asks the first host's
/// memory. With one host the split is gone and the same door holds.
#[test]
fn per_host_dedup_keeps_a_redelivery_on_another_host() {
    let d = design("per-host-dedup");
    story(
        d.name,
        &d.defaults,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        9,
        &[
            (
                5,
                "house 0 via host 0 receives a pie for order 0 from worker 0",
            ),
            (5, "order 0 has its pie"),
            (
                9,
                "house 0 via host 1 receives a pie for order 0 from worker 1",
            ),
            (9, "a SECOND pie for order 0"),
        ],
    );
    let one_host = Params {
        workers: 1,
        ..d.defaults
    };
    assert_eq!(verdicts_at(d.name, &one_host), expect(Holds, Holds));
}

/// The same fleet sharing one store holds with more hosts and more orders than its default.
#[test]
fn shared_dedup_fleet_holds_with_three_hosts_and_two_orders() {
    let d = design("shared-dedup-fleet");
    let p = Params {
        orders: 2,
        workers: 3,
        ..d.defaults
    };
    assert_eq!(verdicts_at(d.name, &p), expect(Holds, Holds));
}

#[test]
fn dedup_window_keeps_a_redelivery_after_the_window() {
    let d = design("dedup-window");
    let steps = story(
        d.name,
        &d.defaults,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        11,
        &[
            (3, "(stall) queue's visibility timeout for order 0"),
            (5, "order 0 has its pie"),
            (6, "house 0's clock tick fires"),
            (7, "house 0's clock tick fires"),
            (11, "a SECOND pie for order 0"),
        ],
    );
    assert!(d.defaults.window == Some(1) && steps[7].starts_with("queue picks"));
    // A longer window only needs a longer wait (one order is enough to show it, and quicker).
    let two = Params {
        window: Some(2),
        orders: 1,
        ..d.defaults
    };
    let steps = story(
        d.name,
        &two,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        12,
        &[(12, "a SECOND pie for order 0")],
    );
    assert_eq!(
        steps
            .iter()
            .filter(|s| *s == "house 0's clock tick fires")
            .count(),
        3
    );
}

#[test]
fn record_first_loses_the_pie_it_recorded_before_a_crash() {
    let d = design("record-first");
    let r = run(d, &d.defaults);
    let steps = story(
        d.name,
        &d.defaults,
        expect(Holds, Violated),
        EVERY_ORDER_GETS_A_PIE,
        20,
        &[
            (5, "\"order 0 recorded: keep worker 0's pie\""),
            (6, "house 0 crashes"),
        ],
    );
    // Where among equally short stories the redelivery comes is the search's tie-break, not
    // the design's: only that it comes after the crash is.
    assert!(
        steps[6..]
            .iter()
            .any(|s| s.contains("duplicate pie for order 0 turned away")),
        "{}",
        steps.join("\n")
    );
    let cx = r
        .property(EVERY_ORDER_GETS_A_PIE)
        .unwrap()
        .counterexample
        .as_ref()
        .unwrap();
    assert!(
        cx.outcome.starts_with("nothing more can happen") && cx.outcome.ends_with("lost [0]"),
        "{}",
        cx.outcome
    );
    let no_crash = Params {
        crashes: 0,
        ..d.defaults
    };
    assert_eq!(verdicts_at(d.name, &no_crash), expect(Holds, Holds));
}

#[test]
fn accept_first_keeps_a_second_pie_after_a_crash_before_recording() {
    let d = design("accept-first");
    story(
        d.name,
        &d.defaults,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        11,
        &[
            (5, "\"worker 0's pie for order 0 kept: record order 0\""),
            (5, "order 0 has its pie"),
            (6, "house 0 crashes"),
            (11, "a SECOND pie for order 0"),
        ],
    );
    let no_crash = Params {
        crashes: 0,
        ..d.defaults
    };
    assert_eq!(verdicts_at(d.name, &no_crash), expect(Holds, Holds));
}

// ---------------------------------------------------------------------------------------------
// Duplicate orders from the producer.

#[test]
fn producer_retry_without_a_key_is_two_orders_to_the_idempotent_house() {
    let d = design("producer-retry");
    story(
        d.name,
        &d.defaults,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        11,
        &[
            (1, "\"your pie for house 0 is order #0\""),
            (
                2,
                "(stall) customer's patience for the call about house 0 fires",
            ),
            (3, "\"your pie for house 0 is order #1\""),
            (11, "a pie for order #1"),
            (11, "a SECOND pie for order 0"),
        ],
    );
    // Retries come only from faults: a customer whose calls go through calls once.
    let calm = Params {
        losses: 0,
        stalls: 0,
        ..d.defaults
    };
    assert_eq!(verdicts_at(d.name, &calm), expect(Holds, Holds));
}

#[test]
fn idempotency_key_carried_end_to_end_holds() {
    let d = design("idempotency-key");
    let r = run(d, &d.defaults);
    assert_eq!(verdicts(&r), expect(Holds, Holds));
    // Its model does retry: the same customer without the key duplicates at the same bounds.
    assert_eq!(
        verdicts_at("producer-retry", &d.defaults),
        expect(Violated, Holds)
    );
}

// ---------------------------------------------------------------------------------------------
// Symmetry reduction: the same verdicts with fewer states.

// (Soundness of every design's reduction, against the unreduced search: tests/engine.rs.)

/// The representative is canonical: every relabelling of the workers of a state has the same
/// one (checked along a story, with three workers: all six orders).
#[test]
fn symmetry_representative_is_the_same_for_every_order_of_the_workers() {
    let d = design("lease-no-fencing");
    let world = models::lease_no_fencing::world(&d.defaults);
    let representative = world.symmetry.unwrap().representative;
    let path =
        check::shortest_path(&world, |s| !s.history.ledger.at_most_one_effect_per_order()).unwrap();
    let orders = [
        [1, 2, 3],
        [1, 3, 2],
        [2, 1, 3],
        [2, 3, 1],
        [3, 1, 2],
        [3, 2, 1],
    ];
    for state in path.into_states() {
        let canonical = representative(&state);
        assert_eq!(representative(&canonical), canonical);
        for order in orders {
            let mut to: Vec<usize> = (0..state.actor_states.len()).collect();
            to[1..4].copy_from_slice(&order);
            let relabelled = models::symmetry::relabel(&state, &to);
            assert_eq!(relabelled.history, state.history);
            assert_eq!(representative(&relabelled), canonical);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP Idempotency-Key middleware: a client retrying at two stateless instances over one
// database (models/casts/http.rs).

/// The shortest path in `world` (no symmetry) to a state where `bad` holds, told as a story.
fn http_story(
    world: &models::http::HttpWorld,
    bad: impl Fn(&models::world::State<models::http::Http>) -> bool,
) -> Vec<String> {
    let path = check::shortest_path(world, bad).expect("the state is reachable");
    let states = path.into_vec();
    states
        .windows(2)
        .map(|w| world.narrate(&w[0].0, w[0].1.as_ref().unwrap(), &w[1].0))
        .collect()
}

/// Is `msg` in flight in `s`?
fn http_in_flight(
    s: &models::world::State<models::http::Http>,
    msg: impl Fn(&models::http::Msg) -> bool,
) -> bool {
    s.network.iter_deliverable().any(|env| msg(env.msg))
}

fn assert_told(story: &[String], telling: &[(usize, &str)]) {
    let told = story.join("\n");
    for &(k, text) in telling {
        assert!(
            story[k - 1].contains(text),
            "step {k} should contain {text:?}; story\n{told}"
        );
    }
}

/// The layer's transactional mode holds at its default size (1 key × 2 instances, ≤1 crash,
/// ≤1 lost message, ≤1 stall), and not by doing nothing: a second transaction for the key waits
/// for the lock and replays once the first commits, and a transaction rolled back under a slow
/// handler (a stall) has its late commit refused, a 503.
#[test]
fn idempotency_layer_holds_and_its_lock_and_rollback_are_exercised() {
    use models::http::{Msg, Status};
    let d = design("idempotency-layer");
    assert_eq!(verdicts_at(d.name, &d.defaults), expect(Holds, Holds));
    let world = models::idempotency_layer::world(&d.defaults);
    // Both answers of one commit at once: the committer's and the waiter's replay.
    let waited = http_story(&world, |s| {
        http_in_flight(s, |m| matches!(m, Msg::Committed { .. }))
            && http_in_flight(s, |m| matches!(m, Msg::Found { .. }))
    });
    assert_eq!(waited.len(), 8, "{}", waited.join("\n"));
    assert_told(
        &waited,
        &[
            (
                2,
                "sends \"key 0 is new, locked for you: run the handler\" to instance 0",
            ),
            (4, "(stall) client's patience for key 0"),
            (
                6,
                "database receives BEGIN; look key 0 up, taking its lock from instance 1",
            ),
            (
                8,
                "sends \"committed: the pie and key 0\" to instance 0, sends \"key 0 is done: \
                 its stored response is 201\" to instance 1 — order 0 has its pie",
            ),
        ],
    );
    assert!(!waited[5].contains("sends"), "the second transaction waits");
    // A slow handler's transaction rolled back (a stall): its late commit is refused, a 503.
    let refused = http_story(&world, |s| {
        http_in_flight(s, |m| {
            matches!(
                m,
                Msg::Response {
                    status: Status::Unavailable,
                    ..
                }
            )
        })
    });
    assert_eq!(refused.len(), 7, "{}", refused.join("\n"));
    assert_told(
        &refused,
        &[
            (
                4,
                "sends COMMIT the pie and key 0 with its response to database",
            ),
            (
                5,
                "(stall) database's connection-lost timer for the transaction of instance 0 on \
                 key 0 fires while the work is still under way",
            ),
            (6, "\"no such transaction (rolled back): COMMIT refused\""),
            (
                7,
                "sends 503 Service Unavailable for key 0 (nothing committed) to client",
            ),
        ],
    );
}

/// One size up it still holds: two keys on two instances, and one key with two crashes and two
/// stalls (each a few seconds at most).
#[test]
fn idempotency_layer_holds_with_two_keys_and_with_two_crashes_and_two_stalls() {
    let d = design("idempotency-layer");
    for p in [
        Params {
            orders: 2,
            ..d.defaults
        },
        Params {
            crashes: 2,
            stalls: 2,
            ..d.defaults
        },
    ] {
        assert_eq!(verdicts_at(d.name, &p), expect(Holds, Holds), "at {p}");
    }
}

/// Lease mode bakes twice: the first instance bakes (the handler's external effect) and crashes
/// before completing the key; its lease runs out — no stall, its holder is gone — and the
/// client's retry takes the key over with token 2 and bakes again.
#[test]
fn idempotency_layer_lease_bakes_again_after_a_stall_and_a_crash_between_the_effect_and_completing()
{
    let d = design("idempotency-layer-lease");
    let steps = story(
        d.name,
        &d.defaults,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        11,
        &[
            (2, "\"key 0 is yours: a lease with token 1\""),
            (4, "(stall) client's patience for key 0"),
            (4, "to instance 1"),
            (6, "the handler baked the pie for key 0 (token 1)"),
            (6, "order 0 has its pie"),
            (7, "instance 0 crashes"),
            (9, "\"key 0 is yours: a lease with token 2\" to instance 1"),
            (11, "a SECOND pie for order 0"),
        ],
    );
    assert_eq!(steps[7], "database's lease timer for key 0 fires");
}

/// The fencing token at work: a stale holder's completion, arriving after another instance took
/// the key over, is refused (the stores' own `dedup::owns` check), and the newer lease keeps
/// the key. A model whose completion always succeeded would never answer "taken over".
#[test]
fn idempotency_layer_lease_refuses_a_stale_completion() {
    use models::http::{HttpState, Msg};
    use onepie::dedup::Stage;
    let d = design("idempotency-layer-lease");
    let world = models::idempotency_layer_lease::world(&d.defaults);
    let taken_over = |s: &models::world::State<models::http::Http>| {
        http_in_flight(s, |m| matches!(m, Msg::TakenOver { .. }))
    };
    let story = http_story(&world, taken_over);
    let last = story.len();
    assert_told(
        &story,
        &[
            (2, "\"key 0 is yours: a lease with token 1\""),
            (last, "\"key 0 was taken over: completion refused\""),
        ],
    );
    let path = check::shortest_path(&world, taken_over).unwrap().into_vec();
    let end = &path.last().unwrap().0;
    let owner = end.actor_states.iter().find_map(|a| match &**a {
        HttpState::Database { records, .. } => match &records[&0].stage {
            Stage::InProgress { owner, .. } => Some(*owner),
            Stage::Completed { .. } => Some(0),
        },
        _ => None,
    });
    assert_eq!(
        owner,
        Some(2),
        "the newer lease still holds the key; story\n{}",
        story.join("\n")
    );
}

/// The lease's duplicate needs a crash, or a second stall in its place: without crashes it holds
/// (≤1 stall, ≤1 lost message); without crashes but with two stalls the lease runs out under a
/// live, slow holder; and without stalls a crash alone is enough (the client's patience after
/// the crash is no stall).
#[test]
fn idempotency_layer_lease_needs_a_crash_or_two_stalls() {
    let d = design("idempotency-layer-lease");
    let no_crash = Params {
        crashes: 0,
        ..d.defaults
    };
    assert_eq!(verdicts_at(d.name, &no_crash), expect(Holds, Holds));
    story(
        d.name,
        &Params {
            stalls: 2,
            ..no_crash
        },
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        10,
        &[
            (4, "(stall) client's patience for key 0"),
            (7, "(stall) database's lease timer for key 0"),
            (10, "a SECOND pie for order 0"),
        ],
    );
    let no_stall = Params {
        stalls: 0,
        ..d.defaults
    };
    assert_eq!(verdicts_at(d.name, &no_stall), expect(Violated, Holds));
}

/// Get → handler → set: the client's patience runs out while its first request is still on its
/// way (a stall), the retry reaches instance 1, both reads miss and both handlers bake.
#[test]
fn get_handler_set_bakes_twice_when_two_reads_miss() {
    let d = design("get-handler-set");
    story(
        d.name,
        &d.defaults,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        11,
        &[
            (2, "sends \"key 0 is not stored\" to instance 0"),
            (
                4,
                "(stall) client's patience for key 0 fires while the work is still under way",
            ),
            (4, "to instance 1"),
            (6, "sends \"key 0 is not stored\" to instance 1"),
            (
                9,
                "from instance 0 and sends \"the pie for key 0 is written\"",
            ),
            (9, "order 0 has its pie"),
            (
                11,
                "from instance 1 and sends \"the pie for key 0 is written\"",
            ),
            (11, "a SECOND pie for order 0"),
        ],
    );
    // A crash between the handler's write and the SET does it too; with neither a crash nor a
    // stall the client never retries while a request is under way, and it holds.
    let crash_only = Params {
        stalls: 0,
        ..d.defaults
    };
    story(
        d.name,
        &crash_only,
        expect(Violated, Holds),
        AT_MOST_ONE_PIE,
        12,
        &[(5, "order 0 has its pie"), (6, "instance 0 crashes")],
    );
    let calm = Params {
        crashes: 0,
        stalls: 0,
        ..d.defaults
    };
    assert_eq!(verdicts_at(d.name, &calm), expect(Holds, Holds));
}
