//! Benchmark of linkage quality (issue 7): two NGOs' exports of the same
//! people, typed with the errors real hand-kept records have, linked by
//! exact keys, by safetally's fuzzy linkage (with and without the
//! hardening of the name encoding) and, when the Python packages anonlink
//! and clkhash are installed, by anonlink on clkhash encodings of the same
//! normalised fields, in the same run. Prints precision, recall and F1 of
//! the pairs each finds against the known true pairs; then the time of
//! linking 1 million records with fuzzy linkage next to exact keys alone.
//! Two rows no method can produce bound what any could: the best F1 at
//! precision 0.995 of linking whole classes of pairs (by what the
//! secretariat compares), the classes picked with the truth ([`bound`]).
//!
//! Run: `cargo bench --bench linkage`. `SEED=...` picks the data,
//! `MISSING=0.5` halves every rate of leaving a field out,
//! `MILLION=0` skips the timing at 1 million records (`MILLION=200000`
//! times another size), `PEER=0` skips anonlink.
//!
//! Everything goes through the real pipeline: raw CSV files are written,
//! pseudonymised under a task-force key into drops (format 2, with
//! encodings), ingested into a store and linked by the secretariat's code
//! (`safetally::report::link_window`), which says for every record its drop
//! and row: the row leads back to the generator's person. Every name, date
//! and passport number is made up by this file's code; the raw files and
//! the peer's input live in a temporary folder removed at the end, and
//! nothing here prints an identity value.
//!
//! The errors, per record, independently (rates in [`Rates`]): a one-letter
//! typo in a name token (a letter replaced, left out, doubled or added), a
//! transliteration variant (oe/u, dj/j, tj/c, y/j, ph/f, ...), day and month
//! swapped, one digit of the birth year wrong, a passport character wrong;
//! passport, birth date (or all but its year) and nationality left out.
//! The rates are chosen so that exact keys find about 0.73 of the true
//! pairs, as the issue measured on real exports.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::{Datelike, NaiveDate};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use safetally::drop::{DropMeta, DropWriter, FORMAT_VERSION};
use safetally::key::TaskForceKey;
use safetally::pseudonymise::normalise::{
    BirthDate, NORMALISER_VERSION, name_tokens, normalise_passport, parse_birth_date,
};
use safetally::pseudonymise::{Period, Pseudonymiser, Source, encode::NAME_FLIP};
use safetally::report::fuzzy::{self, Encodings, Params, read_drop_encodings};
use safetally::report::link_window;
use safetally::schema::Form;
use safetally::store::Store;
use safetally::store::ingest::ingest;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Error rates, per record.
#[derive(Debug, Clone, Copy)]
struct Rates {
    name_typo: f64,
    name_transliteration: f64,
    day_month_swap: f64,
    year_typo: f64,
    dob_missing: f64,
    dob_year_only: f64,
    passport_missing: f64,
    passport_typo: f64,
    nationality_missing: f64,
}

const RATES: Rates = Rates {
    name_typo: 0.12,
    name_transliteration: 0.08,
    day_month_swap: 0.06,
    year_typo: 0.05,
    dob_missing: 0.03,
    dob_year_only: 0.02,
    passport_missing: 0.12,
    passport_typo: 0.06,
    nationality_missing: 0.03,
};

/// Syllables of made-up names, per nationality: the pools sound alike
/// within a nationality, as real names do.
const SYLLABLES: [(&str, &[&str]); 5] = [
    (
        "IDN",
        &[
            "su", "ti", "wa", "ni", "sri", "ra", "ha", "ya", "nur", "di", "an", "to", "mi", "ja",
            "ka", "ri", "la", "se", "tya", "wan",
        ],
    ),
    (
        "PHL",
        &[
            "ma", "ri", "a", "ro", "sa", "lie", "jo", "ce", "lyn", "an", "na", "cris", "ti", "ne",
            "ra", "mon", "del", "cruz", "san", "tos",
        ],
    ),
    (
        "VNM",
        &[
            "ng", "uy", "en", "tran", "le", "pham", "hoa", "lan", "thi", "mai", "anh", "huong",
            "thu", "van", "minh", "kim",
        ],
    ),
    (
        "NPL",
        &[
            "si", "ta", "gi", "lax", "mi", "sa", "ri", "ta", "mang", "gu", "rung", "shre", "stha",
            "rai", "ku", "ma",
        ],
    ),
    (
        "MMR",
        &[
            "aye", "khin", "than", "dar", "moe", "win", "myint", "htwe", "aung", "su", "zin",
            "thu", "kyaw", "nyein",
        ],
    ),
];

/// Transliteration variants: one spelling of a sound for another.
const TRANSLITERATIONS: &[(&str, &str)] = &[
    ("u", "oe"),
    ("j", "dj"),
    ("c", "tj"),
    ("y", "j"),
    ("f", "ph"),
    ("th", "t"),
    ("kh", "k"),
    ("sh", "s"),
    ("i", "ie"),
    ("ng", "nk"),
    ("w", "v"),
    ("e", "a"),
];

