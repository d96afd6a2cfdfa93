//! SQLite's error codes turned into [`InboxError`]s a user can act on, naming the file.

use crate::inbox::InboxError;
use rusqlite::ErrorCode;
use std::path::Path;
use std::time::Duration;

/// Where an error happened. Separate from `SqliteInbox` so it can be used while the
/// connection is borrowed by a transaction.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub path: &'a Path,
    pub busy_timeout: Duration,
    /// A read-only handle: a refusal to write means it could not *read* (SQLite needs to
    /// create `-shm` beside a file in WAL mode), and no delivery was attempted.
    pub reading: bool,
}

impl At<'_> {
    pub fn err(self, e: rusqlite::Error) -> InboxError {
        let path = self.path.to_path_buf();
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => InboxError::Locked {
                path,
                waited: self.busy_timeout,
            },
            Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen) if self.reading => {
                InboxError::Unreadable {
                    path,
                    why: format!("{e} (SQLite needs to create its -shm file next to a file other connections are writing; check the directory's permissions)"),
                }
            }
            Some(ErrorCode::ReadOnly) => InboxError::ReadOnly { path },
            Some(ErrorCode::NotADatabase) => InboxError::NotAnInbox {
                path,
                why: "it is not a SQLite database".into(),
            },
            Some(ErrorCode::DiskFull) => InboxError::DiskFull { path },
            Some(ErrorCode::DatabaseCorrupt) => InboxError::Corrupt {
                path,
                detail: e.to_string(),
            },
            Some(ErrorCode::CannotOpen) => InboxError::Open {
                path,
                source: e.into(),
            },
            _ => match e {
                // A row our own schema cannot decode: someone edited the file by hand.
                rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::IntegralValueOutOfRange(..) => InboxError::Corrupt {
                    path,
                    detail: format!("unreadable inbox row: {e}"),
                },
                e => InboxError::Storage {
                    path,
                    source: e.into(),
                },
            },
        }
    }

    pub fn corrupt(self, detail: impl Into<String>) -> InboxError {
        InboxError::Corrupt {
            path: self.path.to_path_buf(),
            detail: detail.into(),
        }
    }
}
