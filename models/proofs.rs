//! `proofs/`: one Markdown file per design, half written by hand (claim, fault model, argument)
//! and half generated from a fresh model check (the evidence: verdicts, states, depth, the
//! shortest counterexample story and its sequence diagram). Regenerating rewrites only the text
//! between the evidence markers, so hand-written arguments survive; a test regenerates into a
//! temporary copy and fails if anything differs, so the documents cannot go stale.

use super::check::{CheckReport, Counterexample};
use super::{designs, CheckError, CheckOptions, Design};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub const BEGIN: &str = "<!-- BEGIN GENERATED EVIDENCE: `onepie proofs --write proofs/` rewrites this part; edit above it -->";
pub const END: &str = "<!-- END GENERATED EVIDENCE -->";

/// Why the proofs could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ProofsError {
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} has a BEGIN evidence marker without an END marker; fix the file by hand")]
    BrokenMarkers { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProofsError + '_ {
    move |source| ProofsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Stateright's diagram relies on the explorer's stylesheet; a file on its own needs the
/// styles inside it (and a background, so it reads on light and dark pages alike).
fn standalone(svg: &str) -> String {
    const STYLE: &str = "<style>\
        text { font-family: monospace; font-size: 13px; }\
        .svg-actor-label { fill: #1b2a3a; font-weight: bold; }\
        .svg-actor-timeline { stroke: #9aa7b4; }\
        .svg-event-label { fill: #7a3b00; }\
        .svg-event-line { fill: #3d6a8c; stroke: #3d6a8c; stroke-width: 2; }\
        .svg-event-shape { fill: #3d6a8c; stroke: #3d6a8c; }\
        </style><rect x='-20' y='-20' width='100%' height='100%' fill='white' />";
    // Stateright writes `viewbox`; SVG is case-sensitive and only honours `viewBox`.
    let svg = svg.replacen(" viewbox=", " viewBox=", 1);
    match svg.find('>') {
        Some(i) => format!("{}{STYLE}{}\n", &svg[..=i], &svg[i + 1..]),
        None => format!("{svg}\n"),
    }
}

/// A property's name as a file-name slug: `at most one pie per order` → `at-most-one-pie-per-order`.
pub fn slug(property: &str) -> String {
    property
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Checks every design at its default size and (re)writes `dir`: one `DESIGN.md` per design,
/// its counterexample diagrams as `DESIGN.SLUG.svg`, and `README.md`'s verdict matrix.
/// Returns the files written.
pub fn write(dir: &Path) -> Result<Vec<PathBuf>, ProofsError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut written = Vec::new();
    let mut reports = Vec::new();
    for design in designs() {
        let report = design.check(&design.defaults, &CheckOptions::default())?;
        let larger = match &design.larger {
            Some(p) => Some(design.check(p, &CheckOptions::default())?),
            None => None,
        };
        for p in &report.properties {
            if let Some(Counterexample { svg: Some(svg), .. }) = &p.counterexample {
                let path = dir.join(format!("{}.{}.svg", design.name, slug(p.property)));
                std::fs::write(&path, standalone(svg)).map_err(io(&path))?;
                written.push(path);
            }
        }
        let path = dir.join(format!("{}.md", design.name));
        splice(
            &path,
            &skeleton(design),
            &evidence(design, &report, larger.as_ref()),
        )?;
        written.push(path);
        reports.push((design, report));
    }
    let path = dir.join("README.md");
    splice(&path, README_SKELETON, &matrix(&reports))?;
    written.push(path);
    Ok(written)
}

/// Replaces the evidence section of `path` (creating the file from `skeleton` if absent).
fn splice(path: &Path, skeleton: &str, evidence: &str) -> Result<(), ProofsError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => skeleton.to_string(),
        Err(e) => return Err(io(path)(e)),
    };
    let hand_written = match existing.find(BEGIN) {
        Some(i) => {
            if !existing[i..].contains(END) {
                return Err(ProofsError::BrokenMarkers {
                    path: path.to_path_buf(),
                });
            }
            existing[..i].to_string()
        }
        None => format!("{}\n\n", existing.trim_end()),
    };
    let text = format!("{hand_written}{BEGIN}\n{}\n{END}\n", evidence.trim_end());
    std::fs::write(path, text).map_err(io(path))
}

