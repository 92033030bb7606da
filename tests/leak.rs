//! The demo end to end: no identity value of the input reaches any output,
//! and the drops' match keys link the synthetic people exactly as the
//! generator made them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use arrow_array::{Array, BinaryArray, BooleanArray, FixedSizeBinaryArray, StringArray};
use safetally::pseudonymise::normalise::{
    BirthDate, name_tokens, normalise_passport, normalise_text, parse_birth_date,
};
use safetally::schema::Role;

use crate::util::{DropData, World, finish};

pub(crate) fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p, ext));
        } else if p.to_string_lossy().ends_with(ext) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every identity value of the raw files, raw and normalised.
pub(crate) fn identity_values(raw_dir: &Path) -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    for path in files_under(raw_dir, ".csv")
        .into_iter()
        .chain(files_under(raw_dir, ".xlsx"))
    {
        let t = safetally::raw::read(&path).unwrap();
        let form = if path.to_string_lossy().contains("self_assessment") {
            safetally::schema::Form::SelfAssessment
        } else {
            safetally::schema::Form::Screening
        };
        let schema = form.schema();
        for row in &t.rows {
            let cell = |role: Role| {
                row.cells
                    .get(schema.position(role).unwrap())
                    .unwrap_or("")
                    .trim()
            };
            let (family, given) = (cell(Role::FamilyName), cell(Role::GivenName));
            for v in [family, given] {
                values.insert(v.to_string());
                values.insert(normalise_text(v));
            }
            values.extend(name_tokens(family, given));
            let dob = cell(Role::DateOfBirth);
            values.insert(dob.to_string());
            match parse_birth_date(dob) {
                Ok(BirthDate::Full(d)) => {
                    values.insert(d.format("%Y-%m-%d").to_string());
                    values.insert(d.format("%d/%m/%Y").to_string());
                }
                Ok(BirthDate::Year(y)) => {
                    values.insert(y.to_string());
                }
                Err(_) => {}
            }
            let passport = cell(Role::PassportNumber);
            values.insert(passport.to_string());
            if let Ok(Some(p)) = normalise_passport(passport) {
                values.insert(p);
            }
        }
    }
    values.retain(|v| v.chars().count() >= 3);
    // Words the outputs must be able to print: country names (a report
    // names "Sri Lanka", and "Sri" is also a given name) and code labels.
    // A name token that is one of them cannot be told from it.
    let mut vocabulary: BTreeSet<String> = BTreeSet::new();
    for c in safetally::pseudonymise::country::countries() {
        for text in std::iter::once(c.name)
            .chain(c.aliases.iter().copied())
            .chain(c.demonyms.iter().copied())
        {
            vocabulary.extend(text.split_whitespace().map(str::to_lowercase));
        }
    }
    values.retain(|v| !vocabulary.contains(&v.to_lowercase()));
    values
}

/// Scans a text for identity values: as whole words (names, tokens) and as
/// substrings (dates and passports, which hold no spaces or letters alone).
pub(crate) fn leaks_in_text(text: &str, values: &BTreeSet<String>) -> Vec<String> {
    let lower = text.to_lowercase();
    let words: BTreeSet<&str> = lower
        .split(|c: char| !c.is_alphanumeric() && c != '-' && c != '/')
        .filter(|w| !w.is_empty())
        .collect();
    values
        .iter()
        .filter(|v| {
            let v = v.to_lowercase();
            words.contains(v.as_str()) || (v.len() >= 6 && lower.contains(&v))
        })
        .cloned()
        .collect()
}

/// Identity values (6 bytes or more, so that chance matches in random key
/// bytes are negligible) found inside a drop's key columns.
fn binary_leaks(path: &Path, values: &BTreeSet<String>) -> usize {
    let d = DropData::read(path);
    let long: Vec<Vec<u8>> = values
        .iter()
        .filter(|v| v.len() >= 6)
        .flat_map(|v| [v.as_bytes().to_vec(), v.to_lowercase().into_bytes()])
        .collect();
    // Index values by their first 6 bytes; look each key window up.
    let mut by_prefix: HashMap<&[u8], Vec<&[u8]>> = HashMap::new();
    for v in &long {
        by_prefix.entry(&v[..6]).or_default().push(v);
    }
    let mut found = 0;
    for col in d.batch.columns() {
        let values: Vec<&[u8]> =
            if let Some(b) = col.as_any().downcast_ref::<FixedSizeBinaryArray>() {
                b.iter().flatten().collect()
            } else if let Some(b) = col.as_any().downcast_ref::<BinaryArray>() {
                b.iter().flatten().collect()
            } else {
                Vec::new()
            };
        {
            for key in values {
                for (i, w) in key.windows(6).enumerate() {
                    if let Some(candidates) = by_prefix.get(w) {
                        found += candidates
                            .iter()
                            .filter(|v| key[i..].starts_with(v))
                            .count();
                    }
                }
            }
        }
    }
    found
}

