//! Pseudonymise: raw rows of one form, one org and one month in; coded
//! records with keyed match keys, or the list of problems, out.
//!
//! Identity values (names, date of birth, passport number) are read here,
//! normalised and hashed under the task-force key, and then dropped: they
//! never reach a returned record, a problem message or a log.

pub mod country;
pub mod files;
pub mod matchkeys;
pub mod normalise;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::key::TaskForceKey;
use crate::raw::RawTable;
use crate::schema::{Form, Role, Schema, code_list, squash};
use matchkeys::{Digest, Keyer};
use normalise::{BirthDate, DateError, PassportError};

/// A calendar month, `YYYY-MM`: the period of a drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    /// Year.
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u32,
}

impl Period {
    /// The first day of the month.
    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("valid period")
    }

    /// The period a date falls in.
    pub fn of(date: NaiveDate) -> Self {
        Period {
            year: date.year(),
            month: date.month(),
        }
    }

    /// The month after this one.
    pub fn next(self) -> Self {
        if self.month == 12 {
            Period {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Period {
                year: self.year,
                month: self.month + 1,
            }
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Period {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Usage(format!(
                "period '{s}' is not a month written YYYY-MM, such as 2018-03"
            ))
        };
        let (y, m) = s.trim().split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || !(1900..=9999).contains(&year) {
            return Err(bad());
        }
        Ok(Period { year, month })
    }
}

/// An organisation code: 1 to 32 letters, digits, `_` or `-`, starting with
/// a letter or digit; stored upper-case.
pub fn parse_org(raw: &str) -> Result<String> {
    let s = raw.trim();
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(s.to_ascii_uppercase())
    } else {
        Err(Error::Usage(format!(
            "organisation code '{s}' is not valid: use 1 to 32 letters, digits, '_' or '-', \
             as given by the secretariat"
        )))
    }
}

/// One coded value of a kept column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// A code (or alpha-3 nationality); `None` is unknown.
    Text(Option<&'static str>),
    /// A yes/no answer; `None` is unknown.
    Bool(Option<bool>),
}

/// A pseudonymised record: what the drop keeps of one raw row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coded {
    /// Keyed hash of form, org and reference.
    pub record_key: Digest,
    /// `passport` rule key.
    pub key_passport: Option<Digest>,
    /// `name_dob` rule key.
    pub key_name_dob: Option<Digest>,
    /// Month of the event (the drop's period when the date is blank).
    pub event_month: Period,
    /// Age band at the event; `None` when the birth date is unknown.
    pub age_band: Option<&'static str>,
    /// The kept columns' values, in schema order.
    pub values: Vec<Value>,
}

/// A problem with one row (never carrying a cell's value).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The raw file's name.
    pub file: String,
    /// Spreadsheet row number (header is row 1).
    pub row: u64,
    /// The column at fault (empty for the whole row).
    pub column: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

/// The raw files of one drop, read.
pub struct Input {
    /// File name for messages.
    pub name: String,
    /// The file's content.
    pub table: RawTable,
}

/// What pseudonymising produced.
#[derive(Debug)]
pub struct Outcome {
    /// Valid rows, coded, in input order.
    pub records: Vec<Coded>,
    /// Every problem found, sorted by file and row.
    pub problems: Vec<Problem>,
    /// Rows that had at least one problem.
    pub rejected_rows: usize,
}

/// What pseudonymising produced, as the drop's Arrow batches.
#[derive(Debug)]
pub struct BatchOutcome {
    /// The drop's batches, in input order.
    pub batches: Vec<arrow_array::RecordBatch>,
    /// Rows in the batches.
    pub rows: usize,
    /// Every problem found, in input order.
    pub problems: Vec<Problem>,
    /// Rows that had at least one problem.
    pub rejected_rows: usize,
}

/// Rows coded per chunk: enough to keep both cores busy, small enough to
/// keep memory flat.
const CHUNK_ROWS: usize = 16 * 1024;

/// Turns raw rows into coded records under one key.
pub struct Pseudonymiser {
    form: Form,
    /// The code list of each schema column, resolved once.
    lists: Vec<Option<&'static crate::schema::CodeList>>,
    org: String,
    period: Period,
    today: NaiveDate,
    keyer: Keyer,
}

/// Where each schema column sits in a file's header.
type HeaderMap = Vec<usize>;

