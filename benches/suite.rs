//! The benchmark suite: safetally against the tools an analyst would
//! reach for instead, side by side, on the same files, in one run, printed
//! as one table.
//!
//! 1. `safetally pseudonymise` of a synthetic CSV (`PSEUDO_ROWS`, default
//!    1,000,000 screening rows) against the plain Python peer
//!    (`benches/peer_pseudonymise.py`: csv, unicodedata, hmac), both as
//!    processes; both must accept every row.
//! 2. `safetally report` over a store made by `safetally synth`, `store
//!    init` and `ingest` (the binaries, as a secretariat would) at each size
//!    in `RECORDS` (default 100,000, 1,000,000 and 10,000,000 screening
//!    records, plus a tenth as many self-assessment respondents), against
//!    the DuckDB peer (`benches/peer_duckdb.py`: the same drops, linkage by
//!    iterated minimum-label propagation in SQL) and against the floor: a
//!    bare DataFusion scan of the same columns of the same files (this
//!    bench's own binary, run as a child). The report runs with exact keys
//!    alone (`fuzzy_linkage = false`: the linkage the peer does), and its
//!    summary and tables, the peer and `truth.json` must give the same
//!    counts. A second line times the report as it runs by default, with
//!    fuzzy linkage (its floor also scans the encodings), and says how
//!    many persons its fuzzy links joined that the generator made distinct
//!    (`FUZZY=none` skips that line).
//!
//! Every program runs as a child process, timed from start to exit, its
//! peak memory from `wait4`. `RUNS` (default 3) runs of each; min and
//! median (`RECORDS=0`: pseudonymise only). `PEER=none` skips both peers; `PEER_RUNS` sets their runs
//! (default `RUNS`). `SEED` picks the data. Stores are made once per size
//! and seed and kept under the target folder (`suite/`).
//!
//! Run: `cargo bench --bench suite` (see docs/performance.md).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

use safetally::drop::ENCODING_COLUMNS;
use safetally::key::TaskForceKey;
use safetally::pseudonymise::Period;
use safetally::report::input::select;
use safetally::store::Store;
use safetally::store::ingest::resolve;
use safetally::synth::bulk_screening_csv;
use safetally::workload::WorkloadTruth;

/// Bump when the stores' recipe changes: cached stores are keyed by it.
const GENERATOR: u32 = 2;
const FROM: &str = "2025-01";
const TO: &str = "2025-12";
/// Screening records per person the workload makes, on average.
const RECORDS_PER_PERSON: f64 = 1.22;
/// The child mode that runs the DataFusion scan floor.
const SCAN_ENV: &str = "SAFETALLY_SUITE_SCAN";
/// Whether the floor scans the encoding columns too ("1") or not ("0").
const SCAN_ENCODINGS_ENV: &str = "SAFETALLY_SUITE_SCAN_ENCODINGS";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Ok(store) = std::env::var(SCAN_ENV) {
        scan_floor(Path::new(&store));
        return;
    }
    let sizes: Vec<usize> = match std::env::var("RECORDS") {
        Ok(s) => s
            .split(',')
            .filter(|x| !x.trim().is_empty())
            .map(|x| x.trim().replace('_', "").parse().expect("RECORDS: numbers"))
            .filter(|&n: &usize| n > 0)
            .collect(),
        Err(_) => vec![100_000, 1_000_000, 10_000_000],
    };
    let runs: usize = env_or("RUNS", 3).max(1);
    let peer_runs: usize = env_or("PEER_RUNS", runs).max(1);
    let peers = !std::env::var("PEER").is_ok_and(|p| p == "none");
    let fuzzy = !std::env::var("FUZZY").is_ok_and(|p| p == "none");
    let seed: u64 = env_or("SEED", 7);
    let pseudo_rows: usize = env_or("PSEUDO_ROWS", 1_000_000);
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("suite");
    std::fs::create_dir_all(&cache).unwrap();
    let key_path = cache.join("suite.key");
    if !key_path.exists() {
        TaskForceKey::generate()
            .unwrap()
            .write_new(&key_path)
            .unwrap();
    }
    eprintln!("{}", machine());

    let mut lines = Vec::new();
    if pseudo_rows > 0 {
        lines.push(bench_pseudonymise(
            &cache,
            &key_path,
            pseudo_rows,
            seed,
            runs,
            peer_runs,
            peers,
        ));
    }
    let mut all_agree = true;
    for &n in &sizes {
        let plan = Plan {
            seed,
            runs,
            peer_runs,
            peers,
            fuzzy,
        };
        let (report_lines, agree) = bench_report(&cache, &key_path, n, &plan);
        all_agree &= agree;
        lines.extend(report_lines);
    }

    println!();
    println!("{}", machine());
    println!(
        "Each program is a child process, start to exit; seconds: min / median of {runs} runs \
         ({peer_runs} of each peer), CPU = user + system seconds of the fastest run; peak = \
         highest resident memory of the runs; ratios from the min times."
    );
    println!(
        "| task | records | safetally s (min / median) | safetally peak MiB | peer | peer s (min / \
         median) | peer peak MiB | peer / safetally | DataFusion scan floor s (min / median) | \
         floor peak MiB | safetally / floor | counts agree |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for l in lines {
        println!("{l}");
    }
    assert!(
        all_agree,
        "safetally, the peer and the generator disagree: see above"
    );
}

