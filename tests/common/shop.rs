//! The pie shop the HTTP tests and the HTTP bench serve: `POST /orders` bakes a pie (a row in
//! the store's pie log, written through the layer's transaction) and answers 201 with the pie's
//! number. A real server on loopback, and a real HTTP client (hyper).
#![allow(dead_code)]

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use onepie::http::{IdempotencyLayer, Transaction};
use onepie::testkit::PieLog;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the shop's handler does besides baking, set by the test.
#[derive(Debug, Default)]
pub struct Oven {
    /// How long each bake takes (so that concurrent retries overlap).
    pub bake_ms: AtomicU32,
    /// While set, the handler bakes and then answers 500 (the server's fault).
    pub broken: AtomicBool,
    /// How many times the handler ran (committed or not).
    pub runs: AtomicU32,
}

/// `POST /orders` through `layer`, `GET /menu` without a key.
pub fn app<St: PieLog + 'static>(layer: IdempotencyLayer<St>, oven: Arc<Oven>) -> Router {
    Router::new()
        .route("/orders", post(order::<St>))
        .route("/menu", get(|| async { "apple, plum, cherry" }))
        .layer(layer)
        .with_state(oven)
}

async fn order<St: PieLog + 'static>(
    State(oven): State<Arc<Oven>>,
    Extension(tx): Extension<Transaction<St>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    oven.runs.fetch_add(1, Ordering::SeqCst);
    let key = headers["idempotency-key"].to_str().unwrap().to_string();
    let bake_ms = oven.bake_ms.load(Ordering::SeqCst);
    if bake_ms > 0 {
        tokio::time::sleep(Duration::from_millis(bake_ms.into())).await;
    }
    let baked = tx.run(move |t| St::record_pie(t, &key, &body)).await;
    match baked {
        Ok(Ok(_)) if oven.broken.load(Ordering::SeqCst) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "the oven broke").into_response()
        }
        Ok(Ok(n)) => (
            StatusCode::CREATED,
            [
                ("location", format!("/pies/{n}")),
                ("x-baked-by", "oven".into()),
            ],
            format!("{{\"pie\":{n}}}"),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serves `app` on a free loopback port until the runtime ends.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A keep-alive HTTP/1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// What came back.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }
}

/// Sends `method path` with `key` (if any) and `body`.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> Result<Reply, String> {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let res = client.request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    })
}

/// `POST /orders` with `key` and `pie`.
pub async fn post_order(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    key: &str,
    pie: &str,
) -> Reply {
    send(client, addr, "POST", "/orders", Some(key), pie)
        .await
        .unwrap()
}
