//! Drops: one Parquet file per (form, org, period) with the coded records
//! and key-value metadata. Written atomically (temporary file, sync,
//! rename); checked on read.
//!
//! A drop never holds an identity column; [`check`] refuses one that does.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BooleanBufferBuilder, OffsetBufferBuilder};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::{ARROW_SCHEMA_META_KEY, ArrowWriter, encode_arrow_schema};
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use crate::digest::{ContentDigest, DIGEST_KEY};
use crate::error::{Error, Result};
use crate::pseudonymise::country::by_alpha3;
use crate::pseudonymise::encode::{DOB_BITS, ENCODING_RULES, Encoding, NAME_BITS, PASSPORT_BITS};
use crate::pseudonymise::matchkeys::{NAME_DOB_RULE, PASSPORT_RULE, RECORD_RULE};
use crate::pseudonymise::normalise::{AGE_BANDS, NORMALISER_VERSION};
use crate::pseudonymise::{Coded, Period, Value, parse_org};
use crate::schema::{Form, Role, code_list};

/// Version of the drop format written. Bump on any change of columns or
/// metadata. Version 2 adds the similarity encodings and blocking keys
/// ([`ENCODING_COLUMNS`]) after the kept columns; version 3 has the same
/// columns and adds the content digest ([`crate::digest`]), and carries no
/// column statistics, page index or embedded Arrow schema (nothing a reader
/// could use that the digest does not cover).
pub const FORMAT_VERSION: &str = "3";

/// Drop format versions read: a version-1 drop has no encoding columns
/// and its records are linked by exact keys only; versions 1 and 2 carry
/// no content digest and are read unchecked.
pub const FORMAT_VERSIONS_READ: [&str; 3] = ["1", "2", "3"];

/// Whether drops of `version` carry a content digest.
pub fn has_digest(version: &str) -> bool {
    !matches!(version, "1" | "2")
}

/// The columns format 2 adds after the kept columns: the Bloom-filter
/// encodings of name, date of birth and passport, and the blocking keys
/// (8 bytes each, concatenated).
pub const ENCODING_COLUMNS: [&str; 5] = [
    "enc_name",
    "enc_dob",
    "enc_passport",
    "name_key",
    "block_keys",
];

/// Bytes of each fixed-size encoding column, in [`ENCODING_COLUMNS`] order.
pub const ENCODING_LENS: [usize; 4] = [NAME_BITS / 8, DOB_BITS / 8, PASSPORT_BITS / 8, 8];

/// Prefix of safetally's Parquet key-value metadata.
pub const META_PREFIX: &str = "safetally.";

/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 1 << 20;

/// The columns every drop starts with, before the form's kept columns.
pub const KEY_COLUMNS: [&str; 3] = ["record_key", "key_passport", "key_name_dob"];

/// The Arrow schema of a form's drops of `version` (one of
/// [`FORMAT_VERSIONS_READ`]): version 1's columns, then, from version 2,
/// [`ENCODING_COLUMNS`].
pub fn arrow_schema_of(form: Form, version: &str) -> SchemaRef {
    let base = arrow_schema(form);
    if version == "1" {
        return base;
    }
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (name, len) in ENCODING_COLUMNS.iter().zip(ENCODING_LENS) {
        fields.push(Field::new(
            *name,
            DataType::FixedSizeBinary(len as i32),
            true,
        ));
    }
    fields.push(Field::new("block_keys", DataType::Binary, false));
    Arc::new(ArrowSchema::new(fields))
}

/// The Arrow schema of version 1 of a form's drops: the keys, month, age
/// band and kept columns every drop has (and the report's record views
/// show).
pub fn arrow_schema(form: Form) -> SchemaRef {
    let mut fields = vec![
        Field::new("record_key", DataType::FixedSizeBinary(32), false),
        Field::new("key_passport", DataType::FixedSizeBinary(32), true),
        Field::new("key_name_dob", DataType::FixedSizeBinary(32), true),
        Field::new("event_month", DataType::Utf8, false),
        Field::new("age_band", DataType::Utf8, true),
    ];
    for c in form.schema().kept_columns() {
        let ty = match c.role {
            Role::YesNo => DataType::Boolean,
            _ => DataType::Utf8,
        };
        fields.push(Field::new(&c.name, ty, true));
    }
    Arc::new(ArrowSchema::new(fields))
}

/// A drop's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropMeta {
    /// Drop format version.
    pub format_version: String,
    /// The form.
    pub form: Form,
    /// The form's schema version.
    pub schema_version: u32,
    /// The organisation code.
    pub org: String,
    /// The month the drop covers.
    pub period: Period,
    /// Fingerprint of the task-force key used.
    pub key_fingerprint: String,
    /// Normaliser version used.
    pub normaliser_version: String,
    /// safetally's version.
    pub tool_version: String,
    /// When the drop was made (RFC 3339, UTC).
    pub created: String,
    /// Rows in the drop.
    pub rows: u64,
    /// Rows rejected (written with `--allow-rejects`).
    pub rejected_rows: u64,
    /// The content digest the drop carries, verified when it was read
    /// (format 3); `None` for formats 1 and 2, which carry none. Not used
    /// when writing: the writer computes it.
    pub content_sha256: Option<String>,
}