/// One line about the machine: cores, memory, load.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or("?".to_string(), |kib| {
            format!("{:.0}", kib / 1024.0 / 1024.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "machine: {cores} cores ({cpu}), {mem} GiB; load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// A child process's wall time, CPU time and peak resident memory.
#[derive(Debug, Clone, Copy)]
struct Measured {
    wall: f64,
    cpu: f64,
    peak_mib: f64,
}

/// Runs a command to its end, its output in `out/NAME.stdout|stderr`,
/// measured through `wait4` (this child's own rusage).
fn measure(cmd: &mut Command, out: &Path, name: &str) -> Result<Measured, String> {
    let stdout = File::create(out.join(format!("{name}.stdout"))).unwrap();
    let stderr = File::create(out.join(format!("{name}.stderr"))).unwrap();
    let t = Instant::now();
    let child = cmd
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data; `wait4` fills it and `status`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let err = std::fs::read_to_string(out.join(format!("{name}.stderr"))).unwrap_or_default();
        return Err(err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("failed")
            .to_string());
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Ok(Measured {
        wall,
        cpu: secs(ru.ru_utime) + secs(ru.ru_stime),
        // Linux gives ru_maxrss in KiB.
        peak_mib: ru.ru_maxrss as f64 / 1024.0,
    })
}

fn safetally() -> Command {
    Command::new(env!("CARGO_BIN_EXE_safetally"))
}

/// Min and median wall time, peak memory, and the CPU time (user +
/// system) of the fastest run.
fn stats(ms: &[Measured]) -> (f64, f64, f64, f64) {
    let mut w: Vec<f64> = ms.iter().map(|m| m.wall).collect();
    w.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let peak = ms.iter().map(|m| m.peak_mib).fold(0.0, f64::max);
    let cpu = ms
        .iter()
        .min_by(|a, b| a.wall.partial_cmp(&b.wall).unwrap())
        .unwrap()
        .cpu;
    (w[0], w[w.len() / 2], peak, cpu)
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn last_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------
// Pseudonymise.

fn bench_pseudonymise(
    cache: &Path,
    key: &Path,
    rows: usize,
    seed: u64,
    runs: usize,
    peer_runs: usize,
    peers: bool,
) -> String {
    let period: Period = "2025-03".parse().unwrap();
    let csv = cache.join(format!("screening-r{rows}-s{seed}.csv"));
    if !csv.exists() {
        let tmp = csv.with_extension("partial");
        let f = std::io::BufWriter::new(File::create(&tmp).unwrap());
        bulk_screening_csv(f, rows, seed, period).unwrap();
        std::fs::rename(&tmp, &csv).unwrap();
    }
    let work = tempfile::tempdir_in(cache).unwrap();
    let mut ours = Vec::new();
    let mut coded = 0;
    for run in 0..runs {
        let mut cmd = safetally();
        cmd.args(["pseudonymise", "--form", "screening", "--org", "NGO01"])
            .args(["--period", &period.to_string(), "--force", "--key"])
            .arg(key)
            .arg("--out")
            .arg(work.path())
            .arg(&csv);
        let m = measure(&mut cmd, work.path(), "pseudonymise").expect("pseudonymise runs");
        let out = std::fs::read_to_string(work.path().join("pseudonymise.stdout")).unwrap();
        // "wrote PATH (N rows, 0 rejected, key FP)"
        coded = out
            .split('(')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        assert_eq!(coded, rows, "safetally accepts every row");
        eprintln!("pseudonymise {rows} rows, run {}: {:.2} s", run + 1, m.wall);
        ours.push(m);
    }
    let (o_min, o_med, o_peak, o_cpu) = stats(&ours);
    let mut theirs = Vec::new();
    let mut missing = String::new();
    let mut agree = true;
    if peers {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peer_pseudonymise.py");
        for run in 0..peer_runs {
            let mut cmd = Command::new("python3");
            cmd.arg(&script)
                .arg(&csv)
                .arg(key)
                .arg(work.path().join("peer.csv"))
                .args(["--org", "NGO01", "--period", &period.to_string()]);
            match measure(&mut cmd, work.path(), "peer") {
                Ok(m) => {
                    let v = last_json(&work.path().join("peer.stdout"));
                    agree &= v["rows"].as_u64() == Some(coded as u64);
                    if run == 0 {
                        agree &= same_values(work.path(), &work.path().join("peer.csv"), 20_000);
                    }
                    eprintln!("pseudonymise peer, run {}: {:.2} s", run + 1, m.wall);
                    theirs.push(m);
                }
                Err(e) => {
                    missing = e;
                    break;
                }
            }
        }
    } else {
        missing = "PEER=none".into();
    }
    let rps = |s: f64| thousands((rows as f64 / s) as u64);
    let (peer_cols, ratio) = if theirs.is_empty() {
        (
            format!("Python: not run ({missing}) | - | -"),
            "-".to_string(),
        )
    } else {
        let (p_min, p_med, p_peak, p_cpu) = stats(&theirs);
        (
            format!(
                "Python (csv, unicodedata, hmac; format 2 encodings) | {p_min:.2} / {p_med:.2} ({} rows/s; CPU \
                 {p_cpu:.2}) | {p_peak:.0}",
                rps(p_min)
            ),
            format!("**{:.1}x**", p_min / o_min),
        )
    };
    format!(
        "| pseudonymise | {} rows | {o_min:.2} / {o_med:.2} ({} rows/s; CPU {o_cpu:.2}) | \
         {o_peak:.0} | {peer_cols} \
         | {ratio} | - | - | - | {} |",
        thousands(rows as u64),
        rps(o_min),
        if theirs.is_empty() {
            "rows: -"
        } else if agree {
            "rows, keys and encodings: yes"
        } else {
            "rows, keys or encodings: NO"
        }
    )
}

/// Whether the peer computed the same keys and encodings as the drop in
/// `dir` for its first `n` rows: the three match keys, the date-of-birth
/// keys, the passport filter, the name key and the blocking keys byte for
/// byte (the name filter's flipped bits come from each side's own random
/// generator, so it is not compared).
fn same_values(dir: &Path, peer_csv: &Path, n: usize) -> bool {
    use datafusion::arrow::array::{Array, BinaryArray, FixedSizeBinaryArray};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    const COLUMNS: [&str; 7] = [
        "record_key",
        "key_passport",
        "key_name_dob",
        "enc_dob",
        "enc_passport",
        "name_key",
        "block_keys",
    ];
    let drop = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .expect("the drop");
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(drop).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut ours: Vec<Vec<String>> = Vec::new();
    'batches: for batch in reader {
        let batch = batch.unwrap();
        for i in 0..batch.num_rows() {
            if ours.len() == n {
                break 'batches;
            }
            ours.push(
                COLUMNS
                    .iter()
                    .map(|c| {
                        let col = batch.column_by_name(c).expect("a drop column");
                        if col.is_null(i) {
                            return String::new();
                        }
                        let bytes =
                            if let Some(a) = col.as_any().downcast_ref::<FixedSizeBinaryArray>() {
                                a.value(i)
                            } else {
                                col.as_any()
                                    .downcast_ref::<BinaryArray>()
                                    .expect("binary")
                                    .value(i)
                            };
                        bytes.iter().map(|b| format!("{b:02x}")).collect()
                    })
                    .collect(),
            );
        }
    }
    let mut peer = csv::Reader::from_path(peer_csv).unwrap();
    let header = peer.headers().unwrap().clone();
    let at: Vec<usize> = COLUMNS
        .iter()
        .map(|c| header.iter().position(|h| h == *c).expect("a peer column"))
        .collect();
    let mut differ = 0;
    for (row, record) in ours.iter().zip(peer.records()) {
        let record = record.unwrap();
        let theirs: Vec<&str> = at.iter().map(|&i| &record[i]).collect();
        differ += usize::from(row.iter().zip(&theirs).any(|(a, b)| a != b));
    }
    eprintln!(
        "pseudonymise: keys and encodings of the first {} rows, {differ} differ from the peer's",
        ours.len()
    );
    differ == 0
}

// ---------------------------------------------------------------------------
// Report.

/// The store of about `n` screening records: made once with the
/// binaries (synth, store init, ingest), then reused.
fn cached_store(cache: &Path, key: &Path, n: usize, seed: u64) -> (PathBuf, WorkloadTruth) {
    let root = cache.join(format!("w-n{n}-s{seed}-g{GENERATOR}"));
    let done = root.join("done");
    if !done.exists() {
        if root.exists() {
            std::fs::remove_dir_all(&root).unwrap();
        }
        std::fs::create_dir_all(&root).unwrap();
        let persons = ((n as f64 / RECORDS_PER_PERSON).round() as usize).max(1);
        let t = Instant::now();
        let mut cmd = safetally();
        cmd.args(["synth", "--persons", &persons.to_string()])
            .args([
                "--seed",
                &seed.to_string(),
                "--from",
                FROM,
                "--months",
                "12",
            ])
            .arg("--key")
            .arg(key)
            .arg("--dir")
            .arg(&root);
        let m = measure(&mut cmd, &root, "synth").expect("synth runs");
        eprintln!(
            "synth: {persons} persons in {:.1} s, {:.0} MiB peak",
            m.wall, m.peak_mib
        );
        let fp = TaskForceKey::read(key).unwrap().fingerprint();
        let mut cmd = safetally();
        cmd.args(["store", "init"])
            .arg(root.join("store"))
            .args(["--fingerprint", &fp]);
        measure(&mut cmd, &root, "init").expect("store init runs");
        let mut cmd = safetally();
        cmd.args(["ingest", "--store"])
            .arg(root.join("store"))
            .arg(root.join("drops"));
        let m = measure(&mut cmd, &root, "ingest").expect("ingest runs");
        eprintln!("ingest: {:.1} s, {:.0} MiB peak", m.wall, m.peak_mib);
        // The store holds its own copy of every drop.
        std::fs::remove_dir_all(root.join("drops")).unwrap();
        eprintln!("made the store in {:.1} s", t.elapsed().as_secs_f64());
        std::fs::write(&done, "").unwrap();
    }
    let truth: WorkloadTruth =
        serde_json::from_str(&std::fs::read_to_string(root.join("truth.json")).unwrap()).unwrap();
    (root.join("store"), truth)
}

/// The counts every side must give, as JSON.
fn truth_counts(t: &WorkloadTruth) -> Value {
    json!({
        "records": t.screening_records,
        "persons": t.screening_persons,
        "identified": t.identified_persons,
        "by_number_of_ngos": t.screened_by_number_of_ngos,
        "sa_records": t.self_assessment_records,
        "respondents": t.respondents,
    })
}

/// A report table as label -> count (margins left out).
fn table(dir: &Path, name: &str) -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(dir.join("tables").join(format!("{name}.csv"))).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let count = header.iter().position(|h| *h == "count").unwrap();
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| c[0] != "Total")
        .map(|c| {
            let v = c[count].parse::<u64>().map_or(Value::Null, Value::from);
            (c[0].to_string(), v)
        })
        .collect()
}