/// The hand-written part of a new design's proof, to be completed by its author.
fn skeleton(design: &Design) -> String {
    format!(
        "# {name}\n\n{summary}.\n\n## Claim\n\n(Which properties hold and which fail, in words.)\n\n\
         ## Fault model\n\n(What may go wrong, and what the bounds mean.)\n\n\
         ## Argument\n\n(Why it holds, or why no design of this shape can.)\n\n",
        name = design.name,
        summary = design.summary
    )
}

fn evidence(design: &Design, report: &CheckReport, larger: Option<&CheckReport>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Evidence\n");
    let _ = writeln!(
        s,
        "Checked with `onepie check {}`: onepie's search engine over the Stateright model, {}, \
         exhaustive, within these bounds: **{}**.\n",
        design.name,
        report.method(),
        report.bounds
    );
    let _ = writeln!(
        s,
        "{} unique states, maximum depth {}.\n",
        report.unique_states, report.max_depth
    );
    let _ = writeln!(s, "| property | kind | verdict | expected |");
    let _ = writeln!(s, "|---|---|---|---|");
    for p in &report.properties {
        let expected = design
            .expected_verdict(p.property)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "—".into());
        let _ = writeln!(
            s,
            "| {} | {} | **{}** | {} |",
            p.property, p.expectation, p.verdict, expected
        );
    }
    if let (Some(larger), Some(p)) = (larger, &design.larger) {
        let _ = writeln!(
            s,
            "\nAlso checked one size up, with `onepie check {} --orders {} --workers {} \
             --crashes {} --losses {} --stalls {}`: **{}**. {} unique states, maximum depth {}.\n",
            design.name,
            p.orders,
            p.workers,
            p.crashes,
            p.losses,
            p.stalls,
            larger.bounds,
            larger.unique_states,
            larger.max_depth
        );
        let _ = writeln!(s, "| property | verdict | expected | shortest story |");
        let _ = writeln!(s, "|---|---|---|---|");
        for p in &larger.properties {
            let expected = design
                .expected_verdict(p.property)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "—".into());
            let story = p
                .counterexample
                .as_ref()
                .map_or("—".to_string(), |cx| format!("{} steps", cx.steps.len()));
            let _ = writeln!(
                s,
                "| {} | **{}** | {expected} | {story} |",
                p.property, p.verdict
            );
        }
    }
    for p in &report.properties {
        let Some(cx) = &p.counterexample else {
            continue;
        };
        let _ = writeln!(
            s,
            "\n### Shortest counterexample to \"{}\" ({} steps)\n",
            p.property,
            cx.steps.len()
        );
        for (i, step) in cx.steps.iter().enumerate() {
            let _ = writeln!(s, "{}. {step}", i + 1);
        }
        let _ = writeln!(s, "\nOutcome, {}.\n", cx.outcome);
        if cx.svg.is_some() {
            let _ = writeln!(
                s,
                "![sequence diagram of the counterexample]({}.{}.svg)\n",
                design.name,
                slug(p.property)
            );
        }
        let _ = writeln!(
            s,
            "Step through it: `onepie explore {}`, then open \
             `http://127.0.0.1:3000/#/steps/{}`.",
            design.name, cx.explorer_path
        );
    }
    s
}

const README_SKELETON: &str = "# proofs\n\n";

fn matrix(reports: &[(&Design, CheckReport)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Verdict matrix\n");
    let _ = writeln!(
        s,
        "Generated from a fresh check of every design at its default bounds. \
         Each violation links to its proof, which tells the shortest counterexample.\n"
    );
    let Some((_, first)) = reports.first() else {
        return s;
    };
    let _ = write!(s, "| design | bounds |");
    for p in &first.properties {
        let _ = write!(s, " {} |", p.property);
    }
    let _ = writeln!(s, " states |");
    let _ = writeln!(s, "|---|---|{}---|", "---|".repeat(first.properties.len()));
    for (design, report) in reports {
        let _ = write!(s, "| [{0}]({0}.md) | {1} |", design.name, report.bounds);
        for p in &report.properties {
            let _ = write!(s, " {} |", p.verdict);
        }
        let _ = writeln!(s, " {} |", report.unique_states);
    }
    s
}
