//! An HTTP service whose `POST /orders` must not bake twice when a client retries: axum, with
//! onepie's Idempotency-Key layer on a SQLite inbox. The handler writes the order into its own
//! `orders` table through the request's transaction, so the row and the key's stored response
//! commit together (exactly once).
//!
//! ```text
//! cargo run --release --example pie_shop [ADDR] [FILE]      # default 127.0.0.1:3000, pie_shop.db
//! curl -i -X POST localhost:3000/orders -H 'Idempotency-Key: order-1' -d apple
//! curl -s localhost:3000/orders                              # what was baked
//! ```
//!
//! A service depends on `onepie = { version = "0.1", default-features = false,
//! features = ["http", "sqlite"] }`, plus axum and tokio.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use onepie::http::{IdempotencyLayer, Transaction};
use onepie::inbox::SqliteInbox;
use std::sync::{Arc, Mutex};

type Tx = Transaction<SqliteInbox>;

/// Bakes one pie: a row in `orders`, in the request's transaction.
async fn bake(Extension(tx): Extension<Tx>, pie: String) -> Response {
    let pie = pie.trim().to_string();
    if pie.is_empty() {
        // Stored and replayed like any answer: the same request gets the same 400.
        return (StatusCode::BAD_REQUEST, "say which pie\n").into_response();
    }
    let row = tx
        .run(move |t| {
            t.execute("INSERT INTO orders (pie) VALUES (?1)", [&pie])?;
            Ok::<_, rusqlite::Error>((t.last_insert_rowid(), pie))
        })
        .await;
    match row {
        Ok(Ok((id, pie))) => (
            StatusCode::CREATED,
            [(header::LOCATION, format!("/orders/{id}"))],
            format!("{{\"order\":{id},\"pie\":{pie:?}}}\n"),
        )
            .into_response(),
        // A 5xx leaves the key free: the client's retry bakes afresh.
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Every order baked, one per line (read through a connection of its own).
async fn list(State(db): State<Arc<Mutex<rusqlite::Connection>>>) -> String {
    let db = db.lock().unwrap();
    let mut stmt = db
        .prepare("SELECT id, pie FROM orders ORDER BY id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok(format!(
                "{} {}\n",
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?
            ))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let file = args.next().unwrap_or_else(|| "pie_shop.db".into());
    let inbox = SqliteInbox::open(&file)?;
    inbox.connection().execute_batch(
        "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, pie TEXT NOT NULL)",
    )?;
    let reader = Arc::new(Mutex::new(rusqlite::Connection::open(&file)?));
    let app = Router::new()
        .route("/orders", post(bake).get(list))
        .layer(IdempotencyLayer::transactional(inbox))
        .with_state(reader);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "pie shop on http://{} (orders in {file})",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}
