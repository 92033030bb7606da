//! Pseudonymise: raw rows of one form, one org and one month in; coded
//! records with keyed match keys, or the list of problems, out.
//!
//! Identity values (names, date of birth, passport number) are read here,
//! normalised and hashed under the task-force key, and then dropped: they
//! never reach a returned record, a problem message or a log.

pub mod country;
pub mod encode;
pub mod files;
pub mod matchkeys;
pub mod normalise;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::RecordBatch;
use chrono::{Datelike, NaiveDate};
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};

use crate::drop::{BatchBuilder, Coding};
use crate::error::{Error, Result};
use crate::key::TaskForceKey;
use crate::raw::{Body, RawFile, RawRow, RawTable, Span, TextBody};
use crate::schema::{CodeList, Form, Role, Schema, code_list, squash};
use encode::{Encoder, Encoding};
use matchkeys::{Digest, Keyer};
use normalise::{BirthDate, DateError, NameTokens, PassportError};

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
    /// Similarity encodings and blocking keys (drop format 2).
    pub encoding: Encoding,
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

/// Rows per batch of the drop: the rows read are cut into batches of this
/// many (counting rejected rows), each batch holding the valid ones.
const CHUNK_ROWS: usize = 16 * 1024;

/// A raw file opened with [`raw::open`], to pseudonymise.
pub struct Source {
    /// File name for messages.
    pub name: String,
    /// The file's header and rows.
    pub file: RawFile,
}

/// Where coded batches go, in input order.
pub trait BatchSink: Send {
    /// Takes the next batch.
    fn write(&mut self, batch: RecordBatch) -> Result<()>;
}

impl BatchSink for Vec<RecordBatch> {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.push(batch);
        Ok(())
    }
}

impl BatchSink for crate::drop::DropWriter {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        crate::drop::DropWriter::write(self, &batch)
    }
}

/// What [`Pseudonymiser::run_into`] found.
#[derive(Debug)]
pub struct StreamOutcome {
    /// Rows coded (written to the sink).
    pub rows: usize,
    /// Every problem found, in input order.
    pub problems: Vec<Problem>,
    /// Rows that had at least one problem.
    pub rejected_rows: usize,
}

/// One input file as the workers see it.
struct FileView<'a> {
    name: &'a str,
    width: usize,
    map: HeaderMap,
    body: BodyView<'a>,
}

enum BodyView<'a> {
    Rows(&'a [RawRow]),
    Text(&'a TextBody),
}

/// A piece of one file's rows, coded by one worker.
enum Chunk<'a> {
    Text {
        file: usize,
        body: &'a TextBody,
        span: Span,
    },
    Rows {
        file: usize,
        /// Index of the first row in the file's rows.
        first: usize,
        rows: &'a [RawRow],
    },
}

/// The coded rows of one chunk, column by column: no allocation per row.
struct CodedRows {
    /// Each coded row's position among the chunk's rows.
    position: Vec<u32>,
    record_key: Vec<Digest>,
    key_passport: Vec<Option<Digest>>,
    key_name_dob: Vec<Option<Digest>>,
    event_month: Vec<Period>,
    age_band: Vec<Option<&'static str>>,
    encoding: Vec<Encoding>,
    /// The kept columns' values, one run per row: 0 for unknown, otherwise
    /// 1 + the index of the code in its list (or of the country).
    values: Vec<u16>,
}

impl CodedRows {
    fn with_capacity(rows: usize, kept: usize) -> Self {
        CodedRows {
            position: Vec::with_capacity(rows),
            record_key: Vec::with_capacity(rows),
            key_passport: Vec::with_capacity(rows),
            key_name_dob: Vec::with_capacity(rows),
            event_month: Vec::with_capacity(rows),
            age_band: Vec::with_capacity(rows),
            encoding: Vec::with_capacity(rows),
            values: Vec::with_capacity(rows * kept),
        }
    }
}

/// What a worker made of one chunk.
struct ChunkOut {
    file: usize,
    /// Rows read (blank rows are not rows).
    rows: usize,
    coded: CodedRows,
    problems: Vec<Problem>,
    rejected: usize,
    /// Hashes of the rows' normalised references (blank ones left out),
    /// for the check that each reference is used once.
    ref_hashes: Vec<u64>,
}

