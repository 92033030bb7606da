//! The tables of docs/pseudonymisation.md, checked row by row against the
//! library: normalisation version 1, nationality, the key fingerprint and
//! the match-key test vectors. The document is the specification; these
//! tests fail when the code and the document disagree, naming the line of
//! the document.
//!
//! Table format: under a heading `### Table: NAME`, a Markdown table whose
//! values are written between backticks (`` `` `` is empty; `\t` and
//! `\u{..}` are escapes); a bare word such as `refused` is not a value.

use std::collections::{BTreeSet, HashMap};

use chrono::NaiveDate;
use safetally::key::TaskForceKey;
use safetally::pseudonymise::country::{NationalityError, countries, nationality};
use safetally::pseudonymise::matchkeys::{Digest, Keyer};
use safetally::pseudonymise::normalise::{
    BirthDate, name_tokens, normalise_passport, normalise_text, parse_birth_date, parse_date,
};
use safetally::pseudonymise::{Input, Period, Pseudonymiser, normalise_reference, parse_org};
use safetally::raw::{RawRow, RawTable};
use safetally::schema::{Form, Role};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/pseudonymisation.md");

/// One data row of a table: its line in the document and its cells as written.
struct Row {
    line: usize,
    cells: Vec<String>,
}

impl Row {
    /// The value of cell `i`, which must be written between backticks.
    fn value(&self, i: usize) -> String {
        value(&self.cells[i]).unwrap_or_else(|| {
            panic!(
                "{DOC} line {}: cell {} is not a value between backticks",
                self.line,
                i + 1
            )
        })
    }
}

/// The data rows of the table under `### Table: {name}`. Checks the header
/// and that the table has at least `min_rows` rows (so deleting rows from
/// the document fails).
fn table(name: &str, header: &[&str], min_rows: usize) -> Vec<Row> {
    let text = std::fs::read_to_string(DOC).expect("read docs/pseudonymisation.md");
    let lines: Vec<&str> = text.lines().collect();
    let heading = format!("### Table: {name}");
    let start = lines
        .iter()
        .position(|l| l.trim_end() == heading)
        .unwrap_or_else(|| panic!("{DOC} has no heading '{heading}'"));
    // The table lines up to the next heading: one table, without a break
    // (a blank line would hide the rows after it).
    let section: Vec<(usize, &str)> = lines
        .iter()
        .copied()
        .enumerate()
        .skip(start + 1)
        .take_while(|(_, l)| !l.starts_with('#'))
        .filter(|(_, l)| l.starts_with('|'))
        .collect();
    if let Some(w) = section.windows(2).find(|w| w[1].0 != w[0].0 + 1) {
        panic!("{DOC} line {}: the table is interrupted", w[1].0 + 1);
    }
    let mut rows = section.into_iter().map(|(i, l)| Row {
        line: i + 1,
        cells: l
            .trim()
            .trim_start_matches('|')
            .trim_end_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect(),
    });
    let head = rows
        .next()
        .unwrap_or_else(|| panic!("{DOC}: no table under '{heading}'"));
    assert_eq!(head.cells, header, "{DOC} line {}: table header", head.line);
    rows.next(); // the |---| line
    let rows: Vec<Row> = rows.collect();
    for r in &rows {
        assert_eq!(
            r.cells.len(),
            header.len(),
            "{DOC} line {}: wrong number of cells",
            r.line
        );
    }
    assert!(
        rows.len() >= min_rows,
        "{DOC}: table '{name}' has {} rows, expected at least {min_rows}",
        rows.len()
    );
    rows
}

/// The text between backticks, escapes resolved; `None` for a bare word.
fn value(cell: &str) -> Option<String> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    let mut out = String::new();
    let mut rest = inner;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        if let Some(r) = rest[i..].strip_prefix("\\t") {
            out.push('\t');
            rest = r;
        } else if let Some(r) = rest[i..].strip_prefix("\\u{") {
            let (hex, r) = r.split_once('}').expect("\\u{..} is closed");
            let c = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
            out.push(c.unwrap_or_else(|| panic!("bad escape \\u{{{hex}}} in {cell}")));
            rest = r;
        } else {
            panic!("unknown escape in {cell}");
        }
    }
    out.push_str(rest);
    Some(out)
}

/// A cell as compared: values with escapes resolved, bare words as written.
fn expected(cell: &str) -> String {
    value(cell).map_or_else(|| cell.to_string(), |v| shown(&v))
}

/// A value as the tables write it.
fn shown(v: &str) -> String {
    format!("`{v}`")
}

