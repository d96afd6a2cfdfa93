//! Model and receiver in lockstep (`onepie conform`): every distinct step the checker explores a
//! real-inbox house taking ([`crate::models::house`]) is replayed against a real store, and the
//! two must agree on the answer, the records after and the pies kept (counted by
//! [`crate::ledger`]).
//!
//! For each step the runner rebuilds the house's *before* records in the store through its
//! public API (a delivery of the payload with the record's fingerprint, at the record's time on
//! the store's [`ManualClock`]), sets the clock to the house's, performs the step (a delivery;
//! or a restart: the handle dropped and the store reopened), and compares. Each step gets keys
//! of its own (a prefix), so one store serves the whole run.

use crate::dedup::{Fingerprint, Millis, Record, Stage};
use crate::inbox::{InboxError, ManualClock, Outcome};

use crate::ledger::Ledger;
use crate::models::house::{Answer, HouseAction, HouseStep, Remembered, Told};
use crate::models::{CheckError, CheckOptions, Design, Params};
use crate::testkit::PieLog;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Instant;

/// What every replayed effect returns, and what a completed record must then hold.
pub const RESULT: &[u8] = b"pie";

/// A store a house step can be replayed against.
pub trait Target {
    /// What the store is, for the report.
    fn describe(&self) -> String;
    /// Sets the store's clock.
    fn set_now(&mut self, now: Millis);
    /// Delivers `payload` under `key`; the effect bakes one pie (in the delivery's transaction)
    /// and returns [`RESULT`]. Errors other than the inbox's answers come back as `Err`.
    fn deliver(&mut self, key: &str, payload: &[u8]) -> Result<Answer, String>;
    /// The receiver crashes and restarts: the handle is dropped and the store reopened.
    fn restart(&mut self) -> Result<(), String>;
    /// The store's records of keys starting with `prefix`, keyed without it, with their results.
    fn records(&self, prefix: &str) -> Result<BTreeMap<String, Record<Vec<u8>>>, String>;
    /// Pies baked per key starting with `prefix`, keyed without it.
    fn pies(&self, prefix: &str) -> Result<BTreeMap<String, u32>, String>;
}

/// Any inbox with a pie log, reopened by `reopen`, on a manual clock.
pub struct StoreTarget<S> {
    store: Option<S>,
    reopen: Box<dyn FnMut() -> Result<S, InboxError>>,
    clock: ManualClock,
    what: String,
}

impl<S: PieLog> StoreTarget<S> {
    /// A target that opens its store with `open` (on `clock`), now and after every restart.
    pub fn new(
        what: impl Into<String>,
        clock: ManualClock,
        mut open: impl FnMut() -> Result<S, InboxError> + 'static,
    ) -> Result<Self, InboxError> {
        Ok(StoreTarget {
            store: Some(open()?),
            reopen: Box::new(open),
            clock,
            what: what.into(),
        })
    }

    /// The open store; `Err` after a restart that could not reopen it.
    fn store(&self) -> Result<&S, String> {
        self.store
            .as_ref()
            .ok_or_else(|| "the store could not be reopened".to_string())
    }
}

/// The in-memory reference store: a restart keeps its state (it stands for a durable store).
pub fn memory() -> StoreTarget<crate::testkit::PieStore> {
    let clock = ManualClock::new(0);
    let store = crate::testkit::PieStore::with_data(Vec::new(), clock.clone());
    StoreTarget::new("memory", clock, move || Ok(store.clone())).expect("a memory store opens")
}

/// A SQLite inbox in the file `path` (created if missing).
#[cfg(feature = "sqlite")]
pub fn sqlite(
    path: &std::path::Path,
) -> Result<StoreTarget<crate::inbox::SqliteInbox>, InboxError> {
    use crate::inbox::{SqliteInbox, SqliteOptions};
    let clock = ManualClock::new(0);
    let (path, c) = (path.to_path_buf(), clock.clone());
    let what = format!("sqlite {}", path.display());
    StoreTarget::new(what, clock, move || {
        SqliteInbox::open_with(&path, SqliteOptions::default().with_clock(c.clone()))
    })
}

