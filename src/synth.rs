//! Synthetic NGO data shaped like the task force's pilot (August 2017 to
//! June 2018): 27 NGOs' monthly raw files, CSV or XLSX, in which the same
//! person is written differently by different NGOs. Seeded and
//! deterministic: the same seed gives the same files.
//!
//! Every name, date and passport number here is made up by code from small
//! pools of common given and family names; no real person is described.
//! The generator checks its own promise: every extra record of a person
//! shares a match key with an earlier one, and no two people share a key.

#[cfg(test)]
use std::collections::HashMap;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pseudonymise::Period;
use crate::pseudonymise::normalise::{name_tokens, normalise_passport};
use crate::schema::Form;

/// The pilot's shape: what the demo data must add up to.
#[derive(Debug, Clone)]
pub struct PilotSpec {
    /// Seed of the random generator.
    pub seed: u64,
    /// Number of NGOs.
    pub orgs: usize,
    /// First month.
    pub from: Period,
    /// Last month (inclusive).
    pub to: Period,
    /// Distinct people screened.
    pub screened: usize,
    /// Of whom identified as victims of trafficking.
    pub identified: usize,
    /// Self-assessment respondents per nationality: (alpha-3, respondents,
    /// of whom fear negative consequences).
    pub respondents: Vec<(&'static str, usize, usize)>,
}

impl Default for PilotSpec {
    fn default() -> Self {
        PilotSpec {
            seed: 2017,
            orgs: 27,
            from: Period {
                year: 2017,
                month: 8,
            },
            to: Period {
                year: 2018,
                month: 6,
            },
            screened: 1037,
            identified: 63,
            // 177 / 207 = 85.5%, 106 / 217 = 48.8%.
            respondents: vec![("IDN", 207, 177), ("PHL", 217, 106)],
        }
    }
}

/// One raw file written.
#[derive(Debug, Clone, Serialize)]
pub struct RawFile {
    /// Path relative to the data folder.
    pub path: PathBuf,
    /// The form.
    #[serde(serialize_with = "form_code")]
    pub form: Form,
    /// Organisation code.
    pub org: String,
    /// The month.
    #[serde(serialize_with = "period_text")]
    pub period: Period,
    /// Data rows.
    pub rows: usize,
}

fn form_code<S: serde::Serializer>(f: &Form, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(f.code())
}

fn period_text<S: serde::Serializer>(p: &Period, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string())
}

/// The true figures of the generated data (counts only, no identity).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Truth {
    /// Distinct people screened.
    pub screened_persons: usize,
    /// Screening records (rows) over all files.
    pub screening_records: usize,
    /// People identified.
    pub identified_persons: usize,
    /// NGOs with at least one screening record.
    pub screening_orgs: usize,
    /// People screened by more than one NGO.
    pub persons_seen_by_several_orgs: usize,
    /// Distinct self-assessment respondents.
    pub respondents: usize,
    /// Self-assessment records (rows).
    pub self_assessment_records: usize,
    /// Per nationality: [respondents, of whom fear consequences].
    pub fear_of_consequences: BTreeMap<String, [usize; 2]>,
}

/// What the generator wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    /// Every raw file, sorted by form, org and period.
    pub files: Vec<RawFile>,
    /// The figures the data adds up to.
    pub truth: Truth,
}