#[derive(Debug, Clone)]
struct Person {
    nationality: &'static str,
    given: Vec<String>,
    family: Option<String>,
    dob: NaiveDate,
    /// 0 full date, 1 year only, 2 none.
    dob_kind: u8,
    passport: Option<String>,
    sex: &'static str,
}

/// Names of one nationality, most common first, drawn with Zipf weights.
struct Pool {
    given: Vec<String>,
    family: Vec<String>,
    zipf_given: Vec<f64>,
    zipf_family: Vec<f64>,
}

fn make_pool(rng: &mut ChaCha8Rng, syll: &[&str], n_given: usize, n_family: usize) -> Pool {
    let word = |rng: &mut ChaCha8Rng, seen: &mut std::collections::HashSet<String>| loop {
        let k = rng.random_range(2..=4);
        let w: String = (0..k)
            .map(|_| *syll.choose(rng).expect("syllables"))
            .collect();
        if w.len() >= 3 && seen.insert(w.clone()) {
            let mut c = w.chars();
            let first = c
                .next()
                .expect("a letter")
                .to_uppercase()
                .collect::<String>();
            return first + c.as_str();
        }
    };
    let mut seen = std::collections::HashSet::new();
    let given: Vec<String> = (0..n_given).map(|_| word(rng, &mut seen)).collect();
    let family: Vec<String> = (0..n_family).map(|_| word(rng, &mut seen)).collect();
    let zipf = |n: usize| -> Vec<f64> {
        let mut acc = 0.0;
        (0..n)
            .map(|i| {
                acc += 1.0 / (i as f64 + 1.0);
                acc
            })
            .collect()
    };
    Pool {
        zipf_given: zipf(given.len()),
        zipf_family: zipf(family.len()),
        given,
        family,
    }
}

fn draw<'a>(rng: &mut ChaCha8Rng, names: &'a [String], cumulative: &[f64]) -> &'a str {
    let x = rng.random_range(0.0..*cumulative.last().expect("names"));
    &names[cumulative.partition_point(|&c| c < x).min(names.len() - 1)]
}

struct Generator {
    rng: ChaCha8Rng,
    pools: Vec<(&'static str, Pool)>,
    /// Scale of the people's own missing passports and birth dates
    /// (`MISSING`; 1 as measured).
    missing: f64,
}

impl Generator {
    /// Name pools for `people` people: 400 given and 700 family names per
    /// nationality for up to 13,000 people, more in proportion beyond (a
    /// larger population has more names, not more people per name).
    fn new(seed: u64, people: usize, missing: f64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let scale = (people as f64 / 13_000.0).max(1.0);
        let (given, family) = ((400.0 * scale) as usize, (700.0 * scale) as usize);
        let pools = SYLLABLES
            .iter()
            .map(|(nat, syll)| {
                // Words of 2 to 4 syllables: keep the pools well inside
                // how many there are.
                let room = syll.len().pow(4) / 2;
                let shrink = ((given + family) as f64 / room as f64).max(1.0);
                let (g, f) = (
                    (given as f64 / shrink) as usize,
                    (family as f64 / shrink) as usize,
                );
                (*nat, make_pool(&mut rng, syll, g, f))
            })
            .collect();
        Generator {
            rng,
            pools,
            missing,
        }
    }

    fn person(&mut self) -> Person {
        let rng = &mut self.rng;
        let x = rng.random_range(0..100);
        let p = match x {
            0..=44 => 0,
            45..=79 => 1,
            80..=86 => 2,
            87..=93 => 3,
            _ => 4,
        };
        let (nationality, pool) = (&self.pools[p].0, &self.pools[p].1);
        let mut given = vec![draw(rng, &pool.given, &pool.zipf_given).to_string()];
        if rng.random_bool(0.3) {
            let second = draw(rng, &pool.given, &pool.zipf_given).to_string();
            if second != given[0] {
                given.push(second);
            }
        }
        let family = (!(*nationality == "IDN" && rng.random_bool(0.35)))
            .then(|| draw(rng, &pool.family, &pool.zipf_family).to_string());
        let dob = NaiveDate::from_ymd_opt(1965, 1, 1).expect("date")
            + chrono::Days::new(rng.random_range(0..14_600));
        // 6% of people give only a birth year or none (half each), 15% no
        // passport: scaled by `missing`.
        let x = rng.random_range(0..100) as f64;
        let dob_kind = if x < 100.0 - 6.0 * self.missing {
            0
        } else if x < 100.0 - 3.0 * self.missing {
            1
        } else {
            2
        };
        let passport = rng
            .random_bool(1.0 - 0.15 * self.missing)
            .then(|| match *nationality {
                "PHL" => format!(
                    "P{:07}{}",
                    rng.random_range(0..10_000_000),
                    (b'A' + rng.random_range(0..26u8)) as char
                ),
                _ => format!(
                    "{}{:07}",
                    (b'A' + rng.random_range(0..26u8)) as char,
                    rng.random_range(0..10_000_000)
                ),
            });
        let sex = if rng.random_bool(0.8) {
            "female"
        } else {
            "male"
        };
        Person {
            nationality,
            given,
            family,
            dob,
            dob_kind,
            passport,
            sex,
        }
    }

