//! Idempotency-Key for HTTP services: a tower layer on the inbox (cargo feature `http`).
//!
//! A client that retries `POST /orders` after a timeout must not be charged twice. The layer
//! reads the request's `Idempotency-Key` header (the IETF httpapi draft "The Idempotency-Key
//! HTTP Header Field", Stripe's header), runs the handler once per key, stores its response
//! (status, the headers you choose, body) with the key in an [`InboxStore`], and answers a retry
//! of the same request with the stored response, marked `Idempotent-Replayed: true`.
//!
//! What the popular get → handler → set middleware gets wrong, and this layer does not (the
//! models `get-handler-set` and `idempotency-layer` show both):
//! - two concurrent retries both miss the cache and both run the handler: here the key's check
//!   and its record are one step of the store (the `check-then-act` design);
//! - a crash between the handler's write and the cache write runs the handler again on the
//!   retry: here, in [`Mode::Transactional`], the handler's own writes and the key's record
//!   commit in one database transaction.
//!
//! # Two modes
//! - [`Mode::Transactional`] — **exactly once** for the handler's writes to the inbox's own
//!   database (SQLite or PostgreSQL). The layer opens the delivery's transaction before the
//!   handler runs and hands the handler a [`Transaction`] (a request extension) to write
//!   through; the writes and the key's stored response commit together. A crash, a 5xx, a
//!   handler error or [`IdempotencyLayer::handler_timeout`] rolls both back, so the key stays
//!   free and a retry runs the handler afresh. A handler whose client went away still runs to
//!   its end, and the retry gets its response. The handler runs on the blocking thread that
//!   holds the transaction (under `Handle::block_on`): task-locals and tracing spans of the
//!   calling task are not in effect there.
//!
//!   A second request with the key on the *same* instance gets 409 at once. On *another*
//!   instance: SQLite takes one writer at a time, so it waits for the first transaction (up to
//!   its busy timeout, then 503) and replays its response; PostgreSQL delivers a new key
//!   optimistically (see `PgInbox`), so both instances may run the handler at once, one
//!   transaction commits, the other rolls back and its client gets the replay. Either way the
//!   database keeps one set of writes; anything the handler does *outside* the transaction
//!   (logs, calls) may happen twice: use lease mode for those. On PostgreSQL a failed statement
//!   aborts the whole transaction: a handler that expects one to fail (a unique violation it
//!   answers with 409) must run it in a savepoint (`t.savepoint()`).
//! - [`Mode::Lease`] — **at least once**, for handlers whose effects leave the database (a
//!   payment provider, an email). The layer claims the key with a lease and a fencing token
//!   (the [`crate::inbox::Lease`] request extension), runs the handler, then records its
//!   response. While the lease is live, other requests with the key get 409. A crash between
//!   the handler's effect and that record, a handler error, or a response body that fails
//!   leaves the lease to end, after which a retry takes the key over (`took_over_from` says
//!   so) and the handler runs again: the `idempotency-layer-lease` model's story. Pass the
//!   token and the key to the external service so it can refuse a stale owner and a repeat.
//!   5xx responses are kept by default here ([`ServerErrors::Keep`]): a provider that charged
//!   and then timed out answers 502, and freeing the key would invite a second charge.
//!
//! Both modes run the handler to its end once started, even if the client goes away.
//!
//! # Statuses (the draft's)
//! - **400** when a method that requires a key has none, has several, or the key is not a
//!   valid inbox key (empty, over [`crate::dedup::MAX_KEY_LEN`] bytes, NUL, not visible ASCII);
//! - **422** when the key was used for a different request (method, path and body by default;
//!   [`IdempotencyLayer::fingerprint`] changes what counts);
//! - **409** while the first request with the key is still in flight, with `Retry-After`;
//! - **413** when the body exceeds [`IdempotencyLayer::max_body`] (it must be buffered to be
//!   fingerprinted);
//! - **503** with `Retry-After` when the store is busy or unreachable, the handler overran its
//!   timeout, or [`IdempotencyLayer::max_in_flight`] requests are already running: retry with
//!   the same key (a commit whose connection broke may have happened; the retry then replays).
//!
//! In transactional mode a handler's 5xx is not stored by default: its writes roll back, its
//! key stays free and a retry runs the handler again. This departs from the draft and Stripe,
//! which replay stored errors, 5xx included; it lets a retry succeed after a transient
//! failure, and nothing of the failed attempt was kept. [`ServerErrors::Keep`] stores and
//! replays 5xx like any other response. Other responses, 4xx included, are stored. Problem
//! responses are `application/problem+json` (RFC 9457); a 500 or 503 of the layer's own gives
//! the client a generic detail and carries the real reason in a [`ServerFault`] response
//! extension, for the service's logs.
//!
//! Keys share one space across clients. The draft suggests scoping them per client: put the
//! client's identity in what is fingerprinted ([`IdempotencyLayer::fingerprint`]) so another
//! client's reuse is a 422, not a replay of someone else's response.
//!
//! Keys are remembered for the store's [`crate::dedup::Retention`]; a retry after the window is
//! handled afresh. The layer needs a tokio runtime with timers: store calls and transactional
//! handlers run on its blocking pool.