/// How one NGO keeps its records.
#[derive(Debug, Clone)]
struct OrgStyle {
    code: String,
    weight: f64,
    xlsx: bool,
    excel_dates: bool,
    bom: bool,
    crlf: bool,
    delimiter: u8,
    date_style: u8,
    nationality_style: u8,
    upper_case: bool,
    names_in_one_field: bool,
    takes_self_assessments: bool,
    next_ref: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dob {
    Full(NaiveDate),
    Year(i32),
}

#[derive(Debug, Clone)]
struct Person {
    given: String,
    family: String,
    dob: Option<Dob>,
    passport: Option<String>,
    nationality: &'static str,
    sex: &'static str,
}

/// Which identity fields a record carries.
#[derive(Debug, Clone, Copy)]
struct Shows {
    names: bool,
    dob: bool,
    passport: bool,
}

#[derive(Debug, Clone)]
struct Record {
    person: usize,
    org: usize,
    date: NaiveDate,
    cells: Vec<(String, Cell)>,
}

#[derive(Debug, Clone)]
enum Cell {
    Text(String),
    Date(NaiveDate),
}

pub(crate) const IDN_GIVEN: &[&str] = &[
    "Siti",
    "Sri",
    "Dewi",
    "Rina",
    "Wati",
    "Yanti",
    "Sumiati",
    "Suwarni",
    "Ratna",
    "Endang",
    "Tuti",
    "Kartini",
    "Fitri",
    "Indah",
    "Eka",
    "Dwi",
    "Ayu",
    "Puji",
    "Yuli",
    "Erna",
    "Nurhayati",
    "Sulastri",
    "Warsini",
    "Tumini",
    "Sukini",
    "Darmi",
    "Painem",
    "Rukmini",
    "Suparti",
    "Winarti",
];
pub(crate) const IDN_FAMILY: &[&str] = &[
    "Rahmawati",
    "Susilowati",
    "Handayani",
    "Purnamasari",
    "Wulandari",
    "Setiawati",
    "Maryati",
    "Kurniasih",
    "Suryani",
    "Anggraini",
    "Hidayati",
    "Utami",
    "Permatasari",
    "Ningsih",
    "Astuti",
    "Wijayanti",
    "Santoso",
    "Hartono",
    "Nur Aini",
    "Prihatin",
    "Mulyani",
    "Rahayu",
    "Wahyuni",
    "Susanti",
    "Lestari",
];
pub(crate) const PHL_GIVEN: &[&str] = &[
    "Maria", "Rosalie", "Marites", "Jocelyn", "Lorna", "Marilou", "Rowena", "Jennifer", "Cristina",
    "Grace", "Mary Ann", "Evelyn", "Gina", "Analyn", "Rhea", "Jovelyn", "Josefina", "Leonora",
    "Rosario", "Teresita", "Mylene", "Arlene", "Charito", "Nenita", "Lovely", "Jonalyn",
];
pub(crate) const PHL_FAMILY: &[&str] = &[
    "Dela Cruz",
    "Santos",
    "Reyes",
    "Garcia",
    "Mendoza",
    "Bautista",
    "Sta. Maria",
    "Villanueva",
    "De Leon",
    "Ramos",
    "Aquino",
    "Castillo",
    "Del Rosario",
    "Peñaflor",
    "Dela Peña",
    "Gonzales",
    "Fernandez",
    "Navarro",
    "De Guzman",
    "Salazar",
    "Pascual",
    "Magbanua",
    "Cabrera",
    "Macaraeg",
    "Dimaculangan",
    "Sto. Tomas",
    "Delos Santos",
];
pub(crate) const OTHER: &[(&str, &[&str], &[&str])] = &[
    (
        "VNM",
        &["Lan", "Hương", "Thảo", "Ngọc Anh", "Mai"],
        &["Nguyễn Thị", "Trần Thị", "Lê Thị", "Phạm"],
    ),
    (
        "LKA",
        &["Kumari", "Nirosha", "Dilani", "Chamila"],
        &["Perera", "Fernando", "Silva", "Jayasinghe"],
    ),
    (
        "NPL",
        &["Sita", "Gita", "Laxmi", "Sarita"],
        &["Tamang", "Gurung", "Shrestha", "Rai"],
    ),
    (
        "BGD",
        &["Rokeya", "Shahida", "Nasima", "Hasina"],
        &["Begum", "Khatun", "Akter", "Rahman"],
    ),
    (
        "MMR",
        &["Aye Aye", "Khin", "Thandar", "Moe"],
        &["Win", "Myint", "Htwe", "Aung"],
    ),
    (
        "THA",
        &["Somchai", "Malee", "Nok", "Siriporn"],
        &["Saetang", "Wongsakul", "Chaiyaporn"],
    ),
];

/// Spellings a given nationality can take in raw files, by style.
pub(crate) fn nationality_text(alpha3: &str, style: u8, rng: &mut ChaCha8Rng) -> String {
    let c = crate::pseudonymise::country::by_alpha3(alpha3).expect("known country");
    match style {
        0 => c.name.to_string(),
        1 => c.demonyms.first().copied().unwrap_or(c.name).to_string(),
        2 => c.alpha2.to_string(),
        3 => c.alpha3.to_string(),
        _ => c
            .demonyms
            .choose(rng)
            .copied()
            .unwrap_or(c.name)
            .to_lowercase(),
    }
}

/// Other spellings of pool names that normalise to the same tokens
/// (particles, hyphens, marks); `respell` keeps only those that do.
pub(crate) const RESPELLINGS: &[(&str, &[&str])] = &[
    (
        "Dela Cruz",
        &["De la Cruz", "Dela-Cruz", "DelaCruz", "dela cruz"],
    ),
    ("Sta. Maria", &["Santa Maria", "Sta Maria", "STA. MARIA"]),
    ("Sto. Tomas", &["Santo Tomas", "Sto Tomas"]),
    ("Del Rosario", &["Del-Rosario", "del Rosario"]),
    ("Delos Santos", &["De los Santos", "Delos-Santos"]),
    ("De Leon", &["De-Leon", "DeLeon"]),
    ("De Guzman", &["De-Guzman", "DeGuzman", "de guzman"]),
    ("Peñaflor", &["Penaflor", "PEÑAFLOR"]),
    ("Dela Peña", &["De la Pena", "Dela Pena", "Dela-Peña"]),
    ("Mary Ann", &["Mary-Ann", "Maryann"]),
    ("Nur Aini", &["Nur-Aini"]),
    ("Hương", &["Huong"]),
    ("Thảo", &["Thao"]),
    ("Ngọc Anh", &["Ngoc Anh", "Ngọc-Anh"]),
    ("Nguyễn Thị", &["Nguyen Thi", "NGUYỄN THỊ"]),
    ("Trần Thị", &["Tran Thi"]),
    ("Lê Thị", &["Le Thi"]),
    ("Phạm", &["Pham"]),
    ("Aye Aye", &["Aye-Aye"]),
];

/// Writes another spelling of a name that normalises to the same tokens:
/// case, particles ("Sta." / "Santa", "Dela" / "De la"), hyphens, marks.
fn respell(name: &str, upper: bool, rng: &mut ChaCha8Rng) -> String {
    let mut s = name.to_string();
    let swaps = RESPELLINGS;
    if rng.random_bool(0.5)
        && let Some((_, alts)) = swaps.iter().find(|(canon, _)| *canon == name)
    {
        s = alts.choose(rng).expect("alternatives").to_string();
    }
    // "Maryann" joins two tokens; only keep it where the tokens still match.
    if name_tokens(&s, "") != name_tokens(name, "") {
        s = name.to_string();
    }
    if upper {
        s = s.to_uppercase();
    } else if rng.random_bool(0.1) {
        s = s.to_lowercase();
    }
    s
}

pub(crate) fn format_date(d: NaiveDate, style: u8) -> String {
    match style {
        0 => d.format("%Y-%m-%d").to_string(),
        1 => d.format("%d/%m/%Y").to_string(),
        _ => format!("{}/{}/{}", d.day(), d.month(), d.year()),
    }
}

pub(crate) fn format_passport(p: &str, rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..5) {
        0 => p.to_lowercase(),
        1 if p.len() > 4 => format!("{} {}", &p[..1], &p[1..]),
        2 if p.len() > 5 => format!("{}-{}", &p[..4], &p[4..]),
        _ => p.to_string(),
    }
}