/// Rows where the document and the library disagree.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, row: &Row, expected: &str, got: &str) {
        if expected != got {
            self.0.push(format!(
                "line {}: | {} |\n    the document says {expected}, the library gives {got}",
                row.line,
                row.cells.join(" | ")
            ));
        }
    }

    fn assert_none(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{} rows of the {what} table of {DOC} disagree with the library:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

#[test]
fn normalisation_text_table() {
    let mut failures = Failures::default();
    for row in table("normalise_text", &["input", "output"], 49) {
        let got = shown(&normalise_text(&row.value(0)));
        failures.check(&row, &expected(&row.cells[1]), &got);
    }
    failures.assert_none("normalise_text");
}

#[test]
fn normalisation_name_tokens_table() {
    let mut failures = Failures::default();
    let header = ["family_name", "given_name", "tokens"];
    for row in table("name_tokens", &header, 36) {
        let got = shown(&name_tokens(&row.value(0), &row.value(1)).join(" "));
        failures.check(&row, &expected(&row.cells[2]), &got);
    }
    failures.assert_none("name_tokens");
}

#[test]
fn normalisation_passport_table() {
    let mut failures = Failures::default();
    for row in table("normalise_passport", &["input", "output"], 16) {
        let got = match normalise_passport(&row.value(0)) {
            Ok(p) => shown(p.as_deref().unwrap_or("")),
            Err(_) => "refused".to_string(),
        };
        failures.check(&row, &expected(&row.cells[1]), &got);
    }
    failures.assert_none("normalise_passport");
}

#[test]
fn normalisation_date_tables() {
    let iso = |d: NaiveDate| shown(&d.format("%Y-%m-%d").to_string());
    let mut failures = Failures::default();
    for row in table("parse_date", &["input", "output"], 22) {
        let got = parse_date(&row.value(0)).map_or("refused".to_string(), iso);
        failures.check(&row, &expected(&row.cells[1]), &got);
    }
    for row in table("parse_birth_date", &["input", "output"], 15) {
        let got = match parse_birth_date(&row.value(0)) {
            Ok(BirthDate::Full(d)) => iso(d),
            Ok(BirthDate::Year(y)) => format!("year {y}"),
            Err(_) => "refused".to_string(),
        };
        failures.check(&row, &expected(&row.cells[1]), &got);
    }
    failures.assert_none("date");
}

#[test]
fn normalisation_nationality_tables() {
    let mut failures = Failures::default();
    // What the document says each input gives.
    let mut documented: HashMap<String, String> = HashMap::new();
    for row in table("nationality", &["input", "alpha-3"], 1548) {
        let got = match nationality(&row.value(0)) {
            Ok(code) => shown(code.unwrap_or("")),
            Err(NationalityError::Unknown | NationalityError::Placeholder) => "refused".to_string(),
            Err(NationalityError::Ambiguous(codes)) => format!("ambiguous {codes:?}"),
        };
        failures.check(&row, &expected(&row.cells[1]), &got);
        documented.insert(row.value(0), expected(&row.cells[1]));
    }
    let header = ["input", "refused as ambiguous between"];
    for row in table("nationality, ambiguous", &header, 8) {
        let got = match nationality(&row.value(0)) {
            Err(NationalityError::Ambiguous(mut codes)) => {
                codes.sort_unstable();
                shown(&codes.join(" "))
            }
            other => format!("{other:?}"),
        };
        failures.check(&row, &expected(&row.cells[1]), &got);
        documented.insert(row.value(0), "ambiguous".to_string());
    }
    failures.assert_none("nationality");

    // Every word of countries.tsv is documented; codes and names with their
    // own country.
    let mut missing = Vec::new();
    for c in countries() {
        for w in [c.alpha3, c.alpha2, c.name] {
            // `NA` and `NO` also mean "not known": documented as refused.
            let want = if matches!(w, "NA" | "NO") {
                "refused".to_string()
            } else {
                shown(c.alpha3)
            };
            if documented.get(w) != Some(&want) {
                missing.push(format!("{w} ({}): not in the nationality table", c.alpha3));
            }
        }
        for w in c.aliases.iter().chain(&c.demonyms) {
            if !documented.contains_key(*w) {
                missing.push(format!("{w} ({}): in neither nationality table", c.alpha3));
            }
        }
    }
    assert!(missing.is_empty(), "{DOC}:\n{}", missing.join("\n"));
}

/// The test key of the fingerprint table.
fn test_key() -> TaskForceKey {
    let rows = table("fingerprint", &["key", "fingerprint"], 1);
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(rows[0].value(0), &mut bytes).expect("the key is 64 hex digits");
    TaskForceKey::from_bytes(bytes)
}

#[test]
fn normalisation_fingerprint_table() {
    let mut failures = Failures::default();
    for row in table("fingerprint", &["key", "fingerprint"], 1) {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(row.value(0), &mut bytes).expect("the key is 64 hex digits");
        let got = shown(&TaskForceKey::from_bytes(bytes).fingerprint());
        failures.check(&row, &expected(&row.cells[1]), &got);
    }
    failures.assert_none("fingerprint");
}

/// One row of the test vectors, as the document gives it.
struct Vector {
    form: Form,
    org: String,
    reference: String,
    family: String,
    given: String,
    dob: String,
    nationality: String,
    passport: String,
}

/// The three keys of a row, as the tables write them (hex or `none`).
fn keys_shown(keys: [Option<Digest>; 3]) -> [String; 3] {
    keys.map(|k| k.map_or("none".to_string(), |d| shown(&hex::encode(d))))
}

/// The keys of a vector row computed as section 4 of the document says.
fn keys_by_the_rules(keyer: &Keyer, v: &Vector) -> [Option<Digest>; 3] {
    let org = parse_org(&v.org).expect("valid org");
    let record = keyer.record(v.form.code(), &org, &normalise_reference(&v.reference));
    let passport = normalise_passport(&v.passport).expect("valid passport");
    let alpha3 = nationality(&v.nationality).expect("valid nationality");
    let dob = match parse_birth_date(&v.dob) {
        Ok(BirthDate::Full(d)) => Some(d.format("%Y-%m-%d").to_string()),
        _ => None,
    };
    let tokens = name_tokens(&v.family, &v.given);
    [
        Some(record),
        keyer.passport(passport.as_deref(), alpha3),
        keyer.name_dob(&tokens, dob.as_deref()),
    ]
}

/// The keys of a vector row as the pseudonymiser codes it from a one-row
/// file of its form (all other columns blank).
fn keys_by_the_pseudonymiser(key: &TaskForceKey, v: &Vector) -> [Option<Digest>; 3] {
    let schema = v.form.schema();
    let cells: Vec<&str> = schema
        .columns
        .iter()
        .map(|c| match c.role {
            Role::Reference => v.reference.as_str(),
            Role::FamilyName => v.family.as_str(),
            Role::GivenName => v.given.as_str(),
            Role::DateOfBirth => v.dob.as_str(),
            Role::Nationality => v.nationality.as_str(),
            Role::PassportNumber => v.passport.as_str(),
            _ => "",
        })
        .collect();
    let table = RawTable {
        header: schema.columns.iter().map(|c| c.name.clone()).collect(),
        rows: vec![RawRow {
            line: 2,
            cells: csv::StringRecord::from(cells),
            defect: None,
        }],
    };
    let org = parse_org(&v.org).expect("valid org");
    let period = Period {
        year: 2018,
        month: 6,
    };
    let today = NaiveDate::from_ymd_opt(2018, 6, 30).expect("a day");
    let outcome = Pseudonymiser::new(key, v.form, &org, period, today)
        .run(&[Input {
            name: "vector.csv".to_string(),
            table,
        }])
        .expect("header matches");
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    let coded = &outcome.records[0];
    [
        Some(coded.record_key),
        coded.key_passport,
        coded.key_name_dob,
    ]
}

#[test]
fn normalisation_test_vectors() {
    let key = test_key();
    let keyer = Keyer::new(&key);
    let header = [
        "row",
        "form",
        "org",
        "reference",
        "family_name",
        "given_name",
        "date_of_birth",
        "nationality",
        "passport_number",
    ];
    let vectors: HashMap<String, Vector> = table("test vector rows", &header, 6)
        .iter()
        .map(|r| {
            let v = Vector {
                form: r.value(1).parse().expect("a form code"),
                org: r.value(2),
                reference: r.value(3),
                family: r.value(4),
                given: r.value(5),
                dob: r.value(6),
                nationality: r.value(7),
                passport: r.value(8),
            };
            (r.value(0), v)
        })
        .collect();
    let header = ["row", "record_key", "key_passport", "key_name_dob"];
    let mut failures = Failures::default();
    let mut documented: HashMap<String, [String; 3]> = HashMap::new();
    for row in table("test vector keys", &header, 6) {
        let v = vectors
            .get(&row.value(0))
            .unwrap_or_else(|| panic!("line {}: no such row in the inputs", row.line));
        let doc = [1, 2, 3].map(|i| expected(&row.cells[i]));
        let by_rules = keys_shown(keys_by_the_rules(&keyer, v)).join(" | ");
        let by_pseudonymiser = keys_shown(keys_by_the_pseudonymiser(&key, v)).join(" | ");
        failures.check(&row, &doc.join(" | "), &by_rules);
        if by_pseudonymiser != by_rules {
            failures.0.push(format!(
                "line {}: the pseudonymiser gives {by_pseudonymiser}, \
                 not what section 4's rules give",
                row.line
            ));
        }
        documented.insert(row.value(0), doc);
    }
    failures.assert_none("test vector keys");

    // What the document says about the rows. Rows 1 and 2: one person
    // written differently. Rows 3 and 4: one passport number, two countries.
    let [r1, r2, r3, r4] = ["1", "2", "3", "4"].map(|r| &documented[r]);
    assert_eq!(r1[1..], r2[1..], "rows 1 and 2 must share their match keys");
    assert!(!r1[1].contains("none") && !r1[2].contains("none"));
    assert_ne!(r3[1], r4[1], "rows 3 and 4 must not share a passport key");
    let records: BTreeSet<&String> = documented.values().map(|k| &k[0]).collect();
    assert_eq!(records.len(), 5, "only rows 1 and 5 share a record key");
    assert_eq!(documented["1"][0], documented["5"][0]);
}
