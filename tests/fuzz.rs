//! What fuzzing found, kept: every input under `tests/fuzz/TARGET/` is run
//! through the fuzz target's entry point (`safetally::fuzz`), which must
//! return for it. Crashing inputs found by `scripts/fuzz.sh` go there
//! (docs/fuzzing.md); the fuzz runs start from them too.

use std::path::Path;

type Entry = fn(&[u8]);

const TARGETS: [(&str, Entry); 5] = [
    ("drop", safetally::fuzz::drop),
    ("raw_csv", safetally::fuzz::raw_csv),
    ("raw_xlsx", safetally::fuzz::raw_xlsx),
    ("ledger", safetally::fuzz::ledger),
    ("config", safetally::fuzz::config),
];

#[test]
fn every_input_fuzzing_kept_is_read_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    for (target, entry) in TARGETS {
        let dir = root.join(target);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{target}: no inputs kept");
        for input in inputs {
            let bytes = std::fs::read(&input).unwrap();
            let r = std::panic::catch_unwind(|| entry(&bytes));
            assert!(r.is_ok(), "{target}: {} panics", input.display());
        }
    }
}
