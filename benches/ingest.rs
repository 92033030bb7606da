//! Benchmark: ingest every drop of the demo (386 drops from 27 NGOs) into a
//! new store, in-process and through the `safetally ingest` command, and in
//! the same run the Python peer (`benches/peer_ingest.py`, pyarrow) on the
//! same drops. Prints one table with drops per second and the ratio.
//!
//! Run: `cargo bench --bench ingest` (RUNS=... the repetitions). The peer
//! needs `pip install pyarrow`; without it the peer's row says so.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use safetally::demo::{make_drops, members_toml};
use safetally::key::TaskForceKey;
use safetally::store::ingest::ingest;
use safetally::store::ledger::Outcome;
use safetally::store::{Store, recover};
use safetally::synth::PilotSpec;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn min(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::MAX, f64::min)
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let key = TaskForceKey::generate().unwrap();
    let spec = PilotSpec::default();
    let made = make_drops(
        &spec,
        &key,
        &dir.path().join("raw"),
        &dir.path().join("drops"),
        |_, _| {},
    )
    .unwrap();
    let members = dir.path().join("members.toml");
    std::fs::write(&members, members_toml(&made.generated)).unwrap();
    let fp = key.fingerprint();
    let n = made.drops.len();
    let bytes: u64 = made
        .drops
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let new_store = |name: String| -> PathBuf {
        let root = dir.path().join(name);
        Store::init(&root, Some(&members), Some(&fp)).unwrap();
        root
    };

    let mut in_process = Vec::new();
    let mut command = Vec::new();
    let mut peer = Vec::new();
    let mut peer_missing = None;
    for run in 0..runs {
        // In-process: lock, recovery, verify every drop, file, ledger.
        let root = new_store(format!("lib{run}"));
        let t = Instant::now();
        let store = Store::open(&root).unwrap();
        let _lock = store.lock("bench", false).unwrap();
        recover(&store).unwrap();
        let offered = ingest(&store, &made.drops, |_| {}).unwrap();
        in_process.push(t.elapsed().as_secs_f64());
        assert!(offered.iter().all(|o| o.entry.outcome == Outcome::Accepted));
        drop(_lock);

        // The command an operator runs, process start to exit.
        let root = new_store(format!("cli{run}"));
        let t = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_safetally"))
            .args(["ingest", "--store"])
            .arg(&root)
            .arg(dir.path().join("drops"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        command.push(t.elapsed().as_secs_f64());
        assert!(status.success());

        // The peer, on a fresh folder with the same layout.
        let root = dir.path().join(format!("peer{run}"));
        std::fs::create_dir_all(&root).unwrap();
        match run_peer(&root, &fp, &made.drops) {
            Ok(secs) => peer.push(secs),
            Err(why) => peer_missing = Some(why),
        }
    }

    let dps = |s: f64| n as f64 / s;
    println!();
    println!(
        "ingest the demo's {n} drops ({:.1} MB) into a new store, min / median of {runs} runs",
        bytes as f64 / 1e6
    );
    println!("| run | seconds (min) | seconds (median) | drops/s (min) | vs Python |");
    println!("|---|---|---|---|---|");
    let peer_min = (!peer.is_empty()).then(|| min(&peer));
    let ratio = |s: f64| peer_min.map_or("-".to_string(), |p| format!("{:.1}x", p / s));
    for (name, secs) in [
        ("safetally, in-process", &mut in_process),
        ("safetally ingest (command)", &mut command),
    ] {
        let m = min(secs);
        println!(
            "| {name} | {m:.3} | {:.3} | {:.0} | {} |",
            median(secs),
            dps(m),
            ratio(m)
        );
    }
    match peer_min {
        Some(m) => println!(
            "| Python peer (pyarrow) | {m:.3} | {:.3} | {:.0} | 1.0x |",
            median(&mut peer),
            dps(m)
        ),
        None => println!(
            "| Python peer (pyarrow) | - | - | - | not run: {} |",
            peer_missing.unwrap_or_default()
        ),
    }
}

/// Runs the peer; its seconds, or why it could not run.
fn run_peer(root: &Path, fingerprint: &str, drops: &[PathBuf]) -> Result<f64, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peer_ingest.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(root)
        .arg(fingerprint)
        .args(drops)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(if err.contains("No module named 'pyarrow'") {
            "pip install pyarrow".to_string()
        } else {
            err.lines().last().unwrap_or("failed").to_string()
        });
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(line.lines().last().unwrap_or("{}")).map_err(|e| e.to_string())?;
    assert_eq!(
        v["accepted"].as_u64(),
        Some(drops.len() as u64),
        "the peer accepts every drop"
    );
    v["seconds"]
        .as_f64()
        .ok_or_else(|| "no seconds".to_string())
}
