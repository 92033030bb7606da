//! The report's input: the store's current drops of the window, decoded
//! for linkage by the Parquet reader DataFusion is built on and registered
//! in DataFusion as views, with the linked persons as tables.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, FixedSizeBinaryArray, RecordBatch, StringArray,
    UInt8Array, UInt16Array, UInt32Array,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{
    DataType, Field, Int32Type, Schema, SchemaRef, UInt8Type, UInt32Type,
};
use datafusion::catalog::MemTable;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext, col, lit};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::link::{Persons, Records, Rule};
use crate::error::{Error, Result};
use crate::pseudonymise::Period;
use crate::pseudonymise::country::countries;
use crate::pseudonymise::normalise::AGE_BANDS;
use crate::schema::{Form, Role, code_list};
use crate::store::ingest::resolve;
use crate::store::{State, Store};

/// One drop the report reads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InputDrop {
    /// The form.
    pub form: String,
    /// Org code.
    pub org: String,
    /// YYYY-MM.
    pub period: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Path in the store.
    pub path: String,
    /// Ledger sequence number of its filing.
    pub ledger_seq: u64,
    /// Rows.
    pub rows: u64,
}

/// The drops of a window: the current drop of every form, org and period
/// inside it. Refuses a window whose drops were made with more than one
/// key (their persons cannot be linked).
pub fn select(state: &State, from: Period, to: Period) -> Result<(Vec<InputDrop>, Option<String>)> {
    let mut out = Vec::new();
    let mut keys = BTreeSet::new();
    for (slot, (sha, f)) in state.current() {
        let Ok(p) = slot.period.parse::<Period>() else {
            continue;
        };
        if p < from || p > to {
            continue;
        }
        keys.insert(f.fingerprint.clone());
        out.push(InputDrop {
            form: slot.form.clone(),
            org: slot.org.clone(),
            period: slot.period.clone(),
            sha256: sha.to_string(),
            path: f.path.clone(),
            ledger_seq: f.seq,
            rows: f.rows,
        });
    }
    if keys.len() > 1 {
        return Err(Error::Usage(format!(
            "the drops from {from} to {to} were made with {} different keys ({}): persons \
             cannot be linked across keys. Report the months of each key epoch separately",
            keys.len(),
            keys.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    out.sort_by(|a, b| (&a.form, &a.period, &a.org).cmp(&(&b.form, &b.period, &b.org)));
    Ok((out, keys.into_iter().next()))
}

/// What an attribute of a person can be.
#[derive(Debug, Clone)]
pub enum Kind {
    /// One of these codes (stored as 1 + index; 0 unknown).
    Codes(Vec<&'static str>),
    /// yes/no (stored as 1 no, 2 yes; 0 unknown).
    Bool,
}

/// One attribute column carried from records to persons.
#[derive(Debug, Clone)]
pub struct Attr {
    /// Column name (as in the drop).
    pub name: String,
    /// Its values.
    pub kind: Kind,
    /// How a person's value is resolved.
    pub rule: Rule,
}

/// The attributes of a form's persons: the age band, then the drop's kept
/// columns in schema order.
pub fn attributes(form: Form) -> Vec<Attr> {
    let mut out = vec![Attr {
        name: "age_band".into(),
        kind: Kind::Codes(AGE_BANDS.to_vec()),
        rule: Rule::MostFrequent,
    }];
    for c in form.schema().kept_columns() {
        let kind = match c.role {
            Role::YesNo => Kind::Bool,
            Role::Nationality => Kind::Codes(countries().iter().map(|c| c.alpha3).collect()),
            _ => Kind::Codes(
                code_list(c.codes.as_deref().expect("coded columns name a list"))
                    .codes
                    .clone(),
            ),
        };
        let rule = match (c.name.as_str(), &kind) {
            ("outcome", Kind::Codes(codes)) => Rule::AnyThenLatest(
                1 + codes
                    .iter()
                    .position(|c| *c == "identified")
                    .expect("the outcome list has identified") as u8,
            ),
            _ => Rule::MostFrequent,
        };
        out.push(Attr {
            name: c.name.clone(),
            kind,
            rule,
        });
    }
    out
}

/// A form's records as one DataFrame: the union of its drops, each with
/// its org and the ledger order of its drop; `None` when it has no drops.
pub async fn records_frame(
    ctx: &SessionContext,
    store: &Store,
    drops: &[InputDrop],
    form: Form,
) -> Result<Option<DataFrame>> {
    // The columns of format 1, which every drop has: the views are the
    // same over drops with and without encodings. Given as the table's
    // schema, so that planning does not open every drop to infer it
    // (ingest has checked each drop's schema; its other columns are not
    // read).
    let schema = crate::drop::arrow_schema(form);
    let mut frame: Option<DataFrame> = None;
    for d in drops.iter().filter(|d| d.form == form.code()) {
        let path = resolve(store.root(), &d.path);
        let path = path.to_str().ok_or_else(|| {
            Error::Usage(format!("the store's path {} is not UTF-8", path.display()))
        })?;
        let df = ctx
            .read_parquet(path, ParquetReadOptions::default().schema(&schema))
            .await
            .map_err(df_err)?;
        let mut cols: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| col(format!("\"{}\"", f.name())))
            .collect();
        cols.push(lit(d.org.clone()).alias("org"));
        cols.push(lit(d.ledger_seq as i64).alias("drop_seq"));
        let df = df.select(cols).map_err(df_err)?;
        frame = Some(match frame {
            None => df,
            Some(f) => f.union(df).map_err(df_err)?,
        });
    }
    Ok(frame)
}

/// With `SAFETALLY_TRACE` set, prints a stage's wall time, the process's
/// CPU time so far and its resident memory (now and at its peak) to stderr
/// (for profiling; times and counts only).
pub fn trace(stage: &str, since: std::time::Instant) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*ON.get_or_init(|| std::env::var_os("SAFETALLY_TRACE").is_some()) {
        return;
    }
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<u64> = s
                .rsplit(')')
                .next()?
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 2).then(|| (f[0] + f[1]) as f64 / 100.0)
        })
        .unwrap_or(0.0);
    // Resident memory now and at its highest so far (Linux), in MiB.
    let memory = std::fs::read_to_string("/proc/self/status")
        .ok()
        .map(|s| {
            let kib = |field: &str| {
                s.lines()
                    .find_map(|l| l.strip_prefix(field))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            format!(
                ", memory {} MiB, peak {} MiB",
                kib("VmRSS:") >> 10,
                kib("VmHWM:") >> 10
            )
        })
        .unwrap_or_default();
    eprintln!(
        "trace: {stage}: {:.3} s (process CPU so far {cpu:.2} s{memory})",
        since.elapsed().as_secs_f64()
    );
}

/// A DataFusion error as ours.
pub fn df_err(e: datafusion::error::DataFusionError) -> Error {
    Error::Refused(format!("the query engine failed: {e}"))
}

/// Months since year 0 of a `YYYY-MM` string.
fn month_index(s: &str) -> Option<u32> {
    let p: Period = s.parse().ok()?;
    Some(p.year as u32 * 12 + p.month - 1)
}

/// `YYYY-MM` of a month index.
pub fn month_text(m: u32) -> String {
    format!("{:04}-{:02}", m / 12, m % 12 + 1)
}

/// How the attribute columns of a drop are read: for each, its name and,
/// for coded columns, the code of every allowed value.
struct Decoder {
    attrs: Vec<(String, Option<FxHashMap<&'static str, u8>>)>,
}

impl Decoder {
    fn new(attrs: &[Attr]) -> Self {
        Decoder {
            attrs: attrs
                .iter()
                .map(|a| {
                    let lookup = match &a.kind {
                        Kind::Codes(codes) => Some(
                            codes
                                .iter()
                                .enumerate()
                                .map(|(i, c)| (*c, i as u8 + 1))
                                .collect(),
                        ),
                        Kind::Bool => None,
                    };
                    (a.name.clone(), lookup)
                })
                .collect(),
        }
    }
}

/// Reads a form's drops into codes: each drop's Parquet file is decoded
/// by the Parquet reader DataFusion is built on (arrow-rs), as many drops
/// at a time as there are cores (so that only those are in memory, not
/// every drop of the window at once). The ledger knows every drop's rows,
/// so each drop's place in the records is known before any is read: each
/// is written straight into its own range, in parallel, with no copy
/// after. Returns the records and the organisations `Records::org`
/// indexes.
pub fn read_records(
    store: &Store,
    drops: &[&InputDrop],
    attrs: &[Attr],
    with_pos: bool,
) -> Result<(Records, Vec<String>)> {
    let mut orgs: Vec<String> = Vec::new();
    let mut org_of_drop = Vec::with_capacity(drops.len());
    for d in drops {
        let i = match orgs.iter().position(|o| *o == d.org) {
            Some(i) => i,
            None => {
                orgs.push(d.org.clone());
                orgs.len() - 1
            }
        };
        org_of_drop.push(u16::try_from(i).map_err(|_| {
            Error::Refused("a window holds more than 65,535 organisations".to_string())
        })?);
    }
    let total = drops.iter().map(|d| d.rows as usize).sum::<usize>();
    if u32::try_from(total).is_err() {
        return Err(Error::Refused(format!(
            "a form's drops in the window hold {total} records; one report reads at most \
             4,294,967,295. Report a shorter window"
        )));
    }
    let width = attrs.len();
    // Zeroed memory is mapped lazily: each page is first touched by the
    // thread that writes its drop.
    let mut records = Records {
        key_passport: vec![0; total],
        key_name_dob: vec![0; total],
        month: vec![0; total],
        drop_seq: vec![0; total],
        org: vec![0; total],
        pos: if with_pos { vec![0; total] } else { Vec::new() },
        width,
        codes: vec![0; total * width],
    };
    let decoder = Decoder::new(attrs);
    let mut slots = Vec::with_capacity(drops.len());
    let mut rest = Slot::of(&mut records);
    for (d, org) in drops.iter().zip(org_of_drop) {
        let (head, tail) = rest.split(d.rows as usize);
        slots.push((head, *d, org, d.ledger_seq as u32));
        rest = tail;
    }
    slots
        .into_par_iter()
        .with_max_len(1)
        .try_for_each(|(slot, d, org, seq)| {
            read_drop(&resolve(store.root(), &d.path), &decoder, slot, org, seq)
        })?;
    Ok((records, orgs))
}

/// One drop's range of every column of [`Records`].
struct Slot<'a> {
    key_passport: &'a mut [u128],
    key_name_dob: &'a mut [u128],
    month: &'a mut [u32],
    drop_seq: &'a mut [u32],
    org: &'a mut [u16],
    pos: &'a mut [u32],
    width: usize,
    codes: &'a mut [u8],
}

impl<'a> Slot<'a> {
    fn of(r: &'a mut Records) -> Self {
        Slot {
            key_passport: &mut r.key_passport,
            key_name_dob: &mut r.key_name_dob,
            month: &mut r.month,
            drop_seq: &mut r.drop_seq,
            org: &mut r.org,
            pos: &mut r.pos,
            width: r.width,
            codes: &mut r.codes,
        }
    }

    fn len(&self) -> usize {
        self.month.len()
    }

    /// The first `n` records, and the rest.
    fn split(self, n: usize) -> (Self, Self) {
        let (kp, kp2) = self.key_passport.split_at_mut(n);
        let (kn, kn2) = self.key_name_dob.split_at_mut(n);
        let (m, m2) = self.month.split_at_mut(n);
        let (d, d2) = self.drop_seq.split_at_mut(n);
        let (o, o2) = self.org.split_at_mut(n);
        let (p, p2) = if self.pos.is_empty() {
            (&mut [][..], self.pos)
        } else {
            self.pos.split_at_mut(n)
        };
        let (c, c2) = self.codes.split_at_mut(n * self.width);
        let w = self.width;
        (
            Slot {
                key_passport: kp,
                key_name_dob: kn,
                month: m,
                drop_seq: d,
                org: o,
                pos: p,
                width: w,
                codes: c,
            },
            Slot {
                key_passport: kp2,
                key_name_dob: kn2,
                month: m2,
                drop_seq: d2,
                org: o2,
                pos: p2,
                width: w,
                codes: c2,
            },
        )
    }
}

/// The codes of a dictionary's values: `codes[key]` (0 for a value not
/// allowed, which the caller refuses when a row uses it).
fn dictionary_codes(values: &StringArray, lookup: &FxHashMap<&'static str, u8>, out: &mut Vec<u8>) {
    out.clear();
    out.extend((0..values.len()).map(|i| {
        if values.is_valid(i) {
            lookup.get(values.value(i)).copied().unwrap_or(0)
        } else {
            0
        }
    }));
}

/// A dictionary column of a batch: its keys and its values.
fn dictionary<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a DictionaryArray<Int32Type>> {
    column::<DictionaryArray<Int32Type>>(batch, name)
}

fn string_values(d: &DictionaryArray<Int32Type>) -> Result<&StringArray> {
    d.values()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::Refused("a drop's text column is not text".to_string()))
}