impl DropMeta {
    /// The drop's file name: `FORM_ORG_PERIOD.parquet`.
    pub fn file_name(&self) -> String {
        file_stem(self.form, &self.org, self.period) + ".parquet"
    }

    fn to_key_values(&self) -> Vec<KeyValue> {
        let rules = [PASSPORT_RULE, NAME_DOB_RULE, RECORD_RULE]
            .iter()
            .map(|(n, v)| format!("{n}/{v}"))
            .collect::<Vec<_>>()
            .join(",");
        [
            ("format_version", self.format_version.clone()),
            ("form", self.form.code().to_string()),
            ("schema_version", self.schema_version.to_string()),
            ("org", self.org.clone()),
            ("period", self.period.to_string()),
            ("key_fingerprint", self.key_fingerprint.clone()),
            ("normaliser_version", self.normaliser_version.clone()),
            ("match_rules", rules),
            ("encoding_rules", ENCODING_RULES.to_string()),
            ("tool_version", self.tool_version.clone()),
            ("created", self.created.clone()),
            ("rows", self.rows.to_string()),
            ("rejected_rows", self.rejected_rows.to_string()),
        ]
        .into_iter()
        .filter(|(k, _)| *k != "encoding_rules" || self.format_version != "1")
        .map(|(k, v)| KeyValue::new(format!("{META_PREFIX}{k}"), v))
        .collect()
    }

    fn from_key_values(kv: &BTreeMap<String, String>) -> std::result::Result<Self, String> {
        let get = |k: &str| {
            kv.get(k)
                .cloned()
                .ok_or_else(|| format!("metadata has no {META_PREFIX}{k}: not a safetally drop"))
        };
        let num = |k: &str| -> std::result::Result<u64, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("metadata {META_PREFIX}{k} is not a number"))
        };
        Ok(DropMeta {
            format_version: get("format_version")?,
            form: get("form")?.parse().map_err(|e: Error| e.to_string())?,
            schema_version: num("schema_version")? as u32,
            org: parse_org(&get("org")?).map_err(|e| e.to_string())?,
            period: get("period")?.parse().map_err(|e: Error| e.to_string())?,
            key_fingerprint: get("key_fingerprint")?,
            normaliser_version: get("normaliser_version")?,
            tool_version: get("tool_version")?,
            created: get("created")?,
            rows: num("rows")?,
            rejected_rows: num("rejected_rows")?,
            content_sha256: None,
        })
    }
}

/// `FORM_ORG_PERIOD`, the stem of a drop's and its rejects report's names.
pub fn file_stem(form: Form, org: &str, period: Period) -> String {
    format!("{}_{}_{}", form.code(), org, period)
}