impl Pseudonymiser {
    /// A pseudonymiser for one drop. `today` bounds dates of birth and events.
    pub fn new(
        key: &TaskForceKey,
        form: Form,
        org: &str,
        period: Period,
        today: NaiveDate,
    ) -> Self {
        let lists = form
            .schema()
            .columns
            .iter()
            .map(|c| match c.role {
                Role::Sex | Role::Code => Some(code_list(c.codes.as_deref().unwrap_or_default())),
                Role::YesNo => Some(code_list("yes_no")),
                _ => None,
            })
            .collect();
        Pseudonymiser {
            form,
            lists,
            org: org.to_string(),
            period,
            today,
            keyer: Keyer::new(key),
        }
    }

    fn schema(&self) -> &'static Schema {
        self.form.schema()
    }

    /// Matches a file's header to the schema. Header names are compared
    /// without case, and spaces or dashes count as `_`. Every schema column
    /// must be present and no other column may be: an unknown column could
    /// be a misspelt one whose values would otherwise be lost.
    pub fn header_map(&self, name: &str, header: &[String]) -> Result<HeaderMap> {
        let schema = self.schema();
        let wanted: HashMap<String, usize> = schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (squash(&c.name), i))
            .collect();
        let mut map = vec![usize::MAX; schema.columns.len()];
        let mut unknown = Vec::new();
        let mut repeated = Vec::new();
        for (pos, h) in header.iter().enumerate() {
            if h.is_empty() {
                continue;
            }
            match wanted.get(&squash(h)) {
                Some(&i) if map[i] != usize::MAX => repeated.push(schema.columns[i].name.clone()),
                Some(&i) => map[i] = pos,
                None => unknown.push(format!("'{h}'")),
            }
        }
        let missing: Vec<&str> = schema
            .columns
            .iter()
            .zip(&map)
            .filter(|(_, p)| **p == usize::MAX)
            .map(|(c, _)| c.name.as_str())
            .collect();
        let mut faults = Vec::new();
        if !missing.is_empty() {
            faults.push(format!("missing columns: {}", missing.join(", ")));
        }
        if !unknown.is_empty() {
            faults.push(format!(
                "columns not in the {} form: {} (rename them to the form's names or remove them)",
                self.form,
                unknown.join(", ")
            ));
        }
        if !repeated.is_empty() {
            faults.push(format!("columns given twice: {}", repeated.join(", ")));
        }
        if faults.is_empty() {
            Ok(map)
        } else {
            Err(Error::Refused(format!(
                "{name}: the header row does not match the {} form: {}. \
                 'safetally template {}' prints the expected header",
                self.form,
                faults.join("; "),
                self.form
            )))
        }
    }

    /// Pseudonymises all rows of all inputs. Rows are processed in parallel;
    /// records keep input order.
    pub fn run(&self, inputs: &[Input]) -> Result<Outcome> {
        let (chunks, problems, rejected_rows) = self.process(inputs, Ok)?;
        Ok(Outcome {
            records: chunks.into_iter().flatten().collect(),
            problems,
            rejected_rows,
        })
    }

    /// As [`run`](Self::run), but each chunk of coded rows becomes an Arrow
    /// batch of the drop in the worker that coded it, so coded records
    /// never pile up in memory.
    pub fn run_batches(&self, inputs: &[Input]) -> Result<BatchOutcome> {
        let form = self.form;
        let (batches, problems, rejected_rows) =
            self.process(inputs, |coded| crate::drop::to_batch(form, &coded))?;
        Ok(BatchOutcome {
            rows: batches.iter().map(|b| b.num_rows()).sum(),
            batches,
            problems,
            rejected_rows,
        })
    }

    /// Codes every row in chunks (in parallel, chunk order kept) and hands
    /// each chunk's valid records to `finish`.
    fn process<T: Send>(
        &self,
        inputs: &[Input],
        finish: impl Fn(Vec<Coded>) -> Result<T> + Sync,
    ) -> Result<(Vec<T>, Vec<Problem>, usize)> {
        let maps: Vec<HeaderMap> = inputs
            .iter()
            .map(|i| self.header_map(&i.name, &i.table.header))
            .collect::<Result<_>>()?;
        let rows: Vec<(usize, &crate::raw::RawRow)> = inputs
            .iter()
            .enumerate()
            .flat_map(|(f, i)| i.table.rows.iter().map(move |r| (f, r)))
            .collect();
        let ref_pos = self.schema().position(Role::Reference).unwrap_or(0);
        let references: Vec<String> = rows
            .par_iter()
            .with_min_len(4096)
            .map(|(f, row)| normalise_reference(row.cells.get(maps[*f][ref_pos]).unwrap_or("")))
            .collect();

        // A reference must be unique within the drop: the record key is
        // derived from it and a later drop corrects by it.
        let mut seen: FxHashMap<&str, Vec<usize>> =
            FxHashMap::with_capacity_and_hasher(references.len(), Default::default());
        for (i, reference) in references.iter().enumerate() {
            if !reference.is_empty() {
                seen.entry(reference.as_str()).or_default().push(i);
            }
        }
        let repeated: FxHashMap<usize, Vec<usize>> = seen
            .into_values()
            .filter(|v| v.len() > 1)
            .flat_map(|v| v.clone().into_iter().map(move |i| (i, v.clone())))
            .collect();
        let ref_col = self.schema().reference();
        let repeat_problem = |i: usize, same: &[usize]| {
            let f = rows[i].0;
            let others: Vec<String> = same
                .iter()
                .filter(|j| **j != i)
                .map(|j| {
                    let (g, r) = rows[*j];
                    if g == f {
                        format!("row {}", r.line)
                    } else {
                        format!("row {} of {}", r.line, inputs[g].name)
                    }
                })
                .collect();
            (
                ref_col.to_string(),
                format!(
                    "the same {ref_col} is also on {}; each record needs its own reference",
                    others.join(", ")
                ),
            )
        };

        let chunks: Vec<(T, Vec<Problem>, usize)> = rows
            .par_chunks(CHUNK_ROWS)
            .enumerate()
            .map(|(c, chunk)| {
                let mut coded = Vec::with_capacity(chunk.len());
                let mut problems = Vec::new();
                let mut rejected = 0;
                for (k, (f, row)) in chunk.iter().enumerate() {
                    let i = c * CHUNK_ROWS + k;
                    let res = match &row.defect {
                        Some(d) => Err(vec![(String::new(), d.clone())]),
                        None => self.code_row(&row.cells, &maps[*f], &references[i]),
                    };
                    let (ok, mut row_problems) = match res {
                        Ok(r) => (Some(r), Vec::new()),
                        Err(p) => (None, p),
                    };
                    if let Some(same) = repeated.get(&i) {
                        row_problems.push(repeat_problem(i, same));
                    }
                    if row_problems.is_empty() {
                        coded.extend(ok);
                    } else {
                        rejected += 1;
                        problems.extend(row_problems.into_iter().map(|(column, reason)| Problem {
                            file: inputs[*f].name.clone(),
                            row: row.line,
                            column,
                            reason,
                        }));
                    }
                }
                Ok((finish(coded)?, problems, rejected))
            })
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(chunks.len());
        let mut problems = Vec::new();
        let mut rejected_rows = 0;
        for (t, p, r) in chunks {
            out.push(t);
            problems.extend(p);
            rejected_rows += r;
        }
        Ok((out, problems, rejected_rows))
    }

    /// Validates and codes one row. Problems name the column and say what
    /// to fix; they never quote the cell.
    /// `normalised_reference` is the reference column after
    /// [`normalise_reference`], computed once by the caller.
    fn code_row(
        &self,
        cells: &csv::StringRecord,
        map: &HeaderMap,
        normalised_reference: &str,
    ) -> std::result::Result<Coded, Vec<(String, String)>> {
        let schema = self.schema();
        let mut problems: Vec<(String, String)> = Vec::new();
        let cell = |i: usize| cells.get(map[i]).unwrap_or("").trim();
        let mut event: Option<NaiveDate> = None;
        let (mut family, mut given) = ("", "");
        let mut birth: Option<BirthDate> = None;
        let mut passport: Option<String> = None;
        let mut nationality: Option<&'static str> = None;
        let mut values = Vec::with_capacity(schema.columns.len());
        for (i, col) in schema.columns.iter().enumerate() {
            let raw = cell(i);
            let mut bad = |reason: String| problems.push((col.name.clone(), reason));
            match col.role {
                Role::Reference => {
                    if raw.is_empty() {
                        bad(format!(
                            "{} is required: give the NGO's own reference",
                            col.name
                        ));
                    } else if raw.chars().count() > 64 {
                        bad("is longer than 64 characters".to_string());
                    }
                }
                Role::EventDate => {
                    if raw.is_empty() {
                        continue;
                    }
                    match normalise::parse_date(raw) {
                        Ok(d) if d > self.today => bad("is in the future".to_string()),
                        Ok(d) if Period::of(d) != self.period => bad(format!(
                            "is not in the period {}: put the record in that month's drop",
                            self.period
                        )),
                        Ok(d) => event = Some(d),
                        Err(e) => bad(date_reason(e, false)),
                    }
                }
                Role::FamilyName => family = raw,
                Role::GivenName => given = raw,
                Role::DateOfBirth => {
                    if raw.is_empty() {
                        continue;
                    }
                    match normalise::parse_birth_date(raw) {
                        Ok(b) if b.is_after(self.today) => bad("is in the future".to_string()),
                        Ok(b) if b.year() < 1900 => bad("is before 1900".to_string()),
                        Ok(b) => birth = Some(b),
                        Err(e) => bad(date_reason(e, true)),
                    }
                }
                Role::PassportNumber => match normalise::normalise_passport(raw) {
                    Ok(p) => passport = p,
                    Err(PassportError::BadCharacter) => {
                        bad("may hold only letters, digits, spaces and dashes".to_string())
                    }
                    Err(PassportError::TooLong) => {
                        bad("is longer than 20 letters and digits".to_string())
                    }
                },
                Role::Nationality => {
                    match country::nationality(raw) {
                        Ok(n) => {
                            nationality = n;
                            values.push(Value::Text(n));
                        }
                        Err(country::NationalityError::Unknown) => {
                            values.push(Value::Text(None));
                            bad("is not a country we know: write the English country name \
                             (Indonesia), the nationality (Indonesian) or the ISO code (ID, IDN)"
                                .to_string())
                        }
                        Err(country::NationalityError::Placeholder) => {
                            values.push(Value::Text(None));
                            bad("looks like 'not known': leave the cell blank when the nationality \
                             is not known, or write the country's name (Namibia, Norway)"
                            .to_string())
                        }
                        Err(country::NationalityError::Ambiguous(codes)) => {
                            values.push(Value::Text(None));
                            let names: Vec<String> = codes
                                .iter()
                                .filter_map(|c| country::by_alpha3(c))
                                .map(|c| format!("{} ({})", c.name, c.alpha3))
                                .collect();
                            bad(format!(
                                "could mean several countries: write one of {}",
                                names.join(", ")
                            ))
                        }
                    }
                }
                Role::Sex | Role::Code | Role::YesNo => {
                    let list = self.lists[i].expect("coded column has a list");
                    let code = if raw.is_empty() {
                        None
                    } else {
                        match list.lookup(raw) {
                            Some(c) => Some(c),
                            None => {
                                bad(format!("is not one of: {}", list.accepted()));
                                None
                            }
                        }
                    };
                    values.push(match col.role {
                        Role::YesNo => Value::Bool(code.map(|c| c == "yes")),
                        _ => Value::Text(code),
                    });
                }
            }
        }
        if let (Some(b), Some(e)) = (birth, event)
            && b.is_after(e)
        {
            problems.push((
                schema.columns[schema.position(Role::DateOfBirth).unwrap_or(0)]
                    .name
                    .clone(),
                format!("is after {}", schema.event_date()),
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let at = event.unwrap_or_else(|| self.period.first_day());
        let tokens = normalise::name_tokens(family, given);
        let dob_full = match birth {
            Some(BirthDate::Full(d)) => {
                Some(format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()))
            }
            _ => None,
        };
        Ok(Coded {
            record_key: self
                .keyer
                .record(self.form.code(), &self.org, normalised_reference),
            key_passport: self.keyer.passport(passport.as_deref(), nationality),
            key_name_dob: self.keyer.name_dob(&tokens, dob_full.as_deref()),
            event_month: event.map_or(self.period, Period::of),
            age_band: birth.map(|b| normalise::age_band(b.age_at(at))),
            values,
        })
    }
}

/// The comparison form of a reference: trimmed, inner white space collapsed,
/// upper-cased (`ab 12` and `AB  12` are one case).
pub fn normalise_reference(raw: &str) -> String {
    raw.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

fn date_reason(e: DateError, birth: bool) -> String {
    let formats = if birth {
        "YYYY-MM-DD, DD/MM/YYYY, D/M/YYYY or a year YYYY alone"
    } else {
        "YYYY-MM-DD, DD/MM/YYYY or D/M/YYYY"
    };
    match e {
        DateError::Format => format!("is not a date written {formats}"),
        DateError::NoSuchDay => "is not a day that exists (check day and month)".to_string(),
    }
}
