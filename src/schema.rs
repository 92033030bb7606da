//! The two forms' columns and code lists, loaded from `schemas/` (embedded
//! at build time): the single source of truth for templates, validation and
//! the drop's columns.
//!
//! This module only describes columns; it never sees a record.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::error::{Error, Result};

/// One of the task force's two forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// Preliminary Assessment Form, filled in by NGO staff.
    Screening,
    /// Self-Assessment Form, filled in by the worker.
    SelfAssessment,
}

impl Form {
    /// Both forms, in a fixed order.
    pub const ALL: [Form; 2] = [Form::Screening, Form::SelfAssessment];

    /// The form's code, as used on the command line, in drops and in file names.
    pub fn code(self) -> &'static str {
        match self {
            Form::Screening => "screening",
            Form::SelfAssessment => "self_assessment",
        }
    }

    /// The form's schema.
    pub fn schema(self) -> &'static Schema {
        match self {
            Form::Screening => &SCREENING,
            Form::SelfAssessment => &SELF_ASSESSMENT,
        }
    }
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Form {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "screening" => Ok(Form::Screening),
            "self_assessment" => Ok(Form::SelfAssessment),
            other => Err(Error::Usage(format!(
                "unknown form '{other}': use 'screening' or 'self_assessment'"
            ))),
        }
    }
}

/// What a column is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The NGO's own reference (required).
    Reference,
    /// The date of the screening or response.
    EventDate,
    /// Identity: family name.
    FamilyName,
    /// Identity: given name(s).
    GivenName,
    /// Identity: date of birth (or year alone).
    DateOfBirth,
    /// Identity: passport number.
    PassportNumber,
    /// Sex, from the `sex` code list.
    Sex,
    /// Nationality, to ISO 3166-1 alpha-3.
    Nationality,
    /// One value of a code list.
    Code,
    /// yes/no/unknown, stored as a boolean.
    YesNo,
}

impl Role {
    /// Whether the column holds an identity value that must never be written.
    pub fn is_identity(self) -> bool {
        matches!(
            self,
            Role::FamilyName | Role::GivenName | Role::DateOfBirth | Role::PassportNumber
        )
    }
}

/// One raw column of a form.
#[derive(Debug, Clone, Deserialize)]
pub struct Column {
    /// Canonical (lower-case) column name.
    pub name: String,
    /// What the column is for.
    pub role: Role,
    /// The code list, for `code` and `sex` columns.
    #[serde(default)]
    pub codes: Option<String>,
    /// One line of help for templates and docs.
    pub help: String,
}

/// A form's schema.
#[derive(Debug, Deserialize)]
pub struct Schema {
    /// The form's code.
    #[serde(rename = "form")]
    pub code: String,
    /// The form's title.
    pub title: String,
    /// The schema's version, stamped on drops.
    pub version: u32,
    /// The raw columns, in template order.
    #[serde(rename = "column")]
    pub columns: Vec<Column>,
}

impl Schema {
    /// The index of the column with this role (the first, for roles that
    /// occur once).
    pub fn position(&self, role: Role) -> Option<usize> {
        self.columns.iter().position(|c| c.role == role)
    }

    /// The reference column's name (`case_ref` or `response_ref`).
    pub fn reference(&self) -> &str {
        &self.columns[self
            .position(Role::Reference)
            .expect("schema has a reference")]
        .name
    }

    /// The event date column's name.
    pub fn event_date(&self) -> &str {
        &self.columns[self
            .position(Role::EventDate)
            .expect("schema has an event date")]
        .name
    }

    /// Columns that the drop keeps (coded attributes), in order.
    pub fn kept_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| {
            matches!(
                c.role,
                Role::Sex | Role::Nationality | Role::Code | Role::YesNo
            )
        })
    }
}