/// Reads one drop into its slot, in the order "latest" needs: by month,
/// then record key (the row's position breaks a tie of both). Text columns
/// are read as dictionaries (as Parquet stores them), so that each
/// distinct value is looked up once a batch, not once a row.
fn read_drop(
    path: &std::path::Path,
    decoder: &Decoder,
    slot: Slot<'_>,
    org: u16,
    seq: u32,
) -> Result<()> {
    use datafusion::parquet::arrow::ProjectionMask;
    use datafusion::parquet::arrow::arrow_reader::{
        ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    };
    let refused = |e: &dyn std::fmt::Display| {
        Error::Refused(format!("cannot read the drop {}: {e}", path.display()))
    };
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    // The footer is read once; the file's own columns, with text read as
    // dictionaries.
    // The Parquet schema is enough: an embedded Arrow schema is not read.
    let metadata = ArrowReaderMetadata::load(
        &file,
        ArrowReaderOptions::new().with_skip_arrow_metadata(true),
    )
    .map_err(|e| refused(&e))?;
    let hinted: Vec<Field> = metadata
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8),
            )),
            _ => f.as_ref().clone(),
        })
        .collect();
    let options = ArrowReaderOptions::new()
        .with_skip_arrow_metadata(true)
        .with_schema(Arc::new(Schema::new(hinted)));
    let metadata = ArrowReaderMetadata::try_new(metadata.metadata().clone(), options)
        .map_err(|e| refused(&e))?;
    let rows = slot.len();
    let in_file = metadata.metadata().file_metadata().num_rows();
    if in_file != rows as i64 {
        return Err(Error::Refused(format!(
            "the drop {} holds {in_file} rows, and the store's ledger says {rows}: the store \
             is damaged. Run `safetally store verify`",
            path.display()
        )));
    }
    // Only the columns read below: a format 2 drop's encodings (three
    // quarters of its bytes) are read by the fuzzy linkage on its own,
    // and only when it runs.
    let wanted: Vec<&str> = ["key_passport", "key_name_dob", "record_key", "event_month"]
        .into_iter()
        .chain(decoder.attrs.iter().map(|(name, _)| name.as_str()))
        .collect();
    let mask = ProjectionMask::columns(metadata.metadata().file_metadata().schema_descr(), wanted);
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| refused(&e))?;
    // The drop as read, in file order; placed in the slot in order below.
    let width = decoder.attrs.len();
    let mut key_passport: Vec<u128> = Vec::with_capacity(rows);
    let mut key_name_dob: Vec<u128> = Vec::with_capacity(rows);
    let mut record_key: Vec<u128> = Vec::with_capacity(rows);
    let mut month: Vec<u32> = Vec::with_capacity(rows);
    let mut codes: Vec<u8> = Vec::with_capacity(rows * width);
    let mut codes_of_key: Vec<u8> = Vec::new();
    let mut months_of_key: Vec<u32> = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| refused(&e))?;
        let n = batch.num_rows();
        if month.len() + n > rows {
            return Err(refused(&"it holds more rows than its footer says"));
        }
        let keys = |name: &str, out: &mut Vec<u128>| -> Result<()> {
            let a = column::<FixedSizeBinaryArray>(&batch, name)?;
            let (base, len) = (out.len(), a.value_length() as usize);
            out.resize(base + n, 0);
            let data = a.value_data();
            each_valid(a.nulls(), n, |i| {
                out[base + i] = prefix(&data[i * len..(i + 1) * len]);
            });
            Ok(())
        };
        keys("key_passport", &mut key_passport)?;
        keys("key_name_dob", &mut key_name_dob)?;
        keys("record_key", &mut record_key)?;
        let months = dictionary(&batch, "event_month")?;
        let values = string_values(months)?;
        months_of_key.clear();
        for i in 0..values.len() {
            months_of_key.push(if values.is_valid(i) {
                month_index(values.value(i)).unwrap_or(u32::MAX)
            } else {
                u32::MAX
            });
        }
        for i in 0..n {
            let m = if months.is_valid(i) {
                months_of_key[months.keys().value(i) as usize]
            } else {
                u32::MAX
            };
            if m == u32::MAX {
                return Err(Error::Refused(
                    "a drop holds a malformed event_month".to_string(),
                ));
            }
            month.push(m);
        }
        let base = codes.len();
        codes.resize(base + n * width, 0);
        let rows = &mut codes[base..];
        for (a, (name, lookup)) in decoder.attrs.iter().enumerate() {
            match lookup {
                Some(map) => {
                    let v = dictionary(&batch, name)?;
                    dictionary_codes(string_values(v)?, map, &mut codes_of_key);
                    // A value not allowed is noted, not branched on.
                    let keys = v.keys();
                    let k = keys.values();
                    let mut allowed = true;
                    each_valid(keys.nulls(), n, |i| {
                        let code = codes_of_key.get(k[i] as usize).copied().unwrap_or(0);
                        rows[i * width + a] = code;
                        allowed &= code != 0;
                    });
                    if !allowed {
                        return Err(Error::Refused(format!(
                            "a drop holds a value of {name} that its form does not allow"
                        )));
                    }
                }
                None => {
                    let v = column::<BooleanArray>(&batch, name)?;
                    let values = v.values();
                    each_valid(v.nulls(), n, |i| {
                        rows[i * width + a] = 1 + u8::from(values.value(i));
                    });
                }
            }
        }
    }
    if month.len() != rows {
        return Err(refused(&"it holds fewer rows than its footer says"));
    }
    let order = latest_order(&month, &record_key);
    drop(record_key);
    let Slot {
        key_passport: kp,
        key_name_dob: kn,
        month: m,
        drop_seq,
        org: o,
        pos,
        codes: c,
        ..
    } = slot;
    // Row `i` goes to place `at[i]`. Each column is moved on its own, row
    // after row, so that only the writes are scattered (over one column
    // of one drop, which the caches hold); gathering every column at once
    // in the new order was the reader's slowest part.
    let mut at = vec![0u32; rows];
    for (k, &i) in order.iter().enumerate() {
        at[i as usize] = k as u32;
    }
    fn scatter<T: Copy>(from: &[T], at: &[u32], to: &mut [T]) {
        for (&v, &k) in from.iter().zip(at) {
            to[k as usize] = v;
        }
    }
    scatter(&key_passport, &at, kp);
    scatter(&key_name_dob, &at, kn);
    scatter(&month, &at, m);
    if !pos.is_empty() {
        pos.copy_from_slice(&order);
    }
    for (i, &k) in at.iter().enumerate() {
        let k = k as usize;
        c[k * width..(k + 1) * width].copy_from_slice(&codes[i * width..(i + 1) * width]);
    }
    drop_seq.fill(seq);
    o.fill(org);
    Ok(())
}

