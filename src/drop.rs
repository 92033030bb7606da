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

use arrow_array::builder::{BooleanBuilder, FixedSizeBinaryBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};
use crate::pseudonymise::country::by_alpha3;
use crate::pseudonymise::matchkeys::{NAME_DOB_RULE, PASSPORT_RULE, RECORD_RULE};
use crate::pseudonymise::normalise::{AGE_BANDS, NORMALISER_VERSION};
use crate::pseudonymise::{Coded, Period, Value, parse_org};
use crate::schema::{Form, Role, code_list};

/// Version of the drop format. Bump on any change of columns or metadata.
pub const FORMAT_VERSION: &str = "1";

/// Prefix of safetally's Parquet key-value metadata.
pub const META_PREFIX: &str = "safetally.";

/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 1 << 20;

/// The columns every drop starts with, before the form's kept columns.
pub const KEY_COLUMNS: [&str; 3] = ["record_key", "key_passport", "key_name_dob"];

/// The Arrow schema of a form's drops.
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
            ("tool_version", self.tool_version.clone()),
            ("created", self.created.clone()),
            ("rows", self.rows.to_string()),
            ("rejected_rows", self.rejected_rows.to_string()),
        ]
        .into_iter()
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
    let schema = arrow_schema(form);
    let n = records.len();
    let mut record_key = FixedSizeBinaryBuilder::with_capacity(n, 32);
    let mut key_passport = FixedSizeBinaryBuilder::with_capacity(n, 32);
    let mut key_name_dob = FixedSizeBinaryBuilder::with_capacity(n, 32);
    let mut event_month = StringBuilder::with_capacity(n, n * 7);
    let mut age_band = StringBuilder::with_capacity(n, n * 5);
    let kept: Vec<Role> = form.schema().kept_columns().map(|c| c.role).collect();
    enum Col {
        Text(StringBuilder),
        Bool(BooleanBuilder),
    }
    let mut cols: Vec<Col> = kept
        .iter()
        .map(|r| match r {
            Role::YesNo => Col::Bool(BooleanBuilder::with_capacity(n)),
            _ => Col::Text(StringBuilder::with_capacity(n, n * 8)),
        })
        .collect();
    let mut month_text: (Option<Period>, String) = (None, String::new());
    for r in records {
        record_key.append_value(r.record_key)?;
        match r.key_passport {
            Some(k) => key_passport.append_value(k)?,
            None => key_passport.append_null(),
        }
        match r.key_name_dob {
            Some(k) => key_name_dob.append_value(k)?,
            None => key_name_dob.append_null(),
        }
        // Rows of one drop nearly always share a month: format it once.
        if month_text.0 != Some(r.event_month) {
            month_text = (Some(r.event_month), r.event_month.to_string());
        }
        event_month.append_value(&month_text.1);
        age_band.append_option(r.age_band);
        for (col, v) in cols.iter_mut().zip(&r.values) {
            match (col, v) {
                (Col::Text(b), Value::Text(t)) => b.append_option(*t),
                (Col::Bool(b), Value::Bool(x)) => b.append_option(*x),
                _ => unreachable!("values follow the schema's kept columns"),
            }
        }
    }
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(record_key.finish()),
        Arc::new(key_passport.finish()),
        Arc::new(key_name_dob.finish()),
        Arc::new(event_month.finish()),
        Arc::new(age_band.finish()),
    ];
    for col in cols {
        arrays.push(match col {
            Col::Text(mut b) => Arc::new(b.finish()),
            Col::Bool(mut b) => Arc::new(b.finish()),
        });
    }
    Ok(RecordBatch::try_new(schema, arrays)?)
}