/// A code list: the codes and the spellings accepted for each.
#[derive(Debug)]
pub struct CodeList {
    /// The list's name in `codes.toml`.
    pub name: String,
    /// Codes in their documented order.
    pub codes: Vec<&'static str>,
    /// Every accepted spelling, squashed, with its code. Lists are short:
    /// a scan without allocation beats hashing.
    lookup: Vec<(String, usize)>,
    /// The ASCII spellings of at most 24 bytes, zero-padded into three
    /// words, in a table where no two share a slot (see [`Slots`]).
    short: Slots,
    /// Accepted spellings per code, for docs and messages.
    pub spellings: Vec<Vec<String>>,
}

impl CodeList {
    /// Looks a raw value up: case, spaces, `_` and `-` do not matter.
    /// Returns `None` for a value not on the list.
    pub fn lookup(&self, raw: &str) -> Option<&'static str> {
        self.lookup_index(raw).map(|i| self.codes[i])
    }

    /// As [`lookup`](Self::lookup), the code's index in [`codes`](Self::codes).
    pub fn lookup_index(&self, raw: &str) -> Option<usize> {
        // Fast path for short ASCII values, the usual case: squash into
        // three words (a value holding a zero byte or longer than 24 bytes
        // takes the general path).
        let bytes = raw.as_bytes();
        if bytes.len() <= 8 {
            // Eight bytes at a time: plain letters and digits need no
            // squashing, only lower-casing.
            let mut w = 0u64;
            for (i, b) in bytes.iter().enumerate() {
                w |= (*b as u64) << (8 * i);
            }
            let used = if bytes.len() == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * bytes.len())) - 1
            };
            let separators = [b' ', b'_', b'-', b'.', b'\t']
                .iter()
                .fold(0, |m, sep| m | zero_bytes(w ^ (ONES * *sep as u64)));
            if (zero_bytes(w) | w | separators) & HIGH & used == 0 {
                return self.short.get([ascii_lower(w), 0, 0]);
            }
        }
        if bytes.len() <= 24 {
            // The words are kept in registers (an array written a byte at a
            // time and then read whole stalls the processor).
            let (mut k0, mut k1, mut k2) = (0u64, 0u64, 0u64);
            let mut n = 0;
            let mut plain = true;
            for &b in bytes {
                plain &= b != 0 && b < 0x80;
                if !is_separator(b as char) {
                    let v = (b.to_ascii_lowercase() as u64) << (8 * (n % 8));
                    match n / 8 {
                        0 => k0 |= v,
                        1 => k1 |= v,
                        _ => k2 |= v,
                    }
                    n += 1;
                }
            }
            if plain {
                return self.short.get([k0, k1, k2]);
            }
        }
        let mut buf = [0u8; 48];
        if raw.is_ascii() && raw.len() <= buf.len() {
            let mut n = 0;
            for b in raw.bytes() {
                if !is_separator(b as char) {
                    buf[n] = b.to_ascii_lowercase();
                    n += 1;
                }
            }
            let key = &buf[..n];
            return self
                .lookup
                .iter()
                .find(|(spelling, _)| spelling.as_bytes() == key)
                .map(|(_, code)| *code);
        }
        self.lookup
            .iter()
            .find(|(spelling, _)| squashes_to(raw, spelling))
            .map(|(_, code)| *code)
    }

    /// A short description of the accepted values for messages.
    pub fn accepted(&self) -> String {
        self.codes.join(", ")
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each zero byte of `x` (and perhaps of bytes above the
/// first zero byte: whether there is one is exact).
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGH
}

/// Eight ASCII bytes with their capital letters lower-cased.
fn ascii_lower(w: u64) -> u64 {
    let low = w & !HIGH;
    let from_a = low + ONES * (0x80 - b'A' as u64);
    let past_z = low + ONES * (0x80 - b'Z' as u64 - 1);
    let upper = (from_a ^ past_z) & !w & HIGH;
    w | (upper >> 2)
}

/// A code list's short spellings (three words each) in a table of a
/// power-of-two size, where a multiplier chosen when the list is loaded
/// puts each in a slot of its own: a lookup compares one entry.
#[derive(Debug, Default)]
struct Slots {
    /// Words and code index; an empty slot has index `usize::MAX`.
    table: Vec<([u64; 3], usize)>,
    multiplier: u64,
    shift: u32,
}

impl Slots {
    #[inline]
    fn slot(words: [u64; 3], multiplier: u64, shift: u32) -> usize {
        let mixed = words[0] ^ words[1].rotate_left(21) ^ words[2].rotate_left(42);
        (mixed.wrapping_mul(multiplier) >> shift) as usize
    }

    fn new(entries: &[([u64; 3], usize)]) -> Self {
        let mut bits = (entries.len() * 2)
            .next_power_of_two()
            .trailing_zeros()
            .max(4);
        let mut multiplier: u64 = 0x9E37_79B9_7F4A_7C15;
        for attempt in 1.. {
            let shift = 64 - bits;
            let mut table = vec![([0; 3], usize::MAX); 1 << bits];
            let fits = entries.iter().all(|(words, code)| {
                let slot = &mut table[Self::slot(*words, multiplier, shift)];
                let free = slot.1 == usize::MAX;
                *slot = (*words, *code);
                free
            });
            if fits {
                return Slots {
                    table,
                    multiplier,
                    shift,
                };
            }
            // The next odd multiplier (a splitmix step); a larger table now
            // and then.
            multiplier = (multiplier ^ (multiplier >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9) | 1;
            if attempt % 64 == 0 {
                bits += 1;
            }
        }
        unreachable!("some table has a slot for each spelling")
    }

    /// The code of these words. The words are compared one by one: the
    /// key is built in registers, and reading it back from memory as a
    /// whole (as an array comparison does) stalls the processor.
    #[inline]
    fn get(&self, [k0, k1, k2]: [u64; 3]) -> Option<usize> {
        let (w, code) = &self.table[Self::slot([k0, k1, k2], self.multiplier, self.shift)];
        if *code != usize::MAX && w[0] == k0 && w[1] == k1 && w[2] == k2 {
            Some(*code)
        } else {
            None
        }
    }
}

/// Characters that do not matter when comparing codes and header names.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '_' | '-' | '.' | '\t')
}

/// Lower-cases and removes spaces, `_`, `-` and `.`: the comparison form of
/// codes and header names.
pub fn squash(raw: &str) -> String {
    raw.trim()
        .chars()
        .filter(|c| !is_separator(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether `raw` squashes to `squashed`, without allocating.
fn squashes_to(raw: &str, squashed: &str) -> bool {
    let mut want = squashed.chars();
    for c in raw
        .chars()
        .filter(|c| !is_separator(*c))
        .flat_map(char::to_lowercase)
    {
        if want.next() != Some(c) {
            return false;
        }
    }
    want.next().is_none()
}

/// Looks up a code list by name.
pub fn code_list(name: &str) -> &'static CodeList {
    CODE_LISTS
        .get(name)
        .unwrap_or_else(|| panic!("schemas/codes.toml has no list '{name}'"))
}

static SCREENING: LazyLock<Schema> =
    LazyLock::new(|| parse_schema(include_str!("../schemas/screening.toml")));
static SELF_ASSESSMENT: LazyLock<Schema> =
    LazyLock::new(|| parse_schema(include_str!("../schemas/self_assessment.toml")));

fn parse_schema(text: &str) -> Schema {
    let schema: Schema = toml::from_str(text).expect("embedded schema is valid TOML");
    for c in &schema.columns {
        if matches!(c.role, Role::Code | Role::Sex) {
            let list = c.codes.as_deref().expect("code column names its code list");
            let _ = code_list(list);
        }
    }
    schema
}

static CODE_LISTS: LazyLock<HashMap<String, CodeList>> = LazyLock::new(|| {
    // toml's `preserve_order` keeps the file's order in its tables.
    let raw: toml::Table =
        toml::from_str(include_str!("../schemas/codes.toml")).expect("codes.toml is valid");
    raw.into_iter()
        .map(|(name, table)| {
            let mut list = CodeList {
                name: name.clone(),
                codes: Vec::new(),
                lookup: Vec::new(),
                short: Slots::default(),
                spellings: Vec::new(),
            };
            let mut short = Vec::new();
            let toml::Value::Table(table) = table else {
                panic!("codes.toml: {name} is not a table")
            };
            for (code, aliases) in table {
                let code: &'static str = Box::leak(code.into_boxed_str());
                list.codes.push(code);
                let mut spellings = vec![code.to_string()];
                let toml::Value::Array(aliases) = aliases else {
                    panic!("codes.toml: {name}.{code} is not a list")
                };
                spellings.extend(
                    aliases
                        .iter()
                        .map(|a| a.as_str().expect("alias").to_string()),
                );
                for s in &spellings {
                    let squashed = squash(s);
                    let index = list.codes.len() - 1;
                    assert!(
                        list.lookup
                            .iter()
                            .all(|(k, c)| *k != squashed || *c == index),
                        "codes.toml: '{s}' is on two codes of list {name}"
                    );
                    if squashed.len() <= 24 && squashed.is_ascii() && !squashed.contains('\0') {
                        let mut words = [0u64; 3];
                        for (n, b) in squashed.bytes().enumerate() {
                            words[n / 8] |= (b as u64) << (8 * (n % 8));
                        }
                        short.push((words, index));
                    }
                    list.lookup.push((squashed, index));
                }
                list.spellings.push(spellings);
            }
            list.short = Slots::new(&short);
            (name, list)
        })
        .collect()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_load_and_have_one_reference_each() {
        for form in Form::ALL {
            let s = form.schema();
            assert_eq!(s.code, form.code());
            assert_eq!(
                s.columns
                    .iter()
                    .filter(|c| c.role == Role::Reference)
                    .count(),
                1
            );
            assert!(s.position(Role::EventDate).is_some());
        }
        assert_eq!(Form::Screening.schema().reference(), "case_ref");
        assert_eq!(Form::SelfAssessment.schema().reference(), "response_ref");
    }

    #[test]
    fn code_lookup_ignores_case_spaces_underscores_and_dashes() {
        let outcome = code_list("outcome");
        for s in [
            "Not identified",
            "not_identified",
            "NOT-IDENTIFIED",
            " notidentified ",
        ] {
            assert_eq!(outcome.lookup(s), Some("not_identified"), "{s}");
        }
        assert_eq!(outcome.lookup("maybe"), None);
        assert_eq!(code_list("sex").lookup("F"), Some("female"));
        assert_eq!(code_list("yes_no").lookup("1"), Some("yes"));
    }

    #[test]
    fn fast_lookups_agree_with_squashing() {
        let slow = |list: &CodeList, raw: &str| {
            let key = squash(raw);
            list.lookup.iter().find(|(s, _)| *s == key).map(|(_, c)| *c)
        };
        let mut values: Vec<String> = Vec::new();
        for list in CODE_LISTS.values() {
            for spelling in list.spellings.iter().flatten() {
                values.push(spelling.clone());
                values.push(spelling.to_uppercase());
                values.push(format!(" {}-", spelling.replace(' ', "_")));
                values.push(format!("{spelling}x"));
                values.push(spelling[1..].to_string());
            }
        }
        for v in [
            "",
            "-",
            "Y",
            "y\0",
            "\0",
            "YES",
            "yEs.",
            "n o",
            "1",
            "01",
            "ü",
            "Ja",
            "true ",
            "@",
            "[",
            "`",
            "Z",
            "z",
            "{",
            "NOTIDENTIFIED",
            "not identified!",
            "abcdefgh",
            "abcdefghi",
            "declined\t",
            "prefer not to say",
            "PREFER-NOT-TO-SAY-AT-ALL-EVER",
            "\u{212A}",
        ] {
            values.push(v.to_string());
        }
        for list in CODE_LISTS.values() {
            for v in &values {
                assert_eq!(list.lookup_index(v), slow(list, v), "{} {v:?}", list.name);
            }
        }
    }

    #[test]
    fn code_lists_keep_file_order() {
        assert_eq!(code_list("sex").codes, ["female", "male", "other"]);
    }
}
