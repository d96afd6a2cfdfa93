//! `onepie::http::IdempotencyLayer` against the IETF draft's statuses, with a real server on
//! loopback and a real HTTP client: replay, 400/409/413/422, a 5xx that frees its key, 64
//! concurrent retries that run the handler once (and a get → handler → set baseline that runs
//! it more than once), an abandoned request in both modes, and two instances on one database.
//! PostgreSQL runs in `tests/postgres.rs`; SIGKILL in `tests/http_crash.rs`.

#[path = "common/shop.rs"]
mod shop;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use onepie::http::{IdempotencyLayer, ServerErrors};
use onepie::inbox::{InboxStore, Lease, ManualClock, MemoryStore, SqliteInbox};
use onepie::ledger::Ledger;
use onepie::testkit::{PieLog, PieStore};
use shop::{app, client, post_order, send, serve, Oven};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{Layer, ServiceExt};

fn sqlite(dir: &tempfile::TempDir) -> SqliteInbox {
    SqliteInbox::open(dir.path().join("shop.db")).unwrap()
}

/// The ledger of the pie log, for `keys` placed.
fn ledger<St: PieLog>(store: &St, keys: &[&str]) -> Ledger<String> {
    let mut ledger = Ledger::placing(keys.iter().map(|k| k.to_string()));
    for (key, n) in store.pie_counts().unwrap() {
        ledger.record_effects(key, n);
    }
    ledger
}

