//! The store under faults: `ingest` killed with SIGKILL at random moments,
//! and two ingests into one store at once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::Digest;

use crate::util::{Fleet, ledger, tree};

/// Screening drops for `orgs` NGOs and four months, two rows each.
fn many_drops(f: &Fleet, orgs: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for o in 1..=orgs {
        for month in ["2018-01", "2018-02", "2018-03", "2018-04"] {
            out.push(f.drop(&format!("NGO{o:02}"), month, 2, "many"));
        }
    }
    out
}

fn sha(p: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// Complete ledger lines (a line cut short by the kill is not counted).
fn complete_lines(store: &Path) -> usize {
    std::fs::read(store.join("ledger.jsonl"))
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn files_in(dir: &Path) -> usize {
    tree(dir).len()
}

#[test]
fn ingest_killed_at_random_moments_leaves_a_store_that_verifies_and_a_rerun_completes() {
    let f = Fleet::new();
    let drops = many_drops(&f, 25);
    let n = drops.len();
    let args = |store: &str| {
        let mut a = vec!["ingest".to_string(), "--store".into(), store.into()];
        a.extend(drops.iter().map(|p| p.to_str().unwrap().to_string()));
        a
    };
    // How long a whole ingest takes here, to spread the kills over it.
    f.w.run(&["store", "init", "calibrate"]).ok();
    let t0 = Instant::now();
    let run = f.w.cmd().args(args("calibrate")).output().unwrap();
    assert!(run.status.success());
    let full = t0.elapsed();
    let shas: Vec<String> = drops.iter().map(|p| sha(p)).collect();

    let mut rng = ChaCha8Rng::seed_from_u64(20_171_101);
    let (mut untouched, mut partial, mut with_tmp, mut with_unrecorded) = (0, 0, 0, 0);
    let trials = 50;
    for trial in 0..trials {
        let name = format!("s{trial}");
        let store = f.w.path(&name);
        f.w.run(&["store", "init", &name]).ok();
        let mut child =
            f.w.cmd()
                .args(args(&name))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
        let at = rng.random_range(0..=full.as_micros() as u64 * 11 / 10);
        std::thread::sleep(Duration::from_micros(at));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // What the kill left, before any command repairs it.
        let lines = complete_lines(&store);
        if lines == 0 {
            untouched += 1;
        } else if lines < n + 1 {
            partial += 1;
        }
        if files_in(&store.join(".tmp")) > 0 {
            with_tmp += 1;
        }
        let recorded = lines.saturating_sub(1);
        if files_in(&store.join("drops")) > recorded {
            with_unrecorded += 1;
        }

        let r = f.w.run(&["store", "verify", &name]);
        assert_eq!(
            r.code, 0,
            "trial {trial} (killed after {at} us): verify failed\n{}{}",
            r.stdout, r.stderr
        );
        let r = f.w.cmd().args(args(&name)).output().unwrap();
        assert!(r.status.success(), "trial {trial}: the re-run failed");
        let l = ledger(&store);
        for (s, p) in shas.iter().zip(&drops) {
            let accepted = l
                .iter()
                .filter(|e| e["outcome"] == "accepted" && e["sha256"] == s.as_str())
                .count();
            assert_eq!(
                accepted,
                1,
                "trial {trial}: {} accepted {accepted} times",
                p.display()
            );
        }
        assert!(
            l.iter()
                .all(|e| e["outcome"] != "refused" && e["outcome"] != "superseded"),
            "trial {trial}"
        );
        assert_eq!(files_in(&store.join("drops")), n, "trial {trial}");
        f.w.run(&["store", "verify", &name]).ok();
        std::fs::remove_dir_all(&store).unwrap();
    }
    eprintln!(
        "{trials} kills: {untouched} before the first entry, {partial} part-way through the \
         ledger, {with_tmp} with unfinished files, {with_unrecorded} with unrecorded drops in \
         place (whole ingest {full:?})"
    );
    // The kills landed in the middle of the work, not only before or after.
    assert!(
        partial + with_tmp + with_unrecorded >= 5,
        "the kills missed the work"
    );
}

#[test]
fn two_ingests_at_once_end_as_if_run_one_after_the_other() {
    let f = Fleet::new();
    let drops = many_drops(&f, 15);
    // Two overlapping sets: the overlap must come out as duplicates.
    let a: Vec<&PathBuf> = drops[..36].iter().collect();
    let b: Vec<&PathBuf> = drops[24..].iter().collect();
    let run = |store: &str, set: &[&PathBuf]| {
        let mut c = f.w.cmd();
        c.args(["ingest", "--store", store]);
        c.args(set.iter().map(|p| p.as_os_str()));
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    };
    // Ledger entries without the times (and the chain, which hashes them).
    let timeless = |store: &Path| -> Vec<serde_json::Value> {
        ledger(store)
            .into_iter()
            .map(|mut e| {
                let m = e.as_object_mut().unwrap();
                m.remove("received");
                m.remove("prev");
                e
            })
            .collect()
    };
    for round in 0..3 {
        let together = format!("together{round}");
        f.w.run(&["store", "init", &together]).ok();
        let ca = run(&together, &a).spawn().unwrap();
        let cb = run(&together, &b).spawn().unwrap();
        let (oa, ob) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        assert!(oa.status.success() && ob.status.success());
        let store = f.w.path(&together);
        // Which went first: the first drop accepted.
        let first_source = ledger(&store)[1]["source"].as_str().unwrap().to_string();
        let a_first = a[0].file_name().unwrap().to_str() == Some(first_source.as_str());
        let (first, second) = if a_first { (&a, &b) } else { (&b, &a) };
        let apart = format!("apart{round}");
        f.w.run(&["store", "init", &apart]).ok();
        assert!(run(&apart, first).output().unwrap().status.success());
        assert!(run(&apart, second).output().unwrap().status.success());
        let apart = f.w.path(&apart);
        assert_eq!(timeless(&store), timeless(&apart), "round {round}");
        assert_eq!(tree(&store.join("drops")), tree(&apart.join("drops")));
        let accepted: BTreeSet<String> = ledger(&store)
            .iter()
            .filter(|e| e["outcome"] == "accepted")
            .map(|e| e["sha256"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(accepted.len(), drops.len());
        f.w.run(&["store", "verify", &together]).ok();
    }
}