use crate::dedup::validate_key;
use crate::inbox::{BoxError, Claim, InboxError, InboxStore, Outcome};
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

/// The request header that carries the key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header that marks a replayed response (`true`), as Stripe names it.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How the handler's effects relate to the key's record. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The handler writes through the delivery's [`Transaction`]: exactly once.
    Transactional,
    /// The handler holds a [`crate::inbox::Lease`] of this length on the key while it runs: at least once.
    Lease(Duration),
}

/// What to do with a handler's 5xx response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerErrors {
    /// Do not store it; the key stays free and a retry runs the handler again (the default in
    /// transactional mode, where the handler's writes are rolled back with it; in lease mode
    /// the lease is released).
    #[default]
    FreeKey,
    /// Store and replay it like any other response (and commit the handler's writes).
    Keep,
}

/// What the key's request is compared by: bytes built from the request's head and body, whose
/// [`crate::dedup::Fingerprint`] the inbox stores.
pub type FingerprintFn = fn(&Parts, &[u8]) -> Vec<u8>;

/// The default [`FingerprintFn`]: method, path with query, and body.
pub fn method_path_body(parts: &Parts, body: &[u8]) -> Vec<u8> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut bytes = Vec::with_capacity(parts.method.as_str().len() + path.len() + body.len() + 2);
    // Length-free separators are safe here: a method and a path cannot contain a NUL.
    bytes.extend_from_slice(parts.method.as_str().as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(path.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(body);
    bytes
}

#[derive(Clone)]
struct Config {
    mode: Mode,
    methods: Vec<Method>,
    require_key: bool,
    fingerprint: FingerprintFn,
    keep_headers: Vec<HeaderName>,
    server_errors: ServerErrors,
    max_body: usize,
    handler_timeout: Duration,
    max_in_flight: usize,
    /// One permit per request with a key being handled ([`IdempotencyLayer::max_in_flight`]).
    slots: Arc<tokio::sync::Semaphore>,
}

/// Idempotency-Key handling for a tower service, on an inbox store.
///
/// ```no_run
/// # #[cfg(feature = "sqlite")] {
/// use onepie::http::IdempotencyLayer;
/// use onepie::inbox::SqliteInbox;
/// let layer = IdempotencyLayer::transactional(SqliteInbox::open("orders.db").unwrap());
/// // axum: Router::new().route("/orders", post(create)).layer(layer)
/// # }
/// ```
pub struct IdempotencyLayer<St: InboxStore> {
    config: Arc<Config>,
    pool: Arc<Pool<St>>,
}

impl<St: InboxStore> Clone for IdempotencyLayer<St> {
    fn clone(&self) -> Self {
        IdempotencyLayer {
            config: self.config.clone(),
            pool: self.pool.clone(),
        }
    }
}

impl<St: InboxStore> fmt::Debug for IdempotencyLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("mode", &self.config.mode)
            .field("methods", &self.config.methods)
            .finish_non_exhaustive()
    }
}

