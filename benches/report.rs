//! Benchmark: `safetally report` over a store of 1 million and 10 million
//! screening records (plus a self-assessment share of a tenth), timed as
//! the command a secretariat runs, with its peak memory, against a Python
//! peer (`benches/peer_report.py`: pyarrow, numpy, scipy) that links the
//! same drops into persons in the same run. Prints one table.
//!
//! Run: `cargo bench --bench report`. `RECORDS=1000000` (or a list,
//! `RECORDS=1000000,10000000`) picks the sizes, `RUNS=...` the repetitions
//! of each (default 3), `SEED=...` the data. The peer needs
//! `pip install pyarrow scipy`; without them its columns say so.
//!
//! The store is generated once per size and seed and kept under the target
//! folder (`CARGO_TARGET_TMPDIR/report-bench/`): generating 10 million
//! records through the pseudonymise pipeline would take far longer than
//! the report, so the drops are written directly with the library (random
//! 32-byte keys, shared where records are meant to link; valid codes in
//! every column) and ingested with the library. The generator knows how
//! many persons it made; the bench checks that the report and the peer
//! both find exactly that many, and the same number identified.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::{BooleanBuilder, FixedSizeBinaryBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::{Value, json};

use safetally::drop::{self, DropMeta, arrow_schema};
use safetally::pseudonymise::Period;
use safetally::pseudonymise::normalise::{AGE_BANDS, NORMALISER_VERSION};
use safetally::schema::{Form, Role, code_list};
use safetally::store::ingest::ingest;
use safetally::store::ledger::Outcome;
use safetally::store::{Store, recover};

/// Bump when the generated data changes: cached stores are keyed by it.
const GENERATOR: u32 = 1;
/// Screening NGOs; every one sends a drop each month.
const ORGS: usize = 27;
/// NGOs that also hand out the self-assessment form.
const SA_ORGS: usize = 12;
/// Self-assessment records per screening record.
const SA_SHARE: f64 = 0.1;
/// The window: one year.
const YEAR: i32 = 2025;
const MONTHS: u32 = 12;
const FROM: &str = "2025-01";
const TO: &str = "2025-12";
/// The key fingerprint stamped on every drop (no key exists: the keys are
/// random bytes).
const FINGERPRINT: &str = "be9c-2025-0000-0001";
/// Outcome codes (1 + index in the `outcome` code list).
const IDENTIFIED: u8 = 1;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn min(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::MAX, f64::min)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    let sizes: Vec<usize> = match std::env::var("RECORDS") {
        Ok(s) => s
            .split(',')
            .map(|x| x.trim().replace('_', "").parse().expect("RECORDS: numbers"))
            .collect(),
        Err(_) => vec![1_000_000, 10_000_000],
    };
    let runs: usize = env_or("RUNS", 3).max(1);
    let seed: u64 = env_or("SEED", 7);
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-bench");
    std::fs::create_dir_all(&cache).unwrap();

    let mut rows = Vec::new();
    for &n in &sizes {
        let root = cache.join(format!("store-n{n}-seed{seed}-g{GENERATOR}"));
        let (truth, made) = cached_store(&root, n, seed);
        match made {
            Some(secs) => eprintln!("generated the store of {n} records in {secs:.1} s"),
            None => eprintln!("reusing the store of {n} records in {}", root.display()),
        }
        let store_bytes = du(&root.join("drops"));
        let mut report = Vec::new();
        let mut peer = Vec::new();
        let mut peer_missing = None;
        for run in 0..runs {
            let out = tempfile::tempdir_in(&cache).unwrap();
            let m = run_report(&root, out.path());
            check_report(&out.path().join("report"), &truth);
            eprintln!(
                "{n} records, run {}: report {:.2} s, {:.0} MiB peak",
                run + 1,
                m.wall,
                m.peak_mib
            );
            report.push(m);
            match run_peer(&root, out.path()) {
                Ok((m, v)) => {
                    check_peer(&v, &truth);
                    eprintln!(
                        "{n} records, run {}: peer {:.2} s, {:.0} MiB peak",
                        run + 1,
                        m.wall,
                        m.peak_mib
                    );
                    peer.push(m);
                }
                Err(why) => peer_missing = Some(why),
            }
        }
        rows.push((n, truth, store_bytes, report, peer, peer_missing));
    }

    println!();
    println!(
        "safetally report over one year (27 screening NGOs x 12 months, plus self-assessment \
         from 12 NGOs), process start to exit, min / median of {runs} runs"
    );
    println!(
        "| screening records | persons | drops (MB) | report s (min) | report s (median) | \
         report CPU s | report peak MiB | peer s (min) | peer peak MiB | vs Python |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (n, truth, bytes, report, peer, missing) in rows {
        let mut wall: Vec<f64> = report.iter().map(|m| m.wall).collect();
        let best = report
            .iter()
            .min_by(|a, b| a.wall.partial_cmp(&b.wall).unwrap())
            .unwrap();
        let peak = report.iter().map(|m| m.peak_mib).fold(0.0, f64::max);
        let (peer_s, peer_peak, ratio) = if peer.is_empty() {
            (
                format!("not run: {}", missing.unwrap_or_default()),
                "-".to_string(),
                "-".to_string(),
            )
        } else {
            let p: Vec<f64> = peer.iter().map(|m| m.wall).collect();
            let pp = peer.iter().map(|m| m.peak_mib).fold(0.0, f64::max);
            (
                format!("{:.2}", min(&p)),
                format!("{pp:.0}"),
                format!("{:.1}x", min(&p) / min(&wall)),
            )
        };
        println!(
            "| {} | {} | {} ({:.0}) | {:.2} | {:.2} | {:.1} | {:.0} | {peer_s} | {peer_peak} | {ratio} |",
            thousands(n as u64),
            thousands(truth.screening_persons),
            truth.drops,
            bytes as f64 / 1e6,
            min(&wall),
            median(&mut wall),
            best.cpu,
            peak,
        );
    }
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