/// The time stamped on new drops: `SOURCE_DATE_EPOCH` when set (for
/// reproducible builds of demo data), otherwise now, in UTC.
pub fn created_now() -> String {
    let ts = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(chrono::Utc::now);
    ts.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Builds the record batch of a drop.
pub fn to_batch(form: Form, records: &[Coded]) -> Result<RecordBatch> {
    let mut b = BatchBuilder::new(form, records.len());
    for r in records {
        b.push(
            &r.record_key,
            r.key_passport.as_ref(),
            r.key_name_dob.as_ref(),
            r.event_month,
            r.age_band,
            r.values.iter().copied(),
        )?;
        b.push_encoding(&r.encoding);
    }
    b.finish()
}

/// Builds a drop's record batch row by row. Rows are gathered in plain
/// vectors and turned into Arrow arrays column by column at the end.
pub struct BatchBuilder {
    schema: SchemaRef,
    /// `record_key`, `key_passport`, `key_name_dob`: 32 bytes a row, zeros
    /// where a key is missing.
    keys: [Vec<u8>; 3],
    /// Whether `key_passport` and `key_name_dob` are present.
    present: [Vec<bool>; 2],
    event_month: Vec<Period>,
    age_band: Vec<Option<&'static str>>,
    cols: Vec<Col>,
    /// The encoding columns: name, dob and passport filters (zeros where
    /// missing), whether each is present, and the blocking keys.
    enc: [Vec<u8>; 4],
    enc_present: [Vec<bool>; 4],
    blocks: Vec<u8>,
    block_ends: Vec<usize>,
}

enum Col {
    Text(Vec<Option<&'static str>>),
    Bool(Vec<Option<bool>>),
    /// Values as [`Coding`] says, turned into text or yes/no at the end.
    Coded(Vec<u16>, Coding),
}

/// How a kept column's value is given to [`BatchBuilder::push_coded`]: 0
/// for unknown, otherwise 1 + an index.
#[derive(Debug, Clone, Copy)]
pub enum Coding {
    /// An index into this table of codes.
    Text(&'static [&'static str]),
    /// A yes/no answer: this value is yes, any other no.
    YesNo(u16),
}

impl BatchBuilder {
    /// A builder for about `n` rows of `form`.
    pub fn new(form: Form, n: usize) -> Self {
        let cols = form
            .schema()
            .kept_columns()
            .map(|c| match c.role {
                Role::YesNo => Col::Bool(Vec::with_capacity(n)),
                _ => Col::Text(Vec::with_capacity(n)),
            })
            .collect();
        BatchBuilder {
            schema: arrow_schema_of(form, FORMAT_VERSION),
            keys: std::array::from_fn(|_| Vec::with_capacity(n * 32)),
            present: std::array::from_fn(|_| Vec::with_capacity(n)),
            event_month: Vec::with_capacity(n),
            age_band: Vec::with_capacity(n),
            cols,
            enc: ENCODING_LENS.map(|len| Vec::with_capacity(n * len)),
            enc_present: std::array::from_fn(|_| Vec::with_capacity(n)),
            blocks: Vec::with_capacity(n * 64),
            block_ends: Vec::with_capacity(n),
        }
    }

    /// A builder for about `n` rows whose kept values are given coded,
    /// as `codings` says (one per kept column, in order), to
    /// [`push_coded`](Self::push_coded).
    pub fn with_codings(form: Form, n: usize, codings: &[Coding]) -> Self {
        let mut b = BatchBuilder::new(form, 0);
        debug_assert_eq!(b.cols.len(), codings.len());
        b.keys = std::array::from_fn(|_| Vec::with_capacity(n * 32));
        b.present = std::array::from_fn(|_| Vec::with_capacity(n));
        b.event_month = Vec::with_capacity(n);
        b.age_band = Vec::with_capacity(n);
        b.enc = ENCODING_LENS.map(|len| Vec::with_capacity(n * len));
        b.enc_present = std::array::from_fn(|_| Vec::with_capacity(n));
        b.blocks = Vec::with_capacity(n * 64);
        b.block_ends = Vec::with_capacity(n);
        b.cols = codings
            .iter()
            .map(|c| Col::Coded(Vec::with_capacity(n), *c))
            .collect();
        b
    }

    /// Appends one row; `values` are the kept columns' values in order.
    pub fn push(
        &mut self,
        record_key: &[u8; 32],
        key_passport: Option<&[u8; 32]>,
        key_name_dob: Option<&[u8; 32]>,
        event_month: Period,
        age_band: Option<&'static str>,
        values: impl IntoIterator<Item = Value>,
    ) -> Result<()> {
        self.push_keys(
            record_key,
            key_passport,
            key_name_dob,
            event_month,
            age_band,
        );
        for (col, v) in self.cols.iter_mut().zip(values) {
            match (col, v) {
                (Col::Text(c), Value::Text(t)) => c.push(t),
                (Col::Bool(c), Value::Bool(x)) => c.push(x),
                _ => unreachable!("values follow the schema's kept columns"),
            }
        }
        Ok(())
    }

    /// Appends one row to a builder made by
    /// [`with_codings`](Self::with_codings); `values` are the kept
    /// columns' coded values in order.
    pub fn push_coded(
        &mut self,
        record_key: &[u8; 32],
        key_passport: Option<&[u8; 32]>,
        key_name_dob: Option<&[u8; 32]>,
        event_month: Period,
        age_band: Option<&'static str>,
        values: &[u16],
    ) {
        self.push_keys(
            record_key,
            key_passport,
            key_name_dob,
            event_month,
            age_band,
        );
        for (col, v) in self.cols.iter_mut().zip(values) {
            match col {
                Col::Coded(c, _) => c.push(*v),
                _ => unreachable!("a builder with codings"),
            }
        }
    }

    #[inline]
    fn push_keys(
        &mut self,
        record_key: &[u8; 32],
        key_passport: Option<&[u8; 32]>,
        key_name_dob: Option<&[u8; 32]>,
        event_month: Period,
        age_band: Option<&'static str>,
    ) {
        self.keys[0].extend_from_slice(record_key);
        for (i, key) in [key_passport, key_name_dob].into_iter().enumerate() {
            self.keys[i + 1].extend_from_slice(key.unwrap_or(&[0; 32]));
            self.present[i].push(key.is_some());
        }
        self.event_month.push(event_month);
        self.age_band.push(age_band);
    }

    /// Appends the encodings of the row just pushed (every row needs one).
    pub fn push_encoding(&mut self, e: &Encoding) {
        let name_key = e.name_key.map(u64::to_be_bytes);
        let filters: [Option<&[u8]>; 4] = [
            e.name.as_ref().map(|f| f.as_slice()),
            e.dob.as_ref().map(|f| f.as_slice()),
            e.passport.as_ref().map(|f| f.as_slice()),
            name_key.as_ref().map(|f| f.as_slice()),
        ];
        for (i, (f, len)) in filters.into_iter().zip(ENCODING_LENS).enumerate() {
            match f {
                Some(f) => self.enc[i].extend_from_slice(f),
                None => self.enc[i].resize(self.enc[i].len() + len, 0),
            }
            self.enc_present[i].push(f.is_some());
        }
        for b in e.blocks() {
            self.blocks.extend_from_slice(&b.to_be_bytes());
        }
        self.block_ends.push(self.blocks.len());
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.event_month.len()
    }

    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch of the rows appended.
    pub fn finish(self) -> Result<RecordBatch> {
        let BatchBuilder {
            schema,
            keys: [record_key, key_passport, key_name_dob],
            present: [passport_present, name_dob_present],
            event_month,
            age_band,
            cols,
            enc,
            enc_present,
            blocks,
            block_ends,
        } = self;
        debug_assert_eq!(block_ends.len(), event_month.len(), "an encoding per row");
        let key = |bytes: Vec<u8>, present: Option<&[bool]>| -> Result<ArrayRef> {
            let nulls = present
                .and_then(|p| validity(p.len(), |i| p[i]))
                .map(|mut b| b.finish().into());
            Ok(Arc::new(FixedSizeBinaryArray::try_new(
                32,
                bytes.into(),
                nulls,
            )?))
        };
        // Rows of one drop nearly always share a month: it is formatted
        // once per run of equal months.
        let mut month: (Option<Period>, String) = (None, String::new());
        let mut offsets = OffsetBufferBuilder::<i32>::new(event_month.len());
        let mut bytes: Vec<u8> = Vec::with_capacity(event_month.len() * 7);
        for m in &event_month {
            if month.0 != Some(*m) {
                month = (Some(*m), m.to_string());
            }
            bytes.extend_from_slice(month.1.as_bytes());
            offsets.push_length(month.1.len());
        }
        let months = StringArray::try_new(offsets.finish(), bytes.into(), None)?;
        let mut arrays: Vec<ArrayRef> = vec![
            key(record_key, None)?,
            key(key_passport, Some(&passport_present))?,
            key(key_name_dob, Some(&name_dob_present))?,
            Arc::new(months),
            strings(&age_band)?,
        ];
        for col in cols {
            arrays.push(match col {
                Col::Text(v) => strings(&v)?,
                Col::Bool(v) => Arc::new(BooleanArray::new(
                    bits(v.len(), |i| v[i] == Some(true)).finish(),
                    validity(v.len(), |i| v[i].is_some()).map(|mut b| b.finish().into()),
                )),
                Col::Coded(v, Coding::Text(table)) => coded_strings(&v, table)?,
                Col::Coded(v, Coding::YesNo(yes)) => Arc::new(BooleanArray::new(
                    bits(v.len(), |i| v[i] == yes).finish(),
                    validity(v.len(), |i| v[i] != 0).map(|mut b| b.finish().into()),
                )),
            });
        }
        for ((bytes, present), len) in enc.into_iter().zip(&enc_present).zip(ENCODING_LENS) {
            let nulls = validity(present.len(), |i| present[i]).map(|mut b| b.finish().into());
            arrays.push(Arc::new(FixedSizeBinaryArray::try_new(
                len as i32,
                bytes.into(),
                nulls,
            )?));
        }
        let mut offsets = OffsetBufferBuilder::<i32>::new(block_ends.len());
        let mut last = 0;
        for end in block_ends {
            offsets.push_length(end - last);
            last = end;
        }
        arrays.push(Arc::new(BinaryArray::try_new(
            offsets.finish(),
            blocks.into(),
            None,
        )?));
        Ok(RecordBatch::try_new(schema, arrays)?)
    }
}

/// `n` bits, packed eight at a time.
fn bits(n: usize, mut bit: impl FnMut(usize) -> bool) -> BooleanBufferBuilder {
    let mut packed = vec![0u8; n.div_ceil(8)];
    for (i, byte) in packed.iter_mut().enumerate() {
        for j in 0..8.min(n - i * 8) {
            *byte |= (bit(i * 8 + j) as u8) << j;
        }
    }
    let mut b = BooleanBufferBuilder::new(n);
    b.append_packed_range(0..n, &packed);
    b
}

/// The validity bits of `n` values, `None` when every value is present (as
/// Arrow's array builders leave it).
fn validity(n: usize, mut present: impl FnMut(usize) -> bool) -> Option<BooleanBufferBuilder> {
    (0..n).any(|i| !present(i)).then(|| bits(n, present))
}

/// A string array of optional values.
fn strings<S: AsRef<str>>(values: &[Option<S>]) -> Result<ArrayRef> {
    let mut offsets = OffsetBufferBuilder::<i32>::new(values.len());
    let mut bytes: Vec<u8> = Vec::with_capacity(values.len() * 8);
    for v in values {
        let s = v.as_ref().map_or("", |s| s.as_ref());
        bytes.extend_from_slice(s.as_bytes());
        offsets.push_length(s.len());
    }
    Ok(Arc::new(StringArray::try_new(
        offsets.finish(),
        bytes.into(),
        validity(values.len(), |i| values[i].is_some()).map(|mut b| b.finish().into()),
    )?))
}

/// A string array of coded values: 0 is null, otherwise 1 + an index into
/// `table`. The same array [`strings`] gives for the values themselves.
fn coded_strings(values: &[u16], table: &[&str]) -> Result<ArrayRef> {
    let mut offsets = OffsetBufferBuilder::<i32>::new(values.len());
    let mut bytes: Vec<u8> = Vec::with_capacity(values.len() * 8);
    for v in values {
        let s = (*v as usize).checked_sub(1).map_or("", |i| table[i]);
        bytes.extend_from_slice(s.as_bytes());
        offsets.push_length(s.len());
    }
    Ok(Arc::new(StringArray::try_new(
        offsets.finish(),
        bytes.into(),
        validity(values.len(), |i| values[i] != 0).map(|mut b| b.finish().into()),
    )?))
}

/// The `created_by` of the drops this safetally writes.
fn created_by() -> String {
    format!("safetally {}", env!("CARGO_PKG_VERSION"))
}

/// Pinned writer settings: the same records give the same bytes.
/// `key_values` is the file's key-value metadata. From format 3 a drop has
/// no statistics and no page index: the digest covers the values and the
/// metadata, and a reader that pruned by a damaged statistic would miss
/// rows it could not tell were there.
fn writer_properties(key_values: Vec<KeyValue>, version: &str) -> WriterProperties {
    let statistics = if has_digest(version) {
        EnabledStatistics::None
    } else {
        EnabledStatistics::Chunk
    };
    let mut builder = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(statistics)
        .set_offset_index_disabled(has_digest(version))
        .set_created_by(created_by())
        .set_key_value_metadata(Some(key_values));
    // Keys are uniformly random bytes: a dictionary, compression or min/max
    // statistics cost time and buy nothing.
    for key in KEY_COLUMNS.iter().chain(&ENCODING_COLUMNS) {
        let col = ColumnPath::from(*key);
        builder = builder
            .set_column_dictionary_enabled(col.clone(), false)
            .set_column_compression(col.clone(), Compression::UNCOMPRESSED)
            .set_column_statistics_enabled(col, EnabledStatistics::None);
    }
    builder.build()
}

/// Metadata entries known only once every row is coded: they come last,
/// before the Arrow schema, in [`DropMeta::to_key_values`]'s order.
const LATE_KEYS: [&str; 3] = ["created", "rows", "rejected_rows"];

/// Writes a drop batch by batch, so batches are encoded while later rows
/// are still being coded. The file is a temporary one until
/// [`finish`](Self::finish) names it; dropped unfinished, it is removed.
/// The bytes are those [`write`] gives for the same batches.
pub struct DropWriter {
    dir: PathBuf,
    form: Form,
    version: String,
    tmp: tempfile::NamedTempFile,
    writer: ArrowWriter<File>,
    /// The content digest, from format 3.
    digest: Option<ContentDigest>,
}

impl DropWriter {
    /// Starts a drop of `form` in `dir`. `meta`'s `created`, `rows` and
    /// `rejected_rows` are not used: [`finish`](Self::finish) takes them.
    pub fn create(dir: &Path, meta: &DropMeta) -> Result<Self> {
        let tmp = temp_file_in(dir)?;
        // The metadata the writer knows now; the rest, and the Arrow schema
        // the writer would otherwise put last, are appended at the end.
        let early: Vec<KeyValue> = meta
            .to_key_values()
            .into_iter()
            .filter(|kv| {
                !LATE_KEYS
                    .iter()
                    .any(|k| kv.key.strip_prefix(META_PREFIX) == Some(*k))
            })
            .collect();
        let options = ArrowWriterOptions::new()
            .with_properties(writer_properties(early, &meta.format_version))
            .with_skip_arrow_metadata(true);
        let schema = arrow_schema_of(meta.form, &meta.format_version);
        let writer = ArrowWriter::try_new_with_options(
            tmp.as_file()
                .try_clone()
                .map_err(|e| Error::io("cannot write the drop", e))?,
            schema.clone(),
            options,
        )?;
        Ok(DropWriter {
            dir: dir.to_path_buf(),
            form: meta.form,
            version: meta.format_version.clone(),
            tmp,
            writer,
            digest: has_digest(&meta.format_version)
                .then(|| ContentDigest::new(schema.fields().len())),
        })
    }

    /// Encodes one batch (rows in input order).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if let Some(d) = &mut self.digest {
            d.update(batch).map_err(Error::Usage)?;
        }
        Ok(self.writer.write(batch)?)
    }

    /// Completes the file with `meta` (which must be the one given to
    /// [`create`](Self::create) but for `created`, `rows` and
    /// `rejected_rows`), syncs it and renames it to the drop's name. Without
    /// `overwrite` an existing drop is never replaced.
    pub fn finish(mut self, meta: &DropMeta, overwrite: bool) -> Result<PathBuf> {
        debug_assert_eq!(meta.form, self.form);
        let target = self.dir.join(meta.file_name());
        if !overwrite && target.exists() {
            return Err(Error::Usage(format!(
                "{} already exists: use --force to replace it",
                target.display()
            )));
        }
        for kv in meta.to_key_values() {
            if LATE_KEYS
                .iter()
                .any(|k| kv.key.strip_prefix(META_PREFIX) == Some(*k))
            {
                self.writer.append_key_value_metadata(kv);
            }
        }
        let schema = arrow_schema_of(self.form, &self.version);
        match self.digest.take() {
            Some(d) => {
                let kv: Vec<(String, Option<String>)> = meta
                    .to_key_values()
                    .into_iter()
                    .map(|kv| (kv.key, kv.value))
                    .collect();
                let digest = d
                    .finish(&schema, Some(&created_by()), &kv)
                    .map_err(Error::Usage)?;
                self.writer
                    .append_key_value_metadata(KeyValue::new(DIGEST_KEY.to_string(), digest));
            }
            None => self.writer.append_key_value_metadata(KeyValue::new(
                ARROW_SCHEMA_META_KEY.to_string(),
                encode_arrow_schema(&schema),
            )),
        }
        self.writer.close()?;
        let DropWriter { dir, tmp, .. } = self;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("cannot sync the drop to disk", e))?;
        let persisted = if overwrite {
            tmp.persist(&target).map_err(|e| e.error)
        } else {
            tmp.persist_noclobber(&target).map_err(|e| e.error)
        };
        persisted.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Usage(format!(
                    "{} already exists: use --force to replace it",
                    target.display()
                ))
            } else {
                Error::io(format!("cannot write {}", target.display()), e)
            }
        })?;
        sync_dir(&dir);
        Ok(target)
    }
}