impl<St: InboxStore + 'static> IdempotencyLayer<St> {
    /// Exactly once for the handler's writes through [`Transaction`]. `store` is the first
    /// handle; the layer clones more ([`InboxStore::try_clone`]), one per request in flight.
    pub fn transactional(store: St) -> Self {
        Self::new(store, Mode::Transactional)
    }

    /// At least once, with a [`crate::inbox::Lease`] of `lease` per request for handlers with external
    /// effects. Choose a lease longer than the handler can take.
    pub fn lease(store: St, lease: Duration) -> Self {
        Self::new(store, Mode::Lease(lease))
    }

    fn new(store: St, mode: Mode) -> Self {
        IdempotencyLayer {
            config: Arc::new(Config {
                mode,
                methods: vec![Method::POST, Method::PATCH],
                require_key: true,
                fingerprint: method_path_body,
                keep_headers: vec![header::CONTENT_TYPE, header::LOCATION],
                // In lease mode a 5xx may follow an external effect that happened (a provider
                // that charged, then timed out): keep the key rather than invite a repeat.
                server_errors: match mode {
                    Mode::Transactional => ServerErrors::FreeKey,
                    Mode::Lease(_) => ServerErrors::Keep,
                },
                max_body: 1 << 20,
                handler_timeout: Duration::from_secs(30),
                max_in_flight: 128,
                slots: Arc::new(tokio::sync::Semaphore::new(128)),
            }),
            pool: Arc::new(Pool {
                template: Mutex::new(Some(store)),
                idle: Mutex::new(Vec::new()),
                in_flight: Mutex::new(HashSet::new()),
            }),
        }
    }

    fn config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// The methods whose requests carry keys (default POST and PATCH); others pass through.
    pub fn methods(self, methods: impl IntoIterator<Item = Method>) -> Self {
        let methods = methods.into_iter().collect();
        self.config(|c| c.methods = methods)
    }

    /// Whether a request of those methods without a key is refused with 400 (the default) or
    /// passes through unprotected.
    pub fn require_key(self, require: bool) -> Self {
        self.config(|c| c.require_key = require)
    }

    /// What a key's request is compared by (default [`method_path_body`]).
    pub fn fingerprint(self, f: FingerprintFn) -> Self {
        self.config(|c| c.fingerprint = f)
    }

    /// The response headers stored and replayed with status and body (default
    /// `Content-Type` and `Location`).
    pub fn keep_headers(self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        let names = names.into_iter().collect();
        self.config(|c| c.keep_headers = names)
    }

    /// What to do with a handler's 5xx (default [`ServerErrors::FreeKey`] in transactional
    /// mode, [`ServerErrors::Keep`] in lease mode).
    pub fn server_errors(self, choice: ServerErrors) -> Self {
        self.config(|c| c.server_errors = choice)
    }

    /// The largest request body accepted with a key, in bytes (default 1 MiB); larger is 413.
    pub fn max_body(self, bytes: usize) -> Self {
        self.config(|c| c.max_body = bytes)
    }

    /// How long a transactional handler may hold its transaction (default 30 s). Past it the
    /// handler is dropped, its writes roll back, the key stays free and the client gets 503.
    /// (In lease mode the lease bounds the handler instead.)
    pub fn handler_timeout(self, timeout: Duration) -> Self {
        self.config(|c| c.handler_timeout = timeout)
    }

    /// How many requests with keys this layer runs at once (default 128); more get 503 with
    /// `Retry-After`. Each holds a store handle (a database connection) and, in transactional
    /// mode, a thread of tokio's blocking pool (512 threads by default) for the handler's whole
    /// run: keep it well below both, leaving room for the handlers' own blocking work. At
    /// least 1.
    pub fn max_in_flight(self, requests: usize) -> Self {
        let requests = requests.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        self.config(|c| {
            c.max_in_flight = requests;
            c.slots = Arc::new(tokio::sync::Semaphore::new(requests));
        })
    }
}

impl<St: InboxStore, Inner> tower_layer::Layer<Inner> for IdempotencyLayer<St> {
    type Service = Idempotency<St, Inner>;

    fn layer(&self, inner: Inner) -> Self::Service {
        Idempotency {
            inner,
            config: self.config.clone(),
            pool: self.pool.clone(),
        }
    }
}

/// The service [`IdempotencyLayer`] wraps around a handler.
pub struct Idempotency<St: InboxStore, Inner> {
    inner: Inner,
    config: Arc<Config>,
    pool: Arc<Pool<St>>,
}

impl<St: InboxStore, Inner: Clone> Clone for Idempotency<St, Inner> {
    fn clone(&self) -> Self {
        Idempotency {
            inner: self.inner.clone(),
            config: self.config.clone(),
            pool: self.pool.clone(),
        }
    }
}

/// The body of a request the layer hands on: the caller's, or the buffered one of a request
/// with a key.
pub type RequestBody<B> = Either<B, Full<Bytes>>;
/// The body of a response the layer returns: the handler's, or a buffered one (stored,
/// replayed, or a problem).
pub type ResponseBody<B> = Either<B, Full<Bytes>>;

type Answer<ResB, E> = Result<Response<ResponseBody<ResB>>, E>;

impl<St, Inner, ReqB, ResB> tower_service::Service<Request<ReqB>> for Idempotency<St, Inner>
where
    St: InboxStore + 'static,
    Inner: tower_service::Service<Request<RequestBody<ReqB>>, Response = Response<ResB>>
        + Clone
        + Send
        + 'static,
    Inner::Future: Send + 'static,
    Inner::Error: Send + 'static,
    ReqB: Body<Data = Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = Inner::Error;
    type Future = Pin<Box<dyn Future<Output = Answer<ResB, Inner::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The clone that was polled ready is the one to call (tower's usual dance).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (config, pool) = (self.config.clone(), self.pool.clone());
        Box::pin(handle(inner, config, pool, req))
    }
}