/// Pinned writer settings: the same records give the same bytes.
fn writer_properties(meta: &DropMeta) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_created_by(format!("safetally {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(meta.to_key_values()));
    // Keys are uniformly random bytes: a dictionary, compression or min/max
    // statistics cost time and buy nothing.
    for key in KEY_COLUMNS {
        let col = ColumnPath::from(key);
        builder = builder
            .set_column_dictionary_enabled(col.clone(), false)
            .set_column_compression(col.clone(), Compression::UNCOMPRESSED)
            .set_column_statistics_enabled(col, EnabledStatistics::None);
    }
    builder.build()
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
    let tmp = temp_file_in(dir)?;
    {
        let mut writer = ArrowWriter::try_new(
            tmp.as_file()
                .try_clone()
                .map_err(|e| Error::io("cannot write the drop", e))?,
            arrow_schema(meta.form),
            Some(writer_properties(meta)),
        )?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.close()?;
    }
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
    sync_dir(dir);
    Ok(target)
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
    let data = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
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
    Ok(Checked { meta })
}

/// Verifies a drop's bytes, reading every value: Parquet readable (so not
/// truncated), safetally metadata present and well formed, known format,
/// schema and normaliser versions, the exact columns of its form (so no
/// identity column), and content that agrees with the metadata: the row
/// count, record keys present and unique, every event month equal to the
/// drop's period, every age band and coded value one the form allows.
pub fn inspect(data: Bytes) -> std::result::Result<DropMeta, Refusal> {
    let refuse = |meta: Option<&DropMeta>, reason: String| Refusal {
        meta: meta.map(|m| Box::new(m.clone())),
        reason,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(data).map_err(|e| {
        refuse(
            None,
            format!("not a readable Parquet file ({e}); it may be truncated or not a drop"),
        )
    })?;
    let kv: BTreeMap<String, String> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| {
                    let k = kv.key.strip_prefix(META_PREFIX)?;
                    Some((k.to_string(), kv.value.clone().unwrap_or_default()))
                })
                .collect()
        })
        .unwrap_or_default();
    let meta = DropMeta::from_key_values(&kv).map_err(|r| refuse(None, r))?;
    let bad = |reason: String| refuse(Some(&meta), reason);
    if meta.format_version != FORMAT_VERSION {
        return Err(bad(format!(
            "drop format version {} is not known to this safetally ({}); update safetally",
            meta.format_version,
            env!("CARGO_PKG_VERSION")
        )));
    }
    if meta.schema_version != meta.form.schema().version {
        return Err(bad(format!(
            "{} schema version {} is not known (expected {})",
            meta.form,
            meta.schema_version,
            meta.form.schema().version
        )));
    }
    if meta.normaliser_version != NORMALISER_VERSION {
        return Err(bad(format!(
            "normaliser version {} is not known (expected {NORMALISER_VERSION})",
            meta.normaliser_version
        )));
    }
    if !is_fingerprint(&meta.key_fingerprint) {
        return Err(bad("the key fingerprint is malformed".to_string()));
    }
    let identity: Vec<&str> = meta
        .form
        .schema()
        .columns
        .iter()
        .filter(|c| c.role.is_identity())
        .map(|c| c.name.as_str())
        .collect();
    let actual = builder.schema().clone();
    if let Some(f) = actual
        .fields()
        .iter()
        .find(|f| identity.contains(&f.name().as_str()))
    {
        return Err(bad(format!(
            "holds the identity column {}: a drop must never hold identity values. Delete this \
             file and pseudonymise again",
            f.name()
        )));
    }
    let expected = arrow_schema(meta.form);
    let shape = |s: &ArrowSchema| -> Vec<(String, DataType)> {
        s.fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect()
    };
    if shape(&actual) != shape(&expected) {
        return Err(bad(format!(
            "its columns are not those of a {} drop of format {FORMAT_VERSION}",
            meta.form
        )));
    }
    let file_rows = builder.metadata().file_metadata().num_rows() as u64;
    if file_rows != meta.rows {
        return Err(bad(format!(
            "metadata says {} rows but the file holds {file_rows}",
            meta.rows
        )));
    }
    let reader = builder
        .build()
        .map_err(|e| bad(format!("cannot read ({e})")))?;
    let allowed = allowed_values(meta.form);
    let period = meta.period.to_string();
    let mut seen = HashSet::with_capacity(meta.rows as usize);
    let mut read_rows = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| bad(format!("damaged data ({e})")))?;
        let keys = batch
            .column(0)
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .ok_or_else(|| bad("record_key has the wrong type".into()))?;
        if keys.null_count() > 0 {
            return Err(bad("a record_key is missing".into()));
        }
        for k in keys.iter().flatten() {
            if !seen.insert(<[u8; 32]>::try_from(k).expect("32 bytes")) {
                return Err(bad("two rows share a record_key".into()));
            }
        }
        for (i, allowed) in allowed.iter().enumerate() {
            let Some(allowed) = allowed else { continue };
            let col = batch.column(i + KEY_COLUMNS.len());
            let name = expected.field(i + KEY_COLUMNS.len()).name();
            let text = col
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| bad(format!("{name} has the wrong type")))?;
            for (row, v) in text.iter().enumerate() {
                let ok = match (v, allowed) {
                    (None, Allowed::Period) => false,
                    (None, _) => true,
                    (Some(v), Allowed::Period) => v == period,
                    (Some(v), Allowed::Codes(codes)) => codes.contains(&v),
                    (Some(v), Allowed::Nationality) => by_alpha3(v).is_some(),
                };
                if !ok {
                    let at = read_rows + row as u64 + 1;
                    return Err(bad(match allowed {
                        Allowed::Period => format!(
                            "row {at}: {name} is not the drop's period {period}: the content \
                             does not match the metadata"
                        ),
                        _ => format!("row {at}: {name} holds a value its form does not allow"),
                    }));
                }
            }
        }
        read_rows += batch.num_rows() as u64;
    }
    if read_rows != meta.rows {
        return Err(bad(format!(
            "metadata says {} rows but {read_rows} could be read",
            meta.rows
        )));
    }
    Ok(meta)
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