/// The report's counts, and its persons by first month.
fn report_counts(dir: &Path) -> (Value, Value) {
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    (
        json!({
            "records": s["screening"]["records"],
            "persons": s["screening"]["persons"],
            "identified": s["screening"]["identified"],
            "by_number_of_ngos": table(dir, "screened_by_number_of_ngos"),
            "sa_records": s["self_assessment"]["records"],
            "respondents": s["self_assessment"]["respondents"],
        }),
        json!(table(dir, "screened_by_first_month")),
    )
}

fn peer_counts(v: &Value) -> (Value, Value) {
    (
        json!({
            "records": v["screening"]["records"],
            "persons": v["screening"]["persons"],
            "identified": v["screening"]["identified"],
            "by_number_of_ngos": v["screening"]["by_number_of_ngos"],
            "sa_records": v["self_assessment"]["records"],
            "respondents": v["self_assessment"]["persons"],
        }),
        v["screening"]["by_first_month"].clone(),
    )
}

/// Runs `f` with the store as it is now, and puts its ledger and releases
/// back afterwards: a report records its release, and the next run would
/// otherwise protect its tables against this one's.
fn keeping_store<T>(store: &Path, f: impl FnOnce() -> T) -> T {
    let ledger = std::fs::read(store.join("ledger.jsonl")).unwrap();
    let releases = store.join("releases");
    let had_releases = releases.exists();
    let out = f();
    std::fs::write(store.join("ledger.jsonl"), ledger).unwrap();
    if !had_releases && releases.exists() {
        std::fs::remove_dir_all(&releases).unwrap();
    }
    out
}