async fn handle<St, Inner, ReqB, ResB>(
    mut inner: Inner,
    config: Arc<Config>,
    pool: Arc<Pool<St>>,
    req: Request<ReqB>,
) -> Answer<ResB, Inner::Error>
where
    St: InboxStore + 'static,
    Inner: tower_service::Service<Request<RequestBody<ReqB>>, Response = Response<ResB>>
        + Send
        + 'static,
    Inner::Future: Send + 'static,
    Inner::Error: Send + 'static,
    ReqB: Body<Data = Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let pass = |inner: &mut Inner, req: Request<ReqB>| {
        let fut = inner.call(req.map(Either::Left));
        async move { fut.await.map(|res| res.map(Either::Left)) }
    };
    if !config.methods.contains(req.method()) {
        return pass(&mut inner, req).await;
    }
    let mut keys = req.headers().get_all(IDEMPOTENCY_KEY).iter();
    let (first, second) = (keys.next(), keys.next());
    if second.is_some() {
        return Ok(problem(
            StatusCode::BAD_REQUEST,
            "a request may carry one Idempotency-Key header, not several",
        ));
    }
    let key = match first {
        None if config.require_key => {
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                &format!("{} requests need an Idempotency-Key header", req.method()),
            ))
        }
        None => return pass(&mut inner, req).await,
        Some(value) => match parse_key(value) {
            Ok(key) => key,
            Err(why) => return Ok(problem(StatusCode::BAD_REQUEST, &why)),
        },
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, config.max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Ok(problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "a request with an Idempotency-Key may have at most {} bytes of body",
                    config.max_body
                ),
            ))
        }
        Err(e) => {
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                &format!("could not read the request body: {e}"),
            ))
        }
    };
    let payload = (config.fingerprint)(&parts, &body);
    let req = Request::from_parts(parts, Either::Right(Full::new(body)));
    let Ok(slot) = config.slots.clone().try_acquire_owned() else {
        return Ok(unavailable(&format!(
            "this server is handling {} requests with keys already; retry",
            config.max_in_flight
        )));
    };
    // Both modes run to their end once started, even if the client goes away (this future is
    // dropped): a lease left behind by a cancelled handler would make the retry wait for it
    // and then run the effect again. The transactional handler runs on a blocking thread,
    // which runs to its end anyway; the lease handler gets a task of its own. Each holds its
    // slot until it ends.
    match config.mode {
        Mode::Transactional => transactional(inner, config, pool, slot, key, payload, req).await,
        Mode::Lease(lease) => {
            let job = tokio::spawn(async move {
                let _slot = slot;
                leased(inner, config, pool, key, payload, lease, req).await
            });
            job.await
                .unwrap_or_else(|e| Ok(internal(&format!("the request's handler panicked: {e}"))))
        }
    }
}

/// A key as the inbox accepts it; header values are visible ASCII, so it is text.
fn parse_key(value: &HeaderValue) -> Result<String, String> {
    let key = value
        .to_str()
        .map_err(|_| "the Idempotency-Key must be visible ASCII".to_string())?;
    // The draft's key is a structured-field string: accept it quoted or bare.
    let key = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(key);
    validate_key(key).map_err(|e| e.to_string())?;
    Ok(key.to_string())
}

// ---------------------------------------------------------------- transactional mode

/// A request extension in [`Mode::Transactional`]: the delivery's open transaction, to write
/// the handler's effects through. They commit with the key's stored response, or not at all.
///
/// On routes or methods the layer lets pass without a key there is no transaction: extract
/// `Option<Extension<Transaction<_>>>` there.
///
/// ```
/// # #[cfg(feature = "sqlite")] {
/// use axum::{http::StatusCode, routing::post, Extension, Router};
/// use onepie::http::{IdempotencyLayer, Transaction};
/// use onepie::inbox::SqliteInbox;
///
/// async fn create(Extension(tx): Extension<Transaction<SqliteInbox>>, pie: String) -> StatusCode {
///     let written = tx.run(move |t| t.execute("INSERT INTO orders (pie) VALUES (?1)", [pie])).await;
///     match written {
///         Ok(Ok(_)) => StatusCode::CREATED,
///         // A 5xx rolls the transaction back and leaves the key free for a retry.
///         Ok(Err(_)) | Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
///     }
/// }
///
/// # let dir = tempfile::tempdir().unwrap();
/// let inbox = SqliteInbox::open(dir.path().join("orders.db")).unwrap();
/// inbox.connection().execute_batch("CREATE TABLE orders (pie TEXT)").unwrap();
/// let app: Router = Router::new()
///     .route("/orders", post(create))
///     .layer(IdempotencyLayer::transactional(inbox));
/// # }
/// ```
pub struct Transaction<St: InboxStore> {
    ops: tokio::sync::mpsc::UnboundedSender<TxFn<St>>,
}

