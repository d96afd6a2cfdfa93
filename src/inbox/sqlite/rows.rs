//! The `inbox` table's rows: reading one into a [`Kept`] record and writing one back.

use super::errors::At;
use crate::dedup::{Fingerprint, Millis, Record, Stage};
use crate::inbox::step::Kept;
use crate::inbox::InboxError;
use rusqlite::types::ValueRef;
use rusqlite::{params, CachedStatement, Connection, Row};

macro_rules! select_columns {
    () => {
        "key, fingerprint, state, result, owner, lease_until,
         coalesce(created_at, completed_at), completed_at"
    };
}
const SELECT_ONE: &str = concat!("SELECT ", select_columns!(), " FROM inbox WHERE key = ?1");
pub(super) const SELECT_ALL: &str =
    concat!("SELECT ", select_columns!(), " FROM inbox ORDER BY key");
/// A fresh key, completed by a transactional delivery (`created_at` is `completed_at`).
const INSERT_COMPLETED: &str =
    "INSERT INTO inbox (key, fingerprint, state, result, completed_at) VALUES (?1, ?2, 1, ?3, ?4)";
/// A fresh key, claimed.
const INSERT_CLAIMED: &str =
    "INSERT INTO inbox (key, fingerprint, state, owner, lease_until, created_at)
    VALUES (?1, ?2, 0, ?3, ?4, ?5)";
/// Any change to an existing key: a compare-and-swap on what it held.
const REPLACE: &str = "UPDATE inbox SET fingerprint = ?2, state = ?3, result = ?4, owner = ?5,
         lease_until = ?6, created_at = ?7, completed_at = ?8
     WHERE key = ?1 AND state = ?9 AND owner IS ?10 AND completed_at IS ?11";

/// Decodes one row selected with `select_columns!`. The outer error is SQLite's, the inner
/// one a row our schema does not allow.
pub(super) fn decode(
    row: &Row<'_>,
    at: At<'_>,
) -> rusqlite::Result<Result<(String, Kept), InboxError>> {
    let key: String = row.get(0)?;
    let fingerprint = Fingerprint(row.get(1)?);
    let state: i64 = row.get(2)?;
    let stage = match state {
        0 => Stage::InProgress {
            owner: row.get::<_, i64>(4)? as u64,
            lease_until: row.get::<_, i64>(5)? as Millis,
        },
        1 => Stage::Completed {
            // Schema 1 stored results as TEXT, schema 2 as BLOB: both are bytes.
            result: match row.get_ref(3)? {
                ValueRef::Text(b) | ValueRef::Blob(b) => b.to_vec(),
                other => {
                    return Ok(Err(at.corrupt(format!(
                        "key {key:?} has a result of type {}",
                        other.data_type()
                    ))))
                }
            },
            at: row.get::<_, i64>(7)? as Millis,
        },
        other => {
            return Ok(Err(
                at.corrupt(format!("key {key:?} has unknown state {other}"))
            ))
        }
    };
    let created_at = row.get::<_, i64>(6)? as Millis;
    Ok(Ok((
        key,
        Kept {
            record: Record { fingerprint, stage },
            created_at,
        },
    )))
}

/// The two statements every delivery runs, prepared once per transaction: a batch of a
/// thousand keys then pays for the statement cache lookup once, not a thousand times.
pub(super) struct Stmts<'c> {
    conn: &'c Connection,
    select: CachedStatement<'c>,
    insert_completed: CachedStatement<'c>,
}

impl<'c> Stmts<'c> {
    pub fn new(conn: &'c Connection, at: At<'_>) -> Result<Self, InboxError> {
        Ok(Stmts {
            conn,
            select: conn.prepare_cached(SELECT_ONE).map_err(|e| at.err(e))?,
            insert_completed: conn
                .prepare_cached(INSERT_COMPLETED)
                .map_err(|e| at.err(e))?,
        })
    }

    /// What the file holds for `key`.
    pub fn load(&mut self, at: At<'_>, key: &str) -> Result<Option<Kept>, InboxError> {
        load_with(&mut self.select, at, key)
    }

    /// Writes `key`'s row. A fresh key is inserted; an existing row is replaced only if it is
    /// still exactly `prev` (compare-and-swap, never a blind overwrite). Under the write lock
    /// the swap cannot miss; if it does, something else wrote the file behind SQLite's locks.
    pub fn store(
        &mut self,
        at: At<'_>,
        key: &str,
        new: &Kept,
        prev: Option<&Record<Vec<u8>>>,
    ) -> Result<(), InboxError> {
        let (state, result, owner, lease_until, completed_at) = match &new.record.stage {
            Stage::InProgress { owner, lease_until } => (
                0,
                None,
                Some(*owner as i64),
                Some(*lease_until as i64),
                None,
            ),
            Stage::Completed { result, at } => (1, Some(result), None, None, Some(*at as i64)),
        };
        let fingerprint = &new.record.fingerprint.0;
        // NULL when it equals `completed_at`, as for every transactional delivery: 8 bytes
        // less per key.
        let created_at =
            (Some(new.created_at as i64) != completed_at).then_some(new.created_at as i64);
        let changed = match prev {
            // The hot path of every delivery: four bound values, nothing else.
            None if state == 1 => {
                self.insert_completed
                    .execute(params![key, fingerprint, result, completed_at])
            }
            None => self.conn.prepare_cached(INSERT_CLAIMED).and_then(|mut s| {
                s.execute(params![key, fingerprint, owner, lease_until, created_at])
            }),
            Some(prev) => {
                let (prev_state, prev_owner, prev_at) = match prev.stage {
                    Stage::InProgress { owner, .. } => (0, Some(owner as i64), None),
                    Stage::Completed { at, .. } => (1, None, Some(at as i64)),
                };
                self.conn.prepare_cached(REPLACE).and_then(|mut s| {
                    s.execute(params![
                        key,
                        fingerprint,
                        state,
                        result,
                        owner,
                        lease_until,
                        created_at,
                        completed_at,
                        prev_state,
                        prev_owner,
                        prev_at
                    ])
                })
            }
        }
        .map_err(|e| at.err(e))?;
        if changed != 1 {
            return Err(at.corrupt(format!(
                "key {key:?} changed while this connection held the write lock"
            )));
        }
        Ok(())
    }
}

/// What the file holds for `key`, outside any delivery (one statement prepared, not two).
pub(super) fn load(conn: &Connection, at: At<'_>, key: &str) -> Result<Option<Kept>, InboxError> {
    let mut select = conn.prepare_cached(SELECT_ONE).map_err(|e| at.err(e))?;
    load_with(&mut select, at, key)
}

fn load_with(
    select: &mut CachedStatement<'_>,
    at: At<'_>,
    key: &str,
) -> Result<Option<Kept>, InboxError> {
    let mut rows = select.query([key]).map_err(|e| at.err(e))?;
    match rows.next().map_err(|e| at.err(e))? {
        None => Ok(None),
        Some(row) => Ok(Some(decode(row, at).map_err(|e| at.err(e))??.1)),
    }
}