/// Bytes of the files under a folder.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            total += du(&e.path());
        } else {
            total += e.metadata().unwrap().len();
        }
    }
    total
}

/// What the generator made: the figures the report must find.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Truth {
    screening_records: u64,
    screening_persons: u64,
    identified: u64,
    sa_records: u64,
    sa_persons: u64,
    drops: u64,
}

const TRUTH_FILE: &str = "bench-truth.json";

/// The store of `n` screening records for `seed`: reused when a previous
/// run finished it (its truth file is written last), otherwise generated.
fn cached_store(root: &Path, n: usize, seed: u64) -> (Truth, Option<f64>) {
    if let Ok(text) = std::fs::read_to_string(root.join(TRUTH_FILE)) {
        return (serde_json::from_str(&text).unwrap(), None);
    }
    if root.exists() {
        std::fs::remove_dir_all(root).unwrap();
    }
    let t = Instant::now();
    let staging = root.with_extension("staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).unwrap();
    }
    std::fs::create_dir_all(&staging).unwrap();
    let sa_n = (n as f64 * SA_SHARE).round() as usize;
    let mut paths = Vec::new();
    let screening = write_form(&staging, Form::Screening, n, ORGS, seed, &mut paths);
    let sa = write_form(
        &staging,
        Form::SelfAssessment,
        sa_n,
        SA_ORGS,
        seed,
        &mut paths,
    );
    eprintln!(
        "wrote {} drops in {:.1} s; ingesting",
        paths.len(),
        t.elapsed().as_secs_f64()
    );
    let store = Store::init(root, None, Some(FINGERPRINT)).unwrap();
    {
        let _lock = store.lock("bench", false).unwrap();
        recover(&store).unwrap();
        let offered = ingest(&store, &paths, |_| {}).unwrap();
        assert!(
            offered.iter().all(|o| o.entry.outcome == Outcome::Accepted),
            "every generated drop is accepted"
        );
    }
    std::fs::remove_dir_all(&staging).unwrap();
    let truth = Truth {
        screening_records: n as u64,
        screening_persons: screening.persons,
        identified: screening.identified,
        sa_records: sa_n as u64,
        sa_persons: sa.persons,
        drops: paths.len() as u64,
    };
    std::fs::write(
        root.join(TRUTH_FILE),
        serde_json::to_string_pretty(&truth).unwrap(),
    )
    .unwrap();
    (truth, Some(t.elapsed().as_secs_f64()))
}

/// One form's records, planned before any drop is written: which drop
/// each goes to, its key ids (0: none; equal ids are equal keys) and its
/// outcome code.
struct Plan {
    drop_of: Vec<u16>,
    passport: Vec<u32>,
    name: Vec<u32>,
    outcome: Vec<u8>,
    persons: u64,
    identified: u64,
}

