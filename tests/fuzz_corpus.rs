//! Replays the committed fuzz corpus (`fuzz/corpus/check_body`) and any crash the fuzzer left
//! (`fuzz/artifacts/`) through `check_body` with the fuzz target's invariants, in plain
//! `cargo test`: no fuzzer, no nightly. A crash found by `scripts/fuzz` fails here until it is
//! fixed; then move the artifact into the corpus, so it stays covered.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/invariants.rs"]
mod invariants;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");

/// Every regular file under `dir`, recursively, sorted; none if `dir` does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.is_file() && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn replay(paths: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for path in paths {
        let body = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| invariants::check(&body))) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!(
                "{}: {msg}\n  body: {:?}",
                path.display(),
                body.escape_ascii().to_string()
            ));
        }
    }
    failures
}

#[test]
fn the_committed_corpus_holds_the_invariants() {
    let corpus = files(&Path::new(FUZZ_DIR).join("corpus/check_body"));
    assert!(
        !corpus.is_empty(),
        "no files in {FUZZ_DIR}/corpus/check_body: the corpus is committed with the fuzz target"
    );
    let failures = replay(&corpus);
    assert!(
        failures.is_empty(),
        "{} of {} corpus files fail:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

#[test]
fn fuzz_artifacts_hold_the_invariants() {
    let artifacts = files(&Path::new(FUZZ_DIR).join("artifacts"));
    let failures = replay(&artifacts);
    assert!(
        failures.is_empty(),
        "{} of {} fuzz artifacts fail (crashes found by scripts/fuzz; fix them, then move them into \
         fuzz/corpus/check_body):\n{}",
        failures.len(),
        artifacts.len(),
        failures.join("\n")
    );
}
