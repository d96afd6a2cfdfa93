//! A service that depends on the inbox alone:
//!
//! ```toml
//! [dependencies]
//! onepie = { version = "0.1", default-features = false, features = ["sqlite"] }
//! ```
//!
//! It consumes an at-least-once queue (here: a list with a redelivery and a reused key),
//! writes each order to its own `orders` table in the delivery's transaction, and answers a
//! redelivery with the stored receipt instead of charging twice. Run it with
//! `cargo run --example inbox_service --no-default-features --features sqlite [FILE]`.

use onepie::inbox::{InboxError, InboxStore, SqliteInbox};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = std::env::temp_dir().join(format!("onepie-example-{}.db", std::process::id()));
    let path = std::env::args_os()
        .nth(1)
        .map_or(scratch.clone(), Into::into);
    let mut inbox = SqliteInbox::open(&path)?;
    inbox.connection().execute_batch(
        "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, pie TEXT, cents INTEGER)",
    )?;

    // What the queue hands us: order-2 twice (its ack was lost), and order-1's key reused for
    // another pie (a producer bug).
    let queue = [
        ("order-1", "apple"),
        ("order-2", "plum"),
        ("order-2", "plum"),
        ("order-1", "cherry"),
    ];
    for (key, pie) in queue {
        let outcome = inbox.deliver(key, pie.as_bytes(), |tx| {
            tx.execute(
                "INSERT INTO orders (id, pie, cents) VALUES (?1, ?2, 1250)",
                [key, pie],
            )?;
            Ok(format!("receipt {key}: {pie} pie, 12.50").into())
        });
        match outcome {
            Ok(outcome) => println!("{key} {pie:<6} -> {outcome}"),
            Err(e @ InboxError::Conflict { .. }) => println!("{key} {pie:<6} -> refused: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    let (orders, cents): (i64, i64) =
        inbox
            .connection()
            .query_row("SELECT count(*), sum(cents) FROM orders", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
    println!("{orders} orders charged, {cents} cents in total");
    drop(inbox);
    let _ = std::fs::remove_file(scratch);
    Ok(())
}