/// Plans `n` records as persons:
///
/// - anonymous records, no key at all (5% of screening persons, 30% of
///   self-assessment respondents), each a person of its own;
/// - one record with a passport key, a name key or both (most persons);
/// - two records sharing a passport key, their name keys differing (a
///   name spelled two ways) or missing;
/// - two records sharing a name key, their passport keys differing (a new
///   passport) or missing;
/// - chains of three: A and B share a passport key, B and C a name key.
///
/// Records of one person go to different drops (NGOs or months) where
/// possible. Larger NGOs send more: NGO i has weight 1 / (1 + 0.2 i).
fn plan(n: usize, orgs: usize, with_outcome: bool, anonymous: f64, rng: &mut ChaCha8Rng) -> Plan {
    let weights: Vec<f64> = (0..orgs).map(|i| 1.0 / (1.0 + 0.2 * i as f64)).collect();
    let total: f64 = weights.iter().sum();
    let pick_drop = |rng: &mut ChaCha8Rng| -> u16 {
        let mut x = rng.random_range(0.0..total);
        let mut org = orgs - 1;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                org = i;
                break;
            }
            x -= w;
        }
        (org as u32 * MONTHS + rng.random_range(0..MONTHS)) as u16
    };
    let mut p = Plan {
        drop_of: Vec::with_capacity(n),
        passport: Vec::with_capacity(n),
        name: Vec::with_capacity(n),
        outcome: Vec::with_capacity(n),
        persons: 0,
        identified: 0,
    };
    let mut next_id = 0u32;
    let mut fresh = || {
        next_id += 1;
        next_id
    };
    let mut person: Vec<(u32, u32)> = Vec::with_capacity(3);
    let mut drops: Vec<u16> = Vec::with_capacity(3);
    while p.drop_of.len() < n {
        let left = n - p.drop_of.len();
        let x: f64 = rng.random();
        person.clear();
        let mut maybe = |rng: &mut ChaCha8Rng, share: f64| {
            if rng.random_bool(share) { fresh() } else { 0 }
        };
        if x < anonymous {
            person.push((0, 0));
        } else if x < 0.80 || left < 3 {
            let pp = rng.random_bool(0.6);
            let name = !pp || rng.random_bool(0.9);
            let pp = if pp { maybe(rng, 1.0) } else { 0 };
            let name = if name { maybe(rng, 1.0) } else { 0 };
            person.push((pp, name));
        } else if x < 0.91 {
            let k = maybe(rng, 1.0);
            let a = maybe(rng, 0.8);
            let b = maybe(rng, 0.8);
            person.extend([(k, a), (k, b)]);
        } else if x < 0.97 {
            let k = maybe(rng, 1.0);
            let a = maybe(rng, 0.3);
            let b = maybe(rng, 0.3);
            person.extend([(a, k), (b, k)]);
        } else {
            let a = maybe(rng, 1.0);
            let b = maybe(rng, 1.0);
            let first_name = maybe(rng, 0.5);
            let last_passport = maybe(rng, 0.5);
            person.extend([(a, first_name), (a, b), (last_passport, b)]);
        }
        drops.clear();
        let mut identified = false;
        for &(pp, name) in &person {
            let mut d = pick_drop(rng);
            for _ in 0..8 {
                if !drops.contains(&d) {
                    break;
                }
                d = pick_drop(rng);
            }
            drops.push(d);
            let outcome = if with_outcome {
                match rng.random_range(0..100) {
                    0..6 => IDENTIFIED,
                    6..76 => 2,
                    76..95 => 3,
                    _ => 0,
                }
            } else {
                0
            };
            identified |= outcome == IDENTIFIED;
            p.drop_of.push(d);
            p.passport.push(pp);
            p.name.push(name);
            p.outcome.push(outcome);
        }
        p.persons += 1;
        p.identified += u64::from(identified);
    }
    p
}

