//! `onepie inbox` from the shell: the receiver exercised and inspected as a user would.

use std::process::{Command, Output};

fn onepie(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onepie"))
        .args(args)
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn deliver_applies_once_and_show_lists_each_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("pies.db");
    let store = store.to_str().unwrap();
    let first = onepie(&["inbox", "deliver", "--store", store, "order-1", "apple"]);
    assert!(first.status.success(), "{}", err(&first));
    assert!(out(&first).starts_with("applied"), "{}", out(&first));
    let again = onepie(&["inbox", "deliver", "--store", store, "order-1", "apple"]);
    assert!(again.status.success());
    assert!(out(&again).starts_with("duplicate"), "{}", out(&again));
    assert!(out(&again).contains(out(&first).trim_start_matches("applied").trim()));
    let show = onepie(&["inbox", "show", "--store", store, "--json"]);
    assert!(show.status.success(), "{}", err(&show));
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let keys = v.as_array().unwrap();
    assert_eq!(keys.len(), 1, "{v}");
    assert_eq!(keys[0]["key"], "order-1");
    assert_eq!(keys[0]["state"], "completed");
    let human = onepie(&["inbox", "show", "--store", store]);
    assert_eq!(
        out(&human)
            .lines()
            .filter(|l| l.starts_with("order-1"))
            .count(),
        1
    );
}

#[test]
fn every_bad_input_is_a_one_line_error_and_nothing_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("pies.db");
    let store = store.to_str().unwrap();
    assert!(
        onepie(&["inbox", "deliver", "--store", store, "order-1", "apple"])
            .status
            .success()
    );
    let long = "k".repeat(256);
    let foreign = dir.path().join("notes.txt");
    std::fs::write(&foreign, "not a database, just some notes\n").unwrap();
    let foreign = foreign.to_str().unwrap();
    for (args, says) in [
        (
            vec!["inbox", "deliver", "--store", store, "order-1", "cherry"],
            "different payload",
        ),
        (
            vec!["inbox", "deliver", "--store", store, "", "apple"],
            "empty",
        ),
        (
            vec!["inbox", "deliver", "--store", store, long.as_str(), "apple"],
            "255",
        ),
        (
            vec!["inbox", "deliver", "--store", foreign, "order-1", "apple"],
            "not an onepie inbox",
        ),
        (
            vec!["inbox", "show", "--store", foreign],
            "not an onepie inbox",
        ),
    ] {
        let o = onepie(&args);
        assert!(!o.status.success(), "{args:?}");
        let e = err(&o);
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        assert!(e.contains(says), "{args:?}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    // The foreign file was left as it was, and the inbox still has exactly one pie.
    assert_eq!(
        std::fs::read_to_string(foreign).unwrap(),
        "not a database, just some notes\n"
    );
    let show = onepie(&["inbox", "show", "--store", store]);
    assert_eq!(
        out(&show)
            .lines()
            .filter(|l| l.starts_with("order-"))
            .count(),
        1
    );
}