/// Calls `f` on every valid slot of an array of `len` slots whose nulls
/// are `nulls`: straight through when there are none, else on the set
/// bits only (read a word at a time, not one call a slot).
fn each_valid(nulls: Option<&NullBuffer>, len: usize, f: impl FnMut(usize)) {
    match nulls {
        None => (0..len).for_each(f),
        Some(valid) => valid.valid_indices().for_each(f),
    }
}

/// The rows of a drop in the order "latest" needs: by month, then record
/// key, then row. Each row is one 64-bit word, radix sorted: its month's
/// distance from the drop's first month, as many of the record key's first
/// bits as fit, and its row (as many bits as the drop's rows need, so
/// that the word says which row it is). Rows whose month and key bits are
/// equal, rare, are then put in order by the whole key.
fn latest_order(month: &[u32], record_key: &[u128]) -> Vec<u32> {
    use voracious_radix_sort::RadixSort;
    let n = month.len();
    let Some(&first) = month.iter().min() else {
        return Vec::new();
    };
    let last = month.iter().max().copied().unwrap_or(first);
    // A period's year is at most 9999 (every month index is below 2^24)
    // and a drop's rows fit in 32 bits, so the key keeps 8 bits or more.
    let width = |x: u64| u64::BITS - x.leading_zeros();
    let month_bits = width(u64::from(last - first));
    let row_bits = width(n as u64 - 1).max(1);
    let key_bits = 64 - month_bits - row_bits;
    let row = |w: u64| (w & ((1u64 << row_bits) - 1)) as u32;
    let mut words: Vec<u64> = month
        .iter()
        .zip(record_key)
        .enumerate()
        .map(|(i, (&m, &k))| {
            let m = if month_bits == 0 {
                0
            } else {
                u64::from(m - first) << (64 - month_bits)
            };
            m | ((k >> (128 - key_bits)) as u64) << row_bits | i as u64
        })
        .collect();
    words.voracious_sort();
    let mut start = 0;
    for i in 1..=n {
        if i == n || words[i] >> row_bits != words[start] >> row_bits {
            if i - start > 1 {
                words[start..i].sort_unstable_by_key(|&w| (record_key[row(w) as usize], w));
            }
            start = i;
        }
    }
    words.into_iter().map(row).collect()
}