/// 32 key bytes for an id: distinct ids of one form and kind give distinct
/// first 8 bytes (splitmix64 is a bijection of its state).
fn key_bytes(seed: u64, form: u64, kind: u64, id: u64) -> [u8; 32] {
    let mut state = seed ^ (form << 60) ^ (kind << 56) ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

/// Nationalities the generator draws from (alpha-3, weights).
const NATIONALITIES: [(&str, u32); 10] = [
    ("IDN", 30),
    ("PHL", 20),
    ("MMR", 12),
    ("KHM", 10),
    ("VNM", 9),
    ("NPL", 7),
    ("BGD", 5),
    ("LKA", 3),
    ("THA", 2),
    ("LAO", 2),
];

/// Plans and writes one form's drops into `dir` (in parallel); returns the
/// plan's persons.
fn write_form(
    dir: &Path,
    form: Form,
    n: usize,
    orgs: usize,
    seed: u64,
    paths: &mut Vec<PathBuf>,
) -> Plan {
    let form_no = form as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ form_no);
    let anonymous = match form {
        Form::Screening => 0.05,
        Form::SelfAssessment => 0.30,
    };
    let p = plan(n, orgs, form == Form::Screening, anonymous, &mut rng);
    // Records by drop: a counting sort of record indices.
    let drops = orgs * MONTHS as usize;
    let mut start = vec![0usize; drops + 1];
    for &d in &p.drop_of {
        start[d as usize + 1] += 1;
    }
    for d in 0..drops {
        start[d + 1] += start[d];
    }
    let mut fill = start.clone();
    let mut by_drop = vec![0u32; n];
    for (i, &d) in p.drop_of.iter().enumerate() {
        by_drop[fill[d as usize]] = i as u32;
        fill[d as usize] += 1;
    }
    let written: Vec<PathBuf> = (0..drops)
        .into_par_iter()
        .filter(|&d| start[d + 1] > start[d])
        .map(|d| {
            let records = &by_drop[start[d]..start[d + 1]];
            write_drop(dir, form, d, records, &p, seed)
        })
        .collect();
    paths.extend(written);
    p
}

fn write_drop(dir: &Path, form: Form, d: usize, records: &[u32], p: &Plan, seed: u64) -> PathBuf {
    let form_no = form as u64;
    let org = format!("NGO{:02}", d / MONTHS as usize + 1);
    let period = Period {
        year: YEAR,
        month: (d % MONTHS as usize) as u32 + 1,
    };
    let month = period.to_string();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (form_no << 40) ^ (d as u64 + 1) << 20);
    let n = records.len();
    let schema = arrow_schema(form);
    let mut record_key = FixedSizeBinaryBuilder::with_capacity(n, 32);
    let mut passport = FixedSizeBinaryBuilder::with_capacity(n, 32);
    let mut name = FixedSizeBinaryBuilder::with_capacity(n, 32);
    let mut event_month = StringBuilder::with_capacity(n, n * 7);
    let mut age_band = StringBuilder::with_capacity(n, n * 5);
    for &i in records {
        let i = i as usize;
        record_key
            .append_value(key_bytes(seed, form_no, 0, i as u64 + 1))
            .unwrap();
        match p.passport[i] {
            0 => passport.append_null(),
            k => passport
                .append_value(key_bytes(seed, form_no, 1, k.into()))
                .unwrap(),
        }
        match p.name[i] {
            0 => name.append_null(),
            k => name
                .append_value(key_bytes(seed, form_no, 2, k.into()))
                .unwrap(),
        }
        event_month.append_value(&month);
        age_band.append_option(
            (!rng.random_bool(0.03)).then(|| AGE_BANDS[rng.random_range(0..AGE_BANDS.len())]),
        );
    }
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(record_key.finish()),
        Arc::new(passport.finish()),
        Arc::new(name.finish()),
        Arc::new(event_month.finish()),
        Arc::new(age_band.finish()),
    ];
    let nat_total: u32 = NATIONALITIES.iter().map(|(_, w)| w).sum();
    for c in form.schema().kept_columns() {
        let array: ArrayRef = match c.role {
            Role::YesNo => {
                let mut b = BooleanBuilder::with_capacity(n);
                for _ in 0..n {
                    b.append_option((!rng.random_bool(0.1)).then(|| rng.random_bool(0.3)));
                }
                Arc::new(b.finish())
            }
            Role::Nationality => {
                let mut b = StringBuilder::with_capacity(n, n * 3);
                for _ in 0..n {
                    let v = (!rng.random_bool(0.02)).then(|| {
                        let mut x = rng.random_range(0..nat_total);
                        NATIONALITIES
                            .iter()
                            .find(|(_, w)| {
                                let hit = x < *w;
                                x = x.saturating_sub(*w);
                                hit
                            })
                            .expect("weights add up")
                            .0
                    });
                    b.append_option(v);
                }
                Arc::new(b.finish())
            }
            _ if c.name == "outcome" => {
                let codes = &code_list("outcome").codes;
                assert_eq!(codes[IDENTIFIED as usize - 1], "identified");
                let mut b = StringBuilder::with_capacity(n, n * 12);
                for &i in records {
                    b.append_option(match p.outcome[i as usize] {
                        0 => None,
                        o => Some(codes[o as usize - 1]),
                    });
                }
                Arc::new(b.finish())
            }
            _ => {
                let codes = &code_list(c.codes.as_deref().expect("a coded column")).codes;
                let mut b = StringBuilder::with_capacity(n, n * 10);
                for _ in 0..n {
                    b.append_option(
                        (!rng.random_bool(0.05)).then(|| codes[rng.random_range(0..codes.len())]),
                    );
                }
                Arc::new(b.finish())
            }
        };
        arrays.push(array);
    }
    let batch = RecordBatch::try_new(schema, arrays).unwrap();
    // Keys only: drops of format 1 (no similarity encodings).
    let meta = DropMeta {
        format_version: "1".to_string(),
        form,
        schema_version: form.schema().version,
        org,
        period,
        key_fingerprint: FINGERPRINT.to_string(),
        normaliser_version: NORMALISER_VERSION.to_string(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        created: "2026-01-05T09:00:00Z".to_string(),
        rows: n as u64,
        rejected_rows: 0,
        content_sha256: None,
    };
    drop::write(dir, &meta, &[batch], false).unwrap()
}