/// Rows whose reference is used more than once, by file and row identity
/// (the byte offset of a CSV row, the index of a row read whole), with the
/// problem to report.
type Repeats = FxHashMap<(usize, u64), String>;

/// Buffers a worker keeps from row to row.
#[derive(Default)]
struct Scratch {
    /// The bytes of the span being coded.
    text: Vec<u8>,
    reference: String,
    problems: Vec<(String, String)>,
    values: Vec<u16>,
    names: NameTokens,
    passport: String,
}

/// The keys and derived values of one valid row (its kept values are in
/// the worker's [`Scratch`]).
struct RowKeys {
    record_key: Digest,
    key_passport: Option<Digest>,
    key_name_dob: Option<Digest>,
    event_month: Period,
    age_band: Option<&'static str>,
    encoding: Encoding,
}

/// How a kept column's value is stored in [`CodedRows::values`].
#[derive(Clone, Copy)]
enum Kept {
    Codes(&'static CodeList),
    /// 1 + the index of `yes` in the list.
    YesNo(u16),
    Nationality,
}

impl Kept {
    /// How the drop's batch builder takes these values.
    fn coding(self) -> Coding {
        match self {
            Kept::Codes(list) => Coding::Text(&list.codes),
            Kept::YesNo(yes) => Coding::YesNo(yes),
            Kept::Nationality => Coding::Text(country::alpha3_codes()),
        }
    }

    fn value(self, v: u16) -> Value {
        let i = (v as usize).checked_sub(1);
        match self {
            Kept::Codes(list) => Value::Text(i.map(|i| list.codes[i])),
            Kept::YesNo(yes) => Value::Bool((v != 0).then_some(v == yes)),
            Kept::Nationality => Value::Text(i.map(|i| country::countries()[i].alpha3)),
        }
    }
}

/// Turns raw rows into coded records under one key.
pub struct Pseudonymiser {
    form: Form,
    /// The code list of each schema column, resolved once.
    lists: Vec<Option<&'static CodeList>>,
    /// How each kept column's value is stored, in drop order.
    kept: Vec<Kept>,
    /// The reference column's place in the schema.
    ref_pos: usize,
    org: String,
    period: Period,
    today: NaiveDate,
    keyer: Keyer,
    encoder: Encoder,
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
        let schema = form.schema();
        let kept = schema
            .kept_columns()
            .map(|c| match c.role {
                Role::Nationality => Kept::Nationality,
                Role::YesNo => {
                    let list = code_list("yes_no");
                    let yes = list.codes.iter().position(|c| *c == "yes");
                    Kept::YesNo(yes.expect("yes_no has yes") as u16 + 1)
                }
                _ => Kept::Codes(code_list(c.codes.as_deref().unwrap_or_default())),
            })
            .collect();
        Pseudonymiser {
            form,
            lists,
            kept,
            ref_pos: schema.position(Role::Reference).unwrap_or(0),
            org: org.to_string(),
            period,
            today,
            keyer: Keyer::new(key),
            encoder: Encoder::new(key),
        }
    }

    /// This pseudonymiser with another flip probability for the name
    /// encoding (0: no hardening), for measuring what the hardening costs
    /// (`benches/linkage.rs`); drops use [`encode::NAME_FLIP`].
    pub fn with_name_flip(mut self, p: f64) -> Self {
        self.encoder = self.encoder.with_name_flip(p);
        self
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
        let views = self.views_of_tables(inputs)?;
        let (Records(records), outcome) = self.run_views(&views, || Ok(Records(Vec::new())))?;
        Ok(Outcome {
            records,
            problems: outcome.problems,
            rejected_rows: outcome.rejected_rows,
        })
    }

    /// As [`run`](Self::run), but the coded rows become the drop's Arrow
    /// batches, so coded records never pile up in memory.
    pub fn run_batches(&self, inputs: &[Input]) -> Result<BatchOutcome> {
        let views = self.views_of_tables(inputs)?;
        let (batches, outcome) = self.run_views(&views, || {
            Ok(Batches::new(self.form, &self.kept, Vec::new()))
        })?;
        Ok(BatchOutcome {
            rows: outcome.rows,
            batches: batches.sink,
            problems: outcome.problems,
            rejected_rows: outcome.rejected_rows,
        })
    }