/// Writes a drop into `dir` atomically: a temporary file in the same
/// folder, synced, then renamed. Without `overwrite` an existing drop is
/// never replaced. Returns the drop's path.
pub fn write(
    dir: &Path,
    meta: &DropMeta,
    batches: &[RecordBatch],
    overwrite: bool,
) -> Result<PathBuf> {
    let target = dir.join(meta.file_name());
    if !overwrite && target.exists() {
        return Err(Error::Usage(format!(
            "{} already exists: use --force to replace it",
            target.display()
        )));
    }
    let mut writer = DropWriter::create(dir, meta)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish(meta, overwrite)
}

/// A temporary file in `dir` (same file system as the target, so the final
/// rename is atomic); removed if dropped before it is persisted.
fn temp_file_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".safetally-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("cannot create a file in {}", dir.display()), e))
}

/// Syncs a folder so a rename in it survives a crash (Unix; a no-op elsewhere).
pub fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Writes a small text file atomically (temporary file, sync, rename).
pub fn write_text_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = temp_file_in(dir)?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e.error))?;
    sync_dir(dir);
    Ok(())
}

/// What [`check`] found in a good drop.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The drop's metadata.
    pub meta: DropMeta,
    /// SHA-256 (hex) of the file's bytes: what an NGO and the secretariat
    /// compare when in doubt, and the name the store files it under.
    pub file_sha256: String,
}

