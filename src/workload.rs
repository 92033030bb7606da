//! Synthetic workloads of any size (`safetally synth`, the benchmarks):
//! persons screened by several organisations over several months, each
//! record written the way its organisation writes (case, particles, one
//! name field, date and passport formats, nationality spellings), as the
//! demo's pilot data is, but for millions of persons and hundreds of
//! organisations.
//!
//! Every record is made as a raw CSV row in memory and, for drops, goes
//! through the same pseudonymisation as an NGO's `safetally pseudonymise`
//! (`Pseudonymiser::run_into` into a `DropWriter`), one drop per form,
//! organisation and month, drops in parallel. With `raw` the CSV files are
//! written instead. Seeded and deterministic: a person's identity and
//! records depend only on the seed and the person's number, so the same
//! seed (and key) gives byte-identical files whatever the thread count.
//!
//! Identities are made unique by construction: a person's number is mapped
//! one-to-one onto a made-up name word and a birth date, and onto a
//! passport number, so no two persons share a match key and every later
//! record of a person shares a key with the first. `truth.json` holds the
//! counts the report must find. Names, birth dates and passport numbers
//! exist only in memory: this module never prints or logs one, and writes
//! them only to the raw files a caller asked for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate};
use rand::seq::IndexedRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::drop::{self, DropMeta, FORMAT_VERSION};
use crate::error::{Error, Result};
use crate::key::TaskForceKey;
use crate::pseudonymise::normalise::{NORMALISER_VERSION, name_tokens};
use crate::pseudonymise::{Period, Pseudonymiser, Source};
use crate::schema::{Form, Role, code_list};
use crate::synth::{
    IDN_FAMILY, IDN_GIVEN, OTHER, PHL_FAMILY, PHL_GIVEN, RESPELLINGS, format_date, format_passport,
    nationality_text,
};

/// The size and shape of a workload.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Seed of every random choice.
    pub seed: u64,
    /// Distinct persons screened.
    pub persons: usize,
    /// Distinct self-assessment respondents.
    pub respondents: usize,
    /// Member organisations (`NGO01`...); every one screens, some also
    /// hand out the self-assessment form.
    pub orgs: usize,
    /// First month.
    pub from: Period,
    /// Months in the window.
    pub months: u32,
}

/// Persons and respondents together must stay below this (the number
/// space the names and birth dates are drawn from one-to-one).
pub const MAX_PERSONS: usize = 200_000_000;

impl WorkloadSpec {
    /// The last month.
    pub fn to(&self) -> Period {
        let mut p = self.from;
        for _ in 1..self.months {
            p = p.next();
        }
        p
    }

    /// Refuses a workload that cannot be made; the message says what to
    /// change.
    pub fn validate(&self, today: NaiveDate) -> Result<()> {
        if self.persons == 0 {
            return Err(Error::Usage("--persons must be at least 1".into()));
        }
        if self.persons + self.respondents > MAX_PERSONS {
            return Err(Error::Usage(format!(
                "at most {MAX_PERSONS} persons and respondents together"
            )));
        }
        if !(1..=9999).contains(&self.orgs) {
            return Err(Error::Usage("--orgs must be from 1 to 9999".into()));
        }
        if !(1..=1200).contains(&self.months) {
            return Err(Error::Usage("--months must be from 1 to 1200".into()));
        }
        if self.from.year < 1950 {
            return Err(Error::Usage("--from must be 1950-01 or later".into()));
        }
        if self.to() > Period::of(today) {
            return Err(Error::Usage(format!(
                "the window {} to {} ends after this month: pseudonymise refuses events in \
                 the future. Give an earlier --from or fewer --months",
                self.from,
                self.to()
            )));
        }
        Ok(())
    }

    fn org_code(&self, i: usize) -> String {
        let width = self.orgs.to_string().len().max(2);
        format!("NGO{:0width$}", i + 1)
    }
}

/// What to write.
pub enum Output<'a> {
    /// Pseudonymised drops, as `pseudonymise` writes them under `key`
    /// (`today` bounds dates, as for an NGO on that day).
    Drops {
        /// The task-force key.
        key: &'a TaskForceKey,
        /// Today's date.
        today: NaiveDate,
    },
    /// The raw CSV files an NGO would pseudonymise.
    Raw,
}