fn drop_texts(path: &Path) -> Vec<String> {
    let d = DropData::read(path);
    let mut texts: Vec<String> = d.meta.values().cloned().collect();
    texts.extend(d.meta.keys().cloned());
    for col in d.batch.columns() {
        let any = col.as_any();
        if let Some(s) = any.downcast_ref::<StringArray>() {
            texts.extend(s.iter().flatten().map(str::to_string));
        } else if any.downcast_ref::<FixedSizeBinaryArray>().is_some()
            || any.downcast_ref::<BinaryArray>().is_some()
        {
            // Keys, encodings and blocking keys: `binary_leaks` scans them.
        } else {
            assert!(
                any.downcast_ref::<BooleanArray>().is_some(),
                "unexpected column type"
            );
        }
    }
    texts
}

#[test]
fn no_identity_value_reaches_any_output_of_the_demo() {
    let w = World::new();
    let demo = w.run(&["demo", "--dir", "demo"]);
    demo.ok();
    let raw = w.path("demo/raw");
    let values = identity_values(&raw);
    assert!(
        values.len() > 1000,
        "the scan has values to look for: {}",
        values.len()
    );

    // Also make a rejects report from demo data with identity values in the
    // rejected rows.
    let first_csv = files_under(&raw, ".csv")
        .into_iter()
        .find(|p| p.to_string_lossy().contains("screening_"))
        .unwrap();
    let mut text = std::fs::read_to_string(&first_csv).unwrap();
    let table = safetally::raw::read(&first_csv).unwrap();
    let sep = if text.lines().next().unwrap().contains(';') {
        ";"
    } else {
        ","
    };
    for (i, row) in table.rows.iter().enumerate() {
        // The same identity, with a bad sex code and a bad date: rejected.
        let mut cells: Vec<String> = row.cells.iter().map(str::to_string).collect();
        cells[0] = format!("BAD-{i}");
        cells[1] = "32/13/2018".into();
        cells[5] = "unknown-sex".into();
        text.push_str(&cells.join(sep));
        text.push('\n');
    }
    let bad = w.write("bad/screening.csv", text);
    let period = first_csv
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .rsplit('_')
        .next()
        .unwrap()
        .to_string();
    let rejected = finish(
        w.cmd()
            .args([
                "pseudonymise",
                "--form",
                "screening",
                "--org",
                "X",
                "--period",
                &period,
            ])
            .args([
                "--key",
                "demo/task-force.key",
                "--out",
                "bad",
                "--allow-rejects",
            ])
            .arg(&bad)
            .output()
            .unwrap(),
    );
    rejected.ok();

    let mut outputs: Vec<(String, String)> = vec![
        ("demo stdout".into(), demo.stdout.clone()),
        ("demo stderr".into(), demo.stderr.clone()),
        ("rejects stdout".into(), rejected.stdout.clone()),
        ("rejects stderr".into(), rejected.stderr.clone()),
    ];
    // The secretariat's side: the ledger, the member list, the report and
    // what the store commands print.
    for t in files_under(&w.path("demo/report/tables"), ".csv") {
        outputs.push((
            t.display().to_string(),
            std::fs::read_to_string(&t).unwrap(),
        ));
    }
    for file in [
        "demo/store/ledger.jsonl",
        "demo/members.toml",
        "demo/report/report.md",
        "demo/report/report.html",
        "demo/report/summary.json",
        "demo/report/manifest.json",
    ] {
        outputs.push((file.into(), std::fs::read_to_string(w.path(file)).unwrap()));
    }
    for args in [
        &["store", "status", "demo/store"][..],
        &["store", "status", "demo/store", "--json"],
        &["store", "verify", "demo/store"],
    ] {
        let r = w.run(args);
        r.ok();
        outputs.push((args.join(" "), r.stdout + &r.stderr));
    }
    let reports = files_under(&w.path("bad"), ".rejects.csv");
    assert_eq!(reports.len(), 1);
    for r in &reports {
        outputs.push((r.display().to_string(), std::fs::read_to_string(r).unwrap()));
    }
    let drops: Vec<PathBuf> = files_under(&w.path("demo/drops"), ".parquet")
        .into_iter()
        .chain(files_under(&w.path("bad"), ".parquet"))
        .chain(files_under(&w.path("demo/store"), ".parquet"))
        .collect();
    assert!(drops.len() > 600);
    for d in &drops {
        outputs.push((d.display().to_string(), drop_texts(d).join("\n")));
        assert_eq!(binary_leaks(d, &values), 0, "{}", d.display());
    }
    for (name, text) in &outputs {
        let found = leaks_in_text(text, &values);
        assert!(
            found.is_empty(),
            "{name} contains {} identity value(s)",
            found.len()
        );
    }
    // The scan itself works: it finds a value that is there.
    let probe = values.iter().find(|v| v.len() >= 6).unwrap();
    assert!(!leaks_in_text(&format!("x {probe} y"), &values).is_empty());
}