fn prefix(k: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&k[..16]);
    // 0 means "no key"; a key whose first 128 bits are zero is as likely as
    // guessing the task-force key, but keep it a key.
    u128::from_be_bytes(b).max(1)
}

fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Refused(format!("the drops' column {name} has an unexpected type")))
}

/// The persons table of a form: one row per person, in batches of
/// `chunk`. The persons' columns become the table's without a copy: the
/// counts as they are, the months as keys of a dictionary of month texts,
/// each attribute's codes as keys of its dictionary (code 0, unknown, a
/// null); the batches are slices of one.
pub fn persons_batches(
    persons: Persons,
    attrs: &[Attr],
    chunk: usize,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let months = DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8));
    let mut fields = vec![
        Field::new("person_id", DataType::UInt32, false),
        Field::new("records", DataType::UInt32, false),
        Field::new("organisations", DataType::UInt16, false),
        Field::new("first_month", months.clone(), false),
        Field::new("last_month", months, false),
        Field::new("anonymous", DataType::Boolean, false),
    ];
    let dict = DataType::Dictionary(Box::new(DataType::UInt8), Box::new(DataType::Utf8));
    for a in attrs {
        fields.push(Field::new(
            &a.name,
            match a.kind {
                Kind::Bool => DataType::Boolean,
                Kind::Codes(_) => dict.clone(),
            },
            true,
        ));
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let bad = |e: datafusion::arrow::error::ArrowError| Error::Refused(e.to_string());
    let Persons {
        records,
        organisations,
        first_month,
        last_month,
        anonymous,
        attrs: codes,
    } = persons;
    let n = records.len();
    assert!(n < u32::MAX as usize, "persons are numbered in 32 bits");
    // The text of every month a person has, made once; a month's key is
    // its distance from the first.
    let first = first_month.iter().min().copied().unwrap_or(0);
    let last = last_month.iter().max().copied().unwrap_or(0);
    let texts: ArrayRef = Arc::new(StringArray::from_iter_values(
        (first..=last.max(first)).map(month_text),
    ));
    let month_keys = |mut m: Vec<u32>| -> Result<ArrayRef> {
        m.par_iter_mut().for_each(|m| *m -= first);
        let keys = UInt32Array::new(ScalarBuffer::from(m), None);
        Ok(Arc::new(
            DictionaryArray::<UInt32Type>::try_new(keys, texts.clone()).map_err(bad)?,
        ))
    };
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::new(
            ScalarBuffer::from((1..=n as u32).into_par_iter().collect::<Vec<u32>>()),
            None,
        )),
        Arc::new(UInt32Array::new(ScalarBuffer::from(records), None)),
        Arc::new(UInt16Array::new(ScalarBuffer::from(organisations), None)),
        month_keys(first_month)?,
        month_keys(last_month)?,
        Arc::new(BooleanArray::new(bits(&anonymous, |a| a), None)),
    ];
    drop(anonymous);
    // The attributes side by side, one a task: each column's steps (its
    // bits, its keys, the dictionary's check of them) are short passes.
    let attr_cols = codes
        .into_par_iter()
        .zip(attrs)
        .map(|(mut codes, a)| -> Result<ArrayRef> {
            // Code 0 is unknown (null); bits and bytes are made directly.
            let known = NullBuffer::new(bits(&codes, |c| c != 0));
            Ok(match &a.kind {
                Kind::Bool => Arc::new(BooleanArray::new(bits(&codes, |c| c == 2), Some(known))),
                Kind::Codes(values) => {
                    codes.iter_mut().for_each(|c| *c = c.saturating_sub(1));
                    let keys = UInt8Array::new(ScalarBuffer::from(codes), Some(known));
                    let values: ArrayRef = Arc::new(StringArray::from_iter_values(values.iter()));
                    Arc::new(DictionaryArray::<UInt8Type>::try_new(keys, values).map_err(bad)?)
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    cols.extend(attr_cols);
    let all = RecordBatch::try_new(schema.clone(), cols).map_err(bad)?;
    let chunk = chunk.max(1);
    let batches = if n == 0 {
        vec![all]
    } else {
        (0..n)
            .step_by(chunk)
            .map(|start| all.slice(start, chunk.min(n - start)))
            .collect()
    };
    Ok((schema, batches))
}

/// A bit for each value, set where `f` holds, 64 values a word in
/// parallel (Arrow's order: the first value is the lowest bit).
fn bits<T: Copy + Sync>(values: &[T], f: impl Fn(T) -> bool + Sync) -> BooleanBuffer {
    let words: Vec<u64> = values
        .par_chunks(64)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u64, |w, (k, &v)| w | (f(v) as u64) << k)
        })
        .collect();
    BooleanBuffer::new(ScalarBuffer::from(words).into_inner(), 0, values.len())
}

/// What linking found for one form.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LinkStats {
    /// Records read.
    pub records: u64,
    /// Persons they form.
    pub persons: u64,
    /// Persons with no match key (each counted once).
    pub anonymous: u64,
    /// Persons seen by more than one organisation.
    pub multi_org: u64,
    /// Organisations with records.
    pub organisations: u64,
    /// Records per organisation.
    pub records_by_org: BTreeMap<String, u64>,
    /// Fuzzy linkage (when drops carry encodings): the model's weights and
    /// threshold, and what it linked and refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuzzy: Option<super::fuzzy::FuzzyReport>,
}