/// The counts the generated data adds up to (no identity).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkloadTruth {
    /// The seed.
    pub seed: u64,
    /// First month.
    pub from: String,
    /// Last month.
    pub to: String,
    /// Organisations.
    pub orgs: usize,
    /// Files written (drops or raw files).
    pub files: usize,
    /// Distinct persons screened.
    pub screening_persons: u64,
    /// Screening records.
    pub screening_records: u64,
    /// Persons identified as victims of trafficking.
    pub identified_persons: u64,
    /// Persons screened by 1, 2, and 3 or more organisations.
    pub screened_by_number_of_ngos: BTreeMap<String, u64>,
    /// Distinct self-assessment respondents (an anonymous response is one).
    pub respondents: u64,
    /// Self-assessment records.
    pub self_assessment_records: u64,
    /// Fingerprint of the key the drops were made with (none for raw files).
    pub key_fingerprint: Option<String>,
}

/// Where a workload's files go inside its folder.
pub const DROPS_DIR: &str = "drops";
/// Raw files' folder (`raw/ORG/FORM_PERIOD.csv`).
pub const RAW_DIR: &str = "raw";
/// The counts.
pub const TRUTH_FILE: &str = "truth.json";

// ---------------------------------------------------------------------------
// Identities, one-to-one with a person's number.

/// Syllables of the made-up name words: four of them make a word of eight
/// letters, 65,536 words. No pool name normalises to such a word (a test
/// checks), so a person's tokens hold exactly one word.
const SYLLABLES: [&str; 16] = [
    "ka", "li", "mu", "ro", "sa", "te", "nu", "wi", "ba", "de", "go", "ha", "pi", "ya", "ze", "lo",
];
const WORDS: u64 = 1 << 16;
/// Birth dates: 40 years of days.
const BIRTH_DAYS: u64 = 14_600;
/// Passport numbers: a letter and seven digits.
const PASSPORTS: u64 = 26 * 10_000_000;
/// Odd multipliers coprime with `WORDS * BIRTH_DAYS` and `PASSPORTS`:
/// `x -> (x * A + B) mod M` is then one-to-one.
const NAME_MUL: u64 = 2_654_435_761;
const PASSPORT_MUL: u64 = 2_246_822_519;

fn word(w: u64) -> String {
    let mut s = String::with_capacity(8);
    for i in (0..4).rev() {
        s.push_str(SYLLABLES[((w >> (4 * i)) & 15) as usize]);
    }
    s[..1].make_ascii_uppercase();
    s
}

#[derive(Debug, Clone, Copy)]
enum Dob {
    Unknown,
    Year(i32),
    Full(NaiveDate),
}

/// A person as the generator knows them: identity (in memory only) and
/// the plan of their records.
struct Person {
    nationality: &'static str,
    given: String,
    family: &'static str,
    dob: Dob,
    passport: Option<String>,
    sex: &'static str,
    /// The person's records: (month index, org), in time order.
    records: Vec<(u32, usize)>,
    identified: bool,
    anonymous: bool,
    /// Self-assessment answers, one per question (index into the list's
    /// spellings; 0 blank).
    answers: [u8; 6],
    /// A seed per record for how it is written.
    record_seeds: Vec<u64>,
}

impl Person {
    fn has_name_key(&self) -> bool {
        matches!(self.dob, Dob::Full(_))
    }

    fn linkable(&self) -> bool {
        !self.anonymous && (self.has_name_key() || self.passport.is_some())
    }
}

/// Organisations: weights (a few large, many small) and which take
/// self-assessments, as the demo's.
struct Orgs {
    cumulative: Vec<f64>,
    sa: Vec<usize>,
    sa_cumulative: Vec<f64>,
}

impl Orgs {
    fn new(n: usize) -> Self {
        let weight = |i: usize| 1.0 / (1.0 + i as f64).powf(0.8);
        let mut cumulative = Vec::with_capacity(n);
        let mut sum = 0.0;
        for i in 0..n {
            sum += weight(i);
            cumulative.push(sum);
        }
        let sa: Vec<usize> = (0..n).filter(|i| i % 3 == 0 || *i < 4).collect();
        let mut sa_cumulative = Vec::with_capacity(sa.len());
        let mut sum = 0.0;
        for i in &sa {
            sum += weight(*i);
            sa_cumulative.push(sum);
        }
        Orgs {
            cumulative,
            sa,
            sa_cumulative,
        }
    }