impl<St: InboxStore> Clone for Transaction<St> {
    fn clone(&self) -> Self {
        Transaction {
            ops: self.ops.clone(),
        }
    }
}

impl<St: InboxStore> fmt::Debug for Transaction<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Transaction")
    }
}

/// The delivery's transaction has ended (the handler's response was taken, or the request was
/// abandoned): nothing more can be written through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the request's transaction has ended; write through it only while the handler runs")]
pub struct TransactionGone;

type TxFn<St> = Box<dyn FnOnce(&mut <St as InboxStore>::Tx<'_>) + Send>;

impl<St: InboxStore + 'static> Transaction<St> {
    /// Runs `f` on the delivery's transaction and returns what it returned.
    pub async fn run<R, F>(&self, f: F) -> Result<R, TransactionGone>
    where
        F: FnOnce(&mut St::Tx<'_>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let op: TxFn<St> = Box::new(move |t| {
            let _ = tx.send(f(t));
        });
        self.ops.send(op).map_err(|_| TransactionGone)?;
        rx.await.map_err(|_| TransactionGone)
    }
}

/// What the handler did inside the delivery's transaction.
enum Handled<ResB, E> {
    /// Answered; the response is stored with the key if the delivery commits.
    Answered(Response<ResponseBody<ResB>>),
    /// Answered with what is not to be kept (a 5xx under [`ServerErrors::FreeKey`], or a
    /// response body that failed): the transaction rolls back, the key stays free.
    NotKept(Response<ResponseBody<ResB>>),
    /// The handler failed with the service's error: rolled back, the error passed on.
    Failed(E),
}

async fn transactional<St, Inner, ReqB, ResB>(
    inner: Inner,
    config: Arc<Config>,
    pool: Arc<Pool<St>>,
    slot: tokio::sync::OwnedSemaphorePermit,
    key: String,
    payload: Vec<u8>,
    req: Request<RequestBody<ReqB>>,
) -> Answer<ResB, Inner::Error>
where
    St: InboxStore + 'static,
    Inner: tower_service::Service<Request<RequestBody<ReqB>>, Response = Response<ResB>>
        + Send
        + 'static,
    Inner::Future: Send + 'static,
    Inner::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    // One request per key per instance holds a transaction; a concurrent one answers 409
    // instead of tying up a connection waiting on the key's lock.
    let Some(in_flight) = InFlight::enter(&pool, &key) else {
        return Ok(in_progress(&key, Duration::from_secs(1)));
    };
    // The handler runs on the blocking thread that holds the transaction (`Handle::block_on`
    // is allowed there), so its writes reach the transaction without a thread hand-off. Once
    // started, it runs to the end even if the client goes away; only a crash cuts it short,
    // and then the transaction rolls back.
    let runtime = tokio::runtime::Handle::current();
    let job = tokio::task::spawn_blocking(move || {
        let (_in_flight, _slot) = (in_flight, slot);
        let mut store = pool.take()?;
        let mut handled = None;
        let result = store.deliver(&key, &payload, |tx| {
            handle_in::<St, _, _, _>(&runtime, inner, &config, req, tx, &mut handled)
        });
        pool.give_back(store, &result);
        Ok((result, handled))
    });
    let (result, handled) = match joined(job.await) {
        Ok(done) => done,
        Err(failure) => return Ok(refusal(&failure)),
    };
    match (result, handled) {
        (Ok(Outcome::Applied(_)), Some(Handled::Answered(fresh))) => Ok(fresh),
        // Nothing ran: a retry of a finished request, or the store's answer.
        (Ok(outcome), _) => Ok(replay(outcome.result())),
        (Err(_), Some(Handled::NotKept(fresh))) => Ok(fresh),
        (Err(_), Some(Handled::Failed(e))) => Err(e),
        // A conflict, a store fault, or a commit that failed after the handler answered:
        // nothing of the handler's is kept, so the client must retry.
        (Err(e), _) => Ok(refusal(&Failure::Store(e))),
    }
}

