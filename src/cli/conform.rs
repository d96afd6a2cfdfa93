//! `onepie conform`: the checker's house steps replayed against a real store.

use super::{CliError, Sizes};
use crate::conform::{self, Report, Target};
use crate::models::{self, CheckOptions, Design};
use std::io::Write;

/// Runs `design` (or every design with a real-inbox house) against `store`; a divergence is an
/// error (exit 1) after the report is printed.
pub(super) fn run(
    design: Option<&str>,
    sizes: &Sizes,
    store: &str,
    json: bool,
    opts: &CheckOptions,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let designs: Vec<&'static Design> = match design {
        Some(name) => vec![models::find(name)?],
        None => conform::designs(),
    };
    // Everything checked before anything is created.
    let params: Vec<_> = designs
        .iter()
        .map(|d| sizes.apply(d, design.is_some()).map(|p| (*d, p)))
        .collect::<Result<_, _>>()?;
    for (d, p) in &params {
        if !d.has_store_house(p) {
            return Err(conform::ConformError::NoStoreHouse {
                design: d.name.to_string(),
                valid: conform::designs()
                    .iter()
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            }
            .into());
        }
    }
    // A temporary folder for a SQLite file, removed when the run ends (however it ends).
    let dir = TempDir::new()?;
    let mut target = open(store, &dir.0)?;
    let mut reports: Vec<Report> = Vec::new();
    for (d, params) in params {
        if !json {
            eprintln!("conform {} ({params}) …", d.name);
        }
        let report = conform::run(d, &params, opts, target.as_mut())?;
        if !json {
            write!(out, "{report}")?;
        }
        reports.push(report);
    }
    if json {
        serde_json::to_writer_pretty(&mut *out, &reports).map_err(std::io::Error::from)?;
        writeln!(out)?;
    }
    let diverged: usize = reports.iter().map(|r| r.divergences.len()).sum();
    if !json {
        let distinct: usize = reports.iter().map(|r| r.distinct).sum();
        writeln!(
            out,
            "{} design(s), {distinct} distinct house steps replayed, {diverged} divergence(s)",
            reports.len()
        )?;
    }
    if diverged > 0 {
        return Err(CliError::Diverged(format!(
            "{diverged} house step(s) where the store and the model disagree"
        )));
    }
    Ok(())
}

fn open(store: &str, dir: &std::path::Path) -> Result<Box<dyn Target>, CliError> {
    Ok(match store {
        "memory" => Box::new(conform::memory()),
        "sqlite" => Box::new(conform::sqlite(&dir.join("conform.db"))?),
        url if super::inbox::postgres_url(std::path::Path::new(url)).is_some() => {
            Box::new(conform::postgres(url)?)
        }
        other => return Err(CliError::BadStore(other.to_string())),
    })
}

/// A fresh folder under the system's temporary folder, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("onepie-conform-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