/// How each record of a form was linked, for `safetally link`: per record
/// (in the order [`read_records`] gives), its drop, its row in that drop,
/// its person and how it joined the person.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Ledger sequence number of the record's drop.
    pub drop_seq: Vec<u32>,
    /// The record's row in its drop (0 for the first).
    pub pos: Vec<u32>,
    /// The record's person: an index into the persons.
    pub person: Vec<u32>,
    /// Whether the record shares an exact match key with another record.
    pub exact: Vec<bool>,
    /// The match weight of the strongest fuzzy link at the record (NaN:
    /// none).
    pub score: Vec<f32>,
    /// The weights of every fuzzy link made.
    pub fuzzy_weights: Vec<f64>,
}

/// Whether each record shares its key with another record.
fn shared(keys: &[u128]) -> Vec<bool> {
    let mut idx: Vec<(u128, u32)> = keys
        .iter()
        .enumerate()
        .filter(|&(_, &k)| k != 0)
        .map(|(i, &k)| (k, i as u32))
        .collect();
    idx.sort_unstable();
    let mut out = vec![false; keys.len()];
    for w in idx.windows(2) {
        if w[0].0 == w[1].0 {
            out[w[0].1 as usize] = true;
            out[w[1].1 as usize] = true;
        }
    }
    out
}