/// Why a drop was refused, with its metadata when that much could be read.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The metadata, when the file is Parquet with safetally metadata.
    pub meta: Option<Box<DropMeta>>,
    /// Why, in words an NGO or the secretariat can act on.
    pub reason: String,
}

/// Reads and verifies a drop file, and (when given) its key fingerprint.
/// See [`inspect`] for what is verified.
pub fn check(path: &Path, expected_fingerprint: Option<&str>) -> Result<Checked> {
    let bad = |reason: String| Error::BadDrop {
        path: path.to_path_buf(),
        reason,
    };
    let data =
        std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let file_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
    let meta = inspect(Bytes::from(data)).map_err(|r| bad(r.reason))?;
    if let Some(fp) = expected_fingerprint
        && fp != meta.key_fingerprint
    {
        return Err(bad(format!(
            "made with key {} but the current key is {fp}: the NGO must pseudonymise again \
                 with the current task-force key",
            meta.key_fingerprint
        )));
    }
    Ok(Checked { meta, file_sha256 })
}

/// Verifies a drop's bytes, reading every value: Parquet readable (so not
/// truncated), its content digest (format 3: any damage on its way shows
/// here, before anything the damage may have changed is believed), safetally
/// metadata present and well formed, known format, schema and normaliser
/// versions, the exact columns of its form (so no identity column), and
/// content that agrees with the metadata: the row count, record keys
/// present and unique, every event month equal to the drop's period, every
/// age band and coded value one the form allows. No input makes it panic: a
/// panic in a reader it calls is this drop's refusal.
pub fn inspect(data: Bytes) -> std::result::Result<DropMeta, Refusal> {
    crate::guard::catch(|| inspect_bytes(data)).unwrap_or_else(|e| {
        Err(Refusal {
            meta: None,
            reason: format!(
                "reading it met {e}: the file is most likely damaged. Ask the NGO to send it \
                 again, and report the error to safetally's maintainers"
            ),
        })
    })
}