    /// Pseudonymises opened files into the drop's batches, handed to a
    /// sink in input order while later rows are still being coded. Rows
    /// are read, coded and turned into batches in parallel, a chunk at a
    /// time, so neither the raw rows nor the coded ones are all held at
    /// once.
    ///
    /// Whether a reference is used twice is known only at the end: when one
    /// is, the rows are coded again into a new sink from `new_sink` (the
    /// first is dropped), with those rows rejected.
    pub fn run_into<S: BatchSink>(
        &self,
        sources: &[Source],
        mut new_sink: impl FnMut() -> Result<S>,
    ) -> Result<(S, StreamOutcome)> {
        let views = sources
            .iter()
            .map(|s| {
                let body = match &s.file.body {
                    Body::Rows(rows) => BodyView::Rows(rows),
                    Body::Text(text) => BodyView::Text(text),
                };
                self.view(&s.name, &s.file.header, body)
            })
            .collect::<Result<Vec<_>>>()?;
        let (batches, outcome) = self.run_views(&views, || {
            Ok(Batches::new(self.form, &self.kept, new_sink()?))
        })?;
        Ok((batches.sink, outcome))
    }

    fn view<'a>(
        &self,
        name: &'a str,
        header: &[String],
        body: BodyView<'a>,
    ) -> Result<FileView<'a>> {
        Ok(FileView {
            name,
            width: header.len(),
            map: self.header_map(name, header)?,
            body,
        })
    }

    fn views_of_tables<'a>(&self, inputs: &'a [Input]) -> Result<Vec<FileView<'a>>> {
        inputs
            .iter()
            .map(|i| self.view(&i.name, &i.table.header, BodyView::Rows(&i.table.rows)))
            .collect()
    }

    /// Codes every row into targets from `new_target`: once, or twice when
    /// a reference is used more than once (see [`run_into`](Self::run_into)).
    fn run_views<T: Target>(
        &self,
        views: &[FileView<'_>],
        mut new_target: impl FnMut() -> Result<T>,
    ) -> Result<(T, StreamOutcome)> {
        let chunks: Vec<Chunk<'_>> = views
            .iter()
            .enumerate()
            .flat_map(|(file, v)| -> Vec<Chunk<'_>> {
                match v.body {
                    BodyView::Rows(rows) => rows
                        .chunks(CHUNK_ROWS)
                        .enumerate()
                        .map(|(c, rows)| Chunk::Rows {
                            file,
                            first: c * CHUNK_ROWS,
                            rows,
                        })
                        .collect(),
                    BodyView::Text(body) => body
                        .spans()
                        .iter()
                        .map(|span| Chunk::Text {
                            file,
                            body,
                            span: *span,
                        })
                        .collect(),
                }
            })
            .collect();
        let mut asm = Assembler::new(self, new_target()?);
        self.pass(views, &chunks, None, &mut asm)?;
        let hashes = asm.repeated_hashes();
        if hashes.is_empty() {
            return asm.finish();
        }
        let repeats = self.repeats(views, &chunks, &hashes)?;
        if repeats.is_empty() {
            // Hashes collided, references did not.
            return asm.finish();
        }
        drop(asm);
        let mut asm = Assembler::new(self, new_target()?);
        self.pass(views, &chunks, Some(&repeats), &mut asm)?;
        asm.finish()
    }

    /// Codes every chunk and hands the results to `asm` in chunk order.
    /// With more than one thread, workers take chunks in order and the
    /// assembler (with the sink, such as the Parquet writer) runs on a
    /// thread of its own; with one thread, all runs on this one.
    fn pass<T: Target>(
        &self,
        views: &[FileView<'_>],
        chunks: &[Chunk<'_>],
        repeats: Option<&Repeats>,
        asm: &mut Assembler<'_, T>,
    ) -> Result<()> {
        let threads = rayon::current_num_threads();
        if threads <= 1 || chunks.len() <= 1 {
            let mut scratch = Scratch::default();
            for chunk in chunks {
                asm.take(self.code_chunk(views, chunk, repeats, &mut scratch)?)?;
            }
            return Ok(());
        }
        let next = AtomicUsize::new(0);
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<ChunkOut>)>();
        std::thread::scope(|scope| {
            let assembler = scope.spawn(move || -> Result<()> {
                let mut waiting = BTreeMap::new();
                let mut wanted = 0;
                for (i, out) in rx {
                    waiting.insert(i, out);
                    while let Some(out) = waiting.remove(&wanted) {
                        asm.take(out?)?;
                        wanted += 1;
                    }
                }
                Ok(())
            });
            let next = &next;
            // `tx` moves in: dropped even if a worker panics, so the
            // assembler's loop ends.
            rayon::scope(move |workers| {
                for _ in 0..threads {
                    let tx = tx.clone();
                    workers.spawn(move |_| {
                        let mut scratch = Scratch::default();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(chunk) = chunks.get(i) else { break };
                            let out = self.code_chunk(views, chunk, repeats, &mut scratch);
                            if tx.send((i, out)).is_err() {
                                // The assembler stopped on an error.
                                break;
                            }
                        }
                    });
                }
            });
            assembler.join().expect("the assembler does not panic")
        })
    }

    /// The rows whose reference is also on another row, with the problem
    /// to report: the rows whose reference has one of `hashes` are read
    /// again and their references compared.
    fn repeats(
        &self,
        views: &[FileView<'_>],
        chunks: &[Chunk<'_>],
        hashes: &FxHashSet<u64>,
    ) -> Result<Repeats> {
        use rayon::prelude::*;
        // (file, row identity, line, reference) in input order.
        let found: Vec<Vec<(usize, u64, u64, String)>> = chunks
            .par_iter()
            .map_init(Vec::new, |buf, chunk| -> Result<_> {
                let mut found = Vec::new();
                let mut reference = String::new();
                let mut row = |file: usize, id: u64, line: u64, raw: &str| {
                    normalise_reference_into(raw, &mut reference);
                    if !reference.is_empty() && hashes.contains(&ref_hash(&reference)) {
                        found.push((file, id, line, reference.clone()));
                    }
                };
                match chunk {
                    Chunk::Text { file, body, span } => {
                        let view = &views[*file];
                        let at = view.map[self.ref_pos];
                        body.for_each_row(*span, view.width, buf, |r| {
                            row(*file, r.offset, r.line, r.cell(at))
                        })?;
                    }
                    Chunk::Rows { file, first, rows } => {
                        let at = views[*file].map[self.ref_pos];
                        for (k, r) in rows.iter().enumerate() {
                            let raw = r.cells.get(at).unwrap_or("");
                            row(*file, (first + k) as u64, r.line, raw);
                        }
                    }
                }
                Ok(found)
            })
            .collect::<Result<_>>()?;
        let mut same: HashMap<&str, Vec<(usize, u64, u64)>> = HashMap::new();
        for (file, id, line, reference) in found.iter().flatten() {
            same.entry(reference).or_default().push((*file, *id, *line));
        }
        let ref_col = self.schema().reference();
        let mut repeats = Repeats::default();
        for group in same.values().filter(|g| g.len() > 1) {
            for (file, id, _) in group {
                let others: Vec<String> = group
                    .iter()
                    .filter(|(g, j, _)| (g, j) != (file, id))
                    .map(|(g, _, line)| {
                        if g == file {
                            format!("row {line}")
                        } else {
                            format!("row {line} of {}", views[*g].name)
                        }
                    })
                    .collect();
                repeats.insert(
                    (*file, *id),
                    format!(
                        "the same {ref_col} is also on {}; each record needs its own reference",
                        others.join(", ")
                    ),
                );
            }
        }
        Ok(repeats)
    }

    /// Reads and codes the rows of one chunk.
    fn code_chunk(
        &self,
        views: &[FileView<'_>],
        chunk: &Chunk<'_>,
        repeats: Option<&Repeats>,
        s: &mut Scratch,
    ) -> Result<ChunkOut> {
        let file = match chunk {
            Chunk::Text { file, .. } | Chunk::Rows { file, .. } => *file,
        };
        let view = &views[file];
        // Room for the rows (a CSV row has at least a separator a column).
        let rows = match chunk {
            Chunk::Text { span, .. } => span.len() / view.width.max(1),
            Chunk::Rows { rows, .. } => rows.len(),
        }
        .min(CHUNK_ROWS * 2);
        let mut out = ChunkOut {
            file,
            rows: 0,
            coded: CodedRows::with_capacity(rows, self.kept.len()),
            problems: Vec::new(),
            rejected: 0,
            ref_hashes: Vec::new(),
        };
        match chunk {
            Chunk::Text { body, span, .. } => {
                let mut buf = std::mem::take(&mut s.text);
                let read = body.for_each_row(*span, view.width, &mut buf, |mut r| {
                    let defect = r.defect.take();
                    let cell = |i: usize| r.cell(i);
                    self.code_one(view, &mut out, (r.offset, r.line), cell, defect, repeats, s);
                });
                s.text = buf;
                read?;
            }
            Chunk::Rows { first, rows, .. } => {
                for (k, row) in rows.iter().enumerate() {
                    let cell = |i: usize| row.cells.get(i).unwrap_or("");
                    let id = (first + k) as u64;
                    let defect = row.defect.clone();
                    self.code_one(view, &mut out, (id, row.line), cell, defect, repeats, s);
                }
            }
        }
        Ok(out)
    }

    /// Reads and codes one row into `out`. `cell` gives the cells by their
    /// place in the file; `id` tells the row apart within its file.
    #[allow(clippy::too_many_arguments)]
    fn code_one<'a>(
        &self,
        view: &FileView<'_>,
        out: &mut ChunkOut,
        (id, line): (u64, u64),
        cell: impl Fn(usize) -> &'a str,
        defect: Option<String>,
        repeats: Option<&Repeats>,
        s: &mut Scratch,
    ) {
        let position = out.rows as u32;
        out.rows += 1;
        let map = &view.map;
        normalise_reference_into(cell(map[self.ref_pos]), &mut s.reference);
        if repeats.is_none() && !s.reference.is_empty() {
            out.ref_hashes.push(ref_hash(&s.reference));
        }
        s.problems.clear();
        let keys = match defect {
            Some(d) => {
                s.problems.push((String::new(), d));
                None
            }
            None => self.code_row(|i| cell(map[i]), s),
        };
        if let Some(reason) = repeats.and_then(|r| r.get(&(out.file, id))) {
            s.problems
                .push((self.schema().reference().to_string(), reason.clone()));
        }
        match keys {
            Some(k) if s.problems.is_empty() => {
                let c = &mut out.coded;
                c.position.push(position);
                c.record_key.push(k.record_key);
                c.key_passport.push(k.key_passport);
                c.key_name_dob.push(k.key_name_dob);
                c.event_month.push(k.event_month);
                c.age_band.push(k.age_band);
                c.encoding.push(k.encoding);
                c.values.extend_from_slice(&s.values);
            }
            _ => {
                out.rejected += 1;
                out.problems
                    .extend(s.problems.drain(..).map(|(column, reason)| Problem {
                        file: view.name.to_string(),
                        row: line,
                        column,
                        reason,
                    }));
            }
        }
    }

    /// Validates and codes one row; `cell` gives the cells by schema column.
    /// Problems (into `s.problems`) name the column and say what to fix;
    /// they never quote the cell. The kept values go to `s.values`; the
    /// normalised reference is `s.reference`. `None` when there are problems.
    fn code_row<'a>(&self, cell: impl Fn(usize) -> &'a str, s: &mut Scratch) -> Option<RowKeys> {
        let schema = self.schema();
        let Scratch {
            text: _,
            reference,
            problems,
            values,
            names,
            passport,
        } = s;
        values.clear();
        let mut event: Option<NaiveDate> = None;
        let (mut family, mut given) = ("", "");
        let mut birth: Option<BirthDate> = None;
        let mut has_passport = false;
        let mut nationality: Option<usize> = None;
        for (i, col) in schema.columns.iter().enumerate() {
            let raw = crate::raw::trim(cell(i));
            let mut bad = |reason: String| problems.push((col.name.clone(), reason));
            match col.role {
                Role::Reference => {
                    if raw.is_empty() {
                        bad(format!(
                            "{} is required: give the NGO's own reference",
                            col.name
                        ));
                    } else if raw.len() > 64 && raw.chars().count() > 64 {
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
                Role::PassportNumber => match normalise::normalise_passport_into(raw, passport) {
                    Ok(()) => has_passport = !passport.is_empty(),
                    Err(PassportError::BadCharacter) => {
                        bad("may hold only letters, digits, spaces and dashes".to_string())
                    }
                    Err(PassportError::TooLong) => {
                        bad("is longer than 20 letters and digits".to_string())
                    }
                },
                Role::Nationality => {
                    values.push(0);
                    match country::nationality_index(raw) {
                        Ok(n) => {
                            nationality = n;
                            *values.last_mut().expect("pushed") = n.map_or(0, |n| n as u16 + 1);
                        }
                        Err(country::NationalityError::Unknown) => {
                            bad("is not a country we know: write the English country name \
                             (Indonesia), the nationality (Indonesian) or the ISO code (ID, IDN)"
                                .to_string())
                        }
                        Err(country::NationalityError::Placeholder) => bad(
                            "looks like 'not known': leave the cell blank when the nationality \
                             is not known, or write the country's name (Namibia, Norway)"
                                .to_string(),
                        ),
                        Err(country::NationalityError::Ambiguous(codes)) => {
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
                        match list.lookup_index(raw) {
                            Some(c) => Some(c),
                            None => {
                                bad(format!("is not one of: {}", list.accepted()));
                                None
                            }
                        }
                    };
                    values.push(code.map_or(0, |c| c as u16 + 1));
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
            return None;
        }
        let at = event.unwrap_or_else(|| self.period.first_day());
        let alpha3 = nationality.map(|n| country::countries()[n].alpha3);
        names.set(family, given);
        let mut dob_buf = [0u8; 10];
        let dob = match birth {
            Some(BirthDate::Full(d)) => Some(format_date(d, &mut dob_buf)),
            _ => None,
        };
        let record_key = self.keyer.record(self.form.code(), &self.org, reference);
        let encoding = self.encoder.encode(
            names.iter(),
            birth,
            if has_passport { passport.as_str() } else { "" },
            &record_key,
        );
        Some(RowKeys {
            record_key,
            encoding,
            key_passport: self
                .keyer
                .passport(has_passport.then_some(passport.as_str()), alpha3),
            key_name_dob: self.keyer.name_dob_of(names.iter(), dob),
            event_month: event.map_or(self.period, Period::of),
            age_band: birth.map(|b| normalise::age_band(b.age_at(at))),
        })
    }
}

/// `YYYY-MM-DD` of a date in years 0 to 9999 (birth dates are 1900 or
/// later), written into `buf`.
fn format_date(d: NaiveDate, buf: &mut [u8; 10]) -> &str {
    let (y, m, day) = (d.year() as u32, d.month(), d.day());
    debug_assert!(y <= 9999);
    let digits = [
        y / 1000 % 10,
        y / 100 % 10,
        y / 10 % 10,
        y % 10,
        m / 10,
        m % 10,
        day / 10,
        day % 10,
    ];
    let at = [0, 1, 2, 3, 5, 6, 8, 9];
    for (pos, digit) in at.iter().zip(digits) {
        buf[*pos] = b'0' + digit as u8;
    }
    buf[4] = b'-';
    buf[7] = b'-';
    std::str::from_utf8(buf).expect("ASCII digits")
}

/// Where coded rows go: records, or the drop's batches.
trait Target: Send {
    /// One valid row; `values` are its kept values, stored as `kept` says.
    fn row(&mut self, keys: RowView<'_>, values: &[u16], kept: &[Kept]) -> Result<()>;
    /// The end of a batch of [`CHUNK_ROWS`] rows read.
    fn end_batch(&mut self) -> Result<()>;
}

/// One coded row, borrowed from a chunk's columns.
struct RowView<'a> {
    record_key: &'a Digest,
    key_passport: Option<&'a Digest>,
    key_name_dob: Option<&'a Digest>,
    event_month: Period,
    age_band: Option<&'static str>,
    encoding: &'a Encoding,
}

/// Coded rows as [`Coded`] records.
struct Records(Vec<Coded>);

impl Target for Records {
    fn row(&mut self, k: RowView<'_>, values: &[u16], kept: &[Kept]) -> Result<()> {
        self.0.push(Coded {
            record_key: *k.record_key,
            key_passport: k.key_passport.copied(),
            key_name_dob: k.key_name_dob.copied(),
            event_month: k.event_month,
            age_band: k.age_band,
            values: kept.iter().zip(values).map(|(k, v)| k.value(*v)).collect(),
            encoding: k.encoding.clone(),
        });
        Ok(())
    }

    fn end_batch(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Coded rows as the drop's batches, handed to a sink. The kept values
/// stay coded until a batch is finished.
struct Batches<S> {
    form: Form,
    codings: Vec<Coding>,
    builder: BatchBuilder,
    sink: S,
}

impl<S: BatchSink> Batches<S> {
    fn new(form: Form, kept: &[Kept], sink: S) -> Self {
        let codings: Vec<Coding> = kept.iter().map(|k| k.coding()).collect();
        Batches {
            form,
            builder: BatchBuilder::with_codings(form, CHUNK_ROWS, &codings),
            codings,
            sink,
        }
    }
}

impl<S: BatchSink> Target for Batches<S> {
    fn row(&mut self, k: RowView<'_>, values: &[u16], _kept: &[Kept]) -> Result<()> {
        self.builder.push_coded(
            k.record_key,
            k.key_passport,
            k.key_name_dob,
            k.event_month,
            k.age_band,
            values,
        );
        self.builder.push_encoding(k.encoding);
        Ok(())
    }

    fn end_batch(&mut self) -> Result<()> {
        let next = BatchBuilder::with_codings(self.form, CHUNK_ROWS, &self.codings);
        let full = std::mem::replace(&mut self.builder, next);
        self.sink.write(full.finish()?)
    }
}

/// Takes the workers' chunks in input order: cuts the coded rows into
/// batches of [`CHUNK_ROWS`] rows read, gathers the problems, and (on a
/// first pass) finds references used more than once.
struct Assembler<'a, T> {
    p: &'a Pseudonymiser,
    target: T,
    /// Rows read in the chunks taken so far.
    rows_read: usize,
    /// Batches ended so far.
    batches: usize,
    rows: usize,
    problems: Vec<Problem>,
    rejected: usize,
    /// The reference hashes, by their top byte: sorted at the end to find
    /// the ones seen twice.
    ref_hashes: Vec<Vec<u64>>,
}

/// The hash of a normalised reference.
fn ref_hash(reference: &str) -> u64 {
    FxBuildHasher.hash_one(reference)
}

impl<'a, T: Target> Assembler<'a, T> {
    fn new(p: &'a Pseudonymiser, target: T) -> Self {
        Assembler {
            p,
            target,
            rows_read: 0,
            batches: 0,
            rows: 0,
            problems: Vec::new(),
            rejected: 0,
            ref_hashes: vec![Vec::new(); 256],
        }
    }

    fn take(&mut self, out: ChunkOut) -> Result<()> {
        let c = &out.coded;
        let width = self.p.kept.len();
        for (k, position) in c.position.iter().enumerate() {
            let batch = (self.rows_read + *position as usize) / CHUNK_ROWS;
            while self.batches < batch {
                self.target.end_batch()?;
                self.batches += 1;
            }
            let row = RowView {
                record_key: &c.record_key[k],
                key_passport: c.key_passport[k].as_ref(),
                key_name_dob: c.key_name_dob[k].as_ref(),
                event_month: c.event_month[k],
                age_band: c.age_band[k],
                encoding: &c.encoding[k],
            };
            self.target
                .row(row, &c.values[k * width..(k + 1) * width], &self.p.kept)?;
        }
        self.rows_read += out.rows;
        self.rows += c.position.len();
        self.rejected += out.rejected;
        self.problems.extend(out.problems);
        for h in out.ref_hashes {
            self.ref_hashes[(h >> 56) as usize].push(h);
        }
        Ok(())
    }

    /// The reference hashes seen more than once.
    fn repeated_hashes(&mut self) -> FxHashSet<u64> {
        let mut repeated = FxHashSet::default();
        for bucket in &mut self.ref_hashes {
            bucket.sort_unstable();
            repeated.extend(bucket.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]));
        }
        repeated
    }

    fn finish(mut self) -> Result<(T, StreamOutcome)> {
        while self.batches < self.rows_read.div_ceil(CHUNK_ROWS) {
            self.target.end_batch()?;
            self.batches += 1;
        }
        Ok((
            self.target,
            StreamOutcome {
                rows: self.rows,
                problems: self.problems,
                rejected_rows: self.rejected,
            },
        ))
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

/// [`normalise_reference`] into `out` (cleared first), without allocating
/// for ASCII references.
fn normalise_reference_into(raw: &str, out: &mut String) {
    out.clear();
    if !raw.is_ascii() {
        out.push_str(&normalise_reference(raw));
        return;
    }
    // ASCII white space as `char::is_whitespace` has it.
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
    for word in raw.as_bytes().split(space).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.iter().map(|b| b.to_ascii_uppercase() as char));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A screening CSV of `rows` synthetic rows, some made invalid, some
    /// references used twice, blank lines and CRLF among them.
    fn csv(rows: usize, seed: u64) -> Vec<u8> {
        let period = Period {
            year: 2018,
            month: 3,
        };
        let mut bytes = Vec::new();
        crate::synth::bulk_screening_csv(&mut bytes, rows, seed, period).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let mut out = String::new();
        for (i, line) in text.lines().enumerate() {
            let mut cells: Vec<String> = line.split(',').map(str::to_string).collect();
            match i % 997 {
                5 => cells[0] = "C7".to_string(),
                6 => cells[1] = "31/02/2018".to_string(),
                7 => cells.push("extra".to_string()),
                8 => cells[0] = format!(" c{}  ", i - 1),
                9 => out.push_str("\r\n"),
                _ => {}
            }
            out.push_str(&cells.join(","));
            out.push_str(if i % 3 == 0 { "\r\n" } else { "\n" });
        }
        out.into_bytes()
    }

    #[test]
    fn streaming_text_gives_what_rows_read_whole_give() {
        let key = TaskForceKey::from_bytes([3; 32]);
        let today = NaiveDate::from_ymd_opt(2018, 3, 31).unwrap();
        let p = Pseudonymiser::new(&key, Form::Screening, "ORG", Period::of(today), today);
        let files = [csv(24_000, 1), csv(3_000, 2)];
        let inputs: Vec<Input> = files
            .iter()
            .enumerate()
            .map(|(i, b)| Input {
                name: format!("f{i}.csv"),
                table: crate::raw::read_csv_bytes(b, "x.csv".as_ref()).unwrap(),
            })
            .collect();
        let sources: Vec<Source> = files
            .iter()
            .enumerate()
            .map(|(i, b)| Source {
                name: format!("f{i}.csv"),
                file: crate::raw::open_csv_bytes(b.clone(), "x.csv".as_ref()).unwrap(),
            })
            .collect();
        assert!(matches!(sources[0].file.body, Body::Text(_)));
        let whole = p.run_batches(&inputs).unwrap();
        assert!(whole.rejected_rows > 50, "{}", whole.rejected_rows);
        assert!(
            whole
                .problems
                .iter()
                .any(|p| p.reason.contains("is also on row") && p.reason.contains("of f1.csv"))
        );
        assert_eq!(whole.batches.len(), 27_000usize.div_ceil(CHUNK_ROWS));
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (batches, streamed) = pool
                .install(|| p.run_into(&sources, || Ok(Vec::<RecordBatch>::new())))
                .unwrap();
            assert_eq!(streamed.problems, whole.problems, "{threads} threads");
            assert_eq!(streamed.rejected_rows, whole.rejected_rows);
            assert_eq!(streamed.rows, whole.rows);
            assert_eq!(batches, whole.batches, "{threads} threads");
            let records = pool.install(|| p.run(&inputs)).unwrap();
            assert_eq!(records.records.len(), whole.rows);
            assert_eq!(
                crate::drop::to_batch(Form::Screening, &records.records[..100]).unwrap(),
                whole.batches[0].slice(0, 100)
            );
        }
    }
}