/// The generator.
struct Generator {
    rng: ChaCha8Rng,
    spec: PilotSpec,
    orgs: Vec<OrgStyle>,
    months: Vec<Period>,
    name_keys: HashSet<(Vec<String>, NaiveDate)>,
    passport_keys: HashSet<(String, &'static str)>,
}

impl Generator {
    fn new(spec: PilotSpec) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let mut months = vec![spec.from];
        while *months.last().expect("one") < spec.to {
            let next = months.last().expect("one").next();
            months.push(next);
        }
        let orgs = (0..spec.orgs)
            .map(|i| {
                let xlsx = i % 4 == 1;
                OrgStyle {
                    code: format!("NGO{:02}", i + 1),
                    // A few large organisations, many small ones.
                    weight: 1.0 / (1.0 + i as f64).powf(0.8),
                    xlsx,
                    excel_dates: xlsx && i % 8 == 1,
                    bom: i % 3 == 0,
                    crlf: i % 2 == 0,
                    delimiter: if i % 9 == 4 { b';' } else { b',' },
                    date_style: (i % 3) as u8,
                    nationality_style: (i % 5) as u8,
                    upper_case: i % 6 == 2,
                    names_in_one_field: i % 7 == 3,
                    takes_self_assessments: i % 3 == 0 || i < 4,
                    next_ref: rng.random_range(1..400),
                }
            })
            .collect();
        Generator {
            rng,
            spec,
            orgs,
            months,
            name_keys: HashSet::new(),
            passport_keys: HashSet::new(),
        }
    }

    fn pick_org(&mut self, only_self_assessment: bool, not: &[usize]) -> usize {
        let candidates: Vec<usize> = (0..self.orgs.len())
            .filter(|i| !not.contains(i))
            .filter(|i| !only_self_assessment || self.orgs[*i].takes_self_assessments)
            .collect();
        let total: f64 = candidates.iter().map(|i| self.orgs[*i].weight).sum();
        let mut x = self.rng.random_range(0.0..total);
        for i in &candidates {
            x -= self.orgs[*i].weight;
            if x <= 0.0 {
                return *i;
            }
        }
        *candidates.last().expect("an organisation")
    }

    fn random_date_in(&mut self, p: Period) -> NaiveDate {
        let days = p
            .next()
            .first_day()
            .signed_duration_since(p.first_day())
            .num_days();
        p.first_day() + chrono::Days::new(self.rng.random_range(0..days) as u64)
    }