    fn pick(cumulative: &[f64], rng: &mut ChaCha8Rng) -> usize {
        let x = rng.random_range(0.0..*cumulative.last().expect("an organisation"));
        cumulative
            .partition_point(|c| *c <= x)
            .min(cumulative.len() - 1)
    }

    /// An organisation for a person's next record: another than `used`
    /// when there is one (a few tries), else the first.
    fn pick_for(&self, form: Form, used: &[(u32, usize)], rng: &mut ChaCha8Rng) -> usize {
        let pick = |rng: &mut ChaCha8Rng| match form {
            Form::Screening => Self::pick(&self.cumulative, rng),
            Form::SelfAssessment => self.sa[Self::pick(&self.sa_cumulative, rng)],
        };
        if used.is_empty() {
            return pick(rng);
        }
        if form == Form::Screening && rng.random_bool(0.25) {
            // The same NGO again, later.
            return used[0].1;
        }
        for _ in 0..8 {
            let o = pick(rng);
            if used.iter().all(|(_, u)| *u != o) {
                return o;
            }
        }
        used[0].1
    }
}

fn person_rng(seed: u64, g: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(g);
    rng
}

/// Person `g` (screening persons first, then respondents): the same
/// person for the same seed, whatever else is made.
fn person(spec: &WorkloadSpec, orgs: &Orgs, form: Form, g: u64) -> Person {
    let mut rng = person_rng(spec.seed, g);
    let anonymous = form == Form::SelfAssessment && rng.random_bool(0.3);
    let x = rng.random_range(0..100);
    let nationality: &'static str = match x {
        0..=47 => "IDN",
        48..=87 => "PHL",
        _ => OTHER[(x as usize) % OTHER.len()].0,
    };
    let (given_pool, family_pool): (&[&str], &[&str]) = match nationality {
        "IDN" => (IDN_GIVEN, IDN_FAMILY),
        "PHL" => (PHL_GIVEN, PHL_FAMILY),
        other => {
            let (_, g, f) = OTHER.iter().find(|(c, _, _)| *c == other).expect("pool");
            (g, f)
        }
    };
    // The person's number, one-to-one onto (word, birth day).
    let h = (g.wrapping_mul(NAME_MUL) + 12_345) % (WORDS * BIRTH_DAYS);
    let w = word(h % WORDS);
    let born = NaiveDate::from_ymd_opt(spec.from.year - 56, 1, 1).expect("date")
        + chrono::Days::new(h / WORDS);
    let mut given = given_pool.choose(&mut rng).expect("pool").to_string();
    if rng.random_bool(0.2) {
        let second = given_pool.choose(&mut rng).expect("pool");
        if !given.contains(second) {
            given = format!("{given} {second}");
        }
    }
    // Many Indonesians have one name only: the word.
    let one_name = nationality == "IDN" && rng.random_bool(0.3);
    let (given, family) = if one_name {
        (w, "")
    } else {
        (
            format!("{given} {w}"),
            *family_pool.choose(&mut rng).expect("pool"),
        )
    };
    let dob = match rng.random_range(0..100) {
        0..=5 => Dob::Unknown,
        6..=13 => Dob::Year(born.year()),
        _ => Dob::Full(born),
    };
    let p = (g.wrapping_mul(PASSPORT_MUL) + 977) % PASSPORTS;
    let passport = rng.random_bool(0.75).then(|| {
        let letter = (b'A' + (p / 10_000_000) as u8) as char;
        let digits = p % 10_000_000;
        match nationality {
            "PHL" => format!("P{digits:07}{letter}"),
            _ => format!("{letter}{digits:07}"),
        }
    });
    let sex = match rng.random_range(0..100) {
        0..=83 => "female",
        84..=98 => "male",
        _ => "other",
    };
    let mut person = Person {
        nationality,
        given,
        family,
        dob,
        passport,
        sex,
        records: Vec::new(),
        identified: false,
        anonymous,
        answers: [0; 6],
        record_seeds: Vec::new(),
    };
    let n = match (form, person.linkable()) {
        (_, false) => 1,
        (Form::Screening, true) => match rng.random_range(0..100) {
            0..=81 => 1,
            82..=95 => 2,
            _ => 3,
        },
        (Form::SelfAssessment, true) => 1 + rng.random_bool(0.1) as usize,
    };
    let mut months: Vec<u32> = (0..n).map(|_| rng.random_range(0..spec.months)).collect();
    months.sort_unstable();
    for m in months {
        let o = orgs.pick_for(form, &person.records, &mut rng);
        person.records.push((m, o));
    }
    person.identified = form == Form::Screening && rng.random_bool(0.06);
    for a in &mut person.answers {
        *a = rng.random_range(0..5);
    }
    person.record_seeds = (0..n).map(|_| rng.next_u64()).collect();
    person
}

