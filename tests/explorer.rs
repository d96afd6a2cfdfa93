//! Stateright's explorer, served by `onepie explore`, in a real browser (headless Chromium)
//! and through its JSON endpoints. The browser is required: if it is missing and cannot be
//! installed, this test fails (it never skips silently).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the explorer when the test ends, pass or fail.
struct Explorer {
    child: Child,
    addr: String,
    /// Printed deep links: (property, explorer path).
    links: Vec<(String, String)>,
}

impl Drop for Explorer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_explorer(design: &str) -> Explorer {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_onepie"))
        .args(["explore", design, "--addr", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start onepie explore");
    let stdout = child.stdout.take().unwrap();
    let mut explorer = Explorer {
        child,
        addr: addr.clone(),
        links: Vec::new(),
    };
    // Read the start-up lines: the URL, then one deep link per counterexample.
    let mut saw_url = false;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                saw_url |= line.contains(&format!("http://{addr}/"));
                if let Some((head, url)) = line.split_once(&format!("http://{addr}/#/steps/")) {
                    let property = head.split('"').nth(1).unwrap_or_default().to_string();
                    explorer.links.push((property, url.trim().to_string()));
                }
            }
            Err(_) => {
                if TcpStream::connect(&addr).is_ok() && saw_url {
                    return explorer;
                }
            }
        }
    }
    panic!("onepie explore did not start serving on {addr} within 60 s");
}

fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the explorer");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn json(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", path);
    let head: String = body.chars().take(300).collect();
    assert_eq!(status, 200, "GET {path}: {head}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {head}"))
}

/// Debian's Chromium, installed on demand when this runs as root with apt-get (as in CI).
fn chromium() -> PathBuf {
    let find = || {
        ["chromium", "chromium-browser"].iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        })
    };
    if let Some(path) = find() {
        return path;
    }
    eprintln!("chromium not found; installing Debian's chromium with apt-get …");
    let installed = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    match find() {
        Some(path) if installed => path,
        _ => panic!(
            "the explorer test needs a real browser: install Debian's chromium \
             (`apt-get install -y chromium`) and run the tests again"
        ),
    }
}

fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_explorer_renders_the_stall_story_in_a_real_browser() {
    let explorer = start_explorer("ack-after-work");
    let (property, path) = explorer
        .links
        .iter()
        .find(|(p, _)| p == "at most one pie per order")
        .cloned()
        .expect("explore prints a deep link to the duplicate");
    assert_eq!(
        path.split('/').count(),
        10,
        "9 steps after the initial state: {path}"
    );

    // The deep link, rendered by the JavaScript UI: properties, the story's actions, the state.
    let dom = dump_dom(&format!("http://{}/#/steps/{path}", explorer.addr));
    assert!(dom.contains(&property), "the page lists the properties");
    assert!(dom.contains("every order gets a pie once nothing more can happen"));
    assert!(
        dom.contains("queue picks worker 0 for order 0"),
        "the path of actions reads as words"
    );
    assert!(
        dom.contains("house 0 receives a pie for order 0 from worker 0"),
        "the last step is shown"
    );
    assert!(
        dom.contains("a SECOND pie for order 0"),
        "the selected step's outcome tells of the second pie"
    );
    assert!(dom.contains("<svg"), "the sequence diagram is drawn");
}

#[test]
fn the_explorer_json_endpoints_reach_the_violating_state() {
    let explorer = start_explorer("ack-after-work");
    let addr = &explorer.addr;
    let status = json(addr, "/.status");
    let names: Vec<&str> = status["properties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_str().unwrap())
        .collect();
    assert!(names.contains(&"at most one pie per order"), "{status}");

    // Walk the printed deep link: the step it ends with leads to two pies for order 0.
    let (_, path) = explorer
        .links
        .iter()
        .find(|(p, _)| p == "at most one pie per order")
        .cloned()
        .unwrap();
    let (prefix, last) = path.rsplit_once('/').unwrap();
    let next = json(addr, &format!("/.states/{prefix}"));
    let step = next
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["actionIndex"].as_u64() == last.parse().ok())
        .expect("the last action is among the next steps");
    assert!(step["state"].as_str().unwrap().contains("pies {0: 2}"));
    assert!(step["outcome"]
        .as_str()
        .unwrap()
        .contains("a SECOND pie for order 0"));

    // Let the explorer's own checker finish, then replay what it discovered.
    let (status_code, _) = http(addr, "POST", "/.runtocompletion");
    assert_eq!(status_code, 200);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let status = json(addr, "/.status");
        if status["done"].as_bool() == Some(true) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the explorer's checker did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let discovered = status["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[1] == "at most one pie per order")
        .and_then(|p| p[2].as_str())
        .expect("the explorer discovers the duplicate")
        .to_string();
    let design = onepie::models::find("ack-after-work").unwrap();
    let end = design
        .ending(&design.defaults, &discovered)
        .expect("the discovered path replays");
    assert!(
        !end.ledger.at_most_one_effect_per_order(),
        "{:?}",
        end.ledger
    );
}
