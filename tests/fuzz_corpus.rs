//! Replays the fuzz targets' seed corpora and regression inputs on the
//! stable toolchain: every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` goes through the check of that target
//! (`fuzz/src/lib.rs`, the same code the cargo-fuzz targets run; see
//! `scripts/fuzz.sh` for fuzzing itself). Inputs of findings not fixed yet
//! wait in `fuzz/findings/<target>/` (replayed by the ignored test
//! `open_findings`); once fixed they move to `fuzz/regressions/`.

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn inputs(dirs: &[&str], target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a corpus directory entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_target_has_a_seed_corpus() {
    for (target, _) in checks::TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        assert!(dir.is_dir(), "no seed corpus {}", dir.display());
    }
}

/// Runs every input of `dirs` through its target's check: the files that
/// failed, and how many were run.
fn replay(dirs: &[&str], strict: bool) -> (Vec<String>, usize) {
    let mut failed = Vec::new();
    let mut replayed = 0;
    for (target, check) in checks::TARGETS {
        let check = match strict {
            true => checks::strict_check(target).expect("a target's check"),
            false => *check,
        };
        for path in inputs(dirs, target) {
            let data = std::fs::read(&path).expect("a corpus file");
            replayed += 1;
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    (failed, replayed)
}

#[test]
fn corpora_and_regressions_pass_their_checks() {
    let (failed, replayed) = replay(&["corpus", "regressions"], false);
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    assert!(replayed > 0, "no corpus files found");
    println!("{replayed} corpus files replayed");
}

/// The targets leave the open findings out (so that fuzzing goes on past
/// them).
#[test]
fn open_findings_are_left_out_of_fuzzing() {
    let (failed, _) = replay(&["findings"], false);
    assert!(failed.is_empty(), "not left out: {failed:#?}");
}

/// The findings not fixed yet (`cargo test --test fuzz_corpus -- --ignored`),
/// through the checks that do not leave them out: each fails until fixed.
#[test]
#[ignore = "open fuzzing findings, see fuzz/findings/"]
fn open_findings() {
    let (failed, replayed) = replay(&["findings"], true);
    println!("{} of {replayed} open findings still fail", failed.len());
    assert!(failed.is_empty(), "still failing: {failed:#?}");
}
