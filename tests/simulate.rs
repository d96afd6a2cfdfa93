//! The simulator (issue 13) against closed forms and against the checker's verdicts.

use onepie::models::simulate::{self, Dist, SimParams};
use onepie::models::world::{AT_MOST_ONE_PIE, EVERY_ORDER_GETS_A_PIE};
use onepie::models::{self, AnyWorld, Verdict};

fn params(orders: u8, workers: u8, runs: u32) -> SimParams {
    SimParams {
        orders,
        workers,
        runs,
        seed: 7,
        ..SimParams::default()
    }
}

/// Within the 99% normal interval of a mean of `n` draws with this mean and variance.
fn within_99(observed: f64, expected: f64, variance: f64, n: f64) -> bool {
    (observed - expected).abs() <= 2.576 * (variance / n).sqrt()
}

/// Ack-after-work with exponential work of mean μ, a visibility timeout T, no faults and no
/// delays: an order is handed out again iff its first bake outlasts T, so the fraction is
/// e^(−T/μ) exactly. It is handed out a (k+1)-th time iff every one of the k bakes under way is
/// still running at kT: P(N > k) = Π_{j=1..k} e^(−jT/μ) = q^(k(k+1)/2) with q = e^(−T/μ), so
/// E[N] = Σ_{k≥0} q^(k(k+1)/2). That assumes each hand-out starts a bake of its own; a
/// re-hand-out to the worker already baking the order (1 in 50 here) starts none, which moves
/// E[N] by far less than the interval. 100,000 orders for each T/μ.
#[test]
fn ack_after_work_hands_out_again_at_the_closed_form_rate() {
    let d = models::find("ack-after-work").unwrap();
    for ratio in [0.5, 1.0, 2.0, 3.0] {
        let mut p = params(50, 50, 2_000);
        p.timeout = ratio;
        p.seed = (ratio * 1000.0) as u64;
        let AnyWorld::Pizzeria(world) = (d.world)(&models::Params {
            orders: p.orders,
            workers: p.workers,
            ..d.defaults
        }) else {
            panic!("a pizzeria design")
        };
        let mut handouts = Vec::new();
        for r in 0..p.runs {
            let out = simulate::run(&world, &p, p.seed + u64::from(r));
            assert!(!out.cut_short);
            assert_eq!(out.handouts.len(), usize::from(p.orders));
            handouts.extend(out.handouts.values().map(|&n| f64::from(n)));
        }
        let n = handouts.len() as f64;
        assert_eq!(n, 100_000.0);
        let q = (-ratio).exp();
        let again = handouts.iter().filter(|&&k| k > 1.0).count() as f64 / n;
        let mean_n: f64 = (0..64).map(|k| q.powf((k * (k + 1)) as f64 / 2.0)).sum();
        let mean = handouts.iter().sum::<f64>() / n;
        let var = handouts.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / (n - 1.0);
        println!(
            "T/μ = {ratio}: handed out again {again:.5} (closed form {q:.5}); hand-outs per order {mean:.5} (closed form {mean_n:.5})"
        );
        assert!(
            within_99(again, q, q * (1.0 - q), n),
            "T/μ = {ratio}: {again} vs {q}"
        );
        assert!(
            within_99(mean, mean_n, var, n),
            "T/μ = {ratio}: {mean} vs {mean_n}"
        );
    }
}

/// With one order and one worker, delete-on-delivery loses the order iff the worker crashes
/// before its bake is done: with crashes at rate λ and exponential work of mean μ, that is
/// λμ / (1 + λμ). 20,000 orders for each λ.
#[test]
fn delete_on_delivery_loses_orders_at_the_closed_form_crash_rate() {
    let d = models::find("delete-on-delivery").unwrap();
    for rate in [0.05, 0.25, 1.0] {
        let mut p = params(1, 1, 20_000);
        p.crash_rate = rate;
        let s = d.simulate(&p, 2, &|| {}).unwrap();
        let lost = s.rate(s.lost);
        let expected = rate / (1.0 + rate);
        println!("crash rate {rate}/s: lost {lost:.4} (closed form {expected:.4})");
        assert!(within_99(
            lost,
            expected,
            expected * (1.0 - expected),
            s.orders as f64
        ));
        assert_eq!((s.duplicated, s.cut_short), (0, 0));
    }
}

/// Aggressive parameters: work often outlasts the timeout, crashes and losses are frequent,
/// messages are delayed.
fn aggressive() -> SimParams {
    SimParams {
        orders: 3,
        timeout: 0.7,
        delay: Dist::Exp { mean: 0.1 },
        crash_rate: 0.2,
        restart: 0.5,
        loss_rate: 0.1,
        runs: 300,
        seed: 42,
        ..SimParams::default()
    }
}

