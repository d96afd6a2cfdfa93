//! What onepie's property tests use, for crates that test their own receivers too (cargo
//! feature `testkit`; nothing here is needed to run an inbox):
//!
//! - [`harness`]: runs schedules of deliveries and faults against a receiver, and judges what
//!   happened with [`crate::ledger`];
//! - [`PieLog`]: the harness's effect, one pie per applied delivery, written in the delivery's
//!   own transaction — a `pies` table of its own in SQLite, the store's data in memory
//!   ([`PieStore`]). The inbox never creates it; the first pie does.

pub mod harness;
#[cfg(feature = "postgres")]
pub mod postgres;

use crate::dedup::Millis;
use crate::inbox::{BoxError, InboxError, InboxStore, MemoryStore, MemoryTx};
use serde::Serialize;
use std::collections::BTreeMap;

/// One pie: the evidence the property tests count, one per order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Pie {
    /// Position in the pie log, from 1.
    pub number: u64,
    pub key: String,
    pub pie: Vec<u8>,
    pub at: Millis,
}

/// A store that can keep a pie log in its deliveries' transactions.
pub trait PieLog: InboxStore {
    /// Records one pie for `key` in the delivery's transaction (it commits with the key, or
    /// not at all); returns its number in the log.
    fn record_pie(tx: &mut Self::Tx<'_>, key: &str, pie: &[u8]) -> Result<u64, BoxError>;

    /// Every pie recorded, in order.
    fn pies(&self) -> Result<Vec<Pie>, InboxError>;

    /// How many pies each key has (what [`crate::ledger::Ledger::record_effects`] takes).
    fn pie_counts(&self) -> Result<BTreeMap<String, u32>, InboxError> {
        let mut counts = BTreeMap::new();
        for pie in self.pies()? {
            *counts.entry(pie.key).or_insert(0) += 1;
        }
        Ok(counts)
    }
}

/// An in-memory store whose data is a pie log.
pub type PieStore = MemoryStore<Vec<Pie>>;

impl PieLog for PieStore {
    fn record_pie(tx: &mut MemoryTx<'_, Vec<Pie>>, key: &str, pie: &[u8]) -> Result<u64, BoxError> {
        let pie = Pie {
            number: (tx.data().len() + tx.staged() + 1) as u64,
            key: key.to_owned(),
            pie: pie.to_vec(),
            at: tx.now(),
        };
        let number = pie.number;
        tx.on_commit(move |pies| pies.push(pie));
        Ok(number)
    }

    fn pies(&self) -> Result<Vec<Pie>, InboxError> {
        Ok(self.read(Clone::clone))
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::{Pie, PieLog};
    use crate::dedup::Millis;
    use crate::inbox::{BoxError, InboxError, SqliteInbox, SqliteTx};
    use rusqlite::types::ValueRef;

    /// Compatible with the `pies` table onepie 0.1 created in every inbox.
    const PIES: &str = "CREATE TABLE IF NOT EXISTS pies (
        number INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        pie BLOB NOT NULL,
        at INTEGER NOT NULL
    )";

    impl PieLog for SqliteInbox {
        fn record_pie(tx: &mut SqliteTx<'_>, key: &str, pie: &[u8]) -> Result<u64, BoxError> {
            tx.execute_batch(PIES)?;
            tx.prepare_cached("INSERT INTO pies (key, pie, at) VALUES (?1, ?2, ?3)")?
                .execute(rusqlite::params![key, pie, tx.now() as i64])?;
            Ok(tx.last_insert_rowid() as u64)
        }

        fn pies(&self) -> Result<Vec<Pie>, InboxError> {
            let storage = |e: rusqlite::Error| InboxError::Storage {
                path: self.path().to_path_buf(),
                source: e.into(),
            };
            let conn = self.connection();
            let exists: bool = conn
                .query_row(
                    "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'pies'",
                    [],
                    |r| r.get(0),
                )
                .map_err(storage)?;
            if !exists {
                return Ok(Vec::new());
            }
            let mut stmt = conn
                .prepare("SELECT number, key, pie, at FROM pies ORDER BY number")
                .map_err(storage)?;
            let pies = stmt
                .query_map([], |r| {
                    let pie = match r.get_ref(2)? {
                        ValueRef::Text(b) | ValueRef::Blob(b) => b.to_vec(),
                        _ => Vec::new(),
                    };
                    Ok(Pie {
                        number: r.get::<_, i64>(0)? as u64,
                        key: r.get(1)?,
                        pie,
                        at: r.get::<_, i64>(3)? as Millis,
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(storage)?;
            Ok(pies)
        }
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use super::{Pie, PieLog};
    use crate::dedup::Millis;
    use crate::inbox::{BoxError, InboxError, PgInbox, PgTx};

    impl PieLog for PgInbox {
        fn record_pie(tx: &mut PgTx<'_>, key: &str, pie: &[u8]) -> Result<u64, BoxError> {
            let now = tx.now() as i64;
            let exists: bool = tx
                .query_one("SELECT to_regclass('pies') IS NOT NULL", &[])?
                .get(0);
            if !exists {
                // Concurrent first pies would race to create the table: one at a time.
                tx.batch_execute(
                    "SELECT pg_advisory_xact_lock(7070);
                     CREATE TABLE IF NOT EXISTS pies (
                         number BIGSERIAL PRIMARY KEY, key TEXT NOT NULL, pie BYTEA NOT NULL,
                         at BIGINT NOT NULL)",
                )?;
            }
            let row = tx.query_one(
                "INSERT INTO pies (key, pie, at) VALUES ($1, $2, $3) RETURNING number",
                &[&key, &pie, &now],
            )?;
            Ok(row.get::<_, i64>(0) as u64)
        }

        fn pies(&self) -> Result<Vec<Pie>, InboxError> {
            let storage = |e: postgres::Error| InboxError::Storage {
                path: self.store().into(),
                source: e.into(),
            };
            self.with_client(|c| {
                let exists: bool = c
                    .query_one("SELECT to_regclass('pies') IS NOT NULL", &[])
                    .map_err(storage)?
                    .get(0);
                if !exists {
                    return Ok(Vec::new());
                }
                let rows = c
                    .query("SELECT number, key, pie, at FROM pies ORDER BY number", &[])
                    .map_err(storage)?;
                Ok(rows
                    .iter()
                    .map(|r| Pie {
                        number: r.get::<_, i64>(0) as u64,
                        key: r.get(1),
                        pie: r.get(2),
                        at: r.get::<_, i64>(3) as Millis,
                    })
                    .collect())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::ManualClock;

    #[test]
    fn the_memory_pie_log_commits_with_the_key() {
        let mut store = PieStore::with_data(Vec::new(), ManualClock::new(7));
        let bake = |tx: &mut MemoryTx<'_, Vec<Pie>>| -> Result<Vec<u8>, BoxError> {
            Ok(format!("pie #{}", PieStore::record_pie(tx, "o1", b"apple")?).into())
        };
        assert_eq!(
            store.deliver("o1", b"apple", bake).unwrap().result(),
            b"pie #1"
        );
        assert!(!store.deliver("o1", b"apple", bake).unwrap().is_applied());
        let failed = store.deliver("o2", b"plum", |tx| {
            PieStore::record_pie(tx, "o2", b"plum")?;
            Err("oven broke".into())
        });
        assert!(failed.is_err());
        assert_eq!(
            store.pie_counts().unwrap(),
            BTreeMap::from([("o1".into(), 1)])
        );
        assert_eq!(store.pies().unwrap()[0].at, 7);
    }
}
