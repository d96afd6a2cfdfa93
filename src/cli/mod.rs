//! The `onepie` command line. `main.rs` only calls [`main`].
//!
//! Everything here prints through a writer and returns [`CliError`]; [`main`] turns that into
//! one line on stderr and an exit code. Output into a closed pipe (`onepie list | head -3`)
//! ends the command quietly, as `ls` and `rg` do.

mod conform;
pub mod inbox;
mod simulate;

use crate::models::check::{self, PropertyReport, Strategy, Visited};
use crate::models::{self, CheckError, CheckOptions, CheckReport, Design, Params};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "onepie",
    version,
    about = "Which message-delivery designs really give exactly one pie per order?",
    long_about = "Model-checks delivery designs (Stateright) for \"exactly one pie per order\": \
                  at most one effect per order, none for an order never placed, and at least one \
                  per placed order once faults stop. With no command, checks every design."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Model-check one design (or all) and print the verdict table and counterexample stories.
    Check {
        /// The design to check (see `onepie list`); all designs if omitted.
        design: Option<String>,
        #[command(flatten)]
        sizes: Sizes,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: Engine,
    },
    /// List the designs, what they are, and the verdicts expected at their default size.
    List,
    /// Serve Stateright's explorer for a design, to step through it in a browser.
    Explore {
        /// The design to explore (see `onepie list`).
        design: String,
        #[command(flatten)]
        sizes: Sizes,
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: String,
    },
    /// Regenerate the evidence sections of proofs/ from fresh checks (hand-written parts are kept).
    Proofs {
        /// The proofs folder to (re)write.
        #[arg(long, value_name = "DIR")]
        write: std::path::PathBuf,
    },
    /// Replay every house step the checker explores against a real store; report divergences.
    Conform {
        /// The design (see `onepie list`); every design whose house stands for the real inbox
        /// if omitted.
        design: Option<String>,
        #[command(flatten)]
        sizes: Sizes,
        /// The store: memory, sqlite (a new file in a temporary folder), or a postgres:// URL.
        #[arg(long, default_value = "sqlite", value_name = "memory|sqlite|URL")]
        store: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: Engine,
    },
    /// Simulate designs on sampled time: how often they duplicate or lose, and what it costs.
    Simulate(simulate::SimulateArgs),
    /// Use the deduplicating inbox from the shell.
    #[command(subcommand)]
    Inbox(inbox::InboxCommand),
}

/// How the search engine runs.
#[derive(Args, Debug, Clone)]
struct Engine {
    /// Search threads [default: every core].
    #[arg(long)]
    threads: Option<usize>,
    /// Breadth-first (shortest counterexamples, all cores) or depth-first (one thread).
    #[arg(long, value_enum, default_value_t = SearchArg::Bfs)]
    search: SearchArg,
    /// Symmetry reduction over interchangeable workers (and orders, where the design has them).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    symmetry: OnOff,
    /// What the visited set keeps: 64-bit fingerprints, or whole states (for debugging).
    #[arg(long, value_enum, default_value_t = VisitedArg::Fingerprints)]
    visited: VisitedArg,
    /// Stop with an error after generating this many states.
    #[arg(long, default_value_t = 2_000_000_000)]
    max_states: u64,
    /// Stop with an error once the process holds this much memory, e.g. 4G or 500M.
    #[arg(long, value_parser = parse_bytes)]
    max_memory: Option<u64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SearchArg {
    Bfs,
    Dfs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum OnOff {
    On,
    Off,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum VisitedArg {
    Fingerprints,
    Full,
}

/// The most threads `--threads` takes: far past any core count worth having, well short of what
/// the OS refuses.
const MAX_THREADS: usize = 256;

/// `4G`, `500M`, `64K` or plain bytes.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 4G, 500M or 1000000"))?;
    let scale: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" => 1 << 10,
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        _ => return Err(format!("`{text}` is not a size like 4G, 500M or 1000000")),
    };
    n.checked_mul(scale)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("`{text}` is not a size like 4G, 500M or 1000000"))
}