/// Runs the handler with the delivery's transaction `tx` as its [`Transaction`], running each
/// write it sends on `tx` as it comes; says what is to be stored with the key.
fn handle_in<St, Inner, ReqB, ResB>(
    runtime: &tokio::runtime::Handle,
    mut inner: Inner,
    config: &Config,
    mut req: Request<RequestBody<ReqB>>,
    tx: &mut St::Tx<'_>,
    handled: &mut Option<Handled<ResB, Inner::Error>>,
) -> Result<Vec<u8>, BoxError>
where
    St: InboxStore + 'static,
    Inner: tower_service::Service<Request<RequestBody<ReqB>>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    enum Next<W, R> {
        Write(W),
        Done(R),
    }
    let (ops, mut writes) = tokio::sync::mpsc::unbounded_channel::<TxFn<St>>();
    req.extensions_mut().insert(Transaction { ops });
    let mut call = std::pin::pin!(inner.call(req));
    let deadline = tokio::time::Instant::now() + config.handler_timeout;
    let too_slow = |handled: &mut Option<Handled<ResB, Inner::Error>>| {
        let why = format!(
            "the handler held its transaction longer than {:?}, so it was rolled back",
            config.handler_timeout
        );
        *handled = Some(Handled::NotKept(unavailable(&why)));
        Err(why.into())
    };
    let response = loop {
        let next = runtime.block_on(tokio::time::timeout_at(
            deadline,
            std::future::poll_fn(|cx| {
                if let Poll::Ready(Some(write)) = writes.poll_recv(cx) {
                    return Poll::Ready(Next::Write(write));
                }
                call.as_mut().poll(cx).map(Next::Done)
            }),
        ));
        match next {
            // Outside `block_on`: a store's client may block on a runtime of its own (the
            // postgres crate's does), which tokio forbids inside one.
            Ok(Next::Write(write)) => write(tx),
            Ok(Next::Done(response)) => break response,
            Err(_) => return too_slow(handled),
        }
    };
    // The answer is given: later writes fail with `TransactionGone` instead of being lost
    // after the commit, and one already queued (from a task the handler left running) means
    // the answer was given before the work was done.
    writes.close();
    if writes.try_recv().is_ok() {
        let why = "the handler answered while a write through its Transaction was still queued";
        *handled = Some(Handled::NotKept(internal(why)));
        return Err(why.into());
    }
    let response = match response {
        Ok(response) => response,
        Err(e) => {
            *handled = Some(Handled::Failed(e));
            return Err("the handler failed".into());
        }
    };
    let (head, body) = response.into_parts();
    let body = match runtime.block_on(tokio::time::timeout_at(deadline, body.collect())) {
        Err(_) => return too_slow(handled),
        Ok(body) => body,
    };
    let body = match body.map_err(Into::<BoxError>::into) {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let why = format!("the handler's response body failed: {e}");
            *handled = Some(Handled::NotKept(internal(&why)));
            return Err(why.into());
        }
    };
    let (fresh, stored) = to_store(config, head, body);
    let Some(stored) = stored else {
        let why = format!("the handler answered {}", fresh.status());
        *handled = Some(Handled::NotKept(fresh));
        return Err(why.into());
    };
    *handled = Some(Handled::Answered(fresh));
    Ok(stored)
}

/// The handler's response, and what to store with the key: `None` for a 5xx that frees it.
fn to_store<B>(
    config: &Config,
    head: http::response::Parts,
    body: Bytes,
) -> (Response<ResponseBody<B>>, Option<Vec<u8>>) {
    let fresh = Response::from_parts(head, Either::Right(Full::new(body.clone())));
    if fresh.status().is_server_error() && config.server_errors == ServerErrors::FreeKey {
        return (fresh, None);
    }
    let stored = encode(&fresh, &body, &config.keep_headers);
    (fresh, Some(stored))
}

/// Why a store call gave no answer: the store's error, or a panic on the blocking thread (in
/// the store, or in a closure the handler passed to [`Transaction::run`]).
enum Failure {
    Store(InboxError),
    Panicked(String),
}

fn joined<T>(r: Result<Result<T, InboxError>, tokio::task::JoinError>) -> Result<T, Failure> {
    match r {
        Ok(result) => result.map_err(Failure::Store),
        Err(e) => Err(Failure::Panicked(e.to_string())),
    }
}

/// Marks a key in flight on this instance for as long as it lives.
struct InFlight<St: InboxStore> {
    pool: Arc<Pool<St>>,
    key: String,
}

impl<St: InboxStore> InFlight<St> {
    fn enter(pool: &Arc<Pool<St>>, key: &str) -> Option<Self> {
        lock(&pool.in_flight)
            .insert(key.to_string())
            .then(|| InFlight {
                pool: pool.clone(),
                key: key.to_string(),
            })
    }
}

impl<St: InboxStore> Drop for InFlight<St> {
    fn drop(&mut self) {
        lock(&self.pool.in_flight).remove(&self.key);
    }
}

// ---------------------------------------------------------------- lease mode