    /// A one-letter typo in a word of at least three letters.
    fn typo(&mut self, w: &str) -> String {
        let mut c: Vec<char> = w.chars().collect();
        let rng = &mut self.rng;
        let i = rng.random_range(1..c.len());
        let letter = (b'a' + rng.random_range(0..26u8)) as char;
        match rng.random_range(0..4) {
            0 => c[i] = if c[i] == letter { 'x' } else { letter },
            1 if c.len() > 3 => {
                c.remove(i);
            }
            2 => c.insert(i, c[i]),
            _ => c.insert(i, letter),
        }
        c.into_iter().collect()
    }

    fn transliterate(&mut self, w: &str) -> Option<String> {
        let lower = w.to_lowercase();
        let rules: Vec<(&str, &str)> = TRANSLITERATIONS
            .iter()
            .flat_map(|&(a, b)| [(a, b), (b, a)])
            .filter(|(a, _)| lower.contains(a))
            .collect();
        let (a, b) = *rules.choose(&mut self.rng)?;
        Some(lower.replacen(a, b, 1))
    }

    /// One NGO's record of a person, with errors.
    fn record(&mut self, p: &Person, r: &Rates, case: usize) -> [String; 8] {
        let mut tokens: Vec<String> = p.given.iter().chain(&p.family).cloned().collect();
        let n_tokens = tokens.len();
        if self.rng.random_bool(r.name_typo) {
            let t = self.rng.random_range(0..n_tokens);
            tokens[t] = self.typo(&tokens[t]);
        }
        if self.rng.random_bool(r.name_transliteration) {
            let t = self.rng.random_range(0..n_tokens);
            match self.transliterate(&tokens[t]) {
                Some(v) => tokens[t] = v,
                None => tokens[t] = self.typo(&tokens[t]),
            }
        }
        let n_given = p.given.len().min(n_tokens);
        let (mut given, mut family) = (tokens[..n_given].join(" "), tokens[n_given..].join(" "));
        if self.rng.random_bool(0.1) {
            std::mem::swap(&mut given, &mut family);
        }
        if self.rng.random_bool(0.1) {
            given = given.to_uppercase();
            family = family.to_uppercase();
        }
        let mut dob = p.dob;
        if self.rng.random_bool(r.day_month_swap) && dob.day() <= 12 && dob.day() != dob.month() {
            dob = NaiveDate::from_ymd_opt(dob.year(), dob.day(), dob.month()).expect("swap");
        }
        if self.rng.random_bool(r.year_typo) {
            let y = dob.year();
            let digit = self.rng.random_range(1..10);
            let new = if self.rng.random_bool(0.7) {
                y - y % 10 + (y % 10 + digit) % 10
            } else {
                y - (y / 10 % 10) * 10 + ((y / 10 % 10 + digit) % 10) * 10
            };
            if let Some(d) = NaiveDate::from_ymd_opt(new, dob.month(), dob.day())
                && (1920..2010).contains(&new)
            {
                dob = d;
            }
        }
        let kind = if p.dob_kind == 0 && self.rng.random_bool(r.dob_missing) {
            2
        } else if p.dob_kind == 0 && self.rng.random_bool(r.dob_year_only) {
            1
        } else {
            p.dob_kind
        };
        let dob_text = match kind {
            0 if self.rng.random_bool(0.5) => dob.format("%Y-%m-%d").to_string(),
            0 => dob.format("%d/%m/%Y").to_string(),
            1 => dob.year().to_string(),
            _ => String::new(),
        };
        let mut passport = p.passport.clone().unwrap_or_default();
        if !passport.is_empty() && self.rng.random_bool(r.passport_missing) {
            passport.clear();
        }
        if !passport.is_empty() && self.rng.random_bool(r.passport_typo) {
            let mut c: Vec<char> = passport.chars().collect();
            let i = self.rng.random_range(1..c.len() - 1);
            let d = (b'0' + self.rng.random_range(0..10u8)) as char;
            c[i] = if c[i] == d { '0' } else { d };
            passport = c.into_iter().collect();
        }
        let nationality = if self.rng.random_bool(r.nationality_missing) {
            String::new()
        } else {
            p.nationality.to_string()
        };
        let sex = if self.rng.random_bool(0.02) {
            String::new()
        } else {
            p.sex.to_string()
        };
        [
            format!("R{case:07}"),
            family,
            given,
            dob_text,
            sex,
            nationality,
            passport,
            String::new(),
        ]
    }
}

/// Two (or more) NGOs' exports: rows per NGO with the person each row is.
struct Exports {
    rows: Vec<Vec<[String; 8]>>,
    who: Vec<Vec<u32>>,
}

/// NGO A holds `a` people; NGO B holds `pairs` of A's people and `b -
/// pairs` others. Each record is typed with its own errors.
fn exports(seed: u64, a: usize, b: usize, pairs: usize, rates: &Rates, missing: f64) -> Exports {
    let mut g = Generator::new(seed, a + b - pairs, missing);
    let people: Vec<Person> = (0..a + b - pairs).map(|_| g.person()).collect();
    let mut shared: Vec<u32> = (0..a as u32).collect();
    for i in (1..shared.len()).rev() {
        let j = g.rng.random_range(0..=i);
        shared.swap(i, j);
    }
    let mut in_b: Vec<u32> = shared[..pairs].to_vec();
    in_b.extend(a as u32..(a + b - pairs) as u32);
    for i in (1..in_b.len()).rev() {
        let j = g.rng.random_range(0..=i);
        in_b.swap(i, j);
    }
    let who = vec![(0..a as u32).collect::<Vec<u32>>(), in_b];
    let mut case = 0;
    let rows = who
        .iter()
        .map(|ids| {
            ids.iter()
                .map(|&i| {
                    case += 1;
                    g.record(&people[i as usize], rates, case)
                })
                .collect()
        })
        .collect();
    Exports { rows, who }
}

const COLUMNS: [&str; 7] = [
    "case_ref",
    "family_name",
    "given_name",
    "date_of_birth",
    "sex",
    "nationality",
    "passport_number",
];

/// Writes an export as a screening CSV (columns not generated left blank).
fn write_csv(path: &Path, rows: &[[String; 8]]) {
    let header: Vec<&str> = Form::Screening
        .schema()
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let mut w = csv::Writer::from_path(path).expect("CSV");
    w.write_record(&header).expect("header");
    for r in rows {
        let line: Vec<&str> = header
            .iter()
            .map(|h| match COLUMNS.iter().position(|c| c == h) {
                Some(i) => r[i].as_str(),
                None if *h == "screening_date" => "2025-03-15",
                None => "",
            })
            .collect();
        w.write_record(&line).expect("row");
    }
    w.flush().expect("flush");
}

const PERIOD: Period = Period {
    year: 2025,
    month: 3,
};

/// Pseudonymises every export into a drop (name flip probability `flip`)
/// and ingests them into a new store under `dir`.
fn store_of(dir: &Path, csvs: &[PathBuf], key: &TaskForceKey, flip: f64) -> (Store, f64) {
    let drops = dir.join("drops");
    std::fs::create_dir_all(&drops).unwrap();
    let started = Instant::now();
    let mut paths = Vec::new();
    for (i, csv) in csvs.iter().enumerate() {
        let org = format!("NGO{:02}", i + 1);
        let p = Pseudonymiser::new(
            key,
            Form::Screening,
            &org,
            PERIOD,
            NaiveDate::from_ymd_opt(2025, 12, 31).unwrap(),
        )
        .with_name_flip(flip);
        let mut meta = DropMeta {
            format_version: FORMAT_VERSION.to_string(),
            form: Form::Screening,
            schema_version: Form::Screening.schema().version,
            org,
            period: PERIOD,
            key_fingerprint: key.fingerprint(),
            normaliser_version: NORMALISER_VERSION.to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created: String::new(),
            rows: 0,
            rejected_rows: 0,
            content_sha256: None,
        };
        let sources = [Source {
            name: "export.csv".into(),
            file: safetally::raw::open(csv).unwrap(),
        }];
        let (writer, outcome) = p
            .run_into(&sources, || DropWriter::create(&drops, &meta))
            .unwrap();
        assert!(
            outcome.problems.is_empty(),
            "the generator wrote rows the pseudonymiser rejects: {} problems",
            outcome.problems.len()
        );
        meta.created = "2025-04-01T00:00:00Z".into();
        meta.rows = outcome.rows as u64;
        paths.push(writer.finish(&meta, true).unwrap());
    }
    let pseudonymise_s = started.elapsed().as_secs_f64();
    let store = Store::init(&dir.join("store"), None, Some(&key.fingerprint())).unwrap();
    ingest(&store, &paths, |_| {}).unwrap();
    (store, pseudonymise_s)
}

/// Precision, recall and F1 of found pairs against `true_pairs`.
#[derive(Debug, Clone, Copy)]
struct Quality {
    found: usize,
    right: usize,
    true_pairs: usize,
}

impl Quality {
    fn precision(&self) -> f64 {
        if self.found == 0 {
            1.0
        } else {
            self.right as f64 / self.found as f64
        }
    }
    fn recall(&self) -> f64 {
        self.right as f64 / self.true_pairs as f64
    }
    fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

/// Links the store and scores the pairs of records of different NGOs that
/// end in one person. Returns the quality and the seconds linkage took.
fn evaluate(store: &Store, ex: &Exports, fuzzy: bool, params: &Params) -> (Quality, f64, u64) {
    let started = Instant::now();
    let linked = link_window(store, PERIOD, PERIOD, fuzzy, params).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let screening = &linked[0];
    let t = &screening.trace;
    let ngo_of_seq = ngo_of_seq(screening);
    let mut members: HashMap<u32, Vec<(usize, u32)>> = HashMap::new();
    for i in 0..t.person.len() {
        let ngo = ngo_of_seq[&t.drop_seq[i]];
        let who = ex.who[ngo][t.pos[i] as usize];
        members.entry(t.person[i]).or_default().push((ngo, who));
    }
    if std::env::var("DIAG").is_ok() {
        if let Some(f) = &screening.stats.fuzzy {
            eprintln!("{}", serde_json::to_string(&f.model).unwrap());
            eprintln!(
                "above {} passports {} few {} links {} refused {}",
                f.pairs_above_threshold,
                f.refused_passports_differ,
                f.refused_too_few_strong_fields,
                f.fuzzy_links,
                f.refused_by_chaining_guard
            );
        }
        diagnose(
            store,
            screening,
            &ngo_of_seq,
            ex,
            &members,
            params.name_flip,
        );
    }
    let (mut found, mut right) = (0, 0);
    for m in members.values() {
        for (x, &(na, wa)) in m.iter().enumerate() {
            for &(nb, wb) in &m[x + 1..] {
                if na != nb {
                    found += 1;
                    right += (wa == wb) as usize;
                }
            }
        }
    }
    let true_pairs = {
        let a: std::collections::HashSet<u32> = ex.who[0].iter().copied().collect();
        ex.who[1].iter().filter(|w| a.contains(w)).count()
    };
    let fuzzy_links = screening.stats.fuzzy.as_ref().map_or(0, |f| f.fuzzy_links);
    (
        Quality {
            found,
            right,
            true_pairs,
        },
        secs,
        fuzzy_links,
    )
}

/// The most any linkage rule over what the secretariat compares could
/// reach on this set, found with the truth: the pairs of records of the
/// two NGOs that no exact key joins (every one, not only those blocking
/// makes candidates) are grouped by what a rule can tell them apart by;
/// each group is linked whole or not at all (its pairs look the same to
/// the rule), and groups are added to the exact keys' links purest first,
/// as only knowing the truth allows. The best F1 at precision `min_precision` or
/// more over that order bounds every rule that sees those classes.
/// `fine`: name and passport Dice in narrow bins (0.02, 0.05) and the
/// name's exact count, instead of the linkage's levels and counts 2, 3, 4+
/// (the finer the classes, the more the truth overfits them: a looser
/// bound). Returns the best quality and how many classes there were.
fn bound(
    store: &Store,
    ex: &Exports,
    exact: &Quality,
    params: &Params,
    fine: bool,
    min_precision: f64,
) -> (Quality, usize) {
    use safetally::pseudonymise::encode::{NAME_BITS, PASSPORT_BITS, dice, dice_unflipped};
    let linked = link_window(store, PERIOD, PERIOD, false, params).unwrap();
    let l = &linked[0];
    let ngo_of_seq = ngo_of_seq(l);
    let (enc, index, who) = encodings_of(store, l, &ngo_of_seq, ex);
    // The exact-key group of each record.
    let mut group = vec![0u32; enc.len()];
    for i in 0..l.trace.person.len() {
        let ngo = ngo_of_seq[&l.trace.drop_seq[i]];
        let w = ex.who[ngo][l.trace.pos[i] as usize];
        group[index[&(ngo, w)]] = l.trace.person[i];
    }
    // How many exact-key groups hold each name.
    let mut holders: HashMap<u64, std::collections::HashSet<u32>> = HashMap::new();
    for (&name, &g) in enc.name_key.iter().zip(&group) {
        if name != 0 {
            holders.entry(name).or_default().insert(g);
        }
    }
    let (nl, pl) = (NAME_BITS / 8, PASSPORT_BITS / 8);
    let class_of = |a: usize, b: usize| -> [u8; 6] {
        let lv = enc.compare(a, b, params.name_flip).0;
        let same_name = enc.name_key[a] == enc.name_key[b] && enc.name_key[a] != 0;
        let count = if same_name {
            holders[&enc.name_key[a]].len()
        } else {
            0
        };
        if !fine {
            return [lv[0], lv[1], lv[2], lv[3], lv[4], count.min(4) as u8];
        }
        let name = if lv[0] == fuzzy::MISSING {
            u8::MAX
        } else {
            let d = dice_unflipped(
                &enc.name[a * nl..(a + 1) * nl],
                &enc.name[b * nl..(b + 1) * nl],
                params.name_flip,
            );
            (d * 50.0) as u8
        };
        let passport = if lv[2] == fuzzy::MISSING {
            u8::MAX
        } else {
            let d = dice(
                &enc.passport[a * pl..(a + 1) * pl],
                &enc.passport[b * pl..(b + 1) * pl],
            );
            (d * 20.0) as u8
        };
        [name, lv[1], passport, lv[3], lv[4], count.min(50) as u8]
    };
    // Every pair of records of the two NGOs, whether blocking makes it a
    // candidate or not: the bound does not depend on the blocking either.
    let (side_a, side_b): (Vec<usize>, Vec<usize>) = (0..enc.len()).partition(|&i| who[i].0 == 0);
    let classes = side_a
        .par_iter()
        .fold(
            HashMap::new,
            |mut classes: HashMap<[u8; 6], (usize, usize)>, &a| {
                for &b in &side_b {
                    if group[a] == group[b] {
                        continue;
                    }
                    let c = classes.entry(class_of(a, b)).or_default();
                    if who[a].1 == who[b].1 {
                        c.1 += 1;
                    } else {
                        c.0 += 1;
                    }
                }
                classes
            },
        )
        .reduce(HashMap::new, |mut x, y| {
            for (k, (f, t)) in y {
                let c = x.entry(k).or_default();
                c.0 += f;
                c.1 += t;
            }
            x
        });
    let mut order: Vec<([u8; 6], (usize, usize))> = classes.into_iter().collect();
    let n_classes = order.len();
    // Purest first (true share, cross-multiplied), then the larger.
    order.sort_by(|(ka, (fa, ta)), (kb, (fb, tb))| {
        (tb * (fa + ta))
            .cmp(&(ta * (fb + tb)))
            .then(tb.cmp(ta))
            .then(ka.cmp(kb))
    });
    let mut best = *exact;
    let mut at = *exact;
    for (_, (f, t)) in order {
        at.found += f + t;
        at.right += t;
        if at.precision() >= min_precision && at.f1() > best.f1() {
            best = at;
        }
    }
    (best, n_classes)
}

/// Which export each drop is: by its organisation.
fn ngo_of_seq(l: &safetally::report::FormLinkage) -> HashMap<u32, usize> {
    l.drops
        .iter()
        .map(|d| {
            let i: usize = d.org.trim_start_matches("NGO").parse().unwrap();
            (d.ledger_seq as u32, i - 1)
        })
        .collect()
}

/// The encodings of the window's records, read from the drops, with
/// nationality and sex codes made from the exports (the bench's stand-in
/// for the codes the report reads); the record each (NGO, person) is, and
/// the (NGO, person) each record is.
type Who = (usize, u32);
fn encodings_of(
    store: &Store,
    l: &safetally::report::FormLinkage,
    ngo_of_seq: &HashMap<u32, usize>,
    ex: &Exports,
) -> (Encodings, HashMap<Who, usize>, Vec<Who>) {
    let mut enc = Encodings::new();
    let mut index: HashMap<Who, usize> = HashMap::new();
    let mut who = Vec::new();
    for d in &l.drops {
        let path = safetally::store::ingest::resolve(store.root(), &d.path);
        let e = read_drop_encodings(&path).unwrap().unwrap();
        let ngo = ngo_of_seq[&(d.ledger_seq as u32)];
        for i in 0..e.len() {
            let nat = if ex.rows[ngo][i][5].is_empty() {
                0
            } else {
                ex.rows[ngo][i][5].len() as u16 + ex.rows[ngo][i][5].as_bytes()[0] as u16
            };
            let sex = if ex.rows[ngo][i][4].is_empty() {
                0
            } else {
                ex.rows[ngo][i][4].len() as u8
            };
            index.insert((ngo, ex.who[ngo][i]), enc.len());
            who.push((ngo, ex.who[ngo][i]));
            enc.push_from(&e, i, nat, sex);
        }
    }
    (enc, index, who)
}

/// Tallies the comparison levels (name, date of birth, passport,
/// nationality, sex) of missed true pairs and of wrong links (levels only:
/// no value).
fn diagnose(
    store: &Store,
    l: &safetally::report::FormLinkage,
    ngo_of_seq: &HashMap<u32, usize>,
    ex: &Exports,
    members: &HashMap<u32, Vec<(usize, u32)>>,
    name_flip: f64,
) {
    let (enc, index, _) = encodings_of(store, l, ngo_of_seq, ex);
    let mut missed: HashMap<[u8; 5], usize> = HashMap::new();
    let mut wrong: HashMap<[u8; 5], usize> = HashMap::new();
    let mut person_of: HashMap<(usize, u32), u32> = HashMap::new();
    for (p, m) in members {
        for &x in m {
            person_of.insert(x, *p);
        }
        for (x, &(na, wa)) in m.iter().enumerate() {
            for &(nb, wb) in &m[x + 1..] {
                if na != nb && wa != wb {
                    let lv = enc.compare(index[&(na, wa)], index[&(nb, wb)], name_flip).0;
                    *wrong.entry(lv).or_default() += 1;
                }
            }
        }
    }
    for &w in &ex.who[1] {
        if let (Some(pa), Some(pb)) = (person_of.get(&(0, w)), person_of.get(&(1, w)))
            && pa != pb
        {
            let lv = enc.compare(index[&(0, w)], index[&(1, w)], name_flip).0;
            *missed.entry(lv).or_default() += 1;
        }
    }
    for (name, t) in [("missed", missed), ("wrong", wrong)] {
        let mut v: Vec<_> = t.into_iter().collect();
        v.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        eprintln!("{name} (levels name,dob,passport,nat,sex; 255 missing):");
        for (lv, n) in v.iter().take(25) {
            eprintln!("  {lv:?} {n}");
        }
    }
}

/// The normalised fields of every record, for the peer: the same
/// normalisation the pseudonymiser applies before encoding.
fn peer_input(path: &Path, ex: &Exports) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record([
        "side",
        "row",
        "name",
        "dob",
        "passport",
        "nationality",
        "sex",
    ])
    .unwrap();
    for (side, rows) in ex.rows.iter().enumerate() {
        for (i, r) in rows.iter().enumerate() {
            let name = name_tokens(&r[1], &r[2]).join(" ");
            let dob = match parse_birth_date(&r[3]) {
                Ok(BirthDate::Full(d)) => d.format("%Y-%m-%d").to_string(),
                Ok(BirthDate::Year(y)) => y.to_string(),
                Err(_) => String::new(),
            };
            let passport = normalise_passport(&r[6]).ok().flatten().unwrap_or_default();
            w.write_record([
                side.to_string(),
                i.to_string(),
                name,
                dob,
                passport,
                r[5].clone(),
                r[4].clone(),
            ])
            .unwrap();
        }
    }
    w.flush().unwrap();
}

/// anonlink at each threshold it tried: (threshold, quality), and its
/// seconds; or why it did not run.
fn run_peer(dir: &Path, ex: &Exports) -> Result<(Vec<(f64, Quality)>, f64), String> {
    let input = dir.join("peer-input.csv");
    let output = dir.join("peer-pairs.json");
    peer_input(&input, ex);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer_anonlink.py");
    let started = Instant::now();
    let out = Command::new("python3")
        .arg(&script)
        .arg(&input)
        .arg(&output)
        .output()
        .map_err(|e| format!("python3 not found ({e})"))?;
    let secs = started.elapsed().as_secs_f64();
    if out.status.code() == Some(3) {
        return Err("not installed (pip install anonlink clkhash)".into());
    }
    if !out.status.success() {
        return Err(format!(
            "failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&output).unwrap()).map_err(|e| e.to_string())?;
    let a: std::collections::HashSet<u32> = ex.who[0].iter().copied().collect();
    let true_pairs = ex.who[1].iter().filter(|w| a.contains(w)).count();
    let mut out = Vec::new();
    for t in v["thresholds"].as_array().unwrap() {
        let pairs = t["pairs"].as_array().unwrap();
        let right = pairs
            .iter()
            .filter(|p| {
                let (i, j) = (p[0].as_u64().unwrap(), p[1].as_u64().unwrap());
                ex.who[0][i as usize] == ex.who[1][j as usize]
            })
            .count();
        out.push((
            t["threshold"].as_f64().unwrap(),
            Quality {
                found: pairs.len(),
                right,
                true_pairs,
            },
        ));
    }
    Ok((out, secs))
}

fn row(table: &mut String, name: &str, q: &Quality, extra: &str) {
    writeln!(
        table,
        "| {name} | {} | {} | {:.4} | {:.4} | {:.4} | {extra} |",
        q.found,
        q.right,
        q.precision(),
        q.recall(),
        q.f1()
    )
    .unwrap();
}

fn main() {
    let seed: u64 = env_or("SEED", 11);
    let million: usize = env_or("MILLION", 1_000_000);
    let peer: bool = env_or("PEER", 1) != 0;
    let (a, b, pairs) = (10_000, 6_000, 3_000);
    let tmp = tempfile::tempdir().unwrap();
    let mut key_bytes = [0u8; 32];
    ChaCha8Rng::seed_from_u64(seed ^ 0x5afe).fill(&mut key_bytes);
    let key = TaskForceKey::from_bytes(key_bytes);

    // `MISSING` scales every rate of leaving a field out (passport, birth
    // date, nationality; per person and per record), to show how the
    // quality depends on how many pairs have only a name in common.
    let missing: f64 = env_or("MISSING", 1.0_f64).clamp(0.01, 1.5);
    let rates = Rates {
        passport_missing: RATES.passport_missing * missing,
        dob_missing: RATES.dob_missing * missing,
        dob_year_only: RATES.dob_year_only * missing,
        nationality_missing: RATES.nationality_missing * missing,
        ..RATES
    };
    let ex = exports(seed, a, b, pairs, &rates, missing);
    let csvs: Vec<PathBuf> = ex
        .rows
        .iter()
        .enumerate()
        .map(|(i, rows)| {
            let p = tmp.path().join(format!("ngo{}.csv", i + 1));
            write_csv(&p, rows);
            p
        })
        .collect();
    let params = Params {
        min_posterior: env_or("POSTERIOR", Params::default().min_posterior),
        min_strong_fields: env_or("STRONG", Params::default().min_strong_fields),
        ..Params::default()
    };
    let (hardened, _) = store_of(&tmp.path().join("hardened"), &csvs, &key, NAME_FLIP);
    let (plain, _) = store_of(&tmp.path().join("plain"), &csvs, &key, 0.0);
    let (exact, exact_s, _) = evaluate(&hardened, &ex, false, &params);
    let (fuzzy, fuzzy_s, fuzzy_links) = evaluate(&hardened, &ex, true, &params);
    // Drops whose name filters were not hardened: the secretariat is told
    // so (nothing to take back out of the Dice).
    let plain_params = Params {
        name_flip: 0.0,
        ..params.clone()
    };
    let (unhardened, _, plain_links) = evaluate(&plain, &ex, true, &plain_params);
    // The hardened drops compared on the flipped filters as they are,
    // without taking the flips' expected effect out of the Dice.
    let (uncorrected, _, uncorrected_links) = evaluate(&hardened, &ex, true, &plain_params);
    // What no rule over the compared fields can beat on this set, at the
    // issue's precision (the truth picks the classes).
    let bounds = [false, true].map(|fine| bound(&hardened, &ex, &exact, &params, fine, 0.995));
    let mut table = String::new();
    writeln!(
        table,
        "Linkage quality: NGO A {a} records, NGO B {b}, {pairs} true pairs (seed {seed}, \
         missing fields x{missing}); pairs of records of different NGOs linked into one person"
    )
    .unwrap();
    writeln!(
        table,
        "| method | pairs found | right | precision | recall | F1 | notes |"
    )
    .unwrap();
    writeln!(table, "|---|---|---|---|---|---|---|").unwrap();
    row(
        &mut table,
        "exact keys (DESIGN.md)",
        &exact,
        &format!("{exact_s:.2} s"),
    );
    row(
        &mut table,
        "safetally fuzzy, hardened (name bits flipped p=0.02)",
        &fuzzy,
        &format!("{fuzzy_links} fuzzy links, {fuzzy_s:.2} s"),
    );
    row(
        &mut table,
        "safetally fuzzy, no hardening",
        &unhardened,
        &format!("{plain_links} fuzzy links"),
    );
    row(
        &mut table,
        "safetally fuzzy, hardened, Dice of the flipped filters",
        &uncorrected,
        &format!("{uncorrected_links} fuzzy links"),
    );
    for ((q, classes), what) in bounds.iter().zip([
        "the linkage's levels, name held by 2, 3 or 4+ groups",
        "name Dice in bins of 0.02, passport Dice in bins of 0.05, name count",
    ]) {
        row(
            &mut table,
            "bound: best any rule could do at precision >= 0.995 (truth-chosen)",
            q,
            &format!("every pair classed by {what}: {classes} classes"),
        );
    }
    if peer {
        match run_peer(tmp.path(), &ex) {
            Ok((results, secs)) => {
                let best = results
                    .iter()
                    .max_by(|x, y| x.1.f1().total_cmp(&y.1.f1()))
                    .expect("thresholds");
                row(
                    &mut table,
                    "anonlink + clkhash, best threshold",
                    &best.1,
                    &format!(
                        "Dice >= {:.3} of {} tried, {secs:.1} s; F1 of safetally / anonlink {:.3}",
                        best.0,
                        results.len(),
                        fuzzy.f1() / best.1.f1()
                    ),
                );
                for (t, q) in &results {
                    eprintln!(
                        "anonlink at {t:.3}: precision {:.4} recall {:.4} F1 {:.4}",
                        q.precision(),
                        q.recall(),
                        q.f1()
                    );
                }
            }
            Err(why) => {
                writeln!(table, "| anonlink + clkhash | | | | | | {why} |").unwrap();
            }
        }
    }
    println!("{table}");

    if million > 0 {
        let (ma, mb) = (million * 3 / 5, million * 2 / 5);
        let mpairs = mb / 2;
        let started = Instant::now();
        let ex = exports(seed + 1, ma, mb, mpairs, &RATES, 1.0);
        let dir = tmp.path().join("million");
        std::fs::create_dir_all(&dir).unwrap();
        let csvs: Vec<PathBuf> = ex
            .rows
            .iter()
            .enumerate()
            .map(|(i, rows)| {
                let p = dir.join(format!("ngo{}.csv", i + 1));
                write_csv(&p, rows);
                p
            })
            .collect();
        let generated = started.elapsed().as_secs_f64();
        let (store, pseudonymise_s) = store_of(&dir, &csvs, &key, NAME_FLIP);
        eprintln!(
            "{million} records: generated in {generated:.1} s, pseudonymised in {pseudonymise_s:.1} s"
        );
        let (exact, exact_s, _) = evaluate(&store, &ex, false, &params);
        let (fuzzy, fuzzy_s, links) = evaluate(&store, &ex, true, &params);
        println!(
            "Linkage of {million} records ({ma} + {mb}, {mpairs} true pairs), read from the \
             store and linked (link_window, wall clock)"
        );
        println!("| method | seconds | precision | recall | F1 | notes |");
        println!("|---|---|---|---|---|---|");
        println!(
            "| exact keys | {exact_s:.2} | {:.4} | {:.4} | {:.4} | |",
            exact.precision(),
            exact.recall(),
            exact.f1()
        );
        println!(
            "| fuzzy (exact keys, then scored pairs) | {fuzzy_s:.2} | {:.4} | {:.4} | {:.4} | \
             {links} fuzzy links; {:.1}x the exact-key time |",
            fuzzy.precision(),
            fuzzy.recall(),
            fuzzy.f1(),
            fuzzy_s / exact_s
        );
    }
}