impl Engine {
    fn options(&self) -> Result<CheckOptions, CheckError> {
        let threads = self.threads.unwrap_or_else(check::available_threads);
        if !(1..=MAX_THREADS).contains(&threads) {
            return Err(CheckError::OutOfRange {
                name: "threads",
                value: threads as u64,
                min: 1,
                max: MAX_THREADS as u64,
            });
        }
        Ok(CheckOptions {
            threads,
            strategy: match self.search {
                SearchArg::Bfs => Strategy::Bfs,
                SearchArg::Dfs => Strategy::Dfs,
            },
            symmetry: self.symmetry == OnOff::On,
            visited: match self.visited {
                VisitedArg::Fingerprints => Visited::Fingerprints,
                VisitedArg::Full => Visited::FullStates,
            },
            max_states: self.max_states,
            max_memory: self.max_memory,
            progress: true,
        })
    }
}

/// Sizes and fault budget; each defaults to the design's own default.
#[derive(Args, Debug, Clone, Copy)]
struct Sizes {
    /// Orders placed (1–4).
    #[arg(long)]
    orders: Option<u8>,
    /// Workers (1–4).
    #[arg(long)]
    workers: Option<u8>,
    /// Crashes allowed in a run (0–3).
    #[arg(long)]
    crashes: Option<u8>,
    /// Messages the network may lose in a run (0–3).
    #[arg(long)]
    losses: Option<u8>,
    /// Stalls (timeouts firing while work is under way) in a run (0–3).
    #[arg(long)]
    stalls: Option<u8>,
    /// Clock drift bound in percent, 0–100 (100: a clock may stop); designs with clocks only.
    #[arg(long)]
    drift: Option<u8>,
    /// Ticks the queue waits beyond the lease before redelivering (0–8); deadline designs only.
    #[arg(long)]
    margin: Option<u8>,
    /// Ticks the house remembers an order ID (0–4); the dedup-window design only.
    #[arg(long)]
    window: Option<u8>,
}

impl Sizes {
    /// The design's defaults with these sizes applied. `strict`: a flag the design has no use
    /// for (say `--window` for a design without a dedup window) is an error rather than ignored;
    /// checking every design at once applies such a flag to the designs that have it.
    fn apply(&self, design: &Design, strict: bool) -> Result<Params, CheckError> {
        let defaults = design.defaults;
        for (flag, given, has) in [
            ("drift", self.drift.is_some(), defaults.drift.is_some()),
            ("margin", self.margin.is_some(), defaults.margin.is_some()),
            ("window", self.window.is_some(), defaults.window.is_some()),
        ] {
            if strict && given && !has {
                return Err(CheckError::DoesNotApply {
                    flag,
                    design: design.name,
                    applies_to: models::designs_with(flag).join(", "),
                });
            }
        }
        let p = Params {
            orders: self.orders.unwrap_or(defaults.orders),
            workers: self.workers.unwrap_or(defaults.workers),
            crashes: self.crashes.unwrap_or(defaults.crashes),
            losses: self.losses.unwrap_or(defaults.losses),
            stalls: self.stalls.unwrap_or(defaults.stalls),
            drift: defaults.drift.map(|d| self.drift.unwrap_or(d)),
            margin: defaults.margin.map(|m| self.margin.unwrap_or(m)),
            window: defaults.window.map(|w| self.window.unwrap_or(w)),
        };
        p.validate()?;
        Ok(p)
    }
}