async fn leased<St, Inner, ReqB, ResB>(
    mut inner: Inner,
    config: Arc<Config>,
    pool: Arc<Pool<St>>,
    key: String,
    payload: Vec<u8>,
    lease: Duration,
    mut req: Request<RequestBody<ReqB>>,
) -> Answer<ResB, Inner::Error>
where
    St: InboxStore + 'static,
    Inner: tower_service::Service<Request<RequestBody<ReqB>>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let claim = blocking(pool.clone(), move |store| {
        store.claim(&key, &payload, lease)
    })
    .await;
    let held = match claim {
        Ok(Claim::Duplicate(stored)) => return Ok(replay(&stored)),
        Ok(Claim::Acquired(held)) => held,
        Err(e) => return Ok(refusal(&e)),
    };
    req.extensions_mut().insert(held.clone());
    // A handler error or a broken body says nothing of whether the effect happened: the lease
    // is left to end, and the retry that takes the key over sees `took_over_from`.
    let response = inner.call(req).await?;
    let (head, body) = response.into_parts();
    let body = match body.collect().await.map_err(Into::<BoxError>::into) {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Ok(internal(&format!(
                "the handler's response body failed: {e}"
            )))
        }
    };
    let (fresh, stored) = to_store(&config, head, body);
    let Some(stored) = stored else {
        // The handler says by its 5xx that nothing happened: free the key now. A release
        // that fails leaves the lease to end.
        let _ = blocking(pool, move |s| s.release(&held)).await;
        return Ok(fresh);
    };
    // If this fails (the lease was taken over, the store is down), the handler's effect has
    // still happened, so its response is still the true answer; the next retry replays the
    // newer owner's response or runs again (at least once, as documented).
    let _ = blocking(pool, move |store| store.complete(&held, &stored)).await;
    Ok(fresh)
}

async fn blocking<St, T, F>(pool: Arc<Pool<St>>, f: F) -> Result<T, Failure>
where
    St: InboxStore + 'static,
    T: Send + 'static,
    F: FnOnce(&mut St) -> Result<T, InboxError> + Send + 'static,
{
    joined(
        tokio::task::spawn_blocking(move || {
            let mut store = pool.take()?;
            let result = f(&mut store);
            pool.give_back(store, &result);
            result
        })
        .await,
    )
}

// ---------------------------------------------------------------- store handles

/// Store handles, one per request in flight, cloned from the first on demand.
struct Pool<St: InboxStore> {
    /// Always `Some` until the pool is dropped.
    template: Mutex<Option<St>>,
    idle: Mutex<Vec<St>>,
    in_flight: Mutex<HashSet<String>>,
}

/// Idle handles kept beyond this are closed.
const MAX_IDLE: usize = 64;

impl<St: InboxStore> Pool<St> {
    fn take(&self) -> Result<St, InboxError> {
        if let Some(store) = lock(&self.idle).pop() {
            return Ok(store);
        }
        match &*lock(&self.template) {
            Some(store) => store.try_clone(),
            None => unreachable!("the pool is in use, so it is not being dropped"),
        }
    }

    fn give_back<T>(&self, store: St, result: &Result<T, InboxError>) {
        // A handle whose connection broke is not reused.
        if matches!(result, Err(InboxError::ConnectionLost { .. })) {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(store);
        }
    }
}

impl<St: InboxStore> Drop for Pool<St> {
    fn drop(&mut self) {
        // The postgres crate's synchronous client blocks on a runtime of its own when it
        // closes, which panics on an async worker thread: close handles on a thread of their
        // own when dropped inside a runtime (a server shutting down), and wait for it.
        let handles: Vec<St> = lock(&self.idle)
            .drain(..)
            .chain(lock(&self.template).take())
            .collect();
        if tokio::runtime::Handle::try_current().is_ok() && !handles.is_empty() {
            std::thread::scope(|s| {
                s.spawn(move || drop(handles));
            });
        }
    }
}

/// A poisoned lock only means another request panicked; the data (handles, keys) is intact.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------- responses

/// A stored response: `OPH1`, status, kept headers, body.
const MAGIC: &[u8; 4] = b"OPH1";

fn encode<B>(res: &Response<B>, body: &[u8], keep: &[HeaderName]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&res.status().as_u16().to_be_bytes());
    let kept: Vec<(&HeaderName, &HeaderValue)> = res
        .headers()
        .iter()
        .filter(|(name, _)| keep.contains(name))
        .collect();
    out.extend_from_slice(&(kept.len() as u32).to_be_bytes());
    for (name, value) in kept {
        for part in [name.as_str().as_bytes(), value.as_bytes()] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(body);
    out
}