    /// A new person whose keys no one else has. `nationality` is fixed or
    /// drawn from the pilot's mix.
    fn person(&mut self, nationality: Option<&'static str>) -> Person {
        loop {
            let nat: &'static str = nationality.unwrap_or_else(|| {
                let x = self.rng.random_range(0..100);
                match x {
                    0..=47 => "IDN",
                    48..=87 => "PHL",
                    _ => OTHER[(x as usize) % OTHER.len()].0,
                }
            });
            let (given_pool, family_pool): (&[&str], &[&str]) = match nat {
                "IDN" => (IDN_GIVEN, IDN_FAMILY),
                "PHL" => (PHL_GIVEN, PHL_FAMILY),
                other => {
                    let (_, g, f) = OTHER.iter().find(|(c, _, _)| *c == other).expect("pool");
                    (g, f)
                }
            };
            let mut given = given_pool.choose(&mut self.rng).expect("pool").to_string();
            if self.rng.random_bool(0.3) {
                let second = given_pool.choose(&mut self.rng).expect("pool");
                if !given.contains(second) {
                    given = format!("{given} {second}");
                }
            }
            // Many Indonesians have one name only.
            let family = if nat == "IDN" && self.rng.random_bool(0.3) {
                String::new()
            } else {
                family_pool.choose(&mut self.rng).expect("pool").to_string()
            };
            let age = match self.rng.random_range(0..100) {
                0..=3 => self.rng.random_range(15..18),
                4..=80 => self.rng.random_range(19..38),
                _ => self.rng.random_range(38..56),
            };
            let born = NaiveDate::from_ymd_opt(2017 - age, 1, 1).expect("date")
                + chrono::Days::new(self.rng.random_range(0..365));
            let dob = match self.rng.random_range(0..100) {
                0..=5 => None,
                6..=13 => Some(Dob::Year(born.year())),
                _ => Some(Dob::Full(born)),
            };
            let passport = self.rng.random_bool(0.75).then(|| match nat {
                "PHL" if self.rng.random_bool(0.5) => format!(
                    "P{:07}{}",
                    self.rng.random_range(0..10_000_000),
                    (b'A' + self.rng.random_range(0..26u8)) as char
                ),
                "PHL" => format!("EC{:07}", self.rng.random_range(0..10_000_000)),
                _ => format!(
                    "{}{:07}",
                    (b'A' + self.rng.random_range(0..26u8)) as char,
                    self.rng.random_range(0..10_000_000)
                ),
            });
            let sex = match self.rng.random_range(0..100) {
                0..=83 => "female",
                84..=98 => "male",
                _ => "other",
            };
            let p = Person {
                given,
                family,
                dob,
                passport,
                nationality: nat,
                sex,
            };
            if self.claim_keys(&p) {
                return p;
            }
        }
    }

    /// Records the person's keys; false if another person already has one.
    fn claim_keys(&mut self, p: &Person) -> bool {
        let name = match p.dob {
            Some(Dob::Full(d)) => Some((name_tokens(&p.family, &p.given), d)),
            _ => None,
        };
        let passport = p.passport.as_ref().map(|pp| {
            (
                normalise_passport(pp).expect("valid").expect("present"),
                p.nationality,
            )
        });
        if name.as_ref().is_some_and(|k| self.name_keys.contains(k))
            || passport
                .as_ref()
                .is_some_and(|k| self.passport_keys.contains(k))
        {
            return false;
        }
        self.name_keys.extend(name);
        self.passport_keys.extend(passport);
        true
    }

    fn has_name_key(p: &Person) -> bool {
        matches!(p.dob, Some(Dob::Full(_)))
    }

    /// Which identity fields each of a person's `n` records shows, so that
    /// every record shares a key with the first: records after the first
    /// may leave out the passport or the birth date, never both keys.
    fn shows(&mut self, p: &Person, n: usize) -> Vec<Shows> {
        let both = Self::has_name_key(p) && p.passport.is_some();
        (0..n)
            .map(|i| {
                if i == 0 || !both {
                    return Shows {
                        names: true,
                        dob: true,
                        passport: true,
                    };
                }
                match self.rng.random_range(0..4) {
                    0 => Shows {
                        names: true,
                        dob: false,
                        passport: true,
                    },
                    1 => Shows {
                        names: true,
                        dob: true,
                        passport: false,
                    },
                    _ => Shows {
                        names: true,
                        dob: true,
                        passport: true,
                    },
                }
            })
            .collect()
    }

    fn identity_cells(&mut self, p: &Person, org: usize, shows: Shows) -> Vec<(String, Cell)> {
        let style = self.orgs[org].clone();
        let mut family = respell(&p.family, style.upper_case, &mut self.rng);
        let mut given = respell(&p.given, style.upper_case, &mut self.rng);
        if !shows.names {
            family.clear();
            given.clear();
        } else if style.names_in_one_field || self.rng.random_bool(0.08) {
            // The whole name in one field, family name first.
            given = format!("{family} {given}").trim().to_string();
            family.clear();
        } else if self.rng.random_bool(0.1) {
            std::mem::swap(&mut family, &mut given);
        }
        debug_assert!(
            !shows.names || name_tokens(&family, &given) == name_tokens(&p.family, &p.given)
        );
        let dob = match (shows.dob, p.dob) {
            (true, Some(Dob::Full(d))) if style.excel_dates => Cell::Date(d),
            (true, Some(Dob::Full(d))) => Cell::Text(format_date(d, style.date_style)),
            (true, Some(Dob::Year(y))) => Cell::Text(y.to_string()),
            _ => Cell::Text(String::new()),
        };
        let passport = match (&p.passport, shows.passport) {
            (Some(pp), true) => format_passport(pp, &mut self.rng),
            _ => String::new(),
        };
        vec![
            ("family_name".into(), Cell::Text(family)),
            ("given_name".into(), Cell::Text(given)),
            ("date_of_birth".into(), dob),
            (
                "sex".into(),
                Cell::Text(match (self.rng.random_range(0..3), p.sex) {
                    (0, "other") => "x".to_string(),
                    (0, s) => s[..1].to_string(),
                    (1, s) => s.to_uppercase(),
                    (_, s) => s.to_string(),
                }),
            ),
            (
                "nationality".into(),
                Cell::Text(nationality_text(
                    p.nationality,
                    style.nationality_style,
                    &mut self.rng,
                )),
            ),
            ("passport_number".into(), Cell::Text(passport)),
        ]
    }

    fn next_ref(&mut self, org: usize, form: Form, date: NaiveDate) -> String {
        let o = &mut self.orgs[org];
        o.next_ref += 1;
        match (form, org % 3) {
            (Form::Screening, 0) => format!("{}-{}-{:04}", o.code, date.year(), o.next_ref),
            (Form::Screening, 1) => format!("C{}", o.next_ref),
            (Form::Screening, _) => format!("{}/{:03}", date.year(), o.next_ref),
            (Form::SelfAssessment, _) => format!("SA-{:04}", o.next_ref),
        }
    }

    /// The months of a person's `n` records, in order, the first random.
    fn months_for(&mut self, n: usize) -> Vec<Period> {
        let last = self.months.len() - 1;
        let mut idx: Vec<usize> = (0..n).map(|_| self.rng.random_range(0..=last)).collect();
        idx.sort_unstable();
        idx.into_iter().map(|i| self.months[i]).collect()
    }

    fn screening(&mut self) -> (Vec<Record>, Vec<Person>, Truth) {
        let spec = self.spec.clone();
        let mut people = Vec::new();
        let mut records = Vec::new();
        // Deliberate near misses that must stay two people: the same passport
        // number from two countries, the same name with another birth date.
        let mut near_misses = Vec::new();
        for _ in 0..2 {
            let (a, b) = loop {
                let a = self.person(Some("IDN"));
                let mut b = self.person(Some("PHL"));
                let Some(pp) = a.passport.clone() else {
                    continue;
                };
                let key = (
                    normalise_passport(&pp).expect("valid").expect("present"),
                    "PHL",
                );
                if self.passport_keys.insert(key) {
                    b.passport = Some(pp);
                    break (a, b);
                }
            };
            near_misses.push(a);
            near_misses.push(b);
            let c = self.person(Some("PHL"));
            let mut d = c.clone();
            d.passport = None;
            if let Some(Dob::Full(born)) = c.dob {
                d.dob = Some(Dob::Full(born + chrono::Days::new(400)));
            }
            near_misses.push(c);
            if self.claim_keys(&d) {
                near_misses.push(d);
            }
        }
        people.extend(near_misses);
        while people.len() < spec.screened {
            let p = self.person(None);
            people.push(p);
        }
        // Which people are identified: the first `identified` after shuffling.
        let mut order: Vec<usize> = (0..people.len()).collect();
        for i in (1..order.len()).rev() {
            let j = self.rng.random_range(0..=i);
            order.swap(i, j);
        }
        let identified: HashSet<usize> = order[..spec.identified].iter().copied().collect();
        let mut several_orgs = 0;
        for (pi, p) in people.clone().iter().enumerate() {
            let linkable = Self::has_name_key(p) || p.passport.is_some();
            let n = if !linkable {
                1
            } else {
                match self.rng.random_range(0..100) {
                    0..=81 => 1,
                    82..=95 => 2,
                    _ => 3,
                }
            };
            let months = self.months_for(n);
            let shows = self.shows(p, n);
            let first_org = self.pick_org(false, &[]);
            let mut orgs = vec![first_org];
            for _ in 1..n {
                // Mostly another NGO; sometimes the same NGO again later.
                let o = if self.rng.random_bool(0.25) {
                    first_org
                } else {
                    let used = orgs.clone();
                    self.pick_org(false, &used)
                };
                orgs.push(o);
            }
            let mut distinct = orgs.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() > 1 {
                several_orgs += 1;
            }
            let is_identified = identified.contains(&pi);
            for k in 0..n {
                let org = orgs[k];
                let date = self.random_date_in(months[k]);
                let mut cells = vec![
                    (
                        "case_ref".to_string(),
                        Cell::Text(self.next_ref(org, Form::Screening, date)),
                    ),
                    (
                        "screening_date".to_string(),
                        if self.orgs[org].excel_dates {
                            Cell::Date(date)
                        } else {
                            Cell::Text(format_date(date, self.orgs[org].date_style))
                        },
                    ),
                ];
                cells.extend(self.identity_cells(p, org, shows[k]));
                cells.extend(self.screening_answers(is_identified, k + 1 == n));
                records.push(Record {
                    person: pi,
                    org,
                    date,
                    cells,
                });
            }
        }
        let truth = Truth {
            screened_persons: people.len(),
            screening_records: records.len(),
            identified_persons: identified.len(),
            screening_orgs: records.iter().map(|r| r.org).collect::<HashSet<_>>().len(),
            persons_seen_by_several_orgs: several_orgs,
            respondents: 0,
            self_assessment_records: 0,
            fear_of_consequences: BTreeMap::new(),
        };
        (records, people, truth)
    }

    fn screening_answers(&mut self, identified: bool, last: bool) -> Vec<(String, Cell)> {
        let rng = &mut self.rng;
        let sector = *[
            "domestic_work",
            "domestic_work",
            "domestic_work",
            "Domestic work",
            "construction",
            "hospitality",
            "agriculture",
            "fishing",
            "manufacturing",
            "sex_industry",
            "other",
            "",
        ]
        .choose(rng)
        .expect("list");
        let exploitation = if identified {
            *[
                "forced_labour",
                "forced labour",
                "servitude",
                "sexual_exploitation",
                "other",
            ]
            .choose(rng)
            .expect("list")
        } else {
            *["none", "none", "forced_labour", ""]
                .choose(rng)
                .expect("list")
        };
        let outcome = match (identified, last) {
            (true, true) => *["identified", "Identified", "IDENTIFIED"]
                .choose(rng)
                .expect("list"),
            (true, false) => "pending",
            (false, _) => *[
                "not identified",
                "Not Identified",
                "not_identified",
                "pending",
            ]
            .choose(rng)
            .expect("list"),
        };
        let mut cells = vec![
            ("sector".to_string(), Cell::Text(sector.to_string())),
            (
                "exploitation_type".to_string(),
                Cell::Text(exploitation.to_string()),
            ),
        ];
        for ind in [
            "ind_abuse_of_vulnerability",
            "ind_deception",
            "ind_restriction_of_movement",
            "ind_isolation",
            "ind_physical_sexual_violence",
            "ind_intimidation_threats",
            "ind_retention_of_documents",
            "ind_withholding_of_wages",
            "ind_debt_bondage",
            "ind_abusive_conditions",
            "ind_excessive_overtime",
        ] {
            let p_yes = if identified { 0.6 } else { 0.2 };
            let v = if rng.random_bool(0.07) {
                ""
            } else if rng.random_bool(p_yes) {
                *["yes", "y", "Yes", "1"].choose(rng).expect("list")
            } else {
                *["no", "n", "No", "0"].choose(rng).expect("list")
            };
            cells.push((ind.to_string(), Cell::Text(v.to_string())));
        }
        cells.push(("outcome".into(), Cell::Text(outcome.to_string())));
        let referral = *[
            "shelter",
            "legal_aid",
            "police",
            "medical",
            "consulate",
            "none",
            "other",
            "",
        ]
        .choose(rng)
        .expect("list");
        cells.push(("referral".into(), Cell::Text(referral.to_string())));
        cells
    }

    fn self_assessment(&mut self, truth: &mut Truth) -> Vec<Record> {
        let mut records = Vec::new();
        let spec = self.spec.clone();
        let mut person_id = 1_000_000;
        for (nat, respondents, fearing) in spec.respondents {
            // Fear answers: exactly `fearing` yes, the rest no, shuffled.
            let mut fears: Vec<bool> = (0..respondents).map(|i| i < fearing).collect();
            for i in (1..fears.len()).rev() {
                let j = self.rng.random_range(0..=i);
                fears.swap(i, j);
            }
            for fear in fears {
                person_id += 1;
                let anonymous = self.rng.random_bool(0.3);
                let p = if anonymous {
                    None
                } else {
                    Some(self.person(Some(nat)))
                };
                let linkable = p
                    .as_ref()
                    .is_some_and(|p| Self::has_name_key(p) || p.passport.is_some());
                let n = if linkable && self.rng.random_bool(0.1) {
                    2
                } else {
                    1
                };
                let months = self.months_for(n);
                let first_org = self.pick_org(true, &[]);
                let orgs = if n == 2 {
                    vec![first_org, self.pick_org(true, &[first_org])]
                } else {
                    vec![first_org]
                };
                let shows = match &p {
                    Some(p) => self.shows(p, n),
                    None => vec![
                        Shows {
                            names: false,
                            dob: false,
                            passport: false,
                        };
                        n
                    ],
                };
                let answers: Vec<&str> = (0..5)
                    .map(|_| {
                        *["yes", "no", "no", "declined", ""]
                            .choose(&mut self.rng)
                            .expect("list")
                    })
                    .collect();
                let occupation = *[
                    "domestic_work",
                    "domestic work",
                    "construction",
                    "hospitality",
                    "",
                ]
                .choose(&mut self.rng)
                .expect("list");
                for k in 0..n {
                    let org = orgs[k];
                    let date = self.random_date_in(months[k]);
                    let mut cells = vec![
                        (
                            "response_ref".to_string(),
                            Cell::Text(self.next_ref(org, Form::SelfAssessment, date)),
                        ),
                        (
                            "response_date".to_string(),
                            Cell::Text(format_date(date, self.orgs[org].date_style)),
                        ),
                    ];
                    match &p {
                        Some(p) => cells.extend(self.identity_cells(p, org, shows[k])),
                        None => {
                            let style = self.orgs[org].nationality_style;
                            let sex = *["f", "female", "m", ""]
                                .choose(&mut self.rng)
                                .expect("list");
                            cells.extend([
                                ("family_name".to_string(), Cell::Text(String::new())),
                                ("given_name".to_string(), Cell::Text(String::new())),
                                ("date_of_birth".to_string(), Cell::Text(String::new())),
                                ("sex".to_string(), Cell::Text(sex.to_string())),
                                (
                                    "nationality".to_string(),
                                    Cell::Text(nationality_text(nat, style, &mut self.rng)),
                                ),
                                ("passport_number".to_string(), Cell::Text(String::new())),
                            ]);
                        }
                    }
                    cells.push(("occupation".into(), Cell::Text(occupation.to_string())));
                    cells.push((
                        "fear_of_consequences".into(),
                        Cell::Text(if fear { "yes" } else { "no" }.to_string()),
                    ));
                    for (q, a) in [
                        "signed_debt_agreement",
                        "not_allowed_to_leave",
                        "documents_held_by_employer",
                        "unpaid_wages",
                        "excessive_hours",
                    ]
                    .iter()
                    .zip(&answers)
                    {
                        cells.push((q.to_string(), Cell::Text(a.to_string())));
                    }
                    records.push(Record {
                        person: person_id,
                        org,
                        date,
                        cells,
                    });
                }
            }
            truth.respondents += respondents;
            truth
                .fear_of_consequences
                .insert(nat.to_string(), [respondents, fearing]);
        }
        truth.self_assessment_records = records.len();
        records
    }
}

