//! Replays the fuzz corpora on the stable toolchain, as part of the normal test run: every file
//! of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through the same entry
//! function the cargo-fuzz target calls (`federator_core::fuzz`, and the hub's kubeconfig
//! parser). No input may panic (the entries also panic when an invariant of what they accepted
//! is broken), take more than a second, and each regression case must give the outcome recorded
//! for it in `REGRESSIONS`. See docs/fuzzing.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use federator_core::fuzz::{self, Outcome};

/// The kubeconfig target: the hub's parser for kubeconfigs held in memory.
fn kubeconfig(data: &[u8]) -> Outcome {
    let yaml = std::str::from_utf8(data).map_err(|_| "not UTF-8".to_owned())?;
    federator::hub::kube::parse_kubeconfig(yaml, "input")
        .map(|kc| format!("{} context(s)", kc.contexts.len()))
        .map_err(|e| e.to_string())
}

type Entry = fn(&[u8]) -> Outcome;

/// Every fuzz target (the file names in fuzz/fuzz_targets/) and its entry function.
const TARGETS: &[(&str, Entry)] = &[
    ("ca_import", fuzz::ca_import),
    ("cacerts", fuzz::cacerts),
    ("certificate", fuzz::certificate),
    ("csr", fuzz::csr),
    ("csr_policy", fuzz::csr_policy),
    ("duration", fuzz::duration),
    ("kubeconfig", kubeconfig),
    ("private_key", fuzz::private_key),
    ("spiffe_bundle", fuzz::spiffe_bundle),
    ("trust_bundle", fuzz::trust_bundle),
];

/// What a regression case must give.
enum Expect {
    /// Accepted, with a summary containing this text.
    Ok(&'static str),
    /// Refused with an error containing this text.
    Err(&'static str),
}

/// Every committed regression case (`fuzz/regressions/<target>/<name>`): what a fuzzer found,
/// the fix, and the outcome it must keep.
const REGRESSIONS: &[(&str, &str, Expect)] = &[
    // Constructed (examples/fuzz_seeds.rs): twelve CA certificates that all issue one another
    // made the CA path search exponential; it now gives up after 100 signature checks.
    (
        "cacerts",
        "cross-signed-loop",
        Expect::Err("after 100 signature checks"),
    ),
    // Constructed: a root whose P-256 key is an empty bit string made the SPIFFE bundle
    // writer panic (0 - 1); the bundle now takes the root and refuses its SPIFFE bundle.
    (
        "trust_bundle",
        "ec-root-with-empty-point",
        Expect::Ok(
            "a.local: no SPIFFE bundle (root of a.local: its ECDSA P-256 public key is not an uncompressed point (0 bytes, not 65))",
        ),
    ),
];

/// A hang guard, not a benchmark: the slowest any single input may be in a debug build on a
/// loaded machine (valid P-384 `cacerts` material takes about a second there, most inputs
/// microseconds). The fuzzers, optimised, flag inputs slower than 2 s.
const SLOW: Duration = Duration::from_secs(5);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    out.sort();
    out
}

fn entry(target: &str) -> Entry {
    TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"))
        .1
}

fn run(target: &str, path: &Path) -> Outcome {
    let data = std::fs::read(path).unwrap();
    let started = Instant::now();
    let outcome = entry(target)(&data);
    let took = started.elapsed();
    assert!(took < SLOW, "{} took {took:?}", path.display());
    outcome
}

#[test]
fn every_target_has_a_fuzz_target_and_a_seed_corpus() {
    let mut on_disk: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let listed: Vec<String> = TARGETS.iter().map(|(t, _)| (*t).to_owned()).collect();
    assert_eq!(on_disk, listed, "fuzz/fuzz_targets and TARGETS differ");
    for (t, _) in TARGETS {
        assert!(
            !files(&fuzz_dir().join("corpus").join(t)).is_empty(),
            "fuzz/corpus/{t} is empty"
        );
    }
}

#[test]
fn seed_corpora_replay_without_panics() {
    let mut accepted = 0;
    let mut total = 0;
    for (target, _) in TARGETS {
        let mut target_accepted = 0;
        for path in files(&fuzz_dir().join("corpus").join(target)) {
            total += 1;
            let got = run(target, &path);
            if got.is_ok() {
                target_accepted += 1;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            eprintln!("{target}/{name}: {got:?}");
        }
        // The seeds are valid inputs from federator's own generators (plus what the fuzzers
        // added): each target's corpus must reach past the first refusal.
        assert!(target_accepted > 0, "no seed of {target} is accepted");
        accepted += target_accepted;
    }
    eprintln!("replayed {total} corpus files, {accepted} accepted");
}

#[test]
fn regressions_keep_their_outcome() {
    let dir = fuzz_dir().join("regressions");
    let mut seen = 0;
    for (target, _) in TARGETS {
        for path in files(&dir.join(target)) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (_, _, expect) = REGRESSIONS
                .iter()
                .find(|(t, n, _)| t == target && *n == name)
                .unwrap_or_else(|| {
                    panic!("fuzz/regressions/{target}/{name} has no entry in REGRESSIONS")
                });
            let got = run(target, &path);
            match (expect, &got) {
                (Expect::Ok(want), Ok(s)) if s.contains(want) => {}
                (Expect::Err(want), Err(e)) if e.contains(want) => {}
                (Expect::Ok(want), _) => {
                    panic!("{target}/{name}: expected acceptance with {want:?}, got {got:?}")
                }
                (Expect::Err(want), _) => {
                    panic!("{target}/{name}: expected an error containing {want:?}, got {got:?}")
                }
            }
            seen += 1;
        }
    }
    assert_eq!(seen, REGRESSIONS.len(), "a case in REGRESSIONS has no file");
}