// ---------------------------------------------------------------------------
// Writing a record as an NGO would.

/// How one organisation writes its files (as the demo's styles).
#[derive(Debug, Clone)]
struct Style {
    bom: bool,
    crlf: bool,
    delimiter: u8,
    date_style: u8,
    nationality_style: u8,
    upper_case: bool,
    names_in_one_field: bool,
}

impl Style {
    fn of(i: usize) -> Self {
        Style {
            bom: i.is_multiple_of(3),
            crlf: i.is_multiple_of(2),
            delimiter: if i % 9 == 4 { b';' } else { b',' },
            date_style: (i % 3) as u8,
            nationality_style: (i % 5) as u8,
            upper_case: i % 6 == 2,
            names_in_one_field: i % 7 == 3,
        }
    }
}

/// Other spellings of a pool name that keep its tokens, computed once.
fn spellings_of(name: &'static str) -> &'static [String] {
    static TABLE: OnceLock<BTreeMap<&'static str, Vec<String>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        RESPELLINGS
            .iter()
            .map(|(canon, alts)| {
                let tokens = name_tokens(canon, "");
                let ok = alts
                    .iter()
                    .filter(|a| name_tokens(a, "") == tokens)
                    .map(|a| a.to_string())
                    .collect();
                (*canon, ok)
            })
            .collect()
    });
    table.get(name).map_or(&[], |v| v.as_slice())
}

fn respell(name: &'static str, upper: bool, rng: &mut ChaCha8Rng) -> String {
    let alts = spellings_of(name);
    let s = match alts.choose(rng) {
        Some(a) if rng.random_bool(0.5) => a.clone(),
        _ => name.to_string(),
    };
    if upper {
        s.to_uppercase()
    } else if rng.random_bool(0.1) {
        s.to_lowercase()
    } else {
        s
    }
}