/// A PostgreSQL inbox at `url`.
#[cfg(feature = "postgres")]
pub fn postgres(url: &str) -> Result<StoreTarget<crate::inbox::PgInbox>, InboxError> {
    use crate::inbox::{PgInbox, PgOptions};
    let clock = ManualClock::new(0);
    let (url, c) = (url.to_string(), clock.clone());
    let first = PgInbox::open_with(&url, PgOptions::default().with_clock(c.clone()))?;
    let what = format!("postgres {}", first.store());
    let mut first = Some(first);
    StoreTarget::new(what, clock, move || match first.take() {
        Some(inbox) => Ok(inbox),
        None => PgInbox::open_with(&url, PgOptions::default().with_clock(c.clone())),
    })
}

impl<S: PieLog> Target for StoreTarget<S> {
    fn describe(&self) -> String {
        self.what.clone()
    }

    fn set_now(&mut self, now: Millis) {
        self.clock.set(now);
    }

    fn deliver(&mut self, key: &str, payload: &[u8]) -> Result<Answer, String> {
        let store = self
            .store
            .as_mut()
            .ok_or_else(|| "the store could not be reopened".to_string())?;
        match store.deliver(key, payload, |tx| {
            S::record_pie(tx, key, payload)?;
            Ok(RESULT.to_vec())
        }) {
            Ok(Outcome::Applied(_)) => Ok(Answer::Applied),
            Ok(Outcome::Duplicate(_)) => Ok(Answer::Duplicate),
            Err(InboxError::Conflict { .. }) => Ok(Answer::Conflict),
            Err(InboxError::InProgress { .. }) => Ok(Answer::InProgress),
            Err(e) => Err(e.to_string()),
        }
    }

    fn restart(&mut self) -> Result<(), String> {
        drop(self.store.take());
        self.store = Some((self.reopen)().map_err(|e| e.to_string())?);
        Ok(())
    }

    fn records(&self, prefix: &str) -> Result<BTreeMap<String, Record<Vec<u8>>>, String> {
        let entries = self.store()?.entries().map_err(|e| e.to_string())?;
        Ok(entries
            .into_iter()
            .filter_map(|e| Some((e.key.strip_prefix(prefix)?.to_string(), e.record)))
            .collect())
    }

    fn pies(&self, prefix: &str) -> Result<BTreeMap<String, u32>, String> {
        let counts = self.store()?.pie_counts().map_err(|e| e.to_string())?;
        Ok(counts
            .into_iter()
            .filter_map(|(k, n)| Some((k.strip_prefix(prefix)?.to_string(), n)))
            .collect())
    }
}

/// Where the store and the model's house parted.
#[derive(Clone, Debug, Serialize)]
pub struct Divergence {
    /// The model's step, as its story tells it.
    pub told: String,
    /// What the model's house did.
    pub model: HouseStep,
    /// What the store answered (or the error it gave).
    pub store_answer: Result<Answer, String>,
    /// The store's records after, results dropped.
    pub store_after: Remembered,
    /// Pies the store baked in the step.
    pub store_pies: u32,
    /// Each way the two differ, in words.
    pub differences: Vec<String>,
}

/// One design replayed against one store.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub design: &'static str,
    pub bounds: String,
    pub store: String,
    /// States the checker explored (classes, with symmetry reduction).
    pub states: u64,
    /// House steps the checker generated, counting repeats.
    pub steps_met: u64,
    /// Distinct house steps, each replayed once.
    pub distinct: usize,
    /// Distinct steps by the model's answer.
    pub by_answer: BTreeMap<String, usize>,
    pub divergences: Vec<Divergence>,
    pub search_seconds: f64,
    pub replay_seconds: f64,
}