/// Union-find over match keys: the people the drops describe.
struct Persons {
    parent: Vec<usize>,
}

impl Persons {
    fn find(&mut self, x: usize) -> usize {
        let mut r = x;
        while self.parent[r] != r {
            r = self.parent[r];
        }
        let mut x = x;
        while self.parent[x] != r {
            let next = self.parent[x];
            self.parent[x] = r;
            x = next;
        }
        r
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.parent[a.max(b)] = a.min(b);
        }
    }
}

struct Linked {
    persons: usize,
    records: usize,
    /// For each person (root), the values of `column` on its records.
    values: HashMap<usize, Vec<Option<String>>>,
}

/// A record's passport key, name key and the value of one column.
type LinkRecord = (Option<Vec<u8>>, Option<Vec<u8>>, Option<String>);

fn link(drops: &[PathBuf], column: &str) -> Linked {
    let mut records: Vec<LinkRecord> = Vec::new();
    for path in drops {
        let d = DropData::read(path);
        for r in 0..d.rows() {
            records.push((
                d.key("key_passport", r),
                d.key("key_name_dob", r),
                d.text(column, r),
            ));
        }
    }
    let mut uf = Persons {
        parent: (0..records.len()).collect(),
    };
    let mut first: HashMap<(u8, Vec<u8>), usize> = HashMap::new();
    for (i, (p, n, _)) in records.iter().enumerate() {
        for (tag, k) in [(0u8, p), (1, n)] {
            if let Some(k) = k {
                let j = *first.entry((tag, k.clone())).or_insert(i);
                uf.union(i, j);
            }
        }
    }
    let mut values: HashMap<usize, Vec<Option<String>>> = HashMap::new();
    for (i, (_, _, v)) in records.iter().enumerate() {
        let root = uf.find(i);
        values.entry(root).or_default().push(v.clone());
    }
    Linked {
        persons: values.len(),
        records: records.len(),
        values,
    }
}

#[test]
fn demo_drops_link_into_exactly_the_people_generated() {
    let w = World::new();
    w.run(&["demo", "--dir", "demo"]).ok();
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.path("demo/raw/truth.json")).unwrap())
            .unwrap();
    assert_eq!(truth["screened_persons"], 1037);
    assert_eq!(truth["identified_persons"], 63);
    assert_eq!(truth["respondents"], 424);
    let drops = files_under(&w.path("demo/drops"), ".parquet");
    let (screening, self_assessment): (Vec<PathBuf>, Vec<PathBuf>) = drops
        .into_iter()
        .partition(|p| p.to_string_lossy().contains("/screening_"));

    let s = link(&screening, "outcome");
    assert_eq!(
        s.records as u64,
        truth["screening_records"].as_u64().unwrap()
    );
    assert!(
        s.records > s.persons,
        "the demo has people screened more than once"
    );
    assert_eq!(s.persons, 1037);
    let identified = s
        .values
        .values()
        .filter(|v| v.iter().any(|o| o.as_deref() == Some("identified")))
        .count();
    assert_eq!(identified, 63);

    let a = link(&self_assessment, "fear_of_consequences");
    assert!(a.records > a.persons);
    assert_eq!(a.persons, 424);
    // Fear by nationality needs the nationality too: link again on it.
    let nat = link(&self_assessment, "nationality");
    let mut by_nat: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (root, fears) in &a.values {
        let n = nat.values[root][0].clone().unwrap();
        let e = by_nat.entry(n).or_default();
        e.0 += 1;
        if fears.iter().any(|f| f.as_deref() == Some("yes")) {
            e.1 += 1;
        }
    }
    let pct = |(n, yes): (usize, usize)| format!("{:.1}", 100.0 * yes as f64 / n as f64);
    assert_eq!(pct(by_nat["IDN"]), "85.5");
    assert_eq!(pct(by_nat["PHL"]), "48.8");
    // A naive count of rows would be wrong.
    assert_ne!(s.records, 1037);
    assert_ne!(a.records, 424);
    // So would an exact-match de-duplication on one identifier per record
    // (the passport key where there is one, else the name key), as the
    // hashed-identifier schemes in use before linkage did.
    let mut naive: BTreeSet<(u8, Vec<u8>)> = BTreeSet::new();
    let mut anonymous = 0;
    for path in &screening {
        let d = DropData::read(path);
        for r in 0..d.rows() {
            match (d.key("key_passport", r), d.key("key_name_dob", r)) {
                (Some(k), _) => naive.insert((0, k)),
                (None, Some(k)) => naive.insert((1, k)),
                (None, None) => {
                    anonymous += 1;
                    true
                }
            };
        }
    }
    let naive_persons = naive.len() + anonymous;
    assert_ne!(
        naive_persons, 1037,
        "exact-match de-duplication is not enough"
    );

    // The report the demo wrote gives exactly the generated figures.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.path("demo/report/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["screening"]["persons"], 1037);
    assert_eq!(summary["screening"]["identified"], 63);
    assert_eq!(summary["screening"]["identified_pct"], 6.1);
    assert_eq!(summary["screening"]["records"], s.records as u64);
    assert_eq!(summary["screening"]["organisations"], 27);
    assert_eq!(summary["self_assessment"]["respondents"], 424);
    assert_eq!(
        summary["self_assessment"]["fear_of_consequences_pct"]["IDN"],
        85.5
    );
    assert_eq!(
        summary["self_assessment"]["fear_of_consequences_pct"]["PHL"],
        48.8
    );
}

