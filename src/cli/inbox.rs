//! `onepie inbox ...`: deliver an order to an inbox file and show what it remembers.
//!
//! ```
//! use onepie::cli::inbox::{run_to, InboxCommand};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = dir.path().join("pies.db");
//! let deliver = || InboxCommand::Deliver {
//!     store: store.clone(),
//!     key: "order-1".into(),
//!     payload: Some("apple".into()),
//!     payload_file: None,
//! };
//! let mut out = Vec::new();
//! run_to(deliver(), &mut out).unwrap();
//! run_to(deliver(), &mut out).unwrap();
//! assert_eq!(String::from_utf8(out).unwrap(), "applied: pie #1\nduplicate: pie #1\n");
//! ```

use super::CliError;
use crate::dedup::{Millis, Stage};
use crate::inbox::{Entry, InboxError, InboxStore, PgInbox, PgOptions, SqliteInbox, SqliteOptions};
use crate::testkit::PieLog;
use serde::Serialize;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The `onepie inbox` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum InboxCommand {
    /// Deliver one order: bake its pie (record PAYLOAD in the file's `pies` table) exactly once
    /// per KEY.
    ///
    /// Creates the file if absent. Prints `applied: <result>` or `duplicate: <result>` (the
    /// stored result, nothing re-run). A reused KEY with a different PAYLOAD is refused.
    Deliver {
        /// The inbox: a SQLite file, or a PostgreSQL URL (`postgres://user@host/db`) that a
        /// fleet of receivers shares.
        #[arg(long, value_name = "FILE|URL")]
        store: PathBuf,
        /// The idempotency key: the order's unique ID (1 to 255 bytes of UTF-8).
        key: String,
        /// The order: the pie to record, any bytes.
        #[arg(required_unless_present = "payload_file")]
        payload: Option<OsString>,
        /// Read the payload from FILE instead, byte for byte (`-` for standard input): for
        /// payloads too large or too binary for an argument.
        #[arg(long, value_name = "FILE", conflicts_with = "payload")]
        payload_file: Option<PathBuf>,
    },
    /// List every remembered key once, with its state, result and times.
    Show {
        /// The inbox: a SQLite file, which must exist (only read: a file no one is writing is
        /// left exactly as it was, with nothing created beside it), or a PostgreSQL URL.
        #[arg(long, value_name = "FILE|URL")]
        store: PathBuf,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The inbox's error as the command line says it: how to make a missing inbox.
pub(super) fn explain(e: &InboxError) -> String {
    match e {
        InboxError::Missing { path } => format!(
            "{} does not exist; `onepie inbox deliver --store {}` creates an inbox",
            path.display(),
            path.display()
        ),
        e => e.to_string(),
    }
}

/// The payload of `deliver`: the argument's bytes, or a file's, or standard input's.
fn payload_bytes(payload: Option<OsString>, file: Option<&Path>) -> Result<Vec<u8>, CliError> {
    use std::os::unix::ffi::OsStringExt;
    match (payload, file) {
        (Some(arg), _) => Ok(arg.into_vec()),
        (None, Some(path)) if path == Path::new("-") => {
            let mut bytes = Vec::new();
            io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .map_err(|source| CliError::Input {
                    path: "standard input".into(),
                    source,
                })?;
            Ok(bytes)
        }
        (None, Some(path)) => std::fs::read(path).map_err(|source| CliError::Input {
            path: path.to_path_buf(),
            source,
        }),
        // clap requires one of the two.
        (None, None) => Ok(Vec::new()),
    }
}

/// `store` as a PostgreSQL URL, if it is one (the scheme in any case).
pub(super) fn postgres_url(store: &Path) -> Option<&str> {
    store.to_str().filter(|s| {
        let lower = s.to_ascii_lowercase();
        lower.starts_with("postgres://") || lower.starts_with("postgresql://")
    })
}

/// The demo effect: record the pie in the same transaction as the key; the pie's number is
/// the receipt stored as the result.
fn bake<S: PieLog>(
    inbox: &mut S,
    key: &str,
    payload: &[u8],
) -> Result<crate::inbox::Outcome, InboxError> {
    inbox.deliver(key, payload, |tx| {
        let pie = S::record_pie(tx, key, payload)?;
        Ok(format!("pie #{pie}").into())
    })
}

/// Runs `cmd`, printing to `out`.
pub fn run_to(cmd: InboxCommand, out: &mut impl Write) -> Result<(), CliError> {
    match cmd {
        InboxCommand::Deliver {
            store,
            key,
            payload,
            payload_file,
        } => {
            let payload = payload_bytes(payload, payload_file.as_deref())?;
            let outcome = match postgres_url(&store) {
                Some(url) => bake(&mut PgInbox::open(url)?, &key, &payload)?,
                None => bake(&mut SqliteInbox::open(&store)?, &key, &payload)?,
            };
            writeln!(out, "{outcome}")?;
            Ok(())
        }
        InboxCommand::Show { store, json } => {
            let entries = match postgres_url(&store) {
                Some(url) => {
                    PgInbox::open_with(url, PgOptions::default().existing_only())?.entries()?
                }
                None => SqliteInbox::open_with(&store, SqliteOptions::default().snapshot())?
                    .entries()?,
            };
            if json {
                let rows: Vec<JsonEntry<'_>> = entries.iter().map(JsonEntry::from).collect();
                serde_json::to_writer_pretty(&mut *out, &rows).map_err(io::Error::from)?;
                writeln!(out)?;
            } else {
                write_table(&entries, out)?;
            }
            Ok(())
        }
    }
}

/// One key in `show --json`.
#[derive(Serialize)]
struct JsonEntry<'a> {
    key: &'a str,
    state: &'static str,
    /// The result as text, when it is UTF-8.
    result: Option<&'a str>,
    /// The result in hex, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    result_hex: Option<String>,
    fingerprint: String,
    created_at: Millis,
    completed_at: Option<Millis>,
    owner: Option<u64>,
    lease_until: Option<Millis>,
}

impl<'a> From<&'a Entry> for JsonEntry<'a> {
    fn from(e: &'a Entry) -> Self {
        let (state, result, completed_at, owner, lease_until) = match &e.record.stage {
            Stage::Completed { result, at } => ("completed", Some(result), Some(*at), None, None),
            Stage::InProgress { owner, lease_until } => {
                ("in_progress", None, None, Some(*owner), Some(*lease_until))
            }
        };
        let text = result.and_then(|r| std::str::from_utf8(r).ok());
        let result_hex = match (result, text) {
            (Some(r), None) => Some(r.iter().map(|b| format!("{b:02x}")).collect()),
            _ => None,
        };
        JsonEntry {
            key: &e.key,
            state,
            result: text,
            result_hex,
            fingerprint: e.record.fingerprint.to_hex(),
            created_at: e.created_at,
            completed_at,
            owner,
            lease_until,
        }
    }
}