/// Errors that stop a conformance run (a divergence is not one: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum ConformError {
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("`{design}` has no house that stands for the real inbox; these do: {valid}")]
    NoStoreHouse { design: String, valid: String },
    #[error("the store failed at step {step}: {message}")]
    Setup { step: usize, message: String },
}

/// The designs whose houses stand for the real inbox, at their default sizes.
pub fn designs() -> Vec<&'static Design> {
    crate::models::designs()
        .into_iter()
        .filter(|d| d.has_store_house(&d.defaults))
        .collect()
}

/// Explores `design` at `params` and replays every distinct house step against `target`.
pub fn run(
    design: &'static Design,
    params: &Params,
    opts: &CheckOptions,
    target: &mut dyn Target,
) -> Result<Report, ConformError> {
    if !design.has_store_house(params) {
        return Err(ConformError::NoStoreHouse {
            design: design.name.to_string(),
            valid: designs()
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let explored = design.house_steps(params, opts)?;
    let started = Instant::now();
    // Keys no earlier run in the same store has used.
    let run = format!(
        "{}-{}",
        design.name,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let mut divergences = Vec::new();
    let mut by_answer = BTreeMap::new();
    for (i, told) in explored.steps.iter().enumerate() {
        *by_answer.entry(told.step.answer.to_string()).or_insert(0) += 1;
        if let Some(d) = replay(target, &format!("{run}/{i}/"), i, told)? {
            divergences.push(d);
        }
    }
    Ok(Report {
        design: design.name,
        bounds: params.to_string(),
        store: target.describe(),
        states: explored.states,
        steps_met: explored.met,
        distinct: explored.steps.len(),
        by_answer,
        divergences,
        search_seconds: explored.seconds,
        replay_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The one-byte payload whose fingerprint is `fp` (the models' payloads are an order number).
fn payload_of(fp: &Fingerprint) -> Option<Vec<u8>> {
    (0..=u8::MAX)
        .map(|b| vec![b])
        .find(|p| Fingerprint::of(p) == *fp)
}

/// A record with its result left out.
fn shape(record: &Record<Vec<u8>>) -> Record<()> {
    Record {
        fingerprint: record.fingerprint,
        stage: match record.stage {
            Stage::InProgress { owner, lease_until } => Stage::InProgress { owner, lease_until },
            Stage::Completed { at, .. } => Stage::Completed { result: (), at },
        },
    }
}

/// Replays step `i` under `prefix`; `Some` if the store parted from the model.
fn replay(
    target: &mut dyn Target,
    prefix: &str,
    i: usize,
    told: &Told,
) -> Result<Option<Divergence>, ConformError> {
    let step = &told.step;
    let setup = |message: String| ConformError::Setup { step: i, message };
    // The records before, through the store's public API.
    for (key, record) in &step.before {
        let Stage::Completed { at, .. } = record.stage else {
            return Err(setup(format!(
                "{key} is claimed in the model; no house here claims"
            )));
        };
        let payload = payload_of(&record.fingerprint)
            .ok_or_else(|| setup(format!("no one-byte payload has {key}'s fingerprint")))?;
        target.set_now(at);
        match target.deliver(&format!("{prefix}{key}"), &payload) {
            Ok(Answer::Applied) => {}
            other => return Err(setup(format!("delivering {key} answered {other:?}"))),
        }
    }
    let pies_before = target.pies(prefix).map_err(setup)?;
    target.set_now(step.now);
    let answer = match &step.action {
        HouseAction::Deliver { key, payload } => target.deliver(&format!("{prefix}{key}"), payload),
        HouseAction::Restart => target.restart().map(|()| Answer::Restarted),
    };
    let records = target.records(prefix).map_err(setup)?;
    let pies_after = target.pies(prefix).map_err(setup)?;
    // The pies this step baked, counted by the ledger as every effect is.
    let mut ledger = Ledger::new();
    for (key, n) in &pies_after {
        ledger.record_effects(key.clone(), n - pies_before.get(key).copied().unwrap_or(0));
    }
    let store_pies: u32 = ledger.effects().map(|(_, n)| n).sum();
    let store_after: Remembered = records.iter().map(|(k, r)| (k.clone(), shape(r))).collect();

    let mut differences = Vec::new();
    match &answer {
        Ok(a) if *a == step.answer => {}
        Ok(a) => differences.push(format!(
            "the model's house answered {}, the store {a}",
            step.answer
        )),
        Err(e) => differences.push(format!(
            "the model's house answered {}, the store failed: {e}",
            step.answer
        )),
    }
    if store_after != step.after {
        differences.push(format!(
            "records after: the model's house has {}, the store {}",
            show(&step.after),
            show(&store_after)
        ));
    }
    for (key, r) in &records {
        if let Stage::Completed { result, .. } = &r.stage {
            if result != RESULT {
                differences.push(format!("{key}'s result is {result:?}, not the effect's"));
            }
        }
    }
    if store_pies != step.pies {
        differences.push(format!(
            "pies: the model's house kept {}, the store baked {store_pies}",
            step.pies
        ));
    }
    Ok((!differences.is_empty()).then(|| Divergence {
        told: told.told.clone(),
        model: step.clone(),
        store_answer: answer,
        store_after,
        store_pies,
        differences,
    }))
}

/// Records in words: `{order-0: completed at 0}`.
pub fn show(records: &Remembered) -> String {
    let parts: Vec<String> = records
        .iter()
        .map(|(k, r)| match r.stage {
            Stage::Completed { at, .. } => format!("{k}: completed at {at}"),
            Stage::InProgress { owner, lease_until } => {
                format!("{k}: claimed by {owner} until {lease_until}")
            }
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

impl fmt::Display for HouseActionText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            HouseAction::Deliver { key, payload } => {
                write!(f, "deliver {key} (payload {payload:?})")
            }
            HouseAction::Restart => f.write_str("crash and restart"),
        }
    }
}

/// A house action in words.
struct HouseActionText<'a>(&'a HouseAction);

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let answers: Vec<String> = self
            .by_answer
            .iter()
            .map(|(a, n)| format!("{n} {a}"))
            .collect();
        writeln!(f, "{}  {}", self.design, self.bounds)?;
        writeln!(
            f,
            "  {} states explored in {:.2} s; {} house steps met, {} distinct: {}",
            self.states,
            self.search_seconds,
            self.steps_met,
            self.distinct,
            answers.join(", ")
        )?;
        writeln!(
            f,
            "  replayed on {} in {:.2} s: {}",
            self.store,
            self.replay_seconds,
            match self.divergences.len() {
                0 => "0 divergences".to_string(),
                1 => "1 DIVERGENCE".to_string(),
                n => format!("{n} DIVERGENCES"),
            }
        )?;
        for (n, d) in self.divergences.iter().enumerate() {
            let mut text = String::new();
            let _ = writeln!(text, "  divergence {}: the model's step: {}", n + 1, d.told);
            let _ = writeln!(
                text,
                "    the house had {} and was asked to {} at clock {}",
                show(&d.model.before),
                HouseActionText(&d.model.action),
                d.model.now
            );
            let _ = writeln!(
                text,
                "    the model's house: {}, then {}, {} pie(s)",
                d.model.answer,
                show(&d.model.after),
                d.model.pies
            );
            let _ = writeln!(
                text,
                "    the store:         {}, then {}, {} pie(s)",
                match &d.store_answer {
                    Ok(a) => a.to_string(),
                    Err(e) => format!("error: {e}"),
                },
                show(&d.store_after),
                d.store_pies
            );
            for diff in &d.differences {
                let _ = writeln!(text, "    - {diff}");
            }
            f.write_str(&text)?;
        }
        Ok(())
    }
}