/// What the secretariat is told to do about a damaged drop.
const SEND_AGAIN: &str = "the file was damaged on its way (e-mail, USB stick, shared folder) or \
    changed after it was made. Ask the NGO to send it again; `safetally check` prints a drop's \
    SHA-256, for both sides to compare";

pub(crate) fn inspect_bytes(data: Bytes) -> std::result::Result<DropMeta, Refusal> {
    let refuse = |meta: Option<&DropMeta>, reason: String| Refusal {
        meta: meta.map(|m| Box::new(m.clone())),
        reason,
    };
    // The Parquet schema says all a drop's columns need; the embedded Arrow
    // schema, which formats 1 and 2 carry, is not read.
    let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
    let builder =
        ParquetRecordBatchReaderBuilder::try_new_with_options(data, options).map_err(|e| {
            refuse(
                None,
                format!(
                    "not a readable Parquet file ({e}); it may be truncated or not a drop: if \
                     it is one, {SEND_AGAIN}"
                ),
            )
        })?;
    let file_meta = builder.metadata().file_metadata();
    let created_by = file_meta.created_by().map(str::to_string);
    // The digest's own entry, and every other entry (what it covers).
    let (stated, others): (Vec<_>, Vec<_>) = file_meta
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .partition(|(k, _)| k == DIGEST_KEY);
    let stated = stated
        .into_iter()
        .next()
        .map(|(_, v)| v.unwrap_or_default());
    let kv: BTreeMap<String, String> = others
        .iter()
        .filter_map(|(k, v)| {
            let k = k.strip_prefix(META_PREFIX)?;
            Some((k.to_string(), v.clone().unwrap_or_default()))
        })
        .collect();
    let parsed = DropMeta::from_key_values(&kv);
    let layout_extra = builder.metadata().row_groups().iter().any(|rg| {
        rg.columns().iter().any(|c| {
            c.statistics().is_some()
                || c.offset_index_offset().is_some()
                || c.column_index_offset().is_some()
                || c.bloom_filter_offset().is_some()
        })
    });
    let actual = builder.schema().clone();
    let file_rows = file_meta.num_rows();
    // What is wrong with the drop as its metadata describes it. With a
    // digest this is told only once the digest matched: damage explains
    // anything else.
    let described = parsed
        .as_ref()
        .map_err(|r| (None, r.clone()))
        .and_then(|m| {
            describes(m, &actual, file_rows, stated.is_some())
                .map(|()| m)
                .map_err(|r| (Some(m), r))
        });
    if stated.is_none() {
        described.clone().map_err(|(m, r)| refuse(m, r))?;
    }
    // One pass over the rows: the digest, and the content against the
    // metadata.
    let mut digest = stated
        .as_ref()
        .map(|_| ContentDigest::new(actual.fields().len()));
    let mut content = described.as_ref().ok().map(|m| ContentCheck::new(m));
    let mut problem: Option<String> = None;
    let mut undecodable: Option<String> = None;
    let mut unhashable: Option<String> = None;
    match builder.build() {
        Err(e) => undecodable = Some(e.to_string()),
        Ok(reader) => {
            for batch in reader {
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        undecodable = Some(e.to_string());
                        break;
                    }
                };
                if let Some(d) = &mut digest
                    && unhashable.is_none()
                    && let Err(e) = d.update(&batch)
                {
                    unhashable = Some(e);
                }
                if problem.is_none()
                    && let Some(c) = &mut content
                {
                    problem = c.batch(&batch).err();
                }
                if digest.is_none() && problem.is_some() {
                    break;
                }
            }
        }
    }
    let content_sha256 = match (stated, digest) {
        (Some(stated), Some(d)) => {
            let damaged =
                |why: String| refuse(parsed.as_ref().ok(), format!("{why}: {SEND_AGAIN}"));
            if let Some(e) = undecodable.take() {
                return Err(damaged(format!("its data cannot be decoded ({e})")));
            }
            let computed = match unhashable {
                Some(e) => Err(e),
                None => d.finish(&actual, created_by.as_deref(), &others),
            }
            .map_err(|e| damaged(format!("its content cannot be checked ({e})")))?;
            if computed != stated {
                return Err(damaged(
                    "its content does not match the content digest it carries".to_string(),
                ));
            }
            if layout_extra {
                return Err(damaged(
                    "it carries column statistics or a page index, which a drop with a content \
                     digest never has"
                        .to_string(),
                ));
            }
            Some(computed)
        }
        _ => None,
    };
    let m = described.map_err(|(m, r)| refuse(m, r))?;
    let bad = |reason: String| refuse(Some(m), reason);
    if let Some(p) = problem {
        return Err(bad(p));
    }
    if let Some(e) = undecodable {
        return Err(bad(format!("damaged data ({e}): {SEND_AGAIN}")));
    }
    let read_rows = content.map_or(0, |c| c.rows);
    if read_rows != m.rows {
        return Err(bad(format!(
            "metadata says {} rows but {read_rows} could be read",
            m.rows
        )));
    }
    let mut meta = m.clone();
    meta.content_sha256 = content_sha256;
    Ok(meta)
}