/// How the report lines are measured.
#[derive(Debug, Clone, Copy)]
struct Plan {
    seed: u64,
    runs: usize,
    peer_runs: usize,
    peers: bool,
    /// Whether to time the default report (fuzzy linkage on) too.
    fuzzy: bool,
}

/// `RUNS` runs of `safetally report` over the store, with fuzzy linkage on
/// (the default) or off: the measurements, and the counts of the last run.
fn run_reports(
    cache: &Path,
    store: &Path,
    n: usize,
    runs: usize,
    fuzzy: bool,
) -> (Vec<Measured>, Value, Value, u64) {
    let config = cache.join("exact-keys.toml");
    std::fs::write(&config, "fuzzy_linkage = false\n").unwrap();
    let mut ours = Vec::new();
    let (mut counts, mut by_month, mut fuzzy_links) = (Value::Null, Value::Null, 0);
    for run in 0..runs {
        let out = tempfile::tempdir_in(cache).unwrap();
        let m = keeping_store(store, || {
            let mut cmd = safetally();
            cmd.args(["report", "--store"])
                .arg(store)
                .args(["--from", FROM, "--to", TO, "--out"])
                .arg(out.path().join("report"));
            if !fuzzy {
                cmd.arg("--config").arg(&config);
            }
            measure(&mut cmd, out.path(), "report").expect("safetally report runs")
        });
        (counts, by_month) = report_counts(&out.path().join("report"));
        let manifest: Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("report/manifest.json")).unwrap(),
        )
        .unwrap();
        fuzzy_links = manifest["linkage"]["screening"]["fuzzy"]["fuzzy_links"]
            .as_u64()
            .unwrap_or(0);
        eprintln!(
            "{n} records, run {}: report (fuzzy linkage {}) {:.2} s, {:.0} MiB peak",
            run + 1,
            if fuzzy { "on" } else { "off" },
            m.wall,
            m.peak_mib
        );
        ours.push(m);
    }
    (ours, counts, by_month, fuzzy_links)
}

