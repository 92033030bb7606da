//! Benchmark: pseudonymise 1,000,000 synthetic screening rows with
//! safetally, and in the same run the plain Python peer
//! (`benches/peer_pseudonymise.py`: csv, unicodedata, hmac) on the same file.
//! Prints one table with rows per second and the ratio.
//!
//! Run: `cargo bench --bench pseudonymise` (ROWS=... to change the size,
//! RUNS=... the repetitions, CSV=... a file to keep or reuse the input,
//! PEER=... another peer script, PEER=none to skip the peer: the ratio then
//! uses PEER_SECONDS, if given).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use safetally::key::TaskForceKey;
use safetally::pseudonymise::Period;
use safetally::pseudonymise::files::Job;
use safetally::schema::Form;
use safetally::synth::bulk_screening_csv;

/// CPU time (user + system) of this process so far, in seconds, from
/// `/proc/self/stat` (Linux; NaN elsewhere). Wall time is noisy when other
/// work shares the machine; CPU time much less so.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    // CSV=path keeps the generated input there (or reuses it when it exists)
    // for profiling the command line on the same data.
    let input =
        std::env::var_os("CSV").map_or_else(|| dir.path().join("screening.csv"), PathBuf::from);
    let period = Period {
        year: 2018,
        month: 3,
    };
    if !input.exists() {
        bulk_screening_csv(
            std::io::BufWriter::new(std::fs::File::create(&input).unwrap()),
            rows,
            42,
            period,
        )
        .unwrap();
    }
    let size = std::fs::metadata(&input).unwrap().len();
    eprintln!(
        "input: {rows} rows ({:.0} MB), {}",
        size as f64 / 1e6,
        input.display()
    );
    let key_path = dir.path().join("key");
    let key = TaskForceKey::generate().unwrap();
    key.write_new(&key_path).unwrap();

    let job = |out: PathBuf| Job {
        form: Form::Screening,
        org: "BENCH".into(),
        period,
        out_dir: out,
        allow_rejects: false,
        force: true,
        inputs: vec![input.clone()],
        today: chrono::Utc::now().date_naive(),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let measure = |threads: usize| -> (f64, f64) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut secs = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..runs {
            let j = job(dir.path().join("out"));
            let (t, c) = (Instant::now(), cpu_seconds());
            let outcome = pool.install(|| j.run(&key)).unwrap();
            secs.push(t.elapsed().as_secs_f64());
            cpu.push(cpu_seconds() - c);
            assert_eq!(outcome.rows, rows, "every synthetic row is valid");
        }
        let min = secs.iter().cloned().fold(f64::MAX, f64::min);
        eprintln!("{threads} thread(s): wall {secs:.2?} s, CPU (user + system) {cpu:.2?} s");
        (min, median(&mut secs))
    };
    let (one_min, one_med) = measure(1);
    let (all_min, all_med) = measure(cores);

    let peer_secs = if std::env::var("PEER").is_ok_and(|p| p == "none") {
        std::env::var("PEER_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN)
    } else {
        let peer = std::env::var_os("PEER").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peer_pseudonymise.py"),
            PathBuf::from,
        );
        let peer_out = dir.path().join("peer.csv");
        let output = Command::new("python3")
            .arg(&peer)
            .arg(&input)
            .arg(&key_path)
            .arg(&peer_out)
            .args(["--org", "BENCH", "--period", &period.to_string()])
            .output()
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "peer failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = String::from_utf8_lossy(&output.stdout);
        let peer: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
        assert_eq!(
            peer["rows"].as_u64().unwrap() as usize,
            rows,
            "the peer accepts the same rows"
        );
        peer["seconds"].as_f64().unwrap()
    };

    let rps = |s: f64| rows as f64 / s;
    println!();
    println!(
        "pseudonymise {rows} screening rows ({:.0} MB CSV), min / median of {runs} runs",
        size as f64 / 1e6
    );
    println!(
        "| run | threads | seconds (min) | seconds (median) | rows/s (min) | rows/s per core | vs Python |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| safetally | 1 | {one_min:.2} | {one_med:.2} | {:.0} | {:.0} | {:.1}x |",
        rps(one_min),
        rps(one_min),
        peer_secs / one_min
    );
    println!(
        "| safetally | {cores} | {all_min:.2} | {all_med:.2} | {:.0} | {:.0} | {:.1}x |",
        rps(all_min),
        rps(all_min) / cores as f64,
        peer_secs / all_min
    );
    println!(
        "| Python peer | 1 | {peer_secs:.2} | {peer_secs:.2} | {:.0} | {:.0} | 1.0x |",
        rps(peer_secs),
        rps(peer_secs)
    );
}