fn write_table(entries: &[Entry], out: &mut impl Write) -> io::Result<()> {
    // Escaped so a key or result with a newline or tab still takes one line.
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            let (state, result, last) = match &e.record.stage {
                Stage::Completed { result, at } => (
                    "completed".to_string(),
                    String::from_utf8_lossy(result).escape_debug().to_string(),
                    utc(*at),
                ),
                Stage::InProgress { owner, lease_until } => (
                    format!("in progress (token {owner})"),
                    "-".to_string(),
                    format!("lease until {}", utc(*lease_until)),
                ),
            };
            [
                e.key.escape_debug().to_string(),
                state,
                result,
                utc(e.created_at),
                last,
            ]
        })
        .collect();
    let header = ["KEY", "STATE", "RESULT", "CREATED", "COMPLETED"].map(String::from);
    let mut widths = [0; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    let n = entries.len();
    writeln!(out, "{n} key{}", if n == 1 { "" } else { "s" })
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC, e.g. `2026-05-01T09:30:00.250Z`.
fn utc(ms: Millis) -> String {
    let (days, rest) = (ms / 86_400_000, ms % 86_400_000);
    // Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1_000 % 60,
        rest % 1_000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::KeyError;

    fn deliver(store: &std::path::Path, key: &str, payload: &str) -> Result<String, CliError> {
        let mut out = Vec::new();
        run_to(
            InboxCommand::Deliver {
                store: store.to_path_buf(),
                key: key.into(),
                payload: Some(payload.into()),
                payload_file: None,
            },
            &mut out,
        )?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn show(store: &std::path::Path, json: bool) -> Result<String, CliError> {
        let mut out = Vec::new();
        run_to(
            InboxCommand::Show {
                store: store.to_path_buf(),
                json,
            },
            &mut out,
        )?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn deliver_creates_applies_and_deduplicates() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("pies.db");
        assert_eq!(
            deliver(&store, "order-1", "apple").unwrap(),
            "applied: pie #1\n"
        );
        assert_eq!(
            deliver(&store, "order-2", "plum").unwrap(),
            "applied: pie #2\n"
        );
        assert_eq!(
            deliver(&store, "order-1", "apple").unwrap(),
            "duplicate: pie #1\n"
        );
        let e = deliver(&store, "order-1", "cherry").unwrap_err();
        assert!(
            matches!(e, CliError::Inbox(InboxError::Conflict { .. })),
            "{e}"
        );
        let e = deliver(&store, "", "apple").unwrap_err();
        assert!(matches!(
            e,
            CliError::Inbox(InboxError::InvalidKey(KeyError::Empty))
        ));
        let e = deliver(&store, &"k".repeat(300), "apple").unwrap_err();
        assert!(matches!(
            e,
            CliError::Inbox(InboxError::InvalidKey(KeyError::TooLong { len: 300 }))
        ));
        let inbox = SqliteInbox::open(&store).unwrap();
        assert_eq!(inbox.pies().unwrap().len(), 2);
    }

    #[test]
    fn show_lists_each_key_once_as_table_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("pies.db");
        deliver(&store, "order-2", "plum").unwrap();
        deliver(&store, "order-1", "apple").unwrap();
        deliver(&store, "order-1", "apple").unwrap();
        let table = show(&store, false).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("KEY"));
        assert!(
            lines[1].starts_with("order-1  completed  pie #2"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("order-2  completed  pie #1"),
            "{table}"
        );
        assert_eq!(lines[3], "2 keys");
        let json: serde_json::Value = serde_json::from_str(&show(&store, true).unwrap()).unwrap();
        let rows = json.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["key"], "order-1");
        assert_eq!(rows[0]["state"], "completed");
        assert_eq!(rows[0]["result"], "pie #2");
        assert_eq!(rows[0]["fingerprint"].as_str().unwrap().len(), 32);
    }

    #[test]
    fn show_refuses_missing_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.db");
        assert!(matches!(
            show(&missing, false),
            Err(CliError::Inbox(InboxError::Missing { .. }))
        ));
        assert!(!missing.exists(), "show must not create the file");
        let text = dir.path().join("notes.txt");
        std::fs::write(
            &text,
            "not a database, just some notes about pies\n".repeat(20),
        )
        .unwrap();
        assert!(matches!(
            show(&text, false),
            Err(CliError::Inbox(InboxError::NotAnInbox { .. }))
        ));
        assert!(matches!(
            deliver(&text, "k", "p"),
            Err(CliError::Inbox(InboxError::NotAnInbox { .. }))
        ));
    }

    #[test]
    fn a_failing_output_is_a_typed_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("pies.db");
        let cmd = InboxCommand::Deliver {
            store: store.clone(),
            key: "order-1".into(),
            payload: Some("apple".into()),
            payload_file: None,
        };
        let e = run_to(cmd, &mut Closed).unwrap_err();
        assert!(
            matches!(&e, CliError::Io(e) if e.kind() == io::ErrorKind::BrokenPipe),
            "{e}"
        );
        // The delivery itself was recorded before the output failed: a rerun is a duplicate.
        assert_eq!(
            deliver(&store, "order-1", "apple").unwrap(),
            "duplicate: pie #1\n"
        );
    }

    #[test]
    fn utc_formats_epoch_millis() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_777_627_800_250), "2026-05-01T09:30:00.250Z");
    }
}
