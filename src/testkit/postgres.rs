//! A throw-away PostgreSQL server for tests and benchmarks: `initdb` into a fresh directory,
//! `pg_ctl start` on a free loopback port, and on drop `pg_ctl stop` and the directory removed.
//! Under 1 s to start here. It needs Debian's `postgresql` package (or `ONEPIE_PG_BIN` naming the
//! folder holding `initdb` and `pg_ctl`); when it cannot start, the error says why — tests
//! must fail on it, never skip.
//!
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (via
//! `runuser`), which the package creates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running throw-away cluster.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// Why the cluster could not start, in one line with what to do.
#[derive(Debug, thiserror::Error)]
#[error("cannot start a throw-away PostgreSQL server: {0}")]
pub struct ClusterError(String);

fn err(why: impl Into<String>) -> ClusterError {
    ClusterError(why.into())
}

/// The folder holding `initdb` and `pg_ctl`: `ONEPIE_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn bin_dir() -> Result<PathBuf, ClusterError> {
    if let Some(dir) = std::env::var_os("ONEPIE_PG_BIN") {
        return Ok(dir.into());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            err("/usr/lib/postgresql is missing: install Debian's `postgresql` package (`.ci/run` does), or set ONEPIE_PG_BIN")
        })?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        err("no /usr/lib/postgresql/*/bin/initdb: install Debian's `postgresql` package")
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

fn free_port() -> Result<u16, ClusterError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| err(format!("no free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| err(e.to_string()))?.port())
}

impl Cluster {
    /// Initializes and starts a new cluster.
    pub fn start() -> Result<Cluster, ClusterError> {
        static N: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir()?;
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!(
            "onepie-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let cluster = Cluster {
            bin,
            dir,
            port: free_port()?,
            as_postgres,
        };
        if as_postgres {
            cluster.run(
                "chown",
                &["-R", "postgres:postgres", cluster.dir.to_str().unwrap()],
                false,
            )?;
        }
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            true,
        )?;
        cluster.start_server()?;
        Ok(cluster)
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// Runs `program` (from the PostgreSQL bin folder if `pg`), as `postgres` when root.
    fn run(&self, program: &str, args: &[&str], pg: bool) -> Result<(), ClusterError> {
        let exe = if pg {
            self.bin.join(program)
        } else {
            PathBuf::from(program)
        };
        let mut cmd = if self.as_postgres && pg {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| err(format!("cannot run {}: {e}", exe.display())))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let last = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(err(format!("{program} failed ({}): {last}", out.status)));
        }
        Ok(())
    }

    fn start_server(&self) -> Result<(), ClusterError> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &opts,
            ],
            true,
        )
        .map_err(|e| err(format!("{} (server log: {log})", e.0)))
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`: a URL for [`crate::inbox::PgInbox`].
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `name` on this server.
    pub fn url_for(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`: no shutdown checkpoint,
    /// recovery from the WAL at the next start).
    pub fn crash(&self) -> Result<(), ClusterError> {
        self.run(
            "pg_ctl",
            &["stop", "-w", "-D", &self.data(), "-m", "immediate"],
            true,
        )
    }

    /// Starts the server again on the same port, after [`crash`](Self::crash).
    pub fn restart(&self) -> Result<(), ClusterError> {
        self.start_server()
    }

    /// Where the cluster lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &["stop", "-w", "-D", &self.data(), "-m", "immediate"],
            true,
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
