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

fn onepie_os(args: &[&std::ffi::OsStr], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_onepie"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

#[test]
fn payloads_are_bytes_from_an_argument_a_file_or_standard_input() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("pies.db");
    let s = store.as_os_str();
    let a = |x: &'static str| OsStr::new(x);
    // Not UTF-8: was clap's five-line usage error, is now an order like any other.
    let latin1 = OsStr::from_bytes(b"cr\xe8me br\xfbl\xe9e");
    let o = onepie_os(
        &[a("inbox"), a("deliver"), a("--store"), s, a("o1"), latin1],
        None,
    );
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "applied: pie #1\n");
    // Far more than a command line takes, binary, from a file and then from standard input.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let file = dir.path().join("order.bin");
    std::fs::write(&file, &big).unwrap();
    let from_file = [
        a("inbox"),
        a("deliver"),
        a("--store"),
        s,
        a("o2"),
        a("--payload-file"),
        file.as_os_str(),
    ];
    let o = onepie_os(&from_file, None);
    assert_eq!(out(&o), "applied: pie #2\n", "{}", err(&o));
    let from_stdin = [
        a("inbox"),
        a("deliver"),
        a("--store"),
        s,
        a("o2"),
        a("--payload-file"),
        a("-"),
    ];
    let o = onepie_os(&from_stdin, Some(&big));
    assert_eq!(out(&o), "duplicate: pie #2\n", "{}", err(&o));
    // One byte different is another payload: refused in one line.
    let mut other = big.clone();
    other[999_999] ^= 1;
    let o = onepie_os(&from_stdin, Some(&other));
    assert!(!o.status.success());
    assert_eq!(err(&o).lines().count(), 1, "{}", err(&o));
    assert!(err(&o).contains("different payload"), "{}", err(&o));
    // The pie log holds the bytes exactly.
    let conn = rusqlite::Connection::open(&store).unwrap();
    let stored: Vec<u8> = conn
        .query_row("SELECT pie FROM pies WHERE key = 'o2'", [], |r| r.get(0))
        .unwrap();
    assert!(stored == big);
    // Both forms at once, or neither, or a missing file: one line each.
    for args in [
        vec![
            a("inbox"),
            a("deliver"),
            a("--store"),
            s,
            a("o3"),
            a("x"),
            a("--payload-file"),
            a("-"),
        ],
        vec![a("inbox"), a("deliver"), a("--store"), s, a("o3")],
        vec![
            a("inbox"),
            a("deliver"),
            a("--store"),
            s,
            a("o3"),
            a("--payload-file"),
            a("/no/such/file"),
        ],
        vec![
            a("inbox"),
            a("deliver"),
            a("--store"),
            s,
            OsStr::from_bytes(b"k\xff"),
            a("x"),
        ],
    ] {
        let o = onepie_os(&args, None);
        assert!(!o.status.success(), "{args:?}");
        assert_eq!(err(&o).lines().count(), 1, "{args:?}: {}", err(&o));
    }
}

#[test]
fn show_says_what_is_wrong_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("pies.db");
    let store = store.to_str().unwrap();
    assert!(
        onepie(&["inbox", "deliver", "--store", store, "o1", "apple"])
            .status
            .success()
    );
    let listing = || std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(listing(), 1);
    let show = onepie(&["inbox", "show", "--store", store]);
    assert!(show.status.success(), "{}", err(&show));
    assert_eq!(
        listing(),
        1,
        "show only reads: no -wal or -shm beside a quiet file"
    );
    // A directory: was "disk I/O error".
    let o = onepie(&["inbox", "show", "--store", dir.path().to_str().unwrap()]);
    assert_eq!(err(&o).trim_end(), format!("onepie: {} is not an onepie inbox (it is a directory); it was left untouched: pass an inbox file or a new path", dir.path().display()));
    // Missing: says how to make one.
    let o = onepie(&["inbox", "show", "--store", "/tmp/no-such-inbox.db"]);
    assert!(
        err(&o).contains("`onepie inbox deliver --store /tmp/no-such-inbox.db` creates an inbox"),
        "{}",
        err(&o)
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("pies.db");
    let store = store.to_str().unwrap();
    for i in 0..200 {
        onepie(&[
            "inbox",
            "deliver",
            "--store",
            store,
            &format!("order-{i}"),
            "apple",
        ]);
    }
    for args in [
        vec!["list"],
        vec!["inbox", "show", "--store", store],
        vec!["check", "delete-on-delivery"],
    ] {
        // The reader is gone before the first byte is written, as `| head -0` would be.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_onepie"))
            .args(&args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
        let e = err(&o);
        assert!(
            !e.contains("panicked") && !e.contains("Broken pipe"),
            "{args:?}: {e}"
        );
    }
}