/// `RUNS` runs of the floor: a bare DataFusion scan of the columns a report
/// reads (all of them with fuzzy linkage; without, all but the encodings).
fn run_floor(
    cache: &Path,
    store: &Path,
    n: usize,
    runs: usize,
    encodings: bool,
    rows: u64,
) -> Vec<Measured> {
    let mut floor = Vec::new();
    for run in 0..runs {
        let out = tempfile::tempdir_in(cache).unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env(SCAN_ENV, store)
            .env(SCAN_ENCODINGS_ENV, if encodings { "1" } else { "0" });
        let m = measure(&mut cmd, out.path(), "scan").expect("the scan floor runs");
        let v = last_json(&out.path().join("scan.stdout"));
        assert_eq!(
            v["rows"].as_u64(),
            Some(rows),
            "the scan reads every record"
        );
        eprintln!("{n} records, run {}: scan {:.2} s", run + 1, m.wall);
        floor.push(m);
    }
    floor
}

/// Two lines of the table: the report with exact keys alone (the linkage
/// the DuckDB peer does) against the peer and the floor, and the report as
/// it runs by default (fuzzy linkage on) against its floor, with how many
/// persons fuzzy links joined that the generator made distinct (the
/// workload has no typos, so every fuzzy link there joins two people).
fn bench_report(cache: &Path, key: &Path, n: usize, plan: &Plan) -> (Vec<String>, bool) {
    let Plan {
        seed,
        runs,
        peer_runs,
        peers,
        fuzzy,
    } = *plan;
    let (store, truth) = cached_store(cache, key, n, seed);
    let expected = truth_counts(&truth);
    let rows = truth.screening_records + truth.self_assessment_records;
    let mut agree = true;
    let (ours, counts, ours_by_month, _) = run_reports(cache, &store, n, runs, false);
    if counts != expected {
        eprintln!("report counts {counts}\n   generator's {expected}");
        agree = false;
    }
    let floor = run_floor(cache, &store, n, runs, false, rows);
    let mut theirs = Vec::new();
    let mut missing = if peers {
        String::new()
    } else {
        "PEER=none".to_string()
    };
    let mut rounds = Value::Null;
    if peers {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peer_duckdb.py");
        for run in 0..peer_runs {
            let out = tempfile::tempdir_in(cache).unwrap();
            let mut cmd = Command::new("python3");
            cmd.arg(&script).arg(&store).args([FROM, TO]);
            match measure(&mut cmd, out.path(), "peer") {
                Ok(m) => {
                    let v = last_json(&out.path().join("peer.stdout"));
                    let (counts, by_month) = peer_counts(&v);
                    if counts != expected || by_month != ours_by_month {
                        eprintln!(
                            "peer counts {counts} {by_month}\n  generator's {expected}\n  \
                             report's by month {ours_by_month}"
                        );
                        agree = false;
                    }
                    rounds = v["rounds"].clone();
                    eprintln!(
                        "{n} records, run {}: DuckDB peer {:.2} s, {:.0} MiB peak",
                        run + 1,
                        m.wall,
                        m.peak_mib
                    );
                    theirs.push(m);
                }
                Err(e) => {
                    missing = e;
                    break;
                }
            }
        }
    }
    let (o_min, o_med, o_peak, o_cpu) = stats(&ours);
    let (f_min, f_med, f_peak, f_cpu) = stats(&floor);
    let (peer_cols, ratio) = if theirs.is_empty() {
        (
            format!("DuckDB: not run ({missing}) | - | -"),
            "-".to_string(),
        )
    } else {
        let (p_min, p_med, p_peak, p_cpu) = stats(&theirs);
        (
            format!(
                "DuckDB (label propagation, {} rounds) | {p_min:.2} / {p_med:.2} (CPU \
                 {p_cpu:.1}) | {p_peak:.0}",
                rounds["screening"]
            ),
            format!("**{:.1}x**", p_min / o_min),
        )
    };
    let records = format!(
        "{} screening + {} self-assessment",
        thousands(truth.screening_records),
        thousands(truth.self_assessment_records)
    );
    let mut lines = vec![format!(
        "| report, exact keys (as the peer) | {records} | {o_min:.2} / {o_med:.2} (CPU \
         {o_cpu:.1}) | {o_peak:.0} | {peer_cols} | {ratio} | {f_min:.2} / {f_med:.2} (CPU \
         {f_cpu:.1}) | {f_peak:.0} | {:.1}x | {} |",
        o_min / f_min,
        match (agree, theirs.is_empty()) {
            (false, _) => "NO",
            (true, false) => "yes (report = DuckDB = generator)",
            (true, true) => "report = generator",
        }
    )];
    if fuzzy {
        let (ours, counts, _, links) = run_reports(cache, &store, n, runs, true);
        let floor = run_floor(cache, &store, n, runs, true, rows);
        let (o_min, o_med, o_peak, o_cpu) = stats(&ours);
        let (f_min, f_med, f_peak, f_cpu) = stats(&floor);
        let persons = counts["persons"].as_u64().unwrap_or(0);
        lines.push(format!(
            "| report, default (exact keys + fuzzy linkage) | {records} | {o_min:.2} / \
             {o_med:.2} (CPU {o_cpu:.1}) | {o_peak:.0} | - | - | - | - | {f_min:.2} / \
             {f_med:.2} (CPU {f_cpu:.1}) | {f_peak:.0} | {:.1}x | persons {} against the \
             generator's {} ({links} fuzzy links, {} persons joined wrongly) |",
            o_min / f_min,
            thousands(persons),
            thousands(truth.screening_persons),
            truth.screening_persons.saturating_sub(persons),
        ));
    }
    (lines, agree)
}