/// What the checker says (at the design's default bounds) against what 300 aggressive runs
/// show: a property that holds is never violated in simulation; one that is violated shows up
/// within 300 runs.
#[test]
fn simulation_agrees_with_the_checker_on_every_simulable_design() {
    let opts = models::CheckOptions::default();
    let mut simulated = 0;
    for d in models::designs() {
        if !d.simulable() {
            continue;
        }
        simulated += 1;
        let verdict = |name| {
            d.check(&d.defaults, &opts)
                .unwrap()
                .property(name)
                .unwrap()
                .verdict
        };
        let s = d.simulate(&aggressive(), 2, &|| {}).unwrap();
        println!(
            "{:<20} duplicated {:>4}  lost {:>4}  unexpected {}  cut short {}",
            d.name, s.duplicated, s.lost, s.unexpected, s.cut_short
        );
        assert_eq!(s.unexpected, 0, "{}", d.name);
        assert_eq!(
            s.duplicated > 0,
            verdict(AT_MOST_ONE_PIE) == Verdict::Violated,
            "{}: {s:?}",
            d.name
        );
        assert_eq!(
            s.lost > 0,
            verdict(EVERY_ORDER_GETS_A_PIE) == Verdict::Violated,
            "{}: {s:?}",
            d.name
        );
    }
    assert_eq!(simulated, 11);
}

/// The idempotent house never keeps a second pie, whatever the parameters.
#[test]
fn idempotent_house_never_duplicates() {
    let d = models::find("idempotent-house").unwrap();
    for (timeout, crash, loss) in [
        (0.1, 0.0, 0.0),
        (0.5, 0.5, 0.0),
        (2.0, 0.2, 0.3),
        (0.05, 0.5, 0.3),
    ] {
        let p = SimParams {
            timeout,
            crash_rate: crash,
            loss_rate: loss,
            work: Dist::LogNormal {
                median: 1.0,
                sigma: 1.0,
            },
            runs: 200,
            ..aggressive()
        };
        let s = d.simulate(&p, 2, &|| {}).unwrap();
        assert_eq!(
            (s.duplicated, s.lost, s.unexpected),
            (0, 0, 0),
            "{p:?}: {s:?}"
        );
        assert!(s.wasted_pies > 0, "the parameters should waste pies: {s:?}");
    }
}

#[test]
fn the_same_seed_gives_the_same_numbers_on_any_number_of_threads() {
    let d = models::find("ack-after-work").unwrap();
    let a = d.simulate(&aggressive(), 1, &|| {}).unwrap();
    // Thread counts that do and do not divide the 300 runs.
    for threads in [2, 3, 7] {
        let b = d.simulate(&aggressive(), threads, &|| {}).unwrap();
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{threads} threads");
    }
    let c = d
        .simulate(
            &SimParams {
                seed: 43,
                ..aggressive()
            },
            2,
            &|| {},
        )
        .unwrap();
    assert_ne!(format!("{a:?}"), format!("{c:?}"));
}

#[test]
fn distributions_parse_and_have_their_means() {
    let mut rng = simulate::Rng::new(1);
    for (text, mean) in [
        ("2s", 2.0),
        ("fixed:500ms", 0.5),
        ("uniform:1s..3s", 2.0),
        ("exp:2s", 2.0),
        ("lognormal:1s,0.5", (0.125f64).exp()),
    ] {
        let d = Dist::parse(text).unwrap();
        assert!((d.mean() - mean).abs() < 1e-9, "{text}");
        let n = 200_000;
        let sampled = (0..n).map(|_| d.sample(&mut rng) as f64 / 1e6).sum::<f64>() / n as f64;
        assert!(
            (sampled - mean).abs() < 0.02 * mean.max(0.1),
            "{text}: {sampled}"
        );
    }
    for bad in [
        "",
        "fast",
        "exp:",
        "uniform:3s..1s",
        "lognormal:1s",
        "-1s",
        "exp:NaNs",
    ] {
        assert!(Dist::parse(bad).is_err(), "{bad:?}");
    }
}

/// The README's chart, `proofs/simulate-timeout.svg`, is what its command draws today.
#[test]
fn the_readmes_chart_is_what_its_command_draws() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("chart.svg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onepie"))
        .args([
            "simulate",
            "delete-on-delivery,ack-after-work,idempotent-house",
            "--work",
            "lognormal:1s,0.6",
            "--delay",
            "exp:20ms",
            "--crash-rate",
            "0.02",
            "--loss-rate",
            "0.01",
            "--sweep",
            "timeout=0.5s..6s:12",
            "--runs",
            "2000",
            "--svg",
        ])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proofs/simulate-timeout.svg");
    assert!(
        std::fs::read(&svg).unwrap() == std::fs::read(&committed).unwrap(),
        "proofs/simulate-timeout.svg is stale: rerun the command in README → Simulation"
    );
}