/// A CSV cell: quoted only when it must be.
fn cell(out: &mut Vec<u8>, text: &str, delimiter: u8) {
    if text
        .bytes()
        .any(|b| b == delimiter || b == b'"' || b == b'\n' || b == b'\r')
    {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// A spelling NGOs use for a code: the code, a spelling from the list, or
/// the code with spaces and capitals.
fn code_spelling(list: &'static str, code: usize, rng: &mut ChaCha8Rng) -> String {
    let list = code_list(list);
    let spellings = &list.spellings[code];
    match rng.random_range(0..10) {
        0 => spellings.choose(rng).expect("the code itself").clone(),
        1 => {
            let mut s = list.codes[code].replace('_', " ");
            s[..1].make_ascii_uppercase();
            s
        }
        _ => list.codes[code].to_string(),
    }
}

fn code_index(list: &'static str, code: &str) -> usize {
    code_list(list)
        .codes
        .iter()
        .position(|c| *c == code)
        .unwrap_or_else(|| panic!("code {code} in list {list}"))
}

/// Writes record `k` of person `g` as one CSV row.
#[allow(clippy::too_many_arguments)]
fn write_row(
    out: &mut Vec<u8>,
    form: Form,
    spec: &WorkloadSpec,
    p: &Person,
    g: u64,
    k: usize,
    style: &Style,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(p.record_seeds[k]);
    let (month, org) = p.records[k];
    let mut period = spec.from;
    for _ in 0..month {
        period = period.next();
    }
    let days = period
        .next()
        .first_day()
        .signed_duration_since(period.first_day())
        .num_days();
    let date = period.first_day() + chrono::Days::new(rng.random_range(0..days) as u64);
    // Which identity fields this record shows: a later record may leave
    // out the passport or the birth date, never both keys.
    let (mut show_dob, mut show_passport) = (true, true);
    if k > 0 && p.has_name_key() && p.passport.is_some() {
        match rng.random_range(0..4) {
            0 => show_dob = false,
            1 => show_passport = false,
            _ => {}
        }
    }
    let (mut family, mut given) = if p.anonymous {
        (String::new(), String::new())
    } else {
        let family = if p.family.is_empty() {
            String::new()
        } else {
            respell(p.family, style.upper_case, &mut rng)
        };
        let given = if style.upper_case {
            p.given.to_uppercase()
        } else {
            p.given.clone()
        };
        (family, given)
    };
    if !p.anonymous {
        if style.names_in_one_field || rng.random_bool(0.08) {
            given = format!("{family} {given}").trim().to_string();
            family.clear();
        } else if rng.random_bool(0.1) {
            std::mem::swap(&mut family, &mut given);
        }
    }
    let d = style.delimiter;
    let reference = g * 4 + k as u64 + 1;
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(d);
        }
        first = false;
    };
    let mut yes_no = 0;
    for c in &form.schema().columns {
        sep(out);
        match c.role {
            Role::Reference => {
                let r = match (form, org % 3) {
                    (Form::SelfAssessment, _) => format!("SA-{reference:06}"),
                    (_, 0) => format!("{}-{reference:07}", period.year),
                    (_, 1) => format!("C{reference}"),
                    _ => format!("{}/{reference:06}", period.year),
                };
                cell(out, &r, d);
            }
            Role::EventDate => cell(out, &format_date(date, style.date_style), d),
            Role::FamilyName => cell(out, &family, d),
            Role::GivenName => cell(out, &given, d),
            Role::DateOfBirth => match (p.anonymous || !show_dob, p.dob) {
                (false, Dob::Full(b)) => cell(out, &format_date(b, style.date_style), d),
                (false, Dob::Year(y)) => cell(out, &y.to_string(), d),
                _ => {}
            },
            Role::PassportNumber => {
                if let (false, true, Some(pp)) = (p.anonymous, show_passport, &p.passport) {
                    cell(out, &format_passport(pp, &mut rng), d);
                }
            }
            Role::Sex => {
                let s = match (rng.random_range(0..4), p.sex) {
                    (0, "other") => "x".to_string(),
                    (0, s) => s[..1].to_string(),
                    (1, s) => s.to_uppercase(),
                    (2, _) if p.anonymous => String::new(),
                    (_, s) => s.to_string(),
                };
                cell(out, &s, d);
            }
            Role::Nationality => cell(
                out,
                &nationality_text(p.nationality, style.nationality_style, &mut rng),
                d,
            ),
            Role::YesNo => {
                let p_yes = if p.identified { 0.6 } else { 0.2 };
                let v = if rng.random_bool(0.07) {
                    ""
                } else if rng.random_bool(p_yes) {
                    *["yes", "y", "Yes", "1"].choose(&mut rng).expect("list")
                } else {
                    *["no", "n", "No", "0"].choose(&mut rng).expect("list")
                };
                cell(out, v, d);
            }
            Role::Code => {
                let list = code_list(c.codes.as_deref().expect("coded columns name a list"));
                let list: &'static str = list_name(list.name.as_str());
                let text = match c.name.as_str() {
                    "outcome" => {
                        let last = k + 1 == p.records.len();
                        let code = match (p.identified, last) {
                            (true, true) => "identified",
                            (true, false) => "pending",
                            (false, _) => *["not_identified", "not_identified", "pending"]
                                .choose(&mut rng)
                                .expect("list"),
                        };
                        code_spelling(list, code_index(list, code), &mut rng)
                    }
                    "exploitation_type" => {
                        let pool: &[&str] = if p.identified {
                            &["forced_labour", "servitude", "sexual_exploitation", "other"]
                        } else {
                            &["none", "none", "forced_labour"]
                        };
                        let code = pool.choose(&mut rng).expect("list");
                        code_spelling(list, code_index(list, code), &mut rng)
                    }
                    _ if list == "answer" => {
                        // A respondent gives the same answers each time.
                        let a = p.answers[yes_no.min(5)];
                        yes_no += 1;
                        match a {
                            0 => String::new(),
                            1 => "declined".to_string(),
                            2 => "yes".to_string(),
                            _ => "no".to_string(),
                        }
                    }
                    _ if rng.random_bool(0.06) => String::new(),
                    _ => {
                        let n = code_list(list).codes.len();
                        // The first codes are the common ones.
                        let i = rng.random_range(0..n).min(rng.random_range(0..n));
                        code_spelling(list, i, &mut rng)
                    }
                };
                cell(out, &text, d);
            }
        }
    }
    if style.crlf {
        out.push(b'\r');
    }
    out.push(b'\n');
}