/// What the metadata and the schema must say before any row is read:
/// known versions, a digest where the format has one, a fingerprint, the
/// exact columns of the form (so no identity column), the row count.
fn describes(
    meta: &DropMeta,
    actual: &ArrowSchema,
    file_rows: i64,
    has_stated_digest: bool,
) -> std::result::Result<(), String> {
    if !FORMAT_VERSIONS_READ.contains(&meta.format_version.as_str()) {
        return Err(format!(
            "drop format version {} is not known to this safetally ({}); update safetally",
            meta.format_version,
            env!("CARGO_PKG_VERSION")
        ));
    }
    if has_digest(&meta.format_version) && !has_stated_digest {
        return Err(format!(
            "a drop of format {} must carry a content digest and this one has none: {SEND_AGAIN}",
            meta.format_version
        ));
    }
    if meta.schema_version != meta.form.schema().version {
        return Err(format!(
            "{} schema version {} is not known (expected {})",
            meta.form,
            meta.schema_version,
            meta.form.schema().version
        ));
    }
    if meta.normaliser_version != NORMALISER_VERSION {
        return Err(format!(
            "normaliser version {} is not known (expected {NORMALISER_VERSION})",
            meta.normaliser_version
        ));
    }
    if !is_fingerprint(&meta.key_fingerprint) {
        return Err("the key fingerprint is malformed".to_string());
    }
    let identity: Vec<&str> = meta
        .form
        .schema()
        .columns
        .iter()
        .filter(|c| c.role.is_identity())
        .map(|c| c.name.as_str())
        .collect();
    if let Some(f) = actual
        .fields()
        .iter()
        .find(|f| identity.contains(&f.name().as_str()))
    {
        return Err(format!(
            "holds the identity column {}: a drop must never hold identity values. Delete this \
             file and pseudonymise again",
            f.name()
        ));
    }
    let expected = arrow_schema_of(meta.form, &meta.format_version);
    let shape = |s: &ArrowSchema| -> Vec<(String, DataType)> {
        s.fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect()
    };
    if shape(actual) != shape(&expected) {
        return Err(format!(
            "its columns are not those of a {} drop of format {}",
            meta.form, meta.format_version
        ));
    }
    if file_rows < 0 || file_rows as u64 != meta.rows {
        return Err(format!(
            "metadata says {} rows but the file holds {file_rows}",
            meta.rows
        ));
    }
    Ok(())
}