/// Tells mimalloc (the binary's and the benches' allocator) to keep freed memory rather than
/// hand it back to the OS after its purge delay: each search level frees the last level's frontier and
/// allocates the next one's, and re-faulting those pages (the kernel zeroing them) was 7% of a
/// 3×3 check in `perf` (4–5 K purges; 0 with this). Peak memory is about 4% higher. Call
/// before any heavy work.
pub fn keep_freed_memory() {
    // `mi_option_purge_delay` in mimalloc's option enum (index 15 in both v2's and v3's
    // mimalloc.h); -1 means never purge.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting an option is a plain store mimalloc reads on its next purge decision.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            eprintln!("onepie: {}", one_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        None => check(
            None,
            Sizes::none(),
            false,
            CheckOptions {
                progress: true,
                ..CheckOptions::default()
            },
        ),
        Some(Command::Check {
            design,
            sizes,
            json,
            engine,
        }) => engine
            .options()
            .map_err(CliError::from)
            .and_then(|opts| check(design.as_deref(), sizes, json, opts)),
        Some(Command::List) => list(&mut std::io::stdout().lock()).map_err(CliError::from),
        Some(Command::Explore {
            design,
            sizes,
            addr,
        }) => explore(&design, sizes, &addr),
        Some(Command::Proofs { write }) => crate::models::proofs::write(&write)
            .map_err(CliError::from)
            .and_then(|files| {
                let mut out = std::io::stdout().lock();
                writeln!(out, "wrote {} files in {}", files.len(), write.display())
                    .map_err(CliError::from)
            }),
        Some(Command::Conform {
            design,
            sizes,
            store,
            json,
            engine,
        }) => engine.options().map_err(CliError::from).and_then(|opts| {
            conform::run(
                design.as_deref(),
                &sizes,
                &store,
                json,
                &opts,
                &mut std::io::stdout().lock(),
            )
        }),
        Some(Command::Simulate(args)) => simulate::run(args, &mut std::io::stdout().lock()),
        Some(Command::Inbox(cmd)) => inbox::run_to(cmd, &mut std::io::stdout().lock()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): nothing more to say, and nothing went wrong.
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onepie: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Clap's error in one line: its first line without the `error:` prefix, and the valid values
/// if it lists them.
fn one_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines
        .next()
        .unwrap_or("bad arguments")
        .trim_start_matches("error:")
        .trim();
    // "…were not provided:" lists the arguments on the lines after it, before "Usage:".
    if first.ends_with(':') {
        let missing: Vec<&str> = lines.take_while(|l| !l.starts_with("Usage:")).collect();
        return format!("{first} {} (see --help)", missing.join(", "));
    }
    let tip = lines.find(|l| l.starts_with("[possible values:") || l.starts_with("tip:"));
    match tip {
        Some(tip) => format!("{first} {tip} (see --help)"),
        None => format!("{first} (see --help)"),
    }
}

impl Sizes {
    fn none() -> Self {
        Sizes {
            orders: None,
            workers: None,
            crashes: None,
            losses: None,
            stalls: None,
            drift: None,
            margin: None,
            window: None,
        }
    }
}

