//! `safetally synth`: deterministic, its drops are what `pseudonymise`
//! makes of its raw files, they ingest cleanly and the report finds the
//! persons it made; it prints no identity value; bad flags write nothing.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::leak::{files_under, identity_values, leaks_in_text};
use crate::util::{DropData, World};

/// A small workload: 1,500 persons, 6 NGOs, 3 months of 2024.
const SMALL: &[&str] = &[
    "synth",
    "--persons",
    "1500",
    "--orgs",
    "6",
    "--months",
    "3",
    "--from",
    "2024-01",
];

fn synth(w: &World, dir: &str, seed: &str, extra: &[&str]) -> crate::util::Run {
    let mut args = SMALL.to_vec();
    args.extend(["--seed", seed, "--key", "key", "--dir", dir]);
    args.extend(extra);
    w.run(&args)
}

fn truth(w: &World, dir: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(w.path(dir).join("truth.json")).unwrap()).unwrap()
}

/// Every file under a folder, by its path relative to it.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(dir, "")
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn same_seed_and_key_give_byte_identical_drops_and_another_seed_does_not() {
    let w = World::new();
    w.key();
    synth(&w, "a", "5", &[]).ok();
    synth(&w, "b", "5", &[]).ok();
    synth(&w, "c", "6", &[]).ok();
    let a = contents(&w.path("a/drops"));
    assert!(a.len() > 10, "drops for several NGOs and months");
    assert_eq!(a, contents(&w.path("b/drops")));
    assert_eq!(truth(&w, "a"), truth(&w, "b"));
    assert_ne!(a, contents(&w.path("c/drops")));
}

#[test]
fn drops_ingest_cleanly_and_the_report_finds_the_persons_made() {
    let w = World::new();
    w.key();
    synth(&w, "work", "11", &[]).ok();
    let t = truth(&w, "work");
    assert_eq!(t["screening_persons"], 1500);
    assert_eq!(t["respondents"], 150);
    let fp = t["key_fingerprint"].as_str().unwrap();
    w.run(&["store", "init", "store", "--fingerprint", fp]).ok();
    let ingest = w.run(&["ingest", "--store", "store", "work/drops"]);
    ingest.ok();
    let files = t["files"].as_u64().unwrap();
    assert!(
        ingest
            .stdout
            .contains(&format!("{files} offered: {files} accepted")),
        "{}",
        ingest.stdout
    );
    w.run(&[
        "report", "--store", "store", "--from", "2024-01", "--to", "2024-03", "--out", "rep",
    ])
    .ok();
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(w.path("rep/summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["screening"]["persons"], t["screening_persons"]);
    assert_eq!(s["screening"]["identified"], t["identified_persons"]);
    assert_eq!(s["screening"]["records"], t["screening_records"]);
    assert_eq!(s["self_assessment"]["respondents"], t["respondents"]);
    assert_eq!(
        s["self_assessment"]["records"],
        t["self_assessment_records"]
    );
    // Several records per person, some at several NGOs: linkage had work.
    assert!(t["screening_records"].as_u64() > t["screening_persons"].as_u64());
    let table =
        std::fs::read_to_string(w.path("rep/tables/screened_by_number_of_ngos.csv")).unwrap();
    for (ngos, n) in t["screened_by_number_of_ngos"].as_object().unwrap() {
        if n.as_u64().unwrap() >= 5 {
            assert!(
                table
                    .lines()
                    .any(|l| l.starts_with(&format!("{ngos},{n},"))),
                "{ngos}: {n} in\n{table}"
            );
        }
    }
}

#[test]
fn raw_files_pseudonymise_cleanly_into_the_same_drops_and_no_identity_is_printed() {
    let w = World::new();
    w.key();
    let raw = synth(&w, "raw", "9", &["--raw"]);
    raw.ok();
    let drops = synth(&w, "drops", "9", &[]);
    drops.ok();
    let raw_files = files_under(&w.path("raw/raw"), ".csv");
    assert_eq!(
        raw_files.len() as u64,
        truth(&w, "drops")["files"].as_u64().unwrap()
    );
    for f in &raw_files {
        let org = f.parent().unwrap().file_name().unwrap().to_str().unwrap();
        let name = f.file_stem().unwrap().to_str().unwrap();
        let (form, period) = name.rsplit_once('_').unwrap();
        let run = w.run(&[
            "pseudonymise",
            "--form",
            form,
            "--org",
            org,
            "--period",
            period,
            "--key",
            "key",
            "--out",
            "from-raw",
            f.to_str().unwrap(),
        ]);
        run.ok();
        assert!(run.stdout.contains(" 0 rejected"), "{}", run.stdout);
        // The same records, keys and metadata as synth's drop of that file
        // (but for the time it was made).
        let drop = format!("{form}_{org}_{period}.parquet");
        let ours = DropData::read(&w.path("from-raw").join(&drop));
        let synth = DropData::read(&w.path("drops/drops").join(&drop));
        assert_eq!(ours.batch, synth.batch, "{drop}");
        // The content digest covers the time too.
        let without_time = |d: &DropData| {
            let mut m = d.meta.clone();
            m.remove("safetally.created");
            m.remove(safetally::digest::DIGEST_KEY);
            m
        };
        assert_eq!(without_time(&ours), without_time(&synth), "{drop}");
    }
    // Names, birth dates and passports stay in memory and the raw files.
    let values = identity_values(&w.path("raw/raw"));
    assert!(values.len() > 1000, "the raw files hold identities");
    for run in [&raw, &drops] {
        let leaks = leaks_in_text(&format!("{}\n{}", run.stdout, run.stderr), &values);
        assert!(leaks.is_empty(), "synth printed identity values: {leaks:?}");
    }
    let leaks = leaks_in_text(
        &std::fs::read_to_string(w.path("drops/truth.json")).unwrap(),
        &values,
    );
    assert!(
        leaks.is_empty(),
        "truth.json holds identity values: {leaks:?}"
    );
}

#[test]
fn bad_flags_and_an_existing_workload_are_refused_before_anything_is_written() {
    let w = World::new();
    w.key();
    let future = w.run(&[
        "synth",
        "--persons",
        "10",
        "--from",
        "2999-01",
        "--key",
        "key",
        "--dir",
        "f",
    ]);
    assert_eq!(future.code, 2, "{}", future.stderr);
    assert!(future.stderr.contains("future"), "{}", future.stderr);
    assert!(!w.path("f").exists(), "nothing written");
    let zero = w.run(&["synth", "--persons", "0", "--key", "key", "--dir", "z"]);
    assert_eq!(zero.code, 2);
    assert!(!w.path("z").exists());
    synth(&w, "a", "1", &[]).ok();
    let before = contents(&w.path("a"));
    let drops_before = contents(&w.path("a/drops"));
    let again = synth(&w, "a", "2", &[]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(
        contents(&w.path("a")),
        before,
        "the first workload is untouched"
    );
    synth(&w, "a", "2", &["--force"]).ok();
    assert_ne!(contents(&w.path("a/drops")), drops_before, "replaced");
}