/// The rows of a drop checked against its metadata, batch by batch: record
/// keys present and unique, event months equal to the period, age bands and
/// codes on the form's lists.
struct ContentCheck {
    expected: SchemaRef,
    allowed: Vec<Option<Allowed>>,
    period: String,
    seen: HashSet<[u8; 32]>,
    rows: u64,
}

impl ContentCheck {
    fn new(meta: &DropMeta) -> Self {
        ContentCheck {
            expected: arrow_schema_of(meta.form, &meta.format_version),
            allowed: allowed_values(meta.form),
            period: meta.period.to_string(),
            seen: HashSet::with_capacity(meta.rows.min(1 << 24) as usize),
            rows: 0,
        }
    }

    /// Checks the next batch; the first problem, in words.
    fn batch(&mut self, batch: &RecordBatch) -> std::result::Result<(), String> {
        let keys = batch
            .column(0)
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .filter(|k| k.value_length() == 32)
            .ok_or("record_key has the wrong type")?;
        if keys.null_count() > 0 {
            return Err("a record_key is missing".into());
        }
        for k in keys.iter().flatten() {
            let k = <[u8; 32]>::try_from(k).map_err(|_| "record_key has the wrong type")?;
            if !self.seen.insert(k) {
                return Err("two rows share a record_key".into());
            }
        }
        let period = self.period.as_str();
        for (i, allowed) in self.allowed.iter().enumerate() {
            let Some(allowed) = allowed else { continue };
            let col = batch.column(i + KEY_COLUMNS.len());
            let name = self.expected.field(i + KEY_COLUMNS.len()).name();
            let text = col
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| format!("{name} has the wrong type"))?;
            for (row, v) in text.iter().enumerate() {
                let ok = match (v, allowed) {
                    (None, Allowed::Period) => false,
                    (None, _) => true,
                    (Some(v), Allowed::Period) => v == period,
                    (Some(v), Allowed::Codes(codes)) => codes.contains(&v),
                    (Some(v), Allowed::Nationality) => by_alpha3(v).is_some(),
                };
                if !ok {
                    let at = self.rows + row as u64 + 1;
                    return Err(match allowed {
                        Allowed::Period => format!(
                            "row {at}: {name} is not the drop's period {period}: the content \
                             does not match the metadata"
                        ),
                        _ => format!("row {at}: {name} holds a value its form does not allow"),
                    });
                }
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }
}

/// What a text column of a drop may hold.
enum Allowed {
    /// Exactly the drop's period (never null).
    Period,
    /// One of these codes, or null.
    Codes(&'static [&'static str]),
    /// An ISO 3166-1 alpha-3 code, or null.
    Nationality,
}

/// For each column after the keys: what it may hold (`None`: anything of
/// its type, as for booleans).
fn allowed_values(form: Form) -> Vec<Option<Allowed>> {
    let mut out = vec![Some(Allowed::Period), Some(Allowed::Codes(&AGE_BANDS))];
    for c in form.schema().kept_columns() {
        out.push(match c.role {
            Role::YesNo => None,
            Role::Nationality => Some(Allowed::Nationality),
            _ => Some(Allowed::Codes(
                &code_list(c.codes.as_deref().expect("coded columns name a list")).codes,
            )),
        });
    }
    out
}

/// Whether a string has the shape of a key fingerprint.
pub fn is_fingerprint(s: &str) -> bool {
    s.len() == 19
        && s.split('-').count() == 4
        && s.split('-')
            .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_hexdigit()))
}