fn decode(stored: &[u8]) -> Option<(StatusCode, HeaderMap, Bytes)> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
        *bytes = rest;
        Some(head)
    }
    fn len(bytes: &mut &[u8]) -> Option<usize> {
        Some(u32::from_be_bytes(take(bytes, 4)?.try_into().ok()?) as usize)
    }
    let mut rest = stored;
    if take(&mut rest, 4)? != MAGIC {
        return None;
    }
    let status = StatusCode::from_u16(u16::from_be_bytes(take(&mut rest, 2)?.try_into().ok()?));
    let mut headers = HeaderMap::new();
    for _ in 0..len(&mut rest)? {
        let n = len(&mut rest)?;
        let name = HeaderName::from_bytes(take(&mut rest, n)?).ok()?;
        let n = len(&mut rest)?;
        let value = HeaderValue::from_bytes(take(&mut rest, n)?).ok()?;
        headers.append(name, value);
    }
    Some((status.ok()?, headers, Bytes::copy_from_slice(rest)))
}

fn replay<B>(stored: &[u8]) -> Response<ResponseBody<B>> {
    let Some((status, headers, body)) = decode(stored) else {
        return internal("the key's stored result is not a response this layer wrote (is the key used by another consumer of the inbox?)");
    };
    let mut res = Response::new(Either::Right(Full::new(body)));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res.headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    res
}

/// The response for a request the store refused or could not take.
fn refusal<B>(failure: &Failure) -> Response<ResponseBody<B>> {
    let e = match failure {
        Failure::Store(e) => e,
        Failure::Panicked(why) => return internal(&format!("a store call panicked: {why}")),
    };
    match e {
        InboxError::InvalidKey(_) => problem(StatusCode::BAD_REQUEST, &e.to_string()),
        InboxError::Conflict { key, .. } => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("the Idempotency-Key {key:?} was already used for a different request; nothing was run: use a new key for a new request"),
        ),
        InboxError::InProgress {
            key, retry_after, ..
        } => in_progress(key, *retry_after),
        e if e.is_retryable() => unavailable(&e.to_string()),
        e => internal(&e.to_string()),
    }
}

/// Why the layer answered a 500 or 503 of its own, as a response extension for the service's
/// logs. Clients get a generic detail: a store's message can name files, hosts and users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFault(pub String);

/// A 503 with `Retry-After`: the store was busy or unreachable, or the layer full.
fn unavailable<B>(why: &str) -> Response<ResponseBody<B>> {
    let mut res = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server could not take the request now; retry it with the same key",
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res.extensions_mut().insert(ServerFault(why.to_string()));
    res
}

/// A 500 of the layer's own.
fn internal<B>(why: &str) -> Response<ResponseBody<B>> {
    let mut res = problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the server failed while handling the request; retry it with the same key",
    );
    res.extensions_mut().insert(ServerFault(why.to_string()));
    res
}

fn in_progress<B>(key: &str, retry_after: Duration) -> Response<ResponseBody<B>> {
    let mut res = problem(
        StatusCode::CONFLICT,
        &format!(
            "a request with the Idempotency-Key {key:?} is still being processed; retry later"
        ),
    );
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    res
}

/// An RFC 9457 problem response.
fn problem<B>(status: StatusCode, detail: &str) -> Response<ResponseBody<B>> {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "{{\"type\":\"about:blank\",\"title\":{},\"status\":{},\"detail\":{}}}",
        json_string(title),
        status.as_u16(),
        json_string(detail)
    );
    let mut res = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_response_round_trips_with_only_the_kept_headers() {
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::CREATED;
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        res.headers_mut()
            .insert(header::SET_COOKIE, HeaderValue::from_static("secret"));
        let stored = encode(&res, b"pie #1", &[header::CONTENT_TYPE]);
        let (status, headers, body) = decode(&stored).unwrap();
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain");
        assert_eq!(&body[..], b"pie #1");
        assert!(decode(b"receipt 1").is_none());
        assert!(decode(&stored[..9]).is_none());
    }

    #[test]
    fn keys_are_checked_like_the_inbox_checks_them() {
        assert_eq!(
            parse_key(&HeaderValue::from_static("order-1")).unwrap(),
            "order-1"
        );
        assert_eq!(
            parse_key(&HeaderValue::from_static("\"order-1\"")).unwrap(),
            "order-1"
        );
        assert!(parse_key(&HeaderValue::from_static("\"\""))
            .unwrap_err()
            .contains("empty"));
        let long = HeaderValue::from_str(&"k".repeat(256)).unwrap();
        assert!(parse_key(&long).unwrap_err().contains("256 bytes"));
        let binary = HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap();
        assert!(parse_key(&binary).unwrap_err().contains("visible ASCII"));
    }

    #[test]
    fn problem_details_are_json() {
        let res = problem::<()>(StatusCode::CONFLICT, "say \"hi\"\n");
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(json_string("say \"hi\"\n\\"), r#""say \"hi\"\u000a\\""#);
    }
}