/// Reads and links one form's drops into persons: exact keys, then, when
/// `fuzzy_linkage` is set and drops carry encodings, fuzzy links. With
/// `trace`, also how each record was linked.
pub async fn link_form(
    store: &Store,
    form_drops: &[&InputDrop],
    form: Form,
    fuzzy_linkage: bool,
    params: &super::fuzzy::Params,
    with_trace: bool,
) -> Result<(Persons, LinkStats, Option<Trace>)> {
    let attrs = attributes(form);
    let t = std::time::Instant::now();
    // A record's row in its drop is wanted only to find its encodings or
    // to trace it back to the NGO's row.
    let (mut records, orgs) = read_records(store, form_drops, &attrs, fuzzy_linkage || with_trace)?;
    trace(&format!("{form}: read the records"), t);
    let mut per_org = vec![0u64; orgs.len()];
    for &o in &records.org {
        per_org[o as usize] += 1;
    }
    let by_org: BTreeMap<String, u64> = orgs
        .into_iter()
        .zip(per_org)
        .filter(|&(_, n)| n > 0)
        .collect();
    let n_records = records.len();
    let rules: Vec<Rule> = attrs.iter().map(|a| a.rule).collect();
    let mut traced = with_trace.then(|| {
        let (p, nd) = (shared(&records.key_passport), shared(&records.key_name_dob));
        Trace {
            drop_seq: records.drop_seq.clone(),
            pos: records.pos.clone(),
            exact: p.iter().zip(&nd).map(|(a, b)| *a || *b).collect(),
            score: vec![f32::NAN; n_records],
            ..Trace::default()
        }
    });
    let t = std::time::Instant::now();
    // Without fuzzy linkage the encodings are not even read: exact keys
    // alone, as for drops of format 1. With it, the exact keys are given
    // to fuzzy linkage, which frees them once it has the exact-key groups
    // (room for more filters at once), and the link takes its groups.
    let mut keyless = None;
    let fuzzy = if fuzzy_linkage {
        let keys = (
            std::mem::take(&mut records.key_passport),
            std::mem::take(&mut records.key_name_dob),
        );
        let e = super::fuzzy::encodings_of(store, form_drops, &records, &attrs)?;
        trace(&format!("{form}: read the encodings"), t);
        match e {
            Some(enc) => {
                keyless = Some(super::link::keyless(&keys.0, &keys.1));
                Some(super::fuzzy::fuzzy_links_from(
                    keys.0, keys.1, &enc, params,
                )?)
            }
            None => {
                (records.key_passport, records.key_name_dob) = keys;
                None
            }
        }
    } else {
        None
    };
    if let (Some(t), Some(f)) = (traced.as_mut(), fuzzy.as_ref()) {
        for e in &f.accepted {
            for r in [e.a, e.b] {
                let s = &mut t.score[r as usize];
                if s.is_nan() || *s < e.weight as f32 {
                    *s = e.weight as f32;
                }
            }
            t.fuzzy_weights.push(e.weight);
        }
    }
    let (persons, person) = match (&fuzzy, keyless) {
        (Some(f), Some(keyless)) => {
            super::link::link_groups(records, &rules, &f.groups, keyless, with_trace)
        }
        _ => super::link::link_with(records, &rules, with_trace),
    };
    trace(&format!("{form}: link"), t);
    if let (Some(t), Some(person)) = (traced.as_mut(), person) {
        t.person = person;
    }
    let stats = LinkStats {
        fuzzy: fuzzy.map(|mut f| {
            f.report.linked = fuzzy_linkage;
            f.report
        }),
        records: n_records as u64,
        persons: persons.len() as u64,
        anonymous: persons.anonymous.iter().filter(|&&a| a).count() as u64,
        multi_org: persons.organisations.iter().filter(|&&o| o > 1).count() as u64,
        organisations: by_org.len() as u64,
        records_by_org: by_org,
    };
    Ok((persons, stats, traced))
}