/// Errors of the command line itself.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("`{addr}` is not an address like 127.0.0.1:3000: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error(
        "cannot serve on {addr}: {reason} (is another explorer running? try --addr 127.0.0.1:3001)"
    )]
    AddressUnavailable { addr: SocketAddr, reason: String },
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Proofs(#[from] crate::models::proofs::ProofsError),
    #[error("{}", inbox::explain(.0))]
    Inbox(#[from] crate::inbox::InboxError),
    #[error(transparent)]
    Conform(#[from] crate::conform::ConformError),
    #[error("{0}")]
    Diverged(String),
    #[error("`{0}` is not a store: use memory, sqlite or a postgres:// URL")]
    BadStore(String),
    #[error("cannot draw the chart {}: {reason}", path.display())]
    Chart {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Input {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// 75 (`EX_TEMPFAIL`) for inbox errors worth retrying, 1 otherwise (2, bad usage, is
    /// decided before any command runs).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Inbox(e) if e.is_retryable() => 75,
            _ => 1,
        }
    }
}

fn check(
    design: Option<&str>,
    sizes: Sizes,
    json: bool,
    opts: CheckOptions,
) -> Result<(), CliError> {
    let designs: Vec<&Design> = match design {
        Some(name) => vec![models::find(name)?],
        None => models::designs(),
    };
    let mut reports = Vec::new();
    for d in &designs {
        let params = sizes.apply(d, design.is_some())?;
        if !json {
            eprintln!("checking {} ({params}) …", d.name);
        }
        reports.push((d, d.check(&params, &opts)?));
    }
    let mut out = std::io::stdout().lock();
    if json {
        let all: Vec<&CheckReport> = reports.iter().map(|(_, r)| r).collect();
        serde_json::to_writer_pretty(&mut out, &all).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &reports)?;
    }
    Ok(())
}

/// The verdict table, then one story per violation.
pub fn write_table(
    out: &mut impl Write,
    reports: &[(&&Design, CheckReport)],
) -> std::io::Result<()> {
    let dw = reports
        .iter()
        .map(|(_, r)| r.design.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let pw = reports
        .iter()
        .flat_map(|(_, r)| r.properties.iter().map(|p| label(p).len()))
        .max()
        .unwrap_or(0)
        .max(8);
    writeln!(
        out,
        "{:<dw$}  {:<pw$}  {:<8}  {:>9}  {:>5}  {:>7}",
        "design", "property", "verdict", "states", "depth", "seconds"
    )?;
    writeln!(out, "{}", "-".repeat(dw + pw + 8 + 9 + 5 + 7 + 10))?;
    for (design, report) in reports {
        for (i, p) in report.properties.iter().enumerate() {
            let surprise = match design.expected_verdict(p.property) {
                Some(v) if v != p.verdict => format!("  (expected {v}!)"),
                _ => String::new(),
            };
            let (states, depth, secs) = if i == 0 {
                (
                    report.unique_states.to_string(),
                    report.max_depth.to_string(),
                    format!("{:.2}", report.seconds),
                )
            } else {
                Default::default()
            };
            let line = format!(
                "{:<dw$}  {:<pw$}  {:<8}  {:>9}  {:>5}  {:>7}{surprise}",
                if i == 0 { report.design } else { "" },
                label(p),
                p.verdict.to_string(),
                states,
                depth,
                secs
            );
            writeln!(out, "{}", line.trim_end())?;
        }
    }
    writeln!(out)?;
    // State counts under a reduction are classes, not states: say so only when one was used.
    let reduced = if reports.iter().any(|(_, r)| r.reduction != "none") {
        " (with symmetry reduction, a design's states count one per class of interchangeable \
         workers or orders)"
    } else {
        ""
    };
    writeln!(out, "Checked exhaustively within these bounds{reduced}:")?;
    for (_, report) in reports {
        writeln!(
            out,
            "  {:<w$}  {} [{}]",
            report.design,
            report.bounds,
            report.method(),
            w = dw
        )?;
    }
    for (_, report) in reports {
        for p in &report.properties {
            if let Some(cx) = &p.counterexample {
                writeln!(out)?;
                writeln!(
                    out,
                    "{}: \"{}\" is violated. Shortest counterexample ({} steps):",
                    report.design,
                    p.property,
                    cx.steps.len()
                )?;
                for (i, step) in cx.steps.iter().enumerate() {
                    writeln!(out, "  {:>2}. {step}", i + 1)?;
                }
                writeln!(out, "  Outcome, {}.", cx.outcome)?;
            }
        }
    }
    Ok(())
}

fn label(p: &PropertyReport) -> String {
    if p.expectation == "sometimes" {
        p.property.to_string()
    } else {
        format!("always: {}", p.property)
    }
}

fn list(out: &mut impl Write) -> std::io::Result<()> {
    for d in models::designs() {
        writeln!(out, "{:<24} {}", d.name, d.summary)?;
        let violated: Vec<&str> = d
            .expected
            .iter()
            .filter(|(_, v)| *v == models::Verdict::Violated)
            .map(|(p, _)| *p)
            .collect();
        let expected = if violated.is_empty() {
            "every property holds".to_string()
        } else {
            format!("violated: {}; the rest hold", violated.join("; "))
        };
        writeln!(out, "{:<24} expected {expected} (at {})", "", d.defaults)?;
    }
    Ok(())
}

fn explore(design: &str, sizes: Sizes, addr: &str) -> Result<(), CliError> {
    let d = models::find(design)?;
    let params = sizes.apply(d, true)?;
    let addr: SocketAddr =
        addr.parse()
            .map_err(|e: std::net::AddrParseError| CliError::BadAddress {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
    // Stateright panics when the port is taken, so find out first.
    drop(
        TcpListener::bind(addr).map_err(|e| CliError::AddressUnavailable {
            addr,
            reason: e.to_string(),
        })?,
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: {}", d.name, d.summary)?;
    writeln!(out, "Sizes: {params}")?;
    writeln!(out, "Open http://{addr}/ in a browser (Ctrl-C to stop).")?;
    // The explorer cannot jump to a counterexample by itself, so find them and print links.
    let report = d.check(&params, &CheckOptions::default())?;
    for p in &report.properties {
        if let Some(cx) = &p.counterexample {
            writeln!(
                out,
                "Shortest counterexample to \"{}\" ({} steps): http://{addr}/#/steps/{}",
                p.property,
                cx.steps.len(),
                cx.explorer_path
            )?;
        }
    }
    out.flush()?;
    drop(out);
    d.explore(&params, addr);
    Ok(())
}