/// Generates the pilot-shaped data into `dir` (`dir/ORG/FORM_PERIOD.csv` or
/// `.xlsx`) and writes `dir/truth.json`.
pub fn generate(spec: &PilotSpec, dir: &Path) -> Result<Generated> {
    let mut g = Generator::new(spec.clone());
    let (screening, _people, mut truth) = g.screening();
    let self_assessment = g.self_assessment(&mut truth);
    let mut files = Vec::new();
    for (form, records) in [
        (Form::Screening, screening),
        (Form::SelfAssessment, self_assessment),
    ] {
        let mut groups: BTreeMap<(usize, Period), Vec<Record>> = BTreeMap::new();
        for r in records {
            groups
                .entry((r.org, Period::of(r.date)))
                .or_default()
                .push(r);
        }
        for ((org, period), mut recs) in groups {
            recs.sort_by_key(|r| (r.date, r.person));
            let style = &g.orgs[org];
            let ext = if style.xlsx { "xlsx" } else { "csv" };
            let rel = PathBuf::from(&style.code).join(format!("{}_{period}.{ext}", form.code()));
            let path = dir.join(&rel);
            fs::create_dir_all(path.parent().expect("parent"))
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
            if style.xlsx {
                write_xlsx(&path, form, &recs)
            } else {
                write_csv(&path, form, &recs, style)
            }?;
            files.push(RawFile {
                path: rel,
                form,
                org: style.code.clone(),
                period,
                rows: recs.len(),
            });
        }
    }
    let generated = Generated { files, truth };
    let json = serde_json::to_string_pretty(&generated.truth).expect("serialisable");
    crate::drop::write_text_atomically(&dir.join("truth.json"), &(json + "\n"))?;
    Ok(generated)
}