/// The `'static` name of a code list.
fn list_name(name: &str) -> &'static str {
    [
        "sex",
        "yes_no",
        "answer",
        "sector",
        "exploitation_type",
        "outcome",
        "referral",
    ]
    .into_iter()
    .find(|n| *n == name)
    .unwrap_or_else(|| panic!("a code list the generator knows: {name}"))
}

fn header(form: Form, style: &Style) -> Vec<u8> {
    let mut out = Vec::new();
    if style.bom {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    let names: Vec<&str> = form
        .schema()
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    out.extend_from_slice(
        names
            .join(&(style.delimiter as char).to_string())
            .as_bytes(),
    );
    out.extend_from_slice(if style.crlf { b"\r\n" } else { b"\n" });
    out
}

// ---------------------------------------------------------------------------
// The plan and the files.

/// One file to write: its form, org, month and records (`g << 2 | k`).
struct FilePlan {
    form: Form,
    org: usize,
    month: u32,
    records: Vec<u64>,
}

/// A planning chunk's records (file, `g << 2 | k`) and its counts:
/// records, identified, persons by number of NGOs (1, 2, 3 or more).
type Placed = (Vec<(u32, u64)>, [u64; 5]);

/// Persons per planning chunk.
const CHUNK: usize = 1 << 15;

/// Plans every person of a form: which file each record goes to. Adds the
/// form's counts to `truth`.
fn plan_form(
    spec: &WorkloadSpec,
    orgs: &Orgs,
    form: Form,
    first: u64,
    count: usize,
    truth: &mut WorkloadTruth,
) -> Vec<FilePlan> {
    let files_per_month = spec.orgs;
    let chunks: Vec<Placed> = (0..count.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let mut placed = Vec::with_capacity(CHUNK * 5 / 4);
            // records, identified, by number of orgs (1, 2, 3+)
            let mut counts = [0u64; 5];
            for i in c * CHUNK..((c + 1) * CHUNK).min(count) {
                let g = first + i as u64;
                let p = person(spec, orgs, form, g);
                for (k, (m, o)) in p.records.iter().enumerate() {
                    placed.push((*m * files_per_month as u32 + *o as u32, g << 2 | k as u64));
                }
                counts[0] += p.records.len() as u64;
                counts[1] += p.identified as u64;
                let mut distinct: Vec<usize> = p.records.iter().map(|r| r.1).collect();
                distinct.sort_unstable();
                distinct.dedup();
                counts[1 + distinct.len().min(3)] += 1;
            }
            (placed, counts)
        })
        .collect();
    let mut sizes = vec![0usize; files_per_month * spec.months as usize];
    let mut counts = [0u64; 5];
    for (placed, c) in &chunks {
        for (f, _) in placed {
            sizes[*f as usize] += 1;
        }
        for (t, x) in counts.iter_mut().zip(c) {
            *t += x;
        }
    }
    let mut files: Vec<FilePlan> = sizes
        .iter()
        .enumerate()
        .map(|(f, n)| FilePlan {
            form,
            org: f % files_per_month,
            month: (f / files_per_month) as u32,
            records: Vec::with_capacity(*n),
        })
        .collect();
    for (placed, _) in chunks {
        for (f, r) in placed {
            files[f as usize].records.push(r);
        }
    }
    match form {
        Form::Screening => {
            truth.screening_persons += count as u64;
            truth.screening_records += counts[0];
            truth.identified_persons += counts[1];
            for (label, n) in ["1", "2", "3 or more"].iter().zip(&counts[2..]) {
                *truth
                    .screened_by_number_of_ngos
                    .entry(label.to_string())
                    .or_default() += n;
            }
        }
        Form::SelfAssessment => {
            truth.respondents += count as u64;
            truth.self_assessment_records += counts[0];
        }
    }
    files.retain(|f| !f.records.is_empty());
    files
}