/// A child process's wall time, CPU time and peak resident memory.
struct Measured {
    wall: f64,
    cpu: f64,
    peak_mib: f64,
}

/// Runs a command to its end, its output in `out/NAME.stdout|stderr`;
/// measures it through `wait4` (this child's own rusage). Returns the
/// measurement and whether it succeeded.
fn measure(cmd: &mut Command, out: &Path, name: &str) -> (Measured, bool) {
    let stdout = File::create(out.join(format!("{name}.stdout"))).unwrap();
    let stderr = File::create(out.join(format!("{name}.stderr"))).unwrap();
    let t = Instant::now();
    let child = cmd
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data; `wait4` fills it and `status`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (
        Measured {
            wall,
            cpu: secs(ru.ru_utime) + secs(ru.ru_stime),
            // Linux gives ru_maxrss in KiB.
            peak_mib: ru.ru_maxrss as f64 / 1024.0,
        },
        ok,
    )
}

fn run_report(store: &Path, out: &Path) -> Measured {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_safetally"));
    cmd.args(["report", "--store"])
        .arg(store)
        .args(["--from", FROM, "--to", TO, "--out"])
        .arg(out.join("report"));
    let (m, ok) = measure(&mut cmd, out, "report");
    if !ok {
        panic!(
            "safetally report failed: {}",
            std::fs::read_to_string(out.join("report.stderr")).unwrap_or_default()
        );
    }
    m
}

impl Truth {
    /// The figures both the report and the peer must give.
    fn figures(&self) -> Value {
        json!({
            "records": self.screening_records,
            "persons": self.screening_persons,
            "identified": self.identified,
            "sa_records": self.sa_records,
            "sa_persons": self.sa_persons,
        })
    }
}

/// The report found the persons the generator made.
fn check_report(dir: &Path, truth: &Truth) {
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let got = json!({
        "records": s["screening"]["records"],
        "persons": s["screening"]["persons"],
        "identified": s["screening"]["identified"],
        "sa_records": s["self_assessment"]["records"],
        "sa_persons": s["self_assessment"]["respondents"],
    });
    assert_eq!(
        got,
        truth.figures(),
        "the report's figures are the generator's"
    );
}

/// Runs the peer; its measurement and output, or why it could not run.
fn run_peer(store: &Path, out: &Path) -> Result<(Measured, Value), String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peer_report.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(store).args([FROM, TO]);
    let (m, ok) = measure(&mut cmd, out, "peer");
    let stderr = std::fs::read_to_string(out.join("peer.stderr")).unwrap_or_default();
    if !ok {
        return Err(if stderr.contains("No module named") {
            "pip install pyarrow scipy".to_string()
        } else {
            stderr.lines().last().unwrap_or("failed").to_string()
        });
    }
    let stdout = std::fs::read_to_string(out.join("peer.stdout")).unwrap();
    let v = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .map_err(|e| format!("peer output: {e}"))?;
    Ok((m, v))
}

/// The peer found the same persons.
fn check_peer(v: &Value, truth: &Truth) {
    let got = json!({
        "records": v["screening"]["records"],
        "persons": v["screening"]["persons"],
        "identified": v["screening"]["identified"],
        "sa_records": v["self_assessment"]["records"],
        "sa_persons": v["self_assessment"]["persons"],
    });
    assert_eq!(
        got,
        truth.figures(),
        "the peer's figures are the generator's"
    );
}