fn header(form: Form) -> Vec<&'static str> {
    form.schema()
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect()
}

fn cell_for<'a>(r: &'a Record, column: &str) -> Option<&'a Cell> {
    r.cells.iter().find(|(c, _)| c == column).map(|(_, v)| v)
}

fn write_csv(path: &Path, form: Form, recs: &[Record], style: &OrgStyle) -> Result<()> {
    let mut w = csv::WriterBuilder::new()
        .delimiter(style.delimiter)
        .terminator(if style.crlf {
            csv::Terminator::CRLF
        } else {
            csv::Terminator::Any(b'\n')
        })
        .from_writer(Vec::new());
    let cols = header(form);
    let io = |e: csv::Error| Error::io("cannot write synthetic data", e.into());
    w.write_record(&cols).map_err(io)?;
    for r in recs {
        let row: Vec<String> = cols
            .iter()
            .map(|c| match cell_for(r, c) {
                Some(Cell::Text(t)) => t.clone(),
                Some(Cell::Date(d)) => format_date(*d, style.date_style),
                None => String::new(),
            })
            .collect();
        w.write_record(&row).map_err(io)?;
    }
    let mut bytes = if style.bom {
        b"\xEF\xBB\xBF".to_vec()
    } else {
        Vec::new()
    };
    bytes.extend(
        w.into_inner()
            .map_err(|e| Error::io("cannot write synthetic data", e.into_error()))?,
    );
    fs::File::create(path)
        .and_then(|mut f| f.write_all(&bytes))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

fn write_xlsx(path: &Path, form: Form, recs: &[Record]) -> Result<()> {
    let xerr = |e: rust_xlsxwriter::XlsxError| {
        Error::io(
            format!("cannot write {}", path.display()),
            std::io::Error::other(e.to_string()),
        )
    };
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    let date_fmt = Format::new().set_num_format("dd/mm/yyyy");
    let cols = header(form);
    for (c, name) in cols.iter().enumerate() {
        sheet.write_string(0, c as u16, *name).map_err(xerr)?;
    }
    for (i, r) in recs.iter().enumerate() {
        let row = i as u32 + 1;
        for (c, name) in cols.iter().enumerate() {
            match cell_for(r, name) {
                Some(Cell::Text(t)) if !t.is_empty() => {
                    sheet.write_string(row, c as u16, t).map_err(xerr)?;
                }
                Some(Cell::Date(d)) => {
                    let dt =
                        ExcelDateTime::from_ymd(d.year() as u16, d.month() as u8, d.day() as u8)
                            .map_err(xerr)?;
                    sheet
                        .write_datetime_with_format(row, c as u16, &dt, &date_fmt)
                        .map_err(xerr)?;
                }
                _ => {}
            }
        }
    }
    book.save(path).map_err(xerr)
}

/// Writes `rows` synthetic screening rows for one period as CSV, fast, for
/// benchmarks: names, dates, passports and nationalities in the spellings
/// the demo uses, every row valid. Seeded and deterministic.
pub fn bulk_screening_csv(
    mut out: impl Write,
    rows: usize,
    seed: u64,
    period: Period,
) -> std::io::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let header = header(Form::Screening).join(",");
    writeln!(out, "{header}")?;
    let days = period
        .next()
        .first_day()
        .signed_duration_since(period.first_day())
        .num_days();
    let answers = ["yes", "no", "y", "n", "1", "0", ""];
    for i in 0..rows {
        let nat = if rng.random_bool(0.5) { "IDN" } else { "PHL" };
        let (given, family) = if nat == "IDN" {
            (IDN_GIVEN.choose(&mut rng), IDN_FAMILY.choose(&mut rng))
        } else {
            (PHL_GIVEN.choose(&mut rng), PHL_FAMILY.choose(&mut rng))
        };
        let family = respell(family.expect("pool"), rng.random_bool(0.1), &mut rng);
        let date = period.first_day() + chrono::Days::new(rng.random_range(0..days) as u64);
        let born = NaiveDate::from_ymd_opt(rng.random_range(1960..2001), 1, 1).expect("date")
            + chrono::Days::new(rng.random_range(0..365));
        let style = rng.random_range(0..3u8);
        let passport = format!(
            "{}{:07}",
            (b'A' + rng.random_range(0..26u8)) as char,
            rng.random_range(0..10_000_000)
        );
        let mut w = csv::Writer::from_writer(Vec::with_capacity(256));
        let mut record: Vec<String> = vec![
            format!("C{i}"),
            format_date(date, style),
            family,
            given.expect("pool").to_string(),
            format_date(born, style),
            ["f", "female", "m", "x", ""]
                .choose(&mut rng)
                .expect("list")
                .to_string(),
            nationality_text(nat, rng.random_range(0..5), &mut rng),
            format_passport(&passport, &mut rng),
            ["domestic_work", "construction", "fishing", ""]
                .choose(&mut rng)
                .expect("list")
                .to_string(),
            ["forced_labour", "none", "servitude", ""]
                .choose(&mut rng)
                .expect("list")
                .to_string(),
        ];
        for _ in 0..11 {
            record.push(answers.choose(&mut rng).expect("list").to_string());
        }
        record.push(
            ["identified", "not identified", "pending"]
                .choose(&mut rng)
                .expect("list")
                .to_string(),
        );
        record.push(
            ["shelter", "police", "none", ""]
                .choose(&mut rng)
                .expect("list")
                .to_string(),
        );
        w.write_record(&record).map_err(std::io::Error::other)?;
        out.write_all(
            &w.into_inner()
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pseudonymise::country::nationality;
    use crate::pseudonymise::normalise::{BirthDate, parse_birth_date};

    fn text(r: &Record, col: &str) -> String {
        match cell_for(r, col) {
            Some(Cell::Text(t)) => t.clone(),
            Some(Cell::Date(d)) => d.format("%Y-%m-%d").to_string(),
            None => String::new(),
        }
    }

    /// Keys as pseudonymise derives them from the cells, without HMAC.
    fn keys(r: &Record) -> Vec<String> {
        let mut out = Vec::new();
        let nat = nationality(&text(r, "nationality")).unwrap();
        if let (Ok(Some(p)), Some(n)) = (normalise_passport(&text(r, "passport_number")), nat) {
            out.push(format!("p:{p}:{n}"));
        }
        let tokens = name_tokens(&text(r, "family_name"), &text(r, "given_name"));
        if let (Ok(BirthDate::Full(d)), false) = (
            parse_birth_date(&text(r, "date_of_birth")),
            tokens.is_empty(),
        ) {
            out.push(format!("n:{d}:{}", tokens.join(" ")));
        }
        out
    }

    #[test]
    fn keys_belong_to_one_person_and_link_all_their_records() {
        let mut g = Generator::new(PilotSpec::default());
        let (screening, people, mut truth) = g.screening();
        let answers = g.self_assessment(&mut truth);
        for records in [&screening, &answers] {
            let mut owner: HashMap<String, usize> = HashMap::new();
            for r in records.iter() {
                for k in keys(r) {
                    let o = *owner.entry(k.clone()).or_insert(r.person);
                    assert_eq!(o, r.person, "two people share a key");
                }
            }
            let mut by_person: BTreeMap<usize, Vec<Vec<String>>> = BTreeMap::new();
            for r in records.iter() {
                by_person.entry(r.person).or_default().push(keys(r));
            }
            for (p, recs) in by_person {
                if recs.len() > 1 {
                    for k in &recs[1..] {
                        assert!(
                            k.iter().any(|k| recs[0].contains(k)),
                            "person {p}: {recs:?}"
                        );
                    }
                }
            }
        }
        assert_eq!(people.len(), 1037);
    }

    #[test]
    fn respellings_keep_name_tokens() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for name in PHL_FAMILY.iter().chain(IDN_FAMILY).chain(PHL_GIVEN) {
            for upper in [false, true] {
                for _ in 0..10 {
                    let s = respell(name, upper, &mut rng);
                    assert_eq!(name_tokens(&s, ""), name_tokens(name, ""), "{name} -> {s}");
                }
            }
        }
    }
}
