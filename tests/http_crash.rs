//! The pie shop killed with SIGKILL while requests are in flight, and restarted, several times.
//! Clients keep retrying each order with its key until they get a 2xx. Afterwards every order
//! has exactly one pie in the shop's database (judged by the ledger): a 2xx was never answered
//! for a pie that was then lost, and no retry after a restart baked a second pie.
//!
//! Teeth first: the same kills must catch the layer's lease mode with the pie baked outside the
//! key's transaction (an external effect): a kill between the bake and the record lets a retry
//! take the key over after the lease and bake again — at least once, as documented.
//!
//! This test has its own `main` (harness = false): the same binary is the server when run with
//! `--server FILE`. The kill points come from a fixed seed, so CI is repeatable.

mod common;
#[path = "common/shop.rs"]
mod shop;

use onepie::http::IdempotencyLayer;
use onepie::inbox::{InboxStore, Lease, SqliteInbox};
use onepie::ledger::Ledger;
use onepie::testkit::PieLog;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ORDERS: u32 = 400;
const CLIENTS: usize = 16;
const KILLS: u32 = 6;

/// The server: the shop on `path`, each bake taking a few milliseconds so that kills land
/// inside handlers; prints its address. `broken`: lease mode, the pie baked in a transaction of
/// its own, then a few milliseconds before the layer records the key.
fn server(path: &str, broken: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let inbox = SqliteInbox::open(path).expect("open the shop's inbox");
        let app = if broken {
            let oven = Arc::new(Mutex::new(inbox.try_clone().unwrap()));
            let layer = IdempotencyLayer::lease(inbox, Duration::from_millis(100));
            axum::Router::new()
                .route(
                    "/orders",
                    axum::routing::post(
                        move |axum::Extension(lease): axum::Extension<Lease>| async move {
                            let attempt = format!("{}/attempt-{}", lease.key, lease.token);
                            oven.lock()
                                .unwrap()
                                .deliver(&attempt, b"", |tx| {
                                    SqliteInbox::record_pie(tx, &lease.key, b"apple")?;
                                    Ok(Vec::new())
                                })
                                .expect("bake");
                            tokio::time::sleep(Duration::from_millis(3)).await;
                            (axum::http::StatusCode::CREATED, "baked")
                        },
                    ),
                )
                .layer(layer)
        } else {
            let oven = Arc::new(shop::Oven::default());
            oven.bake_ms.store(3, Ordering::SeqCst);
            shop::app(IdempotencyLayer::transactional(inbox), oven)
        };
        let addr = shop::serve(app).await;
        println!("listening {addr}");
        std::future::pending::<()>().await
    });
}

fn start(path: &std::path::Path, broken: bool) -> (Child, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg(if broken {
            "--broken-server"
        } else {
            "--server"
        })
        .arg(path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("the server said {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

const NAME: &str = "sigkill_while_requests_are_in_flight";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(mode @ ("--server" | "--broken-server")) = args.get(1).map(String::as_str) {
        return server(&args[2], mode == "--broken-server");
    }
    if common::chosen(&[NAME]).is_empty() {
        return;
    }
    println!("\nrunning 1 test");
    let (teeth, _) = run(true);
    assert!(
        !teeth.duplicated.is_empty(),
        "the kills did not catch the lease mode's second bake: {teeth:?}"
    );
    println!("the external-effect (lease mode) server is caught: {teeth}");
    let (tally, stats) = run(false);
    println!("{stats}; {tally}");
    assert!(tally.is_exactly_once(), "{tally:?}");
    println!("test {NAME} ... ok");
}

/// Runs the clients against a server killed [`KILLS`] times; the ledger of the shop's pies,
/// and what the clients saw.
fn run(broken: bool) -> (onepie::ledger::Tally<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.db");
    let (child, addr) = start(&path, broken);
    let current = Arc::new(Mutex::new((child, addr)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (errors, replays, fresh) = (AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0));
    let stats = Arc::new((errors, replays, fresh));
    rt.block_on(async {
        let next = Arc::new(AtomicU32::new(0));
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (next, current, stats) = (next.clone(), current.clone(), stats.clone());
            clients.push(tokio::spawn(async move {
                let c = shop::client();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= ORDERS {
                        return;
                    }
                    let key = format!("order-{i:04}");
                    loop {
                        let addr = current.lock().unwrap().1;
                        match shop::send(&c, addr, "POST", "/orders", Some(&key), "apple").await {
                            Ok(r) if r.status == 201 => {
                                let n = if r.replayed() { &stats.1 } else { &stats.2 };
                                n.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            // In flight elsewhere, or the store busy: retry as told.
                            Ok(r) if r.status == 409 || r.status == 503 => {}
                            Ok(r) => panic!("{key}: unexpected {} {}", r.status, r.body),
                            // The server died mid-request: retry with the same key.
                            Err(_) => {
                                stats.0.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
        // Kill at fixed, seeded points while the clients are busy.
        let mut seed: u64 = 0x5eed_9e37;
        for _ in 0..KILLS {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let wait = 80 + (seed >> 33) % 150;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let mut cur = current.lock().unwrap();
            cur.0.kill().unwrap(); // SIGKILL
            cur.0.wait().unwrap();
            *cur = start(&path, broken);
        }
        for c in clients {
            c.await.unwrap();
        }
    });
    let mut cur = current.lock().unwrap();
    cur.0.kill().unwrap();
    cur.0.wait().unwrap();

    let inbox = SqliteInbox::open(&path).unwrap();
    let mut ledger = Ledger::placing((0..ORDERS).map(|i| format!("order-{i:04}")));
    for (key, n) in inbox.pie_counts().unwrap() {
        ledger.record_effects(key, n);
    }
    let (errors, replays, fresh) = (
        stats.0.load(Ordering::SeqCst),
        stats.1.load(Ordering::SeqCst),
        stats.2.load(Ordering::SeqCst),
    );
    assert!(
        errors > 0,
        "no kill landed on a request in flight: the test proved nothing"
    );
    let seen = format!(
        "{KILLS} kills, {ORDERS} orders: {fresh} answered fresh, {replays} replayed after a lost answer, {errors} requests cut off"
    );
    (ledger.tally(), seen)
}
