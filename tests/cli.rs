//! The `onepie` binary: the main job's output, JSON, and clear errors for bad input.

use std::process::{Command, Output};

fn onepie(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onepie"))
        .args(args)
        .output()
        .expect("run onepie")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs onepie with `args`, which must fail with exactly one `onepie:` line containing `says`
/// and no panic; returns the exit code.
fn one_line_error(args: &[&str], says: &str) -> Option<i32> {
    let out = onepie(args);
    assert!(!out.status.success(), "{args:?}");
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("onepie:"))
        .collect();
    assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
    assert!(errors[0].contains(says), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    out.status.code()
}

#[test]
fn check_prints_the_table_and_a_numbered_story() {
    let out = onepie(&["check", "ack-after-work"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("always: at most one pie per order"),
        "{stdout}"
    );
    assert!(stdout.contains("violated"), "{stdout}");
    assert!(
        stdout.contains("Shortest counterexample (9 steps)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("   1. queue picks worker 0 for order 0"),
        "{stdout}"
    );
    assert!(stdout.contains("a SECOND pie for order 0"), "{stdout}");
    assert!(
        stdout.contains("2 orders, 2 workers, ≤1 crashes"),
        "{stdout}"
    );
}

#[test]
fn check_json_has_verdicts_states_and_steps() {
    let out = onepie(&["check", "ack-after-work", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let report = &v[0];
    assert_eq!(report["design"], "ack-after-work");
    assert!(report["unique_states"].as_u64().unwrap() > 1000);
    assert!(report["max_depth"].as_u64().unwrap() > 5);
    assert!(report["seconds"].as_f64().is_some());
    let props = report["properties"].as_array().unwrap();
    let dup = props
        .iter()
        .find(|p| p["property"] == "at most one pie per order")
        .unwrap();
    assert_eq!(dup["verdict"], "violated");
    assert_eq!(dup["counterexample"]["steps"].as_array().unwrap().len(), 9);
    assert!(dup["counterexample"]["explorer_path"]
        .as_str()
        .unwrap()
        .starts_with("0/"));
}

#[test]
fn list_names_every_design_with_expectations() {
    let out = onepie(&["list"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for d in onepie::models::designs() {
        assert!(
            stdout.contains(d.name),
            "{} missing from:\n{stdout}",
            d.name
        );
    }
    assert!(
        stdout.contains("expected violated: at most one pie per order"),
        "{stdout}"
    );
    assert!(stdout.contains("expected every property holds"), "{stdout}");
}

#[test]
fn an_unknown_design_is_a_one_line_error_naming_the_valid_ones() {
    let out = onepie(&["check", "exactly-once-magic"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("unknown design `exactly-once-magic`"),
        "{stderr}"
    );
    assert!(stderr.contains("idempotent-house"), "{stderr}");
}

#[test]
fn out_of_range_and_absurd_sizes_are_errors_not_panics() {
    for args in [
        &["check", "ack-after-work", "--orders", "0"][..],
        &["check", "ack-after-work", "--workers", "9"],
        &["explore", "ack-after-work", "--stalls", "200"],
    ] {
        let out = onepie(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("out of range"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A number that does not fit at all is clap's error, still not a panic.
    let out = onepie(&["check", "ack-after-work", "--orders", "100000"]);
    assert!(!out.status.success());
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn a_size_a_design_does_not_have_is_an_error() {
    let out = onepie(&["check", "ack-after-work", "--window", "2"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--window does not apply to `ack-after-work`"),
        "{stderr}"
    );
    assert!(stderr.contains("dedup-window"), "{stderr}");
}

#[test]
fn a_state_space_bound_that_cannot_be_met_is_an_error() {
    let out = onepie(&["check", "idempotent-house", "--max-states", "100"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("did not finish within --max-states 100"),
        "{stderr}"
    );
}

#[test]
fn explore_refuses_a_port_in_use_and_a_bad_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = onepie(&["explore", "ack-after-work", "--addr", &addr]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot serve on"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = onepie(&["explore", "ack-after-work", "--addr", "pizza:oven"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is not an address"));
}

#[test]
fn engine_flags_are_checked_and_bad_ones_are_one_line_errors() {
    for (args, says) in [
        (&["--threads", "0"][..], "--threads 0 is out of range"),
        (&["--threads", "100000"], "--threads 100000 is out of range"),
        (&["--search", "sideways"], "[possible values: bfs, dfs]"),
        (&["--symmetry", "maybe"], "[possible values: on, off]"),
        (&["--max-memory", "4Q"], "is not a size like 4G"),
        (&["--max-memory", "1M"], "over --max-memory 1 MB"),
    ] {
        let mut all = vec!["check", "idempotent-house"];
        all.extend_from_slice(args);
        one_line_error(&all, says);
    }
}

#[test]
fn json_says_how_the_states_were_searched() {
    let out = onepie(&[
        "check",
        "ack-after-work",
        "--json",
        "--threads",
        "2",
        "--search",
        "dfs",
        "--symmetry",
        "off",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &report[0];
    assert_eq!(r["search"], "dfs");
    assert_eq!(r["reduction"], "none");
    assert_eq!(r["visited"], "fingerprints");
    assert_eq!(r["threads"], 1, "depth-first runs on one thread");
    assert_eq!(
        r["unique_states"], 78277,
        "Stateright's BFS count for the same model"
    );
    assert!(r["peak_memory"].as_u64().unwrap() > 1_000_000);
    assert!(r["fingerprint_collision_probability"].as_f64().unwrap() < 1e-6);
    assert!(r["seconds"].as_f64().unwrap() > 0.0);
    assert!(r["bytes_per_state"].as_f64().unwrap() > 8.0);
}

#[test]
fn conform_replays_house_steps_and_refuses_bad_input_in_one_line() {
    let out = onepie(&["conform", "idempotency-key", "--store", "memory"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("replayed on memory") && stdout.contains(": 0 divergences"));
    assert!(stdout.contains("1 design(s), 2 distinct house steps replayed, 0 divergence(s)"));

    let out = onepie(&["conform", "idempotency-key", "--json"]);
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r[0]["design"], "idempotency-key");
    assert_eq!(r[0]["divergences"].as_array().unwrap().len(), 0);
    assert!(r[0]["store"].as_str().unwrap().starts_with("sqlite "));

    // A server that is not there is worth retrying (75), as for `onepie inbox`.
    for (args, says, code) in [
        (
            &["conform", "ack-after-work"][..],
            "`ack-after-work` has no house that stands for the real inbox; these do: idempotent-house",
            1,
        ),
        (&["conform", "idempotency-key", "--store", "oven"], "`oven` is not a store", 1),
        (&["conform", "no-such-design"], "unknown design", 1),
        (
            &["conform", "idempotency-key", "--store", "postgres://nobody@127.0.0.1:1/none"],
            "postgres",
            75,
        ),
    ] {
        assert_eq!(one_line_error(args, says), Some(code), "{args:?}");
    }
}

#[test]
fn simulate_prints_tables_json_and_csv_and_refuses_bad_input_in_one_line() {
    let out = onepie(&[
        "simulate",
        "ack-after-work",
        "--runs",
        "50",
        "--timeout",
        "1s",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The data row: 50 runs of 10 orders.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ack-after-work") && l.contains(" 500 ")),
        "{stdout}"
    );

    let out = onepie(&[
        "simulate",
        "ack-after-work,idempotent-house",
        "--runs",
        "20",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.as_array().unwrap().len(), 2);
    assert_eq!(r[1]["design"], "idempotent-house");
    assert_eq!(r[1]["duplicated"], 0);

    let out = onepie(&[
        "simulate",
        "ack-after-work",
        "--runs",
        "20",
        "--csv",
        "--sweep",
        "loss-rate=0..0.2:3",
    ]);
    let csv = text(&out.stdout);
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("loss-rate,0,ack-after-work,20,"));

    // Each after `simulate ack-after-work` unless it names its own design.
    for (args, says) in [
        (&["--timeout", "0s"][..], "at least 1ms"),
        (&["--timeout", "0.1us"], "at least 1ms"),
        (&["--timeout", "1e307m"], "at most"),
        (&["--work", "1e300s"], "is not a distribution"),
        (&["--work", "fast"], "is not a distribution"),
        (&["--work", "lognormal:1s,1000"], "σ must be"),
        (&["--crash-rate", "1e12"], "not a rate"),
        (&["--crash-rate", "-1"], "not a rate"),
        (&["--loss-rate", "1.5"], "not a probability"),
        (&["--orders", "300"], "--orders 300 is out of range"),
        (&["--runs", "0"], "--runs"),
        (&["--sweep", "timeout=0.0000001s..1s:3"], "is not a sweep"),
        (&["--sweep", "timeout=1s..2s"], "is not a sweep"),
        (&["--sweep", "oven=1..2:3"], "is not a sweep"),
        (&["--svg", "x.svg"], "--sweep"),
        (
            &["--sweep", "timeout=1s..2s:2", "--svg", "/no/such/dir/x.svg"],
            "cannot draw the chart",
        ),
    ] {
        let mut all = vec!["simulate", "ack-after-work"];
        all.extend_from_slice(args);
        one_line_error(&all, says);
    }
    one_line_error(&["simulate", "deadline"], "cannot be simulated yet");
    one_line_error(&["simulate", "no-such-design"], "unknown design");
}
