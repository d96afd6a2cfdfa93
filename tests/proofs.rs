//! `proofs/` cannot go stale: regenerating its evidence from fresh checks must reproduce the
//! committed files exactly, and every design must have a proof with its argument written.

use std::collections::BTreeMap;
use std::path::Path;

fn read_dir(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn proofs_match_a_fresh_check_of_every_design() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("proofs");
    let fresh = tempfile::tempdir().unwrap();
    // Start from the committed files, so the hand-written parts are there to keep.
    for (name, text) in read_dir(&committed) {
        std::fs::write(fresh.path().join(name), text).unwrap();
    }
    onepie::models::proofs::write(fresh.path()).expect("write proofs");
    let (before, after) = (read_dir(&committed), read_dir(fresh.path()));
    let stale: Vec<&String> = after
        .iter()
        .filter(|(name, text)| before.get(*name) != Some(text))
        .map(|(name, _)| name)
        .collect();
    assert!(
        stale.is_empty(),
        "proofs/ is stale ({stale:?} differ from a fresh check); \
         run `cargo run --release -- proofs --write proofs/` and commit the result"
    );
}

#[test]
fn every_design_has_a_hand_written_argument() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("proofs");
    for design in onepie::models::designs() {
        let path = dir.join(format!("{}.md", design.name));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} has no proof at {}", design.name, path.display()));
        let hand = text.split(onepie::models::proofs::BEGIN).next().unwrap();
        for section in ["## Claim", "## Fault model", "## Argument"] {
            assert!(hand.contains(section), "{}: missing {section}", design.name);
        }
        assert!(
            !hand.contains("(Why it holds, or why no design of this shape can.)"),
            "{}: the argument is still the placeholder",
            design.name
        );
    }
}