/// Generates the workload into `dir` (`drops/` or `raw/`, then
/// `truth.json`, written last). `dir`'s earlier `drops/`, `raw/` and
/// `truth.json` are replaced only when `force`. Calls `progress` with the
/// records of each file written, from any thread.
pub fn generate(
    spec: &WorkloadSpec,
    output: &Output<'_>,
    dir: &Path,
    force: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WorkloadTruth> {
    let today = match output {
        Output::Drops { today, .. } => *today,
        Output::Raw => chrono::Utc::now().date_naive(),
    };
    spec.validate(today)?;
    let sub = match output {
        Output::Drops { .. } => DROPS_DIR,
        Output::Raw => RAW_DIR,
    };
    let target = dir.join(sub);
    let truth_path = dir.join(TRUTH_FILE);
    if !force && (target.exists() || truth_path.exists()) {
        return Err(Error::Usage(format!(
            "{} already holds a workload: give another --dir, or --force to replace it",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    // Written in a folder of its own, put in place when complete.
    let staging = dir.join(format!(".{sub}.partial"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|e| Error::io(format!("cannot remove {}", staging.display()), e))?;
    }
    std::fs::create_dir_all(&staging)
        .map_err(|e| Error::io(format!("cannot create {}", staging.display()), e))?;
    let result = write_all(spec, output, &staging, progress);
    let mut truth = match result {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    truth.key_fingerprint = match output {
        Output::Drops { key, .. } => Some(key.fingerprint()),
        Output::Raw => None,
    };
    if truth_path.exists() {
        std::fs::remove_file(&truth_path)
            .map_err(|e| Error::io(format!("cannot remove {}", truth_path.display()), e))?;
    }
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .map_err(|e| Error::io(format!("cannot remove {}", target.display()), e))?;
    }
    std::fs::rename(&staging, &target)
        .map_err(|e| Error::io(format!("cannot create {}", target.display()), e))?;
    let json = serde_json::to_string_pretty(&truth).expect("serialisable");
    drop::write_text_atomically(&truth_path, &(json + "\n"))?;
    Ok(truth)
}

/// Plans the workload: its files (largest first) and its counts.
fn plan(spec: &WorkloadSpec) -> (Vec<FilePlan>, WorkloadTruth) {
    let orgs = Orgs::new(spec.orgs);
    let mut truth = WorkloadTruth {
        seed: spec.seed,
        from: spec.from.to_string(),
        to: spec.to().to_string(),
        orgs: spec.orgs,
        files: 0,
        screening_persons: 0,
        screening_records: 0,
        identified_persons: 0,
        screened_by_number_of_ngos: BTreeMap::new(),
        respondents: 0,
        self_assessment_records: 0,
        key_fingerprint: None,
    };
    let mut files = plan_form(spec, &orgs, Form::Screening, 0, spec.persons, &mut truth);
    files.extend(plan_form(
        spec,
        &orgs,
        Form::SelfAssessment,
        spec.persons as u64,
        spec.respondents,
        &mut truth,
    ));
    truth.files = files.len();
    // Largest first, so that the last files to finish are small ones.
    files.sort_by_key(|f| std::cmp::Reverse(f.records.len()));
    (files, truth)
}

fn write_all(
    spec: &WorkloadSpec,
    output: &Output<'_>,
    dir: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WorkloadTruth> {
    let (files, truth) = plan(spec);
    let orgs = Orgs::new(spec.orgs);
    if let Output::Raw = output {
        for o in 0..spec.orgs {
            let d = dir.join(spec.org_code(o));
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
        }
    }
    files.par_iter().try_for_each(|f| -> Result<()> {
        let style = Style::of(f.org);
        let mut bytes = header(f.form, &style);
        bytes.reserve(f.records.len() * 160);
        for r in &f.records {
            let (g, k) = (r >> 2, (r & 3) as usize);
            let p = person(spec, &orgs, f.form, g);
            write_row(&mut bytes, f.form, spec, &p, g, k, &style);
        }
        let mut period = spec.from;
        for _ in 0..f.month {
            period = period.next();
        }
        let org = spec.org_code(f.org);
        let name = format!("{}_{period}.csv", f.form.code());
        match output {
            Output::Raw => {
                let path = dir.join(&org).join(&name);
                std::fs::write(&path, &bytes)
                    .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
            }
            Output::Drops { key, today } => {
                pseudonymise(key, *today, f.form, &org, period, &name, bytes, dir)?;
            }
        }
        progress(f.records.len() as u64);
        Ok(())
    })?;
    Ok(truth)
}

/// One drop, as `safetally pseudonymise` makes it from these bytes. Its
/// `created` time is the first day after its month, so that the same
/// workload gives the same bytes.
#[allow(clippy::too_many_arguments)]
fn pseudonymise(
    key: &TaskForceKey,
    today: NaiveDate,
    form: Form,
    org: &str,
    period: Period,
    name: &str,
    bytes: Vec<u8>,
    dir: &Path,
) -> Result<PathBuf> {
    let source = Source {
        name: name.to_string(),
        file: crate::raw::open_csv_bytes(bytes, Path::new(name))?,
    };
    let p = Pseudonymiser::new(key, form, org, period, today);
    let mut meta = DropMeta {
        format_version: FORMAT_VERSION.to_string(),
        form,
        schema_version: form.schema().version,
        org: org.to_string(),
        period,
        key_fingerprint: key.fingerprint(),
        normaliser_version: NORMALISER_VERSION.to_string(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        created: String::new(),
        rows: 0,
        rejected_rows: 0,
        content_sha256: None,
    };
    let (writer, outcome) = p.run_into(std::slice::from_ref(&source), || {
        drop::DropWriter::create(dir, &meta)
    })?;
    if !outcome.problems.is_empty() {
        // A generator fault: say where, never what (rows hold identities).
        let p = &outcome.problems[0];
        return Err(Error::Refused(format!(
            "synthetic file {name}: {} row(s) refused, first row {} column {}: {}",
            outcome.rejected_rows, p.row, p.column, p.reason
        )));
    }
    meta.created = format!("{}T00:00:00Z", period.next().first_day());
    meta.rows = outcome.rows as u64;
    writer.finish(&meta, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn number_maps_are_one_to_one() {
        fn gcd(a: u64, b: u64) -> u64 {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        assert_eq!(gcd(NAME_MUL, WORDS * BIRTH_DAYS), 1);
        assert_eq!(gcd(PASSPORT_MUL, PASSPORTS), 1);
        assert!((MAX_PERSONS as u64) < PASSPORTS.min(WORDS * BIRTH_DAYS));
    }

    #[test]
    fn no_pool_name_is_a_made_up_word() {
        let words: HashSet<String> = (0..WORDS).map(|w| word(w).to_lowercase()).collect();
        let pools = [IDN_GIVEN, IDN_FAMILY, PHL_GIVEN, PHL_FAMILY]
            .into_iter()
            .chain(OTHER.iter().flat_map(|(_, g, f)| [*g, *f]));
        for pool in pools {
            for name in pool {
                for t in name_tokens(name, "") {
                    assert!(!words.contains(&t), "{name} holds a made-up word");
                }
            }
        }
    }

    #[test]
    fn later_records_share_a_key_with_the_first() {
        let spec = WorkloadSpec {
            seed: 7,
            persons: 2000,
            respondents: 0,
            orgs: 5,
            from: "2024-01".parse().unwrap(),
            months: 3,
        };
        let orgs = Orgs::new(spec.orgs);
        let mut several = 0;
        for g in 0..2000 {
            let p = person(&spec, &orgs, Form::Screening, g);
            if p.records.len() > 1 {
                several += 1;
                assert!(p.linkable());
            }
            assert!(p.records.windows(2).all(|w| w[0].0 <= w[1].0));
        }
        assert!(several > 200, "about 18% have several records: {several}");
    }
}