/// The acceptance test of the encodings: the names of the demo's raw files,
/// encoded under another key, match no name encoding of the demo's drops,
/// while the same names under the demo's own key do (so the comparison
/// can find a match when there is one).
#[test]
fn no_name_encoding_can_be_matched_without_the_key() {
    use safetally::pseudonymise::encode::{Encoder, dice};
    let w = World::new();
    w.run(&["demo", "--dir", "demo"]).ok();
    let mut names: BTreeSet<Vec<String>> = BTreeSet::new();
    for path in files_under(&w.path("demo/raw"), ".csv") {
        let form = if path.to_string_lossy().contains("self_assessment") {
            safetally::schema::Form::SelfAssessment
        } else {
            safetally::schema::Form::Screening
        };
        let schema = form.schema();
        let t = safetally::raw::read(&path).unwrap();
        for row in &t.rows {
            let cell = |role: Role| row.cells.get(schema.position(role).unwrap()).unwrap_or("");
            let tokens = name_tokens(cell(Role::FamilyName), cell(Role::GivenName));
            if !tokens.is_empty() {
                names.insert(tokens);
            }
        }
    }
    assert!(names.len() > 200, "{} names", names.len());
    let mut encoded: Vec<Vec<u8>> = Vec::new();
    for path in files_under(&w.path("demo/drops"), ".parquet") {
        let d = DropData::read(&path);
        for r in 0..d.rows() {
            encoded.extend(d.key("enc_name", r));
        }
    }
    assert!(encoded.len() > 1000);
    let key_text = std::fs::read_to_string(w.path("demo/task-force.key")).unwrap();
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(key_text.trim(), &mut bytes).unwrap();
    let own = Encoder::new(&safetally::key::TaskForceKey::from_bytes(bytes)).with_name_flip(0.0);
    let other =
        Encoder::new(&safetally::key::TaskForceKey::from_bytes([0x5a; 32])).with_name_flip(0.0);
    let best = |e: &Encoder, tokens: &[String]| -> f64 {
        let f = e
            .encode(tokens.iter().map(String::as_str), None, "", &[0; 32])
            .name
            .unwrap();
        encoded.iter().map(|x| dice(&f, x)).fold(0.0, f64::max)
    };
    // The name keys: a name's key under another key is none of the drops';
    // under the drops' own key most names are found.
    let mut name_keys: BTreeSet<Vec<u8>> = BTreeSet::new();
    for path in files_under(&w.path("demo/drops"), ".parquet") {
        let d = DropData::read(&path);
        for r in 0..d.rows() {
            name_keys.extend(d.key("name_key", r));
        }
    }
    let key_of = |e: &Encoder, tokens: &[String]| -> Vec<u8> {
        e.encode(tokens.iter().map(String::as_str), None, "", &[0; 32])
            .name_key
            .unwrap()
            .to_be_bytes()
            .to_vec()
    };
    let own_keys = names
        .iter()
        .filter(|t| name_keys.contains(&key_of(&own, t)))
        .count();
    assert!(
        own_keys * 10 >= names.len() * 9,
        "{own_keys} of {}",
        names.len()
    );
    assert!(
        names
            .iter()
            .all(|t| !name_keys.contains(&key_of(&other, t))),
        "a name key made under another key matches a drop's"
    );
    let mut own_found = 0;
    for tokens in &names {
        let b = best(&other, tokens);
        assert!(
            b < 0.7,
            "a name encoded under another key matches a drop's encoding (Dice {b})"
        );
        if best(&own, tokens) >= 0.85 {
            own_found += 1;
        }
    }
    assert!(
        own_found * 10 >= names.len() * 9,
        "{own_found} of {}",
        names.len()
    );
}
