//! Requests per second through `onepie::http::IdempotencyLayer` against the same handler
//! without it, on loopback (axum server, hyper client, keep-alive), in the same run:
//!
//! - `bare`: the handler inserts its row in a transaction of its own (no key);
//! - `inbox`: the handler calls `SqliteInbox::deliver` itself with the request's key and writes
//!   its row in the delivery's transaction — the inbox's own commit cost, no HTTP layer;
//! - `layer`: the layer in transactional mode, the handler writing through `Transaction`.
//!
//! All three write one row per request to a SQLite file in WAL mode with `synchronous=FULL` (the
//! inbox's default), every key new. At 1 client and at 64 concurrent clients: requests/s, p50
//! and p99 latency, and the ratio of each to `inbox` (the target: the layer at most
//! 1.3× the inbox's own cost). Each row is the best of three alternating rounds of
//! `--secs` seconds (default 2). Run with `cargo bench --bench http` (about 40 s).

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Router};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use onepie::http::{IdempotencyLayer, Transaction};
use onepie::inbox::{InboxStore, SqliteInbox};
use rusqlite::Connection;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TABLE: &str = "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, pie TEXT NOT NULL)";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    Bare,
    Inbox,
    Layer,
}

/// Handles taken per request and given back: what the layer does for its own handles.
struct Pool<T> {
    idle: Mutex<Vec<T>>,
    open: Box<dyn Fn() -> T + Send + Sync>,
}

impl<T> Pool<T> {
    fn take(&self) -> T {
        let idle = self.idle.lock().unwrap().pop();
        idle.unwrap_or_else(|| (self.open)())
    }
    fn give(&self, t: T) {
        self.idle.lock().unwrap().push(t);
    }
}

fn bare_conn(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
        .unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c
}

fn app(variant: Variant, path: &Path) -> Router {
    let first = SqliteInbox::open(path).unwrap();
    first.connection().execute_batch(TABLE).unwrap();
    match variant {
        Variant::Bare => {
            let p = path.to_path_buf();
            let pool = Arc::new(Pool {
                idle: Mutex::new(Vec::new()),
                open: Box::new(move || bare_conn(&p)),
            });
            Router::new().route(
                "/orders",
                post(move |pie: String| async move {
                    tokio::task::spawn_blocking(move || {
                        let mut c = pool.take();
                        let tx = c
                            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                            .unwrap();
                        tx.execute("INSERT INTO orders (pie) VALUES (?1)", [&pie])
                            .unwrap();
                        tx.commit().unwrap();
                        pool.give(c);
                    })
                    .await
                    .unwrap();
                    (StatusCode::CREATED, "baked")
                }),
            )
        }
        Variant::Inbox => {
            let template = Mutex::new(first);
            let pool = Arc::new(Pool {
                idle: Mutex::new(Vec::new()),
                open: Box::new(move || template.lock().unwrap().try_clone().unwrap()),
            });
            Router::new().route(
                "/orders",
                post(
                    move |headers: axum::http::HeaderMap, pie: String| async move {
                        let key = headers["idempotency-key"].to_str().unwrap().to_string();
                        tokio::task::spawn_blocking(move || {
                            let mut inbox = pool.take();
                            inbox
                                .deliver(&key, pie.as_bytes(), |tx| {
                                    tx.execute("INSERT INTO orders (pie) VALUES (?1)", [&pie])?;
                                    Ok(b"baked".to_vec())
                                })
                                .unwrap();
                            pool.give(inbox);
                        })
                        .await
                        .unwrap();
                        (StatusCode::CREATED, "baked")
                    },
                ),
            )
        }
        Variant::Layer => Router::new()
            .route(
                "/orders",
                post(
                    |Extension(tx): Extension<Transaction<SqliteInbox>>, pie: String| async move {
                        tx.run(move |t| t.execute("INSERT INTO orders (pie) VALUES (?1)", [&pie]))
                            .await
                            .unwrap()
                            .unwrap();
                        (StatusCode::CREATED, "baked")
                    },
                ),
            )
            .layer(IdempotencyLayer::transactional(first)),
    }
}

struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

async fn load(addr: SocketAddr, clients: usize, secs: f64, round: u64) -> Run {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let req = axum::http::Request::post(format!("http://{addr}/orders"))
                    .header("idempotency-key", format!("round-{round}-order-{n:08}"))
                    .body(Full::new(Bytes::from_static(b"apple")))
                    .unwrap();
                let t = Instant::now();
                let res = client.request(req).await.unwrap();
                assert_eq!(res.status(), 201);
                let _ = http_body_util::BodyExt::collect(res.into_body()).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Run {
        per_sec: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .map_or(2.0, |s| s.parse().expect("--secs takes a number"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let variants = [Variant::Bare, Variant::Inbox, Variant::Layer];
    let files: Vec<PathBuf> = variants
        .iter()
        .map(|v| dir.path().join(format!("{v:?}.db")))
        .collect();
    let addrs: Vec<SocketAddr> = rt.block_on(async {
        let mut addrs = Vec::new();
        for (v, f) in variants.iter().zip(&files) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            let app = app(*v, f);
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        }
        addrs
    });
    println!(
        "HTTP POST /orders on loopback, one SQLite row per request (WAL, synchronous=FULL), best of 3 rounds of {secs} s"
    );
    println!(
        "{:<8} {:>7} {:>10} {:>9} {:>9} {:>10}",
        "handler", "clients", "req/s", "p50 ms", "p99 ms", "vs inbox"
    );
    let mut round = 0;
    for clients in [1, 64] {
        let mut best: Vec<Option<Run>> = vec![None, None, None];
        for _ in 0..3 {
            for (i, addr) in addrs.iter().enumerate() {
                round += 1;
                let run = rt.block_on(load(*addr, clients, secs, round));
                if best[i].as_ref().is_none_or(|b| run.per_sec > b.per_sec) {
                    best[i] = Some(run);
                }
            }
        }
        let inbox = best[1].as_ref().unwrap().per_sec;
        for (v, run) in variants.iter().zip(&best) {
            let run = run.as_ref().unwrap();
            println!(
                "{:<8} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>9.2}×",
                format!("{v:?}").to_lowercase(),
                clients,
                run.per_sec,
                run.p50.as_secs_f64() * 1e3,
                run.p99.as_secs_f64() * 1e3,
                inbox / run.per_sec
            );
        }
    }
}