/// Reads, links and registers one form: `FORM_persons` (one row per
/// person) and, when `with_records` (a query reads it), `FORM_records`
/// (the drops' rows, with `org` and `drop_seq`).
pub async fn register_form(
    ctx: &SessionContext,
    store: &Store,
    drops: &[InputDrop],
    form: Form,
    fuzzy_linkage: bool,
    params: &super::fuzzy::Params,
    with_records: bool,
) -> Result<LinkStats> {
    let attrs = attributes(form);
    let t = std::time::Instant::now();
    let frame = if with_records {
        records_frame(ctx, store, drops, form).await?
    } else {
        None
    };
    trace(&format!("{form}: plan the records view"), t);
    let form_drops: Vec<&InputDrop> = drops.iter().filter(|d| d.form == form.code()).collect();
    let (persons, stats, _) =
        link_form(store, &form_drops, form, fuzzy_linkage, params, false).await?;
    let t = std::time::Instant::now();
    let partitions = ctx.copied_config().target_partitions().max(1);
    let chunk = (persons.len() / partitions).clamp(8192, 1 << 20);
    let (schema, batches) = persons_batches(persons, &attrs, chunk)?;
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
    for (i, b) in batches.into_iter().enumerate() {
        parts[i % partitions].push(b);
    }
    let table = super::grouping::PersonsTable::try_new(schema, parts).map_err(df_err)?;
    trace(&format!("{form}: persons table"), t);
    let code = form.code();
    ctx.register_table(format!("{code}_persons"), Arc::new(table))
        .map_err(df_err)?;
    if !with_records {
        return Ok(stats);
    }
    let records_view = match frame {
        Some(f) => f.into_view(),
        None => {
            // No drops of this form in the window: an empty table of the
            // same shape, so that queries over it still run.
            let mut fields: Vec<Field> = crate::drop::arrow_schema(form)
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new("org", DataType::Utf8, false));
            fields.push(Field::new("drop_seq", DataType::Int64, false));
            Arc::new(
                MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]]).map_err(df_err)?,
            )
        }
    };
    ctx.register_table(format!("{code}_records"), records_view)
        .map_err(df_err)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::{Attr, Kind, Persons, Rule, latest_order, persons_batches};

    /// The persons table's columns (counts as they are, months and codes
    /// as dictionary keys) read in SQL as the values they stand for.
    #[test]
    fn the_persons_table_answers_sql_in_the_values_it_holds() {
        use datafusion::arrow::array::{Array, AsArray};
        use datafusion::arrow::compute::cast;
        use datafusion::arrow::datatypes::{DataType, UInt64Type};
        let attrs = [
            Attr {
                name: "outcome".into(),
                kind: Kind::Codes(vec!["identified", "not_identified"]),
                rule: Rule::AnyThenLatest(1),
            },
            Attr {
                name: "referral".into(),
                kind: Kind::Bool,
                rule: Rule::MostFrequent,
            },
        ];
        // Months 24300 (2025-01) to 24302 (2025-03).
        let persons = Persons {
            records: vec![1, 3, 2, 1, 1],
            organisations: vec![1, 2, 2, 1, 3],
            first_month: vec![24300, 24300, 24301, 24302, 24301],
            last_month: vec![24300, 24302, 24302, 24302, 24301],
            anonymous: vec![false, false, false, true, false],
            attrs: vec![vec![1, 2, 0, 1, 1], vec![2, 1, 0, 2, 2]],
        };
        let (schema, batches) = persons_batches(persons, &attrs, 2).unwrap();
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        let ctx = datafusion::prelude::SessionContext::new();
        let table = datafusion::catalog::MemTable::try_new(schema, vec![batches]).unwrap();
        ctx.register_table("p", std::sync::Arc::new(table)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let rows = |sql: &str| -> Vec<(String, u64)> {
            let batches =
                rt.block_on(async { ctx.sql(sql).await.unwrap().collect().await.unwrap() });
            let mut out = Vec::new();
            for b in batches {
                let label = cast(b.column(0), &DataType::Utf8).unwrap();
                let label = label.as_string::<i32>();
                let count = cast(b.column(1), &DataType::UInt64).unwrap();
                let count = count.as_primitive::<UInt64Type>();
                for i in 0..b.num_rows() {
                    let l = if label.is_valid(i) {
                        label.value(i)
                    } else {
                        "NULL"
                    };
                    out.push((l.to_string(), count.value(i)));
                }
            }
            out.sort();
            out
        };
        let text = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
            v.iter().map(|(l, c)| (l.to_string(), *c)).collect()
        };
        assert_eq!(
            rows(
                "SELECT first_month, count(*) FROM p WHERE first_month >= '2025-02' GROUP BY first_month"
            ),
            text(&[("2025-02", 2), ("2025-03", 1)])
        );
        assert_eq!(
            rows(
                "SELECT last_month, sum(records) FROM p WHERE organisations >= 2 GROUP BY last_month"
            ),
            text(&[("2025-02", 1), ("2025-03", 5)])
        );
        assert_eq!(
            rows("SELECT outcome, count(*) FROM p GROUP BY outcome"),
            text(&[("NULL", 1), ("identified", 3), ("not_identified", 1)])
        );
        assert_eq!(
            rows(
                "SELECT CAST(person_id AS VARCHAR), count(*) FROM p WHERE referral AND NOT anonymous GROUP BY 1"
            ),
            text(&[("1", 1), ("5", 1)])
        );
    }

    /// The order is by month, then by the whole record key, then by row,
    /// also where keys share the first bits the sort word holds.
    #[test]
    fn latest_order_is_by_month_then_whole_record_key_then_row() {
        let hi = 0xfeed_beef_u128 << 96;
        let month = [24301, 24300, 24301, 24300, 24300, 24301];
        let record_key = [hi | 5, hi | 9, hi | 2, hi | 1, hi | 9, 7];
        let order = latest_order(&month, &record_key);
        let mut want: Vec<u32> = (0..6).collect();
        want.sort_by_key(|&i| (month[i as usize], record_key[i as usize], i));
        assert_eq!(want, [3, 1, 4, 5, 2, 0]);
        assert_eq!(order, want);
        assert!(latest_order(&[], &[]).is_empty());
        assert_eq!(latest_order(&[24300], &[hi]), [0]);
        // Months years apart, and many rows: fewer key bits in the word,
        // more rows ordered by the whole key.
        let n = 5000u32;
        let month: Vec<u32> = (0..n).map(|i| 12 * 2000 + (i * 7919) % 120).collect();
        let record_key: Vec<u128> = (0..n)
            .map(|i| u128::from((i * 104_729) % 613) << 100 | u128::from(i % 3))
            .collect();
        let mut want: Vec<u32> = (0..n).collect();
        want.sort_by_key(|&i| (month[i as usize], record_key[i as usize], i));
        assert_eq!(latest_order(&month, &record_key), want);
    }
}