// ---------------------------------------------------------------------------
// The floor.

/// Child mode: scans the columns a report reads (every column with
/// fuzzy linkage, all but the encodings without) of the window's current
/// drops with DataFusion (one `read_parquet` over the files of each form, every
/// partition driven at once) and prints the rows read.
fn scan_floor(store: &Path) {
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    use futures::StreamExt;
    let encodings = std::env::var(SCAN_ENCODINGS_ENV).is_ok_and(|v| v == "1");
    let store = Store::open(store).unwrap();
    let state = store.state().unwrap();
    let (drops, _) = select(&state, FROM.parse().unwrap(), TO.parse().unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().build().unwrap();
    let rows: usize = runtime.block_on(async {
        let ctx = SessionContext::new();
        let mut total = 0;
        for form in ["screening", "self_assessment"] {
            let paths: Vec<String> = drops
                .iter()
                .filter(|d| d.form == form)
                .map(|d| resolve(store.root(), &d.path).to_str().unwrap().to_string())
                .collect();
            if paths.is_empty() {
                continue;
            }
            let df = ctx
                .read_parquet(paths, ParquetReadOptions::default())
                .await
                .unwrap();
            let df = if encodings {
                df
            } else {
                let kept: Vec<String> = df
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .filter(|c| !ENCODING_COLUMNS.contains(&c.as_str()))
                    .collect();
                let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
                df.select_columns(&kept).unwrap()
            };
            let streams = df.execute_stream_partitioned().await.unwrap();
            let tasks: Vec<_> = streams
                .into_iter()
                .map(|mut s| {
                    tokio::spawn(async move {
                        let mut n = 0;
                        while let Some(b) = s.next().await {
                            n += b.unwrap().num_rows();
                        }
                        n
                    })
                })
                .collect();
            for t in tasks {
                total += t.await.unwrap();
            }
        }
        total
    });
    println!("{}", json!({ "rows": rows }));
}