/// The shop in transactional mode on a fresh SQLite file, served on loopback.
async fn shop_on_sqlite() -> (
    tempfile::TempDir,
    SqliteInbox,
    Arc<Oven>,
    std::net::SocketAddr,
) {
    let dir = tempfile::tempdir().unwrap();
    let inbox = sqlite(&dir);
    let oven = Arc::new(Oven::default());
    let layer = IdempotencyLayer::transactional(inbox.try_clone().unwrap());
    let addr = serve(app(layer, oven.clone())).await;
    (dir, inbox, oven, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_replay_follow_the_draft() {
    let (_dir, inbox, oven, addr) = shop_on_sqlite().await;
    let c = client();

    // The first request runs the handler; its retry is replayed, kept headers and all.
    let first = post_order(&c, addr, "order-1", "apple").await;
    assert_eq!((first.status, first.body.as_str()), (201, "{\"pie\":1}"));
    assert!(!first.replayed());
    assert_eq!(first.headers["x-baked-by"], "oven");
    let again = post_order(&c, addr, "order-1", "apple").await;
    assert_eq!((again.status, again.body.as_str()), (201, "{\"pie\":1}"));
    assert!(again.replayed());
    assert_eq!(again.headers["location"], "/pies/1");
    assert!(
        again.headers.get("x-baked-by").is_none(),
        "only the chosen headers are stored"
    );

    // 422: the key reused for another body, or another path.
    let other = post_order(&c, addr, "order-1", "cherry").await;
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(other.headers["content-type"], "application/problem+json");
    assert!(
        other.body.contains("already used for a different request"),
        "{}",
        other.body
    );
    let elsewhere = send(&c, addr, "POST", "/orders?rush=1", Some("order-1"), "apple")
        .await
        .unwrap();
    assert_eq!(elsewhere.status, 422);

    // 400: no key, an empty key, a key over the inbox's limit.
    let none = send(&c, addr, "POST", "/orders", None, "apple")
        .await
        .unwrap();
    assert_eq!(none.status, 400);
    assert!(
        none.body.contains("need an Idempotency-Key"),
        "{}",
        none.body
    );
    let empty = send(&c, addr, "POST", "/orders", Some("\"\""), "apple")
        .await
        .unwrap();
    assert_eq!(empty.status, 400);
    assert!(empty.body.contains("empty"), "{}", empty.body);
    let long = post_order(&c, addr, &"k".repeat(256), "apple").await;
    assert_eq!(long.status, 400);
    assert!(
        long.body.contains("the limit is 255 bytes"),
        "{}",
        long.body
    );

    // Methods without keys pass through.
    let menu = send(&c, addr, "GET", "/menu", None, "").await.unwrap();
    assert_eq!(
        (menu.status, menu.body.as_str()),
        (200, "apple, plum, cherry")
    );

    // 413: a body too large to fingerprint.
    let small = IdempotencyLayer::transactional(inbox.try_clone().unwrap()).max_body(8);
    let small_addr = serve(app(small, oven.clone())).await;
    let big = post_order(&c, small_addr, "order-big", "a pie with everything on it").await;
    assert_eq!(big.status, 413, "{}", big.body);

    // 409 while the first request with the key is in flight, with Retry-After; then a replay.
    oven.bake_ms.store(400, Ordering::SeqCst);
    let slow = tokio::spawn({
        let c = c.clone();
        async move { post_order(&c, addr, "order-2", "plum").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let busy = post_order(&c, addr, "order-2", "plum").await;
    assert_eq!(busy.status, 409, "{}", busy.body);
    assert_eq!(busy.headers["retry-after"], "1");
    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.replayed()), (201, false));
    oven.bake_ms.store(0, Ordering::SeqCst);
    let later = post_order(&c, addr, "order-2", "plum").await;
    assert_eq!(
        (later.status, later.replayed(), later.body),
        (201, true, slow.body)
    );

    // Exactly one pie per key, judged by the ledger.
    let tally = ledger(&inbox, &["order-1", "order-2"]).tally();
    assert!(tally.is_exactly_once(), "{tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_frees_the_key_and_rolls_the_handlers_writes_back() {
    let (_dir, inbox, oven, addr) = shop_on_sqlite().await;
    let c = client();

    oven.broken.store(true, Ordering::SeqCst);
    let failed = post_order(&c, addr, "order-1", "apple").await;
    assert_eq!(failed.status, 500);
    assert_eq!(
        inbox.pies().unwrap().len(),
        0,
        "the 500's pie was rolled back"
    );
    oven.broken.store(false, Ordering::SeqCst);
    let retried = post_order(&c, addr, "order-1", "apple").await;
    assert_eq!(
        (retried.status, retried.replayed()),
        (201, false),
        "the key was free"
    );
    assert_eq!(oven.runs.load(Ordering::SeqCst), 2);
    assert!(ledger(&inbox, &["order-1"]).tally().is_exactly_once());

    // ServerErrors::Keep stores the 500 (and its pie) and replays it.
    let keep = IdempotencyLayer::transactional(inbox.try_clone().unwrap())
        .server_errors(ServerErrors::Keep);
    let keep_addr = serve(app(keep, oven.clone())).await;
    oven.broken.store(true, Ordering::SeqCst);
    assert_eq!(
        post_order(&c, keep_addr, "order-2", "plum").await.status,
        500
    );
    oven.broken.store(false, Ordering::SeqCst);
    let replayed = post_order(&c, keep_addr, "order-2", "plum").await;
    assert_eq!((replayed.status, replayed.replayed()), (500, true));
    assert_eq!(oven.runs.load(Ordering::SeqCst), 3);
}

/// Responses by key, as the baseline middleware keeps them.
type Cache = Arc<Mutex<HashMap<String, (StatusCode, String)>>>;

/// The usual small middleware: look the key up, run the handler, store its response, in three
/// separate steps. Written here as the baseline the layer is compared with.
async fn get_handler_set(
    axum::extract::State(cache): axum::extract::State<Cache>,
    req: Request,
    next: Next,
) -> Response {
    let key = req.headers()["idempotency-key"]
        .to_str()
        .unwrap()
        .to_string();
    if let Some((status, body)) = cache.lock().unwrap().get(&key).cloned() {
        return (status, body).into_response();
    }
    let res = next.run(req).await;
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&body).into_owned();
    cache.lock().unwrap().insert(key, (status, body.clone()));
    (status, body).into_response()
}

/// 64 clients send one request with one key at once. With the layer the handler bakes once
/// (the rest get 409, or the replay); with get → handler → set every client that looked before
/// the first stored its response bakes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_retries_run_the_handler_once_and_the_baseline_more_than_once() {
    const CLIENTS: usize = 64;
    let c = client();
    let fire = |addr, key: &'static str| {
        let c = c.clone();
        async move {
            let all = (0..CLIENTS).map(|_| {
                let c = c.clone();
                tokio::spawn(async move { post_order(&c, addr, key, "apple").await })
            });
            let mut statuses = Vec::new();
            for reply in futures_join(all).await {
                statuses.push(reply.status);
            }
            statuses
        }
    };

    // The layer, one instance: its in-flight set answers 409 while the first bakes.
    let dir = tempfile::tempdir().unwrap();
    let inbox = sqlite(&dir);
    let oven = Arc::new(Oven::default());
    oven.bake_ms.store(50, Ordering::SeqCst);
    let addr = serve(app(
        IdempotencyLayer::transactional(inbox.try_clone().unwrap()),
        oven.clone(),
    ))
    .await;
    let statuses = fire(addr, "order-1").await;
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    let tally = ledger(&inbox, &["order-1"]).tally();
    assert!(tally.is_exactly_once(), "the layer: {tally:?}");
    assert_eq!(oven.runs.load(Ordering::SeqCst), 1, "the handler ran once");

    let other = serve(app(
        IdempotencyLayer::transactional(inbox.try_clone().unwrap()),
        oven.clone(),
    ))
    .await;
    // Two instances on one SQLite file, 64 clients each, a fresh key: past the instances'
    // in-flight sets, the store's one atomic step keeps the second instance from baking (it
    // waits for the first's transaction and replays).
    let both = futures_join([addr, other].map(|a| tokio::spawn(fire(a, "order-2")))).await;
    assert!(
        both.iter().flatten().all(|s| *s == 201 || *s == 409),
        "{both:?}"
    );
    let tally = ledger(&inbox, &["order-1", "order-2"]).tally();
    assert!(tally.is_exactly_once(), "two instances: {tally:?}");
    assert_eq!(
        oven.runs.load(Ordering::SeqCst),
        2,
        "once more, for order-2"
    );

    // The baseline: the same handler and pie log (memory), get → handler → set around it.
    let store = PieStore::with_data(Vec::new(), onepie::inbox::SystemClock);
    let baseline_oven = Arc::new(Oven::default());
    baseline_oven.bake_ms.store(50, Ordering::SeqCst);
    let cache = Arc::new(Mutex::new(HashMap::new()));
    let baseline = Router::new()
        .route(
            "/orders",
            post({
                let (store, oven) = (store.try_clone().unwrap(), baseline_oven.clone());
                move |headers: axum::http::HeaderMap, body: bytes::Bytes| async move {
                    let run = oven.runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let key = headers["idempotency-key"].to_str().unwrap().to_string();
                    let mut store = store;
                    store
                        .deliver(&format!("{key}/run-{run}"), b"", |tx| {
                            PieStore::record_pie(tx, &key, &body)?;
                            Ok(Vec::new())
                        })
                        .unwrap();
                    (StatusCode::CREATED, "baked")
                }
            }),
        )
        .layer(middleware::from_fn_with_state(cache, get_handler_set));
    let baseline_addr = serve(baseline).await;
    fire(baseline_addr, "order-1").await;
    let tally = ledger(&store, &["order-1"]).tally();
    assert!(
        !tally.is_exactly_once(),
        "the baseline should bake more than once: {tally:?}"
    );
    assert_eq!(tally.duplicated.len(), 1, "{tally:?}");
    assert!(baseline_oven.runs.load(Ordering::SeqCst) > 1);
    eprintln!(
        "64 concurrent retries: the layer ran the handler 1 time; get → handler → set ran it {} times",
        baseline_oven.runs.load(Ordering::SeqCst)
    );
}

async fn futures_join<T: Send + 'static>(
    handles: impl IntoIterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    // Spawn them all before awaiting any.
    let handles: Vec<_> = handles.into_iter().collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// A request abandoned mid-handler (its future dropped, as when the client goes away) runs to
/// its end in both modes, and the retry gets its response. In lease mode a handler that fails
/// after its effect leaves the lease to end; then a retry takes the key over and the external
/// effect happens again — at least once, as documented. (A crash, which rolls a transaction
/// back, is `tests/http_crash.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_request_finishes_and_a_failed_lease_runs_again_after_it_ends() {
    use axum::http::Request as HttpRequest;
    let request = |key: &str| {
        HttpRequest::post("/orders")
            .header("idempotency-key", key)
            .body(axum::body::Body::from("apple"))
            .unwrap()
    };

    // Transactional: the abandoned handler finishes; the retry is answered with its response.
    let store = PieStore::with_data(Vec::new(), onepie::inbox::SystemClock);
    let oven = Arc::new(Oven::default());
    let svc = app(
        IdempotencyLayer::transactional(store.try_clone().unwrap()),
        oven.clone(),
    );
    oven.bake_ms.store(200, Ordering::SeqCst);
    let abandoned = tokio::time::timeout(
        Duration::from_millis(50),
        svc.clone().oneshot(request("order-1")),
    )
    .await;
    assert!(abandoned.is_err());
    let busy = svc.clone().oneshot(request("order-1")).await.unwrap();
    assert_eq!(busy.status(), StatusCode::CONFLICT, "still baking");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let retried = svc.clone().oneshot(request("order-1")).await.unwrap();
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert_eq!(retried.headers()["idempotent-replayed"], "true");
    assert_eq!(oven.runs.load(Ordering::SeqCst), 1);
    assert!(ledger(&store, &["order-1"]).tally().is_exactly_once());

    // Lease mode: the effect is external (a counter here). The abandoned request's handler
    // runs to its end as well; a handler that fails (a tower error) after its effect leaves
    // the lease to end, and the retry that takes the key over runs the effect again.
    let clock = ManualClock::new(0);
    let store: MemoryStore = MemoryStore::with_clock(clock.clone());
    let effects = Arc::new(Mutex::new(Vec::new()));
    let charge = {
        let effects = effects.clone();
        tower::service_fn(move |req: axum::http::Request<_>| {
            let effects = effects.clone();
            async move {
                let _: &onepie::http::RequestBody<axum::body::Body> = req.body();
                let lease = req.extensions().get::<Lease>().cloned().unwrap();
                let n = {
                    let mut effects = effects.lock().unwrap();
                    effects.push((lease.token, lease.took_over_from));
                    effects.len()
                };
                tokio::time::sleep(Duration::from_millis(100)).await;
                if n == 2 {
                    // The provider charged, then the handler failed: outcome unknown.
                    return Err::<Response, std::io::Error>(std::io::Error::other(
                        "provider timed out",
                    ));
                }
                Ok((StatusCode::CREATED, "charged").into_response())
            }
        })
    };
    let lease_svc = IdempotencyLayer::lease(store, Duration::from_secs(30)).layer(charge);
    let abandoned = tokio::time::timeout(
        Duration::from_millis(20),
        lease_svc.clone().oneshot(request("order-1")),
    )
    .await;
    assert!(abandoned.is_err());
    let busy = lease_svc.clone().oneshot(request("order-1")).await.unwrap();
    assert_eq!(busy.status(), StatusCode::CONFLICT, "the lease is live");
    assert_eq!(busy.headers()["retry-after"], "30");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let replay = lease_svc.clone().oneshot(request("order-1")).await.unwrap();
    assert_eq!(
        replay.status(),
        StatusCode::CREATED,
        "the abandoned handler finished"
    );
    assert_eq!(replay.headers()["idempotent-replayed"], "true");

    let failed = lease_svc.clone().oneshot(request("order-2")).await;
    assert!(failed.is_err(), "the handler's error is passed on");
    let busy = lease_svc.clone().oneshot(request("order-2")).await.unwrap();
    assert_eq!(
        busy.status(),
        StatusCode::CONFLICT,
        "the failed handler's lease stays"
    );
    clock.advance(30_000);
    let res = lease_svc.clone().oneshot(request("order-2")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let effects = effects.lock().unwrap().clone();
    assert_eq!(
        effects.len(),
        3,
        "at least once: order-2's effect ran again after the lease"
    );
    assert_eq!(
        effects[2].1,
        Some(effects[1].0),
        "the rerun knows whose lease it took over"
    );
    assert!(effects[2].0 > effects[1].0, "with a higher fencing token");
}

/// The handler runs on a blocking thread under `Handle::block_on`, which on a current-thread
/// runtime (`#[tokio::test]`'s default) relies on the runtime's own thread to drive timers: a
/// handler that sleeps still answers, and its retry is replayed.
#[tokio::test]
async fn a_current_thread_runtime_serves_the_layer_too() {
    let store = PieStore::with_data(Vec::new(), onepie::inbox::SystemClock);
    let oven = Arc::new(Oven::default());
    oven.bake_ms.store(20, Ordering::SeqCst);
    let svc = app(
        IdempotencyLayer::transactional(store.try_clone().unwrap()),
        oven,
    );
    let request = || {
        axum::http::Request::post("/orders")
            .header("idempotency-key", "order-1")
            .body(axum::body::Body::from("apple"))
            .unwrap()
    };
    let first = svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let again = svc.oneshot(request()).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert!(ledger(&store, &["order-1"]).tally().is_exactly_once());
}

/// The layer's own limits: two keys on one request, a handler past its timeout (rolled back,
/// key free), more requests than `max_in_flight`, and lease mode keeping a 5xx by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_timeouts_and_server_errors_in_lease_mode() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = sqlite(&dir);
    let oven = Arc::new(Oven::default());
    let layer = IdempotencyLayer::transactional(inbox.try_clone().unwrap())
        .handler_timeout(Duration::from_millis(100))
        .max_in_flight(1);
    let addr = serve(app(layer, oven.clone())).await;
    let c = client();

    let req = axum::http::Request::post(format!("http://{addr}/orders"))
        .header("idempotency-key", "order-1")
        .header("idempotency-key", "order-2")
        .body(http_body_util::Full::new(bytes::Bytes::from("apple")))
        .unwrap();
    let two = c.request(req).await.unwrap();
    assert_eq!(two.status(), 400);

    // Past the timeout: 503, the pie rolled back, the key free for the retry.
    oven.bake_ms.store(300, Ordering::SeqCst);
    let slow = post_order(&c, addr, "order-1", "apple").await;
    assert_eq!(slow.status, 503, "{}", slow.body);
    assert_eq!(slow.headers["retry-after"], "1");
    assert!(
        !slow.body.contains("shop.db"),
        "no server detail for the client: {}",
        slow.body
    );
    assert_eq!(inbox.pies().unwrap().len(), 0);

    // One request at a time: a second key meanwhile gets 503.
    oven.bake_ms.store(60, Ordering::SeqCst);
    let first = tokio::spawn({
        let c = c.clone();
        async move { post_order(&c, addr, "order-1", "apple").await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let full = post_order(&c, addr, "order-2", "plum").await;
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(first.await.unwrap().status, 201);
    assert!(ledger(&inbox, &["order-1"]).tally().is_exactly_once());

    // Lease mode keeps a 5xx by default (the external effect may have happened).
    let store: MemoryStore = MemoryStore::new();
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let flaky = Router::new()
        .route(
            "/orders",
            post({
                let runs = runs.clone();
                move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::BAD_GATEWAY, "the provider timed out")
                }
            }),
        )
        .layer(IdempotencyLayer::lease(store, Duration::from_secs(30)));
    let flaky_addr = serve(flaky).await;
    assert_eq!(
        post_order(&c, flaky_addr, "order-1", "apple").await.status,
        502
    );
    let again = post_order(&c, flaky_addr, "order-1", "apple").await;
    assert_eq!((again.status, again.replayed()), (502, true));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
